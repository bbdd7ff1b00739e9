/*
** The virtual clock (clock.h): waits that take no time, for tests of
** pipelines (sluice.testing).
*/
#include <stdint.h>
#include <stdlib.h>

#include <uv.h>

#include "clock.h"

/*
** Its timers are real libuv timers started
** far in the future, so that uv_is_active, uv_timer_stop and uv_close
** treat them as ever; the queue here says when each is due on the virtual
** clock. A prepare handle, run before each time the loop would wait, jumps
** the clock to the earliest due timer and restarts that one to fire at
** once, but only when the loop has nothing else to do: no real timer
** due now, no request and no other active handle that keeps the loop alive
** (a process, a socket), so time stands still while real I/O is in flight.
** Timers fire one per turn of the loop, in the order of their due times
** and, among equals, of their starts: the same run always sees the same
** order. The queue holds handle pointers only; an entry is believed only
** while uv_walk still finds its handle active, so a closed and freed
** timer is dropped without being touched.
*/
uint64_t sl_clock_skew_ns = 0;
uv_loop_t *sl_clock_virtual_loop = NULL;

/* A real timer backing a virtual one waits this long (some 35 years). */
#define VIRTUAL_FAR_MS (UINT64_C(1) << 40)

typedef struct {
  uv_timer_t *h;
  uv_timer_cb cb;
  uint64_t due_ms;    /* on sl_now's clock */
  uint64_t seq;       /* order of starts, for equal due times */
  int live;           /* found active by the last walk */
} vtimer;

static struct {
  vtimer *q;
  size_t n, cap;
  uint64_t seq;
  uv_prepare_t *jump;
} vclock;

static void vclock_forget(uv_timer_t *h) {
  for (size_t i = 0; i < vclock.n; i++)
    if (vclock.q[i].h == h) vclock.q[i--] = vclock.q[--vclock.n];
}

int sl_clock_timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms) {
  vclock_forget(h);
  uv_update_time(h->loop);
  if (ms == 0) return uv_timer_start(h, cb, 0, 0);
  if (vclock.n == vclock.cap) {
    size_t cap = vclock.cap ? vclock.cap * 2 : 16;
    vtimer *q = realloc(vclock.q, cap * sizeof *q);
    if (q == NULL) return uv_timer_start(h, cb, ms + 1, 0);   /* real time, then */
    vclock.q = q;
    vclock.cap = cap;
  }
  int rc = uv_timer_start(h, cb, VIRTUAL_FAR_MS, 0);
  if (rc != 0) return rc;
  vclock.q[vclock.n++] = (vtimer){h, cb, sl_now() / 1000000u + ms, vclock.seq++, 0};
  return 0;
}

typedef struct {
  uv_handle_t *self;
  int busy;
} vwalk;

static void vclock_walk_cb(uv_handle_t *h, void *arg) {
  vwalk *w = arg;
  if (h == w->self || !uv_is_active(h)) return;
  if (h->type == UV_TIMER) {
    int virtual = 0;
    for (size_t i = 0; i < vclock.n; i++)
      if ((uv_handle_t *)vclock.q[i].h == h) vclock.q[i].live = virtual = 1;
    /* A real timer due now goes first. */
    if (!virtual && uv_timer_get_due_in((uv_timer_t *)h) == 0) w->busy = 1;
  } else if (uv_has_ref(h)) {
    w->busy = 1;
  }
}

/* Marks the entries whose timers are still active, drops the others, and
   tells whether the loop has anything else to do: a real timer due now, a
   request, or an active handle other than a timer that keeps it alive. */
static int vclock_sweep(uv_loop_t *loop, uv_handle_t *self) {
  vwalk w = {self, 0};
  for (size_t i = 0; i < vclock.n; i++) vclock.q[i].live = 0;
  uv_walk(loop, vclock_walk_cb, &w);
  for (size_t i = 0; i < vclock.n; i++)
    if (!vclock.q[i].live) vclock.q[i--] = vclock.q[--vclock.n];
  return w.busy || loop->active_reqs.count > 0;
}

static void on_jump(uv_prepare_t *p) {
  uv_loop_t *loop = p->loop;
  if (vclock.n == 0 || vclock_sweep(loop, (uv_handle_t *)p)) return;
  size_t best = vclock.n;
  int any_ref = 0;
  for (size_t i = 0; i < vclock.n; i++) {
    vtimer *t = &vclock.q[i];
    if (uv_has_ref((uv_handle_t *)t->h)) any_ref = 1;
    if (best == vclock.n || t->due_ms < vclock.q[best].due_ms ||
        (t->due_ms == vclock.q[best].due_ms && t->seq < vclock.q[best].seq))
      best = i;
  }
  /* Timers that do not keep the loop alive do not move time either. */
  if (best == vclock.n || !any_ref) return;
  vtimer t = vclock.q[best];
  vclock.q[best] = vclock.q[--vclock.n];
  uint64_t now_ms = sl_now() / 1000000u;
  if (t.due_ms > now_ms) sl_clock_skew_ns += (t.due_ms - now_ms) * 1000000u;
  uv_update_time(loop);
  uv_timer_start(t.h, t.cb, 0, 0);
}

static void on_jump_closed(uv_handle_t *h) {
  free(h);
}

int sl_clock_set_virtual(uv_loop_t *loop, int on) {
  if (on) {
    if (sl_clock_virtual_loop == loop) return 0;
    if (sl_clock_virtual_loop != NULL) return UV_EBUSY;
    uv_prepare_t *p = malloc(sizeof *p);
    if (p == NULL) return UV_ENOMEM;
    uv_prepare_init(loop, p);
    uv_prepare_start(p, on_jump);
    uv_unref((uv_handle_t *)p);
    vclock.jump = p;
    sl_clock_virtual_loop = loop;
    return 0;
  }
  if (sl_clock_virtual_loop != loop) return 0;
  /* The timers still waiting wait out the rest of their time for real. */
  vclock_sweep(loop, (uv_handle_t *)vclock.jump);
  uint64_t now_ms = sl_now() / 1000000u;
  uv_update_time(loop);
  for (size_t i = 0; i < vclock.n; i++) {
    vtimer *t = &vclock.q[i];
    uint64_t left = t->due_ms > now_ms ? t->due_ms - now_ms : 0;
    uv_timer_start(t->h, t->cb, left > 0 ? left + 1 : 0, 0);
  }
  vclock.n = 0;
  free(vclock.q);
  vclock.q = NULL;
  vclock.cap = 0;
  uv_close((uv_handle_t *)vclock.jump, on_jump_closed);
  vclock.jump = NULL;
  sl_clock_virtual_loop = NULL;
  return 0;
}

int sl_clock_advance(uv_loop_t *loop, uint64_t ns) {
  if (loop == NULL || loop != sl_clock_virtual_loop) return UV_EINVAL;
  sl_clock_skew_ns += ns;
  return 0;
}
