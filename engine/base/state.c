/*
** Run state: views that copy on read, their changes, and deep copies.
**
** A view is a table with a metatable of its own that holds, in its array
** part, the view's base (V_BASE), the set of keys the view has read,
** written or removed (V_TOUCHED), and whether it replaced the whole state
** (V_REPLACED), and, for a view that tracks them, the keys whose first use
** was a read (V_READS). A key present in the view's own table is the view's value;
** a touched key that is absent was removed (or read as absent); any other
** key is looked up in the base, a chain of views ending at a plain table.
*/
#include <math.h>

#include <lauxlib.h>

#include "state.h"
#include "value.h"

enum { V_BASE = 1, V_TOUCHED, V_REPLACED, V_READS };

/* Marks a view's metatable; its address is the key. */
static const char view_tag = 0;
/* Marks a removed key in a changes table; its address is the value. */
static const char deleted_tag = 0;

void sl_state_push_deleted(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&deleted_tag);
}

static int is_deleted(lua_State *L, int idx) {
  return lua_touserdata(L, idx) == (void *)&deleted_tag &&
         lua_type(L, idx) == LUA_TLIGHTUSERDATA;
}

/* Pushes the metatable of the view at idx and returns 1, or pushes
   nothing and returns 0 when the value is not a view. */
static int view_mt(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;              /* mt */
  if (lua_rawgetp(L, -1, &view_tag) == LUA_TNIL) {      /* mt tag */
    lua_pop(L, 2);
    return 0;
  }
  lua_pop(L, 1);
  return 1;
}

int sl_state_is_view(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !view_mt(L, idx)) return 0;
  lua_pop(L, 1);
  return 1;
}

/* A key a table can hold: not nil, not NaN. */
static int good_key(lua_State *L, int k) {
  int t = lua_type(L, k);
  if (t == LUA_TNIL) return 0;
  if (t == LUA_TNUMBER && !lua_isinteger(L, k)) {
    lua_Number n = lua_tonumber(L, k);
    return n == n;
  }
  return 1;
}

/* Pushes the touched set of the view whose metatable is at mt, making it
   when create is set; pushes nil otherwise when it has none. */
static void push_touched(lua_State *L, int mt, int create) {
  if (lua_rawgeti(L, mt, V_TOUCHED) == LUA_TTABLE || !create) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawseti(L, mt, V_TOUCHED);
}

/* Is the key at k in the touched set at ts (a table or nil)? */
static int touched(lua_State *L, int ts, int k) {
  if (!lua_istable(L, ts)) return 0;
  lua_pushvalue(L, k);
  int in = lua_rawget(L, ts) != LUA_TNIL;
  lua_pop(L, 1);
  return in;
}

/*
** Pushes what the state at index b (a view, a plain table, or anything
** else for an empty state) holds under the key at k, filling no view on
** the way: the first view that has the key, or removed it, decides.
*/
static void lookup(lua_State *L, int b, int k) {
  luaL_checkstack(L, 6, "state lookup");
  lua_pushvalue(L, b);                                  /* cur */
  int cur = lua_gettop(L);
  for (;;) {
    if (lua_type(L, cur) != LUA_TTABLE) break;
    lua_pushvalue(L, k);
    if (lua_rawget(L, cur) != LUA_TNIL) {               /* cur v */
      lua_remove(L, cur);
      return;
    }
    lua_pop(L, 1);
    if (!view_mt(L, cur)) break;                        /* cur mt */
    push_touched(L, cur + 1, 0);                        /* cur mt ts */
    int gone = touched(L, cur + 2, k);
    lua_pop(L, 1);
    if (gone) break;
    lua_rawgeti(L, cur + 1, V_BASE);                    /* cur mt base */
    lua_replace(L, cur);
    lua_settop(L, cur);
  }
  lua_settop(L, cur - 1);
  lua_pushnil(L);
}

/* __index: the first read of a key fills it into the view, a table value
   as a deep copy, and marks it touched. */
