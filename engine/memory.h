/*
** The memory cap: a Lua allocator that counts what a state holds and, while
** a step runs, refuses to grow past a limit. The refusal is an ordinary Lua
** memory error in the step that asked, which fails that step with kind
** "limit"; the engine's own work between steps is never refused, so it can
** always record the failure and go on.
*/
#ifndef SL_MEMORY_H
#define SL_MEMORY_H

#include <stddef.h>
#include <lua.h>

/* Puts the counting allocator on L's state (wrapping the allocator it has)
   and sets its limit in bytes (0: none). Raises in L when memory for the
   allocator's record is lacking. */
void sl_memory_limit(lua_State *L, size_t limit);

/* The limit set on L's state in bytes (0: none). */
size_t sl_memory_get_limit(lua_State *L);

/* Bytes the state holds now, as the allocator counts them (0 when the
   allocator is not installed). */
size_t sl_memory_used(lua_State *L);

/* Takes the allocator off L's state again, if it is the last one put on. */
void sl_memory_remove(lua_State *L);

#endif
