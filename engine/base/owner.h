/*
** Owners: which process executes a run. An owner id is "host:pid:start",
** start being when the process started (so a pid the system gave to
** another process since is told apart). The host is the machine's name,
** or SLUICE_HOST when set (containers that share a store, tests that play
** another machine).
*/
#ifndef SL_OWNER_H
#define SL_OWNER_H

#include <stddef.h>
#include <stdint.h>

/* Writes this process's owner id into out (size bytes). */
void sl_owner_self(char *out, size_t size);

/* Is the owner of a run still executing it, as far as can be told from
   here at now_ms? No when its lease ran out before now_ms, or when it is
   on this host and its process is gone; yes otherwise. */
int sl_owner_alive(const char *owner, int64_t lease_ms, int64_t now_ms);

/* Unix time in milliseconds. */
int64_t sl_owner_now_ms(void);

#endif
