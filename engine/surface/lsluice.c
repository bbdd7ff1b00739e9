/*
** The "sluice.core" Lua module: engines, runs and JSON, for the DSL in
** lua/sluice/ to build on. Misuse raises with the caller's position; a
** failure at run time returns nil and a message.
*/
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "engine.h"
#include "owner.h"
#include "pattern.h"
#include "ctx.h"
#include "lifecycle.h"
#include "plan.h"
#include "protect.h"
#include "result.h"
#include "record.h"
#include "resume.h"
#include "suggest.h"
#include "attempt.h"
#include "error.h"
#include "exec.h"
#include "loader.h"
#include "memory.h"
#include "reload.h"
#include "state.h"
#include "durable.h"
#include "store.h"
#include "cache.h"
#include "run.h"
#include "scheduler.h"
#include "value.h"
#include "clock.h"

/* Pushes the step to run: the step at idx, or the loaded pipeline it names. */
static void push_target(lua_State *L, sl_engine *e, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.ref_pipelines);
    sl_load_select(L, -1, lua_tostring(L, idx), e->host.load_path, "a pipeline name");
    lua_remove(L, -2);
    return;
  }
  luaL_argexpected(L, lua_istable(L, idx), idx, "pipeline or pipeline name");
  lua_pushvalue(L, idx);
}

/* engine:start(pipeline, input): starts a run and returns its handle at
   once; the run may already have ended. */
/* Pushes opts.budget of the options table at oi (nil when absent) and
   checks the options' names. */
static int push_budget(lua_State *L, int oi) {
  if (lua_isnoneornil(L, oi)) {
    lua_pushnil(L);
    return lua_gettop(L);
  }
  luaL_checktype(L, oi, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, oi)) {
    lua_pop(L, 1);
    const char *k = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING || (strcmp(k, "budget") != 0 && strcmp(k, "breaks") != 0))
      luaL_error(L, "bad run option '%s' (known: budget, breaks)", k ? k : "?");
  }
  lua_getfield(L, oi, "budget");
  return lua_gettop(L);
}

/* The index of the breakpoints in the run options at oi (breaks = a list
   of step names, or step name -> "before" | "after" | "both"), pushed, or
   0 for none. */
static int push_breaks(lua_State *L, int oi) {
  if (!lua_istable(L, oi) || lua_getfield(L, oi, "breaks") == LUA_TNIL) {
    if (lua_istable(L, oi)) lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "bad run option 'breaks' (a list of step names expected, got %s)",
               luaL_typename(L, -1));
  return lua_gettop(L);
}

static int e_start(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_settop(L, 4);
  push_target(L, e, 2);                                 /* e p in opts step */
  int bi = push_budget(L, 4);
  sl_run_opts o = {bi, NULL, 0, 0, NULL, 0, push_breaks(L, 4)};
  sl_run_launch(L, &e->host, 5, 3, &o);                 /* ... run */
  sl_sched_drain(&e->host.core.sched);
  return 1;
}

/* engine:run(pipeline, input): runs to the end and returns the result. */
static int e_run(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_settop(L, 4);
  if (e->host.core.sched.depth > 0 || e->host.in_uv_run)
    return luaL_error(L, "cannot block on a run from inside the engine's loop "
                         "(from a step, use ctx:run; from a callback, use start/poll)");
  push_target(L, e, 2);                                 /* e p in opts step */
  int bi = push_budget(L, 4);
  sl_run_opts o = {bi, NULL, 0, 0, NULL, 0, push_breaks(L, 4)};
  sl_run *r = sl_run_launch(L, &e->host, 5, 3, &o);     /* ... run */
  sl_run_block(L, r);
  sl_run_push_result(L, r, -1);
  return 1;
}

/* engine:poll(): advances the engine without blocking; returns how many
   runs are still active. */
static int e_poll(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_pushinteger(L, sl_host_poll(&e->host));
  return 1;
}

/* engine:fd(): the descriptor of the engine's loop, readable when the
   engine has I/O to handle (sl_engine_fd). */
static int e_fd(lua_State *L) {
  lua_pushinteger(L, sl_engine_fd(sl_engine_check(L, 1)));
  return 1;
}

/* engine:timeout(): the milliseconds until the engine next needs a poll
   even if its descriptor stays quiet; 0 now, -1 none (sl_engine_timeout). */
static int e_timeout(lua_State *L) {
  lua_pushinteger(L, sl_engine_timeout(sl_engine_check(L, 1)));
  return 1;
}

/* engine:load(path): loads and checks a pipeline file; returns its
   pipelines by name, or nil and the message. */
static int e_load(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  const char *path = luaL_checkstring(L, 2);
  sl_engine_load_lua(L, e, path);
  return 1;
}

