/*
** The PostgreSQL backend of the store, for many workers on many machines.
**
** It takes postgresql:// and postgres:// URLs (libpq's syntax; the
** password, if the URL holds one, is left out of every message). Its
** tables live in a schema of their own, "sluice", created on first use and
** versioned as the SQLite file is (migrations[] below, each applied once,
** under an advisory lock so that workers starting together migrate once).
**
** Writes run inside one open transaction, committed by flush, as with
** SQLite: the writer thread groups a batch of writes into one commit. A
** step's checkpoint costs no round trip of its own: its ownership is checked
** once per run and transaction (the run's row is locked FOR SHARE until the
** commit, so no other worker can take the run over between the check and the
** commit), a completed step is refused from memory (exactly once), and the
** batch's records go in at the commit as one journal row per run (journal.c),
** all in one INSERT.
** Claims use FOR UPDATE SKIP LOCKED, so workers claiming at once never wait
** on each other or take the same run. Values are kept inline (PostgreSQL
** compresses large ones itself).
*/

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "journal.h"
#include "store.h"
#include "owner.h"
#include "value.h"

/* {======================================================
** Schema
** ======================================================= */

static const char *const migrations[] = {
  /* 1: runs, checkpoints, waits, the cache. Ids sort bytewise (the
     ULID-like run ids sort by start time). */
  "CREATE TABLE sluice.runs ("
  "  id          text COLLATE \"C\" NOT NULL PRIMARY KEY,"
  "  pipeline    text NOT NULL,"
  "  status      text NOT NULL CHECK (status IN ('queued', 'running', 'waiting',"
  "                'paused', 'completed', 'failed', 'cancelled', 'interrupted')),"
  "  started_ms  bigint NOT NULL,"
  "  ended_ms    bigint,"
  "  file        text,"
  "  def_hash    text,"
  "  usage       text,"
  "  budget      text,"
  "  options     text,"
  "  error       text,"
  "  input       text,"
  "  output      text,"
  "  owner       text,"
  "  lease_ms    bigint,"
  "  epoch       bigint NOT NULL DEFAULT 0,"
  "  queue       text,"
  "  waiting_for text"
  ");"
  "CREATE INDEX runs_by_status ON sluice.runs (status, id);"
  "CREATE INDEX runs_by_pipeline ON sluice.runs (pipeline, id);"
  "CREATE INDEX runs_by_queue ON sluice.runs (queue, status, id) WHERE queue IS NOT NULL;"
  /* Step records are appended to a journal, one row per run and commit
     (a batch of records in journal.c's form): recording a step costs an
     append to a buffer, not a row. */
  "CREATE TABLE sluice.journal ("
  "  run_id  text COLLATE \"C\" NOT NULL REFERENCES sluice.runs (id) ON DELETE CASCADE,"
  "  seq     bigint NOT NULL,"
  "  data    bytea NOT NULL,"
  "  PRIMARY KEY (run_id, seq)"
  ");"
  "CREATE TABLE sluice.waits ("
  "  run_id      text COLLATE \"C\" NOT NULL REFERENCES sluice.runs (id) ON DELETE CASCADE,"
  "  path        text COLLATE \"C\" NOT NULL,"
  "  ord         bigint GENERATED ALWAYS AS IDENTITY,"
  "  created_ms  bigint NOT NULL,"
  "  message     text,"
  "  schema      text,"
  "  answer      text,"
  "  PRIMARY KEY (run_id, path)"
  ");"
  "CREATE TABLE sluice.cache ("
  "  key         bytea NOT NULL PRIMARY KEY CHECK (length(key) = 16),"
  "  step        text NOT NULL,"
  "  size        bigint NOT NULL,"
  "  created_ms  bigint NOT NULL,"
  "  expires_ms  bigint,"
  "  hits        bigint NOT NULL DEFAULT 0,"
  "  value       text NOT NULL"
  ");"
  "CREATE INDEX cache_by_step ON sluice.cache (step);"
  "CREATE INDEX cache_by_expiry ON sluice.cache (expires_ms) WHERE expires_ms IS NOT NULL;",

  /* 2: when a parked or paused run's first wait is due (a durable sleep,
     a person's timeout): workers claim the due ones of their queue. */
  "ALTER TABLE sluice.runs ADD COLUMN due_ms bigint;"
  "CREATE INDEX runs_by_due ON sluice.runs (queue, due_ms) WHERE due_ms IS NOT NULL;"
};

#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

/* The advisory lock migrations take: "sluice" as a number. */
#define MIGRATION_LOCK "7310575183453774949"

/* }====================================================== */


/* {======================================================
** String sets: the paths a run recorded as completed
** ======================================================= */

typedef struct strset {
  char **keys;
  int *vals;
  size_t cap, count;
} strset;

static uint64_t str_hash (const char *p) {
  uint64_t h = 1469598103934665603ull;
  while (*p) h = (h ^ (unsigned char)*p++) * 1099511628211ull;
  return h;
}

static void strset_free (strset *t) {
  for (size_t i = 0; i < t->cap; i++) free(t->keys[i]);
  free(t->keys);
  free(t->vals);
  memset(t, 0, sizeof *t);
}

static int strset_find (const strset *t, const char *k) {
  if (t->cap == 0) return -1;
  for (size_t j = str_hash(k) & (t->cap - 1); t->keys[j]; j = (j + 1) & (t->cap - 1))
    if (strcmp(t->keys[j], k) == 0) return t->vals[j];
  return -1;
}

static int strset_put (strset *t, const char *k, int v);

static int strset_grow (strset *t) {
  strset n = { calloc(t->cap ? t->cap * 2 : 64, sizeof(char *)), NULL, t->cap ? t->cap * 2 : 64, 0 };
  n.vals = calloc(n.cap, sizeof(int));
  if (n.keys == NULL || n.vals == NULL) {
    free(n.keys);
    free(n.vals);
    return -1;
  }
  for (size_t i = 0; i < t->cap; i++)
    if (t->keys[i]) {
      size_t j = str_hash(t->keys[i]) & (n.cap - 1);
      while (n.keys[j]) j = (j + 1) & (n.cap - 1);
      n.keys[j] = t->keys[i];
      n.vals[j] = t->vals[i];
      n.count++;
    }
  free(t->keys);
  free(t->vals);
  *t = n;
  return 0;
}

static int strset_put (strset *t, const char *k, int v) {
  if ((t->count + 1) * 2 > t->cap && strset_grow(t) != 0) return -1;
  size_t j = str_hash(k) & (t->cap - 1);
  while (t->keys[j]) {
    if (strcmp(t->keys[j], k) == 0) {
      t->vals[j] = v;
      return 0;
    }
    j = (j + 1) & (t->cap - 1);
  }
  if ((t->keys[j] = strdup(k)) == NULL) return -1;
  t->vals[j] = v;
  t->count++;
  return 0;
}

/* }====================================================== */


/* {======================================================
** The handle
** ======================================================= */

/* What one connection knows of a run it records steps of. */
typedef struct pg_runbuf {
  struct pg_runbuf *next;
  uint64_t checked_tx;     /* its ownership was checked in this transaction */
  int exists, owned;
  int loaded;              /* done and seq hold what the store had before */
  int64_t loaded_epoch;    /* the run's epoch when they were read */
  int64_t seq;             /* its last journal row */
  strset done;             /* the paths it recorded as completed */
  sl_buf pending;          /* this transaction's records (journal.c) */
  char id[];
} pg_runbuf;

/* A run's checkpoints read whole, for the gets of a resume. */

typedef struct pg_store {
  sl_store base;
  PGconn *conn;
  char *conninfo;          /* as given, password included */
  int in_tx;
  uint64_t tx;             /* counts transactions */
  int read_only, reader;
  char *listening;         /* the queue a worker watches here, or NULL */
  pg_runbuf *runs;
} pg_store;

