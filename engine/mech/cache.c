/*
** Cache: keys, step versions, the in-memory tier and single flight.
**
** The in-memory tier is a hash table of entries (open addressing, linear
** probing, keyed by the 128-bit key) threaded on a doubly linked recency
** list. Each entry's value lives in one Lua table, the anchor, at an
** integer slot; freed slots are reused, so the anchor stays a dense array
** and one registry ref serves the whole cache.
*/

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include <xxhash.h>

#include "cache.h"
#include "names.h"
#include "state.h"
#include "value.h"


/* A scratch buffer that grew past this is released after use. */
#define SCRATCH_KEEP  ((size_t)1 << 20)


/*
** {======================================================
** Keys
** =======================================================
*/

int sl_key_equal (const sl_key *a, const sl_key *b) {
  return a->lo == b->lo && a->hi == b->hi;
}


void sl_key_hex (const sl_key *k, char out[SL_KEY_HEXLEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  int i;
  for (i = 0; i < 16; i++) {
    uint64_t half = (i < 8) ? k->hi : k->lo;
    unsigned byte = (unsigned)(half >> (8 * (7 - (i % 8)))) & 0xFF;
    out[2 * i] = hex[byte >> 4];
    out[2 * i + 1] = hex[byte & 0xF];
  }
  out[SL_KEY_HEXLEN] = '\0';
}


/* Writes v as 8 little-endian bytes, so hashed bytes do not depend on the
   machine's byte order. */
static void put_u64 (unsigned char *p, uint64_t v) {
  int i;
  for (i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}


static void put_key (unsigned char *p, const sl_key *k) {
  put_u64(p, k->lo);
  put_u64(p + 8, k->hi);
}


/* The XXH3-128 hash of data[0..n) under seed, as a key. */
static void hash_bytes (const void *data, size_t n, uint64_t seed,
                        sl_key *out) {
  XXH128_hash_t h = XXH3_128bits_withSeed(data, n, seed);
  out->lo = h.low64;
  out->hi = h.high64;
}

/* }====================================================== */



/*
** {======================================================
** Step versions
** =======================================================
*/

/* Every kind of value hashes under a seed of its own, so values of
   different kinds never hash alike by construction. */
enum {
  TAG_NIL = 1, TAG_FALSE, TAG_TRUE, TAG_INTEGER, TAG_FLOAT, TAG_STRING,
  TAG_NULL, TAG_LIGHTUSERDATA, TAG_USERDATA, TAG_THREAD, TAG_CFUNCTION,
  TAG_LFUNCTION, TAG_CODE, TAG_TABLE, TAG_STEP, TAG_OPAQUE_TABLE, TAG_CYCLE
};

/* Its address is the registry key of the weak table step -> version. */
static const char versions_key = 0;

typedef struct Hasher {
  lua_State *L;
  int versions;         /* stack index of the registry's version table */
  int onpath;           /* stack index: object -> depth, while hashed */
  int memo;             /* stack index: table or function -> hash, for
                           this computation */
  const void *stepmt;   /* the step metatable, or NULL */
  int depth;
  char *err;
  size_t errlen;
} Hasher;


static int hash_value (Hasher *h, int idx, int as_upvalue, sl_key *out);


/* Reads a 16-byte hash string at the top into *out; pops it. Returns 1 if
   it was one, 0 (out untouched) if the top was something else. */
static int pop_hash (lua_State *L, sl_key *out) {
  size_t n = 0;
  const char *s = (lua_type(L, -1) == LUA_TSTRING) ? lua_tolstring(L, -1, &n)
                                                    : NULL;
  int ok = (s != NULL && n == 16);
  if (ok) {
    const unsigned char *p = (const unsigned char *)s;
    int i;
    out->lo = out->hi = 0;
    for (i = 7; i >= 0; i--) {
      out->lo = (out->lo << 8) | p[i];
      out->hi = (out->hi << 8) | p[8 + i];
    }
  }
  lua_pop(L, 1);
  return ok;
}


/* Stores *k as a 16-byte string under the object at idx in table t. */
static void store_hash (lua_State *L, int t, int idx, const sl_key *k) {
  unsigned char b[16];
  put_key(b, k);
  lua_pushvalue(L, idx);
  lua_pushlstring(L, (const char *)b, 16);
  lua_rawset(L, t);
}


/*
** Before hashing the table or function at idx: returns 1 with *out set
** when its hash is already known (memo, or versions for a step) or when
** it is on the path being hashed (a cycle, hashed as the distance back to
** it); otherwise marks it on the path and returns 0. Returns -1, with a
** message, past the depth limit.
*/
static int enter (Hasher *h, int idx, int cache, sl_key *out) {
  lua_State *L = h->L;
  lua_pushvalue(L, idx);
  lua_rawget(L, cache);
  if (pop_hash(L, out))
    return 1;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, h->onpath) == LUA_TNUMBER) {
    unsigned char b[8];
    put_u64(b, (uint64_t)(h->depth - lua_tointeger(L, -1)));
    lua_pop(L, 1);
    hash_bytes(b, sizeof b, TAG_CYCLE, out);
    return 1;
  }
  lua_pop(L, 1);
  if (h->depth >= SL_JSON_MAXDEPTH) {
    if (h->err != NULL && h->errlen > 0)
      snprintf(h->err, h->errlen, "step definition nested deeper than %d",
               SL_JSON_MAXDEPTH);
    return -1;
  }
  luaL_checkstack(L, 8, "step version");
  h->depth++;
  lua_pushvalue(L, idx);
  lua_pushinteger(L, h->depth);
  lua_rawset(L, h->onpath);
  return 0;
}


