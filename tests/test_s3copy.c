/*
 * test_s3copy: server-side copies between two buckets of one service, on both local S3
 * servers: s3rver (it checks every signature, the x-amz-copy-source header's included) and
 * moto. One CopyObject, a multipart UploadPartCopy of three ranges with two in flight,
 * byte-exact; a missing source named and nothing left at the key; a copy abandoned in flight
 * leaves no object, and (moto, which lists them: s3rver cannot) no upload in progress.
 */
#include "testutil.h"
#include "aws/s3copy.h"
#include "aws/s3list.h"
#include "aws/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART   (5u * 1024 * 1024)
#define BUCKET "bw-copy-test"

typedef struct {
    TuS3 src, dst;
    int moto;
} Env;

typedef struct {
    int done, failed;
    char code[64], sha[65];
    int64_t len;
    Err err;
} Res;

static void on_res(const S3Result *res, const Err *err, void *data) {
    Res *r = data;
    r->done = 1;
    r->failed = err != NULL;
    if (err)
        r->err = *err;
    snprintf(r->code, sizeof(r->code), "%s", res->code);
    if (!err && res->body) {
        r->len = (int64_t)res->body->len;
        sigv4_sha256_hex(res->body->data ? res->body->data : "", res->body->len, r->sha);
    }
}

/* Both clients on one loop, as the worker's primary and replica are. */
static void env_open(Env *e, int moto) {
    S3Options o;
    tu_s3_options(&o);
    e->moto = moto;
    if (moto)
        o.endpoint = tu_env("BW_MOTO_ENDPOINT");
    o.max_attempts = 2;
    o.backoff_base_ms = 10;
    tu_s3_open(&e->src, &o);
    o.bucket = BUCKET;
    e->dst.s3 = s3_client_new(&e->src.loop, e->src.http, &o);
    Res r = {0}; /* the second bucket (an existing one answers 409: fine) */
    s3_request(e->dst.s3, "PUT", NULL, NULL, NULL, 0, NULL, 0, on_res, &r);
    assert_true(tu_run_until(&e->src.loop, &r.done, 10000));
    assert_true(!r.failed || strcmp(r.code, "BucketAlreadyOwnedByYou") == 0 ||
                strcmp(r.code, "BucketAlreadyExists") == 0);
}

static void env_close(Env *e) {
    s3_client_free(e->dst.s3);
    tu_s3_close(&e->src);
}

static void put_pattern(Env *e, const char *key, size_t n, char sha[65]) {
    unsigned char *p = malloc(n);
    tu_pattern(p, 0, n);
    sigv4_sha256_hex(p, n, sha);
    Res r = {0};
    s3_put_object(e->src.s3, key, p, n, "application/octet-stream", on_res, &r);
    free(p);
    assert_true(tu_run_until(&e->src.loop, &r.done, 60000));
    assert_false(r.failed);
}

typedef struct {
    int done;
    char sha[65];
    Err err;
    int failed;
} Copied;

static void on_copied(S3Copy *cp, const char *sha256, const Err *err, void *data) {
    Copied *k = data;
    s3_copy_object_free(cp);
    k->done = 1;
    k->failed = err != NULL;
    if (err)
        k->err = *err;
    else
        snprintf(k->sha, sizeof(k->sha), "%s", sha256);
}

static void get_dst(Env *e, const char *key, Res *r) {
    memset(r, 0, sizeof(*r));
    s3_get_object(e->dst.s3, key, 64u << 20, on_res, r);
    assert_true(tu_run_until(&e->src.loop, &r->done, 60000));
}

typedef struct {
    int n, done;
} Uploads;

static int count_uploads(const S3MultipartUpload *u, size_t n, void *data) {
    (void)u;
    ((Uploads *)data)->n += (int)n;
    return 0;
}

static void on_listed(uint64_t count, const Err *err, void *data) {
    (void)count;
    assert_null(err);
    ((Uploads *)data)->done = 1;
}

