/*
** The SQLite backend of the store.
**
** It keeps one connection in WAL mode with synchronous=NORMAL: a commit
** appends to the WAL without waiting for the disk, and the WAL is synced at
** checkpoints, so a crash of the process loses nothing committed and a
** crash of the machine loses at most the last commits, never the file's
** consistency. Writes run inside one open transaction (BEGIN IMMEDIATE,
** taken at the first write after a commit) and every statement on a hot
** path is prepared once and kept.
*/

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <fcntl.h>
#include <unistd.h>

#include <sqlite3.h>
#include <xxhash.h>

#include "store.h"
#include "journal.h"
#include "owner.h"

#define DEFAULT_BUSY_MS  5000

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
  "ALTER TABLE checkpoints ADD COLUMN changes TEXT;",

  /* 3: owners and leases (a run is executed by one process at a time, and
     every change of owner bumps its epoch), and values stored once by
     content hash: a run's input and output, a checkpoint's output and
     changes above a size live in blobs, and the row refers to them. */
  "ALTER TABLE runs ADD COLUMN owner TEXT;"
  "ALTER TABLE runs ADD COLUMN lease_ms INTEGER;"
  "ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;"
  "ALTER TABLE runs ADD COLUMN input_ref BLOB;"
  "ALTER TABLE runs ADD COLUMN output_ref BLOB;"
  "ALTER TABLE checkpoints ADD COLUMN output_ref BLOB;"
  "ALTER TABLE checkpoints ADD COLUMN changes_ref BLOB;"
  "CREATE TABLE blobs ("
  "  hash  BLOB NOT NULL PRIMARY KEY CHECK (length(hash) = 16),"
  "  size  INTEGER NOT NULL,"
  "  data  TEXT NOT NULL"
  ") STRICT;"
  /* Step records are appended to a journal, one row per run and commit
     (a batch of records in the backend's own binary form), not one row per
     step: recording a step costs an append, not an index insert. */
  "CREATE TABLE journal ("
  "  run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
  "  seq     INTEGER NOT NULL,"
  "  data    BLOB NOT NULL,"
  "  PRIMARY KEY (run_id, seq)"
  ") STRICT, WITHOUT ROWID;"
  /* Which runs' journals refer to which blobs, for pruning. */
  "CREATE TABLE blob_refs ("
  "  run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
  "  hash    BLOB NOT NULL,"
  "  PRIMARY KEY (run_id, hash)"
  ") STRICT, WITHOUT ROWID;",

  /* 4: what the store knows of itself: the dead owners whose crash its
     whole-file check has seen already. */
  "CREATE TABLE meta ("
  "  key    TEXT NOT NULL PRIMARY KEY,"
  "  value  TEXT"
  ") STRICT, WITHOUT ROWID;",

  /* 5: journal records in their second form (a count of strings, and the
     step's log records among them), which code that knows version 4 could
     not read: the version tells it the store is newer than it. */
  "INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_record', '2');",

  /* 6: the queue: the queue a submitted run waits in, and why a queued run
     is not being executed; workers find the oldest by queue and status. */
  "ALTER TABLE runs ADD COLUMN queue TEXT;"
  "ALTER TABLE runs ADD COLUMN waiting_for TEXT;"
  "CREATE INDEX runs_by_queue ON runs (queue, status, id) WHERE queue IS NOT NULL;",

  /* 7: when a parked or paused run's first wait is due (a durable sleep,
     a person's timeout): workers claim the due ones of their queue. */
  "ALTER TABLE runs ADD COLUMN due_ms INTEGER;"
  "CREATE INDEX runs_by_due ON runs (queue, due_ms) WHERE due_ms IS NOT NULL;"
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
  ST_RUN_CLAIM, ST_RUN_RENEW, ST_RUN_FINISH, ST_RUN_EXISTS, ST_BLOB_PUT,
  ST_CP_STATUS, ST_JOURNAL_PUT, ST_JOURNAL_LAST, ST_JOURNAL_READ, ST_BLOB_GET,
  ST_BLOB_REF, ST_RUN_LIST_QUEUE, ST_RUN_LIST_TEXT, ST_QUEUED, ST_DUE, ST_TAKEOVERS, ST_RUN_TAKE, ST_RUN_REQUEUE,
  ST_COUNT
};

/* Column lists, in the order row_to_run / row_to_checkpoint read them. A
   value kept in blobs is read through its reference. */
#define BLOB_OF(ref) "(SELECT data FROM blobs WHERE hash = " ref ")"
#define RUN_INS_COLS "id, pipeline, file, def_hash, status, input, output, " \
                     "error, usage, budget, started_ms, ended_ms, options, " \
                     "owner, lease_ms, epoch, input_ref, output_ref, queue, " \
                     "waiting_for"
#define RUN_COLS "id, pipeline, file, def_hash, status, " \
                 "coalesce(input, " BLOB_OF("input_ref") "), " \
                 "coalesce(output, " BLOB_OF("output_ref") "), " \
                 "error, usage, budget, started_ms, ended_ms, options, " \
                 "owner, lease_ms, epoch, queue, waiting_for, due_ms"
/* Listings leave large values where they are. */
#define RUN_LIST_COLS "id, pipeline, file, def_hash, status, input, output, " \
                      "error, usage, budget, started_ms, ended_ms, options, " \
                      "owner, lease_ms, epoch, queue, waiting_for, due_ms"
#define CP_INS_COLS "run_id, path, parent, name, kind, key, status, attempts, " \
                    "cached, output, state, usage, error, t0, t1, changes, " \
                    "output_ref, changes_ref"
#define CP_COLS "run_id, path, parent, name, kind, key, status, attempts, " \
                "cached, coalesce(output, " BLOB_OF("output_ref") "), state, " \
                "usage, error, t0, t1, coalesce(changes, " BLOB_OF("changes_ref") ")"
/* Newest first: the ULID-like ids sort by start time. */
#define RUN_ORDER " ORDER BY id DESC LIMIT ?3 OFFSET ?4"
/* Older than a given run (paging), or any when ?5 is NULL. */
#define RUN_BEFORE "(?5 IS NULL OR id < ?5)"

