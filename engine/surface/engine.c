/*
** The composition root. It makes an engine out of a Lua state and an event
** loop: the scheduler with the lifecycle's hooks, the core's mechanisms
** (cache, store, trace), the runs layer with its hooks and the ctx
** services; and it takes them apart again. No step logic lives here.
*/
#define _GNU_SOURCE   /* dladdr */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "engine.h"
#include "attempt.h"
#include "ctx.h"
#include "durable.h"
#include "error.h"
#include "exec.h"
#include "http.h"
#include "otlp.h"
#include "kinds.h"
#include "lifecycle.h"
#include "memory.h"
#include "reload.h"
#include "state.h"
#include "result.h"
#include "run.h"

#ifndef SLUICE_LUA_DIR
#define SLUICE_LUA_DIR "lua"
#endif
/* Where the installed Lua files are, relative to the installed library and
   to the installed command (CMake computes both from the install dirs). */
#ifndef SLUICE_LUA_FROM_LIB
#define SLUICE_LUA_FROM_LIB "../share/lua/5.4"
#endif
#ifndef SLUICE_LUA_FROM_BIN
#define SLUICE_LUA_FROM_BIN "../share/lua/5.4"
#endif

#ifndef SLUICE_BUILD_DIR
#define SLUICE_BUILD_DIR ""
#endif

/* The directory of the Lua side: SLUICE_LUA_DIR in the environment; else
   the installed files next to the file this code is in (the library, or
   the command it is linked into), found from its own path, so a package
   works from any prefix; else, for a binary still in the build tree, the
   source tree. An installed binary never reads the source tree. */
static const char *lua_dir(char *buf, size_t size) {
  const char *env = getenv("SLUICE_LUA_DIR");
  if (env != NULL && *env != '\0') return env;
  Dl_info info;
  if (dladdr((void *)lua_dir, &info) == 0 || info.dli_fname == NULL) return SLUICE_LUA_DIR;
  char self[4096];
  if (realpath(info.dli_fname, self) == NULL)
    snprintf(self, sizeof self, "%s", info.dli_fname);
  size_t nb = strlen(SLUICE_BUILD_DIR);
  if (nb > 0 && strncmp(self, SLUICE_BUILD_DIR, nb) == 0 && self[nb] == '/')
    return SLUICE_LUA_DIR;
  char *slash = strrchr(self, '/');
  if (slash == NULL) return SLUICE_LUA_DIR;
  *slash = '\0';
  const char *rel[] = {SLUICE_LUA_FROM_LIB, SLUICE_LUA_FROM_BIN};
  for (int i = 0; i < 2; i++) {
    char probe[4200];
    snprintf(buf, size, "%s/%s", self, rel[i]);
    snprintf(probe, sizeof probe, "%s/sluice/init.lua", buf);
    if (access(probe, R_OK) == 0) return buf;
  }
  snprintf(buf, size, "%s/%s", self, rel[0]);
  return buf;
}

/* The Lua side of an engine: a box pointing at the C block. */
typedef struct engine_box {
  sl_engine *e;
  int owns;            /* collecting the box tears the engine down */
} engine_box;

