/*
** The dispatcher. One path serves every kind: look the kind up in the run's
** policy table, prime a pooled task with (handler, step, input, ctx), resume
** it, and when it ends record it and hand its outcome on. A child run with
** ctx:run is resumed directly from its parent (no trip through the event
** loop); only when it waits does the parent suspend too.
*/
#include <string.h>

#include <lauxlib.h>

#include "dispatch.h"
#include "attempt.h"
#include "durable.h"
#include "memo.h"
#include "meter.h"
#include "ctx.h"
#include "error.h"
#include "state.h"
#include "run.h"
#include "value.h"

int sl_is_step(lua_State *L, int idx) {
  static const char key = 0;   /* the registry slot of the Step metatable */
  if (!lua_getmetatable(L, idx)) return 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key) == LUA_TNIL) {
    /* First use: keep it under a light userdata key, which costs no string
       lookup on the hot path. */
    lua_pop(L, 1);
    luaL_getmetatable(L, SL_STEP_MT);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key);
  }
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

static const char *task_name(sl_task *t) {
  if (t->run == NULL || t->hist < 0) return NULL;
  return t->run->hist.recs[t->hist].name;
}

/* Raises the error for a step whose kind the run's policy table lacks. */
static int unknown_kind(lua_State *L, int si) {
  lua_getfield(L, si, "name");
  lua_getfield(L, si, "kind");
  lua_getfield(L, si, "where");
  return luaL_error(L, "step '%s'%s%s has kind '%s', which is not registered "
                    "(register it with sl.kind)",
                    luaL_optstring(L, -3, "?"),
                    lua_isstring(L, -1) ? " defined at " : "",
                    luaL_optstring(L, -1, ""), luaL_optstring(L, -2, "?"));
}

void sl_dispatch_check_kind(lua_State *L, int ref_kinds, int si) {
  si = lua_absindex(L, si);
  lua_getfield(L, si, "kind");
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref_kinds);
  lua_insert(L, -2);
  if (lua_rawget(L, -2) == LUA_TNIL) unknown_kind(L, si);
  lua_pop(L, 2);
}

/* Pushes the ctx table of task t. */
static void push_ctx(lua_State *L, sl_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->e->ref_ctxs);
  lua_rawgeti(L, -1, t->id);
  lua_remove(L, -2);
}

/* A fallback policy chooses steps as the run goes: refuse one that would
   fall back into a step already falling back above it, or a chain deeper
   than SL_MAX_FALLBACK_DEPTH. */
static void check_fallback_chain(lua_State *L, sl_task *parent, int si) {
  int depth = 0;
  for (sl_task *p = parent; p != NULL; p = p->parent) {
    if (!p->att_on || !p->att->in_fallback) continue;
    depth++;
    push_ctx(L, p);
    lua_rawgeti(L, -1, SL_CTX_STEP);
    int same = lua_rawequal(L, -1, si);
    lua_pop(L, 2);
    if (same) {
      lua_getfield(L, si, "name");
      luaL_error(L, "fallback cycle: step '%s' would run as a fallback inside "
                    "its own fallback", luaL_optstring(L, -1, "?"));
    }
  }
  if (depth > SL_MAX_FALLBACK_DEPTH)
    luaL_error(L, "fallback chain deeper than %d", SL_MAX_FALLBACK_DEPTH);
}

/*
** Pushes the body of t's next attempt and its arguments on its coroutine,
** from the ctx: the handler (step, input, ctx); the attempt runner around
** it when the step has validators (handler, step, input, ctx); or, once
** attempts are spent, the fallback runner (step, input, ctx, error). Then
** arms the attempt.
*/
static void prime(lua_State *L, sl_task *t) {
  luaL_checkstack(L, 8, "dispatch");
  push_ctx(L, t);                                       /* ctx */
  int c = lua_gettop(L);
  int wraps = sl_attempt_wraps(t);
  if (wraps == 2) {
    lua_getfield(L, LUA_REGISTRYINDEX, "sluice.fallback_runner");
    lua_rawgeti(L, c, SL_CTX_STEP);
    lua_rawgeti(L, c, SL_CTX_INPUT);
    lua_pushvalue(L, c);
    lua_getfield(L, c, "error");
    t->nargs = 4;
  } else {
    if (wraps) lua_getfield(L, LUA_REGISTRYINDEX, "sluice.attempt_runner");
    lua_rawgeti(L, c, SL_CTX_HANDLER);
    lua_rawgeti(L, c, SL_CTX_STEP);
    lua_rawgeti(L, c, SL_CTX_INPUT);
    lua_pushvalue(L, c);
    t->nargs = wraps ? 4 : 3;
  }
  lua_xmove(L, t->co, t->nargs + 1);
  lua_pop(L, 1);
  sl_attempt_arm(t);
}

