/*
** The `step` and `pipeline` kinds. A handler receives (step, input, ctx) on
** its step's own coroutine and returns output[, usage].
*/
#include <lauxlib.h>

#include "kinds.h"
#include "dispatch.h"

static int step_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return lua_gettop(L) - 3;
}

/* step: calls step.run(input, ctx). */
static int kind_step(lua_State *L) {
  lua_settop(L, 3);
  if (lua_getfield(L, 1, "run") == LUA_TNIL) {
    lua_getfield(L, 1, "name");
    return luaL_error(L, "step '%s' has no run function",
                      luaL_optstring(L, -1, "?"));
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_callk(L, 2, 2, 0, step_k);
  return step_k(L, LUA_OK, 0);
}

/* pipeline: runs the children step[1..n] in order, each output feeding
   the next; its continuation context is the index of the child done last. */
static int pipeline_k(lua_State *L, int status, lua_KContext i) {
  (void)status;
  lua_rawgeti(L, 3, SL_CTX_TASK);
  sl_task *t = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (i > 0) {                     /* step input ctx child output */
    lua_replace(L, 2);
    lua_settop(L, 3);
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  while (i < n) {
    i++;
    lua_rawgeti(L, 1, i);                               /* step input ctx child */
    sl_dispatch_run(L, t, 4, 2, 0, pipeline_k, i);      /* ... child output */
    lua_replace(L, 2);
    lua_settop(L, 3);
  }
  lua_settop(L, 2);
  return 1;
}

static int kind_pipeline(lua_State *L) {
  lua_settop(L, 3);
  return pipeline_k(L, LUA_OK, 0);
}

void sl_kinds_register(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, kind_step);
  lua_setfield(L, idx, "step");
  lua_pushcfunction(L, kind_pipeline);
  lua_setfield(L, idx, "pipeline");
}
