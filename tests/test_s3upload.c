/*
 * test_s3upload: streaming multipart uploads against the local S3 server:
 * byte-exact, memory bounded by the part buffers, backpressure honoured,
 * empty objects, aborts and failures that leave nothing behind.
 */
#include "testutil.h"
#include "aws/s3upload.h"
#include "aws/sigv4.h"

#include <openssl/evp.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART (5u * 1024 * 1024)

typedef TuS3 Env;

static void env_open(Env *e, const char *bucket) {
    S3Options o;
    tu_s3_options(&o);
    o.bucket = bucket ? bucket : o.bucket;
    o.max_attempts = 2;
    o.backoff_base_ms = 10;
    tu_s3_open(e, &o);
}

static void env_close(Env *e) {
    tu_s3_close(e);
}

typedef struct {
    S3Upload *u;
    uint64_t total, pos;
    size_t max_buffered;
    int waits;
    int done;
    int failed;
    Err err;
    char sha[65];
    uint64_t bytes;
    int abort_at; /* abort after this many bytes (0: never) */
} Producer;

/* Bytes malloc holds now (heap in use + mmapped chunks); 0 under ASan, which has its own. */
static size_t heap_now(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
static size_t heap_max;

static void sample_heap(uv_check_t *h) {
    (void)h;
    size_t now = heap_now();
    if (now > heap_max)
        heap_max = now;
}

static void produce(S3Upload *u, void *data) {
    Producer *p = data;
    unsigned char chunk[64 * 1024];
    while (p->pos < p->total) {
        if (p->abort_at && p->pos >= (uint64_t)p->abort_at) {
            s3_upload_abort(u);
            return;
        }
        size_t n = sizeof(chunk);
        if (n > p->total - p->pos)
            n = (size_t)(p->total - p->pos);
        tu_pattern(chunk, p->pos, n);
        p->pos += n;
        int r = s3_upload_write(u, chunk, n);
        size_t b = s3_upload_buffered(u);
        if (b > p->max_buffered)
            p->max_buffered = b;
        if (r < 0)
            return;
        if (r == 0) {
            p->waits++;
            return; /* on_writable calls produce again */
        }
    }
    s3_upload_finish(u);
}

static void on_done(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                    const Err *err, void *data) {
    (void)res;
    Producer *p = data;
    s3_upload_free(u); /* ours until now; freed once this callback returns */
    p->done = 1;
    p->bytes = bytes;
    if (err) {
        p->failed = 1;
        p->err = *err;
    } else {
        snprintf(p->sha, sizeof(p->sha), "%s", sha256);
    }
}

typedef struct {
    int done;
    int failed;
    char code[64];
    char sha[65];
    int64_t len;
} Fetch;

static void on_fetch(const S3Result *res, const Err *err, void *data) {
    Fetch *f = data;
    f->done = 1;
    f->failed = err != NULL;
    snprintf(f->code, sizeof(f->code), "%s", res->code);
    if (!err) {
        f->len = (int64_t)res->body->len;
        sigv4_sha256_hex(res->body->data ? res->body->data : "", res->body->len, f->sha);
    }
}

static void on_deleted(const S3Result *res, const Err *err, void *data) {
    (void)res;
    Fetch *f = data;
    f->done = 1;
    f->failed = err != NULL;
}

static void expected_sha(uint64_t total, char out[65]) {
    unsigned char *all = malloc(total ? total : 1);
    for (uint64_t i = 0; i < total; i++)
        all[i] = tu_pattern_byte(i);
    sigv4_sha256_hex(all, total, out);
    free(all);
}

static void run_upload(Env *e, const char *key, uint64_t total, Producer *p) {
    memset(p, 0, sizeof(*p));
    p->total = total;
    p->u = s3_upload_new(e->s3, key, "application/octet-stream", PART, 3, produce, on_done, p);
    produce(p->u, p);
    assert_true(tu_run_until(&e->loop, &p->done, 120000));
}

static void test_streamed_upload_is_exact_and_bounded(void **state) {
    (void)state;
    Env e;
    env_open(&e, NULL);
    Producer p;
    uint64_t total = 8ull * PART + 12345; /* nine parts, the last one short */
    uint64_t t0 = uv_hrtime();
    run_upload(&e, "test-upload/big.bin", total, &p);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    if (p.failed)
        print_error("upload: %s\n", p.err.msg);
    assert_false(p.failed);
    printf("uploaded %llu bytes in %.2f s: %d waits, max buffered %zu bytes (bound %u)\n",
           (unsigned long long)total, secs, p.waits, p.max_buffered, 4 * PART);
    assert_true(p.bytes == total);
    assert_true(p.waits > 0);                /* the producer was really held back */
    assert_true(p.max_buffered <= 4 * PART); /* (in flight + 1) x part size */
    char want[65];
    expected_sha(total, want);
    assert_string_equal(p.sha, want);
    Fetch f = {0};
    s3_get_object(e.s3, "test-upload/big.bin", 64u * 1024 * 1024, on_fetch, &f);
    assert_true(tu_run_until(&e.loop, &f.done, 60000));
    assert_false(f.failed);
    assert_true(f.len == (int64_t)total);
    assert_string_equal(f.sha, want);
    env_close(&e);
}

static void test_empty_upload(void **state) {
    (void)state;
    Env e;
    env_open(&e, NULL);
    Producer p;
    run_upload(&e, "test-upload/empty.bin", 0, &p);
    assert_false(p.failed);
    Fetch f = {0};
    s3_get_object(e.s3, "test-upload/empty.bin", 1024, on_fetch, &f);
    assert_true(tu_run_until(&e.loop, &f.done, 10000));
    assert_false(f.failed);
    assert_int_equal(f.len, 0);
    env_close(&e);
}

/* The upload ended cancelled and left nothing under key. */
static void assert_cancelled_and_absent(Env *e, Producer *p, const char *key) {
    assert_true(p->failed);
    assert_int_equal(p->err.code, ERR_CODE_CANCELLED);
    Fetch f = {0};
    s3_head_object(e->s3, key, on_fetch, &f);
    assert_true(tu_run_until(&e->loop, &f.done, 10000));
    assert_true(f.failed);
    assert_string_equal(f.code, "NoSuchKey");
}

static void test_abort_leaves_nothing(void **state) {
    (void)state;
    Env e;
    env_open(&e, NULL);
    Producer p;
    memset(&p, 0, sizeof(p));
    p.total = 4ull * PART;
    p.abort_at = (int)(PART + PART / 2);
    p.u = s3_upload_new(e.s3, "test-upload/aborted.bin", NULL, PART, 2, produce, on_done, &p);
    produce(p.u, &p);
    assert_true(tu_run_until(&e.loop, &p.done, 60000));
    assert_cancelled_and_absent(&e, &p, "test-upload/aborted.bin");
    env_close(&e);
}

/* An object below one part is one PutObject: aborted before it is sent, nothing is stored. */
static void test_abort_small_leaves_nothing(void **state) {
    (void)state;
    Env e;
    env_open(&e, NULL);
    Producer p;
    memset(&p, 0, sizeof(p));
    p.u = s3_upload_new(e.s3, "test-upload/aborted-small.bin", NULL, PART, 2, produce, on_done, &p);
    char buf[1000];
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(s3_upload_write(p.u, buf, sizeof(buf)), 1);
    s3_upload_finish(p.u); /* its part is hashed on the thread pool: not sent yet */
    s3_upload_abort(p.u);
    assert_true(tu_run_until(&e.loop, &p.done, 10000));
    assert_cancelled_and_absent(&e, &p, "test-upload/aborted-small.bin");
    env_close(&e);
}

/* An upload of size bytes to a missing bucket fails, permanently, naming why: a small one (its
 * one PutObject) as a multipart one. */
static void failure_is_reported(uint64_t size) {
    Env e;
    env_open(&e, "no-such-bucket-here");
    Producer p;
    run_upload(&e, "k", size, &p);
    assert_true(p.failed);
    assert_int_equal(p.err.kind, ERR_PERMANENT);
    assert_non_null(strstr(p.err.msg, "NoSuchBucket"));
    env_close(&e);
}

static void test_small_failure_is_reported(void **state) {
    (void)state;
    failure_is_reported(1000);
}

static void test_failure_is_reported(void **state) {
    (void)state;
    failure_is_reported(3 * PART);
}

/* ---- streamed, paused and resumed reads of the object uploaded above ---- */

typedef struct {
    S3Op *op;
    uv_timer_t resume;
    EVP_MD_CTX *sha;
    uint64_t got;
    int calls, pauses;
    uint64_t break_at; /* stop the test loop here (0: never) */
    int at_break;
    int done, failed;
    Err err;
    int attempts;
} Reader;

static void on_resume(uv_timer_t *t) {
    Reader *r = t->data;
    s3_op_resume(r->op);
}

static int on_bytes(S3Op *op, const char *buf, size_t len, void *data) {
    Reader *r = data;
    r->op = op;
    if (++r->calls % 9 == 0) {
        r->pauses++;
        uv_timer_start(&r->resume, on_resume, 1, 0);
        return S3_PAUSE;
    }
    EVP_DigestUpdate(r->sha, buf, len);
    r->got += len;
    if (r->break_at && r->got >= r->break_at && !r->at_break)
        r->at_break = 1;
    return 0;
}

static void on_read_done(const S3Result *res, const Err *err, void *data) {
    Reader *r = data;
    r->done = 1;
    r->attempts = res->attempts;
    if (err) {
        r->failed = 1;
        r->err = *err;
    }
}

static void read_back_key(Env *e, Reader *r, const char *key, uint64_t break_at) {
    memset(r, 0, sizeof(*r));
    r->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL);
    uv_timer_init(&e->loop, &r->resume);
    r->resume.data = r;
    r->break_at = break_at;
    r->op = s3_get_stream(e->s3, key, on_bytes, on_read_done, r);
    if (break_at) {
        assert_true(tu_run_until(&e->loop, &r->at_break, 60000));
        /* the server dies under the read (kill -9) and comes back */
        assert_int_equal(tu_devenv("crash s3"), 0);
    }
    assert_true(tu_run_until(&e->loop, &r->done, 120000));
    uv_close((uv_handle_t *)&r->resume, NULL);
}