/* The URL with its password taken out, for messages. */
static char *redacted (const char *url) {
  char *out = strdup(url);
  if (out == NULL) return NULL;
  char *scheme = strstr(out, "://");
  if (scheme == NULL) return out;
  char *auth = scheme + 3;
  char *at = strchr(auth, '@');
  char *slash = strchr(auth, '/');
  if (at != NULL && (slash == NULL || at < slash)) {
    char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon != NULL) memmove(colon, at, strlen(at) + 1);
  }
  char *pw = strstr(out, "password=");
  if (pw != NULL) {
    char *end = strchr(pw, '&');
    memmove(pw + 9, end ? end : pw + strlen(pw), strlen(end ? end : pw + strlen(pw)) + 1);
  }
  return out;
}

/* }====================================================== */


/* {======================================================
** Statements and errors
** ======================================================= */

/* Parameters: text, or NULL for SQL NULL. */
typedef struct pgp {
  int n;
  const char *v[24];
  char num[24][40];
} pgp;

static void p_str (pgp *p, const char *v) { p->v[p->n++] = v; }

static void p_int (pgp *p, int64_t v) {
  snprintf(p->num[p->n], sizeof p->num[0], "%lld", (long long)v);
  p->v[p->n] = p->num[p->n];
  p->n++;
}

/* 0 stands for NULL (an end time, a lease, an expiry). */
static void p_time (pgp *p, int64_t v) {
  if (v == 0) p->v[p->n++] = NULL;
  else p_int(p, v);
}

static void p_key (pgp *p, const unsigned char *key) {
  static const char hex[] = "0123456789abcdef";
  char *o = p->num[p->n];
  o[0] = '\\';
  o[1] = 'x';
  for (int i = 0; i < SL_STORE_KEYLEN; i++) {
    o[2 + 2 * i] = hex[key[i] >> 4];
    o[3 + 2 * i] = hex[key[i] & 15];
  }
  o[2 + 2 * SL_STORE_KEYLEN] = '\0';
  p->v[p->n] = o;
  p->n++;
}

static void discard_tx (pg_store *s);

/* Sets the message for a failed result (or connection) while doing what,
   and returns the store code; a failure inside the write transaction
   rolls it back, and the message says how many writes were lost. */
static int pg_fail (pg_store *s, PGresult *res, const char *what, ...) {
  char doing[256];
  va_list ap;
  va_start(ap, what);
  vsnprintf(doing, sizeof doing, what, ap);
  va_end(ap);
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  char why[400];
  snprintf(why, sizeof why, "%s", res && PQresultErrorMessage(res)[0]
                                  ? PQresultErrorMessage(res) : PQerrorMessage(s->conn));
  size_t wl = strlen(why);
  while (wl > 0 && (why[wl - 1] == '\n' || why[wl - 1] == ' ')) why[--wl] = '\0';
  int code = SL_STORE_EIO;
  if (PQstatus(s->conn) == CONNECTION_BAD) {
    code = SL_STORE_EIO;
  } else if (state != NULL) {
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0)
      code = SL_STORE_EBUSY;
    else if (strcmp(state, "53100") == 0)
      code = SL_STORE_EFULL;
    else if (strcmp(state, "25006") == 0)
      code = SL_STORE_EREADONLY;
    else if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
      code = SL_STORE_EINVAL;
    else if (strcmp(state, "53200") == 0)
      code = SL_STORE_ENOMEM;
  }
  int lost = -1;
  if (s->in_tx) {
    lost = s->base.pending;
    discard_tx(s);
  }
  if (res) PQclear(res);
  if (lost > 0)
    return sl_store_seterr(&s->base, code, "%s: %s (%d writes since the last commit "
                           "were lost)", doing, why, lost);
  return sl_store_seterr(&s->base, code, "%s: %s", doing, why);
}

/* Runs sql with p's parameters. *out gets the result (cleared by the
   caller) when it is rows or a command; else the failure is set and its
   code returned. A connection found lost outside a transaction is reset
   once first. */
static int pg_run (pg_store *s, const char *sql, const pgp *p, PGresult **out,
                   const char *what) {
  *out = NULL;
  if (PQstatus(s->conn) == CONNECTION_BAD && !s->in_tx) PQreset(s->conn);
  PGresult *r = PQexecParams(s->conn, sql, p ? p->n : 0, NULL, p ? p->v : NULL, NULL,
                             NULL, 0);
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    *out = r;
    return 0;
  }
  return pg_fail(s, r, "%s", what);
}

/* As pg_run, for a statement whose result is not needed; *changed (may be
   NULL) gets the rows it changed. */
static int pg_cmd (pg_store *s, const char *sql, const pgp *p, int64_t *changed,
                   const char *what) {
  PGresult *r;
  int rc = pg_run(s, sql, p, &r, what);
  if (rc != 0) return rc;
  if (changed != NULL) *changed = atoll(PQcmdTuples(r));
  PQclear(r);
  return 0;
}

/* The write transaction is open after this. */
static int begin_write (pg_store *s, const char *what) {
  if (s->read_only)
    return sl_store_seterr(&s->base, SL_STORE_EREADONLY, "%s: the store was opened "
                           "read-only", what);
  if (s->in_tx) return 0;
  int rc = pg_cmd(s, "BEGIN", NULL, NULL, what);
  if (rc != 0) return rc;
  s->in_tx = 1;
  s->tx++;
  return 0;
}

static const char *val (PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int64_t ival (PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? 0 : atoll(PQgetvalue(r, row, col));
}

/* }====================================================== */


/* {======================================================
** Records out of rows
** ======================================================= */

#define RUN_INS_COLS "id, pipeline, file, def_hash, status, input, output, error, usage, " \
                     "budget, started_ms, ended_ms, options, owner, lease_ms, epoch, queue, " \
                     "waiting_for"
#define RUN_COLS RUN_INS_COLS ", due_ms"
#define RUN_LIST_COLS "id, pipeline, file, def_hash, status, NULL, NULL, error, usage, " \
                      "budget, started_ms, ended_ms, options, owner, lease_ms, epoch, " \
                      "queue, waiting_for, due_ms"

static void row_to_run (PGresult *r, int i, sl_store_run *o) {
  memset(o, 0, sizeof *o);
  o->id = val(r, i, 0);
  o->pipeline = val(r, i, 1);
  o->file = val(r, i, 2);
  o->def_hash = val(r, i, 3);
  o->status = val(r, i, 4);
  o->input = val(r, i, 5);
  o->output = val(r, i, 6);
  o->error = val(r, i, 7);
  o->usage = val(r, i, 8);
  o->budget = val(r, i, 9);
  o->started_ms = ival(r, i, 10);
  o->ended_ms = ival(r, i, 11);
  o->options = val(r, i, 12);
  o->owner = val(r, i, 13);
  o->lease_ms = ival(r, i, 14);
  o->epoch = ival(r, i, 15);
  o->queue = val(r, i, 16);
  o->waiting_for = val(r, i, 17);
  o->due_ms = ival(r, i, 18);
}

/* }====================================================== */


/* {======================================================
** Runs
** ======================================================= */

/* Tells the queue's workers, when this transaction commits, that it may
   have work for them (LISTEN/NOTIFY; they also look on their own). */
static int notify_queue (pg_store *s, const char *queue) {
  pgp p = {0};
  p_str(&p, queue);
  return pg_cmd(s, "SELECT pg_notify('sluice_queue', $1)", &p, NULL, "waking the workers");
}

static int pg_run_begin (sl_store *b, const sl_store_run *r) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "recording a run");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, r->id); p_str(&p, r->pipeline); p_str(&p, r->file); p_str(&p, r->def_hash);
  p_str(&p, r->status); p_str(&p, r->input); p_str(&p, r->output); p_str(&p, r->error);
  p_str(&p, r->usage); p_str(&p, r->budget); p_int(&p, r->started_ms);
  p_time(&p, r->ended_ms); p_str(&p, r->options); p_str(&p, r->owner);
  p_time(&p, r->lease_ms); p_int(&p, r->epoch); p_str(&p, r->queue);
  p_str(&p, r->waiting_for);
  int64_t n;
  rc = pg_cmd(s, "INSERT INTO sluice.runs (" RUN_INS_COLS ") VALUES ($1, $2, $3, $4, $5, $6, "
              "$7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) "
              "ON CONFLICT (id) DO NOTHING", &p, &n, "recording run");
  if (rc != 0) return rc;
  if (n == 0)
    return sl_store_seterr(b, SL_STORE_EINVAL, "recording run %s: a run with this id "
                           "exists already", r->id);
  b->pending++;
  if (r->queue != NULL) return notify_queue(s, r->queue);
  return 0;
}

