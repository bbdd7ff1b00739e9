/*
** Tests of the trace writer: what a user of `sluice run --trace FILE` gets
** in the file. Every line is read back with the engine's JSON decoder, so
** the tests check the spans an OpenTelemetry tool would see: OTLP/JSON
** field names and encodings, ids linking each span to its parent and its
** run, escaped strings, and clear errors for a file that cannot be written.
*/

#define _GNU_SOURCE  /* mkdtemp */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "trace.h"
#include "value.h"


/*
** {======================================================
** Helpers
** =======================================================
*/

/* A temporary directory per test, and a Lua state to read spans in. */
typedef struct fixture {
  char dir[64];
  char path[128];          /* dir/trace.jsonl */
  lua_State *L;
} fixture;


/*
** Helpers the checks call from Lua: attr(span, key) returns the value
** type and the value of the attribute named key, or nil; nattr(span, key)
** counts the attributes named key.
*/
static const char *const lua_helpers =
  "function attr(span, key)\n"
  "  for _, a in ipairs(span.attributes) do\n"
  "    if a.key == key then return next(a.value) end\n"
  "  end\n"
  "end\n"
  "function nattr(span, key)\n"
  "  local n = 0\n"
  "  for _, a in ipairs(span.attributes) do\n"
  "    if a.key == key then n = n + 1 end\n"
  "  end\n"
  "  return n\n"
  "end\n";


static int setup (void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->dir, sizeof f->dir, "/tmp/sluice-trace-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/trace.jsonl", f->dir);
  f->L = luaL_newstate();
  assert_non_null(f->L);
  luaL_openlibs(f->L);
  if (luaL_dostring(f->L, lua_helpers) != LUA_OK)
    fail_msg("helpers: %s", lua_tostring(f->L, -1));
  *state = f;
  return 0;
}


static int teardown (void **state) {
  fixture *f = *state;
  unlink(f->path);
  rmdir(f->dir);
  lua_close(f->L);
  free(f);
  return 0;
}


/* The whole file, NUL-terminated; the caller frees it. */
static char *read_file (const char *path) {
  FILE *fp = fopen(path, "rb");
  char *text;
  long n;
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  n = ftell(fp);
  assert_true(n >= 0);
  rewind(fp);
  text = malloc((size_t)n + 1);
  assert_non_null(text);
  assert_int_equal(fread(text, 1, (size_t)n, fp), (size_t)n);
  text[n] = '\0';
  fclose(fp);
  return text;
}


/*
** Reads the trace file into the global SPANS, one span per line, checking
** that every line is one OTLP/JSON TracesData object ended by a newline:
** resourceSpans[1] with the service's name, scopeSpans[1] naming sluice,
** and one span. Returns the number of spans.
*/
static int load_spans (fixture *f) {
  char *text = read_file(f->path);
  char *line = text;
  int n = 0;
  lua_newtable(f->L);                                 /* SPANS */
  while (*line) {
    char *nl = strchr(line, '\n');
    if (nl == NULL)
      fail_msg("line %d has no newline: %s", n + 1, line);
    if (sl_json_decode(f->L, line, (size_t)(nl - line)) != 0)
      fail_msg("line %d is not JSON (%s): %.*s", n + 1,
               lua_tostring(f->L, -1), (int)(nl - line), line);
    if (!lua_istable(f->L, -1))
      fail_msg("line %d is not a JSON object", n + 1);
    lua_setglobal(f->L, "DOC");
    if (luaL_dostring(f->L,
          "local d = DOC; local keys = 0; for _ in pairs(d) do keys = keys + 1 end "
          "assert(keys == 1 and #d.resourceSpans == 1, 'not one resourceSpans') "
          "local rs = d.resourceSpans[1] "
          "local a = rs.resource.attributes[1] "
          "assert(a.key == 'service.name' and type(a.value.stringValue) == 'string', "
          "       'no service.name') "
          "assert(#rs.scopeSpans == 1 and rs.scopeSpans[1].scope.name == 'sluice', 'no scope') "
          "local spans = rs.scopeSpans[1].spans "
          "assert(#spans == 1, 'not one span') "
          "assert(math.type(spans[1].kind) == 'integer', 'kind is not an integer') "
          "assert(math.type(spans[1].status.code) == 'integer', 'status is not an integer') "
          "return spans[1]") != LUA_OK)
      fail_msg("line %d is not OTLP/JSON TracesData (%s): %.*s", n + 1,
               lua_tostring(f->L, -1), (int)(nl - line), line);
    lua_rawseti(f->L, -2, ++n);                       /* SPANS[n] = span */
    line = nl + 1;
  }
  lua_setglobal(f->L, "SPANS");
  free(text);
  return n;
}


