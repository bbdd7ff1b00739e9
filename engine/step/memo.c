/*
** Memo: the cache phase of a step with the cache option. It makes the key
** (the step's version, its run's policy table's, and its input or what its
** key function returns), looks it up, runs concurrent identical executions
** once (single flight), and stores a successful output with what the step
** changed in the state and what it read of it.
*/
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "memo.h"
#include "attempt.h"
#include "cache.h"
#include "ctx.h"
#include "durable.h"
#include "plan.h"
#include "state.h"
#include "store.h"
#include "value.h"
#include "writer.h"

#include <stdlib.h>

/* Tells cache entries of this form from any other: part of every key. */
#define ENTRY_FORM 4

/* Marks, in the memory tier, an entry that carries more than the output:
   {o = output, c = changes, r = reads}. Any other value is the output. */
static const char entry_mt_key = 0;

static void push_entry_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &entry_mt_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &entry_mt_key);
}

static int is_entry(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  push_entry_mt(L);
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

static uint64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return uv_hrtime() / 1000000;
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* Raises a key failure naming the step and where it was defined. */
static int key_error(lua_State *L, sl_exec *x, const char *what) {
  const sl_plan *p = x->plan;
  return luaL_error(L, "%s%sstep '%s': cannot make its cache key: %s",
                    p->where ? p->where : "", p->where ? ": " : "", p->name, what);
}

/* The version of the policy table x's run uses: a step's output depends
   on the kinds of every step under it, so a changed kind misses. A run
   keeps one table from start to end (it is replaced, never changed, when a
   kind is added or swapped), so its version is worked out once per run. */
static void kinds_version(lua_State *L, sl_exec *x, sl_key *out) {
  sl_run *r = x->run;
  if (!r->kinds_version_known) {
    char err[64];
    memset(&r->kinds_version, 0, sizeof r->kinds_version);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref_kinds);
    sl_cache_version(L, -1, &r->kinds_version, err, sizeof err);
    lua_pop(L, 1);
    r->kinds_version_known = 1;
  }
  *out = r->kinds_version;
}

/* The store's form of a key: the high half first, each half big-endian. */
static void key_bytes(const sl_key *k, unsigned char out[SL_STORE_KEYLEN]) {
  for (int i = 0; i < 8; i++) {
    out[i] = (unsigned char)(k->hi >> (56 - 8 * i));
    out[8 + i] = (unsigned char)(k->lo >> (56 - 8 * i));
  }
}

