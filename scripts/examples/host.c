/*
** A C host that embeds sluice: it makes an engine, loads a pipeline file,
** runs it on JSON input and prints the result as JSON.
**
**   host FILE [INPUT_JSON]
**
** With SLUICE_HOST_LOOP=1 it passes a libuv loop of its own and drives it,
** as a host with its own event loop does.
*/
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>
#include <sluice.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: host FILE [INPUT_JSON]\n");
    return 2;
  }
  const char *host_loop = getenv("SLUICE_HOST_LOOP");
  uv_loop_t loop;
  sl_engine_options opts = {0};
  if (host_loop && *host_loop == '1') {
    uv_loop_init(&loop);
    opts.loop = &loop;
  }
  sl_engine *e;
  if (sl_engine_new(&e, &opts) != SL_OK) {
    fprintf(stderr, "host: %s\n", sl_engine_errmsg(NULL));
    return 1;
  }
  if (sl_engine_load(e, argv[1]) != SL_OK) {
    fprintf(stderr, "host: %s\n", sl_engine_errmsg(e));
    sl_engine_free(e);
    return 2;
  }
  sl_run *run;
  if (sl_run_start(e, NULL, argc > 2 ? argv[2] : NULL, &run) != SL_OK) {
    fprintf(stderr, "host: %s\n", sl_engine_errmsg(e));
    sl_engine_free(e);
    return 2;
  }
  if (opts.loop) {
    /* The host drives its own loop; the engine only added handles to it. */
    while (sl_run_status(run) == SL_RUN_RUNNING) uv_run(&loop, UV_RUN_ONCE);
  } else {
    sl_run_wait(run);
  }
  printf("%s\n", sl_run_result_json(run));
  int status = sl_run_status(run);
  sl_run_free(run);
  sl_engine_free(e);
  if (opts.loop) {
    /* Tearing the engine down closed its handles; one more turn runs their
       close callbacks, after which the host's loop closes clean. */
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
      fprintf(stderr, "host: the loop still has handles\n");
      return 1;
    }
  }
  return status == SL_RUN_COMPLETED ? 0 : 1;
}
