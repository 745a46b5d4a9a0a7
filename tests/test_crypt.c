/*
 * test_crypt: the aes-256-gcm codec, the keyring and the encryption settings,
 * pure logic (valgrind too). Round trips in every chunking and at every size
 * around a chunk; each tampering the format must catch (a flipped byte in the
 * header, a middle chunk, a tag, the last chunk; a cut at a chunk boundary; two
 * chunks swapped; a chunk repeated; a chunk spliced from another object under
 * the same data key; the wrong user or backup) refused, and no plaintext of a
 * chunk handed on before its tag checked; key wrapping bound to its names; the
 * keyring's and BACKUP_ENCRYPTION's errors, none of which shows a key.
 */
#define _GNU_SOURCE /* memmem */
#include "io/codec.h"
#include "io/crypt.h"
#include "keys/keyring.h"
#include "keys/keys.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define USER   "70b50001-0000-4000-8000-000000000001"
#define OTHER  "70b50001-0000-4000-8000-000000000002"
#define BACKUP "backup-" USER "-1"
#define CODECS "[\"gzip\",\"aes-256-gcm\"]"
#define CHUNK  4096 /* small chunks: many of them in little data */

static const unsigned char dek[CRYPT_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

static CryptParams params(const char *user, const char *backup) {
    CryptParams p = {.user_id = user,
                     .backup_id = backup,
                     .codecs_json = CODECS,
                     .key_id = "k1",
                     .wrapped_key = "d3JhcHBlZA==",
                     .have_dek = 1,
                     .chunk_size = CHUNK};
    memcpy(p.dek, dek, sizeof(dek));
    return p;
}

static char *sample(size_t n) {
    char *p = malloc(n + 1);
    uint32_t x = 99;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)('a' + (x >> 24) % 26);
    }
    return p;
}

/* Through one filter in pieces of step bytes. -1 with err (and out holding what came
 * before the failure). */
static int run(Filter *f, const void *in, size_t n, size_t step, Buf *out, Err *err) {
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, f);
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += step)
        rc = filter_chain_write(c, (const char *)in + at, n - at < step ? n - at : step, out, err);
    if (rc == 0)
        rc = filter_chain_finish(c, out, err);
    filter_chain_free(c);
    return rc;
}

static Buf seal(const char *user, const char *backup, const void *in, size_t n) {
    CryptParams p = params(user, backup);
    Buf out = BUF_INIT;
    Err e;
    assert_int_equal(run(crypt_encrypt_new(NULL, &p), in, n, 100000, &out, &e), 0);
    return out;
}

static int open_(const Buf *sealed, size_t step, Buf *out, Err *e) {
    CryptParams p = params(USER, BACKUP);
    return run(crypt_decrypt_new(NULL, &p), sealed->data, sealed->len, step, out, e);
}

static size_t header_of(const Buf *b, const char *backup) {
    CryptHeader h;
    Err e;
    assert_int_equal(crypt_header_parse(b->data, b->len, &h, &e), 1);
    assert_string_equal(h.user_id, USER);
    assert_string_equal(h.backup_id, backup);
    assert_string_equal(h.codecs, CODECS);
    assert_string_equal(h.key_id, "k1");
    assert_int_equal(h.chunk_size, CHUNK);
    return h.header_len;
}

static size_t header_len(const Buf *b) {
    return header_of(b, BACKUP);
}

static void test_round_trips(void **state) {
    (void)state;
    size_t sizes[] = {0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17, 100000};
    size_t steps[] = {1, 7, 4093, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *in = sample(sizes[i]);
        Buf sealed = seal(USER, BACKUP, in, sizes[i]);
        size_t chunks = sizes[i] ? (sizes[i] + CHUNK - 1) / CHUNK : 1;
        assert_int_equal(sealed.len, header_len(&sealed) + sizes[i] + chunks * CRYPT_TAG_LEN);
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            if (steps[s] == 1 && sizes[i] > 20000)
                continue; /* byte by byte is slow under valgrind, and the small sizes cover it */
            Buf out = BUF_INIT;
            Err e;
            if (open_(&sealed, steps[s], &out, &e) != 0)
                fail_msg("size %zu, step %zu: %s", sizes[i], steps[s], e.msg);
            assert_int_equal(out.len, sizes[i]);
            assert_memory_equal(out.data ? out.data : "", in, sizes[i]);
            buf_free(&out);
        }
        buf_free(&sealed);
        free(in);
    }
}

