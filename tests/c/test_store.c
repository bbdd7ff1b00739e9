/*
** Tests of the store: what the engine (and through it a user running
** `sluice runs`, `sluice show` or `sluice resume`) can count on from the
** file under .sluice/: the schema is created and migrated once, what is
** flushed survives a crash and nothing else does, other processes see
** writes only once flushed, and a damaged, foreign, locked or full file
** gives a clear error that names it.
*/

#define _GNU_SOURCE  /* mkdtemp, nftw */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"


/*
** {======================================================
** Helpers
** =======================================================
*/

/* A temporary directory per test, removed with everything in it. */
typedef struct fixture {
  char dir[64];
  char path[128];       /* dir/.sluice/state.db: the directory is missing */
} fixture;


static int setup (void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->dir, sizeof f->dir, "/tmp/sluice-store-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/.sluice/state.db", f->dir);
  *state = f;
  return 0;
}


static int remove_entry (const char *p, const struct stat *sb, int flag,
                         struct FTW *ftw) {
  (void)sb; (void)flag; (void)ftw;
  return remove(p);
}


static int teardown (void **state) {
  fixture *f = *state;
  nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}


static sl_store *open_ok (const char *path, const sl_store_options *o) {
  sl_store *s = NULL;
  char err[512];
  int rc = sl_store_open(&s, path, o, err, sizeof err);
  if (rc != 0)
    fail_msg("opening %s failed (%d): %s", path, rc, err);
  assert_non_null(s);
  return s;
}


static void close_ok (sl_store *s) {
  char err[512];
  int rc = sl_store_close(s, err, sizeof err);
  if (rc != 0)
    fail_msg("closing failed (%d): %s", rc, err);
}


/* Asserts that call returned 0, showing the store's message otherwise. */
#define OK(s, call) \
  do { \
    int rc_ = (call); \
    if (rc_ != 0) fail_msg("%s failed (%d): %s", #call, rc_, \
                           sl_store_errmsg(s)); \
  } while (0)


static void assert_contains (const char *text, const char *part) {
  if (text == NULL || strstr(text, part) == NULL)
    fail_msg("expected \"%s\" in \"%s\"", part, text ? text : "(null)");
}


static sl_store_run a_run (const char *id, const char *pipeline,
                           const char *status, int64_t started) {
  sl_store_run r;
  memset(&r, 0, sizeof r);
  r.id = id;
  r.pipeline = pipeline;
  r.status = status;
  r.started_ms = started;
  return r;
}


static sl_store_checkpoint a_checkpoint (const char *run_id, const char *path,
                                         const char *output) {
  sl_store_checkpoint c;
  memset(&c, 0, sizeof c);
  c.run_id = run_id;
  c.path = path;
  c.name = "step";
  c.kind = "step";
  c.status = "completed";
  c.attempts = 1;
  c.output = output;
  return c;
}


/* Reads one integer from the file through a connection of its own. */
static int64_t raw_int (const char *path, const char *query) {
  sqlite3 *db;
  sqlite3_stmt *st;
  int64_t v = -1;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL),
                   SQLITE_OK);
  if (sqlite3_prepare_v2(db, query, -1, &st, NULL) != SQLITE_OK)
    fail_msg("%s: %s", query, sqlite3_errmsg(db));
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}


/* Runs SQL on the file through a connection of its own. */
static void raw_exec (const char *path, const char *sql) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE
                                   | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  sqlite3_close(db);
}


static void write_file (const char *path, const void *data, size_t len,
                        off_t at, int trunc) {
  int fd = open(path, O_WRONLY | O_CREAT | (trunc ? O_TRUNC : 0), 0644);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, data, len, at), (ssize_t)len);
  close(fd);
}


/* Collects the paths a checkpoint listing gives, joined by spaces. */
typedef struct collected { char text[4096]; int n; } collected;

static int collect_path (void *ud, const sl_store_checkpoint *c) {
  collected *col = ud;
  size_t len = strlen(col->text);
  snprintf(col->text + len, sizeof col->text - len, "%s%s", len ? " " : "",
           c->path);
  col->n++;
  return 0;
}

static int collect_run_id (void *ud, const sl_store_run *r) {
  collected *col = ud;
  size_t len = strlen(col->text);
  snprintf(col->text + len, sizeof col->text - len, "%s%s", len ? " " : "",
           r->id);
  col->n++;
  return 0;
}

static const char *list_paths (sl_store *s, const char *run_id,
                               collected *col) {
  memset(col, 0, sizeof *col);
  OK(s, sl_store_checkpoint_list(s, run_id, collect_path, col));
  return col->text;
}

static const char *list_runs (sl_store *s, const sl_store_run_filter *f,
                              collected *col) {
  memset(col, 0, sizeof *col);
  OK(s, sl_store_run_list(s, f, collect_run_id, col));
  return col->text;
}

/* }====================================================== */


/*
** {======================================================
** Opening and the schema
** =======================================================
*/

static void opening_a_new_path_creates_its_directory_and_schema (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  close_ok(s);
  assert_true(raw_int(f->path, "PRAGMA user_version") >= 1);
  assert_int_equal(raw_int(f->path, "PRAGMA application_id"), 0x534c4345);
  assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_schema "
                           "WHERE type = 'table' AND name IN ('runs', "
                           "'checkpoints', 'waits', 'cache')"), 4);
  /* WAL mode is kept in the file header: bytes 18 and 19 are 2. */
  assert_int_equal(raw_int(f->path, "SELECT journal_mode = 'wal' FROM "
                           "pragma_journal_mode"), 1);
}


static void an_empty_file_is_a_new_store (void **state) {
  fixture *f = *state;
  char path[160];
  sl_store *s;
  snprintf(path, sizeof path, "%s/empty.db", f->dir);
  write_file(path, "", 0, 0, 1);
  s = open_ok(path, NULL);
  close_ok(s);
  assert_true(raw_int(path, "PRAGMA user_version") >= 1);
}


static void reopening_runs_no_migration_twice (void **state) {
  fixture *f = *state;
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run *got;
  int64_t version, objects;
  sl_store *s = open_ok(f->path, NULL);
  OK(s, sl_store_run_begin(s, &r));
  close_ok(s);
  version = raw_int(f->path, "PRAGMA user_version");
  objects = raw_int(f->path, "SELECT count(*) FROM sqlite_schema");
  /* Migration 1 creates its tables without IF NOT EXISTS: running it again
     would fail the open. */
  s = open_ok(f->path, NULL);
  OK(s, sl_store_run_get(s, "01A", &got));
  assert_string_equal(got->pipeline, "p");
  sl_store_run_free(got);
  close_ok(s);
  assert_int_equal(raw_int(f->path, "PRAGMA user_version"), version);
  assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_schema"),
                   objects);
}


static void a_store_from_a_newer_sluice_is_refused (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  char err[512];
  close_ok(s);
  raw_exec(f->path, "PRAGMA user_version = 999");
  assert_int_equal(sl_store_open(&s, f->path, NULL, err, sizeof err),
                   SL_STORE_EVERSION);
  assert_null(s);
  assert_contains(err, f->path);
  assert_contains(err, "newer");
}


static void a_store_from_an_older_sluice_is_read_once_a_writer_updates_it (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01A", "p", "completed", 1);
  OK(s, sl_store_run_begin(s, &r));
  close_ok(s);
  /* As the schema of version 3 left it (migrations 4 to 7 undone). */
  raw_exec(f->path, "DROP INDEX runs_by_due; ALTER TABLE runs DROP COLUMN due_ms; "
                    "DROP INDEX runs_by_queue; ALTER TABLE runs DROP COLUMN queue; "
                    "ALTER TABLE runs DROP COLUMN waiting_for; DROP TABLE meta; "
                    "PRAGMA user_version = 3");
  sl_store_options ro = {0};
  ro.read_only = 1;
  char err[512];
  assert_int_equal(sl_store_open(&s, f->path, &ro, err, sizeof err), SL_STORE_EOLDER);
  assert_contains(err, "older");
  s = open_ok(f->path, NULL);      /* a writer migrates */
  close_ok(s);
  s = open_ok(f->path, &ro);
  sl_store_run *got;
  OK(s, sl_store_run_get(s, "01A", &got));
  sl_store_run_free(got);
  close_ok(s);
}


