/* storage_s3: the S3 driver (see storage_s3.h). */
#include "storage/storage_s3.h"

#include "aws/s3copy.h"
#include "aws/s3list.h"
#include "aws/s3upload.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    S3Client *s3;
    size_t part_size;
    int parts_in_flight;
} Drv;

/* S3's outcome in the store's words. */
static void result_of(const S3Result *in, StorageResult *out) {
    memset(out, 0, sizeof(*out));
    out->size = -1;
    if (in == NULL)
        return;
    out->status = in->status;
    snprintf(out->code, sizeof(out->code), "%s", in->code);
    out->size = in->size;
    snprintf(out->etag, sizeof(out->etag), "%s", in->etag);
    out->body = in->body;
}

/* A small operation's callback, carried through the S3 client. */
typedef struct {
    StorageDoneCb cb;
    void *data;
} Call;

static void on_call(const S3Result *res, const Err *err, void *data) {
    Call call = *(Call *)data;
    free(data);
    StorageResult r;
    result_of(res, &r);
    call.cb(&r, err, call.data);
}

static Call *call_new(StorageDoneCb cb, void *data) {
    Call *c = xmalloc(sizeof(*c));
    c->cb = cb;
    c->data = data;
    return c;
}

static void d_put(void *drv, const char *key, const void *body, size_t len, const char *ctype,
                  StorageDoneCb cb, void *data) {
    s3_put_object(((Drv *)drv)->s3, key, body, len, ctype, on_call, call_new(cb, data));
}

static void d_get(void *drv, const char *key, size_t max, StorageDoneCb cb, void *data) {
    s3_get_object(((Drv *)drv)->s3, key, max, on_call, call_new(cb, data));
}

static void d_head(void *drv, const char *key, StorageDoneCb cb, void *data) {
    s3_head_object(((Drv *)drv)->s3, key, on_call, call_new(cb, data));
}

static void d_probe(void *drv, StorageDoneCb cb, void *data) {
    s3_head_bucket(((Drv *)drv)->s3, on_call, call_new(cb, data));
}

static void d_halt(void *drv) {
    s3_client_halt(((Drv *)drv)->s3);
}

static void d_abort_pending(void *drv, const char *key, const char *upload_id, StorageDoneCb cb,
                            void *data) {
    s3_abort_upload(((Drv *)drv)->s3, key, upload_id, on_call, call_new(cb, data));
}

/* Listing: S3's pages passed on as the store's. */
typedef struct {
    StorageListCb page;
    StoragePendingCb pending;
    StorageListDoneCb done;
    void *data;
} List;

static int on_objects(const S3Object *objs, size_t n, void *data) {
    List *l = data;
    StorageObject *o = xcalloc(n + 1, sizeof(*o));
    for (size_t i = 0; i < n; i++)
        o[i] = (StorageObject){objs[i].key, objs[i].size, objs[i].last_modified};
    int rc = l->page(o, n, l->data);
    free(o);
    return rc;
}

static int on_uploads(const S3MultipartUpload *ups, size_t n, void *data) {
    List *l = data;
    StoragePending *p = xcalloc(n + 1, sizeof(*p));
    for (size_t i = 0; i < n; i++)
        p[i] = (StoragePending){ups[i].key, ups[i].upload_id, ups[i].initiated};
    int rc = l->pending(p, n, l->data);
    free(p);
    return rc;
}

static void on_listed(uint64_t count, const Err *err, void *data) {
    List l = *(List *)data;
    free(data);
    l.done(count, err, l.data);
}

static void d_list(void *drv, const char *prefix, StorageListCb page, StorageListDoneCb done,
                   void *data) {
    List *l = xcalloc(1, sizeof(*l));
    *l = (List){page, NULL, done, data};
    s3_list(((Drv *)drv)->s3, prefix, 0, on_objects, on_listed, l);
}

static void d_list_pending(void *drv, const char *prefix, StoragePendingCb page,
                           StorageListDoneCb done, void *data) {
    List *l = xcalloc(1, sizeof(*l));
    *l = (List){NULL, page, done, data};
    s3_list_uploads(((Drv *)drv)->s3, prefix, on_uploads, on_listed, l);
}

static void d_del(void *drv, const char *const *keys, size_t n, StorageDeleteDoneCb done,
                  void *data) {
    s3_delete_keys(((Drv *)drv)->s3, keys, n, done, data);
}

/* ---- streaming write: a multipart upload ---- */

struct StorageSink {
    S3Upload *up;
    StorageSinkWritableCb writable;
    StorageSinkDoneCb done;
    void *data;
};

static void on_up_writable(S3Upload *u, void *data) {
    (void)u;
    StorageSink *k = data;
    k->writable(k->data);
}

static void on_up_done(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                       const Err *err, void *data) {
    (void)u;
    (void)res;
    (void)sha256;
    (void)bytes;
    StorageSink *k = data;
    k->done(err, k->data);
}

