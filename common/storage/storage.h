/*
 * storage: where backup objects live, behind one interface, after pgBackRest's
 * Storage and its drivers. A job sees keys, streams and results, never the
 * protocol: S3 is one driver (storage_s3.h), an in-memory store is another
 * (storage_mem.h, for tests), and a tee writing two stores at once is a third
 * that no job would notice.
 *
 * Streams carry filter chains run on libuv's thread pool (filterpipe.h):
 *   - a write stream takes the codecs (for example gzip), counts the bytes given
 *     to it and hashes the stored bytes once (SHA-256), and ends with the stored
 *     object's size and digest;
 *   - a read stream hashes the stored bytes as they come and runs the decoders
 *     after them; a damaged object is read to its end, so that its digest, not a
 *     decoding error, names the cause.
 *
 * Ownership: what a call returns (StorageWrite, StorageRead) is the caller's
 * until its _free(), which is safe at any time, even with work in flight (the
 * memory goes once the last request answered, and no callback follows). Small
 * operations (put, get, head, list, delete, pending uploads) call back exactly
 * once and hold nothing of the caller's afterwards.
 */
#ifndef BW_STORAGE_H
#define BW_STORAGE_H

#include "base/buf.h"
#include "base/err.h"
#include "io/filter.h"

#include <stdint.h>
#include <uv.h>

typedef struct Storage Storage;

/* ---- small operations ---- */

typedef struct {
    long status;   /* the protocol's status (HTTP for S3; 0: none) */
    char code[64]; /* the store's error code, "" on success (S3: NoSuchKey, AccessDenied...) */
    int64_t size;  /* HEAD: the object's size, else -1 */
    char etag[80];
    const Buf *body; /* GET: the object */
} StorageResult;

typedef void (*StorageDoneCb)(const StorageResult *res, const Err *err, void *data);

typedef struct {
    const char *key;
    int64_t size;
    const char *last_modified; /* ISO 8601 */
} StorageObject;

/* One page, valid during the call; nonzero stops the listing. */
typedef int (*StorageListCb)(const StorageObject *objs, size_t n, void *data);
typedef void (*StorageListDoneCb)(uint64_t count, const Err *err, void *data);
typedef void (*StorageDeleteDoneCb)(size_t deleted, size_t failed, const Err *err, void *data);

/* A write a crashed writer left unfinished (S3: a multipart upload in progress). */
typedef struct {
    const char *key;
    const char *upload_id;
    const char *initiated; /* ISO 8601 */
} StoragePending;
typedef int (*StoragePendingCb)(const StoragePending *p, size_t n, void *data);

void storage_put(Storage *s, const char *key, const void *body, size_t len,
                 const char *content_type, StorageDoneCb cb, void *data);
/* The whole object into res->body, up to max_bytes. */
void storage_get(Storage *s, const char *key, size_t max_bytes, StorageDoneCb cb, void *data);
void storage_head(Storage *s, const char *key, StorageDoneCb cb, void *data);
/* Every key under prefix, in key order, page by page. */
void storage_list(Storage *s, const char *prefix, StorageListCb page, StorageListDoneCb done,
                  void *data);
/* Delete keys (copied); done once with the counts. n == 0 answers at once. */
void storage_delete(Storage *s, const char *const *keys, size_t n, StorageDeleteDoneCb done,
                    void *data);
/* Unfinished writes under prefix; a store that keeps none lists nothing. A store that cannot
 * list them answers with err code NotImplemented. */
void storage_list_pending(Storage *s, const char *prefix, StoragePendingCb page,
                          StorageListDoneCb done, void *data);
void storage_abort_pending(Storage *s, const char *key, const char *upload_id, StorageDoneCb cb,
                           void *data);
/* A small request proving the store usable now (S3: a signed HEAD of the bucket, which proves
 * endpoint, credentials and bucket; a file store: its root is a writable directory). */
void storage_probe(Storage *s, StorageDoneCb cb, void *data);
/* Shutting down: whatever the store has in flight or waiting to retry fails now
 * (ERR_CODE_CANCELLED), and later requests fail at once. A store with nothing to halt ignores
 * it. */
void storage_halt(Storage *s);
/* Seconds since the epoch of a time as the store writes it (StoragePending, StorageObject). */
long long storage_parse_time(const char *iso);

/* ---- write stream ---- */

typedef struct StorageWrite StorageWrite;

