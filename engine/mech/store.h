/*
** The store: durable runs, step checkpoints, human-in-the-loop waits and
** the persistent cache tier.
**
** The engine sees only the sl_store_* functions below. Behind them sits one
** backend, chosen by sl_store_open from the path it is given; the embedded
** SQLite file is the only one today, and a server backend (PostgreSQL) is
** added by writing another struct sl_store_ops, without touching the engine.
**
** Everything in and out is plain C: strings, integers, and JSON as text
** (the engine converts Lua values with value.c). The store never parses
** the JSON it keeps.
**
** Writes are batched. Every write joins one open transaction, and nothing
** is durable, nor visible to other processes, until sl_store_flush commits
** it (or the store does so by itself after sl_store_set_autoflush's count,
** or on close). A flush is all or nothing: after a crash the store holds
** exactly what the last successful flush committed. When a write or a flush
** fails in a way that ends the transaction (a full disk, an I/O error), the
** writes made since the last successful flush are discarded together and
** the message says so, so the store never keeps half a batch.
**
** A store handle belongs to one thread. Every function returns 0 or a
** negative SL_STORE_E* code; sl_store_errmsg gives the message of the last
** failure, which starts with the store's path and says what failed.
*/
#ifndef SL_STORE_H
#define SL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "value.h"


/* Error codes. The first three have the values of their SL_E* namesakes
   in sluice.h, so the engine can pass them on unchanged. */
#define SL_STORE_OK         0
#define SL_STORE_EINVAL    (-1)   /* bad argument, or a write the schema refuses */
#define SL_STORE_ENOMEM    (-2)
#define SL_STORE_ENOTFOUND (-5)   /* no such run, checkpoint, wait or live cache entry */
#define SL_STORE_EBUSY     (-20)  /* locked by another process past the busy timeout */
#define SL_STORE_ECORRUPT  (-21)  /* not a database, damaged, or not a sluice store */
#define SL_STORE_EFULL     (-22)  /* disk full, or the store reached max_bytes */
#define SL_STORE_EIO       (-23)  /* cannot open, read or write the file */
#define SL_STORE_EVERSION  (-24)  /* written by a newer sluice (unknown schema) */

#define SL_STORE_ECONFLICT (-25)  /* another owner holds the run, or the step
                                     is recorded as completed already */
#define SL_STORE_EREADONLY (-26)  /* a write to a store opened read-only, or
                                     on a read-only medium */
#define SL_STORE_EOLDER    (-27)  /* opened read-only, and written by an older
                                     sluice: a writer brings it up to date */

/* Length of a cache key, in bytes (a 128-bit hash). */
#define SL_STORE_KEYLEN 16

typedef struct sl_store sl_store;

typedef struct sl_store_options {
  int busy_timeout_ms;   /* how long to wait for another process's lock;
                            0 means the default, 5000 */
  int autoflush;         /* commit by itself after this many pending writes;
                            0: only sl_store_flush and close commit */
  int64_t max_bytes;     /* the file never grows past this (writes beyond
                            fail with EFULL); 0: no limit */
  int full_check;        /* 1: run the integrity check (PRAGMA quick_check,
                            which reads the whole file) on open; else only
                            the header is checked */
  int reader;            /* 1: the connection a writer works beside: cache
                            reads count no hits and leave expired entries
                            (the writer does both), so it never writes on
                            its own */
  int read_only;         /* 1: open an existing store for reading only: it
                            is never created (ENOTFOUND when absent) nor
                            migrated, and writes fail with EREADONLY */
} sl_store_options;


/*
** One run. As an argument every string but id, pipeline and status may be
** NULL; as a result, strings are NULL where nothing was stored.
*/
typedef struct sl_store_run {
  const char *id;          /* the run id; ids sort by start time */
  const char *pipeline;    /* the root step's name */
  const char *file;        /* the pipeline file, or NULL */
  const char *def_hash;    /* hash of the pipeline's definition, or NULL */
  const char *status;      /* "queued", "running", "waiting" (parked in a
                              durable wait until due_ms), "paused",
                              "completed", "failed", "cancelled" (ended for
                              good) or "interrupted" (stopped, resumable) */
  const char *input, *output, *error, *usage, *budget;   /* JSON text */
  const char *options;     /* JSON text: the options the run was started
                              with (budget, memory_limit, trace), or NULL */
  int64_t started_ms;      /* Unix time, milliseconds */
  int64_t ended_ms;        /* Unix time, milliseconds; 0 while not ended */
  const char *owner;       /* the process executing it ("host:pid:start"),
                              or NULL when none does */
  int64_t lease_ms;        /* Unix ms its owner's lease runs to; 0: none */
  int64_t epoch;           /* how many owners it has had: a write names the
                              epoch it was made under, and one from an
                              earlier owner is refused */
  const char *queue;       /* the queue it was submitted to (workers take
                              it from there), or NULL for a run started in
                              its own process */
  const char *waiting_for; /* why a queued run is not being executed (a
                              worker with its code version), or NULL */
  int64_t due_ms;          /* a waiting (parked) or paused run: when its
                              first wait is due, Unix ms, and a worker of
                              its queue claims it; 0: none */
} sl_store_run;

