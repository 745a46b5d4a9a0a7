/*
 * txspill: large transactions on disk (protocol 2 streaming); no routing.
 *
 * The walsender streams a transaction that outgrows its memory before it commits, in blocks
 * interleaved with other transactions. Each one's messages are kept as they come in its own
 * spill file (a length, then the message), until its Stream Commit (read back, in order, to be
 * routed in the commit's place) or its Stream Abort (dropped). A subtransaction's abort cuts the
 * file back to where that subtransaction's first message began: savepoints nest, so everything
 * after it was its or its children's.
 *
 * Spill files are made by txspill_file(): under $TMPDIR (else /tmp), unlinked at once, so they
 * go when closed or when the process dies.
 */
#ifndef BW_TXSPILL_H
#define BW_TXSPILL_H

#include "base/err.h"

#include <stdint.h>
#include <stdio.h>

/* A new spill file, or NULL (errno says why). */
FILE *txspill_file(void);

typedef struct TxSpill TxSpill;   /* the streamed transactions not yet ended */
typedef struct TxStream TxStream; /* one of them */

TxSpill *txspill_new(void);
void txspill_free(TxSpill *s);
/* Every transaction dropped (the stream starts over). */
void txspill_reset(TxSpill *s);
/* Bytes on disk of the transactions kept, and how many there are. */
uint64_t txspill_bytes(const TxSpill *s);
/* Keep message msg of a streamed block of transaction xid: 0, or -1 with err. */
int txspill_keep(TxSpill *s, uint32_t xid, const char *msg, size_t len, Err *err);
/* Stream Abort of subxid within xid (subxid == xid: the whole transaction): the bytes dropped
 * (0 when nothing of it was kept), or -1 with err. */
int64_t txspill_abort(TxSpill *s, uint32_t xid, uint32_t subxid, Err *err);
/* Stream Commit: transaction xid taken out of the store to be read back (an empty one when
 * nothing of it came). */
TxStream *txspill_take(TxSpill *s, uint32_t xid);

/* The next message into *msg (malloc'd, the caller frees it) and *len: 1, 0 at the end, -1 with
 * err. */
int txstream_next(TxStream *t, char **msg, uint32_t *len, Err *err);
uint64_t txstream_bytes(const TxStream *t);
void txstream_free(TxStream *t);

#endif
