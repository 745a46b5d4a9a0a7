/*
 * pgsnap: PostgreSQL's pg_snapshot text ("xmin:xmax:xip,...") and which transactions it sees;
 * no I/O. Logical decoding names a transaction by its 32-bit xid: pgsnap_widen gives the xid8
 * it stands for next to a snapshot taken while it was recent.
 */
#ifndef BW_PGSNAP_H
#define BW_PGSNAP_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t xmin, xmax;
    uint64_t *xip; /* in progress when it was taken, ascending */
    size_t nxip;
} PgSnap;

/* 0, or -1 with err (ERR_CODE_INVALID) when text is no pg_snapshot. */
int pgsnap_parse(const char *text, PgSnap *s, Err *err);
void pgsnap_free(PgSnap *s);
/* The xid8 of 32-bit xid: the one within 2^31 of s's xmax. */
uint64_t pgsnap_widen(const PgSnap *s, uint32_t xid);
/* 1 when a transaction that committed is seen by s (as pg_visible_in_snapshot). */
int pgsnap_visible(const PgSnap *s, uint64_t xid);

/* 1 when any xid of a comma-separated list of 32-bit xids (change_segments.xids) satisfies fn,
 * or when the list cannot be read (the caller then reads what it stands for). */
int pgsnap_xids_any(const char *xids, int (*fn)(uint32_t xid, const void *data), const void *data);

#endif
