/*
 * test_bfile: the backup document writer and the manifest (pure logic): the
 * exact layout (header line, one row per line, empty tables, deleted keys,
 * trailer), header values escaped, null for what a full backup lacks.
 */
#include "base/json.h"
#include "format/bfile.h"
#include "format/manifest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static CodecList gzip_only = {1, {"gzip"}};

static BfileHeader header(const char *type, const char *base) {
    BfileHeader h = {
        "backup-u-1", "u", type, base, "10:12:11", base ? "5:5:" : NULL, "2026-11-28T15:00:00.000Z",
        &gzip_only};
    return h;
}

static void test_full_document_layout(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    BfileWriter w;
    BfileHeader h = header("full", NULL);
    bfile_begin(&w, &b, &h);
    bfile_list_begin(&w, &b, "profiles");
    bfile_item(&w, &b, "{\"id\":1}", 8);
    bfile_list_end(&w, &b);
    bfile_list_begin(&w, &b, "orders");
    bfile_list_end(&w, &b);
    bfile_list_begin(&w, &b, "order_items");
    bfile_item(&w, &b, "{\"id\":2}", 8);
    bfile_item(&w, &b, "{\"id\":3}", 8);
    bfile_list_end(&w, &b);
    bfile_end(&w, &b, "{\"rows\":{}}");
    assert_string_equal(
        b.data,
        "{\"format\":\"pedidolist-backup\",\"version\":2,\"backup_id\":\"backup-u-1\",\"user_id\":"
        "\"u\",\"type\":\"full\",\"base_backup_id\":null,\"snapshot\":\"10:12:11\","
        "\"base_snapshot\":null,\"created_at\":\"2026-11-28T15:00:00.000Z\",\"compression\":"
        "\"gzip\",\"codecs\":[\"gzip\"],\"tables\":{\n"
        "\"profiles\":[\n{\"id\":1}\n],\n"
        "\"orders\":[],\n"
        "\"order_items\":[\n{\"id\":2},\n{\"id\":3}\n]},\n"
        "\"deleted\":{},\n"
        "\"trailer\":{\"rows\":{}}}\n");
    buf_free(&b);
}

static void test_incremental_deleted_section(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    BfileWriter w;
    BfileHeader h = header("incremental", "backup-u-0");
    bfile_begin(&w, &b, &h);
    bfile_list_begin(&w, &b, "orders");
    bfile_list_end(&w, &b);
    bfile_deleted_begin(&w, &b);
    bfile_list_begin(&w, &b, "orders");
    bfile_item(&w, &b, "\"a\"", 3);
    bfile_list_end(&w, &b);
    bfile_list_begin(&w, &b, "clients");
    bfile_list_end(&w, &b);
    bfile_end(&w, &b, "{}");
    assert_non_null(strstr(b.data, "\"base_backup_id\":\"backup-u-0\""));
    assert_non_null(strstr(b.data, "\"base_snapshot\":\"5:5:\""));
    const char *tail = strstr(b.data, "\"tables\":{");
    assert_non_null(tail);
    assert_string_equal(tail,
                        "\"tables\":{\n\"orders\":[]},\n\"deleted\":{\n\"orders\":[\n\"a\"\n],\n"
                        "\"clients\":[]},\n\"trailer\":{}}\n");
    buf_free(&b);
}

static void test_manifest_and_escaping(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    BfileHeader h = header("full", NULL);
    h.created_at = "a\"b\\c\n";
    manifest_write(&b, &h, "backups/u/backup-u-1.json.gz", "{\"orders\":2}", "{\"orders\":0}",
                   "ab12", 10, 20, "2026-11-28T15:00:01.000Z", NULL, NULL, NULL);
    assert_non_null(strstr(b.data, "\"created_at\":\"a\\\"b\\\\c\\n\""));
    assert_non_null(strstr(b.data,
                           "\"key\":\"backups/u/backup-u-1.json.gz\",\"rows\":{\"orders\":2},"
                           "\"deleted\":{\"orders\":0},\"sha256\":\"ab12\",\"size\":10,"
                           "\"raw_size\":20,\"finished_at\":\"2026-11-28T15:00:01.000Z\"}\n"));
    assert_int_equal(strchr(b.data, '\n') - b.data, (long)b.len - 1); /* one line */
    buf_free(&b);
}