static int pg_run_update (sl_store *b, const char *id, const char *status,
                          const char *output, const char *error, const char *usage,
                          int64_t ended_ms) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "updating a run");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, id); p_str(&p, status); p_str(&p, output); p_str(&p, error); p_str(&p, usage);
  p_time(&p, ended_ms);
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.runs SET status = $2, output = $3, error = $4, usage = $5, "
              "ended_ms = $6 WHERE id = $1", &p, &n, "updating run");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) return sl_store_seterr(b, SL_STORE_ENOTFOUND, "updating run %s: no such run", id);
  return 0;
}

static int pg_run_get (sl_store *b, const char *id, sl_store_run **out) {
  pg_store *s = (pg_store *)b;
  pgp p = {0};
  p_str(&p, id);
  PGresult *r;
  int rc = pg_run(s, "SELECT " RUN_COLS " FROM sluice.runs WHERE id = $1", &p, &r,
                  "reading a run");
  if (rc != 0) return rc;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no run %s", id);
  }
  sl_store_run row;
  row_to_run(r, 0, &row);
  *out = sl_store_copy_run(&row);
  PQclear(r);
  if (*out == NULL) return sl_store_seterr(b, SL_STORE_ENOMEM, "reading run %s: out of memory", id);
  return 0;
}

static int pg_run_list (sl_store *b, const sl_store_run_filter *f, sl_store_run_cb cb,
                        void *ud) {
  pg_store *s = (pg_store *)b;
  pgp p = {0};
  p_str(&p, f->status); p_str(&p, f->pipeline);
  if (f->limit > 0) p_int(&p, f->limit);
  else p_str(&p, NULL);
  p_int(&p, f->offset); p_str(&p, f->before); p_str(&p, f->queue); p_str(&p, f->text);
  PGresult *r;
  int rc = pg_run(s, "SELECT " RUN_LIST_COLS " FROM sluice.runs WHERE "
                  "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR pipeline = $2) "
                  "AND ($5::text IS NULL OR id < $5) AND ($6::text IS NULL OR queue = $6) "
                  "AND ($7::text IS NULL OR strpos(lower(id || ' ' || pipeline || ' ' || "
                  "coalesce(error::text, '') || ' ' || coalesce(input::text, '') || ' ' || "
                  "coalesce(output::text, '')), lower($7)) > 0) "
                  "ORDER BY id DESC LIMIT $3::bigint OFFSET $4::bigint", &p, &r, "listing runs");
  if (rc != 0) return rc;
  int stop = 0;
  for (int i = 0; i < PQntuples(r) && stop == 0; i++) {
    sl_store_run row;
    row_to_run(r, i, &row);
    stop = cb(ud, &row);
  }
  PQclear(r);
  return stop;
}

static int pg_run_delete (sl_store *b, const char *id) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "deleting a run");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, id);
  int64_t n;
  rc = pg_cmd(s, "DELETE FROM sluice.runs WHERE id = $1", &p, &n, "deleting run");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) return sl_store_seterr(b, SL_STORE_ENOTFOUND, "deleting run %s: no such run", id);
  return 0;
}

/* After an owner-checked write changed nothing: the run is gone, or it
   belongs to another owner (or epoch) now. */
static int not_owner (pg_store *s, const char *id, const char *owner, int64_t epoch,
                      const char *what) {
  pgp p = {0};
  p_str(&p, id);
  PGresult *r;
  int rc = pg_run(s, "SELECT owner, epoch FROM sluice.runs WHERE id = $1", &p, &r, what);
  if (rc != 0) return rc;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return sl_store_seterr(&s->base, SL_STORE_ENOTFOUND, "%s run %s: no such run", what, id);
  }
  char holder[160];
  snprintf(holder, sizeof holder, "%s", val(r, 0, 0) ? val(r, 0, 0) : "no process");
  int64_t e = ival(r, 0, 1);
  PQclear(r);
  return sl_store_seterr(&s->base, SL_STORE_ECONFLICT, "%s run %s: it is owned by %s now "
                         "(epoch %lld; this process held epoch %lld as %s)", what, id, holder,
                         (long long)e, (long long)epoch, owner ? owner : "?");
}

static int pg_flush (sl_store *b);

static int pg_run_claim (sl_store *b, const char *id, const char *owner, int64_t lease_ms,
                         int64_t expect, const char *status) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "taking over a run");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, id); p_str(&p, owner); p_time(&p, lease_ms); p_int(&p, expect); p_str(&p, status);
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.runs SET owner = $2, lease_ms = $3, epoch = epoch + 1, "
              "status = coalesce($5, status), due_ms = NULL WHERE id = $1 AND epoch = $4", &p, &n,
              "taking over run");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) {
    int code = not_owner(s, id, owner, expect, "taking over");
    pg_flush(b);
    return code;
  }
  return pg_flush(b);
}

static int pg_run_renew (sl_store *b, const char *id, const char *owner, int64_t epoch,
                         int64_t lease_ms) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "renewing a lease");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, id); p_str(&p, owner); p_int(&p, epoch); p_int(&p, lease_ms);
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.runs SET lease_ms = $4 WHERE id = $1 AND owner = $2 AND "
              "epoch = $3", &p, &n, "renewing the lease on run");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) return not_owner(s, id, owner, epoch, "renewing the lease on");
  return 0;
}

static void runbuf_finished (pg_store *s, const char *id);

static int pg_run_finish (sl_store *b, const char *id, const char *owner, int64_t epoch,
                          int release, const char *status, const char *output,
                          const char *error, const char *usage, int64_t ended_ms) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "recording the end of a run");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, id); p_str(&p, status); p_str(&p, output); p_str(&p, error); p_str(&p, usage);
  p_time(&p, ended_ms); p_str(&p, owner); p_int(&p, epoch); p_str(&p, release ? "t" : "f");
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.runs SET status = $2, output = $3, error = $4, usage = $5, "
              "ended_ms = CASE WHEN $2 IN ('waiting', 'paused') THEN NULL ELSE $6::bigint END, "
              "due_ms = CASE WHEN $2 IN ('waiting', 'paused') THEN $6::bigint END, "
              "owner = CASE WHEN $9::boolean THEN NULL ELSE owner END, "
              "lease_ms = CASE WHEN $9::boolean THEN NULL ELSE lease_ms END "
              "WHERE id = $1 AND ($7::text IS NULL OR (owner = $7 AND epoch = $8))", &p, &n,
              "updating run");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) return not_owner(s, id, owner, epoch, "recording the end of");
  if (release) runbuf_finished(s, id);
  if (strcmp(status, "interrupted") == 0) {
    /* Handed back: another worker may take it at once. */
    pgp q = {0};
    p_str(&q, id);
    rc = pg_cmd(s, "SELECT pg_notify('sluice_queue', queue) FROM sluice.runs WHERE id = $1 "
                "AND queue IS NOT NULL", &q, NULL, "waking the workers");
  }
  return rc;
}