/* After hashing the object at idx to *k: off the path, into cache. */
static void leave (Hasher *h, int idx, int cache, const sl_key *k) {
  lua_State *L = h->L;
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, h->onpath);
  h->depth--;
  store_hash(L, cache, idx, k);
}


/* lua_dump writer collecting the dump in a luaL_Buffer opened on first
   use, as string.dump does: the function is then no longer at the top. */
typedef struct Dump {
  luaL_Buffer b;
  int open;
} Dump;

static int dump_writer (lua_State *L, const void *p, size_t n, void *ud) {
  Dump *d = (Dump *)ud;
  if (!d->open) {
    d->open = 1;
    luaL_buffinit(L, &d->b);
  }
  luaL_addlstring(&d->b, (const char *)p, n);
  return 0;
}


/*
** A stripped dump still holds the lines each function starts and ends at,
** so moving a function down its file would change its dump. This copies a
** Lua 5.4 dump with those two numbers made 0, walking the format of
** ldump.c. Anything it does not recognise makes it give up, and the dump
** is then hashed as it is: a version that changes more often than it
** should, never one that changes less.
*/
typedef struct Undump {
  const unsigned char *p, *end;
  unsigned char *out;
  size_t isize, intsize, numsize;   /* from the dump's header */
  int ok;
} Undump;


/* Copies n bytes. */
static void ud_copy (Undump *u, size_t n) {
  if (!u->ok || (size_t)(u->end - u->p) < n) {
    u->ok = 0;
    return;
  }
  memcpy(u->out, u->p, n);
  u->out += n;
  u->p += n;
}


/* Reads a size (7 bits a byte, most significant first, the last byte
   marked by 0x80) and copies it, or writes 0 in its place. */
static size_t ud_size (Undump *u, int keep) {
  const unsigned char *start = u->p;
  size_t x = 0;
  for (;;) {
    unsigned char b;
    if (!u->ok || u->p >= u->end || x > (SIZE_MAX >> 7)) {
      u->ok = 0;
      return 0;
    }
    b = *u->p++;
    x = (x << 7) | (b & 0x7F);
    if (b & 0x80)
      break;
  }
  if (keep) {
    memcpy(u->out, start, (size_t)(u->p - start));
    u->out += u->p - start;
  }
  else
    *u->out++ = 0x80;
  return x;
}


static void ud_string (Undump *u) {
  size_t n = ud_size(u, 1);  /* length + 1, or 0 for none */
  if (n > 0)
    ud_copy(u, n - 1);
}


static void ud_function (Undump *u, int depth) {
  size_t n, i;
  if (depth > 250) {  /* Lua nests functions far less deep */
    u->ok = 0;
    return;
  }
  ud_string(u);     /* source: none when stripped */
  ud_size(u, 0);    /* linedefined */
  ud_size(u, 0);    /* lastlinedefined */
  ud_copy(u, 3);    /* numparams, is_vararg, maxstacksize */
  n = ud_size(u, 1);
  if (n > SIZE_MAX / u->isize)
    u->ok = 0;
  else
    ud_copy(u, n * u->isize);  /* code */
  n = ud_size(u, 1);
  for (i = 0; i < n && u->ok; i++) {  /* constants */
    unsigned char tag = (u->p < u->end) ? *u->p : 0xFF;
    ud_copy(u, 1);
    switch (tag) {
      case 0x13: ud_copy(u, u->numsize); break;          /* float */
      case 0x03: ud_copy(u, u->intsize); break;          /* integer */
      case 0x04: case 0x14: ud_string(u); break;         /* strings */
      case 0x00: case 0x01: case 0x11: break;            /* nil, booleans */
      default: u->ok = 0; break;
    }
  }
  n = ud_size(u, 1);
  if (n > SIZE_MAX / 3)
    u->ok = 0;
  else
    ud_copy(u, 3 * n);  /* upvalue descriptions */
  n = ud_size(u, 1);
  for (i = 0; i < n && u->ok; i++)
    ud_function(u, depth + 1);
  for (i = 0; i < 4; i++) {  /* debug information, empty when stripped */
    if (ud_size(u, 1) != 0)
      u->ok = 0;
  }
}


