/*
** The step layer's records: the core an engine's steps run in, a run as
** the lifecycle sees it, and one step execution.
**
** A core holds the scheduler (first, so a task's scheduler is its core)
** and the mechanisms steps use: the cache, the store, the trace. The runs
** layer above builds on it and is told of a run's end through a hook.
*/
#ifndef SL_CORE_H
#define SL_CORE_H

#include <stdint.h>
#include <lua.h>
#include <uv.h>

#include "cache.h"
#include "handles.h"
#include "history.h"
#include "names.h"
#include "quota.h"
#include "scheduler.h"
#include "store.h"
#include "trace.h"
#include "writer.h"
#include "value.h"
#include "sluice.h"

typedef struct sl_core sl_core;
typedef struct sl_run sl_run;
typedef struct sl_exec sl_exec;
typedef struct sl_plan sl_plan;
typedef struct sl_attempts sl_attempts;
typedef struct sl_memo_fetch sl_memo_fetch;

/* What the runs layer is told. */
typedef struct sl_run_hooks {
  /* Run r has ended: its root and background steps are done and its
     outcome is set (output or error uservalue, root_ok). The hook decides
     its status, records it and lets go of it. Called on L (a thread of the
     engine's state) from inside the engine. */
  void (*ended)(sl_run *r, lua_State *L);
  /* The store's writer answered for every write up to upto: committed
     (ok), or lost with its batch (msg says why). Runs whose end waited
     for it can end now. Called on the loop's thread, outside any step. */
  void (*recorded)(sl_core *c, uint64_t upto, int ok, const char *msg);
} sl_run_hooks;

struct sl_core {
  sl_sched sched;            /* first: a task's scheduler is its core */
  lua_State *L;              /* the main thread of the engine's state */
  uv_loop_t *loop;
  sl_handles *handles;       /* the engine's count of open handles */
  sl_cache *cache;           /* the in-memory tier of the step cache, or NULL */
  sl_store *store;           /* durable runs and the persistent cache, or NULL:
                                the loop's connection, for reading */
  sl_writer *writer;         /* the store's writes, on a thread of their own */
  char owner[160];           /* this process as the owner of its runs */
  int64_t lease_ms;          /* how long a lease lasts */
  uv_timer_t *lease_timer;   /* renews the leases of the active runs */
  int64_t last_commit_ms;    /* when the writer last committed (Unix ms) */
  sl_trace *trace;           /* where spans go, or NULL */
  const sl_run_hooks *run_hooks;
  sl_run *runs;              /* every run not yet collected */
  int active_runs;
  int ref_ctxmt;             /* the ctx metatable */
  int ref_kinds;             /* the current policy table: kind name -> handler */
  int cache_all;             /* cache every step (sluice dev) */
  int closing;               /* being torn down: start nothing new */
  int abort_pending;         /* a run was asked to stop (sl_core_abort_run) */
  lua_Integer seq;           /* orders task endings */
  /* The clock read when the last step ended, while nothing has run since
     but its parent's C code: the start of the next child that parent
     starts (so a chain reads the clock once per step). */
  uint64_t clock_at;
  const sl_exec *clock_for;  /* that parent, or NULL once anything ran */
  int64_t spans_dropped;     /* spans the trace could not write */
  uint64_t rng;              /* xorshift state, for backoff jitter */
  char errmsg[1024];         /* the message of the last failure */
};

/* A breakpoint of a run: the steps named name pause it (SL_PAUSE_* bits,
   plan.h). */
typedef struct sl_break {
  char *name;
  unsigned char when;
} sl_break;

/* Uservalue slots of a run's userdata. */
enum {
  SL_RUN_UV_PIPELINE = 1,  /* the root step */
  SL_RUN_UV_INPUT,
  SL_RUN_UV_OUTPUT,
  SL_RUN_UV_ERROR,         /* the error table of a failed run */
  SL_RUN_UV_STATE,         /* the run's shared state table */
  SL_RUN_UV_RESULT,        /* the result table, built once when asked for */
  SL_RUN_UV_ID,            /* the id as a Lua string */
  SL_RUN_UV_ANSWERS,       /* a resumed run's answers to its waits, by path */
  SL_RUN_NUV = SL_RUN_UV_ANSWERS
};