static void another_applications_database_is_left_alone (void **state) {
  fixture *f = *state;
  char path[160], err[512];
  sl_store *s;
  snprintf(path, sizeof path, "%s/notes.db", f->dir);
  raw_exec(path, "CREATE TABLE notes (text TEXT)");
  assert_int_equal(sl_store_open(&s, path, NULL, err, sizeof err),
                   SL_STORE_ECORRUPT);
  assert_contains(err, path);
  assert_contains(err, "not a sluice store");
  assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_schema"), 1);
  assert_int_equal(raw_int(path, "SELECT journal_mode = 'delete' FROM "
                           "pragma_journal_mode"), 1);
}


static void a_failed_migration_leaves_the_file_as_it_was (void **state) {
  fixture *f = *state;
  char path[160], err[512];
  sl_store *s;
  snprintf(path, sizeof path, "%s/half.db", f->dir);
  /* Marked as a store at version 0, but with a table in the way of
     migration 1 (which creates runs and checkpoints before waits). */
  raw_exec(path, "PRAGMA application_id = 1397506885;"
                 "CREATE TABLE waits (x TEXT)");
  assert_int_equal(sl_store_open(&s, path, NULL, err, sizeof err),
                   SL_STORE_ECORRUPT);
  assert_contains(err, path);
  assert_contains(err, "migration 1");
  assert_int_equal(raw_int(path, "PRAGMA user_version"), 0);
  assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_schema "
                           "WHERE name IN ('runs', 'checkpoints')"), 0);
}


static void garbage_is_refused_naming_the_file (void **state) {
  fixture *f = *state;
  char path[160], err[512], junk[8192];
  sl_store *s;
  snprintf(path, sizeof path, "%s/junk.db", f->dir);
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (char)(i * 7 + 3);
  write_file(path, junk, sizeof junk, 0, 1);
  assert_int_equal(sl_store_open(&s, path, NULL, err, sizeof err),
                   SL_STORE_ECORRUPT);
  assert_null(s);
  assert_contains(err, path);
  assert_contains(err, "not a database");
}


static void damaged_pages_fail_the_integrity_check (void **state) {
  fixture *f = *state;
  char err[512], junk[4096 * 4];
  sl_store_options full = { 0 };
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_checkpoint c = a_checkpoint("01A", "1", "\"out\"");
  sl_store *s = open_ok(f->path, NULL);
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_checkpoint_put(s, &c));
  close_ok(s);
  /* Closing leaves the pages in the write-ahead log: copy them into the
     file first, so the damage below reaches them. */
  sqlite3 *db;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  /* Keep page 1 (the header and schema), overwrite the tables' pages. */
  memset(junk, 0x5a, sizeof junk);
  write_file(f->path, junk, sizeof junk, 4096, 0);
  /* An open reads the header only; the full check finds the damage. */
  full.full_check = 1;
  assert_int_equal(sl_store_open(&s, f->path, &full, err, sizeof err),
                   SL_STORE_ECORRUPT);
  assert_contains(err, f->path);
  assert_contains(err, "damaged");
}


static void a_memory_store_works_and_leaves_no_file (void **state) {
  sl_store *s = open_ok(":memory:", NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run *got;
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_flush(s));
  OK(s, sl_store_run_get(s, "01A", &got));
  assert_string_equal(got->status, "running");
  sl_store_run_free(got);
  close_ok(s);
  assert_int_equal(access(":memory:", F_OK), -1);
  /* Each memory store is its own. */
  s = open_ok(":memory:", NULL);
  assert_int_equal(sl_store_run_get(s, "01A", &got), SL_STORE_ENOTFOUND);
  close_ok(s);
}


static void bad_arguments_are_refused_with_a_message (void **state) {
  sl_store *s;
  char err[256];
  sl_store_checkpoint c = a_checkpoint("01A", "1", NULL);
  assert_int_equal(sl_store_open(&s, "", NULL, err, sizeof err),
                   SL_STORE_EINVAL);
  assert_contains(err, "empty path");
  s = open_ok(":memory:", NULL);
  c.name = NULL;
  assert_int_equal(sl_store_checkpoint_put(s, &c), SL_STORE_EINVAL);
  assert_contains(sl_store_errmsg(s), "checkpoint_put");
  assert_int_equal(sl_store_run_begin(s, NULL), SL_STORE_EINVAL);
  close_ok(s);
}

/* }====================================================== */


/*
** {======================================================
** Runs
** =======================================================
*/

static void a_run_round_trips_through_its_lifecycle (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01HZX", "hello", "running", 1700000000123);
  sl_store_run *got;
  r.file = "scripts/examples/hello.lua";
  r.def_hash = "9f86d081";
  r.input = "{\"name\":\"Ada\"}";
  r.budget = "{\"cost\":0.5}";
  OK(s, sl_store_run_begin(s, &r));

  OK(s, sl_store_run_get(s, "01HZX", &got));
  assert_string_equal(got->id, "01HZX");
  assert_string_equal(got->pipeline, "hello");
  assert_string_equal(got->file, "scripts/examples/hello.lua");
  assert_string_equal(got->def_hash, "9f86d081");
  assert_string_equal(got->status, "running");
  assert_string_equal(got->input, "{\"name\":\"Ada\"}");
  assert_string_equal(got->budget, "{\"cost\":0.5}");
  assert_null(got->output);
  assert_null(got->error);
  assert_null(got->usage);
  assert_int_equal(got->started_ms, 1700000000123);
  assert_int_equal(got->ended_ms, 0);
  sl_store_run_free(got);

  OK(s, sl_store_run_update(s, "01HZX", "paused", NULL, NULL,
                            "{\"tokens\":3}", 0));
  OK(s, sl_store_run_update(s, "01HZX", "completed", "\"Hello, Ada\"", NULL,
                            "{\"tokens\":7}", 1700000000999));
  close_ok(s);  /* and read it back from the file */

  s = open_ok(f->path, NULL);
  OK(s, sl_store_run_get(s, "01HZX", &got));
  assert_string_equal(got->status, "completed");
  assert_string_equal(got->output, "\"Hello, Ada\"");
  assert_string_equal(got->usage, "{\"tokens\":7}");
  assert_string_equal(got->input, "{\"name\":\"Ada\"}");
  assert_int_equal(got->ended_ms, 1700000000999);
  sl_store_run_free(got);

  /* Resumed: running again, no end time. */
  OK(s, sl_store_run_update(s, "01HZX", "running", NULL, NULL, NULL, 0));
  OK(s, sl_store_run_get(s, "01HZX", &got));
  assert_int_equal(got->ended_ms, 0);
  assert_null(got->output);
  sl_store_run_free(got);
  close_ok(s);
}