/* Evaluates "return <expr>" in the fixture's state, leaving one value. */
static void eval (fixture *f, const char *expr) {
  char chunk[512];
  snprintf(chunk, sizeof chunk, "return %s", expr);
  lua_settop(f->L, 0);
  if (luaL_loadstring(f->L, chunk) != LUA_OK
      || lua_pcall(f->L, 0, 1, 0) != LUA_OK)
    fail_msg("%s: %s", expr, lua_tostring(f->L, -1));
}

/* Checks that expr is the string expected. */
static void check_string (fixture *f, const char *expr, const char *expected) {
  eval(f, expr);
  if (lua_type(f->L, -1) != LUA_TSTRING)
    fail_msg("%s: expected the string \"%s\", got a %s", expr, expected,
             luaL_typename(f->L, -1));
  assert_string_equal(lua_tostring(f->L, -1), expected);
}

/* Checks that expr is a value of Lua type tname (e.g. "nil"). */
static void check_type (fixture *f, const char *expr, const char *tname) {
  eval(f, expr);
  if (strcmp(luaL_typename(f->L, -1), tname) != 0)
    fail_msg("%s: expected a %s, got a %s", expr, tname,
             luaL_typename(f->L, -1));
}

/* Checks that expr is true. */
static void check_true (fixture *f, const char *expr) {
  eval(f, expr);
  if (lua_toboolean(f->L, -1) == 0)
    fail_msg("expected %s", expr);
}


/* A span with every field set to something plain. */
static sl_trace_span_info plain_span (const char *run_id, int index,
                                      int parent, const char *name) {
  sl_trace_span_info s;
  memset(&s, 0, sizeof s);
  s.run_id = run_id;
  s.index = index;
  s.parent = parent;
  s.name = name;
  s.kind = "step";
  s.start_ns = INT64_C(1714564800000000000);
  s.end_ns = INT64_C(1714564800012000000);
  s.attempts = 1;
  return s;
}


/* Opens the fixture's trace, writes the n spans and closes it. */
static void write_spans (fixture *f, const sl_trace_span_info *spans, int n) {
  sl_trace *t;
  char err[256];
  int i;
  assert_int_equal(sl_trace_open(f->path, &t, err, sizeof err), SL_TRACE_OK);
  for (i = 0; i < n; i++)
    assert_int_equal(sl_trace_span(t, &spans[i]), SL_TRACE_OK);
  assert_int_equal(sl_trace_close(t, err, sizeof err), SL_TRACE_OK);
}

/* }====================================================== */


/*
** {======================================================
** Tests
** =======================================================
*/

/* A root span carries the OTLP/JSON fields with their encodings: hex ids,
   times as decimal strings, typed attributes, an OK status. */
