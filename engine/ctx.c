/*
** The ctx. A ctx is a plain table, so reading its fields costs a table
** lookup; what is rarely read (run_id, state) is filled on first read by
** __index, which is also where its methods come from.
*/
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "ctx.h"
#include "dispatch.h"
#include "meter.h"
#include "durable.h"
#include "run.h"
#include "state.h"
#include "value.h"
#include "attempt.h"
#include "memo.h"

static int ctx_run_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return 1;
}

/* ctx:run(step, input[, key]): runs a child step through the engine and
   returns its output; its error is raised in the calling step. key names
   the execution among its siblings in the history (an item, an iteration). */
static int ctx_run(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  lua_settop(L, 4);
  return sl_dispatch_run(L, t, 2, 3, 4, ctx_run_k, 0);
}

/* ctx:spawn(step, input[, key]): starts a child step concurrently; returns
   its task handle. */
static int ctx_spawn(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  lua_settop(L, 4);
  sl_dispatch_spawn(L, t, 2, 3, 4);
  return 1;
}

/* ctx:await(task or list of tasks): waits for spawned tasks; returns the
   output, or the outputs in the same order. */
static int ctx_await(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  lua_settop(L, 2);
  return sl_dispatch_await(L, t, 2, SL_AWAIT_ALL);
}

/* ctx:await_any(tasks): waits until one of the tasks has ended; returns the
   position in the list of the first to end. Its failure is not raised:
   read it from ctx:await or ctx:settle on that task. */
static int ctx_await_any(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  lua_settop(L, 2);
  luaL_checktype(L, 2, LUA_TTABLE);
  return sl_dispatch_await(L, t, 2, SL_AWAIT_ANY);
}

/* ctx:settle(tasks): waits for every task whatever happens; returns a list
   of {ok, output, error} in the same order. */
static int ctx_settle(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  lua_settop(L, 2);
  return sl_dispatch_await(L, t, 2, SL_AWAIT_SETTLE);
}

/* ctx:cancel(task[, why]): cancels a spawned task that is still running,
   with everything under it. */
static int ctx_cancel(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  const char *why = luaL_optstring(L, 3, "cancelled by its parent step");
  lua_settop(L, 3);
  sl_dispatch_cancel(L, t, 2, why);
  return 0;
}

static int ctx_sleep_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status; (void)kctx;
  return 0;
}

/* ctx:sleep(seconds): suspends only the calling step. */
static int ctx_sleep(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  lua_Number s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s >= 0 && s == s, 2, "seconds must be a non-negative number");
  return sl_task_sleep(L, t, (double)s, ctx_sleep_k, 0);
}

/* ctx:charge(usage): records usage ({cost=, tokens=, requests=}) at once,
   against the run's budget. Usage past the budget fails the run after
   this step. */
static int ctx_charge(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  sl_meter_charge(L, t, 2);
  return 0;
}

/* ctx:human(message[, schema]): waits for a person's answer, which a
   resume supplies (checked against schema); the run pauses meanwhile. */
static int ctx_human(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  return sl_durable_human(L, t, 2, 3);
}

/* ctx:log(...): writes one line to stderr naming the run and the step. */
static int ctx_log(lua_State *L) {
  sl_task *t = sl_task_current(L, 1);
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 2; i <= n; i++) {
    if (i > 2) luaL_addchar(&b, '\t');
    /* A table is written as JSON when it has that form, so a record reads
       as its contents rather than "table: 0x...". */
    if (lua_type(L, i) != LUA_TTABLE || sl_json_push(L, i, 0, NULL, 0) != 0)
      luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  const char *name = t->run ? t->run->hist.recs[t->hist].name : "?";
  fprintf(stderr, "[%s %s] %s\n", t->run ? t->run->id : "?", name,
          lua_tostring(L, -1));
  return 0;
}

/* Pushes what the state of task t's step falls back to: the view of the
   nearest enclosing step that touched it, or the run's own table. */
void sl_ctx_push_base(lua_State *L, sl_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->e->ref_ctxs);    /* ctxs */
  for (sl_task *p = t->parent; p != NULL; p = p->parent) {
    if (!p->state_on) continue;
    lua_rawgeti(L, -1, p->id);                          /* ctxs pctx */
    if (lua_rawgeti(L, -1, SL_CTX_STATE) == LUA_TTABLE) { /* ctxs pctx state */
      lua_replace(L, -3);
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->run->ref);       /* run */
  lua_getiuservalue(L, -1, SL_RUN_UV_STATE);            /* run state */
  lua_remove(L, -2);
}

