/*
** mock_server: a small, deterministic HTTP/1.1 server on 127.0.0.1, built
** on libuv, for the tests and the demos.
**
**   mock_server [PORT]
**
** PORT 0 (or none) picks a free port. Once listening it prints
** "listening on PORT\n" on stdout (flushed). It serves keep-alive and
** pipelined requests and thousands of concurrent connections, and exits
** with status 0 on SIGTERM or SIGINT after closing everything.
**
** Request bodies need a Content-Length (chunked bodies get 501). Every
** response has a Content-Length; JSON bodies are application/json.
**
** Routes:
**
**   POST /v1/chat/completions
**       OpenAI-compatible chat completion. The reply is derived from the
**       last message whose role is "user" (its content a string, or a list
**       of {type = "text", text = ...} parts):
**         content = "Mock reply to: <that message>"
**       When the request has "response_format", or that message mentions
**       "json" (any case), content is instead a JSON text:
**         {"reply": "<that message>", "words": <its word count>}
**       The response is
**         {"id": "chatcmpl-mock-<n>", "object": "chat.completion",
**          "created": 1700000000, "model": <the request's model or
**          "mock-model">, "choices": [{"index": 0, "message": {"role":
**          "assistant", "content": ...}, "finish_reason": "stop"}],
**          "usage": {"prompt_tokens": P, "completion_tokens": C,
**                    "total_tokens": P + C}}
**       where <n> counts chat requests from 1, P is the number of
**       whitespace-separated words in all the messages' contents and C
**       the number in the reply's content.
**       With env MOCK_API_KEY=x at start, a request without
**       "Authorization: Bearer x" gets 401 and an OpenAI-style error
**       {"error": {"message", "type", "code"}}; a body that is not JSON,
**       or has no "messages" list, gets 400 with the same shape, and so
**       does "stream": true (not supported).
**       Request headers that steer it, for testing clients:
**         X-Mock-Status: NNN      answer NNN with an error body instead
**         X-Mock-Echo-Auth: N     with X-Mock-Status, the error's message is
**                                 N dots and then the Authorization header
**                                 it was sent (as a careless server quotes it)
**         X-Mock-Content: text    use text as the reply's content verbatim
**         X-Mock-Delay-Ms: N      answer after N ms
**   GET /status/NNN        answers status NNN (200..599), body {"status": NNN}
**   GET /slow?ms=N         answers 200 {"slept_ms": N} after N ms
**   GET /reset             closes the connection abruptly (TCP reset)
**   GET /malformed         answers 200, application/json, with broken JSON
**   GET /retry-after?n=K[&key=S][&ms=M]
**                          the first K requests with key S (default "")
**                          get 429 with "Retry-After: <ceil(M / 1000)>" and
**                          "Retry-After-Ms: M" (M defaults to 1000), the
**                          next ones 200 {"attempt": i}
**   ANY /echo              answers 200 {"method", "path", "query",
**                          "headers": {lowercased name: value}, "body"}
**   GET /bytes?n=N         answers N bytes of "abc...z" repeated
**   GET /hold?key=S        answers 200 {"released": "S"} once
**   GET /release?key=S     has been called (at once if it already was);
**                          /release answers 200 {"held": <requests it freed>}
**                          (a latch: lets a test order two requests without
**                          relying on time)
**   POST /v1/traces        an OTLP/HTTP (JSON) traces receiver: a body with
**                          "resourceSpans" gets 200 {"partialSuccess": {}},
**                          anything else 400; counts requests and spans
**                          (and with MOCK_OTLP_DIR set, keeps each body
**                          there as body-N.json)
**   GET /v1/traces/count   answers 200 {"requests": R, "spans": S} so far
**   anything else          404 {"error": "no route"}
*/
#define _GNU_SOURCE   /* memmem */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <uv.h>

#define MAX_HEAD (64 * 1024)
#define MAX_BODY ((size_t)64 << 20)
#define MAX_HEADERS 100
#define PATTERN_SIZE (64 * 1024)

typedef struct conn conn;

/* A growable byte buffer. */
typedef struct buf {
  char *data;
  size_t len, cap;
} buf;

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;          /* delays a response (/slow, X-Mock-Delay-Ms) */
  buf in;                    /* bytes received and not yet handled */
  buf pending;               /* a response waiting for its delay or latch */
  int handles;               /* handles not yet closed: freed at 0 */
  int busy;                  /* a response is deferred: handle nothing more */
  int closing;
  int close_after;           /* the deferred response ends the connection */
  char hold_key[128];        /* waiting in /hold for this key */
  int holding;
  conn *next, *prev;
};

