/*
** A C host that has a Lua state of its own: it opens sluice into it, and
** its own scripts use the DSL directly.
**
**   host_lua
*/
#include <stdio.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <sluice.h>

static const char *script =
  "local sl = require 'sluice'\n"
  "local double = sl.step{ name = 'double', run = function(x, ctx)\n"
  "  ctx:sleep(0.001)\n"
  "  return x * 2\n"
  "end }\n"
  "local p = sl.pipeline{ name = 'host', double, double }\n"
  "local r = sl.run(p, 21)\n"
  "print(r.status, r.output)\n"
  "return r.output\n";

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  sl_engine_options opts = {.L = L};
  sl_engine *e;
  if (sl_engine_new(&e, &opts) != SL_OK) {
    lua_close(L);
    return 1;
  }
  int ok = luaL_dostring(L, script) == LUA_OK;
  if (!ok) fprintf(stderr, "host_lua: %s\n", lua_tostring(L, -1));
  int result = ok ? (int)lua_tointeger(L, -1) : 0;
  sl_engine_free(e);
  lua_close(L);
  return result == 84 ? 0 : 1;
}
