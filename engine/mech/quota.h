/*
** Quota: a run's budget on three dimensions (cost, tokens, requests), the
** usage it has spent and the usage its running steps have reserved.
**
** Money is held in exact integer units, never summed as floats: a cost is
** an int64 count of nano-units (1e-9 of the currency unit), converted from
** Lua numbers and from text by exact decimal rounding, so 0.1 + 0.2 is
** exactly 0.3 here.
**
** How the engine uses it. Before a step runs, its estimate is reserved
** (sl_quota_reserve); a reservation that does not fit is refused and the
** step fails with kind "quota" without running. While it runs, ctx:charge
** records usage at once (sl_quota_charge), drawing on what the step still
** holds of its reservation. When it ends, sl_quota_reconcile releases what
** it still holds and records the usage it reported.
**
** The invariant, exactly. Let excess be the usage recorded beyond the
** reservation it was made under (actual above what the step held, charges
** above what it held); the quota keeps it. Then in every limited dimension,
** at every instant,
**
**     spent + reserved <= limit + excess.
**
** A reservation is granted only when spent + reserved + estimate <= limit,
** and reported usage is always recorded in full, never absorbed. So while
** every step stays within its estimate, excess is 0 and
** spent + reserved <= limit holds outright. Spent can pass the limit only
** through excess; when it does, the call that recorded it returns
** SL_QUOTA_OVERRUN and the run fails. After that every reservation with a
** limited dimension over its limit is refused.
**
** Nothing here allocates or raises, except the Lua helpers at the end,
** which raise only memory errors from the Lua API.
*/
#ifndef SL_QUOTA_H
#define SL_QUOTA_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "sluice.h"

/* Return codes beyond the public SL_E* ones, which are used for the rest
   (SL_EINVAL: a bad argument). */
#define SL_QUOTA_EXCEEDED  (-20)  /* a reservation does not fit the budget */
#define SL_QUOTA_OVERRUN   (-21)  /* recorded usage took spent past a limit */

/* The dimensions, and their bits in masks of dimensions. */
enum { SL_DIM_COST, SL_DIM_TOKENS, SL_DIM_REQUESTS, SL_NDIMS };
#define SL_USAGE_COST      (1u << SL_DIM_COST)
#define SL_USAGE_TOKENS    (1u << SL_DIM_TOKENS)
#define SL_USAGE_REQUESTS  (1u << SL_DIM_REQUESTS)
#define SL_USAGE_ALL       (SL_USAGE_COST | SL_USAGE_TOKENS | SL_USAGE_REQUESTS)

/* Nano-units in one unit of currency. */
#define SL_NANOS_PER_UNIT  INT64_C(1000000000)

/*
** An amount of usage. Every field is >= 0 in every sl_usage the functions
** here accept or produce; a sum past INT64_MAX is held at INT64_MAX (for
** cost, 9.2 billion currency units).
*/
typedef struct sl_usage {
  int64_t cost_nanos;
  int64_t tokens;
  int64_t requests;
} sl_usage;

typedef struct sl_quota {
  sl_usage limit;       /* meaningful only in the dimensions of 'limited' */
  unsigned limited;     /* mask of SL_USAGE_* bits: dimensions with a limit */
  sl_usage spent;       /* all usage recorded */
  sl_usage reserved;    /* held by running steps */
  sl_usage excess;      /* usage recorded beyond the reservation it had */
} sl_quota;


/* Usage arithmetic: *a += *b (saturating), and the value of dimension d. */
void    sl_usage_add (sl_usage *a, const sl_usage *b);
static inline int64_t sl_usage_get (const sl_usage *u, int d) {
  return d == SL_DIM_COST ? u->cost_nanos : d == SL_DIM_TOKENS ? u->tokens : u->requests;
}

/* The name of dimension d: "cost", "tokens" or "requests". */
const char *sl_usage_dimname (int d);

/*
** Writes nanos as an exact decimal amount: at least two decimals, more
** only when needed (400000000 -> "0.40", 123456789 -> "0.123456789",
** 3000000000 -> "3.00"). Returns the length, as snprintf does.
*/
int sl_cost_format (int64_t nanos, char *buf, size_t size);

