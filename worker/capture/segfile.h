/*
 * segfile: one stored change segment, read whole, made its JSON lines again; no I/O.
 *
 * Every reader of segments (the wal incremental, the restore to a point in time, verify) takes
 * a segment's bytes only after their SHA-256 equals the one recorded in change_segments (the
 * database is the trust anchor: an object planted or damaged in the store is refused by name),
 * then decodes them through the codecs recorded with it: gzip or zstd, and an encrypted one
 * opened with its data key. The data key's wrapping is the record's (change_segments.key_id,
 * wrapped_key: what backupctl rekey rewrites, proto/sql/023) or the one in the object's own
 * header: for a segment recorded before 023, or when this process lacks the record's key and
 * has the header's. Unwrapping it may take a KMS round trip, so it is
 * the caller's step between segfile_check and segfile_decode (jobrt_segment does all three).
 * Under BACKUP_ENCRYPTION=required a cleartext segment is refused, as a cleartext backup is.
 */
#ifndef BW_SEGFILE_H
#define BW_SEGFILE_H

#include "base/buf.h"
#include "base/err.h"
#include "io/crypt.h"
#include "keys/keys.h"

#include <stddef.h>

/* What change_segments records of a segment. */
typedef struct {
    const char *id, *key, *user_id;
    const char *checksum; /* hex SHA-256 of the stored bytes */
    const char *codecs;   /* comma-separated, as array_to_string(codecs, ',') */
    const char *key_id;   /* the data key's wrapping; NULL or "" when not recorded (pre-023) */
    const char *wrapped_key;
} SegFileRecord;

/* The wrapping that opens an encrypted segment. */
typedef struct {
    int encrypted;
    char key_id[CRYPT_ID_MAX + 1], wrapped[CRYPT_WRAPPED_MAX + 1];
} SegFileKey;

/* The SHA-256 differs: err says "Change segment checksum verification failed: KEY ...". */
#define SEGFILE_CHECKSUM (-2)

/* The stored bytes data[0..len) of rec checked: SHA-256, codecs, cleartext under required; k
 * says whether a data key is needed and which wrapping opens it. 0; SEGFILE_CHECKSUM; or -1
 * with err (ERR_PERMANENT). */
int segfile_check(const char *data, size_t len, const SegFileRecord *rec, const Keys *keys,
                  SegFileKey *k, Err *err);

/* The checked bytes decoded into out (appended), dek the data key (NULL for a cleartext one).
 * 0, or -1 with err (a decoding or authentication failure). */
int segfile_decode(const char *data, size_t len, const SegFileRecord *rec, const unsigned char *dek,
                   Buf *out, Err *err);

#endif
