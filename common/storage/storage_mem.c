/* storage_mem: an in-memory store with planned faults (see storage_mem.h). */
#include "storage/storage_mem.h"

#include <stdlib.h>
#include <string.h>

typedef struct Obj {
    struct Obj *next;
    char *key;
    Buf data;
} Obj;

struct MemStore {
    uv_loop_t *loop;
    Obj *objs;
    size_t fail_after; /* 0: no write fault planned */
    char fail_text[128], fail_code[64];
    size_t piece;
    int open_streams;
};

/* A callback deferred to a later loop turn. */
typedef struct Later {
    uv_timer_t t;
    void (*fn)(struct Later *l);
    MemStore *m;
    StorageDoneCb cb;
    StorageListDoneCb list_done;
    StorageDeleteDoneCb del_done;
    StorageServerCopyCb copy_done;
    int abandoned; /* a server-side copy freed before it answered */
    void *data;
    Err err;
    int failed;
    Buf body;
    StorageResult res;
    size_t n;
} Later;

static void later_closed(uv_handle_t *h) {
    Later *l = h->data;
    buf_free(&l->body);
    free(l);
}

static void later_fire(uv_timer_t *t) {
    Later *l = t->data;
    l->fn(l);
    uv_close((uv_handle_t *)&l->t, later_closed);
}

static Later *later(MemStore *m, void (*fn)(Later *l)) {
    Later *l = xcalloc(1, sizeof(*l));
    l->m = m;
    l->fn = fn;
    l->res.size = -1;
    uv_timer_init(m->loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fire, 0, 0);
    return l;
}

