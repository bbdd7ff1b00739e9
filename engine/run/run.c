/*
** Runs. A run is a userdata (so it outlives any error) pointing at its C
** block, with its Lua values in uservalues; the core anchors it while it
** is active, and whoever started it holds it afterwards.
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "run.h"
#include "clock.h"
#include "durable.h"
#include "error.h"
#include "lifecycle.h"
#include "meter.h"
#include "plan.h"
#include "protect.h"
#include "record.h"
#include "value.h"

/* Makes a run id that sorts by start time: 48 bits of milliseconds and 80
   random bits, in Crockford's base 32 (26 characters, like a ULID); the
   ids of one engine grow strictly, even within a millisecond. */
void sl_run_new_id(sl_host *h, char *out) {
  static const char digits[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  unsigned char *bytes = h->last_id;
  uint64_t ms = 0, last = 0;
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
  for (int i = 0; i < 6; i++) last = last << 8 | bytes[i];
  if (ms <= last && last != 0) {
    /* In the same millisecond (or the clock went back): one more than the
       last id, so the ids an engine makes sort in the order it made them. */
    int i = 15;
    while (i >= 6 && ++bytes[i] == 0) i--;
    if (i < 6) {   /* the random part wrapped: the next millisecond */
      last++;
      for (int j = 0; j < 6; j++) bytes[j] = (unsigned char)(last >> (40 - 8 * j));
    }
  } else {
    for (int i = 0; i < 6; i++) bytes[i] = (unsigned char)(ms >> (40 - 8 * i));
    if (uv_random(NULL, NULL, bytes + 6, 10, 0, NULL) != 0) {
      uint64_t x = uv_hrtime() ^ (uintptr_t)out;
      for (int i = 6; i < 16; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        bytes[i] = (unsigned char)(x >> 56);
      }
    }
    bytes[6] &= 0x7f;   /* room to count up within the millisecond */
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
  if (*box == NULL) luaL_error(L, "the run was released");
  return *box;
}

sl_run *sl_run_test(lua_State *L, int idx) {
  sl_run **box = luaL_testudata(L, idx, SL_RUN_MT);
  return box ? *box : NULL;
}

void sl_run_release(sl_run *r) {
  if (--r->holds > 0) return;
  sl_store_replay_free(r->replay_from);
  sl_hist_free(&r->hist);
  free(r->result_json);
  for (int i = 0; i < r->nbreaks; i++) free(r->breaks[i].name);
  free(r->breaks);
  free(r);
}

/* Sets r->file when the root step is a pipeline the engine loaded from a
   file, so the run can be resumed from that file. */
static void note_file(lua_State *L, sl_host *h, sl_run *r, int si) {
  if (h->load_path == NULL) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_pipelines);
  lua_getfield(L, -1, r->pipeline);
  if (lua_rawequal(L, -1, si) && realpath(h->load_path, r->file) == NULL)
    r->file[0] = '\0';
  lua_pop(L, 2);
}

/* Copies the breakpoints in the table at bi (step name -> "before",
   "after" or "both"; a name in its list part: before) to r. Raises on a bad entry or a memory error. */
static void take_breaks(lua_State *L, sl_run *r, int bi) {
  luaL_checktype(L, bi, LUA_TTABLE);
  int n = 0;
  for (lua_pushnil(L); lua_next(L, bi); lua_pop(L, 1)) n++;
  if (n == 0) return;
  r->breaks = calloc((size_t)n, sizeof *r->breaks);
  if (r->breaks == NULL) luaL_error(L, "not enough memory for the breakpoints");
  for (lua_pushnil(L); lua_next(L, bi); lua_pop(L, 1)) {
    /* { name = when } or, in the list part, { name } for before. */
    int listed = lua_isinteger(L, -2);
    const char *name = listed ? (lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL)
                     : lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    const char *w = listed ? "before" : lua_tostring(L, -1);
    unsigned char when = w == NULL ? 0 : strcmp(w, "before") == 0 ? SL_PAUSE_BEFORE
                       : strcmp(w, "after") == 0 ? SL_PAUSE_AFTER
                       : strcmp(w, "both") == 0 ? SL_PAUSE_BEFORE | SL_PAUSE_AFTER : 0;
    if (name == NULL || when == 0)
      luaL_error(L, "a breakpoint is a step name and \"before\", \"after\" or \"both\"");
    if ((r->breaks[r->nbreaks].name = strdup(name)) == NULL)
      luaL_error(L, "not enough memory for the breakpoints");
    r->breaks[r->nbreaks++].when = when;
  }
}

sl_run *sl_run_launch(lua_State *L, sl_host *h, int si, int ii, const sl_run_opts *o) {
  sl_core *c = &h->core;
  int bi = o->bi;
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  if (bi != 0) bi = lua_absindex(L, bi);
  int ai = o->ai ? lua_absindex(L, o->ai) : 0;
  if (c->closing) luaL_error(L, "the engine is shutting down");
  if (!sl_plan_is_step(L, si))
    luaL_error(L, "a pipeline or step expected, got %s", luaL_typename(L, si));
  /* Refuse a root of an unknown kind before anything is anchored. */
  sl_plan *root = sl_plan_push(L, si);                  /* plan */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_kinds);
  sl_plan_resolve(L, root, -2, lua_topointer(L, -1), c->ref_kinds);
  lua_pop(L, 2);
  sl_run **box = lua_newuserdatauv(L, sizeof *box, SL_RUN_NUV);   /* run */
  *box = NULL;
  luaL_setmetatable(L, SL_RUN_MT);
  sl_run *r = calloc(1, sizeof *r);
  if (r == NULL) luaL_error(L, "not enough memory for a run");
  *box = r;
  r->holds = 1;
  r->ref = r->ref_kinds = r->ref_host = LUA_NOREF;
  sl_hist_init(&r->hist);
  r->core = c;
  r->next = c->runs;
  if (c->runs) c->runs->prev = r;
  c->runs = r;
  /* Not running until everything that can fail has been done: a start
     that raises leaves no run for the engine to count or wait for. */
  r->status = SL_RUN_FAILED;
  if (o->id != NULL) {
    snprintf(r->id, sizeof r->id, "%s", o->id);
    r->replay = 1;
    if (o->replay != NULL) {
      r->replay_from = *o->replay;
      *o->replay = NULL;
    }
    r->epoch = o->epoch;
    r->park_after_ms = o->park_after_ms;
  } else {
    sl_run_new_id(h, r->id);
  }
  snprintf(r->pipeline, sizeof r->pipeline, "%s", root->name);
  lua_pushvalue(L, si);
  lua_setiuservalue(L, -2, SL_RUN_UV_PIPELINE);
  lua_pushvalue(L, ii);
  lua_setiuservalue(L, -2, SL_RUN_UV_INPUT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, SL_RUN_UV_STATE);
  lua_pushstring(L, r->id);
  lua_setiuservalue(L, -2, SL_RUN_UV_ID);
  if (ai != 0) {
    /* Answers at STEP@before / STEP@after edit a step's input or output
       (a breakpoint's, a fork's): its steps look for them as they begin. */
    for (lua_pushnil(L); lua_next(L, ai); lua_pop(L, 1))
      if (lua_type(L, -2) == LUA_TSTRING && strchr(lua_tostring(L, -2), '@') != NULL)
        r->edits = 1;
    lua_pushvalue(L, ai);
  } else {
    lua_newtable(L);
  }
  lua_setiuservalue(L, -2, SL_RUN_UV_ANSWERS);
  note_file(L, h, r, si);
  if (o->bki != 0) take_breaks(L, r, lua_absindex(L, o->bki));
  sl_meter_budget(L, r, si, bi);
  /* A run as long as the last of its pipeline never regrows its history. */
  sl_hist_reserve(&r->hist, root->hist_hint);
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    r->start_unix_ns = (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
  r->span_base = (int)(uv_hrtime() & 0x3fffffff) & ~0xfffff;
  uint64_t begun = 0;
  if (c->store != NULL) {
    char err[128];
    sl_key version;
    if (sl_plan_version(L, root, si, &version, err, sizeof err) == 0)
      sl_key_hex(&version, r->def_hash);
    begun = sl_record_run_begin(L, r, ii);
  }
  /* Committed: the run is active, anchored, and keeps the policy table it
     starts with to its end. */
  r->status = SL_RUN_RUNNING;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_kinds);
  r->kinds = lua_topointer(L, -1);
  r->ref_kinds = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->active_runs++;
  r->t_start = sl_now();
  if (begun != 0) {
    /* A durable run starts once the store holds it (hooks.recorded): a
       process killed at any moment after its first step began leaves a run
       to resume, never work done for a run nobody knows of. */
    r->start_seq = begun;
    r->awaiting_start = 1;
    sl_writer_kick(c->writer);
    return r;
  }
  int top = lua_gettop(L);
  lua_pushvalue(L, si);
  lua_pushvalue(L, ii);
  sl_step_root(L, r, top + 1, top + 2);
  lua_settop(L, top);
  return r;
}