void sl_ctx_push_state(lua_State *L, sl_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->e->ref_ctxs);    /* ctxs */
  lua_rawgeti(L, -1, t->id);                            /* ctxs ctx */
  lua_remove(L, -2);
  if (t->state_on && lua_rawgeti(L, -1, SL_CTX_STATE) == LUA_TTABLE) { /* ctx view */
    lua_remove(L, -2);
    return;
  }
  if (t->state_on) lua_pop(L, 1);                       /* ctx */
  sl_ctx_push_base(L, t);                               /* ctx base */
  /* A step whose output is being cached records what it read, so that the
     entry serves only runs whose state holds the same. */
  sl_state_view(L, -1, t->att_on && t->att->memo == SL_MEMO_LEAD); /* ctx base view */
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, SL_CTX_STATE);                     /* ctx view */
  lua_remove(L, -2);
  t->state_on = 1;
}

static int ctx_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (k == NULL || lua_type(L, 2) != LUA_TSTRING) return 1;
  if (strcmp(k, "state") == 0) {
    sl_task *t = sl_task_current(L, 1);
    sl_ctx_push_state(L, t);
    return 1;
  }
  if (strcmp(k, "run_id") == 0) {
    sl_task *t = sl_task_current(L, 1);
    lua_pushstring(L, t->run->id);
    return 1;
  }
  /* step and attempt are read far less often than a ctx is made: they are
     answered here rather than stored in every ctx. */
  if (strcmp(k, "step") == 0) {
    sl_task *t = sl_task_current(L, 1);
    lua_pushstring(L, t->run->hist.recs[t->hist].name);
    return 1;
  }
  if (strcmp(k, "attempt") == 0) {
    sl_task *t = sl_task_current(L, 1);
    lua_pushinteger(L, t->att_on ? t->att->attempt : 1);
    return 1;
  }
  return 1;  /* nil */
}

/* A step that assigns ctx.state replaces the whole state its step sees
   (with a copy of the table given; nil empties it). */
static int ctx_newindex(lua_State *L) {
  lua_settop(L, 3);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "state") == 0) {
    sl_task *t = sl_task_current(L, 1);
    if (lua_isnil(L, 3)) lua_newtable(L);
    else if (!lua_istable(L, 3))
      return luaL_error(L, "ctx.state must be a table, got %s", luaL_typename(L, 3));
    else lua_pushvalue(L, 3);
    sl_state_replacing_view(L, -1);
    lua_rawseti(L, 1, SL_CTX_STATE);
    t->state_on = 1;
    return 0;
  }
  lua_rawset(L, 1);
  return 0;
}

static const luaL_Reg ctx_methods[] = {
  {"run", ctx_run},
  {"spawn", ctx_spawn},
  {"await", ctx_await},
  {"settle", ctx_settle},
  {"await_any", ctx_await_any},
  {"cancel", ctx_cancel},
  {"sleep", ctx_sleep},
  {"log", ctx_log},
  {"charge", ctx_charge},
  {"human", ctx_human},
  {NULL, NULL}
};

static int ctx_tostring(lua_State *L) {
  if (lua_rawgeti(L, 1, SL_CTX_TASK) != LUA_TLIGHTUSERDATA) {
    lua_pushliteral(L, "ctx of a step execution that has ended");
    return 1;
  }
  sl_task *t = lua_touserdata(L, -1);
  lua_pushfstring(L, "ctx of step '%s'", t->run->hist.recs[t->hist].name);
  return 1;
}

void sl_ctx_register(lua_State *L, sl_engine *e, const luaL_Reg *methods) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_ctxmt);      /* mt */
  lua_getfield(L, -1, "__index");                       /* mt index */
  lua_getupvalue(L, -1, 1);                             /* mt index methods */
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 3);
}

void sl_ctx_open(lua_State *L, sl_engine *e) {
  /* One metatable serves every engine of the state: its methods find their
     engine through the ctx. */
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
  e->ref_ctxmt = luaL_ref(L, LUA_REGISTRYINDEX);
}
