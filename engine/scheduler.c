/*
** The scheduler. A task is a pooled pair of a C record and a Lua coroutine;
** each step execution runs on one. Engine waits (sleep, a child, awaited
** tasks) record why the task waits and yield with a continuation, so no C
** local survives a yield; the event loop's callbacks queue the task, and the
** drain loop resumes it from the top level.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "scheduler.h"
#include "dispatch.h"
#include "run.h"
#include "attempt.h"

/* The registry key of a state's shared record (a full userdata). */
static const char shared_key = 0;

sl_sched_shared *sl_sched_shared_of(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &shared_key) == LUA_TUSERDATA) {
    sl_sched_shared *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
  }
  lua_pop(L, 1);
  sl_sched_shared *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->current = NULL;
  s->engines = 0;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &shared_key);
  return s;
}

sl_task *sl_sched_running(lua_State *L) {
  if (!lua_checkstack(L, 1)) return NULL;
  sl_sched_shared *s = lua_rawgetp(L, LUA_REGISTRYINDEX, &shared_key) == LUA_TUSERDATA
                       ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  return s ? s->current : NULL;
}

/* The pool never hands out more than this many live tasks at once. */
#define MAX_TASKS 10000000

sl_task *sl_task_acquire(lua_State *L, sl_engine *e, sl_task *parent) {
  sl_task *t = e->free_tasks;
  if (t != NULL) {
    e->free_tasks = t->next;
  } else {
    if (e->ntasks >= MAX_TASKS)
      luaL_error(L, "too many live steps (%d)", MAX_TASKS);
    t = calloc(1, sizeof *t);
    if (t == NULL) luaL_error(L, "not enough memory for a new step");
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_threads);   /* threads */
    t->co = lua_newthread(L);                           /* threads co */
    lua_rawseti(L, -2, e->ntasks + 1);                  /* threads */
    lua_pop(L, 1);
    t->id = ++e->ntasks;
    t->e = e;
    uv_timer_init(e->loop, &t->timer);
    t->timer.data = t;
    e->handles_open++;
  }
  t->next = NULL;
  t->parent = parent;
  t->children = NULL;
  t->prev_sib = NULL;
  t->next_sib = NULL;
  t->awaiter = NULL;
  t->wait = SL_WAIT_NONE;
  t->hist = -1;
  t->nargs = 0;
  t->pending = 0;
  t->nstarted = 0;
  t->await_any = 0;
  t->metered = 0;
  t->preset = 0;
  t->state_on = 0;
  t->sealed = 0;
  memset(&t->held, 0, sizeof t->held);
  memset(&t->used, 0, sizeof t->used);
  memset(&t->returned, 0, sizeof t->returned);
  t->att_on = 0;
  t->interrupt = SL_INT_NONE;
  t->guarded = parent != NULL && parent->guarded;
  if (parent != NULL) {
    t->next_sib = parent->children;
    if (parent->children) parent->children->prev_sib = t;
    parent->children = t;
  }
  return t;
}

void sl_task_unlink(sl_task *t) {
  sl_task *p = t->parent;
  if (p == NULL) return;
  if (t->prev_sib) t->prev_sib->next_sib = t->next_sib;
  else p->children = t->next_sib;
  if (t->next_sib) t->next_sib->prev_sib = t->prev_sib;
  t->parent = t->prev_sib = t->next_sib = NULL;
}

static void unqueue(sl_task *t) {
  sl_engine *e = t->e;
  sl_task *prev = NULL;
  for (sl_task *q = e->ready_head; q; prev = q, q = q->next) {
    if (q != t) continue;
    if (prev) prev->next = q->next;
    else e->ready_head = q->next;
    if (e->ready_tail == q) e->ready_tail = prev;
    break;
  }
  t->queued = 0;
  t->next = NULL;
}

