/*
** The step lifecycle. One path serves every kind:
**
**   begin    resolve the step's plan and its kind's handler, take a pooled
**            task, open the history record, and let the phases that can
**            end it at once decide (a restored checkpoint, a refused
**            reservation, a cache hit); else prime its first attempt;
**   prime    put the body of the next attempt on its coroutine: the
**            handler as its plan says to call it, or the attempt runner
**            (validators), or the fallback runner;
**   resume   run it: directly from the parent's C frame for a child, or
**            from the top when the parent's chain is deep or it waited;
**   settle   take its outcome and decide what follows a failed attempt;
**   finish   record it, pass its state on, deliver its outcome, release
**            its task. Every path that ends a step calls finish.
**
** A child started with ctx:run is resumed directly from its parent (no trip
** through the event loop); only when it waits does the parent suspend too.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "lifecycle.h"
#include "attempt.h"
#include "clock.h"
#include "ctx.h"
#include "durable.h"
#include "stats.h"
#include "error.h"
#include "memo.h"
#include "memory.h"
#include "meter.h"
#include "plan.h"
#include "protect.h"
#include "state.h"
#include "value.h"

/* Children run directly from their parent's C frame while fewer than this
   many steps are on the C stack; deeper ones are resumed from the top, so
   nesting is bounded by memory, not by the C stack. */
#define MAX_DIRECT_DEPTH 40

/* How an ended execution's outcome goes on. */
enum {
  END_DELIVER,   /* to whoever waits for it, waking them */
  END_QUIET,     /* recorded, but nobody is woken (a cancel the parent made) */
  END_KEEP       /* left on L for the caller, which ran it directly */
};

static void finish(lua_State *L, sl_exec *x, int ok, int how);
static int settle(lua_State *L, sl_exec *x, int status, int nres, int *ok);
static void after_top(lua_State *L, sl_exec *x, sl_run *r);
static void on_resumed(lua_State *L, sl_task *t, int status, int nres);

/* {======================================================
** Executions
** ======================================================= */

/* Gives an execution taken from the pool its first values. */
static void init_exec(sl_exec *x, sl_run *r, sl_plan *p, sl_exec *parent, int deliver) {
  x->run = r;
  x->plan = p;
  x->awaiter = NULL;
  memset(&x->held, 0, sizeof x->held);
  memset(&x->used, 0, sizeof x->used);
  memset(&x->returned, 0, sizeof x->returned);
  x->hist = -1;
  x->pending = 0;
  x->nstarted = 0;
  x->done_head = x->done_tail = 0;
  x->deliver = (unsigned char)deliver;
  x->att_on = 0;
  x->guarded = parent != NULL && parent->guarded;
  x->interrupt = SL_INT_NONE;
  x->await_any = 0;
  x->await_next = 0;
  x->collecting = 0;
  x->metered = 0;
  x->preset = 0;
  x->state_on = 0;
  x->sealed = 0;
  x->memo = SL_MEMO_NONE;
  x->fetch = NULL;
  x->cache_hit = 0;
  x->sleep_attempt = x->nsleeps = 0;
  x->parkable = 0;
  x->break_after = 0;
  x->due_ms = 0;
}

/* Returns x's task to the pool once it has ended. */
static void release(lua_State *L, sl_exec *x) {
  if (x->has_rec) {
    sl_ctx_detach(L, x);
    sl_exec_clear_rec(L, x);
  }
  if (x->att_on || x->hooked) sl_attempt_disarm(x);
  x->att_on = 0;
  /* A pooled task keeps small buffers for the next durable step, not the
     memory of a large output. */
  if (x->sealed_out.cap > 65536) sl_buf_free(&x->sealed_out);
  if (x->sealed_changes.cap > 65536) sl_buf_free(&x->sealed_changes);
  if (x->sealed_in.cap > 65536) sl_buf_free(&x->sealed_in);
  x->run = NULL;
  sl_task_release(&x->task);
}

/* }====================================================== */


/* {======================================================
** Begin and prime
** ======================================================= */

/* Pushes the body of x's next attempt and its arguments onto its coroutine:
   the handler as the plan calls it, the attempt runner around it, or the
   fallback runner. pi, si and ii index the plan, the step and the input on
   L. Then arms the attempt. */
static void push_body(lua_State *L, sl_exec *x, int pi, int si, int ii) {
  const sl_plan *p = x->plan;
  lua_State *co = x->task.co;
  int n;
  switch (sl_attempt_body(x)) {
    case SL_BODY_FALLBACK:
      lua_getfield(L, LUA_REGISTRYINDEX, "sluice.fallback_runner");
      lua_pushvalue(L, si);
      lua_pushvalue(L, ii);
      sl_ctx_push(L, x);
      sl_exec_get(L, x, SL_REC_ERROR);
      n = 4;
      break;
    case SL_BODY_CHECKED:
      lua_getfield(L, LUA_REGISTRYINDEX, "sluice.attempt_runner");
      sl_plan_push_handler(L, pi);
      lua_pushvalue(L, si);
      lua_pushvalue(L, ii);
      sl_ctx_push(L, x);
      n = 4;
      break;
    default:
      if (p->call == SL_CALL_STEP && p->has_run) {
        /* The `step` kind calls its run function: the lifecycle calls it
           itself, with a ctx only when the function can see one. */
        sl_plan_push_run(L, pi);
        lua_pushvalue(L, ii);
        n = 1;
        if (p->run_ctx) {
          sl_ctx_push(L, x);
          n = 2;
        }
        break;
      }
      sl_plan_push_handler(L, pi);
      lua_pushvalue(L, si);
      lua_pushvalue(L, ii);
      if (p->call == SL_CALL_EXEC) lua_pushlightuserdata(L, x);
      else sl_ctx_push(L, x);
      n = 3;
      break;
  }
  lua_xmove(L, co, n + 1);
  x->task.nargs = n;
  if (x->att_on || x->guarded || x->hooked) sl_attempt_arm(x);
}

/* Calls go(L, x, plan, step, input) with x's step and input as its record
   keeps them and its plan resolved against the run's policy table. */
