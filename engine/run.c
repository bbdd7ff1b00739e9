/*
** Runs. A run is a userdata (so its memory outlives any error) holding its
** Lua values in uservalues; the engine anchors it while it is active, and
** whoever started it holds it afterwards.
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "run.h"
#include "dispatch.h"
#include "error.h"
#include "cache.h"
#include "meter.h"
#include "durable.h"
#include "trace.h"
#include "store.h"
#include "value.h"

const char *sl_run_status_name(int status) {
  switch (status) {
    case SL_RUN_COMPLETED: return "completed";
    case SL_RUN_FAILED: return "failed";
    case SL_RUN_PAUSED: return "paused";
    case SL_RUN_CANCELLED: return "cancelled";
    case SL_RUN_INTERRUPTED: return "interrupted";
    default: return "running";
  }
}

/* Makes a run id that sorts by start time: 48 bits of milliseconds and 80
   random bits, in Crockford's base 32 (26 characters, like a ULID). */
static void make_id(char *out) {
  static const char digits[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  unsigned char bytes[16];
  uint64_t ms = 0;
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
  for (int i = 0; i < 6; i++) bytes[i] = (unsigned char)(ms >> (40 - 8 * i));
  if (uv_random(NULL, NULL, bytes + 6, 10, 0, NULL) != 0) {
    uint64_t x = uv_hrtime() ^ (uintptr_t)out;
    for (int i = 6; i < 16; i++) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      bytes[i] = (unsigned char)(x >> 56);
    }
  }
  /* 128 bits -> 26 base-32 digits, most significant first. */
  int bit = 0;
  for (int i = 0; i < 26; i++) {
    int v = 0;
    for (int j = 0; j < 5; j++, bit++) {
      int b = bit - 2;  /* 130 bits of room: the top two are zero */
      v <<= 1;
      if (b >= 0) v |= (bytes[b / 8] >> (7 - b % 8)) & 1;
    }
    out[i] = digits[v];
  }
  out[26] = '\0';
}

sl_run *sl_run_check(lua_State *L, int idx) {
  sl_run **box = luaL_checkudata(L, idx, SL_RUN_MT);
  return *box;
}

sl_run *sl_run_test(lua_State *L, int idx) {
  sl_run **box = luaL_testudata(L, idx, SL_RUN_MT);
  return box ? *box : NULL;
}

void sl_run_release(sl_run *r) {
  if (--r->holds > 0) return;
  sl_hist_free(&r->hist);
  free(r->result_json);
  free(r);
}

sl_run *sl_run_start_lua(lua_State *L, sl_engine *e, int si, int ii, int bi) {
  sl_run_opts o = {bi, NULL, 0};
  return sl_run_start_ex(L, e, si, ii, &o);
}

/* Sets r->file when the root step is a pipeline the engine loaded from a
   file, so the run can be resumed from that file. */
static void note_file(lua_State *L, sl_run *r, int si) {
  sl_engine *e = r->e;
  if (e->load_path == NULL) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_pipelines);
  lua_getfield(L, -1, r->pipeline);
  if (lua_rawequal(L, -1, si) && realpath(e->load_path, r->file) == NULL)
    r->file[0] = '\0';
  lua_pop(L, 2);
}

