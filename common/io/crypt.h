/*
 * crypt: the "aes-256-gcm" codec, chunked authenticated encryption of a
 * stream (proto/README.md, "Encrypted objects"), after age's STREAM design.
 *
 * An object is an envelope header, then chunks. The header names the user,
 * the backup, the codec list and the key that wraps the object's data key,
 * and carries that wrapped key, a random HKDF salt and a random nonce
 * prefix. Every chunk is CRYPT_CHUNK plaintext bytes (the last one 0 to
 * CRYPT_CHUNK) sealed with AES-256-GCM under
 *
 *   payload key = HKDF-SHA256(data key, salt, "pedidolist-backup aes-256-gcm v1")
 *   nonce       = prefix (7 bytes) || chunk number (32-bit big-endian) || last (0 or 1)
 *   AAD         = the header bytes, exactly as stored
 *
 * so a chunk moved, dropped, repeated or taken from another object, a cut at a
 * chunk boundary, or a header edited fails its tag. The decoder hands on a
 * chunk's plaintext only after its tag checked.
 *
 * Key wrapping (the data key under a key-encryption key of the keyring) is
 * crypt_wrap(): AES-256-GCM too, bound to the key id, user and backup.
 */
#ifndef BW_CRYPT_H
#define BW_CRYPT_H

#include "base/buf.h"
#include "base/err.h"
#include "io/filter.h"

#include <stdint.h>

#define CRYPT_CODEC       "aes-256-gcm"
#define CRYPT_KEY_LEN     32
#define CRYPT_TAG_LEN     16
#define CRYPT_MAGIC       "PLBKENC1"
#define CRYPT_CHUNK       (256u * 1024) /* plaintext bytes per chunk (measured: tools/bench/crypt.c) */
#define CRYPT_ID_MAX      256           /* key ids: a keyring id, or "kms:" and a KMS key id */
#define CRYPT_WRAPPED_MAX 2048 /* base64 of a wrapped data key (KMS blobs are the largest) */

/* Unwraps the header's wrapped data key (decoder without a data key). 0, or -1 with err. */
typedef int (*CryptUnwrapFn)(const char *key_id, const char *wrapped, const char *user_id,
                             const char *backup_id, unsigned char dek[CRYPT_KEY_LEN], void *data,
                             Err *err);

typedef struct {
    /* the header's names: written by the encoder, required to match by the decoder
     * (NULL there: not checked) */
    const char *user_id, *backup_id;
    const char *codecs_json; /* ["gzip","aes-256-gcm"] */
    /* encoder: the wrapping recorded in the header */
    const char *key_id, *wrapped_key;
    unsigned char dek[CRYPT_KEY_LEN];
    int have_dek; /* decoder: 0 unwraps the header's key through unwrap */
    CryptUnwrapFn unwrap;
    void *unwrap_data;
    size_t chunk_size; /* encoder: 0 is CRYPT_CHUNK */
} CryptParams;

/* Filters (strings copied, the data key kept in memory that is wiped on free). */
Filter *crypt_encrypt_new(const char *name, const CryptParams *p);
Filter *crypt_decrypt_new(const char *name, const CryptParams *p);

typedef struct {
    char user_id[64], backup_id[160], codecs[128];
    char key_id[CRYPT_ID_MAX + 1], wrapped_key[CRYPT_WRAPPED_MAX + 1];
    uint32_t chunk_size;
    size_t header_len; /* bytes of the envelope: magic, length, JSON */
} CryptHeader;

/* The envelope at the start of buf: 1 with h filled, 0 when more bytes are needed, -1 with err
 * (not an encrypted object, or a malformed header). */
int crypt_header_parse(const void *buf, size_t len, CryptHeader *h, Err *err);

/* Random bytes from OpenSSL's CSPRNG; -1 with err when it has none. */
int crypt_random(void *out, size_t len, Err *err);

/* The data key wrapped under kek: base64 of nonce (12) || ciphertext (32) || tag (16), the
 * AAD binding it to key_id, user_id and backup_id. */
void crypt_wrap(const unsigned char kek[CRYPT_KEY_LEN], const char *key_id, const char *user_id,
                const char *backup_id, const unsigned char dek[CRYPT_KEY_LEN], Buf *out);
/* -1 with err when wrapped is malformed or does not open under kek for these names. */
int crypt_unwrap(const unsigned char kek[CRYPT_KEY_LEN], const char *key_id, const char *user_id,
                 const char *backup_id, const char *wrapped, unsigned char dek[CRYPT_KEY_LEN],
                 Err *err);

/* Base64 (RFC 4648, padded). decode: the byte count, or -1 when s is not strict base64 or
 * decodes to more than outmax bytes. */
void crypt_b64_encode(const void *in, size_t len, Buf *out);
int crypt_b64_decode(const char *s, size_t len, unsigned char *out, size_t outmax);

/* Overwrite secrets before their memory is given back. */
void crypt_wipe(void *p, size_t len);

#endif