static void from_record(lua_State *L, sl_exec *x,
                        void (*go)(lua_State *, sl_exec *, int, int, int)) {
  luaL_checkstack(L, 12, "prime");
  int top = lua_gettop(L);
  sl_exec_get(L, x, SL_REC_STEP);
  sl_exec_get(L, x, SL_REC_INPUT);
  sl_plan *p = sl_plan_push(L, top + 1);
  sl_plan_resolve(L, p, top + 3, x->run->kinds, x->run->ref_kinds);
  go(L, x, top + 3, top + 1, top + 2);
  lua_settop(L, top);
}

/* Primes the next attempt of x from what its record keeps. */
static void prime(lua_State *L, sl_exec *x) {
  from_record(L, x, push_body);
}

/* Ends x without running anything: the value on top of L (popped) is its
   output, as if its coroutine had returned it (a cache hit, a restored
   step). */
static void preset(lua_State *L, sl_exec *x) {
  lua_xmove(L, x->task.co, 1);
  x->task.nargs = 0;
  x->preset = 1;
}

/* The body of an execution that fails before its handler runs (a refused
   reservation): raises its argument. */
static int raise_arg(lua_State *L) {
  return lua_error(L);
}

/* Primes x's coroutine with a body that raises the error on top of L. */
static void prime_failure(lua_State *L, sl_exec *x) {
  lua_pushcfunction(L, raise_arg);
  lua_insert(L, -2);
  lua_xmove(L, x->task.co, 2);
  x->task.nargs = 1;
}

static void follow_leave(sl_task *t, void *data) {
  (void)data;
  sl_memo_leave(sl_exec_of(t));
}

/* A follower woke: its leader ended. The output is in the cache, or the
   follower must look again (the leader failed, or its output could not be
   stored). */
static int follow_k(lua_State *L, int status, lua_KContext kctx) {
  sl_exec *x = (sl_exec *)kctx;
  (void)status;
  if (sl_memo_recheck(L, x)) {
    x->cache_hit = 1;
    x->memo = SL_MEMO_NONE;
    return 1;
  }
  x->memo = SL_MEMO_AGAIN;
  return 0;
}

/* The body of a follower: waits for its leader. */
static int follow_body(lua_State *L) {
  sl_exec *x = sl_exec_running(L);
  return sl_task_suspend_io(L, &x->task, follow_leave, NULL, follow_k, (lua_KContext)x);
}

static void fetch_leave(sl_task *t, void *data) {
  (void)data;
  sl_memo_fetch_leave(sl_exec_of(t));
}

/* The persistent tier answered a leader: a hit is its output; a miss runs
   it. */
static int fetch_k(lua_State *L, int status, lua_KContext kctx) {
  sl_exec *x = (sl_exec *)kctx;
  (void)status;
  if (sl_memo_fetch_take(L, x)) {
    x->cache_hit = 1;
    return 1;
  }
  x->memo = SL_MEMO_MISSED;
  return 0;
}

/* The body of a leader that looks in a store on a server first. */
static int fetch_body(lua_State *L) {
  sl_exec *x = sl_exec_running(L);
  if (sl_memo_fetch_start(x) != 0) {
    x->memo = SL_MEMO_MISSED;
    return 0;
  }
  return sl_task_suspend_io(L, &x->task, fetch_leave, NULL, fetch_k, (lua_KContext)x);
}

/* Keeps the step and input (at si and ii) of x for an attempt that must
   start again. */
static void keep_step(lua_State *L, sl_exec *x, int si, int ii) {
  lua_pushvalue(L, si);
  sl_exec_set(L, x, SL_REC_STEP);
  lua_pushvalue(L, ii);
  sl_exec_set(L, x, SL_REC_INPUT);
}

/*
** The phases a step with options passes before its first attempt, in the
** order the core promises for every step: reserve its estimate (a refusal
** fails it with kind "quota" before it runs), look its output up in the
** cache (a hit ends it at once; a concurrent identical execution is waited
** for), else prime its first attempt. pi, si and ii index the plan, the
** step and the input.
*/
static void phases(lua_State *L, sl_exec *x, int pi, int si, int ii) {
  if (!x->metered && !sl_meter_reserve(L, x)) {
    prime_failure(L, x);
    return;
  }
  if (x->memo == SL_MEMO_MISSED) {
    /* It looked in the store and found nothing: it runs, as the leader. */
    x->memo = SL_MEMO_LEAD;
    push_body(L, x, pi, si, ii);
    return;
  }
  switch (sl_memo_lookup(L, x, si, ii)) {
    case SL_MEMO_HIT:
      x->cache_hit = 1;
      preset(L, x);
      return;
    case SL_MEMO_FOLLOW:
      /* If its leader fails, it begins again from these. */
      keep_step(L, x, si, ii);
      lua_pushcfunction(x->task.co, follow_body);
      x->task.nargs = 0;
      return;
    case SL_MEMO_LEAD:
      if (sl_memo_can_fetch(x)) {
        /* On a miss it begins again from these, and runs. */
        keep_step(L, x, si, ii);
        lua_pushcfunction(x->task.co, fetch_body);
        x->task.nargs = 0;
        return;
      }
      push_body(L, x, pi, si, ii);
      return;
    default:
      push_body(L, x, pi, si, ii);
  }
}

/* Begins x again from its record (a follower that found nothing). */
static void begin_again(lua_State *L, sl_exec *x) {
  from_record(L, x, phases);
}

/* A background step belongs to its run, not to the step that started it:
   it goes on after that step ends, and the run ends only after it. */
static void detach(sl_exec *x) {
  sl_run *r = x->run;
  sl_task_unlink(&x->task);
  x->deliver = SL_DELIVER_BACKGROUND;
  x->task.next_sib = r->background ? &r->background->task : NULL;
  if (r->background) r->background->task.prev_sib = &x->task;
  r->background = x;
  r->nbackground++;
}

/* A fallback policy chooses steps as the run goes: refuse one that would
   fall back into a step already falling back above it, or a chain deeper
   than SL_MAX_FALLBACK_DEPTH. */
