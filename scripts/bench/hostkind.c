/*
** Host kind benchmark: the cost of one host-kind step round trip (the
** engine hands the step's input to the host as JSON, the host completes
** it), against a Lua step doing the same. Prints figures only.
**
**   cc -O2 -Iengine/include scripts/bench/hostkind.c -Lbuild \
**      -Wl,-rpath,$PWD/build -lsluice -o /tmp/bench_hostkind
**   SLUICE_LUA_DIR=$PWD/lua /tmp/bench_hostkind
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void echo(sl_step_handle *h, const char *input, void *ud) {
  (void)ud;
  sl_step_complete(h, input);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(void) {
  enum { STEPS = 1000, RUNS = 50, REPS = 7 };
  char path[] = "/tmp/bench-hostkind-XXXXXX.lua";
  int fd = mkstemps(path, 4);
  FILE *f = fdopen(fd, "w");
  fprintf(f, "local sl = require 'sluice'\nlocal host, lua = {}, {}\n"
             "for i = 1, %d do\n"
             "  host[i] = sl.step{ name = 'h' .. i, kind = 'echo' }\n"
             "  lua[i] = sl.step{ name = 'l' .. i, run = function(x) return x end }\n"
             "end\n"
             "return { host = sl.pipeline{ name = 'host', table.unpack(host) },\n"
             "         lua = sl.pipeline{ name = 'lua', table.unpack(lua) } }\n", STEPS);
  fclose(f);
  sl_engine *e;
  if (sl_engine_new(&e, NULL) != SL_OK || sl_engine_kind(e, "echo", echo, NULL) != SL_OK ||
      sl_engine_load(e, path) != SL_OK) {
    fprintf(stderr, "%s\n", sl_engine_errmsg(e));
    return 1;
  }
  const char *names[2] = {"host", "lua"};
  double med[2];
  for (int k = 0; k < 2; k++) {
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
      double t0 = now();
      for (int i = 0; i < RUNS; i++) {
        sl_run *run;
        if (sl_run_start(e, names[k], "{\"n\":1}", &run) != SL_OK ||
            sl_run_wait(run) != SL_RUN_COMPLETED) {
          fprintf(stderr, "%s\n", sl_engine_errmsg(e));
          return 1;
        }
        sl_run_free(run);
      }
      t[r] = (now() - t0) / (RUNS * (STEPS + 1.0)) * 1e9;
    }
    qsort(t, REPS, sizeof *t, cmp);
    med[k] = t[REPS / 2];
  }
  printf("a pipeline of %d steps, %d runs, median of %d\n", STEPS, RUNS, REPS);
  printf("  Lua step (returns its input)      %7.0f ns/step\n", med[1]);
  printf("  host kind (input to JSON, host completes with it)  %7.0f ns/step  (%.1fx)\n",
         med[0], med[0] / med[1]);
  sl_engine_free(e);
  remove(path);
  return 0;
}
