/*
 * storage: the store and its streams over a driver (see storage.h).
 *
 * A write stream is  bytes -> [size "raw"] codecs [sha256, size] -> driver sink,
 * the chain on the thread pool (filterpipe). A read stream is  driver source ->
 * [sha256, size, tolerant(decoders)] -> the caller, the chain on the thread pool.
 *
 * Both streams count their own calls and callbacks (depth): a _free() inside
 * one of them, or while a request of the driver is in flight, only marks the
 * stream; the memory goes when the last of them returns.
 */
#include "storage/storage.h"

#include <inttypes.h>

#include "io/filterpipe.h"
#include "base/log.h"

#include <stdlib.h>
#include <string.h>

#define READ_CHUNK (256u * 1024)
/* decoded bytes handed to the reader per run: it can hold the stream between them */
#define READ_OUT_BOUND (4u << 20)

struct Storage {
    uv_loop_t *loop;
    const StorageDriver *drv;
    void *state;
};

Storage *storage_new(uv_loop_t *loop, const StorageDriver *drv, void *state) {
    Storage *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->drv = drv;
    s->state = state;
    return s;
}

void storage_free(Storage *s) {
    if (s == NULL)
        return;
    if (s->drv->free)
        s->drv->free(s->state);
    free(s);
}

const char *storage_name(const Storage *s) {
    return s->drv->name;
}

const StorageDriver *storage_driver(const Storage *s) {
    return s->drv;
}

void *storage_driver_state(Storage *s) {
    return s->state;
}

void storage_put(Storage *s, const char *key, const void *body, size_t len,
                 const char *content_type, StorageDoneCb cb, void *data) {
    s->drv->put(s->state, key, body, len, content_type, cb, data);
}

void storage_probe(Storage *s, StorageDoneCb cb, void *data) {
    s->drv->probe(s->state, cb, data);
}

void storage_halt(Storage *s) {
    if (s && s->drv->halt)
        s->drv->halt(s->state);
}

void storage_get(Storage *s, const char *key, size_t max_bytes, StorageDoneCb cb, void *data) {
    s->drv->get(s->state, key, max_bytes, cb, data);
}

void storage_head(Storage *s, const char *key, StorageDoneCb cb, void *data) {
    s->drv->head(s->state, key, cb, data);
}

void storage_list(Storage *s, const char *prefix, StorageListCb page, StorageListDoneCb done,
                  void *data) {
    s->drv->list(s->state, prefix, page, done, data);
}

void storage_delete(Storage *s, const char *const *keys, size_t n, StorageDeleteDoneCb done,
                    void *data) {
    s->drv->del(s->state, keys, n, done, data);
}

void storage_list_pending(Storage *s, const char *prefix, StoragePendingCb page,
                          StorageListDoneCb done, void *data) {
    s->drv->list_pending(s->state, prefix, page, done, data);
}

void storage_abort_pending(Storage *s, const char *key, const char *upload_id, StorageDoneCb cb,
                           void *data) {
    s->drv->abort_pending(s->state, key, upload_id, cb, data);
}

/* ---- write stream ---- */

struct StorageWrite {
    Storage *s;
    FilterPipe *pipe;
    StorageSink *sink;
    StorageWritableCb on_writable;
    StorageWriteDoneCb on_done;
    void *data;
    int pipe_done, sink_done, reported, aborting, owner_gone, depth;
    uint64_t handed; /* bytes the codecs gave the store so far */
    Err err;
    StorageWritten res;
};

static void write_release(StorageWrite *w) {
    if (!w->owner_gone || w->depth > 0)
        return;
    filter_pipe_free(w->pipe);
    w->s->drv->sink_free(w->sink);
    free(w);
}

static void write_report(StorageWrite *w) {
    if (w->reported || !w->sink_done)
        return;
    w->reported = 1;
    if (w->owner_gone)
        return;
    w->depth++;
    w->on_done(w, err_is_set(&w->err) ? NULL : &w->res, err_is_set(&w->err) ? &w->err : NULL,
               w->data);
    w->depth--;
}

static void write_fail(StorageWrite *w, const Err *err) {
    if (!err_is_set(&w->err))
        w->err = *err;
    if (!w->sink_done && !w->aborting) {
        w->aborting = 1;
        w->s->drv->sink_abort(w->sink);
    }
}