static void run_mistakes_are_reported (void **state) {
  sl_store *s = open_ok(":memory:", NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run bad = a_run("01B", "p", "finished", 1);
  sl_store_run *got = (sl_store_run *)&r;
  OK(s, sl_store_run_begin(s, &r));
  assert_int_equal(sl_store_run_begin(s, &r), SL_STORE_EINVAL);
  assert_contains(sl_store_errmsg(s), "01A");
  assert_contains(sl_store_errmsg(s), "exists already");
  assert_int_equal(sl_store_run_begin(s, &bad), SL_STORE_EINVAL);
  assert_contains(sl_store_errmsg(s), "bad status 'finished'");
  assert_int_equal(sl_store_run_update(s, "01A", "done", NULL, NULL, NULL, 0),
                   SL_STORE_EINVAL);
  assert_int_equal(sl_store_run_update(s, "01Z", "failed", NULL, NULL, NULL,
                                       5), SL_STORE_ENOTFOUND);
  assert_contains(sl_store_errmsg(s), "01Z");
  assert_int_equal(sl_store_run_get(s, "01Z", &got), SL_STORE_ENOTFOUND);
  assert_null(got);
  /* The refused writes did not spoil the batch. */
  OK(s, sl_store_flush(s));
  OK(s, sl_store_run_get(s, "01A", &got));
  assert_string_equal(got->status, "running");
  sl_store_run_free(got);
  close_ok(s);
}


static void deleting_a_run_removes_its_checkpoints_and_waits (void **state) {
  sl_store *s = open_ok(":memory:", NULL);
  sl_store_run r = a_run("01A", "p", "paused", 1);
  sl_store_checkpoint c = a_checkpoint("01A", "1", NULL);
  sl_store_wait w = { "01A", "1", "ok?", NULL, NULL, 5 };
  sl_store_checkpoint *got;
  collected col;
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_checkpoint_put(s, &c));
  OK(s, sl_store_wait_put(s, &w));
  OK(s, sl_store_run_delete(s, "01A"));
  assert_int_equal(sl_store_checkpoint_get(s, "01A", "1", &got),
                   SL_STORE_ENOTFOUND);
  assert_string_equal(list_paths(s, "01A", &col), "");
  assert_int_equal(sl_store_run_delete(s, "01A"), SL_STORE_ENOTFOUND);
  /* The wait went too: the run can be recorded again and has none. */
  OK(s, sl_store_run_begin(s, &r));
  assert_int_equal(sl_store_wait_answer(s, "01A", "1", "true"),
                   SL_STORE_ENOTFOUND);
  close_ok(s);
}


static int stop_after_two (void *ud, const sl_store_run *r) {
  int *n = ud;
  (void)r;
  return ++*n == 2 ? 42 : 0;
}


static void runs_list_newest_first_with_filters (void **state) {
  fixture *f = *state;
  static const struct { const char *id, *pipeline, *status; } runs[] = {
    { "01C", "a", "completed" }, { "01A", "b", "failed" },
    { "01E", "a", "failed" },    { "01B", "a", "completed" },
    { "01D", "b", "completed" },
  };
  sl_store_run_filter flt = { NULL, NULL, 0, 0 };
  sl_store *s = open_ok(f->path, NULL);
  collected col;
  int n = 0;
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    sl_store_run r = a_run(runs[i].id, runs[i].pipeline, runs[i].status,
                           (int64_t)i);
    OK(s, sl_store_run_begin(s, &r));
  }
  assert_string_equal(list_runs(s, NULL, &col), "01E 01D 01C 01B 01A");
  flt.status = "completed";
  assert_string_equal(list_runs(s, &flt, &col), "01D 01C 01B");
  flt.pipeline = "a";
  assert_string_equal(list_runs(s, &flt, &col), "01C 01B");
  flt.status = NULL;
  assert_string_equal(list_runs(s, &flt, &col), "01E 01C 01B");
  flt.pipeline = NULL;
  flt.limit = 2;
  flt.offset = 1;
  assert_string_equal(list_runs(s, &flt, &col), "01D 01C");
  flt.status = "cancelled";
  flt.limit = flt.offset = 0;
  assert_string_equal(list_runs(s, &flt, &col), "");
  /* A callback that returns non-zero stops the listing with that value. */
  assert_int_equal(sl_store_run_list(s, NULL, stop_after_two, &n), 42);
  assert_int_equal(n, 2);
  close_ok(s);
}


static int list_again (void *ud, const sl_store_run *r) {
  sl_store *s = ud;
  sl_store_run *got;
  collected col;
  memset(&col, 0, sizeof col);
  /* Other calls work from inside a listing; the same listing does not. */
  if (sl_store_run_get(s, r->id, &got) != 0)
    return 1;
  sl_store_run_free(got);
  if (sl_store_run_list(s, NULL, collect_run_id, &col) != SL_STORE_EINVAL)
    return 2;
  if (strstr(sl_store_errmsg(s), "listing runs") == NULL)
    return 3;
  return 0;
}


static void a_listing_cannot_restart_itself_from_its_callback (void **state) {
  sl_store *s = open_ok(":memory:", NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_run_list(s, NULL, list_again, s));
  close_ok(s);
}

/* }====================================================== */


/*
** {======================================================
** Checkpoints
** =======================================================
*/

static void checkpoints_round_trip_and_keep_their_order (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_checkpoint c = a_checkpoint("01A", "1", NULL);
  sl_store_checkpoint *got;
  collected col;
  OK(s, sl_store_run_begin(s, &r));
  c.status = "running";
  OK(s, sl_store_checkpoint_put(s, &c));     /* the root starts */
  c = a_checkpoint("01A", "1/2", "[1,2]");
  c.parent = "1";
  c.key = "b";
  c.kind = "map";
  c.name = "items";
  c.attempts = 3;
  c.cached = 1;
  c.state = "{\"n\":1}";
  c.usage = "{\"tokens\":10}";
  c.logs = "[{\"time_ms\":5,\"level\":\"info\",\"message\":\"hi\"}]";
  c.error = NULL;
  c.t0 = 1000000001;
  c.t1 = 2000000002;
  OK(s, sl_store_checkpoint_put(s, &c));
  c = a_checkpoint("01A", "1/1", "\"x\"");
  c.parent = "1";
  c.status = "failed";
  c.error = "{\"kind\":\"error\",\"message\":\"boom\"}";
  OK(s, sl_store_checkpoint_put(s, &c));
  c = a_checkpoint("01A", "1", "\"done\"");
  OK(s, sl_store_checkpoint_put(s, &c));     /* the root ends: replaced */
  OK(s, sl_store_flush(s));

  assert_string_equal(list_paths(s, "01A", &col), "1 1/2 1/1");
  OK(s, sl_store_checkpoint_get(s, "01A", "1", &got));
  assert_string_equal(got->status, "completed");
  assert_string_equal(got->output, "\"done\"");
  assert_null(got->parent);
  sl_store_checkpoint_free(got);

  OK(s, sl_store_checkpoint_get(s, "01A", "1/2", &got));
  assert_string_equal(got->run_id, "01A");
  assert_string_equal(got->path, "1/2");
  assert_string_equal(got->parent, "1");
  assert_string_equal(got->name, "items");
  assert_string_equal(got->kind, "map");
  assert_string_equal(got->key, "b");
  assert_string_equal(got->status, "completed");
  assert_int_equal(got->attempts, 3);
  assert_int_equal(got->cached, 1);
  assert_string_equal(got->output, "[1,2]");
  assert_string_equal(got->state, "{\"n\":1}");
  assert_string_equal(got->usage, "{\"tokens\":10}");
  assert_string_equal(got->logs, "[{\"time_ms\":5,\"level\":\"info\",\"message\":\"hi\"}]");
  assert_null(got->error);
  assert_int_equal(got->t0, 1000000001);
  assert_int_equal(got->t1, 2000000002);
  sl_store_checkpoint_free(got);

  OK(s, sl_store_checkpoint_get(s, "01A", "1/1", &got));
  assert_string_equal(got->error, "{\"kind\":\"error\",\"message\":\"boom\"}");
  assert_null(got->state);
  sl_store_checkpoint_free(got);

  assert_int_equal(sl_store_checkpoint_get(s, "01A", "1/9", &got),
                   SL_STORE_ENOTFOUND);
  assert_null(got);
  assert_contains(sl_store_errmsg(s), "1/9");
  assert_string_equal(list_paths(s, "01Z", &col), "");
  close_ok(s);
}


/* Appends the journal form of one string (NULL: absent) as hex. */
static size_t hex_field (char *out, const char *v) {
  uint32_t len = v ? (uint32_t)strlen(v) : 0xffffffffu;
  size_t n = (size_t)sprintf(out, "%08X", len);
  if (v) {
    for (const char *p = v; *p; p++) n += (size_t)sprintf(out + n, "%02X", (unsigned char)*p);
    n += (size_t)sprintf(out + n, "00");
  }
  return n;
}

/* A journal row written before records carried logs (13 strings, no
   marker) still reads, with no logs; one in the later form with a string
   this code does not know reads too. */
