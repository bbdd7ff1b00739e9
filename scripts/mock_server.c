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
**       or has no "messages" list, gets 400 with the same shape.
**       Markers in the last user message steer the reply:
**         [[tool NAME ARGS]]      with a non-empty "tools" list, the reply
**                                 is a tool call of NAME with ARGS (raw
**                                 text, malformed JSON too), one per marker:
**                                 content null, "tool_calls": [{"id":
**                                 "call_<n>_<i>", "type": "function",
**                                 "function": {"name", "arguments"}}],
**                                 finish_reason "tool_calls"
**         [[tool-always NAME ARGS]]  in any user message: those calls on
**                                 every turn (for clients' turn limits)
**         [[content TEXT]]        TEXT is the reply's content
**         [[retry-content TEXT]]  TEXT instead, once any message says
**                                 "rejected" (a client asking again)
**       When the conversation ends in "tool" messages (and there are
**       tools), content = "Tool results: " + their contents joined by " | ".
**       A "response_format" of type "json_schema" gets an instance of its
**       schema: the first "enum" value, strings "<property> value" (padded
**       to minLength), integers and numbers their minimum (else 1, 1.5),
**       true, one array item, objects with every property.
**       "stream": true answers text/event-stream, chunked: OpenAI's
**       chat.completion.chunk events (a role delta, one content delta per
**       word with its trailing space, tool calls in two deltas each, the
**       finish_reason, a usage chunk when stream_options.include_usage)
**       and "data: [DONE]".
**       Request headers that steer it, for testing clients:
**         X-Mock-Key: K           the bucket the request counts in (below)
**         X-Mock-Stream-Delay-Ms: N   N ms between events
**         X-Mock-Stream-Break: N  end the stream (a well-formed last chunk)
**                                 after N content deltas, without finish
**                                 or [DONE]; with X-Mock-Break-Times: T
**                                 only the bucket's first T streams break
**         X-Mock-RPM: R           a sliding window (X-Mock-Window-Ms, default
**                                 60000) of R accepted requests per bucket:
**                                 the next gets 429 with retry-after-ms,
**                                 retry-after, x-ratelimit-limit-requests,
**                                 -remaining-requests: 0, -reset-requests
**                                 ("20ms", "1s", "6m0s"); accepted ones
**                                 carry the x-ratelimit-* headers too
**         X-Mock-Concurrency: C   429 (retry-after-ms: 50) while C of the
**                                 bucket's requests are being answered
**         X-Mock-Status: NNN      answer NNN with an error body instead (a
**                                 429 with retry-after-ms: 100 and
**                                 x-ratelimit-remaining-requests: 0)
**         X-Mock-Echo-Auth: N     with X-Mock-Status, the error's message is
**                                 N dots and then the Authorization header
**                                 it was sent (as a careless server quotes it)
**         X-Mock-Content: text    use text as the reply's content verbatim
**         X-Mock-Delay-Ms: N      answer after N ms
**   GET /v1/mock/stats?key=K   the bucket's {"requests", "in_flight",
**                          "max_in_flight", "rejected" (its 429s),
**                          "arrivals_ms": [ms after its first request]}
**   GET /v1/mock/requests?key=K   the bucket's request bodies, in order
**   GET /v1/mock/reset?key=K   empties the bucket: {"reset": true}
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
  struct bucket *flight;     /* the bucket of the chat request being answered */
  buf *events;               /* a stream's events (HTTP chunks), in order */
  int nevents, stream_next;
  int stream_break;          /* the event before which the stream ends, or -1 */
  int stream_chunked;        /* chunked (HTTP/1.1), else bare until the close */
  int stream_reset;          /* a broken stream ends with a TCP reset */
  uint64_t stream_delay;     /* ms between events */
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
  if (n > 0) memcpy(b->data + b->len, s, n);
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
  char *str;                 /* J_STR: the decoded text; J_NUM: the number's text */
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
    jv *v = new_jv(J_NUM);
    v->str = strdup(tmp);
    if (v->str == NULL) exit(1);
    v->len = n;
    return v;
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

static void flight_end(conn *c);

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  flight_end(c);
  for (int i = 0; i < c->nevents; i++) buf_free(&c->events[i]);
  free(c->events);
  c->events = NULL;
  c->nevents = 0;
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
  if (w->close_after == 2 && status == 0) conn_reset(w->c);   /* after the bytes left */
  else if (w->close_after || status < 0) conn_close(w->c);
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
  flight_end(c);
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

/* Buckets: what the chat requests of one X-Mock-Key did, for the tests. */
typedef struct bucket {
  char key[128];
  long requests, in_flight, max_in_flight, rejected, broken;
  uint64_t first_ms;
  buf arrivals;              /* JSON numbers, comma-separated */
  buf bodies;                /* the request bodies (JSON), comma-separated */
  uint64_t *accepted;        /* when each accepted request came (X-Mock-RPM) */
  size_t naccepted, capacc;
  struct bucket *next;
} bucket;

static bucket *buckets;

