/*
** The store: the sl_store_* front, which checks arguments and dispatches
** to a backend's ops (store_sqlite.c, store_pg.c).
*/

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"


/*
** {======================================================
** The front: argument checks, dispatch, messages
** =======================================================
*/

/* Backends in the order they are asked whether they take a path; the last
   one takes every path. */
static const struct sl_store_ops *const backends[] = {
#ifdef SLUICE_HAVE_POSTGRESQL
  &sl_store_pg_ops,
#endif
  &sl_store_sqlite_ops
};


static void copy_message (char *err, size_t errlen, const char *msg) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", msg);
}


int sl_store_seterr (sl_store *s, int code, const char *fmt, ...) {
  va_list ap;
  int n = snprintf(s->errmsg, sizeof s->errmsg, "%s: ", s->path);
  if (n < 0 || (size_t)n >= sizeof s->errmsg)
    n = 0;
  va_start(ap, fmt);
  vsnprintf(s->errmsg + n, sizeof s->errmsg - (size_t)n, fmt, ap);
  va_end(ap);
  return code;
}


int sl_store_base_init (sl_store *s, const struct sl_store_ops *ops,
                        const char *path, const sl_store_options *o) {
  size_t len = strlen(path);
  s->ops = ops;
  s->pending = 0;
  s->autoflush = (o != NULL && o->autoflush > 0) ? o->autoflush : 0;
  s->errmsg[0] = '\0';
  s->path = malloc(len + 1);
  if (s->path == NULL)
    return SL_STORE_ENOMEM;
  memcpy(s->path, path, len + 1);
  return 0;
}


void sl_store_base_free (sl_store *s) {
  free(s->path);
  s->path = NULL;
}


int sl_store_open (sl_store **out, const char *path,
                   const sl_store_options *opts, char *err, size_t errlen) {
  size_t i, n = sizeof backends / sizeof backends[0];
  copy_message(err, errlen, "");
  if (out == NULL) {
    copy_message(err, errlen, "sl_store_open: no place for the store");
    return SL_STORE_EINVAL;
  }
  *out = NULL;
  if (path == NULL || path[0] == '\0') {
    copy_message(err, errlen, "sl_store_open: empty path");
    return SL_STORE_EINVAL;
  }
  if (opts != NULL && (opts->busy_timeout_ms < 0 || opts->autoflush < 0
                       || opts->max_bytes < 0)) {
    copy_message(err, errlen, "sl_store_open: negative option");
    return SL_STORE_EINVAL;
  }
  for (i = 0; i + 1 < n && !backends[i]->accepts(path); i++)
    ;
  return backends[i]->open(out, path, opts, err, errlen);
}


/* Copies the record of `size` bytes at rec, with the strings its fields at
   the n offsets point to, into one allocation whose fields point into it. */
static void *pack_record (const void *rec, size_t size, const size_t *offs, int n) {
  size_t total = size;
  for (int i = 0; i < n; i++) {
    const char *str = *(const char *const *)((const char *)rec + offs[i]);
    if (str != NULL) total += strlen(str) + 1;
  }
  char *mem = malloc(total);
  if (mem == NULL) return NULL;
  memcpy(mem, rec, size);
  char *p = mem + size;
  for (int i = 0; i < n; i++) {
    const char *str = *(const char *const *)((const char *)rec + offs[i]);
    if (str == NULL) continue;
    size_t len = strlen(str) + 1;
    memcpy(p, str, len);
    *(const char **)(mem + offs[i]) = p;
    p += len;
  }
  return mem;
}

sl_store_run *sl_store_copy_run (const sl_store_run *r) {
  static const size_t strs[] = {
    offsetof(sl_store_run, id), offsetof(sl_store_run, pipeline),
    offsetof(sl_store_run, file), offsetof(sl_store_run, def_hash),
    offsetof(sl_store_run, status), offsetof(sl_store_run, input),
    offsetof(sl_store_run, output), offsetof(sl_store_run, error),
    offsetof(sl_store_run, usage), offsetof(sl_store_run, budget),
    offsetof(sl_store_run, options), offsetof(sl_store_run, owner),
    offsetof(sl_store_run, queue), offsetof(sl_store_run, waiting_for)
  };
  return pack_record(r, sizeof *r, strs, (int)(sizeof strs / sizeof strs[0]));
}

