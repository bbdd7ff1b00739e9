/*
** The public C API: an engine made by a host, with its own loop or the
** host's, with its own Lua state or the host's; and the failures a host
** must be told about.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "sluice.h"

static char tmpdir[] = "/tmp/sluice-test-engine-XXXXXX";

static const char *write_file(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static const char *sleepy =
  "local sl = require 'sluice'\n"
  "return sl.pipeline{ name = 'sleepy',\n"
  "  sl.step{ name = 'nap', run = function(x, ctx) ctx:sleep(0.005); return x.n * 2 end } }\n";

static void runs_a_pipeline_file_on_json_input(void **state) {
  (void)state;
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  assert_int_equal(sl_engine_load(e, write_file("sleepy.lua", sleepy)), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, "{\"n\":21}", &run), SL_OK);
  assert_int_equal(sl_run_status(run), SL_RUN_RUNNING);
  assert_null(sl_run_result_json(run));
  assert_int_equal(sl_run_wait(run), SL_RUN_COMPLETED);
  const char *json = sl_run_result_json(run);
  assert_non_null(json);
  assert_non_null(strstr(json, "\"output\":42"));
  assert_non_null(strstr(json, "\"status\":\"completed\""));
  assert_int_equal(strlen(sl_run_id(run)), 26);
  sl_run_free(run);
  sl_engine_free(e);
}

static void reports_bad_files_input_and_names(void **state) {
  (void)state;
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  assert_int_equal(sl_engine_load(e, "/nonexistent/x.lua"), SL_ENOTFOUND);
  assert_non_null(strstr(sl_engine_errmsg(e), "cannot open '/nonexistent/x.lua': No such file"));
  const char *bad = write_file("bad.lua", "return {\n");
  assert_int_equal(sl_engine_load(e, bad), SL_ESCRIPT);
  assert_non_null(strstr(sl_engine_errmsg(e), "bad.lua:2:"));
  assert_int_equal(sl_engine_load(e, write_file("sleepy.lua", sleepy)), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, "{\"n\":", &run), SL_EINPUT);
  assert_null(run);
  assert_non_null(strstr(sl_engine_errmsg(e), "line 1, column 6"));
  assert_int_equal(sl_run_start(e, "other", "{}", &run), SL_ENOTFOUND);
  assert_non_null(strstr(sl_engine_errmsg(e), "no pipeline named 'other'"));
  sl_engine_free(e);
}

static void a_failed_run_carries_its_error(void **state) {
  (void)state;
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  const char *p = write_file("boom.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'p', sl.step{ name = 'boom', run = function() error('kaboom') end } }\n");
  assert_int_equal(sl_engine_load(e, p), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, NULL, &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_FAILED);
  const char *json = sl_run_result_json(run);
  assert_non_null(strstr(json, "\"message\":\"kaboom\""));
  assert_non_null(strstr(json, "\"step\":\"boom\""));
  sl_run_free(run);
  sl_engine_free(e);
}

/* A host with its own loop drives it; the engine never runs it, and after
   sl_engine_free one more turn leaves it with no handles at all. */
static void leaves_a_host_loop_clean(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  sl_engine_options opts = {.loop = &loop};
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, &opts), SL_OK);
  assert_int_equal(sl_engine_load(e, write_file("sleepy.lua", sleepy)), SL_OK);
  sl_run *runs[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(sl_run_start(e, NULL, "{\"n\":1}", &runs[i]), SL_OK);
  assert_int_equal(sl_run_wait(runs[0]), SL_EBUSY);
  while (sl_engine_poll(e) > 0) uv_run(&loop, UV_RUN_ONCE);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(sl_run_status(runs[i]), SL_RUN_COMPLETED);
    sl_run_free(runs[i]);
  }
  sl_engine_free(e);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Freeing an engine with a run in flight ends the run as interrupted; the
   host's handle stays valid, with the result, until it frees it. */
static void free_cancels_runs_in_flight(void **state) {
  (void)state;
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  const char *p = write_file("long.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'p', sl.step{ name = 'long', run = function(_, ctx) ctx:sleep(60) end } }\n");
  assert_int_equal(sl_engine_load(e, p), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, NULL, &run), SL_OK);
  assert_int_equal(sl_engine_poll(e), 1);
  sl_engine_free(e);
  assert_int_equal(sl_run_status(run), SL_RUN_INTERRUPTED);
  const char *json = sl_run_result_json(run);
  assert_non_null(json);
  assert_non_null(strstr(json, "\"status\":\"interrupted\""));
  assert_non_null(strstr(json, "the engine was shut down"));
  assert_int_equal(sl_run_wait(run), SL_RUN_INTERRUPTED);
  sl_run_free(run);
}

/* NULL arguments are refused with SL_EINVAL, never a crash; a failed
   sl_engine_new prints nothing and leaves its message for the host. */
