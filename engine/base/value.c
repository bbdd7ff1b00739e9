/*
** Value encoding: JSON text to and from Lua values.
**
** The encoder is written here because it is on the hot path of result
** building and cache hashing and must produce canonical text; the decoder
** parses with lua-cjson and then corrects what Debian's cjson 2.1.0 gets
** wrong for us (every number arrives as a float, and arrays are not told
** apart from objects) by walking the text a second time beside the result.
*/

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "value.h"


/*
** {======================================================
** Byte buffer
** =======================================================
*/

#define BUF_MINCAP  256


/* Makes b an empty buffer holding no memory. */
void sl_buf_init (sl_buf *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}


/* Releases b's memory and leaves it empty and reusable. */
void sl_buf_free (sl_buf *b) {
  free(b->data);
  sl_buf_init(b);
}


/* Empties b but keeps its memory for the next use. */
void sl_buf_reset (sl_buf *b) {
  b->len = 0;
  if (b->data != NULL)
    b->data[0] = '\0';
}


/*
** Makes room for n more bytes plus the terminating NUL. Capacity doubles,
** so appending byte by byte costs amortized constant time.
** Returns 0, or -1 when memory runs out (the buffer is then unchanged).
*/
int sl_buf_reserve (sl_buf *b, size_t n) {
  size_t need, newcap;
  char *data;
  if (b->cap - b->len > n)
    return 0;
  if (n > (size_t)-1 - b->len - 1)
    return -1;
  need = b->len + n + 1;
  newcap = (b->cap < BUF_MINCAP) ? BUF_MINCAP : b->cap;
  while (newcap < need) {
    if (newcap > (size_t)-1 / 2) {
      newcap = need;
      break;
    }
    newcap *= 2;
  }
  data = (char *)realloc(b->data, newcap);
  if (data == NULL)
    return -1;
  b->data = data;
  b->cap = newcap;
  return 0;
}


/* Appends n bytes. Returns 0, or -1 when memory runs out. */
int sl_buf_add (sl_buf *b, const char *s, size_t n) {
  if (sl_buf_reserve(b, n) != 0)
    return -1;
  if (n > 0)
    memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}


/* Appends one byte. Returns 0, or -1 when memory runs out. */
int sl_buf_addc (sl_buf *b, char c) {
  if (sl_buf_reserve(b, 1) != 0)
    return -1;
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
  return 0;
}

/* }====================================================== */


/* Pushes the null sentinel, the same value as cjson.null. */
void sl_json_pushnull (lua_State *L) {
  lua_pushlightuserdata(L, NULL);
}


/* Pushes the array metatable, creating it on first use. */
void sl_json_pusharraymt (lua_State *L) {
  luaL_newmetatable(L, SL_JSON_ARRAYMT);  /* creates it only once */
}



/*
** {======================================================
** Encoder
** =======================================================
*/

/* One step of the path from the encoded value to the current one. */
typedef struct PathSeg {
  const char *key;      /* string key, or NULL for an integer key */
  size_t len;
  lua_Integer i;
} PathSeg;

/* An object key waiting to be sorted in canonical mode. */
typedef struct SortKey {
  const char *s;        /* string key (owned by the table), or NULL */
  size_t len;
  lua_Integer i;        /* integer key when s is NULL */
  char digits[24];      /* its decimal text, which is what gets sorted */
} SortKey;

#define INLINE_KEYS  32

typedef struct Encoder {
  lua_State *L;
  sl_buf *b;
  int flags;
  int depth;                    /* number of tables being encoded */
  int arraymt_known;            /* has arraymt been looked up yet? */
  const void *arraymt;          /* the array metatable, NULL if none */
  char *err;
  size_t errlen;
  /* Keys of the objects being sorted, used as a stack: each object sorts
     its own segment above the segments of the objects enclosing it. When
     the inline array is too small they move to a userdata at keyslot, so
     nothing leaks if a Lua memory error unwinds the encoder. */
  SortKey *keys;
  size_t nkeys, keycap;
  int keyslot;
  const void *tables[SL_JSON_MAXDEPTH];   /* the tables on the path */
  PathSeg path[SL_JSON_MAXDEPTH];         /* key taken in each of them */
  SortKey inlinekeys[INLINE_KEYS];
} Encoder;


/* A bounded writer for error messages: it truncates, never overflows. */
typedef struct Msg {
  char *p;
  size_t size, len;
} Msg;


/* Appends what fits of s[0..n), keeping the message NUL-terminated. */
static void msg_add (Msg *m, const char *s, size_t n) {
  size_t room;
  if (m->size == 0)
    return;
  room = m->size - 1 - m->len;
  if (n > room)
    n = room;
  memcpy(m->p + m->len, s, n);
  m->len += n;
  m->p[m->len] = '\0';
}


/* Can the key be written as .key in a path (an identifier)? */
static int is_name (const char *s, size_t n) {
  size_t i;
  if (n == 0)
    return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && (i == 0 || c < '0' || c > '9'))
      return 0;
  }
  return 1;
}


