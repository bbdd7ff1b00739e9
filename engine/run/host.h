/*
** The runs layer's context: a core, and what an engine keeps to start runs
** of the pipelines it loaded, reload them, and wait on them.
*/
#ifndef SL_HOST_H
#define SL_HOST_H

#include "core.h"

typedef struct sl_watch sl_watch;

/* A retention policy: the ended runs it applies to are deleted once older
   than ms (0: any age), beyond the keep newest (0: none kept); last_ms:
   when it last pruned. */
typedef struct sl_retain { int64_t ms, keep, last_ms; } sl_retain;

typedef struct sl_otlp sl_otlp;

typedef struct sl_host {
  sl_core core;              /* first */
  int ref_box;               /* the engine's Lua userdata (its box) */
  int ref_pipelines;         /* pipelines of the last loaded file, by name */
  int ref_files;             /* the files the last load read */
  char *load_path;           /* the file last loaded, for reload */
  sl_watch *watch;           /* what a watch watches, or NULL */
  int owns_loop;             /* the loop is the engine's own: it may block */
  int in_uv_run;             /* inside uv_run on the engine's own loop */
  int blocking;              /* a wait is driving the loop for a run */
  unsigned char last_id[16]; /* the bytes of the last run id it made */
  sl_retain retain;          /* the engine's retention policy, for every run */
  sl_otlp *otlp;             /* the engine's span exporter, or NULL */
} sl_host;

/* The host a core belongs to. */
static inline sl_host *sl_host_of(sl_core *c) { return (sl_host *)c; }

/* Advances the engine without blocking: one turn of its own loop (none on
   a host's loop), then what is queued. Returns the active runs. */
int sl_host_poll(sl_host *h);

#endif
