/*
** Workers: claiming queued runs from the store and executing them.
**
** A worker looks for work every poll interval, at once when one of its
** runs ends, and within a millisecond when the store says its queue may
** have new work (sl_store_watch_queue: a socket, or a file that changes).
** A look asks the store's writer thread for one run per free slot; the
** writer claims them together (one transaction, so of workers looking at
** once each gets other runs) and the answers come back on the loop, which
** never waits for the store's lock or a round trip to claim. A claimed run
** starts from its last completed step (resume.c); one this worker cannot
** execute (other code, a file it cannot load) goes back to the queue, says
** what it waits for, and is passed over by this worker from then on.
** Stopping ends the claiming; what still runs after the grace period is
** stopped as interrupted, which gives it back to the queue.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "worker.h"
#include "clock.h"
#include "core.h"
#include "writer.h"
#include "lifecycle.h"
#include "owner.h"
#include "resume.h"
#include "run.h"

/* Runs this worker passed over, remembered at most. */
#define MAX_SKIP 256

struct sl_worker {
  sl_host *h;
  char *queue;
  int concurrency;
  int64_t poll_ms, grace_ms;
  int64_t park_after_ms;     /* 0: never */
  int until_idle;
  uv_timer_t tick;           /* looks for work */
  uv_timer_t grace;          /* ends the grace period */
  uv_poll_t poll;            /* the store's descriptor that says "new work" */
  uv_fs_event_t change;      /* or the store's file that changes */
  int polling, watching;
  int open;                  /* handles not yet closed */
  int stopping, freed;
  sl_run **runs;             /* the runs it executes, concurrency of them */
  int nruns;
  char *skip[MAX_SKIP];      /* ids it passed over, a ring */
  int nskip, skip_next;
  sl_worker_stats stats;
  int warned;                /* a claim failure was reported; quiet until one works */
  int claiming;              /* claims asked of the writer, not answered yet */
  int claimed_now;           /* runs claimed since the last look */
};

static void on_tick(uv_timer_t *t);

static void look_soon(sl_worker *w) {
  if (!w->stopping) sl_timer_start(&w->tick, on_tick, 0, (uint64_t)w->poll_ms);
}

/* The store says the queue may have new work: look within a millisecond
   (a burst of changes makes one look). */
static void wake(sl_worker *w) {
  if (w->stopping || w->nruns + w->claiming >= w->concurrency) return;
  if (uv_timer_get_due_in(&w->tick) > 1) sl_timer_start(&w->tick, on_tick, 1, (uint64_t)w->poll_ms);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sl_worker *w = p->data;
  (void)events;
  int rc = status < 0 ? -1 : sl_store_watch_clear(w->h->core.store);
  if (rc == 1) wake(w);
  if (rc < 0) {
    /* The connection went: back to looking every poll interval. */
    uv_poll_stop(&w->poll);
  }
}

static void on_change(uv_fs_event_t *e, const char *name, int events, int status) {
  (void)name;
  (void)events;
  if (status == 0) wake(e->data);
}

static void remember_skip(sl_worker *w, const char *id) {
  char *copy = strdup(id);
  if (copy == NULL) return;
  free(w->skip[w->skip_next]);
  w->skip[w->skip_next] = copy;
  w->skip_next = (w->skip_next + 1) % MAX_SKIP;
  if (w->nskip < MAX_SKIP) w->nskip++;
}

static void on_run_end(sl_run *r, void *ud) {
  sl_worker *w = ud;
  for (int i = 0; i < w->nruns; i++)
    if (w->runs[i] == r) {
      w->runs[i] = w->runs[--w->nruns];
      break;
    }
  w->stats.ended++;
  if (w->stopping && w->nruns == 0) uv_timer_stop(&w->grace);
  look_soon(w);
}

/* Puts a claimed run back in the queue, saying why, and passes it over
   from now on. */
static void pass_over(sl_worker *w, const sl_store_run *row, const char *why) {
  sl_core *c = &w->h->core;
  if (sl_store_run_requeue(c->store, row->id, c->owner, row->epoch, why) != 0)
    fprintf(stderr, "sluice: worker: %s\n", sl_store_errmsg(c->store));
  remember_skip(w, row->id);
  w->stats.passed_over++;
}

typedef struct launch_args {
  sl_worker *w;
  const sl_store_run *row;
  sl_store_replay *rp;       /* taken by the resume */
  char why[400];
  sl_run *run;
} launch_args;

