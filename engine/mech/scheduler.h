/*
** The scheduler: tasks, each a pooled pair of a C record and a Lua
** coroutine, suspended at waits and resumed from the event loop.
**
** The scheduler knows nothing of steps. The layer above (the step
** lifecycle) gives it the size of its own task records, which begin with
** an sl_task, and a table of hooks it calls when something happened to a
** task: it was resumed from the top, cancelled, stopped, its backoff timer
** fired, or the engine's own work failed while resuming it.
*/
#ifndef SL_SCHEDULER_H
#define SL_SCHEDULER_H

#include <stddef.h>
#include <lua.h>
#include <uv.h>

#include "handles.h"

typedef struct sl_sched sl_sched;
typedef struct sl_task sl_task;

/* Called when a task waiting on a resource (a process, a request) is
   stopped: stops the resource and makes sure nothing it does later wakes
   the task. */
typedef void (*sl_wait_cancel)(sl_task *t, void *data);

/* Why a suspended task is waiting. A coroutine that yields with SL_WAIT_NONE
   yielded by itself (a stray coroutine.yield in step code). */
enum {
  SL_WAIT_NONE,
  SL_WAIT_SLEEP,     /* its timer */
  SL_WAIT_CHILD,     /* the child it runs through ctx:run */
  SL_WAIT_AWAIT,     /* spawned tasks */
  SL_WAIT_IO,        /* a resource with a cancel function (process, request) */
  SL_WAIT_BACKOFF,   /* its timer, before its next attempt */
  SL_WAIT_INTERRUPT, /* nothing: it yielded to end its attempt */
  SL_WAIT_HUMAN      /* a person's answer: its run pauses for it */
};

/* What the layer above is told. Each is called on the engine's main
   thread, inside a protected call where it may raise (resumed), or from a
   path that must not raise (the others raise only memory errors). */
typedef struct sl_sched_hooks {
  /* t was resumed from the top (on L, the main thread) and lua_resume
     returned status with nres results. */
  void (*resumed)(lua_State *L, sl_task *t, int status, int nres);
  /* t was stopped by sl_task_cancel: record and deliver its end as an
     error of kind and msg (unless quiet), and release it. */
  void (*cancelled)(sl_task *t, const char *kind, const char *msg, int quiet);
  /* t is being stopped (its attempt ends): undo what was armed for it. */
  void (*stopping)(sl_task *t);
  /* t's backoff timer fired: arm its next attempt (it is then woken). */
  void (*backoff_over)(sl_task *t);
  /* The engine's own work failed (memory, most likely) while resuming t:
     t cannot go on. */
  void (*failed)(sl_task *t, const char *msg);
  /* A pooled task is let go (pool trim, teardown): free what the layer
     above keeps with it. */
  void (*forget)(sl_task *t);
  /* The loop is about to wait for events: finish what was batched (may be
     NULL). Called outside of any task. */
  void (*idle)(sl_sched *s);
} sl_sched_hooks;

/* What every scheduler of one Lua state shares. Schedulers in different
   states (and so in different threads) share nothing. */
typedef struct sl_sched_shared {
  sl_task *current;    /* the task whose coroutine is running, innermost,
                          or NULL between steps */
  int engines;         /* schedulers living in the state */
} sl_sched_shared;

struct sl_sched {
  lua_State *L;                  /* the main thread of the engine's state */
  uv_loop_t *loop;
  sl_handles *handles;           /* counts the tasks' timers */
  sl_sched_shared *shared;
  const sl_sched_hooks *hooks;
  size_t task_size;              /* bytes of a task record, sl_task first */
  sl_task *free_tasks;           /* pooled tasks, each with its coroutine and timer */
  int nfree;
  sl_task *ready_head, *ready_tail;
  int ntasks;                    /* live and pooled tasks */
  int draining;                  /* sl_sched_drain is on the C stack */
  int depth;                     /* tasks on the C stack (inside lua_resume) */
  int ref_threads;               /* table: task id -> coroutine */
  uv_prepare_t idle;             /* calls hooks->idle before each wait */
};

struct sl_task {
  sl_sched *s;
  lua_State *co;                 /* anchored in the threads table under id */
  sl_task *parent;
  sl_task *children;             /* live children */
  sl_task *next_sib, *prev_sib;
  sl_task *next, *prev;          /* free list, or the ready queue */
  sl_wait_cancel wait_cancel;    /* SL_WAIT_IO: how to abandon the resource */
  void *wait_data;
  lua_KFunction k;               /* what a wait continues in */
  lua_KContext kctx;
  int id;
  int nargs;                     /* values pushed on co for its next resume */
  unsigned char wait;            /* SL_WAIT_* */
  unsigned char running;         /* on the C stack inside lua_resume */
  unsigned char queued;          /* in the ready queue */
  unsigned char parked;          /* SL_PARK_*: in sl_task_park */
  uv_timer_t timer;              /* initialized once, closed with the task */
};