/* The body of an execution that must fail before its handler runs (a
   reservation refused): raises its argument. */
static int raise_arg(lua_State *L) {
  return lua_error(L);
}

/* Ends t without running anything: the value on top of L (popped) is its
   output, as if its coroutine had returned it (a cache hit, a restored
   step). */
static void preset(lua_State *L, sl_task *t) {
  lua_xmove(L, t->co, 1);
  t->nargs = 0;
  t->preset = 1;
}

/* Primes t's coroutine with body applied to the value on top of L (popped). */
static void prime_with(lua_State *L, sl_task *t, lua_CFunction body) {
  lua_pushcfunction(L, body);
  lua_insert(L, -2);
  lua_xmove(L, t->co, 2);
  t->nargs = 1;
}

static void follow_leave(sl_task *t, void *data) {
  (void)data;
  sl_memo_leave(t);
}

/* A follower woke: its leader ended. The output is in the cache, or the
   follower must look again (the leader failed, or its output could not be
   stored). */
static int follow_k(lua_State *L, int status, lua_KContext kctx) {
  sl_task *t = (sl_task *)kctx;
  (void)status;
  if (sl_memo_recheck(L, t)) {
    t->att->cache_hit = 1;
    t->att->memo = SL_MEMO_NONE;
    return 1;
  }
  t->att->memo = SL_MEMO_AGAIN;
  return 0;
}

/* The body of a follower: waits for its leader. */
static int follow_body(lua_State *L) {
  sl_task *t = sl_sched_running(L);
  return sl_task_suspend_io(L, t, follow_leave, NULL, follow_k, (lua_KContext)t);
}

/*
** Starts the execution of a step with options, in the order the core
** promises for every step: reserve its estimate (a refusal fails it with
** kind "quota" before it runs), look its output up in the cache (a hit
** ends it at once; a concurrent identical execution is waited for), else
** run its first attempt. ci is the index of its ctx.
*/
static void begin(lua_State *L, sl_task *t, int si, int ii, int ci) {
  if ((t->att->opts & SL_OPT_ESTIMATE) && !t->metered && !sl_meter_reserve(L, t, si)) {
    prime_with(L, t, raise_arg);
    return;
  }
  switch (sl_memo_lookup(L, t, si, ii, ci)) {
    case SL_MEMO_HIT:
      t->att->cache_hit = 1;
      preset(L, t);
      return;
    case SL_MEMO_FOLLOW:
      lua_pushcfunction(t->co, follow_body);
      t->nargs = 0;
      return;
    default:
      prime(L, t);
  }
}

/* Begins t again from its ctx (a follower that found nothing). */
static void begin_again(lua_State *L, sl_task *t) {
  push_ctx(L, t);                                       /* ctx */
  int c = lua_gettop(L);
  lua_rawgeti(L, c, SL_CTX_STEP);
  lua_rawgeti(L, c, SL_CTX_INPUT);
  begin(L, t, c + 1, c + 2, c);
  lua_settop(L, c - 1);
}

/* A background step belongs to its run, not to the step that started it:
   it goes on after that step ends, and the run ends only after it. */
static void detach(sl_task *t) {
  sl_run *r = t->run;
  sl_task_unlink(t);
  t->deliver = SL_DELIVER_BACKGROUND;
  t->next_sib = r->background;
  if (r->background) r->background->prev_sib = t;
  r->background = t;
  r->nbackground++;
}