typedef struct header {
  const char *name, *value;
} header;

typedef struct request {
  const char *method, *target, *version;
  char path[1024], query[1024];
  header headers[MAX_HEADERS];
  int nheaders;
  const char *body;
  size_t body_len;
  int keep_alive;
} request;

/* A key with a counter (/retry-after) and a latch (/hold, /release). */
typedef struct entry {
  char key[128];
  int count;
  int released;
  struct entry *next;
} entry;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static conn *conns;
static entry *entries;
static char pattern[PATTERN_SIZE];
static const char *api_key;
static long chat_count;
static int stopping;

/* Buffers. */

static int buf_reserve(buf *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) cap *= 2;
  char *d = realloc(b->data, cap);
  if (d == NULL) return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

static void buf_add(buf *b, const char *s, size_t n) {
  if (buf_reserve(b, n + 1) != 0) {
    fprintf(stderr, "mock_server: out of memory\n");
    exit(1);
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void buf_str(buf *b, const char *s) {
  buf_add(b, s, strlen(s));
}

static void buf_printf(buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_add(b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void buf_free(buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Appends s as a JSON string literal. */
static void buf_json_string(buf *b, const char *s, size_t n) {
  buf_add(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"') buf_str(b, "\\\"");
    else if (c == '\\') buf_str(b, "\\\\");
    else if (c == '\n') buf_str(b, "\\n");
    else if (c == '\r') buf_str(b, "\\r");
    else if (c == '\t') buf_str(b, "\\t");
    else if (c < 0x20) buf_printf(b, "\\u%04x", c);
    else buf_add(b, (const char *)&s[i], 1);
  }
  buf_add(b, "\"", 1);
}

/* A small JSON reader, enough for chat requests. */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
  int type;
  char *str;                 /* J_STR: the decoded text; J_OBJ member: key */
  size_t len;
  char *key;
  int truth;
  struct jv *kids, *next;
} jv;

typedef struct jparser {
  const char *s, *end;
  int depth;
} jparser;

static void jv_free(jv *v) {
  while (v != NULL) {
    jv *next = v->next;
    jv_free(v->kids);
    free(v->str);
    free(v->key);
    free(v);
    v = next;
  }
}

static void skip_ws(jparser *p) {
  while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
    p->s++;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(jparser *p, unsigned *out) {
  if (p->end - p->s < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(p->s[i]);
    if (h < 0) return -1;
    v = v * 16 + (unsigned)h;
  }
  p->s += 4;
  *out = v;
  return 0;
}

static void add_utf8(buf *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
  else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
  }
  buf_add(b, u, n);
}

/* Reads a string literal (p->s at its opening quote) into *out. */
static int read_string(jparser *p, char **out, size_t *outlen) {
  buf b = {0};
  p->s++;
  while (p->s < p->end && *p->s != '"') {
    unsigned char c = (unsigned char)*p->s;
    if (c < 0x20) goto bad;
    if (c != '\\') {
      buf_add(&b, p->s++, 1);
      continue;
    }
    if (++p->s >= p->end) goto bad;
    char e = *p->s++;
    unsigned cp;
    switch (e) {
      case '"': buf_add(&b, "\"", 1); break;
      case '\\': buf_add(&b, "\\", 1); break;
      case '/': buf_add(&b, "/", 1); break;
      case 'b': buf_add(&b, "\b", 1); break;
      case 'f': buf_add(&b, "\f", 1); break;
      case 'n': buf_add(&b, "\n", 1); break;
      case 'r': buf_add(&b, "\r", 1); break;
      case 't': buf_add(&b, "\t", 1); break;
      case 'u':
        if (read_hex4(p, &cp) != 0) goto bad;
        if (cp >= 0xD800 && cp < 0xDC00) {
          unsigned lo;
          if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u') goto bad;
          p->s += 2;
          if (read_hex4(p, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) goto bad;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          goto bad;
        }
        add_utf8(&b, cp);
        break;
      default:
        goto bad;
    }
  }
  if (p->s >= p->end) goto bad;
  p->s++;
  buf_add(&b, "", 0);
  *out = b.data;
  *outlen = b.len;
  return 0;
bad:
  buf_free(&b);
  return -1;
}

static jv *read_value(jparser *p);

static jv *new_jv(int type) {
  jv *v = calloc(1, sizeof *v);
  if (v == NULL) {
    fprintf(stderr, "mock_server: out of memory\n");
    exit(1);
  }
  v->type = type;
  return v;
}

static int match_word(jparser *p, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n) != 0) return 0;
  p->s += n;
  return 1;
}

static jv *read_container(jparser *p, int type) {
  char close = type == J_ARR ? ']' : '}';
  jv *v = new_jv(type), **tail = &v->kids;
  if (++p->depth > 64) goto bad;
  p->s++;
  skip_ws(p);
  if (p->s < p->end && *p->s == close) {
    p->s++;
    p->depth--;
    return v;
  }
  for (;;) {
    char *key = NULL;
    size_t klen;
    skip_ws(p);
    if (type == J_OBJ) {
      if (p->s >= p->end || *p->s != '"' || read_string(p, &key, &klen) != 0) goto bad;
      skip_ws(p);
      if (p->s >= p->end || *p->s != ':') {
        free(key);
        goto bad;
      }
      p->s++;
    }
    jv *kid = read_value(p);
    if (kid == NULL) {
      free(key);
      goto bad;
    }
    kid->key = key;
    *tail = kid;
    tail = &kid->next;
    skip_ws(p);
    if (p->s < p->end && *p->s == ',') {
      p->s++;
      continue;
    }
    if (p->s < p->end && *p->s == close) {
      p->s++;
      p->depth--;
      return v;
    }
    goto bad;
  }
bad:
  jv_free(v);
  return NULL;
}

static jv *read_value(jparser *p) {
  skip_ws(p);
  if (p->s >= p->end) return NULL;
  char c = *p->s;
  if (c == '{') return read_container(p, J_OBJ);
  if (c == '[') return read_container(p, J_ARR);
  if (c == '"') {
    jv *v = new_jv(J_STR);
    if (read_string(p, &v->str, &v->len) != 0) {
      free(v);
      return NULL;
    }
    return v;
  }
  if (match_word(p, "true")) { jv *v = new_jv(J_BOOL); v->truth = 1; return v; }
  if (match_word(p, "false")) return new_jv(J_BOOL);
  if (match_word(p, "null")) return new_jv(J_NULL);
  if (c == '-' || isdigit((unsigned char)c)) {
    const char *start = p->s;
    p->s++;
    while (p->s < p->end && (isdigit((unsigned char)*p->s) || (*p->s && strchr("+-.eE", *p->s))))
      p->s++;
    char *endp;
    char tmp[64];
    size_t n = (size_t)(p->s - start);
    if (n >= sizeof tmp) return NULL;
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    strtod(tmp, &endp);
    if (*endp != '\0') return NULL;
    return new_jv(J_NUM);
  }
  return NULL;
}

/* Parses a whole JSON text; NULL when it is not one. */
static jv *json_parse(const char *s, size_t n) {
  jparser p = {s, s + n, 0};
  jv *v = read_value(&p);
  skip_ws(&p);
  if (v != NULL && p.s != p.end) {
    jv_free(v);
    return NULL;
  }
  return v;
}

static jv *jv_get(jv *obj, const char *key) {
  if (obj == NULL || obj->type != J_OBJ) return NULL;
  for (jv *k = obj->kids; k != NULL; k = k->next)
    if (strcmp(k->key, key) == 0) return k;
  return NULL;
}

/* Appends the text of a message's content: a string, or text parts. */
static void content_text(jv *content, buf *out) {
  if (content == NULL) return;
  if (content->type == J_STR) {
    buf_add(out, content->str, content->len);
    return;
  }
  if (content->type != J_ARR) return;
  for (jv *part = content->kids; part != NULL; part = part->next) {
    jv *text = jv_get(part, "text");
    if (text != NULL && text->type == J_STR) {
      if (out->len > 0) buf_add(out, " ", 1);
      buf_add(out, text->str, text->len);
    }
  }
}

static long count_words(const char *s, size_t n) {
  long words = 0;
  int in = 0;
  for (size_t i = 0; i < n; i++) {
    int space = isspace((unsigned char)s[i]);
    if (!space && !in) words++;
    in = !space;
  }
  return words;
}

/* Connections. */

static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->handles > 0) return;
  buf_free(&c->in);
  buf_free(&c->pending);
  free(c);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->prev) c->prev->next = c->next;
  else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Ends the connection with a TCP reset rather than an orderly close. */