static void refuses_null_and_says_why_an_engine_was_not_made(void **state) {
  (void)state;
  assert_int_equal(sl_engine_load(NULL, "x.lua"), SL_EINVAL);
  assert_int_equal(sl_engine_reload(NULL), SL_EINVAL);
  assert_int_equal(sl_engine_poll(NULL), SL_EINVAL);
  assert_int_equal(sl_run_wait(NULL), SL_EINVAL);
  assert_int_equal(sl_run_status(NULL), SL_EINVAL);
  assert_null(sl_run_id(NULL));
  assert_null(sl_run_result_json(NULL));
  assert_null(sl_engine_lua(NULL));
  sl_run_free(NULL);
  sl_engine_free(NULL);
  sl_run *run = (sl_run *)&run;
  assert_int_equal(sl_run_start(NULL, NULL, NULL, &run), SL_EINVAL);
  assert_null(run);
  assert_int_equal(sl_engine_new(NULL, NULL), SL_EINVAL);
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  assert_int_equal(sl_engine_load(e, NULL), SL_EINVAL);
  assert_int_equal(sl_run_start(e, NULL, NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_run_resume(e, NULL, NULL, 0, &run), SL_EINVAL);
  sl_engine_free(e);

  /* What a failed sl_engine_new says goes to the host, not to stderr. */
  fflush(stderr);
  int saved = dup(2);
  char errpath[600];
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmpdir);
  FILE *capture = fopen(errpath, "w+");
  assert_non_null(capture);
  dup2(fileno(capture), 2);
  sl_engine_options opts = {.memory_limit = 64};
  int rc = sl_engine_new(&e, &opts);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  assert_int_equal(rc, SL_EINVAL);
  assert_null(e);
  assert_non_null(strstr(sl_engine_errmsg(NULL), "a memory limit of 64 bytes cannot be meant"));
  fseek(capture, 0, SEEK_END);
  assert_int_equal(ftell(capture), 0);
  fclose(capture);
}

/* Engines in two threads are independent: one thread's steps, limits and
   timeouts never reach the other's runs. */
typedef struct thread_job {
  const char *file;
  int runs, completed, limited, other;
} thread_job;

static void *run_job(void *arg) {
  thread_job *j = arg;
  sl_engine *e;
  if (sl_engine_new(&e, NULL) != SL_OK) return NULL;
  if (sl_engine_load(e, j->file) == SL_OK) {
    for (int i = 0; i < j->runs; i++) {
      sl_run *run;
      if (sl_run_start(e, NULL, NULL, &run) != SL_OK) { j->other++; continue; }
      int st = sl_run_wait(run);
      const char *json = sl_run_result_json(run);
      if (st == SL_RUN_COMPLETED) j->completed++;
      else if (json && strstr(json, "\"kind\":\"limit\"")) j->limited++;
      else j->other++;
      sl_run_free(run);
    }
  }
  sl_engine_free(e);
  return NULL;
}

static void engines_in_two_threads_are_independent(void **state) {
  (void)state;
  /* One thread's steps must be stopped by a tight instruction limit; the
     other's compute under a loose one and must all complete. */
  char tight[600], loose[600];
  snprintf(tight, sizeof tight, "%s", write_file("tight.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'tight', sl.step{ name = 'spin', limits = { instructions = 20000 },\n"
    "  run = function() local x = 0; for i = 1, 1e6 do x = x + i end; return x end } }\n"));
  snprintf(loose, sizeof loose, "%s", write_file("loose.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'loose', sl.step{ name = 'sum', limits = { instructions = 1000000000 },\n"
    "  timeout = 30, run = function() local x = 0; for i = 1, 2e5 do x = x + i end; return x end } }\n"));
  thread_job a = {tight, 200, 0, 0, 0}, b = {loose, 200, 0, 0, 0};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, run_job, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, run_job, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(a.limited, 200);
  assert_int_equal(b.completed, 200);
  assert_int_equal(a.other + b.other, 0);
}

/* A host with its own Lua state opens sluice into it and uses the DSL from
   its own scripts. */
static void opens_into_a_host_lua_state(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  sl_engine_options opts = {.L = L};
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, &opts), SL_OK);
  assert_ptr_equal(sl_engine_lua(e), L);
  int rc = luaL_dostring(L,
    "local sl = require 'sluice'\n"
    "local p = sl.pipeline{ name = 'p', sl.step{ name = 's', run = function(x, ctx) ctx:sleep(0); return x + 1 end } }\n"
    "host_result = sl.run(p, 41).output\n");
  if (rc != LUA_OK) fail_msg("%s", lua_tostring(L, -1));
  lua_getglobal(L, "host_result");
  assert_int_equal(lua_tointeger(L, -1), 42);
  lua_pop(L, 1);
  sl_engine_free(e);
  lua_close(L);
}

/* Options that grew: a caller that says their size gets the later fields
   (a trace file here); a zeroed struct is read as the first layout, so a
   later field it happens to hold is not read. */
