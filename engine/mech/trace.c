/*
** Trace: step executions written as OpenTelemetry spans, one JSON object
** per line. See trace.h for the format and the contract.
*/

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sluice.h"   /* SLUICE_VERSION */

#include "trace.h"
#include "value.h"


struct sl_trace {
  FILE *f;                 /* the trace file, or NULL for a sink only */
  sl_trace_sink_fn sink;   /* also given each line, or NULL */
  void *sink_ud;
  char *path;              /* as opened; owned */
  sl_buf line;             /* the span being written, reused */
  int failed;              /* a write failed: the file's tail is unknown,
                              so every later span fails too */
  char errmsg[512];
};


/* Formats "<path>: <text>" into err (errlen bytes; err may be NULL). */
static void format_error (char *err, size_t errlen, const char *path,
                          const char *fmt, ...) {
  va_list ap;
  int n;
  if (err == NULL || errlen == 0)
    return;
  n = snprintf(err, errlen, "%s: ", path);
  if (n < 0 || (size_t)n >= errlen)
    return;
  va_start(ap, fmt);
  vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
  va_end(ap);
}


/*
** {======================================================
** Ids
** =======================================================
*/

static void put_hex64 (char *out, uint64_t v) {
  static const char hex[] = "0123456789abcdef";
  int i;
  for (i = 15; i >= 0; i--) {
    out[i] = hex[v & 0xf];
    v >>= 4;
  }
}


void sl_trace_trace_id (const char *run_id,
                        char out[SL_TRACE_TRACEID_HEX + 1]) {
  XXH128_hash_t h = XXH3_128bits(run_id, strlen(run_id));
  if (h.high64 == 0 && h.low64 == 0)
    h.low64 = 1;  /* all zeros means "no trace" in OTLP */
  put_hex64(out, h.high64);
  put_hex64(out + 16, h.low64);
  out[SL_TRACE_TRACEID_HEX] = '\0';
}


void sl_trace_span_id (const char *run_id, int index,
                       char out[SL_TRACE_SPANID_HEX + 1]) {
  uint64_t h = XXH3_64bits_withSeed(run_id, strlen(run_id),
                                    (XXH64_hash_t)(uint64_t)index);
  if (h == 0)
    h = 1;  /* all zeros means "no span" in OTLP */
  put_hex64(out, h);
  out[SL_TRACE_SPANID_HEX] = '\0';
}

/* }====================================================== */


/*
** {======================================================
** JSON text
** =======================================================
** Each helper appends to b and returns 0, or -1 when memory ran out;
** callers OR the results together and check once per span.
*/

static int put_lit (sl_buf *b, const char *s) {
  return sl_buf_add(b, s, strlen(s));
}


/* Writes s as a quoted JSON string, as every writer of sluice does. */
static int put_string (sl_buf *b, const char *s) {
  return sl_json_add_string(b, s, strlen(s));
}

static int put_string_len (sl_buf *b, const char *s, size_t len) {
  return sl_json_add_string(b, s ? s : "", s ? len : 0);
}


/* Writes an int64 as OTLP/JSON does: a string of decimal digits. */
static int put_int64 (sl_buf *b, int64_t v) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "\"%" PRId64 "\"", v);
  return put_lit(b, tmp);
}


/* Writes a double as a JSON number that reads back as the same double;
   NaN and the infinities as the strings proto3 JSON uses for them. */
