/*
** Runs: one execution of a pipeline, from its start to its result. A run
** is a userdata (a box pointing at its C block, core.h) holding its Lua
** values in uservalues; the engine anchors it while it is active, and
** whoever started it holds it afterwards.
*/
#ifndef SL_RUN_H
#define SL_RUN_H

#include "host.h"

/* How to start a run beyond its step and input. */
typedef struct sl_run_opts {
  int bi;                  /* index of a budget table overriding the root's, or 0 */
  const char *id;          /* the id of a run to resume, or NULL for a new one */
  int ai;                  /* index of the answers table (path -> answer), or 0 */
  int64_t epoch;           /* a resumed run: the epoch its resume claimed */
  sl_store_replay **replay;   /* a resumed run: its record, read after the
                              claim; the run takes it (*replay becomes NULL) */
  int64_t park_after_ms;   /* a worker's run: park it in a durable wait
                              longer than this (sl_run.park_after_ms); 0: never */
  int bki;                 /* index of its breakpoints, a table of step name
                              -> "before" | "after" | "both" (or names in
                              its list part: before), or 0 */
} sl_run_opts;

/* What the core tells the runs layer (its run_hooks). */
extern const sl_run_hooks sl_run_hooks_of_host;

/* Creates a run of the step at si on the input at ii, pushes its userdata
   and starts its root step; with o->id, a resumed run (completed steps are
   restored from the store). Everything that can fail is done before the
   run counts as active. Raises on a bad step, budget or store. */
sl_run *sl_run_launch(lua_State *L, sl_host *h, int si, int ii, const sl_run_opts *o);

/* Writes a new run id into out (27 bytes at least): 26 characters that sort
   by the time it was made, and strictly in the order this host made them. */
void sl_run_new_id(sl_host *h, char *out);

/* Returns the run userdata at idx, raising if it is not one. */
sl_run *sl_run_check(lua_State *L, int idx);

/* Returns the run of the value at idx, or NULL when it is not a run. */
sl_run *sl_run_test(lua_State *L, int idx);

/* Lets go of one hold on r (the host's, or the box's), freeing the block
   when it was the last. */
void sl_run_release(sl_run *r);

/* Pushes the run's result table (the `--json` shape), building it once;
   nil while the run is active. idx indexes the run userdata. */
void sl_run_push_result(lua_State *L, sl_run *r, int idx);

/* Drives the engine's own loop until r ends. Raises where the engine cannot
   block (a host loop, or from inside a step). */
void sl_run_block(lua_State *L, sl_run *r);

/* Calls fn(r, ud) once when r ends (NULL: nothing). */
void sl_run_on_end(sl_run *r, void (*fn)(sl_run *r, void *ud), void *ud);

/* How far r has got: executions done and running, seconds since it
   started, and what it spent. */
void sl_run_progress(const sl_run *r, int *done, int *running, double *seconds,
                     sl_usage *spent);

/* Registers the run metatable and its methods. */
void sl_run_open(lua_State *L);


#endif
