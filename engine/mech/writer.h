/*
** The writer: the store's writes, made on a thread of their own so that
** the event loop never waits for the disk or for another process's lock.
**
** The loop hands each write over as a copy and goes on at once; the writer
** applies what has queued in one transaction and commits it (group
** commit), then tells the loop what happened, through a libuv async
** handle, in the order it happened: every write numbered up to n is
** committed, or was lost with its batch (a full disk, an I/O error), or one
** write was refused because its run has another owner now or its step is
** recorded already. The writer has its own connection to the store; the
** loop keeps one for reading.
**
** The writer commits when the loop asks it to (sl_writer_kick, before the
** loop waits, at a run's end) and whenever enough writes have queued, so a
** long burst of steps is recorded as it goes.
*/
#ifndef SL_WRITER_H
#define SL_WRITER_H

#include <stdint.h>
#include <uv.h>

#include "handles.h"
#include "store.h"

typedef struct sl_writer sl_writer;

enum {
  SL_WRITER_COMMITTED,   /* every write up to upto is durable */
  SL_WRITER_FAILED,      /* the writes up to upto not committed before were
                            lost together; msg says why */
  SL_WRITER_REFUSED      /* the write of run run_id was refused (ECONFLICT):
                            msg says who owns the run or that the step is
                            recorded already; the others went on */
};

typedef struct sl_writer_event {
  int kind;
  uint64_t upto;
  const char *run_id;    /* REFUSED */
  const char *msg;       /* FAILED, REFUSED */
} sl_writer_event;

/* Called on the loop's thread for each event, in order. */
typedef void (*sl_writer_cb)(void *ud, const sl_writer_event *ev);

/* Opens a writer on the store at path (its own connection, with opts) and
   starts its thread. Returns 0, or a store code with the message in err. */
int sl_writer_open(sl_writer **out, uv_loop_t *loop, sl_handles *handles,
                   const char *path, const sl_store_options *opts,
                   sl_writer_cb cb, void *ud, char *err, size_t errlen);

/* Commits what is queued, stops the thread and tells the loop the last
   events (cb is called from here); the writer is freed once its handle
   has closed. */
void sl_writer_close(sl_writer *w);

/* Asks for a commit of what is queued, now. */
void sl_writer_kick(sl_writer *w);

/* Waits until everything queued so far is committed or lost; returns 0, or
   the store's code with the message in err. Blocks the calling thread:
   for the few places that must know (closing, taking a run over). */
int sl_writer_sync(sl_writer *w, char *err, size_t errlen);

/* The writes. Each copies what it is given and returns the write's number
   (they grow by one), or 0 when memory ran out (nothing was queued). */
uint64_t sl_writer_run_begin(sl_writer *w, const sl_store_run *r);
uint64_t sl_writer_checkpoint(sl_writer *w, const sl_store_checkpoint *c);
uint64_t sl_writer_wait(sl_writer *w, const sl_store_wait *wt);
uint64_t sl_writer_renew(sl_writer *w, const char *run_id, const char *owner,
                         int64_t epoch, int64_t lease_ms);
uint64_t sl_writer_finish(sl_writer *w, const char *run_id, const char *owner,
                          int64_t epoch, int release, const char *status,
                          const char *output, const char *error,
                          const char *usage, int64_t ended_ms);
uint64_t sl_writer_cache_hit(sl_writer *w, const unsigned char key[SL_STORE_KEYLEN]);
/* Deletes, after the batch it joins commits, the ended runs (completed,
   failed or cancelled: never one that can be resumed) of pipeline (NULL:
   all) that ended before ended_before_ms (0: any age) and are not among
   the keep newest (0: none kept), with the values only they refer to. */
uint64_t sl_writer_prune(sl_writer *w, const char *pipeline, int64_t ended_before_ms,
                         int64_t keep);
uint64_t sl_writer_cache_put(sl_writer *w, const unsigned char key[SL_STORE_KEYLEN],
                             const char *step, const char *value, int64_t now_ms,
                             int64_t expires_ms);

/* Claims the next run of queue for owner (sl_store_run_claim_next) on the
   writer's thread, so the loop never waits for the store's lock or a round
   trip; skip holds nskip ids to pass over (copied). cb is called on the
   loop's thread once it is done, with the run claimed and its record (read
   once it was claimed: sl_store_replay_read), both the callee's to free,
   or NULL and rc: ENOTFOUND when there was none, or a store error with its
   message. Returns the write's number, or 0 when memory ran out (nothing
   was queued, cb is not called). */
typedef void (*sl_writer_claim_cb)(void *ud, sl_store_run *row, sl_store_replay *rp, int rc,
                                   const char *msg);
uint64_t sl_writer_claim(sl_writer *w, const char *queue, const char *owner, int64_t lease_ms,
                         int64_t now_ms, const char *const *skip, int nskip,
                         sl_writer_claim_cb cb, void *ud);

/* Looks key up in the persistent cache tier on the writer's thread (for a
   store whose calls are round trips), counting the hit there. cb is
   called on the loop's thread with rc 0 and the entry's text (len bytes,
   valid during the call), or ENOTFOUND (a miss, or expired) or a store
   error. Returns the write's number, or 0 when memory ran out (cb is not
   called). */
typedef void (*sl_writer_get_cb)(void *ud, int rc, const char *value, size_t len);
uint64_t sl_writer_cache_get(sl_writer *w, const unsigned char key[SL_STORE_KEYLEN],
                             int64_t now_ms, sl_writer_get_cb cb, void *ud);

/* The number of the last write queued, and of the last the writer has
   answered for (committed or lost). */
uint64_t sl_writer_queued(const sl_writer *w);
uint64_t sl_writer_answered(const sl_writer *w);

#endif
