/*
** Protected calls: work started from an event loop callback (a timer, a
** process, a request) runs under lua_pcall, so that an error or a memory
** failure can never unwind through libuv.
*/
#ifndef SL_PROTECT_H
#define SL_PROTECT_H

#include <stddef.h>
#include <lua.h>

/* Runs fn(L) with ud as its one argument (a light userdata) under
   lua_pcall on L. Returns the status; on failure the message is copied to
   err (errlen bytes; err may be NULL) and popped. */
int sl_protect(lua_State *L, lua_CFunction fn, void *ud, char *err, size_t errlen);

#endif
