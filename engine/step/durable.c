/*
** The durable phase.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "durable.h"
#include "clock.h"
#include "ctx.h"
#include "error.h"
#include "plan.h"
#include "state.h"
#include "owner.h"

/* How long an owner's lease lasts unless SLUICE_LEASE_MS says otherwise;
   it is renewed every third of that. */
#define LEASE_MS 30000

int64_t sl_durable_wall_ms(void) {
  /* On a virtual clock (clock.h), durable waits are due by it too. */
  return sl_owner_now_ms() + sl_clock_skew_ms();
}

/* A failed write discards the whole batch it belonged to, and a batch
   holds the writes of every run: none of them may go on as if recorded. */
static void writes_lost(sl_core *c, const char *why) {
  char msg[700];
  snprintf(msg, sizeof msg, "the store could not record the run, so it stops here "
           "(resume it once the store can be written): %s", why);
  for (sl_run *r = c->runs; r != NULL; r = r->next)
    if (r->durable && r->status == SL_RUN_RUNNING && !r->awaiting_record) {
      r->unrecorded = 1;
      sl_core_abort_run(r, "error", msg);
    }
}

void sl_durable_write_failed(sl_core *c) {
  writes_lost(c, sl_store_errmsg(c->store));
}

/* A write of run_id was refused: another process owns the run now (or the
   step is recorded already, which only a second owner can cause). This
   process stops the run and records nothing more of it. */
static void write_refused(sl_core *c, const char *run_id, const char *why) {
  for (sl_run *r = c->runs; r != NULL; r = r->next) {
    if (strcmp(r->id, run_id) != 0 || !r->durable || r->lost) continue;
    r->lost = 1;
    char msg[700];
    snprintf(msg, sizeof msg, "this process no longer owns the run, so it stops "
             "here and records nothing more: %s", why);
    sl_core_abort_run(r, "interrupted", msg);
  }
}

/* What the writer tells the loop. */
static void on_written(void *ud, const sl_writer_event *ev) {
  sl_core *c = ud;
  switch (ev->kind) {
    case SL_WRITER_REFUSED:
      if (ev->run_id != NULL) write_refused(c, ev->run_id, ev->msg ? ev->msg : "");
      return;
    case SL_WRITER_FAILED:
      writes_lost(c, ev->msg ? ev->msg : "the write failed");
      c->run_hooks->recorded(c, ev->upto, 0, ev->msg);
      break;
    default:
      c->last_commit_ms = sl_owner_now_ms();
      c->run_hooks->recorded(c, ev->upto, 1, NULL);
      break;
  }
  /* A run the events stopped ends before the loop waits (hooks.idle). */
}

/* Renews the leases of the active durable runs; a run whose lease could
   not be renewed in time stops, so that no two processes ever run it. */
static void on_lease_timer(uv_timer_t *t) {
  sl_core *c = t->data;
  int64_t now = sl_owner_now_ms();
  int stale = c->last_commit_ms != 0 && now - c->last_commit_ms > c->lease_ms;
  for (sl_run *r = c->runs; r != NULL; r = r->next) {
    if (!r->durable || r->lost || r->status != SL_RUN_RUNNING || r->awaiting_record)
      continue;
    if (stale && sl_writer_queued(c->writer) > sl_writer_answered(c->writer)) {
      r->lost = 1;
      sl_core_abort_run(r, "interrupted", "its lease could not be renewed in time "
                        "(the store did not answer), so it stops rather than risk "
                        "a second owner; resume it once the store answers");
      continue;
    }
    sl_writer_renew(c->writer, r->id, c->owner, r->epoch, now + c->lease_ms);
  }
  sl_writer_kick(c->writer);
}

static void on_lease_closed(uv_handle_t *h) {
  sl_handles *handles = h->data;
  free(h);
  sl_handles_closed(handles);
}