static void check_fallback_chain(lua_State *L, sl_exec *parent, const sl_plan *p) {
  int depth = 0;
  for (sl_exec *a = parent; a != NULL; a = (sl_exec *)a->task.parent) {
    if (!a->att_on || !a->att->in_fallback) continue;
    depth++;
    if (a->plan == p)
      luaL_error(L, "fallback cycle: step '%s' would run as a fallback inside "
                    "its own fallback", p->name);
  }
  if (depth > SL_MAX_FALLBACK_DEPTH)
    luaL_error(L, "fallback chain deeper than %d", SL_MAX_FALLBACK_DEPTH);
}

/*
** Begins an execution of the step at si on the input at ii under parent
** (NULL for a root), delivering its outcome as deliver says. hi is the
** index of its task handle for a spawned execution, or 0; ki of its key,
** or 0. Leaves it primed (or preset) and returns it. Raises in L, before
** taking a task, on a bad step.
*/
static sl_exec *begin(lua_State *L, sl_run *r, sl_exec *parent, int si, int ii,
                      int deliver, int hi, int ki) {
  sl_core *c = r->core;
  luaL_checkstack(L, 20, "begin");   /* begin, its phases and push_body */
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  if (ki != 0) {
    ki = lua_absindex(L, ki);
    int kt = lua_type(L, ki);
    if (kt == LUA_TNIL) ki = 0;
    else if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
      luaL_error(L, "a step key must be a string or a number, got %s", luaL_typename(L, ki));
  }
  int top = lua_gettop(L);
  sl_plan *p = sl_plan_push(L, si);                     /* plan */
  int pi = top + 1;
  sl_plan_resolve(L, p, pi, r->kinds, r->ref_kinds);
  /* Every execution gets an input of its own: no other execution (a
     sibling given the same table, the step that produced it, the state it
     was also put in) can change it under it. */
  if (lua_type(L, ii) == LUA_TTABLE) {
    sl_state_copy(L, ii);
    lua_replace(L, ii);
  }
  if (parent != NULL && parent->att_on && parent->att->in_fallback)
    check_fallback_chain(L, parent, p);

  sl_exec *x = sl_exec_of(sl_task_acquire(L, &c->sched, parent ? &parent->task : NULL));
  init_exec(x, r, p, parent, deliver);
  uint64_t t0 = parent != NULL && c->clock_for == parent ? c->clock_at : sl_now();
  c->clock_for = NULL;
  x->hist = sl_hist_begin(&r->hist, parent ? parent->hist : -1, p->label, t0);
  if (parent != NULL) {
    size_t keylen = 0;
    const char *key = ki != 0 ? lua_tolstring(L, ki, &keylen) : NULL;
    sl_hist_set_key(&r->hist, x->hist, key, keylen, ++parent->nstarted);
  }
  if (hi != 0) {
    lua_pushvalue(L, hi);
    sl_exec_set(L, x, SL_REC_HANDLE);
  }
  unsigned breaks = (p->pause || r->nbreaks) ? sl_durable_breaks(x) : 0;
  if (r->durable) {
    sl_durable_path(x);
    if (r->replay && sl_durable_restore(L, x)) {
      /* Completed in an earlier attempt at the run: its output comes back. */
      if (breaks || r->edits) sl_durable_break_restored(L, x);
      preset(L, x);
      lua_settop(L, top);
      return x;
    }
  }
  if ((breaks || r->edits) && sl_durable_break_begin(L, x, ii, breaks)) {
    lua_settop(L, top);
    return x;
  }
  if (r->durable) sl_durable_input(L, x, ii);
  if (p->opts != 0 || c->cache_all) {
    if (p->opts & SL_OPT_ATTEMPTS) sl_attempt_setup(L, x);
    /* Later attempts (a retry, the fallback) start again from these. */
    if (p->opts & SL_OPT_AGAIN) keep_step(L, x, si, ii);
    if (p->background && deliver == SL_DELIVER_SYNC) detach(x);
    phases(L, x, pi, si, ii);
  } else {
    push_body(L, x, pi, si, ii);
  }
  lua_settop(L, top);
  return x;
}

/* }====================================================== */


/* {======================================================
** Resume and settle
** ======================================================= */

/* Resumes x's coroutine from L; a preset execution just hands over the
   output waiting on its coroutine. */
static int resume(lua_State *L, sl_exec *x, int *nres) {
  if (x->preset) {
    x->preset = 0;
    *nres = lua_gettop(x->task.co);
    return LUA_OK;
  }
  sl_core_of(x)->clock_for = NULL;   /* step code runs: time passes */
  return sl_task_resume(&x->task, L, nres);
}

