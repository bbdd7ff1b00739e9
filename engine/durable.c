/*
** Durable runs.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "durable.h"
#include "error.h"
#include "quota.h"
#include "run.h"
#include "store.h"
#include "value.h"
#include "cache.h"
#include "loader.h"
#include "ctx.h"
#include "state.h"
#include "memory.h"
#include "trace.h"

/* Writes commit by themselves after this many, at the latest. */
#define AUTOFLUSH 512

static int64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return 0;
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void sl_durable_write_failed(sl_engine *e) {
  char msg[700];
  snprintf(msg, sizeof msg, "the store could not record the run, so it stops here "
           "(resume it once the store can be written): %s", sl_store_errmsg(e->store));
  /* A failed write discards the whole batch it belonged to, and a batch
     holds the writes of every run: none of them may go on as if recorded. */
  for (sl_run *r = e->runs; r != NULL; r = r->next)
    if (r->durable && r->status == SL_RUN_RUNNING) {
      r->unrecorded = 1;
      sl_run_fail(r, "error", msg);
    }
}

/* Before the loop waits for anything, what completed is made durable; a
   run a failed write stopped while its steps ran ends now. */
static void on_prepare(uv_prepare_t *h) {
  sl_engine *e = h->data;
  sl_durable_flush(e);
  for (sl_run *r = e->runs, *next; r != NULL; r = next) {
    next = r->next;
    if (r->aborting && r->status == SL_RUN_RUNNING &&
        (r->root == NULL || !r->root->running))
      sl_run_abandon(r, r->abort_kind, r->abort_msg);
  }
  sl_sched_drain(e);
}

static void on_prepare_closed(uv_handle_t *h) {
  sl_engine *e = h->data;
  free(h);
  sl_engine_handle_closed(e);
}

int sl_durable_open(sl_engine *e, const char *path, int check) {
  if (path == NULL || strcmp(path, ":memory:") == 0) return 0;
  char err[512];
  sl_store_options opts = {0};
  opts.autoflush = AUTOFLUSH;
  opts.skip_check = !check;
  int rc = sl_store_open(&e->store, path, &opts, err, sizeof err);
  if (rc != 0) {
    e->store = NULL;
    return sl_engine_fail(e, SL_EINVAL, "%s", err);
  }
  e->flush_prep = malloc(sizeof *e->flush_prep);
  if (e->flush_prep == NULL) return sl_engine_fail(e, SL_ENOMEM, "not enough memory");
  uv_prepare_init(e->loop, e->flush_prep);
  e->flush_prep->data = e;
  e->handles_open++;
  uv_prepare_start(e->flush_prep, on_prepare);
  uv_unref((uv_handle_t *)e->flush_prep);
  return 0;
}

void sl_durable_close(sl_engine *e) {
  if (e->flush_prep != NULL) {
    uv_close((uv_handle_t *)e->flush_prep, on_prepare_closed);
    e->flush_prep = NULL;
  }
  if (e->store != NULL) {
    char err[512];
    if (sl_store_close(e->store, err, sizeof err) != 0)
      fprintf(stderr, "sluice: closing the store: %s\n", err);
    e->store = NULL;
  }
}

void sl_durable_flush(sl_engine *e) {
  if (e->store == NULL || sl_store_pending(e->store) == 0) return;
  if (sl_store_flush(e->store) != 0) sl_durable_write_failed(e);
}

/* Pushes the JSON text of the value at idx, or nil when it has none. */
static const char *to_json(lua_State *L, int idx, sl_buf *b) {
  char err[128];
  sl_buf_reset(b);
  if (sl_json_encode(L, idx, b, 0, err, sizeof err) != 0) return NULL;
  return b->data ? b->data : "null";
}

