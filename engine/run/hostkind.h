/*
** Host kinds (hostkind.c): step kinds a C host implements (sl_engine_kind;
** sl_step_complete and sl_step_fail are defined there too).
*/
#ifndef SL_HOSTKIND_H
#define SL_HOSTKIND_H

#include <lua.h>

#include "sluice.h"

/* Pushes the handler of a host kind: a Lua function that, as a kind's
   handler (step, input, ctx), gives fn the input as JSON and a handle,
   and returns the output the host completes it with. */
void sl_hostkind_push(lua_State *L, const char *name, sl_kind_fn fn, void *ud);

#endif
