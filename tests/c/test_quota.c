/*
** Tests of quotas: budgets in exact units, reservations that fit or are
** refused, usage recorded in full, the messages a user reads, and a
** randomized run of many concurrent branches against a model.
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

#include "quota.h"


static lua_State *new_state (void) {
  lua_State *L = luaL_newstate();
  assert_non_null(L);
  luaL_openlibs(L);
  return L;
}


/* Runs a chunk that returns one value and leaves that value pushed. */
static void push_chunk (lua_State *L, const char *chunk) {
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    fail_msg("chunk failed: %s", lua_tostring(L, -1));
}


/* Reads the usage the chunk returns, which must be accepted. */
static sl_usage usage_of (lua_State *L, const char *chunk) {
  sl_usage u;
  char err[256];
  int top = lua_gettop(L);
  push_chunk(L, chunk);
  if (sl_usage_from_lua(L, -1, &u, SL_USAGE_ALL, err, sizeof err) < 0)
    fail_msg("usage %s refused: %s", chunk, err);
  assert_int_equal(lua_gettop(L), top + 1);
  lua_pop(L, 1);
  return u;
}


/* Checks that the chunk's usage is refused with exactly 'message'. */
static void assert_usage_refused (lua_State *L, const char *chunk,
                                  unsigned mask, const char *message) {
  sl_usage u;
  char err[256] = "";
  int top = lua_gettop(L);
  push_chunk(L, chunk);
  assert_int_equal(sl_usage_from_lua(L, -1, &u, mask, err, sizeof err), -1);
  assert_int_equal(lua_gettop(L), top + 1);
  assert_string_equal(err, message);
  lua_pop(L, 1);
}


static void assert_cost_text (int64_t nanos, const char *text) {
  char buf[64];
  int n = sl_cost_format(nanos, buf, sizeof buf);
  assert_string_equal(buf, text);
  assert_int_equal(n, strlen(text));
}


static sl_usage usage (int64_t cost_nanos, int64_t tokens, int64_t requests) {
  sl_usage u;
  u.cost_nanos = cost_nanos;
  u.tokens = tokens;
  u.requests = requests;
  return u;
}


static void assert_usage_equal (const sl_usage *a, const sl_usage *b) {
  assert_true(a->cost_nanos == b->cost_nanos);
  assert_true(a->tokens == b->tokens);
  assert_true(a->requests == b->requests);
}


#define UNIT  SL_NANOS_PER_UNIT
#define CENT  (SL_NANOS_PER_UNIT / 100)


/* {====================================================== Exact amounts */

static void test_costs_are_written_as_exact_decimals (void **state) {
  (void)state;
  assert_cost_text(0, "0.00");
  assert_cost_text(400000000, "0.40");
  assert_cost_text(50000000, "0.05");
  assert_cost_text(123456789, "0.123456789");
  assert_cost_text(3 * UNIT, "3.00");
  assert_cost_text(1, "0.000000001");
  assert_cost_text(1500000000, "1.50");
  assert_cost_text(INT64_MAX, "9223372036.854775807");
  assert_cost_text(-250000000, "-0.25");
}


static void test_lua_costs_become_exact_nanos (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_true(usage_of(L, "return {cost = 0.1}").cost_nanos == 100000000);
  assert_true(usage_of(L, "return {cost = 0.3}").cost_nanos == 300000000);
  assert_true(usage_of(L, "return {cost = 2}").cost_nanos == 2 * UNIT);
  assert_true(usage_of(L, "return {cost = 2.5}").cost_nanos == 2500000000);
  assert_true(usage_of(L, "return {cost = 1e-9}").cost_nanos == 1);
  /* Past nine decimals the amount is rounded half up. */
  assert_true(usage_of(L, "return {cost = 1.5e-9}").cost_nanos == 2);
  assert_true(usage_of(L, "return {cost = 1.4e-9}").cost_nanos == 1);
  assert_true(usage_of(L, "return {cost = 4e-10}").cost_nanos == 0);
  assert_true(usage_of(L, "return {cost = 123456.789}").cost_nanos
              == INT64_C(123456789000000));
  assert_true(usage_of(L, "return {cost = 1e9}").cost_nanos
              == INT64_C(1000000000) * UNIT);
  assert_true(usage_of(L, "return {cost = -0.0}").cost_nanos == 0);
  /* The float sum 0.1 + 0.2 is 0.30000000000000004; as nanos it is 0.3. */
  assert_true(usage_of(L, "return {cost = 0.1 + 0.2}").cost_nanos == 300000000);
  lua_close(L);
}


