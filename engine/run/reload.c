/*
** Loading and hot reload.
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "reload.h"
#include "clock.h"
#include "loader.h"
#include "state.h"
#include "plan.h"

#define LOADING_KEY "sluice.loading"

/* A watched directory and the engine it reloads. */
typedef struct watch_dir {
  uv_fs_event_t h;
  sl_host *host;
  struct watch_dir *next;
} watch_dir;

struct sl_watch {
  uv_timer_t debounce;
  sl_host *host;
  int debounce_ms;
  sl_reload_cb cb;
  void *ud;
  watch_dir *dirs;
  char **files;            /* absolute paths that trigger a reload */
  int nfiles;
};

void sl_reload_push_loading(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LOADING_KEY);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_getfield(L, -1, "engine");
  lua_remove(L, -2);
}

void sl_reload_note_file(lua_State *L, const char *path) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LOADING_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "files");
  lua_pushstring(L, path);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 2);
}

/* Ends a load in progress, whatever happened: the key must never outlive
   it, or later sl.kind calls would go to a snapshot nobody swaps in. */
static int end_loading(lua_State *L) {
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LOADING_KEY);
  return 0;
}

static int load_p(lua_State *L) {
  const char *path = lua_touserdata(L, 1);
  int loading = 3;
  sl_load_file(L, path);                                /* ... set */
  lua_getfield(L, loading, "kinds");                    /* ... set kinds */
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    sl_load_check(L, -1, -3);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

void sl_reload_load(lua_State *L, sl_host *e, const char *path) {
  luaL_checkstack(L, 8, "load");
  if (lua_getfield(L, LUA_REGISTRYINDEX, LOADING_KEY) != LUA_TNIL)
    luaL_error(L, "cannot load %s: another load is in progress", path);
  lua_pop(L, 1);
  /* The snapshot under construction: a copy of the current policy table
     that the file's registrations change, and the files the load reads. */
  lua_createtable(L, 0, 3);                             /* loading */
  int loading = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_box);
  lua_setfield(L, loading, "engine");
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->core.ref_kinds);
  sl_state_shallow_copy(L, -1);                         /* loading old kinds */
  lua_setfield(L, loading, "kinds");
  lua_pop(L, 1);
  lua_createtable(L, 4, 0);
  lua_pushstring(L, path);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, loading, "files");
  lua_pushvalue(L, loading);
  lua_setfield(L, LUA_REGISTRYINDEX, LOADING_KEY);

  lua_pushcfunction(L, load_p);
  lua_pushlightuserdata(L, (void *)path);
  lua_pushnil(L);
  lua_pushvalue(L, loading);
  int status = lua_pcall(L, 3, 1, 0);                   /* loading set|err */
  end_loading(L);
  if (status != LUA_OK) lua_error(L);
  /* Swap: one pointer for the policy table, one for the pipelines. */
  lua_getfield(L, loading, "kinds");
  lua_rawseti(L, LUA_REGISTRYINDEX, e->core.ref_kinds);
  lua_pushvalue(L, -1);
  lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_pipelines);
  lua_getfield(L, loading, "files");
  lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_files);
  if (e->load_path != path) {
    char *copy = strdup(path);
    if (copy != NULL) {
      free(e->load_path);
      e->load_path = copy;
    }
  }
  lua_remove(L, loading);
}

void sl_reload_again(lua_State *L, sl_host *e) {
  if (e->load_path == NULL) luaL_error(L, "nothing to reload: no file was loaded");
  /* e->load_path stays as it is through the load (see above). */
  sl_reload_load(L, e, e->load_path);
}

void sl_reload_expect(lua_State *L, sl_host *h, const char *path) {
  if (h->load_path != NULL) return;
  h->load_path = strdup(path);
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_files);
  lua_pushstring(L, path);
  lua_rawseti(L, -2, 1);
  lua_pop(L, 1);
}

void sl_reload_push_files(lua_State *L, sl_host *e) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_files);
}

/* Watching. */

static int reload_p(lua_State *L) {
  sl_host *e = lua_touserdata(L, 1);
  sl_reload_again(L, e);
  return 0;
}

