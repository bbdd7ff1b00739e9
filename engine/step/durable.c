/*
** The durable phase.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "durable.h"
#include "ctx.h"
#include "error.h"
#include "plan.h"
#include "state.h"

/* Writes commit by themselves after this many, at the latest. */
#define AUTOFLUSH 512

int64_t sl_durable_wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return 0;
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void sl_durable_write_failed(sl_core *c) {
  char msg[700];
  snprintf(msg, sizeof msg, "the store could not record the run, so it stops here "
           "(resume it once the store can be written): %s", sl_store_errmsg(c->store));
  /* A failed write discards the whole batch it belonged to, and a batch
     holds the writes of every run: none of them may go on as if recorded. */
  for (sl_run *r = c->runs; r != NULL; r = r->next)
    if (r->durable && r->status == SL_RUN_RUNNING) {
      r->unrecorded = 1;
      sl_core_abort_run(r, "error", msg);
    }
}

int sl_durable_open(sl_core *c, const char *path) {
  if (path == NULL || strcmp(path, ":memory:") == 0) return 0;
  char err[512];
  sl_store_options opts = {0};
  opts.autoflush = AUTOFLUSH;
  int rc = sl_store_open(&c->store, path, &opts, err, sizeof err);
  if (rc != 0) {
    c->store = NULL;
    return sl_core_fail(c, SL_EINVAL, "%s", err);
  }
  return 0;
}

void sl_durable_close(sl_core *c) {
  if (c->store != NULL) {
    char err[512];
    if (sl_store_close(c->store, err, sizeof err) != 0)
      sl_core_fail(c, SL_EINVAL, "closing the store: %s", err);
    c->store = NULL;
  }
}

void sl_durable_flush(sl_core *c) {
  if (c->store == NULL || sl_store_pending(c->store) == 0) return;
  if (sl_store_flush(c->store) != 0) sl_durable_write_failed(c);
}

/* The JSON text of the value at idx in b, or NULL when it has none. */
static const char *to_json(lua_State *L, int idx, sl_buf *b) {
  char err[128];
  sl_buf_reset(b);
  if (sl_json_encode(L, idx, b, 0, err, sizeof err) != 0) return NULL;
  return b->data ? b->data : "null";
}

const char *sl_durable_usage_json(const sl_usage *u, char *buf, size_t size) {
  char cost[40];
  sl_cost_format(u->cost_nanos, cost, sizeof cost);
  snprintf(buf, size, "{\"cost\":%s,\"tokens\":%lld,\"requests\":%lld}", cost,
           (long long)u->tokens, (long long)u->requests);
  return buf;
}

void sl_durable_path(sl_exec *x) {
  sl_history *h = &x->run->hist;
  char buf[512];
  if (x->hist < 0) return;
  int parent = h->recs[x->hist].parent;
  if (parent < 0 || h->recs[parent].path == NULL)
    snprintf(buf, sizeof buf, "1");
  else
    snprintf(buf, sizeof buf, "%s/%d", h->recs[parent].path, h->recs[x->hist].ordinal);
  sl_hist_set_path(h, x->hist, buf);
}

/* Replaces the output on top of L by an error of kind "error" saying what
   of a step's result its run's store could not keep, and why. */
static void unstorable(lua_State *L, sl_exec *x, const char *what, const char *why) {
  char msg[600];
  snprintf(msg, sizeof msg, "%s cannot be stored with the run, so it could "
           "not be restored on resume: %s", what, why);
  lua_pop(L, 1);
  sl_error_push(L, "error", msg, x->plan->name, NULL);
}

/* The encoder names paths from "$"; in a changes record, "$.set.k" is
   ctx.state.k for the user. */
static void state_path(const char *err, char *out, size_t size) {
  const char *at = strstr(err, " at $.set");
  if (at == NULL) {
    snprintf(out, size, "%s", err);
    return;
  }
  snprintf(out, size, "%.*s at ctx.state%s", (int)(at - err), err,
           at + strlen(" at $.set"));
}

int sl_durable_seal(lua_State *L, sl_exec *x) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  if (!r->durable || c->store == NULL || x->hist < 0 ||
      r->hist.recs[x->hist].path == NULL)
    return 1;
  luaL_checkstack(L, 8, "checkpoint");
  char err[300];
  int out = lua_gettop(L);
  sl_buf_reset(&x->sealed_out);
  sl_buf_reset(&x->sealed_changes);
  if (sl_json_encode(L, out, &x->sealed_out, 0, err, sizeof err) != 0) {
    unstorable(L, x, "its output", err);
    return 0;
  }
  if (x->state_on) {
    sl_exec_get(L, x, SL_REC_STATE);                    /* out view */
    sl_state_push_changes(L, -1);                       /* out view changes */
    if (!lua_isnil(L, -1)) {
      sl_state_changes_to_record(L, -1);                /* ... changes rec */
      if (sl_json_encode(L, -1, &x->sealed_changes, 0, err, sizeof err) != 0) {
        char where[340];
        state_path(err, where, sizeof where);
        lua_settop(L, out);
        unstorable(L, x, "the state it changed", where);
        return 0;
      }
      lua_pop(L, 1);                                    /* ... view changes */
    }
    /* Kept for the step's end, which passes them on. */
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushboolean(L, 0);
    }
    sl_exec_set(L, x, SL_REC_CHANGES);
    lua_settop(L, out);
  }
  x->sealed = 1;
  return 1;
}