static StorageSink *d_sink_new(void *drv, const char *key, const char *ctype,
                               StorageSinkWritableCb writable, StorageSinkDoneCb done, void *data) {
    Drv *d = drv;
    StorageSink *k = xcalloc(1, sizeof(*k));
    k->writable = writable;
    k->done = done;
    k->data = data;
    k->up = s3_upload_new(d->s3, key, ctype, d->part_size, d->parts_in_flight, on_up_writable,
                          on_up_done, k);
    s3_upload_no_digest(k->up); /* the stream hashed the stored bytes already, on the pool */
    return k;
}

static int d_sink_write(StorageSink *k, const char *buf, size_t len) {
    return s3_upload_write(k->up, buf, len);
}

static void d_sink_finish(StorageSink *k) {
    s3_upload_finish(k->up);
}

static void d_sink_abort(StorageSink *k) {
    s3_upload_abort(k->up);
}

static size_t d_sink_buffered(const StorageSink *k) {
    return s3_upload_buffered(k->up);
}

static void d_sink_free(StorageSink *k) {
    if (k == NULL)
        return;
    s3_upload_free(k->up); /* no callback after it: k can go now */
    free(k);
}

/* ---- streaming read: a resumable GET ---- */

struct StorageSource {
    S3Op *op;
    StorageSourceDataCb on_data;
    StorageDoneCb done;
    void *data;
};

static int on_get_data(S3Op *op, const char *buf, size_t len, void *data) {
    StorageSource *src = data;
    src->op = op;
    int rc = src->on_data(buf, len, src->data);
    return rc == STORAGE_SOURCE_PAUSE ? S3_PAUSE : rc == STORAGE_SOURCE_STOP ? S3_STOP : 0;
}

static void on_get_done(const S3Result *res, const Err *err, void *data) {
    StorageSource *src = data;
    StorageResult r;
    result_of(res, &r);
    StorageDoneCb done = src->done;
    void *d = src->data;
    free(src);
    done(&r, err, d);
}

static StorageSource *d_source_new(void *drv, const char *key, StorageSourceDataCb on_data,
                                   StorageDoneCb done, void *data) {
    StorageSource *src = xcalloc(1, sizeof(*src));
    src->on_data = on_data;
    src->done = done;
    src->data = data;
    src->op = s3_get_stream(((Drv *)drv)->s3, key, on_get_data, on_get_done, src);
    return src;
}

static void d_source_resume(StorageSource *src) {
    if (src->op)
        s3_op_resume(src->op);
}

/* ---- server-side copy: CopyObject / UploadPartCopy from the other store's bucket ---- */

typedef struct {
    S3Copy *cp;
    StorageServerCopyCb done;
    void *data;
} Copy;

static void on_copied(S3Copy *cp, const char *sha256, const Err *err, void *data) {
    Copy *k = data;
    s3_copy_object_free(cp);
    StorageServerCopyCb done = k->done;
    void *d = k->data;
    free(k);
    done(sha256, err, d);
}

static void *d_copy_new(void *drv, void *src_drv, const char *key, uint64_t size, const char *ctype,
                        StorageServerCopyCb done, void *data) {
    Drv *d = drv;
    Copy *k = xcalloc(1, sizeof(*k));
    k->done = done;
    k->data = data;
    k->cp = s3_copy_object_new(d->s3, s3_client_bucket(((Drv *)src_drv)->s3), key, size, ctype, 0,
                               d->part_size, d->parts_in_flight, on_copied, k);
    return k;
}

static void d_copy_free(void *copy) {
    Copy *k = copy;
    s3_copy_object_free(k->cp); /* abandoned: no callback */
    free(k);
}

static const StorageDriver s3_driver = {
    .name = "s3",
    .put = d_put,
    .get = d_get,
    .head = d_head,
    .list = d_list,
    .del = d_del,
    .list_pending = d_list_pending,
    .abort_pending = d_abort_pending,
    .sink_new = d_sink_new,
    .sink_write = d_sink_write,
    .sink_finish = d_sink_finish,
    .sink_abort = d_sink_abort,
    .sink_buffered = d_sink_buffered,
    .sink_free = d_sink_free,
    .source_new = d_source_new,
    .source_resume = d_source_resume,
    .copy_new = d_copy_new,
    .copy_free = d_copy_free,
    .probe = d_probe,
    .halt = d_halt,
    .free = free,
};

Storage *storage_s3_new(uv_loop_t *loop, S3Client *s3, size_t part_size, int parts_in_flight) {
    Drv *d = xcalloc(1, sizeof(*d));
    d->s3 = s3;
    d->part_size = part_size;
    d->parts_in_flight = parts_in_flight;
    return storage_new(loop, &s3_driver, d);
}

long long storage_parse_time(const char *iso) {
    return s3_parse_time(iso);
}