int sl_durable_open(sl_core *c, const char *path, int read_only) {
  if (path == NULL || strcmp(path, ":memory:") == 0) return 0;
  char err[512];
  sl_store_options opts = {0};
  opts.read_only = read_only;
  opts.reader = !read_only;
  int rc = sl_store_open(&c->store, path, &opts, err, sizeof err);
  if (rc == SL_STORE_EOLDER) {
    /* A store an older sluice wrote: a writer's open brings its schema up
       to date (the file exists, so nothing is created), then it is read. */
    sl_store_options up = {0};
    sl_store *w = NULL;
    char uerr[512];
    if (sl_store_open(&w, path, &up, uerr, sizeof uerr) == 0) {
      sl_store_close(w, NULL, 0);
      rc = sl_store_open(&c->store, path, &opts, err, sizeof err);
    }
  }
  if (rc != 0) {
    c->store = NULL;
    return sl_core_fail(c, rc == SL_STORE_ENOTFOUND ? SL_ENOTFOUND : SL_EINVAL, "%s", err);
  }
  if (read_only) return 0;
  opts.reader = 0;
  rc = sl_writer_open(&c->writer, c->loop, c->handles, path, &opts, on_written, c,
                      err, sizeof err);
  if (rc != 0) {
    sl_store_close(c->store, NULL, 0);
    c->store = NULL;
    c->writer = NULL;
    return sl_core_fail(c, SL_EINVAL, "%s", err);
  }
  sl_owner_self(c->owner, sizeof c->owner);
  const char *env = getenv("SLUICE_LEASE_MS");
  c->lease_ms = env && atoll(env) > 0 ? atoll(env) : LEASE_MS;
  c->last_commit_ms = 0;
  c->lease_timer = malloc(sizeof *c->lease_timer);
  if (c->lease_timer != NULL) {
    uv_timer_init(c->loop, c->lease_timer);
    c->lease_timer->data = c;
    sl_handles_opened(c->handles);
    uint64_t every = (uint64_t)(c->lease_ms / 3 > 0 ? c->lease_ms / 3 : 1);
    uv_timer_start(c->lease_timer, on_lease_timer, every, every);
    uv_unref((uv_handle_t *)c->lease_timer);
  }
  return 0;
}

void sl_durable_close(sl_core *c) {
  if (c->lease_timer != NULL) {
    c->lease_timer->data = c->handles;
    uv_close((uv_handle_t *)c->lease_timer, on_lease_closed);
    c->lease_timer = NULL;
  }
  if (c->writer != NULL) {
    char err[512];
    if (sl_writer_sync(c->writer, err, sizeof err) != 0)
      sl_core_fail(c, SL_EINVAL, "closing the store: %s", err);
    sl_writer_close(c->writer);
    c->writer = NULL;
  }
  if (c->store != NULL) {
    char err[512];
    if (sl_store_close(c->store, err, sizeof err) != 0)
      sl_core_fail(c, SL_EINVAL, "closing the store: %s", err);
    c->store = NULL;
  }
}

void sl_durable_sync(sl_core *c) {
  if (c->writer != NULL) sl_writer_sync(c->writer, NULL, 0);
}

void sl_durable_flush(sl_core *c) {
  if (c->writer != NULL) sl_writer_kick(c->writer);
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
  if (parent < 0 || h->recs[parent].path == NULL) {
    sl_hist_set_path(h, x->hist, "1");
    return;
  }
  /* parent's path, "/", the ordinal: written by hand, once per step. */
  const char *pp = h->recs[parent].path;
  size_t n = strlen(pp);
  char digits[24];
  int nd = 0;
  unsigned v = (unsigned)h->recs[x->hist].ordinal;
  do digits[nd++] = (char)('0' + v % 10); while ((v /= 10) != 0 && nd < 23);
  if (n + 1 + (size_t)nd + 1 > sizeof buf) n = sizeof buf - 2 - (size_t)nd;
  memcpy(buf, pp, n);
  buf[n++] = '/';
  while (nd > 0) buf[n++] = digits[--nd];
  buf[n] = '\0';
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

void sl_durable_input(lua_State *L, sl_exec *x, int ii) {
  sl_run *r = x->run;
  if (sl_core_of(x)->writer == NULL || r->lost || x->hist < 0) return;
  char err[300];
  sl_buf_reset(&x->sealed_in);
  int rc = sl_json_encode(L, ii, &x->sealed_in, 0, err, sizeof err);
  if (rc == 0 && x->sealed_in.len <= SL_DURABLE_MAX_INPUT) return;
  char note[420];
  if (rc == 0)
    snprintf(note, sizeof note, "{\"sluice\":\"input not kept: %zu bytes of JSON, more than "
             "%d\"}", x->sealed_in.len, SL_DURABLE_MAX_INPUT);
  else
    snprintf(note, sizeof note, "{\"sluice\":\"input not kept: not storable as JSON\"}");
  sl_buf_reset(&x->sealed_in);
  if (sl_buf_add(&x->sealed_in, note, strlen(note)) != 0) sl_buf_reset(&x->sealed_in);
}

double sl_durable_due(sl_exec *x, double seconds, const char *name, int64_t *due) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  int64_t now = sl_durable_wall_ms();
  *due = now + (int64_t)(seconds * 1000.0 + 0.999);
  if (c->writer == NULL || r->lost || x->hist < 0) return seconds;
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  if (rec->path == NULL) return seconds;
  unsigned short attempt = (unsigned short)(rec->attempts > 0 ? rec->attempts : 1);
  if (x->sleep_attempt != attempt) {
    x->sleep_attempt = attempt;
    x->nsleeps = 0;
  }
  char path[512];
  snprintf(path, sizeof path, "%s/s%u.%u", rec->path, (unsigned)attempt,
           (unsigned)++x->nsleeps);
  if (r->replay && r->replay_from != NULL) {
    const sl_store_checkpoint *cp = sl_store_replay_step(r->replay_from, path);
    const char *at = cp && cp->output ? strstr(cp->output, "\"due_ms\":") : NULL;
    const char *was = cp && cp->output ? strstr(cp->output, "\"seconds\":") : NULL;
    if (at != NULL && was != NULL) {
      /* Due as first recorded; a sleep whose length was edited since is
         due that long after the recorded one began. */
      *due = strtoll(at + 9, NULL, 10);
      double then = strtod(was + 10, NULL);
      if (then != seconds) *due += (int64_t)((seconds - then) * 1000.0 + 0.5);
      return *due > now ? (double)(*due - now) / 1000.0 : 0.0;
    }
  }
  char out[96];
  snprintf(out, sizeof out, "{\"due_ms\":%lld,\"seconds\":%.17g}", (long long)*due, seconds);
  sl_store_checkpoint cp;
  memset(&cp, 0, sizeof cp);
  cp.run_id = r->id;
  cp.path = path;
  cp.owner = c->owner;
  cp.epoch = r->epoch;
  cp.parent = rec->path;
  cp.name = name;
  cp.kind = "sleep";
  cp.status = "waiting";
  cp.attempts = 1;
  cp.output = out;
  cp.t0 = (int64_t)sl_now();
  cp.t1 = cp.t0 + (int64_t)(seconds * 1e9);
  if (sl_writer_checkpoint(c->writer, &cp) == 0) writes_lost(c, "not enough memory");
  return seconds;
}