static const char *const sql[ST_COUNT] = {
  [ST_BEGIN] = "BEGIN IMMEDIATE",
  [ST_COMMIT] = "COMMIT",

  [ST_RUN_BEGIN] =
    "INSERT INTO runs (" RUN_INS_COLS ") "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
    "?16, ?17, ?18, ?19, ?20)",
  [ST_RUN_UPDATE] =
    "UPDATE runs SET status = ?2, output = ?3, error = ?4, usage = ?5, "
    "ended_ms = ?6 WHERE id = ?1",
  [ST_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
  [ST_RUN_DELETE] = "DELETE FROM runs WHERE id = ?1",
  [ST_RUN_LIST] = "SELECT " RUN_LIST_COLS " FROM runs WHERE " RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_STATUS] =
    "SELECT " RUN_LIST_COLS " FROM runs WHERE status = ?1 AND " RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_PIPELINE] =
    "SELECT " RUN_LIST_COLS " FROM runs WHERE pipeline = ?2 AND " RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_BOTH] =
    "SELECT " RUN_LIST_COLS " FROM runs WHERE status = ?1 AND pipeline = ?2 AND "
    RUN_BEFORE RUN_ORDER,
  [ST_RUN_LIST_QUEUE] =
    "SELECT " RUN_LIST_COLS " FROM runs WHERE queue = ?6 AND (?1 IS NULL OR status = ?1) "
    "AND (?2 IS NULL OR pipeline = ?2) AND " RUN_BEFORE RUN_ORDER,
  /* A search: a scan, newest first, of what each run says of itself. */
  [ST_RUN_LIST_TEXT] =
    "SELECT " RUN_LIST_COLS " FROM runs WHERE (?6 IS NULL OR queue = ?6) "
    "AND (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR pipeline = ?2) AND "
    "instr(lower(id || ' ' || pipeline || ' ' || coalesce(error, '') || ' ' || "
    "coalesce(input, '') || ' ' || coalesce(output, '')), lower(?7)) > 0 AND "
    RUN_BEFORE RUN_ORDER,
  /* The oldest queued runs of a queue, and the active ones whose owner may
     be gone: what a worker may claim. */
  [ST_QUEUED] =
    "SELECT id, status, owner, lease_ms, epoch FROM runs "
    "WHERE queue = ?1 AND status = 'queued' ORDER BY id LIMIT ?2",
  /* Parked and paused runs whose first wait is due, the earliest first. */
  [ST_DUE] =
    "SELECT id, status, owner, lease_ms, epoch FROM runs "
    "WHERE queue = ?1 AND due_ms <= ?3 AND status IN ('waiting', 'paused') "
    "ORDER BY due_ms LIMIT ?2",
  [ST_TAKEOVERS] =
    "SELECT id, status, owner, lease_ms, epoch FROM runs "
    "WHERE queue = ?1 AND status IN ('running', 'interrupted') ORDER BY id LIMIT ?2",
  [ST_RUN_TAKE] =
    "UPDATE runs SET owner = ?2, lease_ms = ?3, epoch = epoch + 1, status = 'running', "
    "waiting_for = NULL, due_ms = NULL WHERE id = ?1 AND epoch = ?4 AND status = ?5",
  [ST_RUN_REQUEUE] =
    "UPDATE runs SET status = 'queued', owner = NULL, lease_ms = NULL, waiting_for = ?4 "
    "WHERE id = ?1 AND owner = ?2 AND epoch = ?3",

  /* An upsert rather than INSERT OR REPLACE: the row keeps its rowid, so a
     step recorded when it starts and again when it ends stays in start
     order. */
  [ST_CP_PUT] =
    "INSERT INTO checkpoints (" CP_INS_COLS ") "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
    "?16, ?17, ?18 WHERE ?19 IS NULL OR EXISTS (SELECT 1 FROM runs WHERE "
    "id = ?1 AND owner = ?19 AND epoch = ?20) "
    "ON CONFLICT (run_id, path) DO UPDATE SET parent = excluded.parent, "
    "name = excluded.name, kind = excluded.kind, key = excluded.key, "
    "status = excluded.status, attempts = excluded.attempts, "
    "cached = excluded.cached, output = excluded.output, "
    "state = excluded.state, usage = excluded.usage, "
    "error = excluded.error, t0 = excluded.t0, t1 = excluded.t1, "
    "changes = excluded.changes, output_ref = excluded.output_ref, "
    "changes_ref = excluded.changes_ref "
    /* Exactly once: a completed step is never recorded again. */
    "WHERE checkpoints.status <> 'completed'",
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

  [ST_RUN_CLAIM] =
    "UPDATE runs SET owner = ?2, lease_ms = ?3, epoch = epoch + 1, "
    "status = coalesce(?5, status), due_ms = NULL WHERE id = ?1 AND epoch = ?4",
  [ST_RUN_RENEW] =
    "UPDATE runs SET lease_ms = ?4 WHERE id = ?1 AND owner = ?2 AND epoch = ?3",
  [ST_RUN_FINISH] =
    "UPDATE runs SET status = ?2, output = ?3, error = ?4, usage = ?5, "
    "ended_ms = CASE WHEN ?2 IN ('waiting', 'paused') THEN NULL ELSE ?6 END, "
    "due_ms = CASE WHEN ?2 IN ('waiting', 'paused') THEN ?6 END, output_ref = ?7, "
    "owner = CASE WHEN ?10 THEN NULL ELSE owner END, "
    "lease_ms = CASE WHEN ?10 THEN NULL ELSE lease_ms END "
    "WHERE id = ?1 AND (?8 IS NULL OR (owner = ?8 AND epoch = ?9))",
  [ST_RUN_EXISTS] = "SELECT owner, epoch FROM runs WHERE id = ?1",
  [ST_BLOB_PUT] =
    "INSERT INTO blobs (hash, size, data) VALUES (?1, ?2, ?3) "
    "ON CONFLICT DO NOTHING",
  [ST_CP_STATUS] =
    "SELECT status FROM checkpoints WHERE run_id = ?1 AND path = ?2",
  [ST_JOURNAL_PUT] = "INSERT INTO journal (run_id, seq, data) VALUES (?1, ?2, ?3)",
  [ST_JOURNAL_LAST] = "SELECT coalesce(max(seq), 0) FROM journal WHERE run_id = ?1",
  [ST_JOURNAL_READ] = "SELECT data FROM journal WHERE run_id = ?1 ORDER BY seq",
  [ST_BLOB_GET] = "SELECT data FROM blobs WHERE hash = ?1",
  [ST_BLOB_REF] =
    "INSERT INTO blob_refs (run_id, hash) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
};


typedef struct sq_runbuf sq_runbuf;

typedef struct sq_store {
  sl_store base;
  sq_runbuf *runs;                /* the runs this connection writes steps of */
  uint64_t tx;                    /* numbers the write transactions */
  sqlite3 *db;
  sqlite3_stmt *stmt[ST_COUNT];   /* prepared on first use, kept */
  int busy_ms;
  int in_tx;                      /* a batch transaction is open */
  int memory;                     /* ":memory:" */
  int read_only;                  /* opened for reading only */
  int reader;                     /* never writes on its own (a writer does) */
} sq_store;

/* Values longer than this are kept once, in blobs, by content hash. */
#define BLOB_MIN 4096

/* Not an SQLite code: a listing's statement asked for again from inside
   its own callback. */
#define SQ_REENTERED  (-1000)

/* }====================================================== */


/*
** {======================================================
** SQLite backend: errors and the write batch
** =======================================================
*/

static void journal_discard (sq_store *s);
static int journal_write (sq_store *s);
static void journal_committed (sq_store *s);
static void journal_finished (sq_store *s, const char *id);
static void journal_discard (sq_store *s);
static int sq_run_get (sl_store *b, const char *id, sl_store_run **out);

static int map_code (int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY: case SQLITE_LOCKED: return SL_STORE_EBUSY;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: return SL_STORE_ECORRUPT;
    case SQLITE_FULL: return SL_STORE_EFULL;
    case SQLITE_NOMEM: return SL_STORE_ENOMEM;
    case SQLITE_CONSTRAINT: case SQLITE_MISMATCH: case SQLITE_RANGE:
    case SQLITE_TOOBIG: return SL_STORE_EINVAL;
    case SQLITE_READONLY: return SL_STORE_EREADONLY;
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
             "(%s); sluice store check tells what is damaged", sqlite3_errmsg(s->db));
  else if (code == SL_STORE_EREADONLY)
    snprintf(why, sizeof why, "the store is read-only (%s)", sqlite3_errmsg(s->db));
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
      journal_discard(s);
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
  if (s->read_only)
    return SQLITE_READONLY;
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
    s->tx++;
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
  /* The steps recorded in this transaction go in as one journal row per
     run, just before the commit. */
  if ((rc = journal_write(s)) != SQLITE_OK)
    return sq_fail(s, rc, "recording steps");
  if ((rc = sq_stmt(s, ST_COMMIT, &st)) == SQLITE_OK) {
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
      s->in_tx = 0;
      s->base.pending = 0;
      journal_committed(s);
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
  r->owner = column_text(st, 13);
  r->lease_ms = sqlite3_column_int64(st, 14);
  r->epoch = sqlite3_column_int64(st, 15);
  r->queue = column_text(st, 16);
  r->waiting_for = column_text(st, 17);
  r->due_ms = sqlite3_column_int64(st, 18);
}


