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

/* The persistent tier of a store on a server is looked up off the loop,
   by the leader of a key that missed the memory tier. Can x (a leader)
   fetch? sl_memo_fetch_start asks the writer (0, or -1: run it instead);
   once woken, sl_memo_fetch_take pushes the output and returns 1 on a hit
   (the changes applied, the followers woken), or returns 0: run it. A
   leader stopped while it waits calls sl_memo_fetch_leave. */
int sl_memo_can_fetch(const sl_exec *x);
int sl_memo_fetch_start(sl_exec *x);
int sl_memo_fetch_take(lua_State *L, sl_exec *x);
void sl_memo_fetch_leave(sl_exec *x);

#endif