static const char *usage_json(const sl_usage *u, char *buf, size_t size) {
  char cost[40];
  sl_cost_format(u->cost_nanos, cost, sizeof cost);
  snprintf(buf, size, "{\"cost\":%s,\"tokens\":%lld,\"requests\":%lld}", cost,
           (long long)u->tokens, (long long)u->requests);
  return buf;
}

static int store_error(lua_State *L, sl_engine *e) {
  return luaL_error(L, "%s", sl_store_errmsg(e->store));
}

/* Writes, as JSON text, the options run r starts with that a resume must
   honour: its budget (whatever set it), the engine's memory limit and
   where its spans go. Returns NULL, raising nothing, when memory ran out. */
static const char *options_json(sl_run *r, sl_buf *b) {
  sl_engine *e = r->e;
  char num[64];
  int rc = sl_buf_add(b, "{", 1), first = 1;
  if (r->quota.limited) {
    rc |= sl_buf_add(b, "\"budget\":{", 10);
    for (int d = 0; d < SL_NDIMS; d++) {
      if (!(r->quota.limited & (1u << d))) continue;
      if (d == SL_DIM_COST) sl_cost_format(r->quota.limit.cost_nanos, num, sizeof num);
      else snprintf(num, sizeof num, "%lld", (long long)sl_usage_get(&r->quota.limit, d));
      rc |= sl_buf_add(b, first ? "" : ",", first ? 0 : 1);
      rc |= sl_json_add_string(b, sl_usage_dimname(d), strlen(sl_usage_dimname(d)));
      rc |= sl_buf_add(b, ":", 1) | sl_buf_add(b, num, strlen(num));
      first = 0;
    }
    rc |= sl_buf_add(b, "}", 1);
    first = 0;
  }
  size_t cap = sl_memory_get_limit(e->L);
  if (cap > 0) {
    snprintf(num, sizeof num, "%s\"memory_limit\":%zu", first ? "" : ",", cap);
    rc |= sl_buf_add(b, num, strlen(num));
    first = 0;
  }
  if (e->trace != NULL) {
    const char *path = sl_trace_path(e->trace);
    rc |= sl_buf_add(b, first ? "\"trace\":" : ",\"trace\":", first ? 8 : 9);
    rc |= sl_json_add_string(b, path, strlen(path));
  }
  rc |= sl_buf_add(b, "}", 1);
  return rc == 0 ? b->data : NULL;
}

void sl_durable_run_begin(lua_State *L, sl_run *r, int si, int ii) {
  sl_engine *e = r->e;
  if (e->store == NULL) return;
  (void)si;
  r->durable = 1;
  if (r->replay) {
    if (sl_store_run_update(e->store, r->id, "running", NULL, NULL, NULL, 0) != 0)
      store_error(L, e);
    return;
  }
  sl_buf in, options;
  sl_buf_init(&in);
  sl_buf_init(&options);
  char err[300];
  if (sl_json_encode(L, ii, &in, 0, err, sizeof err) != 0) {
    sl_buf_free(&in);
    r->durable = 0;
    luaL_error(L, "the run's input cannot be stored with the run, so it could not be "
                  "resumed: %s", err);
  }
  sl_store_run row;
  memset(&row, 0, sizeof row);
  row.id = r->id;
  row.pipeline = r->pipeline;
  row.file = r->file[0] ? r->file : NULL;
  row.def_hash = r->def_hash[0] ? r->def_hash : NULL;
  row.status = "running";
  row.input = in.data ? in.data : "null";
  row.options = options_json(r, &options);
  row.started_ms = wall_ms();
  int rc = row.options == NULL ? SL_STORE_ENOMEM : sl_store_run_begin(e->store, &row);
  sl_buf_free(&in);
  sl_buf_free(&options);
  if (rc == SL_STORE_ENOMEM) {
    r->durable = 0;
    luaL_error(L, "not enough memory to record the run");
  }
  if (rc != 0) {
    r->durable = 0;
    store_error(L, e);
  }
}

