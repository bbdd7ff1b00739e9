/*
** `sluice ui` (ui.h): wires the HTTP server (serve.c) to the page's files
** and to the JSON API in lua/sluice/ui.lua, on the engine's own loop, so an
** answer to a paused run resumes it in this process while the page watches.
*/
#include "ui.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "serve.h"
#include "host.h"
#include "value.h"

typedef struct ui {
  lua_State *L;
  sl_engine *e;
  int handler;      /* registry ref: sluice.ui's handle */
  char *body;       /* the last API answer, kept until the server copies it */
  int stop;
} ui;

static const sl_ui_asset *asset(const char *path) {
  if (strcmp(path, "/") == 0) path = "/index.html";
  if (strcmp(path, "/favicon.ico") == 0) path = "/favicon.svg";
  for (const sl_ui_asset *a = sl_ui_assets; a->path; a++)
    if (strcmp(a->path, path) == 0) return a;
  return NULL;
}

static int traceback(lua_State *L) {
  luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

/* Answers {"error": msg}, written here: the failure may be Lua's own. */
static void set_json_error(ui *u, sl_http_response *res, int status, const char *msg) {
  sl_buf b;
  sl_buf_init(&b);
  int bad = sl_buf_add(&b, "{\"error\":", 9) != 0 || sl_json_add_string(&b, msg, strlen(msg)) != 0 ||
            sl_buf_add(&b, "}", 1) != 0;
  free(u->body);
  u->body = NULL;
  if (!bad) {
    u->body = malloc(b.len + 1);
    if (u->body) {
      memcpy(u->body, b.data, b.len);
      u->body[b.len] = '\0';
    }
  }
  size_t n = u->body ? b.len : 0;
  sl_buf_free(&b);
  static const char fallback[] = "{\"error\":\"not enough memory\"}";
  res->status = status;
  res->content_type = "application/json";
  res->body = u->body ? u->body : fallback;
  res->body_len = u->body ? n : sizeof fallback - 1;
}

static void on_request(void *ud, const sl_http_request *req, sl_http_response *res) {
  ui *u = ud;
  lua_State *L = u->L;
  if (strncmp(req->path, "/api/", 5) != 0) {
    const sl_ui_asset *a = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0
                               ? asset(req->path) : NULL;
    if (a == NULL) {
      static const char nf[] = "not found\n";
      res->status = 404;
      res->body = nf;
      res->body_len = sizeof nf - 1;
      return;
    }
    res->status = 200;
    res->content_type = a->type;
    res->body = (const char *)a->data;
    res->body_len = a->len;
    return;
  }
  int top = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, u->handler);
  sl_engine_push_box(L, u->e);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, req->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, req->path);
  lua_setfield(L, -2, "path");
  lua_createtable(L, 0, req->nargs);
  for (int i = 0; i < req->nargs; i++) {
    lua_pushstring(L, req->args[i].value ? req->args[i].value : "");
    lua_setfield(L, -2, req->args[i].key);
  }
  lua_setfield(L, -2, "query");
  lua_pushlstring(L, req->body, req->body_len);
  lua_setfield(L, -2, "body");
  if (req->content_type) lua_pushstring(L, req->content_type), lua_setfield(L, -2, "content_type");
  if (req->origin) lua_pushstring(L, req->origin), lua_setfield(L, -2, "origin");
  if (req->host) lua_pushstring(L, req->host), lua_setfield(L, -2, "host");
  if (lua_pcall(L, 2, 2, top + 1) != LUA_OK) {
    fprintf(stderr, "sluice ui: %s %s: %s\n", req->method, req->path, lua_tostring(L, -1));
    lua_settop(L, top);
    set_json_error(u, res, 500, "the request failed inside sluice (the ui's log says why)");
    return;
  }
  size_t n = 0;
  const char *text = lua_tolstring(L, -1, &n);
  free(u->body);
  u->body = malloc(n + 1);
  if (u->body == NULL || text == NULL) {
    lua_settop(L, top);
    set_json_error(u, res, 500, "not enough memory");
    return;
  }
  memcpy(u->body, text, n);
  u->body[n] = '\0';
  res->status = (int)lua_tointeger(L, -2);
  res->content_type = "application/json";
  res->body = u->body;
  res->body_len = n;
  lua_settop(L, top);
}

static ui *the_ui;

static void on_signal(uv_signal_t *h, int signum) {
  if (the_ui) the_ui->stop = 1;
  uv_stop(h->loop);
}

int sl_ui_run(lua_State *L, sl_engine *e, const char *store, const char *host, int port,
              char *err, size_t errlen) {
  ui u;
  memset(&u, 0, sizeof u);
  u.L = L;
  u.e = e;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice.ui");
  lua_call(L, 1, 1);                                    /* ui */
  lua_pushstring(L, store);
  lua_setfield(L, -2, "store");
  lua_getfield(L, -1, "handle");
  u.handler = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_loop_t *loop = sl_engine_loop(e);
  sl_server *s = sl_serve_start(loop, host, port, on_request, &u, err, errlen);
  if (s == NULL) {
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, u.handler);
    return -1;
  }
  /* The API answers only requests naming this server (no DNS rebinding). */
  lua_getfield(L, -1, "listening");
  lua_pushstring(L, host);
  lua_pushinteger(L, sl_serve_port(s));
  lua_call(L, 2, 0);
  lua_pop(L, 1);
  const char *fmt = strchr(host, ':') ? "http://[%s]:%d/\n" : "http://%s:%d/\n";
  printf(fmt, host, sl_serve_port(s));
  fflush(stdout);
  uv_signal_t sigint, sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  the_ui = &u;
  sl_host *h = &e->host;
  while (!u.stop) {
    h->in_uv_run = 1;
    uv_run(loop, UV_RUN_ONCE);
    h->in_uv_run = 0;
    sl_engine_drain(e);
  }
  the_ui = NULL;
  sl_serve_stop(s);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_run(loop, UV_RUN_NOWAIT);   /* the handles close */
  free(u.body);
  luaL_unref(L, LUA_REGISTRYINDEX, u.handler);
  return 0;
}
