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
  assert_int_equal(sl_engine_load(e, "/nonexistent/x.lua"), SL_ESCRIPT);
  assert_non_null(strstr(sl_engine_errmsg(e), "cannot open /nonexistent/x.lua"));
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

/* Freeing an engine with a run in flight cancels the run. */
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
  assert_int_equal(sl_run_resume(e, "NOPE", NULL, 0, &again), SL_ESCRIPT);
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
    cmocka_unit_test(opens_into_a_host_lua_state),
    cmocka_unit_test(resumes_a_paused_run_from_the_store),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) return 1;
  return failed;
}