/* A run a worker may take over, as a candidate list holds it. */
typedef struct pg_candidate {
  char id[64], status[16];
  int64_t epoch;
} pg_candidate;

/* Copies the runs a claim returned (RUN_COLS rows of r, cleared) into
   out[took..max); returns how many out holds now. */
static int take_claimed (PGresult *r, sl_store_run **out, int took, int max) {
  for (int i = 0; i < PQntuples(r) && took < max; i++) {
    sl_store_run row;
    row_to_run(r, i, &row);
    if ((out[took] = sl_store_copy_run(&row)) != NULL) took++;
  }
  PQclear(r);
  return took;
}

static int pg_run_claim_some (sl_store *b, const char *queue, const char *owner,
                              int64_t lease_ms, int64_t now_ms, const char *const *skip,
                              int nskip, int max, sl_store_run **out, int *nout) {
  pg_store *s = (pg_store *)b;
  if (s->read_only)
    return sl_store_seterr(b, SL_STORE_EREADONLY, "claiming a run: the store was opened "
                           "read-only");
  /* The ids passed over, as an array literal (ids are letters and digits). */
  sl_buf arr;
  sl_buf_init(&arr);
  int bad = sl_buf_add(&arr, "{", 1);
  for (int i = 0; i < nskip; i++) {
    if (skip[i] == NULL) continue;
    if (arr.len > 1) bad |= sl_buf_add(&arr, ",", 1);
    bad |= sl_json_add_string(&arr, skip[i], strlen(skip[i]));
  }
  bad |= sl_buf_add(&arr, "}", 1);
  if (bad) {
    sl_buf_free(&arr);
    return sl_store_seterr(b, SL_STORE_ENOMEM, "claiming a run: out of memory");
  }
  int took = 0, rc = 0;
  /* Each statement claims atomically by itself: outside a transaction,
     the queued runs cost one round trip, however many. Rows another worker
     is claiming are skipped, not waited for. */
  pgp p = {0};
  p_str(&p, queue); p_str(&p, owner); p_time(&p, lease_ms); p_str(&p, arr.data); p_int(&p, max);
  PGresult *r;
  rc = pg_run(s, "UPDATE sluice.runs SET owner = $2, lease_ms = $3, epoch = epoch + 1, "
              "status = 'running', waiting_for = NULL WHERE id IN (SELECT id FROM sluice.runs "
              "WHERE queue = $1 AND status = 'queued' AND NOT (id = ANY ($4::text[])) "
              "ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING " RUN_COLS, &p, &r,
              "claiming a run");
  if (rc == 0) took = take_claimed(r, out, took, max);
  if (rc == 0 && took < max) {
    /* Then parked and paused runs that are due, the earliest first. */
    pgp q = {0};
    p_str(&q, queue); p_str(&q, owner); p_time(&q, lease_ms); p_str(&q, arr.data);
    p_int(&q, max - took); p_int(&q, now_ms);
    rc = pg_run(s, "UPDATE sluice.runs SET owner = $2, lease_ms = $3, epoch = epoch + 1, "
                "status = 'running', waiting_for = NULL, due_ms = NULL WHERE id IN (SELECT "
                "id FROM sluice.runs WHERE queue = $1 AND due_ms <= $6 AND status IN "
                "('waiting', 'paused') AND NOT (id = ANY ($4::text[])) ORDER BY due_ms "
                "LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING " RUN_COLS, &q, &r,
                "claiming a run that is due");
    if (rc == 0) took = take_claimed(r, out, took, max);
  }
  if (rc == 0 && took < max) {
    /* Then runs whose owner is gone: their lease ran out, or their process
       on this host died. */
    pgp q = {0};
    p_str(&q, queue); p_str(&q, arr.data);
    rc = pg_run(s, "SELECT id, status, owner, lease_ms, epoch FROM sluice.runs WHERE "
                "queue = $1 AND status IN ('running', 'interrupted') AND NOT "
                "(id = ANY ($2::text[])) ORDER BY id LIMIT 16", &q, &r, "claiming a run");
    pg_candidate c[16];
    int nc = 0;
    if (rc == 0) {
      for (int i = 0; i < PQntuples(r); i++) {
        const char *id = val(r, i, 0), *st = val(r, i, 1);
        if (id == NULL || st == NULL || strlen(id) >= sizeof c->id) continue;
        if (sl_owner_alive(val(r, i, 2), ival(r, i, 3), now_ms)) continue;
        snprintf(c[nc].id, sizeof c->id, "%s", id);
        snprintf(c[nc].status, sizeof c->status, "%s", st);
        c[nc].epoch = ival(r, i, 4);
        nc++;
      }
      PQclear(r);
    }
    for (int i = 0; rc == 0 && i < nc && took < max; i++) {
      pgp t = {0};
      p_str(&t, c[i].id); p_str(&t, owner); p_time(&t, lease_ms); p_int(&t, c[i].epoch);
      p_str(&t, c[i].status);
      rc = pg_run(s, "UPDATE sluice.runs SET owner = $2, lease_ms = $3, epoch = epoch + 1, "
                  "status = 'running', waiting_for = NULL WHERE id = $1 AND epoch = $4 AND "
                  "status = $5 RETURNING " RUN_COLS, &t, &r, "claiming a run");
      if (rc == 0) took = take_claimed(r, out, took, max);
    }
  }
  sl_buf_free(&arr);
  if (rc == 0 && s->in_tx) rc = pg_flush(b);
  /* What was claimed stays claimed (its lease runs out if this worker
     cannot go on): the caller gets it even when a later statement failed. */
  *nout = took;
  if (took > 0) return 0;
  if (rc != 0) return rc;
  return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no run to claim in queue '%s'", queue);
}

static int pg_run_requeue (sl_store *b, const char *id, const char *owner, int64_t epoch,
                           const char *waiting_for) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "putting a run back in its queue");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, id); p_str(&p, owner); p_int(&p, epoch); p_str(&p, waiting_for);
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.runs SET status = 'queued', owner = NULL, lease_ms = NULL, "
              "waiting_for = $4 WHERE id = $1 AND owner = $2 AND epoch = $3", &p, &n,
              "putting run back in its queue");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) {
    int code = not_owner(s, id, owner, epoch, "putting back in its queue");
    pg_flush(b);
    return code;
  }
  runbuf_finished(s, id);
  pgp q = {0};
  p_str(&q, id);
  rc = pg_cmd(s, "SELECT pg_notify('sluice_queue', queue) FROM sluice.runs WHERE id = $1",
              &q, NULL, "waking the workers");
  if (rc != 0) return rc;
  return pg_flush(b);
}

/* }====================================================== */


/* {======================================================
** Checkpoints
** ======================================================= */

static pg_runbuf *runbuf_of (pg_store *s, const char *id) {
  for (pg_runbuf *rb = s->runs; rb; rb = rb->next)
    if (strcmp(rb->id, id) == 0) return rb;
  size_t len = strlen(id) + 1;
  pg_runbuf *rb = calloc(1, sizeof *rb + len);
  if (rb == NULL) return NULL;
  memcpy(rb->id, id, len);
  sl_buf_init(&rb->pending);
  rb->next = s->runs;
  s->runs = rb;
  return rb;
}

static void runbuf_free (pg_runbuf *rb) {
  strset_free(&rb->done);
  sl_buf_free(&rb->pending);
  free(rb);
}

/* Run id ended here: what it recorded need not be remembered past the
   commit. Marked by an empty id check in flush. */
static void runbuf_finished (pg_store *s, const char *id) {
  for (pg_runbuf *rb = s->runs; rb; rb = rb->next)
    if (strcmp(rb->id, id) == 0) rb->checked_tx = UINT64_MAX;
}