static int view_index(lua_State *L) {
  lua_settop(L, 2);                                     /* T k */
  if (!good_key(L, 2)) return 0;
  lua_getmetatable(L, 1);                               /* T k mt */
  push_touched(L, 3, 1);                                /* T k mt ts */
  if (touched(L, 4, 2)) return 0;                       /* removed by this view */
  lua_rawgeti(L, 3, V_BASE);                            /* T k mt ts base */
  lookup(L, 5, 2);                                      /* ... v */
  if (lua_type(L, 6) == LUA_TTABLE) {
    sl_state_copy(L, 6);
    lua_replace(L, 6);
  }
  lua_pushvalue(L, 2);
  lua_pushboolean(L, 1);
  lua_rawset(L, 4);
  if (lua_rawgeti(L, 3, V_READS) == LUA_TTABLE) {      /* ... v reads */
    lua_pushvalue(L, 2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  if (lua_isnil(L, 6)) return 1;
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 6);
  lua_rawset(L, 1);
  return 1;
}

/* __newindex: a key the view does not hold yet is written to it, and
   marked touched (assigning nil removes the base's value). */
static int view_newindex(lua_State *L) {
  lua_settop(L, 3);                                     /* T k v */
  if (lua_isnil(L, 2)) return luaL_error(L, "index is nil");
  if (!good_key(L, 2)) return luaL_error(L, "index is NaN");
  lua_getmetatable(L, 1);                               /* T k v mt */
  push_touched(L, 4, 1);                                /* T k v mt ts */
  lua_pushvalue(L, 2);
  lua_pushboolean(L, 1);
  lua_rawset(L, 5);
  if (!lua_isnil(L, 3)) {
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, 1);
  }
  return 0;
}

static void flatten(lua_State *L, int idx, int depth);

/* Fills the view at idx with every key its base shows that it has not
   touched, so that its own table holds the whole state. */
static void fill_all(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 8, "state");
  lua_getmetatable(L, idx);                             /* mt */
  int mt = lua_gettop(L);
  lua_rawgeti(L, mt, V_BASE);                           /* mt base */
  flatten(L, mt + 1, 0);                                /* mt base flat */
  int flat = lua_gettop(L);
  push_touched(L, mt, 1);                               /* mt base flat ts */
  int ts = flat + 1;
  lua_pushnil(L);
  while (lua_next(L, flat)) {                           /* ... k v */
    int k = lua_gettop(L) - 1;
    lua_pushvalue(L, k);
    int have = lua_rawget(L, idx) != LUA_TNIL;
    lua_pop(L, 1);
    if (!have && !touched(L, ts, k)) {
      if (lua_type(L, -1) == LUA_TTABLE) {
        sl_state_copy(L, -1);
        lua_replace(L, -2);
      }
      lua_pushvalue(L, k);
      lua_insert(L, -2);                                /* ... k k v */
      lua_rawset(L, idx);
      lua_pushvalue(L, k);
      lua_pushboolean(L, 1);
      lua_rawset(L, ts);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_settop(L, mt - 1);
}

/* next, for __pairs: the view's own table, once filled, is the state. */
static int raw_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int view_pairs(lua_State *L) {
  fill_all(L, 1);
  lua_pushcfunction(L, raw_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

/* __sluice_plain: the plain table the view stands for, for encoders. */
static int view_plain(lua_State *L) {
  flatten(L, 1, 0);
  return 1;
}

static int view_len(lua_State *L) {
  fill_all(L, 1);
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
  return 1;
}

/* Pushes a new view over the value at base; replaced marks a view whose
   base is the whole state it replaced its parent's with; track, one that
   records the keys it read before writing them. */
static void new_view(lua_State *L, int base, int replaced, int track) {
  base = lua_absindex(L, base);
  lua_newtable(L);                                      /* T */
  lua_createtable(L, 4, 7);                             /* T mt */
  if (lua_type(L, base) == LUA_TTABLE) {
    lua_pushvalue(L, base);
    lua_rawseti(L, -2, V_BASE);
  }
  if (replaced) {
    lua_pushboolean(L, 1);
    lua_rawseti(L, -2, V_REPLACED);
  }
  if (track) {
    lua_newtable(L);
    lua_rawseti(L, -2, V_READS);
  }
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &view_tag);
  lua_pushcfunction(L, view_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, view_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, view_pairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushcfunction(L, view_len);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, view_plain);
  lua_setfield(L, -2, SL_JSON_PLAIN);
  lua_pushliteral(L, "sluice.state");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);                              /* T */
}

void sl_state_view(lua_State *L, int base, int track) {
  new_view(L, base, 0, track);
}

void sl_state_replacing_view(lua_State *L, int idx) {
  sl_state_copy(L, idx);                                /* copy */
  new_view(L, -1, 1, 0);                                /* copy T */
  lua_remove(L, -2);
}

void sl_state_push_reads(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 8, "state");
  if (!view_mt(L, idx)) {
    lua_pushnil(L);
    return;
  }
  int mt = lua_gettop(L);
  if (lua_rawgeti(L, mt, V_READS) != LUA_TTABLE) {      /* mt reads */
    lua_settop(L, mt - 1);
    lua_pushnil(L);
    return;
  }
  lua_rawgeti(L, mt, V_BASE);                           /* mt reads base */
  lua_newtable(L);                                      /* mt reads base out */
  int reads = mt + 1, base = mt + 2, out = mt + 3, any = 0;
  lua_pushnil(L);
  while (lua_next(L, reads)) {                          /* ... k true */
    lua_pop(L, 1);
    lua_pushvalue(L, -1);                               /* ... k k */
    lookup(L, base, lua_gettop(L));                     /* ... k k v */
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      sl_state_push_deleted(L);
    }
    lua_rawset(L, out);                                 /* ... k */
    any = 1;
  }
  if (!any) {
    lua_settop(L, mt - 1);
    lua_pushnil(L);
    return;
  }
  lua_replace(L, mt);
  lua_settop(L, mt);
}

