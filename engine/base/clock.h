/*
** Clocks and timers. Every timer the engine starts measures from now:
** libuv measures a timer from the loop's cached time, which is as old as
** the loop's last turn, so after a step (or a file's load) computed for a
** while a timer started from it would fire early by that much.
*/
#ifndef SL_CLOCK_H
#define SL_CLOCK_H

#include <stdint.h>
#include <uv.h>

/* The virtual clock, for tests of pipelines (sluice.testing). While it is
   on, a timer of one loop started through sl_timer_start does not wait:
   when that loop has nothing left to do but wait for such timers, the
   clock jumps to the earliest one and fires it. What the clock has
   jumped in all is the skew, added to sl_now (and to the wall clock of
   durable waits, sl_clock_skew_ms), so every wait measures the same as it
   would have and time never runs backwards (clock.c). */
extern uint64_t sl_clock_skew_ns;
extern uv_loop_t *sl_clock_virtual_loop;

/* Starts h as a virtual timer of ms > 0 (sl_timer_start does when h's
   loop is the virtual one). Returns uv_timer_start's code. */
int sl_clock_timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms);

/* Makes loop's clock virtual (on) or real again. Returns 0, or UV_EBUSY
   when another loop's clock is virtual. Turning it off starts the timers
   still waiting for their remaining virtual time, in real time. */
int sl_clock_set_virtual(uv_loop_t *loop, int on);

/* Moves loop's virtual clock on by ns, as if that time had passed: its
   timers due by then fire at its next turn. Returns 0, or UV_EINVAL when
   loop's clock is not virtual. */
int sl_clock_advance(uv_loop_t *loop, uint64_t ns);

/* Monotonic time in nanoseconds. */
static inline uint64_t sl_now(void) { return uv_hrtime() + sl_clock_skew_ns; }

/* What the virtual clock has jumped so far, in milliseconds: a wall clock
   adds it, so a durable wait's due time moves as the waits do. */
static inline int64_t sl_clock_skew_ms(void) { return (int64_t)(sl_clock_skew_ns / 1000000u); }

/* Starts h to fire cb once, no sooner than ms milliseconds from now
   (then every repeat ms when repeat is not 0). The loop's clock counts
   whole milliseconds, dropping the fraction already gone of the current
   one, so a timer is given one more: a wait is never shorter than asked.
   Returns uv_timer_start's code. */
static inline int sl_timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms,
                                 uint64_t repeat) {
  if (sl_clock_virtual_loop != NULL && h->loop == sl_clock_virtual_loop && repeat == 0)
    return sl_clock_timer_start(h, cb, ms);
  uv_update_time(h->loop);
  return uv_timer_start(h, cb, ms > 0 ? ms + 1 : 0, repeat);
}

#endif