static void conn_reset(conn *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  conn_close(c);
}

typedef struct write_req {
  uv_write_t req;
  conn *c;
  char *data;
  int close_after;
} write_req;

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  if (w->close_after || status < 0) conn_close(w->c);
  free(w->data);
  free(w);
}

/* Sends data (taking it) followed by extra bytes of the pattern. */
static void send_bytes(conn *c, char *data, size_t len, size_t extra, int close_after) {
  if (c->closing) {
    free(data);
    return;
  }
  size_t nbufs = 1 + (extra + PATTERN_SIZE - 1) / PATTERN_SIZE;
  uv_buf_t *bufs = malloc(nbufs * sizeof *bufs);
  write_req *w = calloc(1, sizeof *w);
  if (bufs == NULL || w == NULL) {
    fprintf(stderr, "mock_server: out of memory\n");
    exit(1);
  }
  bufs[0] = uv_buf_init(data, (unsigned)len);
  for (size_t i = 1; i < nbufs; i++) {
    size_t n = extra > PATTERN_SIZE ? PATTERN_SIZE : extra;
    bufs[i] = uv_buf_init(pattern, (unsigned)n);
    extra -= n;
  }
  w->c = c;
  w->data = data;
  w->close_after = close_after;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, (unsigned)nbufs, on_written) != 0) {
    free(data);
    free(w);
    conn_close(c);
  }
  free(bufs);
}

