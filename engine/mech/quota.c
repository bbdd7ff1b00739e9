/*
** Quota: budgets, reservations and usage in exact integer units.
**
** Every figure is an int64. Costs are nanos; a Lua number or a piece of
** text becomes nanos through its decimal digits, never through float
** arithmetic, and nanos become text the same way.
*/

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "quota.h"


/*
** {======================================================
** Usage arithmetic and formatting
** =======================================================
*/

static const char *const dim_names[SL_NDIMS] = {"cost", "tokens", "requests"};


const char *sl_usage_dimname (int d) {
  return (d >= 0 && d < SL_NDIMS) ? dim_names[d] : "?";
}


/* Address of dimension d of u. */
static int64_t *dim (sl_usage *u, int d) {
  switch (d) {
    case SL_DIM_COST: return &u->cost_nanos;
    case SL_DIM_TOKENS: return &u->tokens;
    default: return &u->requests;
  }
}


/* a + b for a, b >= 0, held at INT64_MAX. */
static int64_t add_sat (int64_t a, int64_t b) {
  return (a > INT64_MAX - b) ? INT64_MAX : a + b;
}


void sl_usage_add (sl_usage *a, const sl_usage *b) {
  int d;
  for (d = 0; d < SL_NDIMS; d++)
    *dim(a, d) = add_sat(*dim(a, d), sl_usage_get(b, d));
}


/* Are all dimensions of u >= 0? */
static int nonnegative (const sl_usage *u) {
  return u->cost_nanos >= 0 && u->tokens >= 0 && u->requests >= 0;
}


/* Is every dimension of a <= the same dimension of b? */
static int within (const sl_usage *a, const sl_usage *b) {
  int d;
  for (d = 0; d < SL_NDIMS; d++) {
    if (sl_usage_get(a, d) > sl_usage_get(b, d))
      return 0;
  }
  return 1;
}


int sl_cost_format (int64_t nanos, char *buf, size_t size) {
  /* Work on the magnitude as unsigned so INT64_MIN is no special case. */
  uint64_t mag = (nanos < 0) ? 0u - (uint64_t)nanos : (uint64_t)nanos;
  uint64_t units = mag / (uint64_t)SL_NANOS_PER_UNIT;
  unsigned long frac = (unsigned long)(mag % (uint64_t)SL_NANOS_PER_UNIT);
  char digits[10];
  int n = 9;
  snprintf(digits, sizeof digits, "%09lu", frac);
  while (n > 2 && digits[n - 1] == '0')
    n--;
  return snprintf(buf, size, "%s%llu.%.*s", (nanos < 0) ? "-" : "",
                  (unsigned long long)units, n, digits);
}


/* A figure of dimension d as text: a decimal amount or an integer. */
typedef struct Figure { char s[32]; } Figure;

static const char *figure (Figure *f, int d, int64_t v) {
  if (d == SL_DIM_COST)
    sl_cost_format(v, f->s, sizeof f->s);
  else
    snprintf(f->s, sizeof f->s, "%lld", (long long)v);
  return f->s;
}


/* Writes a message to err, if there is room for one; returns code. */
static int report (int code, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0)
    return code;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* }====================================================== */



/*
** {======================================================
** Reservations and usage
** =======================================================
*/

int sl_quota_init (sl_quota *q, const sl_usage *limit, unsigned limited) {
  memset(q, 0, sizeof *q);
  limited &= SL_USAGE_ALL;
  if (limited != 0) {
    int d;
    for (d = 0; d < SL_NDIMS; d++) {
      if ((limited & (1u << d)) && sl_usage_get(limit, d) < 0)
        return SL_EINVAL;
    }
    q->limit = *limit;
    q->limited = limited;
  }
  return 0;
}


/* Does a + b + c <= limit hold, for a, b, c, limit >= 0? No overflow. */
static int fits (int64_t a, int64_t b, int64_t c, int64_t limit) {
  if (a > limit)
    return 0;
  limit -= a;
  if (b > limit)
    return 0;
  return c <= limit - b;
}


