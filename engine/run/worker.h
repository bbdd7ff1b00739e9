/*
** Workers (worker.c): an engine that takes runs submitted to a queue in its
** store and executes them, as many at once as it is allowed, until it is
** stopped. Many workers, in one process each, on one machine or many, may
** share a store: the store's claim gives each run to one of them.
*/
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include <stdint.h>

#include "host.h"

typedef struct sl_worker_options {
  const char *queue;       /* the queue to take runs from; NULL: "default" */
  int concurrency;         /* runs executed at once; <= 0: 1 */
  int64_t poll_ms;         /* how often an idle worker looks for work;
                              <= 0: 200 */
  int64_t grace_ms;        /* once stopped, how long the runs it holds may
                              go on before they are handed back; < 0: 30 s */
  int until_idle;          /* 1: stop by itself once the queue has nothing
                              it can take and nothing runs */
  int64_t park_after_ms;   /* a run in a durable wait (ctx:sleep, a
                              person's timeout) longer than this is parked:
                              status waiting, its slot freed, claimed again
                              when due; 0: 5 s; < 0: never parked */
} sl_worker_options;

typedef struct sl_worker sl_worker;

/* What a worker did. */
typedef struct sl_worker_stats {
  int64_t claimed;         /* runs it took from the queue */
  int64_t ended;           /* of those, the ones that ended here (any status) */
  int64_t handed_back;     /* runs it gave back when it stopped */
  int64_t passed_over;     /* runs it put back for another worker (their
                              code version, a file it cannot load) */
  int running;             /* runs it executes now */
} sl_worker_stats;

/* Starts a worker on the host's loop (the host needs a store); it claims
   as soon as the loop runs. Returns NULL when memory runs out. */
sl_worker *sl_worker_start(sl_host *h, const sl_worker_options *o);

/* Stops claiming. The runs it holds go on for the grace period; those
   still running then are stopped as interrupted and go back to the queue,
   where another worker takes them from their last completed step. */
void sl_worker_stop(sl_worker *w);

/* Has it stopped, with nothing left running? */
int sl_worker_done(const sl_worker *w);

void sl_worker_get_stats(const sl_worker *w, sl_worker_stats *out);

/* Frees a worker that is done (its handles close on the loop). */
void sl_worker_free(sl_worker *w);

#endif