/*
** After x's coroutine returned from lua_resume with status: returns 1 when
** the attempt has ended, with its outcome (output, or error table) pushed
** on L and *ok set; returns 0 when it is waiting.
*/
static int outcome(lua_State *L, sl_exec *x, int status, int nres, int *ok) {
  lua_State *co = x->task.co;
  if (x->interrupt != SL_INT_NONE) {
    /* Its time, work or memory ran out: whatever the coroutine was doing
       ends. */
    sl_task_stop(&x->task);
    sl_attempt_push_interrupt(L, x);
    x->interrupt = SL_INT_NONE;
    *ok = 0;
    return 1;
  }
  if (status == LUA_YIELD && x->task.wait != SL_WAIT_NONE) return 0;
  if (x->att_on) sl_attempt_disarm(x);
  if (status == LUA_OK) {
    /* The results are the top nres values: the output, then its usage. */
    if (nres == 0) {
      lua_pushnil(L);
    } else if (nres == 1) {
      lua_xmove(co, L, 1);     /* its stack holds nothing else */
      *ok = 1;
      return 1;
    } else {
      lua_pop(co, nres - 2);
      lua_xmove(co, L, 2);                              /* output usage */
      if (!lua_isnil(L, -1) && !sl_meter_returned(L, x, -1)) {
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
                  "a coroutine of its own)", x->plan->name, NULL);
    *ok = 0;
    return 1;
  }
  lua_xmove(co, L, 1);
  /* A failed coroutine is dead: reset it so a next attempt can use it
     (Lua 5.4.4 leaves the error object behind, hence the settop). */
  lua_resetthread(co);
  lua_settop(co, 0);
  sl_error_normalize(L, -1, status, x->plan->name);
  *ok = 0;
  return 1;
}

/*
** Drives x after its coroutine returned from lua_resume with status: when
** an attempt failed and the step has options, starts the next attempt (at
** once, or after a backoff) or its fallback. Returns 1 when the execution
** has ended, with its outcome pushed on L and *ok set; 0 when it waits.
** While its run is being aborted nothing ends: the run is ended from the
** top.
*/
static int settle(lua_State *L, sl_exec *x, int status, int nres, int *ok) {
  for (;;) {
    if (x->run->aborting) return 0;
    if (!outcome(L, x, status, nres, ok)) return 0;
    if (*ok && (x->memo == SL_MEMO_AGAIN || x->memo == SL_MEMO_MISSED)) {
      lua_pop(L, 1);
      begin_again(L, x);
      status = resume(L, x, &nres);
      continue;
    }
    /* A durable step is done only once what it produced can be stored. */
    if (*ok && x->run->durable && !sl_durable_seal(L, x)) *ok = 0;
    if (*ok || !x->att_on) return 1;
    switch (sl_attempt_next(L, x)) {
      case SL_NEXT_FINAL:
        return 1;
      case SL_NEXT_LATER:
        lua_pop(L, 1);
        prime(L, x);
        sl_attempt_disarm(x);    /* armed again when the delay is over */
        sl_task_backoff(&x->task, x->att->delay);
        return 0;
      case SL_NEXT_FALLBACK:
        sl_exec_set(L, x, SL_REC_ERROR);
        prime(L, x);
        break;
      default:
        lua_pop(L, 1);
        prime(L, x);
        break;
    }
    status = resume(L, x, &nres);
  }
}

/* }====================================================== */


/* {======================================================
** Finish
** ======================================================= */

/* Passes on the changes (at ci) a successful execution x made to the
   state through its view (at vi): up to what its parent sees, to the run's
   own state, or, for a spawned task, onto its handle for the spawning step
   to merge. */
static void pass_state(lua_State *L, sl_exec *x, int vi, int ci) {
  switch (x->deliver) {
    case SL_DELIVER_SYNC:
      if (lua_isnil(L, ci)) return;
      sl_ctx_push_state(L, (sl_exec *)x->task.parent);  /* pview */
      sl_state_apply(L, -1, ci);
      lua_pop(L, 1);
      return;
    case SL_DELIVER_HANDLE:
      sl_exec_get(L, x, SL_REC_HANDLE);                 /* handle */
      lua_pushvalue(L, vi);
      lua_setfield(L, -2, "state");
      lua_pushvalue(L, ci);
      lua_setfield(L, -2, "changes");
      lua_pop(L, 1);
      return;
    case SL_DELIVER_ROOT:
      if (lua_isnil(L, ci)) return;
      lua_rawgeti(L, LUA_REGISTRYINDEX, x->run->ref);   /* run */
      lua_getiuservalue(L, -1, SL_RUN_UV_STATE);        /* run state */
      sl_state_apply(L, -1, ci);
      lua_pop(L, 2);
      return;
    default:   /* a background step's changes stay its own */
      return;
  }
}

/* Writes the span of history record i of run r to the core's trace; a
   span that cannot be written is counted, and the run goes on. */
static void trace_step(sl_core *c, sl_run *r, int i) {
  if (i < 0) return;
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
  s.events = rec->logs;
  s.dropped_events = rec->logs_dropped;
  if (sl_trace_span(c->trace, &s) != 0) c->spans_dropped++;
}

/* The run's end: its hook decides its status, records it and lets go. */
static void run_ended(lua_State *L, sl_run *r) {
  r->core->run_hooks->ended(r, L);
}

/* The root of r ended with its outcome on top of L (popped). */
static void root_ended(lua_State *L, sl_run *r, int ok) {
  r->root = NULL;
  r->root_done = 1;
  r->root_ok = ok;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);            /* out run */
  lua_insert(L, -2);                                    /* run out */
  lua_setiuservalue(L, -2, ok ? SL_RUN_UV_OUTPUT : SL_RUN_UV_ERROR);
  lua_pop(L, 1);
  if (r->nbackground == 0) run_ended(L, r);
}

/* The background step x of r ended with its outcome on top of L (popped);
   a required one's failure is the run's. */
static void background_ended(lua_State *L, sl_run *r, sl_exec *x, int ok) {
  sl_task *t = &x->task;
  if (t->prev_sib) t->prev_sib->next_sib = t->next_sib;
  else r->background = t->next_sib ? sl_exec_of(t->next_sib) : NULL;
  if (t->next_sib) t->next_sib->prev_sib = t->prev_sib;
  t->prev_sib = t->next_sib = NULL;
  r->nbackground--;
  int required = x->plan->background == SL_BG_REQUIRED;
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
  if (r->root_done && r->nbackground == 0) run_ended(L, r);
}

/* Fills the handle of the spawned x with the outcome on top of L (popped)
   and wakes the execution awaiting it when that wait is over. */
static void deliver_handle(lua_State *L, sl_exec *x, int ok, int wake) {
  sl_exec *parent = (sl_exec *)x->task.parent;
  sl_exec_get(L, x, SL_REC_HANDLE);                     /* out handle */
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "done");
  lua_pushboolean(L, ok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, ++sl_core_of(x)->seq);
  lua_setfield(L, -2, "seq");
  lua_pushnil(L);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, ok ? "output" : "error");
  if (parent != NULL && parent->collecting) {
    /* Into the parent's completion queue, in the order children end. */
    if (sl_exec_get(L, parent, SL_REC_DONE) != LUA_TTABLE) {   /* out handle q */
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      sl_exec_set(L, parent, SL_REC_DONE);
    }
    if (parent->done_head == parent->done_tail) parent->done_head = parent->done_tail = 0;
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, ++parent->done_tail);
    lua_pop(L, 1);
    if (wake && parent->await_next) {
      parent->await_next = 0;
      sl_task_wake(&parent->task, 0);
    }
  }
  lua_pop(L, 2);
  sl_exec *a = x->awaiter;
  x->awaiter = NULL;
  if (a != NULL && wake && (--a->pending == 0 || !ok || a->await_any))
    sl_task_wake(&a->task, 0);
}

