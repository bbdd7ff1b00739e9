/*
** The ctx a step receives: its fields (run_id, step, attempt, state,
** feedback) and the services it reaches the engine through.
*/
#ifndef SL_CTX_H
#define SL_CTX_H

#include "engine.h"

/* Creates the ctx metatable and stores a ref to it in e->ref_ctxmt. */
void sl_ctx_open(lua_State *L, sl_engine *e);

#endif