/* Reads a row of CP_COLS; the strings live until the statement moves. */
static void row_to_checkpoint (sqlite3_stmt *st, sl_store_checkpoint *c) {
  c->owner = NULL;
  c->epoch = 0;
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
** SQLite backend: values kept once
** =======================================================
*/

/* A value to write: the text itself, or, when long, a reference to it in
   blobs (written there once, whoever refers to it). */
typedef struct sq_value {
  const char *inline_text;   /* what goes in the row's own column, or NULL */
  unsigned char hash[16];
  int is_ref;
} sq_value;

static int sq_value_put (sq_store *s, const char *text, sq_value *v) {
  v->inline_text = text;
  v->is_ref = 0;
  if (text == NULL)
    return SQLITE_OK;
  size_t len = strlen(text);
  if (len <= BLOB_MIN)
    return SQLITE_OK;
  XXH128_hash_t h = XXH3_128bits(text, len);
  for (int i = 0; i < 8; i++) {
    v->hash[i] = (unsigned char)(h.high64 >> (56 - 8 * i));
    v->hash[8 + i] = (unsigned char)(h.low64 >> (56 - 8 * i));
  }
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_BLOB_PUT, &st);
  if (rc != SQLITE_OK)
    return rc;
  rc = sqlite3_bind_blob(st, 1, v->hash, 16, SQLITE_STATIC)
     | sqlite3_bind_int64(st, 2, (sqlite3_int64)len)
     | sqlite3_bind_text(st, 3, text, (int)len, SQLITE_STATIC);
  if ((rc = bind_failed(s, rc)) != SQLITE_OK)
    return rc;
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    return rc;
  v->inline_text = NULL;
  v->is_ref = 1;
  return SQLITE_OK;
}

/* Binds a value's column (i) and its reference column (ref). */
static int bind_value (sqlite3_stmt *st, int i, int ref, const sq_value *v) {
  return bind_text(st, i, v->inline_text)
       | (v->is_ref ? sqlite3_bind_blob(st, ref, v->hash, 16, SQLITE_STATIC)
                    : sqlite3_bind_null(st, ref));
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
  sq_value in, out;
  int rc = sq_write_stmt(s, ST_RUN_BEGIN, &st);
  if (rc == SQLITE_OK && (rc = sq_value_put(s, r->input, &in)) == SQLITE_OK)
    rc = sq_value_put(s, r->output, &out);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, r->id) | bind_text(st, 2, r->pipeline)
       | bind_text(st, 3, r->file) | bind_text(st, 4, r->def_hash)
       | bind_text(st, 5, r->status) | bind_value(st, 6, 17, &in)
       | bind_value(st, 7, 18, &out) | bind_text(st, 8, r->error)
       | bind_text(st, 9, r->usage) | bind_text(st, 10, r->budget)
       | sqlite3_bind_int64(st, 11, r->started_ms)
       | bind_time(st, 12, r->ended_ms) | bind_text(st, 13, r->options)
       | bind_text(st, 14, r->owner) | bind_time(st, 15, r->lease_ms)
       | sqlite3_bind_int64(st, 16, r->epoch) | bind_text(st, 19, r->queue)
       | bind_text(st, 20, r->waiting_for);
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


/* After an owner-checked write changed nothing: the run is gone, or it
   belongs to another owner (or epoch) now. */
static int sq_not_owner (sq_store *s, const char *id, const char *owner,
                         int64_t epoch, const char *what) {
  sqlite3_stmt *st;
  int rc = sq_stmt(s, ST_RUN_EXISTS, &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "%s run %s", what, id);
  rc = bind_failed(s, bind_text(st, 1, id));
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *now = column_text(st, 0);
    char holder[160];
    snprintf(holder, sizeof holder, "%s", now ? now : "no process");
    int64_t e = sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    return sl_store_seterr(&s->base, SL_STORE_ECONFLICT, "%s run %s: it is "
                           "owned by %s now (epoch %lld; this process held "
                           "epoch %lld as %s)", what, id, holder, (long long)e,
                           (long long)epoch, owner ? owner : "?");
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE)
    return sl_store_seterr(&s->base, SL_STORE_ENOTFOUND, "%s run %s: no such "
                           "run", what, id);
  return sq_fail(s, rc, "%s run %s", what, id);
}


static int sq_run_claim (sl_store *b, const char *id, const char *owner,
                         int64_t lease_ms, int64_t expect, const char *status) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_RUN_CLAIM, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, id) | bind_text(st, 2, owner)
       | bind_time(st, 3, lease_ms) | sqlite3_bind_int64(st, 4, expect)
       | bind_text(st, 5, status);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "taking over run %s", id);
  if (sqlite3_changes(s->db) == 0) {
    int code = sq_not_owner(s, id, owner, expect, "taking over");
    sq_flush(b);
    return code;
  }
  return sq_flush(b);
}


/* A run a worker may claim, as a candidate list holds it. */
typedef struct sq_candidate {
  char id[64];
  char status[16];
  int64_t lease_ms, epoch;
  int owner_alive;
} sq_candidate;

#define NCANDIDATES 16

/* Reads up to NCANDIDATES rows of statement which (queue bound) into c. */
static int read_candidates (sq_store *s, int which, const char *queue, int64_t now_ms,
                            sq_candidate *c, int *n) {
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, which, &st);   /* takes the write lock first */
  *n = 0;
  if (rc != SQLITE_OK)
    return rc;
  rc = bind_failed(s, bind_text(st, 1, queue) | sqlite3_bind_int(st, 2, NCANDIDATES)
                      | (which == ST_DUE ? sqlite3_bind_int64(st, 3, now_ms) : SQLITE_OK));
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *id = column_text(st, 0), *status = column_text(st, 1);
    rc = SQLITE_OK;
    if (id == NULL || strlen(id) >= sizeof c->id || status == NULL)
      continue;
    sq_candidate *k = &c[(*n)++];
    snprintf(k->id, sizeof k->id, "%s", id);
    snprintf(k->status, sizeof k->status, "%s", status);
    k->lease_ms = sqlite3_column_int64(st, 3);
    k->epoch = sqlite3_column_int64(st, 4);
    k->owner_alive = sl_owner_alive(column_text(st, 2), k->lease_ms, now_ms);
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Drops the open transaction and what it held. */
static void sq_rollback (sq_store *s) {
  if (!s->in_tx)
    return;
  sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_tx = 0;
  s->base.pending = 0;
  journal_discard(s);
}

static int skipped (const char *id, const char *const *skip, int nskip) {
  for (int i = 0; i < nskip; i++)
    if (skip[i] != NULL && strcmp(skip[i], id) == 0) return 1;
  return 0;
}

