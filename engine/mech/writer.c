/*
** The writer thread. Writes are queued as self-contained copies (one
** allocation each: the record, then its strings); the thread takes the
** whole queue at once, applies it to its own store connection in one
** transaction, commits, and queues an event for the loop. The loop side is
** a uv_async_t, referenced only while writes wait for an answer, so a loop
** whose runs wait for their records keeps running and an idle one can end.
*/
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "writer.h"

/* The writer commits by itself once this many writes have queued. */
#define KICK_AT 256
/* Writes wait at most this long for a kick: a step that computes for a
   long time without waiting still has what finished before it kept. */
#define COMMIT_AFTER_NS 5000000LL
/* Past this many bytes queued, the loop waits for the writer: memory stays
   bounded when the disk is slower than the steps. */
#define MAX_QUEUED ((size_t)64 << 20)

enum { OP_RUN_BEGIN, OP_CHECKPOINT, OP_WAIT, OP_RENEW, OP_FINISH, OP_CACHE_PUT,
       OP_CACHE_HIT, OP_PRUNE, OP_CLAIM, OP_CACHE_GET };

typedef struct renew_rec { const char *id, *owner; int64_t epoch, lease; } renew_rec;
typedef struct finish_rec {
  const char *id, *owner, *status, *output, *error, *usage;
  int64_t epoch, ended;
  int release;
} finish_rec;
typedef struct prune_rec { const char *pipeline; int64_t before, keep; } prune_rec;
typedef struct get_rec {
  unsigned char key[SL_STORE_KEYLEN];
  int64_t now;
  sl_writer_get_cb cb;
  void *ud;
} get_rec;
typedef struct claim_rec {
  const char *queue, *owner;
  const char *skip;        /* the ids to pass over, each ending in '\n' */
  int64_t lease, now;
  sl_writer_claim_cb cb;
  void *ud;
} claim_rec;
typedef struct cache_rec {
  const char *step, *value;
  unsigned char key[SL_STORE_KEYLEN];
  int64_t now, expires;
} cache_rec;

typedef struct op {
  struct op *next;
  int type;
  uint64_t seq;
  size_t bytes;
  union {
    sl_store_run run;
    sl_store_checkpoint cp;
    sl_store_wait wait;
    renew_rec renew;
    finish_rec fin;
    cache_rec cache;
    prune_rec prune;
    claim_rec claim;
    get_rec get;
  } u;
  char text[];
} op;

typedef struct ev {
  struct ev *next;
  sl_writer_event e;
  /* A claim's answer, handed to its own callback instead of cb. */
  sl_writer_claim_cb claim_cb;
  void *claim_ud;
  sl_store_run *row;
  sl_store_replay *rp;
  int rc;
  /* A cache lookup's answer, the same way: the value in text. */
  sl_writer_get_cb get_cb;
  void *get_ud;
  size_t vlen;
  char text[];
} ev;

struct sl_writer {
  uv_async_t async;          /* first: the handle's data is the writer */
  sl_handles *handles;
  sl_store *store;           /* the writer's own connection */
  sl_writer_cb cb;
  void *ud;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work;       /* the thread waits for writes or a kick */
  pthread_cond_t answered_cv;/* sync waits for answers */
  pthread_cond_t space;      /* the loop waits for room in the queue */
  op *head, *tail;           /* queued, oldest first */
  int nqueued;
  size_t queued_bytes;
  int kicked, stop;
  int64_t first_at;          /* when the oldest queued write came (monotonic ns) */
  uint64_t seq;              /* the last write numbered (loop thread) */
  uint64_t answered;         /* the last write the thread answered for */
  int failed;                /* a failure since the last sync */
  char failmsg[512];
  ev *ev_head, *ev_tail;     /* events for the loop, oldest first */
  uint64_t delivered;        /* the last write the loop was told about */
  int reffed;                /* the async handle keeps the loop alive */
  int thread_on;             /* the thread was started and not joined */
};

/* {======================================================
** Queueing (the loop's thread)
** ======================================================= */