/*
** Writes the path made of the first nseg segments, e.g. $.steps[2].run.
** Keys that are not plain names are quoted: $["a b"].
*/
static void msg_path (Msg *m, const Encoder *e, int nseg) {
  char tmp[32];
  int k;
  msg_add(m, "$", 1);
  for (k = 0; k < nseg; k++) {
    const PathSeg *seg = &e->path[k];
    if (seg->key == NULL) {
      int n = snprintf(tmp, sizeof tmp, "[" LUA_INTEGER_FMT "]",
                       (LUAI_UACINT)seg->i);
      msg_add(m, tmp, (size_t)n);
    }
    else if (is_name(seg->key, seg->len)) {
      msg_add(m, ".", 1);
      msg_add(m, seg->key, seg->len);
    }
    else {
      size_t i;
      msg_add(m, "[\"", 2);
      for (i = 0; i < seg->len; i++) {
        unsigned char c = (unsigned char)seg->key[i];
        if (c == '"' || c == '\\') {
          tmp[0] = '\\';
          tmp[1] = (char)c;
          msg_add(m, tmp, 2);
        }
        else if (c < 0x20) {
          snprintf(tmp, sizeof tmp, "\\u%04x", c);
          msg_add(m, tmp, 6);
        }
        else
          msg_add(m, (const char *)&seg->key[i], 1);
      }
      msg_add(m, "\"]", 2);
    }
  }
}


/*
** Records a failure: "<what> at <path of the first nseg segments>".
** Always returns -1 so callers can write 'return fail(...)'.
*/
static int fail (Encoder *e, int nseg, const char *fmt, ...) {
  Msg m;
  va_list ap;
  int n;
  if (e->err == NULL || e->errlen == 0)
    return -1;
  m.p = e->err;
  m.size = e->errlen;
  m.len = 0;
  va_start(ap, fmt);
  n = vsnprintf(m.p, m.size, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  m.len = ((size_t)n < m.size) ? (size_t)n : m.size - 1;
  msg_add(&m, " at ", 4);
  msg_path(&m, e, nseg);
  return -1;
}


/* Records that the buffer could not grow; returns -1. */
static int out_of_memory (Encoder *e) {
  if (e->err != NULL && e->errlen > 0)
    snprintf(e->err, e->errlen, "not enough memory");
  return -1;
}


/*
** Returns a pointer where n bytes may be written at the end of the
** buffer; the caller then advances b->len. NULL when memory runs out.
*/
static char *room (Encoder *e, size_t n) {
  sl_buf *b = e->b;
  if (b->cap - b->len <= n && sl_buf_reserve(b, n) != 0)
    return NULL;
  return b->data + b->len;
}


/* Appends s[0..n) to the output. Returns 0 or -1. */
static int put (Encoder *e, const char *s, size_t n) {
  char *p = room(e, n);
  if (p == NULL)
    return out_of_memory(e);
  memcpy(p, s, n);
  e->b->len += n;
  return 0;
}


/* Appends one byte to the output. Returns 0 or -1. */
static int put_char (Encoder *e, char c) {
  char *p = room(e, 1);
  if (p == NULL)
    return out_of_memory(e);
  *p = c;
  e->b->len++;
  return 0;
}


/* In pretty mode, starts a new line indented for nesting level 'level'. */
static int put_newline (Encoder *e, int level) {
  size_t n = 1 + 2 * (size_t)level;
  char *p;
  if (!(e->flags & SL_JSON_PRETTY))
    return 0;
  p = room(e, n);
  if (p == NULL)
    return out_of_memory(e);
  p[0] = '\n';
  memset(p + 1, ' ', n - 1);
  e->b->len += n;
  return 0;
}


static const char digit_pairs[] =
  "00010203040506070809" "10111213141516171819" "20212223242526272829"
  "30313233343536373839" "40414243444546474849" "50515253545556575859"
  "60616263646566676869" "70717273747576777879" "80818283848586878889"
  "90919293949596979899";

/*
** Writes the decimal text of v into the 24 bytes ending at 'end' and
** returns where it starts. Two digits per division keeps this well ahead
** of snprintf, which matters because integers are the commonest value.
*/
static char *format_integer (char *end, lua_Integer v) {
  char *p = end;
  lua_Unsigned u = (v < 0) ? 0u - (lua_Unsigned)v : (lua_Unsigned)v;
  while (u >= 100) {
    unsigned d = (unsigned)(u % 100) * 2;
    u /= 100;
    *--p = digit_pairs[d + 1];
    *--p = digit_pairs[d];
  }
  if (u >= 10) {
    unsigned d = (unsigned)u * 2;
    *--p = digit_pairs[d + 1];
    *--p = digit_pairs[d];
  }
  else
    *--p = (char)('0' + u);
  if (v < 0)
    *--p = '-';
  return p;
}


/* Writes v in decimal. Returns 0 or -1. */
static int put_integer (Encoder *e, lua_Integer v) {
  char tmp[24];
  char *end = tmp + sizeof tmp;
  char *p = format_integer(end, v);
  return put(e, p, (size_t)(end - p));
}


#define LIMIT_PLAIN  ((lua_Integer)100000000000000)  /* 1e14 */

/*
** Writes a float in the shortest of "%.14g" and "%.17g" that reads back
** as the same double. Integral values get ".0" so they read back as
** floats, except in canonical mode, where they are written as integers so
** that 2 and 2.0 hash alike.
*/
static int put_float (Encoder *e, lua_Number d) {
  char buf[48];
  lua_Integer i;
  int n, k, plain = 1;
  if (isnan(d))
    return fail(e, e->depth, "cannot encode NaN");
  if (isinf(d))
    return fail(e, e->depth, "cannot encode %s", (d > 0) ? "inf" : "-inf");
  if (lua_numbertointeger(d, &i) && (lua_Number)i == d) {
    if (e->flags & SL_JSON_CANONICAL)
      return put_integer(e, i);
    /* Below 1e14 "%.14g" would print every digit, so skip snprintf; -0.0
       is left to it to keep its sign. */
    if (i > -LIMIT_PLAIN && i < LIMIT_PLAIN && (i != 0 || !signbit(d))) {
      char *end = buf + 24;
      char *p = format_integer(end, i);
      end[0] = '.';
      end[1] = '0';
      return put(e, p, (size_t)(end + 2 - p));
    }
  }
  n = snprintf(buf, sizeof buf, "%.14g", (double)d);
  if (strtod(buf, NULL) != (double)d)
    n = snprintf(buf, sizeof buf, "%.17g", (double)d);
  for (k = 0; k < n; k++) {
    char c = buf[k];
    if ((c >= '0' && c <= '9') || c == '-')
      continue;
    plain = 0;
    if (c != 'e' && c != 'E' && c != '+')
      buf[k] = '.';  /* a locale's decimal comma is not JSON */
  }
  if (plain) {
    buf[n++] = '.';
    buf[n++] = '0';
  }
  return put(e, buf, (size_t)n);
}


/*
** For each byte: 0 when it goes out as it is, else the letter of its
** escape ('u' meaning \u00XX, 'x' a byte of a multi-byte sequence, which
** goes out as it is only when it is valid UTF-8).
*/
static const char json_escape[256] = {
  'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r',
  'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
  'u', 'u', 'u', 'u',
  ['"'] = '"', ['\\'] = '\\',
#define X8 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'
  [0x80] = X8, X8, X8, X8, X8, X8, X8, X8, X8, X8, X8, X8, X8, X8, X8, X8
#undef X8
};


size_t sl_utf8_seq (const unsigned char *p, const unsigned char *end) {
  size_t left = (size_t)(end - p);
  unsigned c = p[0];
  if (c < 0x80)
    return 1;
  if (c < 0xC2)
    return 0;                                  /* continuation, overlong */
  if (c < 0xE0)
    return (left >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
      return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
      return 0;                                /* overlong, surrogate */
    return 3;
  }
  if (c < 0xF5) {
    if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80
        || (p[3] & 0xC0) != 0x80)
      return 0;
    if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
      return 0;                                /* overlong, past U+10FFFF */
    return 4;
  }
  return 0;
}


