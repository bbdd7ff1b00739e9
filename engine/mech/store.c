/*
** The store: the sl_store_* front, which checks arguments and dispatches
** to a backend's ops, and the SQLite backend.
**
** The SQLite backend keeps one connection in WAL mode with
** synchronous=NORMAL: a commit appends to the WAL without waiting for the
** disk, and the WAL is synced at checkpoints, so a crash of the process
** loses nothing committed and a crash of the machine loses at most the last
** commits, never the file's consistency. Writes run inside one open
** transaction (BEGIN IMMEDIATE, taken at the first write after a commit)
** and every statement on a hot path is prepared once and kept.
*/

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "store.h"


/*
** {======================================================
** The front: argument checks, dispatch, messages
** =======================================================
*/

static const struct sl_store_ops sqlite_ops;

/* Backends in the order they are asked whether they take a path; the last
   one takes every path. */
static const struct sl_store_ops *const backends[] = { &sqlite_ops };

#define DEFAULT_BUSY_MS  5000


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
  static const sl_store_run_filter all = { NULL, NULL, 0, 0, NULL };
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


/*
** {======================================================
** SQLite backend: schema and migrations
** =======================================================
*/

/* PRAGMA application_id of a sluice store: 0x534c4345, "SLCE". */
#define SQ_APPLICATION_ID  1397506885
#define STRINGIFY_(x)  #x
#define STRINGIFY(x)  STRINGIFY_(x)

/*
** The schema, one migration per entry: migrations[i] takes a file from
** PRAGMA user_version i to i + 1, and runs once, in the transaction that
** also sets user_version. Append new entries; never edit a published one.
** Large JSON columns come last in each table so that listings, which read
** the small ones, rarely touch overflow pages.
*/
static const char *const migrations[] = {
  /* 1: everything */
  "PRAGMA application_id = " STRINGIFY(SQ_APPLICATION_ID) ";"

  "CREATE TABLE runs ("
  "  id          TEXT NOT NULL PRIMARY KEY,"
  "  pipeline    TEXT NOT NULL,"
  "  status      TEXT NOT NULL CHECK (status IN ('running', 'completed',"
  "                'failed', 'paused', 'cancelled')),"
  "  started_ms  INTEGER NOT NULL,"
  "  ended_ms    INTEGER,"
  "  file        TEXT,"
  "  def_hash    TEXT,"
  "  usage       TEXT,"
  "  budget      TEXT,"
  "  error       TEXT,"
  "  input       TEXT,"
  "  output      TEXT"
  ") STRICT;"
  /* Filtered listings walk these backwards: newest first, no sort. */
  "CREATE INDEX runs_by_status ON runs (status, id);"
  "CREATE INDEX runs_by_pipeline ON runs (pipeline, id);"

  "CREATE TABLE checkpoints ("
  "  run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
  "  path      TEXT NOT NULL,"
  "  parent    TEXT,"
  "  name      TEXT NOT NULL,"
  "  kind      TEXT NOT NULL,"
  "  key       TEXT,"
  "  status    TEXT NOT NULL,"
  "  attempts  INTEGER NOT NULL,"
  "  cached    INTEGER NOT NULL,"
  "  t0        INTEGER,"
  "  t1        INTEGER,"
  "  usage     TEXT,"
  "  error     TEXT,"
  "  state     TEXT,"
  "  output    TEXT,"
  "  PRIMARY KEY (run_id, path)"
  ") STRICT;"

  "CREATE TABLE waits ("
  "  run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
  "  path        TEXT NOT NULL,"
  "  created_ms  INTEGER NOT NULL,"
  "  message     TEXT,"
  "  schema      TEXT,"
  "  answer      TEXT,"
  "  PRIMARY KEY (run_id, path)"
  ") STRICT;"

  "CREATE TABLE cache ("
  "  key         BLOB NOT NULL PRIMARY KEY CHECK (length(key) = 16),"
  "  step        TEXT NOT NULL,"
  "  size        INTEGER NOT NULL,"
  "  created_ms  INTEGER NOT NULL,"
  "  expires_ms  INTEGER,"
  "  hits        INTEGER NOT NULL DEFAULT 0,"
  "  value       TEXT NOT NULL"
  ") STRICT;"
  "CREATE INDEX cache_by_step ON cache (step);"
  "CREATE INDEX cache_by_expiry ON cache (expires_ms)"
  "  WHERE expires_ms IS NOT NULL;",

  /* 2: the options a run was started with (budget, memory limit, trace),
     every status a run can have (interrupted: stopped, resumable;
     cancelled: ended for good), and checkpoints that record the changes
     a step made to the state rather than the whole state. Runs is rebuilt
     for its CHECK constraint, with foreign keys off (sq_migrate). */
  "CREATE TABLE runs_v2 ("
  "  id          TEXT NOT NULL PRIMARY KEY,"
  "  pipeline    TEXT NOT NULL,"
  "  status      TEXT NOT NULL CHECK (status IN ('queued', 'running',"
  "                'waiting', 'paused', 'completed', 'failed', 'cancelled',"
  "                'interrupted')),"
  "  started_ms  INTEGER NOT NULL,"
  "  ended_ms    INTEGER,"
  "  file        TEXT,"
  "  def_hash    TEXT,"
  "  usage       TEXT,"
  "  budget      TEXT,"
  "  options     TEXT,"
  "  error       TEXT,"
  "  input       TEXT,"
  "  output      TEXT"
  ") STRICT;"
  "INSERT INTO runs_v2 (id, pipeline, status, started_ms, ended_ms, file,"
  "  def_hash, usage, budget, error, input, output)"
  "  SELECT id, pipeline, status, started_ms, ended_ms, file, def_hash,"
  "  usage, budget, error, input, output FROM runs;"
  "DROP TABLE runs;"
  "ALTER TABLE runs_v2 RENAME TO runs;"
  "CREATE INDEX runs_by_status ON runs (status, id);"
  "CREATE INDEX runs_by_pipeline ON runs (pipeline, id);"
  "ALTER TABLE checkpoints ADD COLUMN changes TEXT;"
};