/* Writes the normalized dump of in[0..n) to out (n bytes of room); returns
   its length, or 0 if in is not a dump this understands. */
static size_t normalize_dump (const unsigned char *in, size_t n,
                              unsigned char *out) {
  Undump u;
  u.p = in;
  u.end = in + n;
  u.out = out;
  u.ok = 1;
  if (n < 15 || memcmp(in, LUA_SIGNATURE, 4) != 0 || in[4] != 0x54)
    return 0;
  ud_copy(&u, 12);  /* signature, version, format, LUAC_DATA */
  u.isize = in[12];
  u.intsize = in[13];
  u.numsize = in[14];
  if (u.isize == 0)
    return 0;
  ud_copy(&u, 3 + u.intsize + u.numsize);  /* sizes, LUAC_INT, LUAC_NUM */
  ud_copy(&u, 1);  /* number of upvalues of the main function */
  ud_function(&u, 0);
  return (u.ok && u.p == u.end) ? (size_t)(u.out - out) : 0;
}


/*
** A Lua function: the hash of its stripped dump (code and constants, no
** names or line numbers) followed by the hashes of its upvalues.
*/
static int hash_lfunction (Hasher *h, int idx, sl_key *out) {
  lua_State *L = h->L;
  unsigned char *buf, *norm;
  const char *code;
  size_t len, normlen;
  int nups = 0, i, status;
  Dump d;
  sl_key k;
  if ((status = enter(h, idx, h->memo, out)) != 0)
    return (status > 0) ? 0 : -1;
  while (lua_getupvalue(L, idx, nups + 1) != NULL) {
    lua_pop(L, 1);
    nups++;
  }
  buf = (unsigned char *)lua_newuserdatauv(L, 16 * (size_t)(nups + 1), 0);
  lua_pushvalue(L, idx);
  d.open = 0;
  lua_dump(L, dump_writer, &d, 1);
  if (d.open)
    luaL_pushresult(&d.b);
  else
    lua_pushliteral(L, "");
  code = lua_tolstring(L, -1, &len);
  norm = (unsigned char *)lua_newuserdatauv(L, len, 0);
  normlen = normalize_dump((const unsigned char *)code, len, norm);
  if (normlen > 0)
    hash_bytes(norm, normlen, TAG_CODE, &k);
  else
    hash_bytes(code, len, TAG_CODE, &k);
  put_key(buf, &k);
  lua_pop(L, 3);  /* pop function copy, dump and its normalized copy */
  for (i = 1; i <= nups; i++) {
    lua_getupvalue(L, idx, i);
    status = hash_value(h, lua_gettop(L), 1, &k);
    lua_pop(L, 1);
    if (status != 0)
      return -1;
    put_key(buf + 16 * i, &k);
  }
  hash_bytes(buf, 16 * (size_t)(nups + 1), TAG_LFUNCTION, out);
  lua_pop(L, 1);  /* pop buf */
  leave(h, idx, h->memo, out);
  return 0;
}


/* Orders entries (key hash, value hash) bytewise. */
static int compare_entries (const void *a, const void *b) {
  return memcmp(a, b, 32);
}