sl_run *sl_run_start_ex(lua_State *L, sl_engine *e, int si, int ii,
                        const sl_run_opts *o) {
  int bi = o->bi;
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  if (bi != 0) bi = lua_absindex(L, bi);
  int ai = o->ai ? lua_absindex(L, o->ai) : 0;
  if (e->closing) luaL_error(L, "the engine is shutting down");
  if (!sl_is_step(L, si))
    luaL_error(L, "a pipeline or step expected, got %s", luaL_typename(L, si));
  /* Refuse a root of an unknown kind before anything is anchored. */
  lua_getfield(L, si, "kind");
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_kinds);
  lua_insert(L, -2);
  int known = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  if (!known) sl_dispatch_check_kind(L, e->ref_kinds, si);
  sl_run **box = lua_newuserdatauv(L, sizeof *box, SL_RUN_NUV);   /* run */
  *box = NULL;
  luaL_setmetatable(L, SL_RUN_MT);
  sl_run *r = calloc(1, sizeof *r);
  if (r == NULL) luaL_error(L, "not enough memory for a run");
  *box = r;
  r->holds = 1;
  r->ref = r->ref_kinds = r->ref_host = LUA_NOREF;
  sl_hist_init(&r->hist);
  r->e = e;
  r->next = e->runs;
  if (e->runs) e->runs->prev = r;
  e->runs = r;
  /* Not running until everything that can fail has been done: a start
     that raises leaves no run for the engine to count or wait for. */
  r->status = SL_RUN_FAILED;
  if (o->id != NULL) {
    snprintf(r->id, sizeof r->id, "%s", o->id);
    r->replay = 1;
  } else {
    make_id(r->id);
  }
  lua_getfield(L, si, "name");
  const char *name = lua_tostring(L, -1);
  snprintf(r->pipeline, sizeof r->pipeline, "%s", name ? name : "?");
  lua_pop(L, 1);
  lua_pushvalue(L, si);
  lua_setiuservalue(L, -2, SL_RUN_UV_PIPELINE);
  lua_pushvalue(L, ii);
  lua_setiuservalue(L, -2, SL_RUN_UV_INPUT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, SL_RUN_UV_STATE);
  lua_pushstring(L, r->id);
  lua_setiuservalue(L, -2, SL_RUN_UV_ID);
  if (ai != 0) lua_pushvalue(L, ai);
  else lua_newtable(L);
  lua_setiuservalue(L, -2, SL_RUN_UV_ANSWERS);
  note_file(L, r, si);
  sl_meter_budget(L, r, si, bi);
  {
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) == 0)
      r->start_unix_ns = (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
    r->span_base = (int)(uv_hrtime() & 0x3fffffff) & ~0xfffff;
  }
  if (e->store != NULL) {
    sl_key version;
    char err[128];
    if (sl_step_version(L, si, &version, err, sizeof err) == 0)
      sl_key_hex(&version, r->def_hash);
    sl_durable_run_begin(L, r, si, ii);
  }
  /* Committed: the run is active, anchored, and keeps the policy table it
     starts with to its end. */
  r->status = SL_RUN_RUNNING;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_kinds);
  r->ref_kinds = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  e->active_runs++;
  r->t_start = sl_now();
  int top = lua_gettop(L);
  lua_pushvalue(L, si);
  lua_pushvalue(L, ii);
  sl_dispatch_root(L, r, top + 1, top + 2);
  lua_settop(L, top);
  return r;
}

/* Drops the engine's hold on an ended run. */
static void unanchor(lua_State *L, sl_run *r) {
  sl_engine *e = r->e;
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref_kinds);
  r->ref_kinds = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
  r->ref = LUA_NOREF;
  e->active_runs--;
}

/* The run ends with what its root ended with, unless a background task
   that had to succeed failed. */