/* Hands on the outcome on top of L (popped) of an execution nobody is
   blocked on the C stack for. */
static void deliver(lua_State *L, sl_exec *x, int ok, int wake) {
  switch (x->deliver) {
    case SL_DELIVER_SYNC: {
      sl_exec *p = (sl_exec *)x->task.parent;
      if (!wake || p == NULL || p->task.wait != SL_WAIT_CHILD) {
        lua_pop(L, 1);
        return;
      }
      lua_pushboolean(p->task.co, ok);
      lua_xmove(L, p->task.co, 1);
      sl_task_wake(&p->task, 2);
      return;
    }
    case SL_DELIVER_HANDLE:
      deliver_handle(L, x, ok, wake);
      return;
    case SL_DELIVER_BACKGROUND:
      background_ended(L, x->run, x, ok);
      return;
    default:
      root_ended(L, x->run, ok);
      return;
  }
}

/*
** The execution x ended with its outcome on top of L: end what it left
** running, let the phases record it (cache, quota, history, checkpoint,
** trace), pass its state on when it succeeded, hand its outcome on (or,
** with END_KEEP, leave it on L for the caller) and release its task.
*/
static void finish(lua_State *L, sl_exec *x, int ok, int how) {
  sl_run *r = x->run;
  sl_core *c = r->core;
  int out = lua_gettop(L);
  while (x->task.children != NULL)
    sl_task_cancel(x->task.children, "cancelled", "its parent step ended", 1);
  /* What a successful step changed in the state: its view's changes, nil
     when it changed nothing (sealing a durable step worked them out). */
  int vi = 0, ci = 0;
  if (ok && x->state_on) {
    sl_exec_get(L, x, SL_REC_STATE);                    /* out view */
    vi = lua_gettop(L);
    int have = sl_exec_get(L, x, SL_REC_CHANGES);       /* out view ch */
    if (have == LUA_TBOOLEAN) {
      lua_pop(L, 1);
      lua_pushnil(L);
    } else if (have == LUA_TNIL) {
      lua_pop(L, 1);
      sl_state_push_changes(L, vi);
    }
    ci = vi + 1;
  }
  if (x->cache_hit) sl_hist_set_cached(&r->hist, x->hist);
  /* Only the step's own output is remembered: not a fallback's. */
  if (x->memo == SL_MEMO_LEAD)
    sl_memo_end(L, x, ok && !(x->att_on && x->att->in_fallback), out, vi, ci);
  else if (x->memo == SL_MEMO_FOLLOW)
    sl_memo_leave(x);
  if (x->metered) sl_meter_reconcile(x);
  uint64_t now = sl_now();
  if (how == END_KEEP) {
    c->clock_at = now;
    c->clock_for = (const sl_exec *)x->task.parent;
  }
  if (!ok) {
    const char *kind, *msg, *where;
    sl_error_fields(L, out, &kind, &msg, &where);
    lua_getfield(L, out, "step");
    int cancelled = kind != NULL && (strcmp(kind, "cancelled") == 0 ||
                                     strcmp(kind, "interrupted") == 0);
    sl_hist_set_error(&r->hist, x->hist, kind, msg, where, lua_tostring(L, -1));
    lua_pop(L, 1);
    sl_hist_end(&r->hist, x->hist, cancelled ? SL_STEP_CANCELLED : SL_STEP_FAILED, now);
  } else {
    sl_hist_end(&r->hist, x->hist, SL_STEP_COMPLETED, now);
  }
  if (r->durable) sl_durable_checkpoint(L, x, ok, out);
  if (x->break_after && ok) sl_durable_break_after(x);
  if (c->trace != NULL) trace_step(c, r, x->hist);
  if (vi != 0) {
    pass_state(L, x, vi, ci);
    lua_settop(L, out);
  }
  if (how != END_KEEP) deliver(L, x, ok, how == END_DELIVER);
  release(L, x);
}

/* }====================================================== */


/* {======================================================
** Starting and driving executions
** ======================================================= */

/* Runs x from the frame of L until it ends or waits; when it ends, hands
   its outcome on. Returns whether it ended. */
static int run_now(lua_State *L, sl_exec *x) {
  int nres, ok;
  int status = resume(L, x, &nres);
  if (!settle(L, x, status, nres, &ok)) return 0;
  finish(L, x, ok, END_DELIVER);
  return 1;
}

/* Starts x: at once from L's frame, or, when the chain of steps on the C
   stack is deep, from the top (queued), so nesting never overflows the C
   stack. Returns whether it ended. */
static int start(lua_State *L, sl_exec *x) {
  if (x->preset || sl_core_of(x)->sched.depth < MAX_DIRECT_DEPTH) return run_now(L, x);
  sl_task_wake(&x->task, 0);
  return 0;
}

/* At the top level, after x's coroutine returned: an execution that yielded
   to end an ancestor's attempt hands over to that ancestor, and a run
   asked to end is ended whole. */
static void after_top(lua_State *L, sl_exec *x, sl_run *r) {
  if (x != NULL && x->task.wait == SL_WAIT_INTERRUPT && !r->aborting) {
    for (sl_exec *g = (sl_exec *)x->task.parent; g != NULL; g = (sl_exec *)g->task.parent)
      if (g->interrupt != SL_INT_NONE && !g->task.running) {
        on_resumed(L, &g->task, LUA_YIELD, 0);
        break;
      }
  }
  sl_step_check_pause(r);
  if (r->aborting && r->status == SL_RUN_RUNNING && r->root != NULL &&
      !r->root->task.running)
    sl_step_stop_run(r, r->abort_kind[0] ? r->abort_kind : "cancelled", r->abort_msg);
}