/* engine:submit(path, input[, {pipeline=, queue=, budget=}]): loads the
   file and records a run of its pipeline in the store's queue (default
   "default") for a worker; returns the run's id. */
static int e_submit(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  const char *path = luaL_checkstring(L, 2);
  lua_settop(L, 4);
  const char *pipeline = NULL, *queue = "default";
  int bi = 0;
  if (!lua_isnil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_getfield(L, 4, "pipeline");
    lua_getfield(L, 4, "queue");
    lua_getfield(L, 4, "budget");
    pipeline = luaL_optstring(L, 5, NULL);
    queue = luaL_optstring(L, 6, "default");
    if (!lua_isnil(L, 7)) {
      luaL_checktype(L, 7, LUA_TTABLE);
      bi = 7;
    }
  }
  if (e->host.core.store == NULL) return luaL_error(L, "the engine has no store to submit to");
  sl_engine_load_lua(L, e, path);                       /* set */
  sl_load_select(L, -1, pipeline, path, "pipeline =");  /* set step */
  char id[32];
  sl_run_new_id(&e->host, id);
  sl_record_submit(L, &e->host, -1, 3, bi, queue, id);
  lua_pushstring(L, id);
  return 1;
}

/* engine:check(step): checks the tree under a step against the engine's
   policy table; raises naming the first bad step. */
static int e_check(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.core.ref_kinds);
  sl_load_check(L, 2, -1);
  lua_pushboolean(L, 1);
  return 1;
}

/* engine:kind(name, handler): adds or replaces a kind. The policy table is
   copied and the copy swapped in, so runs in flight keep the one they
   started with. */
static int e_kind(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  luaL_checkstring(L, 2);
  if (!lua_isfunction(L, 3)) {
    int callable = 0;
    if (luaL_getmetafield(L, 3, "__call") != LUA_TNIL) {
      callable = 1;
      lua_pop(L, 1);
    }
    luaL_argexpected(L, callable, 3, "function");
  }
  lua_settop(L, 3);
  sl_engine_set_kind(L, e, 2, 3);
  return 0;
}

/* engine:kinds(): a copy of the policy table. */
static int e_kinds(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.core.ref_kinds);
  sl_state_shallow_copy(L, -1);
  return 1;
}

/* engine:pipelines(): the pipelines of the last file loaded. */
static int e_pipelines(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.ref_pipelines);
  return 1;
}

/* engine:active(): how many runs are active. */
static int e_active(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_pushinteger(L, e->host.core.active_runs);
  return 1;
}

/* engine:result_json(run[, pretty]): the run's result as JSON text. */
static int e_result_json(lua_State *L) {
  sl_run *r = sl_run_check(L, 2);
  if (r->status == SL_RUN_RUNNING) return luaL_error(L, "the run is still active");
  sl_result_json(L, r, 2, lua_toboolean(L, 3) ? SL_JSON_PRETTY : 0);
  return 1;
}

/* engine:stats(): counters for benchmarks and diagnostics. */
static int e_stats(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_sched *s = &e->host.core.sched;
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, s->ntasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, s->ntasks - s->nfree);
  lua_setfield(L, -2, "live_tasks");
  lua_pushinteger(L, s->nfree);
  lua_setfield(L, -2, "pooled_tasks");
  lua_pushinteger(L, (lua_Integer)sizeof(sl_exec));
  lua_setfield(L, -2, "task_bytes");
  lua_pushinteger(L, e->host.core.active_runs);
  lua_setfield(L, -2, "active_runs");
  return 1;
}

/* engine:reload(): loads again the file last loaded, as engine:load does:
   all or nothing. Returns the pipelines, or raises with file:line. */
static int e_reload(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_reload_again(L, &e->host);
  return 1;
}

/* engine:files(): the files the last load read (the file and its imports). */
static int e_files(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_reload_push_files(L, &e->host);
  return 1;
}

/* Calls the Lua function of engine:watch after each reload the watcher did:
   f(true) or f(false, message). Its errors are reported, not raised. */
typedef struct watch_event { sl_engine *e; const char *msg; } watch_event;

static int watch_call_p(lua_State *L) {
  watch_event *ev = lua_touserdata(L, 1);
  sl_engine *e = ev->e;
  const char *msg = ev->msg;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_watch_cb);
  lua_pushboolean(L, msg == NULL);
  if (msg) lua_pushstring(L, msg);
  else lua_pushnil(L);
  lua_call(L, 2, 0);
  return 0;
}

