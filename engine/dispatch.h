/*
** The dispatcher: every step execution goes through here. It looks the
** step's kind up in the run's policy table, gives it a task and a ctx,
** records it in the history and delivers its outcome to whoever waits.
*/
#ifndef SL_DISPATCH_H
#define SL_DISPATCH_H

#include "scheduler.h"

/* Starts the run's root step (the run's pipeline uservalue) on the run's
   input from L. The step may end before this returns. Raises in L on a
   step that cannot start. */
void sl_dispatch_root(lua_State *L, sl_run *r, int si, int ii);

/* ctx:run. Runs the step at si on the input at ii as a child of parent and
   pushes its output, or raises its error table. ki is the index of the
   child's key (a string or number naming it among its siblings: a map
   item, a loop iteration), or 0. When the child waits, the caller (running
   on L) is suspended and continues in k with the output pushed. */
int sl_dispatch_run(lua_State *L, sl_task *parent, int si, int ii, int ki,
                    lua_KFunction k, lua_KContext kctx);

/* ctx:spawn. Starts the step at si on the input at ii as a child of parent
   that runs concurrently, and pushes its task handle. ki as for ctx:run. */
void sl_dispatch_spawn(lua_State *L, sl_task *parent, int si, int ii, int ki);

/* ctx:await. Waits for the handle, or list of handles, at idx; pushes the
   output, or a list of outputs in the same order. Raises the first error to
   happen among them. SL_AWAIT_SETTLE waits for all of them whatever
   happens and pushes a list of {ok, output, error}, one per task;
   SL_AWAIT_ANY waits for the first to end and pushes its position in the
   list (nothing for an empty list), never raising its error. */
enum { SL_AWAIT_ALL, SL_AWAIT_SETTLE, SL_AWAIT_ANY };
int sl_dispatch_await(lua_State *L, sl_task *t, int idx, int mode);

/* ctx:cancel. Cancels the spawned task whose handle is at idx, with all
   under it; its handle then holds an error of kind "cancelled". A task
   that has ended is left as it is. */
void sl_dispatch_cancel(lua_State *L, sl_task *t, int idx, const char *why);

/* The scheduler resumed t from the top level (on L, the engine's main
   thread) and lua_resume returned status. */
void sl_dispatch_resumed(lua_State *L, sl_task *t, int status, int nres);

/* Ends t's current attempt because its interrupt is set (a deadline timer
   fired, or a descendant found a bound spent), from the event loop. */
void sl_dispatch_interrupt(sl_task *t);

/* The scheduler cancelled t: record and deliver it, release it. */
void sl_dispatch_cancelled(sl_task *t, const char *kind, const char *msg,
                           int quiet);

/* Raises the error for the step at si when the policy table (a registry
   ref) has no handler for its kind. */
void sl_dispatch_check_kind(lua_State *L, int ref_kinds, int si);

/* Is the value at idx a step made by the DSL? */
int sl_is_step(lua_State *L, int idx);

#endif