/* An encrypted backup's manifest: its wrappings read back; rekey replaces the newest one
 * only; an encrypted manifest without its wrapped key is refused. */
static void test_manifest_wrapping(void **state) {
    (void)state;
    Buf b = BUF_INIT, r = BUF_INIT;
    BfileHeader h = header("full", NULL);
    CodecList enc;
    Err e;
    assert_int_equal(codec_list_parse("gzip,aes-256-gcm", &enc, &e), 0);
    h.codecs = &enc;
    manifest_write(&b, &h, "backups/u/backup-u-1.json.gz.enc", "{\"orders\":2}", "{\"orders\":0}",
                   "ab12", 10, 20, "2026-11-28T15:00:01.000Z", "k1", "V1==", "k1");
    Manifest m;
    assert_int_equal(manifest_parse(b.data, b.len, &m, &e), 0);
    assert_string_equal(m.key_id, "k1");
    assert_string_equal(m.wrapped_key, "V1==");
    assert_string_equal(m.origin_key_id, "k1");
    assert_int_equal(manifest_rewrap(b.data, b.len, "k2", "V2==", &r), 0);
    assert_int_equal(manifest_parse(r.data, r.len, &m, &e), 0);
    assert_string_equal(m.key_id, "k2");
    assert_string_equal(m.wrapped_key, "V2==");
    assert_string_equal(m.origin_key_id, "k1"); /* the object's header did not change */
    assert_string_equal(m.sha256, "ab12");
    assert_string_equal(m.codecs.name[1], "aes-256-gcm");
    buf_reset(&b);
    manifest_write(&b, &h, "backups/u/backup-u-1.json.gz.enc", "{}", "{}", "ab12", 10, 20, "x",
                   NULL, NULL, NULL);
    assert_int_equal(manifest_parse(b.data, b.len, &m, &e), -1);
    assert_non_null(strstr(e.msg, "without its wrapped key"));
    assert_int_equal(manifest_rewrap(b.data, b.len, "k2", "V2==", &r), -1);
    buf_free(&b);
    buf_free(&r);
}

/* The one reader gives back what the one writer wrote; a format-v1 manifest (no "codecs")
 * reads as its compression says. */
