/*
** Memo: the glue between step executions and the cache. For a step with
** the cache option it makes the key (the step's version and its input, or
** what its key function returns), looks it up, runs concurrent identical
** executions once (single flight), and stores a successful output.
*/
#ifndef SL_MEMO_H
#define SL_MEMO_H

#include "scheduler.h"

enum {
  SL_MEMO_NONE,    /* nothing to look up: run as usual */
  SL_MEMO_HIT,     /* the output was found and pushed */
  SL_MEMO_LEAD,    /* run it, and store what it gives */
  SL_MEMO_FOLLOW,  /* another execution is computing it: wait for that one */
  SL_MEMO_AGAIN    /* it waited, and found nothing: look again */
};

/* Makes t's key from the input at ii (and the ctx at ci, for a key
   function) and looks it up. Returns SL_MEMO_*; on a hit the output is
   pushed and what the step changed in the state is applied to t's view.
   Raises naming the step on a key that cannot be made. */
int sl_memo_lookup(lua_State *L, sl_task *t, int si, int ii, int ci);

/* Looks t's key up again (a follower woken by its leader). Returns 1 with
   the output pushed (and the changes applied), or 0. */
int sl_memo_recheck(lua_State *L, sl_task *t);

/* The execution t, a leader, ended: when ok, stores the output at idx with
   the changes it made to the state (at ci, nil or 0 for none) and what it
   read of it (from its view at vi, 0 for none), then wakes the executions
   that waited for it. */
void sl_memo_end(lua_State *L, sl_task *t, int ok, int idx, int vi, int ci);

/* A follower stops waiting (it was cancelled). */
void sl_memo_leave(sl_task *t);

#endif