static int sq_run_claim_some (sl_store *b, const char *queue, const char *owner,
                              int64_t lease_ms, int64_t now_ms,
                              const char *const *skip, int nskip, int max,
                              sl_store_run **out, int *nout) {
  sq_store *s = (sq_store *)b;
  sq_candidate c[NCANDIDATES];
  int n = 0, rc = SQLITE_OK, took = 0;
  sq_candidate kept[NCANDIDATES * 2];   /* the runs taken */
  if (max > (int)(sizeof kept / sizeof kept[0])) max = (int)(sizeof kept / sizeof kept[0]);
  /* Queued runs first, oldest first; then parked and paused runs that are
     due; then runs whose owner is gone. All in the one transaction that
     holds the write lock, so no other worker can take the same run between
     the look and the claim. */
  static const int passes[] = {ST_QUEUED, ST_DUE, ST_TAKEOVERS};
  for (int pass = 0; pass < 3 && took < max && rc == SQLITE_OK; pass++) {
    rc = read_candidates(s, passes[pass], queue, now_ms, c, &n);
    for (int i = 0; i < n && rc == SQLITE_OK && took < max; i++) {
      if (skipped(c[i].id, skip, nskip) || (passes[pass] == ST_TAKEOVERS && c[i].owner_alive))
        continue;
      sqlite3_stmt *st;
      if ((rc = sq_write_stmt(s, ST_RUN_TAKE, &st)) != SQLITE_OK)
        break;
      rc = bind_text(st, 1, c[i].id) | bind_text(st, 2, owner) | bind_time(st, 3, lease_ms)
         | sqlite3_bind_int64(st, 4, c[i].epoch) | bind_text(st, 5, c[i].status);
      if ((rc = bind_failed(s, rc)) == SQLITE_OK && (rc = sq_step_write(s, st)) == SQLITE_OK
          && sqlite3_changes(s->db) == 1) {
        kept[took++] = c[i];
      }
    }
  }
  for (int i = 0; rc == SQLITE_OK && i < took; i++) {
    int code = sq_run_get(b, kept[i].id, &out[i]);
    if (code != 0) {
      for (int k = 0; k < i; k++) {
        sl_store_run_free(out[k]);
        out[k] = NULL;
      }
      sq_rollback(s);
      return code;
    }
  }
  if (rc != SQLITE_OK) {
    int code = sq_fail(s, rc, "claiming a run of queue '%s'", queue);
    sq_rollback(s);
    return code;
  }
  int code = sq_flush(b);
  if (code != 0) {
    for (int k = 0; k < took; k++) {
      sl_store_run_free(out[k]);
      out[k] = NULL;
    }
    return code;
  }
  *nout = took;
  if (took == 0)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no run to claim in queue '%s'", queue);
  return 0;
}


static int sq_run_requeue (sl_store *b, const char *id, const char *owner, int64_t epoch,
                           const char *waiting_for) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_RUN_REQUEUE, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, id) | bind_text(st, 2, owner) | sqlite3_bind_int64(st, 3, epoch)
       | bind_text(st, 4, waiting_for);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "putting run %s back in its queue", id);
  if (sqlite3_changes(s->db) == 0) {
    int code = sq_not_owner(s, id, owner, epoch, "putting back in its queue");
    sq_flush(b);
    return code;
  }
  journal_finished(s, id);
  return sq_flush(b);
}


/* Every commit, from any process, appends to the WAL file: watching it
   tells a worker at once that the queue may have changed. */
static int sq_watch_queue (sl_store *b, const char *queue, sl_store_watch *out) {
  sq_store *s = (sq_store *)b;
  (void)queue;
  if (s->memory) return 0;
  const char *file = sqlite3_db_filename(s->db, "main");
  if (file == NULL || file[0] == '\0') return 0;
  snprintf(out->path, sizeof out->path, "%s-wal", file);
  return 0;
}

static int sq_watch_clear (sl_store *b) {
  (void)b;
  return 1;
}




static int sq_run_renew (sl_store *b, const char *id, const char *owner,
                         int64_t epoch, int64_t lease_ms) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sq_write_stmt(s, ST_RUN_RENEW, &st);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, id) | bind_text(st, 2, owner)
       | sqlite3_bind_int64(st, 3, epoch) | sqlite3_bind_int64(st, 4, lease_ms);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "renewing the lease on run %s", id);
  if (sqlite3_changes(s->db) == 0)
    return sq_not_owner(s, id, owner, epoch, "renewing the lease on");
  return 0;
}


static int sq_run_finish (sl_store *b, const char *id, const char *owner,
                          int64_t epoch, int release, const char *status,
                          const char *output, const char *error,
                          const char *usage, int64_t ended_ms) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  sq_value out;
  int rc = sq_write_stmt(s, ST_RUN_FINISH, &st);
  if (rc == SQLITE_OK)
    rc = sq_value_put(s, output, &out);
  if (rc == SQLITE_OK) {
    rc = bind_text(st, 1, id) | bind_text(st, 2, status)
       | bind_value(st, 3, 7, &out) | bind_text(st, 4, error)
       | bind_text(st, 5, usage) | bind_time(st, 6, ended_ms)
       | bind_text(st, 8, owner) | sqlite3_bind_int64(st, 9, epoch)
       | sqlite3_bind_int(st, 10, release != 0);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK)
      rc = sq_step_write(s, st);
  }
  if (rc == SQLITE_CONSTRAINT_CHECK)
    return sq_fail(s, rc, "updating run %s: bad status '%s'", id, status);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "updating run %s", id);
  if (sqlite3_changes(s->db) == 0)
    return sq_not_owner(s, id, owner, epoch, "recording the end of");
  if (release) journal_finished(s, id);
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
    *out = sl_store_copy_run(&r);
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
  int rc = sq_stmt(s, f->text ? ST_RUN_LIST_TEXT
                     : f->queue ? ST_RUN_LIST_QUEUE
                     : which[f->status != NULL][f->pipeline != NULL], &st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "listing runs");
  rc = bind_text(st, 1, f->status) | bind_text(st, 2, f->pipeline)
     | (f->queue || f->text ? bind_text(st, 6, f->queue) : 0)
     | (f->text ? bind_text(st, 7, f->text) : 0)
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
** SQLite backend: the step journal
** =======================================================
** A step's record is encoded (fields as length-prefixed strings, then
** four integers) onto its run's buffer; when the transaction commits, each
** run's buffer becomes one journal row. What a run has recorded as
** completed is remembered, so a second record of a completed step is
** refused (exactly once); whether this connection still owns the run is
** checked once per run and transaction, while the write lock is held, so
** an owner that lost the run records nothing more.
*/

struct sq_runbuf {
  sq_runbuf *next;
  int64_t seq;            /* its last journal row */
  uint64_t checked_tx;    /* its run was looked up in this transaction */
  int exists, owned;      /* and found to exist, and to be this writer's */
  int64_t epoch;          /* the run's epoch at that look */
  int loaded;             /* done holds what the store had before */
  int64_t loaded_epoch;   /* the run's epoch when done was read */
  int finished;           /* its end was recorded: dropped after commit */
  sl_buf pending;         /* records of this transaction */
  int npending;
  /* The paths it recorded as completed: NUL-terminated in an arena, found
     through an open-addressing table of offsets (+1; 0 is empty). The
     arena's tail past committed belongs to the open transaction. */
  sl_buf arena;
  size_t committed;
  uint32_t *slots;
  size_t cap, count;
  char id[];
};

static uint64_t str_hash (const char *p) {
  uint64_t h = 1469598103934665603ull;
  while (*p) h = (h ^ (unsigned char)*p++) * 1099511628211ull;
  return h;
}

