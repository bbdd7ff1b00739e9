/*
** sluice: an orchestration engine for multi-step work, scripted in Lua 5.4.
** This is the whole public C interface. Every function that can fail returns
** 0 or a negative SL_E* code; the message of the last failure is available
** from sl_engine_errmsg. A NULL where an engine, a run or a path is
** expected is SL_EINVAL, never a crash. The library prints nothing.
**
** Threads: an engine, and the runs it made, are used by one thread at a
** time. Engines in different threads are independent (each has its own Lua
** state and loop; they share no state), so each thread may have its own.
** Engines that share one Lua state (sl_engine_options.L) share its thread.
**
** Two libraries implement it: libsluice, on the system's Lua 5.4
** (liblua5.4), and libsluice_embed, the self-contained one, with a Lua 5.4
** of its own linked in and hidden, for processes that already hold
** another Lua (LuaJIT, 5.1, 5.3). It exports the sl_* functions only, and
** its engines always make their own state.
*/
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 2
#define SLUICE_VERSION_PATCH 0
#define SLUICE_VERSION "0.2.0"

/* The library's public functions; everything else in it is hidden. */
#if defined(_WIN32)
#define SL_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SL_API __attribute__((visibility("default")))
#else
#define SL_API
#endif

struct uv_loop_s;
struct lua_State;

typedef struct sl_engine sl_engine;
typedef struct sl_run sl_run;

/* Error codes. */
#define SL_OK         0
#define SL_EINVAL    (-1)   /* a bad argument from the host */
#define SL_ENOMEM    (-2)
#define SL_ESCRIPT   (-3)   /* a pipeline file that does not load or check */
#define SL_EINPUT    (-4)   /* malformed input (JSON) */
#define SL_ENOTFOUND (-5)   /* no such pipeline, file or run */
#define SL_EBUSY     (-6)   /* the engine cannot do that from where it was called */
#define SL_ECANCELLED (-7)  /* a host kind's step ended before its host completed it */

/* Run states, as reported by sl_run_status. A cancelled run (sl.abort, or
   cancelled by its host) ended for good; an interrupted one (SIGINT, its
   engine freed while it ran) stopped and can be resumed. */
#define SL_RUN_RUNNING     0
#define SL_RUN_COMPLETED   1
#define SL_RUN_FAILED      2
#define SL_RUN_PAUSED      3
#define SL_RUN_CANCELLED   4
#define SL_RUN_INTERRUPTED 5
#define SL_RUN_WAITING     6   /* a worker parked it in a long durable wait:
                                  a worker takes it up again when it is due */

/* Options for sl_engine_new. Start from SL_ENGINE_OPTIONS_INIT (or set
   size to sizeof(sl_engine_options)) and set what you need: a later
   sluice may add fields at the end, and reads only those that the size
   says the caller knows of. A zeroed struct (size 0) is the 0.1 layout:
   loop, L, memory_limit and store. */
typedef struct sl_engine_options {
  size_t size;
  /* The host's event loop. The engine adds its handles to it and never runs
     or closes it; the host drives it. NULL: the engine owns a loop of its own. */
  struct uv_loop_s *loop;
  /* The host's Lua state. sluice is opened into it and lives there until
     sl_engine_free. NULL: the engine creates and owns a state. */
  struct lua_State *L;
  /* Caps the memory of the Lua state the engine lives in, in bytes (0: no
     cap; the same unit as sl.engine{memory_limit} in Lua; less than 4 MB
     cannot be meant and is SL_EINVAL). A step that allocates past it fails
     with kind "limit" whatever it catches; the engine and other runs go
     on. */
  size_t memory_limit;
  /* The store that keeps runs durable (an SQLite file, created if missing),
     or NULL or ":memory:" for none. */
  const char *store;
  /* Retention: the ended runs (completed, failed, cancelled; never one that
     can resume) are deleted from the store once they ended more than
     retain_days ago (0: any age), beyond the retain_keep newest (0: none
     kept); both 0: runs are kept until `sluice runs prune`. Applied after
     runs end, at most once a minute. */
  double retain_days;
  long long retain_keep;
  /* Appends one OpenTelemetry span per step execution to this file, as
     OTLP/JSON TracesData lines (NULL: none), as `sluice run --trace`. */
  const char *trace;
  /* Also exports the spans over OTLP/HTTP (JSON) to this collector: its
     base URL (to which /v1/traces is added) or its traces URL; NULL: none.
     Batched on the engine's loop; see sl_engine_flush_spans. */
  const char *otlp;
} sl_engine_options;

