/*
** Step history: one record per step execution of a run, kept as C structs so
** recording costs a few stores on the hot path; turned into Lua tables only
** when a result is asked for.
*/
#ifndef SL_HISTORY_H
#define SL_HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>

#include "quota.h"
#include "trace.h"

struct sl_buf;

enum { SL_STEP_RUNNING, SL_STEP_COMPLETED, SL_STEP_FAILED, SL_STEP_CANCELLED };

/* A step's name and kind, made once with its plan and shared by every
   record of it in every history: freed when the last holder lets go, so a
   history may outlive the step (and the engine) it recorded. */
typedef struct sl_hist_label {
  int refs;
  size_t nlen, klen;
  const char *name, *kind;            /* into text */
  char text[];
} sl_hist_label;

/* A label with one holder, or NULL when memory is exhausted. */
sl_hist_label *sl_hist_label_new(const char *name, size_t nlen, const char *kind,
                                 size_t klen);

/* Lets go of a hold on l (NULL is ignored). */
void sl_hist_label_drop(sl_hist_label *l);

typedef struct sl_hist_rec {
  sl_hist_label *label;               /* held by the record */
  const char *name, *kind;            /* the label's */
  const char *err_kind, *err_msg, *err_where, *err_step;  /* NULL unless it failed */
  uint64_t t0, t1;
  const char *fallback;               /* why its fallback ran, or NULL */
  const char *path;                   /* its path in the tree ("1/3/2"), in durable runs */
  const char *key;                    /* the key the parent gave it (a map item, a branch), or NULL */
  int parent;                         /* index of the parent's record, -1 for the root */
  int ordinal;                        /* 1-based: the parent's how-many-th child this is */
  int attempts;
  sl_usage usage;                     /* what it reported */
  sl_trace_event *logs, *logs_tail;   /* its ctx:log records, oldest first */
  int nlogs;                          /* how many it keeps */
  int logs_dropped;                   /* and how many more it had */
  unsigned char status, cached, has_usage, restored;
} sl_hist_rec;

/* The log records one execution keeps (for its span and its checkpoint),
   at most; later ones go to stderr only and are counted. */
#define SL_HIST_MAX_LOGS 32

typedef struct sl_hist_chunk sl_hist_chunk;

typedef struct sl_history {
  sl_hist_rec *recs;
  int n, cap;
  sl_hist_chunk *arena;       /* keys, paths and error texts */
} sl_history;

void sl_hist_init(sl_history *h);

/* Adds a log record to record i: its time (Unix ns), level (a static
   string), message (mlen bytes) and fields (JSON text, or NULL), copied.
   Returns 0, or -1 when the record holds SL_HIST_MAX_LOGS already (the
   record is counted as dropped) or memory ran out. */
int sl_hist_add_log(sl_history *h, int i, int64_t time_ns, const char *level,
                    const char *msg, size_t mlen, const char *fields);

/* Appends record r's log records to b as a JSON array of
   {time_ms, level, message[, fields]} (plus {dropped = n} when some were
   not kept); returns 0 or -1 (memory). A record without logs adds
   nothing and returns 0. */
int sl_hist_logs_json(const sl_hist_rec *r, struct sl_buf *b);
void sl_hist_free(sl_history *h);

/* Makes room for n records, so a run as long as the last one of its
   pipeline never regrows its history. */
void sl_hist_reserve(sl_history *h, int n);

/* Appends a record of the step label names for an execution that starts
   at t0 (the record holds the label); returns its index, or -1 when memory
   is exhausted (the step still runs, unrecorded). */
int sl_hist_begin(sl_history *h, int parent, sl_hist_label *label, uint64_t t0);

/* Sets the key and ordinal of record i (key may be NULL). */
void sl_hist_set_key(sl_history *h, int i, const char *key, size_t klen, int ordinal);

/* Records that record i is on attempt n. */
void sl_hist_set_attempts(sl_history *h, int i, int n);

/* Records the usage record i reported so far. */
void sl_hist_set_usage(sl_history *h, int i, const sl_usage *u);

/* Sets record i's path in the tree. */
void sl_hist_set_path(sl_history *h, int i, const char *path);

/* Marks record i as restored from a checkpoint of an earlier attempt at
   the run (resume). */
void sl_hist_set_restored(sl_history *h, int i);

/* Marks record i as served from the cache. */
void sl_hist_set_cached(sl_history *h, int i);

/* Records why record i's fallback ran. */
void sl_hist_set_fallback(sl_history *h, int i, const char *why);

/* Closes record i with a final status. */
void sl_hist_end(sl_history *h, int i, int status, uint64_t t1);

/* Attaches an error to record i (copies the strings; any may be NULL).
   step names the step the error started in, which for a parent that failed
   because a child did is the child. */
void sl_hist_set_error(sl_history *h, int i, const char *kind,
                       const char *msg, const char *where, const char *step);

/* Pushes the history as an array of step tables ({name, kind, status,
   attempts, cached, ms, id, parent, index, key, error}), ids being 1-based
   positions and index the ordinal among its parent's children. */
void sl_hist_push(lua_State *L, const sl_history *h);

const char *sl_hist_status_name(int status);

#endif