/*
** Takes the value the cache gave, on top of L: an entry, or the output
** itself. Returns 0, popping it, when the state x's step sees differs from
** what the entry's step read; else applies the entry's changes to x's view
** of the state, leaves the output in its place and returns 1.
*/
static int take_entry(lua_State *L, sl_exec *x) {
  int entry = lua_gettop(L);
  if (!is_entry(L, entry)) return 1;
  if (lua_getfield(L, entry, "r") == LUA_TTABLE) {      /* entry reads */
    sl_ctx_push_base(L, x);                             /* entry reads base */
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
    sl_ctx_push_state(L, x);                            /* entry changes view */
    sl_state_apply(L, -1, -2);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_getfield(L, entry, "o");                          /* entry output */
  lua_replace(L, entry);
  return 1;
}

/* Puts what the persistent tier gave (JSON text of len bytes) for x in the
   memory tier and pushes it as the memory tier keeps it; returns 1, or 0
   with nothing pushed when the text does not decode to an entry. */
static int keep_stored(lua_State *L, sl_exec *x, const char *text, size_t len, uint64_t now) {
  sl_core *c = sl_core_of(x);
  if (sl_json_decode(L, text, len) != 0 || !lua_istable(L, -1)) {
    lua_pop(L, 1);                                      /* the decode's message */
    return 0;
  }
  /* The stored form is always {o, c, r} with c and r as records; the
     memory tier keeps the output alone when there is nothing more. */
  int e = lua_gettop(L), more = 0;
  for (int i = 0; i < 2; i++) {
    const char *f = i == 0 ? "c" : "r";
    if (lua_getfield(L, e, f) == LUA_TTABLE) {
      sl_state_changes_from_record(L, -1);
      lua_setfield(L, e, f);
      more = 1;
    }
    lua_pop(L, 1);
  }
  if (more) {
    push_entry_mt(L);
    lua_setmetatable(L, e);
  } else {
    lua_getfield(L, e, "o");
    lua_replace(L, e);
  }
  const sl_plan *p = x->plan;
  uint64_t expires = p->ttl_ms > 0 ? now + p->ttl_ms : 0;
  sl_cache_put(c->cache, L, &x->memo_key, e, len, expires, p->name, p->nlen);
  return 1;
}

/* Looks key up in the store's persistent tier, shared by runs and
   processes; a hit is pushed (as the memory tier keeps it) and put in the
   memory tier too. */
static int store_get(lua_State *L, sl_exec *x, const sl_key *key) {
  sl_core *c = sl_core_of(x);
  /* A store on a server is looked up off the loop, by the leader. */
  if (c->store == NULL || (c->writer != NULL && sl_store_remote(c->store))) return 0;
  unsigned char kb[SL_STORE_KEYLEN];
  key_bytes(key, kb);
  sl_buf b;
  sl_buf_init(&b);
  uint64_t now = wall_ms();
  int hit = 0;
  if (sl_store_cache_get(c->store, kb, (int64_t)now, &b) == 0 && b.data != NULL) {
    hit = keep_stored(L, x, b.data, b.len, now);
    if (hit && c->writer != NULL) sl_writer_cache_hit(c->writer, kb);
  }
  sl_buf_free(&b);
  return hit;
}

static void wake_follower(void *waiter, void *ud) {
  sl_exec *f = waiter;
  (void)ud;
  sl_task_wake(&f->task, 0);
}

/*
** The persistent tier of a store whose calls are round trips is looked up
** on the writer's thread: the execution, leader of its key, waits for the
** answer (its followers wait for it as for any leader).
*/
struct sl_memo_fetch {
  sl_exec *x;              /* NULL once the execution stopped waiting */
  int done, rc;
  sl_buf value;
};

int sl_memo_can_fetch(const sl_exec *x) {
  sl_core *c = sl_core_of((sl_exec *)x);
  return x->memo == SL_MEMO_LEAD && c->writer != NULL && sl_store_remote(c->store);
}

static void on_fetched(void *ud, int rc, const char *value, size_t len) {
  sl_memo_fetch *f = ud;
  if (f->x == NULL) {
    sl_buf_free(&f->value);
    free(f);
    return;
  }
  f->done = 1;
  f->rc = rc;
  if (rc == 0 && sl_buf_add(&f->value, value, len) != 0) f->rc = SL_STORE_ENOMEM;
  sl_exec *x = f->x;
  sl_task_wake(&x->task, 0);
  sl_sched_drain(&sl_core_of(x)->sched);
}

int sl_memo_fetch_start(sl_exec *x) {
  sl_core *c = sl_core_of(x);
  sl_memo_fetch *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  f->x = x;
  sl_buf_init(&f->value);
  unsigned char kb[SL_STORE_KEYLEN];
  key_bytes(&x->memo_key, kb);
  if (sl_writer_cache_get(c->writer, kb, (int64_t)wall_ms(), on_fetched, f) == 0) {
    free(f);
    return -1;
  }
  x->fetch = f;
  return 0;
}

int sl_memo_fetch_take(lua_State *L, sl_exec *x) {
  sl_core *c = sl_core_of(x);
  sl_memo_fetch *f = x->fetch;
  x->fetch = NULL;
  if (f == NULL) return 0;
  int hit = f->done && f->rc == 0 && f->value.data != NULL &&
            keep_stored(L, x, f->value.data, f->value.len, wall_ms());
  sl_buf_free(&f->value);
  free(f);
  if (!hit) return 0;
  if (!take_entry(L, x)) return 0;   /* what it read of the state differs */
  /* A hit: the followers find it in the memory tier now. */
  x->memo = SL_MEMO_NONE;
  sl_cache_flight_end(c->cache, &x->memo_key, wake_follower, NULL);
  return 1;
}

void sl_memo_fetch_leave(sl_exec *x) {
  sl_memo_fetch *f = x->fetch;
  x->fetch = NULL;
  if (f == NULL) return;
  if (f->done) {
    sl_buf_free(&f->value);
    free(f);
  } else {
    f->x = NULL;   /* the answer frees it */
  }
}

int sl_memo_lookup(lua_State *L, sl_exec *x, int si, int ii) {
  sl_core *c = sl_core_of(x);
  char err[256];
  x->memo = SL_MEMO_NONE;
  if (!(x->plan->cache || c->cache_all) || c->cache == NULL) return SL_MEMO_NONE;
  si = lua_absindex(L, si);
  ii = lua_absindex(L, ii);
  int top = lua_gettop(L);
  /* The identity: the step's version and its run's policy table's, so
     editing either the step or a kind misses. */
  sl_key version[3];
  if (sl_plan_version(L, x->plan, si, &version[0], err, sizeof err) != 0)
    key_error(L, x, err);
  kinds_version(L, x, &version[1]);
  version[2].lo = ENTRY_FORM;
  version[2].hi = 0;
  int vi = ii;
  if (x->plan->key_fn) {
    lua_getfield(L, si, "cache");
    lua_getfield(L, -1, "key");
    /* The key function runs in the caller's frame: it may not wait. */
    lua_pushvalue(L, ii);
    sl_ctx_push(L, x);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
      const char *msg = lua_tostring(L, -1);
      char why[300];
      snprintf(why, sizeof why, "its key function raised: %s", msg ? msg : "?");
      key_error(L, x, why);
    }
    if (lua_type(L, -1) == LUA_TFUNCTION)
      key_error(L, x, "its key function returned a function");
    vi = lua_gettop(L);
  }
  if (sl_cache_key(c->cache, L, vi, (const char *)version, sizeof version,
                   &x->memo_key, err, sizeof err) != 0) {
    char why[300];
    snprintf(why, sizeof why, "the %s cannot be hashed: %s",
             vi == ii ? "input" : "key", err);
    key_error(L, x, why);
  }
  lua_settop(L, top);
  /* Entries of a step without a ttl never expire: no clock is read. */
  uint64_t now = x->plan->ttl_ms > 0 ? wall_ms() : 0;
  if ((sl_cache_get(c->cache, L, &x->memo_key, now) && take_entry(L, x)) ||
      (store_get(L, x, &x->memo_key) && take_entry(L, x))) {
    x->memo = SL_MEMO_HIT;
    return SL_MEMO_HIT;
  }
  int role = sl_cache_flight_begin(c->cache, &x->memo_key, x);
  x->memo = role == SL_FLIGHT_FOLLOWER ? SL_MEMO_FOLLOW : SL_MEMO_LEAD;
  return x->memo;
}

