/*
 * keys: which key-encryption keys a process holds and which one wraps the
 * data keys of new objects, from the environment:
 *
 *   BACKUP_ENCRYPTION_KEYS       the keyring, "ID:BASE64" entries separated by commas (secret)
 *   BACKUP_ENCRYPTION_KEYS_FILE  the same, one entry per line (a mounted Kubernetes secret)
 *   BACKUP_ENCRYPTION_KEY_ID     the key of new backups (default: the keyring's last entry)
 *   BACKUP_ENCRYPTION            auto (encrypt whenever a key is set) or required
 *   BACKUP_KMS_KEY_ID            an AWS KMS key (id, ARN or alias) as the key-encryption key
 *   AWS_KMS_ENDPOINT             KMS endpoint (tests, KMS-compatible services)
 *
 * Key ids are a keyring entry's id, or "kms:" and the KMS key id. With a KMS
 * key set, new backups use it (unless BACKUP_ENCRYPTION_KEY_ID names a keyring
 * entry), and keyring keys still open older backups.
 * Every error is found here, at start: a short or malformed key, an unknown
 * current id, "required" without a key. Nothing here ever prints a key.
 */
#ifndef BW_KEYS_H
#define BW_KEYS_H

#include "base/buf.h"
#include "config/config.h"
#include "io/crypt.h"
#include "keys/keyring.h"
#include "aws/kms.h"
#include "aws/s3.h"

#include <stdio.h>

typedef struct Keys Keys;

/* Never NULL; each bad variable is one line in errors, counted in *nerr. */
Keys *keys_load(ConfigGetenv get, void *data, Buf *errors, int *nerr);
void keys_free(Keys *k);
void keys_print_help(FILE *out);
/* New objects are encrypted (a key is set). */
int keys_enabled(const Keys *k);
/* BACKUP_ENCRYPTION=required. */
int keys_required(const Keys *k);
/* The key id of new objects; "" when not enabled. */
const char *keys_current(const Keys *k);
/* 1 when key_id can be opened here. */
int keys_has(const Keys *k, const char *key_id);
/* One line for logs and `backupctl config`: where the keys come from, their ids, never a key. */
void keys_describe(const Keys *k, Buf *out);

/* A fresh data key for an object, wrapped under key_id (NULL: the current key). */
int keys_new_dek(const Keys *k, const char *key_id, const char *user_id, const char *backup_id,
                 unsigned char dek[CRYPT_KEY_LEN], Buf *wrapped, Err *err);
/* The data key of an object from a wrapping. -1 with err: the key is not here (naming it and
 * where keys come from), or the wrapping does not open. */
int keys_unwrap(const Keys *k, const char *key_id, const char *wrapped, const char *user_id,
                const char *backup_id, unsigned char dek[CRYPT_KEY_LEN], Err *err);
/* A data key wrapped again under key_id (NULL: the current key). */
int keys_rewrap(const Keys *k, const char *from_id, const char *wrapped, const char *to_id,
                const char *user_id, const char *backup_id, Buf *out, Err *err);
/* 1 when key_id names a KMS key ("kms:..."): its operations are asynchronous (below). */
int keys_is_kms(const char *key_id);
/* The KMS client for these keys (credentials and region as S3's), or NULL without KMS. */
KmsClient *keys_kms_client(const Keys *k, uv_loop_t *loop, HttpClient *http, const S3Options *s3);
/* KMS at start: a data key generated and decrypted again, so that a key that cannot be used
 * stops the worker (and fails backupctl check) before any job. 0 without KMS. */
int keys_probe(const Keys *k, const S3Options *s3, Err *err);

/* The same as above for any key: keyring keys answer before the call returns, KMS keys when
 * KMS answers (kms may be NULL without KMS). dek, key_id and wrapped are valid during the
 * call only. */
typedef void (*KeysDoneCb)(const unsigned char *dek, const char *key_id, const char *wrapped,
                           const Err *err, void *data);
void keys_new_dek_async(const Keys *k, KmsClient *kms, const char *user_id, const char *backup_id,
                        KeysDoneCb cb, void *data);
void keys_unwrap_async(const Keys *k, KmsClient *kms, const char *key_id, const char *wrapped,
                       const char *user_id, const char *backup_id, KeysDoneCb cb, void *data);
/* The data key wrapped under to_id (NULL: the current key). */
void keys_wrap_async(const Keys *k, KmsClient *kms, const char *to_id,
                     const unsigned char dek[CRYPT_KEY_LEN], const char *user_id,
                     const char *backup_id, KeysDoneCb cb, void *data);

/* CryptUnwrapFn over keys_unwrap (data: the Keys). */
int keys_unwrap_fn(const char *key_id, const char *wrapped, const char *user_id,
                   const char *backup_id, unsigned char dek[CRYPT_KEY_LEN], void *data, Err *err);

#endif
