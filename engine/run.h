/*
** Runs: one execution of a pipeline, from start to its result, with the
** history of every step execution in it.
*/
#ifndef SL_RUN_H
#define SL_RUN_H

#include "engine.h"
#include "history.h"
#include "quota.h"

/* Uservalue slots of a run's userdata. */
enum {
  SL_RUN_UV_PIPELINE = 1,  /* the root step */
  SL_RUN_UV_INPUT,
  SL_RUN_UV_OUTPUT,
  SL_RUN_UV_ERROR,         /* the error table of a failed run */
  SL_RUN_UV_STATE,         /* the run's shared state table */
  SL_RUN_UV_RESULT,        /* the result table, built once when asked for */
  SL_RUN_UV_ID,            /* the id as a Lua string, shared by every ctx */
  SL_RUN_UV_ANSWERS,       /* a resumed run's answers to its waits, by path */
  SL_RUN_NUV = SL_RUN_UV_ANSWERS
};

/*
** A run's C block is its own allocation, held by its Lua userdata (a box
** pointing at it) and, for a C host, by the host until sl_run_free: it is
** freed when both have let go, in either order, so a host may free its
** engine before its runs.
*/
struct sl_run {
  sl_engine *e;            /* NULL once the engine is gone */
  int holds;               /* the box, and the host's hold: freed at 0 */
  sl_task *root;           /* the pipeline's task while it runs */
  int status;              /* SL_RUN_* */
  int ref;                 /* registry ref to the userdata while the run is active */
  int ref_kinds;           /* the policy table the run started with */
  int ref_host;            /* registry ref held for a C host (sl_run_start) */
  sl_run *next, *prev;     /* the engine's list of runs not yet collected */
  uint64_t t_start, t_end;
  sl_history hist;
  char *result_json;       /* built for the C API on first request */
  void (*on_end)(sl_run *r, void *ud);   /* called once when the run ends */
  void *on_end_ud;
  int aborting;            /* end the run from the top (sl.abort, an overrun) */
  char abort_kind[16];     /* the error kind it ends with: cancelled, quota */
  char abort_msg[1024];
  char abort_step[128];    /* the step that called sl.abort, or "" */
  sl_quota quota;          /* its budget, and what it spent and reserved */
  sl_task *background;     /* background tasks still running (a list) */
  int nbackground;
  int root_done, root_ok;  /* the root ended while background tasks ran */
  int durable;             /* recorded in the engine's store */
  int unrecorded;          /* a write to the store failed: it ends failed,
                              and is stored as interrupted, to be resumed */
  int replay;              /* a resumed run: completed steps come from the store */
  int pausing;             /* a step waits for a person: pause once quiet */
  char file[1024];         /* the pipeline file, for resume ("" if none) */
  char def_hash[40];       /* the pipeline's definition hash */
  int64_t start_unix_ns;   /* wall-clock start, for trace spans */
  int span_base;           /* spans of this attempt at the run: ids apart from earlier ones */
  char id[32];
  char pipeline[128];      /* the root step's name */
};

/* How to start a run beyond its step and input. */
typedef struct sl_run_opts {
  int bi;                  /* index of a budget table overriding the root's, or 0 */
  const char *id;          /* the id of a run to resume, or NULL for a new one */
  int ai;                  /* index of the answers table (path -> answer), or 0 */
} sl_run_opts;

/* Starts a run as sl_run_start_lua does, with opts (resume: same id,
   completed steps restored from the store). */
sl_run *sl_run_start_ex(lua_State *L, sl_engine *e, int si, int ii,
                        const sl_run_opts *o);

/* Pauses run r if a step waits for a person and nothing else in it can
   make progress: its tasks end, it is stored as paused. */
void sl_run_check_pause(sl_run *r);

/* Creates a run of the step at index si on input at ii, anchors it, pushes
   its userdata and starts its root task. bi is the index of a budget table
   ({cost=, tokens=, requests=}) that overrides the root's budget option,
   or 0. Raises on a bad step or budget. */
sl_run *sl_run_start_lua(lua_State *L, sl_engine *e, int si, int ii, int bi);

/* The background task t of run r ended with its outcome on top of L
   (popped); required: its failure fails the run. */
void sl_run_background_ended(sl_run *r, sl_task *t, lua_State *L, int ok,
                             int required);

/* Called by the dispatcher when the root task has ended with its outcome
   (output or error table) on top of L, which it pops. */
void sl_run_finish(sl_run *r, lua_State *L, int ok);

/* The background task t of run r ended with its outcome on top of L
   (popped); required: its failure fails the run. */
void sl_run_background_ended(sl_run *r, sl_task *t, lua_State *L, int ok,
                             int required);

/* Fails an active run with an error of the given kind, from the top: as
   soon as the step running now returns to the loop, or before the loop
   next waits. Safe to call from inside the dispatcher. A run already
   ending keeps the reason it had. */
void sl_run_fail(sl_run *r, const char *kind, const char *msg);

/* Fails an active run from outside its steps (a stalled loop, engine
   teardown) with an error of the given kind. */
void sl_run_abandon(sl_run *r, const char *kind, const char *msg);

/* Pushes the run's result table (the `--json` shape), building it once. */
void sl_run_push_result(lua_State *L, sl_run *r, int idx);

/* Returns the run userdata at idx, raising if it is not one. */
sl_run *sl_run_check(lua_State *L, int idx);

/* Returns the run of the value at idx, or NULL when it is not a run. */
sl_run *sl_run_test(lua_State *L, int idx);

/* Lets go of one hold on r (the host's, or the box's), freeing the block
   when it was the last. */
void sl_run_release(sl_run *r);

/* Drives the engine's own loop until the run at idx ends. Raises where the
   engine cannot block (a host loop, or from inside a step). */
void sl_run_wait_lua(lua_State *L, sl_run *r);

/* Registers the run metatable and its methods. */
void sl_run_open(lua_State *L);

const char *sl_run_status_name(int status);

/* Writes the span of history record i of run r to the engine's trace. */
void sl_run_trace_step(sl_run *r, int i);

#endif