/*
** Makes a task for the step at si on the input at ii: finds the handler,
** builds the ctx, opens the history record and leaves the coroutine primed
** with (handler, step, input, ctx). hi is the index of the task handle for
** a spawned task, or 0. Raises in L, before taking a task, on a bad step.
*/
static sl_task *prepare(lua_State *L, sl_run *r, sl_task *parent, int si,
                        int ii, int deliver, int hi, int ki) {
  sl_engine *e = r->e;
  luaL_checkstack(L, 12, "dispatch");
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  if (ki != 0) {
    ki = lua_absindex(L, ki);
    int kt = lua_type(L, ki);
    if (kt == LUA_TNIL) ki = 0;
    else if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
      luaL_error(L, "a step key must be a string or a number, got %s", luaL_typename(L, ki));
  }
  if (!sl_is_step(L, si))
    luaL_error(L, "a step made by sl.step or another constructor expected, "
                  "got %s", luaL_typename(L, si));
  /* Every execution gets an input of its own: no other execution (a
     sibling branch given the same table, the step that produced it, the
     state it was also put in) can change it under it. */
  if (lua_type(L, ii) == LUA_TTABLE) {
    sl_state_copy(L, ii);
    lua_replace(L, ii);
  }
  int top = lua_gettop(L);
  lua_getfield(L, si, "kind");                          /* kind */
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref_kinds);      /* kind kinds */
  lua_pushvalue(L, top + 1);
  if (lua_rawget(L, top + 2) == LUA_TNIL)               /* kind kinds handler */
    unknown_kind(L, si);
  lua_getfield(L, si, "name");                          /* kind kinds handler name */
  size_t klen = 0, nlen = 0;
  const char *kind = lua_tolstring(L, top + 1, &klen);
  const char *name = lua_tolstring(L, top + 4, &nlen);
  if (kind == NULL) kind = "?";
  if (name == NULL) name = kind, nlen = klen;

  if (parent != NULL && parent->att_on && parent->att->in_fallback)
    check_fallback_chain(L, parent, si);
  sl_task *t = sl_task_acquire(L, e, parent);
  t->run = r;
  t->deliver = (unsigned char)deliver;
  t->t0 = sl_now();
  t->hist = sl_hist_begin(&r->hist, parent ? parent->hist : -1, name, nlen,
                          kind, klen, t->t0);
  if (parent != NULL) {
    size_t keylen = 0;
    const char *key = ki != 0 ? lua_tolstring(L, ki, &keylen) : NULL;
    sl_hist_set_key(&r->hist, t->hist, key, keylen, ++parent->nstarted);
  }

  lua_createtable(L, SL_CTX_NSLOTS, 0);                 /* ... ctx */
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_ctxmt);
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, t);
  lua_rawseti(L, -2, SL_CTX_TASK);
  lua_pushvalue(L, si);
  lua_rawseti(L, -2, SL_CTX_STEP);
  lua_pushvalue(L, ii);
  lua_rawseti(L, -2, SL_CTX_INPUT);
  if (hi != 0) {
    lua_pushvalue(L, hi);
    lua_rawseti(L, -2, SL_CTX_HANDLE);
  }
  lua_pushvalue(L, top + 3);
  lua_rawseti(L, -2, SL_CTX_HANDLER);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_ctxs);       /* ... ctx ctxs */
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, t->id);
  lua_pop(L, 1);                                        /* ... ctx */

  if (r->durable) {
    sl_durable_path(t);
    if (r->replay && sl_durable_restore(L, t)) {
      /* Completed in an earlier attempt at the run: its output comes back. */
      preset(L, t);
      lua_settop(L, top);
      return t;
    }
  }
  /* A step with options (the DSL marks it) gets attempt state; a plain
     one pays for this one lookup. */
  if (lua_getfield(L, si, "_opts") != LUA_TNIL || e->cache_all)
    sl_attempt_setup(L, t, si, (unsigned)lua_tointeger(L, -1));
  lua_pop(L, 1);
  if (t->att_on) {
    if (t->att->background && deliver == SL_DELIVER_SYNC) detach(t);
    begin(L, t, si, ii, top + 5);
    lua_settop(L, top);
    return t;
  }
  if (t->guarded || t->hooked) {
    lua_settop(L, top);
    prime(L, t);
    return t;
  }
  lua_pushvalue(L, top + 3);
  lua_pushvalue(L, si);
  lua_pushvalue(L, ii);
  lua_pushvalue(L, top + 5);
  lua_xmove(L, t->co, 4);
  t->nargs = 3;
  lua_settop(L, top);
  return t;
}