static void finalize(sl_run *r, lua_State *L) {
  r->t_end = sl_now();
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  if (r->root_ok && lua_getiuservalue(L, -1, SL_RUN_UV_ERROR) == LUA_TTABLE)
    r->root_ok = 0;                                     /* a required background failed */
  else if (!r->root_ok) lua_pushnil(L);
  lua_pop(L, 1);
  if (r->root_ok) {
    r->status = SL_RUN_COMPLETED;
  } else {
    lua_getiuservalue(L, -1, SL_RUN_UV_ERROR);
    lua_getfield(L, -1, "kind");
    const char *kind = lua_tostring(L, -1);
    if (r->abort_step[0] && kind && strcmp(kind, "cancelled") == 0) {
      /* An abort names the step that ended the run, not the root. */
      lua_pushstring(L, r->abort_step);
      lua_setfield(L, -3, "step");
      lua_pushboolean(L, 1);
      lua_setfield(L, -3, "aborted");
    }
    r->status = kind && strcmp(kind, "cancelled") == 0 ? SL_RUN_CANCELLED
              : kind && strcmp(kind, "interrupted") == 0 ? SL_RUN_INTERRUPTED
              : kind && strcmp(kind, "paused") == 0 ? SL_RUN_PAUSED
              : SL_RUN_FAILED;
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  if (sl_durable_run_end(L, r) != 0) {
    /* Its end could not be recorded: whatever it reached, it did not end
       as the store says, so it does not report success. */
    char msg[700];
    snprintf(msg, sizeof msg, "the store could not record the run's end, so its result "
             "was not kept (resume it once the store can be written): %s",
             sl_store_errmsg(r->e->store));
    lua_pushnil(L);
    lua_setiuservalue(L, -2, SL_RUN_UV_OUTPUT);
    sl_error_push(L, "error", msg, r->pipeline, NULL);
    lua_setiuservalue(L, -2, SL_RUN_UV_ERROR);
    r->status = SL_RUN_FAILED;
    r->unrecorded = 1;
  }
  unanchor(L, r);
  /* A blocking wait runs the loop once at a time; with other handles alive
     (a watch, a host's) that turn would go on to block in poll after this
     callback. Stop it so the waiter sees the run has ended. */
  if (r->e->blocking) uv_stop(r->e->loop);
  if (r->on_end != NULL) r->on_end(r, r->on_end_ud);
}

void sl_run_finish(sl_run *r, lua_State *L, int ok) {
  r->root = NULL;
  r->root_done = 1;
  r->root_ok = ok;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* out run */
  lua_insert(L, -2);                                    /* run out */
  lua_setiuservalue(L, -2, ok ? SL_RUN_UV_OUTPUT : SL_RUN_UV_ERROR);
  lua_pop(L, 1);
  if (r->nbackground == 0) finalize(r, L);
}

void sl_run_background_ended(sl_run *r, sl_task *t, lua_State *L, int ok,
                             int required) {
  if (t->prev_sib) t->prev_sib->next_sib = t->next_sib;
  else r->background = t->next_sib;
  if (t->next_sib) t->next_sib->prev_sib = t->prev_sib;
  t->prev_sib = t->next_sib = NULL;
  r->nbackground--;
  /* Its failure is in the history either way; it fails the run only when
     it was required, and then the first such failure is the run's error. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* out run */
  if (!ok && required && (!r->root_done || r->root_ok) &&
      lua_getiuservalue(L, -1, SL_RUN_UV_ERROR) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, SL_RUN_UV_ERROR);
  } else if (!ok && required) {
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  if (r->root_done && r->nbackground == 0) finalize(r, L);
}

/* Is any task under t still able to make progress by itself (waiting on a
   timer, a process, a request, or queued to run)? */
static int busy(sl_task *t) {
  for (; t != NULL; t = t->next_sib) {
    if (t->queued || t->running) return 1;
    if (t->wait == SL_WAIT_SLEEP || t->wait == SL_WAIT_IO ||
        t->wait == SL_WAIT_BACKOFF || t->wait == SL_WAIT_NONE)
      return 1;
    if (busy(t->children)) return 1;
  }
  return 0;
}

void sl_run_check_pause(sl_run *r) {
  if (!r->pausing || r->status != SL_RUN_RUNNING || r->e == NULL) return;
  if ((r->root != NULL && (r->root->queued || r->root->running ||
                           r->root->wait == SL_WAIT_SLEEP || r->root->wait == SL_WAIT_IO ||
                           r->root->wait == SL_WAIT_BACKOFF || busy(r->root->children))) ||
      busy(r->background))
    return;
  /* Everything left waits for a person: the run pauses as a whole. Its
     tasks end; a resume replays it from the store to the waiting points. */
  sl_run_abandon(r, "paused", "the run waits for input: resume it with the answer");
}

void sl_run_fail(sl_run *r, const char *kind, const char *msg) {
  if (r->status != SL_RUN_RUNNING || r->e == NULL) return;
  if (!r->aborting) {
    r->aborting = 1;
    snprintf(r->abort_kind, sizeof r->abort_kind, "%s", kind);
    snprintf(r->abort_msg, sizeof r->abort_msg, "%s", msg);
  }
  /* It ends from the top: once the step running now returns to the loop
     (after_top), or before the loop next waits (the store's prepare). */
}

void sl_run_abandon(sl_run *r, const char *kind, const char *msg) {
  if (r->status != SL_RUN_RUNNING || r->e == NULL) return;
  while (r->background != NULL)
    sl_task_cancel(r->background, kind, msg, 0);
  if (r->root != NULL) {
    sl_task_cancel(r->root, kind, msg, 0);
    return;
  }
  if (r->root_done) return;   /* the last background task finalized it */
  lua_State *L = r->e->L;
  sl_error_push(L, kind, msg, NULL, NULL);
  sl_run_finish(r, L, 0);
}

/* __index of a result table: builds the step history the first time
   result.steps is read, so a host that never reads it never pays for it. */
static int result_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k == NULL || strcmp(k, "steps") != 0) return 0;
  lua_getfield(L, lua_upvalueindex(1), "__run");
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);                                    /* weak: result -> run */
  sl_run *r = sl_run_test(L, -1);
  if (r == NULL) return 0;
  sl_hist_push(L, &r->hist);                            /* ... steps */
  lua_pushliteral(L, "steps");
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

