/*
 * sigv4: AWS Signature Version 4 (HMAC-SHA256), header and query (presigned) forms.
 *
 * Pure computation, no I/O. Two modes: generic (the AWS test suite: dot
 * segments and repeated slashes normalised) and S3 (the path is signed as
 * given, no normalisation). In both the path passed in is encoded exactly once
 * for the canonical request: S3 callers pass the raw object key path and send
 * sigv4_encode_path() of it; other services pass their already-encoded path,
 * which is how AWS's "double encoding" arises. The signing key is cached per
 * day, region and service.
 */
#ifndef BW_SIGV4_H
#define BW_SIGV4_H

#include "base/buf.h"

#include <stddef.h>
#include <time.h>

typedef struct {
    const char *name;
    const char *value;
} SigV4Header;

typedef struct {
    const char *access_key;
    const char *secret_key;    /* secret */
    const char *session_token; /* may be NULL */
} SigV4Credentials;

typedef struct {
    const char *method;
    const char *path;  /* see above; "/" when empty */
    const char *query; /* raw query string without '?', may be NULL */
    const SigV4Header *headers;
    size_t nheaders;
    const char *payload_hash; /* hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
    const char *region;
    const char *service;
    time_t now;
    int s3;                 /* S3 mode: no path normalisation */
    int add_content_sha256; /* sign an x-amz-content-sha256 header (S3 requires it) */
    int omit_session_token; /* token added after signing (some STS flows) */
    long expires;           /* query form: X-Amz-Expires seconds */
} SigV4Request;

typedef struct {
    Buf canonical_request;
    Buf string_to_sign;
    char signature[65];
    char amz_date[17]; /* YYYYMMDDTHHMMSSZ */
    Buf signed_headers;
    Buf authorization; /* header form: the Authorization value */
    Buf query;         /* query form: the full canonical query, signature appended */
} SigV4Result;

/* Sign with an Authorization header. The caller sends x-amz-date (result),
 * the token and x-amz-content-sha256 headers when set. */
void sigv4_sign_header(const SigV4Request *req, const SigV4Credentials *cred, SigV4Result *out);
/* Sign as a presigned URL: out->query is the query string to send. */
void sigv4_sign_query(const SigV4Request *req, const SigV4Credentials *cred, SigV4Result *out);
void sigv4_result_free(SigV4Result *out);

/* Percent-encode a path: every byte but unreserved characters and '/'. */
void sigv4_encode_path(Buf *out, const char *path);
/* Percent-encode a query key or value (also '/'). */
void sigv4_encode(Buf *out, const char *s, size_t len);
/* Hex SHA-256 of data (65 bytes with the NUL). */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