static void test_root_span_fields (void **state) {
  fixture *f = *state;
  sl_trace_span_info s = plain_span("run-1", 0, -1, "main");
  char trace_id[SL_TRACE_TRACEID_HEX + 1], span_id[SL_TRACE_SPANID_HEX + 1];

  s.kind = "pipeline";
  s.has_usage = 1;
  s.cost = 0.0123;
  s.tokens = 1204;
  s.requests = 3;
  write_spans(f, &s, 1);
  assert_int_equal(load_spans(f), 1);

  sl_trace_trace_id("run-1", trace_id);
  sl_trace_span_id("run-1", 0, span_id);
  check_string(f, "SPANS[1].traceId", trace_id);
  check_true(f, "SPANS[1].traceId:match('^%x+$') and #SPANS[1].traceId == 32");
  check_string(f, "SPANS[1].spanId", span_id);
  check_true(f, "SPANS[1].spanId:match('^%x+$') and #SPANS[1].spanId == 16");
  check_type(f, "SPANS[1].parentSpanId", "nil");
  check_string(f, "SPANS[1].name", "main");
  check_true(f, "SPANS[1].kind == 1");   /* SPAN_KIND_INTERNAL */
  check_string(f, "SPANS[1].startTimeUnixNano", "1714564800000000000");
  check_string(f, "SPANS[1].endTimeUnixNano", "1714564800012000000");

  check_string(f, "select(2, attr(SPANS[1], 'sluice.run_id'))", "run-1");
  check_string(f, "attr(SPANS[1], 'sluice.kind')", "stringValue");
  check_string(f, "select(2, attr(SPANS[1], 'sluice.kind'))", "pipeline");
  check_string(f, "attr(SPANS[1], 'sluice.attempts')", "intValue");
  check_string(f, "select(2, attr(SPANS[1], 'sluice.attempts'))", "1");
  check_string(f, "attr(SPANS[1], 'sluice.cached')", "boolValue");
  check_true(f, "select(2, attr(SPANS[1], 'sluice.cached')) == false");
  check_string(f, "attr(SPANS[1], 'sluice.usage.cost')", "doubleValue");
  check_true(f, "select(2, attr(SPANS[1], 'sluice.usage.cost')) == 0.0123");
  check_string(f, "select(2, attr(SPANS[1], 'sluice.usage.tokens'))", "1204");
  check_string(f, "select(2, attr(SPANS[1], 'sluice.usage.requests'))", "3");

  check_true(f, "SPANS[1].status.code == 1");   /* STATUS_CODE_OK */
  check_type(f, "SPANS[1].status.message", "nil");

  /* Nothing is written that does not apply. */
  check_true(f, "#SPANS[1].attributes == 7");
  check_true(f, "nattr(SPANS[1], 'sluice.error.kind') + "
                 "nattr(SPANS[1], 'sluice.error.message') + "
                 "nattr(SPANS[1], 'sluice.error.where') + "
                 "nattr(SPANS[1], 'sluice.key') + "
                 "nattr(SPANS[1], 'sluice.fallback') == 0");
}


/* A failed child names its parent's spanId, shares the run's traceId and
   carries its error as attributes and as an error status. */
static void test_child_span_links_and_error (void **state) {
  fixture *f = *state;
  sl_trace_span_info spans[3];
  char trace_id[SL_TRACE_TRACEID_HEX + 1], span_id[SL_TRACE_SPANID_HEX + 1];

  spans[0] = plain_span("run-2", 0, -1, "main");
  spans[1] = plain_span("run-2", 1, 0, "each");
  spans[1].kind = "map";
  spans[2] = plain_span("run-2", 2, 1, "work");
  spans[2].key = "2";
  spans[2].attempts = 3;
  spans[2].cached = 1;
  spans[2].fallback = "timeout: took too long";
  spans[2].err_kind = "timeout";
  spans[2].err_msg = "took too long";
  spans[2].err_where = "pipe.lua:12";
  write_spans(f, spans, 3);
  assert_int_equal(load_spans(f), 3);

  sl_trace_trace_id("run-2", trace_id);
  check_string(f, "SPANS[1].traceId", trace_id);
  check_string(f, "SPANS[2].traceId", trace_id);
  check_string(f, "SPANS[3].traceId", trace_id);
  check_true(f, "SPANS[2].parentSpanId == SPANS[1].spanId");
  check_true(f, "SPANS[3].parentSpanId == SPANS[2].spanId");
  check_true(f, "SPANS[1].spanId ~= SPANS[2].spanId and "
                 "SPANS[2].spanId ~= SPANS[3].spanId");
  sl_trace_span_id("run-2", 2, span_id);
  check_string(f, "SPANS[3].spanId", span_id);

  check_string(f, "SPANS[3].name", "work");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.key'))", "2");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.attempts'))", "3");
  check_true(f, "select(2, attr(SPANS[3], 'sluice.cached')) == true");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.fallback'))",
                "timeout: took too long");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.error.kind'))", "timeout");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.error.message'))",
                "took too long");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.error.where'))",
                "pipe.lua:12");
  check_true(f, "SPANS[3].status.code == 2");   /* STATUS_CODE_ERROR */
  check_string(f, "SPANS[3].status.message", "took too long");
  check_true(f, "nattr(SPANS[3], 'sluice.usage.cost') == 0");
  check_true(f, "SPANS[2].status.code == 1");   /* STATUS_CODE_OK */
}


