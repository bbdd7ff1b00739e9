/*
** Owner ids and whether an owner is alive.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <uv.h>

#include "owner.h"

static void host_name(char *out, size_t size) {
  const char *env = getenv("SLUICE_HOST");
  if (env != NULL && env[0] != '\0') {
    snprintf(out, size, "%s", env);
  } else if (gethostname(out, size) != 0) {
    snprintf(out, size, "localhost");
  }
  out[size - 1] = '\0';
  /* The separator may not appear in a host name. */
  for (char *p = out; *p; p++)
    if (*p == ':') *p = '_';
}

/* When process pid started, in clock ticks since boot (field 22 of
   /proc/PID/stat), or 0 when it cannot be read; *state (may be NULL) gets
   its state letter (field 3: 'Z' for a zombie), or 0. */
static unsigned long long proc_stat(long pid, char *state) {
  if (state != NULL) *state = 0;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name (field 2) may hold spaces: count from its end. */
  char *p = strrchr(buf, ')');
  if (p == NULL) return 0;
  char *save = NULL;
  int field = 3;
  for (char *tok = strtok_r(p + 1, " ", &save); tok != NULL;
       tok = strtok_r(NULL, " ", &save), field++) {
    if (field == 3 && state != NULL) *state = tok[0];
    if (field == 22) return strtoull(tok, NULL, 10);
  }
  return 0;
}

void sl_owner_self(char *out, size_t size) {
  char host[128];
  host_name(host, sizeof host);
  long pid = (long)getpid();
  snprintf(out, size, "%s:%ld:%llu", host, pid, proc_stat(pid, NULL));
}

int64_t sl_owner_now_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return 0;
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int sl_owner_alive(const char *owner, int64_t lease_ms, int64_t now_ms) {
  if (owner == NULL || owner[0] == '\0') return 0;
  if (lease_ms <= now_ms) return 0;
  char host[128];
  host_name(host, sizeof host);
  const char *colon = strchr(owner, ':');
  if (colon == NULL) return 1;
  size_t hlen = (size_t)(colon - owner);
  if (hlen != strlen(host) || memcmp(owner, host, hlen) != 0)
    return 1;   /* another machine: its lease says */
  char *end;
  long pid = strtol(colon + 1, &end, 10);
  if (*end != ':' || pid <= 0) return 1;
  unsigned long long started = strtoull(end + 1, NULL, 10);
  if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
  /* A process killed while its parent was gone stays a zombie until init
     reaps it: it has died, and runs nothing. A process of another start
     time reuses the pid. */
  char state;
  unsigned long long now_started = proc_stat(pid, &state);
  if (state == 'Z' || state == 'X') return 0;
  if (now_started != 0 && started != 0 && now_started != started) return 0;
  return 1;
}