int sl_durable_run_end(lua_State *L, sl_run *r) {
  sl_engine *e = r->e;
  if (!r->durable || e->store == NULL) return 0;
  sl_buf out, err;
  sl_buf_init(&out);
  sl_buf_init(&err);
  char usage[160];
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  lua_getiuservalue(L, -1, SL_RUN_UV_OUTPUT);
  lua_getiuservalue(L, -2, SL_RUN_UV_ERROR);
  const char *o = r->status == SL_RUN_COMPLETED ? to_json(L, -2, &out) : NULL;
  const char *x = lua_isnil(L, -1) ? NULL : to_json(L, -1, &err);
  /* A run the store failed is not over: what it did since the last commit
     was lost, and a resume, once the store can be written, does it again. */
  const char *status = r->unrecorded ? "interrupted" : sl_run_status_name(r->status);
  int rc = sl_store_run_update(e->store, r->id, status, o, x,
                               usage_json(&r->quota.spent, usage, sizeof usage),
                               r->status == SL_RUN_PAUSED ? 0 : wall_ms());
  if (rc == 0) rc = sl_store_flush(e->store);
  lua_pop(L, 3);
  sl_buf_free(&out);
  sl_buf_free(&err);
  return rc;
}

void sl_durable_path(sl_task *t) {
  sl_history *h = &t->run->hist;
  char buf[512];
  if (t->hist < 0) return;
  int parent = h->recs[t->hist].parent;
  if (parent < 0 || h->recs[parent].path == NULL)
    snprintf(buf, sizeof buf, "1");
  else
    snprintf(buf, sizeof buf, "%s/%d", h->recs[parent].path, h->recs[t->hist].ordinal);
  sl_hist_set_path(h, t->hist, buf);
}

/* Replaces the output on top of L by an error of kind "error" saying what
   of a step's result its run's store could not keep, and why. */
static void unstorable(lua_State *L, sl_task *t, const char *what,
                       const char *why) {
  char msg[600];
  snprintf(msg, sizeof msg, "%s cannot be stored with the run, so it could "
           "not be restored on resume: %s", what, why);
  sl_hist_rec *rec = &t->run->hist.recs[t->hist];
  lua_pop(L, 1);
  sl_error_push(L, "error", msg, rec->name, NULL);
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

int sl_durable_seal(lua_State *L, sl_task *t) {
  sl_run *r = t->run;
  sl_engine *e = t->e;
  if (!r->durable || e->store == NULL || t->hist < 0 ||
      r->hist.recs[t->hist].path == NULL)
    return 1;
  luaL_checkstack(L, 8, "checkpoint");
  char err[300];
  int out = lua_gettop(L);
  sl_buf_reset(&t->sealed_out);
  sl_buf_reset(&t->sealed_changes);
  if (sl_json_encode(L, out, &t->sealed_out, 0, err, sizeof err) != 0) {
    unstorable(L, t, "its output", err);
    return 0;
  }
  if (t->state_on) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_ctxs);
    lua_rawgeti(L, -1, t->id);                          /* out ctxs ctx */
    lua_rawgeti(L, -1, SL_CTX_STATE);                   /* out ctxs ctx view */
    sl_state_push_changes(L, -1);                       /* ... view changes */
    if (!lua_isnil(L, -1)) {
      sl_state_changes_to_record(L, -1);                /* ... changes rec */
      if (sl_json_encode(L, -1, &t->sealed_changes, 0, err, sizeof err) != 0) {
        char where[340];
        state_path(err, where, sizeof where);
        lua_settop(L, out);
        unstorable(L, t, "the state it changed", where);
        return 0;
      }
      lua_pop(L, 1);                                    /* ... view changes */
    }
    /* Kept for the step's end, which passes them on. */
    if (lua_isnil(L, -1)) lua_pushboolean(L, 0);
    else lua_pushvalue(L, -1);
    lua_rawseti(L, out + 2, SL_CTX_CHANGES);
    lua_settop(L, out);
  }
  t->sealed = 1;
  return 1;
}