static int pipe_to_sink(const char *buf, size_t len, void *data) {
    StorageWrite *w = data;
    if (w->sink_done || w->aborting)
        return -1;
    w->handed += len;
    return w->s->drv->sink_write(w->sink, buf, len);
}

static void on_pipe_writable(FilterPipe *p, void *data) {
    (void)p;
    StorageWrite *w = data;
    if (w->owner_gone || w->reported)
        return;
    w->depth++;
    w->on_writable(w, w->data);
    w->depth--;
    write_release(w);
}

static void on_pipe_done(FilterPipe *p, const Err *err, void *data) {
    StorageWrite *w = data;
    w->pipe_done = 1;
    w->depth++;
    if (err) {
        write_fail(w, err);
    } else {
        const FilterChain *c = filter_pipe_chain(p);
        const char *sha = filter_chain_result(c, "sha256");
        snprintf(w->res.sha256, sizeof(w->res.sha256), "%s", sha ? sha : "");
        w->res.size = strtoull(filter_chain_result(c, "stored"), NULL, 10);
        w->res.raw_size = strtoull(filter_chain_result(c, "raw"), NULL, 10);
        FilterPipeTimes t;
        filter_pipe_times(p, &t);
        w->res.codec_ms = t.chain_ns / 1000000;
        w->res.wait_ms = t.wait_ns / 1000000;
        w->res.store_held_ms = t.sink_held_ns / 1000000;
        if (!w->aborting)
            w->s->drv->sink_finish(w->sink);
    }
    w->depth--;
    write_release(w);
}

static void on_sink_writable(void *data) {
    StorageWrite *w = data;
    if (!w->owner_gone)
        filter_pipe_unblock(w->pipe);
}

static void on_sink_done(const Err *err, void *data) {
    StorageWrite *w = data;
    w->sink_done = 1;
    if (err && !err_is_set(&w->err))
        w->err = *err;
    if (!err && !w->pipe_done && !err_is_set(&w->err)) /* a sink never completes early */
        err_set(&w->err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "storage: write completed early");
    w->depth++;
    write_report(w);
    w->depth--;
    write_release(w);
}

StorageWrite *storage_write_new(Storage *s, const char *key, const char *content_type,
                                FilterChain *codecs, StorageWritableCb on_writable,
                                StorageWriteDoneCb on_done, void *data) {
    StorageWrite *w = xcalloc(1, sizeof(*w));
    w->s = s;
    w->on_writable = on_writable;
    w->on_done = on_done;
    w->data = data;
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_size_new("raw"));
    if (codecs)
        filter_chain_add(c, filter_chain_filter_new(NULL, codecs, 0));
    filter_chain_add(c, filter_sha256_new("sha256"));
    filter_chain_add(c, filter_size_new("stored"));
    w->pipe = filter_pipe_new(s->loop, c, 0, pipe_to_sink, on_pipe_writable, on_pipe_done, w);
    w->sink = s->drv->sink_new(s->state, key, content_type, on_sink_writable, on_sink_done, w);
    return w;
}

int storage_write(StorageWrite *w, const void *buf, size_t len) {
    if (w->reported || w->aborting)
        return -1;
    return filter_pipe_write(w->pipe, buf, len);
}

int storage_write_owned(StorageWrite *w, char *buf, size_t len, void (*release_fn)(void *)) {
    if (w->reported || w->aborting) {
        release_fn(buf);
        return -1;
    }
    return filter_pipe_write_owned(w->pipe, buf, len, release_fn);
}

void storage_write_finish(StorageWrite *w) {
    if (!w->reported && !w->aborting)
        filter_pipe_finish(w->pipe);
}

void storage_write_abort(StorageWrite *w) {
    Err e;
    err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "storage: write aborted");
    write_fail(w, &e);
}

uint64_t storage_write_stored(const StorageWrite *w) {
    return w->handed;
}

size_t storage_write_buffered(const StorageWrite *w) {
    return filter_pipe_buffered(w->pipe) + w->s->drv->sink_buffered(w->sink);
}

void storage_write_free(StorageWrite *w) {
    if (w == NULL)
        return;
    w->owner_gone = 1;
    write_release(w);
}

/* ---- read stream ---- */

struct StorageRead {
    Storage *s;
    StorageSource *src;
    FilterPipe *pipe;
    StorageReadDataCb on_data;
    StorageReadDoneCb on_done;
    void *data;
    uint64_t bytes;
    int src_done, pipe_blocked, src_paused, held, stopping, reported, owner_gone, depth;
    Err err;
};

