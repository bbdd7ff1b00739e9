/*
** The step lifecycle: every step execution goes through here, one path
** for every kind. resolve (its plan and its kind's handler), begin (a task,
** the history record, the phases that can end it at once: a restored
** checkpoint, a refused reservation, a cache hit), prime (its attempt's
** body on its coroutine), resume, settle (what follows an attempt) and
** finish (record it, pass its state on, deliver its outcome, release it):
** each written once, and every path that ends a step calls finish.
*/
#ifndef SL_LIFECYCLE_H
#define SL_LIFECYCLE_H

#include "core.h"

/* Sets core c up on L and loop: its scheduler, with the lifecycle's hooks
   and records; the memory cap's refusal of what steps ask for; the ctx
   and the methods the lifecycle and its phases give it. The composition
   root then adds the kinds and the I/O services. Raises only memory
   errors. */
void sl_step_open(lua_State *L, sl_core *c, uv_loop_t *loop, sl_handles *handles);

/* Starts the root of run r: the step at si on the input at ii. The step
   may end before this returns. Raises on a step that cannot start. */
void sl_step_root(lua_State *L, sl_run *r, int si, int ii);

/* ctx:run. Runs the step at si on the input at ii as a child of parent
   and pushes its output, or raises its error. ki is the index of the
   child's key among its siblings (a map item, a loop iteration), or 0.
   When the child waits, the caller (running on L) is suspended and
   continues in k with the output pushed. */
int sl_step_run(lua_State *L, sl_exec *parent, int si, int ii, int ki,
                lua_KFunction k, lua_KContext kctx);

/* ctx:spawn. Starts the step at si on the input at ii as a child of
   parent that runs concurrently, and pushes its task handle. */
void sl_step_spawn(lua_State *L, sl_exec *parent, int si, int ii, int ki);

/* ctx:await. Waits for the handle, or list of handles, at idx. SL_AWAIT_ALL
   pushes the output, or the outputs in order, raising the first error to
   happen; SL_AWAIT_SETTLE waits for all whatever happens and pushes a list
   of {ok, output, error}; SL_AWAIT_ANY waits for the first to end and
   pushes its position. */
enum { SL_AWAIT_ALL, SL_AWAIT_SETTLE, SL_AWAIT_ANY };
int sl_step_await(lua_State *L, sl_exec *x, int idx, int mode);

/* From now on the spawned children of x end into its completion queue,
   in the order they end (the fan-out kinds use it). */
void sl_step_collect(sl_exec *x);

/* Pushes the handle of the next child of x to end, in the order they
   ended, waiting for one while any runs; pushes nil when none runs and
   none is queued. For an x that collects. */
int sl_step_next_done(lua_State *L, sl_exec *x);

/* ctx:cancel. Cancels the spawned task whose handle is at idx, with all
   under it. A task that has ended is left as it is. */
void sl_step_cancel(lua_State *L, sl_exec *x, int idx, const char *why);

/* Ends an active run from the top with an error of the given kind: its
   steps are cancelled and its end is recorded. */
void sl_step_stop_run(sl_run *r, const char *kind, const char *msg);


/* Pauses run r if a step waits for a person and nothing else in it can
   make progress. */
void sl_step_check_pause(sl_run *r);

#endif