static void on_debounced(uv_timer_t *h) {
  sl_host *e = h->data;
  sl_watch *w = e->watch;
  lua_State *L = e->core.L;
  sl_reload_cb cb = w->cb;
  void *ud = w->ud;
  int ms = w->debounce_ms;
  lua_pushcfunction(L, reload_p);
  lua_pushlightuserdata(L, e);
  int status = lua_pcall(L, 1, 0, 0);
  if (status == LUA_OK) {
    /* The new load may import other files: watch what it read now. */
    sl_reload_watch(e, ms, cb, ud);
    if (cb) cb(e, 0, NULL, ud);
  } else {
    if (cb) cb(e, SL_ESCRIPT, lua_tostring(L, -1), ud);
    lua_pop(L, 1);
  }
}

static int is_watched(sl_watch *w, const char *path) {
  for (int i = 0; i < w->nfiles; i++)
    if (strcmp(w->files[i], path) == 0) return 1;
  return 0;
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events,
                        int status) {
  watch_dir *d = h->data;
  sl_watch *w = d->host->watch;
  (void)events;
  if (w == NULL || status < 0) return;
  char dir[PATH_MAX];
  size_t len = sizeof dir;
  if (uv_fs_event_getpath(h, dir, &len) != 0) return;
  char path[PATH_MAX + 256];
  if (filename != NULL) snprintf(path, sizeof path, "%.*s/%s", (int)len, dir, filename);
  /* Editors save by writing, or by renaming a new file into place; either
     way an event names the file, and the debounce folds the burst. */
  if (filename == NULL || is_watched(w, path))
    sl_timer_start(&w->debounce, on_debounced, (uint64_t)w->debounce_ms, 0);
}

static void on_dir_closed(uv_handle_t *h) {
  watch_dir *d = h->data;
  sl_handles *handles = d->host->core.handles;
  free(d);
  sl_handles_closed(handles);
}

static void on_watch_closed(uv_handle_t *h) {
  sl_watch *w = h->data;
  sl_handles *handles = w->host->core.handles;
  for (int i = 0; i < w->nfiles; i++) free(w->files[i]);
  free(w->files);
  free(w);
  sl_handles_closed(handles);
}

void sl_reload_unwatch(sl_host *e) {
  sl_watch *w = e->watch;
  if (w == NULL) return;
  e->watch = NULL;
  for (watch_dir *d = w->dirs, *next; d != NULL; d = next) {
    next = d->next;
    uv_close((uv_handle_t *)&d->h, on_dir_closed);
  }
  w->debounce.data = w;
  uv_close((uv_handle_t *)&w->debounce, on_watch_closed);
}

static int watch_dir_of(sl_host *e, sl_watch *w, const char *file) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", file);
  char *slash = strrchr(dir, '/');
  if (slash == NULL) return 0;
  *slash = '\0';
  if (dir[0] == '\0') strcpy(dir, "/");
  for (watch_dir *d = w->dirs; d != NULL; d = d->next) {
    char have[PATH_MAX];
    size_t len = sizeof have;
    if (uv_fs_event_getpath(&d->h, have, &len) == 0 && len == strlen(dir) &&
        memcmp(have, dir, len) == 0)
      return 0;
  }
  watch_dir *d = calloc(1, sizeof *d);
  if (d == NULL) return UV_ENOMEM;
  d->host = e;
  d->h.data = d;
  uv_fs_event_init(e->core.loop, &d->h);
  sl_handles_opened(e->core.handles);
  d->next = w->dirs;
  w->dirs = d;
  return uv_fs_event_start(&d->h, on_fs_event, dir, 0);
}

int sl_reload_watch(sl_host *e, int debounce_ms, sl_reload_cb cb, void *ud) {
  lua_State *L = e->core.L;
  sl_reload_unwatch(e);
  sl_watch *w = calloc(1, sizeof *w);
  if (w == NULL) return UV_ENOMEM;
  w->host = e;
  w->cb = cb;
  w->ud = ud;
  w->debounce_ms = debounce_ms;
  uv_timer_init(e->core.loop, &w->debounce);
  w->debounce.data = e;
  sl_handles_opened(e->core.handles);
  e->watch = w;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_files);
  int n = (int)lua_rawlen(L, -1);
  w->files = calloc((size_t)n + 1, sizeof *w->files);
  int rc = w->files == NULL ? UV_ENOMEM : 0;
  for (int i = 1; i <= n && rc == 0; i++) {
    lua_rawgeti(L, -1, i);
    char real[PATH_MAX];
    const char *p = lua_tostring(L, -1);
    if (p != NULL && realpath(p, real) != NULL) {
      w->files[w->nfiles] = strdup(real);
      if (w->files[w->nfiles] != NULL) w->nfiles++;
      rc = watch_dir_of(e, w, real);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return rc;
}