sl_store_checkpoint *sl_store_copy_checkpoint (const sl_store_checkpoint *c) {
  static const size_t strs[] = {
    offsetof(sl_store_checkpoint, run_id), offsetof(sl_store_checkpoint, path),
    offsetof(sl_store_checkpoint, owner), offsetof(sl_store_checkpoint, parent),
    offsetof(sl_store_checkpoint, name), offsetof(sl_store_checkpoint, kind),
    offsetof(sl_store_checkpoint, key), offsetof(sl_store_checkpoint, status),
    offsetof(sl_store_checkpoint, output), offsetof(sl_store_checkpoint, state),
    offsetof(sl_store_checkpoint, usage), offsetof(sl_store_checkpoint, error),
    offsetof(sl_store_checkpoint, changes), offsetof(sl_store_checkpoint, logs),
    offsetof(sl_store_checkpoint, input)
  };
  return pack_record(c, sizeof *c, strs, (int)(sizeof strs / sizeof strs[0]));
}


int sl_store_remote (const sl_store *s) {
  return s != NULL && s->ops->remote;
}


int sl_store_is_server (const char *path) {
  size_t n = sizeof backends / sizeof backends[0];
  for (size_t i = 0; path != NULL && i + 1 < n; i++)
    if (backends[i]->accepts(path)) return 1;
  return 0;
}


int sl_store_close (sl_store *s, char *err, size_t errlen) {
  int rc;
  copy_message(err, errlen, "");
  if (s == NULL)
    return 0;
  if ((rc = s->ops->flush(s)) != 0)
    copy_message(err, errlen, s->errmsg);
  s->ops->close(s);
  return rc;
}


/* Commits when the pending writes reached the autoflush count. */
static int after_write (sl_store *s, int rc) {
  if (rc == 0 && s->autoflush > 0 && s->pending >= s->autoflush)
    rc = s->ops->flush(s);
  return rc;
}


int sl_store_flush (sl_store *s) {
  if (s == NULL)
    return SL_STORE_EINVAL;
  return s->ops->flush(s);
}


int sl_store_set_autoflush (sl_store *s, int max_pending) {
  if (s == NULL)
    return SL_STORE_EINVAL;
  if (max_pending < 0)
    return sl_store_seterr(s, SL_STORE_EINVAL,
                           "autoflush count must not be negative");
  s->autoflush = max_pending;
  return after_write(s, 0);
}


int sl_store_pending (const sl_store *s) {
  return s != NULL ? s->pending : 0;
}


const char *sl_store_errmsg (const sl_store *s) {
  return s != NULL ? s->errmsg : "";
}


const char *sl_store_path (const sl_store *s) {
  return s != NULL ? s->path : "";
}


/* Fails with EINVAL naming the function and the missing argument. */
#define ARG(s, cond, fn, what) \
  do { \
    if ((s) == NULL) return SL_STORE_EINVAL; \
    if (!(cond)) \
      return sl_store_seterr((s), SL_STORE_EINVAL, "%s: %s", (fn), (what)); \
  } while (0)


int sl_store_run_begin (sl_store *s, const sl_store_run *r) {
  ARG(s, r != NULL, "run_begin", "no run");
  ARG(s, r->id != NULL && r->id[0] != '\0', "run_begin", "no run id");
  ARG(s, r->pipeline != NULL, "run_begin", "no pipeline name");
  ARG(s, r->status != NULL, "run_begin", "no status");
  return after_write(s, s->ops->run_begin(s, r));
}


int sl_store_run_update (sl_store *s, const char *id, const char *status,
                         const char *output, const char *error,
                         const char *usage, int64_t ended_ms) {
  ARG(s, id != NULL, "run_update", "no run id");
  ARG(s, status != NULL, "run_update", "no status");
  return after_write(s, s->ops->run_update(s, id, status, output, error,
                                           usage, ended_ms));
}


int sl_store_run_get (sl_store *s, const char *id, sl_store_run **out) {
  if (out != NULL)
    *out = NULL;
  ARG(s, id != NULL && out != NULL, "run_get", "no run id or no place for it");
  return s->ops->run_get(s, id, out);
}


