/*
** Patterns: ECMA-262 regular expressions as JSON Schema writes them,
** translated to POSIX extended ones and matched with regexec.
*/
#include <regex.h>
#include <string.h>

#include <lauxlib.h>

#include "pattern.h"
#include "value.h"

#define PATTERN_MT "sluice.pattern"

typedef struct pattern {
  regex_t re;
  int live;
} pattern;

static int pattern_gc(lua_State *L) {
  pattern *p = luaL_checkudata(L, 1, PATTERN_MT);
  if (p->live) regfree(&p->re);
  p->live = 0;
  return 0;
}

/* The POSIX class body of an ECMA class escape, or NULL. */
static const char *class_of(char c, int *negated) {
  *negated = c == 'D' || c == 'W' || c == 'S';
  switch (c) {
    case 'd': case 'D': return "0-9";
    case 'w': case 'W': return "A-Za-z0-9_";
    case 's': case 'S': return "[:space:]";
    default: return NULL;
  }
}

/* Translates src into b; returns NULL, or why it cannot. */
static const char *translate(const char *src, size_t len, sl_buf *b) {
  int in_bracket = 0, oom = 0;
#define sl_buf_add(b, s, n) (oom |= sl_buf_add(b, s, n) != 0)
  for (size_t i = 0; i < len; i++) {
    char c = src[i];
    if (c == '\0') return "a zero byte";
    if (c == '\\') {
      if (++i == len) return "a trailing backslash";
      char e = src[i];
      int neg;
      const char *cls = class_of(e, &neg);
      if (cls != NULL) {
        if (in_bracket) {
          if (neg) return "a negated class escape (\\D, \\W, \\S) inside brackets";
          sl_buf_add(b, cls, strlen(cls));
        } else {
          sl_buf_add(b, neg ? "[^" : "[", neg ? 2 : 1);
          sl_buf_add(b, cls, strlen(cls));
          sl_buf_add(b, "]", 1);
        }
        continue;
      }
      char lit;
      switch (e) {
        case 't': lit = '\t'; break;
        case 'n': lit = '\n'; break;
        case 'r': lit = '\r'; break;
        case 'b': case 'B': return "word boundaries (\\b, \\B)";
        default:
          if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
            return "an escape POSIX regular expressions do not have";
          lit = e;
      }
      if (in_bracket) {
        /* In POSIX brackets a backslash is literal: place the character
           itself, with ] and - where they mean themselves. */
        if (lit == ']' || lit == '^' || lit == '-') return "an escaped ], ^ or - inside brackets "
                                                           "(put ] first, - last)";
        sl_buf_add(b, &lit, 1);
      } else if (strchr(".[]()*+?{}|^$\\", lit) != NULL) {
        char two[2] = {'\\', lit};
        sl_buf_add(b, two, 2);
      } else {
        sl_buf_add(b, &lit, 1);
      }
      continue;
    }
    if (in_bracket) {
      if (c == ']') in_bracket = 0;
      sl_buf_add(b, &c, 1);
      continue;
    }
    if (c == '[') {
      in_bracket = 1;
      sl_buf_add(b, &c, 1);
      /* A leading ^ and a ] right after it belong to the bracket. */
      if (i + 1 < len && src[i + 1] == '^') sl_buf_add(b, &src[++i], 1);
      if (i + 1 < len && src[i + 1] == ']') sl_buf_add(b, &src[++i], 1);
      continue;
    }
    if (c == '(' && i + 1 < len && src[i + 1] == '?') return "groups with (? (non-capturing, lookaround)";
    if ((c == '*' || c == '+' || c == '?' || c == '}') && i + 1 < len && src[i + 1] == '?')
      return "non-greedy quantifiers";
    sl_buf_add(b, &c, 1);
  }
  if (in_bracket) return "an unclosed [";
  sl_buf_add(b, "", 1);
#undef sl_buf_add
  return oom ? "not enough memory" : NULL;
}

void sl_pattern_compile(lua_State *L, const char *src, size_t len) {
  sl_buf b;
  sl_buf_init(&b);
  const char *why = translate(src, len, &b);
  if (why == NULL && b.data == NULL) why = "not enough memory";
  pattern *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->live = 0;
  luaL_setmetatable(L, PATTERN_MT);
  if (why != NULL) {
    sl_buf_free(&b);
    luaL_error(L, "bad pattern: %s is not supported", why);
  }
  int rc = regcomp(&p->re, b.data, REG_EXTENDED | REG_NOSUB);
  sl_buf_free(&b);
  if (rc != 0) {
    char msg[200];
    regerror(rc, &p->re, msg, sizeof msg);
    luaL_error(L, "bad pattern: %s", msg);
  }
  p->live = 1;
}

int sl_pattern_match(lua_State *L, int idx, const char *s, size_t len) {
  pattern *p = luaL_checkudata(L, idx, PATTERN_MT);
  if (!p->live) return 0;
  /* regexec reads a C string: a value with a zero byte is matched up to it. */
  if (strlen(s) != len) return 0;
  return regexec(&p->re, s, 0, NULL, 0) == 0;
}

static int l_pattern(lua_State *L) {
  size_t len;
  const char *src = luaL_checklstring(L, 1, &len);
  sl_pattern_compile(L, src, len);
  return 1;
}

static int l_pattern_match(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_pushboolean(L, sl_pattern_match(L, 1, s, len));
  return 1;
}

void sl_pattern_open(lua_State *L) {
  if (luaL_newmetatable(L, PATTERN_MT)) {
    lua_pushcfunction(L, pattern_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_pattern);
  lua_setfield(L, -2, "pattern");
  lua_pushcfunction(L, l_pattern_match);
  lua_setfield(L, -2, "pattern_match");
}