static Obj *find(MemStore *m, const char *key) {
    for (Obj *o = m->objs; o; o = o->next)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

void storage_mem_set(MemStore *m, const char *key, const void *data, size_t len) {
    Obj *o = find(m, key);
    if (o == NULL) {
        o = xcalloc(1, sizeof(*o));
        o->key = xstrdup(key);
        o->next = m->objs;
        m->objs = o;
    }
    buf_reset(&o->data);
    buf_append(&o->data, data, len);
}

const char *storage_mem_object(MemStore *m, const char *key, size_t *len) {
    Obj *o = find(m, key);
    if (o == NULL)
        return NULL;
    *len = o->data.len;
    return o->data.data ? o->data.data : "";
}

static int planned_fault(MemStore *m, const char *key, Later *l) {
    if (!m->fail_text[0] || strstr(key, m->fail_text) == NULL)
        return 0;
    l->failed = 1;
    snprintf(l->res.code, sizeof(l->res.code), "%s", m->fail_code);
    l->res.status = 403;
    err_set(&l->err, ERR_PERMANENT, ERR_CODE_HTTP, "mem: %s: %s", m->fail_code, key);
    return 1;
}

static void answer(Later *l) {
    l->res.body = &l->body;
    l->cb(&l->res, l->failed ? &l->err : NULL, l->data);
}

static void d_put(void *drv, const char *key, const void *body, size_t len, const char *ctype,
                  StorageDoneCb cb, void *data) {
    (void)ctype;
    MemStore *m = drv;
    Later *l = later(m, answer);
    l->cb = cb;
    l->data = data;
    if (!planned_fault(m, key, l))
        storage_mem_set(m, key, body, len);
}

static void d_get(void *drv, const char *key, size_t max, StorageDoneCb cb, void *data) {
    MemStore *m = drv;
    Later *l = later(m, answer);
    l->cb = cb;
    l->data = data;
    if (planned_fault(m, key, l))
        return;
    Obj *o = find(m, key);
    if (o == NULL || o->data.len > max) {
        l->failed = 1;
        snprintf(l->res.code, sizeof(l->res.code), "%s", o ? "TooLarge" : "NoSuchKey");
        err_set(&l->err, ERR_PERMANENT, ERR_CODE_HTTP, "mem: %s: %s", l->res.code, key);
        return;
    }
    buf_append(&l->body, o->data.data ? o->data.data : "", o->data.len);
    l->res.size = (int64_t)o->data.len;
}

static void d_head(void *drv, const char *key, StorageDoneCb cb, void *data) {
    d_get(drv, key, (size_t)-1, cb, data);
}

static void d_probe(void *drv, StorageDoneCb cb, void *data) {
    Later *l = later(drv, answer);
    l->cb = cb;
    l->data = data;
    l->res.status = 200;
}

static void d_abort_pending(void *drv, const char *key, const char *upload_id, StorageDoneCb cb,
                            void *data) {
    (void)upload_id;
    MemStore *m = drv;
    Later *l = later(m, answer);
    l->cb = cb;
    l->data = data;
    planned_fault(m, key, l);
}

static void listed(Later *l) {
    l->list_done(l->n, NULL, l->data);
}

static void d_list(void *drv, const char *prefix, StorageListCb page, StorageListDoneCb done,
                   void *data) {
    MemStore *m = drv;
    Later *l = later(m, listed);
    l->list_done = done;
    l->data = data;
    for (Obj *o = m->objs; o; o = o->next)
        if (strncmp(o->key, prefix, strlen(prefix)) == 0) {
            StorageObject so = {o->key, (int64_t)o->data.len, "2026-01-01T00:00:00.000Z"};
            l->n++;
            if (page(&so, 1, data))
                break;
        }
}

static void d_list_pending(void *drv, const char *prefix, StoragePendingCb page,
                           StorageListDoneCb done, void *data) {
    (void)prefix;
    (void)page;
    Later *l = later(drv, listed); /* a memory store leaves no unfinished write behind */
    l->list_done = done;
    l->data = data;
}

static void deleted(Later *l) {
    l->del_done(l->n, 0, NULL, l->data);
}

static void d_del(void *drv, const char *const *keys, size_t n, StorageDeleteDoneCb done,
                  void *data) {
    MemStore *m = drv;
    Later *l = later(m, deleted);
    l->del_done = done;
    l->data = data;
    for (size_t i = 0; i < n; i++)
        for (Obj **p = &m->objs; *p; p = &(*p)->next)
            if (strcmp((*p)->key, keys[i]) == 0) {
                Obj *o = *p;
                *p = o->next;
                buf_free(&o->data);
                free(o->key);
                free(o);
                l->n++;
                break;
            }
}

/* ---- streaming write ---- */

struct StorageSink {
    MemStore *m;
    char *key;
    Buf data;
    size_t fail_after;
    StorageSinkWritableCb writable;
    StorageSinkDoneCb done;
    void *cb_data;
    int ended, freed, pending; /* pending: a deferred done is on its way */
    Err err;
};

static void sink_release(StorageSink *k) {
    if (!k->freed || k->pending)
        return;
    k->m->open_streams--;
    buf_free(&k->data);
    free(k->key);
    free(k);
}

typedef struct {
    uv_timer_t t;
    StorageSink *k;
} SinkDone;

static void sink_done_closed(uv_handle_t *h) {
    SinkDone *d = h->data;
    StorageSink *k = d->k;
    free(d);
    k->pending = 0;
    sink_release(k);
}

static void sink_done_fire(uv_timer_t *t) {
    SinkDone *d = t->data;
    StorageSink *k = d->k;
    if (!k->freed)
        k->done(err_is_set(&k->err) ? &k->err : NULL, k->cb_data);
    uv_close((uv_handle_t *)&d->t, sink_done_closed);
}

/* End the sink (stored or not), told on a later turn. */
static void sink_end(StorageSink *k, const Err *err) {
    if (k->ended)
        return;
    k->ended = 1;
    if (err)
        k->err = *err;
    else
        storage_mem_set(k->m, k->key, k->data.data ? k->data.data : "", k->data.len);
    SinkDone *d = xcalloc(1, sizeof(*d));
    d->k = k;
    k->pending = 1;
    uv_timer_init(k->m->loop, &d->t);
    d->t.data = d;
    uv_timer_start(&d->t, sink_done_fire, 0, 0);
}

static StorageSink *d_sink_new(void *drv, const char *key, const char *ctype,
                               StorageSinkWritableCb writable, StorageSinkDoneCb done, void *data) {
    (void)ctype;
    MemStore *m = drv;
    StorageSink *k = xcalloc(1, sizeof(*k));
    k->m = m;
    k->key = xstrdup(key);
    k->fail_after = m->fail_after;
    m->fail_after = 0;
    k->writable = writable;
    k->done = done;
    k->cb_data = data;
    m->open_streams++;
    return k;
}

static int d_sink_write(StorageSink *k, const char *buf, size_t len) {
    if (k->ended)
        return -1;
    buf_append(&k->data, buf, len);
    if (k->fail_after && k->data.len > k->fail_after) {
        Err e;
        err_set(&e, ERR_PERMANENT, ERR_CODE_HTTP, "mem: AccessDenied: %s", k->key);
        sink_end(k, &e);
        return -1;
    }
    return 1;
}

static void d_sink_finish(StorageSink *k) {
    sink_end(k, NULL);
}

static void d_sink_abort(StorageSink *k) {
    Err e;
    err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "mem: write aborted");
    sink_end(k, &e);
}

static size_t d_sink_buffered(const StorageSink *k) {
    return k->data.cap;
}

static void d_sink_free(StorageSink *k) {
    if (k == NULL)
        return;
    k->freed = 1;
    sink_release(k);
}

/* ---- streaming read ---- */