void sl_durable_checkpoint(lua_State *L, sl_exec *x, int ok, int out) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  if (!r->durable || c->writer == NULL || r->lost || x->hist < 0) return;
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  /* A step restored from an earlier attempt at the run is recorded
     already, and a completed step is recorded once. */
  if (rec->path == NULL || rec->restored) return;
  sl_buf error;
  sl_buf_init(&error);
  char usage[160];
  sl_store_checkpoint cp;
  memset(&cp, 0, sizeof cp);
  cp.run_id = r->id;
  cp.path = rec->path;
  cp.owner = c->owner;
  cp.epoch = r->epoch;
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
  sl_buf logs;
  sl_buf_init(&logs);
  if (sl_hist_logs_json(rec, &logs) != 0) writes_lost(c, "not enough memory");
  cp.logs = logs.data;
  if (x->sealed_in.len > 0) cp.input = x->sealed_in.data;
  if (ok) {
    /* A completed step was sealed when it succeeded: what is recorded is
       exactly what it returned and changed. */
    cp.output = x->sealed_out.data ? x->sealed_out.data : "null";
    if (x->sealed_changes.len > 0) cp.changes = x->sealed_changes.data;
  } else {
    cp.error = to_json(L, out, &error);
  }
  if (sl_writer_checkpoint(c->writer, &cp) == 0) writes_lost(c, "not enough memory");
  sl_buf_free(&error);
  sl_buf_free(&logs);
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
  if (!r->replay || r->replay_from == NULL || x->hist < 0) return 0;
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  if (rec->path == NULL) return 0;
  const sl_store_checkpoint *cp = sl_store_replay_step(r->replay_from, rec->path);
  if (cp == NULL) return 0;
  int restored = 0;
  if (strcmp(cp->status, "completed") == 0 && cp->output != NULL) {
    if (sl_json_decode(L, cp->output, strlen(cp->output)) != 0) {
      lua_pop(L, 1);                                    /* its message */
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
  return restored;
}

/* Human waits. */

static int human_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status; (void)kctx;
  return 0;  /* never resumed: a paused run ends, and its resume replays */
}

/* What a question that timed out is recorded as answered with: it is
   closed, and a resume takes the timeout path again. */
#define TIMED_OUT "{\"sluice\":\"timed out\"}"

static int is_timed_out(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) return 0;
  lua_getfield(L, idx, "sluice");
  int yes = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "timed out") == 0;
  lua_pop(L, 1);
  return yes;
}

