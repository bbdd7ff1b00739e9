/*
** The public C API (sluice.h). Every call checks its arguments (NULL is
** SL_EINVAL, never a crash), then runs its work under one protected call
** on the engine's state, so that no Lua error can unwind into the host;
** the work says, as it goes, which code a failure at that point means.
** Library code prints nothing: messages are read with sl_engine_errmsg.
*/
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "engine.h"
#include "hostkind.h"
#include "loader.h"
#include "protect.h"
#include "reload.h"
#include "result.h"
#include "resume.h"
#include "run.h"
#include "scheduler.h"
#include "store.h"
#include "value.h"

/* The message of the last sl_engine_new that failed in this thread: with
   no engine to hold it, sl_engine_errmsg(NULL) returns it. */
static _Thread_local char new_errmsg[1024];

/* The self-contained library's hook (engine.h). */
void (*sl_engine_private_lua)(lua_State *L);

/* What every protected call receives: its engine, and the code a failure
   means at the point the work has reached. */
typedef struct api_args {
  sl_engine *e;
  int code;
} api_args;

/* Runs fn(a) protected on a->e's state. Returns SL_OK, or the code a
   failure meant, with its message recorded on the engine. */
static int api_call(api_args *a, lua_CFunction fn) {
  lua_State *L = sl_engine_core(a->e)->L;
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, a);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) return SL_OK;
  const char *msg = lua_tostring(L, -1);
  sl_engine_fail(a->e, a->code, "%s", msg ? msg : "error in the engine");
  lua_pop(L, 1);
  return a->code;
}

/* Engines. */

typedef struct new_args {
  api_args base;
  const sl_engine_options *opts;
  sl_engine *made;
} new_args;

static int new_p(lua_State *L) {
  new_args *a = lua_touserdata(L, 1);
  if (sl_engine_private_lua != NULL) sl_engine_private_lua(L);
  sl_engine_prepare_state(L);
  sl_engine_make(L, a->opts, &a->made);
  return 0;
}

const char *sl_version(void) {
  return SLUICE_VERSION;
}

int sl_engine_new(sl_engine **out, const sl_engine_options *given) {
  new_errmsg[0] = '\0';
  if (out == NULL) {
    snprintf(new_errmsg, sizeof new_errmsg, "sl_engine_new: out is NULL");
    return SL_EINVAL;
  }
  *out = NULL;
  /* Only the fields the caller's size says it knows of are read; a size of
     0 is the first layout (up to store). */
  sl_engine_options copy = {0};
  const sl_engine_options *opts = NULL;
  if (given != NULL) {
    size_t n = given->size == 0 ? offsetof(sl_engine_options, retain_days) : given->size;
    if (n < sizeof(size_t)) {
      snprintf(new_errmsg, sizeof new_errmsg, "sl_engine_new: sl_engine_options.size is "
               "%zu, less than its own field (use SL_ENGINE_OPTIONS_INIT)", given->size);
      return SL_EINVAL;
    }
    memcpy(&copy, given, n < sizeof copy ? n : sizeof copy);
    opts = &copy;
  }
  lua_State *L = opts && opts->L ? opts->L : NULL;
  if (L != NULL && sl_engine_private_lua != NULL) {
    snprintf(new_errmsg, sizeof new_errmsg, "sl_engine_new: sl_engine_options.L must be "
             "NULL with the self-contained library: its Lua is its own");
    return SL_EINVAL;
  }
  int owns_L = L == NULL;
  if (owns_L) {
    L = luaL_newstate();
    if (L == NULL) {
      snprintf(new_errmsg, sizeof new_errmsg, "not enough memory for a Lua state");
      return SL_ENOMEM;
    }
    luaL_openlibs(L);
  }
  new_args a = {{NULL, SL_EINVAL}, opts, NULL};
  lua_pushcfunction(L, new_p);
  lua_pushlightuserdata(L, &a);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    snprintf(new_errmsg, sizeof new_errmsg, "%s", msg ? msg : "cannot make an engine");
    lua_pop(L, 1);
    if (a.made != NULL) sl_engine_destroy(a.made, 1);
    if (owns_L) lua_close(L);
    return status == LUA_ERRMEM ? SL_ENOMEM : SL_EINVAL;
  }
  a.made->owns_L = owns_L;
  *out = a.made;
  return SL_OK;
}