static void watch_to_lua(sl_host *h, int status, const char *msg, void *ud) {
  sl_engine *e = (sl_engine *)h;
  (void)status; (void)ud;
  if (e->ref_watch_cb == LUA_NOREF) return;
  watch_event ev = {e, msg};
  char err[600];
  if (sl_protect(e->host.core.L, watch_call_p, &ev, err, sizeof err) != LUA_OK)
    fprintf(stderr, "sluice: the watch callback failed: %s\n", err);
}

/* engine:watch([callback[, debounce_ms]]): reloads when the file last
   loaded, or one it imports, changes on disk; calls callback(ok, err)
   after each reload. engine:watch(false) stops watching. */
static int e_watch(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  if (lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2)) {
    sl_reload_unwatch(&e->host);
    return 0;
  }
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  int ms = (int)luaL_optinteger(L, 3, 20);
  luaL_argcheck(L, ms >= 0, 3, "debounce must not be negative");
  if (e->host.load_path == NULL) return luaL_error(L, "nothing to watch: no file was loaded");
  luaL_unref(L, LUA_REGISTRYINDEX, e->ref_watch_cb);
  e->ref_watch_cb = LUA_NOREF;
  if (!lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    e->ref_watch_cb = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  int rc = sl_reload_watch(&e->host, ms, watch_to_lua, NULL);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* engine:set_store(path): opens the store at path (":memory:": none). */
/* engine:set_retain{days =, keep =}: the retention policy for every run
   this engine records (nil: none). */
static int e_set_retain(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_retain p = {0, 0, 0};
  if (!lua_isnoneornil(L, 2)) sl_retain_parse(L, 2, "retain", &p);
  e->host.retain = p;
  return 0;
}

/* engine:set_trace(path): one OTLP/JSON span per step execution appended
   to path (nil: none). Raises naming the file when it cannot be opened. */
static int e_set_trace(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  char err[300];
  if (sl_engine_set_trace(e, luaL_optstring(L, 2, NULL), err, sizeof err) != 0)
    return luaL_error(L, "%s", err);
  return 0;
}

/* engine:set_otlp(url): exports the engine's spans over OTLP/HTTP to a
   collector (nil: stops). */
static int e_set_otlp(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  char err[1200];
  if (sl_engine_set_otlp(e, luaL_optstring(L, 2, NULL), err, sizeof err) != 0)
    return luaL_error(L, "%s", err);
  return 0;
}

/* engine:set_clock("virtual" | "real"): on a virtual clock the engine's
   waits (ctx:sleep, timeouts, backoff, durable waits) take no time: the
   clock jumps to the next one due whenever nothing else is left to do
   (clock.h). For tests of pipelines; one loop at a time may have it. */
static int e_set_clock(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  static const char *const modes[] = {"real", "virtual", NULL};
  int on = luaL_checkoption(L, 2, NULL, modes);
  if (sl_clock_set_virtual(sl_engine_loop(e), on) != 0)
    return luaL_error(L, "another engine's loop already runs on the virtual clock");
  return 0;
}

/* engine:advance(seconds): on the virtual clock, lets that much time pass
   at once (a paused run's question falls due, say). */
static int e_advance(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_Number s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s >= 0 && s == s && s < 1e12, 2, "a non-negative number of seconds");
  if (sl_clock_advance(sl_engine_loop(e), (uint64_t)(s * 1e9)) != 0)
    return luaL_error(L, "engine:advance needs the engine on the virtual clock "
                         "(engine:set_clock(\"virtual\"))");
  return 0;
}

/* engine:flush_spans([seconds]): sends what the exporter holds and waits
   (on the engine's own loop) up to seconds (default 5) for the collector;
   returns the spans not exported so far and, if any, why. */
static int e_flush_spans(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_Number s = luaL_optnumber(L, 2, 5);
  char msg[1600];
  int64_t lost = sl_engine_otlp_finish(e, (int)(s > 0 ? s * 1000 : 0), msg, sizeof msg);
  lua_pushinteger(L, (lua_Integer)lost);
  if (lost > 0) lua_pushstring(L, msg);
  else lua_pushnil(L);
  return 2;
}

static int e_set_store(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_engine_set_store(L, e, luaL_optstring(L, 2, NULL), lua_toboolean(L, 3));
  return 0;
}

/* engine:resume(run_id[, answer[, force]]): continues a paused or
   interrupted run from the store; returns the run (wait on it, or poll),
   or, for a paused run submitted to a queue, nil and "queued": the answer
   is recorded and a worker goes on with it. */
static int e_resume(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lua_settop(L, 4);
  if (sl_resume(L, &e->host, id, 3, lua_toboolean(L, 4)) == NULL) {
    /* Answered and back in its queue: a worker goes on with it. */
    lua_pushnil(L);
    lua_pushliteral(L, "queued");
    return 2;
  }
  sl_sched_drain(&e->host.core.sched);
  return 1;
}

