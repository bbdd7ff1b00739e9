/*
** Protected calls.
*/
#include <stdio.h>

#include "protect.h"

int sl_protect(lua_State *L, lua_CFunction fn, void *ud, char *err, size_t errlen) {
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s", msg ? msg : "error in the engine (not a string)");
    lua_pop(L, 1);
  }
  return status;
}
