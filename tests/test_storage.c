/*
 * test_storage: the store's streams and the checked read, in process over the
 * in-memory store (pure logic, valgrind too): a gzip round trip with the
 * stored digest and sizes, a write freed in flight (nothing stored, no callback,
 * no leak), a write the store refuses half-way, a read held and resumed, a read
 * stopped, a damaged object read to its end and named by its digest, and
 * bcheck over the same store: a document checked, a digest refused. Copies
 * between two stores: streamed and server-side (read back to be hashed), the
 * expected digest enforced (a source that is not it is never stored, a wrong
 * server-side copy is deleted again), a copy freed in flight.
 */
#include "format/bcheck.h"
#include "format/bfile.h"
#include "io/codec.h"
#include "storage/storage.h"
#include "storage/storage_mem.h"
#include "testutil.h"

#include <openssl/sha.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define OBJ   (3u << 20)
#define PIECE 50000

typedef struct {
    uv_loop_t loop;
    Storage *s;
    StorageWrite *w;
    const unsigned char *in;
    size_t n, off;
    int written, writable, free_in_done, late_write;
    StorageWritten res;
    Err err;
    /* reading */
    StorageRead *r;
    Buf out;
    int read_done, holds, stop_at, read_calls;
    uv_timer_t resume;
    StorageReadResult rres;
    char decode_error[256];
} Ctx;

static void ctx_open(Ctx *c) {
    memset(c, 0, sizeof(*c));
    uv_loop_init(&c->loop);
    c->s = storage_mem_new(&c->loop);
}

static void ctx_close(Ctx *c) {
    assert_int_equal(storage_mem_open_streams(storage_mem_of(c->s)), 0);
    storage_free(c->s);
    buf_free(&c->out);
    tu_loop_close(&c->loop);
}

static void pump(Ctx *c) {
    while (c->off < c->n) {
        size_t k = c->n - c->off < PIECE ? c->n - c->off : PIECE;
        int rc = storage_write(c->w, c->in + c->off, k);
        c->off += k;
        if (rc <= 0)
            return; /* 0: on_writable; -1: on_done says why */
    }
    storage_write_finish(c->w);
}

static void on_writable(StorageWrite *w, void *data) {
    (void)w;
    Ctx *c = data;
    c->writable++;
    pump(c);
}

static void on_written(StorageWrite *w, const StorageWritten *res, const Err *err, void *data) {
    Ctx *c = data;
    c->written++;
    if (res)
        c->res = *res;
    if (err)
        c->err = *err;
    if (c->late_write)
        c->late_write = storage_write(w, "x", 1); /* after the end: refused, not a crash */
    if (c->free_in_done) {
        storage_write_free(w);
        c->w = NULL;
    }
}

/* Bytes gzip cannot shrink (xorshift): the stored object is as long as the input. */
static unsigned char *noise(size_t n) {
    unsigned char *p = malloc(n);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
    return p;
}

static void write_object(Ctx *c, const char *key, const unsigned char *in, size_t n) {
    c->in = in;
    c->n = n;
    c->off = 0;
    c->w = storage_write_new(c->s, key, "application/gzip", tu_gzip_encoder(), on_writable,
                             on_written, c);
    pump(c);
    assert_true(tu_run_until(&c->loop, &c->written, 30000));
}

/* ---- reading ---- */

static void on_resume(uv_timer_t *t) {
    Ctx *c = t->data;
    storage_read_resume(c->r);
}

static int on_data(StorageRead *r, const char *buf, size_t len, void *data) {
    Ctx *c = data;
    buf_append(&c->out, buf, len);
    if (++c->read_calls == c->stop_at)
        storage_read_stop(r);
    if (c->holds > 0) { /* the consumer is full: resumed from a timer, later */
        c->holds--;
        uv_timer_start(&c->resume, on_resume, 5, 0);
        return 0;
    }
    return 1;
}

