/*
 * test_bfile: the backup document writer and the manifest (pure logic): the
 * exact layout (header line, one row per line, empty tables, deleted keys,
 * trailer), header values escaped, null for what a full backup lacks.
 */
#include "bfile.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static BfileHeader header(const char *type, const char *base) {
    BfileHeader h = {
        "backup-u-1", "u", type, base, "10:12:11", base ? "5:5:" : NULL, "2026-11-28T15:00:00.000Z",
        "gzip"};
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
        "{\"format\":\"pedidolist-backup\",\"version\":1,\"backup_id\":\"backup-u-1\",\"user_id\":"
        "\"u\",\"type\":\"full\",\"base_backup_id\":null,\"snapshot\":\"10:12:11\","
        "\"base_snapshot\":null,\"created_at\":\"2026-11-28T15:00:00.000Z\",\"compression\":"
        "\"gzip\",\"tables\":{\n"
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
    bfile_manifest(&b, &h, "backups/u/backup-u-1.json.gz", "{\"orders\":2}", "{\"orders\":0}",
                   "ab12", 10, 20, "2026-11-28T15:00:01.000Z");
    assert_non_null(strstr(b.data, "\"created_at\":\"a\\\"b\\\\c\\n\""));
    assert_non_null(strstr(b.data,
                           "\"key\":\"backups/u/backup-u-1.json.gz\",\"rows\":{\"orders\":2},"
                           "\"deleted\":{\"orders\":0},\"sha256\":\"ab12\",\"size\":10,"
                           "\"raw_size\":20,\"finished_at\":\"2026-11-28T15:00:01.000Z\"}\n"));
    assert_int_equal(strchr(b.data, '\n') - b.data, (long)b.len - 1); /* one line */
    buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_document_layout),
        cmocka_unit_test(test_incremental_deleted_section),
        cmocka_unit_test(test_manifest_and_escaping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