void sl_durable_checkpoint(lua_State *L, sl_task *t, int ok, int out) {
  sl_run *r = t->run;
  sl_engine *e = t->e;
  if (!r->durable || e->store == NULL || t->hist < 0) return;
  sl_hist_rec *rec = &r->hist.recs[t->hist];
  if (rec->path == NULL) return;
  sl_buf error;
  sl_buf_init(&error);
  char usage[160];
  sl_store_checkpoint c;
  memset(&c, 0, sizeof c);
  c.run_id = r->id;
  c.path = rec->path;
  c.parent = rec->parent >= 0 ? r->hist.recs[rec->parent].path : NULL;
  c.name = rec->name;
  c.kind = rec->kind;
  c.key = rec->key;
  c.status = ok ? "completed" : (rec->status == SL_STEP_CANCELLED ? "cancelled" : "failed");
  c.attempts = rec->attempts;
  c.cached = rec->cached;
  c.t0 = (int64_t)rec->t0;
  c.t1 = (int64_t)(rec->t1 ? rec->t1 : rec->t0);
  if (rec->has_usage) c.usage = usage_json(&rec->usage, usage, sizeof usage);
  if (ok) {
    /* A completed step was sealed when it succeeded: what is recorded is
       exactly what it returned and changed. */
    c.output = t->sealed_out.data ? t->sealed_out.data : "null";
    if (t->sealed_changes.len > 0) c.changes = t->sealed_changes.data;
  } else {
    c.error = to_json(L, out, &error);
  }
  if (sl_store_checkpoint_put(e->store, &c) != 0) sl_durable_write_failed(e);
  sl_buf_free(&error);
}

/* Restores onto t's view what a completed step changed in the state: its
   recorded changes, or, from a store that recorded whole states, that
   state in place of its base. */
static void restore_state(lua_State *L, sl_task *t, const sl_store_checkpoint *c) {
  const char *text = c->changes ? c->changes : c->state;
  if (text == NULL) return;
  if (sl_json_decode(L, text, strlen(text)) != 0) {     /* rec | msg */
    lua_pop(L, 1);
    return;
  }
  if (c->changes != NULL) {
    sl_state_changes_from_record(L, -1);                /* rec changes */
  } else {
    sl_state_push_deleted(L);                           /* state mark */
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);                                  /* the whole state */
    lua_pushvalue(L, -1);
  }
  sl_ctx_push_state(L, t);                              /* rec changes view */
  sl_state_apply(L, -1, -2);
  lua_pop(L, 3);
}

int sl_durable_restore(lua_State *L, sl_task *t) {
  sl_run *r = t->run;
  sl_engine *e = t->e;
  if (!r->replay || e->store == NULL || t->hist < 0) return 0;
  sl_hist_rec *rec = &r->hist.recs[t->hist];
  if (rec->path == NULL) return 0;
  sl_store_checkpoint *c;
  if (sl_store_checkpoint_get(e->store, r->id, rec->path, &c) != 0) return 0;
  int restored = 0;
  if (strcmp(c->status, "completed") == 0 && c->output != NULL) {
    if (sl_json_decode(L, c->output, strlen(c->output)) != 0) {
      lua_pop(L, 1);                                    /* its message */
      sl_store_checkpoint_free(c);
      return 0;
    }
    restored = 1;
    restore_state(L, t, c);
    if (c->usage != NULL && sl_json_decode(L, c->usage, strlen(c->usage)) == 0) {
      char err[64];
      if (sl_usage_from_lua(L, -1, &t->returned, SL_USAGE_ALL, err, sizeof err) >= 0) {
        sl_usage_add(&t->used, &t->returned);
        t->metered = 1;
      }
      lua_pop(L, 1);
    }
    sl_hist_set_restored(&r->hist, t->hist);
  }
  sl_store_checkpoint_free(c);
  return restored;
}