/* engine:fork(run_id, path[, {input =, state =, force =}]): a new run from
   the step execution at path of a stored run (sl_fork); returns it. */
static int e_fork(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  const char *id = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  lua_settop(L, 4);
  int ii = 0, sti = 0, force = 0;
  if (!lua_isnil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    for (lua_pushnil(L); lua_next(L, 4); lua_pop(L, 1)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      if (k == NULL || (strcmp(k, "input") != 0 && strcmp(k, "state") != 0 &&
                        strcmp(k, "force") != 0))
        luaL_error(L, "bad fork option '%s' (known: input, state, force)", k ? k : "?");
    }
    lua_getfield(L, 4, "input");
    ii = lua_gettop(L);
    lua_getfield(L, 4, "state");
    sti = lua_gettop(L);
    lua_getfield(L, 4, "force");
    force = lua_toboolean(L, -1);
  }
  sl_fork(L, &e->host, id, path, ii, sti, force);
  sl_sched_drain(&e->host.core.sched);
  return 1;
}

/* Pushes a stored run as a table onto the list on top of L; a listing row
   leaves out the input and output, which only `show` needs. */
/* The status a stored run shows: one stored as running whose owner is gone
   (its process died, or its lease ran out) is interrupted. A waiting run
   has no owner: it is parked until it is due. */
static const char *shown_status(const sl_store_run *r, int64_t now_ms) {
  int active = strcmp(r->status, "running") == 0;
  if (active && !sl_owner_alive(r->owner, r->lease_ms, now_ms)) return "interrupted";
  return r->status;
}

static int push_row(lua_State *L, const sl_store_run *r, int whole) {
  lua_createtable(L, 0, 12);
  lua_pushstring(L, r->id);
  lua_setfield(L, -2, "run_id");
  lua_pushstring(L, r->pipeline);
  lua_setfield(L, -2, "pipeline");
  lua_pushstring(L, shown_status(r, sl_owner_now_ms()));
  lua_setfield(L, -2, "status");
  if (r->owner != NULL) {
    lua_pushstring(L, r->owner);
    lua_setfield(L, -2, "owner");
    lua_pushinteger(L, r->lease_ms);
    lua_setfield(L, -2, "lease_ms");
  }
  lua_pushinteger(L, r->epoch);
  lua_setfield(L, -2, "epoch");
  const char *strs[] = {r->queue, r->waiting_for, r->def_hash};
  const char *snames[] = {"queue", "waiting_for", "code_version"};
  for (int i = 0; i < 3; i++) {
    if (strs[i] == NULL) continue;
    lua_pushstring(L, strs[i]);
    lua_setfield(L, -2, snames[i]);
  }
  lua_pushinteger(L, r->started_ms);
  lua_setfield(L, -2, "started_ms");
  if (r->ended_ms) {
    lua_pushinteger(L, r->ended_ms);
    lua_setfield(L, -2, "ended_ms");
  }
  if (r->due_ms) {
    lua_pushinteger(L, r->due_ms);
    lua_setfield(L, -2, "due_ms");
  }
  const char *json[] = {r->usage, r->error, r->file, r->output, r->input};
  const char *names[] = {"usage", "error", "file", "output", "input"};
  for (int i = 0; i < (whole ? 5 : 3); i++) {
    if (json[i] == NULL) continue;
    if (i == 2) lua_pushstring(L, json[i]);
    else if (sl_json_decode(L, json[i], strlen(json[i])) != 0) {
      lua_pop(L, 1);
      continue;
    }
    lua_setfield(L, -2, names[i]);
  }
  if (whole && r->options != NULL && strstr(r->options, "\"fork\"") != NULL) {
    /* A forked run: the run and step execution it came from. The decode
       pushes the options, or a message. */
    if (sl_json_decode(L, r->options, strlen(r->options)) == 0 &&
        lua_getfield(L, -1, "fork") == LUA_TTABLE)
      lua_setfield(L, -3, "forked_from");
    else if (lua_istable(L, -1))
      lua_pop(L, 1);
    lua_pop(L, 1);
  }
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* A listing: the rows, and, for a listing by a status whose runs are told
   apart only here (running, interrupted), the one status wanted and how
   many may still be added. */
typedef struct row_list { lua_State *L; const char *want; int64_t left, skip; } row_list;

static int push_run_row(void *ud, const sl_store_run *r) {
  row_list *rl = ud;
  if (rl->want != NULL) {
    if (strcmp(shown_status(r, sl_owner_now_ms()), rl->want) != 0) return 0;
    if (rl->skip > 0) {
      rl->skip--;
      return 0;
    }
    if (rl->left == 0) return 1;   /* enough */
    if (rl->left > 0) rl->left--;
  }
  return push_row(rl->L, r, 0);
}

/* engine:runs([{status=, pipeline=, limit=, offset=, before=, queue=, text=}]): stored
   runs, newest first. */
static int e_runs(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  if (e->host.core.store == NULL) return luaL_error(L, "the engine has no store");
  sl_store_run_filter f = {0};
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "status");
    lua_getfield(L, 2, "pipeline");
    lua_getfield(L, 2, "limit");
    lua_getfield(L, 2, "before");
    lua_getfield(L, 2, "queue");
    lua_getfield(L, 2, "text");
    lua_getfield(L, 2, "offset");
    f.status = lua_tostring(L, -7);
    f.pipeline = lua_tostring(L, -6);
    f.limit = lua_tointeger(L, -5);
    f.before = lua_tostring(L, -4);
    f.queue = lua_tostring(L, -3);
    f.text = lua_tostring(L, -2);
    f.offset = lua_tointeger(L, -1);
    if (f.text != NULL && f.text[0] == '\0') f.text = NULL;
    if (f.limit < 0 || f.offset < 0)
      return luaL_error(L, "engine:runs: limit and offset must not be negative");
  }
  row_list rl = {L, NULL, -1, 0};
  if (f.status != NULL && (strcmp(f.status, "running") == 0 ||
                           strcmp(f.status, "interrupted") == 0)) {
    /* Which of these a run is depends on its owner: read them all and
       keep the wanted ones. */
    rl.want = f.status;
    rl.left = f.limit > 0 ? f.limit : -1;
    f.status = NULL;
    f.limit = 0;
    /* The offset counts wanted runs, which the store cannot tell apart. */
    rl.skip = f.offset;
    f.offset = 0;
  }
  lua_newtable(L);
  sl_json_pusharraymt(L);
  lua_setmetatable(L, -2);
  if (sl_store_run_list(e->host.core.store, &f, push_run_row, &rl) < 0)
    return luaL_error(L, "%s", sl_store_errmsg(e->host.core.store));
  return 1;
}

