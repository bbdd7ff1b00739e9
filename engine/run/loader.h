/*
** Pipeline files: loading one, and checking the tree it returns against a
** policy table before anything runs.
*/
#ifndef SL_LOADER_H
#define SL_LOADER_H

#include <lua.h>

/* Compiles and runs the file at path, and pushes a table mapping each
   pipeline it returns to its name. Raises "cannot open 'path': why" for a
   file that cannot be read, and "file:line: what" on a syntax error, an
   error in the chunk, or a chunk that returns anything but a pipeline or a
   table of named pipelines. */
void sl_load_file(lua_State *L, const char *path);

/* Checks every step reachable from the step at si: each has a kind the
   policy table at kinds knows. Raises naming the step and where it was
   defined. */
void sl_load_check(lua_State *L, int si, int kinds);

/* Pushes the pipeline called name (NULL: the only one) from the table of
   pipelines at idx, which file (NULL if unknown) returned. Raises listing
   the names when there is no such one, or when no name was given and there
   are several: how says how to choose one ("--pipeline NAME"). */
void sl_load_select(lua_State *L, int idx, const char *name, const char *file,
                    const char *how);

/* The Lua function load_pipeline(path[, name]): the pipeline of a file, as
   an import loads it, or nil and the message. */
int sl_load_pipeline_lua(lua_State *L);

#endif
