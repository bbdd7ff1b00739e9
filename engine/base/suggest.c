/*
** Suggestions.
*/
#include <string.h>

#include "suggest.h"

size_t sl_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t prev[256], cur[256];
  if (la > 255 || lb > 255) return (size_t)-1 / 2;
  for (size_t j = 0; j <= lb; j++) prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t best = prev[j] + 1;
      if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
      size_t diag = prev[j - 1] + (a[i - 1] != b[j - 1]);
      cur[j] = diag < best ? diag : best;
    }
    memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
  }
  return prev[lb];
}

const char *sl_suggest(const char *name, const char *const *candidates, size_t n) {
  size_t len = strlen(name);
  size_t limit = len / 3 > 2 ? len / 3 : 2;
  const char *best = NULL;
  size_t bestd = 0;
  for (size_t i = 0; i < n; i++) {
    size_t d = sl_distance(name, candidates[i]);
    if (d > limit) continue;
    if (best == NULL || d < bestd || (d == bestd && strcmp(candidates[i], best) < 0)) {
      best = candidates[i];
      bestd = d;
    }
  }
  return best;
}