int sl_memo_recheck(lua_State *L, sl_exec *x) {
  sl_core *c = sl_core_of(x);
  return c->cache != NULL && sl_cache_get(c->cache, L, &x->memo_key, wall_ms()) &&
         take_entry(L, x);
}


void sl_memo_end(lua_State *L, sl_exec *x, int ok, int idx, int vi, int ci) {
  sl_core *c = sl_core_of(x);
  if (x->memo != SL_MEMO_LEAD || c->cache == NULL) return;
  x->memo = SL_MEMO_NONE;
  if (ok) {
    /* Only what JSON can carry is stored: the same rule the persistent
       tier has, and the measure of its size. */
    int top = lua_gettop(L);
    lua_createtable(L, 0, 3);                           /* entry */
    int entry = lua_gettop(L), ri = 0, more = 0;
    lua_pushvalue(L, idx);
    lua_setfield(L, entry, "o");
    if (ci != 0 && lua_istable(L, ci)) {
      sl_state_changes_to_record(L, ci);
      lua_setfield(L, entry, "c");
      more = 1;
    }
    if (vi != 0) {
      sl_state_push_reads(L, vi);                       /* entry reads|nil */
      if (lua_istable(L, -1)) {
        ri = lua_gettop(L);
        sl_state_changes_to_record(L, ri);
        lua_setfield(L, entry, "r");
        more = 1;
      }
    }
    sl_buf b;
    char err[200];
    sl_buf_init(&b);
    if (sl_json_encode(L, entry, &b, 0, err, sizeof err) == 0) {
      uint64_t now = wall_ms();
      const sl_plan *p = x->plan;
      uint64_t expires = p->ttl_ms > 0 ? now + p->ttl_ms : 0;
      if (c->writer != NULL) {
        /* The persistent tier is a cache: a lost write only costs a miss. */
        unsigned char kb[SL_STORE_KEYLEN];
        key_bytes(&x->memo_key, kb);
        sl_writer_cache_put(c->writer, kb, p->name, b.data ? b.data : "null",
                            (int64_t)now, (int64_t)expires);
      }
      int keep = idx;
      if (more) {
        if (ci != 0 && lua_istable(L, ci)) {
          lua_pushvalue(L, ci);
          lua_setfield(L, entry, "c");
        }
        if (ri != 0) {
          lua_pushvalue(L, ri);
          lua_setfield(L, entry, "r");
        }
        push_entry_mt(L);
        lua_setmetatable(L, entry);
        keep = entry;
      }
      sl_cache_put(c->cache, L, &x->memo_key, keep, b.len, expires, p->name, p->nlen);
    }
    sl_buf_free(&b);
    lua_settop(L, top);
  }
  sl_cache_flight_end(c->cache, &x->memo_key, wake_follower, NULL);
}

void sl_memo_leave(sl_exec *x) {
  sl_core *c = sl_core_of(x);
  if (x->memo == SL_MEMO_FOLLOW && c->cache != NULL)
    sl_cache_flight_leave(c->cache, &x->memo_key, x);
  x->memo = SL_MEMO_NONE;
}