static int done_has (const sq_runbuf *rb, const char *path) {
  if (rb->cap == 0) return 0;
  for (size_t j = str_hash(path) & (rb->cap - 1); rb->slots[j]; j = (j + 1) & (rb->cap - 1))
    if (strcmp(rb->arena.data + rb->slots[j] - 1, path) == 0) return 1;
  return 0;
}

static void done_place (sq_runbuf *rb, uint32_t off) {
  size_t j = str_hash(rb->arena.data + off - 1) & (rb->cap - 1);
  while (rb->slots[j]) j = (j + 1) & (rb->cap - 1);
  rb->slots[j] = off;
}

/* Rebuilds the table over the arena's first len bytes. */
static int done_rebuild (sq_runbuf *rb, size_t cap) {
  uint32_t *t = calloc(cap, sizeof *t);
  if (t == NULL) return -1;
  free(rb->slots);
  rb->slots = t;
  rb->cap = cap;
  rb->count = 0;
  for (size_t off = 0; off < rb->arena.len;) {
    done_place(rb, (uint32_t)off + 1);
    rb->count++;
    off += strlen(rb->arena.data + off) + 1;
  }
  return 0;
}

static int done_add (sq_runbuf *rb, const char *path, uint64_t tx) {
  (void)tx;
  size_t len = strlen(path) + 1;
  if (rb->arena.len + len > 0xfffffff0u) return -1;
  size_t off = rb->arena.len;
  if (sl_buf_add(&rb->arena, path, len) != 0) return -1;
  if ((rb->count + 1) * 2 > rb->cap) {
    if (done_rebuild(rb, rb->cap ? rb->cap * 2 : 64) != 0) {
      rb->arena.len = off;
      return -1;
    }
    return 0;   /* the rebuild placed it */
  }
  done_place(rb, (uint32_t)off + 1);
  rb->count++;
  return 0;
}

/* Forgets the paths of the open transaction (it was rolled back). */
static void done_drop_open (sq_runbuf *rb) {
  if (rb->arena.len == rb->committed) return;
  rb->arena.len = rb->committed;
  if (rb->arena.data) rb->arena.data[rb->arena.len] = '\0';
  if (done_rebuild(rb, rb->cap ? rb->cap : 64) != 0) {
    /* Without room to rebuild, it forgets them all and reads them again. */
    free(rb->slots);
    rb->slots = NULL;
    rb->cap = rb->count = 0;
    sl_buf_reset(&rb->arena);
    rb->committed = 0;
    rb->loaded = 0;
  }
}

static void runbuf_free (sq_runbuf *rb) {
  free(rb->slots);
  sl_buf_free(&rb->arena);
  sl_buf_free(&rb->pending);
  free(rb);
}

static sq_runbuf *runbuf_of (sq_store *s, const char *id) {
  for (sq_runbuf *rb = s->runs; rb; rb = rb->next)
    if (strcmp(rb->id, id) == 0) return rb;
  size_t len = strlen(id) + 1;
  sq_runbuf *rb = calloc(1, sizeof *rb + len);
  if (rb == NULL) return NULL;
  memcpy(rb->id, id, len);
  sl_buf_init(&rb->pending);
  sl_buf_init(&rb->arena);
  rb->seq = -1;
  rb->next = s->runs;
  s->runs = rb;
  return rb;
}

/* Reads the blob with hash into *out (NULL when missing). */
static int blob_get (sq_store *s, const unsigned char *hash, sl_buf *out) {
  sqlite3_stmt *st;
  int rc = sq_stmt(s, ST_BLOB_GET, &st);
  if (rc != SQLITE_OK) return rc;
  sl_buf_reset(out);
  rc = sqlite3_bind_blob(st, 1, hash, 16, SQLITE_STATIC);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *v = column_text(st, 0);
    if (sl_buf_add(out, v ? v : "", (size_t)sqlite3_column_bytes(st, 0)) != 0)
      rc = SQLITE_NOMEM;
    else
      rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  sqlite3_reset(st);
  return rc;
}

/* Calls cb for each step record of run_id in its journal, oldest first,
   with large values read back from blobs. */
