/*
** Results as JSON text.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "result.h"
#include "error.h"
#include "protect.h"
#include "run.h"
#include "value.h"

void sl_result_json(lua_State *L, sl_run *r, int idx, int flags) {
  idx = lua_absindex(L, idx);
  sl_run_push_result(L, r, idx);                        /* result */
  lua_getfield(L, -1, "steps");
  lua_pop(L, 1);
  sl_buf b;
  char err[256];
  sl_buf_init(&b);
  if (sl_json_encode(L, -1, &b, flags, err, sizeof err) != 0) {
    lua_getfield(L, -1, "output");
    sl_buf_reset(&b);
    int bad_output = sl_json_encode(L, -1, &b, 0, err, sizeof err) != 0;
    lua_pop(L, 1);
    sl_buf_reset(&b);
    if (bad_output) {
      char msg[400];
      snprintf(msg, sizeof msg, "the output cannot be encoded as JSON: %s", err);
      lua_pushnil(L);
      lua_setfield(L, -2, "output");
      lua_pushliteral(L, "failed");
      lua_setfield(L, -2, "status");
      sl_error_push(L, "error", msg, r->pipeline, NULL);
      lua_setfield(L, -2, "error");
      if (r->status == SL_RUN_COMPLETED) r->status = SL_RUN_FAILED;
    }
    if (sl_json_encode(L, -1, &b, flags, err, sizeof err) != 0) {
      sl_buf_free(&b);
      luaL_error(L, "the result cannot be encoded as JSON: %s", err);
    }
  }
  lua_pushlstring(L, b.data, b.len);
  sl_buf_free(&b);
  lua_remove(L, -2);
}

static int keep_p(lua_State *L) {
  sl_run *r = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref_host);       /* run */
  sl_result_json(L, r, -1, 0);                          /* run json */
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  char *copy = malloc(len + 1);
  if (copy == NULL) return luaL_error(L, "not enough memory");
  memcpy(copy, s, len + 1);
  r->result_json = copy;
  return 0;
}

int sl_result_keep(lua_State *L, sl_run *r) {
  if (r->result_json != NULL) return 0;
  if (r->status == SL_RUN_RUNNING || r->ref_host == LUA_NOREF || r->core == NULL) return -1;
  sl_core *c = r->core;
  return sl_protect(L, keep_p, r, c->errmsg, sizeof c->errmsg) == LUA_OK ? 0 : -1;
}