int sl_state_reads_match(lua_State *L, int base, int reads) {
  base = lua_absindex(L, base);
  reads = lua_absindex(L, reads);
  if (!lua_istable(L, reads)) return 1;
  luaL_checkstack(L, 8, "state");
  lua_pushnil(L);
  while (lua_next(L, reads)) {                          /* k v */
    int k = lua_gettop(L) - 1;
    lookup(L, base, k);                                 /* k v cur */
    int same = is_deleted(L, -2) ? lua_isnil(L, -1) : sl_state_equal(L, -2, -1);
    lua_pop(L, 2);
    if (!same) {
      lua_pop(L, 1);
      return 0;
    }
  }
  return 1;
}

/* Pushes the flat form of the state at idx (a view, a plain table, or
   anything else for an empty state). */
static void flatten(lua_State *L, int idx, int depth) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 8, "state");
  if (depth > 10000) luaL_error(L, "state views nested too deep");
  if (lua_type(L, idx) != LUA_TTABLE) {
    lua_newtable(L);
    return;
  }
  if (!view_mt(L, idx)) {
    sl_state_shallow_copy(L, idx);
    return;
  }
  int mt = lua_gettop(L);
  lua_rawgeti(L, mt, V_BASE);                           /* mt base */
  flatten(L, mt + 1, depth + 1);                        /* mt base flat */
  int flat = lua_gettop(L);
  push_touched(L, mt, 0);                               /* mt base flat ts */
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, flat + 1)) {                     /* ... k true */
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushvalue(L, -1);
      lua_rawget(L, idx);                               /* ... k k v|nil */
      lua_rawset(L, flat);
    }
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {                            /* ... k v */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, flat);
  }
  lua_settop(L, flat);
  lua_replace(L, mt);
  lua_settop(L, mt);
}

void sl_state_flatten(lua_State *L, int idx) {
  flatten(L, idx, 0);
}