static int journal_each (sq_store *s, const char *run_id, sl_store_checkpoint_cb cb,
                         void *ud, int *stopped) {
  sqlite3_stmt *st;
  sl_buf vals[2];
  int rc = sq_stmt(s, ST_JOURNAL_READ, &st);
  if (rc != SQLITE_OK) return rc;
  sl_buf_init(&vals[0]);
  sl_buf_init(&vals[1]);
  *stopped = 0;
  rc = bind_failed(s, bind_text(st, 1, run_id));
  while (rc == SQLITE_OK && !*stopped && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *p = sqlite3_column_blob(st, 0);
    const unsigned char *end = p + sqlite3_column_bytes(st, 0);
    rc = SQLITE_OK;
    while (p < end && rc == SQLITE_OK) {
      sl_store_checkpoint c;
      const unsigned char *refs[2];
      if (sl_journal_decode(&p, end, &c, refs) != 0) {
        rc = SQLITE_CORRUPT;
        break;
      }
      c.run_id = run_id;
      for (int k = 0; k < 2 && rc == SQLITE_OK; k++) {
        if (refs[k] == NULL) continue;
        /* The buffers are reused: a callback copies what it keeps. */
        sqlite3_stmt *keep = st;
        (void)keep;
        if ((rc = blob_get(s, refs[k], &vals[k])) == SQLITE_OK) {
          const char *v = vals[k].data ? vals[k].data : NULL;
          if (k == 0) c.output = v;
          else c.changes = v;
        }
      }
      if (rc == SQLITE_OK && (*stopped = cb(ud, &c)) != 0) break;
    }
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  sqlite3_reset(st);
  sl_buf_free(&vals[0]);
  sl_buf_free(&vals[1]);
  return rc;
}

/* Learns what run rb recorded as completed before (a resumed run). */
static int runbuf_load (sq_store *s, sq_runbuf *rb);

typedef struct load_ud { sq_runbuf *rb; } load_ud;

static int load_one (void *ud, const sl_store_checkpoint *c) {
  sq_runbuf *rb = ((load_ud *)ud)->rb;
  if (c->status != NULL && strcmp(c->status, "completed") == 0 && !done_has(rb, c->path))
    return done_add(rb, c->path, 0) != 0 ? SL_STORE_ENOMEM : 0;
  return 0;
}

/* Forgets what rb read of its run, to read it again. */
static void runbuf_forget (sq_runbuf *rb) {
  free(rb->slots);
  rb->slots = NULL;
  rb->cap = rb->count = 0;
  sl_buf_reset(&rb->arena);
  rb->committed = 0;
  rb->seq = -1;
  rb->loaded = 0;
}

static int runbuf_load (sq_store *s, sq_runbuf *rb) {
  sqlite3_stmt *st;
  int rc = sq_stmt(s, ST_JOURNAL_LAST, &st);
  if (rc != SQLITE_OK) return rc;
  rc = bind_failed(s, bind_text(st, 1, rb->id));
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    rb->seq = sqlite3_column_int64(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_reset(st);
  if (rc != SQLITE_OK) return rc;
  if (rb->seq > 0) {
    load_ud u = { rb };
    int stopped;
    rc = journal_each(s, rb->id, load_one, &u, &stopped);
    if (rc == SQLITE_OK && stopped) rc = SQLITE_NOMEM;
  }
  /* Steps of stores written before the journal. */
  if (rc == SQLITE_OK) {
    sqlite3_stmt *q;
    if ((rc = sq_stmt(s, ST_CP_LIST, &q)) == SQLITE_OK) {
      rc = bind_failed(s, bind_text(q, 1, rb->id));
      while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *status = column_text(q, 6), *path = column_text(q, 1);
        rc = SQLITE_OK;
        if (status && path && strcmp(status, "completed") == 0 && !done_has(rb, path) &&
            done_add(rb, path, 0) != 0)
          rc = SQLITE_NOMEM;
      }
      if (rc == SQLITE_DONE) rc = SQLITE_OK;
      sqlite3_reset(q);
    }
  }
  rb->loaded = rc == SQLITE_OK;
  rb->committed = rb->arena.len;
  return rc;
}

/* Does the run exist, and is it still this writer's (owner at epoch; NULL
   owner: any)? Asked once per run and transaction: the write lock is held,
   so the answer cannot change meanwhile. */
static int still_owned (sq_store *s, sq_runbuf *rb, const char *owner, int64_t epoch,
                        int *exists, int *owned) {
  if (rb->checked_tx == s->tx) {
    *exists = rb->exists;
    *owned = rb->owned;
    return SQLITE_OK;
  }
  sqlite3_stmt *st;
  int rc = sq_stmt(s, ST_RUN_EXISTS, &st);
  if (rc != SQLITE_OK) return rc;
  rc = bind_failed(s, bind_text(st, 1, rb->id));
  *owned = *exists = 0;
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *now = column_text(st, 0);
    *exists = 1;
    rb->epoch = sqlite3_column_int64(st, 1);
    *owned = owner == NULL ||
             (now != NULL && strcmp(now, owner) == 0 && sqlite3_column_int64(st, 1) == epoch);
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  sqlite3_reset(st);
  if (rc == SQLITE_OK) {
    rb->checked_tx = s->tx;
    rb->exists = *exists;
    rb->owned = *owned;
  }
  return rc;
}

static int journal_write (sq_store *s) {
  for (sq_runbuf *rb = s->runs; rb; rb = rb->next) {
    if (rb->npending == 0) continue;
    sqlite3_stmt *st;
    int rc = sq_stmt(s, ST_JOURNAL_PUT, &st);
    if (rc != SQLITE_OK) return rc;
    rc = bind_text(st, 1, rb->id) | sqlite3_bind_int64(st, 2, rb->seq + 1)
       | sqlite3_bind_blob(st, 3, rb->pending.data, (int)rb->pending.len, SQLITE_STATIC);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK) {
      rc = sqlite3_step(st);
      rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      return rc;
    if (rc != SQLITE_OK) return rc;
  }
  return SQLITE_OK;
}

static void journal_committed (sq_store *s) {
  for (sq_runbuf **pp = &s->runs; *pp;) {
    sq_runbuf *rb = *pp;
    rb->committed = rb->arena.len;
    if (rb->npending > 0) {
      rb->seq++;
      rb->npending = 0;
      sl_buf_reset(&rb->pending);
      if (rb->pending.cap > 1 << 20) sl_buf_free(&rb->pending);
    }
    if (rb->finished) {
      *pp = rb->next;
      runbuf_free(rb);
    } else {
      pp = &rb->next;
    }
  }
}

/* What run id completed need not be remembered past this commit: it
   ended, and this connection lets go of it. */
static void journal_finished (sq_store *s, const char *id) {
  for (sq_runbuf *rb = s->runs; rb; rb = rb->next)
    if (strcmp(rb->id, id) == 0) rb->finished = 1;
}

static void journal_discard (sq_store *s) {
  for (sq_runbuf *rb = s->runs; rb; rb = rb->next) {
    rb->npending = 0;
    sl_buf_reset(&rb->pending);
    rb->finished = 0;
    done_drop_open(rb);
  }
}

/* Keeps each path's latest record of a run's journal (a completed one
   stays): the store's shared replay index (store.c), hashed by path. */
static int keep_record (void *ud, const sl_store_checkpoint *c) {
  return sl_store_replay_keep(ud, c);
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
  int rc = sq_write_stmt(s, ST_BEGIN, &st);   /* opens the transaction */
  sq_runbuf *rb = rc == SQLITE_OK ? runbuf_of(s, c->run_id) : NULL;
  if (rc == SQLITE_OK && rb == NULL) rc = SQLITE_NOMEM;
  if (rc == SQLITE_OK) {
    int exists, owned;
    if ((rc = still_owned(s, rb, c->owner, c->epoch, &exists, &owned)) == SQLITE_OK) {
      if (!exists)
        return sl_store_seterr(b, SL_STORE_EINVAL, "recording checkpoint %s of run %s: "
                               "no such run", c->path, c->run_id);
      if (!owned)
        return sq_not_owner(s, c->run_id, c->owner, c->epoch, "recording a checkpoint of");
    }
  }
  /* What the run completed, read once; again when it changed owners since
     (another process may have recorded steps of it meanwhile). */
  if (rc == SQLITE_OK && rb->loaded && rb->loaded_epoch != rb->epoch) runbuf_forget(rb);
  if (rc == SQLITE_OK && !rb->loaded) {
    rc = runbuf_load(s, rb);
    rb->loaded_epoch = rb->epoch;
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "recording checkpoint %s of run %s", c->path, c->run_id);
  if (done_has(rb, c->path))
    return sl_store_seterr(b, SL_STORE_ECONFLICT, "recording checkpoint %s of run %s: "
                           "the step is recorded as completed already, and a completed "
                           "step is recorded once", c->path, c->run_id);
  sq_value out, ch;
  if ((rc = sq_value_put(s, c->output, &out)) == SQLITE_OK)
    rc = sq_value_put(s, c->changes, &ch);
  for (int k = 0; k < 2 && rc == SQLITE_OK; k++) {
    sq_value *v = k ? &ch : &out;
    if (!v->is_ref) continue;
    sqlite3_stmt *ref;
    if ((rc = sq_stmt(s, ST_BLOB_REF, &ref)) != SQLITE_OK) break;
    rc = bind_text(ref, 1, c->run_id) | sqlite3_bind_blob(ref, 2, v->hash, 16, SQLITE_STATIC);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK) {
      rc = sqlite3_step(ref);
      rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_reset(ref);
  }
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "recording checkpoint %s of run %s", c->path, c->run_id);
  sl_buf *p = &rb->pending;
  int done_now = c->status != NULL && strcmp(c->status, "completed") == 0;
  if (sl_journal_append(p, c, out.inline_text, out.is_ref ? out.hash : NULL, ch.inline_text,
                        ch.is_ref ? ch.hash : NULL) != 0
      || (done_now && done_add(rb, c->path, s->tx) != 0))
    return sq_fail(s, SQLITE_NOMEM, "recording checkpoint %s of run %s", c->path, c->run_id);
  rb->npending++;
  s->base.pending++;
  return 0;
}


