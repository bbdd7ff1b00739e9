/*
** The kinds written in C: `step` and `pipeline`. They are entries of the
** policy table like any other, and sl.kind can replace them.
*/
#ifndef SL_KINDS_H
#define SL_KINDS_H

#include <lua.h>

/* Sets the C kinds into the policy table at idx, marking how the
   lifecycle calls them (sl_plan_mark_call). */
void sl_kinds_register(lua_State *L, int idx);

#endif