typedef struct sl_store_run_filter {
  const char *status;      /* only runs with this status, or NULL for all */
  const char *pipeline;    /* only runs of this pipeline, or NULL for all */
  int64_t limit;           /* at most this many; 0 for no limit */
  int64_t offset;          /* after skipping this many */
  const char *before;      /* only runs older than this id (paging), or NULL */
  const char *queue;       /* only runs submitted to this queue, or NULL */
  const char *text;        /* only runs whose id, pipeline, error or inline
                              input or output holds this text (ignoring
                              ASCII case), or NULL */
} sl_store_run_filter;

/*
** One step execution. path names it in the run's tree by ordinals: "1" is
** the root, "1/3" the root's third child, "1/3/2" that child's second.
*/
typedef struct sl_store_checkpoint {
  const char *run_id, *path;
  const char *owner;       /* as an argument: the writer's owner id and */
  int64_t epoch;           /* epoch, checked against the run's (NULL owner:
                              unchecked); in results, the epoch it was
                              recorded under (0 if the store did not say) */
  const char *parent;      /* the parent's path, NULL for the root */
  const char *name, *kind;
  const char *key;         /* the key its parent gave it (a map item, a
                              branch), or NULL */
  const char *status;      /* as the history names it: "running",
                              "completed", "failed", "cancelled", ... */
  int attempts;
  int cached;              /* 1 if its output came from the cache */
  const char *output, *state, *usage, *error;   /* JSON text, or NULL */
  const char *changes;     /* JSON text: what the step changed in the run's
                              state ({set, del, replace}); state holds the
                              whole state instead in stores written before
                              changes were recorded */
  const char *logs;        /* JSON text: its ctx:log records, an array of
                              {time_ms, level, message[, fields]}, or NULL */
  const char *input;       /* JSON text: what it was given, or NULL (not
                              recorded by stores written before inputs were) */
  int64_t t0, t1;          /* start and end on the engine's clock, in ns;
                              stored as given */
} sl_store_checkpoint;

/* A step waiting for a person (sl.human). */
typedef struct sl_store_wait {
  const char *run_id, *path;   /* the waiting step's checkpoint path */
  const char *message;         /* what to ask, or NULL */
  const char *schema;          /* JSON text, or NULL */
  const char *answer;          /* JSON text; NULL until answered */
  int64_t created_ms;
} sl_store_wait;

typedef struct sl_store_cache_totals {
  int64_t entries, bytes, hits;
} sl_store_cache_totals;


/*
** Listing callbacks. The record and its strings are valid only during the
** call. A callback returns 0 to go on; any other value stops the listing,
** which then returns that value. A callback may call other store
** functions, but not start the same listing again.
*/
typedef int (*sl_store_run_cb) (void *ud, const sl_store_run *r);
typedef int (*sl_store_checkpoint_cb) (void *ud, const sl_store_checkpoint *c);
typedef int (*sl_store_wait_cb) (void *ud, const sl_store_wait *w);
typedef int (*sl_store_cache_step_cb) (void *ud, const char *step,
                                       const sl_store_cache_totals *st);


/*
** {======================================================
** Opening and committing
** =======================================================
*/

/*
** Opens the store at path; opts may be NULL. ":memory:" is a store in
** memory that lasts until it is closed. Any other path is an SQLite file,
** created with its parent directories when missing, and brought to the
** current schema: migrations that have not run yet run on open, all in one
** transaction, so an open that fails leaves the file as it was.
** On success *out is the store; on failure *out is NULL and err (errlen
** bytes, may be NULL/0) holds a message naming the file, e.g.
** ".sluice/state.db: is not a sluice store or is damaged (file is not a
** database)". Fails with ECORRUPT (garbage, a failed quick_check, another
** application's database), EVERSION, EBUSY ("locked"), EIO.
*/
int sl_store_open (sl_store **out, const char *path,
                   const sl_store_options *opts, char *err, size_t errlen);