struct StorageSource {
    MemStore *m;
    uv_timer_t t;
    Buf data;
    size_t off;
    StorageSourceDataCb on_data;
    StorageDoneCb done;
    void *cb_data;
    int paused, missing;
};

static void source_closed(uv_handle_t *h) {
    StorageSource *src = h->data;
    src->m->open_streams--;
    buf_free(&src->data);
    free(src);
}

static void source_end(StorageSource *src, const Err *err) {
    uv_timer_stop(&src->t);
    StorageResult res;
    memset(&res, 0, sizeof(res));
    res.size = (int64_t)src->data.len;
    src->done(&res, err, src->cb_data);
    uv_close((uv_handle_t *)&src->t, source_closed);
}

static void source_turn(uv_timer_t *t) {
    StorageSource *src = t->data;
    Err e;
    if (src->missing) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_HTTP, "mem: NoSuchKey");
        source_end(src, &e);
        return;
    }
    if (src->off == src->data.len) {
        source_end(src, NULL);
        return;
    }
    size_t n = src->data.len - src->off;
    if (n > src->m->piece)
        n = src->m->piece;
    int rc = src->on_data(src->data.data + src->off, n, src->cb_data);
    if (rc == STORAGE_SOURCE_STOP) {
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "mem: read stopped");
        source_end(src, &e);
        return;
    }
    if (rc == STORAGE_SOURCE_PAUSE) {
        src->paused = 1;
        uv_timer_stop(&src->t);
        return;
    }
    src->off += n;
}

static StorageSource *d_source_new(void *drv, const char *key, StorageSourceDataCb on_data,
                                   StorageDoneCb done, void *data) {
    MemStore *m = drv;
    StorageSource *src = xcalloc(1, sizeof(*src));
    src->m = m;
    src->on_data = on_data;
    src->done = done;
    src->cb_data = data;
    Obj *o = find(m, key);
    src->missing = o == NULL || (m->fail_text[0] && strstr(key, m->fail_text));
    if (o)
        buf_append(&src->data, o->data.data ? o->data.data : "", o->data.len);
    m->open_streams++;
    uv_timer_init(m->loop, &src->t);
    src->t.data = src;
    uv_timer_start(&src->t, source_turn, 0, 1);
    return src;
}

static void d_source_resume(StorageSource *src) {
    if (!src->paused)
        return;
    src->paused = 0;
    uv_timer_start(&src->t, source_turn, 0, 1);
}

static void d_free(void *drv) {
    MemStore *m = drv;
    while (m->objs) {
        Obj *o = m->objs;
        m->objs = o->next;
        buf_free(&o->data);
        free(o->key);
        free(o);
    }
    free(m);
}

/* Server-side copy between two memory stores: done at once, answered later without a digest,
 * as an S3 service that computes none (the copy is read back to be hashed). */
static void copy_answer(Later *l) {
    if (!l->abandoned)
        l->copy_done("", l->failed ? &l->err : NULL, l->data);
}

static void *d_copy_new(void *drv, void *src_drv, const char *key, uint64_t size, const char *ctype,
                        StorageServerCopyCb done, void *data) {
    (void)size;
    (void)ctype;
    MemStore *m = drv;
    Later *l = later(m, copy_answer);
    l->copy_done = done;
    l->data = data;
    Obj *o = find(src_drv, key);
    if (planned_fault(m, key, l))
        return l;
    if (o == NULL) {
        l->failed = 1;
        err_set(&l->err, ERR_PERMANENT, ERR_CODE_HTTP, "mem: NoSuchKey: %s", key);
        return l;
    }
    storage_mem_set(m, key, o->data.data ? o->data.data : "", o->data.len);
    return l;
}

static void d_copy_free(void *copy) {
    ((Later *)copy)->abandoned = 1;
}

static const StorageDriver mem_driver = {
    .name = "mem",
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
    .free = d_free,
};

Storage *storage_mem_new(uv_loop_t *loop) {
    MemStore *m = xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->piece = 64 * 1024;
    return storage_new(loop, &mem_driver, m);
}

MemStore *storage_mem_of(Storage *s) {
    return storage_driver(s) == &mem_driver ? storage_driver_state(s) : NULL;
}

void storage_mem_fail_write_after(MemStore *m, size_t after) {
    m->fail_after = after;
}

void storage_mem_fail_key(MemStore *m, const char *text, const char *code) {
    snprintf(m->fail_text, sizeof(m->fail_text), "%s", text);
    snprintf(m->fail_code, sizeof(m->fail_code), "%s", code);
}

void storage_mem_set_read_piece(MemStore *m, size_t n) {
    m->piece = n ? n : 64 * 1024;
}

int storage_mem_open_streams(const MemStore *m) {
    return m->open_streams;
}
