/*
** Run state copies.
*/
#include <lauxlib.h>

#include "state.h"

/* Pushes a copy of the table at idx (absolute). seen (absolute, or 0 for a
   table known to hold no tables) maps each table already copied to its
   copy, so sharing and cycles survive. */
static void copy_table(lua_State *L, int idx, int seen) {
  luaL_checkstack(L, 6, "state copy");
  lua_createtable(L, (int)lua_rawlen(L, idx), 0);       /* copy */
  int copy = lua_gettop(L);
  if (seen) {
    lua_pushvalue(L, idx);
    lua_pushvalue(L, copy);
    lua_rawset(L, seen);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {                            /* copy k v */
    if (seen && lua_type(L, -1) == LUA_TTABLE) {
      lua_pushvalue(L, -1);
      if (lua_rawget(L, seen) == LUA_TNIL) {            /* copy k v nil */
        lua_pop(L, 1);
        copy_table(L, lua_gettop(L), seen);             /* copy k v vcopy */
      }
      lua_remove(L, -2);                                /* copy k vcopy */
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);                                  /* copy k k v */
    lua_rawset(L, copy);                                /* copy k */
  }
  if (lua_getmetatable(L, idx)) lua_setmetatable(L, copy);
}

static int has_subtables(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pop(L, 2);
      return 1;
    }
    lua_pop(L, 1);
  }
  return 0;
}

void sl_state_copy(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!has_subtables(L, idx)) {
    copy_table(L, idx, 0);
    return;
  }
  lua_newtable(L);                                      /* seen */
  copy_table(L, idx, lua_gettop(L));                    /* seen copy */
  lua_remove(L, -2);
}

void sl_state_shallow_copy(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}