static int push_checkpoint(void *ud, const sl_store_checkpoint *c) {
  lua_State *L = ud;
  lua_createtable(L, 0, 12);
  const char *strs[] = {c->path, c->parent, c->name, c->kind, c->key, c->status};
  const char *names[] = {"path", "parent_path", "name", "kind", "key", "status"};
  for (int i = 0; i < 6; i++) {
    if (strs[i] == NULL) continue;
    lua_pushstring(L, strs[i]);
    lua_setfield(L, -2, names[i]);
  }
  lua_pushinteger(L, c->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushboolean(L, c->cached);
  lua_setfield(L, -2, "cached");
  lua_pushnumber(L, (double)(c->t1 - c->t0) / 1e6);
  lua_setfield(L, -2, "ms");
  lua_pushinteger(L, c->t0);
  lua_setfield(L, -2, "t0");
  if (c->epoch > 0) {
    lua_pushinteger(L, c->epoch);
    lua_setfield(L, -2, "epoch");
  }
  const char *json[] = {c->usage, c->error, c->output, c->logs, c->changes, c->input};
  const char *jn[] = {"usage", "error", "output", "logs", "changes", "input"};
  for (int i = 0; i < 6; i++) {
    if (json[i] == NULL) continue;
    if (sl_json_decode(L, json[i], strlen(json[i])) != 0) {
      lua_pop(L, 1);
      continue;
    }
    lua_setfield(L, -2, jn[i]);
  }
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* engine:show(run_id): the stored run and its step executions, or nil and
   a message. */
static int e_show(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  const char *id = luaL_checkstring(L, 2);
  if (e->host.core.store == NULL) return luaL_error(L, "the engine has no store");
  sl_store_run *row;
  int rc = sl_store_run_get(e->host.core.store, id, &row);
  if (rc != 0) {
    lua_pushnil(L);
    if (rc == SL_STORE_ENOTFOUND) lua_pushfstring(L, "no run with id '%s' in %s", id, sl_store_path(e->host.core.store));
    else lua_pushstring(L, sl_store_errmsg(e->host.core.store));
    return 2;
  }
  lua_newtable(L);
  push_row(L, row, 1);
  sl_store_run_free(row);
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);                                    /* run */
  lua_newtable(L);
  sl_json_pusharraymt(L);
  lua_setmetatable(L, -2);
  if (sl_store_checkpoint_list(e->host.core.store, id, push_checkpoint, L) < 0)
    return luaL_error(L, "%s", sl_store_errmsg(e->host.core.store));
  sl_record_push_waits(L, &e->host.core, id);
  return 3;
}

static int push_cache_step(void *ud, const char *step, const sl_store_cache_totals *st) {
  lua_State *L = ud;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, step);
  lua_setfield(L, -2, "step");
  lua_pushinteger(L, st->entries);
  lua_setfield(L, -2, "entries");
  lua_pushinteger(L, st->bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, st->hits);
  lua_setfield(L, -2, "hits");
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* engine:cache_stats(): the persistent tier's totals and per-step counts,
   and the in-memory tier's. */
static int e_cache_stats(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  lua_createtable(L, 0, 3);
  if (e->host.core.store != NULL) {
    sl_store_cache_totals total;
    lua_newtable(L);
    sl_json_pusharraymt(L);
    lua_setmetatable(L, -2);
    if (sl_store_cache_stats(e->host.core.store, &total, push_cache_step, L) < 0)
      return luaL_error(L, "%s", sl_store_errmsg(e->host.core.store));
    lua_setfield(L, -2, "steps");
    lua_pushinteger(L, total.entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, total.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, total.hits);
    lua_setfield(L, -2, "hits");
  }
  if (e->host.core.cache != NULL) {
    sl_cache_stats m;
    sl_cache_get_stats(e->host.core.cache, &m);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)m.entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)m.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)m.hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)m.misses);
    lua_setfield(L, -2, "misses");
    lua_pushinteger(L, (lua_Integer)m.evictions);
    lua_setfield(L, -2, "evictions");
    lua_setfield(L, -2, "memory");
  }
  return 1;
}