/*
** Commits the pending writes, then closes the store and frees it, even
** when that commit fails. Returns the commit's result; on failure err holds
** the message (err may be NULL). s may be NULL.
*/
int sl_store_close (sl_store *s, char *err, size_t errlen);

/*
** Commits every pending write, making it durable and visible to other
** processes. Costs one WAL commit; returns at once when nothing is pending.
** On failure the pending writes are discarded (see the top of this file).
*/
int sl_store_flush (sl_store *s);

/* Makes the store commit by itself once max_pending writes are pending;
   0 turns that off. */
int sl_store_set_autoflush (sl_store *s, int max_pending);

/* The number of writes made since the last commit. */
int sl_store_pending (const sl_store *s);

/* The message of the last failure on s ("" if none). */
const char *sl_store_errmsg (const sl_store *s);

/* The store's path as it was opened. */
const char *sl_store_path (const sl_store *s);

/* }====================================================== */


/*
** {======================================================
** Runs
** =======================================================
*/

/* Records a new run (every field of r). EINVAL if the id exists already
   or the status is not one of those sl_store_run lists. */
int sl_store_run_begin (sl_store *s, const sl_store_run *r);

/*
** Sets a run's status, output, error, usage and end time, all together: a
** NULL string stores NULL, ended_ms 0 stores "not ended" (as when a paused
** run is resumed). ENOTFOUND if there is no such run.
*/
int sl_store_run_update (sl_store *s, const char *id, const char *status,
                         const char *output, const char *error,
                         const char *usage, int64_t ended_ms);

/* Reads a run. *out is one allocation, freed with sl_store_run_free.
   ENOTFOUND if there is no such run (*out is then NULL). */
int sl_store_run_get (sl_store *s, const char *id, sl_store_run **out);

void sl_store_run_free (sl_store_run *r);

/* Calls cb for each run that passes the filter (f may be NULL), newest
   first. */
int sl_store_run_list (sl_store *s, const sl_store_run_filter *f,
                       sl_store_run_cb cb, void *ud);

/*
** A run's record as one read gives it, for a resume to restore from: each
** step's latest checkpoint (a completed one is kept over later ones), by
** path, and the run's waits. Read once, after the run was claimed, so it
** holds everything the run recorded; the resumed run owns it.
*/
typedef struct sl_store_replay sl_store_replay;

/* Reads run_id's checkpoints and waits into *out; 0, or a store error. */
int sl_store_replay_read (sl_store *s, const char *run_id, sl_store_replay **out);

/* The checkpoint of path, or NULL; valid as long as rp. */
const sl_store_checkpoint *sl_store_replay_step (const sl_store_replay *rp, const char *path);

/* The run's waits, as sl_store_wait_list gives them; valid as long as rp. */
int sl_store_replay_nwaits (const sl_store_replay *rp);
const sl_store_wait *sl_store_replay_wait (const sl_store_replay *rp, int i);

void sl_store_replay_free (sl_store_replay *rp);

/* For backends that list a run's records from a journal: an empty replay,
   a record kept in it (a copy; a later record of a path replaces an earlier
   one in its place, unless that one completed; 0 or ENOMEM), and its steps
   in the order their paths first came. */
sl_store_replay *sl_store_replay_new (void);
int sl_store_replay_keep (sl_store_replay *rp, const sl_store_checkpoint *c);
int sl_store_replay_nsteps (const sl_store_replay *rp);
const sl_store_checkpoint *sl_store_replay_step_at (const sl_store_replay *rp, int i);

/* Is every call to s a round trip to a server? */
int sl_store_remote (const sl_store *s);

/* Does path name a store on a server (a postgresql:// URL) rather than a
   file? */
int sl_store_is_server (const char *path);

/* Deletes a run with its checkpoints and waits. ENOTFOUND if there is no
   such run. */
int sl_store_run_delete (sl_store *s, const char *id);

/*
** Ownership. A run's owner holds a lease it renews while it executes the
** run; every owner change bumps the run's epoch, and writes made under an
** older epoch are refused (ECONFLICT), so two owners never both record.
*/

/* Makes owner the owner of run id until lease_ms, as epoch expect + 1 and
   with status, if the run is still at epoch expect (compare and set): of
   two processes claiming the same run, one wins and the other gets
   ECONFLICT. Commits at once. */