static bucket *find_bucket(const char *key) {
  for (bucket *b = buckets; b != NULL; b = b->next)
    if (strcmp(b->key, key) == 0) return b;
  bucket *b = calloc(1, sizeof *b);
  if (b == NULL) exit(1);
  snprintf(b->key, sizeof b->key, "%s", key);
  b->next = buckets;
  buckets = b;
  return b;
}

static void bucket_clear(bucket *b) {
  buf_free(&b->arrivals);
  buf_free(&b->bodies);
  free(b->accepted);
  bucket *next = b->next;
  char key[128];
  memcpy(key, b->key, sizeof key);
  memset(b, 0, sizeof *b);
  memcpy(b->key, key, sizeof key);
  b->next = next;
}

/* A request of b's is answered (or its connection went away). */
static void flight_end(conn *c) {
  if (c->flight == NULL) return;
  c->flight->in_flight--;
  c->flight = NULL;
}

static void flight_begin(conn *c, bucket *b) {
  flight_end(c);
  c->flight = b;
  if (++b->in_flight > b->max_in_flight) b->max_in_flight = b->in_flight;
}

/* Writes v as JSON. */
static void jv_write(buf *b, jv *v) {
  if (v == NULL) { buf_str(b, "null"); return; }
  switch (v->type) {
    case J_NULL: buf_str(b, "null"); break;
    case J_BOOL: buf_str(b, v->truth ? "true" : "false"); break;
    case J_NUM: buf_add(b, v->str, v->len); break;
    case J_STR: buf_json_string(b, v->str, v->len); break;
    case J_ARR:
    case J_OBJ:
      buf_str(b, v->type == J_ARR ? "[" : "{");
      for (jv *k = v->kids; k != NULL; k = k->next) {
        if (k != v->kids) buf_str(b, ", ");
        if (v->type == J_OBJ) {
          buf_json_string(b, k->key, strlen(k->key));
          buf_str(b, ": ");
        }
        jv_write(b, k);
      }
      buf_str(b, v->type == J_ARR ? "]" : "}");
      break;
  }
}

static double jv_number(jv *v, double dflt) {
  return v != NULL && v->type == J_NUM ? strtod(v->str, NULL) : dflt;
}

/* floor and ceil, without libm. */
static double dfloor(double x) {
  double t = (double)(long long)x;
  return t > x ? t - 1 : t;
}

static double dceil(double x) {
  double t = (double)(long long)x;
  return t < x ? t + 1 : t;
}

/* The schema s refers to with "$ref": "#/..." within root, else s. */
static jv *resolve_ref(jv *root, jv *s) {
  for (int hops = 0; hops < 16; hops++) {
    jv *ref = jv_get(s, "$ref");
    if (ref == NULL || ref->type != J_STR || ref->str[0] != '#') return s;
    jv *at = root;
    for (const char *p = ref->str + 1; at != NULL && *p == '/';) {
      char seg[256];
      size_t n = 0;
      for (p++; *p && *p != '/'; p++) {
        char ch = *p;
        if (ch == '~' && (p[1] == '0' || p[1] == '1')) ch = *++p == '0' ? '~' : '/';
        if (n + 1 < sizeof seg) seg[n++] = ch;
      }
      seg[n] = '\0';
      at = jv_get(at, seg);
    }
    if (at == NULL || at == s) return s;
    s = at;
  }
  return s;
}

/* The type s asks for: its "type" (the first one but "null" of a list),
   else what its keywords suggest. */
static const char *schema_type(jv *s, int depth) {
  jv *type = jv_get(s, "type");
  if (type != NULL && type->type == J_STR) return type->str;
  if (type != NULL && type->type == J_ARR) {
    for (jv *t = type->kids; t != NULL; t = t->next)
      if (t->type == J_STR && strcmp(t->str, "null") != 0) return t->str;
    return "null";
  }
  if (jv_get(s, "properties") != NULL || depth == 0) return "object";
  if (jv_get(s, "items") != NULL) return "array";
  return "string";
}

/* Writes an instance of schema s (within root) as JSON; name is the
   property it is for, whose strings say "<name> value". */
