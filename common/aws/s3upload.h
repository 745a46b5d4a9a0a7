/*
 * s3upload: a streaming multipart upload of unknown length, in bounded memory.
 *
 * The producer writes bytes; they fill part buffers of part_size; full parts
 * are sent with UploadPart, up to parts_in_flight at once. When every buffer
 * is taken, s3_upload_write() says so and the producer waits for on_writable:
 * memory stays under (parts_in_flight + 1) x part_size. The part size grows
 * as the upload gets long (doubling every 1000 parts), so the 10,000-part
 * limit is reached only past 1 TiB for an 8 MiB start. Nothing is sent until
 * the first part is full; an object that ends before is one PutObject (one
 * request instead of create, part and complete). Any failure aborts the
 * multipart upload, so no parts are left behind. The SHA-256 of the whole
 * object is computed on the way and given in the result.
 *
 *   S3Upload *u = s3_upload_new(s3, key, "application/gzip", 0, 0, on_writable, on_done, ctx);
 *   while (have data && s3_upload_write(u, p, n) == 1) ...;   // 0: wait for on_writable
 *   s3_upload_finish(u);                                     // on_done once, always
 *   ...  s3_upload_free(u);                                  // the caller's, until then
 */
#ifndef BW_S3UPLOAD_H
#define BW_S3UPLOAD_H

#include "aws/s3.h"

typedef struct S3Upload S3Upload;

typedef void (*S3UploadWritableCb)(S3Upload *u, void *data);
/* Completion: sha256 is the hex digest of all bytes written (NULL on error). */
typedef void (*S3UploadDoneCb)(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                               const Err *err, void *data);

#define S3_UPLOAD_MIN_PART (5u * 1024 * 1024)

/* part_size 0: 8 MiB (at least 5 MiB); parts_in_flight 0: 4. */
S3Upload *s3_upload_new(S3Client *s3, const char *key, const char *content_type, size_t part_size,
                        int parts_in_flight, S3UploadWritableCb on_writable, S3UploadDoneCb on_done,
                        void *data);
/* 1: accepted, write more; 0: accepted, wait for on_writable; -1: the upload failed. */
int s3_upload_write(S3Upload *u, const void *buf, size_t len);
/* No more data: send the last part and complete. */
void s3_upload_finish(S3Upload *u);
/* Give up: abort the multipart upload; on_done reports ERR_CODE_CANCELLED. */
void s3_upload_abort(S3Upload *u);
/* The caller is done with u (in on_done or any time after; before it, the upload is aborted
 * and on_done is not called). Memory goes once the last request in flight has answered. */
void s3_upload_free(S3Upload *u);
/* Do not hash the whole object (on_done's sha256 is then NULL): for a caller that hashes the
 * stream itself, off the loop. Call before the first write. */
void s3_upload_no_digest(S3Upload *u);
/* Bytes held now: the part being filled, queued parts and parts in flight. */
size_t s3_upload_buffered(const S3Upload *u);

#endif