static void test_tenths_add_up_exactly (void **state) {
  lua_State *L = new_state();
  sl_usage a = usage_of(L, "return {cost = 0.1}");
  sl_usage b = usage_of(L, "return {cost = 0.2}");
  sl_usage c = usage_of(L, "return {cost = 0.3}");
  sl_usage limit = c;
  sl_usage none = usage(0, 0, 0);
  sl_quota q;
  char err[256];
  (void)state;
  sl_usage_add(&a, &b);
  assert_usage_equal(&a, &c);
  /* Spending 0.1 and then 0.2 of a 0.3 budget is not an overrun, and
     leaves exactly nothing: a reservation of 0 still fits, 1 nano does
     not. */
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST), 0);
  b = usage_of(L, "return {cost = 0.1}");
  assert_int_equal(sl_quota_reconcile(&q, &none, &b, err, sizeof err), 0);
  b = usage_of(L, "return {cost = 0.2}");
  assert_int_equal(sl_quota_reconcile(&q, &none, &b, err, sizeof err), 0);
  assert_true(q.spent.cost_nanos == q.limit.cost_nanos);
  assert_int_equal(sl_quota_reserve(&q, &none, err, sizeof err), 0);
  b = usage(1, 0, 0);
  assert_int_equal(sl_quota_reserve(&q, &b, err, sizeof err),
                   SL_QUOTA_EXCEEDED);
  assert_string_equal(err, "cost budget exceeded: spent 0.30 + reserved 0.00 "
                      "+ estimate 0.000000001 > limit 0.30");
  lua_close(L);
}


static void test_usage_sums_hold_at_the_int64_maximum (void **state) {
  sl_usage a = usage(INT64_MAX - 1, 5, 0);
  sl_usage b = usage(10, INT64_MAX, 7);
  (void)state;
  sl_usage_add(&a, &b);
  assert_true(a.cost_nanos == INT64_MAX);
  assert_true(a.tokens == INT64_MAX);
  assert_true(a.requests == 7);
  assert_true(sl_usage_get(&a, SL_DIM_REQUESTS) == 7);
  assert_string_equal(sl_usage_dimname(SL_DIM_TOKENS), "tokens");
}

/* }====================================================== */


/* {====================================================== Lua tables */

static void test_usage_table_fields_are_read (void **state) {
  lua_State *L = new_state();
  sl_usage u;
  char err[128];
  (void)state;
  u = usage_of(L, "return {cost = 0.25, tokens = 1200, requests = 3}");
  assert_true(u.cost_nanos == 250000000);
  assert_true(u.tokens == 1200);
  assert_true(u.requests == 3);
  u = usage_of(L, "return {tokens = 2.0}");
  assert_true(u.tokens == 2 && u.cost_nanos == 0 && u.requests == 0);
  u = usage_of(L, "return {}");
  assert_true(u.tokens == 0 && u.cost_nanos == 0 && u.requests == 0);
  /* The return value tells which fields were there. */
  push_chunk(L, "return {cost = 0, requests = 1}");
  assert_int_equal(sl_usage_from_lua(L, -1, &u, SL_USAGE_ALL, err, sizeof err),
                   SL_USAGE_COST | SL_USAGE_REQUESTS);
  lua_pop(L, 1);
  lua_close(L);
}


static void test_bad_usage_tables_are_refused_clearly (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_usage_refused(L, "return {cots = 1}", SL_USAGE_ALL,
                       "unknown usage field 'cots' (did you mean 'cost'?)");
  assert_usage_refused(L, "return {tokns = 1}", SL_USAGE_ALL,
                       "unknown usage field 'tokns' (did you mean 'tokens'?)");
  assert_usage_refused(L, "return {request = 1}", SL_USAGE_ALL,
                       "unknown usage field 'request' "
                       "(did you mean 'requests'?)");
  assert_usage_refused(L, "return {latency = 1}", SL_USAGE_ALL,
                       "unknown usage field 'latency'");
  assert_usage_refused(L, "return {requests = 1}",
                       SL_USAGE_COST | SL_USAGE_TOKENS,
                       "unexpected usage field 'requests' "
                       "(not accepted here)");
  assert_usage_refused(L, "return {0.5}", SL_USAGE_ALL,
                       "usage fields must be named (cost, tokens, requests), "
                       "got a number key");
  assert_usage_refused(L, "return {cost = -0.1}", SL_USAGE_ALL,
                       "usage field 'cost' must not be negative, got -0.1");
  assert_usage_refused(L, "return {cost = -3}", SL_USAGE_ALL,
                       "usage field 'cost' must not be negative, got -3");
  assert_usage_refused(L, "return {cost = '0.5'}", SL_USAGE_ALL,
                       "usage field 'cost' must be a number, got string");
  assert_usage_refused(L, "return {cost = 0/0}", SL_USAGE_ALL,
                       "usage field 'cost' must be a number, got nan");
  assert_usage_refused(L, "return {cost = math.huge}", SL_USAGE_ALL,
                       "usage field 'cost' is too large: inf");
  assert_usage_refused(L, "return {cost = 1e10}", SL_USAGE_ALL,
                       "usage field 'cost' is too large: 10000000000");
  assert_usage_refused(L, "return {tokens = 1.5}", SL_USAGE_ALL,
                       "usage field 'tokens' must be a whole number, got 1.5");
  assert_usage_refused(L, "return {tokens = -2}", SL_USAGE_ALL,
                       "usage field 'tokens' must not be negative, got -2");
  assert_usage_refused(L, "return {requests = -2.5}", SL_USAGE_ALL,
                       "usage field 'requests' must not be negative, "
                       "got -2.5");
  assert_usage_refused(L, "return {requests = true}", SL_USAGE_ALL,
                       "usage field 'requests' must be a whole number, "
                       "got boolean");
  assert_usage_refused(L, "return 'lots'", SL_USAGE_ALL,
                       "usage must be a table, got string");
  lua_close(L);
}


