/*
** The handle lifecycle. An engine owns libuv handles in many components
** (timers, processes, watches, sockets); it may be freed only once the
** last of them has closed. Each component opens and closes its handles
** through one counter, which calls back when the count returns to zero.
*/
#ifndef SL_HANDLES_H
#define SL_HANDLES_H

typedef struct sl_handles {
  int open;                          /* handles initialized and not yet closed */
  void (*all_closed)(void *ud);      /* called when open drops to 0, or NULL */
  void *ud;
} sl_handles;

/* A handle was initialized. */
static inline void sl_handles_opened(sl_handles *h) {
  h->open++;
}

/* A handle's close callback ran; the last one calls all_closed (which may
   free the memory h lives in: touch nothing after this call). */
static inline void sl_handles_closed(sl_handles *h) {
  if (--h->open == 0 && h->all_closed != NULL) h->all_closed(h->ud);
}

#endif
