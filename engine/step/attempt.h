/*
** Attempts: what makes a step resilient. Retries with backoff, a timeout
** per attempt (for a step that waits and for one that burns CPU alike), a
** bound on the Lua work of an attempt, validators, and the fallback that
** runs when attempts are spent. The options come from the step's plan;
** the state of one execution's attempts lives with its task.
*/
#ifndef SL_ATTEMPT_H
#define SL_ATTEMPT_H

#include "core.h"

/* What follows a failed attempt. */
enum {
  SL_NEXT_FINAL,     /* the step fails with this error */
  SL_NEXT_NOW,       /* another attempt, at once */
  SL_NEXT_LATER,     /* another attempt after a backoff delay */
  SL_NEXT_FALLBACK   /* the fallback, at once */
};

/* What the body of an attempt is. */
enum {
  SL_BODY_HANDLER,   /* the kind's handler, as its plan calls it */
  SL_BODY_CHECKED,   /* the attempt runner: the handler, then validators */
  SL_BODY_FALLBACK   /* the fallback runner */
};

struct sl_attempts {
  sl_exec *x;
  sl_core *c;
  int attempt;               /* 1-based */
  uint64_t deadline;         /* of the attempt running, or 0 */
  lua_Integer instr_used;
  double delay;              /* the backoff chosen for the next attempt */
  unsigned char in_fallback;
  uv_timer_t timer;          /* the deadline of the attempt */
};

/* Gives x attempt state for its plan's options (made once per task and
   kept with it). Raises only memory errors. */
void sl_attempt_setup(lua_State *L, sl_exec *x);

/* Arms the attempt about to start: its deadline timer, and the count hook
   on its coroutine when it or an ancestor bounds time or work. */
void sl_attempt_arm(sl_exec *x);

/* Disarms the attempt that ended. Safe to call on any execution. */
void sl_attempt_disarm(sl_exec *x);

/* After a failed attempt of x, with its error table on top of L: decides
   what comes next (SL_NEXT_*) and, for another attempt, readies it
   (attempt number, feedback, a fresh view of the state). */
int sl_attempt_next(lua_State *L, sl_exec *x);

/* Pushes the error table for x's interrupt. */
void sl_attempt_push_interrupt(lua_State *L, sl_exec *x);

/* Which body x's next attempt runs (SL_BODY_*). */
int sl_attempt_body(const sl_exec *x);

/* Closes the attempt state's timer with its task (pool trim, teardown). */
void sl_attempt_close(sl_exec *x);

/* Marks the run of the running step as aborted with why, and makes the
   step stop at once. */
int sl_attempt_abort(lua_State *L, const char *why);

/* The memory cap's hook (memory.h), ud the state's shared record: refuses
   an allocation past the cap only while a step runs, and then makes that
   step stop at its next instruction with kind "limit", whatever it
   catches, as a timeout does. */
int sl_attempt_memory_refused(void *ud, size_t limit);

#endif
