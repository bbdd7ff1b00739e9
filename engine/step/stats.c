/*
** Step statistics.
**
** ctx:step_stats(names[, opts]) reads the last opts.runs runs of the
** calling run's pipeline from the store (default 50, at most 1000; newest
** first, the calling run left out) and adds up, for each name, the
** executions of a step of that name that ended (a checkpoint with a
** status other than "running"):
**
**   n          executions
**   ok         of them completed
**   failed     of them ended otherwise (failed, cancelled, ...)
**   cached     of them answered from the cache (in n, never timed)
**   timed      of the others, those with a start and an end on the clock
**   total_ms   the time those took, in milliseconds
**   cost, tokens   the usage they recorded
**   last_ms    the start (Unix ms) of the newest run one of them ended in
**
** What the store holds is read into C and added up before any of it
** reaches Lua, and nothing between the first allocation and the last free
** can raise, so an error of any kind leaks nothing.
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "stats.h"
#include "ctx.h"
#include "error.h"
#include "plan.h"
#include "store.h"
#include "value.h"

/* How many runs are read unless opts.runs says otherwise, and the most
   it may say. */
#define DEFAULT_RUNS 50
#define MAX_RUNS 1000

/* What the executions of one name add up to. */
typedef struct step_stats {
  const char *name;          /* a string of the names list, anchored there */
  lua_Integer n, ok, failed, cached, timed, tokens;
  double total_ms, cost;
  int64_t last_ms;
} step_stats;

/* One run to read. */
typedef struct run_ref {
  char *id;                  /* owned */
  int64_t started_ms;
} run_ref;

/* The runs the listing gave, newest first, without the calling run. */
typedef struct run_list {
  run_ref *runs;
  int n, cap, max;
  const char *skip;          /* the calling run's id */
  int oom;                   /* memory ran out keeping them */
} run_list;

/* Listing callback: keeps a copy of the id and start of r. */
static int keep_run(void *ud, const sl_store_run *r) {
  run_list *l = ud;
  if (r->id == NULL || strcmp(r->id, l->skip) == 0 || l->n == l->max) return 0;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 16;
    if (cap > l->max) cap = l->max;
    run_ref *grown = realloc(l->runs, (size_t)cap * sizeof *grown);
    if (grown == NULL) {
      l->oom = 1;
      return SL_STORE_ENOMEM;
    }
    l->runs = grown;
    l->cap = cap;
  }
  char *id = strdup(r->id);
  if (id == NULL) {
    l->oom = 1;
    return SL_STORE_ENOMEM;
  }
  l->runs[l->n].id = id;
  l->runs[l->n].started_ms = r->started_ms;
  l->n++;
  return 0;
}

static void free_runs(run_list *l) {
  for (int i = 0; i < l->n; i++) free(l->runs[i].id);
  free(l->runs);
}

/*
** Adds the cost and tokens of a usage text ({"cost": number, "tokens":
** integer, ...}) to s; text that is not such an object adds nothing.
** Decodes on L and leaves its stack as it found it. Never raises: the
** decoder runs protected, and the fields are found by walking the table,
** which allocates nothing (the caller made room on the stack).
*/
static void add_usage(lua_State *L, step_stats *s, const char *usage) {
  int top = lua_gettop(L);
  if (usage == NULL || sl_json_decode(L, usage, strlen(usage)) != 0 ||
      lua_type(L, -1) != LUA_TTABLE) {
    lua_settop(L, top);
    return;
  }
  lua_pushnil(L);                                       /* usage nil */
  while (lua_next(L, -2) != 0) {                        /* usage key value */
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TNUMBER) {
      const char *k = lua_tostring(L, -2);
      int isint;
      if (strcmp(k, "cost") == 0) {
        s->cost += lua_tonumber(L, -1);
      } else if (strcmp(k, "tokens") == 0) {
        lua_Integer t = lua_tointegerx(L, -1, &isint);
        /* Summed as Lua sums integers, wrapping rather than overflowing. */
        if (isint) s->tokens = (lua_Integer)((lua_Unsigned)s->tokens + (lua_Unsigned)t);
      }
    }
    lua_pop(L, 1);                                      /* usage key */
  }
  lua_settop(L, top);
}

/* Adds the checkpoint cp, recorded in a run that started at started_ms,
   to s, if it ended. */
static void count(lua_State *L, step_stats *s, const sl_store_checkpoint *cp,
                  int64_t started_ms) {
  if (cp->status == NULL || strcmp(cp->status, "running") == 0) return;
  s->n++;
  if (strcmp(cp->status, "completed") == 0) s->ok++;
  else s->failed++;
  if (cp->cached) {
    s->cached++;
  } else if (cp->t0 > 0 && cp->t1 > 0 && cp->t1 >= cp->t0) {
    s->timed++;
    s->total_ms += (double)(cp->t1 - cp->t0) / 1e6;
  }
  add_usage(L, s, cp->usage);
  if (started_ms > s->last_ms) s->last_ms = started_ms;
}