static void read_back(Env *e, Reader *r, uint64_t break_at) {
    read_back_key(e, r, "test-upload/big.bin", break_at);
}

static void digest_hex(EVP_MD_CTX *ctx, char out[65]) {
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_streamed_read_resumes(void **state) {
    (void)state;
    Env e;
    env_open(&e, NULL);
    uint64_t total = 8ull * PART + 12345; /* as uploaded by the first test */
    char want[65], got[65];
    expected_sha(total, want);

    Reader r;
    read_back(&e, &r, 0);
    assert_false(r.failed);
    assert_true(r.got == total);
    assert_true(r.pauses > 0);
    digest_hex(r.sha, got);
    assert_string_equal(got, want);

    Reader r2; /* a new one: r's timer may still be closing */
    read_back(&e, &r2, 10u * 1024 * 1024);
    if (r2.failed)
        print_error("resumed read: %s\n", r2.err.msg);
    assert_false(r2.failed);
    printf("read resumed after a server restart: %d attempts, %llu bytes\n", r2.attempts,
           (unsigned long long)r2.got);
    assert_true(r2.attempts >= 2);
    assert_true(r2.got == total);
    digest_hex(r2.sha, got);
    assert_string_equal(got, want);
    env_close(&e);
}

/* The expected digest of tu_pattern_byte(0 .. total-1), computed in slices (no 300 MB buffer). */
static void expected_sha_streamed(uint64_t total, char out[65]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char chunk[64 * 1024];
    for (uint64_t pos = 0; pos < total;) {
        size_t n = sizeof(chunk);
        if (n > total - pos)
            n = (size_t)(total - pos);
        tu_pattern(chunk, pos, n);
        EVP_DigestUpdate(ctx, chunk, n);
        pos += n;
    }
    digest_hex(ctx, out);
}

static void test_300mb_round_trip(void **state) {
    (void)state;
    Env e;
    env_open(&e, NULL);
    Producer p;
    uint64_t total = 300ull * 1000 * 1000;
    heap_max = 0;
    uv_check_t sampler; /* after every loop turn, when finished parts are being replaced */
    uv_check_init(&e.loop, &sampler);
    uv_check_start(&sampler, sample_heap);
    uint64_t t0 = uv_hrtime();
    run_upload(&e, "test-upload/300mb.bin", total, &p);
    double up = (double)(uv_hrtime() - t0) / 1e9;
    uv_close((uv_handle_t *)&sampler, NULL);
    if (p.failed)
        print_error("upload: %s\n", p.err.msg);
    assert_false(p.failed);
    assert_true(p.bytes == total);
    assert_true(p.max_buffered <= 4 * PART);
    /* everything malloc holds, not only the upload's own accounting: a finished part's
     * body once lived on until the next loop turn, so 4 in flight held up to 9 parts */
    printf("300 MB: heap peak %zu bytes (bound %u)\n", heap_max, 4 * PART + (4u << 20));
    assert_true(heap_max <= 4 * PART + (4u << 20));
    char want[65], got[65];
    expected_sha_streamed(total, want);
    assert_string_equal(p.sha, want);
    Reader r;
    t0 = uv_hrtime();
    read_back_key(&e, &r, "test-upload/300mb.bin", 0);
    double down = (double)(uv_hrtime() - t0) / 1e9;
    assert_false(r.failed);
    assert_true(r.got == total);
    digest_hex(r.sha, got);
    assert_string_equal(got, want);
    printf("300 MB: up %.1f s (max buffered %zu), down %.1f s, SHA-256 %s\n", up, p.max_buffered,
           down, got);
    Fetch f = {0};
    s3_delete_object(e.s3, "test-upload/300mb.bin", on_deleted, &f); /* keep the dev store small */
    assert_true(tu_run_until(&e.loop, &f.done, 30000));
    env_close(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streamed_upload_is_exact_and_bounded),
        cmocka_unit_test(test_streamed_read_resumes),
        cmocka_unit_test(test_empty_upload),
        cmocka_unit_test(test_abort_small_leaves_nothing),
        cmocka_unit_test(test_small_failure_is_reported),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_failure_is_reported),
        cmocka_unit_test(test_300mb_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
