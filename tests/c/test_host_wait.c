/*
** A host with a loop of its own drives an engine without spinning: it
** waits with poll(2) on sl_engine_fd for at most sl_engine_timeout ms and
** calls sl_engine_poll when woken. A run that sleeps, one that waits on a
** process, and one that starts a process from a process's end all
** complete, each after a handful of wakeups, and no wait outlasts the
** host's own cap (which would mean the descriptor missed the engine's
** work). The host's CPU time is printed, not checked: timing belongs in
** scripts/bench/embed_wait.c.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "sluice.h"

static char tmpdir[] = "/tmp/sluice-test-host-wait-XXXXXX";

static const char *write_file(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

/* The longest a host waits when the engine has no timer pending: far
   beyond what any run here takes, so reaching it means a missed wakeup. */
#define HOST_CAP_MS 10000

typedef struct host_loop {
  int wakeups;        /* waits that ended (descriptor or engine's timeout) */
  int timed_waits;    /* waits with a positive timeout from the engine */
  int capped;         /* waits the host's own cap ended */
  double cpu_ms;      /* the host's CPU time over the loop */
} host_loop;

static double cpu_ms_now(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3
         + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

/* Drives e as a host loop would until no run is active. */
static host_loop drive(sl_engine *e) {
  host_loop h = {0, 0, 0, 0};
  double start = cpu_ms_now();
  while (sl_engine_poll(e) > 0) {
    int timeout = sl_engine_timeout(e);
    struct pollfd pfd = {sl_engine_fd(e), POLLIN, 0};
    if (timeout > 0) h.timed_waits++;
    int n = poll(&pfd, 1, timeout < 0 ? HOST_CAP_MS : timeout);
    if (n == 0 && timeout < 0) h.capped++;
    h.wakeups++;
    if (h.capped > 0) break;
  }
  h.cpu_ms = cpu_ms_now() - start;
  return h;
}

/* Runs the only pipeline of the file text makes through drive() and
   returns its result JSON (a copy to free), checking the run completed. */
static char *run_driven(const char *file, const char *text, host_loop *h) {
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  assert_true(sl_engine_fd(e) >= 0);
  assert_int_equal(sl_engine_timeout(e), -1);
  assert_int_equal(sl_engine_load(e, write_file(file, text)), SL_OK);
  sl_run *r;
  assert_int_equal(sl_run_start(e, NULL, NULL, &r), SL_OK);
  *h = drive(e);
  assert_int_equal(h->capped, 0);
  assert_int_equal(sl_run_status(r), SL_RUN_COMPLETED);
  char *json = strdup(sl_run_result_json(r));
  assert_int_equal(sl_engine_poll(e), 0);
  assert_int_equal(sl_engine_timeout(e), -1);
  sl_run_free(r);
  sl_engine_free(e);
  return json;
}

static void a_sleeping_run_completes_after_few_wakeups(void **state) {
  (void)state;
  host_loop h;
  char *json = run_driven("nap.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'nap',\n"
    "  sl.step{ name = 'nap', run = function(_, ctx) ctx:sleep(0.3); return 'rested' end } }\n",
    &h);
  assert_non_null(strstr(json, "\"output\":\"rested\""));
  assert_true(h.timed_waits >= 1);
  assert_true(h.wakeups < 50);
  printf("# sleep 0.3 s: %d wakeups, host CPU %.2f ms\n", h.wakeups, h.cpu_ms);
  free(json);
}

static void a_run_waiting_on_a_process_is_woken_by_the_descriptor(void **state) {
  (void)state;
  host_loop h;
  char *json = run_driven("proc.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'proc',\n"
    "  sl.step{ name = 'sh', run = function(_, ctx)\n"
    "    return ctx:exec{ 'sh', '-c', 'sleep 0.2; echo hi' }.stdout end } }\n",
    &h);
  assert_non_null(strstr(json, "\"output\":\"hi\\n\""));
  assert_true(h.wakeups < 50);
  printf("# process 0.2 s: %d wakeups, host CPU %.2f ms\n", h.wakeups, h.cpu_ms);
  free(json);
}

/* The second process starts when the first ends: its output (more than a
   pipe holds, so it waits on the host reading) must still wake the host. */
static void a_process_started_from_a_process_end_is_watched(void **state) {
  (void)state;
  host_loop h;
  char *json = run_driven("procs.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'procs',\n"
    "  sl.step{ name = 'first', run = function(_, ctx) return ctx:exec{ 'true' }.code end },\n"
    "  sl.step{ name = 'second', run = function(_, ctx)\n"
    "    return #ctx:exec{ 'sh', '-c', 'yes | head -c 300000' }.stdout end } }\n",
    &h);
  assert_non_null(strstr(json, "\"output\":300000"));
  assert_true(h.wakeups < 200);
  free(json);
}

static void refuses_null(void **state) {
  (void)state;
  assert_int_equal(sl_engine_fd(NULL), SL_EINVAL);
  assert_int_equal(sl_engine_timeout(NULL), -1);
  assert_int_equal(sl_engine_poll(NULL), SL_EINVAL);
}

int main(void) {
  if (mkdtemp(tmpdir) == NULL) return 1;
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(a_sleeping_run_completes_after_few_wakeups),
    cmocka_unit_test(a_run_waiting_on_a_process_is_woken_by_the_descriptor),
    cmocka_unit_test(a_process_started_from_a_process_end_is_watched),
    cmocka_unit_test(refuses_null),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) return 1;
  return failed;
}