static void generate(buf *b, jv *root, jv *s, const char *name, int depth) {
  if (depth > 16) { buf_str(b, "null"); return; }
  s = resolve_ref(root, s);
  jv *k;
  if ((k = jv_get(s, "const")) != NULL) { jv_write(b, k); return; }
  if ((k = jv_get(s, "enum")) != NULL && k->type == J_ARR && k->kids != NULL) {
    jv_write(b, k->kids);
    return;
  }
  static const char *const alts[] = {"anyOf", "oneOf", "allOf"};
  for (int i = 0; i < 3; i++) {
    jv *list = jv_get(s, alts[i]);
    if (list == NULL || list->type != J_ARR || list->kids == NULL) continue;
    jv *pick = list->kids;   /* the first alternative that is not null */
    for (jv *a = list->kids; a != NULL; a = a->next)
      if (strcmp(schema_type(resolve_ref(root, a), 1), "null") != 0) { pick = a; break; }
    generate(b, root, pick, name, depth + 1);
    return;
  }
  const char *t = schema_type(s, depth);
  jv *min = jv_get(s, "minimum"), *xmin = jv_get(s, "exclusiveMinimum");
  jv *max = jv_get(s, "maximum");
  if (strcmp(t, "string") == 0) {
    static const char *const formats[][2] = {
      {"date-time", "2024-01-01T00:00:00Z"}, {"date", "2024-01-01"}, {"time", "00:00:00"},
      {"email", "mock@example.com"}, {"uri", "https://example.com/"},
      {"url", "https://example.com/"}, {"uuid", "00000000-0000-4000-8000-000000000000"}};
    jv *format = jv_get(s, "format");
    buf v = {0};
    for (size_t i = 0; format != NULL && format->type == J_STR && i < 7; i++)
      if (strcmp(format->str, formats[i][0]) == 0) buf_str(&v, formats[i][1]);
    if (v.len == 0) buf_printf(&v, "%s value", *name ? name : "value");
    long minlen = (long)jv_number(jv_get(s, "minLength"), 0);
    long maxlen = (long)jv_number(jv_get(s, "maxLength"), -1);
    while ((long)v.len < minlen) buf_str(&v, "x");
    if (maxlen >= 0 && (long)v.len > maxlen) v.len = (size_t)maxlen;
    buf_json_string(b, v.data, v.len);
    buf_free(&v);
  } else if (strcmp(t, "integer") == 0) {
    double n = min != NULL && min->type == J_NUM ? dceil(jv_number(min, 1))
             : xmin != NULL && xmin->type == J_NUM ? dfloor(jv_number(xmin, 0)) + 1 : 1;
    if (max != NULL && max->type == J_NUM && n > jv_number(max, n)) n = dfloor(jv_number(max, n));
    buf_printf(b, "%lld", (long long)n);
  } else if (strcmp(t, "number") == 0) {
    if (min != NULL && min->type == J_NUM) {
      jv_write(b, min);
    } else {
      double n = xmin != NULL && xmin->type == J_NUM ? jv_number(xmin, 0) + 1 : 1.5;
      if (max != NULL && max->type == J_NUM && n > jv_number(max, n)) n = jv_number(max, n);
      buf_printf(b, "%.15g", n);
    }
  } else if (strcmp(t, "boolean") == 0) {
    buf_str(b, "true");
  } else if (strcmp(t, "array") == 0) {
    long n = (long)jv_number(jv_get(s, "minItems"), 1);
    if (n < 1) n = 1;
    if (n > 100) n = 100;
    if ((long)jv_number(jv_get(s, "maxItems"), 1) == 0) n = 0;
    buf_str(b, "[");
    for (long i = 0; i < n; i++) {
      if (i > 0) buf_str(b, ", ");
      generate(b, root, jv_get(s, "items"), name, depth + 1);
    }
    buf_str(b, "]");
  } else if (strcmp(t, "object") == 0) {
    buf_str(b, "{");
    jv *props = jv_get(s, "properties");
    for (jv *p = props != NULL && props->type == J_OBJ ? props->kids : NULL; p; p = p->next) {
      if (p != props->kids) buf_str(b, ", ");
      buf_json_string(b, p->key, strlen(p->key));
      buf_str(b, ": ");
      generate(b, root, p, p->key, depth + 1);
    }
    buf_str(b, "}");
  } else {
    buf_str(b, "null");
  }
}

/* Markers: [[TAG TEXT]] in a message's text. */

#define NPOS ((size_t)-1)

/* Where the "]]" that closes a marker whose text starts at s[i] is: the
   first one outside the brackets and braces (and their strings) of JSON
   in the text, else the first one at all; NPOS when there is none. */
static size_t marker_end(const char *s, size_t i, size_t n) {
  size_t first = NPOS;
  int depth = 0, in_str = 0;
  for (size_t k = i; k < n; k++) {
    int closes = k + 1 < n && s[k] == ']' && s[k + 1] == ']';
    if (closes && first == NPOS) first = k;
    if (in_str) {
      if (s[k] == '\\') k++;
      else if (s[k] == '"') in_str = 0;
      continue;
    }
    if (closes && depth == 0) return k;
    if (s[k] == '{' || s[k] == '[') depth++;
    else if ((s[k] == '}' || s[k] == ']') && depth > 0) depth--;
    else if (s[k] == '"' && depth > 0) in_str = 1;
  }
  return first;
}

/* Finds the next marker [[TAG TEXT]] of s[0..n) from *pos: TEXT (what
   follows the tag and the blanks after it) into *text and *tlen, and
   moves *pos past the marker; 0 when there is none. */
static int next_marker(const char *s, size_t n, size_t *pos, const char *tag,
                       const char **text, size_t *tlen) {
  size_t tl = strlen(tag);
  for (size_t i = *pos; i + 2 + tl <= n; i++) {
    if (s[i] != '[' || s[i + 1] != '[' || memcmp(s + i + 2, tag, tl) != 0) continue;
    size_t j = i + 2 + tl;
    if (j < n && !isspace((unsigned char)s[j]) && s[j] != ']') continue;
    while (j < n && isspace((unsigned char)s[j])) j++;
    size_t e = marker_end(s, j, n);
    if (e == NPOS) return 0;
    *text = s + j;
    *tlen = e - j;
    *pos = e + 2;
    return 1;
  }
  return 0;
}

