/*
** The `step` and `pipeline` kinds.
*/
#include <lauxlib.h>

#include "kinds.h"
#include "lifecycle.h"
#include "plan.h"

static int step_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return lua_gettop(L) - 3;
}

/* step: calls step.run(input, ctx), returning output[, usage]. (The
   lifecycle calls the run function itself when this is the kind's
   handler; this body serves callers such as the attempt runner.) */
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
   the next. It is called with (step, input, exec): the lifecycle hands a
   C kind that asks for it its execution (SL_CALL_EXEC). Its continuation
   context is the index of the child done last. */
static int pipeline_k(lua_State *L, int status, lua_KContext i) {
  (void)status;
  sl_exec *x = lua_touserdata(L, 3);
  if (i > 0) {                     /* step input exec child output */
    lua_copy(L, -1, 2);
    lua_settop(L, 3);
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  while (i < n) {
    i++;
    lua_rawgeti(L, 1, i);                               /* step input exec child */
    sl_step_run(L, x, 4, 2, 0, pipeline_k, i);          /* ... child output */
    lua_copy(L, -1, 2);
    lua_settop(L, 3);
  }
  lua_settop(L, 2);
  return 1;
}

static int kind_pipeline(lua_State *L) {
  if (lua_type(L, 3) != LUA_TLIGHTUSERDATA)
    return luaL_error(L, "the pipeline kind is called by the engine");
  lua_settop(L, 3);
  return pipeline_k(L, LUA_OK, 0);
}

void sl_kinds_register(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, kind_step);
  sl_plan_mark_call(L, -1, SL_CALL_STEP);
  lua_setfield(L, idx, "step");
  lua_pushcfunction(L, kind_pipeline);
  sl_plan_mark_call(L, -1, SL_CALL_EXEC);
  lua_setfield(L, idx, "pipeline");
}