/* Pushes the metatable shared by result tables, with a weak table mapping
   each result to its run. */
static void push_result_mt(lua_State *L) {
  if (luaL_newmetatable(L, "sluice.result")) {          /* mt */
    lua_newtable(L);                                    /* mt runs */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "__run");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, result_index, 1);
    lua_setfield(L, -2, "__index");
  }
}

void sl_run_push_result(lua_State *L, sl_run *r, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, SL_RUN_UV_RESULT) == LUA_TTABLE) return;
  lua_pop(L, 1);
  if (r->status == SL_RUN_RUNNING) {
    lua_pushnil(L);
    return;
  }
  luaL_checkstack(L, 8, "result");
  lua_createtable(L, 0, 8);                             /* result */
  lua_getiuservalue(L, idx, SL_RUN_UV_ID);
  lua_setfield(L, -2, "run_id");
  lua_pushstring(L, r->pipeline);
  lua_setfield(L, -2, "pipeline");
  lua_pushstring(L, sl_run_status_name(r->status));
  lua_setfield(L, -2, "status");
  lua_getiuservalue(L, idx, SL_RUN_UV_OUTPUT);
  lua_setfield(L, -2, "output");
  lua_getiuservalue(L, idx, SL_RUN_UV_ERROR);
  lua_setfield(L, -2, "error");
  sl_usage_push(L, &r->quota.spent);
  lua_setfield(L, -2, "usage");
  lua_pushnumber(L, (double)(r->t_end - r->t_start) / 1e6);
  lua_setfield(L, -2, "ms");
  push_result_mt(L);                                    /* result mt */
  lua_getfield(L, -1, "__run");                         /* result mt runs */
  lua_pushvalue(L, -3);
  lua_pushvalue(L, idx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_setmetatable(L, -2);                              /* result */
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, SL_RUN_UV_RESULT);
}

void sl_run_wait_lua(lua_State *L, sl_run *r) {
  sl_engine *e = r->e;
  if (r->status != SL_RUN_RUNNING) return;
  if (e == NULL) luaL_error(L, "the run's engine is gone");
  if (e->in_uv_run || e->depth > 0)
    luaL_error(L, "cannot block on a run from inside the engine's loop "
                  "(from a step, use ctx:run; from a callback, use start/poll)");
  if (!e->owns_loop)
    luaL_error(L, "the engine runs on the host's loop: drive that loop and "
                  "poll the run instead of blocking");
  while (r->status == SL_RUN_RUNNING) {
    e->in_uv_run = 1;
    e->blocking = 1;
    int alive = uv_run(e->loop, UV_RUN_ONCE);
    e->blocking = 0;
    e->in_uv_run = 0;
    sl_run_check_pause(r);
    if (r->status == SL_RUN_RUNNING && !alive && e->ready_head == NULL)
      sl_run_abandon(r, "error", "the run stalled: its steps wait on "
                                 "nothing that can wake them");
  }
}

