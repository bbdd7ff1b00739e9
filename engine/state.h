/*
** Run state: the table ctx.state shows a step. Every attempt and every
** concurrent branch works on its own copy, made the first time it reads
** ctx.state, so steps that never touch the state pay nothing for it.
*/
#ifndef SL_STATE_H
#define SL_STATE_H

#include <lua.h>

/* Pushes a deep copy of the table at idx. Shared subtables stay shared and
   cycles are kept; metatables are kept, not copied. */
void sl_state_copy(lua_State *L, int idx);

/* Pushes a copy of the table at idx one level deep: its keys and values,
   the same values. */
void sl_state_shallow_copy(lua_State *L, int idx);

#endif