/*
** Makes q a quota with nothing spent or reserved, limited in the dimensions
** of the mask 'limited' to the values in *limit (NULL when limited is 0).
** Returns 0, or SL_EINVAL for a negative limit (q is then unlimited).
*/
int sl_quota_init (sl_quota *q, const sl_usage *limit, unsigned limited);

/*
** Reserves *estimate for a step about to run. Returns 0, or
** SL_QUOTA_EXCEEDED, changing nothing, when spent + reserved + estimate
** would pass the limit of any limited dimension; err then reads
** "cost budget exceeded: spent 0.40 + reserved 0.05 + estimate 0.10 >
** limit 0.50" for the first such dimension. SL_EINVAL for a
** negative estimate, or one that would take reserved past INT64_MAX
** (reservations are released exactly, so they never saturate).
** err (errlen bytes) may be NULL.
*/
int sl_quota_reserve (sl_quota *q, const sl_usage *estimate,
                      char *err, size_t errlen);

/*
** ctx:charge. Records *usage as spent at once. It draws first on *held,
** what the step still holds of its reservation (the estimate it reserved,
** less what earlier charges drew): that part moves from reserved to spent
** and *held decreases by it; the rest is excess. held may be NULL for
** usage made under no reservation. The caller keeps the step's running
** total of charges itself, for its history.
** Returns 0, or SL_QUOTA_OVERRUN when spent now passes a limit (the usage
** is recorded all the same), with err reading "tokens budget overrun:
** spent 900 + charge 200 = 1100 > limit 1000". SL_EINVAL, changing
** nothing, for negative usage or a *held that q does not hold.
*/
int sl_quota_charge (sl_quota *q, sl_usage *held, const sl_usage *usage,
                     char *err, size_t errlen);

/*
** A step ended. Releases *held, what it still holds of its reservation
** (its estimate when it made no charges), and records *actual, the usage
** it reported, as spent. The actual is recorded in full even when it is
** more than was held. Returns 0, or SL_QUOTA_OVERRUN when spent now passes
** a limit, with err reading "cost budget overrun: spent 0.45 + actual 0.10
** = 0.55 > limit 0.50 (reserved for it 0.05)". SL_EINVAL, changing
** nothing, for negative usage or a *held that q does not hold.
*/
int sl_quota_reconcile (sl_quota *q, const sl_usage *held,
                        const sl_usage *actual, char *err, size_t errlen);

/*
** Checks the invariant above (and that no field is negative). Returns 0,
** or -1 with err naming the dimension and the figures. For tests and
** debug assertions.
*/
int sl_quota_check (const sl_quota *q, char *err, size_t errlen);

/*
** Parses the CLI's --budget text, "cost=0.5,tokens=20000,requests=100":
** one or more dimension=value pairs, comma-separated, spaces allowed
** around each part. Values are read as exact decimals (cost to nanos,
** rounded half up past nine decimals; tokens and requests must be whole).
** On success fills *limit, sets *limited to the mask of the dimensions
** given and returns 0. Otherwise returns SL_EINVAL with err naming
** the problem: "unknown budget dimension 'cots' (did you mean 'cost'?)",
** "budget for cost must not be negative, got '-1'", ...
*/
int sl_budget_parse (const char *text, sl_usage *limit, unsigned *limited,
                     char *err, size_t errlen);

/*
** Reads the usage table at idx ({cost=, tokens=, requests=}) into *out;
** absent fields are 0. allow_fields_mask says which fields are accepted.
** cost is a number >= 0, converted to nanos from its shortest decimal text
** ("%.17g" at most), rounded half up past nine decimals, so 0.1 becomes
** exactly 100000000; tokens and requests are whole numbers >= 0 (2.0 is
** taken as 2). Returns the mask of the fields present, or -1 with err
** reading e.g. "unknown usage field 'cots' (did you mean 'cost'?)",
** "usage field 'tokens' must be a whole number, got 1.5",
** "usage field 'cost' must not be negative, got -0.1".
** Leaves the stack as it found it.
*/
int sl_usage_from_lua (lua_State *L, int idx, sl_usage *out,
                       unsigned allow_fields_mask, char *err, size_t errlen);

/* Pushes {cost = <float>, tokens = <integer>, requests = <integer>}. */
void sl_usage_push (lua_State *L, const sl_usage *u);

#endif
