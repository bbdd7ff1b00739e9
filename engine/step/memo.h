/*
** Memo: the cache phase of a step with the cache option (memo.c).
*/
#ifndef SL_MEMO_H
#define SL_MEMO_H

#include "core.h"

/* Makes x's key from the input at ii (or what its key function returns)
   of the step at si and looks it up. Returns SL_MEMO_* (attempt.h); on a
   hit the output is pushed and what the step changed in the state is
   applied to x's view. Raises naming the step on a key that cannot be
   made. */
int sl_memo_lookup(lua_State *L, sl_exec *x, int si, int ii);

/* Looks x's key up again (a follower woken by its leader). Returns 1 with
   the output pushed (and the changes applied), or 0. */
int sl_memo_recheck(lua_State *L, sl_exec *x);

/* The execution x, a leader, ended: when ok, stores the output at idx with
   the changes it made to the state (at ci, 0 or nil for none) and what it
   read of it (from its view at vi, 0 for none), then wakes the executions
   that waited for it. */
void sl_memo_end(lua_State *L, sl_exec *x, int ok, int idx, int vi, int ci);

/* A follower stops waiting (it was cancelled). */
void sl_memo_leave(sl_exec *x);

#endif
