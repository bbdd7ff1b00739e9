/*
** HTTP. ctx:http{method, url, headers, body, timeout, max_response} sends
** one request through libcurl's multi interface and suspends the calling
** step until the response is in; thousands may be in flight on the
** engine's one thread.
**
** Each engine gets a mux on its first request: a curl multi handle driven
** by the engine's loop (CURLMOPT_SOCKETFUNCTION gives each socket a
** uv_poll, CURLMOPT_TIMERFUNCTION one uv_timer), kept in the registry under
** the engine's address and torn down with the engine. A request is a C
** block with its easy handle, linked to the step waiting on it until the
** response is delivered or the step is cancelled, which removes it from the
** multi handle and frees it at once. curl's callbacks never call Lua:
** finished transfers are collected after curl returns, and their steps
** resumed from there.
**
** libcurl is loaded when the first request is made (dlopen), not when the
** engine starts: a process that never makes a request does not pay for
** libcurl and the dozens of libraries it links.
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <dlfcn.h>
#include <pthread.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "http.h"
#include "clock.h"
#include "ctx.h"
#include "error.h"
#include "exec.h"
#include "lifecycle.h"
#include "protect.h"
#include "scheduler.h"
#include "value.h"

/* {======================================================
** libcurl, loaded on first use
** ======================================================= */

static struct {
  CURLcode (*global_init)(long);
  void (*global_cleanup)(void);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *);
  CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
  const char *(*easy_strerror)(CURLcode);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_cleanup)(CURLM *);
  CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
  CURLMcode (*multi_add_handle)(CURLM *, CURL *);
  CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
  CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
  CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
  CURLMsg *(*multi_info_read)(CURLM *, int *);
  const char *(*multi_strerror)(CURLMcode);
  struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
  void (*slist_free_all)(struct curl_slist *);
  CURLcode (*easy_pause)(CURL *, int);
} api;
static char api_error[300];
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void load_api(void) {
  static const char *const names[] = {
    "libcurl.so.4", "libcurl-gnutls.so.4", "libcurl-nss.so.4", "libcurl.so", NULL
  };
  void *lib = NULL;
  for (const char *const *n = names; *n != NULL && lib == NULL; n++)
    lib = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    const char *why = dlerror();
    snprintf(api_error, sizeof api_error, "ctx:http needs libcurl, which could not be "
             "loaded (%s)", why ? why : "libcurl.so.4 not found");
    return;
  }
#define LOAD(field, sym)                                                    \
  if ((*(void **)&api.field = dlsym(lib, sym)) == NULL) {                   \
    snprintf(api_error, sizeof api_error, "libcurl lacks %s", sym);         \
    return;                                                                 \
  }
  LOAD(global_init, "curl_global_init")
  LOAD(global_cleanup, "curl_global_cleanup")
  LOAD(easy_init, "curl_easy_init")
  LOAD(easy_cleanup, "curl_easy_cleanup")
  LOAD(easy_setopt, "curl_easy_setopt")
  LOAD(easy_getinfo, "curl_easy_getinfo")
  LOAD(easy_strerror, "curl_easy_strerror")
  LOAD(multi_init, "curl_multi_init")
  LOAD(multi_cleanup, "curl_multi_cleanup")
  LOAD(multi_setopt, "curl_multi_setopt")
  LOAD(multi_add_handle, "curl_multi_add_handle")
  LOAD(multi_remove_handle, "curl_multi_remove_handle")
  LOAD(multi_assign, "curl_multi_assign")
  LOAD(multi_socket_action, "curl_multi_socket_action")
  LOAD(multi_info_read, "curl_multi_info_read")
  LOAD(multi_strerror, "curl_multi_strerror")
  LOAD(slist_append, "curl_slist_append")
  LOAD(slist_free_all, "curl_slist_free_all")
  LOAD(easy_pause, "curl_easy_pause")
#undef LOAD
  api_error[0] = '\0';
}

/* Loads libcurl once per process; returns NULL, or why it cannot be used. */
static const char *need_api(void) {
  pthread_once(&api_once, load_api);
  return api.slist_free_all != NULL && api_error[0] == '\0' ? NULL : api_error;
}

/* From here on the calls go through the loaded table. */
#define curl_global_init api.global_init
#define curl_global_cleanup api.global_cleanup
#define curl_easy_init api.easy_init
#define curl_easy_cleanup api.easy_cleanup
#undef curl_easy_setopt
#define curl_easy_setopt api.easy_setopt
#undef curl_easy_getinfo
#define curl_easy_getinfo api.easy_getinfo
#define curl_easy_strerror api.easy_strerror
#define curl_multi_init api.multi_init
#define curl_multi_cleanup api.multi_cleanup
#undef curl_multi_setopt
#define curl_multi_setopt api.multi_setopt
#define curl_multi_add_handle api.multi_add_handle
#define curl_multi_remove_handle api.multi_remove_handle
#define curl_multi_assign api.multi_assign
#define curl_multi_socket_action api.multi_socket_action
#define curl_multi_info_read api.multi_info_read
#define curl_multi_strerror api.multi_strerror
#define curl_slist_append api.slist_append
#define curl_slist_free_all api.slist_free_all
#define curl_easy_pause api.easy_pause

