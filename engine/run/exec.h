/*
** Processes: ctx:exec runs a program with uv_spawn and suspends only the
** calling step until it has exited and its output has been read.
**
** Also the small helpers the I/O services (exec, http) share: option
** checking with suggestions, and raising runtime failures as error tables
** that point at the user's call.
*/
#ifndef SL_EXEC_H
#define SL_EXEC_H

#include <lua.h>

#include "core.h"

/* Adds ctx:exec to every ctx of core c. */
void sl_exec_open(lua_State *L, sl_core *c);

/* Raises a "bad argument" error for the table at arg when it has a key
   that is not in names (a NULL-terminated list), suggesting the closest
   name. */
void sl_io_check_options(lua_State *L, int arg, const char *const names[]);

/* Writes into out the position of the code that called the running C
   function ("file:line"), or an empty string when it has none. */
void sl_io_where(lua_State *L, char *out, size_t size);

/* The name of the step x runs, or NULL. */
const char *sl_io_step_name(sl_exec *x);

/* Marks the environment variable name as a secret (an agent's API key):
   programs run with ctx:exec do not inherit it unless their env option
   names it (true passes the engine's value on). */
void sl_exec_secret(lua_State *L, const char *name);

#endif