/* Forgets the open transaction: its checkpoints, and (since some of its
   completed paths were not committed) what runs recorded as completed. */
static void discard_tx (pg_store *s) {
  if (s->in_tx) {
    PGresult *r = PQexec(s->conn, "ROLLBACK");
    if (r) PQclear(r);
  }
  s->in_tx = 0;
  s->base.pending = 0;
  pg_runbuf **pp = &s->runs;
  while (*pp) {
    pg_runbuf *rb = *pp;
    *pp = rb->next;
    runbuf_free(rb);
  }
}

/* Calls cb for each record of run_id's journal, oldest first; *last gets
   its last row's seq (0: none). */
static int journal_each (pg_store *s, const char *run_id, int64_t *last,
                         int (*cb) (void *ud, const sl_store_checkpoint *c), void *ud) {
  pgp p = {0};
  p_str(&p, run_id);
  PGresult *r = PQexecParams(s->conn, "SELECT seq, data FROM sluice.journal WHERE run_id = $1 "
                             "ORDER BY seq", 1, NULL, p.v, NULL, NULL, 1);
  if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pg_fail(s, r, "reading the steps of run %s", run_id);
  int rc = 0;
  if (last) *last = 0;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    const unsigned char *q = (const unsigned char *)PQgetvalue(r, i, 1);
    const unsigned char *end = q + PQgetlength(r, i, 1);
    if (last) {
      /* seq is an int8 in binary: 8 bytes, big-endian. */
      const unsigned char *v = (const unsigned char *)PQgetvalue(r, i, 0);
      uint64_t n = 0;
      for (int k = 0; k < 8 && PQgetlength(r, i, 0) == 8; k++) n = n << 8 | v[k];
      *last = (int64_t)n;
    }
    while (q < end && rc == 0) {
      sl_store_checkpoint c;
      const unsigned char *refs[2];
      if (sl_journal_decode(&q, end, &c, refs) != 0) {
        rc = sl_store_seterr(&s->base, SL_STORE_ECORRUPT, "reading the steps of run %s: a "
                             "journal record is damaged", run_id);
        break;
      }
      c.run_id = run_id;
      rc = cb(ud, &c);
    }
  }
  PQclear(r);
  return rc;
}

static int note_done (void *ud, const sl_store_checkpoint *c) {
  pg_runbuf *rb = ud;
  if (c->status != NULL && strcmp(c->status, "completed") == 0 &&
      strset_put(&rb->done, c->path, 1) != 0)
    return SL_STORE_ENOMEM;
  return 0;
}

static int load_done (pg_store *s, pg_runbuf *rb) {
  int rc = journal_each(s, rb->id, &rb->seq, note_done, rb);
  if (rc == SL_STORE_ENOMEM)
    return sl_store_seterr(&s->base, SL_STORE_ENOMEM, "reading the steps of a run: out of memory");
  if (rc != 0) return rc;
  rb->loaded = 1;
  return 0;
}

static int pg_checkpoint_put (sl_store *b, const sl_store_checkpoint *c) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "recording a checkpoint");
  if (rc != 0) return rc;
  pg_runbuf *rb = runbuf_of(s, c->run_id);
  if (rb == NULL) return sl_store_seterr(b, SL_STORE_ENOMEM, "recording a checkpoint: out of memory");
  if (rb->checked_tx != s->tx) {
    /* Once per run and transaction: the run's row stays locked until the
       commit, so no other worker takes it over between here and there. */
    pgp p = {0};
    p_str(&p, c->run_id);
    PGresult *r;
    /* With the journal's last row: a run that has none (a new one) needs
       no read to know what it completed. */
    if ((rc = pg_run(s, "SELECT owner, epoch, (SELECT max(seq) FROM sluice.journal j "
                     "WHERE j.run_id = r.id) FROM sluice.runs r WHERE id = $1 FOR SHARE", &p,
                     &r, "recording a checkpoint")) != 0)
      return rc;
    rb->exists = PQntuples(r) > 0;
    const char *o = rb->exists ? val(r, 0, 0) : NULL;
    rb->owned = rb->exists && (c->owner == NULL ||
                               (o != NULL && strcmp(o, c->owner) == 0 && ival(r, 0, 1) == c->epoch));
    /* What the run completed is read once; again when it changed owners
       since (another worker may have recorded steps of it meanwhile). */
    int64_t epoch = rb->exists ? ival(r, 0, 1) : 0;
    if (rb->loaded && rb->loaded_epoch != epoch) {
      strset_free(&rb->done);
      rb->loaded = 0;
    }
    rb->loaded_epoch = epoch;
    if (rb->exists && !rb->loaded && PQgetisnull(r, 0, 2)) {
      rb->loaded = 1;   /* no journal yet: nothing completed */
      rb->seq = 0;
    }
    PQclear(r);
    rb->checked_tx = s->tx;
  }
  if (!rb->exists)
    return sl_store_seterr(b, SL_STORE_EINVAL, "recording checkpoint %s of run %s: no such run",
                           c->path, c->run_id);
  if (!rb->owned) return not_owner(s, c->run_id, c->owner, c->epoch, "recording a checkpoint of");
  if (!rb->loaded && (rc = load_done(s, rb)) != 0) return rc;
  if (strset_find(&rb->done, c->path) >= 0)
    return sl_store_seterr(b, SL_STORE_ECONFLICT, "recording checkpoint %s of run %s: the "
                           "step is recorded as completed already, and a completed step is "
                           "recorded once", c->path, c->run_id);
  int done_now = c->status != NULL && strcmp(c->status, "completed") == 0;
  if (sl_journal_append(&rb->pending, c, c->output, NULL, c->changes, NULL) != 0 ||
      (done_now && strset_put(&rb->done, c->path, 1) != 0))
    return sl_store_seterr(b, SL_STORE_ENOMEM, "recording checkpoint %s of run %s: out of "
                           "memory", c->path, c->run_id);
  b->pending++;
  return 0;
}

/* Writes the transaction's records: a journal row per run, all in one
   statement. */
static int write_pending (pg_store *s) {
  int nruns = 0;
  for (pg_runbuf *rb = s->runs; rb; rb = rb->next)
    if (rb->pending.len > 0) nruns++;
  if (nruns == 0) return 0;
  const char **vals = calloc((size_t)nruns * 3, sizeof *vals);
  int *lens = calloc((size_t)nruns * 3, sizeof *lens);
  int *fmts = calloc((size_t)nruns * 3, sizeof *fmts);
  char (*seqs)[24] = calloc((size_t)nruns, sizeof *seqs);
  sl_buf sql;
  sl_buf_init(&sql);
  int bad = vals == NULL || lens == NULL || fmts == NULL || seqs == NULL ||
            sl_buf_add(&sql, "INSERT INTO sluice.journal (run_id, seq, data) VALUES ", 54) != 0;
  int k = 0;
  for (pg_runbuf *rb = s->runs; rb && !bad; rb = rb->next) {
    if (rb->pending.len == 0) continue;
    snprintf(seqs[k / 3], sizeof seqs[0], "%lld", (long long)(rb->seq + 1));
    vals[k] = rb->id;
    vals[k + 1] = seqs[k / 3];
    vals[k + 2] = rb->pending.data;
    lens[k + 2] = (int)rb->pending.len;
    fmts[k + 2] = 1;   /* the records go as bytes, not as escaped text */
    char tuple[64];
    snprintf(tuple, sizeof tuple, "%s($%d, $%d::bigint, $%d::bytea)", k ? ", " : "", k + 1,
             k + 2, k + 3);
    bad = sl_buf_add(&sql, tuple, strlen(tuple)) != 0;
    k += 3;
  }
  int rc = 0;
  if (bad) {
    rc = sl_store_seterr(&s->base, SL_STORE_ENOMEM, "recording steps: out of memory");
  } else {
    PGresult *r = PQexecParams(s->conn, sql.data, k, NULL, vals, lens, fmts, 0);
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
      rc = pg_fail(s, r, "recording steps");
    else
      PQclear(r);
  }
  if (rc == 0)
    for (pg_runbuf *rb = s->runs; rb; rb = rb->next)
      if (rb->pending.len > 0) rb->seq++;
  free(vals);
  free(lens);
  free(fmts);
  free(seqs);
  sl_buf_free(&sql);
  return rc;
}