/* Human waits. */

static int human_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status; (void)kctx;
  return 0;  /* never resumed: a paused run ends, and its resume replays */
}

int sl_durable_human(lua_State *L, sl_task *t, int mi, int si) {
  sl_run *r = t->run;
  sl_engine *e = t->e;
  sl_hist_rec *rec = &r->hist.recs[t->hist];
  if (!r->durable || e->store == NULL || rec->path == NULL)
    return luaL_error(L, "step '%s' waits for a person, which needs a durable "
                         "run: give the engine a store (--store, SLUICE_STORE "
                         "or store = in the APIs)", rec->name);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
  lua_getiuservalue(L, -1, SL_RUN_UV_ANSWERS);
  if (lua_getfield(L, -1, rec->path) != LUA_TNIL) return 1;   /* answered */
  lua_pop(L, 3);
  sl_task_check_suspend(L, t);
  sl_buf schema;
  sl_buf_init(&schema);
  sl_store_wait w;
  memset(&w, 0, sizeof w);
  w.run_id = r->id;
  w.path = rec->path;
  w.message = lua_tostring(L, mi);
  w.schema = lua_isnoneornil(L, si) ? NULL : to_json(L, si, &schema);
  w.created_ms = wall_ms();
  int rc = sl_store_wait_put(e->store, &w);
  sl_buf_free(&schema);
  if (rc != 0) return store_error(L, e);
  r->pausing = 1;
  return sl_task_suspend(L, t, SL_WAIT_HUMAN, human_k, 0);
}

/* Resume. */

typedef struct wait_list { lua_State *L; int n; } wait_list;

static int collect_wait(void *ud, const sl_store_wait *w) {
  wait_list *wl = ud;
  lua_State *L = wl->L;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, w->path);
  lua_setfield(L, -2, "path");
  if (w->message) {
    lua_pushstring(L, w->message);
    lua_setfield(L, -2, "message");
  }
  if (w->schema && sl_json_decode(L, w->schema, strlen(w->schema)) == 0)
    lua_setfield(L, -2, "schema");
  else if (w->schema)
    lua_pop(L, 1);
  if (w->answer && sl_json_decode(L, w->answer, strlen(w->answer)) == 0)
    lua_setfield(L, -2, "answer");
  else if (w->answer)
    lua_pop(L, 1);
  lua_rawseti(L, -2, ++wl->n);
  return 0;
}

void sl_durable_push_waits(lua_State *L, sl_engine *e, const char *run_id) {
  wait_list wl = {L, 0};
  lua_newtable(L);
  if (e->store != NULL && sl_store_wait_list(e->store, run_id, collect_wait, &wl) < 0)
    store_error(L, e);
}

/* Adds the checkpoint's step name to each wait, for answers by name. */
static void name_waits(lua_State *L, sl_engine *e, const char *run_id, int wi) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, wi);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);
    lua_getfield(L, -1, "path");
    sl_store_checkpoint *c;
    if (sl_store_checkpoint_get(e->store, run_id, lua_tostring(L, -1), &c) == 0) {
      lua_pushstring(L, c->name);
      lua_setfield(L, -3, "name");
      sl_store_checkpoint_free(c);
    }
    lua_pop(L, 2);
  }
}

