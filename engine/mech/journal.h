/*
** Step journal records (journal.c): a step execution's checkpoint in the
** binary form both store backends append to a run's journal, one batch of
** records per row. A record is a marker, its number of strings, the strings
** (each a 4-byte big-endian length, then the bytes and a NUL; 0xffffffff
** for none), then attempts, cached, t0 and t1 as 8-byte big-endian
** integers. Records of the first form (13 strings, no marker) still read.
*/
#ifndef SL_JOURNAL_H
#define SL_JOURNAL_H

#include "store.h"
#include "value.h"

/* Length of a value's reference (a content hash) where a backend stores
   the value apart. */
#define SL_JOURNAL_REFLEN 16

/* Appends c's record to b; the output and changes written are output and
   changes (which may differ from c's: NULL when a backend keeps the value
   apart), with their references (SL_JOURNAL_REFLEN bytes, or NULL).
   Returns 0, or -1 when memory runs out (b is left as it was). */
int sl_journal_append (sl_buf *b, const sl_store_checkpoint *c, const char *output,
                       const unsigned char *output_ref, const char *changes,
                       const unsigned char *changes_ref);

/* Decodes the record at *p (end: where the row's data ends) into c, whose
   strings point into the data, with the references of its output and
   changes in refs (NULL when inline); moves *p past it. Returns 0, or -1
   for a damaged record. c->run_id is not set. */
int sl_journal_decode (const unsigned char **p, const unsigned char *end,
                       sl_store_checkpoint *c, const unsigned char *refs[2]);

#endif
