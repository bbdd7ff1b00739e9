/*
** The counting allocator.
*/
#include <stdlib.h>

#include <lauxlib.h>

#include "memory.h"
#include "scheduler.h"

typedef struct sl_memory {
  lua_Alloc prev;          /* the allocator it wraps */
  void *prev_ud;
  size_t used, limit;
} sl_memory;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sl_memory *m = ud;
  size_t old = ptr ? osize : 0;   /* without ptr, osize names a type */
  if (nsize > old && m->limit > 0 && sl_current != NULL &&
      m->used + (nsize - old) > m->limit)
    return NULL;
  void *p = m->prev(m->prev_ud, ptr, osize, nsize);
  if (p != NULL || nsize == 0) m->used = m->used - old + nsize;
  return p;
}

static sl_memory *installed(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  return f == counting_alloc ? ud : NULL;
}

void sl_memory_limit(lua_State *L, size_t limit) {
  sl_memory *m = installed(L);
  if (m == NULL) {
    m = malloc(sizeof *m);
    if (m == NULL) luaL_error(L, "not enough memory");
    m->prev = lua_getallocf(L, &m->prev_ud);
    /* Blocks allocated before the switch are freed through it too: start
       from what the state holds now so the count stays true. */
    m->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, counting_alloc, m);
  }
  m->limit = limit;
}

size_t sl_memory_get_limit(lua_State *L) {
  sl_memory *m = installed(L);
  return m ? m->limit : 0;
}

size_t sl_memory_used(lua_State *L) {
  sl_memory *m = installed(L);
  return m ? m->used : 0;
}

void sl_memory_remove(lua_State *L) {
  sl_memory *m = installed(L);
  if (m == NULL) return;
  lua_setallocf(L, m->prev, m->prev_ud);
  free(m);
}