void sl_engine_free(sl_engine *e) {
  if (e == NULL) return;
  lua_State *L = sl_engine_core(e)->L;
  int owns_L = e->owns_L;
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, SL_DEFAULT_ENGINE_KEY);
  sl_engine_destroy(e, 1);
  if (owns_L) lua_close(L);
}

const char *sl_engine_errmsg(const sl_engine *e) {
  return e ? e->host.core.errmsg : new_errmsg;
}

long long sl_engine_flush_spans(sl_engine *e, int timeout_ms) {
  if (e == NULL) return SL_EINVAL;
  char msg[sizeof e->host.core.errmsg];
  long long lost = (long long)sl_engine_otlp_finish(e, timeout_ms > 0 ? timeout_ms : 0,
                                                    msg, sizeof msg);
  if (lost > 0) snprintf(e->host.core.errmsg, sizeof e->host.core.errmsg, "%s", msg);
  return lost;
}

lua_State *sl_engine_lua(sl_engine *e) {
  return e ? sl_engine_core(e)->L : NULL;
}

/* Loading. */

typedef struct load_args {
  api_args base;
  const char *path;
} load_args;

static int load_p(lua_State *L) {
  load_args *a = lua_touserdata(L, 1);
  FILE *f = fopen(a->path, "r");
  if (f == NULL) {
    if (errno == ENOENT) a->base.code = SL_ENOTFOUND;
    return luaL_error(L, "cannot open '%s': %s", a->path, strerror(errno));
  }
  fclose(f);
  a->base.code = SL_ESCRIPT;
  sl_engine_load_lua(L, a->base.e, a->path);
  return 0;
}

int sl_engine_load(sl_engine *e, const char *path) {
  if (e == NULL) return SL_EINVAL;
  if (path == NULL) return sl_engine_fail(e, SL_EINVAL, "sl_engine_load: path is NULL");
  load_args a = {{e, SL_ESCRIPT}, path};
  return api_call(&a.base, load_p);
}

static int reload_p(lua_State *L) {
  api_args *a = lua_touserdata(L, 1);
  sl_reload_again(L, &a->e->host);
  return 0;
}

int sl_engine_reload(sl_engine *e) {
  if (e == NULL) return SL_EINVAL;
  if (e->host.load_path == NULL)
    return sl_engine_fail(e, SL_EINVAL, "nothing to reload: no file was loaded");
  api_args a = {e, SL_ESCRIPT};
  return api_call(&a, reload_p);
}

/* Tells the host's watch callback what a reload did. */
static void watch_to_host(sl_host *h, int status, const char *msg, void *ud) {
  sl_engine *e = (sl_engine *)h;
  (void)ud;
  if (e->watch_fn != NULL) e->watch_fn(e, status, msg, e->watch_ud);
}

int sl_engine_watch(sl_engine *e, int debounce_ms, sl_watch_fn fn, void *ud) {
  if (e == NULL) return SL_EINVAL;
  if (debounce_ms < 0)
    return sl_engine_fail(e, SL_EINVAL, "sl_engine_watch: debounce_ms must not be negative");
  if (e->host.load_path == NULL)
    return sl_engine_fail(e, SL_EINVAL, "nothing to watch: no file was loaded");
  e->watch_fn = fn;
  e->watch_ud = ud;
  int rc = sl_reload_watch(&e->host, debounce_ms, watch_to_host, NULL);
  if (rc != 0) return sl_engine_fail(e, SL_EINVAL, "cannot watch: %s", uv_strerror(rc));
  return SL_OK;
}

void sl_engine_unwatch(sl_engine *e) {
  if (e != NULL) sl_reload_unwatch(&e->host);
}

/* Runs. */

/* Hands the run on top of L to the host: anchored until sl_run_free. */
static sl_run *hold_for_host(lua_State *L) {
  sl_run *r = sl_run_check(L, -1);
  r->ref_host = luaL_ref(L, LUA_REGISTRYINDEX);
  r->holds++;
  return r;
}

typedef struct start_args {
  api_args base;
  const char *name, *input;
  sl_run *run;
} start_args;

