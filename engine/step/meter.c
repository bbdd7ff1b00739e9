/*
** Metering.
*/
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "meter.h"
#include "ctx.h"
#include "error.h"
#include "plan.h"
#include "quota.h"

/* Raises a bad usage table's message, naming the step and where. */
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
  sl_core_abort_run(r, "quota", msg);
}

int sl_meter_reserve(lua_State *L, sl_exec *x) {
  const sl_plan *p = x->plan;
  memset(&x->held, 0, sizeof x->held);
  if (!(p->opts & SL_OPT_ESTIMATE)) return 1;
  char err[300];
  int rc = sl_quota_reserve(&x->run->quota, &p->estimate, err, sizeof err);
  if (rc == SL_QUOTA_EXCEEDED) {
    sl_error_push(L, "quota", err, p->name, p->where);
    return 0;
  }
  if (rc != 0) luaL_error(L, "step '%s': cannot reserve its estimate: %s", p->name, err);
  x->held = p->estimate;
  x->metered = 1;
  return 1;
}

void sl_meter_charge(lua_State *L, sl_exec *x, int ui) {
  char err[300];
  sl_usage u;
  if (!lua_istable(L, ui)) luaL_typeerror(L, ui, "usage table {cost=, tokens=, requests=}");
  if (sl_usage_from_lua(L, ui, &u, SL_USAGE_ALL, err, sizeof err) < 0)
    luaL_error(L, "bad usage for ctx:charge in step '%s': %s", x->plan->name, err);
  sl_usage_add(&x->used, &u);
  x->metered = 1;
  sl_hist_set_usage(&x->run->hist, x->hist, &x->used);
  if (sl_quota_charge(&x->run->quota, &x->held, &u, err, sizeof err) == SL_QUOTA_OVERRUN)
    overrun(x->run, err);
}

int sl_meter_returned(lua_State *L, sl_exec *x, int ui) {
  memset(&x->returned, 0, sizeof x->returned);
  if (lua_isnoneornil(L, ui)) return 1;
  char err[300];
  if (!lua_istable(L, ui) ||
      sl_usage_from_lua(L, ui, &x->returned, SL_USAGE_ALL, err, sizeof err) < 0) {
    char msg[400];
    snprintf(msg, sizeof msg, "the usage it returned is malformed: %s",
             lua_istable(L, ui) ? err : "a table {cost=, tokens=, requests=} expected");
    sl_error_push(L, "error", msg, x->plan->name, NULL);
    return 0;
  }
  sl_usage_add(&x->used, &x->returned);
  x->metered = 1;
  return 1;
}

void sl_meter_reconcile(sl_exec *x) {
  if (!x->metered) return;
  char err[300];
  sl_run *r = x->run;
  int rc = sl_quota_reconcile(&r->quota, &x->held, &x->returned, err, sizeof err);
  sl_hist_set_usage(&r->hist, x->hist, &x->used);
  memset(&x->held, 0, sizeof x->held);
  memset(&x->returned, 0, sizeof x->returned);
  if (rc == SL_QUOTA_OVERRUN) {
    char msg[280];
    snprintf(msg, sizeof msg, "step '%s' overran the budget: %.200s", x->plan->name, err);
    overrun(r, msg);
  }
}

/* ctx:charge(usage): records usage ({cost=, tokens=, requests=}) at once,
   against the run's budget. Usage past the budget fails the run after
   this step. */
static int ctx_charge(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  sl_meter_charge(L, x, 2);
  return 0;
}

static const luaL_Reg meter_methods[] = {
  {"charge", ctx_charge},
  {NULL, NULL}
};

void sl_meter_open(lua_State *L, sl_core *c) {
  sl_ctx_register(L, c, meter_methods);
}
