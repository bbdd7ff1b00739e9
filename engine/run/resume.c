/*
** Resume: continuing a stored run, with the answers a person gave to its
** waits.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "resume.h"
#include <time.h>
#include "owner.h"
#include "record.h"
#include "durable.h"
#include "error.h"
#include "loader.h"
#include "memory.h"
#include "plan.h"
#include "reload.h"
#include "run.h"
#include "trace.h"
#include "value.h"

static void name_waits(lua_State *L, sl_core *e, const char *run_id, int wi) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, wi);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);
    lua_getfield(L, -1, "path");
    sl_store_checkpoint *c;
    if (sl_store_checkpoint_get(e->store, run_id, lua_tostring(L, -1), &c) == 0) {
      lua_pushstring(L, c->name);
      lua_setfield(L, -3, "name");
      sl_store_checkpoint_free(c);
    }
    lua_pop(L, 2);
  }
}

/*
** Matches the answer at ii to the run's open waits (one wait: the answer
** itself; several: an object keyed by step name or path), checks each
** against its schema, and records it. Pushes the answers by path. A wrong
** answer raises with the schema path that failed, changing nothing.
*/
static void take_answers(lua_State *L, sl_core *e, const char *run_id, int ii) {
  sl_record_push_waits(L, e, run_id);                  /* waits */
  int wi = lua_gettop(L);
  name_waits(L, e, run_id, wi);
  lua_newtable(L);                                      /* waits answers */
  int ai = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, wi), open = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);
    if (lua_getfield(L, -1, "answer") == LUA_TNIL) open++;
    lua_pop(L, 2);
  }
  if (open == 0) luaL_error(L, "run %s has no open waits to answer", run_id);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);                              /* ... w */
    int w = lua_gettop(L);
    lua_getfield(L, w, "path");
    const char *path = lua_tostring(L, -1);
    if (lua_getfield(L, w, "answer") != LUA_TNIL) {     /* answered before */
      lua_setfield(L, ai, path);
      lua_settop(L, w - 1);
      continue;
    }
    lua_pop(L, 1);
    if (open == 1) {
      lua_pushvalue(L, ii);
    } else {
      if (!lua_istable(L, ii))
        luaL_error(L, "run %s waits at %d points: answer with an object keyed "
                      "by step name or path", run_id, (int)open);
      if (lua_getfield(L, ii, path) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_getfield(L, w, "name");
        const char *name = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (name == NULL || lua_getfield(L, ii, name) == LUA_TNIL)
          luaL_error(L, "no answer for the wait at '%s' (step '%s')", path,
                     name ? name : "?");
      }
    }
    int ans = lua_gettop(L);
    if (lua_getfield(L, w, "schema") != LUA_TNIL) {
      lua_getglobal(L, "require");
      lua_pushliteral(L, "sluice.schema");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "validate");
      lua_pushvalue(L, -3);
      lua_pushvalue(L, ans);
      lua_call(L, 2, 2);
      if (!lua_toboolean(L, -2)) {
        lua_getfield(L, w, "name");
        luaL_error(L, "the answer for step '%s' was refused, the run stays paused: %s",
                   luaL_optstring(L, -1, path), lua_tostring(L, -2));
      }
    }
    lua_settop(L, ans);
    lua_pushvalue(L, ans);
    lua_setfield(L, ai, path);
    lua_settop(L, w - 1);
  }
  /* All refused or all recorded: only now is anything written. */
  sl_record_answers(L, e, run_id, ai);
  lua_remove(L, wi);
}