/* The record of path in run_id: the legacy table first, then the journal
   (read whole once per run and kept for the gets that follow). */
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
    *out = sl_store_copy_checkpoint(&c);
    sqlite3_reset(st);
    if (*out == NULL)
      return sl_store_seterr(b, SL_STORE_ENOMEM, "reading checkpoint %s of "
                             "run %s: out of memory", path, run_id);
    return 0;
  }
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    return sq_fail(s, rc, "reading checkpoint %s of run %s", path, run_id);
  /* The journal, read whole: a resume reads a run once (sl_store_replay),
     so a get is rare. */
  sl_store_replay *j = sl_store_replay_new();
  if (j == NULL)
    return sl_store_seterr(b, SL_STORE_ENOMEM, "reading run %s: out of memory", run_id);
  int stopped;
  rc = journal_each(s, run_id, keep_record, j, &stopped);
  if (rc != SQLITE_OK || stopped) {
    sl_store_replay_free(j);
    if (stopped)
      return sl_store_seterr(b, SL_STORE_ENOMEM, "reading run %s: out of memory", run_id);
    return sq_fail(s, rc, "reading the steps of run %s", run_id);
  }
  const sl_store_checkpoint *found = sl_store_replay_step(j, path);
  if (found != NULL) {
    sl_store_checkpoint got = *found;
    got.run_id = run_id;
    *out = sl_store_copy_checkpoint(&got);
    sl_store_replay_free(j);
    if (*out == NULL)
      return sl_store_seterr(b, SL_STORE_ENOMEM, "reading checkpoint %s of "
                             "run %s: out of memory", path, run_id);
    return 0;
  }
  sl_store_replay_free(j);
  return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no checkpoint %s in run "
                         "%s", path, run_id);
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
  /* The journal, with each path's latest record (a completed one kept). */
  sl_store_replay *j = sl_store_replay_new();
  if (j == NULL)
    return sl_store_seterr(b, SL_STORE_ENOMEM, "listing run %s: out of memory", run_id);
  int stopped;
  rc = journal_each(s, run_id, keep_record, j, &stopped);
  if (rc != SQLITE_OK || stopped) {
    sl_store_replay_free(j);
    if (stopped)
      return sl_store_seterr(b, SL_STORE_ENOMEM, "listing run %s: out of memory", run_id);
    return sq_fail(s, rc, "listing checkpoints of run %s", run_id);
  }
  for (int i = 0; i < sl_store_replay_nsteps(j) && stop == 0; i++) {
    sl_store_checkpoint c2 = *sl_store_replay_step_at(j, i);
    c2.run_id = run_id;
    stop = cb(ud, &c2);
  }
  sl_store_replay_free(j);
  return stop;
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
  if (expired && s->reader)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "the cache entry for this "
                           "key has expired");
  if (s->reader)
    return 0;   /* the writer counts the hit */
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


