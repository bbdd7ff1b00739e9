/*
** The composition root. It makes an engine out of a Lua state, an event
** loop, a policy table and the scheduler's pools, and takes it apart again.
** The public C API over it is api.c. No step-kind logic lives here.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "engine.h"
#include "attempt.h"
#include "ctx.h"
#include "dispatch.h"
#include "error.h"
#include "exec.h"
#include "http.h"
#include "kinds.h"
#include "loader.h"
#include "durable.h"
#include "trace.h"
#include "cache.h"
#include "memory.h"
#include "reload.h"
#include "run.h"
#include "scheduler.h"
#include "value.h"

#ifndef SLUICE_LUA_DIR
#define SLUICE_LUA_DIR "lua"
#endif

#define DEFAULT_KEY SL_DEFAULT_ENGINE_KEY

/* The Lua side of an engine: a box pointing at the C block. */
typedef struct engine_box {
  sl_engine *e;
  int owns;            /* collecting the box tears the engine down */
} engine_box;

int sl_engine_fail(sl_engine *e, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->errmsg, sizeof e->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int sl_engine_protect(sl_engine *e, lua_CFunction fn, void *ud) {
  lua_State *L = e->L;
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    sl_engine_fail(e, SL_EINVAL, "%s", msg ? msg : "engine error");
    lua_pop(L, 1);
  }
  return status;
}

sl_engine *sl_engine_check(lua_State *L, int idx) {
  engine_box *box = luaL_checkudata(L, idx, SL_ENGINE_MT);
  if (box->e == NULL) luaL_error(L, "the engine has been closed");
  return box->e;
}

