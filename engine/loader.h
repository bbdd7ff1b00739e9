/*
** Pipeline files: loading one, and checking the tree it returns against a
** policy table before anything runs.
*/
#ifndef SL_LOADER_H
#define SL_LOADER_H

#include <lua.h>

/* Compiles and runs the file at path, and pushes a table mapping each
   pipeline it returns to its name. Raises "file:line: what" on a missing
   file, a syntax error, an error in the chunk, or a chunk that returns
   anything but a pipeline or a table of named pipelines. */
void sl_load_file(lua_State *L, const char *path);

/* Checks every step reachable from the step at si: each has a kind the
   policy table at kinds knows. Raises naming the step and where it was
   defined. */
void sl_load_check(lua_State *L, int si, int kinds);

/* Pushes the pipeline called name (NULL: the only one) from the table of
   pipelines at idx. Raises listing the names when there is no such one or
   no name was given and there are several. */
void sl_load_select(lua_State *L, int idx, const char *name);

#endif
