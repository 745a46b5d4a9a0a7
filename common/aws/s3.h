/*
 * s3: S3 requests on the loop: signed, retried, with S3's errors named.
 *
 * Built on http (libcurl multi) and sigv4. Every attempt is signed afresh
 * (a new x-amz-date), so a retry never carries a stale signature. Retried:
 * transport errors and timeouts, HTTP 500/502/503/504 and 429, and the codes
 * SlowDown, RequestTimeout and InternalError, with capped exponential backoff
 * and full jitter; RequestTimeTooSkewed corrects the clock offset from the
 * server's Date header and signs again. Other 4xx fail at once with S3's own
 * code and message. Keys are signed as given and encoded once in the URL.
 *
 * Credentials come from awscreds (static keys, or STS web identity kept
 * fresh). Streaming multipart upload is in s3upload.h; listing, batch delete
 * and multipart-upload cleanup in s3list.h.
 */
#ifndef BW_S3_H
#define BW_S3_H

#include "base/err.h"
#include "http/http.h"

#include <stdint.h>
#include <uv.h>

typedef struct S3Client S3Client;

typedef struct {
    const char *endpoint; /* http(s)://host[:port], or NULL for AWS */
    const char *region;
    const char *bucket;
    const char *access_key;
    const char *secret_key;    /* secret: never logged */
    const char *session_token; /* may be NULL */
    /* web identity (replaces the keys above when both are set): see awscreds.h */
    const char *web_identity_token_file;
    const char *role_arn;
    const char *role_session_name; /* may be NULL */
    const char *sts_endpoint;      /* may be NULL: the regional AWS endpoint */
    int path_style;
    const char *sse;            /* NULL, "AES256" or "aws:kms" */
    const char *sse_kms_key_id; /* with aws:kms, optional */
    const char *ca_file;        /* CA bundle for TLS (verification is always on) */
    int max_attempts;           /* default 5 */
    unsigned backoff_base_ms;   /* default 100 */
    unsigned backoff_max_ms;    /* default 5000 */
    long timeout_ms;            /* cap on one attempt, however fast it moves; default 0: none */
    long connect_timeout_ms;    /* connect (TCP and TLS) of one attempt; default 10000 */
    long stall_secs;            /* an attempt moving no byte this long fails; default 30 */
} S3Options;

/* The outcome of one operation. */
typedef struct {
    long status;              /* last HTTP status (0: none) */
    char code[64];            /* S3 error code, "" on success */
    int attempts;             /* how many requests were sent */
    int64_t size;             /* Content-Length (HEAD, GET) or -1 */
    char etag[80];            /* ETag of the object, quotes removed */
    char checksum_sha256[48]; /* base64 SHA-256 of the request body sent (UploadPart) */
    const Buf *body;          /* GET without a write callback: the object */
} S3Result;

typedef void (*S3DoneCb)(const S3Result *res, const Err *err, void *data);

/* One operation in flight (opaque); only streamed reads hand it out. */
typedef struct S3Op S3Op;
/* Streamed object bytes, in order, each byte once. Return 0 when the bytes were
 * taken, or S3_PAUSE when they were not: the flow stops until s3_op_resume()
 * and the same bytes come again; S3_STOP ends the read at once (the done
 * callback then reports ERR_CODE_CANCELLED, without retrying). */
typedef int (*S3WriteCb)(S3Op *op, const char *buf, size_t len, void *data);
#define S3_PAUSE 1
#define S3_STOP  2

/* Strings in opts are copied. */
S3Client *s3_client_new(uv_loop_t *loop, HttpClient *http, const S3Options *opts);
/* Operations in flight complete with ERR_CODE_CANCELLED; freed asynchronously. */
void s3_client_free(S3Client *c);
/* Attempts sent again after a failed one, since the client was made. */
uint64_t s3_client_retries(const S3Client *c);
/* Shutting down: every request in flight or waiting to retry fails now (ERR_CODE_CANCELLED),
 * and any request made after this fails on its first attempt without being sent. */
void s3_client_halt(S3Client *c);

/* PUT a small object from memory (copied). */
void s3_put_object(S3Client *c, const char *key, const void *body, size_t len,
                   const char *content_type, S3DoneCb cb, void *data);
/* GET an object into memory (res->body), up to max_bytes. */
void s3_get_object(S3Client *c, const char *key, size_t max_bytes, S3DoneCb cb, void *data);
/*
 * GET an object streamed to write. A read that breaks is resumed from the
 * current offset with a Range request, pinned to the first answer's ETag with
 * If-Match, so the bytes delivered are one version of the object, each once.
 */
S3Op *s3_get_stream(S3Client *c, const char *key, S3WriteCb write, S3DoneCb cb, void *data);
/* Resume a streamed GET paused by its write callback. */
void s3_op_resume(S3Op *op);

/* HEAD an object: size and ETag; a missing key is err with code "NoSuchKey". */
void s3_head_object(S3Client *c, const char *key, S3DoneCb cb, void *data);
/* DELETE one object (S3 answers 204 whether or not it existed). */
void s3_delete_object(S3Client *c, const char *key, S3DoneCb cb, void *data);
/* HEAD the bucket: proves the endpoint, the credentials and the bucket. */
void s3_head_bucket(S3Client *c, S3DoneCb cb, void *data);

/*
 * Any signed request: query is a raw query string or NULL; body (may be NULL)
 * is taken over and freed by the client; the response body is in res->body
 * (up to max_body bytes; 0: 1 MiB). A POST answered 200 with an <Error> body
 * counts as that error.
 */
void s3_request(S3Client *c, const char *method, const char *key, const char *query, char *body,
                size_t len, const char *content_type, size_t max_body, S3DoneCb cb, void *data);

/* The same with the body's SHA-256 (hex) computed by the caller, off the loop: it is the SigV4
 * payload hash and x-amz-checksum-sha256 both, so a part is hashed once. */
void s3_request_hashed(S3Client *c, const char *method, const char *key, const char *query,
                       char *body, size_t len, const char *sha256_hex, S3DoneCb cb, void *data);
/* PutObject of a body (taken over) whose SHA-256 the caller computed: the payload hash and
 * x-amz-checksum-sha256, so S3 refuses a body damaged on the way. */
void s3_put_hashed(S3Client *c, const char *key, char *body, size_t len, const char *content_type,
                   const char *sha256_hex, S3DoneCb cb, void *data);
uv_loop_t *s3_client_loop(const S3Client *c);
const char *s3_client_bucket(const S3Client *c);
const char *s3_client_endpoint(const S3Client *c); /* NULL: AWS */

/*
 * Server-side copy into c's bucket of src_key in src_bucket (same service, c's credentials
 * must read it): CopyObject (query and range NULL; with the replica's SSE, and the copy's
 * SHA-256 asked for: <ChecksumSHA256> in res->body when the service computes it), or
 * UploadPartCopy (query "partNumber=N&uploadId=U", range "bytes=first-last"). A 200 whose
 * body is an <Error> counts as that error.
 */
void s3_copy(S3Client *c, const char *key, const char *query, const char *src_bucket,
             const char *src_key, const char *range, S3DoneCb cb, void *data);

/* POST ?delete with a prepared <Delete> document (taken), with its Content-MD5;
 * see s3list.h for the batching caller. */
void s3_delete_objects_xml(S3Client *c, char *xml, size_t len, S3DoneCb cb, void *data);

/* Retry policy, exposed for tests: is this answer worth another attempt? */
int s3_retryable(long status, const char *code);

#endif