/* }====================================================== */

/* Registry field: a table mapping each engine (light userdata) to its mux. */
#define MUX_KEY "sluice.http"

#define DEFAULT_MAX_RESPONSE ((lua_Integer)64 << 20)
#define MAX_MAX_RESPONSE ((lua_Integer)1 << 40)
/* Bound on the response's header block, whatever max_response says. */
#define MAX_HEADER_BYTES ((size_t)1 << 20)

typedef struct mux mux;
typedef struct req req;

/* A socket curl asked to watch. */
typedef struct sock {
  uv_poll_t poll;
  mux *m;
  curl_socket_t fd;
  int events;                /* what curl asked to wait for */
  struct sock *next, *prev;
} sock;

struct mux {
  sl_core *e;
  CURLM *multi;
  uv_timer_t timer;
  sock *socks;               /* sockets watched now */
  req *reqs;                 /* requests in flight */
  int nhandles;              /* uv handles not yet closed: freed at 0 once closing */
  int nstreams;              /* streamed requests among reqs */
  int closing;
};

/* The stream object ctx:http{stream = true} returns: the response whose
   body is read piece by piece. It owns its request once it has one. */
typedef struct hstream {
  req *r;                    /* NULL once closed (or the engine closed) */
  sl_exec *x;                /* the step that opened it */
} hstream;

struct req {
  mux *m;
  sl_exec *t;                /* the waiting step; NULL once it no longer waits */
  sl_http_done_fn done;      /* or, for a request of the engine's own, this */
  void *done_ud;
  CURL *easy;
  struct curl_slist *headers;
  req *next, *prev;
  sl_buf body, head;         /* the response */
  size_t max_response;
  CURLcode code;
  unsigned char too_big, nomem;
  /* A streamed response: body holds what was received and not yet read. */
  unsigned char stream;
  unsigned char reading;     /* stage: 0 until the headers were delivered */
  unsigned char headers_done;/* the final response's header block ended */
  unsigned char finished;    /* the transfer ended (code says how) */
  unsigned char paused;      /* curl is paused: body is full */
  hstream *handle;           /* the Lua object, once made */
  char method[16];
  char where[192];
  char errbuf[CURL_ERROR_SIZE];
};

/* The mux and its handles. */

static void mux_handle_closed(mux *m) {
  sl_core *e = m->e;
  if (--m->nhandles == 0 && m->closing) free(m);
  sl_handles_closed(e->handles);
}

static void on_sock_closed(uv_handle_t *h) {
  sock *k = h->data;
  mux *m = k->m;
  free(k);
  mux_handle_closed(m);
}

static void drop_sock(sock *k) {
  mux *m = k->m;
  if (k->prev) k->prev->next = k->next;
  else m->socks = k->next;
  if (k->next) k->next->prev = k->prev;
  k->next = k->prev = NULL;
  uv_close((uv_handle_t *)&k->poll, on_sock_closed);
}

static void on_timer_closed(uv_handle_t *h) {
  mux_handle_closed(h->data);
}

/* Frees a request that is done or abandoned. */
static void req_free(req *r) {
  mux *m = r->m;
  if (r->stream) m->nstreams--;
  if (r->handle != NULL) r->handle->r = NULL;
  if (r->prev) r->prev->next = r->next;
  else m->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  if (r->easy != NULL) {
    curl_multi_remove_handle(m->multi, r->easy);
    curl_easy_cleanup(r->easy);
  }
  curl_slist_free_all(r->headers);
  sl_buf_free(&r->body);
  sl_buf_free(&r->head);
  free(r);
}

/* Writes url into out without its user information, query and fragment,
   which may hold secrets that have no place in an error message. */
static void safe_url(const char *url, char *out, size_t size) {
  const char *sep = strstr(url, "://");
  const char *host = sep ? sep + 3 : url;
  size_t alen = strcspn(host, "/?#");
  const char *at = NULL;
  for (const char *c = host; c < host + alen; c++)
    if (*c == '@') at = c;
  const char *rest = at ? at + 1 : host;
  size_t rlen = (size_t)(host + alen - rest) + strcspn(host + alen, "?#");
  snprintf(out, size, "%.*s%.*s", (int)(host - url), url, (int)rlen, rest);
}