static int put_double (sl_buf *b, double d) {
  char tmp[40];
  char *c;
  if (isnan(d))
    return put_lit(b, "\"NaN\"");
  if (isinf(d))
    return put_lit(b, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  snprintf(tmp, sizeof tmp, "%.15g", d);
  if (strtod(tmp, NULL) != d)
    snprintf(tmp, sizeof tmp, "%.17g", d);
  for (c = tmp; *c; c++)
    if (*c == ',')
      *c = '.';   /* a host's locale may use a decimal comma */
  return put_lit(b, tmp);
}


/* {"key":"<key>","value":{"<type>":  -- the caller writes the value and
   closes with "}}". A comma goes first unless this is the first. */
static int put_attr_start (sl_buf *b, int *first, const char *key,
                           const char *type) {
  int rc = 0;
  if (!*first)
    rc |= sl_buf_addc(b, ',');
  *first = 0;
  rc |= put_lit(b, "{\"key\":");
  rc |= put_string(b, key);
  rc |= put_lit(b, ",\"value\":{\"");
  rc |= put_lit(b, type);
  return rc | put_lit(b, "\":");
}

static int attr_string (sl_buf *b, int *first, const char *key,
                        const char *v) {
  if (v == NULL)
    return 0;
  return put_attr_start(b, first, key, "stringValue") | put_string(b, v)
         | put_lit(b, "}}");
}

static int attr_int (sl_buf *b, int *first, const char *key, int64_t v) {
  return put_attr_start(b, first, key, "intValue") | put_int64(b, v)
         | put_lit(b, "}}");
}

static int attr_bool (sl_buf *b, int *first, const char *key, int v) {
  return put_attr_start(b, first, key, "boolValue")
         | put_lit(b, v ? "true}}" : "false}}");
}

static int attr_double (sl_buf *b, int *first, const char *key, double v) {
  return put_attr_start(b, first, key, "doubleValue") | put_double(b, v)
         | put_lit(b, "}}");
}

/* }====================================================== */


/* Writes span s as one line of OTLP/JSON into b: a TracesData object
   (resourceSpans, with the service's name, then scopeSpans, then the one
   span), enums as integers, as the OTLP JSON encoding requires. Returns 0
   or -1 (memory). */
static int build_span (sl_buf *b, const sl_trace_span_info *s) {
  char trace_id[SL_TRACE_TRACEID_HEX + 1], span_id[SL_TRACE_SPANID_HEX + 1];
  int64_t end_ns = s->end_ns < s->start_ns ? s->start_ns : s->end_ns;
  int failed = s->err_kind || s->err_msg || s->err_where;
  int first = 1;
  int rc = 0;

  sl_trace_trace_id(s->run_id, trace_id);
  sl_trace_span_id(s->run_id, s->index, span_id);
  const char *service = getenv("OTEL_SERVICE_NAME");
  rc |= put_lit(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
  rc |= attr_string(b, &first, "service.name", service && *service ? service : "sluice");
  rc |= put_lit(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"sluice\",\"version\":\""
                SLUICE_VERSION "\"},\"spans\":[");
  first = 1;
  rc |= put_lit(b, "{\"traceId\":\"");
  rc |= put_lit(b, trace_id);
  rc |= put_lit(b, "\",\"spanId\":\"");
  rc |= put_lit(b, span_id);
  if (s->parent >= 0) {
    sl_trace_span_id(s->run_id, s->parent, span_id);
    rc |= put_lit(b, "\",\"parentSpanId\":\"");
    rc |= put_lit(b, span_id);
  }
  rc |= put_lit(b, "\",\"name\":");
  rc |= put_string(b, s->name ? s->name : "");
  rc |= put_lit(b, ",\"kind\":1,\"startTimeUnixNano\":");   /* SPAN_KIND_INTERNAL */
  rc |= put_int64(b, s->start_ns);
  rc |= put_lit(b, ",\"endTimeUnixNano\":");
  rc |= put_int64(b, end_ns);

  rc |= put_lit(b, ",\"attributes\":[");
  rc |= attr_string(b, &first, "sluice.run_id", s->run_id);
  rc |= attr_string(b, &first, "sluice.kind", s->kind);
  rc |= attr_string(b, &first, "sluice.key", s->key);
  rc |= attr_int(b, &first, "sluice.attempts", s->attempts);
  rc |= attr_bool(b, &first, "sluice.cached", s->cached);
  if (s->has_usage) {
    rc |= attr_double(b, &first, "sluice.usage.cost", s->cost);
    rc |= attr_int(b, &first, "sluice.usage.tokens", s->tokens);
    rc |= attr_int(b, &first, "sluice.usage.requests", s->requests);
  }
  rc |= attr_string(b, &first, "sluice.fallback", s->fallback);
  rc |= attr_string(b, &first, "sluice.error.kind", s->err_kind);
  rc |= attr_string(b, &first, "sluice.error.message", s->err_msg);
  rc |= attr_string(b, &first, "sluice.error.where", s->err_where);
  rc |= put_lit(b, "]");
  if (s->events != NULL) {
    rc |= put_lit(b, ",\"events\":[");
    for (const sl_trace_event *e = s->events; e; e = e->next) {
      int efirst = 1;
      rc |= put_lit(b, e == s->events ? "{\"timeUnixNano\":" : ",{\"timeUnixNano\":");
      rc |= put_int64(b, e->time_ns);
      rc |= put_lit(b, ",\"name\":");
      rc |= put_string_len(b, e->message, e->mlen);
      rc |= put_lit(b, ",\"attributes\":[");
      rc |= attr_string(b, &efirst, "log.level", e->level);
      rc |= attr_string(b, &efirst, "log.fields", e->fields);
      rc |= put_lit(b, "]}");
    }
    rc |= put_lit(b, "]");
  }
  if (s->dropped_events > 0) {
    char n[16];   /* a uint32: a JSON number */
    snprintf(n, sizeof n, "%d", s->dropped_events);
    rc |= put_lit(b, ",\"droppedEventsCount\":");
    rc |= put_lit(b, n);
  }

  if (failed) {
    const char *msg = s->err_msg ? s->err_msg : s->err_kind ? s->err_kind : "";
    rc |= put_lit(b, ",\"status\":{\"code\":2,\"message\":");   /* STATUS_CODE_ERROR */
    rc |= put_string(b, msg);
    rc |= put_lit(b, "}}]}]}]}\n");
  }
  else
    rc |= put_lit(b, ",\"status\":{\"code\":1}}]}]}]}\n");       /* STATUS_CODE_OK */
  return rc ? -1 : 0;
}


int sl_trace_open (const char *path, sl_trace **out, char *err,
                   size_t errlen) {
  sl_trace *t;
  if (err && errlen)
    err[0] = '\0';
  if (out == NULL)
    return SL_TRACE_EINVAL;
  *out = NULL;
  if (path == NULL) {
    format_error(err, errlen, "(null)", "no trace file given");
    return SL_TRACE_EINVAL;
  }
  t = calloc(1, sizeof *t);
  if (t == NULL || (t->path = strdup(path)) == NULL) {
    free(t);
    format_error(err, errlen, path, "out of memory");
    return SL_TRACE_ENOMEM;
  }
  /* Close on exec, so processes started by ctx:exec do not inherit the
     file; created private (0600), as the store is: spans hold inputs. */
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  t->f = fd >= 0 ? fdopen(fd, "a") : NULL;
  if (fd >= 0 && t->f == NULL) close(fd);
  if (t->f == NULL) {
    format_error(err, errlen, path, "cannot open trace file: %s",
                 strerror(errno));
    free(t->path);
    free(t);
    return SL_TRACE_EIO;
  }
  setvbuf(t->f, NULL, _IOFBF, 64 * 1024);
  sl_buf_init(&t->line);
  *out = t;
  return SL_TRACE_OK;
}


int sl_trace_span (sl_trace *t, const sl_trace_span_info *s) {
  if (t == NULL || s == NULL || s->run_id == NULL || s->index < 0
      || s->parent < -1)
    return SL_TRACE_EINVAL;
  /* A file that failed takes no more; an exporter still does. */
  if (t->failed && t->sink == NULL)
    return SL_TRACE_EIO;
  sl_buf_reset(&t->line);
  if (build_span(&t->line, s) != 0) {
    format_error(t->errmsg, sizeof t->errmsg, t->path, "out of memory");
    return SL_TRACE_ENOMEM;
  }
  if (t->sink != NULL)
    t->sink(t->sink_ud, t->line.data, t->line.len);
  if (t->failed)
    return SL_TRACE_EIO;
  if (t->f != NULL && fwrite(t->line.data, 1, t->line.len, t->f) != t->line.len) {
    format_error(t->errmsg, sizeof t->errmsg, t->path,
                 "cannot write trace file: %s", strerror(errno));
    t->failed = 1;
    return SL_TRACE_EIO;
  }
  return SL_TRACE_OK;
}


void sl_trace_set_sink (sl_trace *t, sl_trace_sink_fn fn, void *ud) {
  t->sink = fn;
  t->sink_ud = ud;
}


int sl_trace_open_sink (sl_trace **out) {
  *out = calloc(1, sizeof **out);
  if (*out == NULL || ((*out)->path = strdup("(exporter)")) == NULL) {
    free(*out);
    *out = NULL;
    return SL_TRACE_ENOMEM;
  }
  return SL_TRACE_OK;
}


int sl_trace_flush (sl_trace *t) {
  if (t == NULL || t->f == NULL)
    return SL_TRACE_OK;
  if (t->failed)
    return SL_TRACE_EIO;
  if (fflush(t->f) != 0) {
    format_error(t->errmsg, sizeof t->errmsg, t->path,
                 "cannot write trace file: %s", strerror(errno));
    t->failed = 1;
    return SL_TRACE_EIO;
  }
  return SL_TRACE_OK;
}


const char *sl_trace_path (const sl_trace *t) {
  return t->path;
}


const char *sl_trace_errmsg (const sl_trace *t) {
  return t ? t->errmsg : "";
}


int sl_trace_close (sl_trace *t, char *err, size_t errlen) {
  int rc = SL_TRACE_OK;
  if (err && errlen)
    err[0] = '\0';
  if (t == NULL)
    return SL_TRACE_OK;
  if (t->f != NULL && t->failed)
    rc = SL_TRACE_EIO;
  else if (t->f != NULL && fflush(t->f) != 0) {
    format_error(t->errmsg, sizeof t->errmsg, t->path,
                 "cannot write trace file: %s", strerror(errno));
    rc = SL_TRACE_EIO;
  }
  if (t->f != NULL && fclose(t->f) != 0 && rc == SL_TRACE_OK) {
    format_error(t->errmsg, sizeof t->errmsg, t->path,
                 "cannot write trace file: %s", strerror(errno));
    rc = SL_TRACE_EIO;
  }
  if (rc != SL_TRACE_OK && err && errlen)
    snprintf(err, errlen, "%s", t->errmsg);
  sl_buf_free(&t->line);
  free(t->path);
  free(t);
  return rc;
}