static void on_read(StorageRead *r, const StorageReadResult *res, const Err *err, void *data) {
    (void)r;
    Ctx *c = data;
    c->read_done = 1;
    if (res) {
        c->rres = *res;
        snprintf(c->decode_error, sizeof(c->decode_error), "%s",
                 res->decode_error ? res->decode_error : "");
    }
    if (err)
        c->err = *err;
}

static void read_object(Ctx *c, const char *key) {
    CodecList l;
    Err e;
    assert_int_equal(codec_list_parse("gzip", &l, &e), 0);
    uv_timer_init(&c->loop, &c->resume);
    c->resume.data = c;
    c->read_done = 0;
    err_clear(&c->err);
    c->r = storage_read_new(c->s, key, codec_decoder(&l, NULL), on_data, on_read, c);
    assert_true(tu_run_until(&c->loop, &c->read_done, 30000));
    storage_read_free(c->r);
    uv_close((uv_handle_t *)&c->resume, NULL);
}

static void hex_sha(const char *p, size_t n, char out[65]) {
    unsigned char md[32];
    SHA256((const unsigned char *)p, n, md);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_round_trip_with_digest_and_sizes(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    unsigned char *in = tu_pattern_new(OBJ);
    write_object(&c, "backups/u/a.json.gz", in, OBJ);
    assert_false(err_is_set(&c.err));
    assert_true(c.writable > 0); /* the producer did wait on backpressure */
    size_t len = 0;
    const char *obj = storage_mem_object(storage_mem_of(c.s), "backups/u/a.json.gz", &len);
    assert_non_null(obj);
    char want[65];
    hex_sha(obj, len, want);
    assert_string_equal(c.res.sha256, want);
    assert_int_equal(c.res.size, len);
    assert_int_equal(c.res.raw_size, OBJ);
    assert_true(len < OBJ);
    storage_write_free(c.w);

    c.holds = 3;
    read_object(&c, "backups/u/a.json.gz");
    assert_false(err_is_set(&c.err));
    assert_int_equal(c.out.len, OBJ);
    assert_memory_equal(c.out.data, in, OBJ);
    assert_string_equal(c.rres.sha256, want);
    assert_int_equal(c.rres.size, len);
    assert_string_equal(c.decode_error, "");
    free(in);
    ctx_close(&c);
}

static void test_a_write_freed_in_flight_stores_nothing(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    unsigned char *in = tu_pattern_new(OBJ);
    c.in = in;
    c.n = OBJ / 2;
    c.w = storage_write_new(c.s, "k", "x", tu_gzip_encoder(), on_writable, on_written, &c);
    pump(&c); /* a chunk is on the thread pool now */
    storage_write_free(c.w);
    assert_true(tu_run_to_end(&c.loop, 10000));
    size_t len;
    assert_null(storage_mem_object(storage_mem_of(c.s), "k", &len));
    assert_int_equal(c.written, 0); /* no callback after free */
    free(in);
    ctx_close(&c);
}

static void test_a_refused_write_reports_and_refuses_more(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    storage_mem_fail_write_after(storage_mem_of(c.s), 100 * 1024);
    unsigned char *in = tu_pattern_new(OBJ);
    c.free_in_done = 1;
    c.late_write = 1;
    write_object(&c, "k", in, OBJ);
    assert_true(err_is_set(&c.err));
    assert_non_null(strstr(c.err.msg, "AccessDenied"));
    assert_int_equal(c.late_write, -1);
    assert_null(c.w); /* freed inside its own on_done */
    size_t len;
    assert_null(storage_mem_object(storage_mem_of(c.s), "k", &len));
    free(in);
    ctx_close(&c);
}

static void test_a_damaged_object_is_named_by_its_digest(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    unsigned char *in = tu_pattern_new(OBJ);
    write_object(&c, "k", in, OBJ);
    storage_write_free(c.w);
    char good[65];
    snprintf(good, sizeof(good), "%s", c.res.sha256);
    size_t len;
    const char *obj = storage_mem_object(storage_mem_of(c.s), "k", &len);
    char *bad = malloc(len);
    memcpy(bad, obj, len);
    bad[len / 2] ^= 0x55;
    storage_mem_set(storage_mem_of(c.s), "k", bad, len);
    read_object(&c, "k");
    assert_false(err_is_set(&c.err)); /* read to its end */
    assert_int_equal(c.rres.size, len);
    assert_string_not_equal(c.rres.sha256, good);
    assert_string_not_equal(c.decode_error, ""); /* and the decoder gave up on the way */
    free(bad);
    free(in);
    ctx_close(&c);
}

static void test_a_read_stopped_ends_cancelled(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    unsigned char *in = noise(OBJ); /* read in many pieces while the source still streams */
    write_object(&c, "k", in, OBJ);
    storage_write_free(c.w);
    storage_mem_set_read_piece(storage_mem_of(c.s), 4096);
    c.stop_at = 1;
    read_object(&c, "k");
    assert_true(err_is_set(&c.err));
    assert_int_equal(c.err.code, ERR_CODE_CANCELLED);
    assert_true(c.out.len < OBJ);
    free(in);
    ctx_close(&c);
}

/* ---- bcheck over the store ---- */

typedef struct {
    int items, done;
    Err err;
} Check;

static int on_item(int section, const char *table, const char *json, size_t len, void *data,
                   Err *err) {
    (void)section;
    (void)table;
    (void)json;
    (void)len;
    (void)err;
    ((Check *)data)->items++;
    return 0;
}

static void on_checked(BCheck *b, const Err *err, void *data) {
    (void)b;
    Check *k = data;
    k->done = 1;
    if (err)
        k->err = *err;
}

static void test_bcheck_reads_a_document_and_refuses_a_digest(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    CodecList gz;
    Err e;
    assert_int_equal(codec_list_parse("gzip", &gz, &e), 0);
    BfileHeader h = {"backup-u-1", "u", "full", NULL, "1:1:", NULL, "2026-01-01T00:00:00.000Z",
                     &gz};
    Buf doc = BUF_INIT;
    BfileWriter w;
    bfile_begin(&w, &doc, &h);
    bfile_list_begin(&w, &doc, "orders");
    for (int i = 0; i < 1000; i++) {
        char row[64];
        int n = snprintf(row, sizeof(row), "{\"id\":%d}", i);
        bfile_item(&w, &doc, row, (size_t)n);
    }
    bfile_list_end(&w, &doc);
    bfile_end(&w, &doc, "{\"rows\":{\"orders\":1000},\"deleted\":{}}");
    write_object(&c, "backups/u/backup-u-1.json.gz", (const unsigned char *)doc.data, doc.len);
    storage_write_free(c.w);

    BCheckTarget t = {"backup-u-1", "u", "backups/u/backup-u-1.json.gz", c.res.sha256, &gz,
                      NULL,         NULL};
    Check k = {0};
    BCheck *b = bcheck_start(c.s, &t, 1, on_item, on_checked, &k);
    assert_true(tu_run_until(&c.loop, &k.done, 30000));
    assert_false(err_is_set(&k.err));
    assert_int_equal(k.items, 1000);
    assert_int_equal(bcheck_count(b, 0, "orders"), 1000);
    bcheck_free(b);

    char other[65];
    memset(other, 'a', 64);
    other[64] = 0;
    t.checksum = other;
    memset(&k, 0, sizeof(k));
    b = bcheck_start(c.s, &t, 1, on_item, on_checked, &k);
    assert_true(tu_run_until(&c.loop, &k.done, 30000));
    assert_non_null(strstr(k.err.msg, "Backup checksum verification failed"));
    bcheck_free(b);
    buf_free(&doc);
    ctx_close(&c);
}

/* ---- copies between stores ---- */

typedef struct {
    int done;
    StorageWritten res;
    Err err;
    int failed;
} Copied;

static void on_copy(StorageCopy *cp, const StorageWritten *res, const Err *err, void *data) {
    (void)cp;
    Copied *k = data;
    k->done = 1;
    k->failed = err != NULL;
    if (res)
        k->res = *res;
    if (err)
        k->err = *err;
}

static void on_deleted(size_t deleted, size_t failed, const Err *err, void *data) {
    (void)deleted;
    (void)failed;
    (void)err;
    *(int *)data = 1;
}

static void test_copies_check_the_expected_digest(void **state) {
    (void)state;
    Ctx c;
    ctx_open(&c);
    Storage *to = storage_mem_new(&c.loop);
    MemStore *src = storage_mem_of(c.s), *dst = storage_mem_of(to);
    size_t n = 300000;
    unsigned char *in = noise(n);
    char sha[65], wrong[65];
    hex_sha((const char *)in, n, sha);
    memset(wrong, 'b', 64);
    wrong[64] = 0;
    storage_mem_set(src, "a/obj", in, n);
    for (int server = 0; server < 2; server++) {
        /* the right digest: stored whole, its digest and size reported */
        Copied k = {0};
        StorageCopy *cp = server
                              ? storage_copy_server_new(c.s, to, "a/obj", n, NULL, sha, on_copy, &k)
                              : storage_copy_new(c.s, to, "a/obj", NULL, sha, n, on_copy, &k);
        assert_non_null(cp);
        assert_true(tu_run_until(&c.loop, &k.done, 30000));
        assert_false(k.failed);
        assert_string_equal(k.res.sha256, sha);
        assert_int_equal(k.res.size, n);
        assert_int_equal(storage_copy_read_back(cp), server); /* mem computes no digest */
        storage_copy_free(cp);
        size_t len = 0;
        const char *got = storage_mem_object(dst, "a/obj", &len);
        assert_non_null(got);
        assert_int_equal(len, n);
        assert_memory_equal(got, in, n);
        /* another digest expected: refused, and nothing left at the key */
        const char *keys[] = {"a/obj"};
        int gone = 0;
        storage_delete(to, keys, 1, on_deleted, &gone);
        assert_true(tu_run_until(&c.loop, &gone, 30000));
        memset(&k, 0, sizeof(k));
        cp = server ? storage_copy_server_new(c.s, to, "a/obj", n, NULL, wrong, on_copy, &k)
                    : storage_copy_new(c.s, to, "a/obj", NULL, wrong, n, on_copy, &k);
        assert_true(tu_run_until(&c.loop, &k.done, 30000));
        assert_true(k.failed);
        assert_int_equal(k.err.code, ERR_CODE_INVALID);
        assert_non_null(strstr(k.err.msg, "expected bbbbbbbb"));
        assert_null(storage_mem_object(dst, "a/obj", &len));
        storage_copy_free(cp);
    }
    /* a missing source: the error, nothing stored */
    Copied k = {0};
    StorageCopy *cp = storage_copy_server_new(c.s, to, "a/none", 10, NULL, sha, on_copy, &k);
    assert_true(tu_run_until(&c.loop, &k.done, 30000));
    assert_true(k.failed);
    storage_copy_free(cp);
    /* freed in flight: no callback, no leak */
    memset(&k, 0, sizeof(k));
    storage_copy_free(storage_copy_server_new(c.s, to, "a/obj", n, NULL, sha, on_copy, &k));
    storage_copy_free(storage_copy_new(c.s, to, "a/obj", NULL, sha, n, on_copy, &k));
    tu_run_to_end(&c.loop, 2000);
    assert_int_equal(k.done, 0);
    free(in);
    assert_int_equal(storage_mem_open_streams(dst), 0);
    storage_free(to);
    ctx_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_with_digest_and_sizes),
        cmocka_unit_test(test_a_write_freed_in_flight_stores_nothing),
        cmocka_unit_test(test_a_refused_write_reports_and_refuses_more),
        cmocka_unit_test(test_a_damaged_object_is_named_by_its_digest),
        cmocka_unit_test(test_a_read_stopped_ends_cancelled),
        cmocka_unit_test(test_bcheck_reads_a_document_and_refuses_a_digest),
        cmocka_unit_test(test_copies_check_the_expected_digest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