int sl_durable_human(lua_State *L, sl_exec *x, int mi, int si, double timeout) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  if (x->hist < 0) return luaL_error(L, "not enough memory to record the step");
  sl_hist_rec *rec = &r->hist.recs[x->hist];
  if (!r->durable || c->writer == NULL || rec->path == NULL)
    return luaL_error(L, "step '%s' waits for a person, which needs a durable "
                         "run: give the engine a store (--store, SLUICE_STORE "
                         "or store = in the APIs)", rec->name);
  /* The question's due time is looked up (or recorded) whether or not it
     was answered, so the step's later durable waits keep their numbers. */
  int64_t due = 0;
  double left = timeout > 0 ? sl_durable_due(x, timeout, "timeout", &due) : 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
  lua_getiuservalue(L, -1, SL_RUN_UV_ANSWERS);
  if (lua_getfield(L, -1, rec->path) != LUA_TNIL) {
    if (!is_timed_out(L, -1)) return 1;                  /* answered */
    left = 0;                                            /* timed out before */
  }
  lua_pop(L, 3);
  sl_task_check_suspend(L, &x->task);
  sl_store_wait w;
  memset(&w, 0, sizeof w);
  w.run_id = r->id;
  w.path = rec->path;
  w.message = lua_tostring(L, mi);
  w.created_ms = sl_durable_wall_ms();
  if (timeout > 0 && left <= 0) {
    /* Nobody answered in time, whether or not a process was running when
       it fell due: the question is closed as timed out. */
    w.answer = TIMED_OUT;
    if (sl_writer_wait(c->writer, &w) == 0) return luaL_error(L, "not enough memory to record the wait");
    lua_pushnil(L);
    lua_pushboolean(L, 1);
    return 2;
  }
  sl_buf schema;
  sl_buf_init(&schema);
  w.schema = lua_isnoneornil(L, si) ? NULL : to_json(L, si, &schema);
  uint64_t seq = sl_writer_wait(c->writer, &w);
  sl_buf_free(&schema);
  if (seq == 0) return luaL_error(L, "not enough memory to record the wait");
  r->pausing = 1;
  x->due_ms = due;   /* the paused run is taken up then, to time out */
  return sl_task_suspend(L, &x->task, SL_WAIT_HUMAN, human_k, 0);
}

/* Breakpoints. */

unsigned sl_durable_breaks(const sl_exec *x) {
  unsigned w = x->plan->pause;
  const sl_run *r = x->run;
  for (int i = 0; i < r->nbreaks; i++)
    if (strcmp(r->breaks[i].name, x->plan->name) == 0) w |= r->breaks[i].when;
  return w;
}

/* The wait path of x's breakpoint (STEP@before, STEP@after) in path. */
static const char *break_path(const sl_exec *x, const char *which, char *path, size_t n) {
  const sl_hist_rec *rec = &x->run->hist.recs[x->hist];
  snprintf(path, n, "%s@%s", rec->path, which);
  return path;
}

/* Looks for the answer a resume gave x's breakpoint: 0, none (it has not
   paused there yet); 1, go on as it was; 2, go on with the value that
   replaces the step's input or output (pushed). An answer is
   {"replace": true, "value": V} or {"continue": true} (resume.c). */
static int break_answer(lua_State *L, const sl_exec *x, const char *which) {
  char path[520];
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->run->ref);
  lua_getiuservalue(L, -1, SL_RUN_UV_ANSWERS);
  if (lua_getfield(L, -1, break_path(x, which, path, sizeof path)) != LUA_TTABLE) {
    lua_settop(L, top);
    return 0;
  }
  if (lua_getfield(L, -1, "replace") != LUA_TBOOLEAN || !lua_toboolean(L, -1)) {
    lua_settop(L, top);
    return 1;
  }
  lua_getfield(L, -2, "value");
  if (lua_type(L, -1) == LUA_TTABLE) {
    /* The step's own copy: the answers table keeps the recorded one. */
    sl_state_copy(L, -1);
    lua_replace(L, -2);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 2;
}

/* Records the wait of x's breakpoint. */
static int break_wait(sl_exec *x, const char *which) {
  sl_run *r = x->run;
  sl_core *c = sl_core_of(x);
  char path[520], msg[300];
  snprintf(msg, sizeof msg, "paused %s step '%s' (a breakpoint): resume to go on, with "
           "--input to replace its %s", which, x->plan->name,
           strcmp(which, "before") == 0 ? "input" : "output");
  sl_store_wait w;
  memset(&w, 0, sizeof w);
  w.run_id = r->id;
  w.path = break_path(x, which, path, sizeof path);
  w.message = msg;
  w.created_ms = sl_durable_wall_ms();
  return sl_writer_wait(c->writer, &w) != 0;
}

static int break_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status; (void)kctx;
  return 0;  /* never resumed: a paused run ends, and its resume replays */
}