static void test_manifest_round_trip(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    BfileHeader h = header("differential", "backup-u-0");
    manifest_write(&b, &h, "backups/u/backup-u-1.json.gz", "{\"orders\":2,\"clients\":5}",
                   "{\"orders\":1}", "ab12", 10, 20, "2026-11-28T15:00:01.000Z", NULL, NULL, NULL);
    Manifest m;
    Err e;
    assert_int_equal(manifest_parse(b.data, b.len, &m, &e), 0);
    assert_int_equal(m.version, BFILE_VERSION);
    assert_string_equal(m.backup_id, "backup-u-1");
    assert_string_equal(m.base_backup_id, "backup-u-0");
    assert_string_equal(m.key, "backups/u/backup-u-1.json.gz");
    assert_string_equal(m.rows, "{\"orders\":2,\"clients\":5}");
    assert_int_equal(m.size, 10);
    assert_int_equal(m.raw_size, 20);
    assert_int_equal(m.codecs.n, 1);
    assert_string_equal(m.codecs.name[0], "gzip");
    uint64_t n = 0;
    assert_int_equal(manifest_count_of(m.rows, "clients", &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(manifest_count_of(m.rows, "profiles", &n), -1);
    assert_int_equal(manifest_counts_sum(m.rows, &n), 0);
    assert_int_equal(n, 7);
    buf_free(&b);

    const char *v1 =
        "{\"format\":\"pedidolist-backup\",\"version\":1,\"backup_id\":\"b\","
        "\"user_id\":\"u\",\"type\":\"full\",\"base_backup_id\":null,\"snapshot\":"
        "\"1:1:\",\"base_snapshot\":null,\"created_at\":\"t\",\"compression\":\"none\","
        "\"key\":\"k\",\"rows\":{},\"deleted\":{},\"sha256\":\"s\",\"size\":1,"
        "\"raw_size\":1,\"finished_at\":\"t\"}";
    assert_int_equal(manifest_parse(v1, strlen(v1), &m, &e), 0);
    assert_int_equal(m.version, 1);
    assert_int_equal(m.codecs.n, 0);
    assert_int_equal(manifest_parse(v1, strlen(v1) - 30, &m, &e), -1); /* cut: no sha256 */
    assert_non_null(strstr(e.msg, "manifest"));
}

/* Count objects as jsonb prints them (spaces), and malformed ones refused. */
static void test_counts_reader(void **state) {
    (void)state;
    uint64_t n = 0;
    assert_int_equal(manifest_count_of("{\"orders\": 3, \"order_items\": 9}", "order_items", &n),
                     0);
    assert_int_equal(n, 9);
    assert_int_equal(manifest_counts_sum("{}", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(manifest_counts_sum("{\"a\":1,\"b\":x}", &n), -1);
    assert_int_equal(manifest_counts_sum("{\"a\":1", &n), -1);
    assert_int_equal(manifest_counts_sum("[1]", &n), -1);
}

/* ---- the reader ---- */

typedef struct {
    Buf log; /* what the callbacks saw */
    int stop_at;
} Seen;

static int on_header(const char *json, size_t len, void *data, Err *err) {
    (void)err;
    Seen *s = data;
    char id[64];
    assert_int_equal(json_field(json, len, "backup_id", id, sizeof(id)), 0);
    buf_printf(&s->log, "H %s|", id);
    return 0;
}

static int on_item(int section, const char *table, const char *json, size_t len, void *data,
                   Err *err) {
    Seen *s = data;
    buf_printf(&s->log, "%c %s %.*s|", section ? 'D' : 'R', table, (int)len, json);
    if (s->stop_at && --s->stop_at == 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "stopped by the callback");
        return -1;
    }
    return 0;
}

static int on_trailer(const char *json, size_t len, void *data, Err *err) {
    (void)err;
    Seen *s = data;
    buf_printf(&s->log, "T %.*s", (int)len, json);
    return 0;
}

static const BfileReaderCb reader_cb = {on_header, on_item, on_trailer};

static void sample_doc(Buf *b) {
    BfileWriter w;
    BfileHeader h = header("incremental", "backup-u-0");
    bfile_begin(&w, b, &h);
    bfile_list_begin(&w, b, "profiles");
    const char *row = "{\"id\":1,\"s\":\"a,\\n]\"}";
    bfile_item(&w, b, row, strlen(row));
    bfile_list_end(&w, b);
    bfile_list_begin(&w, b, "orders");
    bfile_list_end(&w, b);
    bfile_list_begin(&w, b, "order_items");
    bfile_item(&w, b, "{\"id\":2}", 8);
    bfile_item(&w, b, "{\"id\":3}", 8);
    bfile_list_end(&w, b);
    bfile_deleted_begin(&w, b);
    bfile_list_begin(&w, b, "orders");
    bfile_item(&w, b, "\"k1\"", 4);
    bfile_list_end(&w, b);
    bfile_list_begin(&w, b, "clients");
    bfile_list_end(&w, b);
    bfile_end(&w, b, "{\"rows\":{\"profiles\":1}}");
}

static const char *expected_log =
    "H backup-u-1|R profiles {\"id\":1,\"s\":\"a,\\n]\"}|R order_items {\"id\":2}|"
    "R order_items {\"id\":3}|D orders \"k1\"|T {\"rows\":{\"profiles\":1}}";

static void test_reader_round_trip_any_chunking(void **state) {
    (void)state;
    Buf doc = BUF_INIT;
    sample_doc(&doc);
    size_t steps[] = {1, 2, 7, 64, doc.len};
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        Seen s = {BUF_INIT, 0};
        BfileReader *r = bfile_reader_new(&reader_cb, 1, &s);
        Err err;
        for (size_t off = 0; off < doc.len; off += steps[k]) {
            size_t n = doc.len - off < steps[k] ? doc.len - off : steps[k];
            assert_int_equal(bfile_reader_feed(r, doc.data + off, n, &err), 0);
        }
        assert_int_equal(bfile_reader_end(r, &err), 0);
        assert_string_equal(s.log.data, expected_log);
        bfile_reader_free(r);
        buf_free(&s.log);
    }
    buf_free(&doc);
}

/* Feed all of text; the error message from feed or end. */
static void expect_error(const char *text, size_t len, const char *needle) {
    Seen s = {BUF_INIT, 0};
    BfileReader *r = bfile_reader_new(&reader_cb, 1, &s);
    Err err;
    err_clear(&err);
    int rc = bfile_reader_feed(r, text, len, &err);
    if (rc == 0)
        rc = bfile_reader_end(r, &err);
    assert_int_equal(rc, -1);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error '%s' does not say '%s'", err.msg, needle);
    bfile_reader_free(r);
    buf_free(&s.log);
}

static void test_reader_refuses_damage(void **state) {
    (void)state;
    Buf doc = BUF_INIT;
    sample_doc(&doc);
    expect_error(doc.data, doc.len - 1, "does not end with a newline");
    const char *trailer = strstr(doc.data, "\"trailer\"");
    expect_error(doc.data, (size_t)(trailer - doc.data), "ends early");
    expect_error("{\"format\":\"other\"}\n", 19, "not a pedidolist-backup document");

    Buf bad = BUF_INIT; /* a row that is not JSON */
    buf_append(&bad, doc.data, doc.len);
    char *row = strstr(bad.data, "{\"id\":2}");
    row[6] = 'x';
    expect_error(bad.data, bad.len, "line 7: a row is not valid JSON");
    bad.len = 0; /* an item after the last one */
    buf_append(&bad, doc.data, doc.len);
    row = strstr(bad.data, "{\"id\":3}");
    row[-2] = ' ';
    expect_error(bad.data, bad.len, "expected the end of a list");
    bad.len = 0; /* a table name that is not an identifier */
    buf_append(&bad, doc.data, doc.len);
    row = strstr(bad.data, "\"orders\":[]");
    row[1] = 'O';
    expect_error(bad.data, bad.len, "expected a table's list");
    buf_append(&doc, "x\n", 2);
    expect_error(doc.data, doc.len, "data after the end");
    buf_free(&bad);
    buf_free(&doc);
}

static void test_reader_callback_stops(void **state) {
    (void)state;
    Buf doc = BUF_INIT;
    sample_doc(&doc);
    Seen s = {BUF_INIT, 2};
    BfileReader *r = bfile_reader_new(&reader_cb, 0, &s);
    Err err;
    assert_int_equal(bfile_reader_feed(r, doc.data, doc.len, &err), -1);
    assert_string_equal(err.msg, "stopped by the callback");
    bfile_reader_free(r);
    buf_free(&s.log);
    buf_free(&doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_document_layout),
        cmocka_unit_test(test_incremental_deleted_section),
        cmocka_unit_test(test_manifest_and_escaping),
        cmocka_unit_test(test_manifest_wrapping),
        cmocka_unit_test(test_manifest_round_trip),
        cmocka_unit_test(test_counts_reader),
        cmocka_unit_test(test_reader_round_trip_any_chunking),
        cmocka_unit_test(test_reader_refuses_damage),
        cmocka_unit_test(test_reader_callback_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