void sl_store_run_free (sl_store_run *r) {
  free(r);
}


int sl_store_run_list (sl_store *s, const sl_store_run_filter *f,
                       sl_store_run_cb cb, void *ud) {
  static const sl_store_run_filter all = { NULL, NULL, 0, 0, NULL, NULL, NULL };
  ARG(s, cb != NULL, "run_list", "no callback");
  if (f == NULL)
    f = &all;
  ARG(s, f->limit >= 0 && f->offset >= 0, "run_list",
      "negative limit or offset");
  return s->ops->run_list(s, f, cb, ud);
}


int sl_store_run_delete (sl_store *s, const char *id) {
  ARG(s, id != NULL, "run_delete", "no run id");
  return after_write(s, s->ops->run_delete(s, id));
}


int sl_store_run_claim (sl_store *s, const char *id, const char *owner,
                        int64_t lease_ms, int64_t expect, const char *status) {
  ARG(s, id != NULL && owner != NULL, "run_claim", "no run id or owner");
  return s->ops->run_claim(s, id, owner, lease_ms, expect, status);
}


int sl_store_run_claim_some (sl_store *s, const char *queue, const char *owner,
                             int64_t lease_ms, int64_t now_ms,
                             const char *const *skip, int nskip, int max,
                             sl_store_run **out, int *nout) {
  if (nout != NULL)
    *nout = 0;
  ARG(s, queue != NULL && owner != NULL && out != NULL && nout != NULL && max >= 1,
      "run_claim", "no queue, owner or place for the runs");
  ARG(s, nskip >= 0 && (nskip == 0 || skip != NULL), "run_claim", "bad skip list");
  for (int i = 0; i < max; i++) out[i] = NULL;
  return after_write(s, s->ops->run_claim_some(s, queue, owner, lease_ms, now_ms,
                                               skip, nskip, max, out, nout));
}


int sl_store_run_claim_next (sl_store *s, const char *queue, const char *owner,
                             int64_t lease_ms, int64_t now_ms,
                             const char *const *skip, int nskip,
                             sl_store_run **out) {
  int n;
  if (out != NULL)
    *out = NULL;
  ARG(s, out != NULL, "run_claim_next", "no place for the run");
  return sl_store_run_claim_some(s, queue, owner, lease_ms, now_ms, skip, nskip, 1, out, &n);
}


int sl_store_run_requeue (sl_store *s, const char *id, const char *owner,
                          int64_t epoch, const char *waiting_for) {
  ARG(s, id != NULL && owner != NULL, "run_requeue", "no run id or owner");
  return after_write(s, s->ops->run_requeue(s, id, owner, epoch, waiting_for));
}


int sl_store_watch_queue (sl_store *s, const char *queue, sl_store_watch *out) {
  if (out != NULL) {
    out->fd = -1;
    out->path[0] = '\0';
  }
  ARG(s, queue != NULL && out != NULL, "watch_queue", "no queue or place for the watch");
  return s->ops->watch_queue(s, queue, out);
}


struct sl_store_replay {
  sl_store_checkpoint **steps;
  int nsteps, capsteps;
  uint32_t *slots;          /* path -> index + 1, open addressing */
  size_t nslots;
  sl_store_wait *waits;     /* copies: one allocation each, in texts */
  char **texts;
  int nwaits, capwaits;
};

static uint64_t path_hash (const char *p) {
  uint64_t h = 1469598103934665603ull;
  while (*p) h = (h ^ (unsigned char)*p++) * 1099511628211ull;
  return h;
}

static int replay_index (const sl_store_replay *rp, const char *path) {
  if (rp->nslots == 0) return -1;
  for (size_t j = path_hash(path) & (rp->nslots - 1); rp->slots[j];
       j = (j + 1) & (rp->nslots - 1))
    if (strcmp(rp->steps[rp->slots[j] - 1]->path, path) == 0) return (int)rp->slots[j] - 1;
  return -1;
}

