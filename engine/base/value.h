/*
** Value encoding: JSON text to and from Lua values.
**
** Results, run inputs, cache keys and the store all pass Lua values through
** these two functions, so both are strict about what they accept and never
** raise: failures come back as a return code and a message naming where in
** the value or text the problem is.
*/

#ifndef SLUICE_VALUE_H
#define SLUICE_VALUE_H

#include <stddef.h>

#include <lua.h>


/*
** A growable byte buffer owned by C code (never by the Lua stack).
** Whenever data is not NULL it is NUL-terminated after the len bytes, so the
** contents can be handed to functions that expect a C string.
*/
typedef struct sl_buf { char *data; size_t len, cap; } sl_buf;

void sl_buf_init (sl_buf *b);
void sl_buf_free (sl_buf *b);
void sl_buf_reset (sl_buf *b);                  /* len = 0, keeps memory */
int  sl_buf_reserve (sl_buf *b, size_t n);      /* room for n more; 0 or -1 */
int  sl_buf_add (sl_buf *b, const char *s, size_t n);   /* 0 or -1 on OOM */
int  sl_buf_addc (sl_buf *b, char c);


/*
** Object keys are always written sorted bytewise, so the same value is
** always the same text. Strings that are not valid UTF-8 have each
** offending byte written as U+FFFD, except in canonical mode.
*/
enum {
  SL_JSON_CANONICAL = 1,  /* integral floats written as integers, strings
                             byte for byte; used for hashing */
  SL_JSON_PRETTY    = 2   /* two-space indentation, newline-separated,
                             for humans */
};

/* Tables nested deeper than this are refused by the encoder. */
#define SL_JSON_MAXDEPTH   200

/* Registry name of the metatable that marks a table as a JSON array. */
#define SL_JSON_ARRAYMT    "sluice.array"

/* A metatable field: a C function that, given a table which shows more
   than it holds (a state view), returns the plain table it stands for. The
   encoder writes that table instead. */
#define SL_JSON_PLAIN      "__sluice_plain"


/*
** Encodes the Lua value at stack index idx as JSON, appending to b.
** Returns 0, or -1 with a NUL-terminated message in err (errlen bytes, may
** be NULL/0) that names the path of the offending value, e.g.
** "cannot encode a function at $.steps[2].run", "cyclic table at $.a.b",
** "cannot encode NaN at $.x",
** "cannot encode a table key of type boolean at $.t".
** In paths, [i] is the Lua index i (1-based), as the user wrote the table.
** On failure b is left as it was before the call.
** Never raises a Lua error other than a memory error from the Lua API;
** leaves the stack as it found it.
*/
int sl_json_encode (lua_State *L, int idx, sl_buf *b, int flags,
                    char *err, size_t errlen);

/*
** Encodes the value at idx as sl_json_encode does and pushes the text as a
** Lua string; returns 0. Returns -1, pushing nothing, with the message in
** err when the value has no JSON form. Memory errors raise, leaking
** nothing.
*/
int sl_json_push (lua_State *L, int idx, int flags, char *err, size_t errlen);

/*
** Decodes len bytes of JSON text and pushes the resulting Lua value;
** returns 0. On malformed text pushes an error message string and returns
** -1; the message reads "line L, column C: <what>" (columns count bytes),
** e.g. "line 1, column 4: expected value but found end of input".
** Numbers that are integral and fit int64 become Lua integers, so "2.0" in
** the text also becomes 2. Arrays, including empty ones, get the array
** metatable. JSON null becomes the sentinel of sl_json_pushnull.
** Never raises; needs lua-cjson.
*/
int sl_json_decode (lua_State *L, const char *text, size_t len);

/* The length of the valid UTF-8 sequence that starts at p (1 for ASCII),
   or 0 when none does. */
size_t sl_utf8_seq (const unsigned char *p, const unsigned char *end);

/* Appends s[0..n) to b as a quoted JSON string, written as the encoder
   writes strings. Returns 0, or -1 when memory runs out. */
int sl_json_add_string (sl_buf *b, const char *s, size_t n);

/* Pushes the null sentinel (light userdata NULL, the same as cjson.null). */
void sl_json_pushnull (lua_State *L);

/*
** Pushes the array metatable (created once, stored in the registry under
** the name "sluice.array"). A table with this metatable always encodes as a
** JSON array, so an empty list encodes as [] rather than {}.
*/
void sl_json_pusharraymt (lua_State *L);

#endif