/*
** A run. Its C block is its own allocation, held by its Lua userdata (a
** box pointing at it) and, for a C host, by the host until sl_run_free: it
** is freed when both have let go, in either order.
*/
struct sl_run {
  sl_core *core;           /* NULL once the engine is gone */
  int holds;               /* the box, and the host's hold: freed at 0 */
  sl_exec *root;           /* the root step's execution while it runs */
  int status;              /* SL_RUN_* (sluice.h) */
  int ref;                 /* registry ref to the userdata while active */
  int ref_kinds;           /* the policy table the run started with */
  const void *kinds;       /* that table, as a pointer, to check plans */
  sl_key kinds_version;    /* its cache version, once worked out */
  int kinds_version_known;
  int ref_host;            /* registry ref held for a C host */
  sl_run *next, *prev;     /* the core's list of runs */
  uint64_t t_start, t_end;
  sl_history hist;
  char *result_json;       /* built for the C API on first request */
  void (*on_end)(sl_run *r, void *ud);   /* called once when the run ends */
  void *on_end_ud;
  int aborting;            /* end the run from the top (sl.abort, an overrun) */
  char abort_kind[16];     /* the error kind it ends with */
  char abort_msg[1024];
  char abort_step[128];    /* the step that called sl.abort, or "" */
  sl_quota quota;          /* its budget, and what it spent and reserved */
  sl_exec *background;     /* background steps still running (a list) */
  int nbackground;
  int root_done, root_ok;  /* the root ended while background steps ran */
  int durable;             /* recorded in the engine's store */
  int replay;              /* resumed: completed steps come from the store */
  sl_store_replay *replay_from;   /* what the store held of it when it was
                              resumed, restored from; owned, freed at its end */
  int unrecorded;          /* a write to the store failed */
  int lost;                /* another process owns the run now: this one
                              records nothing more of it */
  int64_t epoch;           /* the run's epoch while this process owns it */
  uint64_t start_seq;      /* the write of its start, while waiting for it */
  int awaiting_start;      /* its start is written, not yet committed: no
                              step runs before the run is on record */
  uint64_t end_seq;        /* the write of its end, while waiting for it */
  int awaiting_record;     /* its end is written, not yet committed */
  int end_status;          /* the status it ends with, once its root ended */
  int pausing;             /* a step waits for a person or a long durable
                              sleep: pause (or park) once quiet */
  int64_t park_after_ms;   /* a worker's run: a durable wait longer than
                              this parks it (status waiting, its slot
                              freed); 0: it waits in process */
  int64_t due_ms;          /* parked or paused: when its first wait is due
                              (Unix ms), a worker claims it then; 0: none */
  sl_break *breaks;        /* breakpoints by step name (sluice run --break),
                              nbreaks of them; kept in its options */
  int nbreaks;
  int edits;               /* its answers hold a breakpoint's or a fork's
                              edits (paths STEP@before, STEP@after) */
  char file[1024];         /* the pipeline file, for resume ("" if none) */
  char def_hash[40];       /* the pipeline's definition hash */
  int64_t start_unix_ns;   /* wall-clock start, for trace spans */
  int span_base;           /* spans of this attempt at the run */
  char id[32];
  char pipeline[128];      /* the root step's name */
};

/* Where an execution's outcome goes when it ends. */
enum {
  SL_DELIVER_SYNC,       /* to the parent, blocked in ctx:run */
  SL_DELIVER_HANDLE,     /* to its task handle, for ctx:await */
  SL_DELIVER_ROOT,       /* to its run */
  SL_DELIVER_BACKGROUND  /* to its run, which ends only after it */
};

/* Why an attempt must end before its code returns. */
enum { SL_INT_NONE, SL_INT_TIMEOUT, SL_INT_LIMIT, SL_INT_ABORT, SL_INT_MEMORY };

/* The slots of an execution's record: a Lua table kept with its pooled
   task (registry[task]), made the first time a slot is needed. */
enum {
  SL_REC_STEP = 1,       /* the step and its input, for the next attempt */
  SL_REC_INPUT,
  SL_REC_CTX,            /* the ctx user code sees, once made */
  SL_REC_HANDLE,         /* the task handle of a spawned execution */
  SL_REC_STATE,          /* its view of the state, once made */
  SL_REC_CHANGES,        /* what it changed in the state (false: nothing) */
  SL_REC_ERROR,          /* the error its fallback runs after */
  SL_REC_DONE,           /* the handles of its ended children, in order */
  SL_REC_NSLOTS = SL_REC_DONE
};