int sl_store_run_claim (sl_store *s, const char *id, const char *owner,
                        int64_t lease_ms, int64_t expect, const char *status);

/*
** The queue. A submitted run is begun with status "queued" and a queue;
** a worker claims the oldest one it may take: queued, or running under an
** owner that is gone (its lease ran out, or its process on this host
** died). The claim makes owner its owner at the next epoch, status
** "running", in one transaction, so of workers claiming at once each gets
** a different run. Runs whose id is in skip (nskip of them) are passed
** over (a worker that cannot run them). *out is the claimed run (freed
** with sl_store_run_free); ENOTFOUND when there is none to take.
*/
int sl_store_run_claim_next (sl_store *s, const char *queue, const char *owner,
                             int64_t lease_ms, int64_t now_ms,
                             const char *const *skip, int nskip,
                             sl_store_run **out);

/* As sl_store_run_claim_next, for up to max runs at once (one transaction,
   and on a server one round trip for the queued ones): out[0..*nout-1] are
   the runs claimed, oldest first; ENOTFOUND when there was none. */
int sl_store_run_claim_some (sl_store *s, const char *queue, const char *owner,
                             int64_t lease_ms, int64_t now_ms,
                             const char *const *skip, int nskip, int max,
                             sl_store_run **out, int *nout);

/* Puts run id, owned by owner at epoch, back in its queue for another
   worker: status "queued", no owner, and waiting_for (NULL: none) saying
   what it waits for. ECONFLICT when the run has moved on. Commits at
   once. */
int sl_store_run_requeue (sl_store *s, const char *id, const char *owner,
                          int64_t epoch, const char *waiting_for);

/* How a worker learns, without asking, that a queue may have new work:
   a descriptor that turns readable (fd >= 0; then sl_store_watch_clear),
   or a file that changes (path, watched for changes), or neither (the
   worker looks on its own, every poll interval). */
typedef struct sl_store_watch {
  int fd;                  /* -1: none */
  char path[4096];         /* "": none */
} sl_store_watch;

/* Fills *out for queue; 0, or a store error (then *out says none). */
int sl_store_watch_queue (sl_store *s, const char *queue, sl_store_watch *out);

/* Takes what made the descriptor readable; returns 1 when it said the
   queue may have new work, 0 when not, or a negative store error (the
   connection was lost: watch again). */
int sl_store_watch_clear (sl_store *s);

/* Extends owner's lease on run id to lease_ms; ECONFLICT when the run has
   another owner or epoch now. */
int sl_store_run_renew (sl_store *s, const char *id, const char *owner,
                        int64_t epoch, int64_t lease_ms);

/* As sl_store_run_update, as owner at epoch (ECONFLICT when the run has
   moved on to another owner), and letting go of the ownership when release
   is 1 (the run ended or stopped). */
int sl_store_run_finish (sl_store *s, const char *id, const char *owner,
                         int64_t epoch, int release, const char *status,
                         const char *output, const char *error,
                         const char *usage, int64_t ended_ms);

/* Deletes the runs that match: with status (NULL: any ended status;
   running runs are never deleted), of pipeline (NULL: any), beyond the
   keep newest of those (0: none kept), that ended before older_than_ms
   (0: any age); and the values only they referred to. *removed (may be NULL)
   counts the runs. Commits at once. */
int sl_store_prune (sl_store *s, int64_t older_than_ms, const char *status,
                    int64_t keep, const char *pipeline, int64_t *removed);

/* What a store holds, by kind. */
typedef struct sl_store_stats {
  int64_t runs, checkpoints, waits, values, cache_entries;
  int64_t run_bytes, checkpoint_bytes, value_bytes, cache_bytes, file_bytes;
} sl_store_stats;

int sl_store_get_stats (sl_store *s, sl_store_stats *out);

/* Checks every page of the store (PRAGMA integrity_check); ECORRUPT with
   what is damaged in the message. */
int sl_store_check (sl_store *s);

/* Runs sl_store_check once per crash: when runs are held by owners that
   are gone (sl_owner_alive) and the last such check did not see all of
   them. *checked (may be NULL) says whether it ran. Commits at once; for a
   writer, with nothing pending. */
int sl_store_check_after_crash (sl_store *s, int *checked);

/* Gives the space of deleted rows back to the file system (VACUUM). */
int sl_store_vacuum (sl_store *s);

/* }====================================================== */


/*
** {======================================================
** Checkpoints
** =======================================================
*/

