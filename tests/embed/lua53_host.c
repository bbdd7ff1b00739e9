/*
** A host that already holds another Lua: it opens Lua 5.3 with its symbols
** global (the worst case for a library that also uses Lua), runs a chunk
** in it, then loads the self-contained sluice library, checks that it
** refuses the 5.3 state as an engine's, runs a pipeline through the C API
** while waiting on the engine's descriptor, and checks that both Luas
** still work.
**   lua53_host LIBSLUICE_EMBED PIPELINE_FILE
** Prints the run's result JSON and "5.3 ok"; exits non-zero on a failure.
*/
#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "sluice.h"

typedef struct lua_State lua_State;

static void *need(void *lib, const char *name) {
  void *p = dlsym(lib, name);
  if (p == NULL) fprintf(stderr, "lua53_host: no %s: %s\n", name, dlerror());
  return p;
}

#define BIND(lib, name) __typeof__(name) *p_##name = need(lib, #name); \
  if (p_##name == NULL) return 1

/* Runs `return _VERSION` in a fresh Lua 5.3 state: 0 when it says 5.3. */
static int lua53_works(void *lua) {
  lua_State *(*newstate)(void) = need(lua, "luaL_newstate");
  void (*openlibs)(lua_State *) = need(lua, "luaL_openlibs");
  int (*loadstring)(lua_State *, const char *) = need(lua, "luaL_loadstring");
  int (*pcallk)(lua_State *, int, int, int, long, void *) = need(lua, "lua_pcallk");
  const char *(*tolstring)(lua_State *, int, size_t *) = need(lua, "lua_tolstring");
  void (*close)(lua_State *) = need(lua, "lua_close");
  if (!newstate || !openlibs || !loadstring || !pcallk || !tolstring || !close) return 1;
  lua_State *L = newstate();
  openlibs(L);
  int ok = loadstring(L, "return _VERSION") == 0 && pcallk(L, 0, 1, 0, 0, NULL) == 0
           && strcmp(tolstring(L, -1, NULL), "Lua 5.3") == 0;
  close(L);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: lua53_host LIBSLUICE_EMBED PIPELINE_FILE\n");
    return 2;
  }
  void *lua = dlopen("liblua5.3.so.0", RTLD_NOW | RTLD_GLOBAL);
  if (lua == NULL) {
    fprintf(stderr, "lua53_host: %s\n", dlerror());
    return 1;
  }
  if (lua53_works(lua) != 0) return 1;

  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
  if (lib == NULL) {
    fprintf(stderr, "lua53_host: %s\n", dlerror());
    return 1;
  }
  BIND(lib, sl_engine_new);
  BIND(lib, sl_engine_errmsg);
  BIND(lib, sl_engine_load);
  BIND(lib, sl_engine_free);
  BIND(lib, sl_engine_poll);
  BIND(lib, sl_engine_fd);
  BIND(lib, sl_engine_timeout);
  BIND(lib, sl_run_start);
  BIND(lib, sl_run_status);
  BIND(lib, sl_run_result_json);
  BIND(lib, sl_run_free);

  /* The library's Lua is its own: a host's state (here a 5.3 one) is
     refused, not used. */
  sl_engine *e;
  sl_run *r;
  lua_State *(*newstate)(void) = need(lua, "luaL_newstate");
  void (*close)(lua_State *) = need(lua, "lua_close");
  if (newstate == NULL || close == NULL) return 1;
  sl_engine_options o = SL_ENGINE_OPTIONS_INIT;
  o.L = newstate();
  if (p_sl_engine_new(&e, &o) != SL_EINVAL || e != NULL) {
    fprintf(stderr, "lua53_host: an engine took a Lua 5.3 state\n");
    return 1;
  }
  close(o.L);
  if (p_sl_engine_new(&e, NULL) != SL_OK) {
    fprintf(stderr, "lua53_host: %s\n", p_sl_engine_errmsg(NULL));
    return 1;
  }
  if (p_sl_engine_load(e, argv[2]) != SL_OK
      || p_sl_run_start(e, NULL, "{\"name\":\"Ada\"}", &r) != SL_OK) {
    fprintf(stderr, "lua53_host: %s\n", p_sl_engine_errmsg(e));
    return 1;
  }
  /* The host's loop: a turn, then wait on the descriptor until the next
     timer, until no run is active. */
  while (p_sl_engine_poll(e) > 0) {
    struct pollfd pfd = {p_sl_engine_fd(e), POLLIN, 0};
    poll(&pfd, 1, p_sl_engine_timeout(e));
  }
  int status = p_sl_run_status(r);
  printf("%s\n", status == SL_RUN_COMPLETED ? p_sl_run_result_json(r) : "not completed");
  p_sl_run_free(r);
  p_sl_engine_free(e);
  if (lua53_works(lua) != 0) return 1;
  printf("5.3 ok\n");
  dlclose(lib);
  dlclose(lua);
  return status == SL_RUN_COMPLETED ? 0 : 1;
}