int sl_quota_reserve (sl_quota *q, const sl_usage *estimate,
                      char *err, size_t errlen) {
  int d;
  if (!nonnegative(estimate))
    return report(SL_EINVAL, err, errlen, "an estimate must not be negative");
  for (d = 0; d < SL_NDIMS; d++) {
    int64_t s = sl_usage_get(&q->spent, d), r = sl_usage_get(&q->reserved, d);
    int64_t e = sl_usage_get(estimate, d);
    if ((q->limited & (1u << d)) && !fits(s, r, e, sl_usage_get(&q->limit, d))) {
      Figure fs, fr, fe, fl;
      return report(SL_QUOTA_EXCEEDED, err, errlen,
                    "%s budget exceeded: spent %s + reserved %s + estimate %s "
                    "> limit %s", dim_names[d], figure(&fs, d, s),
                    figure(&fr, d, r), figure(&fe, d, e),
                    figure(&fl, d, sl_usage_get(&q->limit, d)));
    }
    /* Reservations are released exactly later, so they may not saturate. */
    if (r > INT64_MAX - e)
      return report(SL_EINVAL, err, errlen, "estimate of %s too large",
                    dim_names[d]);
  }
  for (d = 0; d < SL_NDIMS; d++)
    *dim(&q->reserved, d) += sl_usage_get(estimate, d);
  return 0;
}


/*
** After usage was recorded: returns 0, or SL_QUOTA_OVERRUN with a message
** for the first limited dimension whose spent is past its limit. before is
** spent as it was before the call; what names the usage just recorded
** ("actual", "charge"); held, when not NULL, is what the step held.
*/
static int check_overrun (const sl_quota *q, const sl_usage *before,
                          const char *what, const sl_usage *added,
                          const sl_usage *held, char *err, size_t errlen) {
  int d;
  for (d = 0; d < SL_NDIMS; d++) {
    int64_t s = sl_usage_get(&q->spent, d), l = sl_usage_get(&q->limit, d);
    if ((q->limited & (1u << d)) && s > l) {
      Figure fb, fa, fs, fl, fh;
      char tail[64] = "";
      if (held != NULL)
        snprintf(tail, sizeof tail, " (reserved for it %s)",
                 figure(&fh, d, sl_usage_get(held, d)));
      return report(SL_QUOTA_OVERRUN, err, errlen,
                    "%s budget overrun: spent %s + %s %s = %s > limit %s%s",
                    dim_names[d], figure(&fb, d, sl_usage_get(before, d)),
                    what, figure(&fa, d, sl_usage_get(added, d)),
                    figure(&fs, d, s), figure(&fl, d, l), tail);
    }
  }
  return 0;
}


int sl_quota_charge (sl_quota *q, sl_usage *held, const sl_usage *usage,
                     char *err, size_t errlen) {
  sl_usage before = q->spent;
  int d;
  if (!nonnegative(usage))
    return report(SL_EINVAL, err, errlen, "a charge must not be negative");
  if (held != NULL && (!nonnegative(held) || !within(held, &q->reserved)))
    return report(SL_EINVAL, err, errlen,
                  "a charge draws on more than is reserved");
  for (d = 0; d < SL_NDIMS; d++) {
    int64_t u = sl_usage_get(usage, d);
    int64_t covered = 0;
    if (held != NULL) {
      covered = sl_usage_get(held, d);
      if (covered > u)
        covered = u;
      *dim(held, d) -= covered;
      *dim(&q->reserved, d) -= covered;
    }
    *dim(&q->spent, d) = add_sat(sl_usage_get(&q->spent, d), u);
    *dim(&q->excess, d) = add_sat(sl_usage_get(&q->excess, d), u - covered);
  }
  return check_overrun(q, &before, "charge", usage, NULL, err, errlen);
}