static int replay_grow (sl_store_replay *rp) {
  size_t n = rp->nslots ? rp->nslots * 2 : 64;
  uint32_t *t = calloc(n, sizeof *t);
  if (t == NULL) return -1;
  for (int i = 0; i < rp->nsteps; i++) {
    size_t j = path_hash(rp->steps[i]->path) & (n - 1);
    while (t[j]) j = (j + 1) & (n - 1);
    t[j] = (uint32_t)i + 1;
  }
  free(rp->slots);
  rp->slots = t;
  rp->nslots = n;
  return 0;
}

/* Keeps a copy of c: a later record of a path replaces an earlier one in
   its place, unless that one completed. */
static int replay_keep (void *ud, const sl_store_checkpoint *c) {
  sl_store_replay *rp = ud;
  if (c->path == NULL) return 0;
  int i = replay_index(rp, c->path);
  if (i >= 0 && rp->steps[i]->status && strcmp(rp->steps[i]->status, "completed") == 0)
    return 0;
  sl_store_checkpoint *copy = sl_store_copy_checkpoint(c);
  if (copy == NULL) return SL_STORE_ENOMEM;
  if (i >= 0) {
    sl_store_checkpoint_free(rp->steps[i]);
    rp->steps[i] = copy;
    return 0;
  }
  if (rp->nsteps == rp->capsteps) {
    int cap = rp->capsteps ? rp->capsteps * 2 : 64;
    sl_store_checkpoint **t = realloc(rp->steps, (size_t)cap * sizeof *t);
    if (t == NULL) {
      sl_store_checkpoint_free(copy);
      return SL_STORE_ENOMEM;
    }
    rp->steps = t;
    rp->capsteps = cap;
  }
  if (((size_t)rp->nsteps + 1) * 2 > rp->nslots && replay_grow(rp) != 0) {
    sl_store_checkpoint_free(copy);
    return SL_STORE_ENOMEM;
  }
  rp->steps[rp->nsteps] = copy;
  size_t j = path_hash(copy->path) & (rp->nslots - 1);
  while (rp->slots[j]) j = (j + 1) & (rp->nslots - 1);
  rp->slots[j] = (uint32_t)rp->nsteps + 1;
  rp->nsteps++;
  return 0;
}

static int replay_wait (void *ud, const sl_store_wait *w) {
  sl_store_replay *rp = ud;
  if (rp->nwaits == rp->capwaits) {
    int cap = rp->capwaits ? rp->capwaits * 2 : 8;
    sl_store_wait *t = realloc(rp->waits, (size_t)cap * sizeof *t);
    char **x = t ? realloc(rp->texts, (size_t)cap * sizeof *x) : NULL;
    if (t) rp->waits = t;
    if (x) rp->texts = x;
    if (t == NULL || x == NULL) return SL_STORE_ENOMEM;
    rp->capwaits = cap;
  }
  const char *f[5] = { w->run_id, w->path, w->message, w->schema, w->answer };
  size_t total = 0;
  for (int i = 0; i < 5; i++) total += f[i] ? strlen(f[i]) + 1 : 0;
  char *mem = malloc(total ? total : 1), *p = mem;
  if (mem == NULL) return SL_STORE_ENOMEM;
  const char *g[5];
  for (int i = 0; i < 5; i++) {
    g[i] = NULL;
    if (f[i] == NULL) continue;
    size_t l = strlen(f[i]) + 1;
    memcpy(p, f[i], l);
    g[i] = p;
    p += l;
  }
  sl_store_wait *c = &rp->waits[rp->nwaits];
  c->run_id = g[0]; c->path = g[1]; c->message = g[2]; c->schema = g[3]; c->answer = g[4];
  c->created_ms = w->created_ms;
  rp->texts[rp->nwaits++] = mem;
  return 0;
}

int sl_store_replay_read (sl_store *s, const char *run_id, sl_store_replay **out) {
  if (out != NULL)
    *out = NULL;
  ARG(s, run_id != NULL && out != NULL, "replay_read", "no run id or place for it");
  sl_store_replay *rp = calloc(1, sizeof *rp);
  if (rp == NULL)
    return sl_store_seterr(s, SL_STORE_ENOMEM, "reading run %s: out of memory", run_id);
  int rc = s->ops->checkpoint_list(s, run_id, replay_keep, rp);
  if (rc == 0) rc = s->ops->wait_list(s, run_id, replay_wait, rp);
  if (rc != 0) {
    sl_store_replay_free(rp);
    if (rc == SL_STORE_ENOMEM)
      return sl_store_seterr(s, SL_STORE_ENOMEM, "reading run %s: out of memory", run_id);
    return rc;
  }
  *out = rp;
  return 0;
}