/* The TEXT of the first [[TAG TEXT]] of s, appended to out; 0 when none. */
static int find_marker(const char *s, size_t n, const char *tag, buf *out) {
  size_t pos = 0, tlen;
  const char *text;
  if (!next_marker(s, n, &pos, tag, &text, &tlen)) return 0;
  buf_add(out, text, tlen);
  return 1;
}

/* Whether s says "rejected" (any case) outside its [[...]] markers. */
static int says_rejected(const char *s, size_t n) {
  for (size_t i = 0; i + 8 <= n; i++) {
    if (s[i] == '[' && s[i + 1] == '[') {
      size_t e = marker_end(s, i + 2, n);
      if (e != NPOS) {
        i = e + 1;
        continue;
      }
    }
    if (strncasecmp(s + i, "rejected", 8) == 0) return 1;
  }
  return 0;
}

/* A tool call asked for by a [[tool NAME ARGS]] marker. */
typedef struct call {
  buf name, args;
} call;

#define MAX_CALLS 64

/* Appends the calls of the [[TAG NAME ARGS]] markers of s to calls[k..];
   returns the new count. ARGS is raw text (trimmed), JSON or not. */
static int find_calls(const char *s, size_t n, const char *tag, call *calls, int k) {
  size_t pos = 0, tl;
  const char *t;
  while (k < MAX_CALLS && next_marker(s, n, &pos, tag, &t, &tl)) {
    size_t nl = 0, a, ae = tl;
    while (nl < tl && !isspace((unsigned char)t[nl])) nl++;
    if (nl == 0) continue;
    for (a = nl; a < tl && isspace((unsigned char)t[a]); a++) {}
    while (ae > a && isspace((unsigned char)t[ae - 1])) ae--;
    calls[k].name = (buf){0};
    calls[k].args = (buf){0};
    buf_add(&calls[k].name, t, nl);
    buf_add(&calls[k].args, t + a, ae - a);
    k++;
  }
  return k;
}

static void chat_error_h(conn *c, request *r, int status, const char *type,
                         const char *code, const char *msg, const char *headers) {
  buf b = {0};
  buf_str(&b, "{\"error\": {\"message\": ");
  buf_json_string(&b, msg, strlen(msg));
  buf_printf(&b, ", \"type\": \"%s\", \"code\": ", type);
  if (code) buf_json_string(&b, code, strlen(code));
  else buf_str(&b, "null");
  buf_str(&b, "}}");
  respond_json(c, r, status, &b, headers);
  buf_free(&b);
}

static void chat_error(conn *c, request *r, int status, const char *type,
                       const char *code, const char *msg) {
  chat_error_h(c, r, status, type, code, msg, NULL);
}

/* "20ms", "1s", "6m0s": how OpenAI writes a reset time. */
static void reset_text(buf *b, uint64_t ms) {
  if (ms < 1000) buf_printf(b, "%lums", (unsigned long)ms);
  else if (ms < 60000) buf_printf(b, "%lus", (unsigned long)((ms + 999) / 1000));
  else buf_printf(b, "%lum%lus", (unsigned long)(ms / 60000), (unsigned long)(ms % 60000 / 1000));
}

/* A header's value as a count: dflt when absent or not a number >= 0. */
static long header_long(request *r, const char *name, long dflt) {
  const char *v = header_value(r, name);
  if (v == NULL) return dflt;
  char *end;
  long n = strtol(v, &end, 10);
  return end != v && *end == '\0' && n >= 0 ? n : dflt;
}

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000;
}

/* Streams. A stream's events are built up front, as HTTP chunks (or bare
   with HTTP/1.0), the response's head before the first; c->timer paces
   them. */

static void stream_free(conn *c) {
  for (int i = 0; i < c->nevents; i++) buf_free(&c->events[i]);
  free(c->events);
  c->events = NULL;
  c->nevents = c->stream_next = 0;
}

static void add_event(conn *c, buf *data) {
  buf out = {0};
  if (c->stream_chunked) buf_printf(&out, "%zx\r\n", data->len + 8);
  buf_str(&out, "data: ");
  buf_add(&out, data->data ? data->data : "", data->len);
  buf_str(&out, c->stream_chunked ? "\n\n\r\n" : "\n\n");
  c->events = realloc(c->events, (size_t)(c->nevents + 1) * sizeof *c->events);
  if (c->events == NULL) exit(1);
  c->events[c->nevents++] = out;
  data->len = 0;
}

static void stream_run(conn *c, int in_route);

static void on_stream_tick(uv_timer_t *t) {
  stream_run(t->data, 0);
}

/* Sends the stream's next events: all of them, or one per tick with a
   delay; then ends it. in_route: called from the route, whose caller
   goes on with what was pipelined after. */