static void test_usage_is_pushed_with_all_three_fields (void **state) {
  lua_State *L = new_state();
  sl_usage u = usage(100000000, 42, 0), back;
  (void)state;
  sl_usage_push(L, &u);
  lua_setglobal(L, "U");
  push_chunk(L, "return U.cost == 0.1 and math.type(U.tokens) == 'integer' "
                "and U.tokens == 42 and math.type(U.requests) == 'integer' "
                "and U.requests == 0");
  assert_true(lua_toboolean(L, -1));
  lua_pop(L, 1);
  /* And it reads back as the same usage. */
  assert_usage_equal(&u, &(sl_usage){100000000, 42, 0});
  back = usage_of(L, "return U");
  assert_usage_equal(&back, &u);
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== --budget */

static void assert_budget (const char *text, int64_t cost, int64_t tokens,
                           int64_t requests, unsigned mask) {
  sl_usage l;
  unsigned limited = 99;
  char err[256];
  if (sl_budget_parse(text, &l, &limited, err, sizeof err) != 0)
    fail_msg("budget '%s' refused: %s", text, err);
  assert_int_equal(limited, mask);
  if (mask & SL_USAGE_COST) assert_true(l.cost_nanos == cost);
  if (mask & SL_USAGE_TOKENS) assert_true(l.tokens == tokens);
  if (mask & SL_USAGE_REQUESTS) assert_true(l.requests == requests);
}


static void assert_budget_refused (const char *text, const char *message) {
  sl_usage l = usage(7, 7, 7);
  unsigned limited = 99;
  char err[256] = "";
  assert_int_equal(sl_budget_parse(text, &l, &limited, err, sizeof err),
                   SL_EINVAL);
  assert_string_equal(err, message);
  assert_int_equal(limited, 99);  /* nothing written */
  assert_true(l.cost_nanos == 7);
}


static void test_budget_text_is_read_as_exact_decimals (void **state) {
  (void)state;
  assert_budget("cost=0.5,tokens=20000", 500000000, 20000, 0,
                SL_USAGE_COST | SL_USAGE_TOKENS);
  assert_budget(" cost = 0.10 , requests=3 ", 100000000, 0, 3,
                SL_USAGE_COST | SL_USAGE_REQUESTS);
  assert_budget("requests=100", 0, 0, 100, SL_USAGE_REQUESTS);
  assert_budget("cost=.5", 500000000, 0, 0, SL_USAGE_COST);
  assert_budget("cost=2.", 2 * UNIT, 0, 0, SL_USAGE_COST);
  assert_budget("cost=+1", UNIT, 0, 0, SL_USAGE_COST);
  assert_budget("cost=0.1234567895", 123456790, 0, 0, SL_USAGE_COST);
  assert_budget("cost=0.1234567894999", 123456789, 0, 0, SL_USAGE_COST);
  assert_budget("cost=1e-3", 1000000, 0, 0, SL_USAGE_COST);
  assert_budget("cost=2.5E+2", 250 * UNIT, 0, 0, SL_USAGE_COST);
  assert_budget("tokens=2e4", 0, 20000, 0, SL_USAGE_TOKENS);
  assert_budget("tokens=20000.000", 0, 20000, 0, SL_USAGE_TOKENS);
  assert_budget("cost=0.30000000000000000000000000001", 300000000, 0, 0,
                SL_USAGE_COST);
  assert_budget("cost=9223372036.854775807", INT64_MAX, 0, 0, SL_USAGE_COST);
  assert_budget("tokens=9223372036854775807", 0, INT64_MAX, 0,
                SL_USAGE_TOKENS);
}


static void test_bad_budget_text_is_refused_clearly (void **state) {
  (void)state;
  assert_budget_refused("cots=1", "unknown budget dimension 'cots' (did you "
                        "mean 'cost'?) (the dimensions are cost, tokens and "
                        "requests)");
  assert_budget_refused("money=1", "unknown budget dimension 'money' (the "
                        "dimensions are cost, tokens and requests)");
  assert_budget_refused("cost=-1", "budget for cost must not be negative, "
                        "got '-1'");
  assert_budget_refused("tokens=-0", "budget for tokens must not be negative, "
                        "got '-0'");
  assert_budget_refused("tokens=1.5", "budget for tokens must be a whole "
                        "number, got '1.5'");
  assert_budget_refused("cost=abc", "budget for cost must be a decimal "
                        "number, got 'abc'");
  assert_budget_refused("cost=1e", "budget for cost must be a decimal "
                        "number, got '1e'");
  assert_budget_refused("cost=0x10", "budget for cost must be a decimal "
                        "number, got '0x10'");
  assert_budget_refused("cost", "budget item 'cost' needs a value (write "
                        "cost=<amount>)");
  assert_budget_refused("cost=", "budget for cost has no value");
  assert_budget_refused("cost=1,cost=2", "budget for cost given twice");
  assert_budget_refused("cost=1,", "empty item in budget 'cost=1,'");
  assert_budget_refused("  ", "empty budget (write e.g. "
                        "cost=0.5,tokens=20000)");
  assert_budget_refused("tokens=9223372036854775808", "budget for tokens is "
                        "too large: '9223372036854775808'");
  assert_budget_refused("cost=9223372036.854775808", "budget for cost is too "
                        "large: '9223372036.854775808'");
  assert_budget_refused("cost=1e400", "budget for cost is too large: "
                        "'1e400'");
}

/* }====================================================== */


/* {====================================================== Reservations */

static void test_reservation_that_fits_is_granted (void **state) {
  sl_usage limit = usage(50 * CENT, 1000, 10);
  sl_usage est = usage(20 * CENT, 400, 4);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_ALL), 0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_usage_equal(&q.reserved, &(sl_usage){40 * CENT, 800, 8});
  /* An exact fit is granted: spent + reserved + estimate == limit. */
  est = usage(10 * CENT, 200, 2);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_usage_equal(&q.reserved, &limit);
  assert_int_equal(sl_quota_check(&q, err, sizeof err), 0);
}


