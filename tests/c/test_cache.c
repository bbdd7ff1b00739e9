/*
** Tests of the cache: keys that depend on an input's value and not on how
** it was built, step versions that follow a step's code, the in-memory
** tier (bounded in bytes, least recently used out, expiry, copies that
** callers cannot corrupt) and single-flight bookkeeping.
*/

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "cache.h"
#include "engine.h"
#include "value.h"


/*
** A fresh state with the standard libraries, ARRAY (the array metatable)
** as a global, and step(t), which makes t a step as the DSL does (the
** step metatable, registered under its registry name).
*/
static lua_State *new_state (void) {
  lua_State *L = luaL_newstate();
  assert_non_null(L);
  luaL_openlibs(L);
  sl_json_pusharraymt(L);
  lua_setglobal(L, "ARRAY");
  luaL_newmetatable(L, SL_STEP_MT);
  lua_setglobal(L, "STEP");
  if (luaL_dostring(L, "function step (t) return setmetatable(t, STEP) end"))
    fail_msg("%s", lua_tostring(L, -1));
  return L;
}


/* Runs a chunk that returns one value and leaves that value pushed. */
static void push_chunk (lua_State *L, const char *chunk) {
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    fail_msg("chunk failed: %s", lua_tostring(L, -1));
}


/* Runs a Lua check on the value at the top (as global V), then pops it. */
static void assert_lua (lua_State *L, const char *check) {
  lua_setglobal(L, "V");
  if (luaL_loadstring(L, check) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    fail_msg("check failed: %s", lua_tostring(L, -1));
  if (!lua_toboolean(L, -1))
    fail_msg("check is false: %s", check);
  lua_pop(L, 1);
}


/* The key of the chunk's value under identity "step@v1". */
static sl_key key_of (sl_cache *c, lua_State *L, const char *chunk) {
  sl_key k;
  char err[256];
  int top = lua_gettop(L);
  push_chunk(L, chunk);
  if (sl_cache_key(c, L, -1, "step@v1", 7, &k, err, sizeof err) != 0)
    fail_msg("no key for %s: %s", chunk, err);
  assert_int_equal(lua_gettop(L), top + 1);
  lua_pop(L, 1);
  return k;
}


static void assert_same_key (sl_cache *c, lua_State *L, const char *a,
                             const char *b) {
  sl_key ka = key_of(c, L, a), kb = key_of(c, L, b);
  if (!sl_key_equal(&ka, &kb))
    fail_msg("%s and %s should have the same key", a, b);
}


static void assert_other_key (sl_cache *c, lua_State *L, const char *a,
                              const char *b) {
  sl_key ka = key_of(c, L, a), kb = key_of(c, L, b);
  if (sl_key_equal(&ka, &kb))
    fail_msg("%s and %s should have different keys", a, b);
}


/* The version of the step the chunk returns. */
static sl_key version_of (lua_State *L, const char *chunk) {
  sl_key k;
  char err[256];
  int top = lua_gettop(L);
  push_chunk(L, chunk);
  if (sl_cache_version(L, -1, &k, err, sizeof err) != 0)
    fail_msg("no version for %s: %s", chunk, err);
  assert_int_equal(lua_gettop(L), top + 1);
  lua_pop(L, 1);
  return k;
}


static void assert_same_version (lua_State *L, const char *a, const char *b) {
  sl_key ka = version_of(L, a), kb = version_of(L, b);
  if (!sl_key_equal(&ka, &kb))
    fail_msg("these should have the same version:\n%s\n%s", a, b);
}


static void assert_other_version (lua_State *L, const char *a,
                                  const char *b) {
  sl_key ka = version_of(L, a), kb = version_of(L, b);
  if (sl_key_equal(&ka, &kb))
    fail_msg("these should have different versions:\n%s\n%s", a, b);
}


static sl_key make_key (uint64_t lo, uint64_t hi) {
  sl_key k;
  k.lo = lo;
  k.hi = hi;
  return k;
}


/* Stores the chunk's value under key for step, with size and expiry. */
static void put_chunk (sl_cache *c, lua_State *L, sl_key k, const char *chunk,
                       size_t size, uint64_t expires, const char *step) {
  int top = lua_gettop(L);
  push_chunk(L, chunk);
  assert_int_equal(sl_cache_put(c, L, &k, -1, size, expires, step,
                                strlen(step)), 0);
  assert_int_equal(lua_gettop(L), top + 1);
  lua_pop(L, 1);
}


/* Looks key up at now; on a hit checks the value with a Lua check. */
static int get_check (sl_cache *c, lua_State *L, sl_key k, uint64_t now,
                      const char *check) {
  int top = lua_gettop(L);
  int hit = sl_cache_get(c, L, &k, now);
  assert_int_equal(lua_gettop(L), top + hit);
  if (hit && check != NULL)
    assert_lua(L, check);
  else if (hit)
    lua_pop(L, 1);
  return hit;
}


static sl_cache_stats stats_of (const sl_cache *c) {
  sl_cache_stats s;
  sl_cache_get_stats(c, &s);
  return s;
}


#define ENTRY(size)  ((size) + SL_CACHE_ENTRY_OVERHEAD)

#define GOLDEN_KEY  "27297163a3d9f13b474d9472773aae10"


/* {====================================================== Keys */

static void test_key_ignores_insertion_order (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  assert_same_key(c, L, "local t = {} t.a = 1 t.b = {x = 1, y = 2} t.c = 3 "
                        "return t",
                        "local t = {} t.c = 3 t.b = {y = 2, x = 1} t.a = 1 "
                        "return t");
  /* Enough keys that the two tables lay them out differently inside. */
  assert_same_key(c, L, "local t = {} for i = 1, 60 do t['k' .. i] = i end "
                        "return t",
                        "local t = {} for i = 60, 1, -1 do t['k' .. i] = i "
                        "end return t");
  sl_cache_free(c);
  lua_close(L);
}


static void test_key_treats_integral_floats_as_integers (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  assert_same_key(c, L, "return 2", "return 2.0");
  assert_same_key(c, L, "return {n = 2, l = {1, 2}}",
                        "return {n = 2.0, l = {1.0, 2}}");
  assert_other_key(c, L, "return 2", "return 2.5");
  sl_cache_free(c);
  lua_close(L);
}


static void test_key_tells_types_apart (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  assert_other_key(c, L, "return 2", "return '2'");
  assert_other_key(c, L, "return true", "return 'true'");
  assert_other_key(c, L, "return false", "return nil");
  assert_other_key(c, L, "return {}", "return setmetatable({}, ARRAY)");
  assert_other_key(c, L, "return {a = 1}", "return {a = '1'}");
  assert_other_key(c, L, "return {1, 2}", "return {2, 1}");
  sl_cache_free(c);
  lua_close(L);
}


static void test_key_depends_on_the_identity (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key a, b, d;
  char err[128];
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  lua_pushliteral(L, "bc");
  assert_int_equal(sl_cache_key(c, L, -1, "a", 1, &a, err, sizeof err), 0);
  assert_int_equal(sl_cache_key(c, L, -1, "b", 1, &b, err, sizeof err), 0);
  assert_false(sl_key_equal(&a, &b));
  /* Identity "a" + input "bc" is not identity "ab" + input "c". */
  lua_pushliteral(L, "c");
  assert_int_equal(sl_cache_key(c, L, -1, "ab", 2, &d, err, sizeof err), 0);
  assert_false(sl_key_equal(&a, &d));
  lua_pop(L, 2);
  sl_cache_free(c);
  lua_close(L);
}


static void test_key_is_the_same_in_every_process (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k;
  char hex[SL_KEY_HEXLEN + 1];
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  /* A key written down once: if this changes, every stored cache entry
     would silently miss. */
  k = key_of(c, L, "return {name = 'Ada', n = 2, tags = {'x', 'y'}}");
  sl_key_hex(&k, hex);
  assert_string_equal(hex, GOLDEN_KEY);
  sl_cache_free(c);
  lua_close(L);
}


static void test_key_hex_is_32_digits_high_half_first (void **state) {
  sl_key k = make_key(UINT64_C(0x0123456789abcdef),
                      UINT64_C(0xfedcba9876543210));
  char hex[SL_KEY_HEXLEN + 1];
  (void)state;
  sl_key_hex(&k, hex);
  assert_string_equal(hex, "fedcba98765432100123456789abcdef");
  k = make_key(1, 0);
  sl_key_hex(&k, hex);
  assert_string_equal(hex, "00000000000000000000000000000001");
}


static void test_unhashable_input_is_refused_with_its_path (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k;
  char err[256];
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  push_chunk(L, "return {a = {1, function () end}}");
  assert_int_equal(sl_cache_key(c, L, -1, "s", 1, &k, err, sizeof err),
                   SL_EINVAL);
  assert_string_equal(err, "cannot encode a function at $.a[2]");
  assert_int_equal(lua_gettop(L), 1);
  push_chunk(L, "local t = {a = {}} t.a.b = t return t");
  assert_int_equal(sl_cache_key(c, L, -1, "s", 1, &k, err, sizeof err),
                   SL_EINVAL);
  assert_string_equal(err, "cyclic table at $.a.b");
  assert_int_equal(lua_gettop(L), 2);
  /* The scratch buffer is fine afterwards. */
  lua_pushinteger(L, 7);
  assert_int_equal(sl_cache_key(c, L, -1, "s", 1, &k, err, sizeof err), 0);
  lua_pop(L, 3);
  sl_cache_free(c);
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Step versions */

#define STEP_A \
  "return step{kind = 'step', name = 'a', retries = 1, where = 'f.lua:3', " \
  "run = function (input) return input.x + 1 end}"

static void test_same_code_loaded_again_has_the_same_version (void **st) {
  lua_State *L = new_state();
  (void)st;
  /* Each push_chunk compiles the text anew: new functions, new tables. */
  assert_same_version(L, STEP_A, STEP_A);
  /* Where it was written, and the order of its fields, do not matter. */
  assert_same_version(L, STEP_A,
    "return step{run = function (input) return input.x + 1 end, "
    "where = 'g.lua:90', retries = 1, name = 'a', kind = 'step'}");
  /* Nor do names of locals or line breaks in the code (stripped). */
  assert_same_version(L, STEP_A,
    "return step{kind = 'step', name = 'a', retries = 1,\n\n"
    "run = function (arg)\n return arg.x + 1\n end}");
  lua_close(L);
}


#define NESTED(pad, k) \
  "return step{name = 'n', run = function (x)" pad \
  "  local function inner (y)" pad \
  "    local t = {1.5, 2, 'short', '" \
  "a long string constant, longer than forty characters for sure', " \
  "true, false, nil}" pad \
  "    return function () return y + #t + " k " end" pad \
  "  end" pad \
  "  return inner(x)()" pad \
  "end}"

static void test_moving_a_function_keeps_its_version (void **st) {
  lua_State *L = new_state();
  (void)st;
  /* Nested functions and every kind of constant, on other lines. */
  assert_same_version(L, NESTED(" ", "1"), "\n\n\n" NESTED("\n", "1"));
  assert_other_version(L, NESTED(" ", "1"), NESTED(" ", "2"));
  lua_close(L);
}


static void test_editing_a_function_changes_the_version (void **st) {
  lua_State *L = new_state();
  (void)st;
  assert_other_version(L, STEP_A,
    "return step{kind = 'step', name = 'a', retries = 1, where = 'f.lua:3', "
    "run = function (input) return input.x + 2 end}");
  assert_other_version(L, STEP_A,
    "return step{kind = 'step', name = 'a', retries = 2, where = 'f.lua:3', "
    "run = function (input) return input.x + 1 end}");
  assert_other_version(L, STEP_A,
    "return step{kind = 'step', name = 'b', retries = 1, where = 'f.lua:3', "
    "run = function (input) return input.x + 1 end}");
  /* Options nested in plain tables count. */
  assert_other_version(L,
    "return step{name = 'a', validate = {function (o) return o > 1 end}}",
    "return step{name = 'a', validate = {function (o) return o > 2 end}}");
  lua_close(L);
}


static void test_editing_a_child_step_changes_its_parent (void **st) {
  lua_State *L = new_state();
  (void)st;
  assert_other_version(L,
    "return step{kind = 'pipeline', name = 'p', "
    "  step{name = 'c1', run = function (x) return x end}, "
    "  step{name = 'c2', run = function (x) return x * 2 end}}",
    "return step{kind = 'pipeline', name = 'p', "
    "  step{name = 'c1', run = function (x) return x end}, "
    "  step{name = 'c2', run = function (x) return x * 3 end}}");
  /* Children are positional: their order is part of the definition. */
  assert_other_version(L,
    "return step{kind = 'pipeline', name = 'p', "
    "  step{name = 'c1', run = function (x) return x end}, "
    "  step{name = 'c2', run = function (x) return x end}}",
    "return step{kind = 'pipeline', name = 'p', "
    "  step{name = 'c2', run = function (x) return x end}, "
    "  step{name = 'c1', run = function (x) return x end}}");
  lua_close(L);
}


static void test_captured_values_and_helpers_count (void **st) {
  lua_State *L = new_state();
  (void)st;
  /* A captured constant is part of what the function computes. */
  assert_other_version(L,
    "local model = 'small' "
    "return step{name = 'a', run = function () return model end}",
    "local model = 'large' "
    "return step{name = 'a', run = function () return model end}");
  /* So is a Lua helper it calls through an upvalue. */
  assert_other_version(L,
    "local function prompt (x) return 'hi ' .. x end "
    "return step{name = 'a', run = function (x) return prompt(x) end}",
    "local function prompt (x) return 'hello ' .. x end "
    "return step{name = 'a', run = function (x) return prompt(x) end}");
  /* A captured table counts by its type only: it may be a whole module. */
  assert_same_version(L,
    "local cfg = {n = 1} "
    "return step{name = 'a', run = function () return cfg.n end}",
    "local cfg = {n = 2} "
    "return step{name = 'a', run = function () return cfg.n end}");
  /* C functions: the same tag whatever their address. */
  assert_same_version(L, "return step{name = 'a', run = print}",
                         "return step{name = 'a', run = type}");
  assert_other_version(L, "return step{name = 'a', run = print}",
                          "return step{name = 'a', run = function () end}");
  lua_close(L);
}


static void test_cycles_in_a_definition_are_hashed (void **st) {
  lua_State *L = new_state();
  const char *recursive =
    "local function fact (n) if n < 2 then return 1 end "
    "return n * fact(n - 1) end "
    "local s = step{name = 'a', run = fact, opts = {}} "
    "s.opts.back = s s.opts.me = s.opts "
    "return s";
  (void)st;
  assert_same_version(L, recursive, recursive);
  lua_close(L);
}


static void test_version_is_remembered_per_step_table (void **st) {
  lua_State *L = new_state();
  sl_key before, after;
  char err[128];
  (void)st;
  push_chunk(L, STEP_A);
  assert_int_equal(sl_cache_version(L, -1, &before, err, sizeof err), 0);
  /* Computed once: a step table is taken as immutable from then on. */
  lua_pushinteger(L, 9);
  lua_setfield(L, -2, "retries");
  assert_int_equal(sl_cache_version(L, -1, &after, err, sizeof err), 0);
  assert_true(sl_key_equal(&before, &after));
  lua_pop(L, 1);
  lua_close(L);
}


static void test_bad_step_values_are_refused (void **st) {
  lua_State *L = new_state();
  sl_key k;
  char err[128];
  (void)st;
  lua_pushinteger(L, 3);
  assert_int_equal(sl_cache_version(L, -1, &k, err, sizeof err), SL_EINVAL);
  assert_string_equal(err, "a step table expected, got number");
  lua_pop(L, 1);
  push_chunk(L, "local t = {} local s = step{name = 'deep', o = t} "
                "for i = 1, 300 do t.x = {} t = t.x end return s");
  assert_int_equal(sl_cache_version(L, -1, &k, err, sizeof err), SL_EINVAL);
  assert_string_equal(err, "step definition nested deeper than 200");
  assert_int_equal(lua_gettop(L), 1);
  lua_pop(L, 1);
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== The tier */

static void test_put_then_get_returns_the_value (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(1, 1), other = make_key(2, 2);
  sl_cache_stats s;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  assert_int_equal(get_check(c, L, k, 0, NULL), 0);
  put_chunk(c, L, k, "return 'Hello, Ada'", 12, 0, "greet");
  assert_int_equal(get_check(c, L, k, 5, "return V == 'Hello, Ada'"), 1);
  assert_int_equal(get_check(c, L, other, 5, NULL), 0);
  put_chunk(c, L, other, "return nil", 4, 0, "greet");
  assert_int_equal(get_check(c, L, other, 5, "return V == nil"), 1);
  s = stats_of(c);
  assert_int_equal(s.entries, 2);
  assert_int_equal(s.bytes, ENTRY(12) + ENTRY(4));
  assert_int_equal(s.max_bytes, SL_CACHE_DEFAULT_BYTES);
  assert_int_equal(s.hits, 2);
  assert_int_equal(s.misses, 2);
  assert_int_equal(s.evictions, 0);
  sl_cache_free(c);
  lua_close(L);
}


static void test_put_replaces_the_value_of_a_key (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(7, 7);
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  put_chunk(c, L, k, "return 1", 1, 0, "s");
  put_chunk(c, L, k, "return 2", 1, 0, "s");
  assert_int_equal(get_check(c, L, k, 0, "return V == 2"), 1);
  assert_int_equal(stats_of(c).entries, 1);
  assert_int_equal(stats_of(c).bytes, ENTRY(1));
  sl_cache_free(c);
  lua_close(L);
}


static void test_least_recently_used_is_evicted_by_bytes (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key a = make_key(1, 0), b = make_key(2, 0), d = make_key(3, 0);
  sl_key e = make_key(4, 0);
  sl_cache_stats s;
  (void)state;
  assert_int_equal(sl_cache_new(L, 3 * ENTRY(100), &c), 0);
  put_chunk(c, L, a, "return 'a'", 100, 0, "s");
  put_chunk(c, L, b, "return 'b'", 100, 0, "s");
  put_chunk(c, L, d, "return 'd'", 100, 0, "s");
  assert_int_equal(get_check(c, L, a, 0, NULL), 1);  /* a is now newest */
  put_chunk(c, L, e, "return 'e'", 100, 0, "s");      /* b goes */
  assert_int_equal(get_check(c, L, b, 0, NULL), 0);
  assert_int_equal(get_check(c, L, a, 0, "return V == 'a'"), 1);
  assert_int_equal(get_check(c, L, d, 0, "return V == 'd'"), 1);
  assert_int_equal(get_check(c, L, e, 0, "return V == 'e'"), 1);
  /* An entry of more than two thirds of the bound needs all three others
     to go, oldest first. */
  put_chunk(c, L, b, "return 'big'", 2 * ENTRY(100) - SL_CACHE_ENTRY_OVERHEAD
            + 1, 0, "s");
  s = stats_of(c);
  assert_int_equal(s.entries, 1);
  assert_int_equal(s.evictions, 1 + 3);
  assert_true(s.bytes <= s.max_bytes);
  sl_cache_free(c);
  lua_close(L);
}


static void test_entry_larger_than_the_cache_is_not_kept (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(1, 0);
  (void)state;
  assert_int_equal(sl_cache_new(L, 1000, &c), 0);
  put_chunk(c, L, k, "return 'old'", 10, 0, "s");
  push_chunk(L, "return 'huge'");
  assert_int_equal(sl_cache_put(c, L, &k, -1, 1000, 0, "s", 1), 1);
  lua_pop(L, 1);
  /* The old value is not served in place of the new one. */
  assert_int_equal(get_check(c, L, k, 0, NULL), 0);
  assert_int_equal(stats_of(c).entries, 0);
  assert_int_equal(stats_of(c).bytes, 0);
  sl_cache_free(c);
  lua_close(L);
}


static void test_shrinking_the_bound_evicts_at_once (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  int i;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  for (i = 0; i < 10; i++)
    put_chunk(c, L, make_key((uint64_t)i, 0), "return {i = 1}", 36, 0, "s");
  sl_cache_set_max_bytes(c, 4 * ENTRY(36));
  assert_int_equal(stats_of(c).entries, 4);
  assert_int_equal(stats_of(c).evictions, 6);
  /* The newest four stay. */
  assert_int_equal(get_check(c, L, make_key(9, 0), 0, NULL), 1);
  assert_int_equal(get_check(c, L, make_key(6, 0), 0, NULL), 1);
  assert_int_equal(get_check(c, L, make_key(5, 0), 0, NULL), 0);
  sl_cache_free(c);
  lua_close(L);
}


static void test_expired_entries_are_misses_and_dropped (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(1, 0), forever = make_key(2, 0);
  sl_cache_stats s;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  put_chunk(c, L, k, "return 'fresh'", 5, 1000, "s");
  put_chunk(c, L, forever, "return 'kept'", 5, 0, "s");
  assert_int_equal(get_check(c, L, k, 999, "return V == 'fresh'"), 1);
  assert_int_equal(get_check(c, L, k, 1000, NULL), 0);
  assert_int_equal(get_check(c, L, k, 5, NULL), 0);  /* dropped, not hidden */
  assert_int_equal(get_check(c, L, forever, UINT64_MAX, NULL), 1);
  s = stats_of(c);
  assert_int_equal(s.entries, 1);
  assert_int_equal(s.bytes, ENTRY(5));
  assert_int_equal(s.expirations, 1);
  assert_int_equal(s.misses, 2);
  assert_int_equal(s.hits, 2);
  sl_cache_free(c);
  lua_close(L);
}


static void test_callers_cannot_change_what_is_cached (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(1, 0);
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  push_chunk(L, "return {a = {b = 1}, list = setmetatable({}, ARRAY)}");
  assert_int_equal(sl_cache_put(c, L, &k, -1, 30, 0, "s", 1), 0);
  /* Changing the table after it was stored changes nothing... */
  assert_lua(L, "V.a.b = 'changed by the producer' return true");
  /* ...nor does changing a table a hit returned. */
  assert_int_equal(get_check(c, L, k, 0, "local ok = V.a.b == 1 "
                             "V.a.b = 'changed by a reader' "
                             "V.extra = true return ok"), 1);
  assert_int_equal(get_check(c, L, k, 0, "return V.a.b == 1 and "
                             "V.extra == nil and "
                             "getmetatable(V.list) == ARRAY"), 1);
  sl_cache_free(c);
  lua_close(L);
}


static void test_clear_by_step_drops_only_its_entries (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  int i;
  (void)state;
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  for (i = 0; i < 6; i++)
    put_chunk(c, L, make_key((uint64_t)i, 9), "return 1", 1, 0,
              (i % 2) ? "odd" : "even");
  put_chunk(c, L, make_key(100, 9), "return 1", 1, 0, "eve");
  assert_int_equal(sl_cache_clear(c, "even"), 3);
  assert_int_equal(stats_of(c).entries, 4);
  assert_int_equal(get_check(c, L, make_key(1, 9), 0, NULL), 1);
  assert_int_equal(get_check(c, L, make_key(2, 9), 0, NULL), 0);
  assert_int_equal(get_check(c, L, make_key(100, 9), 0, NULL), 1);
  assert_int_equal(sl_cache_clear(c, "nobody"), 0);
  assert_int_equal(sl_cache_clear(c, NULL), 4);
  assert_int_equal(stats_of(c).entries, 0);
  assert_int_equal(stats_of(c).bytes, 0);
  sl_cache_free(c);
  lua_close(L);
}


static void test_evicted_values_are_released (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  char block[1024];
  int i, kb_after_first = 0, kb_after_all;
  (void)state;
  memset(block, 'x', sizeof block);
  assert_int_equal(sl_cache_new(L, 10 * ENTRY(1024), &c), 0);
  for (i = 0; i < 20000; i++) {
    sl_key k = make_key((uint64_t)i * UINT64_C(0x9E3779B97F4A7C15), 0);
    lua_pushfstring(L, "%d", i);
    lua_pushlstring(L, block, sizeof block);
    lua_concat(L, 2);  /* a distinct 1 KB string per entry */
    assert_int_equal(sl_cache_put(c, L, &k, -1, 1024, 0, "s", 1), 0);
    lua_pop(L, 1);
    if (i == 999) {
      lua_gc(L, LUA_GCCOLLECT);
      kb_after_first = lua_gc(L, LUA_GCCOUNT);
    }
  }
  lua_gc(L, LUA_GCCOLLECT);
  kb_after_all = lua_gc(L, LUA_GCCOUNT);
  /* Ten entries at a time: 19,000 more puts hold no more memory. */
  assert_int_equal(stats_of(c).entries, 10);
  assert_true(kb_after_all <= kb_after_first + 4);
  /* Dropped entries hold nothing either: clearing gives back what the
     ten values took (over 10 KB). */
  assert_int_equal(sl_cache_clear(c, NULL), 10);
  lua_gc(L, LUA_GCCOLLECT);
  assert_true(lua_gc(L, LUA_GCCOUNT) + 8 <= kb_after_all);
  sl_cache_free(c);
  lua_close(L);
}


/* splitmix64, for the randomized test below. */
static uint64_t rng_state;

static uint64_t rnd (void) {
  uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}


/*
** Random puts, gets and clears against a model (an array in recency
** order), with keys crowded onto a few hash slots so that probing and
** removal in the index are exercised hard.
*/
static void test_random_operations_match_a_model (void **state) {
  enum { NKEYS = 64, CAP = 12 };
  const char *env = getenv("SLUICE_TEST_SEED");
  unsigned seed = (env != NULL) ? (unsigned)strtoul(env, NULL, 10)
                                : (unsigned)time(NULL) ^ (unsigned)getpid();
  lua_State *L = new_state();
  sl_cache *c;
  int model[CAP], n = 0;  /* key numbers, newest first */
  int value[NKEYS];
  int op;
  (void)state;
  rng_state = seed;
  assert_int_equal(sl_cache_new(L, CAP * ENTRY(10), &c), 0);
  for (op = 0; op < 20000; op++) {
    int key = (int)(rnd() % NKEYS), r = (int)(rnd() % 10), i, pos = -1;
    /* lo values 0..7 only: eight home slots for 64 keys. */
    sl_key k = make_key((uint64_t)(key % 8), (uint64_t)key);
    for (i = 0; i < n; i++) {
      if (model[i] == key)
        pos = i;
    }
    if (r < 4) {  /* put */
      int v = (int)(rnd() % 1000);
      lua_pushinteger(L, v);
      assert_int_equal(sl_cache_put(c, L, &k, -1, 10, 0, "s", 1), 0);
      lua_pop(L, 1);
      value[key] = v;
      if (pos < 0)
        pos = (n < CAP) ? n++ : CAP - 1;  /* the oldest goes */
      memmove(&model[1], &model[0], (size_t)pos * sizeof(int));
      model[0] = key;
    }
    else if (r < 9) {  /* get */
      int hit = sl_cache_get(c, L, &k, 0);
      if (hit != (pos >= 0))
        fail_msg("seed %u (SLUICE_TEST_SEED), op %d: get of key %d: hit %d",
                 seed, op, key, hit);
      if (hit) {
        if (lua_tointeger(L, -1) != value[key])
          fail_msg("seed %u, op %d: wrong value for key %d", seed, op, key);
        lua_pop(L, 1);
        memmove(&model[1], &model[0], (size_t)pos * sizeof(int));
        model[0] = key;
      }
    }
    else if (rnd() % 20 == 0) {  /* now and then, clear everything */
      assert_int_equal(sl_cache_clear(c, NULL), n);
      n = 0;
    }
    if (stats_of(c).entries != (size_t)n)
      fail_msg("seed %u, op %d: %zu entries, model %d", seed, op,
               stats_of(c).entries, n);
  }
  assert_int_equal(lua_gettop(L), 0);
  sl_cache_free(c);
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Single flight */

typedef struct Woken {
  void *who[8];
  int n;
  sl_cache *c;
  sl_key key;
  int relead;  /* the first woken begins a new flight from its wake */
} Woken;

static void record_wake (void *waiter, void *ud) {
  Woken *w = (Woken *)ud;
  w->who[w->n++] = waiter;
  if (w->relead && w->n == 1)
    assert_int_equal(sl_cache_flight_begin(w->c, &w->key, waiter),
                     SL_FLIGHT_LEADER);
}


static void test_first_is_leader_and_others_follow (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(5, 5), other = make_key(6, 6);
  int t1, t2, t3, t4;
  Woken w;
  (void)state;
  memset(&w, 0, sizeof w);
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  assert_int_equal(sl_cache_flight_followers(c, &k), -1);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t1), SL_FLIGHT_LEADER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t2), SL_FLIGHT_FOLLOWER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t3), SL_FLIGHT_FOLLOWER);
  assert_int_equal(sl_cache_flight_begin(c, &other, &t4), SL_FLIGHT_LEADER);
  assert_int_equal(sl_cache_flight_followers(c, &k), 2);
  assert_int_equal(sl_cache_flight_followers(c, &other), 0);
  /* The leader ends: followers are woken in the order they came. */
  assert_int_equal(sl_cache_flight_end(c, &k, record_wake, &w), 2);
  assert_int_equal(w.n, 2);
  assert_ptr_equal(w.who[0], &t2);
  assert_ptr_equal(w.who[1], &t3);
  assert_int_equal(sl_cache_flight_followers(c, &k), -1);
  assert_int_equal(sl_cache_flight_end(c, &k, record_wake, &w), 0);
  assert_int_equal(sl_cache_flight_end(c, &other, NULL, NULL), 0);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t2), SL_FLIGHT_LEADER);
  /* Freeing with a flight under way wakes nobody and leaks nothing. */
  sl_cache_free(c);
  lua_close(L);
}


