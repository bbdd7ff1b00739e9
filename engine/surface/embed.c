/*
** What only the self-contained library (libsluice_embed) holds. It links
** Lua 5.4, lua-cjson and LPeg in and hides them (packaging/embed.map), so
** it loads into processes that already hold another Lua; this file is
** what that takes besides the link.
**
** A C module on disk was built for the process's Lua: its calls would go
** there, not to the Lua inside. So an engine's state here loads the C
** modules it needs from inside the library and refuses the others
** (prepare_state, which the C API calls on every state it makes).
**
** Debian's static archives are built without -fPIC: their few reads of
** stdin, stdout and stderr (print, io, the default warning and panic
** handlers, cjson's and LPeg's messages) assume those variables are in the
** executable, which a shared library cannot satisfy. So the library gives
** them variables of its own by those names, local to it, pointed at the
** streams the process uses before anything in the library runs. A host
** that assigns stdin, stdout or stderr later is not followed.
*/
#include <dlfcn.h>
#include <stdio.h>

#include <lua.h>
#include <lauxlib.h>

#include "engine.h"

/* The definitions that the C library's declarations (stdio.h, through
   lauxlib.h) now name. */
FILE *stdin, *stdout, *stderr;

/* Looks name up as the process sees it (the executable's copy, if it has
   one, else the C library's): the library's own is local, so it is not
   found. */
static FILE *process_stream(const char *name) {
  FILE **p = dlsym(RTLD_DEFAULT, name);
  return p ? *p : NULL;
}


/* The openers of the modules linked in (liblua5.4-cjson.a, liblua5.4-lpeg.a). */
int luaopen_cjson(lua_State *L);
int luaopen_lpeg(lua_State *L);

/* Stands in package.searchers for the C searchers: says why no C module
   is found. */
static int no_c_modules(lua_State *L) {
  lua_pushfstring(L, "\n\tno C module '%s': this sluice library keeps its Lua 5.4 "
                  "to itself", luaL_checkstring(L, 1));
  return 1;
}

/* Prepares a state the library made for an engine (sl_engine_private_lua):
   cjson and lpeg come from inside the library, other C modules are
   refused, package.loadlib is gone. */
static void prepare_state(lua_State *L) {
  lua_getglobal(L, "package");                          /* package */
  lua_getfield(L, -1, "preload");                       /* package preload */
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pushcfunction(L, luaopen_lpeg);
  lua_setfield(L, -2, "lpeg");
  lua_pop(L, 1);                                        /* package */
  lua_getfield(L, -1, "searchers");                     /* package searchers */
  lua_pushcfunction(L, no_c_modules);
  lua_rawseti(L, -2, 3);
  lua_pushnil(L);
  lua_rawseti(L, -2, 4);
  lua_pop(L, 1);                                        /* package */
  lua_pushnil(L);
  lua_setfield(L, -2, "loadlib");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
}

/* Runs when the library is loaded, before any of its functions can be
   called. */
__attribute__((constructor)) static void embed_init(void) {
  stdin = process_stream("stdin");
  stdout = process_stream("stdout");
  stderr = process_stream("stderr");
  sl_engine_private_lua = prepare_state;
}