static int sq_cache_touch (sl_store *b, const unsigned char *key) {
  sq_store *s = (sq_store *)b;
  int rc = sq_cache_keyed_write(s, ST_CACHE_HIT, key);
  return rc == SQLITE_OK ? 0 : sq_fail(s, rc, "counting a cache hit");
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
    /* Private by default: only the user who runs the engine may look. */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
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
  int rc, flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  s->read_only = o != NULL && o->read_only && !s->memory;
  s->reader = o != NULL && o->reader;
  if (s->read_only) {
    /* A reader never creates anything: no directory, no file. */
    struct stat sb;
    if (stat(s->base.path, &sb) != 0)
      return sl_store_seterr(&s->base, errno == ENOENT ? SL_STORE_ENOTFOUND
                             : SL_STORE_EIO, "no store here (%s)", strerror(errno));
    flags |= SQLITE_OPEN_READONLY;
  } else {
    flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (!s->memory && strchr(s->base.path, '/') != NULL) {
      char dir[4096];
      if (make_parents(s->base.path, dir, sizeof dir) != 0)
        return sl_store_seterr(&s->base, errno == EROFS ? SL_STORE_EREADONLY
                               : SL_STORE_EIO, "cannot create the directory %s: %s",
                               dir, strerror(errno));
    }
    if (!s->memory) {
      /* The file is made private before SQLite opens it; its write-ahead
         log and shared-memory files take the same mode. */
      int fd = open(s->base.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0)
        close(fd);
      else if (errno == EROFS || errno == EACCES) {
        if (access(s->base.path, F_OK) != 0 || access(s->base.path, W_OK) != 0)
          return sl_store_seterr(&s->base, SL_STORE_EREADONLY, "the store is "
                                 "read-only here (%s): runs cannot be recorded",
                                 strerror(errno));
      }
    }
  }
  rc = sqlite3_open_v2(s->base.path, &s->db, flags, NULL);
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
  if (s->read_only) {
    if (appid != SQ_APPLICATION_ID)
      return sl_store_seterr(&s->base, SL_STORE_ENOTFOUND, "holds no runs yet");
    if (version < NMIGRATIONS)
      return sl_store_seterr(&s->base, SL_STORE_EOLDER, "was written by an "
                             "older sluice (schema version %d): a command that "
                             "writes (sluice run) brings it up to date",
                             (int)version);
    if (o != NULL && o->full_check && (rc = sq_quick_check(s)) != 0)
      return rc;
    return 0;
  }
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
  while (s->runs != NULL) {
    sq_runbuf *next = s->runs->next;
    runbuf_free(s->runs);
    s->runs = next;
  }
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
  if (s == NULL || sl_store_base_init(&s->base, &sl_store_sqlite_ops, path, o) != 0) {
    free(s);
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s: out of memory", path);
    return SL_STORE_ENOMEM;
  }
  s->busy_ms = (o != NULL && o->busy_timeout_ms > 0) ? o->busy_timeout_ms
                                                      : DEFAULT_BUSY_MS;
  s->memory = strcmp(path, ":memory:") == 0;
  if ((rc = sq_setup(s, o)) != 0) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s", s->base.errmsg);
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


/*
** {======================================================
** SQLite backend: retention and upkeep
** =======================================================
*/

/* Runs one statement that takes no parameters and gives no rows. */
static int sq_exec (sq_store *s, const char *text, const char *what) {
  int rc = sqlite3_exec(s->db, text, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : sq_fail(s, rc, "%s", what);
}


static int sq_prune (sl_store *b, int64_t older_than_ms, const char *status,
                     int64_t keep, const char *pipeline, int64_t *removed) {
  static const char *const del =
    "DELETE FROM runs WHERE id IN (SELECT id FROM (SELECT id, "
    "coalesce(ended_ms, started_ms) AS t FROM runs WHERE "
    "(?2 IS NULL AND status IN ('completed', 'failed', 'cancelled') OR status = ?2) "
    "AND status NOT IN ('queued', 'running', 'waiting') "
    "AND (?4 IS NULL OR pipeline = ?4) "
    "ORDER BY id DESC LIMIT -1 OFFSET ?3) WHERE ?1 = 0 OR t < ?1)";
  static const char *const orphans =
    "DELETE FROM blobs WHERE hash NOT IN ("
    "SELECT input_ref FROM runs WHERE input_ref IS NOT NULL "
    "UNION SELECT output_ref FROM runs WHERE output_ref IS NOT NULL "
    "UNION SELECT output_ref FROM checkpoints WHERE output_ref IS NOT NULL "
    "UNION SELECT changes_ref FROM checkpoints WHERE changes_ref IS NOT NULL "
    "UNION SELECT hash FROM blob_refs)";
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st = NULL;
  int rc;
  if (s->read_only)
    return sq_fail(s, SQLITE_READONLY, "pruning runs");
  if ((rc = sq_flush(b)) != 0)
    return rc;
  if ((rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) != SQLITE_OK)
    return sq_fail(s, rc, "pruning runs");
  rc = sqlite3_prepare_v2(s->db, del, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_bind_int64(st, 1, older_than_ms) | bind_text(st, 2, status)
       | sqlite3_bind_int64(st, 3, keep) | bind_text(st, 4, pipeline);
    if ((rc = bind_failed(s, rc)) == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE)
      rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  int64_t n = rc == SQLITE_OK ? sqlite3_changes64(s->db) : 0;
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(s->db, orphans, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    int code = sq_fail(s, rc, "pruning runs");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return code;
  }
  if (removed != NULL)
    *removed = n;
  return 0;
}


static int sq_stats (sl_store *b, sl_store_stats *o) {
  static const char *const q =
    "SELECT (SELECT count(*) FROM runs),"
    " (SELECT coalesce(sum(length(coalesce(input, '')) + length(coalesce(output, ''))"
    "   + length(coalesce(error, '')) + length(coalesce(options, ''))), 0) FROM runs),"
    " (SELECT count(*) FROM checkpoints) + (SELECT count(*) FROM journal),"
    " (SELECT coalesce(sum(length(coalesce(output, '')) + length(coalesce(changes, ''))"
    "   + length(coalesce(state, '')) + length(coalesce(error, ''))), 0) FROM checkpoints)"
    "   + (SELECT coalesce(sum(length(data)), 0) FROM journal),"
    " (SELECT count(*) FROM waits),"
    " (SELECT count(*) FROM blobs), (SELECT coalesce(sum(size), 0) FROM blobs),"
    " (SELECT count(*) FROM cache), (SELECT coalesce(sum(size), 0) FROM cache),"
    " (SELECT page_count * page_size FROM pragma_page_count, pragma_page_size)";
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, q, -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    o->runs = sqlite3_column_int64(st, 0);
    o->run_bytes = sqlite3_column_int64(st, 1);
    o->checkpoints = sqlite3_column_int64(st, 2);
    o->checkpoint_bytes = sqlite3_column_int64(st, 3);
    o->waits = sqlite3_column_int64(st, 4);
    o->values = sqlite3_column_int64(st, 5);
    o->value_bytes = sqlite3_column_int64(st, 6);
    o->cache_entries = sqlite3_column_int64(st, 7);
    o->cache_bytes = sqlite3_column_int64(st, 8);
    o->file_bytes = sqlite3_column_int64(st, 9);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? 0 : sq_fail(s, rc, "reading the store's figures");
}


static int sq_check (sl_store *b);

/* The owners of runs left active by a process that is gone, one per line,
   into b; returns an SQLite code. */
static int dead_owners (sq_store *s, sl_buf *b) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "SELECT owner, max(lease_ms) FROM runs WHERE status "
                              "IN ('running', 'waiting') AND owner IS NOT NULL "
                              "GROUP BY owner ORDER BY owner", -1, &st, NULL);
  if (rc != SQLITE_OK)
    return rc;
  int64_t now = sl_owner_now_ms();
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *owner = column_text(st, 0);
    if (owner == NULL || sl_owner_alive(owner, sqlite3_column_int64(st, 1), now))
      continue;
    if (sl_buf_add(b, owner, strlen(owner)) != 0 || sl_buf_add(b, "\n", 1) != 0) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  sqlite3_finalize(st);
  return rc;
}

/* A process that died with runs of this store in hand may have died in
   the middle of a write: the first writer to open the store after that
   checks the whole file, once per crash. */
static int sq_check_after_crash (sl_store *b, int *checked) {
  sq_store *s = (sq_store *)b;
  sl_buf dead, seen;
  sl_buf_init(&dead);
  sl_buf_init(&seen);
  *checked = 0;
  int rc = dead_owners(s, &dead);
  sqlite3_stmt *st = NULL;
  if (rc == SQLITE_OK && dead.len > 0) {
    rc = sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'checked_owners'",
                            -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *v = column_text(st, 0);
      if (v != NULL && sl_buf_add(&seen, v, strlen(v)) != 0) rc = SQLITE_NOMEM;
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(st);
    st = NULL;
  }
  int fresh = 0;
  if (rc == SQLITE_OK && dead.len > 0) {
    if (sl_buf_add(&dead, "", 1) != 0 || sl_buf_add(&seen, "", 1) != 0) rc = SQLITE_NOMEM;
    /* A dead owner the last check did not know of is a crash not checked. */
    for (char *line = dead.data; rc == SQLITE_OK && line && *line;) {
      char *end = strchr(line, '\n');
      size_t n = (size_t)(end - line);
      int known = 0;
      for (const char *p = seen.data; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t m = e ? (size_t)(e - p) : strlen(p);
        if (m == n && memcmp(p, line, n) == 0) known = 1;
        p = e ? e + 1 : p + m;
      }
      if (!known) fresh = 1;
      line = end + 1;
    }
  }
  int code = 0;
  if (rc == SQLITE_OK && fresh) {
    *checked = 1;
    code = sq_check(b);
    if (code == 0) {
      rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta (key, value) "
                              "VALUES ('checked_owners', ?1)", -1, &st, NULL);
      if (rc == SQLITE_OK) rc = bind_text(st, 1, dead.data);
      if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE) rc = SQLITE_OK;
      sqlite3_finalize(st);
    }
  }
  sl_buf_free(&dead);
  sl_buf_free(&seen);
  if (code != 0)
    return code;
  return rc == SQLITE_OK ? 0 : sq_fail(s, rc, "checking the store after a crash");
}

static int sq_check (sl_store *b) {
  sq_store *s = (sq_store *)b;
  sqlite3_stmt *st;
  char found[400] = "";
  size_t used = 0;
  int rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check(20)", -1, &st, NULL);
  int ok = 1;
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *line = column_text(st, 0);
    if (line != NULL && strcmp(line, "ok") == 0)
      continue;
    ok = 0;
    if (line != NULL && used + 3 < sizeof found)
      used += (size_t)snprintf(found + used, sizeof found - used, "%s%s",
                               used ? "; " : "", line);
  }
  if (rc == SQLITE_DONE || rc == SQLITE_ROW)
    rc = SQLITE_OK;
  sqlite3_finalize(st);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, "checking the store");
  if (!ok)
    return sl_store_seterr(b, SL_STORE_ECORRUPT, "is damaged: %s", found);
  int64_t broken = 0;
  if ((rc = query_int(s->db, "SELECT count(*) FROM pragma_foreign_key_check", &broken))
      != SQLITE_OK)
    return sq_fail(s, rc, "checking the store");
  if (broken != 0)
    return sl_store_seterr(b, SL_STORE_ECORRUPT, "is damaged: %lld rows refer to "
                           "runs that are gone", (long long)broken);
  return 0;
}


static int sq_vacuum (sl_store *b) {
  sq_store *s = (sq_store *)b;
  int rc;
  if (s->read_only)
    return sq_fail(s, SQLITE_READONLY, "vacuuming");
  if ((rc = sq_flush(b)) != 0)
    return rc;
  if ((rc = sq_exec(s, "VACUUM", "vacuuming")) != 0)
    return rc;
  return s->memory ? 0 : sq_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)", "vacuuming");
}

/* }====================================================== */


const struct sl_store_ops sl_store_sqlite_ops = {
  "sqlite",
  0,
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
  sq_run_claim,
  sq_run_renew,
  sq_run_finish,
  sq_prune,
  sq_stats,
  sq_check,
  sq_vacuum,
  sq_cache_touch,
  sq_check_after_crash,
  sq_run_claim_some,
  sq_run_requeue,
  sq_watch_queue,
  sq_watch_clear,
};