#define SL_ENGINE_OPTIONS_INIT { sizeof(sl_engine_options) }

/* The library's version, "MAJOR.MINOR.PATCH" (SLUICE_VERSION of the
   library itself, which may be newer than the header a program was built
   with). */
SL_API const char *sl_version(void);

/* Creates an engine. opts may be NULL. On failure *out is NULL and
   sl_engine_errmsg(NULL) says why (in the failing thread). */
SL_API int sl_engine_new(sl_engine **out, const sl_engine_options *opts);

/* Ends the engine's runs (as interrupted: they can be resumed from the
   store), releases its handles and frees it. With a host loop, the last
   handle closes on the host's next turn of that loop. Runs the host still
   holds stay valid for sl_run_status, sl_run_id, sl_run_result_json and
   sl_run_free: an engine and its runs may be freed in either order. */
SL_API void sl_engine_free(sl_engine *e);

/* The message of the last failure on this engine ("" if none); with NULL,
   the message of the last sl_engine_new that failed in this thread. */
SL_API const char *sl_engine_errmsg(const sl_engine *e);

/* Loads a pipeline file: compiles and runs it, and keeps the pipelines it
   returns for sl_run_start. A file that does not load leaves the engine's
   pipelines as they were: SL_ENOTFOUND when there is no such file,
   SL_ESCRIPT when it does not load or check. */
SL_API int sl_engine_load(sl_engine *e, const char *path);

/* Loads again the file last loaded, with the same all-or-nothing rule: on
   failure the engine keeps the pipelines and kinds it had, and the message
   (file:line) is available from sl_engine_errmsg. Runs in flight keep the
   snapshot they started with. */
SL_API int sl_engine_reload(sl_engine *e);

/* Called after each reload a watch made: status SL_OK, or SL_ESCRIPT with
   the message of what failed. */
typedef void (*sl_watch_fn)(sl_engine *e, int status, const char *message,
                            void *ud);

/* Watches the file last loaded and every file it imports (libuv fs events,
   debounced by debounce_ms) and reloads when one changes, then calls fn.
   The events arrive through the engine's loop. */
SL_API int sl_engine_watch(sl_engine *e, int debounce_ms, sl_watch_fn fn, void *ud);

/* Stops watching. */
SL_API void sl_engine_unwatch(sl_engine *e);

/* Starts a run of the loaded pipeline called name (NULL when the file holds
   one pipeline) on input_json (NULL for no input). The run belongs to the
   caller until sl_run_free. */
SL_API int sl_run_start(sl_engine *e, const char *name, const char *input_json,
                 sl_run **out);

/* Continues a paused or interrupted run from the engine's store (see
   sl_engine_options.store): steps that completed are restored, not run
   again. answer_json answers a paused run (NULL otherwise); force resumes
   even though the pipeline file changed. The run belongs to the caller
   until sl_run_free. SL_ENOTFOUND when the store has no such run. */
SL_API int sl_run_resume(sl_engine *e, const char *run_id, const char *answer_json,
                  int force, sl_run **out);

/* Advances the engine without blocking: one turn of its own loop
   (uv_run UV_RUN_NOWAIT) and what that turn made ready. Returns the number
   of runs still active (SL_EINVAL for NULL). With a host loop this is a
   no-op beyond counting: the host's loop does the work. */
SL_API int sl_engine_poll(sl_engine *e);

/* For a host with a loop of its own (select, poll, epoll, a GUI toolkit's
   main loop) that drives an engine without spinning: the engine's loop's
   backend descriptor (uv_backend_fd), which becomes readable when the
   engine has I/O to handle. SL_EINVAL for NULL. The descriptor belongs to
   the engine: watch it, never read, write or close it. */
SL_API int sl_engine_fd(sl_engine *e);