static void read_release(StorageRead *r) {
    if (!r->owner_gone || r->depth > 0 || !r->src_done)
        return;
    filter_pipe_free(r->pipe);
    free(r);
}

static void read_report(StorageRead *r, const StorageReadResult *res, const Err *err) {
    if (r->reported)
        return;
    r->reported = 1;
    if (r->owner_gone)
        return;
    r->depth++;
    r->on_done(r, res, err, r->data);
    r->depth--;
}

/* Decoded bytes, on the loop. */
static int pipe_to_reader(const char *buf, size_t len, void *data) {
    StorageRead *r = data;
    if (r->owner_gone || r->stopping)
        return -1;
    r->depth++;
    int rc = r->on_data(r, buf, len, r->data);
    r->depth--;
    if (r->owner_gone || r->stopping)
        return -1;
    if (rc == 0)
        r->held = 1;
    return rc ? 1 : 0;
}

static void on_read_pipe_writable(FilterPipe *p, void *data) {
    (void)p;
    StorageRead *r = data;
    r->pipe_blocked = 0;
    if (r->src_paused && !r->src_done) {
        r->src_paused = 0;
        r->s->drv->source_resume(r->src);
    }
}

static void on_read_pipe_done(FilterPipe *p, const Err *err, void *data) {
    StorageRead *r = data;
    r->depth++;
    if (err) {
        read_report(r, NULL, err);
    } else {
        const FilterChain *c = filter_pipe_chain(p);
        StorageReadResult res;
        memset(&res, 0, sizeof(res));
        res.size = r->bytes;
        snprintf(res.sha256, sizeof(res.sha256), "%s", filter_chain_result(c, "sha256"));
        const char *de = filter_chain_result(c, "decode");
        res.decode_error = de && de[0] ? de : NULL;
        read_report(r, &res, NULL);
    }
    r->depth--;
    read_release(r);
}

/* Stored bytes from the driver, on the loop. */
static int source_data(const char *buf, size_t len, void *data) {
    StorageRead *r = data;
    if (r->stopping || r->owner_gone)
        return STORAGE_SOURCE_STOP;
    if (r->pipe_blocked) {
        r->src_paused = 1;
        return STORAGE_SOURCE_PAUSE;
    }
    r->bytes += len;
    int rc = filter_pipe_write(r->pipe, buf, len);
    if (rc < 0)
        return STORAGE_SOURCE_STOP;
    if (rc == 0)
        r->pipe_blocked = 1;
    return 0;
}

static void source_done(const StorageResult *res, const Err *err, void *data) {
    (void)res;
    StorageRead *r = data;
    r->src_done = 1;
    r->depth++;
    if (r->stopping) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "storage: read stopped");
        read_report(r, NULL, &e);
    } else if (err) {
        read_report(r, NULL, err);
    } else {
        filter_pipe_finish(r->pipe);
    }
    r->depth--;
    read_release(r);
}

StorageRead *storage_read_new(Storage *s, const char *key, FilterChain *decoders,
                              StorageReadDataCb on_data, StorageReadDoneCb on_done, void *data) {
    StorageRead *r = xcalloc(1, sizeof(*r));
    r->s = s;
    r->on_data = on_data;
    r->on_done = on_done;
    r->data = data;
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_sha256_new("sha256"));
    filter_chain_add(
        c, filter_chain_filter_new("decode", decoders ? decoders : filter_chain_new(), 1));
    r->pipe = filter_pipe_new(s->loop, c, READ_CHUNK, pipe_to_reader, on_read_pipe_writable,
                              on_read_pipe_done, r);
    filter_pipe_bound_output(r->pipe, READ_OUT_BOUND);
    r->src = s->drv->source_new(s->state, key, source_data, source_done, r);
    return r;
}

void storage_read_resume(StorageRead *r) {
    if (!r->held)
        return;
    r->held = 0;
    filter_pipe_unblock(r->pipe);
}

void storage_read_stop(StorageRead *r) {
    if (r->reported || r->stopping)
        return;
    r->stopping = 1;
    if (r->src_done) { /* only the pipe's tail was left: it ends here */
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "storage: read stopped");
        read_report(r, NULL, &e);
        return;
    }
    if (r->src_paused) { /* a paused source must run into the stop */
        r->src_paused = 0;
        r->s->drv->source_resume(r->src);
    }
}

uint64_t storage_read_bytes(const StorageRead *r) {
    return r->bytes;
}

