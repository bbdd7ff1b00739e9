/*
** The memory cap: a Lua allocator that counts what a state holds and
** refuses to grow past a limit when the layer above says so. That layer
** (the scheduler) installs a hook that is asked at each growth past the
** limit: it refuses while a step runs, making the step fail with kind
** "limit" whatever it catches, and never refuses the engine's own work
** between steps, so the engine can always record the failure and go on.
*/
#ifndef SL_MEMORY_H
#define SL_MEMORY_H

#include <stddef.h>
#include <lua.h>

/* Asked, with its ud, when an allocation would take the state past its
   limit: returns 1 to refuse it (the allocation then fails), 0 to let it
   through. Runs inside the allocator: it must not allocate or raise. */
typedef int (*sl_memory_refuse_fn)(void *ud, size_t limit);

/* Puts the counting allocator on L's state (wrapping the allocator it has)
   and sets its limit in bytes (0: none). Raises in L when memory for the
   allocator's record is lacking. */
void sl_memory_limit(lua_State *L, size_t limit);

/* Sets the hook asked before an allocation past the limit is refused (NULL:
   every such allocation is refused). The allocator must be installed. */
void sl_memory_set_refuse(lua_State *L, sl_memory_refuse_fn fn, void *ud);

/* The smallest cap that can be meant: a Lua state with sluice loaded
   holds about a megabyte before any step runs. */
#define SL_MEMORY_MIN_LIMIT ((size_t)4 << 20)

/*
** Reads a memory limit: digits with an optional unit, B, KB, MB or GB
** (binary: 1 MB is 1024 * 1024 bytes; KiB, MiB and GiB are accepted too),
** or, with no unit, in default_unit bytes (1 for bytes, 1 << 20 for MB).
** Refuses a value below SL_MEMORY_MIN_LIMIT, which no one can mean, with a
** message that says the unit. Returns 0, or -1 with the message in err.
*/
int sl_memory_parse(const char *text, size_t default_unit, size_t *bytes,
                    char *err, size_t errlen);

/* Checks a limit in bytes as sl_memory_parse does. Returns 0, or -1 with
   the message in err. */
int sl_memory_check(size_t bytes, char *err, size_t errlen);

/* The limit set on L's state in bytes (0: none). */
size_t sl_memory_get_limit(lua_State *L);

/* Bytes the state holds now, as the allocator counts them (0 when the
   allocator is not installed). */
size_t sl_memory_used(lua_State *L);

/* Takes the allocator off L's state again, if it is the last one put on. */
void sl_memory_remove(lua_State *L);

#endif