static void journal_records_of_the_first_form_still_read (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01J", "p", "running", 1);
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_flush(s));
  close_ok(s);
  /* path parent name kind key status usage error state output output_ref
     changes changes_ref, then attempts cached t0 t1 */
  const char *v1[13] = { "1", NULL, "old", "step", NULL, "completed", NULL, NULL,
                         NULL, "41", NULL, NULL, NULL };
  char sql[4096];
  size_t n = (size_t)sprintf(sql, "INSERT INTO journal (run_id, seq, data) VALUES ('01J', 1, X'");
  for (int i = 0; i < 13; i++) n += hex_field(sql + n, v1[i]);
  n += (size_t)sprintf(sql + n, "%016X%016X%016X%016X", 2, 0, 10, 20);
  /* The later form: a marker, 15 strings (logs, then one from the future). */
  const char *v2[15] = { "1/1", "1", "new", "step", NULL, "completed", NULL, NULL,
                         NULL, "42", NULL, NULL, NULL, "[]", "future" };
  n += (size_t)sprintf(sql + n, "FFFFFFFE0000000F");
  for (int i = 0; i < 15; i++) n += hex_field(sql + n, v2[i]);
  n += (size_t)sprintf(sql + n, "%016X%016X%016X%016X", 1, 1, 30, 40);
  sprintf(sql + n, "')");
  raw_exec(f->path, sql);
  s = open_ok(f->path, NULL);
  sl_store_checkpoint *got;
  OK(s, sl_store_checkpoint_get(s, "01J", "1", &got));
  assert_string_equal(got->name, "old");
  assert_string_equal(got->output, "41");
  assert_null(got->logs);
  assert_int_equal(got->attempts, 2);
  assert_int_equal(got->t1, 20);
  sl_store_checkpoint_free(got);
  OK(s, sl_store_checkpoint_get(s, "01J", "1/1", &got));
  assert_string_equal(got->name, "new");
  assert_string_equal(got->output, "42");
  assert_string_equal(got->logs, "[]");
  assert_int_equal(got->cached, 1);
  assert_int_equal(got->t0, 30);
  sl_store_checkpoint_free(got);
  close_ok(s);
}


static void a_checkpoint_needs_its_run (void **state) {
  sl_store *s = open_ok(":memory:", NULL);
  sl_store_checkpoint c = a_checkpoint("01Z", "1", NULL);
  assert_int_equal(sl_store_checkpoint_put(s, &c), SL_STORE_EINVAL);
  assert_contains(sl_store_errmsg(s), "no such run");
  assert_int_equal(sl_store_pending(s), 0);
  close_ok(s);
}

/* }====================================================== */


/*
** {======================================================
** Ownership: leases, claims, fencing, exactly once
** =======================================================
*/

static sl_store_run an_owned_run (const char *id, const char *owner) {
  sl_store_run r = a_run(id, "p", "running", 1000);
  r.owner = owner;
  r.lease_ms = 5000;
  r.epoch = 1;
  return r;
}

static void of_two_claims_at_one_epoch_exactly_one_wins (void **state) {
  fixture *f = *state;
  sl_store *a = open_ok(f->path, NULL);
  sl_store *b = open_ok(f->path, NULL);
  sl_store_run r = an_owned_run("01A", "h:1:1");
  sl_store_run *got;
  OK(a, sl_store_run_begin(a, &r));
  OK(a, sl_store_flush(a));
  /* Both saw epoch 1; the first to claim wins, the other is refused. */
  OK(a, sl_store_run_claim(a, "01A", "h:2:2", 9000, 1, "running"));
  assert_int_equal(sl_store_run_claim(b, "01A", "h:3:3", 9000, 1, "running"),
                   SL_STORE_ECONFLICT);
  OK(b, sl_store_run_get(b, "01A", &got));
  assert_string_equal(got->owner, "h:2:2");
  assert_int_equal(got->epoch, 2);
  assert_int_equal(got->lease_ms, 9000);
  sl_store_run_free(got);
  close_ok(a);
  close_ok(b);
}

static sl_store_run a_queued_run (const char *id, const char *queue) {
  sl_store_run r = a_run(id, "p", "queued", 1);
  r.queue = queue;
  return r;
}

/* Claims the next run of queue for owner at now_ms; returns its id (static
   storage) or "" when there is none. */
static const char *claim (sl_store *s, const char *queue, const char *owner,
                          int64_t now_ms, const char *const *skip, int nskip) {
  static char id[64];
  sl_store_run *got;
  int rc = sl_store_run_claim_next(s, queue, owner, now_ms + 1000, now_ms, skip, nskip, &got);
  if (rc == SL_STORE_ENOTFOUND) {
    assert_null(got);
    return "";
  }
  OK(s, rc);
  assert_string_equal(got->status, "running");
  assert_string_equal(got->owner, owner);
  assert_string_equal(got->queue, queue);
  assert_null(got->waiting_for);
  snprintf(id, sizeof id, "%s", got->id);
  sl_store_run_free(got);
  return id;
}

/* Workers take queued runs oldest first, by queue, each run once; a run
   passed over stays for others; a run put back is taken again; a run
   whose owner's lease ran out is taken over at the next epoch. */
static void a_queue_hands_each_run_to_one_worker_oldest_first (void **state) {
  fixture *f = *state;
  sl_store *a = open_ok(f->path, NULL);
  sl_store *b = open_ok(f->path, NULL);
  const char *ids[] = { "01Q1", "01Q2", "01Q3" };
  for (int i = 0; i < 3; i++) {
    sl_store_run r = a_queued_run(ids[i], "main");
    OK(a, sl_store_run_begin(a, &r));
  }
  sl_store_run other = a_queued_run("01Q0", "other");
  OK(a, sl_store_run_begin(a, &other));
  sl_store_run direct = a_run("01P0", "p", "running", 1);   /* not submitted */
  OK(a, sl_store_run_begin(a, &direct));
  OK(a, sl_store_flush(a));

  assert_string_equal(claim(a, "main", "h:1:1", 5000, NULL, 0), "01Q1");
  const char *skip[] = { "01Q2" };
  assert_string_equal(claim(b, "main", "h:2:2", 5000, skip, 1), "01Q3");
  assert_string_equal(claim(b, "main", "h:2:2", 5000, skip, 1), "");
  assert_string_equal(claim(a, "main", "h:1:1", 5000, NULL, 0), "01Q2");
  assert_string_equal(claim(a, "main", "h:1:1", 5000, NULL, 0), "");
  assert_string_equal(claim(a, "other", "h:1:1", 5000, NULL, 0), "01Q0");

  /* Put back, with why: listed with its queue and reason, taken again. */
  sl_store_run *got;
  OK(a, sl_store_run_get(a, "01Q1", &got));
  int64_t epoch = got->epoch;
  sl_store_run_free(got);
  assert_int_equal(epoch, 1);
  assert_int_equal(sl_store_run_requeue(b, "01Q1", "h:2:2", epoch, NULL), SL_STORE_ECONFLICT);
  OK(a, sl_store_run_requeue(a, "01Q1", "h:1:1", epoch, "a worker with code version abc"));
  OK(b, sl_store_run_get(b, "01Q1", &got));
  assert_string_equal(got->status, "queued");
  assert_null(got->owner);
  assert_string_equal(got->waiting_for, "a worker with code version abc");
  sl_store_run_free(got);
  sl_store_run_filter flt = { NULL, NULL, 0, 0, NULL, "main" };
  collected col;
  assert_string_equal(list_runs(b, &flt, &col), "01Q3 01Q2 01Q1");
  flt.status = "queued";
  assert_string_equal(list_runs(b, &flt, &col), "01Q1");
  assert_string_equal(claim(b, "main", "h:2:2", 5000, NULL, 0), "01Q1");

  /* Running under h:2:2 until 6000: not taken before, taken after, at the
     next epoch; the old owner's writes are refused from then on. */
  assert_string_equal(claim(a, "main", "h:1:1", 5500, NULL, 0), "");
  assert_string_equal(claim(a, "main", "h:1:1", 6001, NULL, 0), "01Q1");
  OK(a, sl_store_run_get(a, "01Q1", &got));
  assert_int_equal(got->epoch, 3);
  sl_store_run_free(got);
  assert_int_equal(sl_store_run_renew(b, "01Q1", "h:2:2", 2, 9000), SL_STORE_ECONFLICT);
  OK(b, sl_store_flush(b));   /* the renew's transaction holds the lock */

  /* Several at once, oldest first; as many as there are. */
  for (int i = 0; i < 3; i++) {
    char id[8];
    snprintf(id, sizeof id, "01R%d", i);
    sl_store_run r = a_queued_run(id, "batch");
    OK(a, sl_store_run_begin(a, &r));
  }
  OK(a, sl_store_flush(a));
  sl_store_run *some[4];
  int n;
  OK(b, sl_store_run_claim_some(b, "batch", "h:2:2", 9000, 5000, NULL, 0, 2, some, &n));
  assert_int_equal(n, 2);
  assert_string_equal(some[0]->id, "01R0");
  assert_string_equal(some[1]->id, "01R1");
  sl_store_run_free(some[0]);
  sl_store_run_free(some[1]);
  OK(a, sl_store_run_claim_some(a, "batch", "h:1:1", 9000, 5000, NULL, 0, 4, some, &n));
  assert_int_equal(n, 1);
  assert_string_equal(some[0]->id, "01R2");
  sl_store_run_free(some[0]);
  assert_int_equal(sl_store_run_claim_some(a, "batch", "h:1:1", 9000, 5000, NULL, 0, 4, some, &n),
                   SL_STORE_ENOTFOUND);
  assert_int_equal(n, 0);
  close_ok(a);
  close_ok(b);
}