/*
** After t's coroutine returned from lua_resume with status: returns 1 when
** the execution has ended, with its outcome (output, or error table) pushed
** on L and *ok set; returns 0 when it is waiting. L must be able to call
** functions: the resuming step's thread, or the engine's main thread.
*/
static int outcome(lua_State *L, sl_task *t, int status, int nres, int *ok) {
  lua_State *co = t->co;
  if (t->interrupt != SL_INT_NONE) {
    /* Its time or work ran out: whatever the coroutine was doing ends. */
    sl_task_stop(t);
    sl_attempt_push_interrupt(L, t);
    t->interrupt = SL_INT_NONE;
    *ok = 0;
    return 1;
  }
  if (status == LUA_YIELD && t->wait != SL_WAIT_NONE) return 0;
  if (t->att_on) sl_attempt_disarm(t);
  if (status == LUA_OK) {
    /* The results are the top nres values: the output, then its usage. */
    if (nres == 0) {
      lua_pushnil(L);
    } else if (nres == 1) {
      lua_xmove(co, L, 1);
    } else {
      lua_pop(co, nres - 2);
      lua_xmove(co, L, 2);                              /* output usage */
      if (!lua_isnil(L, -1) && !sl_meter_returned(L, t, -1)) {
        lua_replace(L, -3);                             /* err usage */
        lua_pop(L, 1);
        lua_settop(co, 0);
        *ok = 0;
        return 1;
      }
      lua_pop(L, 1);
    }
    lua_settop(co, 0);
    *ok = 1;
    return 1;
  }
  if (status == LUA_YIELD) {
    /* Only engine waits may suspend a step's own coroutine. */
    lua_resetthread(co);
    lua_settop(co, 0);
    sl_error_push(L, "error", "the step yielded outside of an engine wait "
                  "(coroutine.yield called in step code that is not inside "
                  "a coroutine of its own)", task_name(t), NULL);
    *ok = 0;
    return 1;
  }
  lua_xmove(co, L, 1);
  /* A failed coroutine is dead: reset it so a next attempt can use it
     (Lua 5.4.4 leaves the error object behind, hence the settop). */
  lua_resetthread(co);
  lua_settop(co, 0);
  sl_error_normalize(L, -1, status, task_name(t));
  *ok = 0;
  return 1;
}

/* Keeps the error on top of L in t's ctx, for the fallback runner. */
static void keep_error(lua_State *L, sl_task *t) {
  push_ctx(L, t);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "error");
  lua_pop(L, 1);
}

/*
** Drives t after its coroutine returned from lua_resume with status: when
** an attempt failed and the step has options, starts the next attempt (at
** once, or after a backoff) or its fallback. Returns 1 when the execution
** has ended, with its outcome pushed on L and *ok set; 0 when it waits.
** While its run is being aborted nothing ends: the run is cancelled from
** the top.
*/
static int settle(lua_State *L, sl_task *t, int status, int nres, int *ok) {
  for (;;) {
    if (t->run->aborting) return 0;
    if (!outcome(L, t, status, nres, ok)) return 0;
    if (*ok && t->att_on && t->att->memo == SL_MEMO_AGAIN) {
      lua_pop(L, 1);
      begin_again(L, t);
      status = sl_task_resume(t, L, &nres);
      continue;
    }
    /* A durable step is done only once what it produced can be stored. */
    if (*ok && t->run->durable && !sl_durable_seal(L, t)) *ok = 0;
    if (*ok || !t->att_on) return 1;
    switch (sl_attempt_next(L, t)) {
      case SL_NEXT_FINAL:
        return 1;
      case SL_NEXT_LATER:
        lua_pop(L, 1);
        prime(L, t);
        sl_attempt_disarm(t);    /* armed again when the delay is over */
        sl_task_backoff(t, t->att->delay);
        return 0;
      case SL_NEXT_FALLBACK:
        keep_error(L, t);
        lua_pop(L, 1);
        prime(L, t);
        break;
      default:
        lua_pop(L, 1);
        prime(L, t);
        break;
    }
    status = sl_task_resume(t, L, &nres);
  }
}

