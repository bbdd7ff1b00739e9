/*
** Memo.
*/
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "memo.h"
#include "attempt.h"
#include "cache.h"
#include "run.h"
#include "value.h"
#include "store.h"
#include "ctx.h"
#include "durable.h"
#include "state.h"

/* Tells cache entries of this form ({o = output, c = changes}) from any
   other: it is part of every key. */
#define ENTRY_FORM 2

static uint64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return uv_hrtime() / 1000000;
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static const char *name_of(sl_task *t) {
  return t->hist >= 0 ? t->run->hist.recs[t->hist].name : "?";
}

/* Raises a key failure naming the step and where it was defined. */
static int key_error(lua_State *L, int si, sl_task *t, const char *what) {
  lua_getfield(L, si, "where");
  return luaL_error(L, "%s%sstep '%s': cannot make its cache key: %s",
                    luaL_optstring(L, -1, ""), lua_isstring(L, -1) ? ": " : "",
                    name_of(t), what);
}

/* The version of the policy table t's run uses: a step's output depends
   on the kinds of every step under it, so a changed kind misses. cache.c
   remembers it per table, and the table is replaced, never changed, when
   a kind is added or swapped. */
static void kinds_version(lua_State *L, sl_task *t, sl_key *out) {
  char err[64];
  memset(out, 0, sizeof *out);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->run->ref_kinds);
  sl_step_version(L, -1, out, err, sizeof err);
  lua_pop(L, 1);
}

/* The store's form of a key: the high half first, each half big-endian. */
static void key_bytes(const sl_key *k, unsigned char out[SL_STORE_KEYLEN]) {
  for (int i = 0; i < 8; i++) {
    out[i] = (unsigned char)(k->hi >> (56 - 8 * i));
    out[8 + i] = (unsigned char)(k->lo >> (56 - 8 * i));
  }
}

/*
** A cache entry is {o = output, c = changes, r = reads}: what the step
** returned, what it changed in the state, and the values of the state it
** read, so that a hit gives the output and leaves the state as a run of
** the step would, and only where the state holds what the step read.
** Takes the entry on top of L. Returns 0, popping it, when the state t's
** step sees differs from the entry's reads; else applies its changes to
** t's view of the state, leaves the output in its place and returns 1.
*/
static int take_entry(lua_State *L, sl_task *t) {
  int entry = lua_gettop(L);
  if (lua_getfield(L, entry, "r") == LUA_TTABLE) {      /* entry reads */
    sl_ctx_push_base(L, t);                             /* entry reads base */
    int same = sl_state_reads_match(L, -1, -2);
    lua_pop(L, 2);
    if (!same) {
      lua_pop(L, 1);
      return 0;
    }
  } else {
    lua_pop(L, 1);
  }
  if (lua_getfield(L, entry, "c") == LUA_TTABLE) {      /* entry changes */
    sl_ctx_push_state(L, t);                            /* entry changes view */
    sl_state_apply(L, -1, -2);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_getfield(L, entry, "o");                          /* entry output */
  lua_replace(L, entry);
  return 1;
}

/* Looks key up in the store's persistent tier, shared by runs and
   processes; a hit is pushed and put in the memory tier too. */
static int store_get(lua_State *L, sl_task *t, const sl_key *key) {
  sl_engine *e = t->e;
  if (e->store == NULL) return 0;
  unsigned char kb[SL_STORE_KEYLEN];
  key_bytes(key, kb);
  sl_buf b;
  sl_buf_init(&b);
  uint64_t now = wall_ms();
  int hit = 0;
  if (sl_store_cache_get(e->store, kb, (int64_t)now, &b) == 0 && b.data != NULL) {
    hit = sl_json_decode(L, b.data, b.len) == 0;
    if (!hit) lua_pop(L, 1);                            /* the decode's message */
  }
  if (hit) {
    /* The stored form of the changes is their record; the memory tier
       keeps them ready to apply. */
    for (int i = 0; i < 2; i++) {
      const char *f = i == 0 ? "c" : "r";
      if (lua_getfield(L, -1, f) == LUA_TTABLE) {
        sl_state_changes_from_record(L, -1);
        lua_setfield(L, -3, f);
      }
      lua_pop(L, 1);
    }
    const char *name = name_of(t);
    uint64_t expires = t->att->ttl_ms > 0 ? now + t->att->ttl_ms : 0;
    sl_cache_put(e->cache, L, key, lua_gettop(L), b.len, expires, name, strlen(name));
  }
  sl_buf_free(&b);
  return hit;
}

int sl_memo_lookup(lua_State *L, sl_task *t, int si, int ii, int ci) {
  sl_attempts *a = t->att;
  sl_engine *e = t->e;
  char err[256];
  a->memo = SL_MEMO_NONE;
  if (!a->cache_on || e->cache == NULL) return SL_MEMO_NONE;
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  ci = lua_absindex(L, ci);
  int top = lua_gettop(L);
  /* The identity: the step's version and its run's policy table's, so
     editing either the step or a kind misses. */
  sl_key version[3];
  if (sl_step_version(L, si, &version[0], err, sizeof err) != 0)
    key_error(L, si, t, err);
  kinds_version(L, t, &version[1]);
  /* The form of an entry ({o, c}); entries of another form never match. */
  version[2].lo = ENTRY_FORM;
  version[2].hi = 0;
  int vi = ii;
  if (lua_getfield(L, si, "cache") == LUA_TTABLE &&
      lua_getfield(L, -1, "key") == LUA_TFUNCTION) {
    /* The key function runs in the caller's frame: it may not wait. */
    lua_pushvalue(L, ii);
    lua_pushvalue(L, ci);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
      const char *msg = lua_tostring(L, -1);
      char why[300];
      snprintf(why, sizeof why, "its key function raised: %s", msg ? msg : "?");
      key_error(L, si, t, why);
    }
    if (lua_type(L, -1) == LUA_TFUNCTION)
      key_error(L, si, t, "its key function returned a function");
    vi = lua_gettop(L);
  }
  if (sl_cache_key(e->cache, L, vi, (const char *)version, sizeof version,
                   &a->key, err, sizeof err) != 0) {
    char why[300];
    snprintf(why, sizeof why, "the %s cannot be hashed: %s",
             vi == ii ? "input" : "key", err);
    key_error(L, si, t, why);
  }
  lua_settop(L, top);
  if ((sl_cache_get(e->cache, L, &a->key, wall_ms()) && take_entry(L, t)) ||
      (store_get(L, t, &a->key) && take_entry(L, t))) {
    a->memo = SL_MEMO_HIT;
    return SL_MEMO_HIT;
  }
  int role = sl_cache_flight_begin(e->cache, &a->key, t);
  a->memo = role == SL_FLIGHT_FOLLOWER ? SL_MEMO_FOLLOW : SL_MEMO_LEAD;
  return a->memo;
}