/* engine:cache_clear([step]): drops cached outputs (of one step, or all),
   in both tiers; returns how many the store held. */
static int e_cache_clear(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  const char *step = luaL_optstring(L, 2, NULL);
  int64_t removed = 0;
  if (e->host.core.cache != NULL) sl_cache_clear(e->host.core.cache, step);
  if (e->host.core.store != NULL && sl_store_cache_clear(e->host.core.store, step, &removed) != 0)
    return luaL_error(L, "%s", sl_store_errmsg(e->host.core.store));
  if (e->host.core.store != NULL) sl_store_flush(e->host.core.store);
  lua_pushinteger(L, removed);
  return 1;
}

static sl_store *store_of(lua_State *L, sl_engine *e) {
  if (e->host.core.store == NULL) luaL_error(L, "the engine has no store");
  return e->host.core.store;
}

/* engine:prune{older_than_ms=, status=, keep=, pipeline=}: deletes ended
   runs and what only they refer to; returns how many runs went. */
static int e_prune(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_store *s = store_of(L, e);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "older_than_ms");
  lua_getfield(L, 2, "status");
  lua_getfield(L, 2, "keep");
  lua_getfield(L, 2, "pipeline");
  int64_t removed = 0;
  if (sl_store_prune(s, (int64_t)lua_tointeger(L, -4), lua_tostring(L, -3),
                     (int64_t)lua_tointeger(L, -2), lua_tostring(L, -1), &removed) != 0)
    return luaL_error(L, "%s", sl_store_errmsg(s));
  lua_pushinteger(L, (lua_Integer)removed);
  return 1;
}

/* engine:store_stats(): what the store holds, by kind. */
static int e_store_stats(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_store *s = store_of(L, e);
  sl_store_stats st;
  if (sl_store_get_stats(s, &st) != 0) return luaL_error(L, "%s", sl_store_errmsg(s));
  struct { const char *k; int64_t v; } f[] = {
    {"runs", st.runs}, {"run_bytes", st.run_bytes}, {"checkpoints", st.checkpoints},
    {"checkpoint_bytes", st.checkpoint_bytes}, {"waits", st.waits},
    {"values", st.values}, {"value_bytes", st.value_bytes},
    {"cache_entries", st.cache_entries}, {"cache_bytes", st.cache_bytes},
    {"file_bytes", st.file_bytes}};
  lua_createtable(L, 0, 10);
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    lua_pushinteger(L, (lua_Integer)f[i].v);
    lua_setfield(L, -2, f[i].k);
  }
  lua_pushstring(L, sl_store_path(s));
  lua_setfield(L, -2, "path");
  return 1;
}

/* engine:store_check(): true, or false and what is damaged. */
static int e_store_check(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_store *s = store_of(L, e);
  if (sl_store_check(s) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, sl_store_errmsg(s));
  return 2;
}

/* engine:store_vacuum(): gives the space of deleted rows back. */
static int e_store_vacuum(lua_State *L) {
  sl_engine *e = sl_engine_check(L, 1);
  sl_store *s = store_of(L, e);
  if (sl_store_vacuum(s) != 0) return luaL_error(L, "%s", sl_store_errmsg(s));
  return 0;
}

