/*
** Plans. A plan is a full userdata kept in its step table under a private
** light-userdata key (the cache version skips such keys). Its uservalues
** hold the handler last found for its kind, the policy table it was found
** in, and, for a `step`, its run function.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "plan.h"

/* Uservalues of a plan. */
enum { UV_HANDLER = 1, UV_KINDS, UV_RUN, NUV = UV_RUN };

/* The key of a step's plan in its table. */
static const char plan_key = 0;

/* The registry slot of the Step metatable, kept under a light key. */
static const char step_mt_key = 0;

/* The metatable of plans: a plan lets go of its label when collected. */
#define PLAN_MT "sluice.plan"

static int plan_gc(lua_State *L) {
  sl_plan *p = lua_touserdata(L, 1);
  sl_hist_label_drop(p->label);
  p->label = NULL;
  return 0;
}

void sl_plan_open(lua_State *L) {
  if (luaL_newmetatable(L, PLAN_MT)) {
    lua_pushcfunction(L, plan_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

int sl_plan_is_step(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &step_mt_key) == LUA_TNIL) {
    lua_pop(L, 1);
    luaL_getmetatable(L, SL_STEP_MT);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &step_mt_key);
  }
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

/* Raises a bad option of the step at si, at its definition. */
static int bad_option(lua_State *L, int si, const char *name, const char *opt,
                      const char *what) {
  lua_getfield(L, si, "where");
  const char *where = lua_tostring(L, -1);
  return luaL_error(L, "%s%sstep '%s': option '%s' %s", where ? where : "",
                    where ? ": " : "", name, opt, what);
}

/* Reads a number field of the table at idx, or def when absent. */
static double num_field(lua_State *L, int idx, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, idx, k) != LUA_TNIL) v = (double)lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Does the value at idx (a step's run function) take a ctx? A Lua function
   with fewer than two parameters and no varargs cannot see one. */
static int takes_ctx(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx)) return 1;
  lua_Debug ar;
  lua_pushvalue(L, idx);
  if (!lua_getinfo(L, ">u", &ar)) return 1;
  return ar.isvararg || ar.nparams >= 2;
}

/* Reads the options of the step at si into p. */
static void read_options(lua_State *L, sl_plan *p, int si) {
  char err[300];
  p->max_attempts = 1;
  p->base = 0.1;
  p->cap = 10.0;
  p->jitter = 0.1;
  if (lua_getfield(L, si, "retries") != LUA_TNIL) {
    lua_Integer n = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || n < 0)
      bad_option(L, si, p->name, "retries", "must be a non-negative integer");
    p->max_attempts = (int)(n > 1000000 ? 1000000 : n) + 1;
    p->opts |= SL_OPT_RETRIES;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, si, "backoff") == LUA_TTABLE) {
    int b = lua_gettop(L);
    p->base = num_field(L, b, "base", p->base);
    p->cap = num_field(L, b, "max", p->cap > p->base ? p->cap : p->base);
    p->jitter = num_field(L, b, "jitter", 0);
    p->opts |= SL_OPT_BACKOFF;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, si, "pause") != LUA_TNIL) {
    const char *w = lua_tostring(L, -1);
    if (w != NULL && strcmp(w, "before") == 0) p->pause = SL_PAUSE_BEFORE;
    else if (w != NULL && strcmp(w, "after") == 0) p->pause = SL_PAUSE_AFTER;
    else bad_option(L, si, p->name, "pause", "must be \"before\" or \"after\"");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, si, "timeout") != LUA_TNIL) {
    lua_Number s = lua_tonumber(L, -1);
    if (!(s > 0)) bad_option(L, si, p->name, "timeout", "must be a positive number of seconds");
    p->timeout_ns = (uint64_t)(s * 1e9);
    p->opts |= SL_OPT_TIMEOUT;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, si, "limits") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "instructions") != LUA_TNIL) p->instr_limit = lua_tointeger(L, -1);
    lua_pop(L, 1);
    p->opts |= SL_OPT_LIMITS;
  }
  lua_pop(L, 1);
  /* Schemas are checked by the attempt runner, as validators are. */
  if (lua_getfield(L, si, "validate") != LUA_TNIL) p->opts |= SL_OPT_VALIDATE;
  lua_pop(L, 1);
  if (lua_getfield(L, si, "input_schema") != LUA_TNIL) p->opts |= SL_OPT_VALIDATE;
  lua_pop(L, 1);
  if (lua_getfield(L, si, "output_schema") != LUA_TNIL) p->opts |= SL_OPT_VALIDATE;
  lua_pop(L, 1);
  if (lua_getfield(L, si, "fallback") != LUA_TNIL) p->opts |= SL_OPT_FALLBACK;
  lua_pop(L, 1);
  int ct = lua_getfield(L, si, "cache");
  if (ct == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
    p->cache = 1;
  } else if (ct == LUA_TTABLE) {
    p->cache = 1;
    if (lua_getfield(L, -1, "ttl") != LUA_TNIL)
      p->ttl_ms = (uint64_t)(lua_tonumber(L, -1) * 1000.0 + 0.5);
    lua_pop(L, 1);
    p->key_fn = lua_getfield(L, -1, "key") == LUA_TFUNCTION;
    lua_pop(L, 1);
  }
  if (p->cache) p->opts |= SL_OPT_CACHE;
  lua_pop(L, 1);
  int bt = lua_getfield(L, si, "background");
  if (bt == LUA_TSTRING) p->background = SL_BG_REQUIRED;
  else if (bt == LUA_TBOOLEAN && lua_toboolean(L, -1)) p->background = SL_BG_BESIDE;
  if (p->background) p->opts |= SL_OPT_BACKGROUND;
  lua_pop(L, 1);
  if (lua_getfield(L, si, "estimate") == LUA_TTABLE) {
    if (sl_usage_from_lua(L, -1, &p->estimate, SL_USAGE_ALL, err, sizeof err) < 0)
      bad_option(L, si, p->name, "estimate", err);
    p->opts |= SL_OPT_ESTIMATE;
  }
  lua_pop(L, 1);
}

