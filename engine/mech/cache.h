/*
** Cache: reuse of a successful step output for the same step version and
** the same input.
**
** Three parts, each usable alone:
**   - keys: a 128-bit XXH3 hash of a step identity and the canonical JSON
**     of an input (or of a user key value), and the version of a step
**     definition, a hash of its kind, name, options and code;
**   - the in-memory tier: outputs by key, bounded in bytes, least recently
**     used first out, with an expiry time per entry;
**   - single flight: bookkeeping so that of the executions waiting on one
**     key only one computes it and the others are woken when it is done.
**
** The cache holds no clock and no scheduler: callers pass the time in
** milliseconds (any monotonic origin) and wake waiters themselves.
*/
#ifndef SL_CACHE_H
#define SL_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "sluice.h"


/* A 128-bit key. Equal keys mean equal hashed bytes (barring collisions). */
typedef struct sl_key {
  uint64_t lo, hi;
} sl_key;

#define SL_KEY_HEXLEN  32

/* Writes the key as 32 lowercase hex digits, high half first, and a NUL. */
void sl_key_hex (const sl_key *k, char out[SL_KEY_HEXLEN + 1]);

/* Are the two keys the same? */
int sl_key_equal (const sl_key *a, const sl_key *b);


typedef struct sl_cache sl_cache;

#define SL_CACHE_DEFAULT_BYTES  ((size_t)64 << 20)   /* 64 MiB */

/*
** Bytes charged for an entry beyond the size its caller gives, for the
** entry's record and its slot in the anchor table, so that many tiny
** outputs still count against the bound.
*/
#define SL_CACHE_ENTRY_OVERHEAD  64

typedef struct sl_cache_stats {
  size_t entries;
  size_t bytes;          /* charged bytes of the entries held */
  size_t max_bytes;
  uint64_t hits;
  uint64_t misses;       /* expired entries count as misses too */
  uint64_t evictions;    /* entries pushed out to make room */
  uint64_t expirations;  /* entries found expired (and dropped) */
} sl_cache_stats;


/*
** Makes a cache bounded to max_bytes (0: SL_CACHE_DEFAULT_BYTES) whose
** values live in L's registry, in one anchor table. Returns 0 or
** SL_ENOMEM. Raises only memory errors from the Lua API.
*/
int sl_cache_new (lua_State *L, size_t max_bytes, sl_cache **out);

/* Drops every entry and in-flight record (waking nobody) and frees c.
   Must be called while the Lua state c was made with is still open. */
void sl_cache_free (sl_cache *c);

/* Changes the bound; entries are evicted at once until they fit. */
void sl_cache_set_max_bytes (sl_cache *c, size_t max_bytes);

/*
** The key of a step execution: the XXH3-128 hash of identity[0..idlen)
** (the step's version and anything else that tells its executions apart)
** followed by the value at idx, the input or a user's key value: a scalar
** as a tagged form of itself, a table as its canonical JSON
** (SL_JSON_CANONICAL). So keys do not depend on the order keys were
** inserted in a table, 2 and 2.0 hash alike, and values of different
** types hash apart. Canonical JSON does not tell nil from the
** null sentinel, nor an integer key from the string of its digits.
** Returns 0, or SL_EINVAL for a value with no JSON form, with err holding
** the encoder's message, e.g. "cannot encode a function at $.f".
** Allocates nothing once the cache's scratch buffer has grown to fit.
** Leaves the stack as it found it.
*/
int sl_cache_key (sl_cache *c, lua_State *L, int idx, const char *identity,
                  size_t idlen, sl_key *out, char *err, size_t errlen);