static int launch_p(lua_State *L) {
  launch_args *a = lua_touserdata(L, 1);
  sl_store_replay *rp = a->rp;
  a->rp = NULL;
  a->run = sl_resume_claimed(L, a->w->h, a->row, rp, a->w->park_after_ms, a->why,
                             sizeof a->why);
  return 0;
}

/* Starts the claimed run row from its record rp (taken), or passes it
   over. */
static void start_claimed(sl_worker *w, const sl_store_run *row, sl_store_replay *rp) {
  lua_State *L = w->h->core.L;
  launch_args a;
  memset(&a, 0, sizeof a);
  a.w = w;
  a.row = row;
  a.rp = rp;
  int top = lua_gettop(L);
  lua_pushcfunction(L, launch_p);
  lua_pushlightuserdata(L, &a);
  int status = lua_pcall(L, 1, 0, 0);
  sl_store_replay_free(a.rp);   /* not taken: the resume never started */
  if (status != LUA_OK) {
    /* It cannot run here (its file does not load, say); another worker
       may have what it needs. The run keeps what it completed. */
    char why[400];
    snprintf(why, sizeof why, "a worker that can load its pipeline: %s",
             luaL_tolstring(L, -1, NULL));
    fprintf(stderr, "sluice: worker: run %s: %s\n", row->id, why);
    pass_over(w, row, why);
  } else if (a.run == NULL) {
    fprintf(stderr, "sluice: worker: run %s waits for %s\n", row->id, a.why);
    pass_over(w, row, a.why);
  } else {
    w->runs[w->nruns++] = a.run;
    sl_run_on_end(a.run, on_run_end, w);
  }
  lua_settop(L, top);
}

static void ask_claim(sl_worker *w);

/* A claim answered (on the loop's thread): the run starts, or the worker
   waits for its next look. */
static void on_claimed(void *ud, sl_store_run *row, sl_store_replay *rp, int rc,
                       const char *msg) {
  sl_worker *w = ud;
  sl_core *c = &w->h->core;
  w->claiming--;
  if (row != NULL) {
    w->warned = 0;
    w->stats.claimed++;
    w->claimed_now++;
    if (w->stopping) {
      /* Claimed as the worker stopped: straight back to the queue. */
      sl_store_run_requeue(c->store, row->id, c->owner, row->epoch, NULL);
      w->stats.handed_back++;
      sl_store_replay_free(rp);
    } else {
      start_claimed(w, row, rp);
    }
    sl_store_run_free(row);
    sl_sched_drain(&c->sched);
    if (w->claiming == 0) ask_claim(w);   /* there may be more */
    return;
  }
  if (rc != SL_STORE_ENOTFOUND) {
    /* A locked or unreachable store: said once, tried again at the next
       look. */
    if (!w->warned) fprintf(stderr, "sluice: worker: %s\n", msg ? msg : "the claim failed");
    w->warned = 1;
  }
  if (w->until_idle && w->claiming == 0 && w->claimed_now == 0 && w->nruns == 0)
    sl_worker_stop(w);
}

/* Asks for runs while there are free slots: on the writer's thread when
   there is one (the loop does not wait for the store), else here. */
static void ask_claim(sl_worker *w) {
  sl_core *c = &w->h->core;
  while (!w->stopping && w->nruns + w->claiming < w->concurrency) {
    int64_t now = sl_owner_now_ms();
    if (c->writer != NULL) {
      /* One claim per free slot, answered together by the writer. */
      w->claiming++;
      if (sl_writer_claim(c->writer, w->queue, c->owner, now + c->lease_ms, now,
                          (const char *const *)w->skip, w->nskip, on_claimed, w) == 0) {
        w->claiming--;
        return;
      }
      continue;
    }
    sl_store_run *row;
    sl_store_replay *rp = NULL;
    int rc = sl_store_run_claim_next(c->store, w->queue, c->owner, now + c->lease_ms, now,
                                     (const char *const *)w->skip, w->nskip, &row);
    if (rc == 0 && (rc = sl_store_replay_read(c->store, row->id, &rp)) != 0) {
      sl_store_run_requeue(c->store, row->id, c->owner, row->epoch, NULL);
      sl_store_run_free(row);
    }
    w->claiming++;
    on_claimed(w, rc == 0 ? row : NULL, rp, rc, rc ? sl_store_errmsg(c->store) : NULL);
    if (rc != 0) return;
  }
}

