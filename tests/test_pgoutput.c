/* pgoutput: logical replication's frames and messages decoded (pure logic). The messages are
 * built here byte by byte as the protocol page lays them out; the capture test
 * (test_capture.sh) decodes a real server's stream. */
#include "pg/pgoutput.h"

#include "base/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void u8(Buf *b, unsigned v) {
    char c = (char)v;
    buf_append(b, &c, 1);
}
static void u16(Buf *b, unsigned v) {
    u8(b, v >> 8);
    u8(b, v & 255);
}
static void u32(Buf *b, uint32_t v) {
    u16(b, v >> 16);
    u16(b, v & 0xffff);
}
static void u64(Buf *b, uint64_t v) {
    u32(b, (uint32_t)(v >> 32));
    u32(b, (uint32_t)v);
}
static void str(Buf *b, const char *s) {
    buf_append(b, s, strlen(s) + 1);
}
static void text(Buf *b, const char *s) {
    u8(b, 't');
    u32(b, (uint32_t)strlen(s));
    buf_append(b, s, strlen(s));
}

/* Relation 16384 public.orders (id key, user_id key, note), optionally with xid first. */
static void relation(Buf *b, int streamed) {
    u8(b, 'R');
    if (streamed)
        u32(b, 777);
    u32(b, 16384);
    str(b, "public");
    str(b, "orders");
    u8(b, 'i');
    u16(b, 3);
    u8(b, 1), str(b, "id"), u32(b, 2950), u32(b, 0xffffffff);
    u8(b, 1), str(b, "user_id"), u32(b, 2950), u32(b, 0xffffffff);
    u8(b, 0), str(b, "note"), u32(b, 25), u32(b, 0xffffffff);
}

static PgoDecoder *decoder_with_relation(void) {
    PgoDecoder *d = pgo_decoder_new();
    Buf b = BUF_INIT;
    relation(&b, 0);
    PgoMessage m;
    Err e;
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.kind, 'R');
    assert_string_equal(m.rel->relname, "orders");
    assert_int_equal(m.rel->ncols, 3);
    assert_true(m.rel->cols[0].key && m.rel->cols[1].key && !m.rel->cols[2].key);
    assert_int_equal(m.rel->identity, 'i');
    buf_free(&b);
    return d;
}

static void test_transaction(void **state) {
    (void)state;
    PgoDecoder *d = decoder_with_relation();
    PgoMessage m;
    Err e;
    Buf b = BUF_INIT;
    u8(&b, 'B'), u64(&b, 0x1000002A0ULL), u64(&b, 123456789), u32(&b, 991);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.kind, 'B');
    assert_int_equal(m.lsn, 0x1000002A0ULL);
    assert_int_equal(m.time, 123456789);
    assert_int_equal(m.xid, 991);

    buf_reset(&b);
    u8(&b, 'I'), u32(&b, 16384), u8(&b, 'N'), u16(&b, 3);
    text(&b, "a"), text(&b, "u1"), u8(&b, 'n');
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.kind, 'I');
    assert_int_equal(m.new_tuple.n, 3);
    assert_int_equal(m.new_tuple.v[1].kind, 't');
    assert_memory_equal(m.new_tuple.v[1].val, "u1", 2);
    assert_int_equal(m.new_tuple.v[2].kind, 'n');

    /* an update that moved the row: the old key, then the new row with an unchanged TOAST */
    buf_reset(&b);
    u8(&b, 'U'), u32(&b, 16384), u8(&b, 'K'), u16(&b, 3);
    text(&b, "a"), text(&b, "u1"), u8(&b, 'n');
    u8(&b, 'N'), u16(&b, 3), text(&b, "a"), text(&b, "u2"), u8(&b, 'u');
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.old_kind, 'K');
    assert_memory_equal(m.old_tuple.v[1].val, "u1", 2);
    assert_memory_equal(m.new_tuple.v[1].val, "u2", 2);
    assert_int_equal(m.new_tuple.v[2].kind, 'u');

    /* an update that did not touch the key: the new row only */
    buf_reset(&b);
    u8(&b, 'U'), u32(&b, 16384), u8(&b, 'N'), u16(&b, 3);
    text(&b, "a"), text(&b, "u2"), text(&b, "hello");
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.old_kind, 0);
    assert_int_equal(m.new_tuple.n, 3);

    buf_reset(&b);
    u8(&b, 'D'), u32(&b, 16384), u8(&b, 'K'), u16(&b, 3);
    text(&b, "a"), text(&b, "u2"), u8(&b, 'n');
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.kind, 'D');
    assert_memory_equal(m.old_tuple.v[0].val, "a", 1);

    buf_reset(&b);
    u8(&b, 'T'), u32(&b, 2), u8(&b, 1), u32(&b, 16384), u32(&b, 99999);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.nrels, 2);
    assert_int_equal(m.truncate_flags, 1);
    assert_string_equal(m.rels[0]->relname, "orders");
    assert_null(m.rels[1]);

    buf_reset(&b);
    u8(&b, 'C'), u8(&b, 0), u64(&b, 0x1000002A0ULL), u64(&b, 0x1000002D8ULL), u64(&b, 123456789);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.lsn, 0x1000002A0ULL);
    assert_int_equal(m.end_lsn, 0x1000002D8ULL);
    buf_free(&b);
    pgo_decoder_free(d);
}