int sl_quota_reconcile (sl_quota *q, const sl_usage *held,
                        const sl_usage *actual, char *err, size_t errlen) {
  sl_usage before = q->spent;
  int d;
  if (!nonnegative(actual))
    return report(SL_EINVAL, err, errlen, "usage must not be negative");
  if (!nonnegative(held) || !within(held, &q->reserved))
    return report(SL_EINVAL, err, errlen,
                  "a step releases more than is reserved");
  for (d = 0; d < SL_NDIMS; d++) {
    int64_t h = sl_usage_get(held, d), a = sl_usage_get(actual, d);
    *dim(&q->reserved, d) -= h;
    *dim(&q->spent, d) = add_sat(sl_usage_get(&q->spent, d), a);
    if (a > h)
      *dim(&q->excess, d) = add_sat(sl_usage_get(&q->excess, d), a - h);
  }
  return check_overrun(q, &before, "actual", actual, held, err, errlen);
}


int sl_quota_check (const sl_quota *q, char *err, size_t errlen) {
  int d;
  if (!nonnegative(&q->spent) || !nonnegative(&q->reserved)
      || !nonnegative(&q->excess))
    return report(-1, err, errlen, "a quota figure is negative");
  for (d = 0; d < SL_NDIMS; d++) {
    int64_t s = sl_usage_get(&q->spent, d), r = sl_usage_get(&q->reserved, d);
    int64_t x = sl_usage_get(&q->excess, d), l = sl_usage_get(&q->limit, d);
    /* spent + reserved <= limit + excess, rearranged to avoid overflow:
       all four are >= 0, so s - x and l - r cannot overflow. */
    if ((q->limited & (1u << d)) && s - x > l - r) {
      Figure fs, fr, fl, fx;
      return report(-1, err, errlen,
                    "%s: spent %s + reserved %s > limit %s + excess %s",
                    dim_names[d], figure(&fs, d, s), figure(&fr, d, r),
                    figure(&fl, d, l), figure(&fx, d, x));
    }
  }
  return 0;
}

/* }====================================================== */



/*
** {======================================================
** Exact decimals
** =======================================================
*/

/* Outcomes of parse_decimal. */
enum { DEC_OK, DEC_SYNTAX, DEC_RANGE };

/*
** Reads the unsigned decimal s[0..n) -- digits, an optional fraction, an
** optional exponent: "12", "0.5", ".5", "2.", "1e-3", "2.5E+4" -- and
** stores it times 10^scale in *out, rounded half up. *inexact tells if
** rounding dropped a nonzero digit. Returns DEC_OK, DEC_SYNTAX, or
** DEC_RANGE when the result does not fit an int64.
*/
static int parse_decimal (const char *s, size_t n, int scale, int64_t *out,
                          int *inexact) {
  const char *p = s, *end = s + n, *mant, *mant_end;
  size_t intdigits = 0, ndigits = 0, i;
  long exp = 0, top;
  uint64_t acc = 0;
  int seen_digit = 0;
  *out = 0;
  *inexact = 0;
  mant = p;
  while (p < end && isdigit((unsigned char)*p)) {
    p++;
    intdigits++;
  }
  if (p < end && *p == '.') {
    p++;
    while (p < end && isdigit((unsigned char)*p))
      p++;
  }
  mant_end = p;
  for (i = 0; mant + i < mant_end; i++)
    seen_digit |= isdigit((unsigned char)mant[i]);
  if (!seen_digit)
    return DEC_SYNTAX;
  if (p < end && (*p == 'e' || *p == 'E')) {
    int neg = 0, any = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      neg = (*p++ == '-');
    while (p < end && isdigit((unsigned char)*p)) {
      if (exp < 100000)  /* far past any int64; more digits change nothing */
        exp = exp * 10 + (*p - '0');
      p++;
      any = 1;
    }
    if (!any)
      return DEC_SYNTAX;
    if (neg)
      exp = -exp;
  }
  if (p != end)
    return DEC_SYNTAX;
  /* The k-th digit (from 0) of the mantissa stands for 10^(top - k)
     once scaled. */
  top = (long)intdigits - 1 + exp + scale;
  for (i = 0; mant + i < mant_end; i++) {
    long power;
    int digit;
    if (mant[i] == '.')
      continue;
    digit = mant[i] - '0';
    power = top - (long)ndigits++;
    if (power >= 0) {
      if (acc > (UINT64_MAX - (uint64_t)digit) / 10)
        return DEC_RANGE;
      acc = acc * 10 + (uint64_t)digit;
    }
    else {
      if (power == -1 && digit >= 5)
        acc++;  /* cannot overflow: acc is at most INT64_MAX here, checked */
      if (digit != 0)
        *inexact = 1;
    }
    if (acc > (uint64_t)INT64_MAX)
      return DEC_RANGE;
  }
  /* Digits the mantissa did not write out are zeros: "5e3" is 5000. */
  for (top -= (long)ndigits - 1; top > 0 && acc != 0; top--) {
    if (acc > (uint64_t)INT64_MAX / 10)
      return DEC_RANGE;
    acc *= 10;
  }
  *out = (int64_t)acc;
  return DEC_OK;
}


