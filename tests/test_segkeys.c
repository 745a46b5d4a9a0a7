/* segkeys: an incremental's keys from change segments, with pg_snapshot visibility (pgsnap)
 * and the segment reader (changes_read); segreplay: a point-in-time restore's changes turned
 * into the staging COPYs' text; pure logic. The capture test (test_capture.sh) and
 * the model test in wal mode build real incrementals this way. */
#include "capture/changes.h"
#include "capture/segfile.h"
#include "capture/segkeys.h"
#include "capture/segreplay.h"
#include "pg/pgsnap.h"

#include "aws/sigv4.h"
#include "base/buf.h"
#include "io/codec.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define U "caca0000-0000-4000-8000-00000000000a"

static void test_snapshot(void **state) {
    (void)state;
    PgSnap s;
    Err e;
    assert_int_equal(pgsnap_parse("100:110:102,105", &s, &e), 0);
    assert_int_equal(s.nxip, 2);
    assert_true(pgsnap_visible(&s, 99));
    assert_true(pgsnap_visible(&s, 101));
    assert_false(pgsnap_visible(&s, 102)); /* in progress */
    assert_true(pgsnap_visible(&s, 104));
    assert_false(pgsnap_visible(&s, 105));
    assert_false(pgsnap_visible(&s, 110)); /* not yet begun */
    assert_int_equal(pgsnap_widen(&s, 105), 105);
    pgsnap_free(&s);
    /* an epoch later: 32-bit xids on either side of the wrap */
    uint64_t ep = 1ull << 32;
    assert_int_equal(pgsnap_parse("4294967396:4294967400:", &s, &e), 0);
    assert_int_equal(pgsnap_widen(&s, 4294967295u), 4294967295ull); /* just before the wrap */
    assert_int_equal(pgsnap_widen(&s, 102), ep + 102);
    assert_int_equal(pgsnap_widen(&s, 200), ep + 200); /* after xmax: not seen */
    assert_false(pgsnap_visible(&s, pgsnap_widen(&s, 200)));
    assert_true(pgsnap_visible(&s, pgsnap_widen(&s, 4294967295u)));
    pgsnap_free(&s);
    const char *bad[] = {"", "1:2", "5:4:", "1:9:3,3", "1:9:12", "1:9:3,", "x:9:", "1:9:3;4"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(pgsnap_parse(bad[i], &s, &e), -1);
        assert_non_null(strstr(e.msg, "is no pg_snapshot"));
    }
}

