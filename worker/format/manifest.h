/*
 * manifest: the small JSON object stored next to each backup object
 * ({key}.manifest.json, proto/README.md): the header's fields plus the key, the
 * per-table counts, the stored object's SHA-256 and sizes. One writer (the
 * backup job), one reader (verify, restore of a reindexed backup, backupctl
 * reindex, list --s3 and download), and one reader of the flat {"table":count}
 * objects that the manifest, the document's trailer and backup_metadata.row_counts
 * all hold.
 */
#ifndef BW_MANIFEST_H
#define BW_MANIFEST_H

#include "format/bfile.h"
#include "io/codec.h"
#include "base/err.h"

#include <stdint.h>

#define MANIFEST_MAX_BYTES (1u << 20)

typedef struct {
    int version;
    char backup_id[160], user_id[48], type[16], base_backup_id[160];
    char snapshot[4096], created_at[40], finished_at[40];
    char key[300], sha256[80];
    uint64_t size, raw_size;
    CodecList codecs;
    char rows[8192], deleted[8192]; /* the count objects, as written */
    /* encrypted objects: the newest wrapping of the data key ("" for cleartext) */
    char key_id[CRYPT_ID_MAX + 1], wrapped_key[CRYPT_WRAPPED_MAX + 1];
    char origin_key_id[CRYPT_ID_MAX + 1]; /* the key of the object header's own wrapping */
} Manifest;

/* key_id and wrapped_key (the newest wrapping) and origin_key_id (the header's): NULL for an
 * object in cleartext. The wrapping is the manifest's last two fields, so that
 * manifest_rewrap() can replace them. */
void manifest_write(Buf *out, const BfileHeader *h, const char *key, const char *rows,
                    const char *deleted, const char *sha256, uint64_t size, uint64_t raw_size,
                    const char *finished_at, const char *key_id, const char *wrapped_key,
                    const char *origin_key_id);
/* The manifest json with its wrapping replaced (backupctl rekey). -1 when it has none. */
int manifest_rewrap(const char *json, size_t len, const char *key_id, const char *wrapped_key,
                    Buf *out);
/* -1 with err naming what is missing or malformed. */
int manifest_parse(const char *json, size_t len, Manifest *m, Err *err);

/* Walk a flat {"name":count,...} object (spaces allowed, as jsonb prints it): *p starts at the
 * '{' (or after the previous entry). 1: an entry in table and count; 0: the end; -1: malformed. */
int manifest_counts_next(const char **p, const char *end, char *table, size_t tablesz,
                         uint64_t *count);
/* The count of table in such an object; -1 when absent or malformed. */
int manifest_count_of(const char *obj, const char *table, uint64_t *count);
/* The sum of the counts; -1 when malformed. */
int manifest_counts_sum(const char *obj, uint64_t *sum);

#endif