#define NMIGRATIONS  ((int)(sizeof migrations / sizeof migrations[0]))

/* }====================================================== */


/*
** {======================================================
** SQLite backend: statements
** =======================================================
*/

enum {
  ST_BEGIN, ST_COMMIT,
  ST_RUN_BEGIN, ST_RUN_UPDATE, ST_RUN_GET, ST_RUN_DELETE,
  ST_RUN_LIST, ST_RUN_LIST_STATUS, ST_RUN_LIST_PIPELINE, ST_RUN_LIST_BOTH,
  ST_CP_PUT, ST_CP_GET, ST_CP_LIST,
  ST_WAIT_PUT, ST_WAIT_LIST, ST_WAIT_ANSWER, ST_WAIT_CLEAR,
  ST_CACHE_GET, ST_CACHE_HIT, ST_CACHE_DELETE, ST_CACHE_PUT,
  ST_CACHE_CLEAR, ST_CACHE_CLEAR_STEP, ST_CACHE_PURGE,
  ST_CACHE_TOTAL, ST_CACHE_BY_STEP,
  ST_COUNT
};

/* Column lists, in the order row_to_run / row_to_checkpoint read them. */
#define RUN_COLS "id, pipeline, file, def_hash, status, input, output, " \
                 "error, usage, budget, started_ms, ended_ms, options"
#define CP_COLS "run_id, path, parent, name, kind, key, status, attempts, " \
                "cached, output, state, usage, error, t0, t1, changes"
/* Newest first: the ULID-like ids sort by start time. */
#define RUN_ORDER " ORDER BY id DESC LIMIT ?3 OFFSET ?4"
/* Older than a given run (paging), or any when ?5 is NULL. */
#define RUN_BEFORE "(?5 IS NULL OR id < ?5)"

static const char *const sql[ST_COUNT] = {
  [ST_BEGIN] = "BEGIN IMMEDIATE",
  [ST_COMMIT] = "COMMIT",

  [ST_RUN_BEGIN] =
    "INSERT INTO runs (" RUN_COLS ") "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
  [ST_RUN_UPDATE] =
    "UPDATE runs SET status = ?2, output = ?3, error = ?4, usage = ?5, "
    "ended_ms = ?6 WHERE id = ?1",
  [ST_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
  [ST_RUN_DELETE] = "DELETE FROM runs WHERE id = ?1",
  [ST_RUN_LIST] = "SELECT " RUN_COLS " FROM runs WHERE " RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_STATUS] =
    "SELECT " RUN_COLS " FROM runs WHERE status = ?1 AND " RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_PIPELINE] =
    "SELECT " RUN_COLS " FROM runs WHERE pipeline = ?2 AND " RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_BOTH] =
    "SELECT " RUN_COLS " FROM runs WHERE status = ?1 AND pipeline = ?2 AND "
    RUN_BEFORE RUN_ORDER,

  /* An upsert rather than INSERT OR REPLACE: the row keeps its rowid, so a
     step recorded when it starts and again when it ends stays in start
     order. */
  [ST_CP_PUT] =
    "INSERT INTO checkpoints (" CP_COLS ") "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
    "?16) ON CONFLICT (run_id, path) DO UPDATE SET parent = excluded.parent, "
    "name = excluded.name, kind = excluded.kind, key = excluded.key, "
    "status = excluded.status, attempts = excluded.attempts, "
    "cached = excluded.cached, output = excluded.output, "
    "state = excluded.state, usage = excluded.usage, "
    "error = excluded.error, t0 = excluded.t0, t1 = excluded.t1, "
    "changes = excluded.changes",
  [ST_CP_GET] =
    "SELECT " CP_COLS " FROM checkpoints WHERE run_id = ?1 AND path = ?2",
  [ST_CP_LIST] =
    "SELECT " CP_COLS " FROM checkpoints WHERE run_id = ?1 ORDER BY rowid",

  [ST_WAIT_PUT] =
    "INSERT INTO waits (run_id, path, message, schema, answer, created_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
    "ON CONFLICT (run_id, path) DO UPDATE SET message = excluded.message, "
    "schema = excluded.schema, answer = excluded.answer, "
    "created_ms = excluded.created_ms",
  [ST_WAIT_LIST] =
    "SELECT run_id, path, message, schema, answer, created_ms FROM waits "
    "WHERE run_id = ?1 ORDER BY created_ms, rowid",
  [ST_WAIT_ANSWER] =
    "UPDATE waits SET answer = ?3 WHERE run_id = ?1 AND path = ?2",
  [ST_WAIT_CLEAR] = "DELETE FROM waits WHERE run_id = ?1",

  [ST_CACHE_GET] = "SELECT value, expires_ms FROM cache WHERE key = ?1",
  [ST_CACHE_HIT] = "UPDATE cache SET hits = hits + 1 WHERE key = ?1",
  [ST_CACHE_DELETE] = "DELETE FROM cache WHERE key = ?1",
  [ST_CACHE_PUT] =
    "INSERT INTO cache (key, step, size, created_ms, expires_ms, hits, value) "
    "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6) "
    "ON CONFLICT (key) DO UPDATE SET step = excluded.step, "
    "size = excluded.size, created_ms = excluded.created_ms, "
    "expires_ms = excluded.expires_ms, hits = 0, value = excluded.value",
  [ST_CACHE_CLEAR] = "DELETE FROM cache",
  [ST_CACHE_CLEAR_STEP] = "DELETE FROM cache WHERE step = ?1",
  [ST_CACHE_PURGE] =
    "DELETE FROM cache WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
  [ST_CACHE_TOTAL] =
    "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(hits), 0) "
    "FROM cache",
  [ST_CACHE_BY_STEP] =
    "SELECT step, count(*), sum(size), sum(hits) FROM cache "
    "GROUP BY step ORDER BY step",
};