void sl_task_release(sl_task *t) {
  sl_engine *e = t->e;
  lua_State *L = t->co;
  if (t->queued) unqueue(t);
  if (t->timer_on) {
    uv_timer_stop(&t->timer);
    t->timer_on = 0;
  }
  sl_attempt_disarm(t);
  t->att_on = 0;
  sl_task_unlink(t);
  /* Forget the ctx, so a ctx kept beyond its step raises instead of
     reaching a task that now runs something else. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_ctxs);       /* ctxs */
  if (lua_rawgeti(L, -1, t->id) == LUA_TTABLE) {        /* ctxs ctx */
    lua_pushnil(L);
    lua_rawseti(L, -2, SL_CTX_TASK);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawseti(L, -2, t->id);
  lua_pop(L, 1);
  /* Resetting a coroutine that failed leaves its error object behind in
     Lua 5.4.4: clear the stack as well, so the next step starts empty. */
  if (lua_status(L) != LUA_OK) lua_resetthread(L);
  lua_settop(L, 0);
  t->run = NULL;
  t->wait = SL_WAIT_NONE;
  /* A pooled task keeps small buffers for the next durable step, not the
     memory of a large output. */
  if (t->sealed_out.cap > 65536) sl_buf_free(&t->sealed_out);
  if (t->sealed_changes.cap > 65536) sl_buf_free(&t->sealed_changes);
  t->next = e->free_tasks;
  e->free_tasks = t;
}

int sl_task_resume(sl_task *t, lua_State *from, int *nres) {
  if (t->preset) {
    /* Nothing to run: the output waits on the stack (a cache hit). */
    t->preset = 0;
    *nres = lua_gettop(t->co);
    return LUA_OK;
  }
  int nargs = t->nargs;
  t->nargs = 0;
  t->wait = SL_WAIT_NONE;
  t->wait_cancel = NULL;
  t->wait_data = NULL;
  sl_sched_shared *shared = t->e->shared;
  sl_task *outer = shared->current;
  shared->current = t;
  t->running = 1;
  t->e->depth++;
  int status = lua_resume(t->co, from, nargs, nres);
  t->e->depth--;
  t->running = 0;
  shared->current = outer;
  return status;
}

void sl_task_wake(sl_task *t, int nargs) {
  sl_engine *e = t->e;
  /* Whatever it waited on is done: a cancel before it resumes must not
     reach a resource that is already released. */
  t->wait_cancel = NULL;
  t->wait_data = NULL;
  t->nargs += nargs;
  if (t->queued) return;
  t->queued = 1;
  t->next = NULL;
  if (e->ready_tail) e->ready_tail->next = t;
  else e->ready_head = t;
  e->ready_tail = t;
}

/* Resumes every queued task, in order, from the engine's main thread. Runs
   under lua_pcall (sl_engine_protect). */
static int drain_p(lua_State *L) {
  sl_engine *e = lua_touserdata(L, 1);
  sl_task *t;
  while ((t = e->ready_head) != NULL) {
    e->ready_head = t->next;
    if (e->ready_head == NULL) e->ready_tail = NULL;
    t->queued = 0;
    t->next = NULL;
    int nres;
    int status = sl_task_resume(t, L, &nres);
    sl_dispatch_resumed(L, t, status, nres);
  }
  return 0;
}

void sl_sched_drain(sl_engine *e) {
  if (e->draining || e->ready_head == NULL) return;
  e->draining = 1;
  while (e->ready_head != NULL) {
    sl_task *first = e->ready_head;
    if (sl_engine_protect(e, drain_p, e) != LUA_OK) {
      /* Engine work itself failed (memory, most likely). The task being
         resumed cannot be trusted to continue: fail its run. */
      if (e->ready_head == first && first->run != NULL) {
        e->ready_head = first->next;
        if (e->ready_head == NULL) e->ready_tail = NULL;
        first->queued = 0;
      }
      if (first->run != NULL) sl_run_abandon(first->run, "error", e->errmsg);
    }
  }
  e->draining = 0;
}

static void on_timer(uv_timer_t *h) {
  sl_task *t = h->data;
  t->timer_on = 0;
  if (t->wait != SL_WAIT_SLEEP && t->wait != SL_WAIT_BACKOFF) return;
  if (t->wait == SL_WAIT_BACKOFF) sl_attempt_arm(t);
  sl_task_wake(t, 0);
  sl_sched_drain(t->e);
}

void sl_task_check_suspend(lua_State *L, sl_task *t) {
  if (L != t->co)
    luaL_error(L, "cannot wait inside a coroutine the step created; "
                  "call ctx methods that wait from the step itself");
  if (!lua_isyieldable(L))
    luaL_error(L, "cannot wait here (inside a metamethod or a C "
                  "callback such as table.sort's comparator)");
}

int sl_task_suspend(lua_State *L, sl_task *t, int wait,
                    lua_KFunction k, lua_KContext kctx) {
  sl_task_check_suspend(L, t);
  t->wait = (unsigned char)wait;
  return lua_yieldk(L, 0, kctx, k);
}

int sl_task_suspend_io(lua_State *L, sl_task *t, sl_wait_cancel cancel,
                       void *data, lua_KFunction k, lua_KContext kctx) {
  sl_task_check_suspend(L, t);
  t->wait_cancel = cancel;
  t->wait_data = data;
  t->wait = SL_WAIT_IO;
  return lua_yieldk(L, 0, kctx, k);
}

int sl_task_sleep(lua_State *L, sl_task *t, double seconds,
                  lua_KFunction k, lua_KContext kctx) {
  uint64_t ms = seconds <= 0 ? 0 : (uint64_t)(seconds * 1000.0 + 0.5);
  sl_task_check_suspend(L, t);
  sl_timer_start(&t->timer, on_timer, ms, 0);
  t->timer_on = 1;
  return sl_task_suspend(L, t, SL_WAIT_SLEEP, k, kctx);
}

void sl_task_cancel(sl_task *t, const char *kind, const char *msg, int quiet) {
  sl_task_stop(t);
  sl_dispatch_cancelled(t, kind, msg, quiet);
}

void sl_task_stop(sl_task *t) {
  while (t->children != NULL)
    sl_task_cancel(t->children, "cancelled", "its parent step ended", 1);
  sl_attempt_disarm(t);
  if (t->timer_on) {
    uv_timer_stop(&t->timer);
    t->timer_on = 0;
  }
  if (t->wait == SL_WAIT_IO && t->wait_cancel != NULL) {
    sl_wait_cancel cancel = t->wait_cancel;
    t->wait_cancel = NULL;
    cancel(t, t->wait_data);
  }
  if (t->queued) unqueue(t);
  /* Closing the coroutine runs its pending to-be-closed variables; their
     errors have nowhere to go, so they are dropped with the coroutine. */
  if (!t->running && lua_status(t->co) == LUA_YIELD) lua_resetthread(t->co);
  if (!t->running) lua_settop(t->co, 0);
  t->wait = SL_WAIT_NONE;
}

sl_task *sl_task_current(lua_State *L, int ctxidx) {
  if (!lua_istable(L, ctxidx))
    luaL_typeerror(L, ctxidx, "ctx");
  if (lua_rawgeti(L, ctxidx, SL_CTX_TASK) != LUA_TLIGHTUSERDATA) {
    lua_pop(L, 1);
    luaL_error(L, "this ctx belongs to a step execution that has ended");
  }
  sl_task *t = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return t;
}

static void on_timer_closed(uv_handle_t *h) {
  sl_task *t = h->data;
  sl_engine *e = t->e;
  sl_buf_free(&t->sealed_out);
  sl_buf_free(&t->sealed_changes);
  free(t);
  sl_engine_handle_closed(e);
}

void sl_sched_close(sl_engine *e) {
  sl_task *t = e->free_tasks;
  e->free_tasks = NULL;
  while (t != NULL) {
    sl_task *next = t->next;
    sl_attempt_close(t);
    uv_close((uv_handle_t *)&t->timer, on_timer_closed);
    t = next;
  }
}

/* Starts t's timer for a backoff delay before its next attempt, whose
   coroutine the dispatcher has primed. */
void sl_task_backoff(sl_task *t, double seconds) {
  uint64_t ms = seconds <= 0 ? 0 : (uint64_t)(seconds * 1000.0 + 0.5);
  sl_timer_start(&t->timer, on_timer, ms, 0);
  t->timer_on = 1;
  t->wait = SL_WAIT_BACKOFF;
}