static void test_reservation_that_does_not_fit_changes_nothing (void **state) {
  sl_usage limit = usage(50 * CENT, 0, 0);
  sl_usage none = usage(0, 0, 0);
  sl_usage u;
  sl_quota q, before;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST), 0);
  u = usage(40 * CENT, 0, 0);
  assert_int_equal(sl_quota_reserve(&q, &u, err, sizeof err), 0);
  assert_int_equal(sl_quota_reconcile(&q, &u, &u, err, sizeof err), 0);
  u = usage(5 * CENT, 0, 0);
  assert_int_equal(sl_quota_reserve(&q, &u, err, sizeof err), 0);
  before = q;
  u = usage(10 * CENT, 0, 0);
  assert_int_equal(sl_quota_reserve(&q, &u, err, sizeof err),
                   SL_QUOTA_EXCEEDED);
  assert_string_equal(err, "cost budget exceeded: spent 0.40 + reserved 0.05 "
                      "+ estimate 0.10 > limit 0.50");
  assert_memory_equal(&q, &before, sizeof q);
  /* A reservation of nothing still fits. */
  assert_int_equal(sl_quota_reserve(&q, &none, err, sizeof err), 0);
}


static void test_counted_dimensions_are_reported_as_integers (void **state) {
  sl_usage limit = usage(0, 120, 5);
  sl_usage u = usage(0, 100, 0);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit,
                                 SL_USAGE_TOKENS | SL_USAGE_REQUESTS), 0);
  assert_int_equal(sl_quota_reconcile(&q, &(sl_usage){0, 0, 0}, &u, err,
                                      sizeof err), 0);
  u = usage(0, 50, 0);
  assert_int_equal(sl_quota_reserve(&q, &u, err, sizeof err),
                   SL_QUOTA_EXCEEDED);
  assert_string_equal(err, "tokens budget exceeded: spent 100 + reserved 0 + "
                      "estimate 50 > limit 120");
  u = usage(0, 0, 6);
  assert_int_equal(sl_quota_reserve(&q, &u, err, sizeof err),
                   SL_QUOTA_EXCEEDED);
  assert_string_equal(err, "requests budget exceeded: spent 0 + reserved 0 + "
                      "estimate 6 > limit 5");
}