typedef struct sq_store {
  sl_store base;
  sqlite3 *db;
  sqlite3_stmt *stmt[ST_COUNT];   /* prepared on first use, kept */
  int busy_ms;
  int in_tx;                      /* a batch transaction is open */
  int memory;                     /* ":memory:" */
} sq_store;

/* Not an SQLite code: a listing's statement asked for again from inside
   its own callback. */
#define SQ_REENTERED  (-1000)

/* }====================================================== */


/*
** {======================================================
** SQLite backend: errors and the write batch
** =======================================================
*/

static int map_code (int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY: case SQLITE_LOCKED: return SL_STORE_EBUSY;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: return SL_STORE_ECORRUPT;
    case SQLITE_FULL: return SL_STORE_EFULL;
    case SQLITE_NOMEM: return SL_STORE_ENOMEM;
    case SQLITE_CONSTRAINT: case SQLITE_MISMATCH: case SQLITE_RANGE:
    case SQLITE_TOOBIG: return SL_STORE_EINVAL;
    default: return SL_STORE_EIO;
  }
}


/* Does a failure with this code leave a transaction that must not be
   committed? SQLite recommends an explicit ROLLBACK after these. */
static int ends_batch (int code) {
  return code == SL_STORE_EFULL || code == SL_STORE_EIO
      || code == SL_STORE_ENOMEM || code == SL_STORE_ECORRUPT;
}


/*
** Turns an SQLite failure (rc) while doing `what` into a store error:
** the message reads "<path>: <what>: <why>". A failure that ended the
** write batch (SQLite rolled it back, or it must be rolled back) discards
** the pending writes, and the message says how many.
*/
static int sq_fail (sq_store *s, int rc, const char *what, ...) {
  char doing[192], why[224];
  int code = (rc == SQ_REENTERED) ? SL_STORE_EINVAL : map_code(rc);
  int lost = -1;
  va_list ap;
  va_start(ap, what);
  vsnprintf(doing, sizeof doing, what, ap);
  va_end(ap);
  if (rc == SQ_REENTERED)
    snprintf(why, sizeof why, "called again from its own listing callback");
  else if (code == SL_STORE_EBUSY)
    snprintf(why, sizeof why, "the database is locked by another process "
             "or connection (waited %d ms)", s->busy_ms);
  else if (code == SL_STORE_ECORRUPT)
    snprintf(why, sizeof why, "the file is damaged or is not a database "
             "(%s)", sqlite3_errmsg(s->db));
  else if ((rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_IOERR) {
    int e = sqlite3_system_errno(s->db);
    snprintf(why, sizeof why, "%s%s%s%s", sqlite3_errmsg(s->db),
             e ? " (" : "", e ? strerror(e) : "", e ? ")" : "");
  }
  else
    snprintf(why, sizeof why, "%s", sqlite3_errmsg(s->db));
  if (s->in_tx) {
    if (sqlite3_get_autocommit(s->db))
      lost = s->base.pending;  /* SQLite rolled the batch back itself */
    else if (ends_batch(code)) {
      sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
      lost = s->base.pending;
    }
    if (lost >= 0) {
      s->in_tx = 0;
      s->base.pending = 0;
    }
  }
  if (lost >= 0)
    return sl_store_seterr(&s->base, code, "%s: %s; the %d write%s since "
                           "the last flush %s discarded", doing, why, lost,
                           lost == 1 ? "" : "s", lost == 1 ? "was" : "were");
  return sl_store_seterr(&s->base, code, "%s: %s", doing, why);
}


/* Gets statement id, preparing it on first use. SQ_REENTERED when it is
   still stepping (a listing whose callback asked for it again). */
static int sq_stmt (sq_store *s, int id, sqlite3_stmt **st) {
  if (s->stmt[id] == NULL) {
    int rc = sqlite3_prepare_v3(s->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                &s->stmt[id], NULL);
    if (rc != SQLITE_OK)
      return rc;
  }
  else if (sqlite3_stmt_busy(s->stmt[id]))
    return SQ_REENTERED;
  *st = s->stmt[id];
  return SQLITE_OK;
}


/* Gets statement id for a write, opening the batch if none is open. */
static int sq_write_stmt (sq_store *s, int id, sqlite3_stmt **st) {
  int rc = sq_stmt(s, id, st);
  if (rc == SQLITE_OK && !s->in_tx) {
    sqlite3_stmt *begin;
    if ((rc = sq_stmt(s, ST_BEGIN, &begin)) != SQLITE_OK)
      return rc;
    rc = sqlite3_step(begin);
    sqlite3_reset(begin);
    if (rc != SQLITE_DONE)
      return rc;
    s->in_tx = 1;
    rc = SQLITE_OK;
  }
  return rc;
}


/* Runs a bound write statement to its end and counts it as pending.
   Returns SQLITE_OK or the failure's code. */
static int sq_step_write (sq_store *s, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);  /* keeps rc's message on the connection */
  if (rc != SQLITE_DONE)
    return rc;
  s->base.pending++;
  return SQLITE_OK;
}


/*
** Binding. The strings are bound SQLITE_STATIC: every statement is stepped
** and reset before its caller's strings can go away, and every use binds
** all its parameters again. Bind failures (out of memory, too big) are
** collected by OR-ing the codes and read back from the connection.
*/
static int bind_text (sqlite3_stmt *st, int i, const char *v) {
  return v != NULL ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC)
                   : sqlite3_bind_null(st, i);
}

