/*
** Host kinds: step kinds a C host implements (sl_engine_kind), completed
** during the call or later from the host's loop, failed, retried, timed
** out, cancelled with their engine; handles that are stale are refused.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "sluice.h"

static char tmpdir[] = "/tmp/sluice-test-hostkind-XXXXXX";

static const char *write_file(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static const char *pipelines =
  "local sl = require 'sluice'\n"
  "return {\n"
  "  now = sl.pipeline{ name = 'now', sl.step{ name = 'shout', kind = 'upper' } },\n"
  "  later = sl.pipeline{ name = 'later',\n"
  "    sl.step{ name = 'ask', kind = 'buffer', timeout = 0.2 },\n"
  "    sl.step{ name = 'len', run = function(x) return #x.text end } },\n"
  "  flaky = sl.pipeline{ name = 'flaky', sl.step{ name = 'f', kind = 'flaky', retries = 2 } },\n"
  "  stuck = sl.pipeline{ name = 'stuck', sl.step{ name = 'never', kind = 'buffer', timeout = 0.05 } },\n"
  "}\n";

/* Completes during the call: the input's text, upper-cased. */
static void upper(sl_step_handle *h, const char *input, void *ud) {
  int *calls = ud;
  (*calls)++;
  char out[256];
  const char *t = strstr(input, "\"text\":\"");
  assert_non_null(t);
  t += 8;
  size_t n = 0;
  out[n++] = '"';
  while (*t && *t != '"' && n < sizeof out - 2) {
    char ch = *t++;
    out[n++] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
  }
  out[n++] = '"';
  out[n] = '\0';
  assert_int_equal(sl_step_complete(h, out), SL_OK);
  /* Once is all: the handle is spent. */
  assert_int_equal(sl_step_complete(h, "\"again\""), SL_EINVAL);
}

/* Keeps the handle for the host to complete later. */
static sl_step_handle *pending;
static char pending_input[256];
static void buffer(sl_step_handle *h, const char *input, void *ud) {
  (void)ud;
  pending = h;
  snprintf(pending_input, sizeof pending_input, "%s", input);
}

/* Fails its first two calls. */
static void flaky(sl_step_handle *h, const char *input, void *ud) {
  (void)input;
  int *calls = ud;
  if (++*calls < 3) assert_int_equal(sl_step_fail(h, "not yet"), SL_OK);
  else assert_int_equal(sl_step_complete(h, "{\"ok\":true}"), SL_OK);
}

static sl_engine *engine(int *upper_calls, int *flaky_calls) {
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  assert_int_equal(sl_engine_kind(e, "upper", upper, upper_calls), SL_OK);
  assert_int_equal(sl_engine_kind(e, "buffer", buffer, NULL), SL_OK);
  assert_int_equal(sl_engine_kind(e, "flaky", flaky, flaky_calls), SL_OK);
  assert_int_equal(sl_engine_load(e, write_file("kinds.lua", pipelines)), SL_OK);
  return e;
}