/*
** Converts the float d >= 0 to nanos through its shortest decimal text
** that reads back as d (at most 17 significant digits). Returns DEC_OK or
** DEC_RANGE.
*/
static int float_to_nanos (double d, int64_t *out) {
  char buf[64];
  int n = 0, prec, inexact;
  size_t k;
  for (prec = 15; prec <= 17; prec++) {
    n = snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d)
      break;
  }
  for (k = 0; k < (size_t)n; k++) {
    char c = buf[k];
    if (!isdigit((unsigned char)c) && c != 'e' && c != 'E' && c != '+'
        && c != '-')
      buf[k] = '.';  /* a locale's decimal comma */
  }
  return parse_decimal(buf, (size_t)n, 9, out, &inexact);
}

/* }====================================================== */



/*
** {======================================================
** Names and suggestions
** =======================================================
*/

/* Edit distance between a[0..la) and b, for short names only. */
static size_t distance (const char *a, size_t la, const char *b) {
  size_t lb = strlen(b), i, j;
  size_t row[32];
  if (la >= 31 || lb >= 31)
    return (size_t)-1;
  for (j = 0; j <= lb; j++)
    row[j] = j;
  for (i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}


/* The dimension named s[0..n), or -1. */
static int find_dim (const char *s, size_t n) {
  int d;
  for (d = 0; d < SL_NDIMS; d++) {
    if (strlen(dim_names[d]) == n && memcmp(dim_names[d], s, n) == 0)
      return d;
  }
  return -1;
}


/*
** Writes " (did you mean 'x'?)" for the dimension in mask closest to
** s[0..n), or "" when none is close, the way the DSL suggests options.
*/
static const char *suggest (char *buf, size_t size, const char *s, size_t n,
                            unsigned mask) {
  size_t bound = (n / 3 > 2) ? n / 3 : 2, best = (size_t)-1;
  int d, found = -1;
  for (d = 0; d < SL_NDIMS; d++) {
    size_t dist;
    if (!(mask & (1u << d)))
      continue;
    dist = distance(s, n, dim_names[d]);
    if (dist <= bound && dist < best) {
      best = dist;
      found = d;
    }
  }
  buf[0] = '\0';
  if (found >= 0)
    snprintf(buf, size, " (did you mean '%s'?)", dim_names[found]);
  return buf;
}

/* }====================================================== */



/*
** {======================================================
** The CLI's --budget
** =======================================================
*/

/* Trims spaces around s[0..*n) in place of the pointer and length. */
static const char *trim (const char *s, size_t *n) {
  while (*n > 0 && isspace((unsigned char)s[0])) {
    s++;
    (*n)--;
  }
  while (*n > 0 && isspace((unsigned char)s[*n - 1]))
    (*n)--;
  return s;
}


/* Parses one "dimension=value" item s[0..n) into *limit and *limited. */
static int budget_item (const char *s, size_t n, sl_usage *limit,
                        unsigned *limited, char *err, size_t errlen) {
  const char *eq = (const char *)memchr(s, '=', n);
  const char *name, *val;
  size_t nlen, vlen;
  char hint[64];
  int d, inexact, status;
  int64_t v;
  if (eq == NULL) {
    nlen = n;
    name = trim(s, &nlen);
    return report(SL_EINVAL, err, errlen,
                  "budget item '%.*s' needs a value (write %.*s=<amount>)",
                  (int)nlen, name, (int)nlen, name);
  }
  nlen = (size_t)(eq - s);
  name = trim(s, &nlen);
  vlen = (size_t)(s + n - (eq + 1));
  val = trim(eq + 1, &vlen);
  d = find_dim(name, nlen);
  if (d < 0)
    return report(SL_EINVAL, err, errlen,
                  "unknown budget dimension '%.*s'%s (the dimensions are "
                  "cost, tokens and requests)", (int)nlen, name,
                  suggest(hint, sizeof hint, name, nlen, SL_USAGE_ALL));
  if (*limited & (1u << d))
    return report(SL_EINVAL, err, errlen, "budget for %s given twice",
                  dim_names[d]);
  if (vlen == 0)
    return report(SL_EINVAL, err, errlen, "budget for %s has no value",
                  dim_names[d]);
  if (val[0] == '-')
    return report(SL_EINVAL, err, errlen,
                  "budget for %s must not be negative, got '%.*s'",
                  dim_names[d], (int)vlen, val);
  if (val[0] == '+') {
    val++;
    vlen--;
  }
  status = parse_decimal(val, vlen, (d == SL_DIM_COST) ? 9 : 0, &v, &inexact);
  if (status == DEC_SYNTAX)
    return report(SL_EINVAL, err, errlen,
                  "budget for %s must be a %s, got '%.*s'", dim_names[d],
                  (d == SL_DIM_COST) ? "decimal number" : "whole number",
                  (int)vlen, val);
  if (status == DEC_RANGE)
    return report(SL_EINVAL, err, errlen, "budget for %s is too large: '%.*s'",
                  dim_names[d], (int)vlen, val);
  if (inexact && d != SL_DIM_COST)
    return report(SL_EINVAL, err, errlen,
                  "budget for %s must be a whole number, got '%.*s'",
                  dim_names[d], (int)vlen, val);
  *dim(limit, d) = v;
  *limited |= 1u << d;
  return 0;
}


int sl_budget_parse (const char *text, sl_usage *limit, unsigned *limited,
                     char *err, size_t errlen) {
  sl_usage l = {0, 0, 0};
  unsigned mask = 0;
  const char *p = (text != NULL) ? text : "";
  size_t rest = strlen(p);
  trim(p, &rest);
  if (rest == 0)
    return report(SL_EINVAL, err, errlen,
                  "empty budget (write e.g. cost=0.5,tokens=20000)");
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t n = (comma != NULL) ? (size_t)(comma - p) : strlen(p);
    size_t tn = n;
    int status;
    trim(p, &tn);
    if (tn == 0)
      return report(SL_EINVAL, err, errlen, "empty item in budget '%s'", text);
    status = budget_item(p, n, &l, &mask, err, errlen);
    if (status != 0)
      return status;
    if (comma == NULL)
      break;
    p = comma + 1;
  }
  *limit = l;
  *limited = mask;
  return 0;
}