/* Binds an int64 where 0 stands for NULL (an end time, an expiry). */
static int bind_time (sqlite3_stmt *st, int i, int64_t v) {
  return v != 0 ? sqlite3_bind_int64(st, i, v) : sqlite3_bind_null(st, i);
}

static int bind_failed (sq_store *s, int rc) {
  int e;
  if (rc == SQLITE_OK)
    return SQLITE_OK;
  e = sqlite3_extended_errcode(s->db);
  return e != SQLITE_OK ? e : SQLITE_ERROR;
}

static const char *column_text (sqlite3_stmt *st, int i) {
  return (const char *)sqlite3_column_text(st, i);
}


static int sq_flush (sl_store *b) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc;
  if (!s->in_tx)
    return 0;
  if ((rc = sq_stmt(s, ST_COMMIT, &st)) == SQLITE_OK) {
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
      s->in_tx = 0;
      s->base.pending = 0;
      return 0;
    }
  }
  return sq_fail(s, rc, "committing %d write%s", s->base.pending,
                 s->base.pending == 1 ? "" : "s");
}

/* }====================================================== */


/*
** {======================================================
** SQLite backend: records out of rows
** =======================================================
*/

/*
** Copies the record of `size` bytes at rec, with the strings its fields at
** the n offsets point to, into one allocation whose fields point into it.
** Returns NULL when memory runs out.
*/
static void *pack_record (const void *rec, size_t size, const size_t *offs,
                          int n) {
  size_t total = size;
  char *mem, *p;
  int i;
  for (i = 0; i < n; i++) {
    const char *str = *(const char *const *)((const char *)rec + offs[i]);
    if (str != NULL)
      total += strlen(str) + 1;
  }
  if ((mem = malloc(total)) == NULL)
    return NULL;
  memcpy(mem, rec, size);
  p = mem + size;
  for (i = 0; i < n; i++) {
    const char *str = *(const char *const *)((const char *)rec + offs[i]);
    if (str != NULL) {
      size_t len = strlen(str) + 1;
      memcpy(p, str, len);
      *(const char **)(mem + offs[i]) = p;
      p += len;
    }
  }
  return mem;
}

static const size_t run_strings[] = {
  offsetof(sl_store_run, id), offsetof(sl_store_run, pipeline),
  offsetof(sl_store_run, file), offsetof(sl_store_run, def_hash),
  offsetof(sl_store_run, status), offsetof(sl_store_run, input),
  offsetof(sl_store_run, output), offsetof(sl_store_run, error),
  offsetof(sl_store_run, usage), offsetof(sl_store_run, budget),
  offsetof(sl_store_run, options)
};

static const size_t checkpoint_strings[] = {
  offsetof(sl_store_checkpoint, run_id), offsetof(sl_store_checkpoint, path),
  offsetof(sl_store_checkpoint, parent), offsetof(sl_store_checkpoint, name),
  offsetof(sl_store_checkpoint, kind), offsetof(sl_store_checkpoint, key),
  offsetof(sl_store_checkpoint, status),
  offsetof(sl_store_checkpoint, output), offsetof(sl_store_checkpoint, state),
  offsetof(sl_store_checkpoint, usage), offsetof(sl_store_checkpoint, error),
  offsetof(sl_store_checkpoint, changes)
};

#define COUNT(a)  ((int)(sizeof (a) / sizeof (a)[0]))


/* Reads a row of RUN_COLS; the strings live until the statement moves. */
static void row_to_run (sqlite3_stmt *st, sl_store_run *r) {
  r->id = column_text(st, 0);
  r->pipeline = column_text(st, 1);
  r->file = column_text(st, 2);
  r->def_hash = column_text(st, 3);
  r->status = column_text(st, 4);
  r->input = column_text(st, 5);
  r->output = column_text(st, 6);
  r->error = column_text(st, 7);
  r->usage = column_text(st, 8);
  r->budget = column_text(st, 9);
  r->started_ms = sqlite3_column_int64(st, 10);
  r->ended_ms = sqlite3_column_int64(st, 11);  /* NULL reads as 0 */
  r->options = column_text(st, 12);
}


/* Reads a row of CP_COLS; the strings live until the statement moves. */
static void row_to_checkpoint (sqlite3_stmt *st, sl_store_checkpoint *c) {
  c->run_id = column_text(st, 0);
  c->path = column_text(st, 1);
  c->parent = column_text(st, 2);
  c->name = column_text(st, 3);
  c->kind = column_text(st, 4);
  c->key = column_text(st, 5);
  c->status = column_text(st, 6);
  c->attempts = sqlite3_column_int(st, 7);
  c->cached = sqlite3_column_int(st, 8);
  c->output = column_text(st, 9);
  c->state = column_text(st, 10);
  c->usage = column_text(st, 11);
  c->error = column_text(st, 12);
  c->t0 = sqlite3_column_int64(st, 13);
  c->t1 = sqlite3_column_int64(st, 14);
  c->changes = column_text(st, 15);
}

/* }====================================================== */


/*
** {======================================================
** SQLite backend: runs
** =======================================================
*/

static int sq_run_begin (sl_store *b, const sl_store_run *r) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_RUN_BEGIN, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, r->id) | bind_text(st, 2, r->pipeline)
       | bind_text(st, 3, r->file) | bind_text(st, 4, r->def_hash)
       | bind_text(st, 5, r->status) | bind_text(st, 6, r->input)
       | bind_text(st, 7, r->output) | bind_text(st, 8, r->error)
       | bind_text(st, 9, r->usage) | bind_text(st, 10, r->budget)
       | sqlite3_bind_int64(st, 11, r->started_ms)
       | bind_time(st, 12, r->ended_ms) | bind_text(st, 13, r->options);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if ((rc & 0xff) == SQLITE_CONSTRAINT && rc != SQLITE_CONSTRAINT_CHECK)
    return sq_fail(s, rc, "recording run %s: a run with this id exists "
                   "already", r->id);
  if (rc == SQLITE_CONSTRAINT_CHECK)
    return sq_fail(s, rc, "recording run %s: bad status '%s'", r->id,
                   r->status);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "recording run %s", r->id);
  return 0;
}