/* An error with only a kind still makes an error status, with the kind as
   its message. */
static void test_error_kind_only (void **state) {
  fixture *f = *state;
  sl_trace_span_info s = plain_span("run-3", 4, 0, "stop");
  s.err_kind = "cancelled";
  write_spans(f, &s, 1);
  assert_int_equal(load_spans(f), 1);
  check_true(f, "SPANS[1].status.code == 2");   /* STATUS_CODE_ERROR */
  check_string(f, "SPANS[1].status.message", "cancelled");
  check_true(f, "nattr(SPANS[1], 'sluice.error.message') == 0");
}


/* Ids depend on the run id and the index only: the same pair always gives
   the same ids, another run another traceId, another index another spanId. */
static void test_ids_are_derived (void **state) {
  char a[SL_TRACE_TRACEID_HEX + 1], b[SL_TRACE_TRACEID_HEX + 1];
  char s0[SL_TRACE_SPANID_HEX + 1], s1[SL_TRACE_SPANID_HEX + 1];
  char again[SL_TRACE_SPANID_HEX + 1];
  (void)state;
  sl_trace_trace_id("01HZX", a);
  sl_trace_trace_id("01HZX", b);
  assert_string_equal(a, b);
  sl_trace_trace_id("01HZY", b);
  assert_string_not_equal(a, b);
  assert_string_not_equal(a, "00000000000000000000000000000000");

  sl_trace_span_id("01HZX", 0, s0);
  sl_trace_span_id("01HZX", 1, s1);
  sl_trace_span_id("01HZX", 0, again);
  assert_string_equal(s0, again);
  assert_string_not_equal(s0, s1);
  sl_trace_span_id("01HZY", 0, again);
  assert_string_not_equal(s0, again);
  assert_int_equal(strlen(s0), SL_TRACE_SPANID_HEX);
  assert_int_equal(strspn(s0, "0123456789abcdef"), SL_TRACE_SPANID_HEX);
  assert_int_equal(strlen(a), SL_TRACE_TRACEID_HEX);
  assert_int_equal(strspn(a, "0123456789abcdef"), SL_TRACE_TRACEID_HEX);
}


/* Strings come back exactly as they were written, whatever they hold, and
   bytes that are not UTF-8 become U+FFFD, so every line stays valid. */
static void test_strings_are_escaped (void **state) {
  fixture *f = *state;
  const char *name = "say \"hi\"\\ \n\t\r\b\f\x01\x1f caf\xc3\xa9 \xe2\x82\xac";
  sl_trace_span_info s = plain_span("run \"4\"\n", 0, -1, name);
  char *text;
  s.err_msg = "bad \xff byte, cut \xe2\x82";
  s.err_where = "a\\b.lua:1";
  write_spans(f, &s, 1);

  text = read_file(f->path);
  /* One line: its only newline is the one that ends it. */
  assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
  assert_null(strchr(text, '\t'));
  assert_non_null(strstr(text, "\\u0001"));
  free(text);

  assert_int_equal(load_spans(f), 1);
  lua_pushstring(f->L, name);
  lua_setglobal(f->L, "NAME");
  check_true(f, "SPANS[1].name == NAME");
  check_string(f, "select(2, attr(SPANS[1], 'sluice.run_id'))", "run \"4\"\n");
  check_string(f, "SPANS[1].status.message",
                "bad \xef\xbf\xbd byte, cut \xef\xbf\xbd\xef\xbf\xbd");
  check_string(f, "select(2, attr(SPANS[1], 'sluice.error.where'))",
                "a\\b.lua:1");
}


