/*
** The ctx. A ctx is a table whose first slot is its execution; what is
** rarely read (run_id, step, attempt, state) is answered by __index, which
** is also where its methods come from. The methods belong to the parts
** that serve them: the lifecycle (run, spawn, await, settle, await_any,
** cancel, sleep), the meter (charge), the durable phase (human), the I/O
** services (exec, http); each registers its own.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "ctx.h"
#include "clock.h"
#include "attempt.h"
#include "plan.h"
#include "state.h"
#include "value.h"

enum { CTX_EXEC = 1 };

void sl_ctx_push(lua_State *L, sl_exec *x) {
  if (sl_exec_get(L, x, SL_REC_CTX) == LUA_TTABLE) return;
  lua_pop(L, 1);
  sl_core *c = sl_core_of(x);
  lua_createtable(L, 1, 1);                             /* ctx */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_ctxmt);
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, x);
  lua_rawseti(L, -2, CTX_EXEC);
  lua_pushvalue(L, -1);
  sl_exec_set(L, x, SL_REC_CTX);
}

sl_exec *sl_ctx_check(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) luaL_typeerror(L, idx, "ctx");
  if (lua_rawgeti(L, idx, CTX_EXEC) != LUA_TLIGHTUSERDATA) {
    lua_pop(L, 1);
    luaL_error(L, "this ctx belongs to a step execution that has ended");
  }
  sl_exec *x = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return x;
}

int sl_ctx_live(lua_State *L, int idx) {
  int live = lua_rawgeti(L, idx, CTX_EXEC) == LUA_TLIGHTUSERDATA;
  lua_pop(L, 1);
  return live;
}

void sl_ctx_detach(lua_State *L, sl_exec *x) {
  if (sl_exec_get(L, x, SL_REC_CTX) == LUA_TTABLE) {
    lua_pushnil(L);
    lua_rawseti(L, -2, CTX_EXEC);
  }
  lua_pop(L, 1);
}

void sl_ctx_push_base(lua_State *L, sl_exec *x) {
  for (sl_exec *p = (sl_exec *)x->task.parent; p != NULL; p = (sl_exec *)p->task.parent) {
    if (!p->state_on) continue;
    if (sl_exec_get(L, p, SL_REC_STATE) == LUA_TTABLE) return;
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->run->ref);       /* run */
  lua_getiuservalue(L, -1, SL_RUN_UV_STATE);            /* run state */
  lua_remove(L, -2);
}

void sl_ctx_push_state(lua_State *L, sl_exec *x) {
  if (x->state_on) {
    if (sl_exec_get(L, x, SL_REC_STATE) == LUA_TTABLE) return;
    lua_pop(L, 1);
  }
  sl_ctx_push_base(L, x);                               /* base */
  /* A step whose output is being cached records what it read, so that the
     entry serves only runs whose state holds the same. */
  int track = x->memo == SL_MEMO_LEAD;
  sl_state_view(L, -1, track);                          /* base view */
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  sl_exec_set(L, x, SL_REC_STATE);
  x->state_on = 1;
}

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* Debug records are kept like any other, but written to stderr only when
   SLUICE_LOG=debug (the engine's own, such as each model call's prompt and
   reply, are many and long). */
static int debug_on_stderr(void) {
  static int on = -1;
  if (on < 0) {
    const char *v = getenv("SLUICE_LOG");
    on = v != NULL && strcmp(v, "debug") == 0;
  }
  return on;
}

/* ctx:log([level,] ...): one record, with a level (debug, info, warn or
   error; info unless the first of several arguments names one), the
   message (the rest, joined by tabs, a table written as JSON when it has
   that form) and fields (the last argument, when it is a table). It goes
   to stderr (debug only with SLUICE_LOG=debug), naming the run and the
   step, and into the step's record: its
   checkpoint (`sluice show`), the result's steps and its span's events. */