/*
** Records a step execution, replacing the record at the same (run_id,
** path). A replaced record keeps its place in sl_store_checkpoint_list.
** EINVAL if there is no such run. This is the hot path: a few
** microseconds, no disk access until the next commit.
*/
int sl_store_checkpoint_put (sl_store *s, const sl_store_checkpoint *c);

/* Reads one checkpoint into one allocation, freed with
   sl_store_checkpoint_free. ENOTFOUND if there is none (*out is NULL). */
int sl_store_checkpoint_get (sl_store *s, const char *run_id,
                             const char *path, sl_store_checkpoint **out);

void sl_store_checkpoint_free (sl_store_checkpoint *c);

/* Calls cb for each checkpoint of the run, in the order they were first
   put. A run without checkpoints (or no run) gives no call. */
int sl_store_checkpoint_list (sl_store *s, const char *run_id,
                              sl_store_checkpoint_cb cb, void *ud);

/* }====================================================== */


/*
** {======================================================
** Waits (a run paused for a person's answer)
** =======================================================
*/

/* Records a wait, replacing the one at the same (run_id, path), answer
   included. EINVAL if there is no such run. */
int sl_store_wait_put (sl_store *s, const sl_store_wait *w);

/* Calls cb for each wait of the run, oldest first. */
int sl_store_wait_list (sl_store *s, const char *run_id,
                        sl_store_wait_cb cb, void *ud);

/* Stores the answer (JSON text) of a wait, replacing an earlier answer.
   ENOTFOUND if there is no such wait. */
int sl_store_wait_answer (sl_store *s, const char *run_id, const char *path,
                          const char *answer);

/* Removes the run's waits; *removed (may be NULL) is how many. */
int sl_store_wait_clear (sl_store *s, const char *run_id, int64_t *removed);

/* }====================================================== */


/*
** {======================================================
** Cache (shared by every run and process using the store)
** =======================================================
** Entries outlive the process that made them, so every time here
** (now_ms, expires_ms) is Unix time in milliseconds, not a monotonic
** clock. A key is 16 bytes the store does not interpret; the engine
** should write an sl_key (cache.h) high half first, each half big-endian,
** so that a file means the same on every machine.
*/

/*
** Looks up a key at time now_ms. On a hit appends the value to b and
** counts the hit; returns 0. ENOTFOUND on a miss. An entry that has
** expired (expires_ms <= now_ms) is a miss and is deleted. On failure b
** is as it was.
*/
int sl_store_cache_get (sl_store *s, const unsigned char key[SL_STORE_KEYLEN],
                        int64_t now_ms, sl_buf *b);

/* Stores value (JSON text) under key for step, replacing any entry there
   (its hit count restarts at 0). expires_ms 0 means never. */
int sl_store_cache_put (sl_store *s, const unsigned char key[SL_STORE_KEYLEN],
                        const char *step, const char *value,
                        int64_t now_ms, int64_t expires_ms);

/* Removes the entries of step, or every entry when step is NULL;
   *removed (may be NULL) is how many. */
int sl_store_cache_clear (sl_store *s, const char *step, int64_t *removed);

/* Counts a hit on the entry for key (none: nothing happens). */
int sl_store_cache_touch (sl_store *s, const unsigned char key[SL_STORE_KEYLEN]);

/* Removes the entries expired at now_ms; *removed (may be NULL) is how
   many. */
int sl_store_cache_purge (sl_store *s, int64_t now_ms, int64_t *removed);

/* Fills *total (may be NULL) with the number of entries, their value bytes
   and hits, and calls cb (may be NULL) with the same for each step, in
   step name order. */
int sl_store_cache_stats (sl_store *s, sl_store_cache_totals *total,
                          sl_store_cache_step_cb cb, void *ud);

/* }====================================================== */


/*
** {======================================================
** Backends
** =======================================================
** A backend embeds struct sl_store as the first member of its own handle
** and fills an ops table. The sl_store_* functions check their arguments
** and then call the op, so an op may assume non-NULL required arguments.
** Ops return 0 or an SL_STORE_E* code and set the message with
** sl_store_seterr.
*/

