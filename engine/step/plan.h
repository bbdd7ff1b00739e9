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

/* The options that give a step attempts (attempt.c), and those after
   which a later attempt starts again from the step and its input. */
#define SL_OPT_ATTEMPTS (SL_OPT_RETRIES | SL_OPT_BACKOFF | SL_OPT_TIMEOUT | \
                         SL_OPT_LIMITS | SL_OPT_VALIDATE | SL_OPT_FALLBACK)
#define SL_OPT_AGAIN (SL_OPT_RETRIES | SL_OPT_FALLBACK)

/* The most fallbacks that may run inside one another (the DSL checks the
   same bound, read from the core module). */
#define SL_MAX_FALLBACK_DEPTH 8

/* Where a breakpoint pauses a run at a step: before it runs (its input
   may be replaced on resume), after it completed (its output may be). */
enum { SL_PAUSE_BEFORE = 1, SL_PAUSE_AFTER = 2 };

/* What a background option asks for. */
enum { SL_BG_NONE, SL_BG_BESIDE, SL_BG_REQUIRED };

/* How a handler is called. */
enum {
  SL_CALL_CTX,       /* handler(step, input, ctx): any kind but these */
  SL_CALL_STEP,      /* the C `step` kind: calls run(input[, ctx]) */
  SL_CALL_EXEC       /* a C kind given (step, input, its execution) (pipeline) */
};

struct sl_plan {
  sl_hist_label *label;      /* its name and kind, shared with histories */
  const char *name, *kind;   /* the label's */
  const char *where;         /* in the plan's own memory, or NULL */
  size_t nlen, klen;
  const void *kinds;         /* the policy table its handler was found in */
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
  unsigned char pause;       /* SL_PAUSE_* bits: a breakpoint (pause =) */
  unsigned char has_run;     /* the step has a run field */
  unsigned char run_ctx;     /* its run function may read a ctx */
  unsigned char call;        /* SL_CALL_* of the handler resolved */
  unsigned char version_known;
  sl_key version;            /* its cache version, once computed */
  int hist_hint;             /* a root: how many records its last run made */
  int64_t pruned_ms;         /* a root: when its retention last pruned */
  char strings[];
};

/* Pushes the plan (a userdata) of the step at si and returns it, preparing
   the step first when it was not yet. Raises, naming the step and where it
   was defined, on an option the engine cannot use, and on a value that is
   not a step. */
sl_plan *sl_plan_push(lua_State *L, int si);

/* Registers the plans' metatable in L's state (once per state). */
void sl_plan_open(lua_State *L);

/* Is the value at idx a step made by the DSL? */
int sl_plan_is_step(lua_State *L, int idx);

/* Records that the handler at fi (a C kind) is called as call says
   (SL_CALL_*) rather than with (step, input, ctx). */
void sl_plan_mark_call(lua_State *L, int fi, int call);

/* Resolves the handler of the plan p (at pi)'s kind in the policy table
   kinds (registry ref kinds_ref), setting its call: a lookup only when the
   table differs from the one it was last resolved in. Raises naming the
   step when the kind is not registered. */
void sl_plan_resolve_in(lua_State *L, int pi, const void *kinds, int kinds_ref);
static inline void sl_plan_resolve(lua_State *L, sl_plan *p, int pi, const void *kinds,
                                   int kinds_ref) {
  if (p->kinds != kinds) sl_plan_resolve_in(L, pi, kinds, kinds_ref);
}

/* Pushes the handler the plan at pi last resolved. */
void sl_plan_push_handler(lua_State *L, int pi);

/* Pushes the run function of a `step` step whose plan is at pi (nil when
   it has none). */
void sl_plan_push_run(lua_State *L, int pi);

/* The step's cache version (worked out once; the step is at si). Returns
   0, or -1 with the message in err. */
int sl_plan_version(lua_State *L, sl_plan *p, int si, sl_key *out,
                    char *err, size_t errlen);

#endif