/* Lua methods of a run handle. */

static int run_status(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  lua_pushstring(L, sl_run_status_name(r->status));
  return 1;
}

static int run_result(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  sl_run_push_result(L, r, 1);
  return 1;
}

static int run_wait(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  sl_run_wait_lua(L, r);
  sl_run_push_result(L, r, 1);
  return 1;
}

static int run_cancel(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  const char *why = luaL_optstring(L, 2, "cancelled by the host");
  if (r->status == SL_RUN_RUNNING && r->root != NULL && r->root->running)
    return luaL_error(L, "a run cannot cancel itself from one of its steps");
  sl_run_abandon(r, "cancelled", why);
  if (r->e) sl_sched_drain(r->e);
  return 0;
}

static int run_index(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "id") == 0) {
    lua_getiuservalue(L, 1, SL_RUN_UV_ID);
    return 1;
  }
  (void)r;
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, k);
  return 1;
}

static int run_gc(lua_State *L) {
  sl_run **box = luaL_checkudata(L, 1, SL_RUN_MT);
  sl_run *r = *box;
  if (r == NULL) return 0;
  *box = NULL;
  /* Only lua_close collects a run that is still active: end it first. It
     can go on in another process (resume). */
  if (r->e != NULL && r->status == SL_RUN_RUNNING)
    sl_run_abandon(r, "interrupted", "the Lua state was closed");
  if (r->e != NULL) {
    if (r->prev) r->prev->next = r->next;
    else r->e->runs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->e = NULL;
  }
  sl_run_release(r);
  return 0;
}

static int run_tostring(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  lua_pushfstring(L, "sluice run %s (%s, %s)", r->id, r->pipeline,
                  sl_run_status_name(r->status));
  return 1;
}

static const luaL_Reg run_methods[] = {
  {"status", run_status},
  {"result", run_result},
  {"wait", run_wait},
  {"cancel", run_cancel},
  {NULL, NULL}
};

void sl_run_open(lua_State *L) {
  if (luaL_newmetatable(L, SL_RUN_MT)) {
    luaL_newlib(L, run_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, run_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, run_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, run_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

void sl_run_trace_step(sl_run *r, int i) {
  sl_engine *e = r->e;
  if (e == NULL || e->trace == NULL || i < 0) return;
  const sl_hist_rec *rec = &r->hist.recs[i];
  sl_trace_span_info s;
  memset(&s, 0, sizeof s);
  s.run_id = r->id;
  s.index = r->span_base + i;
  s.parent = rec->parent >= 0 ? r->span_base + rec->parent : -1;
  s.name = rec->name;
  s.kind = rec->kind;
  s.key = rec->key;
  s.start_ns = r->start_unix_ns + (int64_t)(rec->t0 - r->t_start);
  s.end_ns = r->start_unix_ns + (int64_t)((rec->t1 ? rec->t1 : rec->t0) - r->t_start);
  s.attempts = rec->attempts;
  s.cached = rec->cached || rec->restored;
  s.has_usage = rec->has_usage;
  s.cost = (double)rec->usage.cost_nanos / 1e9;
  s.tokens = rec->usage.tokens;
  s.requests = rec->usage.requests;
  s.fallback = rec->fallback;
  s.err_kind = rec->err_kind;
  s.err_msg = rec->err_msg;
  s.err_where = rec->err_where;
  if (sl_trace_span(e->trace, &s) != 0)
    fprintf(stderr, "sluice: %s\n", sl_trace_errmsg(e->trace));
}