struct sl_store_ops {
  const char *name;                   /* "sqlite", "postgresql" */
  int remote;                         /* 1: every call is a round trip to a
                                         server, which a caller on an event
                                         loop makes on the writer's thread */
  /* Does this backend open paths like this one? */
  int (*accepts) (const char *path);
  int (*open) (sl_store **out, const char *path, const sl_store_options *o,
               char *err, size_t errlen);
  void (*close) (sl_store *s);        /* frees s, discarding what was not
                                         flushed (the front flushes first) */
  int (*flush) (sl_store *s);
  int (*run_begin) (sl_store *s, const sl_store_run *r);
  int (*run_update) (sl_store *s, const char *id, const char *status,
                     const char *output, const char *error, const char *usage,
                     int64_t ended_ms);
  int (*run_get) (sl_store *s, const char *id, sl_store_run **out);
  int (*run_list) (sl_store *s, const sl_store_run_filter *f,
                   sl_store_run_cb cb, void *ud);
  int (*run_delete) (sl_store *s, const char *id);
  int (*checkpoint_put) (sl_store *s, const sl_store_checkpoint *c);
  int (*checkpoint_get) (sl_store *s, const char *run_id, const char *path,
                         sl_store_checkpoint **out);
  int (*checkpoint_list) (sl_store *s, const char *run_id,
                          sl_store_checkpoint_cb cb, void *ud);
  int (*wait_put) (sl_store *s, const sl_store_wait *w);
  int (*wait_list) (sl_store *s, const char *run_id, sl_store_wait_cb cb,
                    void *ud);
  int (*wait_answer) (sl_store *s, const char *run_id, const char *path,
                      const char *answer);
  int (*wait_clear) (sl_store *s, const char *run_id, int64_t *removed);
  int (*cache_get) (sl_store *s, const unsigned char *key, int64_t now_ms,
                    sl_buf *b);
  int (*cache_put) (sl_store *s, const unsigned char *key, const char *step,
                    const char *value, int64_t now_ms, int64_t expires_ms);
  int (*cache_clear) (sl_store *s, const char *step, int64_t *removed);
  int (*cache_purge) (sl_store *s, int64_t now_ms, int64_t *removed);
  int (*cache_stats) (sl_store *s, sl_store_cache_totals *total,
                      sl_store_cache_step_cb cb, void *ud);
  int (*run_claim) (sl_store *s, const char *id, const char *owner,
                    int64_t lease_ms, int64_t expect, const char *status);
  int (*run_renew) (sl_store *s, const char *id, const char *owner,
                    int64_t epoch, int64_t lease_ms);
  int (*run_finish) (sl_store *s, const char *id, const char *owner,
                     int64_t epoch, int release, const char *status,
                     const char *output, const char *error,
                     const char *usage, int64_t ended_ms);
  int (*prune) (sl_store *s, int64_t older_than_ms, const char *status,
                int64_t keep, const char *pipeline, int64_t *removed);
  int (*stats) (sl_store *s, sl_store_stats *out);
  int (*check) (sl_store *s);
  int (*vacuum) (sl_store *s);
  int (*cache_touch) (sl_store *s, const unsigned char *key);
  int (*check_after_crash) (sl_store *s, int *checked);
  int (*run_claim_some) (sl_store *s, const char *queue, const char *owner,
                         int64_t lease_ms, int64_t now_ms, const char *const *skip,
                         int nskip, int max, sl_store_run **out, int *nout);
  int (*run_requeue) (sl_store *s, const char *id, const char *owner, int64_t epoch,
                      const char *waiting_for);
  int (*watch_queue) (sl_store *s, const char *queue, sl_store_watch *out);
  int (*watch_clear) (sl_store *s);
};

struct sl_store {
  const struct sl_store_ops *ops;
  char *path;              /* as opened; owned */
  int pending;             /* writes since the last commit */
  int autoflush;           /* commit after this many; 0: never by itself */
  char errmsg[512];
};

/* Sets s's message to "<path>: <formatted text>" and returns code. */
int sl_store_seterr (sl_store *s, int code, const char *fmt, ...);

/* Fills the base of a backend's handle; 0 or SL_STORE_ENOMEM. */
int sl_store_base_init (sl_store *s, const struct sl_store_ops *ops,
                        const char *path, const sl_store_options *o);

/* Frees what sl_store_base_init allocated. */
void sl_store_base_free (sl_store *s);

/* A record and its strings copied into one allocation (freed with
   sl_store_run_free / sl_store_checkpoint_free), or NULL when memory runs
   out: what a backend hands out of the rows it read. */
sl_store_run *sl_store_copy_run (const sl_store_run *r);
sl_store_checkpoint *sl_store_copy_checkpoint (const sl_store_checkpoint *c);

/* The backends (store_sqlite.c; store_pg.c when built with libpq). */
extern const struct sl_store_ops sl_store_sqlite_ops;
extern const struct sl_store_ops sl_store_pg_ops;

/* }====================================================== */

#endif
