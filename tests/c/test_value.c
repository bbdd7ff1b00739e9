/*
** Tests of value encoding: what a user sees when Lua values become JSON
** text and JSON text becomes Lua values.
*/

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "value.h"


/*
** A fresh state with the standard libraries, and with ARRAY (the array
** metatable) and NULL (the null sentinel) as globals for test chunks.
*/
static lua_State *new_state (void) {
  lua_State *L = luaL_newstate();
  assert_non_null(L);
  luaL_openlibs(L);
  sl_json_pusharraymt(L);
  lua_setglobal(L, "ARRAY");
  sl_json_pushnull(L);
  lua_setglobal(L, "NULL");
  return L;
}


/* Runs a chunk that returns one value and leaves that value pushed. */
static void push_chunk (lua_State *L, const char *chunk) {
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    fail_msg("chunk failed: %s", lua_tostring(L, -1));
}


/*
** Encodes the value the chunk returns and checks the text; also checks
** that encoding leaves the stack as it was.
*/
static void assert_encodes (lua_State *L, const char *chunk, int flags,
                            const char *expected) {
  sl_buf b;
  char err[256];
  int top;
  push_chunk(L, chunk);
  top = lua_gettop(L);
  sl_buf_init(&b);
  if (sl_json_encode(L, -1, &b, flags, err, sizeof err) != 0)
    fail_msg("encoding %s failed: %s", chunk, err);
  assert_int_equal(lua_gettop(L), top);
  assert_string_equal(b.data, expected);
  assert_int_equal(strlen(b.data), b.len);
  sl_buf_free(&b);
  lua_pop(L, 1);
}


/*
** Checks that encoding the chunk's value fails with exactly 'message',
** appends nothing and leaves the stack as it was.
*/
static void assert_encode_fails (lua_State *L, const char *chunk, int flags,
                                 const char *message) {
  sl_buf b;
  char err[1024];
  int top;
  push_chunk(L, chunk);
  top = lua_gettop(L);
  sl_buf_init(&b);
  assert_int_equal(sl_buf_add(&b, "kept", 4), 0);
  err[0] = '\0';
  assert_int_equal(sl_json_encode(L, -1, &b, flags, err, sizeof err), -1);
  assert_int_equal(lua_gettop(L), top);
  assert_string_equal(err, message);
  assert_string_equal(b.data, "kept");
  assert_int_equal(b.len, 4);
  sl_buf_free(&b);
  lua_pop(L, 1);
}


/* Decodes text, checking that exactly one value was pushed. */
static void decode_ok (lua_State *L, const char *text) {
  int top = lua_gettop(L);
  if (sl_json_decode(L, text, strlen(text)) != 0)
    fail_msg("decoding %s failed: %s", text, lua_tostring(L, -1));
  assert_int_equal(lua_gettop(L), top + 1);
}


/* Decodes text and encodes the result again, checking the text. */
static void assert_recodes (lua_State *L, const char *text, int flags,
                            const char *expected) {
  sl_buf b;
  char err[256];
  decode_ok(L, text);
  sl_buf_init(&b);
  if (sl_json_encode(L, -1, &b, flags, err, sizeof err) != 0)
    fail_msg("encoding decoded %s failed: %s", text, err);
  assert_string_equal(b.data, expected);
  sl_buf_free(&b);
  lua_pop(L, 1);
}


