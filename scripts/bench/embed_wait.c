/*
** What a host's CPU does while a run waits: one run sleeps 1 s on a timer,
** driven once by a host that waits with poll(2) on sl_engine_fd for
** sl_engine_timeout ms between turns, and once by a host that calls
** sl_engine_poll in a loop (busy polling). Prints the host's CPU time
** (user + system, getrusage) and turns for each, and their ratio. Prints
** figures only; nothing here passes or fails.
**
** Build against a build of the library, then run from the source tree:
**
**   cc -O2 -Iengine/include scripts/bench/embed_wait.c \
**      -Lbuild -Wl,-rpath,$PWD/build -lsluice -o /tmp/bench_embed_wait
**   /tmp/bench_embed_wait [SECONDS]
**
** (or -lsluice_embed, the self-contained library: the figures are the same.)
*/
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "sluice.h"

static double cpu_ms(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3
         + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

/* Runs the sleeping pipeline once; fd_wait: wait on the descriptor, else
   spin on sl_engine_poll. Returns the host's CPU ms; *turns its calls
   of sl_engine_poll. */
static double drive(const char *file, int fd_wait, long *turns) {
  sl_engine *e;
  sl_run *r;
  if (sl_engine_new(&e, NULL) != SL_OK || sl_engine_load(e, file) != SL_OK
      || sl_run_start(e, NULL, NULL, &r) != SL_OK) {
    fprintf(stderr, "embed_wait: %s\n", sl_engine_errmsg(e));
    exit(1);
  }
  double start = cpu_ms();
  *turns = 0;
  for (;;) {
    (*turns)++;
    if (sl_engine_poll(e) == 0) break;
    if (fd_wait) {
      struct pollfd pfd = {sl_engine_fd(e), POLLIN, 0};
      poll(&pfd, 1, sl_engine_timeout(e));
    }
  }
  double spent = cpu_ms() - start;
  if (sl_run_status(r) != SL_RUN_COMPLETED) {
    fprintf(stderr, "embed_wait: the run did not complete\n");
    exit(1);
  }
  sl_run_free(r);
  sl_engine_free(e);
  return spent;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 1.0;
  char file[] = "/tmp/sluice-bench-embed-wait-XXXXXX";
  int fd = mkstemp(file);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f == NULL) return 1;
  fprintf(f, "local sl = require 'sluice'\n"
             "return sl.pipeline{ name = 'wait', sl.step{ name = 'wait',\n"
             "  run = function(_, ctx) ctx:sleep(%g) end } }\n", seconds);
  fclose(f);
  long fd_turns, busy_turns;
  double on_fd = drive(file, 1, &fd_turns);
  double busy = drive(file, 0, &busy_turns);
  remove(file);
  printf("a run waiting %g s on a timer, host CPU time:\n", seconds);
  printf("  waiting on sl_engine_fd/timeout: %9.3f ms  (%ld turns)\n", on_fd, fd_turns);
  printf("  busy polling sl_engine_poll:     %9.3f ms  (%ld turns)\n", busy, busy_turns);
  printf("  ratio busy / fd:                 %9.0fx\n", on_fd > 0 ? busy / on_fd : 0.0);
  return 0;
}