int sl_memo_recheck(lua_State *L, sl_task *t) {
  sl_engine *e = t->e;
  return e->cache != NULL && sl_cache_get(e->cache, L, &t->att->key, wall_ms()) &&
         take_entry(L, t);
}

static void wake_follower(void *waiter, void *ud) {
  sl_task *f = waiter;
  (void)ud;
  sl_task_wake(f, 0);
}

void sl_memo_end(lua_State *L, sl_task *t, int ok, int idx, int vi, int ci) {
  sl_attempts *a = t->att;
  sl_engine *e = t->e;
  if (a == NULL || a->memo != SL_MEMO_LEAD || e->cache == NULL) return;
  a->memo = SL_MEMO_NONE;
  if (ok) {
    /* Only what JSON can carry is stored: the same rule the persistent
       tier has, and the measure of its size. */
    int top = lua_gettop(L);
    lua_createtable(L, 0, 2);                           /* entry */
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "o");
    int entry = lua_gettop(L), ri = 0;
    if (ci != 0 && lua_istable(L, ci)) {
      sl_state_changes_to_record(L, ci);
      lua_setfield(L, entry, "c");
    }
    if (vi != 0) {
      sl_state_push_reads(L, vi);                       /* entry reads|nil */
      if (lua_istable(L, -1)) {
        ri = lua_gettop(L);
        sl_state_changes_to_record(L, ri);
        lua_setfield(L, entry, "r");
      }
    }
    lua_pushvalue(L, entry);
    sl_buf b;
    char err[200];
    sl_buf_init(&b);
    if (sl_json_encode(L, -1, &b, 0, err, sizeof err) == 0) {
      uint64_t now = wall_ms();
      uint64_t expires = a->ttl_ms > 0 ? now + a->ttl_ms : 0;
      const char *name = name_of(t);
      if (e->store != NULL) {
        unsigned char kb[SL_STORE_KEYLEN];
        key_bytes(&a->key, kb);
        if (sl_store_cache_put(e->store, kb, name, b.data ? b.data : "null",
                               (int64_t)now, (int64_t)expires) != 0)
          sl_durable_write_failed(e);
      }
      if (ci != 0 && lua_istable(L, ci)) {
        lua_pushvalue(L, ci);
        lua_setfield(L, entry, "c");
      }
      if (ri != 0) {
        lua_pushvalue(L, ri);
        lua_setfield(L, entry, "r");
      }
      sl_cache_put(e->cache, L, &a->key, entry, b.len, expires, name, strlen(name));
    }
    sl_buf_free(&b);
    lua_settop(L, top);
  }
  sl_cache_flight_end(e->cache, &a->key, wake_follower, NULL);
}

void sl_memo_leave(sl_task *t) {
  if (t->att != NULL && t->att->memo == SL_MEMO_FOLLOW && t->e->cache != NULL)
    sl_cache_flight_leave(t->e->cache, &t->att->key, t);
  if (t->att != NULL) t->att->memo = SL_MEMO_NONE;
}