static void test_unlimited_dimensions_never_refuse (void **state) {
  sl_usage limit = usage(UNIT, 0, 0);
  sl_usage big = usage(0, INT64_MAX / 2, INT64_MAX / 2);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST), 0);
  assert_int_equal(sl_quota_reserve(&q, &big, err, sizeof err), 0);
  assert_int_equal(sl_quota_reserve(&q, &big, err, sizeof err), 0);
  /* Reservations are kept exact, so one that would pass INT64_MAX is an
     error rather than a silent cap. */
  assert_int_equal(sl_quota_reserve(&q, &big, err, sizeof err), SL_EINVAL);
  assert_string_equal(err, "estimate of tokens too large");
  assert_int_equal(sl_quota_init(&q, NULL, 0), 0);
  assert_int_equal(sl_quota_reserve(&q, &big, err, sizeof err), 0);
}


static void test_negative_figures_are_refused (void **state) {
  sl_usage limit = usage(-1, 0, 0);
  sl_usage neg = usage(0, -1, 0);
  sl_usage ok = usage(1, 1, 1);
  sl_quota q, before;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST), SL_EINVAL);
  assert_int_equal(q.limited, 0);
  /* A negative figure in a dimension with no limit is not looked at. */
  limit.tokens = 10;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_TOKENS), 0);
  assert_int_equal(sl_quota_reserve(&q, &ok, err, sizeof err), 0);
  before = q;
  assert_int_equal(sl_quota_reserve(&q, &neg, err, sizeof err), SL_EINVAL);
  assert_int_equal(sl_quota_charge(&q, NULL, &neg, err, sizeof err),
                   SL_EINVAL);
  assert_int_equal(sl_quota_reconcile(&q, &ok, &neg, err, sizeof err),
                   SL_EINVAL);
  assert_int_equal(sl_quota_reconcile(&q, &neg, &ok, err, sizeof err),
                   SL_EINVAL);
  assert_memory_equal(&q, &before, sizeof q);
}

/* }====================================================== */


/* {====================================================== Reconciling */

static void test_reconcile_releases_and_records_the_actual (void **state) {
  sl_usage limit = usage(UNIT, 1000, 10);
  sl_usage est = usage(30 * CENT, 300, 1);
  sl_usage actual = usage(12 * CENT, 250, 1);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_ALL), 0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_int_equal(sl_quota_reconcile(&q, &est, &actual, err, sizeof err), 0);
  assert_usage_equal(&q.spent, &actual);
  assert_usage_equal(&q.reserved, &(sl_usage){0, 0, 0});
  assert_usage_equal(&q.excess, &(sl_usage){0, 0, 0});
}


static void test_actual_above_estimate_is_recorded_in_full (void **state) {
  sl_usage limit = usage(UNIT, 0, 0);
  sl_usage est = usage(10 * CENT, 0, 0);
  sl_usage actual = usage(35 * CENT, 0, 0);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST), 0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_int_equal(sl_quota_reconcile(&q, &est, &actual, err, sizeof err), 0);
  assert_true(q.spent.cost_nanos == 35 * CENT);
  assert_true(q.excess.cost_nanos == 25 * CENT);
  assert_int_equal(sl_quota_check(&q, err, sizeof err), 0);
}


static void test_overrun_is_reported_with_its_figures (void **state) {
  sl_usage limit = usage(50 * CENT, 0, 0);
  sl_usage u = usage(45 * CENT, 0, 0);
  sl_usage est = usage(5 * CENT, 0, 0);
  sl_usage actual = usage(10 * CENT, 0, 0);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST), 0);
  assert_int_equal(sl_quota_reconcile(&q, &(sl_usage){0, 0, 0}, &u, err,
                                      sizeof err), 0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_int_equal(sl_quota_reconcile(&q, &est, &actual, err, sizeof err),
                   SL_QUOTA_OVERRUN);
  assert_string_equal(err, "cost budget overrun: spent 0.45 + actual 0.10 = "
                      "0.55 > limit 0.50 (reserved for it 0.05)");
  /* Recorded all the same, and the invariant still holds with excess. */
  assert_true(q.spent.cost_nanos == 55 * CENT);
  assert_true(q.reserved.cost_nanos == 0);
  assert_int_equal(sl_quota_check(&q, err, sizeof err), 0);
  /* Past the limit, even an estimate of nothing is refused. */
  assert_int_equal(sl_quota_reserve(&q, &(sl_usage){0, 0, 0}, err, sizeof err),
                   SL_QUOTA_EXCEEDED);
}


static void test_releasing_more_than_reserved_is_refused (void **state) {
  sl_usage est = usage(10, 10, 10);
  sl_usage more = usage(10, 11, 10);
  sl_quota q, before;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, NULL, 0), 0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  before = q;
  assert_int_equal(sl_quota_reconcile(&q, &more, &est, err, sizeof err),
                   SL_EINVAL);
  assert_string_equal(err, "a step releases more than is reserved");
  assert_int_equal(sl_quota_charge(&q, &more, &est, err, sizeof err),
                   SL_EINVAL);
  assert_memory_equal(&q, &before, sizeof q);
}

/* }====================================================== */


/* {====================================================== Charges */

