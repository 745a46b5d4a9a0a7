/*
 * kms: AWS KMS as the key-encryption key of data keys, on the loop.
 *
 * Three calls of the KMS JSON 1.1 API, SigV4-signed (service "kms") through
 * our HTTP client: GenerateDataKey (a new object's data key, in clear and
 * wrapped), Decrypt (a wrapped data key opened) and Encrypt (a data key
 * wrapped under another KMS key, for backupctl rekey). Every call binds the
 * key to its object with the encryption context {"user_id","backup_id"}: a
 * wrapped key moved to another backup does not decrypt. Transport errors,
 * 5xx and throttling are retried with backoff; other errors fail at once with
 * KMS's own type and message. Plaintext keys are wiped after use and never
 * logged.
 */
#ifndef BW_KMS_H
#define BW_KMS_H

#include "aws/awscreds.h"
#include "io/crypt.h"
#include "base/err.h"
#include "http/http.h"

#include <uv.h>

typedef struct KmsClient KmsClient;

typedef struct {
    const char *endpoint; /* http(s)://host[:port]; NULL: https://kms.{region}.amazonaws.com */
    const char *region;
    AwsCredsOptions creds;
    const char *ca_file;
    long timeout_ms;  /* one attempt; default 10000 */
    int max_attempts; /* default 4 */
} KmsOptions;

typedef struct {
    unsigned char dek[CRYPT_KEY_LEN];    /* GenerateDataKey, Decrypt */
    char wrapped[CRYPT_WRAPPED_MAX + 1]; /* GenerateDataKey, Encrypt: CiphertextBlob (base64) */
    char key_arn[256];                   /* the KMS key that answered */
} KmsResult;

/* Called once; res is valid only during the call. */
typedef void (*KmsDoneCb)(const KmsResult *res, const Err *err, void *data);

/* Strings copied. */
KmsClient *kms_client_new(uv_loop_t *loop, HttpClient *http, const KmsOptions *o);
/* Calls in flight end with ERR_CODE_CANCELLED. */
void kms_client_free(KmsClient *c);
void kms_generate_data_key(KmsClient *c, const char *key_id, const char *user_id,
                           const char *backup_id, KmsDoneCb cb, void *data);
void kms_decrypt(KmsClient *c, const char *wrapped, const char *user_id, const char *backup_id,
                 KmsDoneCb cb, void *data);
void kms_encrypt(KmsClient *c, const char *key_id, const unsigned char dek[CRYPT_KEY_LEN],
                 const char *user_id, const char *backup_id, KmsDoneCb cb, void *data);

#endif