void storage_read_free(StorageRead *r) {
    if (r == NULL)
        return;
    if (!r->src_done && !r->stopping) {
        r->stopping = 1;
        if (r->src_paused) {
            r->src_paused = 0;
            r->s->drv->source_resume(r->src);
        }
    }
    r->owner_gone = 1;
    read_release(r);
}

/* ---- copy between stores ---- */

struct StorageCopy {
    StorageRead *rd;
    StorageWrite *w;
    Storage *to;
    void *server;  /* the driver's server-side copy in flight */
    int read_back; /* hashing the server-side copy */
    int deleting;  /* deleting a server-side copy that is not what was expected */
    char key[1024];
    StorageCopyDoneCb done;
    void *data;
    int held, read_done, finished;
    Err err;
    int failed;
    char read_sha[65];
    char expect_sha[65];
    uint64_t expect_size, size;
};

static void copy_end(StorageCopy *c, const StorageWritten *res, const Err *err) {
    if (c->finished)
        return;
    c->finished = 1;
    Err e; /* err may be c's own, and done may free c */
    if (err)
        e = *err;
    c->done(c, res, err ? &e : NULL, c->data);
}

/* 0 when the bytes seen (sha, size) are what was expected (or nothing was), else -1 with e. */
static int copy_expected(const StorageCopy *c, const char *sha, uint64_t size, Err *e) {
    if (c->expect_sha[0] == 0 || (strcmp(sha, c->expect_sha) == 0 && size == c->expect_size))
        return 0;
    err_set(e, ERR_PERMANENT, ERR_CODE_INVALID,
            "the source of %s has SHA-256 %.16s... (%" PRIu64 " bytes), expected %.16s... (%" PRIu64
            " bytes)",
            c->key, sha, size, c->expect_sha, c->expect_size);
    return -1;
}

static int copy_data(StorageRead *r, const char *buf, size_t len, void *data) {
    (void)r;
    StorageCopy *c = data;
    int w = storage_write(c->w, buf, len);
    if (w == 0)
        c->held = 1; /* the replica is full: hold the read until it drains */
    return w == 1 ? 1 : 0;
}

static void copy_writable(StorageWrite *w, void *data) {
    (void)w;
    StorageCopy *c = data;
    if (c->held && !c->read_done) {
        c->held = 0;
        storage_read_resume(c->rd);
    }
}

static void copy_read_done(StorageRead *r, const StorageReadResult *res, const Err *err,
                           void *data) {
    (void)r;
    StorageCopy *c = data;
    c->read_done = 1;
    if (err || copy_expected(c, res->sha256, res->size, &c->err) != 0) {
        if (err) {
            c->err = *err;
            err_prefix(&c->err, "%s", "reading the source");
        }
        c->failed = 1;
        storage_write_abort(c->w); /* nothing is stored */
        return;
    }
    snprintf(c->read_sha, sizeof(c->read_sha), "%s", res->sha256);
    storage_write_finish(c->w);
}

static void copy_write_done(StorageWrite *w, const StorageWritten *res, const Err *err,
                            void *data) {
    (void)w;
    StorageCopy *c = data;
    if (c->failed) {
        copy_end(c, NULL, &c->err);
        return;
    }
    if (err) {
        Err e = *err;
        if (!c->read_done)
            storage_read_stop(c->rd);
        copy_end(c, NULL, &e);
        return;
    }
    if (strcmp(res->sha256, c->read_sha) != 0) { /* cannot happen unless a stream lost bytes */
        Err e;
        err_set(&e, ERR_PERMANENT, ERR_CODE_PROTOCOL, "copied %s, read %s: the streams differ",
                res->sha256, c->read_sha);
        copy_end(c, NULL, &e);
        return;
    }
    copy_end(c, res, NULL);
}

static StorageCopy *copy_alloc(Storage *to, const char *key, const char *expect_sha256,
                               uint64_t expect_size, StorageCopyDoneCb done, void *data) {
    StorageCopy *c = xcalloc(1, sizeof(*c));
    c->to = to;
    c->done = done;
    c->data = data;
    snprintf(c->key, sizeof(c->key), "%s", key);
    if (expect_sha256)
        snprintf(c->expect_sha, sizeof(c->expect_sha), "%s", expect_sha256);
    c->expect_size = expect_size;
    return c;
}