int sl_engine_fail(sl_engine *e, int code, const char *fmt, ...) {
  sl_core *c = sl_engine_core(e);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  return code;
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

/* Frees the C block once the engine is torn down and every handle it
   opened has closed. */
static void all_closed(void *ud) {
  sl_engine *e = ud;
  if (e->teardown != 2) return;
  if (e->host.owns_loop) uv_loop_close(e->host.core.loop);
  free(e->runs_json);
  free(e);
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
  sl_host *h = &e->host;
  sl_core *c = &h->core;
  if (loop == NULL) {
    int rc = uv_loop_init(&e->own_loop);
    if (rc != 0) {
      free(e);
      luaL_error(L, "cannot create an event loop: %s", uv_strerror(rc));
    }
    loop = &e->own_loop;
    h->owns_loop = 1;
  }
  box->e = e;
  e->handles.all_closed = all_closed;
  e->handles.ud = e;
  e->ref_watch_cb = LUA_NOREF;
  /* The step layer, then what the composition root adds to it. */
  sl_step_open(L, c, loop, &e->handles);
  c->run_hooks = &sl_run_hooks_of_host;
  lua_newtable(L);
  sl_kinds_register(L, -1);
  c->ref_kinds = luaL_ref(L, LUA_REGISTRYINDEX);
  sl_exec_open(L, c);
  sl_http_open(L, c);
  if (sl_cache_new(L, 0, &c->cache) != 0) c->cache = NULL;  /* runs uncached */
  /* The runs layer. */
  h->ref_pipelines = new_ref_table(L);
  h->ref_files = new_ref_table(L);
  lua_pushvalue(L, -1);
  h->ref_box = luaL_ref(L, LUA_REGISTRYINDEX);
  return e;
}

void sl_engine_destroy(sl_engine *e, int lua_alive) {
  sl_host *h = &e->host;
  sl_core *c = &h->core;
  lua_State *L = c->L;
  e->teardown = 1;
  c->closing = 1;
  if (lua_alive) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_box);
    engine_box *box = lua_touserdata(L, -1);
    if (box != NULL) box->e = NULL;
    lua_pop(L, 1);
    for (sl_run *r = c->runs; r != NULL; r = r->next)
      if (r->status == SL_RUN_RUNNING && !r->awaiting_record)
        sl_step_stop_run(r, "interrupted", "the engine was shut down");
    /* Their ends are written before they are let go. */
    sl_durable_sync(c);
    /* A host may read its runs' results after freeing the engine. */
    for (sl_run *r = c->runs; r != NULL; r = r->next)
      if (r->ref_host != LUA_NOREF) sl_result_keep(L, r);
    /* Requests still in flight end (as not sent) before the exporter
       that counts them goes. */
    sl_http_close(c);
    if (h->otlp != NULL) {
      if (c->trace != NULL) sl_trace_set_sink(c->trace, NULL, NULL);
      sl_otlp_close(h->otlp);
      h->otlp = NULL;
    }
    int refs[] = {h->ref_pipelines, h->ref_files, h->ref_box, c->ref_kinds,
                  c->ref_ctxmt, e->ref_watch_cb};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
      luaL_unref(L, LUA_REGISTRYINDEX, refs[i]);
  }
  for (sl_run *r = c->runs; r != NULL; r = r->next) r->core = NULL;
  c->runs = NULL;
  /* The last engine of a host's state gives it back its own allocator. */
  if (--c->sched.shared->engines == 0 && lua_alive) sl_memory_remove(L);
  sl_reload_unwatch(h);
  sl_durable_close(c);
  if (c->trace != NULL) {
    char err[300];
    sl_trace_close(c->trace, err, sizeof err);
    c->trace = NULL;
  }
  if (c->cache != NULL && lua_alive) sl_cache_free(c->cache);
  c->cache = NULL;
  free(h->load_path);
  h->load_path = NULL;
  sl_sched_close(&c->sched);
  /* On its own loop the engine runs the close callbacks now, while the
     teardown is not over so that none of them frees the block under this
     frame. */
  e->handles.open++;
  if (h->owns_loop) uv_run(c->loop, UV_RUN_DEFAULT);
  e->teardown = 2;
  sl_handles_closed(&e->handles);
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