/*
** Matches the answer at ii to the run's open waits (one wait: the answer
** itself; several: an object keyed by step name or path), checks each
** against its schema, and records it. Pushes the answers by path. A wrong
** answer raises with the schema path that failed, changing nothing.
*/
static void take_answers(lua_State *L, sl_engine *e, const char *run_id, int ii) {
  sl_durable_push_waits(L, e, run_id);                  /* waits */
  int wi = lua_gettop(L);
  name_waits(L, e, run_id, wi);
  lua_newtable(L);                                      /* waits answers */
  int ai = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, wi), open = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);
    if (lua_getfield(L, -1, "answer") == LUA_TNIL) open++;
    lua_pop(L, 2);
  }
  if (open == 0) luaL_error(L, "run %s has no open waits to answer", run_id);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);                              /* ... w */
    int w = lua_gettop(L);
    lua_getfield(L, w, "path");
    const char *path = lua_tostring(L, -1);
    if (lua_getfield(L, w, "answer") != LUA_TNIL) {     /* answered before */
      lua_setfield(L, ai, path);
      lua_settop(L, w - 1);
      continue;
    }
    lua_pop(L, 1);
    if (open == 1) {
      lua_pushvalue(L, ii);
    } else {
      if (!lua_istable(L, ii))
        luaL_error(L, "run %s waits at %d points: answer with an object keyed "
                      "by step name or path", run_id, (int)open);
      if (lua_getfield(L, ii, path) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_getfield(L, w, "name");
        const char *name = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (name == NULL || lua_getfield(L, ii, name) == LUA_TNIL)
          luaL_error(L, "no answer for the wait at '%s' (step '%s')", path,
                     name ? name : "?");
      }
    }
    int ans = lua_gettop(L);
    if (lua_getfield(L, w, "schema") != LUA_TNIL) {
      lua_getglobal(L, "require");
      lua_pushliteral(L, "sluice.schema");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "validate");
      lua_pushvalue(L, -3);
      lua_pushvalue(L, ans);
      lua_call(L, 2, 2);
      if (!lua_toboolean(L, -2)) {
        lua_getfield(L, w, "name");
        luaL_error(L, "the answer for step '%s' was refused, the run stays paused: %s",
                   luaL_optstring(L, -1, path), lua_tostring(L, -2));
      }
    }
    lua_settop(L, ans);
    lua_pushvalue(L, ans);
    lua_setfield(L, ai, path);
    lua_settop(L, w - 1);
  }
  /* All refused or all recorded: only now is anything written. */
  sl_buf b;
  sl_buf_init(&b);
  lua_pushnil(L);
  while (lua_next(L, ai)) {
    const char *json = to_json(L, -1, &b);
    if (json != NULL &&
        sl_store_wait_answer(e->store, run_id, lua_tostring(L, -2), json) != 0) {
      sl_buf_free(&b);
      store_error(L, e);
    }
    lua_pop(L, 1);
  }
  sl_buf_free(&b);
  sl_store_flush(e->store);
  lua_remove(L, wi);
}