/* Passes on the changes (at ci) a successful execution t made to the
   state through its view (at vi): up to what its parent sees, to the
   run's own state, or, for a spawned task, onto its handle for the
   spawning step to merge. */
static void pass_state(lua_State *L, sl_task *t, int vi, int ci) {
  switch (t->deliver) {
    case SL_DELIVER_SYNC:
      if (lua_isnil(L, ci)) return;
      sl_ctx_push_state(L, t->parent);                  /* pview */
      sl_state_apply(L, -1, ci);
      lua_pop(L, 1);
      return;
    case SL_DELIVER_HANDLE:
      push_ctx(L, t);                                   /* ctx */
      lua_rawgeti(L, -1, SL_CTX_HANDLE);                /* ctx handle */
      lua_pushvalue(L, vi);
      lua_setfield(L, -2, "state");
      lua_pushvalue(L, ci);
      lua_setfield(L, -2, "changes");
      lua_pop(L, 2);
      return;
    case SL_DELIVER_ROOT:
      if (lua_isnil(L, ci)) return;
      lua_rawgeti(L, LUA_REGISTRYINDEX, t->run->ref);   /* run */
      lua_getiuservalue(L, -1, SL_RUN_UV_STATE);        /* run state */
      sl_state_apply(L, -1, ci);
      lua_pop(L, 2);
      return;
    default:   /* a background step's changes stay its own */
      return;
  }
}

/* The execution t ended with its outcome on top of L: end what it left
   running, record it, and pass its state on when it succeeded. */
static void conclude(lua_State *L, sl_task *t, int ok) {
  sl_run *r = t->run;
  int out = lua_gettop(L);
  while (t->children != NULL)
    sl_task_cancel(t->children, "cancelled", "its parent step ended", 1);
  /* What a successful step changed in the state: its view's changes, nil
     when it changed nothing. */
  int vi = 0, ci = 0;
  if (ok && t->state_on) {
    push_ctx(L, t);                                     /* out ctx */
    lua_rawgeti(L, -1, SL_CTX_STATE);                   /* out ctx view */
    vi = lua_gettop(L);
    /* Sealing a durable step worked them out already. */
    int have = lua_rawgeti(L, vi - 1, SL_CTX_CHANGES);  /* out ctx view ch */
    if (have == LUA_TBOOLEAN) {
      lua_pop(L, 1);
      lua_pushnil(L);
    } else if (have == LUA_TNIL) {
      lua_pop(L, 1);
      sl_state_push_changes(L, vi);                     /* out ctx view changes */
    }
    ci = vi + 1;
  }
  if (t->att_on) {
    sl_attempts *a = t->att;
    if (a->cache_hit) sl_hist_set_cached(&r->hist, t->hist);
    /* Only the step's own output is remembered: not a fallback's. */
    if (a->memo == SL_MEMO_LEAD) sl_memo_end(L, t, ok && !a->in_fallback, out, vi, ci);
    else if (a->memo == SL_MEMO_FOLLOW) sl_memo_leave(t);
  }
  if (t->metered) sl_meter_reconcile(t);
  uint64_t now = sl_now();
  if (!ok) {
    const char *kind, *msg, *where;
    sl_error_fields(L, out, &kind, &msg, &where);
    lua_getfield(L, out, "step");
    int cancelled = kind != NULL && (strcmp(kind, "cancelled") == 0 ||
                                     strcmp(kind, "interrupted") == 0);
    sl_hist_set_error(&r->hist, t->hist, kind, msg, where, lua_tostring(L, -1));
    lua_pop(L, 1);
    sl_hist_end(&r->hist, t->hist, cancelled ? SL_STEP_CANCELLED : SL_STEP_FAILED, now);
  } else {
    sl_hist_end(&r->hist, t->hist, SL_STEP_COMPLETED, now);
  }
  if (r->durable) sl_durable_checkpoint(L, t, ok, out);
  if (t->e->trace) sl_run_trace_step(r, t->hist);
  if (vi != 0) pass_state(L, t, vi, ci);
  lua_settop(L, out);
}

