/*
** The engine: one Lua state, one event loop, the policy table and the
** scheduler's pools. This header is private to the C core.
*/
#ifndef SL_ENGINE_H
#define SL_ENGINE_H

#include <stdint.h>
#include <lua.h>
#include <uv.h>

#include "sluice.h"
#include "clock.h"

typedef struct sl_task sl_task;
typedef struct sl_run sl_run;
typedef struct sl_watch sl_watch;
typedef struct sl_cache sl_cache;
typedef struct sl_store sl_store;
typedef struct sl_trace sl_trace;

/* Names of the metatables every component shares, kept in the registry. */
#define SL_ENGINE_MT "sluice.engine"
#define SL_RUN_MT    "sluice.run"
#define SL_STEP_MT   "sluice.Step"
#define SL_CTX_MT    "sluice.ctx"
#define SL_HANDLE_MT "sluice.task"
#define SL_ERROR_MT  "sluice.error"

/* The registry field holding the default engine of a state. */
#define SL_DEFAULT_ENGINE_KEY "sluice.default"

struct sl_engine {
  lua_State *L;            /* the main thread of the state the engine lives in */
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  int owns_L;              /* created by sl_engine_new: closed by sl_engine_free */
  int closing;             /* being torn down: start nothing new */
  int in_uv_run;           /* inside uv_run on the engine's own loop */
  int blocking;            /* sl_run_wait_lua is driving the loop for a run */
  int handles_open;        /* uv handles not yet closed; the block is freed at 0 */

  /* Registry refs, each released once in sl_engine_free. */
  int ref_box;             /* the engine's Lua userdata */
  int ref_threads;         /* table: task id -> coroutine */
  int ref_ctxs;            /* table: task id -> ctx of the execution it runs */
  int ref_kinds;           /* the current policy table: kind name -> handler */
  int ref_pipelines;       /* pipelines of the last loaded file, by name */
  int ref_files;           /* the files the last load read */
  int ref_watch_cb;        /* the Lua function engine:watch calls, or LUA_NOREF */
  char *load_path;         /* the file last loaded, for reload */
  sl_watch *watch;         /* what engine:watch watches, or NULL */
  sl_cache *cache;         /* the in-memory tier of the step cache */
  sl_store *store;         /* durable runs and the persistent cache, or NULL */
  sl_trace *trace;         /* where spans go (--trace), or NULL */
  uv_prepare_t *flush_prep;  /* commits the store's writes before each wait */
  int cache_all;           /* cache every step (sluice dev) */
  int ref_runs;            /* table: run userdata -> true, for active runs */
  int ref_ctxmt;           /* cached metatables for the hot path */
  int ref_errmt;

  /* Scheduler state (scheduler.c). */
  struct sl_sched_shared *shared;  /* what the engines of this state share */
  sl_task *free_tasks;     /* pooled tasks, each with its coroutine and timer */
  sl_task *ready_head, *ready_tail;
  int ntasks;              /* tasks ever created (ids 1..ntasks) */
  int draining;            /* sl_sched_drain is on the C stack */
  int depth;               /* steps on the C stack (inside lua_resume) */
  int active_runs;
  sl_run *runs;            /* every run not yet collected, to detach at teardown */
  lua_Integer seq;         /* orders task endings, for ctx:await */
  uint64_t rng;            /* xorshift state, for backoff jitter */

  char errmsg[1024];
};

/* Returns the engine whose box is at index idx, raising if it is not one
   or has been freed. */
sl_engine *sl_engine_check(lua_State *L, int idx);

/* Records a failure message on the engine for the C API and returns code. */
int sl_engine_fail(sl_engine *e, int code, const char *fmt, ...);

/* Runs fn(L, ud) under lua_pcall on the engine's main thread, so that an
   error or a memory failure in engine work started from an event loop
   callback can never unwind through libuv. Returns the lua_pcall status; on
   failure the message is recorded in e->errmsg. */
int sl_engine_protect(sl_engine *e, lua_CFunction fn, void *ud);

/* Called by the engine's handle close callbacks: frees the block once the
   engine is torn down and the last handle has closed. */
void sl_engine_handle_closed(sl_engine *e);

/* Pushes the default engine of L's state, making one (with a loop of its
   own) on first use. */
void sl_engine_push_default(lua_State *L);

/* Pushes a new engine, with a loop of its own, owned by its Lua box;
   memory_limit in bytes (0: none) caps the state's memory; store is the
   path of its store (NULL or ":memory:": none). */
void sl_engine_push_new(lua_State *L, size_t memory_limit, const char *store);

/* Gives e the store at path (NULL or ":memory:": none), closing the one it
   had; check: verify the file's integrity first (see sl_durable_open).
   Raises with the store's message on failure. */
void sl_engine_set_store(lua_State *L, sl_engine *e, const char *path, int check);

/* Registers the metatables all engines of a state share. */
void sl_engine_open_shared(lua_State *L);

/* Loads and checks a pipeline file into e and pushes its pipelines by name.
   Raises, leaving e's pipelines as they were, when it does not load. */
void sl_engine_load_lua(lua_State *L, sl_engine *e, const char *path);

/* Makes L ready for an engine it did not make: `require "sluice"` finds
   the Lua side and the C module. */
void sl_engine_prepare_state(lua_State *L);

/* Makes the default engine of L's state for a C host, as opts say, and
   loads the DSL into it. Raises on failure, with *out set as far as it got
   (NULL, or an engine for the caller to destroy). */
void sl_engine_make(lua_State *L, const sl_engine_options *opts, sl_engine **out);

/* Tears e down: ends its runs (as interrupted), releases its handles and
   refs; lua_alive: its Lua state is still open. */
void sl_engine_destroy(sl_engine *e, int lua_alive);

/* Pushes the run's result (run userdata at idx) as JSON text. */
void sl_engine_result_json(lua_State *L, sl_run *r, int idx, int flags);

#endif