/*
** The version of the step table at step_idx: a hash, stable across
** processes, of its kind, name and options in sorted key order -- every
** field but 'where', the line it was written at -- descending through
** plain tables and child steps (a child contributes its own version).
** A Lua function contributes its code as lua_dump(strip = 1) writes it,
** less the line numbers a stripped dump keeps (so moving a function to
** other lines of its file changes nothing), and its upvalues: numbers, strings, booleans and nil by value, Lua
** functions recursively, tables and other values by their type only (a
** captured table may be a whole module, or the globals). A C function's
** address changes from process to process, so it contributes a fixed tag
** and its number of upvalues. Editing any function a step holds, or any
** Lua function those reach through upvalues, therefore changes the
** version; loading the same code again does not.
** The version is computed once per step table and remembered in a weak-
** keyed registry table, so a step table is treated as immutable once its
** version has been asked for. Returns 0, or SL_EINVAL when the value is
** not a table or nests deeper than SL_JSON_MAXDEPTH. Raises only memory
** errors from the Lua API; calls no metamethods.
*/
int sl_cache_version(lua_State *L, int step_idx, sl_key *out,
                     char *err, size_t errlen);


/*
** Looks key up at time now_ms. On a hit moves the entry to the front of
** the recency list, pushes its value and returns 1; a table value is
** pushed as a deep copy (sl_state_copy), so the caller may change it
** freely. On a miss pushes nothing and returns 0; an entry whose expiry
** is <= now_ms is a miss, and is dropped. Allocates nothing for values
** other than tables.
*/
int sl_cache_get (sl_cache *c, lua_State *L, const sl_key *key,
                  uint64_t now_ms);

/*
** Stores a deep copy of the value at idx under key, replacing any entry
** the key had, for the step named step[0..steplen) (kept for statistics
** and sl_cache_clear). size is the value's size in bytes as the caller
** measures it (the length of its JSON text); the entry is charged size +
** SL_CACHE_ENTRY_OVERHEAD. expires_ms is the absolute time it expires at,
** 0 for never. Least recently used entries are evicted until it fits.
** Returns 0 when stored, 1 when not stored because it alone is larger
** than the bound, SL_ENOMEM when memory runs out (the cache is then as it
** was, but for evictions). Raises only memory errors from the Lua API.
*/
int sl_cache_put (sl_cache *c, lua_State *L, const sl_key *key, int idx,
                  size_t size, uint64_t expires_ms,
                  const char *step, size_t steplen);

/* Drops the entries of the step named step (NUL-terminated), or every
   entry when step is NULL. Returns how many were dropped. */
size_t sl_cache_clear (sl_cache *c, const char *step);

void sl_cache_get_stats (const sl_cache *c, sl_cache_stats *out);


/*
** Single flight. An execution that misses the cache calls
** sl_cache_flight_begin with an opaque pointer naming itself (its task).
** The first for a key becomes the leader (SL_FLIGHT_LEADER) and computes
** the output; each later one is recorded as a follower
** (SL_FLIGHT_FOLLOWER) and should wait. When the leader is done, whether it
** succeeded or not, it calls sl_cache_flight_end, which forgets the key
** and calls wake(waiter, ud) for each follower in the order they came; a
** woken follower looks in the cache again and, on a miss, begins a flight
** of its own. The key is forgotten before any wake runs, so a wake
** callback may call these functions. A follower that stops waiting
** (cancelled) must leave with sl_cache_flight_leave, so it is never woken
** after it is gone.
*/
#define SL_FLIGHT_FOLLOWER  0
#define SL_FLIGHT_LEADER    1

typedef void (*sl_cache_wake) (void *waiter, void *ud);

/* Returns SL_FLIGHT_LEADER, SL_FLIGHT_FOLLOWER or SL_ENOMEM (the caller
   then computes without single flight). */
int sl_cache_flight_begin (sl_cache *c, const sl_key *key, void *waiter);

/* Removes waiter from the followers of key; returns 1 if it was one. */
int sl_cache_flight_leave (sl_cache *c, const sl_key *key, void *waiter);

/* Ends the flight of key, waking its followers; returns how many were
   woken (0 as well when no flight was in progress). wake may be NULL. */
int sl_cache_flight_end (sl_cache *c, const sl_key *key, sl_cache_wake wake,
                         void *ud);

/* Number of followers of key's flight, or -1 when none is in progress. */
int sl_cache_flight_followers (const sl_cache *c, const sl_key *key);

#endif
