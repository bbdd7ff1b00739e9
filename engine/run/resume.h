/*
** Resume (resume.c): continuing a stored run.
*/
#ifndef SL_RESUME_H
#define SL_RESUME_H

#include "host.h"

/* Resumes run id from the store: loads its file again, refuses a changed
   pipeline unless force, checks and records the answer at ii (0: none) for
   a paused run, and starts it again with its id and the options it started
   with; completed steps are restored, not run. Pushes the run. Raises with
   a clear message (a cancelled run is refused, naming why). */
sl_run *sl_resume(lua_State *L, sl_host *h, const char *id, int ii, int force);

#endif
