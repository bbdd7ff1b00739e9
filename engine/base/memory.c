/*
** The counting allocator.
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "memory.h"

typedef struct sl_memory {
  lua_Alloc prev;          /* the allocator it wraps */
  void *prev_ud;
  size_t used, limit;
  sl_memory_refuse_fn refuse;  /* asked before refusing, or NULL */
  void *refuse_ud;
} sl_memory;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sl_memory *m = ud;
  size_t old = ptr ? osize : 0;   /* without ptr, osize names a type */
  if (nsize > old && m->limit > 0 && m->used + (nsize - old) > m->limit &&
      (m->refuse == NULL || m->refuse(m->refuse_ud, m->limit)))
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
    m->refuse = NULL;
    m->refuse_ud = NULL;
    /* Blocks allocated before the switch are freed through it too: start
       from what the state holds now so the count stays true. */
    m->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, counting_alloc, m);
  }
  m->limit = limit;
}

void sl_memory_set_refuse(lua_State *L, sl_memory_refuse_fn fn, void *ud) {
  sl_memory *m = installed(L);
  if (m == NULL) return;
  m->refuse = fn;
  m->refuse_ud = ud;
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

int sl_memory_check(size_t bytes, char *err, size_t errlen) {
  if (bytes >= SL_MEMORY_MIN_LIMIT) return 0;
  snprintf(err, errlen, "a memory limit of %zu bytes cannot be meant: limits are in "
           "bytes and at least %zu MB (for 64 MB write 64 * 1024 * 1024 or \"64MB\")",
           bytes, SL_MEMORY_MIN_LIMIT >> 20);
  return -1;
}

int sl_memory_parse(const char *text, size_t default_unit, size_t *bytes,
                    char *err, size_t errlen) {
  static const struct { const char *name; size_t scale; } units[] = {
    {"b", 1}, {"kb", (size_t)1 << 10}, {"kib", (size_t)1 << 10},
    {"mb", (size_t)1 << 20}, {"mib", (size_t)1 << 20},
    {"gb", (size_t)1 << 30}, {"gib", (size_t)1 << 30}, {NULL, 0}
  };
  char *end;
  double v = strtod(text, &end);
  if (end == text || !(v > 0) || v != v) {
    snprintf(err, errlen, "'%s' is not a memory size (a number with an optional unit: "
             "B, KB, MB or GB)", text);
    return -1;
  }
  while (isspace((unsigned char)*end)) end++;
  size_t scale = default_unit;
  if (*end != '\0') {
    scale = 0;
    for (int i = 0; units[i].name != NULL; i++)
      if (strcasecmp(end, units[i].name) == 0) scale = units[i].scale;
    if (scale == 0) {
      snprintf(err, errlen, "'%s' has an unknown unit '%s' (B, KB, MB or GB)", text, end);
      return -1;
    }
  }
  double b = v * (double)scale;
  if (b > 1e18) {
    snprintf(err, errlen, "'%s' is more memory than any machine has", text);
    return -1;
  }
  *bytes = (size_t)b;
  return sl_memory_check(*bytes, err, errlen);
}
