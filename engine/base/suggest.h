/*
** "Did you mean" suggestions, the one place they are worked out: the C
** core's option checks and the CLI use it directly, and the DSL through the
** core module (sluice.core.suggest).
*/
#ifndef SL_SUGGEST_H
#define SL_SUGGEST_H

#include <stddef.h>

/* The edit distance (Levenshtein) between a and b; a large number for
   strings longer than 255 bytes. */
size_t sl_distance(const char *a, const char *b);

/* Of the n candidates, the one closest to name and close enough to be a
   likely typo (within max(2, len / 3) edits; ties go to the first in byte
   order), or NULL. */
const char *sl_suggest(const char *name, const char *const *candidates, size_t n);

#endif