typedef struct {
    uint64_t raw_size; /* bytes given to storage_write */
    uint64_t size;     /* bytes stored */
    char sha256[65];   /* hex SHA-256 of the stored bytes */
    /* where the stream's time went, in ms (filter_pipe_times): the codecs' runs (off the
     * loop), the writer's waits for on_writable, the store holding the codecs' output back */
    uint64_t codec_ms, wait_ms, store_held_ms;
} StorageWritten;

typedef void (*StorageWritableCb)(StorageWrite *w, void *data);
/* Once: the object is stored whole (err NULL), or nothing of it is (aborted, err). */
typedef void (*StorageWriteDoneCb)(StorageWrite *w, const StorageWritten *res, const Err *err,
                                   void *data);

/* codecs (taken; NULL: none) run between the bytes written and the stored bytes. */
StorageWrite *storage_write_new(Storage *s, const char *key, const char *content_type,
                                FilterChain *codecs, StorageWritableCb on_writable,
                                StorageWriteDoneCb on_done, void *data);
/* Always takes the bytes. 1: write more; 0: wait for on_writable; -1: the write failed
 * (on_done says why). */
int storage_write(StorageWrite *w, const void *buf, size_t len);
/* The same without a copy, for one huge piece: w takes buf and calls release_fn(buf) once it
 * went through (or failed); wait for on_writable (returns 0, or -1 when the write failed). */
int storage_write_owned(StorageWrite *w, char *buf, size_t len, void (*release_fn)(void *));
/* No more bytes: flush the codecs, store the rest, complete; on_done follows. */
void storage_write_finish(StorageWrite *w);
/* Give up: nothing is stored; on_done follows with ERR_CODE_CANCELLED. */
void storage_write_abort(StorageWrite *w);
/* Bytes held now (pipe and store buffers). */
size_t storage_write_buffered(const StorageWrite *w);
/* Stored bytes so far: what the codecs gave the store (its own buffer included). */
uint64_t storage_write_stored(const StorageWrite *w);
/* The caller is done with w; before on_done, the write is aborted and on_done is not called. */
void storage_write_free(StorageWrite *w);

/* ---- read stream ---- */

typedef struct StorageRead StorageRead;

typedef struct {
    uint64_t size;            /* stored bytes read */
    char sha256[65];          /* hex SHA-256 of the stored bytes */
    const char *decode_error; /* a decoder failed (the rest was only hashed), else NULL */
} StorageReadResult;

/* Decoded bytes, in order. 1: more; 0: taken, but hold the stream until storage_read_resume. */
typedef int (*StorageReadDataCb)(StorageRead *r, const char *buf, size_t len, void *data);
/* Once: the object was read to its end (err NULL: check res), or the read failed or stopped. */
typedef void (*StorageReadDoneCb)(StorageRead *r, const StorageReadResult *res, const Err *err,
                                  void *data);

/* decoders (taken; NULL: none) run after the stored bytes are hashed. */
StorageRead *storage_read_new(Storage *s, const char *key, FilterChain *decoders,
                              StorageReadDataCb on_data, StorageReadDoneCb on_done, void *data);
void storage_read_resume(StorageRead *r);
/* Give up: on_done follows with ERR_CODE_CANCELLED. */
void storage_read_stop(StorageRead *r);
uint64_t storage_read_bytes(const StorageRead *r);
/* The caller is done with r; before on_done, the read stops and on_done is not called. */
void storage_read_free(StorageRead *r);

/* ---- copy between stores ---- */

/* One object streamed from one store to the same key in another, never whole in memory: the
 * read holds while the write is full. done once: the copy is stored whole with the SHA-256
 * and size of its bytes (err NULL), or nothing of it is (a failed write is aborted).
 * expect_sha256 (hex, or NULL: any): a source whose bytes have another digest or size is not
 * stored (ERR_CODE_INVALID), the write aborted before it completes. */
typedef struct StorageCopy StorageCopy;
typedef void (*StorageCopyDoneCb)(StorageCopy *c, const StorageWritten *res, const Err *err,
                                  void *data);
StorageCopy *storage_copy_new(Storage *from, Storage *to, const char *key, const char *content_type,
                              const char *expect_sha256, uint64_t expect_size,
                              StorageCopyDoneCb done, void *data);
