/*
 * test_filter: the filter chain and its filters, pure logic (valgrind too):
 * gzip/gunzip round trips in every chunking, observers where they sit in the
 * chain, concatenated members, corrupt and truncated input named.
 */
#include "io/codec.h"
#include "io/filter.h"

#include <openssl/sha.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

static void sha_hex(const void *p, size_t n, char out[65]) {
    unsigned char md[32];
    SHA256(p, n, md);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Half compressible text, half noise, so both deflate paths run. */
static char *sample(size_t n) {
    char *p = malloc(n);
    static const char row[] = "{\"id\":1,\"name\":\"caf\xc3\xa9\"}\n";
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (i / 4096) % 2 ? (char)(x >> 24) : row[i % (sizeof(row) - 1)];
    }
    return p;
}

/* Push data through c in chunks of step bytes; returns the output. */
static Buf push(FilterChain *c, const char *data, size_t n, size_t step) {
    Buf out = BUF_INIT;
    Err err;
    err_clear(&err);
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        assert_int_equal(filter_chain_write(c, data + off, k, &out, &err), 0);
    }
    assert_int_equal(filter_chain_finish(c, &out, &err), 0);
    return out;
}

/* The codec table: every compression codec it names has levels, builds at both ends of its
 * range, and its decoder undoes its encoder; suffixes differ; an unknown name is refused. */
static void test_codec_table(void **state) {
    (void)state;
    char names[64];
    codec_compression_names(names, sizeof(names));
    assert_string_equal(names, "gzip, zstd");
    const char *text = "{\"rows\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}";
    int count = 0;
    for (char *save = NULL, *n = strtok_r(names, ", ", &save); n; n = strtok_r(NULL, ", ", &save)) {
        int min, max, def;
        assert_int_equal(codec_levels(n, &min, &max, &def), 0);
        assert_true(min >= 1 && min <= def && def <= max);
        CodecList l;
        Err e;
        assert_int_equal(codec_list_parse(n, &l, &e), 0);
        for (int level = min; level <= max; level += max - min) {
            CodecOptions o = {level, NULL};
            FilterChain *enc = codec_encoder(&l, &o), *dec = codec_decoder(&l, NULL);
            Buf mid = BUF_INIT, out = BUF_INIT;
            assert_int_equal(filter_chain_write(enc, text, strlen(text), &mid, &e), 0);
            assert_int_equal(filter_chain_finish(enc, &mid, &e), 0);
            assert_int_equal(filter_chain_write(dec, mid.data, mid.len, &out, &e), 0);
            assert_int_equal(filter_chain_finish(dec, &out, &e), 0);
            assert_int_equal(out.len, strlen(text));
            assert_memory_equal(out.data, text, out.len);
            filter_chain_free(enc);
            filter_chain_free(dec);
            buf_free(&mid);
            buf_free(&out);
        }
        count++;
    }
    assert_int_equal(count, 2);
    int a, b, c;
    assert_int_equal(codec_levels("aes-256-gcm", &a, &b, &c), -1); /* encrypts, no levels */
    assert_int_equal(codec_levels("brotli", &a, &b, &c), -1);
    CodecList all;
    Err e;
    assert_int_equal(codec_list_parse("gzip,zstd,aes-256-gcm", &all, &e), 0);
    char s[32];
    codec_suffix(&all, s, sizeof(s));
    assert_string_equal(s, ".gz.zst.enc");
    assert_int_equal(codec_list_parse("gzip,brotli", &all, &e), -1);
    assert_non_null(strstr(e.msg, "known: gzip, zstd, aes-256-gcm"));
}

/* filter.h's example, line for line: the header shows calls that exist */
static void test_header_example(void **state) {
    (void)state;
    const char *json = "{\"a\":1}";
    size_t n = strlen(json);
    Buf out = BUF_INIT;
    Err err;
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_size_new("raw")); // raw JSON size
    filter_chain_add(c, filter_gzip_new("gzip", 1));
    filter_chain_add(c, filter_sha256_new("sha256")); // over the stored bytes
    assert_int_equal(filter_chain_write(c, json, n, &out, &err), 0);
    assert_int_equal(filter_chain_finish(c, &out, &err), 0);
    assert_string_equal(filter_chain_result(c, "raw"), "7");
    unsigned char md[32];
    char hex[65];
    SHA256((const unsigned char *)out.data, out.len, md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(filter_chain_result(c, "sha256"), hex);
    filter_chain_free(c);
    buf_free(&out);
}