static void test_follower_that_leaves_is_not_woken (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(5, 5);
  int t1, t2, t3, t4;
  Woken w;
  (void)state;
  memset(&w, 0, sizeof w);
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t1), SL_FLIGHT_LEADER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t2), SL_FLIGHT_FOLLOWER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t3), SL_FLIGHT_FOLLOWER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t4), SL_FLIGHT_FOLLOWER);
  assert_int_equal(sl_cache_flight_leave(c, &k, &t3), 1);
  assert_int_equal(sl_cache_flight_leave(c, &k, &t3), 0);
  assert_int_equal(sl_cache_flight_end(c, &k, record_wake, &w), 2);
  assert_ptr_equal(w.who[0], &t2);
  assert_ptr_equal(w.who[1], &t4);
  sl_cache_free(c);
  lua_close(L);
}


static void test_woken_follower_may_lead_a_new_flight (void **state) {
  lua_State *L = new_state();
  sl_cache *c;
  sl_key k = make_key(5, 5);
  int t1, t2, t3;
  Woken w;
  (void)state;
  memset(&w, 0, sizeof w);
  assert_int_equal(sl_cache_new(L, 0, &c), 0);
  w.c = c;
  w.key = k;
  w.relead = 1;
  assert_int_equal(sl_cache_flight_begin(c, &k, &t1), SL_FLIGHT_LEADER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t2), SL_FLIGHT_FOLLOWER);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t3), SL_FLIGHT_FOLLOWER);
  /* t2 leads anew from inside its wake; t3 is still woken once. */
  assert_int_equal(sl_cache_flight_end(c, &k, record_wake, &w), 2);
  assert_int_equal(sl_cache_flight_followers(c, &k), 0);
  assert_int_equal(sl_cache_flight_begin(c, &k, &t3), SL_FLIGHT_FOLLOWER);
  w.relead = 0;
  assert_int_equal(sl_cache_flight_end(c, &k, record_wake, &w), 1);
  assert_ptr_equal(w.who[2], &t3);
  sl_cache_free(c);
  lua_close(L);
}

