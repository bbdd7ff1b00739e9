/*
** HTTP for steps: ctx:http sends a request with libcurl's multi interface,
** driven by the engine's event loop, and suspends only the calling step.
*/
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <lua.h>

#include "core.h"

/* Adds ctx:http to every ctx of engine e. The engine's curl multi handle
   is made on the first request. */
void sl_http_open(lua_State *L, sl_core *c);

/* Engine teardown, after its runs have been abandoned: lets go of any
   request still in flight, closes the multi handle and its uv handles
   (counted in e->handles_open). */
void sl_http_close(sl_core *c);

#endif