/* Multipart uploads in progress under prefix in the destination bucket. */
static int uploads_in_dst(Env *e, const char *prefix) {
    if (!e->moto)
        return 0; /* s3rver has no ListMultipartUploads: the object's absence is checked */
    Uploads u = {0};
    s3_list_uploads(e->dst.s3, prefix, count_uploads, on_listed, &u);
    assert_true(tu_run_until(&e->src.loop, &u.done, 10000));
    return u.n;
}

static void copy_and_check(Env *e, const char *key, size_t n, int parts_in_flight) {
    char sha[65];
    put_pattern(e, key, n, sha);
    Copied k = {0};
    s3_copy_object_new(e->dst.s3, s3_client_bucket(e->src.s3), key, n, NULL, PART, PART,
                       parts_in_flight, on_copied, &k);
    assert_true(tu_run_until(&e->src.loop, &k.done, 60000));
    if (k.failed)
        fail_msg("copy failed: %s", k.err.msg);
    /* s3rver computes no SHA-256 (the empty string says so); a service that does must agree */
    assert_true(k.sha[0] == 0 || strcmp(k.sha, sha) == 0);
    if (e->moto && n <= PART) /* moto computes it for a CopyObject, as AWS does */
        assert_string_equal(k.sha, sha);
    Res r;
    get_dst(e, key, &r);
    assert_false(r.failed);
    assert_int_equal(r.len, n);
    assert_string_equal(r.sha, sha);
}

static void test_one_copy_object(void **state) {
    (void)state;
    for (int moto = 0; moto < 2; moto++) {
        Env e;
        env_open(&e, moto);
        copy_and_check(&e, "test-copy/small.bin", 1234567, 0);
        env_close(&e);
    }
}

static void test_upload_part_copy_of_three_ranges(void **state) {
    (void)state;
    for (int moto = 0; moto < 2; moto++) {
        Env e;
        env_open(&e, moto);
        copy_and_check(&e, "test-copy/large.bin", 2 * PART + 12345, 2);
        assert_int_equal(uploads_in_dst(&e, "test-copy/"), 0);
        env_close(&e);
    }
}

static void test_a_missing_source_is_named(void **state) {
    (void)state;
    for (int moto = 0; moto < 2; moto++) {
        Env e;
        env_open(&e, moto);
        for (int multipart = 0; multipart < 2; multipart++) {
            Copied k = {0};
            s3_copy_object_new(e.dst.s3, s3_client_bucket(e.src.s3), "test-copy/none.bin",
                               multipart ? 3 * PART : 100, NULL, PART, PART, 2, on_copied, &k);
            assert_true(tu_run_until(&e.src.loop, &k.done, 60000));
            assert_true(k.failed);
            assert_non_null(strstr(k.err.msg, "NoSuchKey"));
            Res r;
            get_dst(&e, "test-copy/none.bin", &r);
            assert_true(r.failed);
        }
        assert_int_equal(uploads_in_dst(&e, "test-copy/none"), 0);
        env_close(&e);
    }
}

static void test_an_abandoned_copy_leaves_nothing(void **state) {
    (void)state;
    for (int moto = 0; moto < 2; moto++) {
        Env e;
        env_open(&e, moto);
        char sha[65];
        put_pattern(&e, "test-copy/abandoned.bin", 3 * PART, sha);
        Copied k = {0};
        S3Copy *cp =
            s3_copy_object_new(e.dst.s3, s3_client_bucket(e.src.s3), "test-copy/abandoned.bin",
                               3 * PART, NULL, PART, PART, 1, on_copied, &k);
        tu_run_to_end(&e.src.loop, 30); /* the upload created, perhaps a part in flight */
        s3_copy_object_free(cp);
        tu_run_to_end(&e.src.loop, 5000); /* the parts answer, then the abort */
        assert_int_equal(k.done, 0);
        Res r;
        get_dst(&e, "test-copy/abandoned.bin", &r);
        assert_true(r.failed);
        assert_int_equal(uploads_in_dst(&e, "test-copy/abandoned"), 0);
        env_close(&e);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_copy_object),
        cmocka_unit_test(test_upload_part_copy_of_three_ranges),
        cmocka_unit_test(test_a_missing_source_is_named),
        cmocka_unit_test(test_an_abandoned_copy_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