void sl_step_root(lua_State *L, sl_run *r, int si, int ii) {
  sl_exec *x = begin(L, r, NULL, si, ii, SL_DELIVER_ROOT, 0, 0);
  r->root = x;
  if (!run_now(L, x)) after_top(L, x, r);
}

/* Continuation of a step whose ctx:run child waited: the scheduler resumed
   it with (ok, outcome). */
static int child_k(lua_State *L, int status, lua_KContext kctx) {
  sl_exec *p = (sl_exec *)kctx;
  (void)status;
  if (!lua_toboolean(L, -2)) return lua_error(L);
  lua_remove(L, -2);
  return p->task.k(L, LUA_YIELD, p->task.kctx);
}

int sl_step_run(lua_State *L, sl_exec *parent, int si, int ii, int ki,
                lua_KFunction k, lua_KContext kctx) {
  /* A run that is ending starts nothing more: the caller stops here. */
  if (parent->run->aborting)
    return sl_task_suspend(L, &parent->task, SL_WAIT_INTERRUPT, NULL, 0);
  ii = lua_absindex(L, ii);
  sl_exec *x = begin(L, parent->run, parent, si, ii, SL_DELIVER_SYNC, 0, ki);
  if (x->deliver == SL_DELIVER_BACKGROUND) {
    /* It goes on by itself; the caller goes on at once with its input. */
    start(L, x);
    lua_pushvalue(L, ii);
    return 1;
  }
  if (x->preset || sl_core_of(x)->sched.depth < MAX_DIRECT_DEPTH) {
    int nres, ok;
    int status = resume(L, x, &nres);
    if (settle(L, x, status, nres, &ok)) {
      finish(L, x, ok, END_KEEP);
      if (!ok) return lua_error(L);
      return 1;
    }
  } else {
    sl_task_wake(&x->task, 0);   /* from the top: the chain here is deep */
  }
  if (L != parent->task.co || !lua_isyieldable(L))
    sl_task_cancel(&x->task, "cancelled", "its parent could not wait for it", 1);
  parent->task.k = k;
  parent->task.kctx = kctx;
  return sl_task_suspend(L, &parent->task, SL_WAIT_CHILD, child_k, (lua_KContext)parent);
}

void sl_step_spawn(lua_State *L, sl_exec *parent, int si, int ii, int ki) {
  if (parent->run->aborting)
    sl_task_suspend(L, &parent->task, SL_WAIT_INTERRUPT, NULL, 0);
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  if (ki != 0) ki = lua_absindex(L, ki);
  lua_createtable(L, 1, 5);                             /* handle */
  luaL_setmetatable(L, SL_HANDLE_MT);
  int hi = lua_gettop(L);
  sl_exec *x = begin(L, parent->run, parent, si, ii, SL_DELIVER_HANDLE, hi, ki);
  lua_pushlightuserdata(L, x);
  lua_rawseti(L, hi, 1);
  lua_pushboolean(L, 0);
  lua_setfield(L, hi, "done");
  if (start(L, x)) return;
  /* The child stopped to end the run or an enclosing attempt: the spawning
     step must stop too, rather than go on as if nothing happened. */
  if (parent->run->aborting || x->task.wait == SL_WAIT_INTERRUPT) {
    lua_pop(L, 1);
    sl_task_suspend(L, &parent->task, SL_WAIT_INTERRUPT, NULL, 0);
  }
}

/* }====================================================== */


