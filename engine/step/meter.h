/*
** Metering: the quota phase of a step. The lifecycle calls it in a fixed
** order for a step that has an estimate or reports usage: reserve before
** it runs, charge while it runs, reconcile when it ends. The arithmetic is
** quota.c's; an estimate was parsed, in exact units, into the step's plan.
*/
#ifndef SL_METER_H
#define SL_METER_H

#include "core.h"

/* Sets run r's budget from the table at bi (0 for none); without one, from
   the `budget` option of the root step at si. Raises on a bad budget,
   naming the step and where. */
void sl_meter_budget(lua_State *L, sl_run *r, int si, int bi);

/* Reserves the estimate of x's step. Returns 1 when it fits (or there is
   nothing to reserve), 0 with an error table of kind "quota" pushed when
   it does not. */
int sl_meter_reserve(lua_State *L, sl_exec *x);

/* ctx:charge(usage): records the usage table at ui for x at once. Raises on
   a bad table. Usage past the budget fails the run after this step. */
void sl_meter_charge(lua_State *L, sl_exec *x, int ui);

/* Records the usage table a successful attempt returned (at ui; nil is
   none). Returns 1, or 0 with an error table pushed for a malformed one. */
int sl_meter_returned(lua_State *L, sl_exec *x, int ui);

/* x ended: releases what it still holds and records what it returned.
   Usage past the budget fails the run after this step. */
void sl_meter_reconcile(sl_exec *x);

/* Gives every ctx of core c its charge method. */
void sl_meter_open(lua_State *L, sl_core *c);

#endif