void sl_engine_open_shared(lua_State *L) {
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

void sl_engine_set_memory_limit(lua_State *L, sl_engine *e, size_t limit, const char *what) {
  char err[300];
  (void)e;
  if (sl_memory_check(limit, err, sizeof err) != 0) luaL_error(L, "%s: %s", what, err);
  size_t used = sl_memory_used(L);
  if (limit <= used)
    luaL_error(L, "%s: a limit of %.1f MB is below the %.1f MB the engine's state "
               "already holds", what, (double)limit / 1048576.0, (double)used / 1048576.0);
  sl_memory_limit(L, limit);
}

int sl_engine_set_trace(sl_engine *e, const char *path, char *err, size_t errlen) {
  sl_core *c = sl_engine_core(e);
  if (c->trace != NULL) {
    char ignored[300];
    sl_trace_close(c->trace, ignored, sizeof ignored);
    c->trace = NULL;
  }
  sl_otlp *o = sl_host_of(c)->otlp;
  if (path == NULL) {
    /* The exporter goes on with a trace of its own. */
    if (o != NULL && sl_trace_open_sink(&c->trace) == 0) sl_otlp_attach(o, c->trace);
    return 0;
  }
  if (sl_trace_open(path, &c->trace, err, errlen) != 0) {
    c->trace = NULL;
    if (o != NULL && sl_trace_open_sink(&c->trace) == 0) sl_otlp_attach(o, c->trace);
    return -1;
  }
  if (o != NULL) sl_otlp_attach(o, c->trace);
  return 0;
}

int sl_engine_set_otlp(sl_engine *e, const char *endpoint, char *err, size_t errlen) {
  sl_core *c = sl_engine_core(e);
  sl_host *h = &e->host;
  if (h->otlp != NULL) {
    sl_otlp_flush(h->otlp);
    if (c->trace != NULL) sl_trace_set_sink(c->trace, NULL, NULL);
    sl_otlp_close(h->otlp);
    h->otlp = NULL;
  }
  if (endpoint == NULL) return 0;
  if (sl_otlp_open(c, endpoint, &h->otlp, err, errlen) != 0) return -1;
  if (c->trace == NULL && sl_trace_open_sink(&c->trace) != 0) {
    snprintf(err, errlen, "not enough memory for the trace");
    sl_otlp_close(h->otlp);
    h->otlp = NULL;
    return -1;
  }
  sl_otlp_attach(h->otlp, c->trace);
  return 0;
}

int64_t sl_engine_otlp_finish(sl_engine *e, int timeout_ms, char *msg, size_t msglen) {
  sl_host *h = &e->host;
  if (msglen) msg[0] = '\0';
  if (h->otlp == NULL) return 0;
  sl_otlp_flush(h->otlp);
  int64_t sent, dropped, inflight;
  const char *why;
  uint64_t until = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  sl_otlp_counts(h->otlp, &sent, &dropped, &inflight, &why);
  /* On its own loop, the engine waits for the answers; a host's loop
     brings them as it turns. */
  while (inflight > 0 && h->owns_loop && uv_hrtime() < until) {
    uv_run(e->host.core.loop, UV_RUN_ONCE);
    sl_otlp_counts(h->otlp, &sent, &dropped, &inflight, &why);
  }
  if (inflight > 0) {
    dropped += inflight;
    why = "the collector did not answer in time";
  }
  if (dropped > 0 && msglen)
    snprintf(msg, msglen, "%lld span%s not exported to %s: %s", (long long)dropped,
             dropped == 1 ? " was" : "s were", sl_otlp_url(h->otlp), why);
  return dropped;
}

void sl_engine_set_cache_all(sl_engine *e, int on) {
  sl_engine_core(e)->cache_all = on;
}

void sl_engine_push_default(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, SL_DEFAULT_ENGINE_KEY) == LUA_TUSERDATA) return;
  lua_pop(L, 1);
  sl_engine_open_shared(L);
  sl_engine *e = engine_create(L, NULL, 1);
  /* Made here, for a `require "sluice"` in a plain interpreter: its store
     is the one SLUICE_STORE names, if any. An engine a host made (the CLI,
     an embedding) has the store its host chose, and nothing else. */
  const char *store = getenv("SLUICE_STORE");
  if (store != NULL && *store != '\0' && sl_durable_open(sl_engine_core(e), store, 0) != 0)
    luaL_error(L, "%s", sl_engine_core(e)->errmsg);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, SL_DEFAULT_ENGINE_KEY);
}

void sl_engine_push_new(lua_State *L, size_t memory_limit, const char *store) {
  sl_engine_open_shared(L);
  sl_engine *e = engine_create(L, NULL, 1);
  if (memory_limit > 0) sl_engine_set_memory_limit(L, e, memory_limit, "memory_limit");
  if (sl_durable_open(sl_engine_core(e), store, 0) != 0)
    luaL_error(L, "%s", sl_engine_core(e)->errmsg);
}

void sl_engine_set_store(lua_State *L, sl_engine *e, const char *store, int read_only) {
  if (sl_engine_open_store(e, store, read_only) != 0)
    luaL_error(L, "%s", sl_engine_core(e)->errmsg);
}

int sl_engine_open_store(sl_engine *e, const char *store, int read_only) {
  sl_core *c = sl_engine_core(e);
  sl_durable_close(c);
  return sl_durable_open(c, store, read_only);
}

/* Lets `require "sluice"` find the Lua side and the C module in a state
   the engine made. */