sl_plan *sl_plan_push(lua_State *L, int si) {
  si = lua_absindex(L, si);
  if (lua_type(L, si) == LUA_TTABLE && lua_rawgetp(L, si, &plan_key) == LUA_TUSERDATA)
    return lua_touserdata(L, -1);
  if (lua_type(L, si) == LUA_TTABLE) lua_pop(L, 1);
  if (!sl_plan_is_step(L, si))
    luaL_error(L, "a step made by sl.step or another constructor expected, got %s",
               luaL_typename(L, si));
  luaL_checkstack(L, 8, "plan");
  size_t nlen = 0, klen = 0, wlen = 0;
  lua_getfield(L, si, "kind");
  lua_getfield(L, si, "name");
  lua_getfield(L, si, "where");
  const char *kind = lua_type(L, -3) == LUA_TSTRING ? lua_tolstring(L, -3, &klen) : NULL;
  const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nlen) : NULL;
  const char *where = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &wlen) : NULL;
  if (kind == NULL) kind = "?", klen = 1;
  if (name == NULL) name = kind, nlen = klen;
  sl_plan_open(L);
  sl_plan *p = lua_newuserdatauv(L, sizeof *p + wlen + 1, NUV);  /* k n w plan */
  memset(p, 0, sizeof *p);
  luaL_setmetatable(L, PLAN_MT);
  p->label = sl_hist_label_new(name, nlen, kind, klen);
  if (p->label == NULL) luaL_error(L, "not enough memory");
  p->name = p->label->name;
  p->nlen = nlen;
  p->kind = p->label->kind;
  p->klen = klen;
  if (where != NULL) {
    memcpy(p->strings, where, wlen + 1);
    p->where = p->strings;
  }
  int pi = lua_gettop(L);
  read_options(L, p, si);
  if (lua_getfield(L, si, "run") != LUA_TNIL) {
    p->run_ctx = (unsigned char)takes_ctx(L, -1);
    p->has_run = 1;
    lua_setiuservalue(L, pi, UV_RUN);
  } else {
    lua_pop(L, 1);
  }
  lua_pushvalue(L, pi);
  lua_rawsetp(L, si, &plan_key);
  lua_replace(L, pi - 3);
  lua_settop(L, pi - 3);                                /* plan */
  return p;
}

/* The handlers that are called otherwise than with (step, input, ctx):
   registry[CALLS_KEY][handler] = SL_CALL_*. */
#define CALLS_KEY "sluice.kind_calls"

void sl_plan_mark_call(lua_State *L, int fi, int call) {
  fi = lua_absindex(L, fi);
  if (lua_getfield(L, LUA_REGISTRYINDEX, CALLS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CALLS_KEY);
  }
  lua_pushvalue(L, fi);
  lua_pushinteger(L, call);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* How the handler at idx is called (SL_CALL_*). */
static int call_of(lua_State *L, int idx) {
  int call = SL_CALL_CTX;
  idx = lua_absindex(L, idx);
  if (lua_getfield(L, LUA_REGISTRYINDEX, CALLS_KEY) == LUA_TTABLE) {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TNUMBER) call = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return call;
}

void sl_plan_resolve_in(lua_State *L, int pi, const void *kinds, int kinds_ref) {
  sl_plan *p = lua_touserdata(L, pi);
  if (p->kinds == kinds) return;
  pi = lua_absindex(L, pi);
  lua_rawgeti(L, LUA_REGISTRYINDEX, kinds_ref);         /* kinds */
  lua_pushlstring(L, p->kind, p->klen);
  if (lua_rawget(L, -2) == LUA_TNIL)                    /* kinds handler */
    luaL_error(L, "step '%s'%s%s has kind '%s', which is not registered "
               "(register it with sl.kind)", p->name, p->where ? " defined at " : "",
               p->where ? p->where : "", p->kind);
  p->call = (unsigned char)call_of(L, -1);
  lua_setiuservalue(L, pi, UV_HANDLER);
  /* The plan holds the table, so no other can take its address. */
  lua_setiuservalue(L, pi, UV_KINDS);
  p->kinds = kinds;
}

void sl_plan_push_handler(lua_State *L, int pi) {
  lua_getiuservalue(L, pi, UV_HANDLER);
}

void sl_plan_push_run(lua_State *L, int pi) {
  lua_getiuservalue(L, pi, UV_RUN);
}

int sl_plan_version(lua_State *L, sl_plan *p, int si, sl_key *out,
                    char *err, size_t errlen) {
  if (!p->version_known) {
    if (sl_cache_version(L, si, &p->version, err, errlen) != 0) return -1;
    p->version_known = 1;
  }
  *out = p->version;
  return 0;
}
