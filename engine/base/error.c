/*
** Step errors.
*/
#include <string.h>
#include <ctype.h>

#include <lauxlib.h>

#include "error.h"
#include "value.h"

static void set_field(lua_State *L, const char *k, const char *v) {
  if (v == NULL) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void sl_error_push(lua_State *L, const char *kind, const char *msg,
                   const char *step, const char *where) {
  lua_createtable(L, 0, 4);
  set_field(L, "kind", kind);
  set_field(L, "message", msg);
  set_field(L, "step", step);
  set_field(L, "where", where);
  luaL_setmetatable(L, SL_ERROR_MT);
}

int sl_error_is(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, SL_ERROR_MT);
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

/* Length of a "file:line: " prefix at the start of s, or 0. The file part
   has no spaces before the colon, as Lua's own positions never do except in
   "[string ...]" chunk names, which are accepted too. */
static size_t where_prefix(const char *s, size_t *wlen) {
  const char *p = s;
  if (*p == '[') {
    const char *close = strchr(p, ']');
    if (close == NULL) return 0;
    p = close + 1;
  }
  while (*p && *p != ':' && *p != ' ' && *p != '\n') p++;
  if (*p != ':' || !isdigit((unsigned char)p[1])) return 0;
  p++;
  while (isdigit((unsigned char)*p)) p++;
  if (p[0] != ':' || p[1] != ' ') return 0;
  *wlen = (size_t)(p - s);
  return *wlen + 2;
}

void sl_error_normalize(lua_State *L, int idx, int status, const char *step) {
  idx = lua_absindex(L, idx);
  if (sl_error_is(L, idx)) {
    if (step == NULL) return;
    if (lua_getfield(L, idx, "step") == LUA_TNIL) {
      lua_pushstring(L, step);
      lua_setfield(L, idx, "step");
    }
    lua_pop(L, 1);
    return;
  }
  const char *kind = status == LUA_ERRMEM ? "limit" : "error";
  if (lua_type(L, idx) == LUA_TTABLE) {
    /* A plain table raised by user code: it becomes the error, every field
       it has kept (error({code = 42}) reads err.code == 42), with the kind
       and message it chose or "error" and its own JSON text. */
    int top = lua_gettop(L);
    lua_getfield(L, idx, "kind");                       /* kind */
    lua_getfield(L, idx, "where");                      /* kind where */
    if (lua_getfield(L, idx, "message") != LUA_TSTRING) { /* kind where msg */
      lua_pop(L, 1);
      size_t len = 0;
      int pushed = sl_json_push(L, idx, 0, NULL, 0) == 0;
      if (pushed && (lua_tolstring(L, -1, &len), len <= 200))
        lua_pushfstring(L, "error raised with a table: %s", lua_tostring(L, -1));
      else
        lua_pushliteral(L, "error raised with a table");
      if (pushed) lua_remove(L, -2);
    }
    const char *k = lua_tostring(L, top + 1);
    sl_error_push(L, k ? k : kind, lua_tostring(L, top + 3), step,
                  lua_tostring(L, top + 2));
    int e = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {                          /* ... err k v */
      lua_pushvalue(L, -2);
      if (lua_rawget(L, e) == LUA_TNIL) {               /* a field it lacks */
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, e);
      } else {
        lua_pop(L, 2);
      }
    }
    lua_replace(L, idx);
    lua_settop(L, top);
    return;
  }
  const char *msg;
  if (lua_type(L, idx) == LUA_TSTRING) msg = lua_tostring(L, idx);
  else if (lua_isnil(L, idx)) msg = "error raised with a nil value";
  else {
    lua_pushfstring(L, "error object is a %s value", luaL_typename(L, idx));
    lua_replace(L, idx);
    msg = lua_tostring(L, idx);
  }
  if (status == LUA_ERRMEM) msg = "memory limit reached (not enough memory)";
  size_t wlen = 0, skip = where_prefix(msg, &wlen);
  if (skip > 0) {
    lua_pushlstring(L, msg, wlen);                      /* where */
    sl_error_push(L, kind, msg + skip, step, lua_tostring(L, -1));
    lua_remove(L, -2);
  } else {
    sl_error_push(L, kind, msg, step, NULL);
  }
  lua_replace(L, idx);
}

void sl_error_fields(lua_State *L, int idx, const char **kind,
                     const char **msg, const char **where) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, "kind");
  *kind = lua_tostring(L, -1);
  lua_getfield(L, idx, "message");
  *msg = lua_tostring(L, -1);
  lua_getfield(L, idx, "where");
  *where = lua_tostring(L, -1);
  lua_pop(L, 3);   /* the strings are still held by the table */
}

static int error_tostring(lua_State *L) {
  const char *kind, *msg, *where;
  sl_error_fields(L, 1, &kind, &msg, &where);
  lua_getfield(L, 1, "step");
  const char *step = lua_tostring(L, -1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (step) {
    lua_pushfstring(L, "step '%s' ", step);
    luaL_addvalue(&b);
  }
  if (kind && strcmp(kind, "error") != 0) {
    lua_pushfstring(L, "(%s) ", kind);
    luaL_addvalue(&b);
  }
  luaL_addstring(&b, "failed: ");
  luaL_addstring(&b, msg ? msg : "?");
  if (where) {
    lua_pushfstring(L, " (at %s)", where);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

void sl_error_open(lua_State *L) {
  if (luaL_newmetatable(L, SL_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "sluice.error");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
}