/* Copies the record of size bytes at rec, and the n strings at offs in it,
   into a new op. */
static op *make_op(int type, const void *rec, size_t size, const size_t *offs, int n) {
  size_t total = 0, lens[16];
  const char *strs[16];
  for (int i = 0; i < n; i++) {
    strs[i] = *(const char *const *)((const char *)rec + offs[i]);
    lens[i] = strs[i] != NULL ? strlen(strs[i]) + 1 : 0;
    total += lens[i];
  }
  op *o = malloc(sizeof *o + total);
  if (o == NULL) return NULL;
  o->next = NULL;
  o->type = type;
  o->bytes = sizeof *o + total;
  memcpy(&o->u, rec, size);
  char *p = o->text;
  for (int i = 0; i < n; i++) {
    if (strs[i] == NULL) continue;
    memcpy(p, strs[i], lens[i]);
    *(const char **)((char *)&o->u + offs[i]) = p;
    p += lens[i];
  }
  return o;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t enqueue(sl_writer *w, op *o) {
  if (o == NULL) return 0;
  pthread_mutex_lock(&w->mu);
  while (w->queued_bytes > MAX_QUEUED && !w->stop) {
    w->kicked = 1;
    pthread_cond_signal(&w->work);
    pthread_cond_wait(&w->space, &w->mu);
  }
  o->seq = ++w->seq;
  if (w->head == NULL) w->first_at = mono_ns();
  if (w->tail) w->tail->next = o;
  else w->head = o;
  w->tail = o;
  w->nqueued++;
  w->queued_bytes += o->bytes;
  if (w->nqueued >= KICK_AT) pthread_cond_signal(&w->work);
  uint64_t seq = o->seq;
  pthread_mutex_unlock(&w->mu);
  if (!w->reffed) {
    uv_ref((uv_handle_t *)&w->async);
    w->reffed = 1;
  }
  return seq;
}

#define OFF(T, f) offsetof(T, f)

uint64_t sl_writer_run_begin(sl_writer *w, const sl_store_run *r) {
  static const size_t offs[] = {
    OFF(sl_store_run, id), OFF(sl_store_run, pipeline), OFF(sl_store_run, file),
    OFF(sl_store_run, def_hash), OFF(sl_store_run, status), OFF(sl_store_run, input),
    OFF(sl_store_run, output), OFF(sl_store_run, error), OFF(sl_store_run, usage),
    OFF(sl_store_run, budget), OFF(sl_store_run, options), OFF(sl_store_run, owner),
    OFF(sl_store_run, queue), OFF(sl_store_run, waiting_for)
  };
  return enqueue(w, make_op(OP_RUN_BEGIN, r, sizeof *r, offs,
                            (int)(sizeof offs / sizeof offs[0])));
}

uint64_t sl_writer_checkpoint(sl_writer *w, const sl_store_checkpoint *c) {
  static const size_t offs[] = {
    OFF(sl_store_checkpoint, run_id), OFF(sl_store_checkpoint, path),
    OFF(sl_store_checkpoint, owner), OFF(sl_store_checkpoint, parent),
    OFF(sl_store_checkpoint, name), OFF(sl_store_checkpoint, kind),
    OFF(sl_store_checkpoint, key), OFF(sl_store_checkpoint, status),
    OFF(sl_store_checkpoint, output), OFF(sl_store_checkpoint, state),
    OFF(sl_store_checkpoint, usage), OFF(sl_store_checkpoint, error),
    OFF(sl_store_checkpoint, changes), OFF(sl_store_checkpoint, logs),
    OFF(sl_store_checkpoint, input)
  };
  return enqueue(w, make_op(OP_CHECKPOINT, c, sizeof *c, offs,
                            (int)(sizeof offs / sizeof offs[0])));
}

uint64_t sl_writer_wait(sl_writer *w, const sl_store_wait *wt) {
  static const size_t offs[] = {
    OFF(sl_store_wait, run_id), OFF(sl_store_wait, path), OFF(sl_store_wait, message),
    OFF(sl_store_wait, schema), OFF(sl_store_wait, answer)
  };
  return enqueue(w, make_op(OP_WAIT, wt, sizeof *wt, offs, 5));
}

uint64_t sl_writer_renew(sl_writer *w, const char *run_id, const char *owner,
                         int64_t epoch, int64_t lease_ms) {
  static const size_t offs[] = { OFF(renew_rec, id), OFF(renew_rec, owner) };
  renew_rec r = { run_id, owner, epoch, lease_ms };
  return enqueue(w, make_op(OP_RENEW, &r, sizeof r, offs, 2));
}

uint64_t sl_writer_finish(sl_writer *w, const char *run_id, const char *owner,
                          int64_t epoch, int release, const char *status,
                          const char *output, const char *error,
                          const char *usage, int64_t ended_ms) {
  static const size_t offs[] = {
    OFF(finish_rec, id), OFF(finish_rec, owner), OFF(finish_rec, status),
    OFF(finish_rec, output), OFF(finish_rec, error), OFF(finish_rec, usage)
  };
  finish_rec f = { run_id, owner, status, output, error, usage, epoch, ended_ms, release };
  return enqueue(w, make_op(OP_FINISH, &f, sizeof f, offs, 6));
}

uint64_t sl_writer_cache_put(sl_writer *w, const unsigned char key[SL_STORE_KEYLEN],
                             const char *step, const char *value, int64_t now_ms,
                             int64_t expires_ms) {
  static const size_t offs[] = { OFF(cache_rec, step), OFF(cache_rec, value) };
  cache_rec c;
  c.step = step;
  c.value = value;
  memcpy(c.key, key, SL_STORE_KEYLEN);
  c.now = now_ms;
  c.expires = expires_ms;
  return enqueue(w, make_op(OP_CACHE_PUT, &c, sizeof c, offs, 2));
}

uint64_t sl_writer_cache_hit(sl_writer *w, const unsigned char key[SL_STORE_KEYLEN]) {
  cache_rec c;
  memset(&c, 0, sizeof c);
  memcpy(c.key, key, SL_STORE_KEYLEN);
  return enqueue(w, make_op(OP_CACHE_HIT, &c, sizeof c, NULL, 0));
}

uint64_t sl_writer_prune(sl_writer *w, const char *pipeline, int64_t ended_before_ms,
                         int64_t keep) {
  static const size_t offs[] = { OFF(prune_rec, pipeline) };
  prune_rec p = { pipeline, ended_before_ms, keep };
  return enqueue(w, make_op(OP_PRUNE, &p, sizeof p, offs, 1));
}

uint64_t sl_writer_cache_get(sl_writer *w, const unsigned char key[SL_STORE_KEYLEN],
                             int64_t now_ms, sl_writer_get_cb cb, void *ud) {
  get_rec g;
  memcpy(g.key, key, SL_STORE_KEYLEN);
  g.now = now_ms;
  g.cb = cb;
  g.ud = ud;
  uint64_t seq = enqueue(w, make_op(OP_CACHE_GET, &g, sizeof g, NULL, 0));
  if (seq != 0) sl_writer_kick(w);   /* a lookup does not wait for a batch */
  return seq;
}

uint64_t sl_writer_claim(sl_writer *w, const char *queue, const char *owner, int64_t lease_ms,
                         int64_t now_ms, const char *const *skip, int nskip,
                         sl_writer_claim_cb cb, void *ud) {
  static const size_t offs[] = {
    OFF(claim_rec, queue), OFF(claim_rec, owner), OFF(claim_rec, skip)
  };
  size_t len = 1;
  for (int i = 0; i < nskip; i++) len += skip[i] ? strlen(skip[i]) + 1 : 0;
  char *joined = malloc(len);
  if (joined == NULL) return 0;
  size_t n = 0;
  for (int i = 0; i < nskip; i++) {
    if (skip[i] == NULL) continue;
    size_t l = strlen(skip[i]);
    memcpy(joined + n, skip[i], l);
    joined[n + l] = '\n';
    n += l + 1;
  }
  joined[n] = '\0';
  claim_rec c = { queue, owner, joined, lease_ms, now_ms, cb, ud };
  uint64_t seq = enqueue(w, make_op(OP_CLAIM, &c, sizeof c, offs, 3));
  free(joined);
  if (seq != 0) sl_writer_kick(w);   /* a claim does not wait for a batch */
  return seq;
}

void sl_writer_kick(sl_writer *w) {
  pthread_mutex_lock(&w->mu);
  if (w->head != NULL) {
    w->kicked = 1;
    pthread_cond_signal(&w->work);
  }
  pthread_mutex_unlock(&w->mu);
}

uint64_t sl_writer_queued(const sl_writer *w) {
  return w->seq;
}

uint64_t sl_writer_answered(const sl_writer *w) {
  return w->delivered;
}

/* }====================================================== */


/* {======================================================
** The thread
** ======================================================= */

static void push_event(sl_writer *w, int kind, uint64_t upto, const char *run_id,
                       const char *msg) {
  size_t rl = run_id ? strlen(run_id) + 1 : 0, ml = msg ? strlen(msg) + 1 : 0;
  ev *e = malloc(sizeof *e + rl + ml);
  if (e == NULL) return;   /* the loop learns of it from answered */
  e->next = NULL;
  e->claim_cb = NULL;
  e->get_cb = NULL;
  e->row = NULL;
  e->rp = NULL;
  e->e.kind = kind;
  e->e.upto = upto;
  e->e.run_id = NULL;
  e->e.msg = NULL;
  if (rl) e->e.run_id = memcpy(e->text, run_id, rl);
  if (ml) e->e.msg = memcpy(e->text + rl, msg, ml);
  pthread_mutex_lock(&w->mu);
  if (w->ev_tail) w->ev_tail->next = e;
  else w->ev_head = e;
  w->ev_tail = e;
  pthread_mutex_unlock(&w->mu);
}

static void push_claimed(sl_writer *w, op *o, sl_store_run *row, int rc, const char *msg) {
  claim_rec *c = &o->u.claim;
  /* With what the run recorded, read here, off the loop. */
  sl_store_replay *rp = NULL;
  char why[512];
  if (row != NULL && (rc = sl_store_replay_read(w->store, row->id, &rp)) != 0) {
    /* Without its record it cannot resume here: back to the queue. */
    snprintf(why, sizeof why, "%s", sl_store_errmsg(w->store));
    msg = why;
    sl_store_run_requeue(w->store, row->id, c->owner, row->epoch, NULL);
    sl_store_run_free(row);
    row = NULL;
  }
  size_t ml = msg ? strlen(msg) + 1 : 0;
  ev *e = malloc(sizeof *e + ml);
  if (e == NULL) {
    /* The loop cannot be told: the claim is given back to the queue. */
    if (row != NULL) {
      sl_store_run_requeue(w->store, row->id, c->owner, row->epoch, NULL);
      sl_store_run_free(row);
    }
    sl_store_replay_free(rp);
    return;
  }
  memset(e, 0, sizeof *e);
  e->e.kind = -1;
  e->e.upto = o->seq;
  e->claim_cb = c->cb;
  e->claim_ud = c->ud;
  e->row = row;
  e->rp = rp;
  e->rc = rc;
  if (ml) e->e.msg = memcpy(e->text, msg, ml);
  pthread_mutex_lock(&w->mu);
  if (w->ev_tail) w->ev_tail->next = e;
  else w->ev_head = e;
  w->ev_tail = e;
  pthread_mutex_unlock(&w->mu);
}

/* Claims for the claim at o and those of the same queue and owner that
   follow it, together (one claim of as many runs); queues each one's
   answer for its own callback. Returns the last op it answered. */
static op *apply_claims(sl_writer *w, op *o) {
  claim_rec *c = &o->u.claim;
  op *last = o;
  int k = 1;
  while (last->next != NULL && last->next->type == OP_CLAIM && k < 64 &&
         strcmp(last->next->u.claim.queue, c->queue) == 0 &&
         strcmp(last->next->u.claim.owner, c->owner) == 0) {
    last = last->next;
    k++;
  }
  const char *ids[256];
  char *buf = strdup(c->skip);
  int n = 0;
  for (char *p = buf, *nl; p != NULL && (nl = strchr(p, '\n')) != NULL && n < 256; p = nl + 1) {
    *nl = '\0';
    ids[n++] = p;
  }
  sl_store_run *rows[64];
  int got = 0;
  int rc = buf == NULL ? SL_STORE_ENOMEM
         : sl_store_run_claim_some(w->store, c->queue, c->owner, c->lease, c->now, ids, n, k,
                                   rows, &got);
  free(buf);
  const char *msg = rc != 0 && rc != SL_STORE_ENOTFOUND ? sl_store_errmsg(w->store) : NULL;
  int i = 0;
  for (op *p = o;; p = p->next, i++) {
    if (i < got) push_claimed(w, p, rows[i], 0, NULL);
    else push_claimed(w, p, NULL, rc == 0 ? SL_STORE_ENOTFOUND : rc, msg);
    if (p == last) break;
  }
  return last;
}

/* Looks up the cache for the op, and queues the answer for its own
   callback. */
static void apply_get(sl_writer *w, op *o) {
  get_rec *g = &o->u.get;
  sl_buf b;
  sl_buf_init(&b);
  int rc = sl_store_cache_get(w->store, g->key, g->now, &b);
  size_t len = rc == 0 ? b.len : 0;
  ev *e = malloc(sizeof *e + len + 1);
  if (e == NULL) {
    /* Without room for the value, a miss: the step runs instead. */
    len = 0;
    rc = SL_STORE_ENOMEM;
    if ((e = malloc(sizeof *e + 1)) == NULL) {
      sl_buf_free(&b);
      return;
    }
  }
  memset(e, 0, sizeof *e);
  e->e.kind = -1;
  e->e.upto = o->seq;
  e->get_cb = g->cb;
  e->get_ud = g->ud;
  e->rc = rc;
  e->vlen = len;
  if (len) memcpy(e->text, b.data, len);
  e->text[len] = '\0';
  sl_buf_free(&b);
  pthread_mutex_lock(&w->mu);
  if (w->ev_tail) w->ev_tail->next = e;
  else w->ev_head = e;
  w->ev_tail = e;
  pthread_mutex_unlock(&w->mu);
}

static int apply(sl_store *s, op *o) {
  switch (o->type) {
    case OP_RUN_BEGIN: return sl_store_run_begin(s, &o->u.run);
    case OP_CHECKPOINT: return sl_store_checkpoint_put(s, &o->u.cp);
    case OP_WAIT: return sl_store_wait_put(s, &o->u.wait);
    case OP_RENEW:
      return sl_store_run_renew(s, o->u.renew.id, o->u.renew.owner, o->u.renew.epoch,
                                o->u.renew.lease);
    case OP_FINISH: {
      finish_rec *f = &o->u.fin;
      return sl_store_run_finish(s, f->id, f->owner, f->epoch, f->release, f->status,
                                 f->output, f->error, f->usage, f->ended);
    }
    case OP_CACHE_HIT: return sl_store_cache_touch(s, o->u.cache.key);
    default: {
      cache_rec *c = &o->u.cache;
      return sl_store_cache_put(s, c->key, c->step, c->value, c->now, c->expires);
    }
  }
}

static const char *op_run(op *o) {
  switch (o->type) {
    case OP_RUN_BEGIN: return o->u.run.id;
    case OP_CHECKPOINT: return o->u.cp.run_id;
    case OP_WAIT: return o->u.wait.run_id;
    case OP_RENEW: return o->u.renew.id;
    case OP_FINISH: return o->u.fin.id;
    default: return NULL;
  }
}

/* Applies a batch and commits it; queues what happened. */
static void commit_batch(sl_writer *w, op *batch) {
  uint64_t upto = 0;
  int failed = 0;
  char msg[512] = "";
  int prunes = 0;
  for (op *o = batch; o != NULL; o = o->next) {
    upto = o->seq;
    if (o->type == OP_CACHE_GET) {
      apply_get(w, o);   /* answered whatever the batch does */
      continue;
    }
    if (o->type == OP_CLAIM) {
      /* Answered even in a batch that failed: its caller waits for it. */
      o = apply_claims(w, o);
      upto = o->seq;
      continue;
    }
    if (failed) continue;
    if (o->type == OP_PRUNE) {
      prunes = 1;
      continue;
    }
    int rc = apply(w->store, o);
    if (rc == 0) continue;
    if (rc == SL_STORE_ENOTFOUND && o->type == OP_CACHE_HIT) continue;
    if (rc == SL_STORE_ECONFLICT || (rc == SL_STORE_ENOTFOUND && o->type != OP_CACHE_PUT)) {
      /* One write refused; the batch goes on. */
      push_event(w, SL_WRITER_REFUSED, o->seq, op_run(o), sl_store_errmsg(w->store));
      continue;
    }
    failed = 1;
    snprintf(msg, sizeof msg, "%s", sl_store_errmsg(w->store));
  }
  if (!failed && sl_store_flush(w->store) != 0) {
    failed = 1;
    snprintf(msg, sizeof msg, "%s", sl_store_errmsg(w->store));
  }
  /* Retention is housekeeping, in its own transactions once the batch is
     kept: a prune that fails (a busy store) is tried again next time and
     costs no run anything. */
  for (op *o = batch; o != NULL && prunes && !failed; o = o->next)
    if (o->type == OP_PRUNE)
      sl_store_prune(w->store, o->u.prune.before, NULL, o->u.prune.keep,
                     o->u.prune.pipeline, NULL);
  push_event(w, failed ? SL_WRITER_FAILED : SL_WRITER_COMMITTED, upto, NULL,
             failed ? msg : NULL);
  pthread_mutex_lock(&w->mu);
  if (failed) {
    w->failed = 1;
    snprintf(w->failmsg, sizeof w->failmsg, "%s", msg);
  }
  w->answered = upto;
  pthread_cond_broadcast(&w->answered_cv);
  pthread_mutex_unlock(&w->mu);
  uv_async_send(&w->async);
  while (batch != NULL) {
    op *next = batch->next;
    free(batch);
    batch = next;
  }
}

static void *writer_main(void *arg) {
  sl_writer *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    /* Commits when kicked, when enough is queued, or when the oldest write
       has waited COMMIT_AFTER_NS. */
    while (w->head == NULL ? !w->stop : !(w->kicked || w->stop || w->nqueued >= KICK_AT)) {
      if (w->head == NULL) {
        pthread_cond_wait(&w->work, &w->mu);
        continue;
      }
      int64_t due_ns = w->first_at + COMMIT_AFTER_NS;
      struct timespec due = { (time_t)(due_ns / 1000000000LL), (long)(due_ns % 1000000000LL) };
      if (pthread_cond_timedwait(&w->work, &w->mu, &due) == ETIMEDOUT) break;
    }
    if (w->head == NULL) break;   /* stopping, and nothing is left */
    op *batch = w->head;
    w->head = w->tail = NULL;
    w->nqueued = 0;
    w->queued_bytes = 0;
    w->kicked = 0;
    pthread_cond_broadcast(&w->space);
    pthread_mutex_unlock(&w->mu);
    commit_batch(w, batch);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

/* }====================================================== */


/* {======================================================
** Events (the loop's thread)
** ======================================================= */

static void deliver(sl_writer *w) {
  pthread_mutex_lock(&w->mu);
  ev *e = w->ev_head;
  w->ev_head = w->ev_tail = NULL;
  uint64_t answered = w->answered;
  pthread_mutex_unlock(&w->mu);
  while (e != NULL) {
    ev *next = e->next;
    if (e->get_cb != NULL) {
      e->get_cb(e->get_ud, e->rc, e->text, e->vlen);
      free(e);
      e = next;
      continue;
    }
    if (e->claim_cb != NULL) {
      e->claim_cb(e->claim_ud, e->row, e->rp, e->rc, e->e.msg);
      free(e);
      e = next;
      continue;
    }
    if (e->e.kind != SL_WRITER_REFUSED && e->e.upto > w->delivered) w->delivered = e->e.upto;
    if (w->cb != NULL) w->cb(w->ud, &e->e);
    free(e);
    e = next;
  }
  if (answered > w->delivered) w->delivered = answered;
  if (w->reffed && w->delivered >= w->seq) {
    uv_unref((uv_handle_t *)&w->async);
    w->reffed = 0;
  }
}

static void on_async(uv_async_t *h) {
  deliver((sl_writer *)h);
}

int sl_writer_sync(sl_writer *w, char *err, size_t errlen) {
  pthread_mutex_lock(&w->mu);
  uint64_t target = w->seq;
  w->kicked = 1;
  pthread_cond_signal(&w->work);
  while (w->answered < target) pthread_cond_wait(&w->answered_cv, &w->mu);
  int failed = w->failed;
  if (failed && err != NULL && errlen > 0) snprintf(err, errlen, "%s", w->failmsg);
  w->failed = 0;
  pthread_mutex_unlock(&w->mu);
  deliver(w);
  return failed ? SL_STORE_EIO : 0;
}

/* }====================================================== */


/* {======================================================
** Opening and closing
** ======================================================= */

int sl_writer_open(sl_writer **out, uv_loop_t *loop, sl_handles *handles,
                   const char *path, const sl_store_options *opts,
                   sl_writer_cb cb, void *ud, char *err, size_t errlen) {
  *out = NULL;
  sl_writer *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "%s: not enough memory for the store's writer", path);
    return SL_STORE_ENOMEM;
  }
  sl_store_options o = opts ? *opts : (sl_store_options){0};
  o.autoflush = 0;      /* the writer commits its batches itself */
  o.full_check = 0;
  o.reader = 0;
  int rc = sl_store_open(&w->store, path, &o, err, errlen);
  if (rc != 0) {
    free(w);
    return rc;
  }
  /* Entries that expired are dropped here, not by the readers. */
  int64_t purged;
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    sl_store_cache_purge(w->store, (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, &purged);
  sl_store_flush(w->store);
  /* A process that died holding runs of this store: the whole file is
     checked before anything more is written to it. */
  if ((rc = sl_store_check_after_crash(w->store, NULL)) != 0) {
    snprintf(err, errlen, "%s; sluice store check tells what is damaged",
             sl_store_errmsg(w->store));
    sl_store_close(w->store, NULL, 0);
    free(w);
    return rc;
  }
  w->handles = handles;
  w->cb = cb;
  w->ud = ud;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t monotonic;
  pthread_condattr_init(&monotonic);
  pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
  pthread_cond_init(&w->work, &monotonic);
  pthread_condattr_destroy(&monotonic);
  pthread_cond_init(&w->answered_cv, NULL);
  pthread_cond_init(&w->space, NULL);
  uv_async_init(loop, &w->async, on_async);
  uv_unref((uv_handle_t *)&w->async);
  sl_handles_opened(handles);
  if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
    snprintf(err, errlen, "%s: cannot start the store's writer thread", path);
    sl_store_close(w->store, NULL, 0);
    w->store = NULL;
    w->cb = NULL;
    sl_writer_close(w);
    return SL_STORE_EIO;
  }
  w->thread_on = 1;
  *out = w;
  return 0;
}

static void on_closed(uv_handle_t *h) {
  sl_writer *w = (sl_writer *)h;
  sl_handles *handles = w->handles;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->work);
  pthread_cond_destroy(&w->answered_cv);
  pthread_cond_destroy(&w->space);
  free(w);
  sl_handles_closed(handles);
}

void sl_writer_close(sl_writer *w) {
  if (w == NULL) return;
  if (w->thread_on) {
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->thread_on = 0;
  }
  deliver(w);
  if (w->store != NULL) {
    sl_store_close(w->store, NULL, 0);
    w->store = NULL;
  }
  uv_close((uv_handle_t *)&w->async, on_closed);
}

/* }====================================================== */