/* Fills the handle of the spawned task t with the outcome on top of L
   (popped) and wakes the task awaiting it when that wait is over. */
static void deliver_handle(lua_State *L, sl_task *t, int ok, int wake) {
  push_ctx(L, t);                                       /* out ctx */
  lua_rawgeti(L, -1, SL_CTX_HANDLE);                    /* out ctx handle */
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "done");
  lua_pushboolean(L, ok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, ++t->e->seq);
  lua_setfield(L, -2, "seq");
  lua_pushnil(L);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, ok ? "output" : "error");
  lua_pop(L, 3);
  sl_task *a = t->awaiter;
  t->awaiter = NULL;
  if (a != NULL && wake && (--a->pending == 0 || !ok || a->await_any))
    sl_task_wake(a, 0);
}

/* Hands the outcome on top of L (popped) of an execution that ended while
   nobody was blocked on the C stack for it. */
static void deliver(lua_State *L, sl_task *t, int ok, int wake) {
  switch (t->deliver) {
    case SL_DELIVER_SYNC: {
      sl_task *p = t->parent;
      if (!wake || p == NULL || p->wait != SL_WAIT_CHILD) {
        lua_pop(L, 1);
        return;
      }
      lua_pushboolean(p->co, ok);
      lua_xmove(L, p->co, 1);
      sl_task_wake(p, 2);
      return;
    }
    case SL_DELIVER_HANDLE:
      deliver_handle(L, t, ok, wake);
      return;
    case SL_DELIVER_BACKGROUND:
      sl_run_background_ended(t->run, t, L, ok,
                              t->att_on && t->att->background == 2);
      return;
    default:
      sl_run_finish(t->run, L, ok);
      return;
  }
}

/* At the top level, after t's coroutine returned: a task that yielded to
   end an ancestor's attempt hands over to that ancestor, and an aborted
   run is cancelled whole. */
static void after_top(lua_State *L, sl_task *t, sl_run *r) {
  if (t != NULL && t->wait == SL_WAIT_INTERRUPT && !r->aborting) {
    for (sl_task *g = t->parent; g != NULL; g = g->parent)
      if (g->interrupt != SL_INT_NONE && !g->running) {
        sl_dispatch_resumed(L, g, LUA_YIELD, 0);
        break;
      }
  }
  sl_run_check_pause(r);
  if (r->aborting && r->status == SL_RUN_RUNNING && r->root != NULL &&
      !r->root->running)
    sl_run_abandon(r, r->abort_kind[0] ? r->abort_kind : "cancelled", r->abort_msg);
}

void sl_dispatch_resumed(lua_State *L, sl_task *t, int status, int nres) {
  int ok;
  sl_run *r = t->run;
  if (!settle(L, t, status, nres, &ok)) {
    after_top(L, t, r);
    return;
  }
  conclude(L, t, ok);
  deliver(L, t, ok, 1);
  sl_task_release(t);
  after_top(L, NULL, r);
}

static int interrupt_p(lua_State *L) {
  sl_task *t = lua_touserdata(L, 1);
  sl_dispatch_resumed(L, t, LUA_YIELD, 0);
  return 0;
}

void sl_dispatch_interrupt(sl_task *t) {
  sl_engine *e = t->e;
  if (t->running) return;  /* its own resumer will see the interrupt */
  sl_engine_protect(e, interrupt_p, t);
  sl_sched_drain(e);
}

void sl_dispatch_cancelled(sl_task *t, const char *kind, const char *msg,
                           int quiet) {
  lua_State *L = t->e->L;
  luaL_checkstack(L, 8, "cancel");
  sl_error_push(L, kind, msg, task_name(t), NULL);
  conclude(L, t, 0);
  deliver(L, t, 0, !quiet);
  sl_task_release(t);
}

/* Runs the prepared task t from the frame of L until it ends or waits;
   when it ends, hands its outcome on and releases it. Returns whether it
   ended. */
static int run_now(lua_State *L, sl_task *t) {
  int nres, ok;
  int status = sl_task_resume(t, L, &nres);
  if (!settle(L, t, status, nres, &ok)) return 0;
  conclude(L, t, ok);
  deliver(L, t, ok, 1);
  sl_task_release(t);
  return 1;
}