/*
** Adds up, into st[0..nst), the executions the store holds of the last
** runs runs of pipeline, leaving out the run skip. Returns 0, or a store
** error with its message in err. Never raises.
*/
static int read_stats(lua_State *L, sl_store *store, const char *pipeline,
                      const char *skip, int runs, step_stats *st, int nst,
                      char *err, size_t errlen) {
  run_list list = {NULL, 0, 0, runs, skip, 0};
  sl_store_run_filter f = {0};
  f.pipeline = pipeline;
  f.limit = runs + 1;        /* the calling run may be among them */
  int rc = sl_store_run_list(store, &f, keep_run, &list);
  if (list.oom)
    snprintf(err, errlen, "%s: listing the runs of %s: out of memory",
             sl_store_path(store), pipeline);
  else if (rc != 0)
    snprintf(err, errlen, "%s", sl_store_errmsg(store));
  for (int i = 0; rc == 0 && i < list.n; i++) {
    sl_store_replay *rp = NULL;
    rc = sl_store_replay_read(store, list.runs[i].id, &rp);
    if (rc != 0) {
      snprintf(err, errlen, "%s", sl_store_errmsg(store));
      break;
    }
    int nsteps = sl_store_replay_nsteps(rp);
    for (int j = 0; j < nsteps; j++) {
      const sl_store_checkpoint *cp = sl_store_replay_step_at(rp, j);
      if (cp == NULL || cp->name == NULL) continue;
      if (cp->kind != NULL && strcmp(cp->kind, "sleep") == 0) continue;   /* a sleep's due time */
      /* No break: a name listed twice gets the same counts twice. */
      for (int k = 0; k < nst; k++)
        if (strcmp(cp->name, st[k].name) == 0) count(L, &st[k], cp, list.runs[i].started_ms);
    }
    sl_store_replay_free(rp);
  }
  free_runs(&list);
  return rc;
}

/* Sets field k of the table on top of L. */
static void set_integer(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_number(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

/* The number of runs opts (at idx, may be none or nil) asks for. */
static int runs_option(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return DEFAULT_RUNS;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer runs = DEFAULT_RUNS;
  if (lua_getfield(L, idx, "runs") != LUA_TNIL) {
    int isint = 0;
    if (lua_type(L, -1) == LUA_TNUMBER) runs = lua_tointegerx(L, -1, &isint);
    luaL_argcheck(L, isint && runs > 0, idx, "runs must be a positive integer");
  }
  lua_pop(L, 1);
  return runs > MAX_RUNS ? MAX_RUNS : (int)runs;
}

/* ctx:step_stats(names[, {runs = n}]): the table described at the top of
   this file, keyed by name; zeros for a name with no executions, and for
   every name when the engine has no store. A store that cannot be read
   raises an error of kind "error". */
static int ctx_step_stats(lua_State *L) {
  sl_exec *x = sl_ctx_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int runs = runs_option(L, 3);
  lua_Unsigned len = lua_rawlen(L, 2);
  luaL_argcheck(L, len <= (lua_Unsigned)(INT_MAX / sizeof(step_stats)), 2,
                "too many step names");
  int nst = (int)len;
  step_stats *st = lua_newuserdatauv(L, (size_t)nst * sizeof *st, 0);
  memset(st, 0, (size_t)nst * sizeof *st);
  for (int i = 0; i < nst; i++) {
    if (lua_rawgeti(L, 2, i + 1) != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "a list of step names expected, "
                                             "item %d is %s", i + 1,
                                          luaL_typename(L, -1)));
    st[i].name = lua_tostring(L, -1);                   /* anchored in names */
    lua_pop(L, 1);
  }
  luaL_checkstack(L, 8, "step_stats");
  sl_core *c = sl_core_of(x);
  if (c->store != NULL) {
    char err[600];
    if (read_stats(L, c->store, x->run->pipeline, x->run->id, runs, st, nst,
                   err, sizeof err) != 0) {
      char msg[700];
      snprintf(msg, sizeof msg, "ctx:step_stats could not read the store: %s", err);
      sl_error_push(L, "error", msg, x->plan->name, NULL);
      return lua_error(L);
    }
  }
  lua_createtable(L, 0, nst);                           /* st result */
  for (int i = 0; i < nst; i++) {
    lua_createtable(L, 0, 9);
    set_integer(L, "n", st[i].n);
    set_integer(L, "ok", st[i].ok);
    set_integer(L, "failed", st[i].failed);
    set_integer(L, "cached", st[i].cached);
    set_integer(L, "timed", st[i].timed);
    set_number(L, "total_ms", st[i].total_ms);
    set_number(L, "cost", st[i].cost);
    set_integer(L, "tokens", st[i].tokens);
    set_integer(L, "last_ms", (lua_Integer)st[i].last_ms);
    lua_setfield(L, -2, st[i].name);
  }
  return 1;
}

static const luaL_Reg stats_methods[] = {
  {"step_stats", ctx_step_stats},
  {NULL, NULL}
};

void sl_stats_register(lua_State *L, sl_core *c) {
  sl_ctx_register(L, c, stats_methods);
}