static void push_failure(lua_State *L, req *r) {
  char msg[CURL_ERROR_SIZE + 512], url[256];
  const char *eff = NULL;
  curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &eff);
  safe_url(eff ? eff : "?", url, sizeof url);
  if (r->too_big || r->code == CURLE_FILESIZE_EXCEEDED)
    snprintf(msg, sizeof msg, "%s %s: the response exceeded %zu bytes "
             "(max_response)", r->method, url, r->max_response);
  else if (r->nomem)
    snprintf(msg, sizeof msg, "%s %s: not enough memory for the response",
             r->method, url);
  else
    snprintf(msg, sizeof msg, "%s %s failed: %s", r->method, url,
             r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->code));
  sl_error_push(L, r->code == CURLE_OPERATION_TIMEDOUT ? "timeout" : "error",
                msg, sl_io_step_name(r->t), r->where[0] ? r->where : NULL);
}

/* Pushes the response's headers as {lowercased name = value}; a name that
   repeats gets its values joined with ", ". */
static void push_headers(lua_State *L, req *r) {
  lua_newtable(L);
  const char *s = r->head.data, *end = s + r->head.len;
  while (s != NULL && s < end) {
    const char *eol = memchr(s, '\n', (size_t)(end - s));
    const char *next = eol ? eol + 1 : end;
    if (eol == NULL) eol = end;
    if (eol > s && eol[-1] == '\r') eol--;
    const char *colon = memchr(s, ':', (size_t)(eol - s));
    if (colon != NULL && colon > s && *s != ' ' && *s != '\t') {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *c = s; c < colon; c++)
        luaL_addchar(&b, (char)tolower((unsigned char)*c));
      luaL_pushresult(&b);                              /* t name */
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {           /* t name old */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);                                /* t */
    }
    s = next;
  }
}

/* Builds the outcome on the engine's thread, moves (ok, value) onto the
   step's coroutine and queues the step. Runs under a protected call. */
static int deliver_p(lua_State *L) {
  req *r = lua_touserdata(L, 1);
  sl_exec *t = r->t;
  if (!lua_checkstack(t->task.co, 2)) return luaL_error(L, "not enough memory");
  lua_pushboolean(L, r->code == CURLE_OK);
  if (r->code != CURLE_OK) {
    push_failure(L, r);
  } else {
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, r);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
  }
  lua_xmove(L, t->task.co, 2);
  r->t = NULL;
  t->task.wait_cancel = NULL;     /* done: a cancel before it resumes has nothing to stop */
  sl_task_wake(&t->task, 2);
  return 0;
}

/* {======================================================
** Streamed responses
** ======================================================= */

#define STREAM_MT "sluice.http_stream"
/* Bytes a stream holds unread before curl is paused. */
#define STREAM_HIGH_WATER ((size_t)1 << 20)

static void stream_unpause(req *r) {
  if (r->paused && r->easy != NULL && !r->finished) {
    r->paused = 0;
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
  }
}

/* Pushes what a read of r gives now: 1 and a chunk, 1 and nil at the end,
   or 0 and the failure; returns 0 (pushing nothing) when it must wait. */
static int stream_take(lua_State *L, req *r) {
  if (r->body.len > 0) {
    lua_pushboolean(L, 1);
    lua_pushlstring(L, r->body.data, r->body.len);
    sl_buf_reset(&r->body);
    stream_unpause(r);
    return 1;
  }
  if (!r->finished) return 0;
  lua_pushboolean(L, r->code == CURLE_OK);
  if (r->code == CURLE_OK) lua_pushnil(L);
  else push_failure(L, r);
  return 1;
}

/* Pushes the stream object for r: its status and headers, read and close. */
static void push_stream(lua_State *L, req *r) {
  hstream *h = lua_newuserdatauv(L, sizeof *h, 1);
  h->r = NULL;
  h->x = r->t;
  luaL_setmetatable(L, STREAM_MT);
  lua_createtable(L, 0, 2);
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, r);
  lua_setfield(L, -2, "headers");
  lua_setiuservalue(L, -2, 1);
  h->r = r;
  r->handle = h;
  r->reading = 1;
}

/* Delivers to the step waiting on stream request r what it waits for.
   Runs under a protected call. */
static int deliver_stream_p(lua_State *L) {
  req *r = lua_touserdata(L, 1);
  sl_exec *t = r->t;
  if (!lua_checkstack(t->task.co, 2)) return luaL_error(L, "not enough memory");
  if (!r->reading) {
    int ok = r->headers_done && r->easy != NULL;
    lua_pushboolean(L, ok);
    if (ok) push_stream(L, r);
    else push_failure(L, r);
  } else if (!stream_take(L, r)) {
    return 0;
  }
  lua_xmove(L, t->task.co, 2);
  r->t = NULL;
  t->task.wait_cancel = NULL;
  sl_task_wake(&t->task, 2);
  return 0;
}