static void on_tick(uv_timer_t *t) {
  sl_worker *w = t->data;
  if (w->stopping) return;
  /* What the store said since the last look is taken here: libpq may have
     read it off the socket already, which then stays quiet. */
  if (w->polling) sl_store_watch_clear(w->h->core.store);
  w->claimed_now = 0;
  if (w->claiming == 0) ask_claim(w);
}

static void on_grace(uv_timer_t *t) {
  sl_worker *w = t->data;
  /* What runs still goes back to the queue from its last completed step. */
  for (int i = w->nruns - 1; i >= 0; i--) {
    if (i >= w->nruns) continue;
    w->stats.handed_back++;
    sl_step_stop_run(w->runs[i], "interrupted",
                     "the worker stopped: handed back to the queue for another worker");
  }
  sl_sched_drain(&w->h->core.sched);
}

sl_worker *sl_worker_start(sl_host *h, const sl_worker_options *o) {
  sl_worker *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->h = h;
  w->queue = strdup(o && o->queue ? o->queue : "default");
  w->concurrency = o && o->concurrency > 0 ? o->concurrency : 1;
  w->poll_ms = o && o->poll_ms > 0 ? o->poll_ms : 200;
  w->grace_ms = o && o->grace_ms >= 0 ? o->grace_ms : 30000;
  w->until_idle = o ? o->until_idle : 0;
  w->park_after_ms = !o || o->park_after_ms == 0 ? 5000
                   : o->park_after_ms < 0 ? 0 : o->park_after_ms;
  w->runs = calloc((size_t)w->concurrency, sizeof *w->runs);
  if (w->queue == NULL || w->runs == NULL) {
    free(w->queue);
    free(w->runs);
    free(w);
    return NULL;
  }
  uv_timer_init(h->core.loop, &w->tick);
  uv_timer_init(h->core.loop, &w->grace);
  w->tick.data = w->grace.data = w->poll.data = w->change.data = w;
  w->open = 2;
  sl_handles_opened(h->core.handles);
  sl_handles_opened(h->core.handles);
  /* Woken by the store when it can say there is work; the poll interval
     stays, for runs whose owner died (no one says so) and as a fallback. */
  sl_store_watch wt;
  if (sl_store_watch_queue(h->core.store, w->queue, &wt) == 0) {
    if (wt.fd >= 0 && uv_poll_init_socket(h->core.loop, &w->poll, wt.fd) == 0) {
      w->polling = 1;
      w->open++;
      sl_handles_opened(h->core.handles);
      uv_poll_start(&w->poll, UV_READABLE, on_poll);
    } else if (wt.path[0] != '\0') {
      uv_fs_event_init(h->core.loop, &w->change);
      w->open++;
      sl_handles_opened(h->core.handles);
      w->watching = uv_fs_event_start(&w->change, on_change, wt.path, 0) == 0;
    }
  }
  look_soon(w);
  return w;
}

void sl_worker_stop(sl_worker *w) {
  if (w->stopping) return;
  w->stopping = 1;
  uv_timer_stop(&w->tick);
  if (w->polling) uv_poll_stop(&w->poll);
  if (w->watching) uv_fs_event_stop(&w->change);
  if (w->nruns > 0) sl_timer_start(&w->grace, on_grace, (uint64_t)w->grace_ms, 0);
}

int sl_worker_done(const sl_worker *w) {
  return w->stopping && w->nruns == 0 && w->claiming == 0;
}

void sl_worker_get_stats(const sl_worker *w, sl_worker_stats *out) {
  *out = w->stats;
  out->running = w->nruns;
}

static void on_closed(uv_handle_t *hd) {
  sl_worker *w = hd->data;
  sl_handles *handles = w->h->core.handles;
  if (--w->open > 0) {
    sl_handles_closed(handles);
    return;
  }
  for (int i = 0; i < MAX_SKIP; i++) free(w->skip[i]);
  free(w->queue);
  free(w->runs);
  free(w);
  sl_handles_closed(handles);
}

void sl_worker_free(sl_worker *w) {
  if (w == NULL || w->freed) return;
  w->freed = 1;
  for (int i = 0; i < w->nruns; i++) sl_run_on_end(w->runs[i], NULL, NULL);
  w->nruns = 0;
  uv_close((uv_handle_t *)&w->tick, on_closed);
  uv_close((uv_handle_t *)&w->grace, on_closed);
  if (w->polling) uv_close((uv_handle_t *)&w->poll, on_closed);
  else if (w->change.loop != NULL) uv_close((uv_handle_t *)&w->change, on_closed);
}