void sl_state_push_changes(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 10, "state");
  if (!view_mt(L, idx)) {
    lua_pushnil(L);
    return;
  }
  int mt = lua_gettop(L);
  if (lua_rawgeti(L, mt, V_REPLACED) != LUA_TNIL) {     /* mt true */
    lua_pop(L, 1);
    flatten(L, idx, 0);                                 /* mt flat */
    sl_state_push_deleted(L);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_remove(L, mt);
    return;
  }
  lua_pop(L, 1);
  lua_rawgeti(L, mt, V_BASE);                           /* mt base */
  push_touched(L, mt, 0);                               /* mt base ts */
  int base = mt + 1, ts = mt + 2;
  int changes = 0;
  /* Every key the view holds was touched, unless user code used rawset:
     look at both. */
  for (int pass = 0; pass < 2; pass++) {
    int src = pass == 0 ? ts : idx;
    if (!lua_istable(L, src)) continue;
    lua_pushnil(L);
    while (lua_next(L, src)) {                          /* ... k _ */
      lua_pop(L, 1);
      int k = lua_gettop(L);
      if (pass == 1 && touched(L, ts, k)) continue;
      lua_pushvalue(L, k);
      lua_rawget(L, idx);                               /* ... k v */
      lookup(L, base, k);                               /* ... k v b */
      int differs = lua_isnil(L, -2) ? !lua_isnil(L, -1)
                                     : !sl_state_equal(L, -2, -1);
      if (differs) {
        if (changes == 0) {
          lua_newtable(L);
          lua_replace(L, mt);                           /* mt slot: changes */
          changes = mt;
        }
        lua_pushvalue(L, k);
        if (lua_isnil(L, -3)) sl_state_push_deleted(L);
        else lua_pushvalue(L, -3);
        lua_rawset(L, changes);
      }
      lua_settop(L, k);
    }
  }
  if (changes == 0) {
    lua_settop(L, mt - 1);
    lua_pushnil(L);
  } else {
    lua_settop(L, mt);
  }
}

/* Removes every key of the table at idx. */
static void clear(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, idx);
  }
}

void sl_state_apply(lua_State *L, int ti, int ci) {
  ti = lua_absindex(L, ti);
  ci = lua_absindex(L, ci);
  if (!lua_istable(L, ci)) return;
  luaL_checkstack(L, 8, "state");
  sl_state_push_deleted(L);
  int replace = lua_rawget(L, ci) != LUA_TNIL;
  lua_pop(L, 1);
  int ts = 0;
  if (view_mt(L, ti)) {                                 /* mt */
    int mt = lua_gettop(L);
    if (replace) {
      /* The view now shows exactly the changes: nothing of its old base. */
      clear(L, ti);
      lua_newtable(L);
      lua_rawseti(L, mt, V_BASE);
      lua_newtable(L);
      lua_rawseti(L, mt, V_TOUCHED);
      lua_pushboolean(L, 1);
      lua_rawseti(L, mt, V_REPLACED);
    }
    push_touched(L, mt, 1);                             /* mt ts */
    ts = lua_gettop(L);
  } else if (replace) {
    clear(L, ti);
  }
  lua_pushnil(L);
  while (lua_next(L, ci)) {                             /* ... k v */
    if (is_deleted(L, -2)) {                            /* the replace mark */
      lua_pop(L, 1);
      continue;
    }
    if (ts) {
      lua_pushvalue(L, -2);
      lua_pushboolean(L, 1);
      lua_rawset(L, ts);
    }
    lua_pushvalue(L, -2);
    if (is_deleted(L, -2)) lua_pushnil(L);
    else lua_pushvalue(L, -2);
    lua_rawset(L, ti);
    lua_pop(L, 1);
  }
  if (ts) lua_settop(L, ts - 2);
}

/* Deep copies. */

/* Pushes a copy of the value at idx (absolute). seen (absolute) maps each
   table already copied to its copy, so sharing and cycles survive. */
static void copy_value(lua_State *L, int idx, int seen, int depth) {
  if (lua_type(L, idx) != LUA_TTABLE) {
    lua_pushvalue(L, idx);
    return;
  }
  luaL_checkstack(L, 8, "copy");
  if (depth > 1000) luaL_error(L, "cannot copy a value nested more than 1000 tables deep");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, seen) != LUA_TNIL) return;          /* copied before */
  lua_pop(L, 1);
  int src = idx, flat = 0;
  if (sl_state_is_view(L, idx)) {
    flatten(L, idx, 0);                                 /* flat */
    src = flat = lua_gettop(L);
  }
  lua_createtable(L, (int)lua_rawlen(L, src), 0);       /* [flat] copy */
  int copy = lua_gettop(L);
  lua_pushvalue(L, idx);
  lua_pushvalue(L, copy);
  lua_rawset(L, seen);
  lua_pushnil(L);
  while (lua_next(L, src)) {                            /* copy k v */
    if (lua_type(L, -1) == LUA_TTABLE) {
      copy_value(L, lua_gettop(L), seen, depth + 1);    /* copy k v vcopy */
      lua_remove(L, -2);
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);                                  /* copy k k v */
    lua_rawset(L, copy);                                /* copy k */
  }
  if (!flat && lua_getmetatable(L, idx)) lua_setmetatable(L, copy);
  if (flat) lua_remove(L, flat);
}