/*
** Appends s[0..n) to b as a quoted JSON string. With raw, bytes of 0x80
** and above go out as they are (the canonical form, which is hashed and
** never parsed, keeps strings apart byte for byte); otherwise a byte that
** does not begin a valid UTF-8 sequence is written as U+FFFD, so strict
** parsers accept every text sluice writes. Returns 0 or -1.
*/
static int add_string (sl_buf *b, const char *s, size_t n, int raw) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  const unsigned char *end = p + n;
  if (sl_buf_addc(b, '"'))
    return -1;
  while (p < end) {
    const unsigned char *run = p;
    char letter;
    while (p < end && json_escape[*p] == 0)
      p++;
    if (p > run && sl_buf_add(b, (const char *)run, (size_t)(p - run)))
      return -1;
    if (p == end)
      break;
    letter = json_escape[*p];
    if (letter == 'x') {
      size_t len = raw ? 1 : sl_utf8_seq(p, end);
      if (len == 0) {
        if (sl_buf_add(b, "\xef\xbf\xbd", 3))       /* U+FFFD */
          return -1;
        p++;
      }
      else {
        if (sl_buf_add(b, (const char *)p, len))
          return -1;
        p += len;
      }
      continue;
    }
    else {
      char esc[6];
      esc[0] = '\\';
      esc[1] = letter;
      if (letter == 'u') {
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[*p >> 4];
        esc[5] = hex[*p & 0xf];
      }
      if (sl_buf_add(b, esc, (letter == 'u') ? 6 : 2))
        return -1;
      p++;
    }
  }
  return sl_buf_addc(b, '"');
}


int sl_json_add_string (sl_buf *b, const char *s, size_t n) {
  return add_string(b, s, n, 0);
}


/* Writes s[0..n) as a quoted JSON string. Returns 0 or -1. */
static int put_string (Encoder *e, const char *s, size_t n) {
  if (add_string(e->b, s, n, (e->flags & SL_JSON_CANONICAL) != 0))
    return out_of_memory(e);
  return 0;
}


/* Writes the comma (unless first) and, in pretty mode, the line break
   and indentation that come before a member at nesting 'level'. */
static int put_member_start (Encoder *e, int first, int level) {
  if (!first && put_char(e, ','))
    return -1;
  return put_newline(e, level);
}


/* Writes the separator between a key and its value. */
static int put_colon (Encoder *e) {
  if (e->flags & SL_JSON_PRETTY)
    return put(e, ": ", 2);
  return put_char(e, ':');
}


/* Writes integer key k as the JSON string of its decimal text. */
static int put_integer_key (Encoder *e, lua_Integer k) {
  if (put_char(e, '"') || put_integer(e, k))
    return -1;
  return put_char(e, '"');
}


static int encode_value (Encoder *e, int idx);


/*
** Encodes t[1..n] of the table at index t (the current depth) as a JSON
** array; missing items become null.
*/
static int encode_array (Encoder *e, int t, lua_Integer n) {
  lua_State *L = e->L;
  int level = e->depth;
  PathSeg *seg = &e->path[level - 1];
  lua_Integer i;
  if (n == 0)
    return put(e, "[]", 2);
  if (put_char(e, '['))
    return -1;
  for (i = 1; i <= n; i++) {
    if (put_member_start(e, i == 1, level))
      return -1;
    seg->key = NULL;
    seg->i = i;
    lua_rawgeti(L, t, i);  /* push item */
    if (encode_value(e, lua_gettop(L)))
      return -1;  /* sl_json_encode restores the stack */
    lua_pop(L, 1);  /* pop item */
  }
  if (put_newline(e, level - 1))
    return -1;
  return put_char(e, ']');
}


/* The text a sort key is written, and sorted, as. */
static const char *sortkey_text (const SortKey *k) {
  return (k->s != NULL) ? k->s : k->digits;
}