/* The same done by the store itself (S3: CopyObject / UploadPartCopy), no byte through us, when
 * both stores are of one driver that can (NULL otherwise: stream it). size: the source's. The
 * copy's digest is the one the store computed when it equals expect_sha256; otherwise (none
 * given, or another) the copy is read back and hashed, and a copy that is not expect_sha256 (or
 * size) is deleted again and reported (ERR_CODE_INVALID). */
StorageCopy *storage_copy_server_new(Storage *from, Storage *to, const char *key, uint64_t size,
                                     const char *content_type, const char *expect_sha256,
                                     StorageCopyDoneCb done, void *data);
/* 1 when the copy's bytes were read back to be hashed (the store gave no digest). */
int storage_copy_read_back(const StorageCopy *c);
/* Safe at any time; before done, the write is aborted and done is not called. */
void storage_copy_free(StorageCopy *c);
/* A copy's failure read: the source is missing or not the bytes expected (trying again will not
 * help); or, for a server-side copy, the service refused to make it (stream it instead). */
int storage_copy_source_lost(const Err *err);
int storage_copy_refused(const Err *err);

/* ---- drivers ---- */

/* What a driver implements. A sink is the driver's streaming write of one object; a source its
 * streaming read. Every callback comes on the loop, never inside the call that caused it,
 * except the sink's writable. */
typedef struct StorageSink StorageSink;
typedef struct StorageSource StorageSource;
typedef void (*StorageSinkWritableCb)(void *data);
typedef void (*StorageSinkDoneCb)(const Err *err, void *data);
/* 0: taken; 1: not taken (paused: the same bytes come again after resume); 2: stop. */
typedef int (*StorageSourceDataCb)(const char *buf, size_t len, void *data);
/* A server-side copy ended: sha256 is the copy's hex digest as the store computed it, or "". */
typedef void (*StorageServerCopyCb)(const char *sha256, const Err *err, void *data);
#define STORAGE_SOURCE_PAUSE 1
#define STORAGE_SOURCE_STOP  2

typedef struct {
    const char *name;
    void (*put)(void *drv, const char *key, const void *body, size_t len, const char *ctype,
                StorageDoneCb cb, void *data);
    void (*get)(void *drv, const char *key, size_t max, StorageDoneCb cb, void *data);
    void (*head)(void *drv, const char *key, StorageDoneCb cb, void *data);
    void (*list)(void *drv, const char *prefix, StorageListCb page, StorageListDoneCb done,
                 void *data);
    void (*del)(void *drv, const char *const *keys, size_t n, StorageDeleteDoneCb done, void *data);
    void (*list_pending)(void *drv, const char *prefix, StoragePendingCb page,
                         StorageListDoneCb done, void *data);
    void (*abort_pending)(void *drv, const char *key, const char *upload_id, StorageDoneCb cb,
                          void *data);
    /* streaming write: write returns 1 (more), 0 (wait for writable), -1 (failed) */
    StorageSink *(*sink_new)(void *drv, const char *key, const char *ctype,
                             StorageSinkWritableCb writable, StorageSinkDoneCb done, void *data);
    int (*sink_write)(StorageSink *k, const char *buf, size_t len);
    void (*sink_finish)(StorageSink *k);
    void (*sink_abort)(StorageSink *k);
    size_t (*sink_buffered)(const StorageSink *k);
    void (*sink_free)(StorageSink *k); /* no callback after it */
    /* streaming read */
    StorageSource *(*source_new)(void *drv, const char *key, StorageSourceDataCb on_data,
                                 StorageDoneCb done, void *data);
    void (*source_resume)(StorageSource *src);
    /* optional: copy key from src_drv (a store of this same driver) into this one, server-side;
     * NULL when the driver cannot. copy_free before done: abandon it, no callback. */
    void *(*copy_new)(void *drv, void *src_drv, const char *key, uint64_t size, const char *ctype,
                      StorageServerCopyCb done, void *data);
    void (*copy_free)(void *copy);
    void (*probe)(void *drv, StorageDoneCb cb, void *data);
    void (*halt)(void *drv); /* optional */
    void (*free)(void *drv);
} StorageDriver;

/* A store from a driver and its state (freed with the store by drv->free). */
Storage *storage_new(uv_loop_t *loop, const StorageDriver *drv, void *state);
void storage_free(Storage *s);
const char *storage_name(const Storage *s);
/* The driver and its state (for a driver's own helpers, such as storage_mem_of). */
const StorageDriver *storage_driver(const Storage *s);
void *storage_driver_state(Storage *s);

#endif
