/*
** The scheduler. A task is a pooled pair of a C record and a Lua coroutine.
** Waits record why the task waits and yield with a continuation, so no C
** local survives a yield; the event loop's callbacks queue the task, and
** the drain loop resumes it from the top level and tells the layer above.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "scheduler.h"
#include "clock.h"
#include "protect.h"

/* The pool never hands out more than this many live tasks at once. */
#define MAX_TASKS 10000000

/* The registry key of a state's shared record (a full userdata). */
static const char shared_key = 0;

sl_sched_shared *sl_sched_shared_of(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &shared_key) == LUA_TUSERDATA) {
    sl_sched_shared *sh = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return sh;
  }
  lua_pop(L, 1);
  sl_sched_shared *sh = lua_newuserdatauv(L, sizeof *sh, 0);
  sh->current = NULL;
  sh->engines = 0;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &shared_key);
  return sh;
}

sl_task *sl_sched_running(lua_State *L) {
  if (!lua_checkstack(L, 1)) return NULL;
  sl_sched_shared *sh = lua_rawgetp(L, LUA_REGISTRYINDEX, &shared_key) == LUA_TUSERDATA
                        ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  return sh ? sh->current : NULL;
}

/* Before the loop waits for anything, the layer above finishes what it
   batched. */
static void on_idle(uv_prepare_t *h) {
  sl_sched *s = h->data;
  s->hooks->idle(s);
}

static void on_idle_closed(uv_handle_t *h) {
  sl_sched *s = h->data;
  sl_handles_closed(s->handles);
}

void sl_sched_init(sl_sched *s, lua_State *L, uv_loop_t *loop,
                   sl_handles *handles, size_t task_size,
                   const sl_sched_hooks *hooks) {
  memset(s, 0, sizeof *s);
  s->L = L;
  s->loop = loop;
  s->handles = handles;
  s->hooks = hooks;
  s->task_size = task_size < sizeof(sl_task) ? sizeof(sl_task) : task_size;
  s->shared = sl_sched_shared_of(L);
  lua_newtable(L);
  s->ref_threads = luaL_ref(L, LUA_REGISTRYINDEX);
  if (hooks->idle != NULL) {
    uv_prepare_init(loop, &s->idle);
    s->idle.data = s;
    sl_handles_opened(handles);
    uv_prepare_start(&s->idle, on_idle);
    uv_unref((uv_handle_t *)&s->idle);
  }
}

sl_task *sl_task_acquire(lua_State *L, sl_sched *s, sl_task *parent) {
  sl_task *t = s->free_tasks;
  if (t != NULL) {
    s->free_tasks = t->next;
    s->nfree--;
  } else {
    if (s->ntasks >= MAX_TASKS)
      luaL_error(L, "too many live steps (%d)", MAX_TASKS);
    t = calloc(1, s->task_size);
    if (t == NULL) luaL_error(L, "not enough memory for a new step");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_threads);   /* threads */
    t->co = lua_newthread(L);                           /* threads co */
    t->id = luaL_ref(L, -2);                            /* threads */
    lua_pop(L, 1);
    t->s = s;
    uv_timer_init(s->loop, &t->timer);
    t->timer.data = t;
    sl_handles_opened(s->handles);
    s->ntasks++;
  }
  t->next = t->prev = NULL;
  t->parent = parent;
  t->children = NULL;
  t->prev_sib = t->next_sib = NULL;
  t->wait = SL_WAIT_NONE;
  t->wait_cancel = NULL;
  t->wait_data = NULL;
  t->nargs = 0;
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

/* Takes t out of the ready queue. */
static void unqueue(sl_task *t) {
  sl_sched *s = t->s;
  if (t->prev) t->prev->next = t->next;
  else s->ready_head = t->next;
  if (t->next) t->next->prev = t->prev;
  else s->ready_tail = t->prev;
  t->next = t->prev = NULL;
  t->queued = 0;
}

void sl_task_release(sl_task *t) {
  sl_sched *s = t->s;
  lua_State *co = t->co;
  if (t->queued) unqueue(t);
  uv_timer_stop(&t->timer);   /* nothing when it is not running */
  sl_task_unlink(t);
  /* Resetting a coroutine that failed leaves its error object behind in
     Lua 5.4.4: clear the stack as well, so the next step starts empty. */
  if (lua_status(co) != LUA_OK) lua_resetthread(co);
  if (lua_gettop(co) != 0) lua_settop(co, 0);
  t->wait = SL_WAIT_NONE;
  t->next = s->free_tasks;
  s->free_tasks = t;
  s->nfree++;
}

int sl_task_resume(sl_task *t, lua_State *from, int *nres) {
  int nargs = t->nargs;
  sl_sched *s = t->s;
  t->nargs = 0;
  t->wait = SL_WAIT_NONE;
  t->wait_cancel = NULL;
  t->wait_data = NULL;
  sl_task *outer = s->shared->current;
  s->shared->current = t;
  t->running = 1;
  s->depth++;
  int status = lua_resume(t->co, from, nargs, nres);
  s->depth--;
  t->running = 0;
  s->shared->current = outer;
  return status;
}

void sl_task_wake(sl_task *t, int nargs) {
  sl_sched *s = t->s;
  /* Whatever it waited on is done: a stop before it resumes must not reach
     a resource that is already released. */
  t->wait_cancel = NULL;
  t->wait_data = NULL;
  t->nargs += nargs;
  if (t->queued) return;
  t->queued = 1;
  t->next = NULL;
  t->prev = s->ready_tail;
  if (s->ready_tail) s->ready_tail->next = t;
  else s->ready_head = t;
  s->ready_tail = t;
}