static void completes_during_the_call(void **state) {
  (void)state;
  int calls = 0, fl = 0;
  sl_engine *e = engine(&calls, &fl);
  sl_run *run;
  assert_int_equal(sl_run_start(e, "now", "{\"text\":\"hello\"}", &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_COMPLETED);
  assert_non_null(strstr(sl_run_result_json(run), "\"output\":\"HELLO\""));
  assert_int_equal(calls, 1);
  sl_run_free(run);
  sl_engine_free(e);
}

static void completes_later_from_the_host_loop(void **state) {
  (void)state;
  int calls = 0, fl = 0;
  sl_engine *e = engine(&calls, &fl);
  sl_run *run;
  pending = NULL;
  assert_int_equal(sl_run_start(e, "later", "{\"buffer\":3}", &run), SL_OK);
  for (int i = 0; i < 100 && pending == NULL; i++) sl_engine_poll(e);
  assert_non_null(pending);
  assert_string_equal(pending_input, "{\"buffer\":3}");
  assert_int_equal(sl_step_cancelled(pending), 0);
  assert_int_equal(sl_run_status(run), SL_RUN_RUNNING);
  sl_step_handle *h = pending;
  assert_int_equal(sl_step_complete(h, "{\"text\":\"four\"}"), SL_OK);
  assert_int_equal(sl_step_complete(h, "{}"), SL_EINVAL);
  assert_int_equal(sl_run_wait(run), SL_RUN_COMPLETED);
  assert_non_null(strstr(sl_run_result_json(run), "\"output\":4"));
  sl_run_free(run);
  /* A failure, and an output that is not JSON, fail the step naming it. */
  pending = NULL;
  assert_int_equal(sl_run_start(e, "later", "{}", &run), SL_OK);
  for (int i = 0; i < 100 && pending == NULL; i++) sl_engine_poll(e);
  assert_int_equal(sl_step_fail(pending, "the buffer is gone"), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_FAILED);
  assert_non_null(strstr(sl_run_result_json(run), "host kind 'buffer': the buffer is gone"));
  sl_run_free(run);
  pending = NULL;
  assert_int_equal(sl_run_start(e, "later", "{}", &run), SL_OK);
  for (int i = 0; i < 100 && pending == NULL; i++) sl_engine_poll(e);
  assert_int_equal(sl_step_complete(pending, "{\"text\":"), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_FAILED);
  assert_non_null(strstr(sl_run_result_json(run), "host kind 'buffer' completed with malformed JSON"));
  sl_run_free(run);
  sl_engine_free(e);
}

static void retries_apply(void **state) {
  (void)state;
  int calls = 0, fl = 0;
  sl_engine *e = engine(&calls, &fl);
  sl_run *run;
  assert_int_equal(sl_run_start(e, "flaky", "{}", &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_COMPLETED);
  assert_int_equal(fl, 3);
  assert_non_null(strstr(sl_run_result_json(run), "\"attempts\":3"));
  sl_run_free(run);
  sl_engine_free(e);
}

static void a_step_never_completed_times_out(void **state) {
  (void)state;
  int calls = 0, fl = 0;
  sl_engine *e = engine(&calls, &fl);
  sl_run *run;
  pending = NULL;
  assert_int_equal(sl_run_start(e, "stuck", "{}", &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_FAILED);
  assert_non_null(strstr(sl_run_result_json(run), "\"kind\":\"timeout\""));
  assert_non_null(pending);
  assert_int_equal(sl_step_cancelled(pending), 1);
  assert_int_equal(sl_step_complete(pending, "{}"), SL_ECANCELLED);
  assert_int_equal(sl_step_complete(pending, "{}"), SL_EINVAL);
  sl_run_free(run);
  sl_engine_free(e);
}

static void freeing_the_engine_cancels_pending_steps(void **state) {
  (void)state;
  int calls = 0, fl = 0;
  sl_engine *e = engine(&calls, &fl);
  sl_run *run;
  pending = NULL;
  assert_int_equal(sl_run_start(e, "later", "{}", &run), SL_OK);
  for (int i = 0; i < 100 && pending == NULL; i++) sl_engine_poll(e);
  assert_non_null(pending);
  sl_run_free(run);
  sl_engine_free(e);
  assert_int_equal(sl_step_cancelled(pending), 1);
  assert_int_equal(sl_step_fail(pending, "late"), SL_ECANCELLED);
}

static void refuses_bad_arguments(void **state) {
  (void)state;
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  assert_int_equal(sl_engine_kind(NULL, "k", upper, NULL), SL_EINVAL);
  assert_int_equal(sl_engine_kind(e, "", upper, NULL), SL_EINVAL);
  assert_non_null(strstr(sl_engine_errmsg(e), "a kind needs a name and a function"));
  assert_int_equal(sl_engine_kind(e, "k", NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_step_complete(NULL, "{}"), SL_EINVAL);
  assert_int_equal(sl_step_complete((sl_step_handle *)(uintptr_t)0x12345, "{}"), SL_EINVAL);
  assert_int_equal(sl_step_cancelled(NULL), SL_EINVAL);
  sl_engine_free(e);
}

int main(void) {
  assert_non_null(mkdtemp(tmpdir));
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(completes_during_the_call),
    cmocka_unit_test(completes_later_from_the_host_loop),
    cmocka_unit_test(retries_apply),
    cmocka_unit_test(a_step_never_completed_times_out),
    cmocka_unit_test(freeing_the_engine_cancels_pending_steps),
    cmocka_unit_test(refuses_bad_arguments),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) rc = 1;
  return rc;
}
