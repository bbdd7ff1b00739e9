/*
** Run records (record.c): a run's own row in the store.
*/
#ifndef SL_RECORD_H
#define SL_RECORD_H

#include "host.h"

/* Writes run r as started, with its input (at ii) and options, owned by
   this process (epoch 1); a resumed run was claimed already. Raises on an
   input the store cannot keep; r is then not durable. Returns the write's
   sequence number, for the run to wait for (0: nothing to wait for). */
uint64_t sl_record_run_begin(lua_State *L, sl_run *r, int ii);

/* Reads a retention policy {days =, keep =} from the table at idx into
   *out; raises naming what (the option) with what was expected. */
void sl_retain_parse(lua_State *L, int idx, const char *what, sl_retain *out);

/* Once ended run r is on record: prunes as its pipeline's retention
   policy (its root's `retain`) and the engine's say, each at most once a
   minute, after the next commit. Never deletes a run that can resume. */
void sl_record_retain(lua_State *L, sl_run *r);

/* Writes run r's end (or pause), with status r->end_status, as its owner,
   letting go of it. Returns the write's number, to wait for before the run
   ends, or 0 when there is nothing to wait for: the run is not durable,
   another process owns it now, or memory ran out (r->unrecorded is then
   set). */
uint64_t sl_record_run_end(lua_State *L, sl_run *r);

/* Pushes the list of run id's waits ({path, message, schema, answer}). */
void sl_record_push_waits(lua_State *L, sl_core *c, const char *run_id);

/* Records the answers in the table at ai (wait path -> answer) for run
   run_id's waits and commits them. Raises naming what could not be
   stored or written. */
void sl_record_answers(lua_State *L, sl_core *c, const char *run_id, int ai);

/* Submits run id (a new id: sl_run_new_id) of the pipeline at si (one the
   host loaded from its file) on the input at ii to queue, for a worker: it
   is recorded, and committed, as queued, with its file, its code version
   and the budget table at bi (0: none). Raises naming what failed. */
void sl_record_submit(lua_State *L, sl_host *h, int si, int ii, int bi, const char *queue,
                      const char *id);

#endif