/* }====================================================== */



/*
** {======================================================
** Lua conversions
** =======================================================
*/

/* Reads the value at the top as a whole number >= 0 for dimension d. */
static int read_count (lua_State *L, int d, int64_t *out, char *err,
                       size_t errlen) {
  lua_Integer i;
  if (lua_type(L, -1) != LUA_TNUMBER)
    return report(-1, err, errlen, "usage field '%s' must be a whole number, "
                  "got %s", dim_names[d], luaL_typename(L, -1));
  if (lua_isinteger(L, -1))
    i = lua_tointeger(L, -1);
  else {
    lua_Number f = lua_tonumber(L, -1);
    if (!lua_numbertointeger(f, &i) || (lua_Number)i != f) {
      if (f < 0 && isfinite(f))
        return report(-1, err, errlen, "usage field '%s' must not be "
                      "negative, got %.14g", dim_names[d], (double)f);
      return report(-1, err, errlen, "usage field '%s' must be a whole "
                    "number, got %.14g", dim_names[d], (double)f);
    }
  }
  if (i < 0)
    return report(-1, err, errlen, "usage field '%s' must not be negative, "
                  "got %lld", dim_names[d], (long long)i);
  *out = (int64_t)i;
  return 0;
}


/* Reads the value at the top as a cost >= 0, in nanos. */
static int read_cost (lua_State *L, int64_t *out, char *err, size_t errlen) {
  if (lua_type(L, -1) != LUA_TNUMBER)
    return report(-1, err, errlen, "usage field 'cost' must be a number, "
                  "got %s", luaL_typename(L, -1));
  if (lua_isinteger(L, -1)) {
    lua_Integer i = lua_tointeger(L, -1);
    if (i < 0)
      return report(-1, err, errlen, "usage field 'cost' must not be "
                    "negative, got %lld", (long long)i);
    if (i > INT64_MAX / SL_NANOS_PER_UNIT)
      return report(-1, err, errlen, "usage field 'cost' is too large: %lld",
                    (long long)i);
    *out = (int64_t)i * SL_NANOS_PER_UNIT;
    return 0;
  }
  else {
    double f = (double)lua_tonumber(L, -1);
    if (isnan(f))
      return report(-1, err, errlen, "usage field 'cost' must be a number, "
                    "got nan");
    if (f < 0)
      return report(-1, err, errlen, "usage field 'cost' must not be "
                    "negative, got %.14g", f);
    if (f == 0) {  /* also -0.0, which the text route would refuse */
      *out = 0;
      return 0;
    }
    if (isinf(f) || float_to_nanos(f, out) != DEC_OK)
      return report(-1, err, errlen, "usage field 'cost' is too large: %.14g",
                    f);
    return 0;
  }
}


