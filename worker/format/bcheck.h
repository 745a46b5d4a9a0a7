/*
 * bcheck: one stored backup object read from S3 and checked as it streams:
 * the SHA-256 of the stored bytes against the record, the codecs undone (on
 * the thread pool, storage.h), the document
 * layout (bfile), the header naming this backup and this user, and the
 * trailer's counts against the rows and deleted keys that came. Rows are
 * handed to the caller as text, in order. A damaged object is read to its
 * end, so that its digest (not a decoding error) names the cause; the
 * message then starts with "Backup checksum verification failed".
 *
 * Used by restore (rows into PostgreSQL) and verify (rows only counted).
 */
#ifndef BW_BCHECK_H
#define BW_BCHECK_H

#include "base/err.h"
#include "io/codec.h"
#include "storage/storage.h"

#include <stdint.h>

typedef struct BCheck BCheck;

typedef struct {
    const char *backup_id, *user_id, *key;
    const char *checksum;    /* hex SHA-256 of the stored bytes, from backup_metadata */
    const CodecList *codecs; /* what the stored bytes went through, undone in reverse */
    /* encrypted objects: the names the envelope must hold and the data key; NULL checks the
     * stored bytes' SHA-256 only (no item, no count: verify without the key) */
    const CryptParams *crypt;
    Storage *store; /* the store to read from; NULL: the job's (jobrt_check) */
} BCheckTarget;

/* A row (section 0) or deleted key (section 1) of table. -1 with err stops the read. */
typedef int (*BCheckItemCb)(int section, const char *table, const char *json, size_t len,
                            void *data, Err *err);
/* The object ended: every check passed (err NULL), or why not. Called once. */
typedef void (*BCheckDoneCb)(BCheck *c, const Err *err, void *data);

/* Start reading (strings copied). check_json: also check every row is well-formed JSON. */
BCheck *bcheck_start(Storage *store, const BCheckTarget *t, int check_json, BCheckItemCb item,
                     BCheckDoneCb done, void *data);
/* Hold the stream after the current piece (the consumer is full); bcheck_resume() goes on. */
void bcheck_hold(BCheck *c);
void bcheck_resume(BCheck *c);
/* Give up: done follows with ERR_CODE_CANCELLED. */
void bcheck_stop(BCheck *c);
/* Rows (section 0) or deleted keys (1) of table seen so far. */
uint64_t bcheck_count(const BCheck *c, int section, const char *table);
/* Stored bytes read so far. */
uint64_t bcheck_bytes(const BCheck *c);
/* Free after done (or from inside done). */
void bcheck_free(BCheck *c);

#endif