/* Pooled tasks kept once no run is active. */
#define POOL_KEEP 4096

/* Drops the engine's hold on an ended run. */
static void unanchor(lua_State *L, sl_run *r) {
  /* Replayed or not, the run has no more use for its record. */
  sl_store_replay_free(r->replay_from);
  r->replay_from = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref_kinds);
  r->ref_kinds = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
  r->ref = LUA_NOREF;
  /* Once no run is active, a pool that a burst grew gives its memory back,
     keeping enough tasks for the next ordinary run. */
  if (--r->core->active_runs == 0) sl_sched_trim(&r->core->sched, POOL_KEEP);
}

/* The run ends for good: its store record (if any) is committed, or lost
   (ok 0, why says what the store said). Sets its status and lets it go. */
static void run_over(sl_run *r, lua_State *L, int ok, const char *why) {
  sl_host *h = sl_host_of(r->core);
  int status = r->end_status;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  if (!ok || r->lost) {
    /* Its end could not be recorded, or another process owns the run now:
       whatever it reached, it did not end as the store says, so it does not
       report success. */
    char msg[1100];
    if (r->lost)
      snprintf(msg, sizeof msg, "%s", r->abort_msg[0] ? r->abort_msg
               : "another process owns the run now");
    else
      snprintf(msg, sizeof msg, "the store could not record the run's end, so its result "
               "was not kept (resume it once the store can be written): %s",
               why ? why : "the write failed");
    lua_pushnil(L);
    lua_setiuservalue(L, -2, SL_RUN_UV_OUTPUT);
    sl_error_push(L, r->lost ? "interrupted" : "error", msg, r->pipeline, NULL);
    lua_setiuservalue(L, -2, SL_RUN_UV_ERROR);
    status = r->lost ? SL_RUN_INTERRUPTED : SL_RUN_FAILED;
    if (!ok) r->unrecorded = 1;
  }
  r->status = status;
  /* The next run of this pipeline makes room for as many records. */
  lua_getiuservalue(L, -1, SL_RUN_UV_PIPELINE);
  sl_plan *root = sl_plan_push(L, -1);
  root->hist_hint = r->hist.n;
  lua_pop(L, 3);
  if (ok && !r->unrecorded) sl_record_retain(L, r);   /* once its end is kept */
  sl_trace_flush(r->core->trace);                       /* its spans, readable now */
  unanchor(L, r);
  /* A blocking wait runs the loop once at a time; with other handles alive
     (a watch, a host's) that turn would go on to block in poll after this
     callback. Stop it so the waiter sees the run has ended. */
  if (h->blocking) uv_stop(r->core->loop);
  if (r->on_end != NULL) r->on_end(r, r->on_end_ud);
}