static void stream_run(conn *c, int in_route) {
  int stop = c->stream_break >= 0 ? c->stream_break : c->nevents;
  while (!c->closing && c->stream_next < stop) {
    buf e = c->events[c->stream_next];
    c->events[c->stream_next++] = (buf){0};
    send_bytes(c, e.data, e.len, 0, 0);
    if (c->stream_delay > 0 && c->stream_next < stop) {
      uv_timer_start(&c->timer, on_stream_tick, c->stream_delay, 0);
      return;
    }
  }
  if (c->closing) return;
  int broken = c->stream_break >= 0;
  stream_free(c);
  flight_end(c);
  if (broken) {
    /* Cut off: no finish, no [DONE]. The response ends (its last chunk)
       and so does the connection, or with X-Mock-Stream-Reset the
       connection is reset with the body unfinished. Read nothing more. */
    char *end = strdup(c->stream_chunked && !c->stream_reset ? "0\r\n\r\n" : "");
    if (end == NULL) exit(1);
    send_bytes(c, end, strlen(end), 0, c->stream_reset ? 2 : 1);
    return;
  }
  char *end = strdup(c->stream_chunked ? "0\r\n\r\n" : "");
  if (end == NULL) exit(1);
  send_bytes(c, end, strlen(end), 0, c->close_after);
  if (c->close_after) return;
  c->busy = 0;
  if (!in_route) process(c);
}

static void chunk_head(buf *d, long id, jv *model) {
  buf_printf(d, "{\"id\": \"chatcmpl-mock-%ld\", \"object\": \"chat.completion.chunk\", "
             "\"created\": 1700000000, \"model\": ", id);
  if (model != NULL && model->type == J_STR) buf_json_string(d, model->str, model->len);
  else buf_str(d, "\"mock-model\"");
}

/* The chat route. */

/* A message of the request: its role and the text of its content. */
typedef struct chat_msg {
  const char *role;
  buf text;
} chat_msg;

/* What a chat request is answered: content, or tool calls. */
typedef struct answer {
  buf content;
  call calls[MAX_CALLS];
  int ncalls;
} answer;

/* Decides the answer to the messages, in this order: tool-always calls,
   tool calls of the last (user) message, tool results, X-Mock-Content,
   [[retry-content]] / [[content]], a json_schema instance, json mode,
   the default reply. */
static void decide(request *r, jv *req, chat_msg *m, int nm, answer *ans) {
  jv *tools = jv_get(req, "tools");
  int has_tools = tools != NULL && tools->type == J_ARR && tools->kids != NULL;
  int last_user = -1, rejected = 0;
  for (int i = 0; i < nm; i++) {
    if (strcmp(m[i].role, "user") == 0) last_user = i;
    rejected = rejected || says_rejected(m[i].text.data, m[i].text.len);
  }
  const char *lmsg = last_user >= 0 ? m[last_user].text.data : "";
  size_t llen = last_user >= 0 ? m[last_user].text.len : 0;
  if (has_tools) {
    for (int i = 0; i < nm; i++)
      if (strcmp(m[i].role, "user") == 0)
        ans->ncalls = find_calls(m[i].text.data, m[i].text.len, "tool-always", ans->calls, ans->ncalls);
    if (ans->ncalls == 0 && nm > 0 && last_user == nm - 1)
      ans->ncalls = find_calls(lmsg, llen, "tool", ans->calls, 0);
    if (ans->ncalls > 0) return;
  }
  buf *content = &ans->content;
  if (nm > 0 && strcmp(m[nm - 1].role, "tool") == 0) {
    int first = nm - 1;
    while (first > 0 && strcmp(m[first - 1].role, "tool") == 0) first--;
    buf_str(content, "Tool results: ");
    for (int i = first; i < nm; i++) {
      if (i > first) buf_str(content, " | ");
      buf_add(content, m[i].text.data, m[i].text.len);
    }
    return;
  }
  const char *verbatim = header_value(r, "x-mock-content");
  if (verbatim != NULL) {
    buf_str(content, verbatim);
    return;
  }
  /* [[content]] markers: those of the last user message that has some (a
     client may send its feedback as a later user message). */
  for (int i = nm - 1; i >= 0; i--) {
    if (strcmp(m[i].role, "user") != 0) continue;
    if ((rejected && find_marker(m[i].text.data, m[i].text.len, "retry-content", content)) ||
        find_marker(m[i].text.data, m[i].text.len, "content", content))
      return;
    if (find_marker(m[i].text.data, m[i].text.len, "retry-content", content)) {
      content->len = 0;   /* not rejected yet: the reply is as usual */
      break;
    }
  }
  jv *format = jv_get(req, "response_format");
  jv *ftype = jv_get(format, "type");
  if (ftype != NULL && ftype->type == J_STR && strcmp(ftype->str, "json_schema") == 0) {
    jv *schema = jv_get(jv_get(format, "json_schema"), "schema");
    generate(content, schema, schema, "value", 0);
    return;
  }
  int json_mode = format != NULL;
  for (size_t i = 0; !json_mode && i + 4 <= llen; i++)
    json_mode = strncasecmp(lmsg + i, "json", 4) == 0;
  if (json_mode) {
    buf_str(content, "{\"reply\": ");
    buf_json_string(content, lmsg, llen);
    buf_printf(content, ", \"words\": %ld}", count_words(lmsg, llen));
  } else {
    buf_str(content, "Mock reply to: ");
    buf_add(content, lmsg, llen);
  }
}