static void an_owner_that_lost_the_run_can_write_nothing_more (void **state) {
  fixture *f = *state;
  sl_store *old = open_ok(f->path, NULL);
  sl_store *now = open_ok(f->path, NULL);
  sl_store_run r = an_owned_run("01A", "h:1:1");
  sl_store_run *got;
  OK(old, sl_store_run_begin(old, &r));
  OK(old, sl_store_flush(old));
  OK(now, sl_store_run_claim(now, "01A", "h:2:2", 9000, 1, "running"));
  /* The old owner's renewal, checkpoint and end are all refused. */
  assert_int_equal(sl_store_run_renew(old, "01A", "h:1:1", 1, 99999), SL_STORE_ECONFLICT);
  sl_store_checkpoint c = a_checkpoint("01A", "1", "\"stale\"");
  c.owner = "h:1:1";
  c.epoch = 1;
  int rc = sl_store_checkpoint_put(old, &c);
  if (rc == 0) rc = sl_store_flush(old);
  assert_int_equal(rc, SL_STORE_ECONFLICT);
  assert_int_equal(sl_store_run_finish(old, "01A", "h:1:1", 1, 1, "completed", "\"stale\"",
                                       NULL, NULL, 2000), SL_STORE_ECONFLICT);
  /* A refused write leaves the batch it was in to go on (the writer
     commits the rest); with nothing else in it, the commit is empty. */
  OK(old, sl_store_flush(old));
  OK(now, sl_store_run_get(now, "01A", &got));
  assert_string_equal(got->status, "running");
  assert_null(got->output);
  assert_string_equal(got->owner, "h:2:2");
  sl_store_run_free(got);
  sl_store_checkpoint *cp = NULL;
  assert_int_equal(sl_store_checkpoint_get(now, "01A", "1", &cp), SL_STORE_ENOTFOUND);
  /* The new owner writes, and ends the run, letting it go. */
  c.owner = "h:2:2";
  c.epoch = 2;
  c.output = "\"fresh\"";
  OK(now, sl_store_checkpoint_put(now, &c));
  OK(now, sl_store_flush(now));
  OK(now, sl_store_run_finish(now, "01A", "h:2:2", 2, 1, "completed", "\"fresh\"",
                              NULL, NULL, 3000));
  OK(now, sl_store_flush(now));
  OK(old, sl_store_run_get(old, "01A", &got));
  assert_string_equal(got->status, "completed");
  assert_string_equal(got->output, "\"fresh\"");
  assert_null(got->owner);
  sl_store_run_free(got);
  close_ok(old);
  close_ok(now);
}

static void a_completed_step_is_recorded_once (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = an_owned_run("01A", "h:1:1");
  OK(s, sl_store_run_begin(s, &r));
  sl_store_checkpoint c = a_checkpoint("01A", "1/1", "1");
  c.owner = "h:1:1";
  c.epoch = 1;
  OK(s, sl_store_checkpoint_put(s, &c));
  OK(s, sl_store_flush(s));
  /* The same step again, as a second owner that thought it had the run
     would write it: refused, and the first record stays. */
  c.output = "2";
  int rc = sl_store_checkpoint_put(s, &c);
  if (rc == 0) rc = sl_store_flush(s);
  assert_int_equal(rc, SL_STORE_ECONFLICT);
  close_ok(s);
  s = open_ok(f->path, NULL);
  sl_store_checkpoint *got = NULL;
  OK(s, sl_store_checkpoint_get(s, "01A", "1/1", &got));
  assert_string_equal(got->output, "1");
  sl_store_checkpoint_free(got);
  close_ok(s);
}

/* A writer that lost a run, and owns it again after another recorded
   steps of it meanwhile, reads what the run has now: it goes on recording
   after the other's steps, and refuses to record again one the other
   completed. */
static void an_owner_back_after_another_reads_the_run_again (void **state) {
  fixture *f = *state;
  sl_store *a = open_ok(f->path, NULL);
  sl_store *b = open_ok(f->path, NULL);
  sl_store_run r = an_owned_run("01B", "h:1:1");
  OK(a, sl_store_run_begin(a, &r));
  sl_store_checkpoint c = a_checkpoint("01B", "1/1", "1");
  c.owner = "h:1:1";
  c.epoch = 1;
  OK(a, sl_store_checkpoint_put(a, &c));
  OK(a, sl_store_flush(a));
  /* b takes it over (epoch 2) and records a step. */
  OK(b, sl_store_run_claim(b, "01B", "h:2:2", 9000, 1, "running"));
  c = a_checkpoint("01B", "1/2", "2");
  c.owner = "h:2:2";
  c.epoch = 2;
  OK(b, sl_store_checkpoint_put(b, &c));
  OK(b, sl_store_flush(b));
  /* a takes it back (epoch 3): the step b completed is refused, a new one
     goes in. */
  OK(a, sl_store_run_claim(a, "01B", "h:1:1", 9000, 2, "running"));
  c = a_checkpoint("01B", "1/2", "again");
  c.owner = "h:1:1";
  c.epoch = 3;
  assert_int_equal(sl_store_checkpoint_put(a, &c), SL_STORE_ECONFLICT);
  c = a_checkpoint("01B", "1/3", "3");
  c.owner = "h:1:1";
  c.epoch = 3;
  OK(a, sl_store_checkpoint_put(a, &c));
  OK(a, sl_store_flush(a));
  collected col;
  assert_string_equal(list_paths(b, "01B", &col), "1/1 1/2 1/3");
  sl_store_checkpoint *got;
  OK(b, sl_store_checkpoint_get(b, "01B", "1/2", &got));
  assert_string_equal(got->output, "2");
  sl_store_checkpoint_free(got);
  close_ok(a);
  close_ok(b);
}

static void a_crash_is_checked_for_once (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  int checked = -1;
  OK(s, sl_store_check_after_crash(s, &checked));
  assert_int_equal(checked, 0);             /* nobody died */
  sl_store_run r = an_owned_run("01A", "elsewhere:1:1");
  r.lease_ms = 1;                           /* long run out: gone */
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_flush(s));
  OK(s, sl_store_check_after_crash(s, &checked));
  assert_int_equal(checked, 1);
  OK(s, sl_store_check_after_crash(s, &checked));
  assert_int_equal(checked, 0);             /* seen already */
  sl_store_run r2 = an_owned_run("01B", "elsewhere:2:2");
  r2.lease_ms = 1;
  OK(s, sl_store_run_begin(s, &r2));
  OK(s, sl_store_flush(s));
  OK(s, sl_store_check_after_crash(s, &checked));
  assert_int_equal(checked, 1);             /* another crash */
  close_ok(s);
}