/*
** A table: the sorted list of (key hash, value hash) of its entries, so
** the order they were inserted in does not matter. A step skips 'where'
** and hashes under its own seed, and its hash is remembered as its
** version.
*/
static int hash_table (Hasher *h, int idx, int is_step, sl_key *out) {
  lua_State *L = h->L;
  int cache = is_step ? h->versions : h->memo;
  unsigned char *buf;
  size_t n = 0, i = 0;
  int status;
  if ((status = enter(h, idx, cache, out)) != 0)
    return (status > 0) ? 0 : -1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {  /* push key, value */
    lua_pop(L, 1);
    n++;
  }
  buf = (unsigned char *)lua_newuserdatauv(L, 32 * (n ? n : 1), 0);
  lua_pushnil(L);
  while (lua_next(L, idx)) {  /* push key, value */
    sl_key k, v;
    int top = lua_gettop(L);
    /* A step's 'where' (the line it was written at) and what the engine
       keeps in it under private light-userdata keys are not its definition. */
    if (is_step && ((lua_type(L, top - 1) == LUA_TSTRING
                     && strcmp(lua_tostring(L, top - 1), "where") == 0)
                    || lua_type(L, top - 1) == LUA_TLIGHTUSERDATA)) {
      lua_pop(L, 1);
      continue;
    }
    if (hash_value(h, top - 1, 0, &k) != 0 || hash_value(h, top, 0, &v) != 0)
      return -1;
    put_key(buf + 32 * i, &k);
    put_key(buf + 32 * i + 16, &v);
    i++;
    lua_pop(L, 1);  /* pop value, keep key */
  }
  qsort(buf, i, 32, compare_entries);
  hash_bytes(buf, 32 * i, is_step ? TAG_STEP : TAG_TABLE, out);
  lua_pop(L, 1);  /* pop buf */
  leave(h, idx, cache, out);
  return 0;
}


/*
** Hashes the value at absolute index idx into *out. as_upvalue: the value
** is a function's upvalue, where tables count by their type only.
** Returns 0, or -1 with a message. Leaves the stack as it found it.
*/
static int hash_value (Hasher *h, int idx, int as_upvalue, sl_key *out) {
  lua_State *L = h->L;
  unsigned char b[8];
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      hash_bytes(NULL, 0, TAG_NIL, out);
      return 0;
    case LUA_TBOOLEAN:
      hash_bytes(NULL, 0, lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE, out);
      return 0;
    case LUA_TNUMBER: {
      lua_Integer i = lua_tointeger(L, idx);  /* 0 for a non-integral float */
      lua_Number f = lua_tonumber(L, idx);
      /* 2 and 2.0 are the same number here, as in canonical JSON. */
      if (lua_isinteger(L, idx)
          || (lua_numbertointeger(f, &i) && (lua_Number)i == f)) {
        put_u64(b, (uint64_t)i);
        hash_bytes(b, 8, TAG_INTEGER, out);
      }
      else {
        double d = (f != f) ? (double)NAN : (double)f;  /* one NaN */
        uint64_t bits;
        memcpy(&bits, &d, 8);
        put_u64(b, bits);
        hash_bytes(b, 8, TAG_FLOAT, out);
      }
      return 0;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      hash_bytes(s, n, TAG_STRING, out);
      return 0;
    }
    case LUA_TLIGHTUSERDATA:
      /* An address means nothing in another process; only NULL, the JSON
         null, is told apart. */
      hash_bytes(NULL, 0, lua_touserdata(L, idx) == NULL ? TAG_NULL
                                                         : TAG_LIGHTUSERDATA,
                 out);
      return 0;
    case LUA_TFUNCTION:
      if (lua_iscfunction(L, idx)) {
        int nups = 0;
        while (lua_getupvalue(L, idx, nups + 1) != NULL) {
          lua_pop(L, 1);
          nups++;
        }
        put_u64(b, (uint64_t)nups);
        hash_bytes(b, 8, TAG_CFUNCTION, out);
        return 0;
      }
      return hash_lfunction(h, idx, out);
    case LUA_TTABLE: {
      int is_step = 0;
      if (as_upvalue) {
        hash_bytes(NULL, 0, TAG_OPAQUE_TABLE, out);
        return 0;
      }
      if (h->stepmt != NULL && lua_getmetatable(L, idx)) {
        is_step = (lua_topointer(L, -1) == h->stepmt);
        lua_pop(L, 1);
      }
      return hash_table(h, idx, is_step, out);
    }
    case LUA_TTHREAD:
      hash_bytes(NULL, 0, TAG_THREAD, out);
      return 0;
    default:
      hash_bytes(NULL, 0, TAG_USERDATA, out);
      return 0;
  }
}


/* Pushes the registry's weak-keyed table step -> version, made once. */
static void push_versions (lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &versions_key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &versions_key);
}


