/*
** Host kinds: step kinds a host implements in C (sl_engine_kind). A step
** of one hands its input, as JSON, to the host's function with a handle;
** the host completes it then or later (sl_step_complete, sl_step_fail).
** Meanwhile the step waits as it would on a process or a request, so its
** timeout, retries, budget and durability apply as to any step; a step
** that ends first (its timeout, its run cancelled, its engine freed) is
** cancelled, and the host learns so from the code its completion returns.
**
** A handle is not a pointer into memory the engine frees: it names a slot
** of a table and the slot's generation, so a handle completed already, or
** never given, is refused rather than followed. A slot is reused once the
** host has completed or failed its handle, whatever the step did.
*/
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "hostkind.h"
#include "ctx.h"
#include "error.h"
#include "lifecycle.h"
#include "protect.h"
#include "scheduler.h"
#include "value.h"

enum { SLOT_FREE, SLOT_PENDING, SLOT_CALLING, SLOT_DONE, SLOT_CANCELLED };

typedef struct slot {
  uint32_t gen;            /* bumped each time the slot is let go */
  int state;               /* SLOT_* */
  sl_exec *x;              /* the waiting step, while it waits */
  sl_core *core;
  char *name;              /* the kind's name, for messages */
  int ok;                  /* SLOT_DONE during the call: the outcome */
  char *text;              /* its output JSON or its message */
} slot;

/* One table for the process, for engines on any thread. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static slot *slots;
static uint32_t nslots, free_hint;

#define HANDLE_BITS 24     /* the slot index; the generation above it */

static sl_step_handle *handle_of(uint32_t i) {
  return (sl_step_handle *)(uintptr_t)(((uint64_t)slots[i].gen << HANDLE_BITS) | (i + 1));
}

_Static_assert(sizeof(uintptr_t) >= 8, "a handle holds a slot index and a 32-bit generation");

/* The slot h names, locked, or NULL (lock released) for a stale handle. */
static slot *slot_of(const sl_step_handle *h) {
  uint64_t v = (uint64_t)(uintptr_t)h;
  uint32_t i = (uint32_t)(v & ((UINT64_C(1) << HANDLE_BITS) - 1));
  uint32_t gen = (uint32_t)(v >> HANDLE_BITS);
  pthread_mutex_lock(&lock);
  if (i == 0 || i > nslots || slots[i - 1].state == SLOT_FREE || slots[i - 1].gen != gen) {
    pthread_mutex_unlock(&lock);
    return NULL;
  }
  return &slots[i - 1];
}

/* Takes a free slot (locked by the caller); returns its index or -1. */
static int64_t take_slot(void) {
  for (uint32_t n = 0; n < nslots; n++) {
    uint32_t i = (free_hint + n) % nslots;
    if (slots[i].state == SLOT_FREE) {
      free_hint = i + 1;
      return i;
    }
  }
  if (nslots >= (1u << HANDLE_BITS) - 1) return -1;
  uint32_t cap = nslots ? nslots * 2 : 64;
  slot *s = realloc(slots, cap * sizeof *s);
  if (s == NULL) return -1;
  memset(s + nslots, 0, (cap - nslots) * sizeof *s);
  slots = s;
  uint32_t i = nslots;
  nslots = cap;
  return i;
}

static void let_go(slot *s) {
  free(s->text);
  s->text = NULL;
  s->x = NULL;
  s->state = SLOT_FREE;
  s->gen++;
}

/* The step's wait ended first (timeout, cancel, engine freed). */
static void on_cancel(sl_task *t, void *data) {
  (void)t;
  pthread_mutex_lock(&lock);
  slot *s = &slots[(uintptr_t)data];
  s->x = NULL;
  s->state = SLOT_CANCELLED;
  pthread_mutex_unlock(&lock);
}

static int hostkind_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  if (!lua_toboolean(L, -2)) return lua_error(L);
  return 1;
}

/* Pushes the outcome onto L: true and the output, or false and an error
   table. A malformed output fails the step, naming the kind. */
static void push_outcome(lua_State *L, const char *name, int ok, const char *text) {
  if (ok) {
    if (sl_json_decode(L, text, strlen(text)) == 0) {    /* output */
      lua_pushboolean(L, 1);
      lua_insert(L, -2);                                  /* true output */
      return;
    }
    lua_pushfstring(L, "host kind '%s' completed with malformed JSON: %s", name,
                    lua_tostring(L, -1));
    lua_remove(L, -2);                                    /* message */
  } else {
    lua_pushfstring(L, "host kind '%s': %s", name, text); /* message */
  }
  sl_error_push(L, "error", lua_tostring(L, -1), NULL, NULL);
  lua_remove(L, -2);                                      /* error */
  lua_pushboolean(L, 0);
  lua_insert(L, -2);                                      /* false error */
}

/* The kind's handler: (step, input, ctx), upvalues: the function and its
   ud as light userdata, and the kind's name. */
