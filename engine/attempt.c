/*
** Attempts. The state of a step with options lives with its task; the
** dispatcher asks here what follows a failed attempt. Time and work are
** bounded two ways at once: a timer ends an attempt that waits, and a count
** hook ends one that computes. The hook yields rather than raises, so a
** pcall in user code cannot swallow a timeout, a limit or an abort.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "attempt.h"
#include "dispatch.h"
#include "error.h"
#include "memory.h"
#include "run.h"

/* Instructions between two looks at the clock and the counters. */
#define HOOK_COUNT 1000

/* Reads a number field of the table at idx, or def when absent. */
static double num_field(lua_State *L, int idx, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, idx, k) != LUA_TNIL) v = (double)lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static void on_deadline(uv_timer_t *h);

void sl_attempt_setup(lua_State *L, sl_task *t, int si, unsigned mask) {
  si = lua_absindex(L, si);
  sl_attempts *a = t->att;
  if (a == NULL) {
    a = calloc(1, sizeof *a);
    if (a == NULL) luaL_error(L, "not enough memory");
    uv_timer_init(t->e->loop, &a->timer);
    a->timer.data = a;
    a->e = t->e;
    t->e->handles_open++;
    t->att = a;
  }
  a->t = t;
  a->attempt = 1;
  a->max = 1;
  a->base = 0.1;
  a->cap = 10.0;
  a->jitter = 0.1;
  a->timeout_ns = 0;
  a->deadline = 0;
  a->instr_limit = 0;
  a->instr_used = 0;
  a->in_fallback = 0;
  a->delay = 0;
  a->opts = mask;
  a->validators = (mask & SL_OPT_VALIDATE) != 0;
  a->fallback = (mask & SL_OPT_FALLBACK) != 0;
  a->cache_on = t->e->cache_all;
  a->cache_hit = 0;
  a->memo = 0;
  a->ttl_ms = 0;
  a->background = 0;
  if (mask & SL_OPT_RETRIES) {
    lua_getfield(L, si, "retries");
    lua_Integer n = lua_tointeger(L, -1);
    if (n < 0) luaL_error(L, "option 'retries' must be a non-negative integer");
    a->max = (int)(n > 1000000 ? 1000000 : n) + 1;
    lua_pop(L, 1);
  }
  if ((mask & SL_OPT_BACKOFF) && lua_getfield(L, si, "backoff") == LUA_TTABLE) {
    int b = lua_gettop(L);
    a->base = num_field(L, b, "base", a->base);
    a->cap = num_field(L, b, "max", a->cap > a->base ? a->cap : a->base);
    a->jitter = num_field(L, b, "jitter", 0);
  }
  if (mask & SL_OPT_BACKOFF) lua_pop(L, 1);
  if (mask & SL_OPT_TIMEOUT) {
    lua_getfield(L, si, "timeout");
    a->timeout_ns = (uint64_t)(lua_tonumber(L, -1) * 1e9);
    lua_pop(L, 1);
  }
  if ((mask & SL_OPT_LIMITS) && lua_getfield(L, si, "limits") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "instructions") != LUA_TNIL)
      a->instr_limit = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (mask & SL_OPT_LIMITS) lua_pop(L, 1);
  if (mask & SL_OPT_CACHE) {
    int ct = lua_getfield(L, si, "cache");
    if (ct == LUA_TBOOLEAN) a->cache_on = a->cache_on || lua_toboolean(L, -1);
    else if (ct == LUA_TTABLE) {
      a->cache_on = 1;
      if (lua_getfield(L, -1, "ttl") != LUA_TNIL)
        a->ttl_ms = (uint64_t)(lua_tonumber(L, -1) * 1000.0 + 0.5);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (mask & SL_OPT_BACKGROUND) {
    int bt = lua_getfield(L, si, "background");
    if (bt == LUA_TSTRING) a->background = 2;
    else if (bt == LUA_TBOOLEAN && lua_toboolean(L, -1)) a->background = 1;
    lua_pop(L, 1);
  }
  t->att_on = 1;
  if (a->timeout_ns > 0 || a->instr_limit > 0) t->guarded = 1;
}

/* Of t and its ancestors, sets the interrupt of every one whose deadline
   has passed or whose work is spent; returns whether t must stop. */
static int check_guards(sl_task *t, int counted) {
  uint64_t now = 0;
  int hit = 0;
  for (sl_task *g = t; g != NULL; g = g->parent) {
    if (g->att_on && !g->att->in_fallback) {
      sl_attempts *a = g->att;
      if (a->instr_limit > 0) {
        a->instr_used += counted;
        if (a->instr_used > a->instr_limit && g->interrupt == SL_INT_NONE)
          g->interrupt = SL_INT_LIMIT;
      }
      if (a->deadline != 0) {
        if (now == 0) now = uv_hrtime();
        if (now >= a->deadline && g->interrupt == SL_INT_NONE)
          g->interrupt = SL_INT_TIMEOUT;
      }
    }
    if (g->interrupt != SL_INT_NONE) hit = 1;
  }
  return hit || (t->run != NULL && t->run->aborting);
}

/*
** The count hook. It runs on the step's coroutine and on coroutines the
** step made (they inherit it). On the step's own coroutine it yields, which
** no pcall can catch; elsewhere it raises, and the step's coroutine yields
** at its own next count.
*/
static void count_hook(lua_State *L, lua_Debug *ar) {
  sl_task *t = sl_sched_running(L);
  (void)ar;
  if (t == NULL || !check_guards(t, HOOK_COUNT)) return;
  if (L == t->co && lua_isyieldable(L)) {
    t->wait = SL_WAIT_INTERRUPT;
    lua_yield(L, 0);
    return;
  }
  luaL_error(L, "the step was interrupted (timeout, limit or abort)");
}

int sl_attempt_memory_refused(void *ud, size_t limit) {
  sl_sched_shared *s = ud;
  sl_task *t = s->current;
  (void)limit;
  if (t == NULL) return 0;   /* the engine's own work is never refused */
  if (t->interrupt == SL_INT_NONE) t->interrupt = SL_INT_MEMORY;
  /* lua_sethook may be called at any moment, even from an allocator. */
  lua_sethook(t->co, count_hook, LUA_MASKCOUNT, 1);
  t->hooked = 1;
  return 1;
}

void sl_attempt_arm(sl_task *t) {
  if (t->att_on && !t->att->in_fallback) {
    sl_attempts *a = t->att;
    a->instr_used = 0;
    if (a->timeout_ns > 0) {
      a->deadline = uv_hrtime() + a->timeout_ns;
      uint64_t ms = (a->timeout_ns + 999999) / 1000000;
      sl_timer_start(&a->timer, on_deadline, ms, 0);
      a->timer_on = 1;
    }
  }
  if (t->guarded) {
    lua_sethook(t->co, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
    t->hooked = 1;
  } else if (t->hooked) {
    lua_sethook(t->co, NULL, 0, 0);
    t->hooked = 0;
  }
}

void sl_attempt_disarm(sl_task *t) {
  if (t->att != NULL && t->att->timer_on) {
    uv_timer_stop(&t->att->timer);
    t->att->timer_on = 0;
  }
  if (t->att != NULL) t->att->deadline = 0;
  if (t->hooked && !t->running) {
    lua_sethook(t->co, NULL, 0, 0);
    t->hooked = 0;
  }
}

/* The deadline of a waiting attempt passed: end it from the loop. */
static void on_deadline(uv_timer_t *h) {
  sl_attempts *a = h->data;
  sl_task *t = a->t;
  a->timer_on = 0;
  if (t->interrupt == SL_INT_NONE) t->interrupt = SL_INT_TIMEOUT;
  sl_dispatch_interrupt(t);
}

/* The delay before attempt n (n >= 2): exponential from base, capped,
   spread by jitter (a fraction: 0.1 is plus or minus 10%). */
static double backoff(sl_attempts *a, int n) {
  double d = a->base * pow(2.0, n - 2);
  if (d > a->cap) d = a->cap;
  if (a->jitter > 0 && d > 0) {
    /* The engine's own generator: no state shared between engines. */
    uint64_t x = a->e->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    a->e->rng = x;
    double r = (double)(x >> 11) / (double)(UINT64_C(1) << 53);
    d *= 1.0 + a->jitter * (2.0 * r - 1.0);
  }
  return d < 0 ? 0 : d;
}

static int retryable(const char *kind) {
  return kind == NULL ||
         (strcmp(kind, "quota") != 0 && strcmp(kind, "cancelled") != 0 &&
          strcmp(kind, "interrupted") != 0 &&
          strcmp(kind, "limit") != 0);
}

int sl_attempt_next(lua_State *L, sl_task *t) {
  sl_attempts *a = t->att;
  sl_run *r = t->run;
  if (a->in_fallback) return SL_NEXT_FINAL;
  const char *kind, *msg, *where;
  sl_error_fields(L, -1, &kind, &msg, &where);
  if (retryable(kind) && a->attempt < a->max) {
    a->attempt++;
    sl_hist_set_attempts(&r->hist, t->hist, a->attempt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->e->ref_ctxs);   /* err ctxs */
    lua_rawgeti(L, -1, t->id);                           /* err ctxs ctx */
    if (kind != NULL && strcmp(kind, "validation") == 0) {
      lua_getfield(L, -3, "message");
      lua_setfield(L, -2, "feedback");
    }
    /* The next attempt starts again from the state as it was before the
       step: drop this attempt's copy. */
    lua_pushnil(L);
    lua_rawseti(L, -2, SL_CTX_STATE);
    lua_pushnil(L);
    lua_rawseti(L, -2, SL_CTX_CHANGES);
    lua_pop(L, 2);
    t->state_on = 0;
    t->sealed = 0;
    a->delay = backoff(a, a->attempt);
    return a->delay > 0 ? SL_NEXT_LATER : SL_NEXT_NOW;
  }
  if (a->fallback) {
    a->in_fallback = 1;
    char why[300];
    snprintf(why, sizeof why, "%s: %s", kind ? kind : "error", msg ? msg : "?");
    sl_hist_set_fallback(&r->hist, t->hist, why);
    return SL_NEXT_FALLBACK;
  }
  return SL_NEXT_FINAL;
}

int sl_attempt_wraps(sl_task *t) {
  if (!t->att_on) return 0;
  return t->att->in_fallback ? 2 : t->att->validators;
}

void sl_attempt_push_interrupt(lua_State *L, sl_task *t) {
  const char *name = t->run && t->hist >= 0 ? t->run->hist.recs[t->hist].name : NULL;
  char msg[200];
  const char *kind = "timeout";
  sl_attempts *a = t->att;
  if (t->interrupt == SL_INT_LIMIT) {
    kind = "limit";
    snprintf(msg, sizeof msg, "the attempt exceeded its limit of %lld Lua instructions",
             (long long)(a ? a->instr_limit : 0));
  } else if (t->interrupt == SL_INT_MEMORY) {
    kind = "limit";
    snprintf(msg, sizeof msg, "the step went past the memory limit of %.1f MB",
             (double)sl_memory_get_limit(L) / (1024.0 * 1024.0));
  } else {
    snprintf(msg, sizeof msg, "the attempt timed out after %g s",
             a ? (double)a->timeout_ns / 1e9 : 0.0);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->e->ref_ctxs);
  lua_rawgeti(L, -1, t->id);
  lua_rawgeti(L, -1, SL_CTX_STEP);
  lua_getfield(L, -1, "where");
  sl_error_push(L, kind, msg, name, lua_tostring(L, -1));
  lua_replace(L, -5);
  lua_pop(L, 3);
}

static void on_attempts_closed(uv_handle_t *h) {
  sl_attempts *a = h->data;
  sl_engine *e = a->e;
  free(a);
  sl_engine_handle_closed(e);
}

void sl_attempt_close(sl_task *t) {
  if (t->att == NULL) return;
  /* The block is freed in the close callback; the engine counts it. */
  uv_close((uv_handle_t *)&t->att->timer, on_attempts_closed);
  t->att = NULL;
}

int sl_attempt_abort(lua_State *L, const char *why) {
  sl_task *t = sl_sched_running(L);
  if (t == NULL || t->run == NULL)
    return luaL_error(L, "sl.abort called outside a step");
  sl_run *r = t->run;
  if (!r->aborting) {
    r->aborting = 1;
    const char *step = t->hist >= 0 ? r->hist.recs[t->hist].name : "?";
    snprintf(r->abort_kind, sizeof r->abort_kind, "cancelled");
    snprintf(r->abort_msg, sizeof r->abort_msg, "%s", why);
    snprintf(r->abort_step, sizeof r->abort_step, "%s", step);
  }
  if (L == t->co && lua_isyieldable(L)) {
    t->wait = SL_WAIT_INTERRUPT;
    return lua_yield(L, 0);
  }
  lua_sethook(t->co, count_hook, LUA_MASKCOUNT, 1);
  t->hooked = 1;
  return luaL_error(L, "the run was aborted: %s", why);
}
