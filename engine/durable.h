/*
** Durable runs: the glue between runs and the store. A run records itself
** when it starts and ends; each step execution records a checkpoint, keyed
** by its path in the tree (the chain of ordinals from the root: "1/3/2"),
** with its output, state and usage. Writes are batched: they commit before
** the engine next waits on anything (so a step that completed is durable
** before any later wait begins), every few hundred writes, and when a run
** ends or pauses. A resumed run replays its tree: an execution whose
** checkpoint says completed is not run again; its output and state come
** from the store.
*/
#ifndef SL_DURABLE_H
#define SL_DURABLE_H

#include "scheduler.h"

/* Opens the store at path for engine e (":memory:" or NULL: none). With
   check, the whole file's integrity is checked first (a run writes to it);
   a command that only reads skips that, relying on SQLite's own checks.
   Returns 0, or a negative code with the message in e->errmsg. */
int sl_durable_open(sl_engine *e, const char *path, int check);

/* Commits pending writes and closes the store (engine teardown). */
void sl_durable_close(sl_engine *e);

/* Records run r as started (or as running again when it resumes). The
   run's root step is at si and its input at ii. Raises on a store error. */
void sl_durable_run_begin(lua_State *L, sl_run *r, int si, int ii);

/* Records run r's end (or pause) and commits. Returns 0, or the store's
   code when that could not be written (the message is the store's). */
int sl_durable_run_end(lua_State *L, sl_run *r);

/* A write to e's store failed, discarding the batch it was in: every
   durable run of e that is active stops with an error naming the store
   and the reason, rather than go on as if its steps were recorded. */
void sl_durable_write_failed(sl_engine *e);

/* Gives execution t its path (the parent's path and t's ordinal). */
void sl_durable_path(sl_task *t);

/* Before a durable execution t that succeeded is taken as done, encodes
   its output (on top of L) and what it changed in the state, for its
   checkpoint. Returns 1; or 0, with the output replaced by an error
   saying what cannot be stored and where in the value, when JSON cannot
   carry it (a NaN, a function, nesting too deep): such a step fails
   rather than be recorded as completed without what it produced. */
int sl_durable_seal(lua_State *L, sl_task *t);

/* Records a checkpoint for the execution t that ended: its sealed output
   and changes when ok, else the error table at out. */
void sl_durable_checkpoint(lua_State *L, sl_task *t, int ok, int out);

/* For a resumed run: when t's checkpoint says completed, pushes its output,
   sets its state and usage, and returns 1. Otherwise returns 0. */
int sl_durable_restore(lua_State *L, sl_task *t);

/* ctx:human(message, schema): returns the answer of a resumed run (pushed,
   1), or records the wait and suspends the step; the run pauses once
   nothing else in it can make progress. mi and si index the message and
   the schema. */
int sl_durable_human(lua_State *L, sl_task *t, int mi, int si);

/* Pushes the list of run id's waits ({path, message, schema, answer}). */
void sl_durable_push_waits(lua_State *L, sl_engine *e, const char *run_id);

/* Resumes run id from the store: loads its file again, refuses a changed
   pipeline unless force, checks and records the answer at ii (0: none) for
   a paused run, and starts it again with its id; completed steps are
   restored, not run. Pushes the run. Raises with a clear message. */
sl_run *sl_durable_resume(lua_State *L, sl_engine *e, const char *id, int ii,
                          int force);

/* Commits pending writes (also done before the loop waits). */
void sl_durable_flush(sl_engine *e);

#endif