/* {======================================================
** Waiting for spawned executions
** ======================================================= */

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
  sl_exec *x = (sl_exec *)kctx;
  int idx = (int)(x->task.kctx >> 2), mode = (int)(x->task.kctx & 3);
  int all_settled = mode == SL_AWAIT_SETTLE, any = mode == SL_AWAIT_ANY;
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
      sl_exec *c = lua_touserdata(L, -1);
      lua_pop(L, 1);
      if (c == NULL || (sl_exec *)c->task.parent != x)
        luaL_error(L, "bad argument to 'await' (item %d is a task this step "
                   "did not spawn)", (int)i);
      c->awaiter = x;
      pending++;
    }
    lua_pop(L, 1);
  }
  if (all_settled || any) failed = 0;
  int over = failed != 0 || pending == 0 || (any && first != 0);
  x->await_any = (unsigned char)(any && !over);
  if (over) {
    /* The wait is over: nothing may wake this step for it any more. */
    for (sl_task *c = x->task.children; c != NULL; c = c->next_sib)
      if (sl_exec_of(c)->awaiter == x) sl_exec_of(c)->awaiter = NULL;
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
    x->pending = pending;
    return sl_task_suspend(L, &x->task, SL_WAIT_AWAIT, await_k, kctx);
  }
  if (any) return 0;  /* an empty list: nothing to wait for */
  if (single && !all_settled) {
    handle_get(L, idx, "output");
    return 1;
  }
  lua_createtable(L, (int)n, 0);                        /* outputs */
  sl_json_pusharraymt(L);
  lua_setmetatable(L, -2);
  for (lua_Integer i = 1; i <= n; i++) {
    if (single) lua_pushvalue(L, idx);
    else lua_rawgeti(L, idx, i);                        /* outputs h */
    if (all_settled) {
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

int sl_step_await(lua_State *L, sl_exec *x, int idx, int mode) {
  idx = lua_absindex(L, idx);
  if (!is_handle(L, idx) && !lua_istable(L, idx))
    luaL_typeerror(L, idx, "task or list of tasks");
  x->task.kctx = ((lua_KContext)idx << 2) | mode;
  return await_k(L, LUA_OK, (lua_KContext)x);
}

void sl_step_collect(sl_exec *x) {
  x->collecting = 1;
}

static int next_done_k(lua_State *L, int status, lua_KContext kctx) {
  sl_exec *x = (sl_exec *)kctx;
  (void)status;
  if (x->done_head < x->done_tail) {
    sl_exec_get(L, x, SL_REC_DONE);                     /* q */
    lua_rawgeti(L, -1, ++x->done_head);                 /* q handle */
    lua_pushnil(L);
    lua_rawseti(L, -3, x->done_head);
    lua_remove(L, -2);
    return 1;
  }
  if (x->task.children == NULL) {
    lua_pushnil(L);
    return 1;
  }
  x->await_next = 1;
  return sl_task_suspend(L, &x->task, SL_WAIT_AWAIT, next_done_k, kctx);
}

int sl_step_next_done(lua_State *L, sl_exec *x) {
  return next_done_k(L, LUA_OK, (lua_KContext)x);
}

void sl_step_cancel(lua_State *L, sl_exec *x, int idx, const char *why) {
  idx = lua_absindex(L, idx);
  if (!is_handle(L, idx))
    luaL_typeerror(L, idx, "task from ctx:spawn");
  handle_get(L, idx, "done");
  int done = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (done) return;
  lua_rawgeti(L, idx, 1);
  sl_exec *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL || (sl_exec *)c->task.parent != x)
    luaL_error(L, "bad argument to 'cancel' (a task this step did not spawn)");
  sl_task_cancel(&c->task, "cancelled", why, 1);
}

/* }====================================================== */


/* {======================================================
** Ending runs from the top, and the scheduler's hooks
** ======================================================= */

/* Can the execution t make progress by itself (waiting on a timer that is
   not a long durable wait, a process, a request, or queued to run)? */
static int goes_on(const sl_task *t) {
  if (t->queued || t->running) return 1;
  if (t->wait == SL_WAIT_SLEEP) return !((const sl_exec *)t)->parkable;
  return t->wait == SL_WAIT_IO || t->wait == SL_WAIT_BACKOFF || t->wait == SL_WAIT_NONE;
}

/* Is any execution in the list from t, or below, able to go on by itself?
   Also finds the earliest due time of the waits there (*due, 0: none) and
   whether one is a durable sleep (*sleeps). */
static int busy(sl_task *t, int64_t *due, int *sleeps) {
  for (; t != NULL; t = t->next_sib) {
    if (goes_on(t) || busy(t->children, due, sleeps)) return 1;
    const sl_exec *x = (const sl_exec *)t;
    if (x->due_ms > 0 && (*due == 0 || x->due_ms < *due)) *due = x->due_ms;
    if (t->wait == SL_WAIT_SLEEP) *sleeps = 1;
  }
  return 0;
}

void sl_step_check_pause(sl_run *r) {
  if (!r->pausing || r->status != SL_RUN_RUNNING || r->core == NULL) return;
  int64_t due = 0;
  int sleeps = 0;
  if (busy(r->root ? &r->root->task : NULL, &due, &sleeps) ||
      busy(r->background ? &r->background->task : NULL, &due, &sleeps))
    return;
  /* Everything left waits for a person or a long durable sleep: the run
     pauses (or is parked until its first wait is due) as a whole. Its
     executions end; a resume, or a worker's claim once it is due, replays
     it from the store to the waits. */
  r->due_ms = due;
  if (sleeps)
    sl_step_stop_run(r, "waiting", "the run is parked until its wait is due: "
                                   "a worker takes it up again then");
  else
    sl_step_stop_run(r, "paused", "the run waits for input: resume it with the answer");
}

void sl_step_stop_run(sl_run *r, const char *kind, const char *msg) {
  if (r->status != SL_RUN_RUNNING || r->core == NULL) return;
  while (r->background != NULL)
    sl_task_cancel(&r->background->task, kind, msg, 0);
  if (r->root != NULL) {
    sl_task_cancel(&r->root->task, kind, msg, 0);
    return;
  }
  if (r->root_done) return;   /* the last background step ended it */
  lua_State *L = r->core->L;
  sl_error_push(L, kind, msg, NULL, NULL);
  root_ended(L, r, 0);
}

/* Stops, as their reasons say, the runs that were asked to stop while a
   step ran. */
static void end_failed_runs(sl_core *c) {
  if (!c->abort_pending) return;
  c->abort_pending = 0;
  for (sl_run *r = c->runs, *next; r != NULL; r = next) {
    next = r->next;
    if (r->aborting && r->status == SL_RUN_RUNNING &&
        (r->root == NULL || !r->root->task.running))
      sl_step_stop_run(r, r->abort_kind, r->abort_msg);
  }
  sl_sched_drain(&c->sched);
}

/* hooks.resumed: the scheduler resumed t from the top. */
static void on_resumed(lua_State *L, sl_task *t, int status, int nres) {
  sl_exec *x = sl_exec_of(t);
  sl_run *r = x->run;
  int ok;
  if (!settle(L, x, status, nres, &ok)) {
    after_top(L, x, r);
    return;
  }
  finish(L, x, ok, END_DELIVER);
  after_top(L, NULL, r);
}

/* hooks.cancelled: t was stopped; it ends with an error of kind. */
static void on_cancelled(sl_task *t, const char *kind, const char *msg, int quiet) {
  sl_exec *x = sl_exec_of(t);
  lua_State *L = sl_core_of(x)->L;
  luaL_checkstack(L, 8, "cancel");
  sl_error_push(L, kind, msg, x->plan->name, NULL);
  finish(L, x, 0, quiet ? END_QUIET : END_DELIVER);
}

static void on_stopping(sl_task *t) {
  sl_exec *x = sl_exec_of(t);
  sl_attempt_disarm(x);
  x->parkable = 0;   /* what it waited on is over, however it ended */
  x->due_ms = 0;
}

static void on_backoff_over(sl_task *t) {
  sl_attempt_arm(sl_exec_of(t));
}

static void on_failed(sl_task *t, const char *msg) {
  sl_exec *x = sl_exec_of(t);
  if (x->run != NULL) sl_step_stop_run(x->run, "error", msg);
}

static void on_forget(sl_task *t) {
  sl_exec *x = sl_exec_of(t);
  lua_State *L = t->s->L;
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, x);
  sl_attempt_close(x);
  sl_buf_free(&x->sealed_out);
  sl_buf_free(&x->sealed_changes);
  sl_buf_free(&x->sealed_in);
}