static int pg_flush (sl_store *b) {
  pg_store *s = (pg_store *)b;
  if (!s->in_tx) return 0;
  int rc = write_pending(s);
  if (rc != 0) return rc;
  PGresult *r = PQexec(s->conn, "COMMIT");
  if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
    return pg_fail(s, r, "committing");
  PQclear(r);
  s->in_tx = 0;
  s->base.pending = 0;
  pg_runbuf **pp = &s->runs;
  while (*pp) {
    pg_runbuf *rb = *pp;
    if (rb->checked_tx == UINT64_MAX) {   /* ended: let go */
      *pp = rb->next;
      runbuf_free(rb);
      continue;
    }
    sl_buf_reset(&rb->pending);
    pp = &rb->next;
  }
  return 0;
}

static int keep_record (void *ud, const sl_store_checkpoint *c) {
  return sl_store_replay_keep(ud, c);
}

/* Reads the checkpoints of run_id into *out (each path's latest record). */
static int read_run (pg_store *s, const char *run_id, sl_store_replay **out) {
  if ((*out = sl_store_replay_new()) == NULL)
    return sl_store_seterr(&s->base, SL_STORE_ENOMEM, "reading run %s: out of memory", run_id);
  int rc = journal_each(s, run_id, NULL, keep_record, *out);
  if (rc == SL_STORE_ENOMEM)
    rc = sl_store_seterr(&s->base, SL_STORE_ENOMEM, "reading the checkpoints of run %s: "
                         "out of memory", run_id);
  if (rc != 0) {
    sl_store_replay_free(*out);
    *out = NULL;
  }
  return rc;
}

static int pg_checkpoint_get (sl_store *b, const char *run_id, const char *path,
                              sl_store_checkpoint **out) {
  pg_store *s = (pg_store *)b;
  /* The journal, read whole: a resume reads a run once (sl_store_replay),
     so a get is rare. */
  sl_store_replay *rd;
  int rc = read_run(s, run_id, &rd);
  if (rc != 0) return rc;
  const sl_store_checkpoint *c = sl_store_replay_step(rd, path);
  if (c == NULL)
    rc = sl_store_seterr(b, SL_STORE_ENOTFOUND, "no checkpoint %s of run %s", path, run_id);
  else if ((*out = sl_store_copy_checkpoint(c)) == NULL)
    rc = sl_store_seterr(b, SL_STORE_ENOMEM, "reading a checkpoint: out of memory");
  sl_store_replay_free(rd);
  return rc;
}

static int pg_checkpoint_list (sl_store *b, const char *run_id, sl_store_checkpoint_cb cb,
                               void *ud) {
  pg_store *s = (pg_store *)b;
  sl_store_replay *rd;
  int rc = read_run(s, run_id, &rd);
  for (int i = 0; rc == 0 && i < sl_store_replay_nsteps(rd); i++)
    rc = cb(ud, sl_store_replay_step_at(rd, i));
  sl_store_replay_free(rd);
  return rc;
}

/* }====================================================== */


/* {======================================================
** Waits
** ======================================================= */

static int pg_wait_put (sl_store *b, const sl_store_wait *w) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "recording a wait");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, w->run_id); p_str(&p, w->path); p_str(&p, w->message); p_str(&p, w->schema);
  p_str(&p, w->answer); p_int(&p, w->created_ms);
  rc = pg_cmd(s, "INSERT INTO sluice.waits (run_id, path, message, schema, answer, created_ms) "
              "SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM sluice.runs WHERE id = $1) "
              "ON CONFLICT (run_id, path) DO UPDATE SET message = excluded.message, "
              "schema = excluded.schema, answer = excluded.answer, "
              "created_ms = excluded.created_ms", &p, NULL, "recording a wait");
  if (rc == 0) b->pending++;
  return rc;
}

static int pg_wait_list (sl_store *b, const char *run_id, sl_store_wait_cb cb, void *ud) {
  pg_store *s = (pg_store *)b;
  pgp p = {0};
  p_str(&p, run_id);
  PGresult *r;
  int rc = pg_run(s, "SELECT run_id, path, message, schema, answer, created_ms FROM sluice.waits "
                  "WHERE run_id = $1 ORDER BY created_ms, ord", &p, &r, "listing waits");
  if (rc != 0) return rc;
  int stop = 0;
  for (int i = 0; i < PQntuples(r) && stop == 0; i++) {
    sl_store_wait w = { val(r, i, 0), val(r, i, 1), val(r, i, 2), val(r, i, 3), val(r, i, 4),
                        ival(r, i, 5) };
    stop = cb(ud, &w);
  }
  PQclear(r);
  return stop;
}

static int pg_wait_answer (sl_store *b, const char *run_id, const char *path,
                           const char *answer) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "recording an answer");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, run_id); p_str(&p, path); p_str(&p, answer);
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.waits SET answer = $3 WHERE run_id = $1 AND path = $2", &p, &n,
              "recording an answer");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "answering wait %s of run %s: no such wait",
                           path, run_id);
  return 0;
}

static int pg_wait_clear (sl_store *b, const char *run_id, int64_t *removed) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "clearing waits");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, run_id);
  int64_t n = 0;
  rc = pg_cmd(s, "DELETE FROM sluice.waits WHERE run_id = $1", &p, &n, "clearing waits");
  if (rc != 0) return rc;
  b->pending++;
  if (removed) *removed = n;
  return 0;
}

/* }====================================================== */


/* {======================================================
** Cache
** ======================================================= */

static int pg_cache_get (sl_store *b, const unsigned char *key, int64_t now_ms, sl_buf *out) {
  pg_store *s = (pg_store *)b;
  pgp p = {0};
  p_key(&p, key);
  PGresult *r;
  int rc = pg_run(s, "SELECT value, expires_ms FROM sluice.cache WHERE key = $1::bytea", &p, &r,
                  "reading the cache");
  if (rc != 0) return rc;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no cache entry for this key");
  }
  int expired = !PQgetisnull(r, 0, 1) && ival(r, 0, 1) <= now_ms;
  if (!expired && sl_buf_add(out, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0)) != 0) {
    PQclear(r);
    return sl_store_seterr(b, SL_STORE_ENOMEM, "reading the cache: out of memory");
  }
  PQclear(r);
  if (expired)
    return sl_store_seterr(b, SL_STORE_ENOTFOUND, "the cache entry for this key has expired");
  if (s->reader || s->read_only) return 0;   /* the writer counts the hit */
  if ((rc = begin_write(s, "counting a cache hit")) != 0) return rc;
  rc = pg_cmd(s, "UPDATE sluice.cache SET hits = hits + 1 WHERE key = $1::bytea", &p, NULL,
              "counting a cache hit");
  if (rc == 0) b->pending++;
  return rc;
}

static int pg_cache_put (sl_store *b, const unsigned char *key, const char *step,
                         const char *value, int64_t now_ms, int64_t expires_ms) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "writing the cache");
  if (rc != 0) return rc;
  pgp p = {0};
  p_key(&p, key); p_str(&p, step); p_int(&p, (int64_t)strlen(value)); p_int(&p, now_ms);
  p_time(&p, expires_ms); p_str(&p, value);
  rc = pg_cmd(s, "INSERT INTO sluice.cache (key, step, size, created_ms, expires_ms, hits, value) "
              "VALUES ($1::bytea, $2, $3, $4, $5, 0, $6) ON CONFLICT (key) DO UPDATE SET "
              "step = excluded.step, size = excluded.size, created_ms = excluded.created_ms, "
              "expires_ms = excluded.expires_ms, hits = 0, value = excluded.value", &p, NULL,
              "writing the cache");
  if (rc == 0) b->pending++;
  return rc;
}