static int start_p(lua_State *L) {
  start_args *a = lua_touserdata(L, 1);
  sl_engine *e = a->base.e;
  a->base.code = SL_ENOTFOUND;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->host.ref_pipelines);  /* set */
  sl_load_select(L, -1, a->name, e->host.load_path, "a pipeline name");                       /* set step */
  a->base.code = SL_EINPUT;
  if (a->input == NULL) lua_pushnil(L);
  else if (sl_json_decode(L, a->input, strlen(a->input)) != 0)
    luaL_error(L, "bad input JSON: %s", lua_tostring(L, -1));
  a->base.code = SL_EINVAL;
  sl_run_opts o = {0, NULL, 0, 0, NULL, 0, 0};
  sl_run_launch(L, &e->host, -2, -1, &o);               /* set step input run */
  a->run = hold_for_host(L);
  a->base.code = SL_OK;
  sl_sched_drain(&sl_engine_core(e)->sched);
  return 0;
}

int sl_run_start(sl_engine *e, const char *name, const char *input_json,
                 sl_run **out) {
  if (out != NULL) *out = NULL;
  if (e == NULL) return SL_EINVAL;
  if (out == NULL) return sl_engine_fail(e, SL_EINVAL, "sl_run_start: out is NULL");
  start_args a = {{e, SL_EINVAL}, name, input_json, NULL};
  int rc = api_call(&a.base, start_p);
  if (rc == SL_OK) *out = a.run;
  return rc;
}

typedef struct resume_args {
  api_args base;
  const char *id, *answer;
  int force;
  sl_run *run;
} resume_args;

static int resume_p(lua_State *L) {
  resume_args *a = lua_touserdata(L, 1);
  sl_engine *e = a->base.e;
  sl_store *store = sl_engine_core(e)->store;
  if (store == NULL) luaL_error(L, "cannot resume: the engine has no store");
  sl_store_run *row;
  if (sl_store_run_get(store, a->id, &row) == SL_STORE_ENOTFOUND) {
    a->base.code = SL_ENOTFOUND;
    luaL_error(L, "no run with id '%s' in %s", a->id, sl_store_path(store));
  }
  sl_store_run_free(row);
  a->base.code = SL_EINPUT;
  if (a->answer == NULL) lua_pushnil(L);
  else if (sl_json_decode(L, a->answer, strlen(a->answer)) != 0)
    luaL_error(L, "bad answer JSON: %s", lua_tostring(L, -1));
  a->base.code = SL_ESCRIPT;
  sl_resume(L, &e->host, a->id, lua_gettop(L), a->force);
  a->run = hold_for_host(L);
  a->base.code = SL_OK;
  sl_sched_drain(&sl_engine_core(e)->sched);
  return 0;
}

int sl_run_resume(sl_engine *e, const char *run_id, const char *answer_json,
                  int force, sl_run **out) {
  if (out != NULL) *out = NULL;
  if (e == NULL) return SL_EINVAL;
  if (out == NULL) return sl_engine_fail(e, SL_EINVAL, "sl_run_resume: out is NULL");
  if (run_id == NULL) return sl_engine_fail(e, SL_EINVAL, "sl_run_resume: no run id");
  resume_args a = {{e, SL_EINVAL}, run_id, answer_json, force, NULL};
  int rc = api_call(&a.base, resume_p);
  if (rc == SL_OK) *out = a.run;
  return rc;
}

int sl_engine_poll(sl_engine *e) {
  if (e == NULL) return SL_EINVAL;
  return sl_host_poll(&e->host);
}

int sl_engine_fd(sl_engine *e) {
  if (e == NULL) return SL_EINVAL;
  return uv_backend_fd(sl_engine_core(e)->loop);
}

int sl_engine_timeout(sl_engine *e) {
  if (e == NULL) return -1;
  sl_core *c = sl_engine_core(e);
  if (c->sched.ready_head != NULL) return 0;
  /* uv_backend_timeout says 0 for a loop with nothing to do; for the
     host that means "nothing pending", not "turn now". */
  if (!uv_loop_alive(c->loop)) return -1;
  return uv_backend_timeout(c->loop);
}

typedef struct wait_args {
  api_args base;
  sl_run *run;
} wait_args;

static int wait_p(lua_State *L) {
  wait_args *a = lua_touserdata(L, 1);
  sl_run_block(L, a->run);
  return 0;
}

int sl_run_wait(sl_run *r) {
  if (r == NULL) return SL_EINVAL;
  sl_engine *e = r->core ? (sl_engine *)r->core : NULL;
  if (r->status != SL_RUN_RUNNING || e == NULL) return r->status;
  wait_args a = {{e, SL_EBUSY}, r};
  int rc = api_call(&a.base, wait_p);
  return rc == SL_OK ? r->status : rc;
}

int sl_run_status(const sl_run *r) {
  return r ? r->status : SL_EINVAL;
}

