/*
** Loading and hot reload. A load builds a new snapshot of the policy table
** aside: the file's sl.kind registrations go into it, the whole tree is
** checked against it, and only then are it and the file's pipelines swapped
** in, with one pointer each. A load that fails changes nothing. A run holds
** the snapshot it started with to its end; snapshots no run holds are
** collected with the rest of Lua's garbage.
*/
#ifndef SL_RELOAD_H
#define SL_RELOAD_H

#include "host.h"

/* Called after a reload the watcher made: status 0 with the pipelines
   swapped in, or a negative code with the message of what failed. */
typedef void (*sl_reload_cb)(sl_host *h, int status, const char *msg, void *ud);

/* Loads the file at path as described above and pushes its pipelines by
   name. Raises "file:line: what" and leaves e as it was on any error. */
void sl_reload_load(lua_State *L, sl_host *h, const char *path);

/* Loads again the file last loaded. Raises when none was. */
void sl_reload_again(lua_State *L, sl_host *h);

/* Pushes the box of the engine whose load is in progress, or nil. */
void sl_reload_push_loading(lua_State *L);

/* Adds path to the files the load in progress depends on (imports). */
void sl_reload_note_file(lua_State *L, const char *path);

/* Pushes the list of files the last load read. */
void sl_reload_push_files(lua_State *L, sl_host *h);

/* Watches the files of the last load (libuv fs events on their
   directories, debounced by debounce_ms) and reloads when one changes,
   then calls cb. Replaces any earlier watch. Returns 0 or a negative
   libuv code. */
int sl_reload_watch(sl_host *h, int debounce_ms, sl_reload_cb cb, void *ud);

/* Makes path the file a watch watches and reloads, although no load of it
   has succeeded yet (sluice dev on a file with an error). */
void sl_reload_expect(lua_State *L, sl_host *h, const char *path);

/* Stops watching (also done at engine teardown). */
void sl_reload_unwatch(sl_host *h);

#endif