/* Two objects of the same plaintext under the same data key share no byte pattern: a fresh
 * salt and nonce prefix each time. */
static void test_fresh_per_object(void **state) {
    (void)state;
    char *in = sample(2 * CHUNK);
    Buf a = seal(USER, BACKUP, in, 2 * CHUNK), b = seal(USER, BACKUP, in, 2 * CHUNK);
    size_t h = header_len(&a);
    assert_int_equal(a.len, b.len);
    assert_memory_not_equal(a.data + h, b.data + h, 64);
    assert_null(memmem(a.data, a.len, in, 32)); /* no plaintext in the stored bytes */
    buf_free(&a);
    buf_free(&b);
    free(in);
}

/* Refused with a message holding want; out holds only whole verified chunks' plaintext. */
static void refused(const Buf *sealed, const char *want, size_t good_chunks) {
    Buf out = BUF_INIT;
    Err e;
    assert_int_equal(open_(sealed, 1000, &out, &e), -1);
    if (strstr(e.msg, want) == NULL)
        fail_msg("'%s' does not say '%s'", e.msg, want);
    assert_int_equal(out.len, good_chunks * CHUNK);
    buf_free(&out);
}

static void test_tampering_refused(void **state) {
    (void)state;
    size_t n = 4 * CHUNK + 100; /* 5 chunks, the last short */
    char *in = sample(n);
    Buf good = seal(USER, BACKUP, in, n);
    size_t h = header_len(&good), sealed = CHUNK + CRYPT_TAG_LEN;
    const char *tag = "Backup checksum verification failed: chunk";
    Buf b = BUF_INIT;
#define COPY() (buf_reset(&b), buf_append(&b, good.data, good.len))
    /* a flipped byte in the header's salt: every chunk fails (its AAD and key changed) */
    COPY();
    char *salt = strstr(b.data + 12, "\"salt\":\"") + 9;
    *salt = *salt == 'A' ? 'B' : 'A';
    refused(&b, "chunk 0 ", 0);
    /* a header naming another user: the header itself is refused */
    COPY();
    char *u = strstr(b.data + 12, USER);
    u[35] = '9';
    refused(&b, "belongs to backup", 0);
    /* a middle chunk, a tag, the last chunk */
    COPY();
    b.data[h + 2 * sealed + 10] ^= 1;
    refused(&b, "chunk 2 of the encrypted object fails its authentication tag", 2);
    COPY();
    b.data[h + sealed + CHUNK + 3] ^= 0x80;
    refused(&b, "chunk 1 ", 1);
    COPY();
    b.data[b.len - 1] ^= 1;
    refused(&b, "chunk 4 ", 4);
    /* cut at a chunk boundary: the new last chunk was not sealed as the last */
    COPY();
    b.len = h + 3 * sealed;
    refused(&b, "chunk 2 of the encrypted object fails its authentication tag (damaged, or cut", 2);
    /* cut inside the header, and nothing at all */
    COPY();
    b.len = h - 5;
    refused(&b, "header is cut short", 0);
    b.len = 0;
    refused(&b, "header is cut short", 0);
    /* the last chunk dropped, or only the tag of it */
    COPY();
    b.len = h + 4 * sealed + 10;
    refused(&b, tag, 4);
    /* two chunks swapped */
    COPY();
    memcpy(b.data + h + sealed, good.data + h + 2 * sealed, sealed);
    memcpy(b.data + h + 2 * sealed, good.data + h + sealed, sealed);
    refused(&b, "chunk 1 ", 1);
    /* a chunk repeated */
    COPY();
    memcpy(b.data + h + 2 * sealed, good.data + h + sealed, sealed);
    refused(&b, "chunk 2 ", 2);
    /* a chunk from another object under the same data key (another backup's header) */
    Buf other = seal(USER, "backup-" USER "-2", in, n);
    size_t oh = header_of(&other, "backup-" USER "-2");
    COPY();
    memcpy(b.data + h + sealed, other.data + oh + sealed, sealed);
    refused(&b, "chunk 1 ", 1);
    /* the other backup's object under this backup's name */
    refused(&other, "belongs to backup backup-" USER "-2", 0);
    buf_free(&other);
    /* not encrypted at all */
    buf_reset(&b);
    buf_puts(&b, "{\"format\":\"pedidolist-backup\"}");
    refused(&b, "not an encrypted backup object", 0);
#undef COPY
    buf_free(&b);
    buf_free(&good);
    free(in);
}