/*
** Bytewise order of the keys as written. An integer key and a string key
** with the same text (t[1] and t["1"]) would tie; the integer goes first,
** so the output does not depend on the order qsort met them in.
*/
static int compare_keys (const void *a, const void *b) {
  const SortKey *x = (const SortKey *)a;
  const SortKey *y = (const SortKey *)b;
  size_t n = (x->len < y->len) ? x->len : y->len;
  int c = memcmp(sortkey_text(x), sortkey_text(y), n);
  if (c != 0)
    return c;
  if (x->len != y->len)
    return (x->len < y->len) ? -1 : 1;
  return (y->s == NULL) - (x->s == NULL);
}


/* Returns a fresh slot on the key stack, or NULL when memory runs out. */
static SortKey *push_sortkey (Encoder *e) {
  if (e->nkeys == e->keycap) {
    lua_State *L = e->L;
    size_t newcap = e->keycap * 2;
    SortKey *keys;
    if (newcap > ((size_t)-1) / sizeof(SortKey))
      return NULL;
    keys = (SortKey *)lua_newuserdatauv(L, newcap * sizeof(SortKey), 0);
    memcpy(keys, e->keys, e->nkeys * sizeof(SortKey));
    lua_replace(L, e->keyslot);  /* the old block becomes garbage */
    e->keys = keys;
    e->keycap = newcap;
  }
  return &e->keys[e->nkeys++];
}


/* Encodes an object's members sorted by key, so that the same value is
   always written the same way (and hashes alike in canonical mode). */
static int encode_object_sorted (Encoder *e, int t) {
  lua_State *L = e->L;
  int level = e->depth;
  size_t base = e->nkeys, count, i;
  lua_pushnil(L);
  while (lua_next(L, t)) {  /* push key, value */
    SortKey *k;
    int type = lua_type(L, -2);
    lua_pop(L, 1);  /* pop value; it is looked up again in key order */
    if (type != LUA_TSTRING && !lua_isinteger(L, -1))
      return fail(e, level - 1, "cannot encode a table key of type %s",
                  luaL_typename(L, -1));
    k = push_sortkey(e);
    if (k == NULL)
      return out_of_memory(e);
    if (type == LUA_TSTRING)
      k->s = lua_tolstring(L, -1, &k->len);  /* the table keeps it alive */
    else {
      char *end = k->digits + sizeof k->digits;
      char *p = format_integer(end, lua_tointeger(L, -1));
      k->s = NULL;
      k->i = lua_tointeger(L, -1);
      k->len = (size_t)(end - p);
      memmove(k->digits, p, k->len);
    }
  }
  count = e->nkeys - base;
  if (count == 0)
    return put(e, "{}", 2);
  qsort(e->keys + base, count, sizeof(SortKey), compare_keys);
  if (put_char(e, '{'))
    return -1;
  for (i = 0; i < count; i++) {
    /* e->keys may move while a member is encoded, so it is indexed
       afresh on each use rather than held in a pointer. */
    const SortKey *k = &e->keys[base + i];
    PathSeg *seg = &e->path[level - 1];
    if (put_member_start(e, i == 0, level))
      return -1;
    seg->key = k->s;
    seg->len = k->len;
    seg->i = k->i;
    if (k->s != NULL) {
      lua_pushlstring(L, k->s, k->len);
      if (put_string(e, k->s, k->len))
        return -1;
    }
    else {
      lua_pushinteger(L, k->i);
      if (put_integer_key(e, k->i))
        return -1;
    }
    lua_rawget(L, t);  /* replace key with value */
    if (put_colon(e) || encode_value(e, lua_gettop(L)))
      return -1;
    lua_pop(L, 1);  /* pop value */
  }
  e->nkeys = base;
  if (put_newline(e, level - 1))
    return -1;
  return put_char(e, '}');
}


/* Do the keys of table t, whose border is n >= 1, run exactly 1..n? */
static int is_sequence (lua_State *L, int t, lua_Integer n) {
  lua_Integer count = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {  /* push key, value */
    lua_Integer k;
    lua_pop(L, 1);  /* pop value */
    if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || k > n
        || ++count > n) {
      lua_pop(L, 1);  /* pop key */
      return 0;
    }
  }
  return count == n;
}


/* What the metatable of t says about it. */
enum { MT_NONE, MT_ARRAY, MT_OTHER };

static int metatable_kind (Encoder *e, int t) {
  lua_State *L = e->L;
  const void *mt;
  if (!lua_getmetatable(L, t))
    return MT_NONE;
  mt = lua_topointer(L, -1);
  lua_pop(L, 1);  /* pop metatable */
  if (!e->arraymt_known) {
    lua_getfield(L, LUA_REGISTRYINDEX, SL_JSON_ARRAYMT);
    e->arraymt = lua_istable(L, -1) ? lua_topointer(L, -1) : NULL;
    lua_pop(L, 1);
    e->arraymt_known = 1;
  }
  return (e->arraymt != NULL && mt == e->arraymt) ? MT_ARRAY : MT_OTHER;
}