/* The part a step with the cache option plays in its lookup (memo.c). */
enum {
  SL_MEMO_NONE,    /* nothing to look up: run as usual */
  SL_MEMO_HIT,     /* the output was found and pushed */
  SL_MEMO_LEAD,    /* run it, and store what it gives */
  SL_MEMO_FOLLOW,  /* another execution is computing it: wait for that one */
  SL_MEMO_AGAIN,   /* it waited, and found nothing: look again */
  SL_MEMO_MISSED   /* a leader found nothing in the store: run it */
};

/* One step execution. The scheduler's task comes first. */
struct sl_exec {
  sl_task task;
  sl_run *run;
  sl_plan *plan;             /* the step's prepared form */
  sl_attempts *att;          /* attempt state, made once per pooled task */
  sl_exec *awaiter;          /* the execution blocked in ctx:await on this one */
  sl_usage held;             /* what it still holds of its reservation */
  sl_usage used;             /* the usage it reported: charges and return */
  sl_usage returned;         /* the usage its last attempt returned */
  int hist;                  /* index of its history record */
  int pending;               /* awaited tasks not yet ended */
  int nstarted;              /* children started so far: the next one's ordinal */
  int done_head, done_tail;  /* its completion queue in SL_REC_DONE */
  unsigned char deliver;     /* SL_DELIVER_* */
  unsigned char att_on;      /* att holds this execution's options */
  unsigned char guarded;     /* it or an ancestor bounds time or work */
  unsigned char hooked;      /* a count hook is set on its coroutine */
  unsigned char interrupt;   /* SL_INT_*: why its attempt must end now */
  unsigned char await_any;   /* in ctx:await_any: the first ending wakes it */
  unsigned char await_next;  /* waiting for its completion queue */
  unsigned char collecting;  /* its spawned children end into its queue */
  unsigned char metered;     /* held, used or returned is not all zero */
  unsigned char preset;      /* its output is already on its coroutine */
  unsigned char state_on;    /* its record holds a view of the state */
  unsigned short has_rec;    /* bit i: slot i of its record is set */
  unsigned char sealed;      /* its output and changes are encoded below */
  unsigned char memo;        /* SL_MEMO_*: its part in the cache lookup */
  unsigned char cache_hit;   /* its output came from the cache */
  sl_key memo_key;           /* its cache key, while memo is not NONE */
  struct sl_memo_fetch *fetch;   /* its persistent-tier lookup in flight */
  sl_buf sealed_out;         /* a durable step's output as JSON text */
  sl_buf sealed_changes;     /* and its changes to the state ("" if none) */
  sl_buf sealed_in;          /* its input as JSON text, for show and the ui */
  unsigned short sleep_attempt, nsleeps;   /* its ctx:sleep calls so far, in
                                               that attempt (durable sleeps) */
  unsigned char parkable;    /* in a durable wait its run may be parked for */
  unsigned char break_after; /* pauses its run once it completed */
  int64_t due_ms;            /* when that wait (a sleep, a person's timeout)
                                is due, Unix ms; 0: none */
};

/* The execution of the task t. */
static inline sl_exec *sl_exec_of(sl_task *t) { return (sl_exec *)t; }

/* The core of the execution x. */
static inline sl_core *sl_core_of(sl_exec *x) { return (sl_core *)x->task.s; }

/* The execution running in L's state now, or NULL. */
static inline sl_exec *sl_exec_running(lua_State *L) {
  return (sl_exec *)sl_sched_running(L);
}

/* Pushes x's record, making it when create (else pushes nil when it has
   none). */
void sl_exec_push_rec(lua_State *L, sl_exec *x, int create);

/* Sets slot i of x's record to the value on top of L (popped). */
void sl_exec_set(lua_State *L, sl_exec *x, int i);

/* Pushes slot i of x's record (nil when it has none). */
int sl_exec_get(lua_State *L, sl_exec *x, int i);

/* Clears x's record for the next execution its task runs. */
void sl_exec_clear_rec(lua_State *L, sl_exec *x);

/* Records a failure message on the core and returns code. */
int sl_core_fail(sl_core *c, int code, const char *fmt, ...);

/* Asks the running run r to stop with an error of kind and msg: it aborts
   at the next point it can (nothing is ended here). Keeps the first
   reason given. */
void sl_core_abort_run(sl_run *r, const char *kind, const char *msg);

/* The name of a run status (SL_RUN_*), as results, records and the CLI
   write it. */
const char *sl_status_name(int status);

#endif
