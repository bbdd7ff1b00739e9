/*
** Metering.
*/
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "meter.h"
#include "error.h"
#include "quota.h"
#include "run.h"

static const char *name_of(sl_task *t) {
  return t->hist >= 0 ? t->run->hist.recs[t->hist].name : "?";
}

/* Raises a bad usage table's message, naming the step of t or at si. */
static int bad_usage(lua_State *L, const char *what, const char *step,
                     const char *where, const char *err) {
  return luaL_error(L, "%s%sstep '%s': %s: %s", where ? where : "",
                    where ? ": " : "", step, what, err);
}

void sl_meter_budget(lua_State *L, sl_run *r, int si, int bi) {
  char err[200];
  sl_usage limit = {0, 0, 0};
  int mask = 0;
  if (bi != 0 && !lua_isnoneornil(L, bi)) {
    mask = sl_usage_from_lua(L, bi, &limit, SL_USAGE_ALL, err, sizeof err);
    if (mask < 0) luaL_error(L, "bad budget: %s", err);
  } else if (lua_getfield(L, si, "budget") == LUA_TTABLE) {
    mask = sl_usage_from_lua(L, -1, &limit, SL_USAGE_ALL, err, sizeof err);
    lua_pop(L, 1);
    if (mask < 0) {
      lua_getfield(L, si, "where");
      bad_usage(L, "option 'budget'", r->pipeline, lua_tostring(L, -1), err);
    }
  } else {
    lua_pop(L, 1);
  }
  sl_quota_init(&r->quota, mask ? &limit : NULL, (unsigned)(mask > 0 ? mask : 0));
}

/* The run fails as soon as the step that overran has ended. */
static void overrun(sl_run *r, const char *msg) {
  if (r->aborting) return;
  r->aborting = 1;
  snprintf(r->abort_kind, sizeof r->abort_kind, "quota");
  snprintf(r->abort_msg, sizeof r->abort_msg, "%.290s", msg);
}

int sl_meter_reserve(lua_State *L, sl_task *t, int si) {
  sl_run *r = t->run;
  memset(&t->held, 0, sizeof t->held);
  if (lua_getfield(L, si, "estimate") != LUA_TTABLE) {
    lua_pop(L, 1);
    return 1;
  }
  char err[300];
  sl_usage est;
  if (sl_usage_from_lua(L, -1, &est, SL_USAGE_ALL, err, sizeof err) < 0) {
    lua_getfield(L, si, "where");
    bad_usage(L, "option 'estimate'", name_of(t), lua_tostring(L, -1), err);
  }
  lua_pop(L, 1);
  int rc = sl_quota_reserve(&r->quota, &est, err, sizeof err);
  if (rc == SL_QUOTA_EXCEEDED) {
    lua_getfield(L, si, "where");
    sl_error_push(L, "quota", err, name_of(t), lua_tostring(L, -1));
    lua_remove(L, -2);
    return 0;
  }
  if (rc != 0) luaL_error(L, "step '%s': cannot reserve its estimate: %s", name_of(t), err);
  t->held = est;
  t->metered = 1;
  return 1;
}

void sl_meter_charge(lua_State *L, sl_task *t, int ui) {
  char err[300];
  sl_usage u;
  if (!lua_istable(L, ui)) luaL_typeerror(L, ui, "usage table {cost=, tokens=, requests=}");
  if (sl_usage_from_lua(L, ui, &u, SL_USAGE_ALL, err, sizeof err) < 0)
    luaL_error(L, "bad usage for ctx:charge in step '%s': %s", name_of(t), err);
  sl_usage_add(&t->used, &u);
  t->metered = 1;
  sl_hist_set_usage(&t->run->hist, t->hist, &t->used);
  if (sl_quota_charge(&t->run->quota, &t->held, &u, err, sizeof err) == SL_QUOTA_OVERRUN)
    overrun(t->run, err);
}

int sl_meter_returned(lua_State *L, sl_task *t, int ui) {
  memset(&t->returned, 0, sizeof t->returned);
  if (lua_isnoneornil(L, ui)) return 1;
  char err[300];
  if (!lua_istable(L, ui) ||
      sl_usage_from_lua(L, ui, &t->returned, SL_USAGE_ALL, err, sizeof err) < 0) {
    char msg[400];
    snprintf(msg, sizeof msg, "the usage it returned is malformed: %s",
             lua_istable(L, ui) ? err : "a table {cost=, tokens=, requests=} expected");
    sl_error_push(L, "error", msg, name_of(t), NULL);
    return 0;
  }
  sl_usage_add(&t->used, &t->returned);
  t->metered = 1;
  return 1;
}

void sl_meter_reconcile(sl_task *t) {
  if (!t->metered) return;
  char err[300];
  sl_run *r = t->run;
  int rc = sl_quota_reconcile(&r->quota, &t->held, &t->returned, err, sizeof err);
  sl_hist_set_usage(&r->hist, t->hist, &t->used);
  memset(&t->held, 0, sizeof t->held);
  memset(&t->returned, 0, sizeof t->returned);
  if (rc == SL_QUOTA_OVERRUN) {
    char msg[280];
    snprintf(msg, sizeof msg, "step '%s' overran the budget: %.200s", name_of(t), err);
    overrun(r, msg);
  }
}