/*
** Encodes the table at index t as an array or an object, after refusing
** it if it is already on the path (a cycle) or too deep.
*/
static int encode_table (Encoder *e, int t) {
  lua_State *L = e->L;
  const void *p = lua_topointer(L, t);
  lua_Integer n;
  int k, status, mtk;
  for (k = 0; k < e->depth; k++) {
    if (e->tables[k] == p)
      return fail(e, e->depth, "cyclic table");
  }
  if (e->depth >= SL_JSON_MAXDEPTH)
    return fail(e, e->depth, "nesting deeper than %d", SL_JSON_MAXDEPTH);
  if (!lua_checkstack(L, 4))
    return out_of_memory(e);
  mtk = metatable_kind(e, t);
  e->tables[e->depth++] = p;
  if (mtk == MT_ARRAY)
    status = encode_array(e, t, (lua_Integer)lua_rawlen(L, t));
  else if (mtk == MT_OTHER && luaL_getmetafield(L, t, SL_JSON_PLAIN) == LUA_TFUNCTION) {
    /* A table that shows more than it holds (a state view): encode the
       plain table it stands for, which the stack keeps alive meanwhile. */
    lua_pushvalue(L, t);
    lua_call(L, 1, 1);
    e->depth--;
    status = encode_table(e, lua_gettop(L));
    if (status == 0)
      lua_pop(L, 1);  /* on failure sl_json_encode restores the stack */
    return status;
  }
  else if ((n = (lua_Integer)lua_rawlen(L, t)) > 0 && is_sequence(L, t, n))
    status = encode_array(e, t, n);
  else
    status = encode_object_sorted(e, t);
  e->depth--;
  return status;
}


/*
** Encodes the value at absolute index idx. Returns 0, or -1 with the
** message recorded; on -1 the stack may hold leftovers, which
** sl_json_encode clears.
*/
static int encode_value (Encoder *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return put(e, "null", 4);
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        return put_integer(e, lua_tointeger(L, idx));
      return put_float(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return put_string(e, s, n);
    }
    case LUA_TTABLE:
      return encode_table(e, idx);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL)
        return put(e, "null", 4);
      return fail(e, e->depth, "cannot encode a light userdata");
    default:
      return fail(e, e->depth, "cannot encode a %s", luaL_typename(L, idx));
  }
}


int sl_json_encode (lua_State *L, int idx, sl_buf *b, int flags,
                    char *err, size_t errlen) {
  Encoder e;
  int top = lua_gettop(L);
  size_t start = b->len;
  int status;
  e.L = L;
  e.b = b;
  e.flags = flags;
  e.depth = 0;
  e.arraymt_known = 0;
  e.arraymt = NULL;
  e.err = err;
  e.errlen = errlen;
  e.keys = e.inlinekeys;
  e.nkeys = 0;
  e.keycap = INLINE_KEYS;
  e.keyslot = 0;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 4))
    status = out_of_memory(&e);
  else {
    lua_pushnil(L);  /* slot for a key stack outgrowing inlinekeys */
    e.keyslot = lua_gettop(L);
    status = encode_value(&e, idx);
  }
  lua_settop(L, top);
  if (status != 0)
    b->len = start;  /* leave no partial output behind */
  if (b->data != NULL)
    b->data[b->len] = '\0';
  return status;
}

/* __gc of a buffer held by a userdata while Lua code may raise. */
static int buf_gc (lua_State *L) {
  sl_buf_free((sl_buf *)lua_touserdata(L, 1));
  return 0;
}


int sl_json_push (lua_State *L, int idx, int flags, char *err, size_t errlen) {
  sl_buf *b;
  idx = lua_absindex(L, idx);
  b = (sl_buf *)lua_newuserdatauv(L, sizeof *b, 0);
  sl_buf_init(b);
  if (luaL_newmetatable(L, "sluice.buf")) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (sl_json_encode(L, idx, b, flags, err, errlen) != 0) {
    lua_pop(L, 1);
    return -1;
  }
  lua_pushlstring(L, b->data != NULL ? b->data : "", b->len);
  sl_buf_free(b);
  lua_remove(L, -2);
  return 0;
}

/* }====================================================== */



/*
** {======================================================
** Decoder
** =======================================================
*/

#define NEEDS_CJSON  "JSON decoding needs lua-cjson (Debian package lua-cjson)"

/* Its address is the registry key of the private cjson decode function. */
static const char decoder_key = 0;


typedef struct Decoder {
  const char *text;
  size_t len;
} Decoder;


/*
** Raises "line L, column C: <what>" for byte offset 'offset' of the text.
** Lines are counted by '\n', so "\r\n" text counts right too.
*/
static int positioned_error (lua_State *L, const Decoder *d, size_t offset,
                             const char *what) {
  const char *p = d->text, *end;
  size_t line = 1;
  if (offset > d->len)
    offset = d->len;
  end = d->text + offset;
  for (;;) {
    const char *nl = (const char *)memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
      break;
    line++;
    p = nl + 1;
  }
  return luaL_error(L, "line %I, column %I: %s", (lua_Integer)line,
                    (lua_Integer)(end - p) + 1, what);
}


/* How cjson names its tokens, and how we say them to a user. */
static const char *const token_names[][2] = {
  {"T_OBJ_BEGIN", "'{'"}, {"T_OBJ_END", "'}'"},
  {"T_ARR_BEGIN", "'['"}, {"T_ARR_END", "']'"},
  {"T_STRING", "a string"}, {"T_NUMBER", "a number"},
  {"T_BOOLEAN", "a boolean"}, {"T_NULL", "null"},
  {"T_COLON", "':'"}, {"T_COMMA", "','"},
  {"T_END", "end of input"}, {"the end", "end of input"},
  {NULL, NULL}
};


