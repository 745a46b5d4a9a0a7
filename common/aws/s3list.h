/*
 * s3list: listing (ListObjectsV2, all pages), batch deletion (DeleteObjects,
 * 1000 keys a request), and the multipart uploads left in progress
 * (ListMultipartUploads, AbortMultipartUpload), on top of the S3 client.
 */
#ifndef BW_S3LIST_H
#define BW_S3LIST_H

#include "aws/s3.h"

typedef struct {
    const char *key;
    int64_t size;
    const char *last_modified; /* ISO 8601, as S3 sends it */
    const char *etag;          /* quotes removed */
} S3Object;

/* One page of objects, valid during the call. Return nonzero to stop listing. */
typedef int (*S3ListPageCb)(const S3Object *objs, size_t n, void *data);
/* Listing ended: count objects seen; err on failure. */
typedef void (*S3ListDoneCb)(uint64_t count, const Err *err, void *data);
/* Deletion ended: deleted and failed key counts; err names the first failure. */
typedef void (*S3DeleteDoneCb)(size_t deleted, size_t failed, const Err *err, void *data);

/* List every key under prefix, page_size keys per request (0: 1000). */
void s3_list(S3Client *s3, const char *prefix, int page_size, S3ListPageCb page, S3ListDoneCb done,
             void *data);
/* Delete keys (copied) in batches of up to 1000, reading per-key errors.
 * With n == 0, done is called at once. */
void s3_delete_keys(S3Client *s3, const char *const *keys, size_t n, S3DeleteDoneCb done,
                    void *data);

typedef struct {
    const char *key;
    const char *upload_id;
    const char *initiated; /* ISO 8601, as S3 sends it */
} S3MultipartUpload;

/* One page of multipart uploads in progress, valid during the call; nonzero stops. */
typedef int (*S3UploadsPageCb)(const S3MultipartUpload *ups, size_t n, void *data);
/* List the multipart uploads in progress under prefix (ListMultipartUploads, all pages):
 * what a crashed writer left behind, still billed for its parts. */
void s3_list_uploads(S3Client *s3, const char *prefix, S3UploadsPageCb page, S3ListDoneCb done,
                     void *data);
/* Abort one multipart upload (AbortMultipartUpload): its parts are freed. */
void s3_abort_upload(S3Client *s3, const char *key, const char *upload_id, S3DoneCb done,
                     void *data);
/* Seconds since the epoch of an ISO 8601 time as S3 writes it, or -1. */
long long s3_parse_time(const char *iso);

/* XML helpers, exposed for tests: decode entities of text in place; escape text. */
void s3_xml_decode(char *s);
void s3_xml_escape(Buf *out, const char *s);

#endif
