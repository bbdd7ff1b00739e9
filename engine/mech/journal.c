/*
** Step journal records: encoding and decoding (journal.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"

#define NSTR_V1 13  /* path parent name kind key status usage error state
                       output output_ref changes changes_ref */
#define NSTR 16     /* and logs, input, epoch (decimal) */
/* A record in the later form starts with this in place of its first
   string's length, then its number of strings: a reader skips the strings
   it does not know, and reads a record of the first form as before. */
#define RECORD_V2 0xfffffffeu

static uint32_t get_u32 (const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static unsigned char *put_u32 (unsigned char *q, uint32_t v) {
  q[0] = (unsigned char)(v >> 24); q[1] = (unsigned char)(v >> 16);
  q[2] = (unsigned char)(v >> 8); q[3] = (unsigned char)v;
  return q + 4;
}

int sl_journal_append (sl_buf *b, const sl_store_checkpoint *c, const char *output,
                       const unsigned char *output_ref, const char *changes,
                       const unsigned char *changes_ref) {
  char epoch[24];
  snprintf(epoch, sizeof epoch, "%lld", (long long)c->epoch);
  const char *f[NSTR] = {
    c->path, c->parent, c->name, c->kind, c->key, c->status, c->usage, c->error,
    c->state, output, (const char *)output_ref, changes, (const char *)changes_ref, c->logs,
    c->input, epoch
  };
  size_t lens[NSTR], total = 8 + 4 * 8;
  for (int i = 0; i < NSTR; i++) {
    lens[i] = f[i] == NULL ? 0 : (i == 10 || i == 12) ? SL_JOURNAL_REFLEN : strlen(f[i]);
    total += 4 + (f[i] ? lens[i] + 1 : 0);
  }
  if (sl_buf_reserve(b, total) != 0) return -1;
  unsigned char *q = (unsigned char *)b->data + b->len;
  q = put_u32(q, RECORD_V2);
  q = put_u32(q, NSTR);
  for (int i = 0; i < NSTR; i++) {
    q = put_u32(q, f[i] == NULL ? 0xffffffffu : (uint32_t)lens[i]);
    if (f[i] == NULL) continue;
    memcpy(q, f[i], lens[i]);
    q[lens[i]] = '\0';
    q += lens[i] + 1;
  }
  int64_t n[4] = { c->attempts, c->cached != 0, c->t0, c->t1 };
  for (int i = 0; i < 4; i++)
    for (int k = 7; k >= 0; k--) *q++ = (unsigned char)((uint64_t)n[i] >> (8 * k));
  b->len += total;
  b->data[b->len] = '\0';
  return 0;
}

int sl_journal_decode (const unsigned char **p, const unsigned char *end,
                       sl_store_checkpoint *c, const unsigned char *refs[2]) {
  const char *f[NSTR] = { NULL };
  const unsigned char *q = *p;
  uint32_t nstr = NSTR_V1;
  if (end - q >= 8 && get_u32(q) == RECORD_V2) {
    nstr = get_u32(q + 4);
    q += 8;
  }
  for (uint32_t i = 0; i < nstr; i++) {
    if (end - q < 4) return -1;
    uint32_t len = get_u32(q);
    q += 4;
    if (len == 0xffffffffu) continue;
    if ((size_t)(end - q) < (size_t)len + 1) return -1;
    if (i < NSTR) f[i] = (const char *)q;
    q += len + 1;
  }
  if (end - q < 4 * 8) return -1;
  int64_t n[4];
  for (int i = 0; i < 4; i++, q += 8)
    n[i] = (int64_t)((uint64_t)get_u32(q) << 32 | get_u32(q + 4));
  memset(c, 0, sizeof *c);
  c->path = f[0]; c->parent = f[1]; c->name = f[2]; c->kind = f[3];
  c->key = f[4]; c->status = f[5]; c->usage = f[6]; c->error = f[7];
  c->state = f[8]; c->output = f[9]; c->changes = f[11]; c->logs = f[13];
  c->input = f[14];
  c->epoch = f[15] ? strtoll(f[15], NULL, 10) : 0;
  refs[0] = (const unsigned char *)f[10];
  refs[1] = (const unsigned char *)f[12];
  c->attempts = (int)n[0];
  c->cached = (int)n[1];
  c->t0 = n[2];
  c->t1 = n[3];
  *p = q;
  return 0;
}
