/*
** The HTTP server of `sluice ui` (serve.h): libmicrohttpd in its external
** epoll mode, driven by the libuv loop. A uv_poll watches the daemon's epoll
** descriptor and a uv_timer its next timeout; either runs MHD_run, which
** calls on_request for each request on this thread.
*/
#define _GNU_SOURCE
#include "serve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#define MAX_BODY (1 << 20)   /* a request body above this is refused */
#define MAX_ARGS 32

struct sl_server {
  struct MHD_Daemon *d;
  uv_poll_t poll;
  uv_timer_t timer;
  int closing;
  sl_http_handler fn;
  void *ud;
  int port;
};

/* One request in progress: its body as it arrives. */
typedef struct pending {
  char *body;
  size_t len;
  int too_big;
} pending;

typedef struct args {
  sl_http_arg a[MAX_ARGS];
  int n;
} args;

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value) {
  args *as = cls;
  if (as->n < MAX_ARGS) {
    as->a[as->n].key = key;
    as->a[as->n].value = value;
    as->n++;
  }
  return MHD_YES;
}

static enum MHD_Result reply(struct MHD_Connection *conn, int status, const char *type,
                             const char *body, size_t len) {
  struct MHD_Response *res =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (res == NULL) return MHD_NO;
  MHD_add_response_header(res, "Content-Type", type);
  MHD_add_response_header(res, "Cache-Control", "no-store");
  MHD_add_response_header(res, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(res, "X-Frame-Options", "DENY");
  MHD_add_response_header(res, "Referrer-Policy", "no-referrer");
  /* No inline script and nothing from elsewhere: even text that slipped
     into the page as markup could not run. */
  MHD_add_response_header(res, "Content-Security-Policy",
                          "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                          "form-action 'self'");
  enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, res);
  MHD_destroy_response(res);
  return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state) {
  sl_server *s = cls;
  pending *p = *state;
  if (p == NULL) {
    p = calloc(1, sizeof *p);
    if (p == NULL) return MHD_NO;
    *state = p;
    return MHD_YES;
  }
  if (*upload_size > 0) {
    if (!p->too_big && p->len + *upload_size <= MAX_BODY) {
      char *b = realloc(p->body, p->len + *upload_size + 1);
      if (b == NULL) return MHD_NO;
      memcpy(b + p->len, upload, *upload_size);
      p->body = b;
      p->len += *upload_size;
      b[p->len] = '\0';
    } else {
      p->too_big = 1;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (p->too_big) {
    static const char msg[] = "{\"error\":\"the request body is larger than 1 MiB\"}";
    return reply(conn, 413, "application/json", msg, sizeof msg - 1);
  }
  args as;
  as.n = 0;
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, &as);
  sl_http_request req;
  memset(&req, 0, sizeof req);
  req.method = method;
  req.path = url;
  req.args = as.a;
  req.nargs = as.n;
  req.content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
  req.origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
  req.host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
  req.body = p->body ? p->body : "";
  req.body_len = p->len;
  sl_http_response res = {500, "text/plain; charset=utf-8", "", 0};
  s->fn(s->ud, &req, &res);
  return reply(conn, res.status, res.content_type, res.body, res.body_len);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state,
                         enum MHD_RequestTerminationCode why) {
  pending *p = *state;
  if (p == NULL) return;
  free(p->body);
  free(p);
  *state = NULL;
}

static void on_timer(uv_timer_t *t);

/* Lets the daemon do what is due, then arms the timer for its next
   deadline (a connection's timeout), if it has one. */
static void step(sl_server *s) {
  if (s->closing) return;
  MHD_run(s->d);
  MHD_UNSIGNED_LONG_LONG ms = 0;
  if (MHD_get_timeout(s->d, &ms) == MHD_YES)
    uv_timer_start(&s->timer, on_timer, ms > 0 ? (uint64_t)ms : 1, 0);
  else
    uv_timer_stop(&s->timer);
}

static void on_poll(uv_poll_t *h, int status, int events) { step(h->data); }
static void on_timer(uv_timer_t *t) { step(t->data); }

static int resolve(const char *host, int port, struct sockaddr_storage *ss, char *err,
                   size_t errlen) {
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  char ports[16];
  snprintf(ports, sizeof ports, "%d", port);
  int rc = getaddrinfo(host, ports, &hints, &ai);
  if (rc != 0 || ai == NULL) {
    snprintf(err, errlen, "cannot listen on host '%s': %s", host, gai_strerror(rc));
    return -1;
  }
  memcpy(ss, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
  return 0;
}

sl_server *sl_serve_start(uv_loop_t *loop, const char *host, int port, sl_http_handler fn,
                          void *ud, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (resolve(host, port, &ss, err, errlen) != 0) return NULL;
  sl_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  s->fn = fn;
  s->ud = ud;
  unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
  if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  s->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                          MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)256, MHD_OPTION_END);
  if (s->d == NULL) {
    snprintf(err, errlen, "cannot listen on %s port %d (is the port taken?)", host, port);
    free(s);
    return NULL;
  }
  const union MHD_DaemonInfo *pi = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = pi ? pi->port : port;
  const union MHD_DaemonInfo *fi = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
  if (fi == NULL || uv_poll_init(loop, &s->poll, fi->epoll_fd) != 0) {
    snprintf(err, errlen, "cannot watch the server's descriptor");
    MHD_stop_daemon(s->d);
    free(s);
    return NULL;
  }
  uv_timer_init(loop, &s->timer);
  s->poll.data = s->timer.data = s;
  uv_poll_start(&s->poll, UV_READABLE, on_poll);
  step(s);
  return s;
}

int sl_serve_port(const sl_server *s) { return s->port; }

static void on_closed(uv_handle_t *h) {
  sl_server *s = h->data;
  if (++s->closing == 3) free(s);   /* 1 when stopping, then both handles */
}

void sl_serve_stop(sl_server *s) {
  if (s == NULL) return;
  s->closing = 1;
  /* The poll handle lets go of the descriptor before the daemon closes it. */
  uv_close((uv_handle_t *)&s->poll, on_closed);
  uv_close((uv_handle_t *)&s->timer, on_closed);
  MHD_stop_daemon(s->d);
}
