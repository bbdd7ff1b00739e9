/*
** Trace: step executions written as OpenTelemetry spans (`sluice run
** --trace FILE`).
**
** The file is JSON lines: one span per step execution, each a JSON object
** on a line of its own, with the field names and encodings of OTLP/JSON's
** Span message, so a collector's file receiver or a few lines of jq can
** turn it into an OTLP request:
**
**   {"traceId":"<32 hex>","spanId":"<16 hex>","parentSpanId":"<16 hex>",
**    "name":"fetch","kind":"SPAN_KIND_INTERNAL",
**    "startTimeUnixNano":"1714564800000000000",
**    "endTimeUnixNano":"1714564800012000000",
**    "attributes":[{"key":"sluice.kind","value":{"stringValue":"step"}},...],
**    "status":{"code":"STATUS_CODE_ERROR","message":"took too long"}}
**
** As OTLP/JSON writes 64-bit integers (the proto3 JSON mapping), times and
** intValue attributes are decimal strings; doubleValue is a JSON number
** ("NaN", "Infinity" or "-Infinity" as strings). parentSpanId is absent on
** a root span; status has a message only with STATUS_CODE_ERROR.
**
** Ids are derived, not random: the traceId from the run id (every span of
** a run, and of the same run resumed, shares it) and the spanId from the
** run id and the execution's index in the run's history, so a child names
** its parent's spanId from the parent's index alone and no id table is
** kept. Neither is ever all zeros, which OTLP reserves for "no id".
**
** Attributes: sluice.run_id, sluice.kind, sluice.attempts and
** sluice.cached on every span; sluice.key when the parent gave the
** execution a key; sluice.usage.cost (double), sluice.usage.tokens and
** sluice.usage.requests (int) when it reported usage; sluice.fallback when
** a fallback ran; sluice.error.kind, sluice.error.message and
** sluice.error.where when it failed (each when not NULL).
**
** Strings are escaped for JSON; bytes that are not valid UTF-8 become
** U+FFFD, so every line is valid JSON whatever a step's error said.
**
** Writes are buffered (a FILE* opened for appending); the file holds every
** span only once sl_trace_close has flushed it. A trace belongs to one
** thread. Functions return 0 or a negative SL_TRACE_E* code.
*/
#ifndef SL_TRACE_H
#define SL_TRACE_H

#include <stddef.h>
#include <stdint.h>


/* Error codes, with the values of their SL_E* and SL_STORE_E* namesakes. */
#define SL_TRACE_OK       0
#define SL_TRACE_EINVAL (-1)   /* a bad argument */
#define SL_TRACE_ENOMEM (-2)
#define SL_TRACE_EIO    (-23)  /* cannot open or write the file */

/* A log record of a span, written as one of its events: the message is
   the event's name, the level and the fields (JSON text) its attributes
   log.level and log.fields. */
typedef struct sl_trace_event {
  const struct sl_trace_event *next;
  int64_t time_ns;            /* Unix time in nanoseconds */
  const char *level;          /* "debug", "info", "warn" or "error" */
  const char *message;
  size_t mlen;
  const char *fields;         /* JSON text, or NULL */
} sl_trace_event;

/* Lengths of the ids as hex text, without the NUL. */
#define SL_TRACE_TRACEID_HEX 32
#define SL_TRACE_SPANID_HEX  16

typedef struct sl_trace sl_trace;

/*
** One step execution. Strings may be NULL where noted; they are only read
** during sl_trace_span.
*/
typedef struct sl_trace_span_info {
  const char *run_id;         /* required */
  int index;                  /* the execution's index in the run's
                                 history (0 for the root), >= 0 */
  int parent;                 /* the parent's index, -1 for a root */
  const char *name;           /* the step's name; NULL writes "" */
  const char *kind;           /* the step's kind, or NULL */
  const char *key;            /* the key its parent gave it, or NULL */
  int64_t start_ns, end_ns;   /* Unix time in nanoseconds; an end before
                                 the start is written as the start */
  int attempts;
  int cached;                 /* 1 if served from the cache */
  int has_usage;              /* 1 to write the three usage attributes */
  double cost;
  int64_t tokens, requests;
  const char *fallback;       /* why a fallback ran, or NULL */
  const char *err_kind, *err_msg, *err_where;   /* NULL unless it failed;
                                 any one set makes the status an error */
  const sl_trace_event *events;   /* its log records, oldest first, or NULL */
  int dropped_events;         /* how many more it had than it kept */
} sl_trace_span_info;


/*
** Opens path for appending, creating the file if it is missing (not its
** directory). On success *out is the trace; on failure *out is NULL,
** returns SL_TRACE_EIO (or ENOMEM) and err (errlen bytes, may be NULL/0)
** reads e.g. "out/trace.jsonl: cannot open trace file: No such file or
** directory".
*/
int sl_trace_open (const char *path, sl_trace **out, char *err,
                   size_t errlen);

/*
** Writes one span. Returns 0; SL_TRACE_EINVAL, writing nothing, for a NULL
** run id, a negative index or a parent index below -1; SL_TRACE_EIO when
** the write fails, and from then on for every span (sl_trace_errmsg says
** why).
*/
int sl_trace_span (sl_trace *t, const sl_trace_span_info *s);

/* Each line a span makes, also handed to fn (an exporter), as written. */
typedef void (*sl_trace_sink_fn) (void *ud, const char *line, size_t len);
void sl_trace_set_sink (sl_trace *t, sl_trace_sink_fn fn, void *ud);

/* A trace with no file, whose spans only go to a sink set on it. */
int sl_trace_open_sink (sl_trace **out);

/* Writes out what is buffered (a run ended: its spans are readable now).
   Returns 0, or SL_TRACE_EIO as sl_trace_span does. t may be NULL. */
int sl_trace_flush (sl_trace *t);

/* The message of the last failure on t ("" if none). */
const char *sl_trace_errmsg (const sl_trace *t);

/* The path the trace was opened with. */
const char *sl_trace_path (const sl_trace *t);

/*
** Flushes what is buffered, closes the file and frees t, even when the
** flush fails. Returns 0, or SL_TRACE_EIO with err (may be NULL) reading
** e.g. "trace.jsonl: cannot write trace file: No space left on device"
** when the flush, the close or an earlier write failed. t may be NULL.
*/
int sl_trace_close (sl_trace *t, char *err, size_t errlen);

/* The traceId of a run, as 32 lowercase hex digits and a NUL. */
void sl_trace_trace_id (const char *run_id,
                        char out[SL_TRACE_TRACEID_HEX + 1]);

/* The spanId of the execution at index in a run, as 16 lowercase hex
   digits and a NUL. */
void sl_trace_span_id (const char *run_id, int index,
                       char out[SL_TRACE_SPANID_HEX + 1]);

#endif