void sl_dispatch_root(lua_State *L, sl_run *r, int si, int ii) {
  sl_task *t = prepare(L, r, NULL, si, ii, SL_DELIVER_ROOT, 0, 0);
  r->root = t;
  if (!run_now(L, t)) after_top(L, t, r);
}

/* Continuation of a step whose ctx:run child waited: the scheduler resumed
   it with (ok, outcome). */
static int child_k(lua_State *L, int status, lua_KContext kctx) {
  sl_task *p = (sl_task *)kctx;
  (void)status;
  if (!lua_toboolean(L, -2)) return lua_error(L);
  lua_remove(L, -2);
  return p->k(L, LUA_YIELD, p->kctx);
}

int sl_dispatch_run(lua_State *L, sl_task *parent, int si, int ii, int ki,
                    lua_KFunction k, lua_KContext kctx) {
  /* A run that is ending starts nothing more: the caller stops here. */
  if (parent->run->aborting)
    return sl_task_suspend(L, parent, SL_WAIT_INTERRUPT, NULL, 0);
  ii = lua_absindex(L, ii);
  sl_task *t = prepare(L, parent->run, parent, si, ii, SL_DELIVER_SYNC, 0, ki);
  if (t->deliver == SL_DELIVER_BACKGROUND) {
    /* It goes on by itself; the caller goes on at once with its input. */
    run_now(L, t);
    lua_pushvalue(L, ii);
    return 1;
  }
  int nres, ok;
  int status = sl_task_resume(t, L, &nres);
  if (settle(L, t, status, nres, &ok)) {
    conclude(L, t, ok);
    sl_task_release(t);
    if (!ok) return lua_error(L);
    return 1;
  }
  if (L != parent->co || !lua_isyieldable(L))
    sl_task_cancel(t, "cancelled", "its parent could not wait for it", 1);
  parent->k = k;
  parent->kctx = kctx;
  return sl_task_suspend(L, parent, SL_WAIT_CHILD, child_k, (lua_KContext)parent);
}

void sl_dispatch_spawn(lua_State *L, sl_task *parent, int si, int ii, int ki) {
  if (parent->run->aborting)
    sl_task_suspend(L, parent, SL_WAIT_INTERRUPT, NULL, 0);
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  if (ki != 0) ki = lua_absindex(L, ki);
  lua_createtable(L, 1, 5);                             /* handle */
  luaL_setmetatable(L, SL_HANDLE_MT);
  int hi = lua_gettop(L);
  sl_task *t = prepare(L, parent->run, parent, si, ii, SL_DELIVER_HANDLE, hi, ki);
  lua_pushlightuserdata(L, t);
  lua_rawseti(L, hi, 1);
  lua_pushboolean(L, 0);
  lua_setfield(L, hi, "done");
  if (run_now(L, t)) return;
  /* The child stopped to end the run or an enclosing attempt: the spawning
     step must stop too, rather than go on as if nothing happened. */
  if (parent->run->aborting || t->wait == SL_WAIT_INTERRUPT) {
    lua_pop(L, 1);
    sl_task_suspend(L, parent, SL_WAIT_INTERRUPT, NULL, 0);
  }
}

/* Pushes field k of the handle at h without metamethods. */
static int handle_get(lua_State *L, int h, const char *k) {
  h = lua_absindex(L, h);
  lua_pushstring(L, k);
  return lua_rawget(L, h);
}

static int is_handle(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, SL_HANDLE_MT);
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