static const char *reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

/* Builds a response into out. Statuses without a body (1xx, 204, 304)
   get none, whatever body says. */
static void build(buf *out, int status, const char *type, const char *body,
                  size_t len, size_t extra, const char *headers, int keep_alive) {
  int bodyless = status < 200 || status == 204 || status == 304;
  buf_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
  if (!bodyless) {
    buf_printf(out, "Content-Type: %s\r\n", type);
    buf_printf(out, "Content-Length: %zu\r\n", len + extra);
  }
  if (headers != NULL) buf_str(out, headers);
  buf_str(out, keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
  if (!bodyless) buf_add(out, body, len);
}

/* Sends a response now. */
static void respond(conn *c, request *r, int status, const char *type,
                    const char *body, size_t len, const char *headers) {
  buf out = {0};
  build(&out, status, type, body, len, 0, headers, r->keep_alive);
  send_bytes(c, out.data, out.len, 0, !r->keep_alive);
}

static void respond_json(conn *c, request *r, int status, buf *body, const char *headers) {
  respond(c, r, status, "application/json", body->data ? body->data : "", body->len, headers);
}

/* Sends the deferred response and handles what came in meanwhile. */
static void process(conn *c);

static void release_pending(conn *c) {
  buf out = c->pending;
  c->pending = (buf){0};
  c->busy = 0;
  c->holding = 0;
  send_bytes(c, out.data, out.len, 0, c->close_after);
  if (!c->close_after) process(c);
}

static void on_delay(uv_timer_t *t) {
  release_pending(t->data);
}

/* Keeps a built response until ms have passed. */
static void defer(conn *c, request *r, buf *response, uint64_t ms) {
  c->pending = *response;
  c->busy = 1;
  c->close_after = !r->keep_alive;
  uv_timer_start(&c->timer, on_delay, ms, 0);
}

static entry *find_entry(const char *key) {
  for (entry *e = entries; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) return e;
  entry *e = calloc(1, sizeof *e);
  if (e == NULL) exit(1);
  snprintf(e->key, sizeof e->key, "%s", key);
  e->next = entries;
  entries = e;
  return e;
}

/* Requests. */

static const char *header_value(request *r, const char *name) {
  for (int i = 0; i < r->nheaders; i++)
    if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
  return NULL;
}

/* Copies the (percent-decoded) value of query parameter name into out;
   returns 0 when absent. */
static int query_param(request *r, const char *name, char *out, size_t size) {
  size_t nlen = strlen(name);
  const char *q = r->query;
  while (*q) {
    const char *amp = strchr(q, '&');
    size_t plen = amp ? (size_t)(amp - q) : strlen(q);
    if (plen > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
      size_t o = 0;
      for (const char *v = q + nlen + 1; v < q + plen && o + 1 < size; v++) {
        if (*v == '%' && v + 2 < q + plen + 1 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
          out[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
          v += 2;
        } else {
          out[o++] = *v == '+' ? ' ' : *v;
        }
      }
      out[o] = '\0';
      return 1;
    }
    if (amp == NULL) break;
    q = amp + 1;
  }
  return 0;
}

static long query_long(request *r, const char *name, long dflt) {
  char v[64];
  if (!query_param(r, name, v, sizeof v)) return dflt;
  char *end;
  long n = strtol(v, &end, 10);
  return *end == '\0' && end != v && n >= 0 ? n : dflt;
}

static void chat_error(conn *c, request *r, int status, const char *type,
                       const char *code, const char *msg) {
  buf b = {0};
  buf_str(&b, "{\"error\": {\"message\": ");
  buf_json_string(&b, msg, strlen(msg));
  buf_printf(&b, ", \"type\": \"%s\", \"code\": ", type);
  if (code) buf_json_string(&b, code, strlen(code));
  else buf_str(&b, "null");
  buf_str(&b, "}}");
  respond_json(c, r, status, &b, NULL);
  buf_free(&b);
}

static void route_chat(conn *c, request *r) {
  if (strcmp(r->method, "POST") != 0) {
    chat_error(c, r, 405, "invalid_request_error", NULL, "use POST");
    return;
  }
  if (api_key != NULL) {
    const char *auth = header_value(r, "authorization");
    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0 || strcmp(auth + 7, api_key) != 0) {
      chat_error(c, r, 401, "invalid_request_error", "invalid_api_key",
                 "Incorrect API key provided.");
      return;
    }
  }
  const char *forced = header_value(r, "x-mock-status");
  if (forced != NULL) {
    int status = atoi(forced);
    if (status < 200 || status > 599) status = 500;
    const char *echo = header_value(r, "x-mock-echo-auth");
    const char *auth = header_value(r, "authorization");
    if (echo != NULL) {
      int dots = atoi(echo);
      if (dots < 0 || dots > 4096) dots = 0;
      buf m = {0};
      for (int i = 0; i < dots; i++) buf_str(&m, ".");
      buf_printf(&m, " you sent Authorization: %s", auth ? auth : "(none)");
      chat_error(c, r, status, "invalid_request_error", NULL, m.data);
      buf_free(&m);
      return;
    }
    chat_error(c, r, status, status == 429 ? "rate_limit_error" : "server_error",
               NULL, "status forced by X-Mock-Status");
    return;
  }
  jv *req = json_parse(r->body, r->body_len);
  jv *messages = jv_get(req, "messages");
  if (req == NULL || req->type != J_OBJ) {
    jv_free(req);
    chat_error(c, r, 400, "invalid_request_error", NULL,
               "the request body is not a JSON object");
    return;
  }
  if (messages == NULL || messages->type != J_ARR) {
    jv_free(req);
    chat_error(c, r, 400, "invalid_request_error", NULL,
               "'messages' must be a list");
    return;
  }
  jv *stream = jv_get(req, "stream");
  if (stream != NULL && stream->type == J_BOOL && stream->truth) {
    jv_free(req);
    chat_error(c, r, 400, "invalid_request_error", NULL,
               "streaming is not supported by the mock server");
    return;
  }
  buf last = {0};
  long prompt_tokens = 0;
  for (jv *m = messages->kids; m != NULL; m = m->next) {
    buf text = {0};
    content_text(jv_get(m, "content"), &text);
    prompt_tokens += count_words(text.data ? text.data : "", text.len);
    jv *role = jv_get(m, "role");
    if (role != NULL && role->type == J_STR && strcmp(role->str, "user") == 0) {
      buf_free(&last);
      last = text;
    } else {
      buf_free(&text);
    }
  }
  const char *msg = last.data ? last.data : "";
  int json_mode = jv_get(req, "response_format") != NULL;
  for (size_t i = 0; !json_mode && i + 4 <= last.len; i++)
    json_mode = strncasecmp(msg + i, "json", 4) == 0;
  buf content = {0};
  const char *verbatim = header_value(r, "x-mock-content");
  if (verbatim != NULL) {
    buf_str(&content, verbatim);
  } else if (json_mode) {
    buf_str(&content, "{\"reply\": ");
    buf_json_string(&content, msg, last.len);
    buf_printf(&content, ", \"words\": %ld}", count_words(msg, last.len));
  } else {
    buf_str(&content, "Mock reply to: ");
    buf_add(&content, msg, last.len);
  }
  long completion_tokens = count_words(content.data, content.len);
  jv *model = jv_get(req, "model");
  buf b = {0};
  buf_printf(&b, "{\"id\": \"chatcmpl-mock-%ld\", \"object\": \"chat.completion\", "
             "\"created\": 1700000000, \"model\": ", ++chat_count);
  if (model != NULL && model->type == J_STR) buf_json_string(&b, model->str, model->len);
  else buf_str(&b, "\"mock-model\"");
  buf_str(&b, ", \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", "
              "\"content\": ");
  buf_json_string(&b, content.data, content.len);
  buf_printf(&b, "}, \"finish_reason\": \"stop\"}], \"usage\": {\"prompt_tokens\": %ld, "
             "\"completion_tokens\": %ld, \"total_tokens\": %ld}}",
             prompt_tokens, completion_tokens, prompt_tokens + completion_tokens);
  const char *delay = header_value(r, "x-mock-delay-ms");
  if (delay != NULL && atol(delay) > 0) {
    buf out = {0};
    build(&out, 200, "application/json", b.data, b.len, 0, NULL, r->keep_alive);
    defer(c, r, &out, (uint64_t)atol(delay));
  } else {
    respond_json(c, r, 200, &b, NULL);
  }
  buf_free(&b);
  buf_free(&content);
  buf_free(&last);
  jv_free(req);
}

static void route_echo(conn *c, request *r) {
  buf b = {0};
  buf_str(&b, "{\"method\": ");
  buf_json_string(&b, r->method, strlen(r->method));
  buf_str(&b, ", \"path\": ");
  buf_json_string(&b, r->path, strlen(r->path));
  buf_str(&b, ", \"query\": ");
  buf_json_string(&b, r->query, strlen(r->query));
  buf_str(&b, ", \"headers\": {");
  for (int i = 0; i < r->nheaders; i++) {
    char name[256];
    size_t n = 0;
    for (const char *s = r->headers[i].name; *s && n + 1 < sizeof name; s++)
      name[n++] = (char)tolower((unsigned char)*s);
    name[n] = '\0';
    if (i > 0) buf_str(&b, ", ");
    buf_json_string(&b, name, n);
    buf_str(&b, ": ");
    buf_json_string(&b, r->headers[i].value, strlen(r->headers[i].value));
  }
  buf_str(&b, "}, \"body\": ");
  buf_json_string(&b, r->body, r->body_len);
  buf_str(&b, "}");
  respond_json(c, r, 200, &b, NULL);
  buf_free(&b);
}

static void route_retry_after(conn *c, request *r) {
  char key[128] = "";
  query_param(r, "key", key, sizeof key);
  long n = query_long(r, "n", 1), ms = query_long(r, "ms", 1000);
  entry *e = find_entry(key);
  buf b = {0};
  e->count++;
  if (e->count <= n) {
    char headers[128];
    snprintf(headers, sizeof headers, "Retry-After: %ld\r\nRetry-After-Ms: %ld\r\n",
             (ms + 999) / 1000, ms);
    buf_printf(&b, "{\"error\": {\"message\": \"rate limited (%d of %ld)\", "
               "\"type\": \"rate_limit_error\", \"code\": null}}", e->count, n);
    respond_json(c, r, 429, &b, headers);
  } else {
    buf_printf(&b, "{\"attempt\": %d}", e->count);
    respond_json(c, r, 200, &b, NULL);
  }
  buf_free(&b);
}

static void route_hold(conn *c, request *r) {
  char key[128] = "";
  query_param(r, "key", key, sizeof key);
  buf b = {0}, out = {0};
  buf_str(&b, "{\"released\": ");
  buf_json_string(&b, key, strlen(key));
  buf_str(&b, "}");
  build(&out, 200, "application/json", b.data, b.len, 0, NULL, r->keep_alive);
  buf_free(&b);
  if (find_entry(key)->released) {
    send_bytes(c, out.data, out.len, 0, !r->keep_alive);
    return;
  }
  c->pending = out;
  c->busy = 1;
  c->holding = 1;
  c->close_after = !r->keep_alive;
  snprintf(c->hold_key, sizeof c->hold_key, "%s", key);
}

static void route_release(conn *c, request *r) {
  char key[128] = "";
  query_param(r, "key", key, sizeof key);
  find_entry(key)->released = 1;
  int held = 0;
  conn *next;
  for (conn *h = conns; h != NULL; h = next) {
    next = h->next;
    if (h->holding && strcmp(h->hold_key, key) == 0) {
      held++;
      release_pending(h);
    }
  }
  buf b = {0};
  buf_printf(&b, "{\"held\": %d}", held);
  respond_json(c, r, 200, &b, NULL);
  buf_free(&b);
}

/* The OTLP receiver's counts. */
static long otlp_requests, otlp_spans;

static void route_traces(conn *c, request *r) {
  buf b = {0};
  const char *end = r->body + r->body_len;
  if (strcmp(r->method, "POST") != 0 || r->body_len < 2 || r->body[0] != '{'
      || memmem(r->body, r->body_len, "\"resourceSpans\"", 15) == NULL) {
    buf_str(&b, "{\"error\": \"not an OTLP/JSON TracesData body\"}");
    respond_json(c, r, 400, &b, NULL);
    buf_free(&b);
    return;
  }
  otlp_requests++;
  /* With MOCK_OTLP_DIR set, each body is kept as DIR/body-N.json, for a
     test to check what the exporter sent. */
  const char *dir = getenv("MOCK_OTLP_DIR");
  if (dir != NULL && *dir) {
    char name[4096];
    snprintf(name, sizeof name, "%s/body-%ld.json", dir, otlp_requests);
    FILE *f = fopen(name, "wb");
    if (f != NULL) {
      fwrite(r->body, 1, r->body_len, f);
      fclose(f);
    }
  }
  for (const char *s = r->body; (s = memmem(s, (size_t)(end - s), "\"spanId\"", 8)) != NULL; s += 8)
    otlp_spans++;
  buf_str(&b, "{\"partialSuccess\": {}}");
  respond_json(c, r, 200, &b, NULL);
  buf_free(&b);
}

static void route(conn *c, request *r) {
  const char *p = r->path;
  buf b = {0};
  if (strcmp(p, "/v1/traces") == 0) {
    route_traces(c, r);
  } else if (strcmp(p, "/v1/traces/count") == 0) {
    buf_printf(&b, "{\"requests\": %ld, \"spans\": %ld}", otlp_requests, otlp_spans);
    respond_json(c, r, 200, &b, NULL);
  } else if (strcmp(p, "/v1/chat/completions") == 0) {
    route_chat(c, r);
  } else if (strncmp(p, "/status/", 8) == 0) {
    int status = atoi(p + 8);
    if (status < 200 || status > 599) status = 400;
    buf_printf(&b, "{\"status\": %d}", status);
    respond_json(c, r, status, &b, NULL);
  } else if (strcmp(p, "/slow") == 0) {
    long ms = query_long(r, "ms", 0);
    buf out = {0};
    buf_printf(&b, "{\"slept_ms\": %ld}", ms);
    build(&out, 200, "application/json", b.data, b.len, 0, NULL, r->keep_alive);
    defer(c, r, &out, (uint64_t)ms);
  } else if (strcmp(p, "/reset") == 0) {
    conn_reset(c);
  } else if (strcmp(p, "/malformed") == 0) {
    static const char broken[] = "{\"choices\": [{\"message\": {\"content\": \"unterminated";
    respond(c, r, 200, "application/json", broken, sizeof broken - 1, NULL);
  } else if (strcmp(p, "/retry-after") == 0) {
    route_retry_after(c, r);
  } else if (strcmp(p, "/echo") == 0) {
    route_echo(c, r);
  } else if (strcmp(p, "/bytes") == 0) {
    size_t n = (size_t)query_long(r, "n", 0);
    buf out = {0};
    build(&out, 200, "application/octet-stream", "", 0, n, NULL, r->keep_alive);
    send_bytes(c, out.data, out.len, n, !r->keep_alive);
  } else if (strcmp(p, "/hold") == 0) {
    route_hold(c, r);
  } else if (strcmp(p, "/release") == 0) {
    route_release(c, r);
  } else {
    buf_str(&b, "{\"error\": \"no route\"}");
    respond_json(c, r, 404, &b, NULL);
  }
  buf_free(&b);
}

/* Sends an error response and ends the connection. */
static void refuse(conn *c, int status, const char *msg) {
  buf out = {0}, body = {0};
  buf_str(&body, "{\"error\": ");
  buf_json_string(&body, msg, strlen(msg));
  buf_str(&body, "}");
  build(&out, status, "application/json", body.data, body.len, 0, NULL, 0);
  buf_free(&body);
  send_bytes(c, out.data, out.len, 0, 1);
  c->busy = 1;               /* read nothing more */
}

/* Parses and handles one request from c->in; returns 0 when it is not all
   there yet. The head is parsed in place (its line ends become NULs): the
   bytes are dropped once handled. */
static int handle_one(conn *c) {
  char *s = c->in.data;
  if (s == NULL) return 0;
  char *end = strstr(s, "\r\n\r\n");
  if (end == NULL) {
    if (c->in.len > MAX_HEAD) refuse(c, 431, "request head too large");
    return 0;
  }
  size_t head_len = (size_t)(end - s) + 4;
  request r;
  memset(&r, 0, sizeof r);
  size_t body_len = 0;
  int chunked = 0;
  /* Peek at the headers for the body's length before cutting the head. */
  for (char *line = strstr(s, "\r\n") + 2; line < end; ) {
    char *eol = strstr(line, "\r\n");
    if (strncasecmp(line, "content-length:", 15) == 0) body_len = strtoul(line + 15, NULL, 10);
    if (strncasecmp(line, "transfer-encoding:", 18) == 0) chunked = 1;
    line = eol + 2;
  }
  if (chunked) {
    refuse(c, 501, "chunked request bodies are not supported");
    return 0;
  }
  if (body_len > MAX_BODY) {
    refuse(c, 413, "request body too large");
    return 0;
  }
  if (c->in.len < head_len + body_len) return 0;
  /* The request line. */
  *end = '\0';
  char *eol = strstr(s, "\r\n");
  if (eol) *eol = '\0';
  char *sp1 = strchr(s, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (sp1 == NULL || sp2 == NULL) {
    refuse(c, 400, "bad request line");
    return 0;
  }
  *sp1 = *sp2 = '\0';
  r.method = s;
  r.target = sp1 + 1;
  r.version = sp2 + 1;
  const char *q = strchr(r.target, '?');
  size_t plen = q ? (size_t)(q - r.target) : strlen(r.target);
  snprintf(r.path, sizeof r.path, "%.*s", (int)plen, r.target);
  snprintf(r.query, sizeof r.query, "%s", q ? q + 1 : "");
  for (char *line = eol ? eol + 2 : end; line < end && r.nheaders < MAX_HEADERS; ) {
    char *next = strstr(line, "\r\n");
    if (next) *next = '\0';
    char *colon = strchr(line, ':');
    if (colon) {
      *colon = '\0';
      char *v = colon + 1;
      while (*v == ' ' || *v == '\t') v++;
      char *ve = v + strlen(v);
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) *--ve = '\0';
      r.headers[r.nheaders].name = line;
      r.headers[r.nheaders].value = v;
      r.nheaders++;
    }
    line = next ? next + 2 : end;
  }
  r.body = s + head_len;
  r.body_len = body_len;
  const char *conn_hdr = header_value(&r, "connection");
  if (strcmp(r.version, "HTTP/1.0") == 0)
    r.keep_alive = conn_hdr != NULL && strcasecmp(conn_hdr, "keep-alive") == 0;
  else
    r.keep_alive = conn_hdr == NULL || strcasecmp(conn_hdr, "close") != 0;
  if (stopping) r.keep_alive = 0;
  route(c, &r);
  /* Drop the request's bytes, keeping what was pipelined after it. */
  size_t used = head_len + body_len;
  memmove(c->in.data, c->in.data + used, c->in.len - used);
  c->in.len -= used;
  c->in.data[c->in.len] = '\0';
  return 1;
}

static void process(conn *c) {
  while (!c->busy && !c->closing && handle_one(c)) {
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn *c = h->data;
  if (buf_reserve(&c->in, 16 * 1024 + 1) != 0) {
    *b = uv_buf_init(NULL, 0);
    return;
  }
  *b = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->in.len += (size_t)nread;
  c->in.data[c->in.len] = '\0';
  if (c->in.len > MAX_HEAD + MAX_BODY) {
    conn_close(c);
    return;
  }
  process(c);
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  conn *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *h, int signum) {
  stopping = 1;
  uv_close((uv_handle_t *)&server, NULL);
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  while (conns != NULL) conn_close(conns);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  struct rlimit rl;
  /* Thousands of connections need thousands of descriptors. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < PATTERN_SIZE; i++) pattern[i] = (char)('a' + i % 26);
  api_key = getenv("MOCK_API_KEY");
  if (api_key != NULL && *api_key == '\0') api_key = NULL;

  loop = uv_default_loop();
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (rc != 0) {
    fprintf(stderr, "mock_server: cannot listen on 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
    return 1;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
  printf("listening on %d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);

  uv_signal_init(loop, &sig_term);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);

  while (entries != NULL) {
    entry *next = entries->next;
    free(entries);
    entries = next;
  }
  uv_loop_close(loop);
  return 0;
}