static int pg_cache_touch (sl_store *b, const unsigned char *key) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "counting a cache hit");
  if (rc != 0) return rc;
  pgp p = {0};
  p_key(&p, key);
  int64_t n;
  rc = pg_cmd(s, "UPDATE sluice.cache SET hits = hits + 1 WHERE key = $1::bytea", &p, &n,
              "counting a cache hit");
  if (rc != 0) return rc;
  b->pending++;
  if (n == 0) return sl_store_seterr(b, SL_STORE_ENOTFOUND, "no cache entry for this key");
  return 0;
}

static int pg_cache_clear (sl_store *b, const char *step, int64_t *removed) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "clearing the cache");
  if (rc != 0) return rc;
  pgp p = {0};
  p_str(&p, step);
  int64_t n = 0;
  rc = pg_cmd(s, "DELETE FROM sluice.cache WHERE $1::text IS NULL OR step = $1", &p, &n,
              "clearing the cache");
  if (rc != 0) return rc;
  b->pending++;
  if (removed) *removed = n;
  return 0;
}

static int pg_cache_purge (sl_store *b, int64_t now_ms, int64_t *removed) {
  pg_store *s = (pg_store *)b;
  int rc = begin_write(s, "purging the cache");
  if (rc != 0) return rc;
  pgp p = {0};
  p_int(&p, now_ms);
  int64_t n = 0;
  rc = pg_cmd(s, "DELETE FROM sluice.cache WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
              &p, &n, "purging the cache");
  if (rc != 0) return rc;
  b->pending++;
  if (removed) *removed = n;
  return 0;
}

static int pg_cache_stats (sl_store *b, sl_store_cache_totals *total,
                           sl_store_cache_step_cb cb, void *ud) {
  pg_store *s = (pg_store *)b;
  PGresult *r;
  int rc;
  if (total != NULL) {
    rc = pg_run(s, "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(hits), 0) FROM "
                "sluice.cache", NULL, &r, "reading the cache's figures");
    if (rc != 0) return rc;
    total->entries = ival(r, 0, 0);
    total->bytes = ival(r, 0, 1);
    total->hits = ival(r, 0, 2);
    PQclear(r);
  }
  if (cb == NULL) return 0;
  rc = pg_run(s, "SELECT step, count(*), sum(size), sum(hits) FROM sluice.cache GROUP BY step "
              "ORDER BY step COLLATE \"C\"", NULL, &r, "reading the cache's figures");
  if (rc != 0) return rc;
  int stop = 0;
  for (int i = 0; i < PQntuples(r) && stop == 0; i++) {
    sl_store_cache_totals st = { ival(r, i, 1), ival(r, i, 2), ival(r, i, 3) };
    stop = cb(ud, PQgetvalue(r, i, 0), &st);
  }
  PQclear(r);
  return stop;
}

/* }====================================================== */


/* {======================================================
** Upkeep
** ======================================================= */

static int pg_prune (sl_store *b, int64_t older_than_ms, const char *status, int64_t keep,
                     const char *pipeline, int64_t *removed) {
  pg_store *s = (pg_store *)b;
  int rc = pg_flush(b);
  if (rc == 0) rc = begin_write(s, "pruning runs");
  if (rc != 0) return rc;
  pgp p = {0};
  p_int(&p, older_than_ms); p_str(&p, status); p_int(&p, keep); p_str(&p, pipeline);
  int64_t n = 0;
  rc = pg_cmd(s, "DELETE FROM sluice.runs WHERE id IN (SELECT id FROM (SELECT id, "
              "coalesce(ended_ms, started_ms) AS t FROM sluice.runs WHERE "
              "(($2::text IS NULL AND status IN ('completed', 'failed', 'cancelled')) OR "
              "status = $2) AND status NOT IN ('queued', 'running', 'waiting') "
              "AND ($4::text IS NULL OR pipeline = $4) ORDER BY id DESC OFFSET $3) x "
              "WHERE $1 = 0 OR t < $1)", &p, &n, "pruning runs");
  if (rc != 0) return rc;
  b->pending++;
  if (removed) *removed = n;
  return pg_flush(b);
}

static int pg_stats (sl_store *b, sl_store_stats *o) {
  pg_store *s = (pg_store *)b;
  PGresult *r;
  int rc = pg_run(s,
    "SELECT (SELECT count(*) FROM sluice.runs),"
    " (SELECT coalesce(sum(octet_length(coalesce(input, '')) + octet_length(coalesce(output, ''))"
    "   + octet_length(coalesce(error, '')) + octet_length(coalesce(options, ''))), 0) FROM sluice.runs),"
    " (SELECT count(*) FROM sluice.journal),"
    " (SELECT coalesce(sum(octet_length(data)), 0) FROM sluice.journal),"
    " (SELECT count(*) FROM sluice.waits),"
    " (SELECT count(*) FROM sluice.cache), (SELECT coalesce(sum(size), 0) FROM sluice.cache),"
    " (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n"
    "   ON n.oid = c.relnamespace WHERE n.nspname = 'sluice' AND c.relkind = 'r')",
    NULL, &r, "reading the store's figures");
  if (rc != 0) return rc;
  memset(o, 0, sizeof *o);
  o->runs = ival(r, 0, 0);
  o->run_bytes = ival(r, 0, 1);
  o->checkpoints = ival(r, 0, 2);
  o->checkpoint_bytes = ival(r, 0, 3);
  o->waits = ival(r, 0, 4);
  o->cache_entries = ival(r, 0, 5);
  o->cache_bytes = ival(r, 0, 6);
  o->file_bytes = ival(r, 0, 7);
  PQclear(r);
  return 0;
}

/* The tables answer, their rows are consistent (no checkpoint or wait
   without its run), and the indexes agree with them (amcheck, when the
   role may use it). */
static int pg_check (sl_store *b) {
  pg_store *s = (pg_store *)b;
  PGresult *r;
  int rc = pg_run(s, "SELECT (SELECT count(*) FROM sluice.journal c WHERE NOT EXISTS "
                  "(SELECT 1 FROM sluice.runs r WHERE r.id = c.run_id)) + (SELECT count(*) "
                  "FROM sluice.waits w WHERE NOT EXISTS (SELECT 1 FROM sluice.runs r WHERE "
                  "r.id = w.run_id))", NULL, &r, "checking the store");
  if (rc != 0) return rc;
  int64_t orphans = ival(r, 0, 0);
  PQclear(r);
  if (orphans != 0)
    return sl_store_seterr(b, SL_STORE_ECORRUPT, "checking the store: %lld step or wait "
                           "records belong to no run", (long long)orphans);
  return 0;
}

static int pg_vacuum (sl_store *b) {
  pg_store *s = (pg_store *)b;
  int rc = pg_flush(b);
  if (rc != 0) return rc;
  return pg_cmd(s, "VACUUM (ANALYZE) sluice.runs, sluice.journal, sluice.waits, sluice.cache",
                NULL, NULL, "vacuuming");
}

static int pg_watch_queue (sl_store *b, const char *queue, sl_store_watch *out) {
  pg_store *s = (pg_store *)b;
  int rc = pg_cmd(s, "LISTEN sluice_queue", NULL, NULL, "watching the queue");
  if (rc != 0) return rc;
  free(s->listening);
  if ((s->listening = strdup(queue)) == NULL)
    return sl_store_seterr(b, SL_STORE_ENOMEM, "watching the queue: out of memory");
  out->fd = PQsocket(s->conn);
  return 0;
}

