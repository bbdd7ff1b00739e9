/*
** HTTP for steps: ctx:http sends a request with libcurl's multi interface,
** driven by the engine's event loop, and suspends only the calling step.
*/
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <lua.h>

#include "core.h"

/* Adds ctx:http to every ctx of engine e. The engine's curl multi handle
   is made on the first request. */
void sl_http_open(lua_State *L, sl_core *c);

/* A request of the engine's own (an exporter's), not a step's: POSTs body
   (len bytes, copied) to url on the engine's loop. done(ud, ok, why) is
   called from the loop when it ends, never from inside this call: ok for
   a 2xx answer, else why says what happened (also when the engine closes
   first). Returns 0, or -1 with err when it cannot start. */
typedef void (*sl_http_done_fn)(void *ud, int ok, const char *why);
int sl_http_post(sl_core *e, const char *url, const char *content_type,
                 const char *body, size_t len, long timeout_ms,
                 sl_http_done_fn done, void *ud, char *err, size_t errlen);

/* Engine teardown, after its runs have been abandoned: lets go of any
   request still in flight, closes the multi handle and its uv handles
   (counted in e->handles_open). */
void sl_http_close(sl_core *c);

#endif
