/*
** The names under which the engine keeps shared metatables in the Lua
** registry. Every layer may need to tell a step, an error or a task handle
** apart, so the names live here, below all of them.
*/
#ifndef SL_NAMES_H
#define SL_NAMES_H

#define SL_STEP_MT    "sluice.Step"    /* steps made by the DSL */
#define SL_ERROR_MT   "sluice.error"   /* error tables */
#define SL_HANDLE_MT  "sluice.task"    /* handles of spawned tasks */
#define SL_CTX_MT     "sluice.ctx"     /* the ctx a step receives */
#define SL_RUN_MT     "sluice.run"     /* run handles */
#define SL_ENGINE_MT  "sluice.engine"  /* engine boxes */

/* The registry field holding the default engine of a state. */
#define SL_DEFAULT_ENGINE_KEY "sluice.default"

#endif