static void prune_keeps_the_newest_whatever_their_age_and_never_a_live_run (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  const char *ids[] = {"01A", "01B", "01C", "01D", "01E"};
  for (int i = 0; i < 5; i++) {
    sl_store_run r = a_run(ids[i], "p", "running", 1000 + i);
    OK(s, sl_store_run_begin(s, &r));
    OK(s, sl_store_run_update(s, ids[i], i == 0 ? "interrupted" : "completed", "1", NULL,
                              NULL, 2000 + i));
  }
  sl_store_run live = an_owned_run("01F", "h:1:1");
  OK(s, sl_store_run_begin(s, &live));
  OK(s, sl_store_flush(s));
  int64_t removed = -1;
  /* Ended before 2004, beyond the 2 newest: 01B only (01A can resume,
     01D and 01E are the newest, 01C ended at 2002 and so goes too). */
  OK(s, sl_store_prune(s, 2004, NULL, 2, NULL, &removed));
  assert_int_equal(removed, 2);
  sl_store_run *got;
  assert_int_equal(sl_store_run_get(s, "01B", &got), SL_STORE_ENOTFOUND);
  assert_int_equal(sl_store_run_get(s, "01C", &got), SL_STORE_ENOTFOUND);
  const char *stay[] = {"01A", "01D", "01E", "01F"};
  for (int i = 0; i < 4; i++) {
    OK(s, sl_store_run_get(s, stay[i], &got));
    sl_store_run_free(got);
  }
  close_ok(s);
}

/* }====================================================== */


/*
** {======================================================
** Batching and crashes
** =======================================================
*/

static void writes_are_invisible_to_others_until_flushed (void **state) {
  fixture *f = *state;
  sl_store *a = open_ok(f->path, NULL);
  sl_store *b = open_ok(f->path, NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_checkpoint c = a_checkpoint("01A", "1", "1");
  sl_store_run *got;
  collected col;
  OK(a, sl_store_run_begin(a, &r));
  OK(a, sl_store_checkpoint_put(a, &c));
  assert_int_equal(sl_store_pending(a), 2);
  /* The writer sees its own batch; the other connection does not. */
  OK(a, sl_store_run_get(a, "01A", &got));
  sl_store_run_free(got);
  assert_int_equal(sl_store_run_get(b, "01A", &got), SL_STORE_ENOTFOUND);
  assert_string_equal(list_paths(b, "01A", &col), "");
  OK(a, sl_store_flush(a));
  assert_int_equal(sl_store_pending(a), 0);
  OK(b, sl_store_run_get(b, "01A", &got));
  sl_store_run_free(got);
  assert_string_equal(list_paths(b, "01A", &col), "1");
  OK(a, sl_store_flush(a));  /* nothing pending: nothing to do */
  close_ok(a);
  close_ok(b);
}


static void autoflush_commits_after_the_set_count (void **state) {
  fixture *f = *state;
  sl_store_options o = { 0 };
  sl_store *a, *b;
  sl_store_run r = a_run("01A", "p", "running", 1);
  collected col;
  o.autoflush = 4;
  a = open_ok(f->path, &o);
  b = open_ok(f->path, NULL);
  OK(a, sl_store_run_begin(a, &r));
  for (int i = 1; i <= 5; i++) {
    char path[16];
    sl_store_checkpoint c;
    snprintf(path, sizeof path, "1/%d", i);
    c = a_checkpoint("01A", path, NULL);
    OK(a, sl_store_checkpoint_put(a, &c));
    if (i == 2)
      assert_string_equal(list_paths(b, "01A", &col), "");
  }
  /* Four writes (the run, 1/1..1/3) were committed; 1/4 and 1/5 wait. */
  assert_int_equal(sl_store_pending(a), 2);
  assert_string_equal(list_paths(b, "01A", &col), "1/1 1/2 1/3");
  OK(a, sl_store_set_autoflush(a, 2));  /* reached already: commits now */
  assert_int_equal(sl_store_pending(a), 0);
  assert_string_equal(list_paths(b, "01A", &col), "1/1 1/2 1/3 1/4 1/5");
  close_ok(a);
  close_ok(b);
}


static void closing_flushes (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run *got;
  OK(s, sl_store_run_begin(s, &r));
  close_ok(s);
  s = open_ok(f->path, NULL);
  OK(s, sl_store_run_get(s, "01A", &got));
  sl_store_run_free(got);
  close_ok(s);
}


/*
** In a child process: opens the store, flushes a run with checkpoints 1/1
** to 1/10, then writes 1/11 to 1/20 (3 MB in all, more than SQLite's
** page cache, so uncommitted pages spill into the WAL) and a second run
** without flushing,
** and then either _exits or tells the parent (on fd) to kill it.
** Never returns.
*/
static void crashing_child (const char *path, int fd) {
  static char big[320 * 1024];
  sl_store_options o = { 0 };
  sl_store *s;
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run r2 = a_run("01B", "p", "running", 2);
  char err[512];
  memset(big, 0, sizeof big);
  big[0] = '"';
  memset(big + 1, 'x', sizeof big - 3);
  big[sizeof big - 2] = '"';
  if (sl_store_open(&s, path, &o, err, sizeof err) != 0
      || sl_store_run_begin(s, &r) != 0)
    _exit(10);
  for (int i = 1; i <= 20; i++) {
    char p[16];
    sl_store_checkpoint c;
    snprintf(p, sizeof p, "1/%d", i);
    c = a_checkpoint("01A", p, i <= 10 ? "1" : big);
    if (sl_store_checkpoint_put(s, &c) != 0)
      _exit(11);
    if (i == 10 && sl_store_flush(s) != 0)
      _exit(12);
  }
  if (sl_store_run_begin(s, &r2) != 0)
    _exit(13);
  if (fd < 0)
    _exit(0);
  if (write(fd, "k", 1) != 1)
    _exit(14);
  for (;;)
    pause();
}


static void assert_only_the_flushed_survived (const char *path) {
  sl_store *s = open_ok(path, NULL);  /* runs the integrity check */
  sl_store_run *got;
  collected col;
  OK(s, sl_store_run_get(s, "01A", &got));
  sl_store_run_free(got);
  assert_int_equal(sl_store_run_get(s, "01B", &got), SL_STORE_ENOTFOUND);
  assert_string_equal(list_paths(s, "01A", &col),
                      "1/1 1/2 1/3 1/4 1/5 1/6 1/7 1/8 1/9 1/10");
  /* And the store goes on working. */
  {
    sl_store_checkpoint c = a_checkpoint("01A", "1/11", "2");
    OK(s, sl_store_checkpoint_put(s, &c));
  }
  close_ok(s);
}


static void an_exit_without_flush_keeps_exactly_what_was_flushed (void **state) {
  fixture *f = *state;
  int status;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    crashing_child(f->path, -1);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_only_the_flushed_survived(f->path);
}


static void a_killed_writer_keeps_exactly_what_was_flushed (void **state) {
  fixture *f = *state;
  int fds[2], status;
  char c;
  pid_t pid;
  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    crashing_child(f->path, fds[1]);
  }
  close(fds[1]);
  assert_int_equal(read(fds[0], &c, 1), 1);
  close(fds[0]);
  assert_int_equal(kill(pid, SIGKILL), 0);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_only_the_flushed_survived(f->path);
}

/* }====================================================== */


/*
** {======================================================
** Locks, full disks, I/O errors
** =======================================================
*/