/* Costs are written as numbers that read back exactly; values JSON has no
   number for are written as the strings OTLP/JSON uses. */
static void test_cost_values (void **state) {
  fixture *f = *state;
  sl_trace_span_info spans[3];
  spans[0] = plain_span("run-5", 0, -1, "a");
  spans[0].has_usage = 1;
  spans[0].cost = 0.1 + 0.2;
  spans[1] = plain_span("run-5", 1, 0, "b");
  spans[1].has_usage = 1;
  spans[1].cost = 1.0 / 0.0;
  spans[2] = plain_span("run-5", 2, 0, "c");
  spans[2].has_usage = 1;
  spans[2].cost = 0.0 / 0.0;
  write_spans(f, spans, 3);
  assert_int_equal(load_spans(f), 3);
  check_true(f, "select(2, attr(SPANS[1], 'sluice.usage.cost')) == 0.1 + 0.2");
  check_string(f, "select(2, attr(SPANS[2], 'sluice.usage.cost'))", "Infinity");
  check_string(f, "select(2, attr(SPANS[3], 'sluice.usage.cost'))", "NaN");
}


/* A span whose end was recorded before its start is written as an instant
   at its start, never with a negative duration. */
static void test_end_before_start (void **state) {
  fixture *f = *state;
  sl_trace_span_info s = plain_span("run-6", 0, -1, "a");
  s.end_ns = s.start_ns - 5;
  write_spans(f, &s, 1);
  assert_int_equal(load_spans(f), 1);
  check_string(f, "SPANS[1].endTimeUnixNano", "1714564800000000000");
}


/* Opening appends: the spans of an earlier run stay in the file. */
static void test_open_appends (void **state) {
  fixture *f = *state;
  sl_trace_span_info a = plain_span("run-a", 0, -1, "first");
  sl_trace_span_info b = plain_span("run-b", 0, -1, "second");
  write_spans(f, &a, 1);
  write_spans(f, &b, 1);
  assert_int_equal(load_spans(f), 2);
  check_string(f, "SPANS[1].name", "first");
  check_string(f, "SPANS[2].name", "second");
  check_true(f, "SPANS[1].traceId ~= SPANS[2].traceId");
}


/* A path in a directory that does not exist gives a clear error naming
   the file and the reason, and no trace. */
static void test_unwritable_path (void **state) {
  fixture *f = *state;
  sl_trace *t = (sl_trace *)&t;   /* not NULL, to see that a failure clears it */
  char path[160], err[256], expected[256];
  snprintf(path, sizeof path, "%s/missing/trace.jsonl", f->dir);
  assert_int_equal(sl_trace_open(path, &t, err, sizeof err), SL_TRACE_EIO);
  assert_null(t);
  snprintf(expected, sizeof expected,
           "%s: cannot open trace file: No such file or directory", path);
  assert_string_equal(err, expected);

  /* A directory is no file either. */
  assert_int_equal(sl_trace_open(f->dir, &t, err, sizeof err), SL_TRACE_EIO);
  assert_null(t);
  snprintf(expected, sizeof expected, "%s: cannot open trace file: Is a directory",
           f->dir);
  assert_string_equal(err, expected);
}


/* When the disk is full the buffered spans cannot be flushed: closing
   says so, naming the file. */
static void test_full_disk_reported_on_close (void **state) {
  sl_trace *t;
  sl_trace_span_info s = plain_span("run-7", 0, -1, "a");
  char err[256];
  (void)state;
  if (access("/dev/full", W_OK) != 0)
    skip();
  assert_int_equal(sl_trace_open("/dev/full", &t, err, sizeof err), SL_TRACE_OK);
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_OK);
  assert_int_equal(sl_trace_close(t, err, sizeof err), SL_TRACE_EIO);
  assert_string_equal(err, "/dev/full: cannot write trace file: No space left on device");
}


static int sunk;
static void count_line (void *ud, const char *line, size_t len) {
  (void)ud;
  if (len > 0 && line[len - 1] == '\n') sunk++;
}

/* A trace file that failed takes no more spans, but an exporter on the
   same trace still gets every one; a trace may have no file at all. */