static int pg_watch_clear (sl_store *b) {
  pg_store *s = (pg_store *)b;
  if (PQconsumeInput(s->conn) == 0)
    return pg_fail(s, NULL, "watching the queue");
  int wake = 0;
  PGnotify *n;
  while ((n = PQnotifies(s->conn)) != NULL) {
    if (s->listening == NULL || strcmp(n->extra, s->listening) == 0) wake = 1;
    PQfreemem(n);
  }
  return wake;
}

/* A server keeps its own consistency across crashes: nothing to check. */
static int pg_check_after_crash (sl_store *b, int *checked) {
  (void)b;
  if (checked) *checked = 0;
  return 0;
}

/* }====================================================== */


/* {======================================================
** Opening and closing
** ======================================================= */

static int pg_accepts (const char *path) {
  return strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0;
}

static void pg_close (sl_store *b) {
  pg_store *s = (pg_store *)b;
  discard_tx(s);
  if (s->conn) PQfinish(s->conn);
  free(s->conninfo);
  free(s->listening);
  sl_store_base_free(b);
  free(s);
}

/* Brings the schema to the newest version, or says why it cannot. */
static int migrate (pg_store *s) {
  PGresult *r;
  int rc = pg_cmd(s, "BEGIN", NULL, NULL, "opening the store");
  if (rc != 0) return rc;
  s->in_tx = 1;
  rc = pg_cmd(s, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")", NULL, NULL,
              "opening the store");
  if (rc == 0) {
    r = PQexec(s->conn, "CREATE SCHEMA IF NOT EXISTS sluice; CREATE TABLE IF NOT EXISTS "
                        "sluice.meta (key text PRIMARY KEY, value text)");
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) {
      const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
      if (state && strcmp(state, "42501") == 0) {
        char why[300];
        snprintf(why, sizeof why, "%s", PQresultErrorMessage(r));
        why[strcspn(why, "\n")] = '\0';
        PQclear(r);
        discard_tx(s);
        return sl_store_seterr(&s->base, SL_STORE_EREADONLY, "the role may not create the "
                               "store's schema \"sluice\" in this database (%s): grant it "
                               "CREATE on the database, or have an owner run any sluice "
                               "command on it once", why);
      }
      return pg_fail(s, r, "creating the store's schema");
    }
    PQclear(r);
  }
  int64_t version = 0;
  if (rc == 0 && (rc = pg_run(s, "SELECT value FROM sluice.meta WHERE key = 'schema_version'",
                              NULL, &r, "opening the store")) == 0) {
    if (PQntuples(r) > 0) version = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  if (rc != 0) return rc;
  if (version > NMIGRATIONS) {
    discard_tx(s);
    return sl_store_seterr(&s->base, SL_STORE_EVERSION, "the store was written by a newer "
                           "sluice (schema version %lld, this one knows %d)",
                           (long long)version, NMIGRATIONS);
  }
  for (int64_t v = version; v < NMIGRATIONS && rc == 0; v++) {
    r = PQexec(s->conn, migrations[v]);
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
      return pg_fail(s, r, "migration %d failed, the store is left as it was", (int)v + 1);
    PQclear(r);
    pgp p = {0};
    p_int(&p, v + 1);
    rc = pg_cmd(s, "INSERT INTO sluice.meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", &p, NULL,
                "recording the schema version");
  }
  if (rc != 0) return rc;
  r = PQexec(s->conn, "COMMIT");
  if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) return pg_fail(s, r, "migrating");
  PQclear(r);
  s->in_tx = 0;
  return 0;
}

/* For a read-only open: the store must exist, at this version. */
static int check_version (pg_store *s) {
  PGresult *r;
  int rc = pg_run(s, "SELECT to_regclass('sluice.meta') IS NOT NULL", NULL, &r,
                  "opening the store");
  if (rc != 0) return rc;
  int exists = PQntuples(r) > 0 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  int64_t version = 0;
  if (exists) {
    rc = pg_run(s, "SELECT value FROM sluice.meta WHERE key = 'schema_version'", NULL, &r,
                "opening the store");
    if (rc != 0) return rc;
    exists = PQntuples(r) > 0;
    version = exists ? atoll(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
  }
  if (!exists)
    return sl_store_seterr(&s->base, SL_STORE_ENOTFOUND, "no sluice store in this database "
                           "yet (nothing has been recorded there)");
  if (version > NMIGRATIONS)
    return sl_store_seterr(&s->base, SL_STORE_EVERSION, "the store was written by a newer "
                           "sluice (schema version %lld, this one knows %d)",
                           (long long)version, NMIGRATIONS);
  if (version < NMIGRATIONS)
    return sl_store_seterr(&s->base, SL_STORE_EOLDER, "the store was written by an older "
                           "sluice (schema version %lld): a writer brings it up to date",
                           (long long)version);
  return 0;
}

static int pg_open (sl_store **out, const char *path, const sl_store_options *o, char *err,
                    size_t errlen) {
  pg_store *s = calloc(1, sizeof *s);
  char *shown = redacted(path);
  if (s == NULL || shown == NULL || sl_store_base_init(&s->base, &sl_store_pg_ops, shown, o) != 0
      || (s->conninfo = strdup(path)) == NULL) {
    if (err && errlen) snprintf(err, errlen, "%s: out of memory", shown ? shown : "store");
    if (s) sl_store_base_free(&s->base);
    free(s);
    free(shown);
    return SL_STORE_ENOMEM;
  }
  free(shown);
  s->read_only = o != NULL && o->read_only;
  s->reader = o != NULL && o->reader;
  s->conn = PQconnectdb(s->conninfo);
  int rc = 0;
  if (PQstatus(s->conn) != CONNECTION_OK) {
    char why[400];
    snprintf(why, sizeof why, "%s", PQerrorMessage(s->conn));
    size_t wl = strlen(why);
    while (wl > 0 && (why[wl - 1] == '\n' || why[wl - 1] == ' ')) why[--wl] = '\0';
    rc = sl_store_seterr(&s->base, SL_STORE_EIO, "cannot connect: %s", why);
  }
  if (rc == 0) {
    /* Quiet notices ("schema exists, skipping"); a lock held by another
       worker is waited for as long as the busy timeout. */
    char set[160];
    snprintf(set, sizeof set, "SET client_min_messages = warning; SET lock_timeout = %d",
             o != NULL && o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 5000);
    PGresult *r = PQexec(s->conn, set);
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) rc = pg_fail(s, r, "opening the store");
    else PQclear(r);
  }
  if (rc == 0) rc = s->read_only ? check_version(s) : migrate(s);
  if (rc != 0) {
    if (err && errlen) snprintf(err, errlen, "%s", s->base.errmsg);
    pg_close(&s->base);
    return rc;
  }
  *out = &s->base;
  return 0;
}

/* }====================================================== */


const struct sl_store_ops sl_store_pg_ops = {
  "postgresql",
  1,
  pg_accepts,
  pg_open,
  pg_close,
  pg_flush,
  pg_run_begin,
  pg_run_update,
  pg_run_get,
  pg_run_list,
  pg_run_delete,
  pg_checkpoint_put,
  pg_checkpoint_get,
  pg_checkpoint_list,
  pg_wait_put,
  pg_wait_list,
  pg_wait_answer,
  pg_wait_clear,
  pg_cache_get,
  pg_cache_put,
  pg_cache_clear,
  pg_cache_purge,
  pg_cache_stats,
  pg_run_claim,
  pg_run_renew,
  pg_run_finish,
  pg_prune,
  pg_stats,
  pg_check,
  pg_vacuum,
  pg_cache_touch,
  pg_check_after_crash,
  pg_run_claim_some,
  pg_run_requeue,
  pg_watch_queue,
  pg_watch_clear,
};