static int new_ref_table(lua_State *L) {
  lua_newtable(L);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Makes an engine in L (on loop, or on a loop of its own when loop is
   NULL) and pushes its box. Raises on failure. */
static sl_engine *engine_create(lua_State *L, uv_loop_t *loop, int owns) {
  engine_box *box = lua_newuserdatauv(L, sizeof *box, 0);   /* box */
  box->e = NULL;
  box->owns = owns;
  luaL_setmetatable(L, SL_ENGINE_MT);
  sl_engine *e = calloc(1, sizeof *e);
  if (e == NULL) luaL_error(L, "not enough memory for an engine");
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  e->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (loop != NULL) {
    e->loop = loop;
  } else {
    int rc = uv_loop_init(&e->own_loop);
    if (rc != 0) {
      free(e);
      luaL_error(L, "cannot create an event loop: %s", uv_strerror(rc));
    }
    e->loop = &e->own_loop;
    e->owns_loop = 1;
  }
  box->e = e;
  /* Every engine counts its state's memory, so a cap can be set at any
     time; the cap refuses only what steps ask for (attempt.c). */
  e->shared = sl_sched_shared_of(L);
  if (uv_random(NULL, NULL, &e->rng, sizeof e->rng, 0, NULL) != 0 || e->rng == 0)
    e->rng = uv_hrtime() | 1;
  sl_memory_limit(L, sl_memory_get_limit(L));
  sl_memory_set_refuse(L, sl_attempt_memory_refused, e->shared);
  e->shared->engines++;
  e->ref_threads = new_ref_table(L);
  e->ref_ctxs = new_ref_table(L);
  e->ref_pipelines = new_ref_table(L);
  e->ref_files = new_ref_table(L);
  e->ref_watch_cb = LUA_NOREF;
  e->ref_runs = new_ref_table(L);
  lua_newtable(L);
  sl_kinds_register(L, -1);
  e->ref_kinds = luaL_ref(L, LUA_REGISTRYINDEX);
  sl_ctx_open(L, e);
  sl_exec_open(L, e); sl_http_open(L, e);
  if (sl_cache_new(L, 0, &e->cache) != 0) e->cache = NULL;  /* runs uncached */
  lua_pushvalue(L, -1);
  e->ref_box = luaL_ref(L, LUA_REGISTRYINDEX);
  return e;
}

/* Frees the C block once nothing refers to it: the engine is torn down and
   every handle it opened has closed. */
static void engine_release(sl_engine *e) {
  if (e->closing != 2 || e->handles_open > 0) return;
  if (e->owns_loop) uv_loop_close(e->loop);
  free(e);
}

void sl_engine_handle_closed(sl_engine *e) {
  e->handles_open--;
  engine_release(e);
}

/*
** Tears the engine down: ends its runs, drops its registry refs and closes
** its handles. On its own loop, the loop runs until they have closed; on a
** host's loop, the block is freed by the last close callback.
*/
void sl_engine_destroy(sl_engine *e, int lua_alive) {
  lua_State *L = e->L;
  e->closing = 1;
  if (lua_alive) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_box);
    engine_box *box = lua_touserdata(L, -1);
    if (box != NULL) box->e = NULL;
    lua_pop(L, 1);
    for (sl_run *r = e->runs; r != NULL; r = r->next)
      if (r->status == SL_RUN_RUNNING)
        sl_run_abandon(r, "interrupted", "the engine was shut down");
    /* A host may read its runs' results after freeing the engine. */
    for (sl_run *r = e->runs; r != NULL; r = r->next)
      if (r->ref_host != LUA_NOREF) sl_run_result_json(r);
    sl_http_close(e);
    int refs[] = {e->ref_threads, e->ref_ctxs, e->ref_pipelines, e->ref_runs,
                  e->ref_kinds, e->ref_ctxmt, e->ref_box, e->ref_files,
                  e->ref_watch_cb};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
      luaL_unref(L, LUA_REGISTRYINDEX, refs[i]);
  }
  for (sl_run *r = e->runs; r != NULL; r = r->next) r->e = NULL;
  e->runs = NULL;
  /* The last engine of a host's state gives it back its own allocator. */
  if (e->shared != NULL && --e->shared->engines == 0 && lua_alive) sl_memory_remove(L);
  sl_reload_unwatch(e);
  sl_durable_close(e);
  if (e->trace != NULL) {
    char err[300];
    if (sl_trace_close(e->trace, err, sizeof err) != 0)
      fprintf(stderr, "sluice: closing the trace: %s\n", err);
    e->trace = NULL;
  }
  if (e->cache != NULL && lua_alive) sl_cache_free(e->cache);
  e->cache = NULL;
  free(e->load_path);
  e->load_path = NULL;
  sl_sched_close(e);
  /* On its own loop the engine runs the close callbacks now, while closing
     is still 1 so that none of them frees the block under this frame. */
  if (e->owns_loop) uv_run(e->loop, UV_RUN_DEFAULT);
  e->closing = 2;
  engine_release(e);
}

static int box_gc(lua_State *L) {
  engine_box *box = luaL_checkudata(L, 1, SL_ENGINE_MT);
  if (box->e != NULL && box->owns) {
    sl_engine *e = box->e;
    box->e = NULL;
    sl_engine_destroy(e, 1);
  }
  return 0;
}

/* Registers the metatables every engine in this state shares. */
static void open_shared(lua_State *L) {
  if (luaL_newmetatable(L, SL_ENGINE_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, SL_STEP_MT);
  lua_pop(L, 1);
  luaL_newmetatable(L, SL_HANDLE_MT);
  lua_pop(L, 1);
  sl_error_open(L);
  sl_run_open(L);
}

/* Caps L's state at limit bytes, refusing one that cannot be meant or
   that the state already holds more than. what names the option. */
static void cap(lua_State *L, size_t limit, const char *what) {
  char err[300];
  if (sl_memory_check(limit, err, sizeof err) != 0) luaL_error(L, "%s: %s", what, err);
  size_t used = sl_memory_used(L);
  if (limit <= used)
    luaL_error(L, "%s: a limit of %.1f MB is below the %.1f MB the engine's state "
               "already holds", what, (double)limit / 1048576.0, (double)used / 1048576.0);
  sl_memory_limit(L, limit);
}

/* Pushes the default engine of L's state, making one if needed. */
void sl_engine_push_default(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_KEY) == LUA_TUSERDATA) return;
  lua_pop(L, 1);
  open_shared(L);
  engine_create(L, NULL, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_KEY);
}