static void test_round_trip_in_any_chunking(void **state) {
    (void)state;
    size_t n = 1000003;
    char *data = sample(n);
    char want[65];
    sha_hex(data, n, want);
    const size_t steps[] = {1 << 20, 65536, 4093, 7};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        size_t step = steps[s] == 7 ? 7 : steps[s];
        size_t len = steps[s] == 7 ? 70000 : n; /* byte-sized steps on a shorter input */
        char want_part[65];
        sha_hex(data, len, want_part);
        FilterChain *c = filter_chain_new();
        filter_chain_add(c, filter_sha256_new("raw-sha"));
        filter_chain_add(c, filter_size_new("raw-size"));
        filter_chain_add(c, filter_gzip_new("gzip", 1));
        filter_chain_add(c, filter_sha256_new("stored-sha"));
        filter_chain_add(c, filter_size_new("stored-size"));
        Buf gz = push(c, data, len, step);
        assert_true(gz.len > 18 && (unsigned char)gz.data[0] == 0x1f &&
                    (unsigned char)gz.data[1] == 0x8b); /* gzip magic */
        char stored[65], size[32];
        sha_hex(gz.data, gz.len, stored);
        snprintf(size, sizeof(size), "%zu", len);
        assert_string_equal(filter_chain_result(c, "raw-sha"), want_part);
        assert_string_equal(filter_chain_result(c, "raw-size"), size);
        assert_string_equal(filter_chain_result(c, "stored-sha"), stored);
        snprintf(size, sizeof(size), "%zu", gz.len);
        assert_string_equal(filter_chain_result(c, "stored-size"), size);
        assert_null(filter_chain_result(c, "nope"));
        filter_chain_free(c);

        FilterChain *d = filter_chain_new();
        filter_chain_add(d, filter_sha256_new("stored-sha"));
        filter_chain_add(d, filter_gunzip_new("gunzip"));
        filter_chain_add(d, filter_sha256_new("raw-sha"));
        Buf back = push(d, gz.data, gz.len, step);
        assert_int_equal(back.len, len);
        assert_memory_equal(back.data, data, len);
        assert_string_equal(filter_chain_result(d, "stored-sha"), stored);
        assert_string_equal(filter_chain_result(d, "raw-sha"), want_part);
        filter_chain_free(d);
        buf_free(&gz);
        buf_free(&back);
    }
    (void)want;
    free(data);
}

static void test_observers_only_and_empty(void **state) {
    (void)state;
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_sha256_new("sha"));
    Buf out = push(c, "abc", 3, 1);
    assert_int_equal(out.len, 3); /* passed through */
    assert_string_equal(filter_chain_result(c, "sha"),
                        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    Err err;
    assert_int_equal(filter_chain_write(c, "x", 1, &out, &err), -1); /* after finish */
    filter_chain_free(c);
    buf_free(&out);

    /* an empty stream still makes a valid gzip file, and it reads back empty */
    c = filter_chain_new();
    filter_chain_add(c, filter_gzip_new("gzip", 6));
    Buf gz = push(c, "", 0, 1);
    filter_chain_free(c);
    c = filter_chain_new();
    filter_chain_add(c, filter_gunzip_new("gunzip"));
    Buf back = push(c, gz.data, gz.len, 3);
    assert_int_equal(back.len, 0);
    filter_chain_free(c);
    buf_free(&gz);
    buf_free(&back);
}

static Buf gzip_of(const char *s) {
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_gzip_new("gzip", 9));
    Buf gz = push(c, s, strlen(s), 1 << 20);
    filter_chain_free(c);
    return gz;
}

static int gunzip_all(const char *p, size_t n, Buf *out, Err *err) {
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_gunzip_new("gunzip"));
    int rc = filter_chain_write(c, p, n, out, err);
    if (rc == 0)
        rc = filter_chain_finish(c, out, err);
    filter_chain_free(c);
    return rc;
}

static void test_members_corruption_truncation(void **state) {
    (void)state;
    Buf a = gzip_of("first member\n"), b = gzip_of("second member\n");
    Buf both = BUF_INIT;
    buf_append(&both, a.data, a.len);
    buf_append(&both, b.data, b.len);
    Buf out = BUF_INIT;
    Err err;
    err_clear(&err);
    assert_int_equal(gunzip_all(both.data, both.len, &out, &err), 0);
    assert_string_equal(out.data, "first member\nsecond member\n");

    /* truncated: named as such, at the end */
    buf_reset(&out);
    assert_int_equal(gunzip_all(a.data, a.len - 5, &out, &err), -1);
    assert_non_null(strstr(err.msg, "gunzip: truncated gzip data"));
    assert_int_equal(err.kind, ERR_PERMANENT);

    /* a flipped byte in the deflate data or the CRC: corrupt */
    Buf bad = BUF_INIT;
    buf_append(&bad, a.data, a.len);
    bad.data[bad.len - 6] ^= 0x55; /* inside the CRC-32 trailer */
    buf_reset(&out);
    assert_int_equal(gunzip_all(bad.data, bad.len, &out, &err), -1);
    assert_non_null(strstr(err.msg, "corrupt gzip data"));

    /* not gzip at all, and nothing at all */
    buf_reset(&out);
    assert_int_equal(gunzip_all("{\"plain\":\"json\"}", 16, &out, &err), -1);
    assert_non_null(strstr(err.msg, "corrupt gzip data"));
    buf_reset(&out);
    assert_int_equal(gunzip_all("", 0, &out, &err), -1);
    assert_non_null(strstr(err.msg, "no gzip data"));
    buf_free(&a);
    buf_free(&b);
    buf_free(&both);
    buf_free(&bad);
    buf_free(&out);
}