static void a_store_locked_past_the_timeout_says_so (void **state) {
  fixture *f = *state;
  sl_store_options quick = { 0 };
  sl_store *a = open_ok(f->path, NULL), *b;
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run r2 = a_run("01B", "p", "running", 2);
  sl_store_run *got;
  quick.busy_timeout_ms = 50;
  b = open_ok(f->path, &quick);
  OK(a, sl_store_run_begin(a, &r));  /* a's batch holds the write lock */
  assert_int_equal(sl_store_run_begin(b, &r2), SL_STORE_EBUSY);
  assert_contains(sl_store_errmsg(b), f->path);
  assert_contains(sl_store_errmsg(b), "locked");
  assert_contains(sl_store_errmsg(b), "01B");
  /* Reading is never blocked by a writer. */
  assert_int_equal(sl_store_run_get(b, "01A", &got), SL_STORE_ENOTFOUND);
  OK(a, sl_store_flush(a));
  OK(b, sl_store_run_begin(b, &r2));
  OK(b, sl_store_flush(b));
  close_ok(a);
  close_ok(b);
}


/*
** Two processes sharing the store take turns: a writer whose lock is taken
** waits for it (up to the busy timeout, 5 s by default) instead of failing.
** The child holds the lock for 200 ms; the test needs only that to be
** well under the parent's default timeout.
*/
static void a_writer_waits_for_a_lock_held_briefly (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01B", "p", "running", 2);
  int fds[2], status;
  char c;
  pid_t pid;
  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    sl_store *cs;
    sl_store_run cr = a_run("01A", "p", "running", 1);
    struct timespec hold = { 0, 200 * 1000 * 1000 };
    close(fds[0]);
    if (sl_store_open(&cs, f->path, NULL, NULL, 0) != 0
        || sl_store_run_begin(cs, &cr) != 0 || write(fds[1], "L", 1) != 1)
      _exit(10);
    nanosleep(&hold, NULL);
    _exit(sl_store_close(cs, NULL, 0) == 0 ? 0 : 11);
  }
  close(fds[1]);
  assert_int_equal(read(fds[0], &c, 1), 1);  /* the child holds the lock */
  close(fds[0]);
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_flush(s));
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  {
    collected col;
    assert_string_equal(list_runs(s, NULL, &col), "01B 01A");
  }
  close_ok(s);
}


static void a_new_store_locked_by_another_connection_says_so (void **state) {
  fixture *f = *state;
  sl_store_options quick = { 0 };
  char path[160], err[512];
  sqlite3 *db;
  sl_store *s;
  snprintf(path, sizeof path, "%s/locked.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
                   SQLITE_OK);
  quick.busy_timeout_ms = 50;
  assert_int_equal(sl_store_open(&s, path, &quick, err, sizeof err),
                   SL_STORE_EBUSY);
  assert_contains(err, path);
  assert_contains(err, "locked");
  assert_contains(err, "50 ms");
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  sqlite3_close(db);
  s = open_ok(path, &quick);
  close_ok(s);
}


static void a_full_store_discards_the_batch_and_goes_on (void **state) {
  fixture *f = *state;
  static char big[16 * 1024];
  sl_store_options o = { 0 };
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run r2 = a_run("01B", "p", "running", 2);
  sl_store_run *got;
  sl_store *s;
  collected col;
  int rc = 0, i;
  memset(big, 0, sizeof big);
  big[0] = '"';
  memset(big + 1, 'y', sizeof big - 3);
  big[sizeof big - 2] = '"';
  o.max_bytes = 256 * 1024;
  s = open_ok(f->path, &o);
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_flush(s));
  /* One batch: a new run and its checkpoints, more than the file holds. */
  OK(s, sl_store_run_begin(s, &r2));
  for (i = 1; i <= 64 && rc == 0; i++) {
    char p[16];
    sl_store_checkpoint c;
    snprintf(p, sizeof p, "1/%d", i);
    /* Each value its own: a value stored before is not stored again. */
    memcpy(big + 1, p, strlen(p));
    c = a_checkpoint("01B", p, big);
    rc = sl_store_checkpoint_put(s, &c);
    if (rc == 0 && i % 8 == 0)
      rc = sl_store_set_autoflush(s, 0);  /* a no-op that keeps the batch */
  }
  assert_int_equal(rc, SL_STORE_EFULL);
  assert_contains(sl_store_errmsg(s), f->path);
  assert_contains(sl_store_errmsg(s), "full");
  assert_contains(sl_store_errmsg(s), "discarded");
  assert_int_equal(sl_store_pending(s), 0);
  /* Never half a run: 01B and all its checkpoints are gone together. */
  assert_int_equal(sl_store_run_get(s, "01B", &got), SL_STORE_ENOTFOUND);
  assert_string_equal(list_paths(s, "01B", &col), "");
  /* What was flushed stays, and small writes still fit. */
  OK(s, sl_store_run_get(s, "01A", &got));
  sl_store_run_free(got);
  {
    sl_store_checkpoint c = a_checkpoint("01A", "1", "1");
    OK(s, sl_store_checkpoint_put(s, &c));
    OK(s, sl_store_flush(s));
  }
  close_ok(s);
  s = open_ok(f->path, NULL);  /* passes the integrity check */
  assert_string_equal(list_paths(s, "01A", &col), "1");
  close_ok(s);
}


/*
** In a child whose files may not grow past 64 KiB: a flush that needs
** more fails with EIO naming the file. Exits 0 when it did.
*/
static void io_error_child (const char *path) {
  static char big[32 * 1024];
  struct rlimit lim = { 64 * 1024, 64 * 1024 };
  sl_store_options o = { 0 };
  sl_store *s;
  sl_store_run r = a_run("01B", "p", "running", 2);
  char err[512];
  int rc = 0;
  memset(big, '1', sizeof big - 1);
  signal(SIGXFSZ, SIG_IGN);
  if (sl_store_open(&s, path, &o, err, sizeof err) != 0)
    _exit(10);
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
    _exit(11);
  if (sl_store_run_begin(s, &r) != 0)
    _exit(12);
  for (int i = 1; i <= 8 && rc == 0; i++) {
    char p[16];
    sl_store_checkpoint c;
    snprintf(p, sizeof p, "1/%d", i);
    c = a_checkpoint("01B", p, big);
    rc = sl_store_checkpoint_put(s, &c);
  }
  if (rc == 0)
    rc = sl_store_flush(s);
  if (rc != SL_STORE_EIO)
    _exit(13);
  if (strstr(sl_store_errmsg(s), path) == NULL
      || strstr(sl_store_errmsg(s), "discarded") == NULL)
    _exit(14);
  _exit(0);
}


static void a_write_error_is_reported_and_loses_only_the_batch (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01A", "p", "running", 1);
  sl_store_run *got;
  int status;
  pid_t pid;
  OK(s, sl_store_run_begin(s, &r));
  close_ok(s);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    io_error_child(f->path);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  s = open_ok(f->path, NULL);
  OK(s, sl_store_run_get(s, "01A", &got));
  sl_store_run_free(got);
  assert_int_equal(sl_store_run_get(s, "01B", &got), SL_STORE_ENOTFOUND);
  close_ok(s);
}

/* }====================================================== */


/*
** {======================================================
** Waits and the cache
** =======================================================
*/

typedef struct seen_waits { char text[512]; } seen_waits;

static int collect_wait (void *ud, const sl_store_wait *w) {
  seen_waits *sw = ud;
  size_t len = strlen(sw->text);
  snprintf(sw->text + len, sizeof sw->text - len, "%s%s=%s|%s|%s",
           len ? " " : "", w->path, w->message ? w->message : "-",
           w->schema ? w->schema : "-", w->answer ? w->answer : "-");
  return 0;
}

static const char *list_waits (sl_store *s, const char *run_id,
                               seen_waits *sw) {
  memset(sw, 0, sizeof *sw);
  OK(s, sl_store_wait_list(s, run_id, collect_wait, sw));
  return sw->text;
}


