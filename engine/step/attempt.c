/*
** Attempts. Time and work are bounded two ways at once: a timer ends an
** attempt that waits, and a count hook ends one that computes. The hook
** yields rather than raises, so a pcall in user code cannot swallow a
** timeout, a limit, an abort or the memory cap.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "attempt.h"
#include "clock.h"
#include "error.h"
#include "memory.h"
#include "plan.h"

/* Instructions between two looks at the clock and the counters. */
#define HOOK_COUNT 1000

static void on_deadline(uv_timer_t *h);

void sl_attempt_setup(lua_State *L, sl_exec *x) {
  sl_attempts *a = x->att;
  sl_core *c = sl_core_of(x);
  if (a == NULL) {
    a = calloc(1, sizeof *a);
    if (a == NULL) luaL_error(L, "not enough memory");
    uv_timer_init(c->loop, &a->timer);
    a->timer.data = a;
    a->c = c;
    sl_handles_opened(c->handles);
    x->att = a;
  }
  a->x = x;
  a->attempt = 1;
  a->deadline = 0;
  a->instr_used = 0;
  a->in_fallback = 0;
  a->delay = 0;
  x->att_on = 1;
  if (x->plan->timeout_ns > 0 || x->plan->instr_limit > 0) x->guarded = 1;
}

/* Of x and its ancestors, sets the interrupt of every one whose deadline
   has passed or whose work is spent; returns whether x must stop. */
static int check_guards(sl_exec *x, int counted) {
  uint64_t now = 0;
  int hit = 0;
  for (sl_exec *g = x; g != NULL; g = (sl_exec *)g->task.parent) {
    if (g->att_on && !g->att->in_fallback) {
      sl_attempts *a = g->att;
      if (g->plan->instr_limit > 0) {
        a->instr_used += counted;
        if (a->instr_used > g->plan->instr_limit && g->interrupt == SL_INT_NONE)
          g->interrupt = SL_INT_LIMIT;
      }
      if (a->deadline != 0) {
        if (now == 0) now = sl_now();
        if (now >= a->deadline && g->interrupt == SL_INT_NONE)
          g->interrupt = SL_INT_TIMEOUT;
      }
    }
    if (g->interrupt != SL_INT_NONE) hit = 1;
  }
  return hit || (x->run != NULL && x->run->aborting);
}

/*
** The count hook. It runs on the step's coroutine and on coroutines the
** step made (they inherit it). On the step's own coroutine it yields, which
** no pcall can catch; elsewhere it raises, and the step's coroutine yields
** at its own next count.
*/
static void count_hook(lua_State *L, lua_Debug *ar) {
  sl_exec *x = sl_exec_running(L);
  (void)ar;
  if (x == NULL || !check_guards(x, HOOK_COUNT)) return;
  if (L == x->task.co && lua_isyieldable(L)) {
    x->task.wait = SL_WAIT_INTERRUPT;
    lua_yield(L, 0);
    return;
  }
  luaL_error(L, "the step was interrupted (timeout, limit or abort)");
}

int sl_attempt_memory_refused(void *ud, size_t limit) {
  sl_sched_shared *sh = ud;
  sl_exec *x = (sl_exec *)sh->current;
  (void)limit;
  if (x == NULL) return 0;   /* the engine's own work is never refused */
  if (x->interrupt == SL_INT_NONE) x->interrupt = SL_INT_MEMORY;
  /* lua_sethook may be called at any moment, even from an allocator. */
  lua_sethook(x->task.co, count_hook, LUA_MASKCOUNT, 1);
  x->hooked = 1;
  return 1;
}