const char *sl_run_id(const sl_run *r) {
  return r ? r->id : NULL;
}

const char *sl_run_result_json(sl_run *r) {
  if (r == NULL || r->status == SL_RUN_RUNNING) return NULL;
  if (r->result_json != NULL) return r->result_json;
  if (r->core == NULL || r->ref_host == LUA_NOREF) return NULL;
  return sl_result_keep(r->core->L, r) == 0 ? r->result_json : NULL;
}

void sl_run_free(sl_run *r) {
  if (r == NULL || r->ref_host == LUA_NOREF) return;
  if (r->core != NULL) luaL_unref(r->core->L, LUA_REGISTRYINDEX, r->ref_host);
  r->ref_host = LUA_NOREF;
  sl_run_release(r);
}

/* Host kinds (the handles' side is hostkind.c). */

typedef struct kind_args {
  api_args base;
  const char *name;
  sl_kind_fn fn;
  void *ud;
} kind_args;

static int kind_p(lua_State *L) {
  kind_args *a = lua_touserdata(L, 1);
  lua_pushstring(L, a->name);
  sl_hostkind_push(L, a->name, a->fn, a->ud);
  sl_engine_set_kind(L, a->base.e, -2, -1);
  return 0;
}

int sl_engine_kind(sl_engine *e, const char *name, sl_kind_fn fn, void *ud) {
  if (e == NULL) return SL_EINVAL;
  if (name == NULL || name[0] == '\0' || fn == NULL)
    return sl_engine_fail(e, SL_EINVAL, "sl_engine_kind: a kind needs a name and a function");
  kind_args a = {{e, SL_ENOMEM}, name, fn, ud};
  return api_call(&a.base, kind_p);
}

/* Listing runs. */

typedef struct runs_args {
  api_args base;
  const char *filter;
  char *json;
} runs_args;

static int runs_p(lua_State *L) {
  runs_args *a = lua_touserdata(L, 1);
  sl_engine *e = a->base.e;
  if (sl_engine_core(e)->store == NULL) {
    a->base.code = SL_ENOTFOUND;
    luaL_error(L, "cannot list runs: the engine has no store");
  }
  a->base.code = SL_EINPUT;
  if (a->filter == NULL) lua_newtable(L);
  else if (sl_json_decode(L, a->filter, strlen(a->filter)) != 0)
    luaL_error(L, "bad filter JSON: %s", lua_tostring(L, -1));
  else if (!lua_istable(L, -1))
    luaL_error(L, "the filter must be a JSON object, got %s", luaL_typename(L, -1));
  int fi = lua_gettop(L);
  static const char *const known[] = {"status", "pipeline", "queue", "text", "limit",
                                      "offset", "before", NULL};
  for (lua_pushnil(L); lua_next(L, fi); lua_pop(L, 1)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int i = 0;
    while (k != NULL && known[i] != NULL && strcmp(k, known[i]) != 0) i++;
    if (k == NULL || known[i] == NULL)
      luaL_error(L, "bad filter field '%s' (known: status, pipeline, queue, text, limit, "
                    "offset, before)", k ? k : "?");
  }
  if (lua_getfield(L, fi, "limit") == LUA_TNIL) {
    lua_pushinteger(L, 50);
    lua_setfield(L, fi, "limit");
  }
  lua_pop(L, 1);
  sl_engine_push_box(L, e);                             /* filter box */
  lua_getfield(L, -1, "runs");
  lua_insert(L, -2);
  lua_pushvalue(L, fi);
  lua_call(L, 2, 1);                                    /* filter rows */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice.show");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "runs_json");
  lua_remove(L, -2);
  lua_insert(L, -2);
  lua_call(L, 1, 1);                                    /* filter list */
  a->base.code = SL_ENOMEM;
  sl_buf b;
  sl_buf_init(&b);
  char err[200];
  if (sl_json_encode(L, -1, &b, 0, err, sizeof err) != 0) {
    sl_buf_free(&b);
    luaL_error(L, "the runs cannot be given as JSON: %s", err);
  }
  a->json = b.data;   /* taken */
  return 0;
}

const char *sl_engine_runs_json(sl_engine *e, const char *filter_json) {
  if (e == NULL) return NULL;
  runs_args a = {{e, SL_ESCRIPT}, filter_json, NULL};
  if (api_call(&a.base, runs_p) != SL_OK) return NULL;
  free(e->runs_json);
  e->runs_json = a.json;
  return e->runs_json;
}