static void test_a_sink_outlives_a_failed_file (void **state) {
  sl_trace *t;
  sl_trace_span_info s = plain_span("run-8", 0, -1, "a");
  char err[256];
  (void)state;
  if (access("/dev/full", W_OK) != 0)
    skip();
  sunk = 0;
  assert_int_equal(sl_trace_open("/dev/full", &t, err, sizeof err), SL_TRACE_OK);
  sl_trace_set_sink(t, count_line, NULL);
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_OK);
  assert_int_equal(sl_trace_flush(t), SL_TRACE_EIO);     /* the disk is full */
  s.index = 1;
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_EIO);
  assert_int_equal(sunk, 2);
  sl_trace_close(t, err, sizeof err);
  assert_int_equal(sl_trace_open_sink(&t), SL_TRACE_OK);
  sl_trace_set_sink(t, count_line, NULL);
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_OK);
  assert_int_equal(sunk, 3);
  assert_int_equal(sl_trace_close(t, err, sizeof err), SL_TRACE_OK);
}

/* A write that fails mid-run fails every later span too, with the reason,
   since the file's tail is then unknown. */
static void test_write_error_is_sticky (void **state) {
  sl_trace *t;
  sl_trace_span_info s = plain_span("run-8", 0, -1, "a");
  char err[256], big[100000];
  int i, rc = SL_TRACE_OK;
  (void)state;
  if (access("/dev/full", W_OK) != 0)
    skip();
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  s.name = big;   /* larger than the buffer: written through at once */
  assert_int_equal(sl_trace_open("/dev/full", &t, err, sizeof err), SL_TRACE_OK);
  for (i = 0; i < 3 && rc == SL_TRACE_OK; i++)
    rc = sl_trace_span(t, &s);
  assert_int_equal(rc, SL_TRACE_EIO);
  assert_string_equal(sl_trace_errmsg(t),
                      "/dev/full: cannot write trace file: No space left on device");
  s.name = "small";
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_EIO);
  assert_int_equal(sl_trace_close(t, err, sizeof err), SL_TRACE_EIO);
  assert_string_equal(err, "/dev/full: cannot write trace file: No space left on device");
}


/* Bad arguments are refused and write nothing. */
static void test_bad_arguments (void **state) {
  fixture *f = *state;
  sl_trace *t;
  sl_trace_span_info s = plain_span("run-9", 0, -1, "a");
  char err[256];
  assert_int_equal(sl_trace_open(f->path, &t, err, sizeof err), SL_TRACE_OK);
  s.run_id = NULL;
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_EINVAL);
  s.run_id = "run-9";
  s.index = -1;
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_EINVAL);
  s.index = 1;
  s.parent = -2;
  assert_int_equal(sl_trace_span(t, &s), SL_TRACE_EINVAL);
  assert_int_equal(sl_trace_span(t, NULL), SL_TRACE_EINVAL);
  assert_int_equal(sl_trace_close(t, err, sizeof err), SL_TRACE_OK);
  assert_int_equal(load_spans(f), 0);
  assert_int_equal(sl_trace_close(NULL, err, sizeof err), SL_TRACE_OK);
}

/* }====================================================== */


int main (void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_root_span_fields, setup, teardown),
    cmocka_unit_test_setup_teardown(test_child_span_links_and_error, setup, teardown),
    cmocka_unit_test_setup_teardown(test_error_kind_only, setup, teardown),
    cmocka_unit_test(test_ids_are_derived),
    cmocka_unit_test_setup_teardown(test_strings_are_escaped, setup, teardown),
    cmocka_unit_test_setup_teardown(test_cost_values, setup, teardown),
    cmocka_unit_test_setup_teardown(test_end_before_start, setup, teardown),
    cmocka_unit_test_setup_teardown(test_open_appends, setup, teardown),
    cmocka_unit_test_setup_teardown(test_unwritable_path, setup, teardown),
    cmocka_unit_test(test_full_disk_reported_on_close),
    cmocka_unit_test(test_write_error_is_sticky),
    cmocka_unit_test(test_a_sink_outlives_a_failed_file),
    cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