static const luaL_Reg engine_methods[] = {
  {"prune", e_prune},
  {"store_stats", e_store_stats},
  {"store_check", e_store_check},
  {"store_vacuum", e_store_vacuum},
  {"cache_stats", e_cache_stats},
  {"cache_clear", e_cache_clear},
  {"set_store", e_set_store},
  {"set_retain", e_set_retain},
  {"set_trace", e_set_trace},
  {"set_otlp", e_set_otlp},
  {"set_clock", e_set_clock},
  {"advance", e_advance},
  {"flush_spans", e_flush_spans},
  {"resume", e_resume},
  {"fork", e_fork},
  {"submit", e_submit},
  {"runs", e_runs},
  {"show", e_show},
  {"reload", e_reload},
  {"files", e_files},
  {"watch", e_watch},
  {"stats", e_stats},
  {"run", e_run},
  {"start", e_start},
  {"poll", e_poll},
  {"fd", e_fd},
  {"timeout", e_timeout},
  {"load", e_load},
  {"check", e_check},
  {"kind", e_kind},
  {"kinds", e_kinds},
  {"pipelines", e_pipelines},
  {"active", e_active},
  {"result_json", e_result_json},
  {NULL, NULL}
};

static int l_default_engine(lua_State *L) {
  sl_engine_push_default(L);
  return 1;
}

/* memory_bytes(limit): a memory limit (a number of bytes, or a string
   with a unit: "64MB") in bytes; raises with what was expected. */
static int l_memory_bytes(lua_State *L) {
  size_t bytes;
  char err[300];
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, 1);
    if (!(n > 0) || n > 1e18 || n != (lua_Number)(lua_Integer)n)
      return luaL_error(L, "memory_limit must be a whole number of bytes or a size "
                           "with a unit such as \"64MB\", got %s", lua_tostring(L, 1));
    bytes = (size_t)n;
    if (sl_memory_check(bytes, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    if (sl_memory_parse(lua_tostring(L, 1), 1, &bytes, err, sizeof err) != 0)
      return luaL_error(L, "%s", err);
  } else {
    return luaL_error(L, "memory_limit must be a number of bytes or a size with a unit "
                         "such as \"64MB\", got %s", luaL_typename(L, 1));
  }
  lua_pushinteger(L, (lua_Integer)bytes);
  return 1;
}

/* new_engine([memory_limit_bytes[, store]]) */
static int l_new_engine(lua_State *L) {
  lua_Integer limit = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, limit >= 0, 1, "memory limit must not be negative");
  sl_engine_push_new(L, (size_t)limit, luaL_optstring(L, 2, NULL));
  return 1;
}

/* memory_used(): the bytes the state holds, as the memory cap counts them
   (0 when no cap was ever set). */
static int l_memory_used(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)sl_memory_used(L));
  return 1;
}

/* json_encode(value[, pretty]) -> text | nil, message */
static int l_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int flags = lua_toboolean(L, 2) ? SL_JSON_PRETTY : 0;
  sl_buf b;
  char err[256];
  sl_buf_init(&b);
  lua_settop(L, 1);
  if (sl_json_encode(L, 1, &b, flags, err, sizeof err) != 0) {
    sl_buf_free(&b);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushlstring(L, b.data, b.len);
  sl_buf_free(&b);
  return 1;
}

/* json_decode(text) -> value | nil, message */
static int l_json_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (sl_json_decode(L, s, len) != 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  return 1;
}

/* error(kind, message): an error table, for steps to raise a kind. */
static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  luaL_where(L, 1);
  const char *where = lua_tostring(L, -1);
  size_t wl = strlen(where);
  if (wl >= 2) lua_pushlstring(L, where, wl - 2);       /* drop ": " */
  else lua_pushnil(L);
  sl_error_push(L, kind, msg, NULL, lua_tostring(L, -1));
  return 1;
}

/* secret_env(name): ctx:exec children do not inherit the variable name
   unless their env names it. */
static int l_secret_env(lua_State *L) {
  sl_exec_secret(L, luaL_checkstring(L, 1));
  return 0;
}

/* copy(value): a deep copy; a state view becomes the plain table of all
   it shows. */
static int l_copy(lua_State *L) {
  luaL_checkany(L, 1);
  sl_state_copy(L, 1);
  return 1;
}

/* prepare(step): works out once what every execution of the step shares
   (its plan); the DSL calls it for every step it builds, so a bad option
   is refused where the step is written. Returns the step. */
static int l_prepare(lua_State *L) {
  sl_plan_push(L, 1);
  lua_settop(L, 1);
  return 1;
}

/* suggest(name, set): the key of set closest to name, likely a typo of it,
   or nil. */