/* hooks.idle: before the loop waits, what completed is made durable, and
   a run that must stop (a failed write, an overrun, sl.abort) ends. */
static void on_idle(sl_sched *s) {
  sl_core *c = (sl_core *)s;
  sl_durable_flush(c);
  end_failed_runs(c);
}

static const sl_sched_hooks step_hooks = {
  on_resumed, on_cancelled, on_stopping, on_backoff_over, on_failed, on_forget,
  on_idle
};

/* }====================================================== */


/* {======================================================
** The lifecycle's ctx methods, and opening the step layer
** ======================================================= */

static int ctx_run_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return 1;
}

/* ctx:run(step, input[, key]): runs a child step through the engine and
   returns its output; its error is raised in the calling step. key names
   the execution among its siblings in the history (an item, an iteration). */
static int ctx_run(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_settop(L, 4);
  int n = sl_step_run(L, x, 2, 3, 4, ctx_run_k, 0);
  sl_core_of(x)->clock_for = NULL;   /* the step's own code goes on */
  return n;
}

/* ctx:spawn(step, input[, key]): starts a child step concurrently; returns
   its task handle. */
static int ctx_spawn(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_settop(L, 4);
  sl_step_spawn(L, x, 2, 3, 4);
  return 1;
}

/* ctx:await(task or list of tasks): waits for spawned tasks; returns the
   output, or the outputs in the same order. */
static int ctx_await(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_settop(L, 2);
  return sl_step_await(L, x, 2, SL_AWAIT_ALL);
}

/* ctx:await_any(tasks): waits until one of the tasks has ended; returns
   its position in the list. Its failure is not raised. */
static int ctx_await_any(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_settop(L, 2);
  luaL_checktype(L, 2, LUA_TTABLE);
  return sl_step_await(L, x, 2, SL_AWAIT_ANY);
}

/* ctx:settle(tasks): waits for every task whatever happens; returns a list
   of {ok, output, error} in the same order. */
static int ctx_settle(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_settop(L, 2);
  return sl_step_await(L, x, 2, SL_AWAIT_SETTLE);
}

/* ctx:cancel(task[, why]): cancels a spawned task that is still running,
   with everything under it. */
static int ctx_cancel(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  const char *why = luaL_optstring(L, 3, "cancelled by its parent step");
  lua_settop(L, 3);
  sl_step_cancel(L, x, 2, why);
  return 0;
}

static int ctx_sleep_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status;
  sl_exec *x = (sl_exec *)kctx;
  x->parkable = 0;
  x->due_ms = 0;
  return 0;
}

/* ctx:sleep(seconds): suspends only the calling step. */
static int ctx_sleep(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_Number s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s >= 0 && s == s, 2, "seconds must be a non-negative number");
  sl_run *r = x->run;
  double left = (double)s;
  if (r->durable) {
    /* A durable run's sleep ends at the due time it first recorded; a
       worker parks the run for a long one once nothing else can go on. */
    int64_t due;
    left = sl_durable_due(x, left, "sleep", &due);
    int park = r->park_after_ms > 0 && left * 1000.0 > (double)r->park_after_ms;
    x->parkable = (unsigned char)park;
    x->due_ms = park ? due : 0;
    if (park) r->pausing = 1;
  }
  return sl_task_sleep(L, &x->task, left, ctx_sleep_k, (lua_KContext)x);
}

static int ctx_park_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  sl_task *t = (sl_task *)kctx;
  lua_pushboolean(L, t->parked == SL_PARK_GRANTED);
  t->parked = SL_PARK_NONE;
  return 1;
}

/* ctx:park([seconds]): suspends only the calling step until another step
   calls ctx:unpark() on this ctx (true) or seconds pass (false). What
   builds waiting on it (a limiter's queue) keeps its own record of who
   waits; a step stopped while parked runs its to-be-closed variables. */
static int ctx_park(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  lua_Number s = luaL_optnumber(L, 2, -1);
  luaL_argcheck(L, s == s && (s >= 0 || lua_isnoneornil(L, 2)), 2,
                "seconds must be a non-negative number");
  return sl_task_park(L, &x->task, (double)s, ctx_park_k, (lua_KContext)&x->task);
}

/* ctx:unpark(): wakes the step of this ctx if it is parked, from the
   loop's next turn; returns whether it was (false once it ended, was
   stopped or was unparked already). Any step may call it. */
static int ctx_unpark(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!sl_ctx_live(L, 1)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  sl_exec *x = sl_ctx_check(L, 1);
  lua_pushboolean(L, sl_task_unpark(&x->task));
  return 1;
}

static const luaL_Reg step_methods[] = {
  {"run", ctx_run},
  {"spawn", ctx_spawn},
  {"await", ctx_await},
  {"settle", ctx_settle},
  {"await_any", ctx_await_any},
  {"cancel", ctx_cancel},
  {"sleep", ctx_sleep},
  {"park", ctx_park},
  {"unpark", ctx_unpark},
  {NULL, NULL}
};

void sl_step_open(lua_State *L, sl_core *c, uv_loop_t *loop, sl_handles *handles) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  c->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  c->loop = loop;
  c->handles = handles;
  sl_sched_init(&c->sched, c->L, loop, handles, sizeof(sl_exec), &step_hooks);
  c->sched.shared->engines++;
  /* Every engine counts its state's memory, so a cap can be set at any
     time; the cap refuses only what steps ask for (attempt.c). */
  sl_memory_limit(L, sl_memory_get_limit(L));
  sl_memory_set_refuse(L, sl_attempt_memory_refused, c->sched.shared);
  if (uv_random(NULL, NULL, &c->rng, sizeof c->rng, 0, NULL) != 0 || c->rng == 0)
    c->rng = uv_hrtime() | 1;
  sl_ctx_open(L, c);
  sl_ctx_register(L, c, step_methods);
  sl_meter_open(L, c);
  sl_durable_register(L, c);
  sl_stats_register(L, c);
}

/* }====================================================== */
