/*
** Attempts: what makes a step resilient. Retries with backoff, a timeout
** per attempt (for a step that waits and for one that burns CPU alike), a
** bound on the Lua work of an attempt, validators, and the fallback that
** runs when attempts are spent. Plain steps carry none of it: the
** dispatcher calls in here only for steps the DSL marked with options.
*/
#ifndef SL_ATTEMPT_H
#define SL_ATTEMPT_H

#include "scheduler.h"
#include "cache.h"

/* Why an attempt must end before its code returns. */
enum { SL_INT_NONE, SL_INT_TIMEOUT, SL_INT_LIMIT, SL_INT_ABORT, SL_INT_MEMORY };

/* What follows a failed attempt. */
enum {
  SL_NEXT_FINAL,     /* the step fails with this error */
  SL_NEXT_NOW,       /* another attempt, at once */
  SL_NEXT_LATER,     /* another attempt after a backoff delay */
  SL_NEXT_FALLBACK   /* the fallback, at once */
};

/* The bits of a step's _opts mask, set by the DSL (lua/sluice/dsl.lua):
   which options the step has, so only those are read. */
enum {
  SL_OPT_RETRIES = 1, SL_OPT_BACKOFF = 2, SL_OPT_TIMEOUT = 4, SL_OPT_LIMITS = 8,
  SL_OPT_VALIDATE = 16, SL_OPT_FALLBACK = 32, SL_OPT_CACHE = 64,
  SL_OPT_BACKGROUND = 128, SL_OPT_ESTIMATE = 256
};

/* The most fallbacks that may run inside one another. */
#define SL_MAX_FALLBACK_DEPTH 8

struct sl_attempts {
  sl_task *t;
  sl_engine *e;
  int attempt, max;          /* 1-based; max = retries + 1 */
  double base, cap, jitter;  /* backoff, in seconds */
  uint64_t timeout_ns, deadline;
  lua_Integer instr_limit, instr_used;
  unsigned char validators, fallback, in_fallback, timer_on;
  unsigned opts;             /* SL_OPT_* bits of the options the step has */
  double delay;              /* the backoff chosen for the next attempt */
  unsigned char cache_on;    /* look the output up, and store it */
  unsigned char memo;        /* SL_MEMO_*: its part in the cache lookup */
  unsigned char cache_hit;   /* the output came from the cache */
  unsigned char background;  /* 1: runs beside the run; 2: and must succeed */
  uint64_t ttl_ms;           /* how long a stored output lives (0: ever) */
  sl_key key;
  uv_timer_t timer;          /* the deadline of the attempt */
};

/* Reads the options named by mask (SL_OPT_* bits) of the step at si into t
   (made once per task and kept with it). Raises in L on an option the DSL
   would have refused. */
void sl_attempt_setup(lua_State *L, sl_task *t, int si, unsigned mask);

/* Arms the attempt about to start: its deadline timer, and the count hook
   on its coroutine when it or an ancestor bounds time or work. */
void sl_attempt_arm(sl_task *t);

/* Disarms the attempt that ended. Safe to call on any task. */
void sl_attempt_disarm(sl_task *t);

/* After a failed attempt of t, with its error table on top of L: decides
   what comes next (SL_NEXT_*) and, for another attempt, readies the ctx
   (attempt number, feedback, a fresh view of the state). */
int sl_attempt_next(lua_State *L, sl_task *t);

/* Pushes the error table for t's interrupt. */
void sl_attempt_push_interrupt(lua_State *L, sl_task *t);

/* Is a body needed around the handler (validators), or the fallback? */
int sl_attempt_wraps(sl_task *t);

/* The memory cap's hook (memory.h), ud the state's shared record: refuses
   an allocation past the cap only while a step runs, and then makes that
   step stop at its next instruction with kind "limit", whatever it
   catches, as a timeout does. */
int sl_attempt_memory_refused(void *ud, size_t limit);

/* Closes the attempt state's timer with its task (engine teardown). */
void sl_attempt_close(sl_task *t);

/* Marks the run of the running task as aborted with why, and makes its
   step stop at once: yields its coroutine, or, from a coroutine the step
   made, raises there and hooks the step's own coroutine to yield next. */
int sl_attempt_abort(lua_State *L, const char *why);

#endif