/* The decoder with no data key opens the header's wrapping through its unwrap function. */
static int unwrap_ok(const char *key_id, const char *wrapped, const char *user, const char *backup,
                     unsigned char out[CRYPT_KEY_LEN], void *data, Err *err) {
    (void)wrapped, (void)user, (void)backup, (void)err;
    assert_string_equal(key_id, "k1");
    (*(int *)data)++;
    memcpy(out, dek, CRYPT_KEY_LEN);
    return 0;
}

static void test_unwrap_from_header(void **state) {
    (void)state;
    char *in = sample(CHUNK * 2);
    Buf sealed = seal(USER, BACKUP, in, CHUNK * 2), out = BUF_INIT;
    int calls = 0;
    CryptParams p = {.unwrap = unwrap_ok, .unwrap_data = &calls};
    Err e;
    assert_int_equal(run(crypt_decrypt_new(NULL, &p), sealed.data, sealed.len, 333, &out, &e), 0);
    assert_int_equal(calls, 1);
    assert_memory_equal(out.data, in, CHUNK * 2);
    buf_free(&out);
    buf_free(&sealed);
    free(in);
}

static void test_wrap(void **state) {
    (void)state;
    unsigned char kek[CRYPT_KEY_LEN], got[CRYPT_KEY_LEN];
    memset(kek, 7, sizeof(kek));
    Buf w = BUF_INIT;
    Err e;
    crypt_wrap(kek, "k1", USER, BACKUP, dek, &w);
    assert_int_equal(w.len, 80); /* base64 of 12 + 32 + 16 bytes */
    assert_int_equal(crypt_unwrap(kek, "k1", USER, BACKUP, w.data, got, &e), 0);
    assert_memory_equal(got, dek, CRYPT_KEY_LEN);
    /* bound to the key id, the user and the backup */
    assert_int_equal(crypt_unwrap(kek, "k2", USER, BACKUP, w.data, got, &e), -1);
    assert_int_equal(crypt_unwrap(kek, "k1", OTHER, BACKUP, w.data, got, &e), -1);
    assert_int_equal(crypt_unwrap(kek, "k1", USER, "backup-x", w.data, got, &e), -1);
    assert_non_null(strstr(e.msg, "does not open under key 'k1'"));
    kek[0] ^= 1;
    assert_int_equal(crypt_unwrap(kek, "k1", USER, BACKUP, w.data, got, &e), -1);
    assert_int_equal(crypt_unwrap(kek, "k1", USER, BACKUP, "not base64!", got, &e), -1);
    assert_non_null(strstr(e.msg, "malformed"));
    buf_free(&w);
}

