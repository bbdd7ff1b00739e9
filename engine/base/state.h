/*
** Run state: the table ctx.state shows a step, and deep copies of values.
**
** A step sees the run's state through a view: a table of its own that is
** filled lazily from a base (the view of the nearest enclosing step that
** touched the state, or the run's own table). Reading a key copies it
** into the view (a table value is copied deeply, so changing it cannot
** reach the base); writing a key writes the view only. A step that reads
** one key of a large state therefore pays for that key, not for the whole
** state. `pairs` and `#` fill the view whole first; `next` and `rawget`
** see only what the step has read or written so far.
**
** When the step succeeds, its changes (the keys whose value differs from
** the base's, and the keys it removed) go up to its parent, or are kept
** for the construct that spawned it to merge, or recorded with a cache
** entry or a checkpoint. A failed attempt's view is dropped.
*/
#ifndef SL_STATE_H
#define SL_STATE_H

#include <lua.h>

/* Pushes a deep copy of the value at idx: tables are copied with their
   shared subtables and cycles kept and their metatables kept (not
   copied); a state view is copied as the plain table of all it shows;
   other values are pushed as they are. */
void sl_state_copy(lua_State *L, int idx);

/* Pushes a copy of the table at idx one level deep: its keys and values,
   the same values. */
void sl_state_shallow_copy(lua_State *L, int idx);

/* Pushes a new, empty view over base, the value at index base: a view, a
   plain table, or nil for an empty state. With track, the view records
   which keys it read before writing them (sl_state_push_reads). */
void sl_state_view(lua_State *L, int base, int track);

/* Pushes, for a view that tracks its reads, the value its base holds now
   under each key it read before writing it (the sentinel of
   sl_state_push_deleted for a key that is absent); nil when it read none
   or does not track them. A cache entry keeps them: it is valid only for a
   state that holds the same values (sl_state_reads_match). */
void sl_state_push_reads(lua_State *L, int idx);

/* Does the state at base (a view, a plain table, or nil) hold the values
   the reads table at reads (as sl_state_push_reads makes it, or nil)
   names? */
int sl_state_reads_match(lua_State *L, int base, int reads);

/* Pushes a view whose whole state is a deep copy of the table at idx: what
   ctx.state = t makes. Its changes replace its base whole. */
void sl_state_replacing_view(lua_State *L, int idx);

/* Is the value at idx a view? */
int sl_state_is_view(lua_State *L, int idx);

/* Pushes the changes the view at idx made to its base, or nil when it
   made none: a table mapping each changed key to its new value, removed
   keys to the sl_state_push_deleted sentinel, and, when the view replaced
   the whole state, the sentinel itself to true. */
void sl_state_push_changes(lua_State *L, int idx);

/* Applies the changes table at ci to the view or plain table at ti. */
void sl_state_apply(lua_State *L, int ti, int ci);

/* Pushes a plain table of everything the view (or plain table) at idx
   shows, one level deep. */
void sl_state_flatten(lua_State *L, int idx);

/* Pushes the sentinel that marks a removed key in a changes table. */
void sl_state_push_deleted(lua_State *L);

/* Pushes the changes table at idx in a form JSON can carry: {set = {key =
   value, ...}, del = {key, ...}, replace = true when it replaces the whole
   state}. */
void sl_state_changes_to_record(lua_State *L, int idx);

/* Pushes the changes table that the record at idx (as the function above
   makes it, decoded from JSON) describes. */
void sl_state_changes_from_record(lua_State *L, int idx);

/* Are the values at a and b equal, tables compared by content (raw, without
   metamethods)? NaN equals NaN. */
int sl_state_equal(lua_State *L, int a, int b);

#endif
