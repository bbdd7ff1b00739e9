/*
** Processes and requests in flight when a host frees its engine: the
** program and its process group are killed and reaped, the request is
** dropped, and every handle closes, on the engine's own loop and on the
** host's (which is left with nothing open).
*/
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>

#include <uv.h>

#include "sluice.h"

static char tmpdir[] = "/tmp/sluice-test-io-XXXXXX";

static const char *pipeline =
  "local sl = require 'sluice'\n"
  "sl.kind('io_teardown', function(s, input, ctx)\n"
  "  return ctx:await{ ctx:spawn(s.proc, input), ctx:spawn(s.req, input) }\n"
  "end)\n"
  "local proc = sl.step{ name = 'proc', run = function(x, ctx)\n"
  "  return ctx:exec{ 'sh', '-c', 'sleep 300 & echo $! > ' .. x.dir .. '/child; '\n"
  "                   .. 'echo $$ > ' .. x.dir .. '/shell; wait' }\n"
  "end }\n"
  "local req = sl.step{ name = 'req', run = function(x, ctx) return ctx:http(x.url) end }\n"
  "return sl.pipeline{ name = 'p', sl.step{ kind = 'io_teardown', name = 't', proc = proc, req = req } }\n";

static const char *path_of(const char *name) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  return path;
}

static int read_pid(const char *name) {
  FILE *f = fopen(path_of(name), "r");
  int pid = 0;
  if (f == NULL) return 0;
  if (fscanf(f, "%d", &pid) != 1) pid = 0;
  fclose(f);
  return pid;
}

/* Has pid died (gone, or a zombie nobody has reaped yet)? */
static int dead(int pid) {
  char path[64], stat[512];
  if (kill(pid, 0) != 0 && errno == ESRCH) return 1;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 1;
  size_t n = fread(stat, 1, sizeof stat - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char *paren = strrchr(stat, ')');
  return paren != NULL && (paren[2] == 'Z' || paren[2] == 'X');
}

/* A TCP port that accepts connections and never answers: the kernel
   completes the handshake for the listen queue. Returns the socket. */
static int silent_server(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* Starts the pipeline and drives the engine (and the host loop, if any)
   until the program has started its child. */
static sl_run *start_in_flight(sl_engine *e, uv_loop_t *host, int port) {
  char input[700];
  unlink(path_of("shell"));
  unlink(path_of("child"));
  snprintf(input, sizeof input, "{\"dir\":\"%s\",\"url\":\"http://127.0.0.1:%d/\"}",
           tmpdir, port);
  char file[600];
  snprintf(file, sizeof file, "%s", path_of("teardown.lua"));
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fputs(pipeline, f);
  fclose(f);
  assert_int_equal(sl_engine_load(e, file), SL_OK);
  sl_run *run;
  assert_int_equal(sl_run_start(e, NULL, input, &run), SL_OK);
  for (int i = 0; i < 2000 && read_pid("shell") == 0; i++) {
    if (host != NULL) uv_run(host, UV_RUN_NOWAIT);
    assert_int_equal(sl_engine_poll(e), 1);
    usleep(5000);
  }
  assert_int_not_equal(read_pid("shell"), 0);
  assert_int_equal(sl_run_status(run), SL_RUN_RUNNING);
  return run;
}

static void free_kills_programs_and_drops_requests_on_its_own_loop(void **state) {
  (void)state;
  int port, fd = silent_server(&port);
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, NULL), SL_OK);
  sl_run *run = start_in_flight(e, NULL, port);
  int shell = read_pid("shell"), child = read_pid("child");
  sl_engine_free(e);
  /* The host's handle outlives the engine: the run ended interrupted. */
  assert_int_equal(sl_run_status(run), SL_RUN_INTERRUPTED);
  sl_run_free(run);
  /* Its own loop ran until every handle closed: the program was reaped. */
  assert_int_equal(kill(shell, 0), -1);
  for (int i = 0; i < 2000 && !dead(child); i++) usleep(5000);
  assert_true(dead(child));
  close(fd);
}

static void free_leaves_a_host_loop_clean_with_io_in_flight(void **state) {
  (void)state;
  int port, fd = silent_server(&port);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  sl_engine_options opts = {.loop = &loop};
  sl_engine *e;
  assert_int_equal(sl_engine_new(&e, &opts), SL_OK);
  sl_run *run = start_in_flight(e, &loop, port);
  int shell = read_pid("shell"), child = read_pid("child");
  sl_engine_free(e);
  /* The host's handle outlives the engine: the run ended interrupted. */
  assert_int_equal(sl_run_status(run), SL_RUN_INTERRUPTED);
  sl_run_free(run);
  /* The process handle closes once the killed program is reaped; then the
     host's loop has nothing left. */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(kill(shell, 0), -1);
  for (int i = 0; i < 2000 && !dead(child); i++) usleep(5000);
  assert_true(dead(child));
  close(fd);
}

int main(void) {
  if (mkdtemp(tmpdir) == NULL) return 1;
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(free_kills_programs_and_drops_requests_on_its_own_loop),
    cmocka_unit_test(free_leaves_a_host_loop_clean_with_io_in_flight),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) return 1;
  return failed;
}
