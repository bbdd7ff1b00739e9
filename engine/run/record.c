/*
** Run records: what the store keeps of a run itself (its start, its
** options, its end) and of the waits it paused at.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "record.h"
#include "durable.h"
#include "error.h"
#include "memory.h"
#include "plan.h"
#include "value.h"

/* The JSON text of the value at idx in b, or NULL when it has none. */
static const char *record_json(lua_State *L, int idx, sl_buf *b) {
  char err[128];
  sl_buf_reset(b);
  if (sl_json_encode(L, idx, b, 0, err, sizeof err) != 0) return NULL;
  return b->data ? b->data : "null";
}

/* Writes, as JSON text, the options run r starts with that a resume must
   honour: its budget (whatever set it), the engine's memory limit, where
   its spans go and its breakpoints. Returns NULL, raising nothing, when memory ran out. */
static const char *options_json(sl_run *r, sl_buf *b) {
  sl_core *e = r->core;
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
    first = 0;
  }
  if (r->nbreaks > 0) {
    /* Its breakpoints hold on resume: a loop's later turns pause too. */
    static const char *const when[] = {"", "before", "after", "both"};
    rc |= sl_buf_add(b, first ? "\"breaks\":{" : ",\"breaks\":{", first ? 10 : 11);
    for (int i = 0; i < r->nbreaks; i++) {
      const char *w = when[r->breaks[i].when & 3];
      rc |= sl_buf_add(b, i ? "," : "", i ? 1 : 0);
      rc |= sl_json_add_string(b, r->breaks[i].name, strlen(r->breaks[i].name));
      rc |= sl_buf_add(b, ":", 1) | sl_json_add_string(b, w, strlen(w));
    }
    rc |= sl_buf_add(b, "}", 1);
  }
  rc |= sl_buf_add(b, "}", 1);
  return rc == 0 ? b->data : NULL;
}

uint64_t sl_record_run_begin(lua_State *L, sl_run *r, int ii) {
  sl_core *e = r->core;
  if (e->writer == NULL) return 0;
  r->durable = 1;
  /* A resumed run was claimed (owner, epoch, status) by its resume. */
  if (r->replay) return 0;
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
  row.started_ms = sl_durable_wall_ms();
  row.owner = e->owner;
  row.lease_ms = row.started_ms + e->lease_ms;
  row.epoch = r->epoch = 1;
  uint64_t seq = row.options == NULL ? 0 : sl_writer_run_begin(e->writer, &row);
  sl_buf_free(&in);
  sl_buf_free(&options);
  if (seq == 0) {
    r->durable = 0;
    luaL_error(L, "not enough memory to record the run");
  }
  return seq;
}

/* How often a policy prunes, at most. */
#define RETAIN_EVERY_MS 60000

void sl_retain_parse(lua_State *L, int idx, const char *what, sl_retain *out) {
  idx = lua_absindex(L, idx);
  memset(out, 0, sizeof *out);
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_error(L, "%s must be a table {days = N, keep = N}, got %s", what, luaL_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int isnum = lua_type(L, -1) == LUA_TNUMBER;
    lua_Number n = lua_tonumber(L, -1);
    if (k != NULL && strcmp(k, "days") == 0) {
      if (!isnum || !(n > 0) || n > 1e6)
        luaL_error(L, "%s.days must be a positive number of days, got %s", what,
                   luaL_tolstring(L, -1, NULL));
      out->ms = (int64_t)(n * 86400000.0);
      if (out->ms < 1) out->ms = 1;
    } else if (k != NULL && strcmp(k, "keep") == 0) {
      if (!isnum || !(n >= 1) || n != (lua_Number)(lua_Integer)n || n > 1e12)
        luaL_error(L, "%s.keep must be a whole number of runs of at least 1, got %s", what,
                   luaL_tolstring(L, -1, NULL));
      out->keep = (int64_t)n;
    } else {
      luaL_error(L, "%s: unknown field '%s' (days or keep)", what,
                 k ? k : luaL_tolstring(L, -2, NULL));
    }
    lua_pop(L, 1);
  }
  if (out->ms == 0 && out->keep == 0)
    luaL_error(L, "%s needs days, keep or both", what);
}

/* Queues the prune of policy p for pipeline (NULL: all), unless it pruned
   within the last minute. */
static void retain_now(sl_core *e, sl_retain *p, const char *pipeline, int64_t now,
                       int64_t *last) {
  if (p->ms == 0 && p->keep == 0) return;
  if (*last != 0 && now - *last < RETAIN_EVERY_MS) return;
  *last = now;
  if (sl_writer_prune(e->writer, pipeline, p->ms ? now - p->ms : 0, p->keep) != 0)
    sl_writer_kick(e->writer);
}

void sl_record_retain(lua_State *L, sl_run *r) {
  sl_core *e = r->core;
  if (!r->durable || e->writer == NULL || r->lost) return;
  int64_t now = sl_durable_wall_ms();
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  lua_getiuservalue(L, -1, SL_RUN_UV_PIPELINE);
  if (lua_getfield(L, -1, "retain") == LUA_TTABLE) {
    /* Checked when the pipeline was defined (dsl.lua). */
    sl_retain p;
    sl_retain_parse(L, -1, "retain", &p);
    sl_plan *root = sl_plan_push(L, -2);
    lua_pop(L, 1);
    retain_now(e, &p, r->pipeline, now, &root->pruned_ms);
  }
  lua_pop(L, 3);
  sl_host *h = sl_host_of(e);
  retain_now(e, &h->retain, NULL, now, &h->retain.last_ms);
}

