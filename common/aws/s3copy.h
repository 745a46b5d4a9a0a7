/*
 * s3copy: one object copied server-side, from a bucket to another on the same service, no
 * byte passing through us.
 *
 * Up to single_max (S3 allows 5 GiB): one CopyObject, which also asks S3 for the copy's
 * SHA-256 (given to done when the service computes it: AWS and moto do), so that nothing needs
 * reading back. Larger: a multipart upload whose parts are UploadPartCopy ranges of the source,
 * parts_in_flight at once, then CompleteMultipartUpload; the digest is then unknown (S3's is a
 * digest of the parts' digests).
 * Any failure aborts the multipart upload, so nothing partial is left at the key.
 *
 *   S3Copy *cp = s3_copy_object_new(dst, "primary-bucket", key, size, ctype, 0, 0, 0, done, ctx);
 *   ... done(cp, sha256_hex_or_empty, err, ctx) once ...  s3_copy_object_free(cp);
 */
#ifndef BW_S3COPY_H
#define BW_S3COPY_H

#include "aws/s3.h"

typedef struct S3Copy S3Copy;

/* sha256: the copy's hex SHA-256 as the service computed it, or "" when it gave none. */
typedef void (*S3CopyDoneCb)(S3Copy *cp, const char *sha256, const Err *err, void *data);

#define S3_COPY_SINGLE_MAX (5ull << 30)

/* size: the source object's (the parts are ranges of it). single_max 0: S3_COPY_SINGLE_MAX;
 * part_size 0: 8 MiB (at least 5 MiB, larger when the object would need more than 10,000
 * parts); parts_in_flight 0: 4. */
S3Copy *s3_copy_object_new(S3Client *dst, const char *src_bucket, const char *key, uint64_t size,
                           const char *content_type, uint64_t single_max, size_t part_size,
                           int parts_in_flight, S3CopyDoneCb done, void *data);
/* Safe at any time; before done, the copy is abandoned (its multipart upload aborted once the
 * requests in flight answered) and done is not called. */
void s3_copy_object_free(S3Copy *cp);

#endif
