/*
 * segfile: one stored change segment, read whole, made its JSON lines again; no I/O.
 *
 * Every reader of segments (the wal incremental, the restore to a point in time, verify) takes
 * a segment's bytes only after their SHA-256 equals the one recorded in change_segments (the
 * database is the trust anchor: an object planted or damaged in the store is refused by name),
 * then decodes them through the codecs recorded with it: gzip or zstd, and an encrypted one
 * opened with the data key wrapped in its own header. Under BACKUP_ENCRYPTION=required a
 * cleartext segment is refused, as a cleartext backup is.
 */
#ifndef BW_SEGFILE_H
#define BW_SEGFILE_H

#include "base/buf.h"
#include "base/err.h"
#include "keys/keys.h"

#include <stddef.h>

/* What change_segments records of a segment. */
typedef struct {
    const char *id, *key, *user_id;
    const char *checksum; /* hex SHA-256 of the stored bytes */
    const char *codecs;   /* comma-separated, as array_to_string(codecs, ',') */
} SegFileRecord;

/* The SHA-256 differs: err says "Change segment checksum verification failed: KEY ...". */
#define SEGFILE_CHECKSUM (-2)

/* The stored bytes data[0..len) of rec, decoded into out (appended). 0; SEGFILE_CHECKSUM; or -1
 * with err (ERR_PERMANENT: codecs unreadable, a cleartext segment under required encryption, a
 * decoding or authentication failure). */
int segfile_decode(const char *data, size_t len, const SegFileRecord *rec, const Keys *keys,
                   Buf *out, Err *err);

#endif
