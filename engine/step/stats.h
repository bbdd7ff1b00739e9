/*
** Step statistics: ctx:step_stats reads from the store how steps, by
** name, did in the recent runs of the calling run's pipeline (what a
** step can rank its candidates by).
*/
#ifndef SL_STATS_H
#define SL_STATS_H

#include "core.h"

/* Adds ctx:step_stats to the ctx methods of core c. */
void sl_stats_register(lua_State *L, sl_core *c);

#endif