/* The record of L's state, made on first use (raises only memory errors). */
sl_sched_shared *sl_sched_shared_of(lua_State *L);

/* The task running in L's state now, or NULL. Makes nothing, so it may be
   called from a hook or an allocator. */
sl_task *sl_sched_running(lua_State *L);

/* Sets s up on L's state and loop. Raises only memory errors. */
void sl_sched_init(sl_sched *s, lua_State *L, uv_loop_t *loop,
                   sl_handles *handles, size_t task_size,
                   const sl_sched_hooks *hooks);

/* Closes every pooled task (teardown; live tasks must have been released). */
void sl_sched_close(sl_sched *s);

/* Lets go of pooled tasks beyond keep, giving their memory back. */
void sl_sched_trim(sl_sched *s, int keep);

/* Takes a task from the pool (or makes one, its record past the sl_task
   zeroed; a pooled one keeps what the layer above left there) and links
   it under parent. Raises a memory error in L. */
sl_task *sl_task_acquire(lua_State *L, sl_sched *s, sl_task *parent);

/* Takes t out of its parent's children. */
void sl_task_unlink(sl_task *t);

/* Returns an ended task (and its coroutine, reset if it failed) to the
   pool. */
void sl_task_release(sl_task *t);

/* Resumes t's coroutine with the t->nargs values on its stack. from is the
   resuming thread. Returns lua_resume's status and sets *nres. */
int sl_task_resume(sl_task *t, lua_State *from, int *nres);

/* Queues a suspended task to be resumed with nargs more values already
   pushed on its coroutine. */
void sl_task_wake(sl_task *t, int nargs);

/* Resumes queued tasks until none are left (a nested call returns at
   once), each under a protected call. */
void sl_sched_drain(sl_sched *s);

/* Checks that t, running on L, can be suspended here, raising a clear error
   otherwise. */
void sl_task_check_suspend(lua_State *L, sl_task *t);

/* Suspends t (running on L) until something wakes it; records why. Does
   not return: t continues in k. */
int sl_task_suspend(lua_State *L, sl_task *t, int wait,
                    lua_KFunction k, lua_KContext kctx);

/* Suspends t for seconds on its timer. */
int sl_task_sleep(lua_State *L, sl_task *t, double seconds,
                  lua_KFunction k, lua_KContext kctx);

/* Suspends t on a resource already started: when it is done it pushes its
   results on t->co and calls sl_task_wake(t, n) and sl_sched_drain; if t
   is stopped first, cancel(t, data) is called instead and the resource
   must never touch t again. */
int sl_task_suspend_io(lua_State *L, sl_task *t, sl_wait_cancel cancel,
                       void *data, lua_KFunction k, lua_KContext kctx);

/* Where a parked task stands. */
enum { SL_PARK_NONE, SL_PARK_WAITING, SL_PARK_GRANTED };

/* Suspends t until sl_task_unpark(t) or, when seconds >= 0, until seconds
   pass, whichever comes first; it continues in k, where t->parked is
   SL_PARK_GRANTED if it was unparked (the continuation resets it). The
   wait is a sleep to everything else (deadlines, stops). */
int sl_task_park(lua_State *L, sl_task *t, double seconds,
                 lua_KFunction k, lua_KContext kctx);

/* Wakes a parked t from the loop's next turn (never from inside the
   caller, which may be a stop path or another task). Returns 0 if t is not
   parked (it ended, was stopped, or was unparked already). */
int sl_task_unpark(sl_task *t);

/* Waits seconds on t's timer (not running) before hooks->backoff_over. */
void sl_task_backoff(sl_task *t, double seconds);

/* Has the layer above look at t now, as if t had yielded again (hooks->
   resumed with LUA_YIELD and no results, under a protected call), then
   resumes what became ready: a deadline passed while t waited. Does
   nothing while t is running (its resumer looks when it yields). */
void sl_task_poke(sl_task *t);

/* Stops what t is doing without ending it: cancels its children, calls
   hooks->stopping, stops its waits and resets its coroutine (running its
   to-be-closed variables). */
void sl_task_stop(sl_task *t);

/* Stops t and everything under it, then hands it to hooks->cancelled. */
void sl_task_cancel(sl_task *t, const char *kind, const char *msg, int quiet);

#endif