void sl_engine_prepare_state(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_sluice_core);
  lua_setfield(L, -2, "sluice.core");
  lua_pop(L, 1);
  char buf[4200];
  const char *dir = lua_dir(buf, sizeof buf);
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

void sl_engine_make(lua_State *L, const sl_engine_options *opts, sl_engine **out) {
  sl_engine_open_shared(L);
  *out = engine_create(L, opts ? opts->loop : NULL, 0);
  if (opts && opts->memory_limit > 0)
    sl_engine_set_memory_limit(L, *out, opts->memory_limit, "sl_engine_options.memory_limit");
  if (opts && opts->store && sl_durable_open(sl_engine_core(*out), opts->store, 0) != 0)
    luaL_error(L, "%s", sl_engine_core(*out)->errmsg);
  if (opts && (opts->retain_days != 0 || opts->retain_keep != 0)) {
    if (!(opts->retain_days >= 0 && opts->retain_days <= 1e6) || opts->retain_keep < 0)
      luaL_error(L, "sl_engine_options.retain_days must be from 0 to 1e6 and retain_keep "
                    "at least 0, got %g and %lld", opts->retain_days, opts->retain_keep);
    (*out)->host.retain.ms = (int64_t)(opts->retain_days * 86400000.0);
    if (opts->retain_days > 0 && (*out)->host.retain.ms < 1) (*out)->host.retain.ms = 1;
    (*out)->host.retain.keep = opts->retain_keep;
  }
  if (opts && opts->trace) {
    char err[300];
    if (sl_engine_set_trace(*out, opts->trace, err, sizeof err) != 0)
      luaL_error(L, "sl_engine_options.trace: %s", err);
  }
  if (opts && opts->otlp) {
    char err[1200];
    if (sl_engine_set_otlp(*out, opts->otlp, err, sizeof err) != 0)
      luaL_error(L, "sl_engine_options.otlp: %s", err);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, SL_DEFAULT_ENGINE_KEY);
  /* The DSL module binds to the default engine and adds the kinds written
     in Lua to it. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice");
  lua_call(L, 1, 0);
}

uv_loop_t *sl_engine_loop(sl_engine *e) {
  return e->host.core.loop;
}

void sl_engine_drain(sl_engine *e) {
  sl_sched_drain(&e->host.core.sched);
}

void sl_engine_run_loop(sl_engine *e) {
  e->host.in_uv_run = 1;
  uv_run(e->host.core.loop, UV_RUN_DEFAULT);
  e->host.in_uv_run = 0;
}

void sl_engine_set_kind(lua_State *L, sl_engine *e, int ni, int fi) {
  ni = lua_absindex(L, ni);
  fi = lua_absindex(L, fi);
  int top = lua_gettop(L);
  /* During a load of this engine, registrations go to the snapshot being
     built; it is swapped in whole, or not at all. */
  sl_reload_push_loading(L);                            /* box? */
  sl_engine_push_box(L, e);
  if (lua_rawequal(L, -1, -2)) {
    lua_getfield(L, LUA_REGISTRYINDEX, "sluice.loading");
    lua_getfield(L, -1, "kinds");
    lua_pushvalue(L, ni);
    lua_pushvalue(L, fi);
    lua_rawset(L, -3);
    lua_settop(L, top);
    return;
  }
  lua_settop(L, top);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.core.ref_kinds);      /* old */
  sl_state_shallow_copy(L, -1);                         /* old new */
  lua_remove(L, -2);                                    /* new */
  lua_pushvalue(L, ni);
  lua_pushvalue(L, fi);
  lua_rawset(L, -3);
  lua_rawseti(L, LUA_REGISTRYINDEX, e->host.core.ref_kinds);
}

void sl_engine_push_box(lua_State *L, sl_engine *e) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.ref_box);
}

void sl_engine_push_pipelines(lua_State *L, sl_engine *e) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.ref_pipelines);
}

sl_run *sl_engine_start(lua_State *L, sl_engine *e, int si, int ii, int bi, int bki) {
  sl_run_opts o = {bi, NULL, 0, 0, NULL, 0, bki};
  return sl_run_launch(L, &e->host, si, ii, &o);
}

void sl_engine_load_lua(lua_State *L, sl_engine *e, const char *path) {
  sl_reload_load(L, &e->host, path);
}
