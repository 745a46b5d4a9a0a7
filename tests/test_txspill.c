/* txspill: streamed transactions kept on disk, cut back at a subtransaction's abort, dropped at
 * their abort, read back in order at their commit (pure logic over temporary files). The capture
 * test (test_capture.sh, 9b) streams real transactions through it. */
#include "capture/txspill.h"

#include "base/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* A change message as pgoutput streams it: type, the (sub)transaction's xid, then a body. */
static size_t change(char *out, char type, uint32_t xid, const char *body) {
    out[0] = type;
    out[1] = (char)(xid >> 24);
    out[2] = (char)(xid >> 16);
    out[3] = (char)(xid >> 8);
    out[4] = (char)xid;
    size_t n = strlen(body);
    memcpy(out + 5, body, n);
    return 5 + n;
}

static void keep(TxSpill *s, uint32_t top, uint32_t sub, const char *body) {
    char m[64];
    Err e;
    size_t n = change(m, 'I', sub, body);
    assert_int_equal(txspill_keep(s, top, m, n, &e), 0);
}

/* The bodies of t's messages, comma-separated. */
static void bodies(TxStream *t, Buf *out) {
    char *m;
    uint32_t n;
    Err e;
    int r;
    while ((r = txstream_next(t, &m, &n, &e)) == 1) {
        buf_printf(out, "%s%.*s", out->len ? "," : "", (int)(n - 5), m + 5);
        free(m);
    }
    assert_int_equal(r, 0);
}

static void test_commit_abort_and_savepoints(void **state) {
    (void)state;
    TxSpill *s = txspill_new();
    Err e;
    /* 100: top-level, a savepoint 101 rolled back (with 102 nested in it), then 103 kept */
    keep(s, 100, 100, "a");
    keep(s, 200, 200, "other");
    keep(s, 100, 101, "b");
    keep(s, 100, 102, "c");
    keep(s, 100, 101, "d");
    uint64_t before = txspill_bytes(s);
    assert_true(txspill_abort(s, 100, 102, &e) > 0);         /* cut at c: c and d go */
    assert_int_equal(txspill_abort(s, 100, 101, &e) > 0, 1); /* cut at b */
    assert_int_equal(txspill_abort(s, 100, 999, &e), 0);     /* a subtransaction never seen */
    assert_true(txspill_bytes(s) < before);
    keep(s, 100, 103, "e");
    keep(s, 100, 100, "f");
    /* 200 aborted whole: dropped, its bytes with it */
    uint64_t mid = txspill_bytes(s);
    assert_true(txspill_abort(s, 200, 200, &e) > 0);
    assert_true(txspill_bytes(s) < mid);
    TxStream *t = txspill_take(s, 100);
    assert_int_equal(txspill_bytes(s), 0); /* nothing else kept */
    Buf got = BUF_INIT;
    bodies(t, &got);
    assert_string_equal(got.data, "a,e,f");
    assert_true(txstream_bytes(t) > 0);
    txstream_free(t);
    /* a commit of a transaction nothing of which came: empty */
    t = txspill_take(s, 300);
    buf_reset(&got);
    bodies(t, &got);
    assert_int_equal(got.len, 0);
    txstream_free(t);
    /* a reset drops everything */
    keep(s, 400, 400, "x");
    txspill_reset(s);
    assert_int_equal(txspill_bytes(s), 0);
    t = txspill_take(s, 400);
    buf_reset(&got);
    bodies(t, &got);
    assert_int_equal(got.len, 0);
    txstream_free(t);
    buf_free(&got);
    txspill_free(s);
}

static void test_large(void **state) {
    (void)state;
    /* more than a stdio buffer, and messages of every size up to 64 kB, back in order */
    TxSpill *s = txspill_new();
    Err e;
    char *m = malloc(70000);
    for (int i = 0; i < 200; i++) {
        size_t n = 5 + (size_t)(i * 331 % 65536);
        memset(m, 'a' + i % 26, n);
        change(m, 'U', 7, "");
        assert_int_equal(txspill_keep(s, 7, m, n, &e), 0);
    }
    TxStream *t = txspill_take(s, 7);
    char *got;
    uint32_t n;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(txstream_next(t, &got, &n, &e), 1);
        assert_int_equal(n, 5 + (uint32_t)(i * 331 % 65536));
        assert_true(n == 5 || got[n - 1] == 'a' + i % 26);
        free(got);
    }
    assert_int_equal(txstream_next(t, &got, &n, &e), 0);
    txstream_free(t);
    txspill_free(s);
    free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_abort_and_savepoints),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
