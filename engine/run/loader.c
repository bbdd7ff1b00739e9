/*
** Loading pipeline files.
*/
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "loader.h"
#include "plan.h"

/* Message handler for a chunk's errors: keeps "file:line: msg" as it is and
   gives other error values a readable form. */
static int load_msgh(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) luaL_tolstring(L, 1, NULL);
  return 1;
}

void sl_load_file(lua_State *L, const char *path) {
  luaL_checkstack(L, 8, "load");
  int top = lua_gettop(L);
  FILE *f = fopen(path, "r");
  if (f == NULL) luaL_error(L, "cannot open '%s': %s", path, strerror(errno));
  fclose(f);
  lua_pushcfunction(L, load_msgh);                      /* msgh */
  if (luaL_loadfilex(L, path, "t") != LUA_OK)           /* msgh err */
    lua_error(L);
  if (lua_pcall(L, 0, 1, top + 1) != LUA_OK)            /* msgh ret|err */
    lua_error(L);
  if (sl_plan_is_step(L, -1)) {
    lua_newtable(L);                                    /* msgh step set */
    lua_getfield(L, -2, "name");
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
  } else if (lua_istable(L, -1)) {
    lua_newtable(L);                                    /* msgh tbl set */
    lua_pushnil(L);
    while (lua_next(L, -3)) {
      if (!sl_plan_is_step(L, -1) || lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "%s: the table it returns must map names to pipelines, "
                   "but its entry %s is %s", path,
                   luaL_tolstring(L, -2, NULL), luaL_typename(L, -2));
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
    lua_pushnil(L);
    if (lua_next(L, -2) == 0)
      luaL_error(L, "%s: the table it returns holds no pipelines", path);
    lua_pop(L, 2);
  } else {
    luaL_error(L, "%s: expected the file to return a pipeline (sl.pipeline"
               "{...}) or a table of named pipelines, got %s", path,
               luaL_typename(L, -1));
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

static void check_step(lua_State *L, int si, int kinds, int seen);

/* Checks v at idx if it is a step, or the steps directly inside it if it is
   a plain table (cases, branches, lists of fallbacks). */
static void check_value(lua_State *L, int idx, int kinds, int seen, int depth) {
  if (sl_plan_is_step(L, idx)) {
    check_step(L, idx, kinds, seen);
  } else if (depth == 0 && lua_istable(L, idx) && !lua_getmetatable(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      check_value(L, lua_gettop(L), kinds, seen, 1);
      lua_pop(L, 1);
    }
  } else if (depth == 0 && lua_istable(L, idx)) {
    lua_pop(L, 1);  /* the metatable */
  }
}

static void check_step(lua_State *L, int si, int kinds, int seen) {
  luaL_checkstack(L, 8, "check");
  si = lua_absindex(L, si);
  lua_pushvalue(L, si);
  if (lua_rawget(L, seen) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, si);
  lua_pushboolean(L, 1);
  lua_rawset(L, seen);
  lua_getfield(L, si, "kind");
  if (lua_rawget(L, kinds) == LUA_TNIL) {
    lua_getfield(L, si, "name");
    lua_getfield(L, si, "kind");
    lua_getfield(L, si, "where");
    luaL_error(L, "%s: step '%s' has kind '%s', which is not registered "
               "(register it with sl.kind)", luaL_optstring(L, -1, "?"),
               luaL_optstring(L, -3, "?"), luaL_optstring(L, -2, "?"));
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, si)) {
    check_value(L, lua_gettop(L), kinds, seen, 0);
    lua_pop(L, 1);
  }
}

void sl_load_check(lua_State *L, int si, int kinds) {
  si = lua_absindex(L, si);
  kinds = lua_absindex(L, kinds);
  lua_newtable(L);
  check_step(L, si, kinds, lua_gettop(L));
  lua_pop(L, 1);
}

void sl_load_select(lua_State *L, int idx, const char *name, const char *file,
                    const char *how) {
  idx = lua_absindex(L, idx);
  if (name != NULL) {
    if (lua_getfield(L, idx, name) != LUA_TNIL) return;
    lua_pop(L, 1);
  } else {
    lua_pushnil(L);
    if (lua_next(L, idx)) {                             /* k v */
      lua_pushvalue(L, -2);
      if (lua_next(L, idx) == 0) {                      /* k v */
        lua_remove(L, -2);
        return;
      }
      lua_pop(L, 4);
    }
  }
  /* List the names, sorted, for the message. */
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, (lua_Integer)lua_rawlen(L, -3) + 1);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "concat");
  lua_pushvalue(L, -3);
  lua_pushliteral(L, ", ");
  lua_call(L, 2, 1);
  const char *names = lua_tostring(L, -1);
  if (file != NULL) lua_pushfstring(L, "'%s' ", file);
  else lua_pushliteral(L, "the file ");
  const char *subject = lua_tostring(L, -1);
  if (name != NULL)
    luaL_error(L, "%shas no pipeline named '%s' (it has: %s)", subject, name, names);
  luaL_error(L, "%sholds several pipelines (%s): choose one with %s", subject, names,
             how ? how : "a name");
}

/* load_pipeline(path[, name]): the pipeline name (or the only one) of the
   file at path, or nil and the message. Loads the file as a load does. */
static int load_pipeline_p(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *name = luaL_optstring(L, 2, NULL);
  sl_load_file(L, path);                                /* path name set */
  sl_load_select(L, -1, name, path, "pipeline = \"NAME\"");
  return 1;
}

int sl_load_pipeline_lua(lua_State *L) {
  lua_settop(L, 2);
  lua_pushcfunction(L, load_pipeline_p);
  lua_insert(L, 1);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  return 1;
}
