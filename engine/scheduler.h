/*
** The scheduler: tasks, each running one step execution on a pooled
** coroutine, suspended at engine waits and resumed from the event loop.
*/
#ifndef SL_SCHEDULER_H
#define SL_SCHEDULER_H

#include "engine.h"
#include "quota.h"
#include "value.h"

/* Called when a task waiting on a resource (a timer, a process, a request)
   is cancelled: stops the resource and makes sure nothing it does later
   wakes the task. */
typedef void (*sl_wait_cancel)(sl_task *t, void *data);

/* Why a suspended task is waiting. A coroutine that yields with SL_WAIT_NONE
   yielded by itself (a stray coroutine.yield in step code), which is an error. */
enum {
  SL_WAIT_NONE,
  SL_WAIT_SLEEP,     /* its timer */
  SL_WAIT_CHILD,     /* the child it runs through ctx:run */
  SL_WAIT_AWAIT,     /* spawned tasks, through ctx:await */
  SL_WAIT_IO,        /* a resource with a cancel function (process, request) */
  SL_WAIT_BACKOFF,   /* its timer, before its next attempt */
  SL_WAIT_INTERRUPT, /* nothing: it yielded to end its attempt (timeout, limit, abort) */
  SL_WAIT_HUMAN      /* a person's answer: the run pauses for it */
};

/* Where a task's outcome goes when it ends. */
enum {
  SL_DELIVER_SYNC,   /* to the parent blocked in ctx:run */
  SL_DELIVER_HANDLE, /* to its task handle, for ctx:await */
  SL_DELIVER_ROOT,   /* to its run */
  SL_DELIVER_BACKGROUND  /* to its run, which ends only after it */
};

/* Slots in the array part of a ctx table, private to the engine. */
enum {
  SL_CTX_TASK = 1,   /* light userdata: the task; nil once the execution ended */
  SL_CTX_STEP,       /* the step table */
  SL_CTX_INPUT,
  SL_CTX_HANDLE,     /* the task handle of a spawned task */
  SL_CTX_HANDLER,    /* the kind's handler, for the next attempt */
  SL_CTX_CHANGES,    /* what a step that succeeded changed in the state,
                        once worked out (false: nothing) */
  SL_CTX_STATE,      /* its view of the state (ctx.state), once made; kept
                        out of the hash part so that every read and write of
                        ctx.state reaches the ctx's metamethods */
  SL_CTX_NSLOTS = SL_CTX_STATE
};

typedef struct sl_attempts sl_attempts;

struct sl_task {
  sl_engine *e;
  sl_run *run;
  lua_State *co;             /* pooled with the task, anchored in e->ref_threads */
  sl_task *parent;
  sl_task *children;         /* live children: a ctx:run child or spawned tasks */
  sl_task *next_sib, *prev_sib;
  sl_task *next;             /* free list or ready queue */
  sl_task *awaiter;          /* the task blocked in ctx:await on this one */
  sl_wait_cancel wait_cancel;  /* SL_WAIT_IO: how to abandon the resource */
  void *wait_data;
  lua_KFunction k;           /* continuation to run when a wait ends */
  lua_KContext kctx;
  sl_attempts *att;          /* attempt state, kept with the task once made */
  sl_usage held;             /* what it still holds of its reservation */
  sl_usage used;             /* the usage it reported: charges and return */
  sl_usage returned;         /* the usage its last attempt returned */
  uint64_t t0;
  int id;                    /* index in the engine's threads and ctxs tables */
  int hist;                  /* index of the execution's history record */
  int nargs;                 /* values pushed on co for its next resume */
  int pending;               /* SL_WAIT_AWAIT: awaited tasks not yet ended */
  int nstarted;              /* children started so far: the next one's ordinal */
  unsigned char wait;        /* SL_WAIT_* */
  unsigned char deliver;     /* SL_DELIVER_* */
  unsigned char running;     /* on the C stack inside lua_resume */
  unsigned char queued;      /* in the ready queue */
  unsigned char timer_on;
  unsigned char att_on;      /* att holds this execution's options */
  unsigned char guarded;     /* it or an ancestor bounds time or work: hook it */
  unsigned char hooked;      /* a count hook is set on co */
  unsigned char interrupt;   /* SL_INT_*: why its attempt must end now */
  unsigned char await_any;   /* in ctx:await_any: the first ending wakes it */
  unsigned char metered;     /* held, used or returned is not all zero */
  unsigned char preset;      /* its output is already on co: resuming ends it */
  unsigned char state_on;    /* its ctx may hold a copy of the state */
  unsigned char sealed;      /* its output and changes are encoded below */
  sl_buf sealed_out;         /* a durable step's output as JSON text */
  sl_buf sealed_changes;     /* and its changes to the state ("" if none) */
  uv_timer_t timer;          /* initialized once, closed with the engine */
};