static int l_suggest(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *cands[256];
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, 2) && n < 256) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) cands[n++] = lua_tostring(L, -1);
  }
  lua_settop(L, 2);
  const char *best = sl_suggest(name, cands, n);
  if (best == NULL) return 0;
  lua_pushstring(L, best);
  return 1;
}

/* normalize_error(e): the error table a raised value becomes (its kind,
   message, where and fields), as the engine reports it. */
static int l_normalize_error(lua_State *L) {
  lua_settop(L, 1);
  /* A memory error caught by pcall reaches Lua as this message alone. */
  int status = lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "not enough memory") == 0
                   ? LUA_ERRMEM : LUA_ERRRUN;
  sl_error_normalize(L, 1, status, NULL);
  return 1;
}

/* collect(ctx): the spawned children of ctx's step end into its completion
   queue from now on. next_done(ctx): the handle of the next child to end,
   in the order they end, waiting; nil when none runs or is queued. */
static int l_collect(lua_State *L) {
  sl_step_collect(sl_ctx_check(L, 1));
  return 0;
}

static int l_next_done(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_settop(L, 1);
  return sl_step_next_done(L, x);
}

/* wall_ms(): Unix time in milliseconds. */
static int l_wall_ms(lua_State *L) {
  /* On the virtual clock, the wall clock durable waits are due by. */
  lua_pushinteger(L, (lua_Integer)(sl_owner_now_ms() + sl_clock_skew_ms()));
  return 1;
}

/* now(): monotonic time in seconds, for timing (on the virtual clock
   while one runs). */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)sl_now() / 1e9);
  return 1;
}

/* abort(reason): ends the whole run of the calling step at once, with
   status cancelled; no retry, validator, fallback or pcall catches it. */
static int l_abort(lua_State *L) {
  const char *why = luaL_optstring(L, 1, "aborted");
  return sl_attempt_abort(L, why);
}

/* set_runners(attempt, fallback): the Lua functions that run an attempt
   with validators and a step's fallback (lua/sluice/policies.lua). */
static int l_set_runners(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "sluice.attempt_runner");
  lua_pushvalue(L, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, "sluice.fallback_runner");
  return 0;
}

/* loading_engine(): the engine whose load is in progress, or nil. */
static int l_loading_engine(lua_State *L) {
  sl_reload_push_loading(L);
  return 1;
}

/* note_file(path): the load in progress also depends on path (an import),
   so a watch reloads when it changes. */
static int l_note_file(lua_State *L) {
  sl_reload_note_file(L, luaL_checkstring(L, 1));
  return 0;
}

/* ctx_methods(): the table of the methods every ctx has, or nil. */
static int l_ctx_methods(lua_State *L) {
  sl_ctx_push_methods(L);
  return 1;
}

static const luaL_Reg core_funcs[] = {
  {"ctx_methods", l_ctx_methods},
  {"loading_engine", l_loading_engine},
  {"note_file", l_note_file},
  {"abort", l_abort},
  {"memory_used", l_memory_used},
  {"set_runners", l_set_runners},
  {"now", l_now},
  {"wall_ms", l_wall_ms},
  {"default_engine", l_default_engine},
  {"new_engine", l_new_engine},
  {"json_encode", l_json_encode},
  {"json_decode", l_json_decode},
  {"copy", l_copy},
  {"prepare", l_prepare},
  {"suggest", l_suggest},
  {"normalize_error", l_normalize_error},
  {"collect", l_collect},
  {"next_done", l_next_done},
  {"load_pipeline", sl_load_pipeline_lua},
  {"memory_bytes", l_memory_bytes},
  {"secret_env", l_secret_env},
  {"error", l_error},
  {NULL, NULL}
};

int luaopen_sluice_core(lua_State *L) {
  sl_engine_open_shared(L);
  luaL_getmetatable(L, SL_ENGINE_MT);
  luaL_newlib(L, engine_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, core_funcs);
  luaL_getmetatable(L, SL_STEP_MT);
  lua_setfield(L, -2, "step_mt");
  luaL_getmetatable(L, SL_HANDLE_MT);
  lua_setfield(L, -2, "task_mt");
  luaL_getmetatable(L, SL_ERROR_MT);
  lua_setfield(L, -2, "error_mt");
  sl_json_pusharraymt(L);
  lua_setfield(L, -2, "array_mt");
  sl_json_pushnull(L);
  lua_setfield(L, -2, "null");
  sl_state_push_deleted(L);
  lua_setfield(L, -2, "state_deleted");
  lua_pushinteger(L, SL_MAX_FALLBACK_DEPTH);
  lua_setfield(L, -2, "max_fallback_depth");
  lua_pushliteral(L, SLUICE_VERSION);
  lua_setfield(L, -2, "version");
  sl_pattern_open(L);
  return 1;
}