static int sq_run_update (sl_store *b, const char *id, const char *status,
                          const char *output, const char *error,
                          const char *usage, int64_t ended_ms) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_RUN_UPDATE, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, id) | bind_text(st, 2, status)
       | bind_text(st, 3, output) | bind_text(st, 4, error)
       | bind_text(st, 5, usage) | bind_time(st, 6, ended_ms);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc == SQLITE_CONSTRAINT_CHECK)
    return sq_fail(s, rc, "updating run %s: bad status '%s'", id, status);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "updating run %s", id);
  if (sqlite3_changes(s->db) == 0)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "updating run %s: no such "
                           "run", id);
  return 0;
}


static int sq_run_get (sl_store *b, const char *id, sl_store_run **out) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sl_store_run r;
  int rc = sq_stmt(s, ST_RUN_GET, &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "reading run %s", id);
  if ((rc = bind_failed(s, bind_text(st, 1, id))) == SQLITE_OK
      && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    row_to_run(st, &r);
    *out = pack_record(&r, sizeof r, run_strings, COUNT(run_strings));
    sqlite3_reset(st);
    if (*out == NULL)
      return sl_store_seterr(b, SL_STORE_ENOMEM, "reading run %s: out of "
                             "memory", id);
    return 0;
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no run %s", id);
  return sq_fail(s, rc, "reading run %s", id);
}


static int sq_run_list (sl_store *b, const sl_store_run_filter *f,
                        sl_store_run_cb cb, void *ud) {
  static const int which[2][2] = {
    { ST_RUN_LIST, ST_RUN_LIST_PIPELINE },
    { ST_RUN_LIST_STATUS, ST_RUN_LIST_BOTH }
  };
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sl_store_run r;
  int stop = 0;
  int rc = sq_stmt(s, which[f->status != NULL][f->pipeline != NULL], &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "listing runs");
  rc = (f->status ? bind_text(st, 1, f->status) : 0)
     | (f->pipeline ? bind_text(st, 2, f->pipeline) : 0)
     | sqlite3_bind_int64(st, 3, f->limit > 0 ? f->limit : -1)
     | sqlite3_bind_int64(st, 4, f->offset)
     | (f->before ? bind_text(st, 5, f->before) : sqlite3_bind_null(st, 5));
  if ((rc = bind_failed(s, rc)) == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      row_to_run(st, &r);
      if ((stop = cb(ud, &r)) != 0)
        break;
    }
  }
  sqlite3_reset(st);
  if (stop != 0)
    return stop;
  if (rc != SQLITE_DONE)
    return sq_fail(s, rc, "listing runs");
  return 0;
}


static int sq_run_delete (sl_store *b, const char *id) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_RUN_DELETE, &st);
  if (rc == SQLITE_OK && (rc = bind_failed(s, bind_text(st, 1, id)))
      == SQLITE_OK)
    rc = sq_step_write(s, st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "deleting run %s", id);
  if (sqlite3_changes(s->db) == 0)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "deleting run %s: no such "
                           "run", id);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** SQLite backend: checkpoints
** =======================================================
*/

static int sq_checkpoint_put (sl_store *b, const sl_store_checkpoint *c) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_CP_PUT, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, c->run_id) | bind_text(st, 2, c->path)
       | bind_text(st, 3, c->parent) | bind_text(st, 4, c->name)
       | bind_text(st, 5, c->kind) | bind_text(st, 6, c->key)
       | bind_text(st, 7, c->status) | sqlite3_bind_int(st, 8, c->attempts)
       | sqlite3_bind_int(st, 9, c->cached != 0)
       | bind_text(st, 10, c->output) | bind_text(st, 11, c->state)
       | bind_text(st, 12, c->usage) | bind_text(st, 13, c->error)
       | sqlite3_bind_int64(st, 14, c->t0) | sqlite3_bind_int64(st, 15, c->t1)
       | bind_text(st, 16, c->changes);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
    return sq_fail(s, rc, "recording checkpoint %s of run %s: no such run",
                   c->path, c->run_id);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "recording checkpoint %s of run %s", c->path,
                   c->run_id);
  return 0;
}


static int sq_checkpoint_get (sl_store *b, const char *run_id,
                              const char *path, sl_store_checkpoint **out) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sl_store_checkpoint c;
  int rc = sq_stmt(s, ST_CP_GET, &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "reading checkpoint %s of run %s", path, run_id);
  rc = bind_failed(s, bind_text(st, 1, run_id) | bind_text(st, 2, path));
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    row_to_checkpoint(st, &c);
    *out = pack_record(&c, sizeof c, checkpoint_strings,
                       COUNT(checkpoint_strings));
    sqlite3_reset(st);
    if (*out == NULL)
      return sl_store_seterr(b, SL_STORE_ENOMEM, "reading checkpoint %s of "
                             "run %s: out of memory", path, run_id);
    return 0;
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no checkpoint %s in run "
                           "%s", path, run_id);
  return sq_fail(s, rc, "reading checkpoint %s of run %s", path, run_id);
}