int sl_cache_version (lua_State *L, int step_idx, sl_key *out,
                     char *err, size_t errlen) {
  int top = lua_gettop(L);
  int status;
  Hasher h;
  step_idx = lua_absindex(L, step_idx);
  if (!lua_istable(L, step_idx)) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "a step table expected, got %s",
               luaL_typename(L, step_idx));
    return SL_EINVAL;
  }
  luaL_checkstack(L, 8, "step version");
  push_versions(L);
  lua_pushvalue(L, step_idx);
  lua_rawget(L, -2);
  if (pop_hash(L, out)) {  /* the fast path: computed before */
    lua_settop(L, top);
    return 0;
  }
  h.L = L;
  h.versions = lua_gettop(L);
  lua_newtable(L);
  h.onpath = lua_gettop(L);
  lua_newtable(L);
  h.memo = lua_gettop(L);
  luaL_getmetatable(L, SL_STEP_MT);
  h.stepmt = lua_istable(L, -1) ? lua_topointer(L, -1) : NULL;
  lua_pop(L, 1);  /* the versions table keeps no reference to it */
  h.depth = 0;
  h.err = err;
  h.errlen = errlen;
  status = hash_table(&h, step_idx, 1, out);
  lua_settop(L, top);
  return (status == 0) ? 0 : SL_EINVAL;
}

/* }====================================================== */



/*
** {======================================================
** The index: an open-addressing table of records whose first member is
** their sl_key
** =======================================================
*/

typedef struct Index {
  void **slots;         /* NULL until the first insertion */
  size_t mask;          /* capacity - 1; capacity is a power of 2 */
  size_t count;
} Index;


/* The slot an item with key k would rather be in. The keys are hashes
   already, so their low bits are as good as any. */
static size_t home (const Index *ix, const sl_key *k) {
  return (size_t)k->lo & ix->mask;
}


/* The slot holding the item with key k, or NULL. */
static void **index_find (const Index *ix, const sl_key *k) {
  size_t i;
  if (ix->slots == NULL)
    return NULL;
  for (i = home(ix, k); ix->slots[i] != NULL; i = (i + 1) & ix->mask) {
    if (sl_key_equal((const sl_key *)ix->slots[i], k))
      return &ix->slots[i];
  }
  return NULL;
}


/* Puts item, whose key is not in ix, in its place. Room is assumed. */
static void index_place (Index *ix, void *item) {
  size_t i = home(ix, (const sl_key *)item);
  while (ix->slots[i] != NULL)
    i = (i + 1) & ix->mask;
  ix->slots[i] = item;
}


/* Adds item, whose key is not in ix yet. Returns 0, or -1 on OOM. The
   table stays at most half full, which keeps probes short. */
static int index_add (Index *ix, void *item) {
  if (ix->slots == NULL || (ix->count + 1) * 2 > ix->mask + 1) {
    size_t cap = (ix->slots == NULL) ? 16 : (ix->mask + 1) * 2, i;
    void **old = ix->slots;
    size_t oldcap = (old == NULL) ? 0 : ix->mask + 1;
    void **slots = (void **)calloc(cap, sizeof(void *));
    if (slots == NULL)
      return -1;
    ix->slots = slots;
    ix->mask = cap - 1;
    for (i = 0; i < oldcap; i++) {
      if (old[i] != NULL)
        index_place(ix, old[i]);
    }
    free(old);
  }
  index_place(ix, item);
  ix->count++;
  return 0;
}


/*
** Empties the slot, then moves back the items after it that probing
** would no longer find: those whose home is not cyclically within
** (hole, j].
*/
static void index_remove (Index *ix, void **slot) {
  size_t hole = (size_t)(slot - ix->slots), j = hole;
  ix->slots[hole] = NULL;
  for (;;) {
    size_t h;
    j = (j + 1) & ix->mask;
    if (ix->slots[j] == NULL)
      break;
    h = home(ix, (const sl_key *)ix->slots[j]);
    if ((hole <= j) ? (h <= hole || h > j) : (h <= hole && h > j)) {
      ix->slots[hole] = ix->slots[j];
      ix->slots[j] = NULL;
      hole = j;
    }
  }
  ix->count--;
}


static void index_free (Index *ix) {
  free(ix->slots);
  ix->slots = NULL;
  ix->mask = ix->count = 0;
}

/* }====================================================== */



/*
** {======================================================
** The in-memory tier
** =======================================================
*/

typedef struct Entry {
  sl_key key;                   /* first: the index reads it there */
  struct Entry *newer, *older;  /* the recency list */
  size_t charged;               /* bytes counted against the bound */
  uint64_t expires_ms;          /* 0: never */
  lua_Integer slot;             /* where the value is in the anchor */
  size_t namelen;
  char name[1];                 /* the step's name, NUL-terminated */
} Entry;

typedef struct Flight {
  sl_key key;                   /* first: the index reads it there */
  void **waiters;               /* followers, in the order they came */
  size_t n, cap;
} Flight;