/*
** Rewrites cjson's error at the top of the stack, such as
** "Expected value but found T_END at character 4", in our form,
** "line 1, column 4: expected value but found end of input", and raises it.
** Messages without a position are raised as they are.
*/
static int raise_cjson_error (lua_State *L, const Decoder *d) {
  const char *msg = lua_tostring(L, -1);
  const char *at = (msg != NULL) ? strstr(msg, " at character ") : NULL;
  const char *p;
  long long character;
  luaL_Buffer b;
  if (at == NULL)
    return lua_error(L);
  character = strtoll(at + strlen(" at character "), NULL, 10);
  if (strncmp(msg, "Found too many nested data structures", 37) == 0) {
    /* One bound for decoding and encoding: say which. */
    lua_pushfstring(L, "nesting deeper than %d", SL_JSON_MAXDEPTH);
    return positioned_error(L, d, (character > 0) ? (size_t)(character - 1) : 0,
                            lua_tostring(L, -1));
  }
  luaL_buffinit(L, &b);
  for (p = msg; p < at; ) {
    int k;
    for (k = 0; token_names[k][0] != NULL; k++) {
      size_t n = strlen(token_names[k][0]);
      if ((size_t)(at - p) >= n && memcmp(p, token_names[k][0], n) == 0)
        break;
    }
    if (token_names[k][0] != NULL) {
      luaL_addstring(&b, token_names[k][1]);
      p += strlen(token_names[k][0]);
    }
    else {
      char c = *p++;
      if (p == msg + 1 && c >= 'A' && c <= 'Z')
        c = (char)(c - 'A' + 'a');
      luaL_addchar(&b, c);
    }
  }
  luaL_pushresult(&b);
  return positioned_error(L, d, (character > 0) ? (size_t)(character - 1) : 0,
                          lua_tostring(L, -1));
}


/*
** Pushes the decode function of a private cjson instance, made on first
** use and kept in the registry. A private instance keeps our settings out
** of the user's cjson and theirs out of ours.
*/
static void push_decoder (lua_State *L) {
  int status;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &decoder_key) == LUA_TFUNCTION)
    return;
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  status = lua_pcall(L, 1, 1, 0);  /* push module or error */
  if (status == LUA_ERRMEM)
    lua_error(L);
  if (status != LUA_OK || !lua_istable(L, -1)
      || lua_getfield(L, -1, "new") != LUA_TFUNCTION) {
    lua_pushliteral(L, NEEDS_CJSON);
    lua_error(L);
  }
  lua_call(L, 0, 1);  /* replace 'new' with the private instance */
  if (!lua_istable(L, -1)) {
    lua_pushliteral(L, NEEDS_CJSON);
    lua_error(L);
  }
  /* Hex, "inf" and "nan" are not JSON; cjson 2.1.0 accepts them unless
     told otherwise. */
  if (lua_getfield(L, -1, "decode_invalid_numbers") == LUA_TFUNCTION) {
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
  }
  else
    lua_pop(L, 1);
  /* One bound for both directions: what decodes can be encoded again (a
     run's input is stored, and read back on resume). */
  if (lua_getfield(L, -1, "decode_max_depth") == LUA_TFUNCTION) {
    lua_pushinteger(L, SL_JSON_MAXDEPTH);
    lua_call(L, 1, 0);
  }
  else
    lua_pop(L, 1);
  if (lua_getfield(L, -1, "decode") != LUA_TFUNCTION) {
    lua_pushliteral(L, NEEDS_CJSON);
    lua_error(L);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &decoder_key);
  lua_replace(L, -3);  /* decode replaces the module */
  lua_pop(L, 1);  /* pop instance */
}


/*
** The second walk. cjson has already accepted the text, so the walker
** reads it without reporting syntax errors; it visits the text and the
** decoded value side by side and
**   - replaces each number by the exact value its text denotes (cjson
**     reads 9007199254740993 as a double, 9007199254740992), as an
**     integer when integral and within int64;
**   - gives every array, including [], the array metatable (cjson returns
**     [] and {} as the same empty table, and only the text tells them
**     apart).
** With duplicate object keys the Lua value holds the last duplicate while
** the text holds all of them; every earlier one is walked over the final
** value, touching only members it shares, and the last one, walked last,
** sets each of them right again.
*/

typedef struct Walker {
  lua_State *L;
  const Decoder *d;
  const char *p, *end;
  int arraymt;          /* stack index of the array metatable */
} Walker;

/* Where the value being walked lives on the Lua side. */
enum { SLOT_NONE, SLOT_TOP, SLOT_INDEX, SLOT_KEY };

typedef struct Slot {
  int kind;
  int t;                /* stack index of the value (SLOT_TOP) or table */
  lua_Integer i;        /* array index (SLOT_INDEX) */
  const char *key;      /* key text as in the JSON (SLOT_KEY) */
  size_t keylen;
  int escaped;          /* does the key text contain escapes? */
} Slot;


static void walk_value (Walker *w, const Slot *s);


/*
** Raises an error at the walker's position. It means the walker and cjson
** disagree about the text, which is a bug here, not in the user's text.
*/
static int mismatch (Walker *w) {
  return positioned_error(w->L, w->d, (size_t)(w->p - w->d->text),
                          "JSON text not understood after lua-cjson "
                          "accepted it");
}


/* Skips JSON whitespace (the four characters RFC 8259 allows). */
static void skip_space (Walker *w) {
  while (w->p < w->end && (*w->p == ' ' || *w->p == '\n' || *w->p == '\r'
                           || *w->p == '\t'))
    w->p++;
}


/* Skips whitespace and then c, which must be there. */
static void expect (Walker *w, char c) {
  skip_space(w);
  if (w->p >= w->end || *w->p != c)
    mismatch(w);
  w->p++;
}


/* Skips a string whose opening quote is at w->p; tells if it had escapes. */
static int skip_string (Walker *w) {
  int escaped = 0;
  w->p++;
  for (;;) {
    while (w->p < w->end && *w->p != '"' && *w->p != '\\')
      w->p++;
    if (w->p >= w->end)
      return mismatch(w);
    if (*w->p == '"')
      break;
    escaped = 1;
    w->p += 2;
  }
  w->p++;
  return escaped;
}


