/*
** The engine: the composition root. It wires a Lua state, an event loop,
** the scheduler, the lifecycle and the runs layer into one engine, and
** takes them apart again; it does little else. This header is private to
** the surfaces (the C API, the Lua module, the CLI).
*/
#ifndef SL_ENGINE_H
#define SL_ENGINE_H

#include <stdint.h>
#include <lua.h>
#include <uv.h>

#include "sluice.h"
#include "host.h"
#include "handles.h"
#include "names.h"

struct sl_engine {
  sl_host host;            /* first: the runs layer, over the core */
  uv_loop_t own_loop;
  sl_handles handles;      /* every uv handle the engine opened */
  int owns_L;              /* created by sl_engine_new: closed by sl_engine_free */
  int teardown;            /* 0 alive, 1 being torn down, 2 torn down */
  int ref_watch_cb;        /* the Lua function engine:watch calls, or LUA_NOREF */
  sl_watch_fn watch_fn;    /* what sl_engine_watch calls after a reload */
  void *watch_ud;
  char *runs_json;         /* what sl_engine_runs_json returned last */
};

/* The engine's core, and its state's main thread. */
static inline sl_core *sl_engine_core(sl_engine *e) { return &e->host.core; }

/* Returns the engine whose box is at index idx, raising if it is not one
   or has been freed. */
sl_engine *sl_engine_check(lua_State *L, int idx);

/* Records a failure message on the engine for the C API and returns code. */
int sl_engine_fail(sl_engine *e, int code, const char *fmt, ...);

/* Pushes the default engine of L's state, making one (with a loop of its
   own, and the store SLUICE_STORE names, if any) on first use. */
void sl_engine_push_default(lua_State *L);

/* Pushes a new engine, with a loop of its own, owned by its Lua box;
   memory_limit in bytes (0: none) caps the state's memory; store is the
   path of its store (NULL or ":memory:": none). Raises on failure. */
void sl_engine_push_new(lua_State *L, size_t memory_limit, const char *store);

/* Gives e the store at path (NULL or ":memory:": none), closing the one it
   had (its header is checked, not the whole file); read_only: to read
   only, never creating it. Raises on failure. */
void sl_engine_set_store(lua_State *L, sl_engine *e, const char *path, int read_only);
/* The same, returning SL_ENOTFOUND (a read-only open of a store that holds
   nothing yet) or another failure code, with the message in the core's
   errmsg, instead of raising. */
int sl_engine_open_store(sl_engine *e, const char *path, int read_only);

/* Caps e's state at limit bytes, refusing one that cannot be meant or
   that the state already holds more than; what names the option in the
   message. Raises on a bad limit. */
void sl_engine_set_memory_limit(lua_State *L, sl_engine *e, size_t limit, const char *what);

/* Sends the spans of e's runs to the file at path (appended), replacing any
   trace it had (NULL: none). Raises naming the file on failure. */
int sl_engine_set_trace(sl_engine *e, const char *path, char *err, size_t errlen);

/* Exports the engine's spans over OTLP/HTTP (JSON) to endpoint (NULL:
   stops), batched on the loop, besides any trace file. Returns 0, or -1
   with err (a URL that is not http:// or https://). */
int sl_engine_set_otlp(sl_engine *e, const char *endpoint, char *err, size_t errlen);

/* Sends what is batched and, on the engine's own loop, waits up to
   timeout_ms for the collector's answers. Returns the spans that were not
   exported, with msg saying how many, where and why ("" when none). */
int64_t sl_engine_otlp_finish(sl_engine *e, int timeout_ms, char *msg, size_t msglen);

/* Caches every step of e's runs (sluice dev). */
void sl_engine_set_cache_all(sl_engine *e, int on);

/* The engine's loop. */
uv_loop_t *sl_engine_loop(sl_engine *e);

/* Resumes what is queued to run (after starting or ending runs). */
void sl_engine_drain(sl_engine *e);

/* Runs the engine's own loop until nothing is left to do (sluice dev). */
void sl_engine_run_loop(sl_engine *e);

/* Registers the function at fi as the handler of the kind named at ni: in
   the snapshot a load of this engine is building, else in its policy
   table (a new copy, so runs under way keep the table they began with). */
void sl_engine_set_kind(lua_State *L, sl_engine *e, int ni, int fi);

/* Pushes the engine's box (its Lua value) and its pipelines by name. */
void sl_engine_push_box(lua_State *L, sl_engine *e);
void sl_engine_push_pipelines(lua_State *L, sl_engine *e);

/* Starts a run of the pipeline at si on the input at ii (a budget table at
   bi overrides its budget; 0 for none; breakpoints at bki as for
   sl_run_opts, or 0) and pushes its userdata. */
sl_run *sl_engine_start(lua_State *L, sl_engine *e, int si, int ii, int bi, int bki);

/* Registers the metatables every engine of a state shares. */
void sl_engine_open_shared(lua_State *L);

/* Makes L ready for an engine it did not make: `require "sluice"` finds
   the Lua side and the C module. */
void sl_engine_prepare_state(lua_State *L);

/* Makes the default engine of L's state for a C host, as opts say, and
   loads the DSL into it. Raises on failure, with *out set as far as it got
   (NULL, or an engine for the caller to destroy). */
void sl_engine_make(lua_State *L, const sl_engine_options *opts, sl_engine **out);

/* Set only in the self-contained library (embed.c, before anything in it
   runs), whose Lua 5.4 is linked in and hidden; NULL elsewhere. When set,
   sl_engine_new refuses a host's lua_State and passes each state it makes
   to it (protected), after the standard libraries and before the engine. */
extern void (*sl_engine_private_lua)(lua_State *L);

/* Tears e down: ends its runs (as interrupted), releases its handles and
   refs; lua_alive: its Lua state is still open. */
void sl_engine_destroy(sl_engine *e, int lua_alive);

/* Loads and checks a pipeline file into e and pushes its pipelines by name.
   Raises, leaving e's pipelines as they were, when it does not load. */
void sl_engine_load_lua(lua_State *L, sl_engine *e, const char *path);

#endif