static void test_charge_draws_on_the_reservation_first (void **state) {
  sl_usage limit = usage(UNIT, 1000, 0);
  sl_usage est = usage(30 * CENT, 500, 0);
  sl_usage held = est;
  sl_usage c1 = usage(20 * CENT, 100, 0);
  sl_usage c2 = usage(20 * CENT, 100, 0);
  sl_usage rest = usage(5 * CENT, 0, 0);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_COST | SL_USAGE_TOKENS),
                   0);
  assert_int_equal(sl_quota_reserve(&q, &est, err, sizeof err), 0);
  assert_int_equal(sl_quota_charge(&q, &held, &c1, err, sizeof err), 0);
  assert_usage_equal(&held, &(sl_usage){10 * CENT, 400, 0});
  assert_usage_equal(&q.reserved, &held);
  assert_usage_equal(&q.spent, &c1);
  /* The second charge passes what is held: 0.10 is drawn, 0.10 is excess. */
  assert_int_equal(sl_quota_charge(&q, &held, &c2, err, sizeof err), 0);
  assert_usage_equal(&held, &(sl_usage){0, 300, 0});
  assert_true(q.excess.cost_nanos == 10 * CENT);
  assert_true(q.spent.cost_nanos == 40 * CENT);
  assert_int_equal(sl_quota_check(&q, err, sizeof err), 0);
  /* The end of the step releases what it still holds. */
  assert_int_equal(sl_quota_reconcile(&q, &held, &rest, err, sizeof err), 0);
  assert_usage_equal(&q.reserved, &(sl_usage){0, 0, 0});
  assert_usage_equal(&q.spent, &(sl_usage){45 * CENT, 200, 0});
}


static void test_charge_past_the_limit_is_an_overrun (void **state) {
  sl_usage limit = usage(0, 1000, 0);
  sl_usage u = usage(0, 900, 0);
  sl_usage c = usage(0, 200, 0);
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &limit, SL_USAGE_TOKENS), 0);
  assert_int_equal(sl_quota_charge(&q, NULL, &u, err, sizeof err), 0);
  assert_int_equal(sl_quota_charge(&q, NULL, &c, err, sizeof err),
                   SL_QUOTA_OVERRUN);
  assert_string_equal(err, "tokens budget overrun: spent 900 + charge 200 = "
                      "1100 > limit 1000");
  assert_true(q.spent.tokens == 1100);
}


static void test_invariant_check_names_the_broken_dimension (void **state) {
  sl_quota q;
  char err[256];
  (void)state;
  assert_int_equal(sl_quota_init(&q, &(sl_usage){50 * CENT, 0, 0},
                                 SL_USAGE_COST), 0);
  q.spent.cost_nanos = 40 * CENT;
  q.reserved.cost_nanos = 20 * CENT;
  assert_int_equal(sl_quota_check(&q, err, sizeof err), -1);
  assert_string_equal(err, "cost: spent 0.40 + reserved 0.20 > limit 0.50 + "
                      "excess 0.00");
  q.excess.cost_nanos = 10 * CENT;
  assert_int_equal(sl_quota_check(&q, err, sizeof err), 0);
  q.reserved.tokens = -1;
  assert_int_equal(sl_quota_check(&q, err, sizeof err), -1);
  assert_string_equal(err, "a quota figure is negative");
}

/* }====================================================== */


/* {====================================================== Randomized */

/* splitmix64: the same sequence on every platform for a given seed. */
static uint64_t rng_state;

