/*
** `sluice ui`: the runs of a store as a web page (SPEC.md, Observability).
** The page's files are built into the command (ui_assets.c, generated from
** engine/surface/ui/); its JSON API is answered by lua/sluice/ui.lua.
*/
#ifndef SL_UI_H
#define SL_UI_H

#include <stddef.h>
#include <lua.h>

#include "engine.h"

/* Serves e's store (at the path or URL store, which the page shows) on host:port (port 0: a free one) until SIGINT or
   SIGTERM. Prints the page's URL as the first line on stdout. Returns 0,
   or -1 with the reason in err when it cannot listen. */
int sl_ui_run(lua_State *L, sl_engine *e, const char *store, const char *host, int port,
              char *err, size_t errlen);

/* One of the page's files, built into the command. */
typedef struct sl_ui_asset {
  const char *path, *type;
  const unsigned char *data;
  size_t len;
} sl_ui_asset;

extern const sl_ui_asset sl_ui_assets[];   /* ends with a NULL path */

#endif