/* hooks.ended: the run ends with what its root ended with, unless a
   background step that had to succeed failed. A durable run ends once its
   end is committed (hooks.recorded): never reported before it is kept. */
static void run_ended(sl_run *r, lua_State *L) {
  r->t_end = sl_now();
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  if (r->root_ok && lua_getiuservalue(L, -1, SL_RUN_UV_ERROR) == LUA_TTABLE)
    r->root_ok = 0;                                     /* a required background failed */
  else if (!r->root_ok) lua_pushnil(L);
  lua_pop(L, 1);
  if (r->root_ok) {
    r->end_status = SL_RUN_COMPLETED;
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
    r->end_status = kind && strcmp(kind, "cancelled") == 0 ? SL_RUN_CANCELLED
                  : kind && strcmp(kind, "interrupted") == 0 ? SL_RUN_INTERRUPTED
                  : kind && strcmp(kind, "paused") == 0 ? SL_RUN_PAUSED
                  : kind && strcmp(kind, "waiting") == 0 ? SL_RUN_WAITING
                  : SL_RUN_FAILED;
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  uint64_t seq = sl_record_run_end(L, r);
  if (seq != 0) {
    r->end_seq = seq;
    r->awaiting_record = 1;
    sl_writer_kick(r->core->writer);
    return;
  }
  run_over(r, L, !r->unrecorded || !r->durable, "not enough memory");
}

typedef struct over_args { sl_run *r; int ok; const char *why; } over_args;

static int run_over_p(lua_State *L) {
  over_args *a = lua_touserdata(L, 1);
  run_over(a->r, L, a->ok, a->why);
  return 0;
}

/* Runs the root of a run whose start is now on record. */
static int run_begin_p(lua_State *L) {
  sl_run *r = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* run */
  lua_getiuservalue(L, -1, SL_RUN_UV_PIPELINE);
  lua_getiuservalue(L, -2, SL_RUN_UV_INPUT);
  int top = lua_gettop(L);
  sl_step_root(L, r, top - 1, top);
  return 0;
}

/* Up to n runs of c waiting for writes up to upto (their start, or their
   end), into out, clearing what they waited for. The runs found are
   anchored (they are active), so the Lua calls made for them cannot free
   them; the list is not walked across those calls, since another, ended,
   run may be collected during them. */
static int take_recorded(sl_core *c, uint64_t upto, int ends, sl_run **out, int n) {
  int k = 0;
  for (sl_run *r = c->runs; r != NULL && k < n; r = r->next) {
    if (ends ? (!r->awaiting_record || r->end_seq > upto)
             : (!r->awaiting_start || r->start_seq > upto))
      continue;
    if (ends) r->awaiting_record = 0;
    else r->awaiting_start = 0;
    out[k++] = r;
  }
  return k;
}

/* hooks.recorded: the runs whose start waited for these writes start; the
   runs whose end waited for them end. A start that was not recorded
   starts nothing: the failed write stops the run (durable.c). */
static void run_recorded(sl_core *c, uint64_t upto, int ok, const char *why) {
  sl_run *batch[64];
  char err[512];
  for (int n; (n = take_recorded(c, upto, 0, batch, 64)) > 0;) {
    for (int i = 0; i < n; i++) {
      sl_run *r = batch[i];
      if (!ok || r->status != SL_RUN_RUNNING || r->aborting || r->root_done) continue;
      if (sl_protect(c->L, run_begin_p, r, err, sizeof err) != LUA_OK)
        sl_core_abort_run(r, "error", err);
    }
  }
  sl_sched_drain(&c->sched);
  for (int n; (n = take_recorded(c, upto, 1, batch, 64)) > 0;) {
    for (int i = 0; i < n; i++) {
      over_args a = {batch[i], ok, why};
      if (sl_protect(c->L, run_over_p, &a, err, sizeof err) != LUA_OK) {
        /* Out of memory while ending it: it ends failed, as plainly as can be. */
        batch[i]->status = SL_RUN_FAILED;
        batch[i]->unrecorded = 1;
      }
    }
  }
}

const sl_run_hooks sl_run_hooks_of_host = { run_ended, run_recorded };

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
  lua_pushstring(L, sl_status_name(r->status));
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

int sl_host_poll(sl_host *h) {
  if (h->owns_loop && !h->in_uv_run) {
    h->in_uv_run = 1;
    uv_run(h->core.loop, UV_RUN_NOWAIT);
    h->in_uv_run = 0;
  }
  sl_sched_drain(&h->core.sched);
  return h->core.active_runs;
}

void sl_run_block(lua_State *L, sl_run *r) {
  if (r->status != SL_RUN_RUNNING) return;
  if (r->core == NULL) luaL_error(L, "the run's engine is gone");
  sl_host *h = sl_host_of(r->core);
  if (h->in_uv_run || r->core->sched.depth > 0)
    luaL_error(L, "cannot block on a run from inside the engine's loop "
                  "(from a step, use ctx:run; from a callback, use start/poll)");
  if (!h->owns_loop)
    luaL_error(L, "the engine runs on the host's loop: drive that loop and "
                  "poll the run instead of blocking");
  sl_sched_drain(&r->core->sched);
  while (r->status == SL_RUN_RUNNING) {
    h->in_uv_run = 1;
    h->blocking = 1;
    int alive = uv_run(r->core->loop, UV_RUN_ONCE);
    h->blocking = 0;
    h->in_uv_run = 0;
    sl_step_check_pause(r);
    if (r->status == SL_RUN_RUNNING && !alive && r->core->sched.ready_head == NULL)
      sl_step_stop_run(r, "error", "the run stalled: its steps wait on "
                                   "nothing that can wake them");
  }
}

void sl_run_on_end(sl_run *r, void (*fn)(sl_run *r, void *ud), void *ud) {
  r->on_end = fn;
  r->on_end_ud = ud;
}

void sl_run_progress(const sl_run *r, int *done, int *running, double *seconds,
                     sl_usage *spent) {
  *done = *running = 0;
  for (int i = 0; i < r->hist.n; i++) {
    if (r->hist.recs[i].status == SL_STEP_RUNNING) (*running)++;
    else (*done)++;
  }
  *seconds = (double)(sl_now() - r->t_start) / 1e9;
  *spent = r->quota.spent;
}

/* Lua methods of a run handle. */

static int run_status(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  lua_pushstring(L, sl_status_name(r->status));
  return 1;
}

static int run_result(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  sl_run_push_result(L, r, 1);
  return 1;
}

static int run_wait(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  sl_run_block(L, r);
  sl_run_push_result(L, r, 1);
  return 1;
}

static int run_cancel(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  const char *why = luaL_optstring(L, 2, "cancelled by the host");
  if (r->status == SL_RUN_RUNNING && r->root != NULL && r->root->task.running)
    return luaL_error(L, "a run cannot cancel itself from one of its steps");
  sl_step_stop_run(r, "cancelled", why);
  if (r->core) sl_sched_drain(&r->core->sched);
  return 0;
}

static int run_index(lua_State *L) {
  sl_run_check(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "id") == 0) {
    lua_getiuservalue(L, 1, SL_RUN_UV_ID);
    return 1;
  }
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
  if (r->core != NULL && r->status == SL_RUN_RUNNING)
    sl_step_stop_run(r, "interrupted", "the Lua state was closed");
  if (r->core != NULL) {
    if (r->prev) r->prev->next = r->next;
    else r->core->runs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->core = NULL;
  }
  sl_run_release(r);
  return 0;
}

static int run_tostring(lua_State *L) {
  sl_run *r = sl_run_check(L, 1);
  lua_pushfstring(L, "sluice run %s (%s, %s)", r->id, r->pipeline,
                  sl_status_name(r->status));
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