struct sl_cache {
  lua_State *L;                 /* the state the anchor lives in */
  int ref;                      /* registry ref of the anchor table */
  Index entries;
  Index flights;
  Entry *newest, *oldest;
  size_t bytes, max_bytes;
  lua_Integer *free_slots;      /* room for every slot ever used */
  size_t nfree;
  lua_Integer top_slot;         /* highest slot ever used */
  sl_buf scratch;               /* canonical text of inputs, for keys */
  uint64_t hits, misses, evictions, expirations;
};

/* Its address, as a light userdata, stands for a nil value in the anchor,
   where nil itself would leave a hole. */
static const char nil_value = 0;


/* Unlinks e from the recency list. */
static void unlink_entry (sl_cache *c, Entry *e) {
  if (e->newer != NULL) e->newer->older = e->older;
  else c->newest = e->older;
  if (e->older != NULL) e->older->newer = e->newer;
  else c->oldest = e->newer;
  e->newer = e->older = NULL;
}


/* Links e at the front of the recency list. */
static void link_newest (sl_cache *c, Entry *e) {
  e->newer = NULL;
  e->older = c->newest;
  if (c->newest != NULL) c->newest->newer = e;
  else c->oldest = e;
  c->newest = e;
}


/* Drops e: releases its slot in the anchor (at index anchor of L) and
   its memory. Allocates nothing and cannot raise. */
static void drop_entry (sl_cache *c, lua_State *L, int anchor, Entry *e) {
  void **slot = index_find(&c->entries, &e->key);
  lua_pushnil(L);
  lua_rawseti(L, anchor, e->slot);  /* the key exists: no allocation */
  c->free_slots[c->nfree++] = e->slot;
  unlink_entry(c, e);
  if (slot != NULL)
    index_remove(&c->entries, slot);
  c->bytes -= e->charged;
  free(e);
}


/* Drops the oldest entries while more than max_bytes are held, sparing
   keep. The anchor is at index anchor of L. */
static void evict (sl_cache *c, lua_State *L, int anchor, const Entry *keep) {
  while (c->bytes > c->max_bytes && c->oldest != NULL && c->oldest != keep) {
    drop_entry(c, L, anchor, c->oldest);
    c->evictions++;
  }
}


int sl_cache_new (lua_State *L, size_t max_bytes, sl_cache **out) {
  sl_cache *c;
  int ref;
  *out = NULL;
  lua_newtable(L);
  ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* may raise, before any malloc */
  c = (sl_cache *)calloc(1, sizeof *c);
  if (c == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return SL_ENOMEM;
  }
  c->L = L;
  c->ref = ref;
  c->max_bytes = (max_bytes != 0) ? max_bytes : SL_CACHE_DEFAULT_BYTES;
  sl_buf_init(&c->scratch);
  *out = c;
  return 0;
}


void sl_cache_free (sl_cache *c) {
  Entry *e;
  size_t i;
  if (c == NULL)
    return;
  for (e = c->newest; e != NULL; ) {
    Entry *next = e->older;
    free(e);
    e = next;
  }
  for (i = 0; c->flights.slots != NULL && i <= c->flights.mask; i++) {
    Flight *f = (Flight *)c->flights.slots[i];
    if (f != NULL) {
      free(f->waiters);
      free(f);
    }
  }
  index_free(&c->entries);
  index_free(&c->flights);
  luaL_unref(c->L, LUA_REGISTRYINDEX, c->ref);
  free(c->free_slots);
  sl_buf_free(&c->scratch);
  free(c);
}


void sl_cache_set_max_bytes (sl_cache *c, size_t max_bytes) {
  lua_State *L = c->L;
  c->max_bytes = (max_bytes != 0) ? max_bytes : SL_CACHE_DEFAULT_BYTES;
  luaL_checkstack(L, 2, "cache");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
  evict(c, L, lua_gettop(L), NULL);
  lua_pop(L, 1);
}


/* Writes a scalar value (nil, a boolean, a finite number, a string) into
   b as a tag byte that no JSON text starts with, a type letter and its
   bytes, so a key costs no encoding; returns 0 for anything else (a
   table, a non-finite number). A number with an integral value is written
   as that integer, so 2 and 2.0 hash alike, as in JSON. */