static void waits_are_recorded_answered_and_cleared (void **state) {
  fixture *f = *state;
  sl_store *s = open_ok(f->path, NULL);
  sl_store_run r = a_run("01A", "p", "paused", 1);
  sl_store_wait w1 = { "01A", "1/2", "Approve?", "{\"type\":\"boolean\"}",
                       NULL, 200 };
  sl_store_wait w2 = { "01A", "1/1", "Name?", NULL, NULL, 100 };
  sl_store_wait orphan = { "01Z", "1", NULL, NULL, NULL, 1 };
  seen_waits sw;
  int64_t removed = -1;
  OK(s, sl_store_run_begin(s, &r));
  OK(s, sl_store_wait_put(s, &w1));
  OK(s, sl_store_wait_put(s, &w2));
  assert_string_equal(list_waits(s, "01A", &sw),
                      "1/1=Name?|-|- 1/2=Approve?|{\"type\":\"boolean\"}|-");
  OK(s, sl_store_wait_answer(s, "01A", "1/2", "true"));
  OK(s, sl_store_flush(s));
  close_ok(s);

  s = open_ok(f->path, NULL);  /* as `sluice resume` would find them */
  assert_string_equal(list_waits(s, "01A", &sw),
                      "1/1=Name?|-|- 1/2=Approve?|{\"type\":\"boolean\"}|true");
  assert_int_equal(sl_store_wait_answer(s, "01A", "1/9", "1"),
                   SL_STORE_ENOTFOUND);
  assert_contains(sl_store_errmsg(s), "no such wait");
  assert_int_equal(sl_store_wait_put(s, &orphan), SL_STORE_EINVAL);
  OK(s, sl_store_wait_clear(s, "01A", &removed));
  assert_int_equal(removed, 2);
  assert_string_equal(list_waits(s, "01A", &sw), "");
  close_ok(s);
}


typedef struct step_stats { char text[512]; } step_stats;

static int collect_step (void *ud, const char *step,
                         const sl_store_cache_totals *t) {
  step_stats *ss = ud;
  size_t len = strlen(ss->text);
  snprintf(ss->text + len, sizeof ss->text - len, "%s%s:%lld/%lld/%lld",
           len ? " " : "", step, (long long)t->entries, (long long)t->bytes,
           (long long)t->hits);
  return 0;
}


static void cache_entries_hit_expire_and_clear (void **state) {
  fixture *f = *state;
  static const unsigned char k1[SL_STORE_KEYLEN] = { 1 };
  static const unsigned char k2[SL_STORE_KEYLEN] = { 2 };
  static const unsigned char k3[SL_STORE_KEYLEN] = { 3 };
  static const unsigned char k4[SL_STORE_KEYLEN] = { 4 };
  sl_store *s = open_ok(f->path, NULL);
  sl_store_cache_totals t;
  step_stats ss;
  int64_t removed;
  sl_buf b;
  sl_buf_init(&b);

  OK(s, sl_store_cache_put(s, k1, "fetch", "{\"a\":1}", 100, 0));
  OK(s, sl_store_cache_put(s, k2, "fetch", "[1,2,3]", 100, 1000));
  OK(s, sl_store_cache_put(s, k3, "summarize", "\"short\"", 100, 0));
  OK(s, sl_store_cache_put(s, k4, "summarize", "0", 100, 500));

  OK(s, sl_store_cache_get(s, k1, 999999, &b));
  assert_string_equal(b.data, "{\"a\":1}");
  OK(s, sl_store_cache_get(s, k1, 999999, &b));  /* appends */
  assert_string_equal(b.data, "{\"a\":1}{\"a\":1}");
  sl_buf_reset(&b);
  OK(s, sl_store_cache_get(s, k2, 999, &b));
  assert_string_equal(b.data, "[1,2,3]");

  /* Expired: a miss, and the entry is gone. */
  sl_buf_reset(&b);
  assert_int_equal(sl_store_cache_get(s, k2, 1000, &b), SL_STORE_ENOTFOUND);
  assert_contains(sl_store_errmsg(s), "expired");
  assert_int_equal(b.len, 0);
  OK(s, sl_store_cache_stats(s, &t, NULL, NULL));
  assert_int_equal(t.entries, 3);
  assert_int_equal(t.bytes, 7 + 7 + 1);
  assert_int_equal(t.hits, 2);
  memset(&ss, 0, sizeof ss);
  OK(s, sl_store_cache_stats(s, NULL, collect_step, &ss));
  assert_string_equal(ss.text, "fetch:1/7/2 summarize:2/8/0");

  /* Replacing an entry restarts its hits. */
  OK(s, sl_store_cache_put(s, k1, "fetch", "{\"a\":2}", 200, 0));
  memset(&ss, 0, sizeof ss);
  OK(s, sl_store_cache_stats(s, NULL, collect_step, &ss));
  assert_string_equal(ss.text, "fetch:1/7/0 summarize:2/8/0");
  OK(s, sl_store_flush(s));
  close_ok(s);

  /* The cache is shared through the file: another process sees it. */
  s = open_ok(f->path, NULL);
  OK(s, sl_store_cache_get(s, k1, 300, &b));
  assert_string_equal(b.data, "{\"a\":2}");
  OK(s, sl_store_cache_purge(s, 499, &removed));
  assert_int_equal(removed, 0);
  OK(s, sl_store_cache_purge(s, 500, &removed));   /* k4 expires at 500 */
  assert_int_equal(removed, 1);
  OK(s, sl_store_cache_clear(s, "summarize", &removed));
  assert_int_equal(removed, 1);
  OK(s, sl_store_cache_clear(s, NULL, &removed));
  assert_int_equal(removed, 1);
  sl_buf_reset(&b);
  assert_int_equal(sl_store_cache_get(s, k3, 300, &b), SL_STORE_ENOTFOUND);
  assert_int_equal(b.len, 0);
  OK(s, sl_store_cache_stats(s, &t, NULL, NULL));
  assert_int_equal(t.entries, 0);
  assert_int_equal(t.bytes, 0);
  close_ok(s);
  sl_buf_free(&b);
}

/* }====================================================== */


#define T(name)  cmocka_unit_test_setup_teardown(name, setup, teardown)

int main (void) {
  const struct CMUnitTest tests[] = {
    T(opening_a_new_path_creates_its_directory_and_schema),
    T(an_empty_file_is_a_new_store),
    T(reopening_runs_no_migration_twice),
    T(a_store_from_a_newer_sluice_is_refused),
    T(a_store_from_an_older_sluice_is_read_once_a_writer_updates_it),
    T(another_applications_database_is_left_alone),
    T(a_failed_migration_leaves_the_file_as_it_was),
    T(garbage_is_refused_naming_the_file),
    T(damaged_pages_fail_the_integrity_check),
    T(a_memory_store_works_and_leaves_no_file),
    T(bad_arguments_are_refused_with_a_message),
    T(a_run_round_trips_through_its_lifecycle),
    T(run_mistakes_are_reported),
    T(deleting_a_run_removes_its_checkpoints_and_waits),
    T(runs_list_newest_first_with_filters),
    T(a_listing_cannot_restart_itself_from_its_callback),
    T(checkpoints_round_trip_and_keep_their_order),
    T(journal_records_of_the_first_form_still_read),
    T(a_checkpoint_needs_its_run),
    T(of_two_claims_at_one_epoch_exactly_one_wins),
    T(a_queue_hands_each_run_to_one_worker_oldest_first),
    T(an_owner_that_lost_the_run_can_write_nothing_more),
    T(a_completed_step_is_recorded_once),
    T(an_owner_back_after_another_reads_the_run_again),
    T(prune_keeps_the_newest_whatever_their_age_and_never_a_live_run),
    T(a_crash_is_checked_for_once),
    T(writes_are_invisible_to_others_until_flushed),
    T(autoflush_commits_after_the_set_count),
    T(closing_flushes),
    T(an_exit_without_flush_keeps_exactly_what_was_flushed),
    T(a_killed_writer_keeps_exactly_what_was_flushed),
    T(a_store_locked_past_the_timeout_says_so),
    T(a_writer_waits_for_a_lock_held_briefly),
    T(a_new_store_locked_by_another_connection_says_so),
    T(a_full_store_discards_the_batch_and_goes_on),
    T(a_write_error_is_reported_and_loses_only_the_batch),
    T(waits_are_recorded_answered_and_cleared),
    T(cache_entries_hit_expire_and_clear),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