const sl_store_checkpoint *sl_store_replay_step (const sl_store_replay *rp, const char *path) {
  int i = rp != NULL && path != NULL ? replay_index(rp, path) : -1;
  return i >= 0 ? rp->steps[i] : NULL;
}

sl_store_replay *sl_store_replay_new (void) {
  return calloc(1, sizeof (sl_store_replay));
}

int sl_store_replay_keep (sl_store_replay *rp, const sl_store_checkpoint *c) {
  return replay_keep(rp, c);
}

int sl_store_replay_nsteps (const sl_store_replay *rp) {
  return rp != NULL ? rp->nsteps : 0;
}

const sl_store_checkpoint *sl_store_replay_step_at (const sl_store_replay *rp, int i) {
  return rp != NULL && i >= 0 && i < rp->nsteps ? rp->steps[i] : NULL;
}

int sl_store_replay_nwaits (const sl_store_replay *rp) {
  return rp != NULL ? rp->nwaits : 0;
}

const sl_store_wait *sl_store_replay_wait (const sl_store_replay *rp, int i) {
  return rp != NULL && i >= 0 && i < rp->nwaits ? &rp->waits[i] : NULL;
}

void sl_store_replay_free (sl_store_replay *rp) {
  if (rp == NULL) return;
  for (int i = 0; i < rp->nsteps; i++) sl_store_checkpoint_free(rp->steps[i]);
  for (int i = 0; i < rp->nwaits; i++) free(rp->texts[i]);
  free(rp->steps);
  free(rp->slots);
  free(rp->waits);
  free(rp->texts);
  free(rp);
}


int sl_store_watch_clear (sl_store *s) {
  if (s == NULL) return SL_STORE_EINVAL;
  return s->ops->watch_clear(s);
}


int sl_store_run_renew (sl_store *s, const char *id, const char *owner,
                        int64_t epoch, int64_t lease_ms) {
  ARG(s, id != NULL && owner != NULL, "run_renew", "no run id or owner");
  return after_write(s, s->ops->run_renew(s, id, owner, epoch, lease_ms));
}


int sl_store_run_finish (sl_store *s, const char *id, const char *owner,
                         int64_t epoch, int release, const char *status,
                         const char *output, const char *error,
                         const char *usage, int64_t ended_ms) {
  ARG(s, id != NULL, "run_finish", "no run id");
  ARG(s, status != NULL, "run_finish", "no status");
  return after_write(s, s->ops->run_finish(s, id, owner, epoch, release, status,
                                           output, error, usage, ended_ms));
}


int sl_store_prune (sl_store *s, int64_t older_than_ms, const char *status,
                    int64_t keep, const char *pipeline, int64_t *removed) {
  if (removed != NULL)
    *removed = 0;
  ARG(s, older_than_ms >= 0 && keep >= 0, "prune", "negative age or count");
  return s->ops->prune(s, older_than_ms, status, keep, pipeline, removed);
}


int sl_store_get_stats (sl_store *s, sl_store_stats *out) {
  ARG(s, out != NULL, "stats", "no place for the figures");
  memset(out, 0, sizeof *out);
  return s->ops->stats(s, out);
}


int sl_store_check (sl_store *s) {
  if (s == NULL)
    return SL_STORE_EINVAL;
  return s->ops->check(s);
}


int sl_store_check_after_crash (sl_store *s, int *checked) {
  int ignored;
  if (s == NULL)
    return SL_STORE_EINVAL;
  return s->ops->check_after_crash(s, checked ? checked : &ignored);
}


int sl_store_vacuum (sl_store *s) {
  if (s == NULL)
    return SL_STORE_EINVAL;
  return s->ops->vacuum(s);
}


