/*
** The ctx a step receives: its fields (run_id, step, attempt, state,
** feedback) and the services it reaches the engine through. A ctx is made
** only for an execution whose code can see one; it names its execution
** until that ends, and raises after.
*/
#ifndef SL_CTX_H
#define SL_CTX_H

#include <lauxlib.h>

#include "core.h"

/* Creates the ctx metatable and stores a ref to it in c->ref_ctxmt. */
void sl_ctx_open(lua_State *L, sl_core *c);

/* Adds methods to every ctx of core c (the I/O services register theirs). */
void sl_ctx_register(lua_State *L, sl_core *c, const luaL_Reg *methods);

/* Pushes the table of the methods every ctx of L's state has (nil before
   an engine opened it): a test harness may wrap one, ctx:http for
   cassettes, for every step of every engine. */
void sl_ctx_push_methods(lua_State *L);

/* Pushes x's ctx, making it on first use. */
void sl_ctx_push(lua_State *L, sl_exec *x);

/* The execution the ctx at idx belongs to; raises when it is not a ctx or
   its execution has ended. */
sl_exec *sl_ctx_check(lua_State *L, int idx);

/* Whether the ctx table at idx still belongs to a live execution. */
int sl_ctx_live(lua_State *L, int idx);

/* x ended: its ctx, if it had one, names nothing any more. */
void sl_ctx_detach(lua_State *L, sl_exec *x);

/* Pushes what the state of x's step falls back to: the view of the
   nearest enclosing step that touched the state, or the run's own table. */
void sl_ctx_push_base(lua_State *L, sl_exec *x);

/* Pushes the view ctx.state shows x's step, making it on first use. */
void sl_ctx_push_state(lua_State *L, sl_exec *x);

#endif
