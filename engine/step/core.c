/*
** Execution records and the core's failure message: what every part of
** the step layer reads and writes of an execution.
*/
#include <stdarg.h>
#include <stdio.h>

#include "core.h"

int sl_core_fail(sl_core *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

void sl_exec_push_rec(lua_State *L, sl_exec *x, int create) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, x) == LUA_TTABLE || !create) return;
  lua_pop(L, 1);
  lua_createtable(L, SL_REC_NSLOTS, 0);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, x);
}

void sl_exec_set(lua_State *L, sl_exec *x, int i) {
  sl_exec_push_rec(L, x, 1);                            /* v rec */
  lua_insert(L, -2);                                    /* rec v */
  lua_rawseti(L, -2, i);
  lua_pop(L, 1);
  x->has_rec |= (unsigned short)(1u << i);
}

int sl_exec_get(lua_State *L, sl_exec *x, int i) {
  if (!(x->has_rec & (1u << i))) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  sl_exec_push_rec(L, x, 1);
  int t = lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
  return t;
}

void sl_exec_clear_rec(lua_State *L, sl_exec *x) {
  if (!x->has_rec) return;
  sl_exec_push_rec(L, x, 1);
  for (int i = 1; i <= SL_REC_NSLOTS; i++) {
    if (!(x->has_rec & (1u << i))) continue;
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  lua_pop(L, 1);
  x->has_rec = 0;
}

void sl_core_abort_run(sl_run *r, const char *kind, const char *msg) {
  if (r->status != SL_RUN_RUNNING || r->core == NULL || r->aborting) return;
  r->aborting = 1;
  r->core->abort_pending = 1;
  snprintf(r->abort_kind, sizeof r->abort_kind, "%s", kind);
  snprintf(r->abort_msg, sizeof r->abort_msg, "%s", msg);
}

const char *sl_status_name(int s) {
  switch (s) {
    case SL_RUN_COMPLETED: return "completed";
    case SL_RUN_FAILED: return "failed";
    case SL_RUN_PAUSED: return "paused";
    case SL_RUN_CANCELLED: return "cancelled";
    case SL_RUN_INTERRUPTED: return "interrupted";
    case SL_RUN_WAITING: return "waiting";
    default: return "running";
  }
}