int sl_store_checkpoint_put (sl_store *s, const sl_store_checkpoint *c) {
  ARG(s, c != NULL && c->run_id != NULL && c->path != NULL,
      "checkpoint_put", "no run id or path");
  ARG(s, c->name != NULL && c->kind != NULL && c->status != NULL,
      "checkpoint_put", "no name, kind or status");
  return after_write(s, s->ops->checkpoint_put(s, c));
}


int sl_store_checkpoint_get (sl_store *s, const char *run_id,
                             const char *path, sl_store_checkpoint **out) {
  if (out != NULL)
    *out = NULL;
  ARG(s, run_id != NULL && path != NULL && out != NULL, "checkpoint_get",
      "no run id, path or place for it");
  return s->ops->checkpoint_get(s, run_id, path, out);
}


void sl_store_checkpoint_free (sl_store_checkpoint *c) {
  free(c);
}


int sl_store_checkpoint_list (sl_store *s, const char *run_id,
                              sl_store_checkpoint_cb cb, void *ud) {
  ARG(s, run_id != NULL && cb != NULL, "checkpoint_list",
      "no run id or callback");
  return s->ops->checkpoint_list(s, run_id, cb, ud);
}


int sl_store_wait_put (sl_store *s, const sl_store_wait *w) {
  ARG(s, w != NULL && w->run_id != NULL && w->path != NULL, "wait_put",
      "no run id or path");
  return after_write(s, s->ops->wait_put(s, w));
}


int sl_store_wait_list (sl_store *s, const char *run_id, sl_store_wait_cb cb,
                        void *ud) {
  ARG(s, run_id != NULL && cb != NULL, "wait_list", "no run id or callback");
  return s->ops->wait_list(s, run_id, cb, ud);
}


int sl_store_wait_answer (sl_store *s, const char *run_id, const char *path,
                          const char *answer) {
  ARG(s, run_id != NULL && path != NULL && answer != NULL, "wait_answer",
      "no run id, path or answer");
  return after_write(s, s->ops->wait_answer(s, run_id, path, answer));
}


int sl_store_wait_clear (sl_store *s, const char *run_id, int64_t *removed) {
  if (removed != NULL)
    *removed = 0;
  ARG(s, run_id != NULL, "wait_clear", "no run id");
  return after_write(s, s->ops->wait_clear(s, run_id, removed));
}


int sl_store_cache_get (sl_store *s, const unsigned char key[SL_STORE_KEYLEN],
                        int64_t now_ms, sl_buf *b) {
  ARG(s, key != NULL && b != NULL, "cache_get", "no key or buffer");
  return after_write(s, s->ops->cache_get(s, key, now_ms, b));
}


int sl_store_cache_put (sl_store *s, const unsigned char key[SL_STORE_KEYLEN],
                        const char *step, const char *value,
                        int64_t now_ms, int64_t expires_ms) {
  ARG(s, key != NULL && step != NULL && value != NULL, "cache_put",
      "no key, step or value");
  return after_write(s, s->ops->cache_put(s, key, step, value, now_ms,
                                          expires_ms));
}


int sl_store_cache_touch (sl_store *s, const unsigned char key[SL_STORE_KEYLEN]) {
  ARG(s, key != NULL, "cache_touch", "no key");
  return after_write(s, s->ops->cache_touch(s, key));
}


int sl_store_cache_clear (sl_store *s, const char *step, int64_t *removed) {
  if (removed != NULL)
    *removed = 0;
  if (s == NULL)
    return SL_STORE_EINVAL;
  return after_write(s, s->ops->cache_clear(s, step, removed));
}


int sl_store_cache_purge (sl_store *s, int64_t now_ms, int64_t *removed) {
  if (removed != NULL)
    *removed = 0;
  if (s == NULL)
    return SL_STORE_EINVAL;
  return after_write(s, s->ops->cache_purge(s, now_ms, removed));
}


int sl_store_cache_stats (sl_store *s, sl_store_cache_totals *total,
                          sl_store_cache_step_cb cb, void *ud) {
  if (total != NULL)
    memset(total, 0, sizeof *total);
  if (s == NULL)
    return SL_STORE_EINVAL;
  return s->ops->cache_stats(s, total, cb, ud);
}

/* }====================================================== */