static int hostkind_call(lua_State *L) {
  sl_kind_fn fn = (sl_kind_fn)(uintptr_t)lua_touserdata(L, lua_upvalueindex(1));
  void *ud = lua_touserdata(L, lua_upvalueindex(2));
  const char *name = lua_tostring(L, lua_upvalueindex(3));
  sl_exec *x = sl_ctx_check(L, 3);
  sl_task_check_suspend(L, &x->task);
  sl_buf in;
  sl_buf_init(&in);
  char err[200];
  if (sl_json_encode(L, 2, &in, 0, err, sizeof err) != 0) {
    sl_buf_free(&in);
    return luaL_error(L, "host kind '%s': its input cannot be given as JSON: %s", name, err);
  }
  char *nm = strdup(name);
  pthread_mutex_lock(&lock);
  int64_t i = nm ? take_slot() : -1;
  if (i < 0) {
    pthread_mutex_unlock(&lock);
    free(nm);
    sl_buf_free(&in);
    return luaL_error(L, "not enough memory for a host kind step");
  }
  slot *s = &slots[i];
  s->state = SLOT_CALLING;
  s->x = x;
  s->core = sl_core_of(x);
  free(s->name);
  s->name = nm;
  sl_step_handle *h = handle_of((uint32_t)i);
  pthread_mutex_unlock(&lock);
  fn(h, in.data ? in.data : "null", ud);
  sl_buf_free(&in);
  pthread_mutex_lock(&lock);
  s = &slots[i];
  if (s->state == SLOT_DONE) {
    /* Completed during the call: no wait. */
    int ok = s->ok;
    char *text = s->text;
    s->text = NULL;
    let_go(s);
    pthread_mutex_unlock(&lock);
    lua_settop(L, 3);
    push_outcome(L, name, ok, text ? text : "null");
    free(text);
    return hostkind_k(L, LUA_OK, 0);
  }
  s->state = SLOT_PENDING;
  pthread_mutex_unlock(&lock);
  return sl_task_suspend_io(L, &x->task, on_cancel, (void *)(uintptr_t)i, hostkind_k, 0);
}

void sl_hostkind_push(lua_State *L, const char *name, sl_kind_fn fn, void *ud) {
  lua_pushlightuserdata(L, (void *)(uintptr_t)fn);
  lua_pushlightuserdata(L, ud);
  lua_pushstring(L, name);
  lua_pushcclosure(L, hostkind_call, 3);
}

/* Hands a waiting step its outcome: built on the engine's main thread
   under a protected call (a memory error is caught, not a panic), then
   moved to the step's coroutine. */
typedef struct deliver_args {
  sl_exec *x;
  const char *name, *text;
  int ok;
} deliver_args;

static int deliver_p(lua_State *L) {
  deliver_args *a = lua_touserdata(L, 1);
  lua_State *co = a->x->task.co;
  if (!lua_checkstack(co, 2)) return luaL_error(L, "not enough memory");
  lua_settop(L, 0);
  push_outcome(L, a->name, a->ok, a->text);
  lua_xmove(L, co, 2);
  return 0;
}

/* Ends h's step with ok and text (output JSON or message). */
static int complete(sl_step_handle *h, int ok, const char *text) {
  slot *s = slot_of(h);
  if (s == NULL) return SL_EINVAL;   /* completed already, or no handle */
  if (s->state == SLOT_CANCELLED) {
    let_go(s);
    pthread_mutex_unlock(&lock);
    return SL_ECANCELLED;
  }
  if (s->state == SLOT_CALLING) {
    /* From inside the kind's function: the handler returns it. */
    char *copy = strdup(text);
    if (copy == NULL) {
      pthread_mutex_unlock(&lock);
      return SL_ENOMEM;
    }
    s->ok = ok;
    s->text = copy;
    s->state = SLOT_DONE;
    pthread_mutex_unlock(&lock);
    return SL_OK;
  }
  if (s->state != SLOT_PENDING) {
    pthread_mutex_unlock(&lock);
    return SL_EINVAL;
  }
  sl_exec *x = s->x;
  sl_core *c = s->core;
  if (c->sched.depth > 0 || c->sched.shared->current != NULL) {
    /* From inside a step (of this engine or another on its state): the
       handle stays pending. */
    pthread_mutex_unlock(&lock);
    return SL_EBUSY;
  }
  char name[128];
  snprintf(name, sizeof name, "%s", s->name ? s->name : "?");
  let_go(s);
  pthread_mutex_unlock(&lock);
  deliver_args a = {x, name, text, ok};
  x->task.wait_cancel = NULL;   /* done: a cancel before it resumes stops nothing */
  if (sl_protect(c->L, deliver_p, &a, c->errmsg, sizeof c->errmsg) != LUA_OK) {
    /* Not even the outcome fits in memory: the run cannot go on. */
    sl_step_stop_run(x->run, "error", c->errmsg);
    sl_sched_drain(&c->sched);
    return SL_ENOMEM;
  }
  sl_task_wake(&x->task, 2);
  sl_sched_drain(&c->sched);
  return SL_OK;
}

int sl_step_complete(sl_step_handle *h, const char *output_json) {
  if (output_json == NULL) output_json = "null";
  return complete(h, 1, output_json);
}

int sl_step_fail(sl_step_handle *h, const char *message) {
  return complete(h, 0, message ? message : "failed");
}

int sl_step_cancelled(const sl_step_handle *h) {
  slot *s = slot_of(h);
  if (s == NULL) return SL_EINVAL;
  int cancelled = s->state == SLOT_CANCELLED;
  pthread_mutex_unlock(&lock);
  return cancelled;
}
