/*
** A C host with an epoll loop of its own, which also serves its own
** descriptor (a timerfd that ticks every 50 ms, standing in for the host's
** sockets): it watches the engine's descriptor beside it and sleeps until
** either is readable or the engine's next timer is due. It never spins.
** Runs a pipeline file on JSON input and prints the result, then how many
** times the host woke and ticked.
**
**   host_epoll FILE [INPUT_JSON]
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <sluice.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: host_epoll FILE [INPUT_JSON]\n");
    return 2;
  }
  sl_engine *e;
  if (sl_engine_new(&e, NULL) != SL_OK) {
    fprintf(stderr, "host_epoll: %s\n", sl_engine_errmsg(NULL));
    return 1;
  }
  sl_run *run;
  if (sl_engine_load(e, argv[1]) != SL_OK ||
      sl_run_start(e, NULL, argc > 2 ? argv[2] : "null", &run) != SL_OK) {
    fprintf(stderr, "host_epoll: %s\n", sl_engine_errmsg(e));
    sl_engine_free(e);
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int tick = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  struct itimerspec every = {{0, 50000000}, {0, 50000000}};
  timerfd_settime(tick, 0, &every, NULL);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = sl_engine_fd(e)};
  epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev);
  ev.data.fd = tick;
  epoll_ctl(ep, EPOLL_CTL_ADD, tick, &ev);
  long wakeups = 0, ticks = 0;
  while (sl_engine_poll(e) > 0) {
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, sl_engine_timeout(e));
    wakeups++;
    for (int i = 0; i < n; i++) {
      if (got[i].data.fd != tick) continue;   /* the engine's: its poll handles it */
      uint64_t times;
      if (read(tick, &times, sizeof times) == sizeof times) ticks += (long)times;
    }
  }
  int status = sl_run_status(run);
  const char *json = sl_run_result_json(run);
  printf("%s\n", json ? json : "null");
  printf("host woke %ld times, ticked %ld times\n", wakeups, ticks);
  close(tick);
  close(ep);
  sl_run_free(run);
  sl_engine_free(e);
  return status == SL_RUN_COMPLETED ? 0 : 1;
}