static uint64_t rnd (void) {
  uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static int64_t below (int64_t n) {  /* uniform in [0, n) */
  return (n <= 0) ? 0 : (int64_t)(rnd() % (uint64_t)n);
}

static unsigned seed;

#define CHECK(cond, ...) do { \
    if (!(cond)) { \
      char what_[512]; \
      snprintf(what_, sizeof what_, __VA_ARGS__); \
      fail_msg("seed %u (rerun with SLUICE_TEST_SEED=%u): %s: %s", \
               seed, seed, #cond, what_); \
    } \
  } while (0)


typedef struct Branch {
  sl_usage held;       /* what it still holds of its reservation */
  int charges;
} Branch;

/* The model: what the quota must hold, computed here independently. */
typedef struct Model {
  int64_t limit[SL_NDIMS];
  unsigned limited;
  int64_t spent[SL_NDIMS], reserved[SL_NDIMS], excess[SL_NDIMS];
  int64_t reported[SL_NDIMS];  /* every actual and charge, summed */
} Model;


/* A random usage around the scale of each dimension; zero sometimes. */
static sl_usage random_usage (const int64_t scale[SL_NDIMS]) {
  sl_usage u;
  int d;
  for (d = 0; d < SL_NDIMS; d++) {
    int64_t v = (below(5) == 0) ? 0 : below(scale[d] + 1);
    *(d == 0 ? &u.cost_nanos : d == 1 ? &u.tokens : &u.requests) = v;
  }
  return u;
}


static int64_t get (const sl_usage *u, int d) {
  return sl_usage_get(u, d);
}


static void set (sl_usage *u, int d, int64_t v) {
  *(d == 0 ? &u->cost_nanos : d == 1 ? &u->tokens : &u->requests) = v;
}


/* Checks the quota against the model and the invariant, after op. */
static void check_against_model (const sl_quota *q, const Model *m,
                                 const char *op, int step) {
  char err[256];
  int d;
  for (d = 0; d < SL_NDIMS; d++) {
    CHECK(get(&q->spent, d) == m->spent[d], "%s #%d: %s spent %lld, model %lld",
          op, step, sl_usage_dimname(d), (long long)get(&q->spent, d),
          (long long)m->spent[d]);
    CHECK(get(&q->reserved, d) == m->reserved[d], "%s #%d: %s reserved",
          op, step, sl_usage_dimname(d));
    CHECK(get(&q->excess, d) == m->excess[d], "%s #%d: %s excess",
          op, step, sl_usage_dimname(d));
    if (m->limited & (1u << d)) {
      CHECK(m->spent[d] + m->reserved[d] <= m->limit[d] + m->excess[d],
            "%s #%d: %s spent + reserved > limit + excess", op, step,
            sl_usage_dimname(d));
      if (m->excess[d] == 0)
        CHECK(m->spent[d] + m->reserved[d] <= m->limit[d],
              "%s #%d: %s spent + reserved > limit with no excess", op, step,
              sl_usage_dimname(d));
    }
  }
  err[0] = '\0';
  CHECK(sl_quota_check(q, err, sizeof err) == 0, "%s #%d: %s", op, step, err);
}


/* Is any limited dimension of the model spent past its limit? */
static int model_overrun (const Model *m) {
  int d;
  for (d = 0; d < SL_NDIMS; d++) {
    if ((m->limited & (1u << d)) && m->spent[d] > m->limit[d])
      return 1;
  }
  return 0;
}


/*
** One run: 1,000 branches, started (reserve) and finished (reconcile,
** sometimes after charges) in a random interleaving, many in flight at
** once. Returns the numbers of refusals and overruns seen.
*/
static void random_run (int round, int *refusals, int *overruns) {
  enum { NBRANCHES = 1000 };
  static Branch pool[NBRANCHES];
  int64_t scale[SL_NDIMS] = {20 * CENT, 2000, 3};
  int npool = 0, started = 0, step = 0, d;
  /* Budgets from tight (a few branches' worth) to ample (never
     refusing); each dimension limited or not at random. */
  int64_t room = (round % 4 == 3) ? NBRANCHES * 4 : 5 + below(60);
  Model m;
  sl_quota q;
  sl_usage limit;
  char err[256];
  memset(&m, 0, sizeof m);
  m.limited = (unsigned)(1 + below(SL_USAGE_ALL));
  for (d = 0; d < SL_NDIMS; d++) {
    m.limit[d] = scale[d] * room / 2 + below(scale[d]);
    set(&limit, d, m.limit[d]);
  }
  CHECK(sl_quota_init(&q, &limit, m.limited) == 0, "init");
  while (started < NBRANCHES || npool > 0) {
    step++;
    if (started < NBRANCHES && (npool == 0 || below(2) == 0)) {
      /* Start a branch: its reservation fits or is refused whole. */
      sl_usage est = random_usage(scale);
      sl_quota before = q;
      int fit = 1, rc;
      started++;
      for (d = 0; d < SL_NDIMS; d++) {
        if ((m.limited & (1u << d))
            && m.spent[d] + m.reserved[d] + get(&est, d) > m.limit[d])
          fit = 0;
      }
      rc = sl_quota_reserve(&q, &est, err, sizeof err);
      CHECK(rc == (fit ? 0 : SL_QUOTA_EXCEEDED), "reserve #%d returned %d",
            step, rc);
      if (!fit) {
        (*refusals)++;
        CHECK(memcmp(&q, &before, sizeof q) == 0,
              "refused reserve #%d changed the quota", step);
        CHECK(strstr(err, "budget exceeded: spent ") != NULL,
              "reserve #%d message: %s", step, err);
      }
      else {
        Branch *b = &pool[npool++];
        b->held = est;
        b->charges = 0;
        for (d = 0; d < SL_NDIMS; d++)
          m.reserved[d] += get(&est, d);
      }
      check_against_model(&q, &m, "reserve", step);
    }
    else {
      int i = (int)below(npool);
      Branch *b = &pool[i];
      int rc;
      /* A random usage: within what is held most of the time, beyond it
         sometimes. */
      sl_usage u;
      for (d = 0; d < SL_NDIMS; d++) {
        int64_t h = get(&b->held, d);
        set(&u, d, (below(4) == 0) ? below(2 * scale[d] + 1)
                                   : below(h + 1));
      }
      if (b->charges < 3 && below(4) == 0) {
        sl_usage held_after = b->held;
        for (d = 0; d < SL_NDIMS; d++) {
          int64_t covered = get(&b->held, d) < get(&u, d) ? get(&b->held, d)
                                                          : get(&u, d);
          m.reserved[d] -= covered;
          m.spent[d] += get(&u, d);
          m.excess[d] += get(&u, d) - covered;
          m.reported[d] += get(&u, d);
          set(&held_after, d, get(&b->held, d) - covered);
        }
        b->charges++;
        rc = sl_quota_charge(&q, &b->held, &u, err, sizeof err);
        CHECK(memcmp(&b->held, &held_after, sizeof held_after) == 0,
              "charge #%d left the branch holding the wrong amount", step);
        CHECK(rc == (model_overrun(&m) ? SL_QUOTA_OVERRUN : 0),
              "charge #%d returned %d", step, rc);
        if (rc != 0) {
          (*overruns)++;
          CHECK(strstr(err, "budget overrun: spent ") != NULL,
                "charge #%d message: %s", step, err);
        }
        check_against_model(&q, &m, "charge", step);
        continue;
      }
      for (d = 0; d < SL_NDIMS; d++) {
        int64_t h = get(&b->held, d), a = get(&u, d);
        m.reserved[d] -= h;
        m.spent[d] += a;
        if (a > h)
          m.excess[d] += a - h;
        m.reported[d] += a;
      }
      rc = sl_quota_reconcile(&q, &b->held, &u, err, sizeof err);
      CHECK(rc == (model_overrun(&m) ? SL_QUOTA_OVERRUN : 0),
            "reconcile #%d returned %d", step, rc);
      if (rc != 0)
        (*overruns)++;
      pool[i] = pool[--npool];
      check_against_model(&q, &m, "reconcile", step);
    }
  }
  for (d = 0; d < SL_NDIMS; d++) {
    CHECK(get(&q.reserved, d) == 0, "round %d: %s still reserved at the end",
          round, sl_usage_dimname(d));
    CHECK(get(&q.spent, d) == m.reported[d], "round %d: %s spent %lld, "
          "reported %lld", round, sl_usage_dimname(d),
          (long long)get(&q.spent, d), (long long)m.reported[d]);
  }
}


static void test_random_concurrent_branches_keep_the_invariant (void **st) {
  const char *env = getenv("SLUICE_TEST_SEED");
  int refusals = 0, overruns = 0, round;
  (void)st;
  seed = (env != NULL) ? (unsigned)strtoul(env, NULL, 10)
                       : (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
  rng_state = seed;
  for (round = 0; round < 20; round++)
    random_run(round, &refusals, &overruns);
  /* Tight budgets with usage beyond estimates make both happen in every
     seed tried; if they did not, the run above tested too little. */
  CHECK(refusals > 0, "no reservation was ever refused");
  CHECK(overruns > 0, "no overrun ever happened");
}

/* }====================================================== */


int main (void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_costs_are_written_as_exact_decimals),
    cmocka_unit_test(test_lua_costs_become_exact_nanos),
    cmocka_unit_test(test_tenths_add_up_exactly),
    cmocka_unit_test(test_usage_sums_hold_at_the_int64_maximum),
    cmocka_unit_test(test_usage_table_fields_are_read),
    cmocka_unit_test(test_bad_usage_tables_are_refused_clearly),
    cmocka_unit_test(test_usage_is_pushed_with_all_three_fields),
    cmocka_unit_test(test_budget_text_is_read_as_exact_decimals),
    cmocka_unit_test(test_bad_budget_text_is_refused_clearly),
    cmocka_unit_test(test_reservation_that_fits_is_granted),
    cmocka_unit_test(test_reservation_that_does_not_fit_changes_nothing),
    cmocka_unit_test(test_counted_dimensions_are_reported_as_integers),
    cmocka_unit_test(test_unlimited_dimensions_never_refuse),
    cmocka_unit_test(test_negative_figures_are_refused),
    cmocka_unit_test(test_reconcile_releases_and_records_the_actual),
    cmocka_unit_test(test_actual_above_estimate_is_recorded_in_full),
    cmocka_unit_test(test_overrun_is_reported_with_its_figures),
    cmocka_unit_test(test_releasing_more_than_reserved_is_refused),
    cmocka_unit_test(test_charge_draws_on_the_reservation_first),
    cmocka_unit_test(test_charge_past_the_limit_is_an_overrun),
    cmocka_unit_test(test_invariant_check_names_the_broken_dimension),
    cmocka_unit_test(test_random_concurrent_branches_keep_the_invariant),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