static int sq_checkpoint_list (sl_store *b, const char *run_id,
                               sl_store_checkpoint_cb cb, void *ud) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sl_store_checkpoint c;
  int stop = 0;
  int rc = sq_stmt(s, ST_CP_LIST, &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "listing checkpoints of run %s", run_id);
  if ((rc = bind_failed(s, bind_text(st, 1, run_id))) == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      row_to_checkpoint(st, &c);
      if ((stop = cb(ud, &c)) != 0)
        break;
    }
  }
  sqlite3_reset(st);
  if (stop != 0)
    return stop;
  if (rc != SQLITE_DONE)
    return sq_fail(s, rc, "listing checkpoints of run %s", run_id);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** SQLite backend: waits
** =======================================================
*/

static int sq_wait_put (sl_store *b, const sl_store_wait *w) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_WAIT_PUT, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, w->run_id) | bind_text(st, 2, w->path)
       | bind_text(st, 3, w->message) | bind_text(st, 4, w->schema)
       | bind_text(st, 5, w->answer)
       | sqlite3_bind_int64(st, 6, w->created_ms);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
    return sq_fail(s, rc, "recording wait %s of run %s: no such run",
                   w->path, w->run_id);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "recording wait %s of run %s", w->path, w->run_id);
  return 0;
}


static int sq_wait_list (sl_store *b, const char *run_id, sl_store_wait_cb cb,
                         void *ud) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sl_store_wait w;
  int stop = 0;
  int rc = sq_stmt(s, ST_WAIT_LIST, &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "listing waits of run %s", run_id);
  if ((rc = bind_failed(s, bind_text(st, 1, run_id))) == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      w.run_id = column_text(st, 0);
      w.path = column_text(st, 1);
      w.message = column_text(st, 2);
      w.schema = column_text(st, 3);
      w.answer = column_text(st, 4);
      w.created_ms = sqlite3_column_int64(st, 5);
      if ((stop = cb(ud, &w)) != 0)
        break;
    }
  }
  sqlite3_reset(st);
  if (stop != 0)
    return stop;
  if (rc != SQLITE_DONE)
    return sq_fail(s, rc, "listing waits of run %s", run_id);
  return 0;
}


static int sq_wait_answer (sl_store *b, const char *run_id, const char *path,
                           const char *answer) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_WAIT_ANSWER, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, run_id) | bind_text(st, 2, path)
       | bind_text(st, 3, answer);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "answering wait %s of run %s", path, run_id);
  if (sqlite3_changes(s->db) == 0)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "answering wait %s of run "
                           "%s: no such wait", path, run_id);
  return 0;
}


static int sq_wait_clear (sl_store *b, const char *run_id, int64_t *removed) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_WAIT_CLEAR, &st);
  if (rc == SQLITE_OK && (rc = bind_failed(s, bind_text(st, 1, run_id)))
      == SQLITE_OK)
    rc = sq_step_write(s, st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "clearing the waits of run %s", run_id);
  if (removed != NULL)
    *removed = sqlite3_changes64(s->db);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** SQLite backend: cache
** =======================================================
*/

static int bind_key (sqlite3_stmt *st, const unsigned char *key) {
  return sqlite3_bind_blob(st, 1, key, SL_STORE_KEYLEN, SQLITE_STATIC);
}


/* Runs one of the keyed cache writes (a hit, a delete). */
static int sq_cache_keyed_write (sq_store *s, int id,
                                 const unsigned char *key) {
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, id, &st);
  if (rc == SQLITE_OK && (rc = bind_failed(s, bind_key(st, key)))
      == SQLITE_OK)
    rc = sq_step_write(s, st);
  return rc;
}


static int sq_cache_get (sl_store *b, const unsigned char *key,
                         int64_t now_ms, sl_buf *out) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  size_t oldlen = out->len;
  int expired = 0, nomem = 0;
  int rc = sq_stmt(s, ST_CACHE_GET, &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "reading the cache");
  if ((rc = bind_failed(s, bind_key(st, key))) == SQLITE_OK
      && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    expired = sqlite3_column_type(st, 1) != SQLITE_NULL
              && sqlite3_column_int64(st, 1) <= now_ms;
    if (!expired) {
      const char *v = column_text(st, 0);
      nomem = sl_buf_add(out, v, (size_t)sqlite3_column_bytes(st, 0)) != 0;
    }
  }
  sqlite3_reset(st);
  if (nomem)
    return sl_store_seterr(b, SL_STORE_ENOMEM, "reading the cache: out of "
                           "memory");
  if (rc == SQLITE_DONE)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no cache entry for this "
                           "key");
  if (rc != SQLITE_ROW)
    return sq_fail(s, rc, "reading the cache");
  if (expired) {
    if ((rc = sq_cache_keyed_write(s, ST_CACHE_DELETE, key)) != SQLITE_OK)
      return sq_fail(s, rc, "deleting an expired cache entry");
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "the cache entry for this "
                           "key has expired");
  }
  if ((rc = sq_cache_keyed_write(s, ST_CACHE_HIT, key)) != SQLITE_OK) {
    out->len = oldlen;
    if (out->data != NULL)
      out->data[oldlen] = '\0';
    return sq_fail(s, rc, "counting a cache hit");
  }
  return 0;
}


static int sq_cache_put (sl_store *b, const unsigned char *key,
                         const char *step, const char *value,
                         int64_t now_ms, int64_t expires_ms) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_CACHE_PUT, &st);
  if (rc == SQLITE_OK) {
    rc = bind_key(st, key) | bind_text(st, 2, step)
       | sqlite3_bind_int64(st, 3, (sqlite3_int64)strlen(value))
       | sqlite3_bind_int64(st, 4, now_ms) | bind_time(st, 5, expires_ms)
       | bind_text(st, 6, value);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "storing a cache entry of step %s", step);
  return 0;
}