static void test_base64(void **state) {
    (void)state;
    unsigned char out[8];
    assert_int_equal(crypt_b64_decode("YWJj", 4, out, sizeof(out)), 3);
    assert_int_equal(crypt_b64_decode("YWI=", 4, out, sizeof(out)), 2);
    assert_int_equal(crypt_b64_decode("YQ==", 4, out, sizeof(out)), 1);
    assert_memory_equal(out, "a", 1);
    assert_int_equal(crypt_b64_decode("YQ=", 3, out, sizeof(out)), -1);
    assert_int_equal(crypt_b64_decode("Y=Q=", 4, out, sizeof(out)), -1);
    assert_int_equal(crypt_b64_decode("YW*j", 4, out, sizeof(out)), -1);
    assert_int_equal(crypt_b64_decode("YWJjZGVmZ2hp", 12, out, sizeof(out)), -1); /* 9 > 8 */
}

#define K1 "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
#define K2 "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="

static void test_keyring(void **state) {
    (void)state;
    Err e;
    Keyring *k = keyring_parse("k1:" K1 ", k2:" K2, ',', &e);
    assert_non_null(k);
    assert_int_equal(keyring_count(k), 2);
    assert_string_equal(keyring_id(k, 1), "k2");
    assert_int_equal(keyring_find(k, "k2")[0], 2);
    assert_null(keyring_find(k, "k3"));
    keyring_free(k);
    k = keyring_parse("# rotated 2026-11\n\nold:" K1 "\r\nnew:" K2 "\n", '\n', &e);
    assert_non_null(k);
    assert_int_equal(keyring_count(k), 2);
    keyring_free(k);
    struct {
        const char *text, *want;
    } bad[] = {
        {"k1:" K1 ",k1:" K2, "given twice"},
        {"k1:AQEB", "is 3 bytes"},
        {"k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB", "is 36 bytes"},
        {"k1:not*base64*at*all*", "not valid base64"},
        {K1, "entry 1 is not ID:BASE64"},
        {"k 1:" K1, "may only hold"},
        {"", "holds no key"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(keyring_parse(bad[i].text, ',', &e));
        if (strstr(e.msg, bad[i].want) == NULL)
            fail_msg("%s: '%s' does not say '%s'", bad[i].text, e.msg, bad[i].want);
        assert_null(strstr(e.msg, "AQEB")); /* never the key */
        assert_null(strstr(e.msg, "AgIC"));
    }
}

typedef struct {
    const char *name[4], *value[4];
} Env;

static const char *env_get(const char *name, void *data) {
    Env *e = data;
    for (int i = 0; i < 4 && e->name[i]; i++)
        if (strcmp(e->name[i], name) == 0)
            return e->value[i];
    return NULL;
}

static Keys *load(Env *env, int *nerr, Buf *errors) {
    *nerr = 0;
    buf_reset(errors);
    return keys_load(env_get, env, errors, nerr);
}

static void test_keys_settings(void **state) {
    (void)state;
    Buf errors = BUF_INIT, d = BUF_INIT;
    int n;
    Env none = {{NULL}, {NULL}};
    Keys *k = load(&none, &n, &errors);
    assert_int_equal(n, 0);
    assert_false(keys_enabled(k));
    keys_free(k);
    Env two = {{"BACKUP_ENCRYPTION_KEYS"}, {"k1:" K1 ",k2:" K2}};
    k = load(&two, &n, &errors);
    assert_int_equal(n, 0);
    assert_true(keys_enabled(k));
    assert_string_equal(keys_current(k), "k2"); /* the last entry */
    keys_describe(k, &d);
    assert_non_null(strstr(d.data, "'k1', 'k2'"));
    assert_null(strstr(d.data, "AQEB"));
    /* a new data key wraps and unwraps; a retired key is named when missing */
    unsigned char a[CRYPT_KEY_LEN], b[CRYPT_KEY_LEN];
    Buf w = BUF_INIT, w2 = BUF_INIT;
    Err e;
    assert_int_equal(keys_new_dek(k, NULL, USER, BACKUP, a, &w, &e), 0);
    assert_int_equal(keys_unwrap(k, "k2", w.data, USER, BACKUP, b, &e), 0);
    assert_memory_equal(a, b, CRYPT_KEY_LEN);
    assert_int_equal(keys_rewrap(k, "k2", w.data, "k1", USER, BACKUP, &w2, &e), 0);
    assert_int_equal(keys_unwrap(k, "k1", w2.data, USER, BACKUP, b, &e), 0);
    assert_memory_equal(a, b, CRYPT_KEY_LEN);
    assert_int_equal(keys_unwrap(k, "k2025", w.data, USER, BACKUP, b, &e), -1);
    assert_string_equal(e.msg, "backup " BACKUP " is encrypted with key 'k2025', which is not in "
                               "BACKUP_ENCRYPTION_KEYS");
    keys_free(k);
    buf_free(&w);
    buf_free(&w2);
    Env current = {{"BACKUP_ENCRYPTION_KEYS", "BACKUP_ENCRYPTION_KEY_ID"},
                   {"k1:" K1 ",k2:" K2, "k1"}};
    k = load(&current, &n, &errors);
    assert_int_equal(n, 0);
    assert_string_equal(keys_current(k), "k1");
    keys_free(k);
    struct {
        Env env;
        const char *want;
    } bad[] = {
        {{{"BACKUP_ENCRYPTION"}, {"required"}}, "BACKUP_ENCRYPTION: is required, but no key"},
        {{{"BACKUP_ENCRYPTION"}, {"yes"}}, "BACKUP_ENCRYPTION: 'yes' is not auto or required"},
        {{{"BACKUP_ENCRYPTION_KEYS", "BACKUP_ENCRYPTION_KEY_ID"}, {"k1:" K1, "k9"}},
         "BACKUP_ENCRYPTION_KEY_ID: 'k9' is not in BACKUP_ENCRYPTION_KEYS"},
        {{{"BACKUP_ENCRYPTION_KEY_ID"}, {"k1"}}, "there is no keyring"},
        {{{"BACKUP_ENCRYPTION_KEYS"}, {"k1:AQEBAQ=="}}, "key 'k1' is 4 bytes"},
        {{{"BACKUP_ENCRYPTION_KEYS_FILE"}, {"/nonexistent/keys"}}, "cannot read"},
        {{{"BACKUP_ENCRYPTION_KEYS", "BACKUP_ENCRYPTION_KEYS_FILE"}, {"k1:" K1, "/x"}}, "both set"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        k = load(&bad[i].env, &n, &errors);
        assert_true(n >= 1);
        if (strstr(errors.data, bad[i].want) == NULL)
            fail_msg("case %zu: '%s' does not say '%s'", i, errors.data, bad[i].want);
        assert_null(strstr(errors.data, "AQEB"));
        keys_free(k);
    }
    buf_free(&errors);
    buf_free(&d);
}

/* The codec list names the suffix and builds the chain only with its parameters. */
static void test_codec_list(void **state) {
    (void)state;
    CodecList l;
    Err e;
    char suffix[32];
    assert_int_equal(codec_list_parse("zstd,aes-256-gcm", &l, &e), 0);
    assert_true(codec_list_encrypted(&l));
    codec_suffix(&l, suffix, sizeof(suffix));
    assert_string_equal(suffix, ".zst.enc");
    assert_string_equal(codec_content_type(&l), "application/octet-stream");
    assert_null(codec_decoder(&l, NULL)); /* never a chain that skips the decryption */
    CodecOptions o = {1, NULL};
    assert_null(codec_encoder(&l, &o));
    assert_int_equal(codec_list_parse("gzip", &l, &e), 0);
    assert_false(codec_list_encrypted(&l));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_fresh_per_object),
        cmocka_unit_test(test_tampering_refused),
        cmocka_unit_test(test_unwrap_from_header),
        cmocka_unit_test(test_wrap),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_keyring),
        cmocka_unit_test(test_keys_settings),
        cmocka_unit_test(test_codec_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
