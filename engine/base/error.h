/*
** Step errors: the {kind, message, step, where} tables that fallback
** policies, results and history all see.
*/
#ifndef SL_ERROR_H
#define SL_ERROR_H

#include <lua.h>

#include "names.h"

/* Pushes a new error table. step and where may be NULL. */
void sl_error_push(lua_State *L, const char *kind, const char *msg,
                   const char *step, const char *where);

/* Replaces the error value at idx (anything a step raised, with the status
   lua_resume or lua_pcall gave) by an error table. An error table passes
   through unchanged, so a failure keeps naming the step it started in. A
   message "file:line: text" becomes where = "file:line", message = "text".
   A memory error becomes kind "limit". Never raises. */
void sl_error_normalize(lua_State *L, int idx, int status, const char *step);

/* Reads the fields of the error table at idx (NULL where absent); the
   strings stay valid while the table does. */
void sl_error_fields(lua_State *L, int idx, const char **kind,
                     const char **msg, const char **where);

/* Is the value at idx an error table? */
int sl_error_is(lua_State *L, int idx);

/* Registers the error metatable (its __tostring reads "step 'x': message
   (where)"). */
void sl_error_open(lua_State *L);

#endif