static int sq_cache_clear (sl_store *b, const char *step, int64_t *removed) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, step ? ST_CACHE_CLEAR_STEP : ST_CACHE_CLEAR, &st);
  if (rc == SQLITE_OK && (rc = bind_failed(s, step ? bind_text(st, 1, step)
                                                   : SQLITE_OK)) == SQLITE_OK)
    rc = sq_step_write(s, st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "clearing the cache");
  if (removed != NULL)
    *removed = sqlite3_changes64(s->db);
  return 0;
}


static int sq_cache_purge (sl_store *b, int64_t now_ms, int64_t *removed) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_CACHE_PURGE, &st);
  if (rc == SQLITE_OK && (rc = bind_failed(s, sqlite3_bind_int64(st, 1,
                                                                 now_ms)))
      == SQLITE_OK)
    rc = sq_step_write(s, st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "removing expired cache entries");
  if (removed != NULL)
    *removed = sqlite3_changes64(s->db);
  return 0;
}


static void row_to_stats (sqlite3_stmt *st, int first,
                          sl_store_cache_totals *out) {
  out->entries = sqlite3_column_int64(st, first);
  out->bytes = sqlite3_column_int64(st, first + 1);
  out->hits = sqlite3_column_int64(st, first + 2);
}


static int sq_cache_stats (sl_store *b, sl_store_cache_totals *total,
                           sl_store_cache_step_cb cb, void *ud) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sl_store_cache_totals one;
  int stop = 0;
  int rc;
  if (total != NULL) {
    if ((rc = sq_stmt(s, ST_CACHE_TOTAL, &st)) != SQLITE_OK)
      return sq_fail(s, rc, "reading cache statistics");
    if ((rc = sqlite3_step(st)) == SQLITE_ROW)
      row_to_stats(st, 0, total);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
      return sq_fail(s, rc, "reading cache statistics");
  }
  if (cb == NULL)
    return 0;
  if ((rc = sq_stmt(s, ST_CACHE_BY_STEP, &st)) != SQLITE_OK)
    return sq_fail(s, rc, "reading cache statistics");
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    row_to_stats(st, 1, &one);
    if ((stop = cb(ud, column_text(st, 0), &one)) != 0)
      break;
  }
  sqlite3_reset(st);
  if (stop != 0)
    return stop;
  if (rc != SQLITE_DONE)
    return sq_fail(s, rc, "reading cache statistics");
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** SQLite backend: opening and closing
** =======================================================
*/

/* Takes every path; it is the last backend asked. */
static int sq_accepts (const char *path) {
  (void)path;
  return 1;
}


/*
** Creates the directories above the file at path, like `mkdir -p
** $(dirname path)`. Returns 0, or -1 with errno set and the directory that
** failed left in dir (dirlen bytes).
*/
static int make_parents (const char *path, char *dir, size_t dirlen) {
  size_t len = strlen(path);
  char *p;
  if (len + 1 > dirlen) {
    errno = ENAMETOOLONG;
    snprintf(dir, dirlen, "%s", path);
    return -1;
  }
  memcpy(dir, path, len + 1);
  for (p = dir + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  return 0;
}


/* Runs a query that gives one integer. */
static int query_int (sqlite3 *db, const char *q, int64_t *v) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, q, -1, &st, NULL);
  if (rc != SQLITE_OK)
    return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *v = sqlite3_column_int64(st, 0);
    rc = SQLITE_OK;
  }
  else if (rc == SQLITE_DONE)
    rc = SQLITE_ERROR;
  sqlite3_finalize(st);
  return rc;
}


/*
** Runs PRAGMA quick_check, which reads every page: a file that fails it
** is refused before anything is written to it.
*/
static int sq_quick_check (sq_store *s) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const char *res = column_text(st, 0);
      if (res == NULL || strcmp(res, "ok") != 0) {
        char why[256], *p;
        snprintf(why, sizeof why, "%s", res ? res : "no answer");
        for (p = why; (p = strchr(p, '\n')) != NULL; )
          *p = ' ';  /* one line per message */
        sl_store_seterr(&s->base, SL_STORE_ECORRUPT, "the file is damaged "
                        "(quick_check: %s)", why);
        sqlite3_finalize(st);
        return SL_STORE_ECORRUPT;
      }
      rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
  }
  return rc == SQLITE_OK ? 0 : sq_fail(s, rc, "checking the file");
}


