/*
** Patterns: the regular expressions of JSON Schema's "pattern" keyword,
** matched with the C library's POSIX extended regular expressions.
**
** JSON Schema patterns are ECMA-262 regular expressions. The common part
** of that language is translated to POSIX ERE before compiling: the class
** escapes \d \D \w \W \s \S (inside and outside brackets), the escaped
** characters \. \- \/ and the like, \t \n \r, and non-greedy or
** non-capturing groups are refused with a message rather than misread.
** As in JSON Schema, a pattern is not anchored: "^...$" anchors it.
*/
#ifndef SL_PATTERN_H
#define SL_PATTERN_H

#include <stddef.h>
#include <lua.h>

/* Pushes a compiled pattern (a userdata) for the ECMA pattern src, or
   raises "bad pattern: <why>". */
void sl_pattern_compile(lua_State *L, const char *src, size_t len);

/* Does the string s (len bytes) match the compiled pattern at idx? */
int sl_pattern_match(lua_State *L, int idx, const char *s, size_t len);

/* core.pattern(src) -> compiled, or raises; core.pattern_match(p, s) ->
   boolean. Registers both in the table on top of L. */
void sl_pattern_open(lua_State *L);

#endif