static void assert_decode_fails (lua_State *L, const char *text, size_t len,
                                 const char *message) {
  int top = lua_gettop(L);
  assert_int_equal(sl_json_decode(L, text, len), -1);
  assert_int_equal(lua_gettop(L), top + 1);
  assert_string_equal(lua_tostring(L, -1), message);
  lua_pop(L, 1);
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


/* {====================================================== Round trips */

static void test_nested_document_round_trips (void **state) {
  lua_State *L = new_state();
  const char *doc =
    "{\"a\":[1,2.5,{\"b\":null,\"c\":true}],\"d\":\"x\","
    "\"e\":{\"f\":[],\"g\":{},\"h\":[[false],[-3]]}}";
  (void)state;
  assert_recodes(L, doc, SL_JSON_CANONICAL, doc);
  assert_recodes(L, " \n[ 1 , { \"k\" : [ ] } ]\r\n", 0, "[1,{\"k\":[]}]");
  assert_recodes(L, "\"just a string\"", 0, "\"just a string\"");
  assert_recodes(L, "7", 0, "7");
  lua_close(L);
}


static void test_null_round_trips_as_the_null_sentinel (void **state) {
  lua_State *L = new_state();
  (void)state;
  decode_ok(L, "[null,{\"a\":null}]");
  assert_lua(L, "return V[1] == NULL and V[2].a == NULL and #V == 1 + 1");
  assert_recodes(L, "[null,{\"a\":null}]", 0, "[null,{\"a\":null}]");
  assert_recodes(L, "null", 0, "null");
  assert_encodes(L, "return {n = nil, x = NULL}", 0, "{\"x\":null}");
  assert_encodes(L, "return nil", 0, "null");
  lua_close(L);
}


static void test_pretty_output_is_indented_two_spaces (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return {a = 1, b = {1, 2}, c = {}, "
                    "d = setmetatable({}, ARRAY)}",
                 SL_JSON_PRETTY | SL_JSON_CANONICAL,
                 "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ],\n"
                 "  \"c\": {},\n  \"d\": []\n}");
  assert_encodes(L, "return {}", SL_JSON_PRETTY, "{}");
  assert_encodes(L, "return 5", SL_JSON_PRETTY, "5");
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Numbers */

static void test_decoded_integers_stay_integers (void **state) {
  lua_State *L = new_state();
  (void)state;
  decode_ok(L, "[2]");
  lua_rawgeti(L, -1, 1);
  assert_true(lua_isinteger(L, -1));
  assert_int_equal(lua_tointeger(L, -1), 2);
  lua_pop(L, 2);
  decode_ok(L, "{\"big\":9007199254740993,\"neg\":-9007199254740993}");
  lua_getfield(L, -1, "big");
  assert_true(lua_isinteger(L, -1));
  assert_true(lua_tointeger(L, -1) == INT64_C(9007199254740993));
  lua_getfield(L, -2, "neg");
  assert_true(lua_tointeger(L, -1) == -INT64_C(9007199254740993));
  lua_pop(L, 3);
  decode_ok(L, "9223372036854775807");
  assert_true(lua_isinteger(L, -1));
  assert_true(lua_tointeger(L, -1) == INT64_MAX);
  lua_pop(L, 1);
  assert_recodes(L, "[9007199254740993,-9223372036854775808,0,-0]", 0,
                 "[9007199254740993,-9223372036854775808,0,0]");
  lua_close(L);
}


static void test_decoded_text_beyond_int64_stays_a_float (void **state) {
  lua_State *L = new_state();
  (void)state;
  decode_ok(L, "[9223372036854775808]");
  assert_lua(L, "return math.type(V[1]) == 'float' and V[1] == 2^63");
  lua_close(L);
}


static void test_integral_numbers_in_text_become_integers (void **state) {
  lua_State *L = new_state();
  (void)state;
  decode_ok(L, "[2.0, 1e2, -3.0E0, 2.5, 1e300]");
  assert_lua(L, "return math.type(V[1]) == 'integer' and V[1] == 2"
                " and math.type(V[2]) == 'integer' and V[2] == 100"
                " and math.type(V[3]) == 'integer' and V[3] == -3"
                " and math.type(V[4]) == 'float'"
                " and math.type(V[5]) == 'float'");
  decode_ok(L, "{\"n\": 3}");
  assert_lua(L, "return 'x' .. V.n == 'x3'");
  lua_close(L);
}


static void test_floats_round_trip_exactly (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_recodes(L, "[0.1,1e+300,-0.5,0.30000000000000004,5e-324]", 0,
                 "[0.1,1e+300,-0.5,0.30000000000000004,4.9406564584125e-324]");
  assert_encodes(L, "return {0.1, 1e300, -0.5, 1/3, 2^-1074}", 0,
                 "[0.1,1e+300,-0.5,0.33333333333333331,"
                 "4.9406564584125e-324]");
  decode_ok(L, "[0.1, 1e300, -0.5, 0.33333333333333331]");
  assert_lua(L, "return V[1] == 0.1 and V[2] == 1e300 and V[3] == -0.5"
                " and V[4] == 1/3");
  lua_close(L);
}


static void test_integral_float_keeps_its_point_except_canonically (
    void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return 2.0", 0, "2.0");
  assert_encodes(L, "return 2.0", SL_JSON_CANONICAL, "2");
  assert_encodes(L, "return 2", SL_JSON_CANONICAL, "2");
  assert_encodes(L, "return -0.0", 0, "-0.0");
  assert_encodes(L, "return -0.0", SL_JSON_CANONICAL, "0");
  assert_encodes(L, "return 1e20", 0, "1e+20");
  assert_encodes(L, "return 1e20", SL_JSON_CANONICAL, "1e+20");
  assert_encodes(L, "return 123456789012345.0", 0, "123456789012345.0");
  assert_encodes(L, "return {math.mininteger, math.maxinteger}", 0,
                 "[-9223372036854775808,9223372036854775807]");
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Tables */

static void test_canonical_key_order_ignores_insertion_order (void **state) {
  lua_State *L = new_state();
  const char *sorted = "{\"10\":1,\"9\":2,\"B\":3,\"a\":4,\"ab\":5,\"b\":6}";
  (void)state;
  assert_encodes(L, "return {b = 6, a = 4, [9] = 2, ab = 5, [10] = 1, B = 3}",
                 SL_JSON_CANONICAL, sorted);
  assert_encodes(L, "local t = {} t.ab = 5 t[10] = 1 t.B = 3 t.b = 6"
                    " t[9] = 2 t.a = 4 return t", SL_JSON_CANONICAL, sorted);
  lua_close(L);
}


static void test_canonical_text_of_large_objects_is_stable (void **state) {
  lua_State *L = new_state();
  sl_buf b1, b2;
  char err[128];
  int top;
  (void)state;
  /* Enough keys, nested, to outgrow the encoder's inline key space. */
  push_chunk(L, "local t = {} for i = 1, 300 do t['k' .. i] = {i, x = i,"
                " [('y'):rep(i % 50 + 1)] = i} end return t");
  push_chunk(L, "local t = {} for i = 300, 1, -1 do t['k' .. i] = {i, x = i,"
                " [('y'):rep(i % 50 + 1)] = i} end return t");
  top = lua_gettop(L);
  sl_buf_init(&b1);
  sl_buf_init(&b2);
  assert_int_equal(sl_json_encode(L, -2, &b1, SL_JSON_CANONICAL, err,
                                  sizeof err), 0);
  assert_int_equal(sl_json_encode(L, -1, &b2, SL_JSON_CANONICAL, err,
                                  sizeof err), 0);
  assert_int_equal(lua_gettop(L), top);
  assert_string_equal(b1.data, b2.data);
  {
    const char *start = "{\"k1\":{\"1\":1,\"x\":1,\"yy\":1},\"k10\":";
    assert_int_equal(strncmp(b1.data, start, strlen(start)), 0);
  }
  sl_buf_free(&b1);
  sl_buf_free(&b2);
  lua_close(L);
}


static void test_empty_list_with_array_metatable_encodes_as_brackets (
    void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return setmetatable({}, ARRAY)", 0, "[]");
  assert_encodes(L, "return {list = setmetatable({}, ARRAY)}", 0,
                 "{\"list\":[]}");
  assert_encodes(L, "return setmetatable({1, 2, x = 3}, ARRAY)", 0, "[1,2]");
  decode_ok(L, "[]");
  assert_lua(L, "return getmetatable(V) == ARRAY and next(V) == nil");
  decode_ok(L, "{}");
  assert_lua(L, "return getmetatable(V) == nil and next(V) == nil");
  lua_close(L);
}


static void test_empty_table_encodes_as_braces (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return {}", 0, "{}");
  assert_encodes(L, "return {}", SL_JSON_CANONICAL, "{}");
  assert_encodes(L, "return {{}}", 0, "[{}]");
  lua_close(L);
}


static void test_only_tables_keyed_one_to_n_are_arrays (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return {'a', 'b'}", 0, "[\"a\",\"b\"]");
  assert_encodes(L, "return {1, 2, x = 3}", SL_JSON_CANONICAL,
                 "{\"1\":1,\"2\":2,\"x\":3}");
  assert_encodes(L, "return {[1] = 1, [3] = 3}", SL_JSON_CANONICAL,
                 "{\"1\":1,\"3\":3}");
  assert_encodes(L, "return {[0] = 0, [1] = 1}", SL_JSON_CANONICAL,
                 "{\"0\":0,\"1\":1}");
  lua_close(L);
}


static void test_metatables_are_not_consulted (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return setmetatable({a = 1}, {__index = function()"
                    " error('called') end, __pairs = function() error('called')"
                    " end})", 0, "{\"a\":1}");
  lua_close(L);
}


static void test_shared_table_is_not_a_cycle (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "local t = {1} return {a = t, b = {t}}",
                 SL_JSON_CANONICAL, "{\"a\":[1],\"b\":[[1]]}");
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Strings */

static void test_strings_are_escaped_per_rfc_8259 (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encodes(L, "return 'say \"hi\"\\\\ /\\n\\t\\r\\b\\f\\1\\31\\127'", 0,
                 "\"say \\\"hi\\\"\\\\ /\\n\\t\\r\\b\\f\\u0001\\u001f\x7f\"");
  assert_encodes(L, "return 'caf\\u{e9} \\u{1F600}'", 0,
                 "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
  assert_encodes(L, "return {['a\\0b'] = 'x\\0y'}", 0,
                 "{\"a\\u0000b\":\"x\\u0000y\"}");
  lua_close(L);
}


static void test_escaped_strings_decode_back_to_the_same_bytes (
    void **state) {
  lua_State *L = new_state();
  (void)state;
  decode_ok(L, "{\"k\\u0041\\n\":\"\\\"q\\\" \\u00e9 \\ud83d\\ude00 \\/\"}");
  assert_lua(L, "return V['kA\\n'] == '\"q\" \\u{e9} \\u{1F600} /'");
  assert_recodes(L, "[\"tab\\tnl\\nctl\\u0001\"]", 0,
                 "[\"tab\\tnl\\nctl\\u0001\"]");
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Encode errors */

static void test_function_value_is_refused_with_its_path (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encode_fails(L, "return {steps = {{run = 1}, {run = print}}}", 0,
                      "cannot encode a function at $.steps[2].run");
  assert_encode_fails(L, "return {steps = {{run = 1}, {run = print}}}",
                      SL_JSON_CANONICAL,
                      "cannot encode a function at $.steps[2].run");
  assert_encode_fails(L, "return print", 0, "cannot encode a function at $");
  assert_encode_fails(L, "return {['a b'] = {coroutine.create(print)}}", 0,
                      "cannot encode a thread at $[\"a b\"][1]");
  assert_encode_fails(L, "return {[7] = io.stdout}", 0,
                      "cannot encode a userdata at $[7]");
  lua_close(L);
}


static void test_cyclic_table_is_refused_with_its_path (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encode_fails(L, "local t = {a = {}} t.a.b = t return t", 0,
                      "cyclic table at $.a.b");
  assert_encode_fails(L, "local t = {} t[1] = t return t", SL_JSON_CANONICAL,
                      "cyclic table at $[1]");
  lua_close(L);
}


static void test_nan_and_infinity_are_refused_with_their_path (
    void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encode_fails(L, "return {x = 0/0}", 0, "cannot encode NaN at $.x");
  assert_encode_fails(L, "return {1, {math.huge}}", 0,
                      "cannot encode inf at $[2][1]");
  assert_encode_fails(L, "return -math.huge", SL_JSON_CANONICAL,
                      "cannot encode -inf at $");
  lua_close(L);
}


static void test_unencodable_key_is_refused_with_its_table_path (
    void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_encode_fails(L, "return {t = {[true] = 1}}", 0,
                      "cannot encode a table key of type boolean at $.t");
  assert_encode_fails(L, "return {t = {[true] = 1}}", SL_JSON_CANONICAL,
                      "cannot encode a table key of type boolean at $.t");
  assert_encode_fails(L, "return {[1.5] = 1}", 0,
                      "cannot encode a table key of type number at $");
  lua_close(L);
}


static void test_nesting_deeper_than_200_is_refused (void **state) {
  lua_State *L = new_state();
  char expected[700];
  int k;
  (void)state;
  /* 200 nested tables encode; one more does not. */
  push_chunk(L, "local t = {} for i = 2, 200 do t = {a = t} end return t");
  {
    sl_buf b;
    char err[64];
    sl_buf_init(&b);
    assert_int_equal(sl_json_encode(L, -1, &b, 0, err, sizeof err), 0);
    assert_int_equal(strncmp(b.data, "{\"a\":{\"a\":", 10), 0);
    sl_buf_free(&b);
    lua_pop(L, 1);
  }
  strcpy(expected, "nesting deeper than 200 at $");
  for (k = 0; k < 200; k++)
    strcat(expected, ".a");
  assert_encode_fails(L, "local t = {} for i = 2, 201 do t = {a = t} end"
                         " return t", 0, expected);
  lua_close(L);
}


static void test_error_message_is_truncated_to_its_buffer (void **state) {
  lua_State *L = new_state();
  sl_buf b;
  char err[16];
  (void)state;
  push_chunk(L, "return {steps = {{run = print}}}");
  sl_buf_init(&b);
  memset(err, 'z', sizeof err);
  assert_int_equal(sl_json_encode(L, -1, &b, 0, err, sizeof err), -1);
  assert_string_equal(err, "cannot encode a");
  assert_int_equal(sl_json_encode(L, -1, &b, 0, NULL, 0), -1);
  sl_buf_free(&b);
  lua_close(L);
}


static void test_encode_appends_to_the_buffer (void **state) {
  lua_State *L = new_state();
  sl_buf b;
  char err[64];
  (void)state;
  sl_buf_init(&b);
  lua_pushinteger(L, 1);
  lua_pushstring(L, "two");
  assert_int_equal(sl_json_encode(L, -2, &b, 0, err, sizeof err), 0);
  assert_int_equal(sl_buf_addc(&b, ' '), 0);
  assert_int_equal(sl_json_encode(L, -1, &b, 0, err, sizeof err), 0);
  assert_string_equal(b.data, "1 \"two\"");
  assert_int_equal(lua_gettop(L), 2);
  sl_buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.data, "");
  sl_buf_free(&b);
  lua_close(L);
}

/* }====================================================== */


/* {====================================================== Decode errors */

static void test_malformed_text_reports_line_and_column (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_decode_fails(L, "[1,", 3,
                      "line 1, column 4: "
                      "expected value but found end of input");
  assert_decode_fails(L, "", 0,
                      "line 1, column 1: "
                      "expected value but found end of input");
  assert_decode_fails(L, "[1] x", 5,
                      "line 1, column 5: expected end of input but found "
                      "invalid token");
  assert_decode_fails(L, "{\"a\" 1}", 7,
                      "line 1, column 6: expected colon but found a number");
  assert_decode_fails(L, "[01]", 4,
                      "line 1, column 2: "
                      "expected value but found invalid number");
  assert_decode_fails(L, "[nan, 0x10]", 11,
                      "line 1, column 2: "
                      "expected value but found invalid token");
  lua_close(L);
}


static void test_malformed_multiline_text_reports_the_right_line (
    void **state) {
  lua_State *L = new_state();
  const char *text = "{\n  \"a\": 1,\n  \"b\" 2\n}";
  const char *crlf = "[\r\n  1,\r\n  }\r\n";
  (void)state;
  assert_decode_fails(L, text, strlen(text),
                      "line 3, column 7: expected colon but found a number");
  assert_decode_fails(L, crlf, strlen(crlf),
                      "line 3, column 3: expected value but found '}'");
  lua_close(L);
}


static void test_nul_byte_in_text_is_malformed (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_decode_fails(L, "[1]\0junk", 8,
                      "line 1, column 4: unexpected NUL byte");
  lua_close(L);
}


static void test_decoding_without_cjson_says_what_to_install (
    void **state) {
  lua_State *L = new_state();
  (void)state;
  push_chunk(L, "package.loaded.cjson = nil package.preload.cjson = nil"
                " package.path = '' package.cpath = '' return true");
  lua_pop(L, 1);
  assert_decode_fails(L, "[1]", 3,
                      "JSON decoding needs lua-cjson "
                      "(Debian package lua-cjson)");
  lua_close(L);
}


static void test_users_cjson_settings_are_left_alone (void **state) {
  lua_State *L = new_state();
  (void)state;
  push_chunk(L, "local cjson = require 'cjson'"
                " cjson.decode_invalid_numbers(true) return cjson");
  lua_setglobal(L, "cjson");
  assert_decode_fails(L, "[0x10]", 6,
                      "line 1, column 2: "
                      "expected value but found invalid number");
  push_chunk(L, "return cjson.decode('[0x10]')[1] == 16"
                " and cjson.decode_invalid_numbers() == true");
  assert_true(lua_toboolean(L, -1));
  lua_pop(L, 1);
  lua_close(L);
}


static void test_duplicate_keys_keep_the_last_value (void **state) {
  lua_State *L = new_state();
  (void)state;
  assert_recodes(L, "{\"a\":[1,2],\"a\":{\"x\":2.5}}", SL_JSON_CANONICAL,
                 "{\"a\":{\"x\":2.5}}");
  assert_recodes(L, "{\"a\":[],\"a\":{}}", 0, "{\"a\":{}}");
  assert_recodes(L, "{\"a\":{},\"a\":[]}", 0, "{\"a\":[]}");
  assert_recodes(L, "{\"a\":[7],\"a\":[2.5]}", 0, "{\"a\":[2.5]}");
  assert_recodes(L, "{\"a\":7,\"a\":2.5,\"b\":9007199254740993,"
                    "\"b\":9007199254740995}", SL_JSON_CANONICAL,
                 "{\"a\":2.5,\"b\":9007199254740995}");
  lua_close(L);
}


static void test_stack_is_unchanged_by_encoding (void **state) {
  lua_State *L = new_state();
  sl_buf b;
  char err[128];
  (void)state;
  lua_pushinteger(L, 42);  /* something below, to be left alone */
  push_chunk(L, "local t = {} for i = 1, 100 do t['k' .. i] = {i} end"
                " t.k50[2] = {f = print} return t");
  sl_buf_init(&b);
  assert_int_equal(sl_json_encode(L, -1, &b, SL_JSON_CANONICAL, err,
                                  sizeof err), -1);
  assert_string_equal(err, "cannot encode a function at $.k50[2].f");
  assert_int_equal(lua_gettop(L), 2);
  assert_int_equal(sl_json_encode(L, 1, &b, SL_JSON_CANONICAL, err,
                                  sizeof err), 0);
  assert_int_equal(lua_gettop(L), 2);
  assert_string_equal(b.data, "42");
  assert_int_equal(lua_tointeger(L, 1), 42);
  sl_buf_free(&b);
  lua_close(L);
}

/* }====================================================== */


int main (void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_nested_document_round_trips),
    cmocka_unit_test(test_null_round_trips_as_the_null_sentinel),
    cmocka_unit_test(test_pretty_output_is_indented_two_spaces),
    cmocka_unit_test(test_decoded_integers_stay_integers),
    cmocka_unit_test(test_decoded_text_beyond_int64_stays_a_float),
    cmocka_unit_test(test_integral_numbers_in_text_become_integers),
    cmocka_unit_test(test_floats_round_trip_exactly),
    cmocka_unit_test(test_integral_float_keeps_its_point_except_canonically),
    cmocka_unit_test(test_canonical_key_order_ignores_insertion_order),
    cmocka_unit_test(test_canonical_text_of_large_objects_is_stable),
    cmocka_unit_test(test_empty_list_with_array_metatable_encodes_as_brackets),
    cmocka_unit_test(test_empty_table_encodes_as_braces),
    cmocka_unit_test(test_only_tables_keyed_one_to_n_are_arrays),
    cmocka_unit_test(test_metatables_are_not_consulted),
    cmocka_unit_test(test_shared_table_is_not_a_cycle),
    cmocka_unit_test(test_strings_are_escaped_per_rfc_8259),
    cmocka_unit_test(test_escaped_strings_decode_back_to_the_same_bytes),
    cmocka_unit_test(test_function_value_is_refused_with_its_path),
    cmocka_unit_test(test_cyclic_table_is_refused_with_its_path),
    cmocka_unit_test(test_nan_and_infinity_are_refused_with_their_path),
    cmocka_unit_test(test_unencodable_key_is_refused_with_its_table_path),
    cmocka_unit_test(test_nesting_deeper_than_200_is_refused),
    cmocka_unit_test(test_error_message_is_truncated_to_its_buffer),
    cmocka_unit_test(test_encode_appends_to_the_buffer),
    cmocka_unit_test(test_malformed_text_reports_line_and_column),
    cmocka_unit_test(test_malformed_multiline_text_reports_the_right_line),
    cmocka_unit_test(test_nul_byte_in_text_is_malformed),
    cmocka_unit_test(test_decoding_without_cjson_says_what_to_install),
    cmocka_unit_test(test_users_cjson_settings_are_left_alone),
    cmocka_unit_test(test_duplicate_keys_keep_the_last_value),
    cmocka_unit_test(test_stack_is_unchanged_by_encoding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