/* Wakes the steps whose streams have something for them: the headers, a
   chunk, the end. */
static void feed_streams(mux *m) {
  sl_core *e = m->e;
  req *next;
  for (req *r = m->reqs; r != NULL; r = next) {
    next = r->next;
    if (!r->stream || r->t == NULL) continue;
    int ready = r->reading ? (r->body.len > 0 || r->finished) : (r->headers_done || r->finished);
    if (!ready) continue;
    int opening = !r->reading;
    if (sl_protect(e->L, deliver_stream_p, r, e->errmsg, sizeof e->errmsg) != LUA_OK && r->t) {
      sl_exec *t = r->t;
      r->t = NULL;
      t->task.wait_cancel = NULL;
      sl_step_stop_run(t->run, "error", e->errmsg);
    }
    /* A request that failed before its headers has nobody to hold it. */
    if (opening && r->handle == NULL && r->t == NULL) req_free(r);
  }
}

static hstream *check_stream(lua_State *L) {
  return luaL_checkudata(L, 1, STREAM_MT);
}

static int stream_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  if (!lua_toboolean(L, -2)) return lua_error(L);
  return 1;
}

static void stream_cancel(sl_task *t, void *data) {
  req *r = data;
  (void)t;
  r->t = NULL;
  req_free(r);
}

/* stream:read(): the next piece of the body as it arrives, or nil at its
   end; raises when the transfer fails midway (a connection cut before the
   response was whole, a timeout), as ctx:http does. Suspends only the
   step that opened the stream. */
static int stream_read(lua_State *L) {
  hstream *h = check_stream(L);
  req *r = h->r;
  if (r == NULL) return luaL_error(L, "the stream is closed");
  lua_settop(L, 1);
  if (stream_take(L, r)) {
    if (!lua_toboolean(L, -2)) return lua_error(L);
    return 1;
  }
  sl_exec *x = sl_exec_running(L);
  if (x == NULL || x != h->x)
    return luaL_error(L, "a stream is read by the step that opened it");
  sl_task_check_suspend(L, &x->task);
  r->t = x;
  return sl_task_suspend_io(L, &x->task, stream_cancel, r, stream_k, 0);
}

/* stream:close() (also when a to-be-closed variable holding it goes out of
   scope, and when it is collected): drops the transfer if it is still
   going. */
static int stream_close(lua_State *L) {
  hstream *h = check_stream(L);
  req *r = h->r;
  if (r != NULL && r->t == NULL) req_free(r);
  h->r = NULL;
  return 0;
}

static int stream_index(lua_State *L) {
  check_stream(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "read") == 0) {
    lua_pushcfunction(L, stream_read);
  } else if (strcmp(k, "close") == 0) {
    lua_pushcfunction(L, stream_close);
  } else {
    lua_getiuservalue(L, 1, 1);
    lua_getfield(L, -1, k);
  }
  return 1;
}

