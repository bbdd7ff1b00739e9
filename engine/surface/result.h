/*
** Results as JSON text: what `sluice run --json` prints, sl_run_result_json
** returns and engine:result_json gives.
*/
#ifndef SL_RESULT_H
#define SL_RESULT_H

#include <lua.h>

#include "core.h"

/* Pushes the JSON text of the result of the run (at idx) r, steps and all.
   An output that JSON cannot carry turns the result into a failed one
   whose error says why, so a JSON reader never gets a result that lies
   about its output. Raises only when even that cannot be encoded. */
void sl_result_json(lua_State *L, sl_run *r, int idx, int flags);

/* Keeps the JSON text of the ended run r, which a C host holds, in
   r->result_json (built once). Returns 0, or -1 when it could not be
   built (the message is on the core). */
int sl_result_keep(lua_State *L, sl_run *r);

#endif