static void test_streamed(void **state) {
    (void)state;
    PgoDecoder *d = pgo_decoder_new();
    PgoMessage m;
    Err e;
    Buf b = BUF_INIT;
    u8(&b, 'S'), u32(&b, 777), u8(&b, 1);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.first_segment, 1);
    buf_reset(&b);
    relation(&b, 1); /* inside a stream block: the xid comes first */
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.xid, 777);
    assert_string_equal(m.rel->relname, "orders");
    buf_reset(&b);
    u8(&b, 'I'), u32(&b, 777), u32(&b, 16384), u8(&b, 'N'), u16(&b, 3);
    text(&b, "a"), text(&b, "u1"), text(&b, "x");
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.xid, 777);
    buf_reset(&b);
    u8(&b, 'E');
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    buf_reset(&b); /* outside the block: no xid again */
    relation(&b, 0);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.rel->version, 1); /* described again */
    buf_reset(&b);
    u8(&b, 'c'), u32(&b, 777), u8(&b, 0), u64(&b, 50), u64(&b, 60), u64(&b, 70);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.lsn, 50);
    assert_int_equal(m.time, 70);
    buf_reset(&b);
    u8(&b, 'A'), u32(&b, 777), u32(&b, 778);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    assert_int_equal(m.subxid, 778);
    buf_free(&b);
    pgo_decoder_free(d);
}

static void test_malformed(void **state) {
    (void)state;
    PgoDecoder *d = decoder_with_relation();
    PgoMessage m;
    Err e;
    Buf b = BUF_INIT;
    /* every prefix of a valid insert is refused, and never read past */
    u8(&b, 'I'), u32(&b, 16384), u8(&b, 'N'), u16(&b, 3);
    text(&b, "abc"), text(&b, "u1"), u8(&b, 'n');
    for (size_t n = 0; n < b.len; n++) {
        char *copy = malloc(n ? n : 1); /* exactly n bytes: valgrind sees a read past */
        memcpy(copy, b.data, n);
        assert_int_equal(pgo_decode(d, copy, n, &m, &e), -1);
        free(copy);
    }
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), 0);
    buf_reset(&b);
    u8(&b, 'I'), u32(&b, 5), u8(&b, 'N'), u16(&b, 0);
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), -1);
    assert_non_null(strstr(e.msg, "never described"));
    buf_reset(&b);
    u8(&b, 'I'), u32(&b, 16384), u8(&b, 'N'), u16(&b, 1), u8(&b, 'z');
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), -1);
    assert_non_null(strstr(e.msg, "column kind"));
    buf_reset(&b);
    u8(&b, 'Q');
    assert_int_equal(pgo_decode(d, b.data, b.len, &m, &e), -1);
    assert_non_null(strstr(e.msg, "unknown message type"));
    buf_reset(&b); /* a relation cut inside its columns */
    relation(&b, 0);
    assert_int_equal(pgo_decode(d, b.data, b.len - 5, &m, &e), -1);
    assert_non_null(pgo_relation(d, 16384)); /* the one known before stays */
    buf_free(&b);
    pgo_decoder_free(d);
}

static void test_frames(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    u8(&b, 'w'), u64(&b, 100), u64(&b, 200), u64(&b, 300);
    buf_append(&b, "Bxyz", 4);
    PgoFrame f;
    Err e;
    assert_int_equal(pgo_frame_parse(b.data, b.len, &f, &e), 0);
    assert_int_equal(f.kind, 'w');
    assert_int_equal(f.start, 100);
    assert_int_equal(f.wal_end, 200);
    assert_int_equal(f.len, 4);
    assert_memory_equal(f.data, "Bxyz", 4);
    buf_reset(&b);
    u8(&b, 'k'), u64(&b, 0xABCDEF01ULL), u64(&b, 5), u8(&b, 1);
    assert_int_equal(pgo_frame_parse(b.data, b.len, &f, &e), 0);
    assert_int_equal(f.wal_end, 0xABCDEF01ULL);
    assert_int_equal(f.reply, 1);
    assert_int_equal(pgo_frame_parse(b.data, b.len - 1, &f, &e), -1);
    assert_int_equal(pgo_frame_parse("x", 1, &f, &e), -1);

    char out[34];
    assert_int_equal(pgo_status_update(out, 1, 0x0102030405060708ULL, 3, 4, 0), 34);
    assert_int_equal(out[0], 'r');
    assert_memory_equal(out + 9, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_int_equal(out[33], 0);
    buf_free(&b);
}

static void test_lsn_time(void **state) {
    (void)state;
    uint64_t l;
    char s[24];
    assert_int_equal(pgo_lsn_parse("16/B374D848", &l), 0);
    assert_int_equal(l, 0x16B374D848ULL);
    pgo_lsn_format(l, s);
    assert_string_equal(s, "16/B374D848");
    pgo_lsn_format(0, s);
    assert_string_equal(s, "0/0");
    assert_int_equal(pgo_lsn_parse("0/0", &l), 0);
    assert_int_equal(pgo_lsn_parse("/1", &l), -1);
    assert_int_equal(pgo_lsn_parse("1/", &l), -1);
    assert_int_equal(pgo_lsn_parse("1/2/3", &l), -1);
    assert_int_equal(pgo_lsn_parse("123456789/0", &l), -1);
    assert_int_equal(pgo_lsn_parse("1/x", &l), -1);
    char t[32];
    pgo_time_format(0, t);
    assert_string_equal(t, "2000-01-01T00:00:00.000000Z");
    pgo_time_format(851990400LL * 1000000 + 12, t); /* 2026-12-31 */
    assert_string_equal(t, "2026-12-31T00:00:00.000012Z");
    int64_t now = pgo_now();
    assert_true(now > 851990400LL * 1000000 - 400LL * 86400 * 1000000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transaction), cmocka_unit_test(test_streamed),
        cmocka_unit_test(test_malformed),   cmocka_unit_test(test_frames),
        cmocka_unit_test(test_lsn_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
