/*
** Plans: what is the same for every execution of a step, worked out once,
** when the step is defined (the DSL prepares every step it builds) or,
** for a step made some other way, at its first execution. A plan holds the
** step's name and kind as C strings, its options parsed (retries, backoff,
** timeout, limits, cache, background, its estimate in exact units), its
** cache version once computed, and the handler last found for its kind.
** It lives in the step table under a private key, so the hot path finds
** it with one lookup and no string.
*/
#ifndef SL_PLAN_H
#define SL_PLAN_H

#include <lua.h>

#include "cache.h"
#include "core.h"
#include "quota.h"

/* The options the engine acts on, as bits of a plan's opts. The DSL does
   not know them: a step has an option when its table holds the field. */
enum {
  SL_OPT_RETRIES = 1, SL_OPT_BACKOFF = 2, SL_OPT_TIMEOUT = 4,
  SL_OPT_LIMITS = 8, SL_OPT_VALIDATE = 16, SL_OPT_FALLBACK = 32,
  SL_OPT_CACHE = 64, SL_OPT_BACKGROUND = 128, SL_OPT_ESTIMATE = 256
};

/* The most fallbacks that may run inside one another (the DSL checks the
   same bound, read from the core module). */
#define SL_MAX_FALLBACK_DEPTH 8

/* What a background option asks for. */
enum { SL_BG_NONE, SL_BG_BESIDE, SL_BG_REQUIRED };

/* How a handler is called. */
enum {
  SL_CALL_CTX,       /* handler(step, input, ctx): any kind but these */
  SL_CALL_STEP,      /* the C `step` kind: calls run(input[, ctx]) */
  SL_CALL_RUNNING    /* a C kind that finds its execution itself (pipeline) */
};

struct sl_plan {
  uint64_t serial;           /* unique in the process: names it in histories */
  const char *name, *kind, *where;    /* in the plan's own memory */
  size_t nlen, klen;
  unsigned opts;             /* SL_OPT_* of the options the step has */
  int max_attempts;          /* retries + 1 */
  double base, cap, jitter;  /* backoff, in seconds */
  uint64_t timeout_ns;       /* 0: none */
  lua_Integer instr_limit;   /* 0: none */
  uint64_t ttl_ms;           /* how long a cached output lives (0: ever) */
  sl_usage estimate;         /* reserved before it runs */
  unsigned char cache;       /* cache = true or a table */
  unsigned char key_fn;      /* cache = {key = fn} */
  unsigned char background;  /* SL_BG_* */
  unsigned char run_ctx;     /* its run function may read a ctx */
  unsigned char call;        /* SL_CALL_* for the handler last resolved */
  unsigned char version_known;
  sl_key version;            /* its cache version, once computed */
  int hist_hint;             /* a root: how many records its last run made */
  char strings[];
};

/* Pushes the plan (a userdata) of the step at si and returns it, preparing
   the step first when it was not yet. Raises, naming the step and where it
   was defined, on an option the engine cannot use, and on a value that is
   not a step. */
sl_plan *sl_plan_push(lua_State *L, int si);

/* Is the value at idx a step made by the DSL? */
int sl_plan_is_step(lua_State *L, int idx);

/* Records that the handler at fi (a C kind) is called as call says
   (SL_CALL_*) rather than with (step, input, ctx). */
void sl_plan_mark_call(lua_State *L, int fi, int call);

/* Pushes the handler the policy table at ki has for the kind of the plan
   (a userdata at pi), remembering it in the plan for the next execution
   under the same table, and sets the plan's call. Raises naming the step
   when the table has no such kind. */
void sl_plan_push_handler(lua_State *L, int pi, int ki);

/* Pushes the run function of a `step` step whose plan is at pi (nil when
   it has none). */
void sl_plan_push_run(lua_State *L, int pi);

/* The step's cache version (worked out once; the step is at si). Returns
   0, or -1 with the message in err. */
int sl_plan_version(lua_State *L, sl_plan *p, int si, sl_key *out,
                    char *err, size_t errlen);

#endif