static void open_stream_mt(lua_State *L) {
  if (luaL_newmetatable(L, STREAM_MT)) {
    lua_pushcfunction(L, stream_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, stream_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, stream_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

/* }====================================================== */

/* Collects the transfers curl has finished, queues their steps and then
   resumes them. Called after curl returns, never from its callbacks. */
static void collect(mux *m) {
  sl_core *e = m->e;
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    req *r = NULL;
    CURLcode code = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (r == NULL) continue;
    curl_multi_remove_handle(m->multi, r->easy);   /* msg is invalid from here */
    r->code = code;
    if (r->stream) {
      /* The stream object reads what is left; a request nobody waits for
         or holds is done with. */
      r->finished = 1;
      if (r->t == NULL && r->handle == NULL) req_free(r);
      continue;
    }
    if (r->done != NULL) {
      long status = 0;
      char why[CURL_ERROR_SIZE + 64];
      curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
      int ok = code == CURLE_OK && status >= 200 && status < 300;
      if (code != CURLE_OK)
        snprintf(why, sizeof why, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(code));
      else
        snprintf(why, sizeof why, "the server answered %ld", status);
      sl_http_done_fn done = r->done;
      r->done = NULL;
      done(r->done_ud, ok, ok ? NULL : why);
      req_free(r);
      continue;
    }
    if (r->t != NULL && sl_protect(e->L, deliver_p, r, e->errmsg, sizeof e->errmsg) != LUA_OK && r->t) {
      /* The response did not fit in memory, most likely: let go of it and
         raise that in the step instead; fail the run only if even that
         cannot be done. */
      sl_buf_free(&r->body);
      sl_buf_free(&r->head);
      r->nomem = 1;
      r->code = CURLE_OUT_OF_MEMORY;
      if (sl_protect(e->L, deliver_p, r, e->errmsg, sizeof e->errmsg) != LUA_OK && r->t) {
        sl_exec *t = r->t;
        r->t = NULL;
        t->task.wait_cancel = NULL;
        sl_step_stop_run(t->run, "error", e->errmsg);
      }
    }
    req_free(r);
  }
  if (m->nstreams > 0) feed_streams(m);
  sl_sched_drain(&e->sched);
}

/* A socket is ready. On an error condition (a reset, say) libuv reports
   a failure and stops the poll: curl is told the socket is ready both ways
   so that its own recv or send finds the error and names it ("Connection
   reset by peer" rather than "select/poll returned error"), and the poll is
   restarted for as long as curl keeps the socket. Memory of a sock dropped
   meanwhile is freed only in its close callback, after this one. */
static void on_poll(uv_poll_t *h, int status, int events) {
  sock *k = h->data;
  mux *m = k->m;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(m->multi, k->fd, flags, &running);
  if (status < 0 && !uv_is_closing((uv_handle_t *)h) && !uv_is_active((uv_handle_t *)h))
    uv_poll_start(h, k->events, on_poll);
  collect(m);
}

static void on_timer(uv_timer_t *h) {
  mux *m = h->data;
  int running;
  curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect(m);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp,
                     void *socketp) {
  mux *m = userp;
  sock *k = socketp;
  (void)easy;
  if (m->closing) return 0;        /* every socket is being dropped anyway */
  if (what == CURL_POLL_REMOVE) {
    if (k != NULL) {
      curl_multi_assign(m->multi, s, NULL);
      drop_sock(k);
    }
    return 0;
  }
  if (k == NULL) {
    k = calloc(1, sizeof *k);
    if (k == NULL) return -1;
    if (uv_poll_init_socket(m->e->loop, &k->poll, s) != 0) {
      free(k);
      return -1;
    }
    k->poll.data = k;
    k->m = m;
    k->fd = s;
    k->next = m->socks;
    if (m->socks) m->socks->prev = k;
    m->socks = k;
    m->nhandles++;
    sl_handles_opened(m->e->handles);
    curl_multi_assign(m->multi, s, k);
  }
  k->events = 0;
  if (what & CURL_POLL_IN) k->events |= UV_READABLE;
  if (what & CURL_POLL_OUT) k->events |= UV_WRITABLE;
  return uv_poll_start(&k->poll, k->events, on_poll) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: (re)arm or stop the one timer. A zero timeout
   still goes through the loop: curl must not be called from here. */
static int on_curl_timer(CURLM *multi, long ms, void *userp) {
  mux *m = userp;
  (void)multi;
  if (m->closing) return 0;
  if (ms < 0) uv_timer_stop(&m->timer);
  else sl_timer_start(&m->timer, on_timer, (uint64_t)ms, 0);
  return 0;
}

/* Pushes the table of muxes, making it if make. Returns 0 when absent. */
static int push_muxes(lua_State *L, int make) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, MUX_KEY) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  if (!make) return 0;
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, MUX_KEY);
  return 1;
}

/* Returns the engine's mux, making it on first use. Raises on failure. */
static mux *open_mux(lua_State *L, sl_core *e) {
  push_muxes(L, 1);                                     /* muxes */
  mux *m = lua_rawgetp(L, -1, e) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  if (m != NULL) {
    lua_pop(L, 1);
    return m;
  }
  /* Reserve the slot first, so that storing the mux cannot fail. */
  lua_pushboolean(L, 0);
  lua_rawsetp(L, -2, e);
  const char *missing = need_api();
  if (missing != NULL) {
    lua_pushnil(L);
    lua_rawsetp(L, -2, e);
    luaL_error(L, "%s", missing);
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    luaL_error(L, "cannot initialize libcurl");
  m = calloc(1, sizeof *m);
  CURLM *multi = m ? curl_multi_init() : NULL;
  if (multi == NULL) {
    free(m);
    curl_global_cleanup();
    luaL_error(L, "not enough memory for HTTP");
  }
  m->e = e;
  m->multi = multi;
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, m);
  uv_timer_init(e->loop, &m->timer);
  m->timer.data = m;
  m->nhandles = 1;
  sl_handles_opened(e->handles);
  lua_pushlightuserdata(L, m);
  lua_rawsetp(L, -2, e);
  lua_pop(L, 1);
  return m;
}

void sl_http_close(sl_core *e) {
  lua_State *L = e->L;
  if (!push_muxes(L, 0)) return;
  mux *m = lua_rawgetp(L, -1, e) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawsetp(L, -2, e);
  lua_pop(L, 1);
  if (m == NULL) return;
  m->closing = 1;
  while (m->reqs != NULL) {
    req *r = m->reqs;
    if (r->t != NULL) r->t->task.wait_cancel = NULL;
    r->t = NULL;
    if (r->done != NULL) {
      sl_http_done_fn done = r->done;
      r->done = NULL;
      done(r->done_ud, 0, "the engine closed before the request ended");
    }
    req_free(r);
  }
  while (m->socks != NULL) drop_sock(m->socks);
  curl_multi_cleanup(m->multi);
  m->multi = NULL;
  curl_global_cleanup();
  uv_close((uv_handle_t *)&m->timer, on_timer_closed);
}

