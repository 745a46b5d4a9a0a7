/*
 * storage_s3: the S3 driver of storage.h, over the S3 client (s3.h): streaming
 * writes are multipart uploads (s3upload.h), streaming reads resumable GETs,
 * listing, batch delete and multipart housekeeping from s3list.h.
 */
#ifndef BW_STORAGE_S3_H
#define BW_STORAGE_S3_H

#include "aws/s3.h"
#include "storage/storage.h"

/* s3 is borrowed (it must outlive the store). part_size 0: 8 MiB; parts_in_flight 0: 4. */
Storage *storage_s3_new(uv_loop_t *loop, S3Client *s3, size_t part_size, int parts_in_flight);

#endif