/* Does the table at idx (a plain one) hold no table values? */
static int flat_table(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pop(L, 2);
      return 0;
    }
    lua_pop(L, 1);
  }
  return 1;
}

void sl_state_copy(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    lua_pushvalue(L, idx);
    return;
  }
  if (!sl_state_is_view(L, idx) && flat_table(L, idx)) {
    /* The common case, a record of plain values: no map of seen tables. */
    lua_createtable(L, (int)lua_rawlen(L, idx), 0);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
    if (lua_getmetatable(L, idx)) lua_setmetatable(L, -2);
    return;
  }
  lua_newtable(L);                                      /* seen */
  copy_value(L, idx, lua_gettop(L), 0);                 /* seen copy */
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

/* Equality. */

static int equal(lua_State *L, int a, int b, int seen) {
  if (lua_rawequal(L, a, b)) return 1;
  int ta = lua_type(L, a), tb = lua_type(L, b);
  if (ta == LUA_TNUMBER && tb == LUA_TNUMBER) {
    lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
    return x != x && y != y;
  }
  if (ta != LUA_TTABLE || tb != LUA_TTABLE) return 0;
  luaL_checkstack(L, 8, "state compare");
  if (seen == 0) {
    lua_newtable(L);
    seen = lua_gettop(L);
    int eq = equal(L, a, b, seen);
    lua_pop(L, 1);
    return eq;
  }
  lua_pushvalue(L, a);
  if (lua_rawget(L, seen) != LUA_TNIL) {
    int same = lua_rawequal(L, -1, b);
    lua_pop(L, 1);
    if (same) return 1;
  } else {
    lua_pop(L, 1);
  }
  lua_pushvalue(L, a);
  lua_pushvalue(L, b);
  lua_rawset(L, seen);
  lua_pushnil(L);
  while (lua_next(L, a)) {                              /* k va */
    lua_pushvalue(L, -2);
    lua_rawget(L, b);                                   /* k va vb */
    int top = lua_gettop(L);
    if (lua_isnil(L, top) || !equal(L, top - 1, top, seen)) {
      lua_pop(L, 3);
      return 0;
    }
    lua_pop(L, 2);
  }
  lua_pushnil(L);
  while (lua_next(L, b)) {                              /* k vb */
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, a) == LUA_TNIL) {
      lua_pop(L, 2);
      return 0;
    }
    lua_pop(L, 1);
  }
  return 1;
}

int sl_state_equal(lua_State *L, int a, int b) {
  return equal(L, lua_absindex(L, a), lua_absindex(L, b), 0);
}

/* The stored form of changes. */

void sl_state_changes_to_record(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 6, "state");
  lua_createtable(L, 0, 3);                             /* rec */
  int rec = lua_gettop(L);
  lua_newtable(L);                                      /* rec set */
  lua_newtable(L);                                      /* rec set del */
  sl_json_pusharraymt(L);
  lua_setmetatable(L, -2);
  lua_Integer ndel = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {                            /* ... k v */
    if (is_deleted(L, -2)) {                            /* the replace mark */
      lua_pushboolean(L, 1);
      lua_setfield(L, rec, "replace");
    } else if (is_deleted(L, -1)) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, rec + 2, ++ndel);
    } else {
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, rec + 1);
    }
    lua_pop(L, 1);
  }
  lua_setfield(L, rec, "del");
  lua_setfield(L, rec, "set");
}

void sl_state_changes_from_record(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 6, "state");
  lua_newtable(L);                                      /* changes */
  int ch = lua_gettop(L);
  if (!lua_istable(L, idx)) return;
  if (lua_getfield(L, idx, "set") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, ch);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "del") == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      sl_state_push_deleted(L);
      lua_rawset(L, ch);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "replace") == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
    sl_state_push_deleted(L);
    lua_pushboolean(L, 1);
    lua_rawset(L, ch);
  }
  lua_pop(L, 1);
}