sl_run *sl_durable_resume(lua_State *L, sl_engine *e, const char *id, int ii,
                          int force) {
  if (e->store == NULL) luaL_error(L, "cannot resume: the engine has no store");
  ii = ii ? lua_absindex(L, ii) : 0;
  sl_store_run *row;
  int rc = sl_store_run_get(e->store, id, &row);
  if (rc == SL_STORE_ENOTFOUND)
    luaL_error(L, "no run with id '%s' in %s", id, sl_store_path(e->store));
  if (rc != 0) store_error(L, e);
  /* The row's strings go to the Lua stack before anything can raise. */
  int top = lua_gettop(L);
  lua_pushstring(L, row->status);                       /* status */
  lua_pushstring(L, row->file ? row->file : "");        /* status file */
  lua_pushstring(L, row->pipeline);                     /* ... pipeline */
  lua_pushstring(L, row->def_hash ? row->def_hash : ""); /* ... hash */
  lua_pushstring(L, row->input ? row->input : "null");  /* ... input */
  if (row->options) lua_pushstring(L, row->options);
  else lua_pushnil(L);                                  /* ... options */
  if (row->error) lua_pushstring(L, row->error);
  else lua_pushnil(L);                                  /* ... error */
  sl_store_run_free(row);
  const char *status = lua_tostring(L, top + 1);
  const char *file = lua_tostring(L, top + 2);
  int paused = strcmp(status, "paused") == 0;
  if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0)
    luaL_error(L, "run %s has %s: only a paused or interrupted run can be resumed",
               id, status);
  if (strcmp(status, "cancelled") == 0) {
    const char *why = "cancelled", *by = NULL;
    if (!lua_isnil(L, top + 7)) {
      const char *text = lua_tostring(L, top + 7);
      if (sl_json_decode(L, text, strlen(text)) == 0 && lua_istable(L, -1)) {
        int ei = lua_gettop(L);
        if (lua_getfield(L, ei, "message") == LUA_TSTRING) why = lua_tostring(L, -1);
        if (lua_getfield(L, ei, "aborted") == LUA_TBOOLEAN &&
            lua_getfield(L, ei, "step") == LUA_TSTRING)
          by = lua_tostring(L, -1);
      }
    }
    if (by != NULL)
      luaL_error(L, "run %s was aborted by step '%s' (%s): an aborted run has ended "
                    "for good and cannot be resumed", id, by, why);
    luaL_error(L, "run %s was cancelled (%s): a cancelled run has ended for good "
                  "and cannot be resumed", id, why);
  }
  if (ii && !lua_isnil(L, ii) && !paused)
    luaL_error(L, "run %s is %s, not paused: --input answers a paused run only", id, status);
  if (paused && (ii == 0 || lua_isnil(L, ii)))
    luaL_error(L, "run %s is paused waiting for input: resume it with --input JSON", id);
  if (file[0] == '\0')
    luaL_error(L, "run %s was not started from a pipeline file, so it cannot be "
                  "resumed from the command line", id);
  if (e->load_path == NULL || strcmp(e->load_path, file) != 0) {
    sl_engine_load_lua(L, e, file);
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_pipelines);
  sl_load_select(L, -1, lua_tostring(L, top + 3));      /* ... set step */
  int si = lua_gettop(L);
  sl_key version;
  char hex[SL_KEY_HEXLEN + 1], err[128];
  if (sl_step_version(L, si, &version, err, sizeof err) == 0) sl_key_hex(&version, hex);
  else hex[0] = '\0';
  if (!force && strcmp(hex, lua_tostring(L, top + 4)) != 0)
    luaL_error(L, "the pipeline '%s' in %s changed since run %s started: resuming "
                  "it could mix two versions (use --force to resume anyway)",
               lua_tostring(L, top + 3), file, id);
  int ai = 0;
  if (paused) {
    take_answers(L, e, id, ii);
    ai = lua_gettop(L);
  }
  const char *input = lua_tostring(L, top + 5);
  if (sl_json_decode(L, input, strlen(input)) != 0) lua_error(L);
  int in = lua_gettop(L);
  int bi = 0;
  if (!lua_isnil(L, top + 6)) {
    /* The options the run started with hold on resume: its budget, and,
       where this engine sets none of its own, its memory limit and trace. */
    const char *text = lua_tostring(L, top + 6);
    if (sl_json_decode(L, text, strlen(text)) != 0) lua_error(L);
    int oi = lua_gettop(L);
    lua_getfield(L, oi, "budget");
    if (lua_istable(L, -1)) bi = lua_gettop(L);
    else lua_pop(L, 1);
    if (lua_getfield(L, oi, "memory_limit") == LUA_TNUMBER &&
        sl_memory_get_limit(L) == 0) {
      sl_memory_limit(L, (size_t)lua_tointeger(L, -1));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, oi, "trace") == LUA_TSTRING && e->trace == NULL) {
      char terr[300];
      if (sl_trace_open(lua_tostring(L, -1), &e->trace, terr, sizeof terr) != 0) {
        e->trace = NULL;
        luaL_error(L, "run %s wrote its trace to %s, which cannot be opened again: %s",
                   id, lua_tostring(L, -1), terr);
      }
    }
    lua_pop(L, 1);
  }
  sl_run_opts o = {bi, id, ai};
  return sl_run_start_ex(L, e, si, in, &o);
}