/* Builds the stream of an answer into c->events. */
static void build_stream(conn *c, request *r, jv *req, answer *ans, long id,
                         long prompt_tokens, long completion_tokens, const char *extra_headers) {
  jv *model = jv_get(req, "model");
  buf d = {0};
  c->stream_chunked = strcmp(r->version, "HTTP/1.0") != 0;
  c->close_after = !r->keep_alive || !c->stream_chunked;
  buf_str(&d, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
  if (c->stream_chunked) buf_str(&d, "Transfer-Encoding: chunked\r\n");
  if (extra_headers != NULL) buf_str(&d, extra_headers);
  buf_str(&d, c->close_after ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n");
  buf head = d;
  d = (buf){0};
  chunk_head(&d, id, model);
  buf_str(&d, ", \"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", "
              "\"content\": \"\"}, \"finish_reason\": null}]}");
  add_event(c, &d);
  /* One event per word with the blanks after it (those before the first
     word go with it). */
  const char *s = ans->content.data;
  for (size_t i = 0; i < ans->content.len;) {
    size_t j = i;
    while (j < ans->content.len && isspace((unsigned char)s[j])) j++;
    while (j < ans->content.len && !isspace((unsigned char)s[j])) j++;
    while (j < ans->content.len && isspace((unsigned char)s[j])) j++;
    chunk_head(&d, id, model);
    buf_str(&d, ", \"choices\": [{\"index\": 0, \"delta\": {\"content\": ");
    buf_json_string(&d, s + i, j - i);
    buf_str(&d, "}, \"finish_reason\": null}]}");
    add_event(c, &d);
    i = j;
  }
  /* Each tool call in two events: its id, name and the first half of its
     arguments, then the rest (split on a UTF-8 character's boundary). */
  for (int k = 0; k < ans->ncalls; k++) {
    call *cl = &ans->calls[k];
    size_t half = cl->args.len / 2;
    while (half > 0 && ((unsigned char)cl->args.data[half] & 0xC0) == 0x80) half--;
    chunk_head(&d, id, model);
    buf_printf(&d, ", \"choices\": [{\"index\": 0, \"delta\": {\"tool_calls\": [{\"index\": %d, "
               "\"id\": \"call_%ld_%d\", \"type\": \"function\", \"function\": {\"name\": ",
               k, id, k);
    buf_json_string(&d, cl->name.data, cl->name.len);
    buf_str(&d, ", \"arguments\": ");
    buf_json_string(&d, cl->args.data, half);
    buf_str(&d, "}}]}, \"finish_reason\": null}]}");
    add_event(c, &d);
    chunk_head(&d, id, model);
    buf_printf(&d, ", \"choices\": [{\"index\": 0, \"delta\": {\"tool_calls\": [{\"index\": %d, "
               "\"function\": {\"arguments\": ", k);
    buf_json_string(&d, cl->args.data + half, cl->args.len - half);
    buf_str(&d, "}}]}, \"finish_reason\": null}]}");
    add_event(c, &d);
  }
  int finish = c->nevents;
  chunk_head(&d, id, model);
  buf_printf(&d, ", \"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"%s\"}]}",
             ans->ncalls > 0 ? "tool_calls" : "stop");
  add_event(c, &d);
  jv *inc = jv_get(jv_get(req, "stream_options"), "include_usage");
  if (inc != NULL && inc->type == J_BOOL && inc->truth) {
    chunk_head(&d, id, model);
    buf_printf(&d, ", \"choices\": [], \"usage\": {\"prompt_tokens\": %ld, "
               "\"completion_tokens\": %ld, \"total_tokens\": %ld}}",
               prompt_tokens, completion_tokens, prompt_tokens + completion_tokens);
    add_event(c, &d);
  }
  buf_str(&d, "[DONE]");
  add_event(c, &d);
  buf_free(&d);
  /* The head goes out with the first event. */
  buf_add(&head, c->events[0].data, c->events[0].len);
  buf_free(&c->events[0]);
  c->events[0] = head;
  /* X-Mock-Stream-Break: N, for the first X-Mock-Break-Times streams of
     the bucket (all without it): the role event, N more, then the end. */
  c->stream_break = -1;
  long brk = header_long(r, "x-mock-stream-break", -1);
  long times = header_long(r, "x-mock-break-times", -1);
  if (brk >= 0 && (times < 0 || c->flight->broken < times)) {
    c->flight->broken++;
    c->stream_break = brk + 1 < finish ? (int)brk + 1 : finish;
  }
  c->stream_reset = header_long(r, "x-mock-stream-reset", 0) > 0;
  c->stream_delay = (uint64_t)header_long(r, "x-mock-stream-delay-ms", 0);
  c->stream_next = 0;
}

/* Sends a completion: at once, after X-Mock-Delay-Ms, or as a stream. */
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
  /* The bucket counts and keeps every request from here on. */
  const char *bkey = header_value(r, "x-mock-key");
  bucket *bk = find_bucket(bkey ? bkey : "");
  uint64_t now = now_ms();
  if (bk->requests++ == 0) bk->first_ms = now;
  if (bk->arrivals.len > 0) buf_str(&bk->arrivals, ", ");
  buf_printf(&bk->arrivals, "%lu", (unsigned long)(now - bk->first_ms));
  jv *req = json_parse(r->body, r->body_len);
  if (bk->bodies.len > 0) buf_str(&bk->bodies, ", ");
  if (req != NULL) jv_write(&bk->bodies, req);
  else buf_json_string(&bk->bodies, r->body, r->body_len);

  const char *forced = header_value(r, "x-mock-status");
  if (forced != NULL) {
    jv_free(req);
    int status = atoi(forced);
    if (status < 200 || status > 599) status = 500;
    const char *hd = status == 429 ?
      "retry-after-ms: 100\r\nx-ratelimit-remaining-requests: 0\r\n" : NULL;
    if (status == 429) bk->rejected++;
    const char *echo = header_value(r, "x-mock-echo-auth");
    const char *auth = header_value(r, "authorization");
    if (echo != NULL) {
      int dots = atoi(echo);
      if (dots < 0 || dots > 4096) dots = 0;
      buf m = {0};
      for (int i = 0; i < dots; i++) buf_str(&m, ".");
      buf_printf(&m, " you sent Authorization: %s", auth ? auth : "(none)");
      chat_error_h(c, r, status, "invalid_request_error", NULL, m.data, hd);
      buf_free(&m);
      return;
    }
    chat_error_h(c, r, status, status == 429 ? "rate_limit_error" : "server_error",
                 NULL, "status forced by X-Mock-Status", hd);
    return;
  }

  /* The bucket's limits: X-Mock-Concurrency, then X-Mock-RPM. */
  long climit = header_long(r, "x-mock-concurrency", 0);
  if (climit > 0 && bk->in_flight >= climit) {
    jv_free(req);
    bk->rejected++;
    buf m = {0};
    buf_printf(&m, "Too many concurrent requests: limit %ld in flight.", climit);
    chat_error_h(c, r, 429, "rate_limit_error", "rate_limit_exceeded", m.data,
                 "retry-after-ms: 50\r\n");
    buf_free(&m);
    return;
  }
  buf limit_headers = {0};
  long limit = header_long(r, "x-mock-rpm", 0);
  if (limit > 0) {
    long win = header_long(r, "x-mock-window-ms", 60000);
    uint64_t window = win > 0 ? (uint64_t)win : 60000;
    size_t keep = 0;
    for (size_t i = 0; i < bk->naccepted; i++)
      if (bk->accepted[i] + window > now) bk->accepted[keep++] = bk->accepted[i];
    bk->naccepted = keep;
    if ((long)keep >= limit) {
      jv_free(req);
      bk->rejected++;
      uint64_t wait = bk->accepted[0] + window - now;
      buf hd = {0}, m = {0};
      buf_printf(&hd, "retry-after-ms: %lu\r\nretry-after: %lu\r\n"
                 "x-ratelimit-limit-requests: %ld\r\nx-ratelimit-remaining-requests: 0\r\n"
                 "x-ratelimit-reset-requests: ", (unsigned long)wait,
                 (unsigned long)((wait + 999) / 1000), limit);
      reset_text(&hd, wait);
      buf_str(&hd, "\r\n");
      buf_printf(&m, "Rate limit reached for requests: limit %ld per %lu ms. "
                 "Please try again in %lums.", limit, (unsigned long)window, (unsigned long)wait);
      chat_error_h(c, r, 429, "rate_limit_error", "rate_limit_exceeded", m.data, hd.data);
      buf_free(&hd);
      buf_free(&m);
      return;
    }
    if (bk->naccepted == bk->capacc) {
      bk->capacc = bk->capacc ? bk->capacc * 2 : 16;
      bk->accepted = realloc(bk->accepted, bk->capacc * sizeof *bk->accepted);
      if (bk->accepted == NULL) exit(1);
    }
    bk->accepted[bk->naccepted++] = now;
    buf_printf(&limit_headers, "x-ratelimit-limit-requests: %ld\r\n"
               "x-ratelimit-remaining-requests: %ld\r\nx-ratelimit-reset-requests: ",
               limit, limit - (long)bk->naccepted);
    reset_text(&limit_headers, bk->accepted[0] + window - now);
    buf_str(&limit_headers, "\r\n");
  }

  jv *messages = jv_get(req, "messages");
  if (req == NULL || req->type != J_OBJ) {
    jv_free(req);
    buf_free(&limit_headers);
    chat_error(c, r, 400, "invalid_request_error", NULL,
               "the request body is not a JSON object");
    return;
  }
  if (messages == NULL || messages->type != J_ARR) {
    jv_free(req);
    buf_free(&limit_headers);
    chat_error(c, r, 400, "invalid_request_error", NULL,
               "'messages' must be a list");
    return;
  }
  int nm = 0;
  for (jv *m = messages->kids; m != NULL; m = m->next) nm++;
  chat_msg *ms = calloc((size_t)nm + 1, sizeof *ms);
  if (ms == NULL) exit(1);
  long prompt_tokens = 0;
  nm = 0;
  for (jv *m = messages->kids; m != NULL; m = m->next, nm++) {
    jv *role = jv_get(m, "role");
    ms[nm].role = role != NULL && role->type == J_STR ? role->str : "";
    content_text(jv_get(m, "content"), &ms[nm].text);
    buf_add(&ms[nm].text, "", 0);   /* never NULL */
    prompt_tokens += count_words(ms[nm].text.data, ms[nm].text.len);
  }
  answer *ans = calloc(1, sizeof *ans);
  if (ans == NULL) exit(1);
  decide(r, req, ms, nm, ans);
  long id = ++chat_count;
  long completion_tokens = count_words(ans->content.data ? ans->content.data : "",
                                       ans->content.len);
  for (int i = 0; i < ans->ncalls; i++)
    completion_tokens += 1 + count_words(ans->calls[i].args.data, ans->calls[i].args.len);
  long delay = header_long(r, "x-mock-delay-ms", 0);
  flight_begin(c, bk);
  jv *stream = jv_get(req, "stream");
  if (stream != NULL && stream->type == J_BOOL && stream->truth) {
    build_stream(c, r, req, ans, id, prompt_tokens, completion_tokens, limit_headers.data);
    c->busy = 1;
    if (delay > 0) uv_timer_start(&c->timer, on_stream_tick, (uint64_t)delay, 0);
    else stream_run(c, 1);
  } else {
    jv *model = jv_get(req, "model");
    buf b = {0};
    buf_printf(&b, "{\"id\": \"chatcmpl-mock-%ld\", \"object\": \"chat.completion\", "
               "\"created\": 1700000000, \"model\": ", id);
    if (model != NULL && model->type == J_STR) buf_json_string(&b, model->str, model->len);
    else buf_str(&b, "\"mock-model\"");
    buf_str(&b, ", \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", "
                "\"content\": ");
    if (ans->ncalls > 0) {
      buf_str(&b, "null, \"tool_calls\": [");
      for (int k = 0; k < ans->ncalls; k++) {
        if (k > 0) buf_str(&b, ", ");
        buf_printf(&b, "{\"id\": \"call_%ld_%d\", \"type\": \"function\", \"function\": "
                   "{\"name\": ", id, k);
        buf_json_string(&b, ans->calls[k].name.data, ans->calls[k].name.len);
        buf_str(&b, ", \"arguments\": ");
        buf_json_string(&b, ans->calls[k].args.data, ans->calls[k].args.len);
        buf_str(&b, "}}");
      }
      buf_str(&b, "]");
    } else {
      buf_json_string(&b, ans->content.data ? ans->content.data : "", ans->content.len);
    }
    buf_printf(&b, "}, \"finish_reason\": \"%s\"}], \"usage\": {\"prompt_tokens\": %ld, "
               "\"completion_tokens\": %ld, \"total_tokens\": %ld}}",
               ans->ncalls > 0 ? "tool_calls" : "stop",
               prompt_tokens, completion_tokens, prompt_tokens + completion_tokens);
    if (delay > 0) {
      buf out = {0};
      build(&out, 200, "application/json", b.data, b.len, 0, limit_headers.data, r->keep_alive);
      defer(c, r, &out, (uint64_t)delay);
    } else {
      respond_json(c, r, 200, &b, limit_headers.data);
      flight_end(c);
    }
    buf_free(&b);
  }
  for (int i = 0; i < ans->ncalls; i++) {
    buf_free(&ans->calls[i].name);
    buf_free(&ans->calls[i].args);
  }
  buf_free(&ans->content);
  free(ans);
  for (int i = 0; i < nm; i++) buf_free(&ms[i].text);
  free(ms);
  buf_free(&limit_headers);
  jv_free(req);
}

/* GET /v1/mock/stats, /v1/mock/requests, /v1/mock/reset ?key=K */
static void route_mock(conn *c, request *r, const char *what) {
  char key[128] = "";
  query_param(r, "key", key, sizeof key);
  bucket *bk = find_bucket(key);
  buf b = {0};
  if (strcmp(what, "stats") == 0) {
    buf_printf(&b, "{\"requests\": %ld, \"in_flight\": %ld, \"max_in_flight\": %ld, "
               "\"arrivals_ms\": [", bk->requests, bk->in_flight, bk->max_in_flight);
    buf_add(&b, bk->arrivals.data ? bk->arrivals.data : "", bk->arrivals.len);
    buf_printf(&b, "], \"rejected\": %ld}", bk->rejected);
  } else if (strcmp(what, "requests") == 0) {
    buf_str(&b, "[");
    buf_add(&b, bk->bodies.data ? bk->bodies.data : "", bk->bodies.len);
    buf_str(&b, "]");
  } else {
    long in_flight = bk->in_flight;
    bucket_clear(bk);
    bk->in_flight = bk->max_in_flight = in_flight;   /* those are still in flight */
    buf_str(&b, "{\"reset\": true}");
  }
  respond_json(c, r, 200, &b, NULL);
  buf_free(&b);
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
  } else if (strncmp(p, "/v1/mock/", 9) == 0 && (strcmp(p + 9, "stats") == 0 ||
             strcmp(p + 9, "requests") == 0 || strcmp(p + 9, "reset") == 0)) {
    route_mock(c, r, p + 9);
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

  while (buckets != NULL) {
    bucket *next = buckets->next;
    bucket_clear(buckets);
    free(buckets);
    buckets = next;
  }
  while (entries != NULL) {
    entry *next = entries->next;
    free(entries);
    entries = next;
  }
  uv_loop_close(loop);
  return 0;
}