/* Pushes a new engine (own loop) owned by its box. */
void sl_engine_push_new(lua_State *L, size_t memory_limit, const char *store) {
  open_shared(L);
  sl_engine *e = engine_create(L, NULL, 1);
  if (memory_limit > 0) cap(L, memory_limit, "memory_limit");
  if (sl_durable_open(e, store, 1) != 0) luaL_error(L, "%s", e->errmsg);
}

void sl_engine_set_store(lua_State *L, sl_engine *e, const char *store, int check) {
  sl_durable_close(e);
  if (sl_durable_open(e, store, check) != 0) luaL_error(L, "%s", e->errmsg);
}

void sl_engine_open_shared(lua_State *L) {
  open_shared(L);
}

/* Lets `require "sluice"` find the Lua side and the C module in a state
   the engine made. */
void sl_engine_prepare_state(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_sluice_core);
  lua_setfield(L, -2, "sluice.core");
  lua_pop(L, 1);
  const char *dir = getenv("SLUICE_LUA_DIR");
  if (dir == NULL || *dir == '\0') dir = SLUICE_LUA_DIR;
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

/* Makes the default engine of L's state for a C host, as opts say, and
   loads the DSL into it. Raises on failure, with *out set as far as it got
   (NULL, or an engine for the caller to destroy). */
void sl_engine_make(lua_State *L, const sl_engine_options *opts, sl_engine **out) {
  open_shared(L);
  *out = engine_create(L, opts ? opts->loop : NULL, 0);
  if (opts && opts->memory_limit > 0) cap(L, opts->memory_limit, "sl_engine_options.memory_limit");
  if (opts && opts->store && sl_durable_open(*out, opts->store, 1) != 0)
    luaL_error(L, "%s", (*out)->errmsg);
  lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_KEY);
  /* The DSL module binds to the default engine and adds the kinds written
     in Lua to it. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice");
  lua_call(L, 1, 0);
}

/* Loads and checks a pipeline file (reload.c): only a file that loads and
   checks whole replaces the engine's pipelines and policy table. Pushes the
   pipelines. */
void sl_engine_load_lua(lua_State *L, sl_engine *e, const char *path) {
  sl_reload_load(L, e, path);
}

/*
** Pushes the JSON text of the result of the run at idx (the whole result
** with its steps). An output that JSON cannot carry turns the result into
** a failed one whose error says why, so a JSON reader never gets a result
** that lies about its output.
*/
void sl_engine_result_json(lua_State *L, sl_run *r, int idx, int flags) {
  idx = lua_absindex(L, idx);
  sl_run_push_result(L, r, idx);                        /* result */
  lua_getfield(L, -1, "steps");
  lua_pop(L, 1);
  sl_buf b;
  char err[256];
  sl_buf_init(&b);
  if (sl_json_encode(L, -1, &b, flags, err, sizeof err) != 0) {
    lua_getfield(L, -1, "output");
    sl_buf_reset(&b);
    int bad_output = sl_json_encode(L, -1, &b, 0, err, sizeof err) != 0;
    lua_pop(L, 1);
    sl_buf_reset(&b);
    if (bad_output) {
      char msg[400];
      snprintf(msg, sizeof msg, "the output cannot be encoded as JSON: %s", err);
      lua_pushnil(L);
      lua_setfield(L, -2, "output");
      lua_pushliteral(L, "failed");
      lua_setfield(L, -2, "status");
      sl_error_push(L, "error", msg, r->pipeline, NULL);
      lua_setfield(L, -2, "error");
      if (r->status == SL_RUN_COMPLETED) r->status = SL_RUN_FAILED;
    }
    if (sl_json_encode(L, -1, &b, flags, err, sizeof err) != 0) {
      sl_buf_free(&b);
      luaL_error(L, "the result cannot be encoded as JSON: %s", err);
    }
  }
  lua_pushlstring(L, b.data, b.len);
  sl_buf_free(&b);
  lua_remove(L, -2);
}