static int ctx_log(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  int n = lua_gettop(L);
  int from = 2;
  const char *level = "info";
  if (n >= 3 && lua_type(L, 2) == LUA_TSTRING) {
    const char *l = lua_tostring(L, 2);
    for (int k = 0; log_levels[k]; k++)
      if (strcmp(l, log_levels[k]) == 0) {
        level = log_levels[k];
        from = 3;
      }
  }
  /* A last table after a message is the record's fields, not its text. */
  int fields = n > from && lua_type(L, n) == LUA_TTABLE ? n : 0;
  int last = fields ? n - 1 : n;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = from; i <= last; i++) {
    if (i > from) luaL_addchar(&b, '\t');
    if (lua_type(L, i) != LUA_TTABLE || sl_json_push(L, i, 0, NULL, 0) != 0)
      luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  size_t mlen;
  const char *msg = lua_tolstring(L, -1, &mlen);
  /* The fields as JSON text: a table the encoder cannot write is kept as
     its text, a JSON string. */
  const char *ftext = NULL;
  if (fields && sl_json_push(L, fields, 0, NULL, 0) == 0) {
    ftext = lua_tostring(L, -1);
  } else if (fields) {
    size_t tl;
    const char *t = luaL_tolstring(L, fields, &tl);
    sl_buf fb;
    sl_buf_init(&fb);
    if (sl_json_add_string(&fb, t, tl) == 0) lua_pushlstring(L, fb.data, fb.len);
    else lua_pushliteral(L, "null");
    sl_buf_free(&fb);
    ftext = lua_tostring(L, -1);
  }
  int info = strcmp(level, "info") == 0;
  if (level != log_levels[0] || debug_on_stderr())
    fprintf(stderr, "[%s %s] %s%s%s%s%s\n", x->run->id, x->plan->name, info ? "" : level,
            info ? "" : ": ", msg, fields ? "\t" : "", fields ? ftext : "");
  /* The record: kept with the step for its checkpoint, its span and the
     run's result. */
  sl_run *r = x->run;
  sl_hist_add_log(&r->hist, x->hist, r->start_unix_ns + (int64_t)(sl_now() - r->t_start),
                  level, msg, mlen, ftext);
  return 0;
}

static int ctx_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (k == NULL || lua_type(L, 2) != LUA_TSTRING) return 1;
  if (strcmp(k, "state") == 0) {
    sl_ctx_push_state(L, sl_ctx_check(L, 1));
    return 1;
  }
  if (strcmp(k, "run_id") == 0) {
    sl_exec *x = sl_ctx_check(L, 1);
    lua_pushstring(L, x->run->id);
    return 1;
  }
  if (strcmp(k, "step") == 0) {
    sl_exec *x = sl_ctx_check(L, 1);
    lua_pushlstring(L, x->plan->name, x->plan->nlen);
    return 1;
  }
  if (strcmp(k, "attempt") == 0) {
    sl_exec *x = sl_ctx_check(L, 1);
    lua_pushinteger(L, x->att_on ? x->att->attempt : 1);
    return 1;
  }
  return 1;  /* nil */
}

/* A step that assigns ctx.state replaces the whole state its step sees
   (with a copy of the table given; nil empties it). */
static int ctx_newindex(lua_State *L) {
  lua_settop(L, 3);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "state") == 0) {
    sl_exec *x = sl_ctx_check(L, 1);
    if (lua_isnil(L, 3)) lua_newtable(L);
    else if (!lua_istable(L, 3))
      return luaL_error(L, "ctx.state must be a table, got %s", luaL_typename(L, 3));
    else lua_pushvalue(L, 3);
    sl_state_replacing_view(L, -1);
    sl_exec_set(L, x, SL_REC_STATE);
    x->state_on = 1;
    return 0;
  }
  lua_rawset(L, 1);
  return 0;
}

/* The methods every ctx has from the start; the lifecycle, the phases
   and the I/O services add theirs with sl_ctx_register. */
static const luaL_Reg ctx_methods[] = {
  {"log", ctx_log},
  {NULL, NULL}
};

static int ctx_tostring(lua_State *L) {
  if (lua_rawgeti(L, 1, CTX_EXEC) != LUA_TLIGHTUSERDATA) {
    lua_pushliteral(L, "ctx of a step execution that has ended");
    return 1;
  }
  sl_exec *x = lua_touserdata(L, -1);
  lua_pushfstring(L, "ctx of step '%s'", x->plan->name);
  return 1;
}

void sl_ctx_register(lua_State *L, sl_core *c, const luaL_Reg *methods) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_ctxmt);      /* mt */
  lua_getfield(L, -1, "__index");                       /* mt index */
  lua_getupvalue(L, -1, 1);                             /* mt index methods */
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 3);
}

void sl_ctx_push_methods(lua_State *L) {
  if (luaL_getmetatable(L, SL_CTX_MT) != LUA_TTABLE) return;   /* nil */
  lua_getfield(L, -1, "__index");                       /* mt index */
  lua_getupvalue(L, -1, 1);                             /* mt index methods */
  lua_replace(L, -3);
  lua_pop(L, 1);
}

void sl_ctx_open(lua_State *L, sl_core *c) {
  /* One metatable serves every engine of the state: its methods find their
     execution through the ctx. */
  if (luaL_newmetatable(L, SL_CTX_MT)) {                /* mt */
    luaL_newlib(L, ctx_methods);                        /* mt methods */
    lua_pushcclosure(L, ctx_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ctx_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, ctx_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "sluice.ctx");
    lua_setfield(L, -2, "__name");
  }
  c->ref_ctxmt = luaL_ref(L, LUA_REGISTRYINDEX);
}