static int scalar_key (lua_State *L, int idx, sl_buf *b) {
  unsigned char head[10];
  head[0] = 0x01;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      head[1] = 'z';
      return sl_buf_add(b, (const char *)head, 2) == 0;
    case LUA_TBOOLEAN:
      head[1] = lua_toboolean(L, idx) ? 't' : 'f';
      return sl_buf_add(b, (const char *)head, 2) == 0;
    case LUA_TNUMBER: {
      lua_Integer i;
      if (lua_isinteger(L, idx)) {
        i = lua_tointeger(L, idx);
      } else {
        lua_Number n = lua_tonumber(L, idx);
        if (n != n || n == HUGE_VAL || n == -HUGE_VAL) return 0;
        if (n == floor(n) && n >= -9.2233720368547758e18 && n < 9.2233720368547758e18) {
          i = (lua_Integer)n;
        } else {
          uint64_t bits;
          memcpy(&bits, &n, sizeof bits);
          head[1] = 'd';
          put_u64(head + 2, bits);
          return sl_buf_add(b, (const char *)head, 10) == 0;
        }
      }
      head[1] = 'i';
      put_u64(head + 2, (uint64_t)i);
      return sl_buf_add(b, (const char *)head, 10) == 0;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *str = lua_tolstring(L, idx, &n);
      head[1] = 's';
      return sl_buf_add(b, (const char *)head, 2) == 0 && sl_buf_add(b, str, n) == 0;
    }
    default:
      return 0;
  }
}


int sl_cache_key (sl_cache *c, lua_State *L, int idx, const char *identity,
                  size_t idlen, sl_key *out, char *err, size_t errlen) {
  sl_buf *b = &c->scratch;
  unsigned char len[8];
  int status = 0;
  sl_buf_reset(b);
  /* The identity's length first, so no identity can run into the text. */
  put_u64(len, (uint64_t)idlen);
  if (sl_buf_add(b, (const char *)len, 8) != 0
      || sl_buf_add(b, identity, idlen) != 0) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "not enough memory");
    status = SL_ENOMEM;
  }
  else if (!scalar_key(L, idx, b) &&
           sl_json_encode(L, idx, b, SL_JSON_CANONICAL, err, errlen) != 0)
    status = SL_EINVAL;
  else
    hash_bytes(b->data, b->len, 0, out);
  if (b->cap > SCRATCH_KEEP)
    sl_buf_free(b);
  return status;
}


int sl_cache_get (sl_cache *c, lua_State *L, const sl_key *key,
                  uint64_t now_ms) {
  void **slot = index_find(&c->entries, key);
  Entry *e;
  if (slot == NULL) {
    c->misses++;
    return 0;
  }
  e = (Entry *)*slot;
  luaL_checkstack(L, 3, "cache");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);  /* anchor */
  if (e->expires_ms != 0 && now_ms >= e->expires_ms) {
    drop_entry(c, L, lua_gettop(L), e);
    lua_pop(L, 1);
    c->expirations++;
    c->misses++;
    return 0;
  }
  c->hits++;
  if (c->newest != e) {
    unlink_entry(c, e);
    link_newest(c, e);
  }
  switch (lua_rawgeti(L, -1, e->slot)) {  /* anchor value */
    case LUA_TTABLE:
      sl_state_copy(L, -1);  /* anchor value copy */
      lua_replace(L, -3);
      lua_pop(L, 1);
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, -1) == (void *)&nil_value) {
        lua_pop(L, 2);
        lua_pushnil(L);
        break;
      }
      /* FALLTHROUGH */
    default:
      lua_remove(L, -2);
      break;
  }
  return 1;
}


int sl_cache_put (sl_cache *c, lua_State *L, const sl_key *key, int idx,
                  size_t size, uint64_t expires_ms,
                  const char *step, size_t steplen) {
  int top = lua_gettop(L), anchor;
  lua_Integer slot;
  void **old;
  Entry *e;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, "cache");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
  anchor = lua_gettop(L);
  /* A new value for a key replaces the old, even when it is not kept. */
  old = index_find(&c->entries, key);
  if (old != NULL)
    drop_entry(c, L, anchor, (Entry *)*old);
  if (size > c->max_bytes || c->max_bytes - size < SL_CACHE_ENTRY_OVERHEAD) {
    lua_settop(L, top);
    return 1;
  }
  /* Lua work that may raise comes first, while nothing is half done. */
  switch (lua_type(L, idx)) {
    case LUA_TTABLE: sl_state_copy(L, idx); break;
    case LUA_TNIL: lua_pushlightuserdata(L, (void *)&nil_value); break;
    default: lua_pushvalue(L, idx); break;
  }
  if (c->nfree > 0)
    slot = c->free_slots[c->nfree - 1];
  else {
    lua_Integer *grown;
    slot = c->top_slot + 1;
    grown = (lua_Integer *)realloc(c->free_slots,
                                   (size_t)slot * sizeof(lua_Integer));
    if (grown == NULL) {
      lua_settop(L, top);
      return SL_ENOMEM;
    }
    c->free_slots = grown;
  }
  lua_pushboolean(L, 1);
  lua_rawseti(L, anchor, slot);  /* the slot exists from here on */
  e = (Entry *)malloc(sizeof(Entry) + steplen);
  if (e != NULL) {
    e->key = *key;
    e->charged = size + SL_CACHE_ENTRY_OVERHEAD;
    e->expires_ms = expires_ms;
    e->slot = slot;
    e->namelen = steplen;
    if (steplen > 0)
      memcpy(e->name, step, steplen);
    e->name[steplen] = '\0';
  }
  if (e == NULL || index_add(&c->entries, e) != 0) {
    lua_pushnil(L);
    lua_rawseti(L, anchor, slot);
    lua_settop(L, top);
    free(e);
    return SL_ENOMEM;
  }
  if (slot > c->top_slot) c->top_slot = slot;
  else c->nfree--;
  lua_rawseti(L, anchor, slot);  /* the value; no allocation now */
  link_newest(c, e);
  c->bytes += e->charged;
  evict(c, L, anchor, e);
  lua_settop(L, top);
  return 0;
}