/* Reads the four hex digits of a \u escape into *cp; 0 if not hex. */
static int hex4 (const char *s, unsigned long *cp) {
  int k;
  *cp = 0;
  for (k = 0; k < 4; k++) {
    char c = s[k];
    unsigned v;
    if (c >= '0' && c <= '9') v = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v = (unsigned)(c - 'A' + 10);
    else return 0;
    *cp = (*cp << 4) | v;
  }
  return 1;
}


/* Adds code point cp (at most 0x10FFFF) to b as UTF-8. */
static void add_utf8 (luaL_Buffer *b, unsigned long cp) {
  if (cp < 0x80)
    luaL_addchar(b, (char)cp);
  else if (cp < 0x800) {
    luaL_addchar(b, (char)(0xC0 | (cp >> 6)));
    luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
  }
  else if (cp < 0x10000) {
    luaL_addchar(b, (char)(0xE0 | (cp >> 12)));
    luaL_addchar(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
    luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
  }
  else {
    luaL_addchar(b, (char)(0xF0 | (cp >> 18)));
    luaL_addchar(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
    luaL_addchar(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
    luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
  }
}


/* Pushes the string that the escaped JSON string body s[0..n) denotes. */
static void push_unescaped (lua_State *L, const char *s, size_t n) {
  const char *end = s + n;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (s < end) {
    char c = *s++;
    unsigned long cp, lo;
    if (c != '\\' || s >= end) {
      luaL_addchar(&b, c);
      continue;
    }
    switch (c = *s++) {
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u':
        if (end - s < 4 || !hex4(s, &cp))
          break;
        s += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - s >= 6 && s[0] == '\\'
            && s[1] == 'u' && hex4(s + 2, &lo) && lo >= 0xDC00
            && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          s += 6;
        }
        add_utf8(&b, cp);
        break;
      default:  /* '"', '\\' and '/' stand for themselves */
        luaL_addchar(&b, c);
        break;
    }
  }
  luaL_pushresult(&b);
}


/* Pushes the Lua value of slot s: [value], or [key, value] for SLOT_KEY. */
static void fetch (Walker *w, const Slot *s) {
  lua_State *L = w->L;
  switch (s->kind) {
    case SLOT_TOP:
      lua_pushvalue(L, s->t);
      break;
    case SLOT_INDEX:
      lua_rawgeti(L, s->t, s->i);
      break;
    default:
      if (s->escaped)
        push_unescaped(L, s->key, s->keylen);
      else
        lua_pushlstring(L, s->key, s->keylen);
      lua_pushvalue(L, -1);
      lua_rawget(L, s->t);
      break;
  }
}


/* Pops what fetch pushed. */
static void release (Walker *w, const Slot *s) {
  lua_pop(w->L, (s->kind == SLOT_KEY) ? 2 : 1);
}


/* Stores the value at the top into slot s and pops what fetch pushed. */
static void store (Walker *w, const Slot *s) {
  lua_State *L = w->L;
  switch (s->kind) {
    case SLOT_TOP:
      lua_replace(L, s->t);
      lua_pop(L, 1);
      break;
    case SLOT_INDEX:
      lua_rawseti(L, s->t, s->i);
      lua_pop(L, 1);
      break;
    default:
      lua_replace(L, -2);  /* [key, new] */
      lua_rawset(L, s->t);
      break;
  }
}


/* Pushes n as an integer if it is integral and fits, else as it is. */
static void push_normalized (lua_State *L, lua_Number n) {
  lua_Integer i;
  if (lua_numbertointeger(n, &i) && (lua_Number)i == n)
    lua_pushinteger(L, i);
  else
    lua_pushnumber(L, n);
}


/*
** Pushes the number the token tok[0..n) denotes: an integer when the
** token is one and fits int64, else a float (itself made an integer when
** integral and within int64). Returns 0, pushing nothing, if Lua does not
** read the token as a number, which cjson's checks should rule out.
*/
static int push_token_number (lua_State *L, const char *tok, size_t n) {
  char buf[64];
  const char *s = buf;
  int pushed_string = 0;
  if (n < sizeof buf) {
    memcpy(buf, tok, n);
    buf[n] = '\0';
  }
  else {
    s = lua_pushlstring(L, tok, n);
    pushed_string = 1;
  }
  if (lua_stringtonumber(L, s) == 0) {
    lua_pop(L, pushed_string);
    return 0;
  }
  if (pushed_string)
    lua_remove(L, -2);
  if (!lua_isinteger(L, -1)) {
    lua_Number f = lua_tonumber(L, -1);
    lua_pop(L, 1);
    push_normalized(L, f);
  }
  return 1;
}


/*
** With the slot's current value at the top, pushes the exact value for
** the number token tok[0..n) and returns 1, or returns 0 when the current
** value is already right (or not a number at all, which happens only
** under duplicate keys).
*/
static int push_exact_number (lua_State *L, const char *tok, size_t n) {
  int cur = lua_gettop(L);
  size_t k, digits;
  int integer_text = 1;
  if (lua_type(L, cur) != LUA_TNUMBER)
    return 0;
  k = (tok[0] == '-');
  digits = n - k;
  for (; k < n; k++) {
    if (tok[k] < '0' || tok[k] > '9') {
      integer_text = 0;
      break;
    }
  }
  if (integer_text && digits >= 1 && digits <= 18) {
    /* Common case, and 18 digits cannot overflow. */
    lua_Integer v = 0;
    for (k = (tok[0] == '-'); k < n; k++)
      v = v * 10 + (tok[k] - '0');
    if (tok[0] == '-')
      v = -v;
    if (lua_isinteger(L, cur) && lua_tointeger(L, cur) == v)
      return 0;
    lua_pushinteger(L, v);
    return 1;
  }
  if (!integer_text && !lua_isinteger(L, cur))
    push_normalized(L, lua_tonumber(L, cur));  /* cjson read it exactly */
  else if (!push_token_number(L, tok, n))
    return 0;
  if (lua_isinteger(L, -1) == lua_isinteger(L, cur)
      && lua_rawequal(L, -1, cur)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}


/*
** Walks the array at w->p beside the table at index t (0 when the Lua side
** has no table there): marks the table as an array, fixes its numbers.
*/
static void walk_array (Walker *w, int t) {
  lua_State *L = w->L;
  Slot s;
  s.kind = t ? SLOT_INDEX : SLOT_NONE;
  s.t = t;
  s.i = 0;
  w->p++;  /* skip '[' */
  if (t) {
    lua_pushvalue(L, w->arraymt);
    lua_setmetatable(L, t);
  }
  skip_space(w);
  if (w->p < w->end && *w->p == ']') {
    w->p++;
    return;
  }
  for (;;) {
    s.i++;
    walk_value(w, &s);
    skip_space(w);
    if (w->p < w->end && *w->p == ',')
      w->p++;
    else {
      expect(w, ']');
      return;
    }
  }
}


/* Walks the object at w->p beside the table at index t (or 0). */
static void walk_object (Walker *w, int t) {
  lua_State *L = w->L;
  Slot s;
  s.kind = t ? SLOT_KEY : SLOT_NONE;
  s.t = t;
  s.i = 0;
  w->p++;  /* skip '{' */
  /* Only an earlier duplicate key holding an array can have put one. */
  if (t && lua_getmetatable(L, t)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setmetatable(L, t);
  }
  skip_space(w);
  if (w->p < w->end && *w->p == '}') {
    w->p++;
    return;
  }
  for (;;) {
    skip_space(w);
    if (w->p >= w->end || *w->p != '"')
      mismatch(w);
    s.key = w->p + 1;
    s.escaped = skip_string(w);
    s.keylen = (size_t)(w->p - 1 - s.key);
    expect(w, ':');
    walk_value(w, &s);
    skip_space(w);
    if (w->p < w->end && *w->p == ',')
      w->p++;
    else {
      expect(w, '}');
      return;
    }
  }
}


/* Walks one value of the text, whose Lua counterpart is in slot s. */
static void walk_value (Walker *w, const Slot *s) {
  lua_State *L = w->L;
  skip_space(w);
  if (w->p >= w->end)
    mismatch(w);
  switch (*w->p) {
    case '{': case '[': {
      int t = 0;
      luaL_checkstack(L, 8, "JSON nesting too deep");
      if (s->kind != SLOT_NONE) {
        fetch(w, s);
        if (lua_istable(L, -1))
          t = lua_gettop(L);
      }
      if (*w->p == '{')
        walk_object(w, t);
      else
        walk_array(w, t);
      if (s->kind != SLOT_NONE)
        release(w, s);
      break;
    }
    case '"':
      skip_string(w);
      break;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9': {
      const char *tok = w->p;
      while (w->p < w->end && ((*w->p >= '0' && *w->p <= '9') || *w->p == '-'
             || *w->p == '+' || *w->p == '.' || *w->p == 'e' || *w->p == 'E'))
        w->p++;
      if (s->kind == SLOT_NONE)
        break;
      fetch(w, s);
      if (push_exact_number(L, tok, (size_t)(w->p - tok)))
        store(w, s);
      else
        release(w, s);
      break;
    }
    default:  /* true, false, null */
      while (w->p < w->end && *w->p >= 'a' && *w->p <= 'z')
        w->p++;
      break;
  }
}


/*
** Runs in protected mode with the Decoder as a light userdata at index 1;
** returns the decoded value or raises the message sl_json_decode returns.
*/
static int decode_protected (lua_State *L) {
  const Decoder *d = (const Decoder *)lua_touserdata(L, 1);
  const char *nul = (const char *)memchr(d->text, '\0', d->len);
  Walker w;
  Slot top;
  int status;
  /* cjson stops at a NUL as if the text ended there, so "[1]\0junk"
     would pass; no JSON text contains a raw NUL. */
  if (nul != NULL)
    return positioned_error(L, d, (size_t)(nul - d->text),
                            "unexpected NUL byte");
  sl_json_pusharraymt(L);
  push_decoder(L);
  lua_pushlstring(L, d->text, d->len);
  status = lua_pcall(L, 1, 1, 0);  /* replace decoder with the value */
  if (status == LUA_ERRRUN)
    return raise_cjson_error(L, d);
  if (status != LUA_OK)
    return lua_error(L);
  w.L = L;
  w.d = d;
  w.p = d->text;
  w.end = d->text + d->len;
  w.arraymt = 2;
  top.kind = SLOT_TOP;
  top.t = lua_gettop(L);
  walk_value(&w, &top);
  return 1;
}


/*
** Everything that can fail, allocation included, runs in decode_protected,
** so this function itself cannot raise.
*/
int sl_json_decode (lua_State *L, const char *text, size_t len) {
  Decoder d;
  d.text = (text != NULL) ? text : "";
  d.len = (text != NULL) ? len : 0;
  lua_pushcfunction(L, decode_protected);
  lua_pushlightuserdata(L, &d);
  return (lua_pcall(L, 1, 1, 0) == LUA_OK) ? 0 : -1;
}

/* }====================================================== */
