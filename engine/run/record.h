/*
** Run records (record.c): a run's own row in the store.
*/
#ifndef SL_RECORD_H
#define SL_RECORD_H

#include "host.h"

/* Records run r as started, with its input (at ii) and options, or as
   running again when it is resumed. Raises on an input the store cannot
   keep and on a store error; r is then not durable. */
void sl_record_run_begin(lua_State *L, sl_run *r, int ii);

/* Records run r's end (or pause) and commits. Returns 0, or the store's
   code when that could not be written. */
int sl_record_run_end(lua_State *L, sl_run *r);

/* Pushes the list of run id's waits ({path, message, schema, answer}). */
void sl_record_push_waits(lua_State *L, sl_core *c, const char *run_id);

/* Records the answers in the table at ai (wait path -> answer) for run
   run_id's waits and commits them. Raises naming what could not be
   stored or written. */
void sl_record_answers(lua_State *L, sl_core *c, const char *run_id, int ai);

#endif