static void reads_the_options_its_caller_knows_of(void **state) {
  (void)state;
  char trace[600], other[600];
  snprintf(trace, sizeof trace, "%s/spans.jsonl", tmpdir);
  snprintf(other, sizeof other, "%s/not-read.jsonl", tmpdir);
  const char *p = write_file("traced.lua",
    "local sl = require 'sluice'\n"
    "return sl.pipeline{ name = 'traced', sl.step{ name = 's', run = function(x) return x end } }\n");
  sl_engine_options opts = SL_ENGINE_OPTIONS_INIT;
  opts.trace = trace;
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, &opts), SL_OK);
  assert_int_equal(sl_engine_load(e, p), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, "1", &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_COMPLETED);
  sl_run_free(run);
  sl_engine_free(e);
  FILE *f = fopen(trace, "r");
  assert_non_null(f);
  char line[4096];
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_non_null(strstr(line, "{\"resourceSpans\":[{\"resource\""));
  sl_engine_options old = {0};
  old.trace = other;
  assert_int_equal(sl_engine_new(&e, &old), SL_OK);
  sl_engine_free(e);
  assert_null(fopen(other, "r"));
  /* Spans for a collector that is down are counted, and said. */
  sl_engine_options ex = SL_ENGINE_OPTIONS_INIT;
  ex.otlp = "http://127.0.0.1:1";
  assert_int_equal(sl_engine_new(&e, &ex), SL_OK);
  assert_int_equal(sl_engine_load(e, p), SL_OK);
  assert_int_equal(sl_run_start(e, NULL, "1", &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_COMPLETED);
  sl_run_free(run);
  assert_int_equal(sl_engine_flush_spans(e, 2000), 2);
  assert_non_null(strstr(sl_engine_errmsg(e), "2 spans were not exported to http://127.0.0.1:1/v1/traces"));
  sl_engine_free(e);
  assert_int_equal(sl_engine_flush_spans(NULL, 0), SL_EINVAL);
  ex.otlp = "ftp://x";
  assert_int_equal(sl_engine_new(&e, &ex), SL_EINVAL);
  assert_non_null(strstr(sl_engine_errmsg(NULL), "http:// or https://"));
  /* A size too small to hold itself is a mistake. */
  sl_engine_options tiny = {.size = 1};
  assert_int_equal(sl_engine_new(&e, &tiny), SL_EINVAL);
  assert_non_null(strstr(sl_engine_errmsg(NULL), "SL_ENGINE_OPTIONS_INIT"));
}

/* A paused run is stored; the host resumes it with an answer, and the
   step before the pause is not run again. */
static void resumes_a_paused_run_from_the_store(void **state) {
  (void)state;
  char store[600];
  snprintf(store, sizeof store, "%s/state.db", tmpdir);
  sl_engine_options opts = {.store = store};
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, &opts), SL_OK);
  const char *p = write_file("ask.lua",
    "local sl = require 'sluice'\n"
    "calls = (calls or 0)\n"
    "return sl.pipeline{ name = 'ask',\n"
    "  sl.step{ name = 'before', run = function(x) calls = calls + 1; return x end },\n"
    "  sl.human{ name = 'q', message = 'yes?', schema = { type = 'string' } },\n"
    "  sl.step{ name = 'after', run = function(a) return a .. '/' .. calls end } }\n");
  assert_int_equal(sl_engine_load(e, p), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, "1", &run), SL_OK);
  assert_int_equal(sl_run_wait(run), SL_RUN_PAUSED);
  char id[40];
  snprintf(id, sizeof id, "%s", sl_run_id(run));
  sl_run_free(run);
  sl_run *again;
  assert_int_equal(sl_run_resume(e, id, "5", 0, &again), SL_ESCRIPT);
  assert_non_null(strstr(sl_engine_errmsg(e), "expected string"));
  assert_int_equal(sl_run_resume(e, id, "\"ok\"", 0, &again), SL_OK);
  assert_int_equal(sl_run_wait(again), SL_RUN_COMPLETED);
  assert_non_null(strstr(sl_run_result_json(again), "\"output\":\"ok/1\""));
  assert_string_equal(sl_run_id(again), id);
  sl_run_free(again);
  assert_int_equal(sl_run_resume(e, "NOPE", NULL, 0, &again), SL_ENOTFOUND);
  assert_non_null(strstr(sl_engine_errmsg(e), "no run with id 'NOPE'"));
  sl_engine_free(e);
}

int main(void) {
  if (mkdtemp(tmpdir) == NULL) return 1;
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(runs_a_pipeline_file_on_json_input),
    cmocka_unit_test(reports_bad_files_input_and_names),
    cmocka_unit_test(a_failed_run_carries_its_error),
    cmocka_unit_test(leaves_a_host_loop_clean),
    cmocka_unit_test(free_cancels_runs_in_flight),
    cmocka_unit_test(refuses_null_and_says_why_an_engine_was_not_made),
    cmocka_unit_test(engines_in_two_threads_are_independent),
    cmocka_unit_test(opens_into_a_host_lua_state),
    cmocka_unit_test(resumes_a_paused_run_from_the_store),
    cmocka_unit_test(reads_the_options_its_caller_knows_of),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) return 1;
  return failed;
}
