/*
** A small HTTP server on a libuv loop, for `sluice ui`. libmicrohttpd
** parses HTTP and owns the connections; it runs in its external-epoll mode,
** so the loop watches its descriptor and its timeout and every request is
** answered on the loop's thread, between the engine's other callbacks.
*/
#ifndef SL_SERVE_H
#define SL_SERVE_H

#include <stddef.h>
#include <uv.h>

typedef struct sl_server sl_server;

typedef struct sl_http_arg {
  const char *key, *value;     /* decoded; value may be NULL (?flag) */
} sl_http_arg;

typedef struct sl_http_request {
  const char *method, *path;
  const sl_http_arg *args;     /* the query string's arguments */
  int nargs;
  const char *content_type;    /* or NULL */
  const char *origin, *host;   /* the Origin and Host headers, or NULL */
  const char *body;            /* the request body (NUL-terminated) */
  size_t body_len;
} sl_http_request;

typedef struct sl_http_response {
  int status;
  const char *content_type;
  const char *body;            /* copied by the server after the call */
  size_t body_len;
} sl_http_response;

/* Answers one request: fills res (which must stay valid until the call
   returns) and returns; res->body may point into memory the handler frees
   on its next call. */
typedef void (*sl_http_handler)(void *ud, const sl_http_request *req,
                                sl_http_response *res);

/* Listens on host:port (port 0: a free one) and answers on loop. NULL on
   failure, with the reason in err. */
sl_server *sl_serve_start(uv_loop_t *loop, const char *host, int port,
                          sl_http_handler fn, void *ud, char *err, size_t errlen);

/* The port it listens on. */
int sl_serve_port(const sl_server *s);

/* Stops listening, drops open connections and frees the server; its loop
   handles close on the loop's next turn. */
void sl_serve_stop(sl_server *s);

#endif