/* The gzip members of p, each inflated by zlib itself into back (room for n bytes); -1 when
 * the data does not end with a complete member. */
static int members_of(const Buf *p, char *back, size_t n, size_t *got) {
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)p->data;
    z.avail_in = (uInt)p->len;
    z.next_out = (Bytef *)back;
    z.avail_out = (uInt)n;
    int members = 0;
    for (;;) {
        int rc = inflate(&z, Z_NO_FLUSH);
        if (rc != Z_STREAM_END) {
            members = -1;
            break;
        }
        members++;
        if (z.avail_in == 0)
            break;
        assert_int_equal(inflateReset(&z), Z_OK);
    }
    *got = (size_t)((char *)z.next_out - back);
    inflateEnd(&z);
    return members;
}

/* gzip is written a member per write of 256 KiB or more (smaller writes gather first), each
 * member complete: zlib's own inflate reads them one after another into the input. */
static void test_gzip_members(void **state) {
    (void)state;
    size_t n = 3u << 20, got;
    char *in = sample(n), *back = malloc(n + 1);
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, filter_gzip_new(NULL, 1));
    Buf out = push(c, in, n, 1u << 20); /* three writes of 1 MiB: three members */
    filter_chain_free(c);
    assert_int_equal(members_of(&out, back, n + 1, &got), 3);
    assert_int_equal(got, n);
    assert_memory_equal(back, in, n);
    buf_free(&out);

    c = filter_chain_new(); /* 1000 writes of 100 bytes gather into one member */
    filter_chain_add(c, filter_gzip_new(NULL, 1));
    out = push(c, in, 100000, 100);
    filter_chain_free(c);
    assert_int_equal(members_of(&out, back, n + 1, &got), 1);
    assert_int_equal(got, 100000);
    assert_memory_equal(back, in, 100000);
    buf_free(&out);

    c = filter_chain_new(); /* nothing at all: one empty member, still a gzip stream */
    filter_chain_add(c, filter_gzip_new(NULL, 1));
    out = push(c, "", 0, 1);
    filter_chain_free(c);
    assert_int_equal(members_of(&out, back, n + 1, &got), 1);
    assert_int_equal(got, 0);
    buf_free(&out);
    free(back);
    free(in);
}

/* zstd: a round trip in any chunking (frames read as `zstd -d` writes them), and corrupt,
 * truncated and empty input named. */
static void test_zstd_round_trip_and_damage(void **state) {
    (void)state;
    size_t n = 1000003;
    char *data = sample(n);
    const size_t steps[] = {1 << 20, 4093, 7};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        size_t len = steps[s] == 7 ? 70000 : n;
        FilterChain *c = filter_chain_new();
        filter_chain_add(c, filter_zstd_new("zstd", 3));
        Buf z = push(c, data, len, steps[s]);
        filter_chain_free(c);
        assert_true(z.len > 8 && (unsigned char)z.data[0] == 0x28 &&
                    (unsigned char)z.data[1] == 0xb5); /* zstd magic 28 b5 2f fd */
        assert_true(z.len < len);
        FilterChain *d = filter_chain_new();
        filter_chain_add(d, filter_unzstd_new("unzstd"));
        Buf back = push(d, z.data, z.len, steps[s]);
        filter_chain_free(d);
        assert_int_equal(back.len, len);
        assert_memory_equal(back.data, data, len);
        buf_free(&back);
        if (s == 0) { /* damage: a flipped byte, a cut, nothing */
            Err err;
            Buf out = BUF_INIT;
            z.data[z.len / 2] ^= 0x40;
            FilterChain *bad = filter_chain_new();
            filter_chain_add(bad, filter_unzstd_new("unzstd"));
            int rc = filter_chain_write(bad, z.data, z.len, &out, &err);
            if (rc == 0)
                rc = filter_chain_finish(bad, &out, &err);
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, "zstd"));
            filter_chain_free(bad);
            z.data[z.len / 2] ^= 0x40;
            bad = filter_chain_new();
            filter_chain_add(bad, filter_unzstd_new("unzstd"));
            assert_int_equal(filter_chain_write(bad, z.data, z.len - 10, &out, &err), 0);
            assert_int_equal(filter_chain_finish(bad, &out, &err), -1);
            assert_non_null(strstr(err.msg, "truncated zstd data"));
            filter_chain_free(bad);
            bad = filter_chain_new();
            filter_chain_add(bad, filter_unzstd_new("unzstd"));
            assert_int_equal(filter_chain_finish(bad, &out, &err), -1);
            assert_non_null(strstr(err.msg, "no zstd data"));
            filter_chain_free(bad);
            buf_free(&out);
        }
        buf_free(&z);
    }
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_example),
        cmocka_unit_test(test_codec_table),
        cmocka_unit_test(test_round_trip_in_any_chunking),
        cmocka_unit_test(test_observers_only_and_empty),
        cmocka_unit_test(test_members_corruption_truncation),
        cmocka_unit_test(test_gzip_members),
        cmocka_unit_test(test_zstd_round_trip_and_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