/* The milliseconds until the engine next needs a turn even if its
   descriptor stays quiet (its next timer), 0 when it needs one now, -1
   when nothing is pending (wait for the descriptor alone; -1 also for
   NULL). A host loop is: sl_engine_poll, then wait until sl_engine_fd is
   readable or sl_engine_timeout ms have passed, and again, until poll
   returns 0. Ask again after every poll or sl_run_start: the answer is
   only good until the engine next does something. With a host loop (see
   sl_engine_options.loop), both describe that loop, which the host drives. */
SL_API int sl_engine_timeout(sl_engine *e);

/* Drives the engine's own loop until run r ends; returns its status.
   SL_EBUSY with a host loop (the host drives it) or from inside a step. */
SL_API int sl_run_wait(sl_run *r);

/* The run's state (SL_RUN_*; SL_EINVAL for NULL) and id. */
SL_API int sl_run_status(const sl_run *r);
SL_API const char *sl_run_id(const sl_run *r);

/* The run's result as JSON text, shaped as `sluice run --json` prints it, or
   NULL while the run is active. The text belongs to the run. */
SL_API const char *sl_run_result_json(sl_run *r);

/* Releases the caller's hold on a run (once; NULL is a no-op). An active
   run goes on to its end. */
SL_API void sl_run_free(sl_run *r);

/* The engine's Lua state, for hosts that use the DSL from their own scripts.
   The self-contained library (libsluice_embed) keeps its Lua to itself: the
   state it returns is not for another Lua's API. */
SL_API struct lua_State *sl_engine_lua(sl_engine *e);

/* Sends the spans the exporter (sl_engine_options.otlp) holds and, on the
   engine's own loop, waits up to timeout_ms for the collector. Returns how
   many spans were not exported so far (0 with no exporter); when some were
   not, sl_engine_errmsg(e) says how many, where and why. */
SL_API long long sl_engine_flush_spans(sl_engine *e, int timeout_ms);

/* The stored runs, newest first, as a JSON array of the records `sluice
   runs --json` prints (run_id, pipeline, status, started_ms, ...).
   filter_json (NULL: all) is an object of status, pipeline, queue, text,
   limit (default 50; 0: all), offset, before. The text is the engine's
   until its next call of this function or sl_engine_free; NULL on failure
   (SL_ENOTFOUND without a store, SL_EINPUT for a bad filter: see
   sl_engine_errmsg). */
SL_API const char *sl_engine_runs_json(sl_engine *e, const char *filter_json);

/* Host kinds: a step kind the host implements. A step of kind name calls
   fn(handle, input_json, ud) on the engine's thread, with the step's input
   as JSON; the host completes it during the call or later, from the
   engine's thread (a callback of its loop, a host loop between polls),
   with exactly one sl_step_complete or sl_step_fail. Meanwhile the step
   waits as on any I/O: its timeout, retries, fallback, budget and
   durability apply as to any step. A step that ends first (its timeout,
   its run cancelled, the engine freed) is cancelled: completing it then
   returns SL_ECANCELLED and changes nothing. A handle completed already,
   or never given, is refused with SL_EINVAL (never followed into freed
   memory). Registered in the engine's policy table, like a kind of a
   loaded file; SL_EINVAL for a NULL argument or an empty name. */
typedef struct sl_step_handle sl_step_handle;
typedef void (*sl_kind_fn)(sl_step_handle *handle, const char *input_json, void *ud);
SL_API int sl_engine_kind(sl_engine *e, const char *name, sl_kind_fn fn, void *ud);

/* Completes a host kind's step with its output (JSON text; NULL: null).
   SL_OK; SL_ECANCELLED (the step ended first: the handle is let go);
   SL_EINVAL (a stale or unknown handle); SL_EBUSY (from inside another
   step; the handle stays pending). Malformed JSON fails the step, naming
   the kind. */
SL_API int sl_step_complete(sl_step_handle *handle, const char *output_json);

/* Fails a host kind's step with kind "error" and the message; codes as for
   sl_step_complete. */
SL_API int sl_step_fail(sl_step_handle *handle, const char *message);

/* 1 when the handle's step ended before its host completed it (complete
   or fail it to let it go), 0 while it waits, SL_EINVAL for a stale one. */
SL_API int sl_step_cancelled(const sl_step_handle *handle);

/* Opens the "sluice.core" Lua module; `require "sluice"` calls it. (Not in
   libsluice_embed, whose Lua is its own.) */
SL_API int luaopen_sluice_core(struct lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