StorageCopy *storage_copy_new(Storage *from, Storage *to, const char *key, const char *content_type,
                              const char *expect_sha256, uint64_t expect_size,
                              StorageCopyDoneCb done, void *data) {
    StorageCopy *c = copy_alloc(to, key, expect_sha256, expect_size, done, data);
    c->w = storage_write_new(to, key, content_type, NULL, copy_writable, copy_write_done, c);
    c->rd = storage_read_new(from, key, NULL, copy_data, copy_read_done, c);
    return c;
}

/* ---- server-side copy ---- */

static void server_copied(StorageCopy *c, const char *sha, uint64_t size);

static void on_bad_deleted(size_t deleted, size_t failed, const Err *err, void *data) {
    (void)deleted;
    (void)failed;
    (void)err; /* a copy left behind stays unused: its record never says completed */
    StorageCopy *c = data;
    c->deleting = 0;
    if (c->done == NULL) { /* freed by its owner meanwhile */
        storage_read_free(c->rd);
        free(c);
        return;
    }
    copy_end(c, NULL, &c->err);
}

static int read_back_data(StorageRead *r, const char *buf, size_t len, void *data) {
    (void)r;
    (void)buf;
    (void)len;
    (void)data;
    return 1; /* the stored bytes are hashed by the read itself */
}

static void read_back_done(StorageRead *r, const StorageReadResult *res, const Err *err,
                           void *data) {
    (void)r;
    StorageCopy *c = data;
    if (err) {
        Err e = *err;
        err_prefix(&e, "%s", "reading the copy back");
        copy_end(c, NULL, &e);
        return;
    }
    server_copied(c, res->sha256, res->size);
}

/* The copy's digest is known: it must be the one expected, else the copy goes again. */
static void server_copied(StorageCopy *c, const char *sha, uint64_t size) {
    if (copy_expected(c, sha, size, &c->err) != 0) {
        const char *keys[] = {c->key};
        c->deleting = 1;
        storage_delete(c->to, keys, 1, on_bad_deleted, c);
        return;
    }
    StorageWritten w = {.raw_size = size, .size = size};
    snprintf(w.sha256, sizeof(w.sha256), "%s", sha);
    copy_end(c, &w, NULL);
}

static void on_server_copy(const char *sha256, const Err *err, void *data) {
    StorageCopy *c = data;
    c->server = NULL; /* the driver is done with it */
    if (err) {
        copy_end(c, NULL, err);
        return;
    }
    /* the store's digest, when it is the one expected (or nothing is expected); a digest that
     * differs is not taken on trust: the copy is read back and hashed before it is refused */
    if (c->expect_sha[0] == 0 || (sha256 && strcmp(sha256, c->expect_sha) == 0)) {
        server_copied(c, sha256 ? sha256 : "", c->size);
        return;
    }
    c->read_back = 1; /* no digest from the store: hash what it stored */
    c->rd = storage_read_new(c->to, c->key, NULL, read_back_data, read_back_done, c);
}

StorageCopy *storage_copy_server_new(Storage *from, Storage *to, const char *key, uint64_t size,
                                     const char *content_type, const char *expect_sha256,
                                     StorageCopyDoneCb done, void *data) {
    if (from->drv != to->drv || to->drv->copy_new == NULL)
        return NULL;
    StorageCopy *c = copy_alloc(to, key, expect_sha256, size, done, data);
    c->size = size;
    c->server =
        to->drv->copy_new(to->state, from->state, key, size, content_type, on_server_copy, c);
    return c;
}

int storage_copy_read_back(const StorageCopy *c) {
    return c->read_back;
}

int storage_copy_source_lost(const Err *err) {
    return err && (err->code == ERR_CODE_INVALID || strstr(err->msg, "NoSuchKey") ||
                   strstr(err->msg, "404"));
}

int storage_copy_refused(const Err *err) {
    /* NotImplemented, AccessDenied across accounts...; not a missing key or bucket */
    return err && err->kind == ERR_PERMANENT && err->code == ERR_CODE_HTTP &&
           strstr(err->msg, "NoSuchKey") == NULL && strstr(err->msg, "NoSuchBucket") == NULL;
}

void storage_copy_free(StorageCopy *c) {
    if (c == NULL)
        return;
    c->finished = 1; /* no callback after this */
    if (c->server)
        c->to->drv->copy_free(c->server);
    if (c->deleting) { /* the delete's callback still comes: it frees c */
        c->done = NULL;
        return;
    }
    storage_read_free(c->rd);
    storage_write_free(c->w);
    free(c);
}