void sl_durable_checkpoint(lua_State *L, sl_exec *x, int ok, int out) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  if (!r->durable || c->store == NULL || x->hist < 0) return;
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  if (rec->path == NULL) return;
  sl_buf error;
  sl_buf_init(&error);
  char usage[160];
  sl_store_checkpoint cp;
  memset(&cp, 0, sizeof cp);
  cp.run_id = r->id;
  cp.path = rec->path;
  cp.parent = rec->parent >= 0 ? r->hist.recs[rec->parent].path : NULL;
  cp.name = rec->name;
  cp.kind = rec->kind;
  cp.key = rec->key;
  cp.status = ok ? "completed" : (rec->status == SL_STEP_CANCELLED ? "cancelled" : "failed");
  cp.attempts = rec->attempts;
  cp.cached = rec->cached;
  cp.t0 = (int64_t)rec->t0;
  cp.t1 = (int64_t)(rec->t1 ? rec->t1 : rec->t0);
  if (rec->has_usage) cp.usage = sl_durable_usage_json(&rec->usage, usage, sizeof usage);
  if (ok) {
    /* A completed step was sealed when it succeeded: what is recorded is
       exactly what it returned and changed. */
    cp.output = x->sealed_out.data ? x->sealed_out.data : "null";
    if (x->sealed_changes.len > 0) cp.changes = x->sealed_changes.data;
  } else {
    cp.error = to_json(L, out, &error);
  }
  if (sl_store_checkpoint_put(c->store, &cp) != 0) sl_durable_write_failed(c);
  sl_buf_free(&error);
}

/* Restores onto x's view what a completed step changed in the state: its
   recorded changes, or, from a store that recorded whole states, that
   state in place of its base. */
static void restore_state(lua_State *L, sl_exec *x, const sl_store_checkpoint *cp) {
  const char *text = cp->changes ? cp->changes : cp->state;
  if (text == NULL) return;
  if (sl_json_decode(L, text, strlen(text)) != 0) {     /* rec | msg */
    lua_pop(L, 1);
    return;
  }
  if (cp->changes != NULL) {
    sl_state_changes_from_record(L, -1);                /* rec changes */
  } else {
    sl_state_push_deleted(L);                           /* state mark */
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);                                  /* the whole state */
    lua_pushvalue(L, -1);
  }
  sl_ctx_push_state(L, x);                              /* rec changes view */
  sl_state_apply(L, -1, -2);
  lua_pop(L, 3);
}

int sl_durable_restore(lua_State *L, sl_exec *x) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  if (!r->replay || c->store == NULL || x->hist < 0) return 0;
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  if (rec->path == NULL) return 0;
  sl_store_checkpoint *cp;
  if (sl_store_checkpoint_get(c->store, r->id, rec->path, &cp) != 0) return 0;
  int restored = 0;
  if (strcmp(cp->status, "completed") == 0 && cp->output != NULL) {
    if (sl_json_decode(L, cp->output, strlen(cp->output)) != 0) {
      lua_pop(L, 1);                                    /* its message */
      sl_store_checkpoint_free(cp);
      return 0;
    }
    restored = 1;
    restore_state(L, x, cp);
    if (cp->usage != NULL && sl_json_decode(L, cp->usage, strlen(cp->usage)) == 0) {
      char err[64];
      if (sl_usage_from_lua(L, -1, &x->returned, SL_USAGE_ALL, err, sizeof err) >= 0) {
        sl_usage_add(&x->used, &x->returned);
        x->metered = 1;
      }
      lua_pop(L, 1);
    }
    sl_hist_set_restored(&r->hist, x->hist);
  }
  sl_store_checkpoint_free(cp);
  return restored;
}

/* Human waits. */

static int human_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status; (void)kctx;
  return 0;  /* never resumed: a paused run ends, and its resume replays */
}

int sl_durable_human(lua_State *L, sl_exec *x, int mi, int si) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  if (!r->durable || c->store == NULL || rec->path == NULL)
    return luaL_error(L, "step '%s' waits for a person, which needs a durable "
                         "run: give the engine a store (--store, SLUICE_STORE "
                         "or store = in the APIs)", rec->name);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
  lua_getiuservalue(L, -1, SL_RUN_UV_ANSWERS);
  if (lua_getfield(L, -1, rec->path) != LUA_TNIL) return 1;   /* answered */
  lua_pop(L, 3);
  sl_task_check_suspend(L, &x->task);
  sl_buf schema;
  sl_buf_init(&schema);
  sl_store_wait w;
  memset(&w, 0, sizeof w);
  w.run_id = r->id;
  w.path = rec->path;
  w.message = lua_tostring(L, mi);
  w.schema = lua_isnoneornil(L, si) ? NULL : to_json(L, si, &schema);
  w.created_ms = sl_durable_wall_ms();
  int rc = sl_store_wait_put(c->store, &w);
  sl_buf_free(&schema);
  if (rc != 0) return luaL_error(L, "%s", sl_store_errmsg(c->store));
  r->pausing = 1;
  return sl_task_suspend(L, &x->task, SL_WAIT_HUMAN, human_k, 0);
}

/* ctx:human(message[, schema]): waits for a person's answer, which a
   resume supplies (checked against schema); the run pauses meanwhile. */
static int ctx_human(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  return sl_durable_human(L, x, 2, 3);
}

static const luaL_Reg durable_methods[] = {
  {"human", ctx_human},
  {NULL, NULL}
};

void sl_durable_register(lua_State *L, sl_core *c) {
  sl_ctx_register(L, c, durable_methods);
}