/* Callbacks of one transfer. */

static size_t on_header(char *data, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  /* A status line starts a new response (after 100 Continue, say): only
     the last one's headers are kept. */
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) sl_buf_reset(&r->head);
  if (r->head.len + len > MAX_HEADER_BYTES) {
    r->too_big = 1;
    return 0;
  }
  if (sl_buf_add(&r->head, data, len) != 0) {
    r->nomem = 1;
    return 0;
  }
  /* The blank line that ends a final (not 1xx) response's headers: a
     stream can be handed to its step. */
  if (r->stream && (len == 2 || len == 1) && (data[0] == '\r' || data[0] == '\n')) {
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200) r->headers_done = 1;
  }
  return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  if (r->stream) {
    /* A reader that falls behind pauses the transfer, not memory. */
    if (r->body.len >= STREAM_HIGH_WATER) {
      r->paused = 1;
      return CURL_WRITEFUNC_PAUSE;
    }
    r->headers_done = 1;
    if (sl_buf_add(&r->body, data, len) != 0) {
      r->nomem = 1;
      return 0;
    }
    return len;
  }
  if (len > r->max_response - r->body.len) {
    r->too_big = 1;
    return 0;
  }
  if (sl_buf_add(&r->body, data, len) != 0) {
    r->nomem = 1;
    return 0;
  }
  return len;
}

/* CURLOPT_OPENSOCKETFUNCTION: curl's sockets are otherwise inherited by
   every program ctx:exec starts, which would keep the engine's connections
   open for as long as such a program lives. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose,
                                 struct curl_sockaddr *a) {
  (void)ud; (void)purpose;
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* The step was cancelled (by its parent, a timeout or the engine shutting
   down): the transfer is dropped at once. */
static void http_cancel(sl_task *t, void *data) {
  req *r = data;
  (void)t;
  r->t = NULL;
  req_free(r);
}

/* The Lua side. */

static int http_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  if (!lua_toboolean(L, -2)) return lua_error(L);
  return 1;
}

/* The options every transfer of r to url has: where it goes, how it
   reports, and that it never signals or leaves http(s). */
static int setup_easy(CURL *h, req *r, const char *url) {
  return curl_easy_setopt(h, CURLOPT_URL, url) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)r) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_WRITEDATA, r) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_HEADERDATA, r) == CURLE_OK;
}

static const char *const http_options[] = {
  "method", "url", "headers", "body", "timeout", "max_response", "stream", NULL
};

static int opt_error(lua_State *L, const char *opt, const char *expected) {
  return luaL_argerror(L, 2, lua_pushfstring(L, "option '%s' must be %s, got %s",
                       opt, expected, luaL_typename(L, -1)));
}

/* Encodes the value at 1 as JSON into the buffer at 2 and returns true and
   the text, or false and why not. Called under lua_pcall, so the caller
   frees the buffer whatever happens. */
static int encode_p(lua_State *L) {
  sl_buf *b = lua_touserdata(L, 2);
  char err[256];
  int ok = sl_json_encode(L, 1, b, 0, err, sizeof err) == 0;
  lua_pushboolean(L, ok);
  if (ok) lua_pushlstring(L, b->data ? b->data : "", b->len);
  else lua_pushstring(L, err);
  return 2;
}

/* Is s a token (RFC 9110: method and header names)? */
static int is_token(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)s[i]) && strchr("!#$%&'*+-.^_`|~", s[i]) == NULL)
      return 0;
  return 1;
}

/* Checks the headers table at idx: names are tokens, values strings without
   line breaks. Sets *has_type and *has_expect. */
static void check_headers(lua_State *L, int idx, int *has_type, int *has_expect) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t klen, vlen;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "headers must map names to "
                    "strings, got %s = %s", luaL_typename(L, -2),
                    luaL_typename(L, -1)));
    const char *k = lua_tolstring(L, -2, &klen);
    const char *v = lua_tolstring(L, -1, &vlen);
    if (!is_token(k, klen))
      luaL_argerror(L, 2, lua_pushfstring(L, "bad header name '%s'", k));
    if (strcspn(v, "\r\n") != vlen)
      luaL_argerror(L, 2, lua_pushfstring(L, "the value of header '%s' holds "
                    "a line break or a zero byte", k));
    if (strcasecmp(k, "content-type") == 0) *has_type = 1;
    if (strcasecmp(k, "expect") == 0) *has_expect = 1;
    lua_pop(L, 1);
  }
}

