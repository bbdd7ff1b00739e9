/*
** The OTLP/HTTP exporter (otlp.c): spans batched and POSTed as OTLP/JSON
** to a collector on the engine's loop.
*/
#ifndef SL_OTLP_H
#define SL_OTLP_H

#include "core.h"

typedef struct sl_otlp sl_otlp;

/* Makes an exporter to endpoint (a collector's base URL, to which
   /v1/traces is added, or the whole URL of its traces path). Returns 0,
   or -1 with err. */
int sl_otlp_open(sl_core *c, const char *endpoint, sl_otlp **out, char *err, size_t errlen);

/* Sends the spans trace t makes from now on. */
void sl_otlp_attach(sl_otlp *o, sl_trace *t);

/* Sends what is batched now (a request on the loop). o may be NULL. */
void sl_otlp_flush(sl_otlp *o);

/* Spans the collector took, spans dropped (and why the last were), and
   spans sent but not yet answered. */
void sl_otlp_counts(const sl_otlp *o, int64_t *sent, int64_t *dropped, int64_t *inflight,
                    const char **why);

/* The URL spans are POSTed to. */
const char *sl_otlp_url(const sl_otlp *o);

/* Lets go of the exporter (what is batched is dropped: flush first). */
void sl_otlp_close(sl_otlp *o);

#endif