int sl_usage_from_lua (lua_State *L, int idx, sl_usage *out,
                       unsigned allow_fields_mask, char *err, size_t errlen) {
  sl_usage u = {0, 0, 0};
  unsigned present = 0;
  char hint[64];
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return report(-1, err, errlen, "usage must be a table, got %s",
                  luaL_typename(L, idx));
  luaL_checkstack(L, 3, "usage");
  lua_pushnil(L);
  while (lua_next(L, idx)) {  /* push key, value */
    size_t n;
    const char *name;
    int d, status;
    if (lua_type(L, -2) != LUA_TSTRING) {
      report(-1, err, errlen, "usage fields must be named (cost, tokens, "
             "requests), got a %s key", luaL_typename(L, -2));
      lua_pop(L, 2);
      return -1;
    }
    name = lua_tolstring(L, -2, &n);
    d = find_dim(name, n);
    if (d < 0 || !(allow_fields_mask & (1u << d))) {
      int known = d >= 0;
      report(-1, err, errlen, "%s usage field '%.*s'%s",
             known ? "unexpected" : "unknown", (int)n, name,
             known ? " (not accepted here)"
                   : suggest(hint, sizeof hint, name, n, allow_fields_mask));
      lua_pop(L, 2);
      return -1;
    }
    status = (d == SL_DIM_COST) ? read_cost(L, &u.cost_nanos, err, errlen)
                                : read_count(L, d, dim(&u, d), err, errlen);
    lua_pop(L, 1);  /* pop value, keep key */
    if (status != 0) {
      lua_pop(L, 1);
      return -1;
    }
    present |= 1u << d;
  }
  *out = u;
  return (int)present;
}


void sl_usage_push (lua_State *L, const sl_usage *u) {
  lua_createtable(L, 0, 3);
  /* nanos up to 2^53 are exact doubles, and one correctly rounded
     division gives the double nearest the decimal amount. */
  lua_pushnumber(L, (lua_Number)((double)u->cost_nanos / 1e9));
  lua_setfield(L, -2, "cost");
  lua_pushinteger(L, (lua_Integer)u->tokens);
  lua_setfield(L, -2, "tokens");
  lua_pushinteger(L, (lua_Integer)u->requests);
  lua_setfield(L, -2, "requests");
}

/* }====================================================== */
