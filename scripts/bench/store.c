/*
** What durability costs: microseconds per checkpoint with batched commits
** against a commit after every checkpoint, and how long `sluice runs`
** takes to list 10,000 runs. Prints figures only; nothing here passes or
** fails.
**
** Build against a build of the library, then run from anywhere:
**
**   cc -O2 -Iengine $(pkg-config --cflags lua5.4) scripts/bench/store.c \
**      -Lbuild -Wl,-rpath,$PWD/build -lsluice -lsqlite3 -o /tmp/bench_store
**   /tmp/bench_store [DIR]
**
** The store files go in a new directory under DIR (default /tmp), removed
** at the end; put it on the disk you care about.
*/

#define _GNU_SOURCE  /* mkdtemp, nftw */

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"


static double now_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


static void check (sl_store *s, int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "%s failed (%d): %s\n", what, rc, sl_store_errmsg(s));
    exit(1);
  }
}


static sl_store *open_store (const char *path, const sl_store_options *o) {
  sl_store *s;
  char err[512];
  if (sl_store_open(&s, path, o, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  return s;
}


static void begin_run (sl_store *s, const char *id) {
  sl_store_run r;
  memset(&r, 0, sizeof r);
  r.id = id;
  r.pipeline = "bench";
  r.status = "running";
  r.input = "{\"topic\":\"durable runs\"}";
  r.started_ms = 1700000000000;
  check(s, sl_store_run_begin(s, &r), "run_begin");
  check(s, sl_store_flush(s), "flush");
}


static const char output[] =
  "{\"title\":\"A step's output\",\"items\":[1,2,3,4,5],"
  "\"summary\":\"about a hundred bytes of JSON, as a small step returns\"}";


/*
** Puts n checkpoints of one run, each a step recorded twice (when it
** starts, then replaced when it ends), committing every `every` puts
** (0: only at the end). Returns microseconds per put.
*/
static double put_checkpoints (sl_store *s, const char *run, int n,
                               int every) {
  sl_store_checkpoint c;
  char path[32];
  double t0 = now_s();
  memset(&c, 0, sizeof c);
  c.run_id = run;
  c.path = path;
  c.parent = "1/3";
  c.name = "fetch";
  c.kind = "step";
  c.attempts = 1;
  c.usage = "{\"tokens\":123,\"cost\":0.0004}";
  for (int i = 0; i < n; i++) {
    snprintf(path, sizeof path, "1/3/%d", i / 2 + 1);
    c.status = (i % 2 == 0) ? "running" : "completed";
    c.output = (i % 2 == 0) ? NULL : output;
    c.t0 = (int64_t)i * 1000;
    c.t1 = (int64_t)i * 1000 + 500;
    check(s, sl_store_checkpoint_put(s, &c), "checkpoint_put");
    if (every > 0 && (i + 1) % every == 0)
      check(s, sl_store_flush(s), "flush");
  }
  check(s, sl_store_flush(s), "flush");
  return (now_s() - t0) * 1e6 / n;
}


static void bench_checkpoints (const char *dir) {
  char path[1024];
  sl_store *s;
  sl_store_options o;
  double us;

  snprintf(path, sizeof path, "%s/batched.db", dir);
  s = open_store(path, NULL);
  begin_run(s, "01BATCH");
  us = put_checkpoints(s, "01BATCH", 200000, 1000);
  printf("checkpoint_put, flush every 1000 puts:   %7.2f us/put\n", us);
  check(s, sl_store_close(s, NULL, 0), "close");

  snprintf(path, sizeof path, "%s/batched2.db", dir);
  s = open_store(path, NULL);
  begin_run(s, "01BATCH");
  us = put_checkpoints(s, "01BATCH", 200000, 100);
  printf("checkpoint_put, flush every 100 puts:    %7.2f us/put\n", us);
  check(s, sl_store_close(s, NULL, 0), "close");

  memset(&o, 0, sizeof o);
  o.autoflush = 1000;
  snprintf(path, sizeof path, "%s/auto.db", dir);
  s = open_store(path, &o);
  begin_run(s, "01AUTO");
  us = put_checkpoints(s, "01AUTO", 200000, 0);
  printf("checkpoint_put, autoflush 1000:          %7.2f us/put\n", us);
  check(s, sl_store_close(s, NULL, 0), "close");

  snprintf(path, sizeof path, "%s/each.db", dir);
  s = open_store(path, NULL);
  begin_run(s, "01EACH");
  us = put_checkpoints(s, "01EACH", 5000, 1);
  printf("checkpoint_put, flush after every put:   %7.2f us/put\n", us);
  check(s, sl_store_close(s, NULL, 0), "close");

  s = open_store(":memory:", NULL);
  begin_run(s, "01MEM");
  us = put_checkpoints(s, "01MEM", 200000, 1000);
  printf("checkpoint_put, :memory:, flush/1000:    %7.2f us/put\n", us);
  check(s, sl_store_close(s, NULL, 0), "close");
}


static int count_run (void *ud, const sl_store_run *r) {
  (*(int *)ud) += (r->id[0] != '\0');
  return 0;
}


static void bench_runs (const char *dir) {
  static const char *const statuses[] = {
    "completed", "completed", "completed", "failed", "paused"
  };
  char path[1024], id[32];
  sl_store *s;
  sl_store_options o;
  sl_store_run_filter f;
  sl_store_run r;
  double t0, t;
  int n;

  snprintf(path, sizeof path, "%s/runs.db", dir);
  s = open_store(path, NULL);
  t0 = now_s();
  for (int i = 0; i < 10000; i++) {
    memset(&r, 0, sizeof r);
    snprintf(id, sizeof id, "01H%012d", i);
    r.id = id;
    r.pipeline = (i % 3 == 0) ? "summarize" : "research";
    r.file = "pipelines/research.lua";
    r.def_hash = "5d41402abc4b2a76b9719d911017c592";
    r.status = statuses[i % 5];
    r.input = "{\"topic\":\"durable runs\",\"depth\":3}";
    r.output = output;
    r.usage = "{\"tokens\":5123,\"cost\":0.012,\"requests\":7}";
    r.budget = "{\"cost\":0.5}";
    r.started_ms = 1700000000000 + i * 1000;
    r.ended_ms = r.started_ms + 900;
    check(s, sl_store_run_begin(s, &r), "run_begin");
  }
  check(s, sl_store_flush(s), "flush");
  printf("10,000 runs recorded in one batch:       %7.2f ms\n",
         (now_s() - t0) * 1e3);
  check(s, sl_store_close(s, NULL, 0), "close");

  t0 = now_s();
  s = open_store(path, NULL);
  printf("open with quick_check (10,000 runs):     %7.2f ms\n",
         (now_s() - t0) * 1e3);
  check(s, sl_store_close(s, NULL, 0), "close");
  memset(&o, 0, sizeof o);
  o.skip_check = 1;
  t0 = now_s();
  s = open_store(path, &o);
  printf("open without the check:                  %7.2f ms\n",
         (now_s() - t0) * 1e3);

  n = 0;
  t0 = now_s();
  check(s, sl_store_run_list(s, NULL, count_run, &n), "run_list");
  t = now_s() - t0;
  printf("run_list, all %d runs, newest first:  %7.2f ms\n", n, t * 1e3);

  n = 0;
  t0 = now_s();
  check(s, sl_store_run_list(s, NULL, count_run, &n), "run_list");
  printf("run_list again (warm):                   %7.2f ms\n",
         (now_s() - t0) * 1e3);

  memset(&f, 0, sizeof f);
  f.limit = 20;
  n = 0;
  t0 = now_s();
  check(s, sl_store_run_list(s, &f, count_run, &n), "run_list");
  printf("run_list, newest 20:                     %7.3f ms\n",
         (now_s() - t0) * 1e3);

  memset(&f, 0, sizeof f);
  f.status = "failed";
  f.pipeline = "summarize";
  n = 0;
  t0 = now_s();
  check(s, sl_store_run_list(s, &f, count_run, &n), "run_list");
  printf("run_list, failed runs of one pipeline (%d): %5.2f ms\n", n,
         (now_s() - t0) * 1e3);
  check(s, sl_store_close(s, NULL, 0), "close");
}


static void bench_cache (const char *dir) {
  char path[1024];
  unsigned char key[SL_STORE_KEYLEN];
  sl_store *s;
  sl_buf b;
  double t0;
  int n = 100000;
  snprintf(path, sizeof path, "%s/cache.db", dir);
  s = open_store(path, NULL);
  memset(key, 0, sizeof key);
  t0 = now_s();
  for (int i = 0; i < n; i++) {
    memcpy(key, &i, sizeof i);
    check(s, sl_store_cache_put(s, key, "fetch", output, 1, 0), "cache_put");
    if ((i + 1) % 1000 == 0)
      check(s, sl_store_flush(s), "flush");
  }
  printf("cache_put, flush every 1000:             %7.2f us/put\n",
         (now_s() - t0) * 1e6 / n);
  sl_buf_init(&b);
  t0 = now_s();
  for (int i = 0; i < n; i++) {
    memcpy(key, &i, sizeof i);
    sl_buf_reset(&b);
    check(s, sl_store_cache_get(s, key, 2, &b), "cache_get");
    if ((i + 1) % 1000 == 0)
      check(s, sl_store_flush(s), "flush");
  }
  printf("cache_get hit (counts the hit):          %7.2f us/get\n",
         (now_s() - t0) * 1e6 / n);
  sl_buf_free(&b);
  check(s, sl_store_close(s, NULL, 0), "close");
}


static int remove_entry (const char *p, const struct stat *sb, int flag,
                         struct FTW *ftw) {
  (void)sb; (void)flag; (void)ftw;
  return remove(p);
}


int main (int argc, char **argv) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/sluice-bench-store-XXXXXX",
           argc > 1 ? argv[1] : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror(dir);
    return 1;
  }
  printf("store files in %s (WAL, synchronous=NORMAL)\n", dir);
  bench_checkpoints(dir);
  bench_runs(dir);
  bench_cache(dir);
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}
