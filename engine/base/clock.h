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

/* Monotonic time in nanoseconds. */
static inline uint64_t sl_now(void) { return uv_hrtime(); }

/* Starts h to fire cb once, no sooner than ms milliseconds from now
   (then every repeat ms when repeat is not 0). The loop's clock counts
   whole milliseconds, dropping the fraction already gone of the current
   one, so a timer is given one more: a wait is never shorter than asked.
   Returns uv_timer_start's code. */
static inline int sl_timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms,
                                 uint64_t repeat) {
  uv_update_time(h->loop);
  return uv_timer_start(h, cb, ms > 0 ? ms + 1 : 0, repeat);
}

#endif