/*
** The body of ctx:await, and its continuation once woken: scans the
** awaited handles; raises the earliest error among those that ended;
** suspends while any is still running; otherwise pushes the outputs.
*/
static int await_k(lua_State *L, int status, lua_KContext kctx) {
  sl_task *t = (sl_task *)kctx;
  int idx = (int)(t->kctx >> 2), mode = (int)(t->kctx & 3);
  int settle = mode == SL_AWAIT_SETTLE, any = mode == SL_AWAIT_ANY;
  int single = is_handle(L, idx);
  lua_Integer n = single ? 1 : (lua_Integer)lua_rawlen(L, idx);
  lua_Integer failed = 0, failed_seq = 0, first = 0, first_seq = 0;
  int pending = 0;
  (void)status;
  luaL_checkstack(L, 6, "await");
  for (lua_Integer i = 1; i <= n; i++) {
    if (single) lua_pushvalue(L, idx);
    else lua_rawgeti(L, idx, i);                        /* h */
    int h = lua_gettop(L);
    if (!is_handle(L, h))
      luaL_error(L, "bad argument to 'await' (item %d is %s, not a task from "
                 "ctx:spawn)", (int)i, luaL_typename(L, h));
    handle_get(L, h, "done");
    int done = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (done) {
      handle_get(L, h, "seq");
      lua_Integer seq = lua_tointeger(L, -1);
      lua_pop(L, 1);
      if (first == 0 || seq < first_seq) first = i, first_seq = seq;
      handle_get(L, h, "ok");
      if (!lua_toboolean(L, -1) && (failed == 0 || seq < failed_seq))
        failed = i, failed_seq = seq;
      lua_pop(L, 1);
    } else {
      lua_rawgeti(L, h, 1);
      sl_task *c = lua_touserdata(L, -1);
      lua_pop(L, 1);
      if (c == NULL || c->parent != t)
        luaL_error(L, "bad argument to 'await' (item %d is a task this step "
                   "did not spawn)", (int)i);
      c->awaiter = t;
      pending++;
    }
    lua_pop(L, 1);
  }
  if (settle || any) failed = 0;
  int over = failed != 0 || pending == 0 || (any && first != 0);
  t->await_any = (unsigned char)(any && !over);
  if (over) {
    /* The wait is over: nothing may wake this step for it any more. */
    for (sl_task *c = t->children; c != NULL; c = c->next_sib)
      if (c->awaiter == t) c->awaiter = NULL;
  }
  if (failed != 0) {
    if (single) lua_pushvalue(L, idx);
    else lua_rawgeti(L, idx, failed);
    handle_get(L, -1, "error");
    return lua_error(L);
  }
  if (any && first != 0) {
    lua_pushinteger(L, first);
    return 1;
  }
  if (pending > 0) {
    t->pending = pending;
    return sl_task_suspend(L, t, SL_WAIT_AWAIT, await_k, kctx);
  }
  if (any) return 0;  /* an empty list: nothing to wait for */
  if (single && !settle) {
    handle_get(L, idx, "output");
    return 1;
  }
  lua_createtable(L, (int)n, 0);                        /* outputs */
  sl_json_pusharraymt(L);
  lua_setmetatable(L, -2);
  for (lua_Integer i = 1; i <= n; i++) {
    if (single) lua_pushvalue(L, idx);
    else lua_rawgeti(L, idx, i);                        /* outputs h */
    if (settle) {
      lua_createtable(L, 0, 3);                         /* outputs h r */
      handle_get(L, -2, "ok");
      lua_setfield(L, -2, "ok");
      handle_get(L, -2, "output");
      lua_setfield(L, -2, "output");
      handle_get(L, -2, "error");
      lua_setfield(L, -2, "error");
    } else {
      handle_get(L, -1, "output");
    }
    lua_rawseti(L, -3, i);
    lua_pop(L, 1);
  }
  if (single) {
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
  }
  return 1;
}

int sl_dispatch_await(lua_State *L, sl_task *t, int idx, int mode) {
  idx = lua_absindex(L, idx);
  if (!is_handle(L, idx) && !lua_istable(L, idx))
    luaL_typeerror(L, idx, "task or list of tasks");
  t->kctx = ((lua_KContext)idx << 2) | mode;
  return await_k(L, LUA_OK, (lua_KContext)t);
}

void sl_dispatch_cancel(lua_State *L, sl_task *t, int idx, const char *why) {
  idx = lua_absindex(L, idx);
  if (!is_handle(L, idx))
    luaL_typeerror(L, idx, "task from ctx:spawn");
  handle_get(L, idx, "done");
  int done = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (done) return;
  lua_rawgeti(L, idx, 1);
  sl_task *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL || c->parent != t)
    luaL_error(L, "bad argument to 'cancel' (a task this step did not spawn)");
  sl_task_cancel(c, "cancelled", why, 1);
}