/*
** Brings the file from schema version `from` to the newest, all in one
** transaction. Another process may have migrated since `from` was read,
** so the version is read again once the write lock is held.
*/
static int sq_migrate (sq_store *s, int64_t from) {
  int64_t v = from;
  int rc;
  char setv[48];
  if (from >= NMIGRATIONS)
    return 0;
  /* A migration may rebuild a table others refer to: dropping the old one
     must not cascade. Foreign keys can only be switched outside a
     transaction; they are checked before the commit instead. */
  if ((rc = sqlite3_exec(s->db, "PRAGMA foreign_keys = OFF", NULL, NULL,
                         NULL)) != SQLITE_OK
      || (rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL))
         != SQLITE_OK)
    return sq_fail(s, rc, "migrating the schema");
  rc = query_int(s->db, "PRAGMA user_version", &v);
  for (; rc == SQLITE_OK && v < NMIGRATIONS; v++) {
    snprintf(setv, sizeof setv, "PRAGMA user_version = %d", (int)v + 1);
    rc = sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL);
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(s->db, setv, NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK) {
    int64_t broken = 0;
    rc = query_int(s->db, "SELECT count(*) FROM pragma_foreign_key_check",
                   &broken);
    if (rc == SQLITE_OK && broken != 0)
      rc = SQLITE_CORRUPT;
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(s->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    /* A migration that does not apply means the tables are not what the
       version says: the file is not a store this code can use. */
    int code = (rc == SQLITE_ERROR) ? SQLITE_CORRUPT : rc;
    char why[160];
    snprintf(why, sizeof why, "%s", sqlite3_errmsg(s->db));
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(s->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
    if (code == SQLITE_CORRUPT)
      return sl_store_seterr(&s->base, SL_STORE_ECORRUPT, "migration %d "
                             "failed, the file is left as it was: %s",
                             (int)v, why);
    return sq_fail(s, code, "migration %d failed, the file is left as it "
                   "was", (int)v);
  }
  return 0;
}


/*
** Everything open does after creating the handle: open the connection, set
** it up, check what the file is, and migrate. Sets the message on failure.
*/
static int sq_setup (sq_store *s, const sl_store_options *o) {
  int64_t appid = 0, version = 0, ntables = 0;
  int rc;
  if (!s->memory && strchr(s->base.path, '/') != NULL) {
    char dir[4096];
    if (make_parents(s->base.path, dir, sizeof dir) != 0)
      return sl_store_seterr(&s->base, SL_STORE_EIO, "cannot create the "
                             "directory %s: %s", dir, strerror(errno));
  }
  rc = sqlite3_open_v2(s->base.path, &s->db, SQLITE_OPEN_READWRITE
                       | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
                       | SQLITE_OPEN_EXRESCODE, NULL);
  if (s->db == NULL)
    return sl_store_seterr(&s->base, SL_STORE_ENOMEM, "opening: out of "
                           "memory");
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "cannot open");
  sqlite3_busy_timeout(s->db, s->busy_ms);
  /* Closing does not copy the write-ahead log into the file (three syncs
     for a short-lived process); the next writer's checkpoints do. */
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);

  /* What is this file? Reading the header finds garbage (NOTADB). */
  if ((rc = query_int(s->db, "PRAGMA application_id", &appid)) != SQLITE_OK
      || (rc = query_int(s->db, "PRAGMA user_version", &version))
         != SQLITE_OK
      || (rc = query_int(s->db, "SELECT count(*) FROM sqlite_schema",
                         &ntables)) != SQLITE_OK)
    return sq_fail(s, rc, "reading the file");
  if (appid != SQ_APPLICATION_ID && (appid != 0 || version != 0
                                     || ntables != 0))
    return sl_store_seterr(&s->base, SL_STORE_ECORRUPT, "is an SQLite "
                           "database, but not a sluice store");
  if (version > NMIGRATIONS)
    return sl_store_seterr(&s->base, SL_STORE_EVERSION, "was written by a "
                           "newer sluice (schema version %d, this one knows "
                           "up to %d)", (int)version, NMIGRATIONS);
  if (!s->memory && ntables > 0 && o != NULL && o->full_check) {
    if ((rc = sq_quick_check(s)) != 0)
      return rc;
  }

  if (!s->memory) {
    /* The journal mode is kept in the file; this answers with the mode,
       which stays "delete" where WAL cannot work (no shared memory). */
    if ((rc = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", NULL, NULL,
                           NULL)) != SQLITE_OK
        || (rc = sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL", NULL,
                              NULL, NULL)) != SQLITE_OK)
      return sq_fail(s, rc, "setting the journal mode");
  }
  if ((rc = sqlite3_exec(s->db, "PRAGMA foreign_keys = ON", NULL, NULL,
                         NULL)) != SQLITE_OK)
    return sq_fail(s, rc, "turning foreign keys on");
  if (o != NULL && o->max_bytes > 0) {
    int64_t page = 4096, pages;
    char q[64];
    if ((rc = query_int(s->db, "PRAGMA page_size", &page)) != SQLITE_OK)
      return sq_fail(s, rc, "reading the page size");
    pages = o->max_bytes / page;
    snprintf(q, sizeof q, "PRAGMA max_page_count = %lld",
             (long long)(pages > 0 ? pages : 1));
    if ((rc = query_int(s->db, q, &pages)) != SQLITE_OK)
      return sq_fail(s, rc, "limiting the file's size");
  }
  return sq_migrate(s, version);
}


static void sq_free (sq_store *s) {
  int i;
  for (i = 0; i < ST_COUNT; i++)
    sqlite3_finalize(s->stmt[i]);
  sqlite3_close(s->db);  /* NULL is a no-op */
  sl_store_base_free(&s->base);
  free(s);
}


static int sq_open (sl_store **out, const char *path,
                    const sl_store_options *o, char *err, size_t errlen) {
  sq_store *s = calloc(1, sizeof *s);
  int rc;
  if (s == NULL || sl_store_base_init(&s->base, &sqlite_ops, path, o) != 0) {
    free(s);
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s: out of memory", path);
    return SL_STORE_ENOMEM;
  }
  s->busy_ms = (o != NULL && o->busy_timeout_ms > 0) ? o->busy_timeout_ms
                                                      : DEFAULT_BUSY_MS;
  s->memory = strcmp(path, ":memory:") == 0;
  if ((rc = sq_setup(s, o)) != 0) {
    copy_message(err, errlen, s->base.errmsg);
    sq_free(s);
    return rc;
  }
  *out = &s->base;
  return 0;
}


/* Frees the store; a batch still open (its flush failed) is rolled back
   by closing the connection. */
static void sq_close (sl_store *b) {
  sq_free((sq_store *)b);
}

/* }====================================================== */


static const struct sl_store_ops sqlite_ops = {
  "sqlite",
  sq_accepts,
  sq_open,
  sq_close,
  sq_flush,
  sq_run_begin,
  sq_run_update,
  sq_run_get,
  sq_run_list,
  sq_run_delete,
  sq_checkpoint_put,
  sq_checkpoint_get,
  sq_checkpoint_list,
  sq_wait_put,
  sq_wait_list,
  sq_wait_answer,
  sq_wait_clear,
  sq_cache_get,
  sq_cache_put,
  sq_cache_clear,
  sq_cache_purge,
  sq_cache_stats,
};