/* The body of a step paused before it runs: records the breakpoint's wait
   and waits, as a human step does, for the run to pause. On a run that is
   not durable, fails the step saying why. */
static int break_body(lua_State *L) {
  sl_task *t = sl_sched_running(L);
  sl_exec *x = sl_exec_of(t);
  sl_run *r = x->run;
  if (!r->durable || sl_core_of(x)->writer == NULL || x->hist < 0 ||
      r->hist.recs[x->hist].path == NULL)
    return luaL_error(L, "step '%s' has a breakpoint, which pauses its run and needs a "
                         "durable run: give the engine a store (--store, SLUICE_STORE or "
                         "store = in the APIs)", x->plan->name);
  if (!break_wait(x, "before")) return luaL_error(L, "not enough memory to record the wait");
  r->pausing = 1;
  return sl_task_suspend(L, t, SL_WAIT_HUMAN, break_k, 0);
}

/* A fork's edit of the state at x: the fields of the "state" table of the
   answer at x's path@before, set on x's view before it runs. */
static void edit_state(lua_State *L, sl_exec *x) {
  char path[520];
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->run->ref);
  lua_getiuservalue(L, -1, SL_RUN_UV_ANSWERS);
  if (lua_getfield(L, -1, break_path(x, "before", path, sizeof path)) == LUA_TTABLE &&
      lua_getfield(L, -1, "state") == LUA_TTABLE) {
    lua_createtable(L, 0, 1);                           /* ... state rec */
    lua_insert(L, -2);
    lua_setfield(L, -2, "set");
    sl_state_changes_from_record(L, -1);                /* ... rec changes */
    sl_ctx_push_state(L, x);                            /* ... rec changes view */
    sl_state_apply(L, -1, -2);
  }
  lua_settop(L, top);
}

int sl_durable_break_begin(lua_State *L, sl_exec *x, int ii, unsigned when) {
  sl_run *r = x->run;
  int durable = r->durable && sl_core_of(x)->writer != NULL && x->hist >= 0 &&
                r->hist.recs[x->hist].path != NULL;
  if (durable && r->edits) {
    edit_state(L, x);
    if (!(when & SL_PAUSE_BEFORE) && break_answer(L, x, "before") == 2)
      lua_replace(L, ii);   /* the input a fork gave it */
  }
  if (when == 0) return 0;
  if (!durable || (when & SL_PAUSE_BEFORE)) {
    int got = durable ? break_answer(L, x, "before") : 0;
    if (got == 0) {
      lua_pushcfunction(x->task.co, break_body);
      x->task.nargs = 0;
      return 1;
    }
    if (got == 2) lua_replace(L, ii);   /* the input it was given on resume */
  }
  /* After the root the run has ended: there is nothing to pause. */
  if ((when & SL_PAUSE_AFTER) && x->deliver != SL_DELIVER_ROOT) {
    int got = break_answer(L, x, "after");
    if (got == 2) lua_pop(L, 1);
    if (got == 0) x->break_after = 1;   /* it pauses the run once it completed */
  }
  return 0;
}

void sl_durable_break_restored(lua_State *L, sl_exec *x) {
  if (!(sl_durable_breaks(x) & SL_PAUSE_AFTER) && !x->run->edits) return;
  if (break_answer(L, x, "after") == 2) lua_replace(L, -2);   /* its new output */
}

void sl_durable_break_after(sl_exec *x) {
  x->break_after = 0;
  if (!break_wait(x, "after")) {
    sl_core_abort_run(x->run, "error", "not enough memory to record a breakpoint's wait");
    return;
  }
  char msg[300];
  snprintf(msg, sizeof msg, "the run paused after step '%s' (a breakpoint): resume it "
           "to go on", x->plan->name);
  sl_core_abort_run(x->run, "paused", msg);
}

/* ctx:human(message[, schema[, timeout]]): waits for a person's answer,
   which a resume supplies (checked against schema); the run pauses
   meanwhile. With a timeout (seconds), returns nil, true once it passed
   with no answer. */
static int ctx_human(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  luaL_checkstring(L, 2);
  lua_Number t = luaL_optnumber(L, 4, 0);
  luaL_argcheck(L, t >= 0 && t == t, 4, "timeout must be a non-negative number of seconds");
  lua_settop(L, 3);
  return sl_durable_human(L, x, 2, 3, (double)t);
}

static const luaL_Reg durable_methods[] = {
  {"human", ctx_human},
  {NULL, NULL}
};

void sl_durable_register(lua_State *L, sl_core *c) {
  sl_ctx_register(L, c, durable_methods);
}