size_t sl_cache_clear (sl_cache *c, const char *step) {
  lua_State *L = c->L;
  size_t dropped = 0, n = (step != NULL) ? strlen(step) : 0;
  Entry *e;
  luaL_checkstack(L, 2, "cache");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
  for (e = c->newest; e != NULL; ) {
    Entry *older = e->older;
    if (step == NULL || (e->namelen == n && memcmp(e->name, step, n) == 0)) {
      drop_entry(c, L, lua_gettop(L), e);
      dropped++;
    }
    e = older;
  }
  lua_pop(L, 1);
  return dropped;
}


void sl_cache_get_stats (const sl_cache *c, sl_cache_stats *out) {
  out->entries = c->entries.count;
  out->bytes = c->bytes;
  out->max_bytes = c->max_bytes;
  out->hits = c->hits;
  out->misses = c->misses;
  out->evictions = c->evictions;
  out->expirations = c->expirations;
}

/* }====================================================== */



/*
** {======================================================
** Single flight
** =======================================================
*/

int sl_cache_flight_begin (sl_cache *c, const sl_key *key, void *waiter) {
  void **slot = index_find(&c->flights, key);
  Flight *f;
  if (slot != NULL) {
    f = (Flight *)*slot;
    if (f->n == f->cap) {
      size_t cap = (f->cap == 0) ? 4 : f->cap * 2;
      void **w = (void **)realloc(f->waiters, cap * sizeof(void *));
      if (w == NULL)
        return SL_ENOMEM;
      f->waiters = w;
      f->cap = cap;
    }
    f->waiters[f->n++] = waiter;
    return SL_FLIGHT_FOLLOWER;
  }
  f = (Flight *)calloc(1, sizeof *f);
  if (f == NULL)
    return SL_ENOMEM;
  f->key = *key;
  if (index_add(&c->flights, f) != 0) {
    free(f);
    return SL_ENOMEM;
  }
  return SL_FLIGHT_LEADER;
}


int sl_cache_flight_leave (sl_cache *c, const sl_key *key, void *waiter) {
  void **slot = index_find(&c->flights, key);
  Flight *f;
  size_t i;
  if (slot == NULL)
    return 0;
  f = (Flight *)*slot;
  for (i = 0; i < f->n; i++) {
    if (f->waiters[i] == waiter) {
      memmove(&f->waiters[i], &f->waiters[i + 1],
              (f->n - i - 1) * sizeof(void *));
      f->n--;
      return 1;
    }
  }
  return 0;
}


int sl_cache_flight_end (sl_cache *c, const sl_key *key, sl_cache_wake wake,
                         void *ud) {
  void **slot = index_find(&c->flights, key);
  Flight *f;
  size_t i;
  int n;
  if (slot == NULL)
    return 0;
  f = (Flight *)*slot;
  index_remove(&c->flights, slot);  /* before any wake can begin anew */
  for (i = 0; wake != NULL && i < f->n; i++)
    wake(f->waiters[i], ud);
  n = (int)f->n;
  free(f->waiters);
  free(f);
  return n;
}


int sl_cache_flight_followers (const sl_cache *c, const sl_key *key) {
  void **slot = index_find(&c->flights, key);
  return (slot == NULL) ? -1 : (int)((Flight *)*slot)->n;
}

/* }====================================================== */