void sl_attempt_arm(sl_exec *x) {
  if (x->att_on && !x->att->in_fallback) {
    sl_attempts *a = x->att;
    a->instr_used = 0;
    if (x->plan->timeout_ns > 0) {
      a->deadline = sl_now() + x->plan->timeout_ns;
      uint64_t ms = (x->plan->timeout_ns + 999999) / 1000000;
      sl_timer_start(&a->timer, on_deadline, ms, 0);
    }
  }
  if (x->guarded) {
    lua_sethook(x->task.co, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
    x->hooked = 1;
  } else if (x->hooked) {
    lua_sethook(x->task.co, NULL, 0, 0);
    x->hooked = 0;
  }
}

void sl_attempt_disarm(sl_exec *x) {
  sl_attempts *a = x->att;
  if (a != NULL) {
    uv_timer_stop(&a->timer);
    a->deadline = 0;
  }
  if (x->hooked && !x->task.running) {
    lua_sethook(x->task.co, NULL, 0, 0);
    x->hooked = 0;
  }
}

/* The deadline of a waiting attempt passed: end it from the loop. */
static void on_deadline(uv_timer_t *h) {
  sl_attempts *a = h->data;
  sl_exec *x = a->x;
  if (x->interrupt == SL_INT_NONE) x->interrupt = SL_INT_TIMEOUT;
  sl_task_poke(&x->task);
}

/* The delay before attempt n (n >= 2): exponential from base, capped,
   spread by jitter (a fraction: 0.1 is plus or minus 10%). */
static double backoff(sl_exec *x, int n) {
  const sl_plan *p = x->plan;
  double d = p->base * pow(2.0, n - 2);
  if (d > p->cap) d = p->cap;
  if (p->jitter > 0 && d > 0) {
    /* The engine's own generator: no state shared between engines. */
    sl_core *c = sl_core_of(x);
    uint64_t v = c->rng;
    v ^= v << 13;
    v ^= v >> 7;
    v ^= v << 17;
    c->rng = v;
    double r = (double)(v >> 11) / (double)(UINT64_C(1) << 53);
    d *= 1.0 + p->jitter * (2.0 * r - 1.0);
  }
  return d < 0 ? 0 : d;
}

static int retryable(const char *kind) {
  return kind == NULL ||
         (strcmp(kind, "quota") != 0 && strcmp(kind, "cancelled") != 0 &&
          strcmp(kind, "interrupted") != 0 && strcmp(kind, "limit") != 0);
}

int sl_attempt_next(lua_State *L, sl_exec *x) {
  sl_attempts *a = x->att;
  sl_run *r = x->run;
  if (a->in_fallback) return SL_NEXT_FINAL;
  const char *kind, *msg, *where;
  sl_error_fields(L, -1, &kind, &msg, &where);
  /* An error that says retry = false (an input that does not match the
     step's input_schema, say) goes straight to the fallback. */
  int again = retryable(kind);
  if (again && lua_istable(L, -1)) {
    again = lua_getfield(L, -1, "retry") != LUA_TBOOLEAN || lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (again && a->attempt < x->plan->max_attempts) {
    a->attempt++;
    sl_hist_set_attempts(&r->hist, x->hist, a->attempt);
    if (kind != NULL && strcmp(kind, "validation") == 0) {
      /* The next attempt sees why the last one was refused. */
      if (sl_exec_get(L, x, SL_REC_CTX) == LUA_TTABLE) {  /* err ctx */
        lua_getfield(L, -2, "message");
        lua_setfield(L, -2, "feedback");
      }
      lua_pop(L, 1);
    }
    /* The next attempt starts again from the state as it was before the
       step: drop this attempt's view, and anything sealed from it. */
    lua_pushnil(L);
    sl_exec_set(L, x, SL_REC_STATE);
    lua_pushnil(L);
    sl_exec_set(L, x, SL_REC_CHANGES);
    x->state_on = 0;
    x->sealed = 0;
    a->delay = backoff(x, a->attempt);
    return a->delay > 0 ? SL_NEXT_LATER : SL_NEXT_NOW;
  }
  if (x->plan->opts & SL_OPT_FALLBACK) {
    a->in_fallback = 1;
    char why[300];
    snprintf(why, sizeof why, "%s: %s", kind ? kind : "error", msg ? msg : "?");
    sl_hist_set_fallback(&r->hist, x->hist, why);
    return SL_NEXT_FALLBACK;
  }
  return SL_NEXT_FINAL;
}

int sl_attempt_body(const sl_exec *x) {
  if (!x->att_on) return SL_BODY_HANDLER;
  if (x->att->in_fallback) return SL_BODY_FALLBACK;
  return (x->plan->opts & SL_OPT_VALIDATE) ? SL_BODY_CHECKED : SL_BODY_HANDLER;
}

void sl_attempt_push_interrupt(lua_State *L, sl_exec *x) {
  const sl_plan *p = x->plan;
  char msg[200];
  const char *kind = "timeout";
  if (x->interrupt == SL_INT_LIMIT) {
    kind = "limit";
    snprintf(msg, sizeof msg, "the attempt exceeded its limit of %lld Lua instructions",
             (long long)p->instr_limit);
  } else if (x->interrupt == SL_INT_MEMORY) {
    kind = "limit";
    snprintf(msg, sizeof msg, "the step went past the memory limit of %.1f MB",
             (double)sl_memory_get_limit(L) / (1024.0 * 1024.0));
  } else {
    snprintf(msg, sizeof msg, "the attempt timed out after %g s",
             (double)p->timeout_ns / 1e9);
  }
  sl_error_push(L, kind, msg, p->name, p->where);
}

static void on_attempts_closed(uv_handle_t *h) {
  sl_attempts *a = h->data;
  sl_handles *handles = a->c->handles;
  free(a);
  sl_handles_closed(handles);
}

void sl_attempt_close(sl_exec *x) {
  if (x->att == NULL) return;
  /* The block is freed in the close callback; the handle count says so. */
  uv_close((uv_handle_t *)&x->att->timer, on_attempts_closed);
  x->att = NULL;
}

int sl_attempt_abort(lua_State *L, const char *why) {
  sl_exec *x = sl_exec_running(L);
  if (x == NULL || x->run == NULL)
    return luaL_error(L, "sl.abort called outside a step");
  sl_run *r = x->run;
  if (!r->aborting) {
    sl_core_abort_run(r, "cancelled", why);
    snprintf(r->abort_step, sizeof r->abort_step, "%s", x->plan->name);
  }
  if (L == x->task.co && lua_isyieldable(L)) {
    x->task.wait = SL_WAIT_INTERRUPT;
    return lua_yield(L, 0);
  }
  lua_sethook(x->task.co, count_hook, LUA_MASKCOUNT, 1);
  x->hooked = 1;
  return luaL_error(L, "the run was aborted: %s", why);
}