/* Appends "name: value" (or "name;" for an empty value, curl's way of
   sending one) to the list; returns 0 on failure, freeing nothing. */
static int add_header(struct curl_slist **list, const char *name, const char *value) {
  size_t n = strlen(name), v = strlen(value);
  char *line = malloc(n + v + 3);
  if (line == NULL) return 0;
  if (v == 0) snprintf(line, n + 2, "%s;", name);
  else snprintf(line, n + v + 3, "%s: %s", name, value);
  struct curl_slist *l = curl_slist_append(*list, line);
  free(line);
  if (l == NULL) return 0;
  *list = l;
  return 1;
}

/*
** ctx:http(request) (or ctx:http(url) for a GET): sends the request and
** returns {status, headers = {lowercased name = value}, body}. request:
** url; method ("GET", or "POST" when there is a body); headers (name =
** value); body (a string, or a table sent as JSON); timeout (seconds for
** the whole exchange; exceeding it raises kind "timeout"); max_response
** (bytes of body accepted, 64 MiB when absent). A 4xx or 5xx response is
** returned like any other; a failure to get a response raises with curl's
** message. Proxies and TLS are as curl sets them by default (environment
** proxies are honoured).
*/
static int ctx_http(lua_State *L) {
  sl_exec *t = sl_ctx_check(L, 1);
  sl_core *e = sl_core_of(t);
  lua_settop(L, 2);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_createtable(L, 0, 1);
    lua_insert(L, 2);
    lua_setfield(L, 2, "url");
  }
  if (!lua_istable(L, 2))
    luaL_argerror(L, 2, lua_pushfstring(L, "request table or URL expected, "
                  "got %s", luaL_typename(L, 2)));
  sl_io_check_options(L, 2, http_options);
  size_t len, body_len = 0;
  const char *body = NULL, *method;
  int json = 0, has_type = 0, has_expect = 0;
  double timeout = 0;
  lua_Integer max_response = DEFAULT_MAX_RESPONSE;
  if (lua_getfield(L, 2, "url") != LUA_TSTRING)         /* 3: url */
    opt_error(L, "url", "a string");
  const char *url = lua_tolstring(L, 3, &len);
  if (len == 0 || strlen(url) != len) opt_error(L, "url", "a URL");
  switch (lua_getfield(L, 2, "body")) {                 /* 4: body */
    case LUA_TNIL:
      break;
    case LUA_TSTRING:
      body = lua_tolstring(L, 4, &body_len);
      break;
    case LUA_TTABLE: {
      sl_buf b;
      sl_buf_init(&b);
      lua_pushcfunction(L, encode_p);
      lua_pushvalue(L, 4);
      lua_pushlightuserdata(L, &b);
      int status = lua_pcall(L, 2, 2, 0);                /* ok text|msg */
      sl_buf_free(&b);
      if (status != LUA_OK) return lua_error(L);
      if (!lua_toboolean(L, -2))
        luaL_argerror(L, 2, lua_pushfstring(L, "the body cannot be sent as "
                      "JSON: %s", lua_tostring(L, -1)));
      lua_replace(L, 4);
      lua_pop(L, 1);
      body = lua_tolstring(L, 4, &body_len);
      json = 1;
      break;
    }
    default:
      opt_error(L, "body", "a string or a table (sent as JSON)");
  }
  if (lua_getfield(L, 2, "method") == LUA_TNIL) {       /* 5: method */
    lua_pop(L, 1);
    lua_pushstring(L, body != NULL ? "POST" : "GET");
  } else if (lua_type(L, 5) != LUA_TSTRING) {
    opt_error(L, "method", "a string");
  }
  method = lua_tolstring(L, 5, &len);
  if (!is_token(method, len) || len >= sizeof ((req *)0)->method)
    opt_error(L, "method", "an HTTP method");
  if (lua_getfield(L, 2, "headers") != LUA_TNIL) {      /* 6: headers */
    if (!lua_istable(L, 6)) opt_error(L, "headers", "a table");
    check_headers(L, 6, &has_type, &has_expect);
  }
  if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {      /* 7 */
    lua_Number s = lua_tonumber(L, 7);
    if (lua_type(L, 7) != LUA_TNUMBER || !(s > 0) || s > 1e9)
      opt_error(L, "timeout", "a positive number of seconds");
    timeout = (double)s;
  }
  if (lua_getfield(L, 2, "max_response") != LUA_TNIL) { /* 8 */
    int isint;
    max_response = lua_tointegerx(L, 8, &isint);
    if (!isint || max_response < 1 || max_response > MAX_MAX_RESPONSE)
      opt_error(L, "max_response", "a positive integer number of bytes");
  }
  int stream = 0;
  if (lua_getfield(L, 2, "stream") != LUA_TNIL) {       /* 9 */
    if (!lua_isboolean(L, 9)) opt_error(L, "stream", "true or false");
    stream = lua_toboolean(L, 9);
  }
  /* A request that announces a body gets one, if only an empty one. */
  if (body == NULL && (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0
                       || strcmp(method, "PATCH") == 0))
    body = "";
  sl_task_check_suspend(L, &t->task);
  if (e->closing) return luaL_error(L, "the engine is shutting down");
  mux *m = open_mux(L, e);
  char where[192];
  sl_io_where(L, where, sizeof where);

  /* From here on the request block owns what is made. */
  req *r = calloc(1, sizeof *r);
  if (r == NULL) return luaL_error(L, "not enough memory for a request");
  r->m = m;
  r->max_response = (size_t)max_response;
  memcpy(r->where, where, sizeof r->where);
  memcpy(r->method, method, strlen(method) + 1);
  r->next = m->reqs;
  if (m->reqs) m->reqs->prev = r;
  m->reqs = r;
  CURL *h = r->easy = curl_easy_init();
  int ok = h != NULL;
  if (ok && lua_istable(L, 6)) {
    lua_pushnil(L);
    while (ok && lua_next(L, 6)) {
      ok = add_header(&r->headers, lua_tostring(L, -2), lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    if (!ok) lua_pop(L, 1);
  }
  if (ok && json && !has_type)
    ok = add_header(&r->headers, "Content-Type", "application/json");
  if (ok && body != NULL && !has_expect)
    ok = (r->headers = curl_slist_append(r->headers, "Expect:")) != NULL;
  ok = ok
    && setup_easy(h, r, url)
    && curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_response) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK;
  if (ok && timeout > 0)
    ok = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000.0 + 0.5)) == CURLE_OK;
  if (ok && body != NULL) {
    ok = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) == CURLE_OK
      && curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body) == CURLE_OK;
    if (ok && strcmp(method, "POST") != 0)
      ok = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
  } else if (ok && strcmp(method, "HEAD") == 0) {
    ok = curl_easy_setopt(h, CURLOPT_NOBODY, 1L) == CURLE_OK;
  } else if (ok && strcmp(method, "GET") != 0) {
    ok = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
  }
  CURLMcode mc = ok ? curl_multi_add_handle(m->multi, h) : CURLM_OUT_OF_MEMORY;
  if (mc != CURLM_OK) {
    req_free(r);
    return luaL_error(L, "cannot start the request: %s", curl_multi_strerror(mc));
  }
  r->t = t;
  if (stream) {
    r->stream = 1;
    m->nstreams++;
  }
  return sl_task_suspend_io(L, &t->task, http_cancel, r, http_k, 0);
}

