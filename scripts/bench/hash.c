/*
** Benchmark of cache keys and hits. Prints figures; checks nothing.
**
**   - XXH3-128 over 1 MB of bytes, and sl_cache_key over inputs whose
**     canonical JSON is about 1 MB (a table of records, one long string):
**     MB/s of canonical text;
**   - ns per cache hit on a small input: key computation, lookup and push
**     of the value (a string, and a small table, which is deep-copied);
**   - ns per remembered step version.
**
** Build against the library (after cmake --build build), from the top of
** the source tree:
**
**   cc -O2 -Iengine -Iengine/include $(pkg-config --cflags lua5.4 libuv) \
**      scripts/bench/hash.c -Lbuild -lsluice -Wl,-rpath,$PWD/build \
**      $(pkg-config --libs lua5.4 libxxhash) -o build/bench_hash
**   ./build/bench_hash
*/

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include <xxhash.h>

#include "cache.h"
#include "engine.h"
#include "value.h"


static double now_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


static void run_chunk (lua_State *L, const char *chunk) {
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "bench: %s\n", lua_tostring(L, -1));
    exit(1);
  }
}


/* Best of a few rounds of n calls of sl_cache_key on the value at the
   top; prints MB/s of canonical text. */
static void bench_key_throughput (sl_cache *c, lua_State *L,
                                  const char *what) {
  sl_buf b;
  char err[256];
  sl_key k;
  double best = 1e9;
  int round, i, n = 20;
  sl_buf_init(&b);
  if (sl_json_encode(L, -1, &b, SL_JSON_CANONICAL, err, sizeof err) != 0) {
    fprintf(stderr, "bench: %s\n", err);
    exit(1);
  }
  for (round = 0; round < 5; round++) {
    double t0 = now_s(), t;
    for (i = 0; i < n; i++) {
      if (sl_cache_key(c, L, -1, "bench@v1", 8, &k, err, sizeof err) != 0) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
      }
    }
    t = (now_s() - t0) / n;
    if (t < best)
      best = t;
  }
  printf("  key of %-34s %8.2f MB canonical  %8.1f MB/s\n", what,
         (double)b.len / 1e6, (double)b.len / 1e6 / best);
  sl_buf_free(&b);
}


/* ns per (key + get + pop) for the input at -2 and a value at -1 put
   under its key. */
static void bench_hit (sl_cache *c, lua_State *L, const char *what) {
  char err[256];
  sl_key k;
  double best = 1e9;
  int round, i, n = 1000000;
  if (sl_cache_key(c, L, -2, "greet@v1", 8, &k, err, sizeof err) != 0
      || sl_cache_put(c, L, &k, -1, 16, 0, "greet", 5) != 0) {
    fprintf(stderr, "bench: cannot store\n");
    exit(1);
  }
  for (round = 0; round < 5; round++) {
    double t0 = now_s(), t;
    for (i = 0; i < n; i++) {
      sl_cache_key(c, L, -2, "greet@v1", 8, &k, err, sizeof err);
      if (!sl_cache_get(c, L, &k, 0)) {
        fprintf(stderr, "bench: miss\n");
        exit(1);
      }
      lua_pop(L, 1);
    }
    t = (now_s() - t0) / n;
    if (t < best)
      best = t;
  }
  printf("  cache hit, %-33s %8.0f ns\n", what, best * 1e9);
}


int main (void) {
  lua_State *L = luaL_newstate();
  sl_cache *c;
  size_t n = 1 << 20;
  unsigned char *bytes = (unsigned char *)malloc(n);
  double best = 1e9, t0, t;
  volatile uint64_t sink = 0;
  size_t i;
  int round;
  sl_key k;
  char err[256];

  luaL_openlibs(L);
  if (bytes == NULL || sl_cache_new(L, 0, &c) != 0)
    return 1;
  for (i = 0; i < n; i++)
    bytes[i] = (unsigned char)(i * 131u + 7u);

  printf("hashing\n");
  for (round = 0; round < 20; round++) {
    t0 = now_s();
    sink ^= XXH3_128bits(bytes, n).low64;
    t = now_s() - t0;
    if (t < best)
      best = t;
  }
  printf("  XXH3-128 over 1 MiB of bytes              %8.1f MB/s\n",
         (double)n / 1e6 / best);

  run_chunk(L, "local t = {} for i = 1, 9000 do t[i] = {id = i, "
               "name = 'record number ' .. i, score = i / 7, "
               "tags = {'alpha', 'beta'}, ok = i % 2 == 0} end return t");
  bench_key_throughput(c, L, "a table of 9000 records");
  lua_pop(L, 1);
  run_chunk(L, "return string.rep('abcdefghij', 100000)");
  bench_key_throughput(c, L, "a 1 MB string");
  lua_pop(L, 1);

  printf("cache hits (key + lookup + push), small input {name = 'Ada'}\n");
  run_chunk(L, "return {name = 'Ada'}");
  run_chunk(L, "return 'Hello, Ada'");
  bench_hit(c, L, "string value");
  lua_pop(L, 1);
  run_chunk(L, "return {greeting = 'Hello, Ada', n = 1}");
  bench_hit(c, L, "small table value (copied)");
  lua_pop(L, 2);

  luaL_newmetatable(L, SL_STEP_MT);
  lua_setglobal(L, "STEP");
  run_chunk(L, "return setmetatable({kind = 'step', name = 'greet', "
               "run = function (input) return 'Hello, ' .. input.name end}, "
               "STEP)");
  sl_step_version(L, -1, &k, err, sizeof err);
  best = 1e9;
  for (round = 0; round < 5; round++) {
    int m = 1000000, j;
    t0 = now_s();
    for (j = 0; j < m; j++)
      sl_step_version(L, -1, &k, err, sizeof err);
    t = (now_s() - t0) / m;
    if (t < best)
      best = t;
  }
  printf("step version, remembered                    %8.0f ns\n", best * 1e9);
  lua_pop(L, 1);

  sl_cache_free(c);
  lua_close(L);
  free(bytes);
  return (int)(sink & 0);
}