sl_run *sl_resume(lua_State *L, sl_host *h, const char *id, int ii, int force) {
  sl_core *e = &h->core;
  if (e->store == NULL) luaL_error(L, "cannot resume: the engine has no store");
  ii = ii ? lua_absindex(L, ii) : 0;
  sl_store_run *row;
  int rc = sl_store_run_get(e->store, id, &row);
  if (rc == SL_STORE_ENOTFOUND)
    luaL_error(L, "no run with id '%s' in %s", id, sl_store_path(e->store));
  if (rc != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  /* The row's strings go to the Lua stack before anything can raise. */
  int top = lua_gettop(L);
  lua_pushstring(L, row->status);                       /* status */
  lua_pushstring(L, row->file ? row->file : "");        /* status file */
  lua_pushstring(L, row->pipeline);                     /* ... pipeline */
  lua_pushstring(L, row->def_hash ? row->def_hash : ""); /* ... hash */
  lua_pushstring(L, row->input ? row->input : "null");  /* ... input */
  if (row->options) lua_pushstring(L, row->options);
  else lua_pushnil(L);                                  /* ... options */
  if (row->error) lua_pushstring(L, row->error);
  else lua_pushnil(L);                                  /* ... error */
  if (row->owner) lua_pushstring(L, row->owner);
  else lua_pushnil(L);                                  /* ... owner */
  int64_t lease = row->lease_ms, epoch = row->epoch;
  sl_store_run_free(row);
  const char *status = lua_tostring(L, top + 1);
  const char *file = lua_tostring(L, top + 2);
  const char *owner = lua_tostring(L, top + 8);
  int64_t now = sl_owner_now_ms();
  int active = strcmp(status, "running") == 0 || strcmp(status, "waiting") == 0 ||
               strcmp(status, "queued") == 0;
  if (active && sl_owner_alive(owner, lease, now)) {
    /* Its owner executes it still: a second owner would run its steps
       twice. */
    char when[64];
    time_t t = (time_t)(lease / 1000);
    struct tm tmv;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tmv));
    luaL_error(L, "run %s is being executed by %s (alive; its lease runs until %s): "
                  "it can be resumed once that process has stopped", id, owner, when);
  }
  if (active) status = "interrupted";   /* its owner is gone */
  int paused = strcmp(status, "paused") == 0;
  if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0)
    luaL_error(L, "run %s has %s: only a paused or interrupted run can be resumed",
               id, status);
  if (strcmp(status, "cancelled") == 0) {
    const char *why = "cancelled", *by = NULL;
    if (!lua_isnil(L, top + 7)) {
      const char *text = lua_tostring(L, top + 7);
      if (sl_json_decode(L, text, strlen(text)) == 0 && lua_istable(L, -1)) {
        int ei = lua_gettop(L);
        if (lua_getfield(L, ei, "message") == LUA_TSTRING) why = lua_tostring(L, -1);
        if (lua_getfield(L, ei, "aborted") == LUA_TBOOLEAN &&
            lua_getfield(L, ei, "step") == LUA_TSTRING)
          by = lua_tostring(L, -1);
      }
    }
    if (by != NULL)
      luaL_error(L, "run %s was aborted by step '%s' (%s): an aborted run has ended "
                    "for good and cannot be resumed", id, by, why);
    luaL_error(L, "run %s was cancelled (%s): a cancelled run has ended for good "
                  "and cannot be resumed", id, why);
  }
  if (ii && !lua_isnil(L, ii) && !paused)
    luaL_error(L, "run %s is %s, not paused: --input answers a paused run only", id, status);
  if (paused && (ii == 0 || lua_isnil(L, ii)))
    luaL_error(L, "run %s is paused waiting for input: resume it with --input JSON", id);
  if (file[0] == '\0')
    luaL_error(L, "run %s was not started from a pipeline file, so it cannot be "
                  "resumed from the command line", id);
  if (h->load_path == NULL || strcmp(h->load_path, file) != 0) {
    sl_reload_load(L, h, file);
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_pipelines);
  sl_load_select(L, -1, lua_tostring(L, top + 3), file, NULL);      /* ... set step */
  int si = lua_gettop(L);
  sl_key version;
  char hex[SL_KEY_HEXLEN + 1], err[128];
  if (sl_plan_version(L, sl_plan_push(L, si), si, &version, err, sizeof err) == 0) sl_key_hex(&version, hex);
  else hex[0] = '\0';
  if (!force && strcmp(hex, lua_tostring(L, top + 4)) != 0)
    luaL_error(L, "the pipeline '%s' in %s changed since run %s started: resuming "
                  "it could mix two versions (use --force to resume anyway)",
               lua_tostring(L, top + 3), file, id);
  int ai = 0;
  if (paused) {
    take_answers(L, e, id, ii);
    ai = lua_gettop(L);
  }
  const char *input = lua_tostring(L, top + 5);
  if (sl_json_decode(L, input, strlen(input)) != 0) lua_error(L);
  int in = lua_gettop(L);
  int bi = 0;
  if (!lua_isnil(L, top + 6)) {
    /* The options the run started with hold on resume: its budget, and,
       where this engine sets none of its own, its memory limit and trace. */
    const char *text = lua_tostring(L, top + 6);
    if (sl_json_decode(L, text, strlen(text)) != 0) lua_error(L);
    int oi = lua_gettop(L);
    lua_getfield(L, oi, "budget");
    if (lua_istable(L, -1)) bi = lua_gettop(L);
    else lua_pop(L, 1);
    if (lua_getfield(L, oi, "memory_limit") == LUA_TNUMBER &&
        sl_memory_get_limit(L) == 0) {
      sl_memory_limit(L, (size_t)lua_tointeger(L, -1));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, oi, "trace") == LUA_TSTRING && e->trace == NULL) {
      char terr[300];
      if (sl_trace_open(lua_tostring(L, -1), &e->trace, terr, sizeof terr) != 0) {
        e->trace = NULL;
        luaL_error(L, "run %s wrote its trace to %s, which cannot be opened again: %s",
                   id, lua_tostring(L, -1), terr);
      }
    }
    lua_pop(L, 1);
  }
  /* Take it over: of two processes resuming the run at once, one wins. */
  int64_t lease_until = sl_owner_now_ms() + e->lease_ms;
  if (e->writer != NULL) {
    /* What this engine wrote must be in before the run moves on. */
    sl_writer_sync(e->writer, NULL, 0);
  }
  int rc2 = sl_store_run_claim(e->store, id, e->owner, lease_until, epoch, "running");
  if (rc2 == SL_STORE_ECONFLICT)
    luaL_error(L, "run %s was taken over by another process just now: %s", id,
               sl_store_errmsg(e->store));
  if (rc2 != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  sl_run_opts o = {bi, id, ai, epoch + 1};
  return sl_run_launch(L, h, si, in, &o);
}
