/*
** The ctx a step receives: its fields (run_id, step, attempt, state,
** feedback) and the services it reaches the engine through.
*/
#ifndef SL_CTX_H
#define SL_CTX_H

#include <lauxlib.h>

#include "scheduler.h"

/* Creates the ctx metatable and stores a ref to it in e->ref_ctxmt. */
void sl_ctx_open(lua_State *L, sl_engine *e);

/* Adds methods to every ctx of engine e (components that give steps a
   service, such as processes or HTTP, register theirs here). */
void sl_ctx_register(lua_State *L, sl_engine *e, const luaL_Reg *methods);

/* Pushes what the state of task t's step falls back to: the view of the
   nearest enclosing step that touched the state, or the run's own table. */
void sl_ctx_push_base(lua_State *L, sl_task *t);

/* Pushes the view ctx.state shows task t's step, making it on first use
   over the view of the nearest enclosing step that touched the state (or
   the run's own table). */
void sl_ctx_push_state(lua_State *L, sl_task *t);

#endif