/* Resumes every queued task, in order, from the main thread. Runs under a
   protected call. */
static int drain_p(lua_State *L) {
  sl_sched *s = lua_touserdata(L, 1);
  sl_task *t;
  while ((t = s->ready_head) != NULL) {
    unqueue(t);
    int nres;
    int status = sl_task_resume(t, L, &nres);
    s->hooks->resumed(L, t, status, nres);
  }
  return 0;
}

void sl_sched_drain(sl_sched *s) {
  if (s->draining || s->ready_head == NULL) return;
  s->draining = 1;
  while (s->ready_head != NULL) {
    sl_task *first = s->ready_head;
    char err[1024];
    if (sl_protect(s->L, drain_p, s, err, sizeof err) != LUA_OK) {
      /* The engine's own work failed (memory, most likely). The task
         being resumed cannot be trusted to go on. */
      if (first->queued) unqueue(first);
      s->hooks->failed(first, err);
    }
  }
  s->draining = 0;
}

static int poke_p(lua_State *L) {
  sl_task *t = lua_touserdata(L, 1);
  t->s->hooks->resumed(L, t, LUA_YIELD, 0);
  return 0;
}

void sl_task_poke(sl_task *t) {
  sl_sched *s = t->s;
  if (t->running) return;   /* its own resumer will look at it */
  char err[1024];
  if (sl_protect(s->L, poke_p, t, err, sizeof err) != LUA_OK) s->hooks->failed(t, err);
  sl_sched_drain(s);
}

static void on_timer(uv_timer_t *h) {
  sl_task *t = h->data;
  if (t->wait == SL_WAIT_SLEEP) {
    sl_task_wake(t, 0);
  } else if (t->wait == SL_WAIT_BACKOFF) {
    t->s->hooks->backoff_over(t);
    sl_task_wake(t, 0);
  } else {
    return;
  }
  sl_sched_drain(t->s);
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

static uint64_t to_ms(double seconds) {
  return seconds <= 0 ? 0 : (uint64_t)(seconds * 1000.0 + 0.5);
}

int sl_task_sleep(lua_State *L, sl_task *t, double seconds,
                  lua_KFunction k, lua_KContext kctx) {
  sl_task_check_suspend(L, t);
  sl_timer_start(&t->timer, on_timer, to_ms(seconds), 0);
  return sl_task_suspend(L, t, SL_WAIT_SLEEP, k, kctx);
}

int sl_task_park(lua_State *L, sl_task *t, double seconds,
                 lua_KFunction k, lua_KContext kctx) {
  sl_task_check_suspend(L, t);
  if (seconds >= 0) sl_timer_start(&t->timer, on_timer, to_ms(seconds), 0);
  t->parked = SL_PARK_WAITING;
  return sl_task_suspend(L, t, SL_WAIT_SLEEP, k, kctx);
}

int sl_task_unpark(sl_task *t) {
  if (t->parked != SL_PARK_WAITING || t->wait != SL_WAIT_SLEEP) return 0;
  t->parked = SL_PARK_GRANTED;
  sl_timer_start(&t->timer, on_timer, 0, 0);
  return 1;
}

void sl_task_backoff(sl_task *t, double seconds) {
  sl_timer_start(&t->timer, on_timer, to_ms(seconds), 0);
  t->wait = SL_WAIT_BACKOFF;
}

void sl_task_stop(sl_task *t) {
  while (t->children != NULL)
    sl_task_cancel(t->children, "cancelled", "its parent step ended", 1);
  t->s->hooks->stopping(t);
  uv_timer_stop(&t->timer);   /* nothing when it is not running */
  if (t->wait == SL_WAIT_IO && t->wait_cancel != NULL) {
    sl_wait_cancel cancel = t->wait_cancel;
    t->wait_cancel = NULL;
    cancel(t, t->wait_data);
  }
  if (t->queued) unqueue(t);
  /* Closing the coroutine runs its pending to-be-closed variables; their
     errors have nowhere to go, so they are dropped with the coroutine. */
  if (!t->running) {
    if (lua_status(t->co) == LUA_YIELD) lua_resetthread(t->co);
    lua_settop(t->co, 0);
  }
  t->wait = SL_WAIT_NONE;
  t->parked = SL_PARK_NONE;
}

void sl_task_cancel(sl_task *t, const char *kind, const char *msg, int quiet) {
  sl_task_stop(t);
  t->s->hooks->cancelled(t, kind, msg, quiet);
}

/* Frees a pooled task once its timer has closed. */
static void on_timer_closed(uv_handle_t *h) {
  sl_task *t = h->data;
  sl_handles *handles = t->s->handles;
  free(t);
  sl_handles_closed(handles);
}

/* Closes the pooled task t: its coroutine is let go, its block freed when
   its timer has closed. */
static void close_task(sl_sched *s, sl_task *t) {
  lua_State *L = s->L;
  s->hooks->forget(t);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_threads);
  luaL_unref(L, -1, t->id);
  lua_pop(L, 1);
  s->ntasks--;
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
}

void sl_sched_trim(sl_sched *s, int keep) {
  while (s->nfree > keep && s->free_tasks != NULL) {
    sl_task *t = s->free_tasks;
    s->free_tasks = t->next;
    s->nfree--;
    close_task(s, t);
  }
}

void sl_sched_close(sl_sched *s) {
  sl_sched_trim(s, 0);
  if (s->hooks->idle != NULL && !uv_is_closing((uv_handle_t *)&s->idle))
    uv_close((uv_handle_t *)&s->idle, on_idle_closed);
  luaL_unref(s->L, LUA_REGISTRYINDEX, s->ref_threads);
  s->ref_threads = LUA_NOREF;
}
