/*
** The OTLP/HTTP exporter: the spans the trace makes (one TracesData line
** each) are batched and POSTed as one TracesData (JSON) to a collector's
** /v1/traces, on the engine's loop through libcurl. A step never waits for
** it; spans a collector did not take are counted as dropped, with why.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otlp.h"
#include "http.h"

/* A batch is sent once it holds this many spans, or on the timer. */
#define BATCH_SPANS 512
#define EVERY_MS 1000
#define TIMEOUT_MS 10000

struct sl_otlp {
  sl_core *c;
  char url[1024];
  sl_buf batch;              /* resourceSpans entries, comma-separated */
  int64_t nbatch;            /* spans in the batch */
  int64_t sent, dropped, inflight;
  char why[400];             /* why the last spans were dropped */
  uv_timer_t timer;
  int timer_closed;          /* closed: freed once no request is in flight */
};

static void release(sl_otlp *o) {
  sl_buf_free(&o->batch);
  free(o);
}

/* One request's spans, for its answer. */
typedef struct sending { sl_otlp *o; int64_t n; } sending;

static void on_sent(void *ud, int ok, const char *why) {
  sending *s = ud;
  sl_otlp *o = s->o;
  int64_t n = s->n;
  free(s);
  o->inflight -= n;
  if (o->timer_closed) {
    /* Closed while this was in flight: the last answer lets it go. */
    if (o->inflight == 0) release(o);
    return;
  }
  if (ok) {
    o->sent += n;
  } else {
    o->dropped += n;
    snprintf(o->why, sizeof o->why, "%s", why ? why : "the request failed");
  }
}

void sl_otlp_flush(sl_otlp *o) {
  if (o == NULL || o->nbatch == 0) return;
  sl_buf body;
  sl_buf_init(&body);
  int64_t n = o->nbatch;
  sending *s = malloc(sizeof *s);
  int rc = s == NULL || sl_buf_add(&body, "{\"resourceSpans\":[", 18) != 0
           || sl_buf_add(&body, o->batch.data, o->batch.len) != 0
           || sl_buf_add(&body, "]}", 2) != 0;
  sl_buf_reset(&o->batch);
  o->nbatch = 0;
  char err[400];
  if (!rc) {
    s->o = o;
    s->n = n;
    o->inflight += n;
    if (sl_http_post(o->c, o->url, "application/json", body.data, body.len, TIMEOUT_MS,
                     on_sent, s, err, sizeof err) != 0) {
      o->inflight -= n;
      rc = 1;
    }
  } else {
    snprintf(err, sizeof err, "not enough memory for a batch of spans");
  }
  if (rc) {
    free(s);
    o->dropped += n;
    snprintf(o->why, sizeof o->why, "%s", err);
  }
  sl_buf_free(&body);
}

/* The trace's sink: keeps the line's resourceSpans entry for the batch. */
static void on_span(void *ud, const char *line, size_t len) {
  sl_otlp *o = ud;
  static const char head[] = "{\"resourceSpans\":[";
  size_t hl = sizeof head - 1;
  while (len > 0 && (line[len - 1] == '\n')) len--;
  if (len < hl + 2 || memcmp(line, head, hl) != 0 || memcmp(line + len - 2, "]}", 2) != 0) {
    o->dropped++;
    snprintf(o->why, sizeof o->why, "a span was not a TracesData line");
    return;
  }
  if ((o->nbatch > 0 && sl_buf_add(&o->batch, ",", 1) != 0)
      || sl_buf_add(&o->batch, line + hl, len - hl - 2) != 0) {
    o->dropped++;
    snprintf(o->why, sizeof o->why, "not enough memory for a span");
    return;
  }
  if (++o->nbatch >= BATCH_SPANS) sl_otlp_flush(o);
}

static void on_timer(uv_timer_t *t) {
  sl_otlp_flush(t->data);
}

int sl_otlp_open(sl_core *c, const char *endpoint, sl_otlp **out, char *err, size_t errlen) {
  *out = NULL;
  size_t n = strlen(endpoint);
  if (n == 0 || (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)) {
    snprintf(err, errlen, "the OTLP endpoint must be an http:// or https:// URL, got '%s'",
             endpoint);
    return -1;
  }
  sl_otlp *o = calloc(1, sizeof *o);
  if (o == NULL) {
    snprintf(err, errlen, "not enough memory for the exporter");
    return -1;
  }
  /* An endpoint is the collector's base (as OTEL_EXPORTER_OTLP_ENDPOINT);
     one that names its path already is kept. */
  const char *path = strstr(endpoint, "/v1/traces");
  while (n > 0 && endpoint[n - 1] == '/') n--;
  if (path != NULL || n + 10 >= sizeof o->url) snprintf(o->url, sizeof o->url, "%s", endpoint);
  else snprintf(o->url, sizeof o->url, "%.*s/v1/traces", (int)n, endpoint);
  o->c = c;
  sl_buf_init(&o->batch);
  uv_timer_init(c->loop, &o->timer);
  o->timer.data = o;
  sl_handles_opened(c->handles);
  uv_timer_start(&o->timer, on_timer, EVERY_MS, EVERY_MS);
  uv_unref((uv_handle_t *)&o->timer);
  *out = o;
  return 0;
}

void sl_otlp_attach(sl_otlp *o, sl_trace *t) {
  sl_trace_set_sink(t, on_span, o);
}

void sl_otlp_counts(const sl_otlp *o, int64_t *sent, int64_t *dropped, int64_t *inflight,
                    const char **why) {
  *sent = o->sent;
  *dropped = o->dropped;
  *inflight = o->inflight;
  *why = o->why;
}

const char *sl_otlp_url(const sl_otlp *o) {
  return o->url;
}

static void on_closed(uv_handle_t *h) {
  sl_otlp *o = h->data;
  sl_handles_closed(o->c->handles);
  o->timer_closed = 1;
  if (o->inflight == 0) release(o);
}

void sl_otlp_close(sl_otlp *o) {
  if (o == NULL) return;
  o->dropped += o->nbatch;
  o->nbatch = 0;
  uv_close((uv_handle_t *)&o->timer, on_closed);
}