uint64_t sl_record_run_end(lua_State *L, sl_run *r) {
  sl_core *e = r->core;
  if (!r->durable || e->writer == NULL || r->lost) return 0;
  sl_buf out, err;
  sl_buf_init(&out);
  sl_buf_init(&err);
  char usage[160];
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  lua_getiuservalue(L, -1, SL_RUN_UV_OUTPUT);
  lua_getiuservalue(L, -2, SL_RUN_UV_ERROR);
  int status = r->end_status;
  const char *o = status == SL_RUN_COMPLETED ? record_json(L, -2, &out) : NULL;
  const char *x = lua_isnil(L, -1) ? NULL : record_json(L, -1, &err);
  /* A run the store failed is not over: what it did since the last commit
     was lost, and a resume, once the store can be written, does it again. */
  const char *name = r->unrecorded ? "interrupted" : sl_status_name(status);
  uint64_t seq = sl_writer_finish(e->writer, r->id, e->owner, r->epoch, 1, name, o, x,
                                  sl_durable_usage_json(&r->quota.spent, usage, sizeof usage),
                                  status == SL_RUN_PAUSED || status == SL_RUN_WAITING
                                      ? r->due_ms : sl_durable_wall_ms());
  lua_pop(L, 3);
  sl_buf_free(&out);
  sl_buf_free(&err);
  if (seq == 0) r->unrecorded = 1;
  return seq;
}

/* Waits and resume. */

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

void sl_record_push_waits(lua_State *L, sl_core *e, const char *run_id) {
  wait_list wl = {L, 0};
  lua_newtable(L);
  if (e->store != NULL && sl_store_wait_list(e->store, run_id, collect_wait, &wl) < 0)
    luaL_error(L, "%s", sl_store_errmsg(e->store));
}

/* Adds the checkpoint's step name to each wait, for answers by name. */

void sl_record_answers(lua_State *L, sl_core *c, const char *run_id, int ai) {
  ai = lua_absindex(L, ai);
  sl_buf b;
  sl_buf_init(&b);
  lua_pushnil(L);
  while (lua_next(L, ai)) {
    const char *json = record_json(L, -1, &b);
    if (json == NULL) {
      sl_buf_free(&b);
      luaL_error(L, "the answer at '%s' cannot be stored as JSON", lua_tostring(L, -2));
    }
    if (sl_store_wait_answer(c->store, run_id, lua_tostring(L, -2), json) != 0) {
      sl_buf_free(&b);
      luaL_error(L, "%s", sl_store_errmsg(c->store));
    }
    lua_pop(L, 1);
  }
  sl_buf_free(&b);
  if (sl_store_flush(c->store) != 0)
    luaL_error(L, "the answers could not be recorded: %s", sl_store_errmsg(c->store));
}

void sl_record_submit(lua_State *L, sl_host *h, int si, int ii, int bi, const char *queue,
                      const char *id) {
  sl_core *e = &h->core;
  si = lua_absindex(L, si);
  if (e->store == NULL) luaL_error(L, "cannot submit: the engine has no store");
  char file[4096];
  if (h->load_path == NULL || realpath(h->load_path, file) == NULL)
    luaL_error(L, "cannot submit: the pipeline must come from a file the engine loaded");
  sl_plan *root = sl_plan_push(L, si);
  char hex[SL_KEY_HEXLEN + 1], err[300];
  sl_key version;
  if (sl_plan_version(L, root, si, &version, err, sizeof err) != 0)
    luaL_error(L, "cannot submit: %s", err);
  sl_key_hex(&version, hex);
  char pipeline[128];
  snprintf(pipeline, sizeof pipeline, "%s", root->name);
  lua_pop(L, 1);
  sl_buf in, options;
  sl_buf_init(&in);
  sl_buf_init(&options);
  int rc = sl_json_encode(L, ii, &in, 0, err, sizeof err);
  if (rc == 0) rc = sl_buf_add(&options, "{", 1);
  if (rc == 0 && bi != 0) {
    rc = sl_buf_add(&options, "\"budget\":", 9);
    if (rc == 0) rc = sl_json_encode(L, bi, &options, 0, err, sizeof err);
  }
  if (rc == 0) rc = sl_buf_add(&options, "}", 1);
  if (rc != 0) {
    sl_buf_free(&in);
    sl_buf_free(&options);
    luaL_error(L, "cannot submit: the input cannot be stored: %s", err);
  }
  sl_store_run row;
  memset(&row, 0, sizeof row);
  row.id = id;
  row.pipeline = pipeline;
  row.file = file;
  row.def_hash = hex;
  row.status = "queued";
  row.input = in.data ? in.data : "null";
  row.options = options.data;
  row.started_ms = sl_durable_wall_ms();
  row.queue = queue;
  rc = sl_store_run_begin(e->store, &row);
  if (rc == 0) rc = sl_store_flush(e->store);
  sl_buf_free(&in);
  sl_buf_free(&options);
  if (rc != 0) luaL_error(L, "cannot submit: %s", sl_store_errmsg(e->store));
}