/* }====================================================== */


int main (void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_key_ignores_insertion_order),
    cmocka_unit_test(test_key_treats_integral_floats_as_integers),
    cmocka_unit_test(test_key_tells_types_apart),
    cmocka_unit_test(test_key_depends_on_the_identity),
    cmocka_unit_test(test_key_is_the_same_in_every_process),
    cmocka_unit_test(test_key_hex_is_32_digits_high_half_first),
    cmocka_unit_test(test_unhashable_input_is_refused_with_its_path),
    cmocka_unit_test(test_same_code_loaded_again_has_the_same_version),
    cmocka_unit_test(test_moving_a_function_keeps_its_version),
    cmocka_unit_test(test_editing_a_function_changes_the_version),
    cmocka_unit_test(test_editing_a_child_step_changes_its_parent),
    cmocka_unit_test(test_captured_values_and_helpers_count),
    cmocka_unit_test(test_cycles_in_a_definition_are_hashed),
    cmocka_unit_test(test_version_is_remembered_per_step_table),
    cmocka_unit_test(test_bad_step_values_are_refused),
    cmocka_unit_test(test_put_then_get_returns_the_value),
    cmocka_unit_test(test_put_replaces_the_value_of_a_key),
    cmocka_unit_test(test_least_recently_used_is_evicted_by_bytes),
    cmocka_unit_test(test_entry_larger_than_the_cache_is_not_kept),
    cmocka_unit_test(test_shrinking_the_bound_evicts_at_once),
    cmocka_unit_test(test_expired_entries_are_misses_and_dropped),
    cmocka_unit_test(test_callers_cannot_change_what_is_cached),
    cmocka_unit_test(test_clear_by_step_drops_only_its_entries),
    cmocka_unit_test(test_evicted_values_are_released),
    cmocka_unit_test(test_random_operations_match_a_model),
    cmocka_unit_test(test_first_is_leader_and_others_follow),
    cmocka_unit_test(test_follower_that_leaves_is_not_woken),
    cmocka_unit_test(test_woken_follower_may_lead_a_new_flight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