/* What every engine of one Lua state shares. Engines in different states
   (and so in different threads) share nothing. */
typedef struct sl_sched_shared {
  sl_task *current;    /* the task whose coroutine is running, innermost,
                          or NULL between steps */
  int engines;         /* engines living in the state */
} sl_sched_shared;

/* The record of L's state, made on first use (raises only memory errors). */
sl_sched_shared *sl_sched_shared_of(lua_State *L);

/* The task running in L's state now, or NULL; makes nothing, so it may be
   called from a hook. */
sl_task *sl_sched_running(lua_State *L);

/* Takes a task from the pool (or makes one) and links it under parent.
   Raises a memory error in L on exhaustion. */
sl_task *sl_task_acquire(lua_State *L, sl_engine *e, sl_task *parent);

/* Takes t out of its parent's children, leaving it with no parent. */
void sl_task_unlink(sl_task *t);

/* Unlinks a task that has ended, clears its ctx slot and returns it (and its
   coroutine, reset if it failed) to the pool. */
void sl_task_release(sl_task *t);

/* Resumes t's coroutine with the t->nargs values on its stack. from is the
   resuming thread (NULL at the top level). Returns lua_resume's status and
   sets *nres. */
int sl_task_resume(sl_task *t, lua_State *from, int *nres);

/* Queues a suspended task to be resumed with the nargs values already pushed
   on its coroutine. */
void sl_task_wake(sl_task *t, int nargs);

/* Resumes queued tasks until none are left. Runs at the top level only; a
   nested call returns at once. */
void sl_sched_drain(sl_engine *e);

/* Suspends the calling step (whose coroutine is L, whose task is t) for
   seconds on its timer. Does not return: the step continues in k. */
int sl_task_sleep(lua_State *L, sl_task *t, double seconds,
                  lua_KFunction k, lua_KContext kctx);

/* Suspends t (running on L) until something wakes it; records why. */
int sl_task_suspend(lua_State *L, sl_task *t, int wait,
                    lua_KFunction k, lua_KContext kctx);

/* Checks that t, running on L, can be suspended here, raising a clear error
   otherwise. Call it before starting a resource the wait will be for. */
void sl_task_check_suspend(lua_State *L, sl_task *t);

/* Suspends t on a resource already started. When the resource is done it
   pushes its results on t->co and calls sl_task_wake(t, n) then
   sl_sched_drain; if t is cancelled first, cancel(t, data) is called
   instead and the resource must never touch t again. */
int sl_task_suspend_io(lua_State *L, sl_task *t, sl_wait_cancel cancel,
                       void *data, lua_KFunction k, lua_KContext kctx);

/* Ends t and everything under it: stops its waits, runs the to-be-closed
   variables of its suspended coroutines and records it as cancelled. Its
   outcome is delivered as an error of the given kind and message unless
   quiet (the caller already knows). */
void sl_task_cancel(sl_task *t, const char *kind, const char *msg, int quiet);

/* Ends what t's current attempt is doing without ending t: cancels its
   children, stops its waits and resets its coroutine (running its
   to-be-closed variables). */
void sl_task_stop(sl_task *t);

/* Finds the task running on L, the step's own coroutine, or raises a clear
   error when L is a coroutine the step created itself. */
sl_task *sl_task_current(lua_State *L, int ctxidx);

/* Waits seconds on t's timer before the attempt already primed on its
   coroutine. */
void sl_task_backoff(sl_task *t, double seconds);

/* Closes every pooled task's timer (engine teardown). */
void sl_sched_close(sl_engine *e);

#endif
