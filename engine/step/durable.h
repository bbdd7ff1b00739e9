/*
** The durable phase: what a step in a durable run records. Each step
** execution records a checkpoint, keyed by its path in the tree (the chain
** of ordinals from the root: "1/3/2"), with its output, the changes it made
** to the state, and its usage. Writes are batched: they commit before the
** engine next waits on anything, every few hundred writes, and when a run
** ends or pauses. A resumed run replays its tree: an execution whose
** checkpoint says completed is not run again; its output and state
** changes come from the store.
*/
#ifndef SL_DURABLE_H
#define SL_DURABLE_H

#include "core.h"

/* Opens the store at path for core c (":memory:" or NULL: none), checking
   its header only (the whole file is checked by `sluice store check`),
   with its writer thread and the lease timer; read_only: only to read
   (never created, no writer).
   Returns 0, or a negative code with the message in c->errmsg. */
int sl_durable_open(sl_core *c, const char *path, int read_only);

/* Commits pending writes and closes the store (teardown). */
void sl_durable_close(sl_core *c);

/* Commits pending writes (also done before the loop waits). */
void sl_durable_flush(sl_core *c);

/* Waits until what was written so far is committed or lost, and hands on
   what the writer said (runs waiting for their end end). Blocks. */
void sl_durable_sync(sl_core *c);

/* A write to c's store failed, discarding the batch it was in: every
   durable run of c that is active stops with an error naming the store
   and the reason, rather than go on as if its steps were recorded. */
void sl_durable_write_failed(sl_core *c);

/* Gives execution x its path (its parent's path and its ordinal). */
void sl_durable_path(sl_exec *x);

/* Before a durable execution x that succeeded is taken as done, encodes
   its output (on top of L) and what it changed in the state, for its
   checkpoint. Returns 1; or 0, with the output replaced by an error
   saying what cannot be stored and where in the value, when JSON cannot
   carry it: such a step fails rather than be recorded as completed
   without what it produced. */
int sl_durable_seal(lua_State *L, sl_exec *x);

/* Encodes the input at ii of x, about to run, for its checkpoint: what the
   step was given, to be shown. An input that cannot be stored as JSON, or
   is larger than SL_DURABLE_MAX_INPUT, is recorded as a note saying so. */
#define SL_DURABLE_MAX_INPUT (256 * 1024)

/* A durable wait of a step: ctx:sleep(seconds), or a person's timeout.
   Its due time (wall clock) is recorded under the step (path
   STEP/s<attempt>.<n>, kind "sleep", the name given), so that when the
   run is resumed and the step runs again, the same wait ends at that due
   time rather than starting over (a wait whose length was edited since is
   due that long after the recorded one began). Returns the seconds left:
   all of them the first time, what remains on a resume (0 once it is
   due), and sets *due to the due time (Unix ms). */
double sl_durable_due(sl_exec *x, double seconds, const char *name, int64_t *due);
void sl_durable_input(lua_State *L, sl_exec *x, int ii);

/* Records a checkpoint for the execution x that ended: its sealed output
   and changes when ok, else the error table at out. */
void sl_durable_checkpoint(lua_State *L, sl_exec *x, int ok, int out);

/* For a resumed run: when x's checkpoint says completed, pushes its output,
   applies its state changes and usage, and returns 1. Otherwise 0. */
int sl_durable_restore(lua_State *L, sl_exec *x);

/* Breakpoints (sl.step{ pause = }, sluice run --break): the SL_PAUSE_*
   bits of x's step, from its plan and its run's breakpoints. */
unsigned sl_durable_breaks(const sl_exec *x);

/* As x begins (not restored), with its breakpoints when: one before it
   that a resume has not answered primes x with a body that records the
   wait and pauses the run (returns 1; so does a breakpoint on a run that
   is not durable, whose body fails the step saying why). One answered
   with a new input replaces the input at ii. One after it arms x to pause
   the run once it completed (sl_durable_break_after). Returns 0 when x
   runs as usual. */
int sl_durable_break_begin(lua_State *L, sl_exec *x, int ii, unsigned when);

/* x was restored with its output on top of L: a breakpoint after it that
   a resume answered with a new output replaces it. */
void sl_durable_break_restored(lua_State *L, sl_exec *x);

/* x, armed by sl_durable_break_begin, completed and is recorded: records
   the breakpoint's wait and pauses the run at once (what else runs in it
   stops, to run again on resume). */
void sl_durable_break_after(sl_exec *x);

/* ctx:human(message, schema): returns the answer of a resumed run (pushed,
   1), or records the wait and suspends the step; the run pauses once
   nothing else in it can make progress. mi and si index the message and
   the schema. With a timeout (seconds, 0: none) its due time is recorded
   as a durable wait and the paused run is due then; once it has passed
   with no answer, pushes nil, true (2) instead. */
int sl_durable_human(lua_State *L, sl_exec *x, int mi, int si, double timeout);

/* Milliseconds of Unix time. */
int64_t sl_durable_wall_ms(void);

/* The JSON text of the usage u, in buf. */
const char *sl_durable_usage_json(const sl_usage *u, char *buf, size_t size);

/* Gives every ctx of core c its human method. */
void sl_durable_register(lua_State *L, sl_core *c);

#endif