static int open_mux_p(lua_State *L) {
  sl_core *e = lua_touserdata(L, 1);
  *(mux **)lua_touserdata(L, 2) = open_mux(L, e);
  return 0;
}

int sl_http_post(sl_core *e, const char *url, const char *content_type,
                 const char *body, size_t len, long timeout_ms,
                 sl_http_done_fn done, void *ud, char *err, size_t errlen) {
  if (e->closing) {
    snprintf(err, errlen, "the engine is shutting down");
    return -1;
  }
  mux *m = NULL;
  lua_State *L = e->L;
  lua_pushcfunction(L, open_mux_p);
  lua_pushlightuserdata(L, e);
  lua_pushlightuserdata(L, &m);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(err, errlen, "not enough memory for a request");
    return -1;
  }
  r->m = m;
  r->max_response = 1 << 20;
  memcpy(r->method, "POST", 5);
  r->next = m->reqs;
  if (m->reqs) m->reqs->prev = r;
  m->reqs = r;
  char type[160];
  snprintf(type, sizeof type, "Content-Type: %s", content_type);
  CURL *h = r->easy = curl_easy_init();
  int ok = h != NULL
    && (r->headers = curl_slist_append(NULL, type)) != NULL
    && (r->headers = curl_slist_append(r->headers, "Expect:")) != NULL
    && setup_easy(h, r, url)
    && curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) == CURLE_OK
    && curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body) == CURLE_OK;
  CURLMcode mc = ok ? curl_multi_add_handle(m->multi, h) : CURLM_OUT_OF_MEMORY;
  if (mc != CURLM_OK) {
    req_free(r);
    snprintf(err, errlen, "cannot start the request: %s", curl_multi_strerror(mc));
    return -1;
  }
  r->done = done;
  r->done_ud = ud;
  return 0;
}

static const luaL_Reg http_methods[] = {
  {"http", ctx_http},
  {NULL, NULL}
};

void sl_http_open(lua_State *L, sl_core *e) {
  open_stream_mt(L);
  sl_ctx_register(L, e, http_methods);
}
