/*
** Resume (resume.c): continuing a stored run.
*/
#ifndef SL_RESUME_H
#define SL_RESUME_H

#include "host.h"

/* Resumes run id from the store: loads its file again, refuses a changed
   pipeline unless force, checks and records the answer at ii (0: none) for
   a paused run, and starts it again with its id and the options it started
   with; completed steps are restored, not run. Pushes the run. Raises with
   a clear message (a cancelled run is refused, naming why). */
sl_run *sl_resume(lua_State *L, sl_host *h, const char *id, int ii, int force);
/* Forks run id at the execution at path from: a new run of the same file
   and input that has what id completed before that execution (its tree
   order: earlier siblings of it and of its ancestors, and what is below
   them) and runs the rest, that execution first. The input at ii (0 or
   nil: as recorded) replaces that execution's input, and the state
   fields of the table at sti (0 or nil: none) are set before it runs.
   The old run is unchanged; the new one's options say where it came from
   (fork = {run_id, path}). Starts it as sl_resume does and pushes it.
   Raises for a path the run has no execution at, naming its nearest. */
sl_run *sl_fork(lua_State *L, sl_host *h, const char *id, const char *from, int ii,
                int sti, int force);

/* (For a run submitted to a queue and paused, the answers are recorded and
   the run goes back to its queue for a worker: nothing is pushed and NULL
   is returned.) */

/* Starts run row, which this engine's owner claimed from its queue (at
   row->epoch), restoring from rp (what the store held of it when it was
   claimed; taken, whatever happens): its file is loaded (or kept from an earlier load while no
   file it read changed), its pipeline selected and started with its
   stored input, options and answers. When this engine's code for the
   pipeline is not the version the run began with, and the pipeline does
   not say on_code_change = "continue", starts nothing: returns NULL with
   why (whylen bytes) saying what the run waits for. Otherwise pushes the
   run. It parks in a durable wait longer than park_after_ms (0: never;
   see sl_run.park_after_ms). Raises on a file that cannot be loaded. */
sl_run *sl_resume_claimed(lua_State *L, sl_host *h, const struct sl_store_run *row,
                          struct sl_store_replay *rp, int64_t park_after_ms,
                          char *why, size_t whylen);

#endif