static Scope *sample(void) {
    Scope *s = scope_new();
    Err e;
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 50, &e), 0);
    assert_int_equal(scope_add_table(s, "order_items", "id", "", "orders", "order_id", 60, &e), 0);
    const char *oc[] = {"id", "user_id", "notes"}, *ic[] = {"id", "order_id"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(scope_add_column(s, "orders", oc[i], "uuid", "s=", "", "", &e), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(scope_add_column(s, "order_items", ic[i], "uuid", "s=", "", "", &e), 0);
    return s;
}

static void seg(Buf *b, const char *user, const char *body, int changes) {
    buf_printf(b,
               "{\"format\":\"pedidolist-changes\",\"version\":1,\"segment\":\"s\",\"user_id\":"
               "\"%s\",\"epoch\":1,\"start_lsn\":\"0/1\",\"end_lsn\":\"0/2\",\"codecs\":[],"
               "\"created_at\":\"2026-12-07T00:00:00Z\"}\n%s{\"changes\":%d,\"transactions\":1}\n",
               user, body, changes);
}

#define CH(xid, table, op, rest)                                                                   \
    "{\"lsn\":\"0/1\",\"time\":\"2026-12-07T00:00:00Z\",\"xid\":" #xid ",\"table\":\"" table       \
    "\",\"op\":\"" op "\"" rest "}\n"

static void test_keys(void **state) {
    (void)state;
    Scope *s = sample();
    Err e;
    /* the base saw up to 100 but not 98; the incremental sees up to 110 but not 105 */
    SegKeys *k = segkeys_new(s, U, "95:101:98", "95:111:105", &e);
    assert_non_null(k);
    assert_true(segkeys_wanted(k, "90,98"));    /* 98: after the base */
    assert_false(segkeys_wanted(k, "90,100"));  /* both in the base */
    assert_false(segkeys_wanted(k, "105,111")); /* neither seen by the incremental */
    Buf b = BUF_INIT, a = BUF_INIT;
    seg(&b, U,
        CH(100, "orders", "u", ",\"key\":\"o-in-base\",\"row\":{}")
            CH(98, "orders", "i", ",\"key\":\"o1\",\"row\":{\"id\":\"o1\"}")
                CH(103, "order_items", "d", ",\"key\":\"i\\\"1\"")
                    CH(103, "orders", "u", ",\"key\":\"o1\",\"row\":{\"key\":\"not this\"}")
                        CH(105, "orders", "i", ",\"key\":\"o-later\",\"row\":{}")
                            CH(111, "orders", "d", ",\"key\":\"o-after\""),
        6);
    assert_int_equal(segkeys_add(k, b.data, b.len, &e), 0);
    assert_int_equal(segkeys_total(k), 2);
    segkeys_array(k, scope_find(s, "orders"), &a);
    assert_string_equal(a.data, "{\"o1\"}");
    buf_reset(&a);
    segkeys_array(k, scope_find(s, "order_items"), &a);
    assert_string_equal(a.data, "{\"i\\\"1\"}"); /* the key's quote, escaped for the literal */
    /* a TRUNCATE, or a "where" delete, of the incremental names no keys; of the base, nothing */
    buf_reset(&b);
    seg(&b, U,
        CH(100, "orders", "t", "") CH(98, "order_items", "d", ",\"where\":{\"order_id\":\"o9\"}"),
        2);
    assert_int_equal(segkeys_add(k, b.data, b.len, &e), SEGKEYS_NO_KEYS);
    assert_non_null(strstr(e.msg, "an order moved to another user"));
    buf_reset(&b);
    seg(&b, U, CH(104, "orders", "t", ""), 1);
    assert_int_equal(segkeys_add(k, b.data, b.len, &e), SEGKEYS_NO_KEYS);
    assert_non_null(strstr(e.msg, "a TRUNCATE of orders"));
    /* another user's segment, a table outside the scope, a short or malformed segment */
    buf_reset(&b);
    seg(&b, "caca0000-0000-4000-8000-00000000000b", "", 0);
    assert_int_equal(segkeys_add(k, b.data, b.len, &e), -1);
    assert_non_null(strstr(e.msg, "where one of " U " was expected"));
    buf_reset(&b);
    seg(&b, U, CH(103, "secrets", "i", ",\"key\":\"x\",\"row\":{}"), 1);
    assert_int_equal(segkeys_add(k, b.data, b.len, &e), -1);
    assert_non_null(strstr(e.msg, "not in the backup scope"));
    assert_int_equal(segkeys_total(k), 2); /* neither added a key */
    /* (a segment's keys before the line that goes wrong are taken: the caller then gives up
     * the incremental) */
    buf_reset(&b);
    seg(&b, U, CH(103, "orders", "i", ",\"key\":\"x\",\"row\":{}"), 2); /* trailer says 2 */
    assert_int_equal(segkeys_add(k, b.data, b.len, &e), -1);
    assert_non_null(strstr(e.msg, "is not of its format"));
    buf_reset(&b);
    seg(&b, U, CH(103, "orders", "i", ",\"key\":\"x\",\"row\":{}"), 1);
    assert_int_equal(segkeys_add(k, b.data, b.len - 20, &e), -1); /* cut short */
    assert_int_equal(segkeys_add(k, "{\"format\":\"x\"}\n", 15, &e), -1);
    buf_free(&b);
    buf_free(&a);
    segkeys_free(k);
    assert_null(segkeys_new(s, U, "1:2:", "nope", &e));
    scope_free(s);
}

/* ---- segreplay ---- */

#define CHL(lsn, xid, table, op, rest)                                                             \
    "{\"lsn\":\"" lsn "\",\"time\":\"2026-12-07T00:00:00Z\",\"xid\":" #xid ",\"table\":\"" table   \
    "\",\"op\":\"" op "\"" rest "}\n"

typedef struct {
    Buf out[6]; /* per dest: 0 orders, 1 order_items, then -2..-4 at 2..4 */
} Sink;

static Buf *sink(int dest, void *data) {
    Sink *k = data;
    return &k->out[dest >= 0 ? dest : -dest];
}

static void test_replay(void **state) {
    (void)state;
    Scope *s = sample();
    Err e;
    PgCopyRow *shape[2];
    for (int i = 0; i < 2; i++) {
        shape[i] = pgcopy_row_new();
        char kind;
        const char *name;
        for (int c = 0; (name = scope_stage_column(s, i, c, &kind)) != NULL; c++)
            pgcopy_row_add(shape[i], name, (PgCopyKind)kind);
    }
    unsigned char dels[2] = {1, 1};
    /* the base saw up to 100 but not 98; the cut is 0/50 */
    SegReplayParams p = {s, shape, dels, U, "95:101:98", 0x50, 7};
    SegReplay *r = segreplay_new(&p, &e);
    assert_non_null(r);
    assert_true(segreplay_wanted(r, "90,98"));
    assert_false(segreplay_wanted(r, "90,100"));
    assert_true(segreplay_wanted(r, "101"));
    Sink k;
    for (int i = 0; i < 6; i++)
        k.out[i] = (Buf)BUF_INIT;
    Buf b = BUF_INIT;
    seg(&b, U,
        CHL("0/10", 100, "orders", "u", ",\"key\":\"o-in-base\",\"row\":{}")
            CHL("0/20", 98, "orders", "i",
                ",\"key\":\"o1\",\"row\":{\"id\":\"o1\",\"user_id\":\"u\",\"notes\":\"a\\tb\"}")
                CHL("0/30", 102, "orders", "u",
                    ",\"key\":\"o1\",\"row\":{\"id\":\"o1\",\"user_id\":\"u\",\"notes\":null},"
                    "\"unchanged\":[\"notes\"]")
                    CHL("0/30", 102, "order_items", "d", ",\"key\":\"i1\"")
                        CHL("0/40", 103, "order_items", "d", ",\"where\":{\"order_id\":\"o\\\\2\"}")
                            CHL("0/50", 104, "orders", "t", "")
                                CHL("0/60", 105, "orders", "d", ",\"key\":\"after-the-cut\""),
        7);
    assert_int_equal(segreplay_add(r, b.data, b.len, sink, &k, &e), 0);
    /* the base's own change (xid 100) and the one after the cut are not replayed */
    assert_int_equal(segreplay_changes(r), 5);
    assert_int_equal(segreplay_next_step(r), 12);
    assert_string_equal(k.out[0].data, "o1\tu\ta\\tb\t7\n" /* the tab of the value escaped */
                                       "o1\tu\t\\N\t8\n");
    assert_string_equal(k.out[2].data, "9\t1\ti1\n");                  /* deleted keys */
    assert_string_equal(k.out[3].data, "10\t1\to\\\\2\n11\t0\t\\N\n"); /* where, truncate */
    assert_string_equal(k.out[4].data, "8\t0\t2\n"); /* step 8 left orders' column 2 as it was */
    assert_true(segreplay_unchanged(r, 0, 2));
    assert_false(segreplay_unchanged(r, 0, 1));
    assert_false(segreplay_unchanged(r, 5, 0));
    /* a later segment that goes back in commit order: overlapping segments are refused */
    buf_reset(&b);
    seg(&b, U, CHL("0/25", 106, "orders", "d", ",\"key\":\"x\""), 1);
    assert_int_equal(segreplay_add(r, b.data, b.len, sink, &k, &e), -1);
    assert_non_null(strstr(e.msg, "out of commit order"));
    segreplay_free(r);
    /* an unchanged column the table lacks; a where delete on another column than the parent's */
    const char *bad[][2] = {
        {CHL("0/30", 102, "orders", "u", ",\"key\":\"o1\",\"row\":{},\"unchanged\":[\"secret\"]"),
         "keeps a column 'secret' unchanged"},
        {CHL("0/30", 102, "orders", "u", ",\"key\":\"o1\",\"row\":{},\"unchanged\":[\"notes\""),
         "is not of its format"},
        {CHL("0/30", 102, "order_items", "d", ",\"where\":{\"id\":\"i1\"}"),
         "only its parent column order_id can be"},
        {CHL("0/30", 102, "secrets", "t", ""), "not in the backup scope"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = segreplay_new(&p, &e);
        buf_reset(&b);
        seg(&b, U, bad[i][0], 1);
        assert_int_equal(segreplay_add(r, b.data, b.len, sink, &k, &e), -1);
        assert_non_null(strstr(e.msg, bad[i][1]));
        segreplay_free(r);
    }
    p.base_snapshot = "nope";
    assert_null(segreplay_new(&p, &e));
    for (int i = 0; i < 6; i++)
        buf_free(&k.out[i]);
    buf_free(&b);
    for (int i = 0; i < 2; i++)
        pgcopy_row_free(shape[i]);
    scope_free(s);
}

/* segfile: which wrapping opens an encrypted segment (the record's after a rekey, the header's
 * before 023 or when the record's key is not here), and what is refused before any decoding */
typedef struct {
    const char *ring;
    const char *required;
} KeyEnv;

static const char *keyenv_get(const char *name, void *data) {
    const KeyEnv *k = data;
    if (strcmp(name, "BACKUP_ENCRYPTION_KEYS") == 0)
        return k->ring;
    if (strcmp(name, "BACKUP_ENCRYPTION") == 0)
        return k->required;
    return NULL;
}

static Keys *keys_of(const char *ring, const char *required) {
    KeyEnv env = {ring, required};
    Buf errs = BUF_INIT;
    int n = 0;
    Keys *k = keys_load(keyenv_get, &env, &errs, &n);
    assert_int_equal(n, 0);
    buf_free(&errs);
    return k;
}

/* the check, the unwrap of the wrapping it chose, the decode: 0 and the lines in out, or -1 */
static int open_segment(const Buf *obj, const SegFileRecord *rec, const Keys *keys, char *kid,
                        Buf *out, Err *e) {
    SegFileKey k;
    int rc = segfile_check(obj->data, obj->len, rec, keys, &k, e);
    if (rc != 0)
        return rc;
    snprintf(kid, CRYPT_ID_MAX + 1, "%s", k.key_id);
    if (!k.encrypted)
        return segfile_decode(obj->data, obj->len, rec, NULL, out, e);
    unsigned char dek[CRYPT_KEY_LEN];
    if (keys_unwrap(keys, k.key_id, k.wrapped, rec->user_id, rec->id, dek, e) != 0)
        return -1;
    return segfile_decode(obj->data, obj->len, rec, dek, out, e);
}

static void test_segfile(void **state) {
    (void)state;
    const char *k1 = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const char *k2 = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
    char both[200];
    snprintf(both, sizeof(both), "%s,%s", k1, k2);
    Keys *keys1 = keys_of(k1, NULL), *keys2 = keys_of(k2, NULL), *all = keys_of(both, NULL),
         *none = keys_of(NULL, NULL), *req = keys_of(k1, "required");
    const char *id = U "-0000000001000000-0000000001000000";
    const char *lines = "{\"h\":1}\n{\"line\":\"secret\"}\n";
    /* written under k1, as the capture does: the wrapping in the header */
    unsigned char dek[CRYPT_KEY_LEN];
    Buf w1 = BUF_INIT, w2 = BUF_INIT, obj = BUF_INIT, out = BUF_INIT, cj = BUF_INIT;
    Err e;
    assert_int_equal(keys_new_dek(keys1, "k1", U, id, dek, &w1, &e), 0);
    CodecList codecs;
    assert_int_equal(codec_list_parse("gzip,aes-256-gcm", &codecs, &e), 0);
    codec_list_json(&codecs, &cj);
    CryptParams cp = {.user_id = U,
                      .backup_id = id,
                      .codecs_json = cj.data,
                      .key_id = "k1",
                      .wrapped_key = w1.data,
                      .have_dek = 1};
    memcpy(cp.dek, dek, CRYPT_KEY_LEN);
    CodecOptions co = {0, &cp};
    FilterChain *enc = codec_encoder(&codecs, &co);
    assert_int_equal(filter_chain_write(enc, lines, strlen(lines), &obj, &e), 0);
    assert_int_equal(filter_chain_finish(enc, &obj, &e), 0);
    filter_chain_free(enc);
    char sum[65], kid[CRYPT_ID_MAX + 1];
    sigv4_sha256_hex(obj.data, obj.len, sum);
    /* rekeyed to k2: only the record changes */
    assert_int_equal(keys_rewrap(all, "k1", w1.data, "k2", U, id, &w2, &e), 0);
    SegFileRecord rec = {
        id, "backups/" U "/changes/x.jsonl.gz.enc", U, sum, "gzip,aes-256-gcm", "k2", w2.data};
    assert_int_equal(open_segment(&obj, &rec, keys2, kid, &out, &e), 0);
    assert_string_equal(kid, "k2"); /* the record's: k1 retired */
    assert_int_equal(out.len, strlen(lines));
    assert_memory_equal(out.data, lines, out.len);
    buf_reset(&out);
    assert_int_equal(open_segment(&obj, &rec, keys1, kid, &out, &e), 0);
    assert_string_equal(kid, "k1"); /* k2 not here yet: the header's */
    buf_reset(&out);
    assert_int_equal(open_segment(&obj, &rec, none, kid, &out, &e), -1);
    assert_string_equal(kid, "k2"); /* neither: the error names the record's */
    assert_non_null(strstr(e.msg, "'k2'"));
    SegFileRecord old = rec; /* recorded before 023: the header's */
    old.key_id = old.wrapped_key = "";
    assert_int_equal(open_segment(&obj, &old, keys1, kid, &out, &e), 0);
    assert_string_equal(kid, "k1");
    buf_reset(&out);
    /* a wrapping that is not this segment's (another id) does not open it */
    SegFileRecord other = rec;
    Buf w3 = BUF_INIT;
    assert_int_equal(keys_rewrap(all, "k1", w1.data, "k2", U, id, &w3, &e), 0);
    other.id = U "-0000000001000000-0000000002000000";
    assert_int_equal(open_segment(&obj, &other, keys2, kid, &out, &e), -1);
    buf_reset(&out);
    /* refused before a byte is decoded: a changed byte; a cleartext segment under required */
    obj.data[obj.len / 2] ^= 1;
    SegFileKey sk;
    assert_int_equal(segfile_check(obj.data, obj.len, &rec, keys2, &sk, &e), SEGFILE_CHECKSUM);
    assert_non_null(strstr(e.msg, "Change segment checksum verification failed"));
    obj.data[obj.len / 2] ^= 1;
    SegFileRecord clear = {id, rec.key, U, sum, "gzip", NULL, NULL};
    assert_int_equal(segfile_check(obj.data, obj.len, &clear, req, &sk, &e), -1);
    assert_non_null(strstr(e.msg, "BACKUP_ENCRYPTION=required"));
    crypt_wipe(dek, sizeof(dek));
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&w1), buf_free(&w2), buf_free(&w3), buf_free(&obj), buf_free(&out), buf_free(&cj);
    keys_free(keys1), keys_free(keys2), keys_free(all), keys_free(none), keys_free(req);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_segfile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
