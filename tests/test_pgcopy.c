/* pgcopy: JSON values to COPY text fields (pure logic; the round trip through PostgreSQL's
 * input functions is tests/test_types.sh). */
#include "pg/pgcopy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void want_value(PgCopyKind kind, const char *json, const char *want) {
    Buf out = BUF_INIT;
    Err e;
    err_clear(&e);
    if (pgcopy_value(kind, json, strlen(json), &out, &e) != 0)
        fail_msg("%s: %s", json, e.msg);
    if (strcmp(out.data ? out.data : "", want) != 0)
        fail_msg("%s: got [%s], want [%s]", json, out.data, want);
    buf_free(&out);
}

static void want_refused(PgCopyKind kind, const char *json, const char *needle) {
    Buf out = BUF_INIT;
    Err e;
    err_clear(&e);
    assert_int_equal(pgcopy_value(kind, json, strlen(json), &out, &e), -1);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("%s: '%s' lacks '%s'", json, e.msg, needle);
    buf_free(&out);
}

static void test_scalars(void **state) {
    (void)state;
    /* escapes undone, then COPY's own: backslash, newline, tab and CR */
    want_value(PGCOPY_SCALAR, "\"a\\\"b\\\\c\\n\\t\\r\\/\\b\\f\"", "a\"b\\\\c\\n\\t\\r/\b\f");
    want_value(PGCOPY_SCALAR, "\"tab\there\"", "tab\\there"); /* a raw tab is still escaped */
    want_value(PGCOPY_SCALAR, "\"\\u00e9\\ud83d\\ude00 \\u20AC\"",
               "\xc3\xa9\xf0\x9f\x98\x80 \xe2\x82\xac");
    want_value(PGCOPY_SCALAR, "\"\"", "");
    want_value(PGCOPY_SCALAR, "\"\\\\N\"", "\\\\N"); /* the text \N is not NULL */
    want_value(PGCOPY_SCALAR, "null", "\\N");
    /* numbers as written: never through a double */
    want_value(PGCOPY_SCALAR, "123456789012345678901234567890.000000000000000000001",
               "123456789012345678901234567890.000000000000000000001");
    want_value(PGCOPY_SCALAR, "-9223372036854775808", "-9223372036854775808");
    want_value(PGCOPY_SCALAR, "1e+100", "1e+100");
    want_value(PGCOPY_SCALAR, "\"NaN\"", "NaN");
    want_value(PGCOPY_SCALAR, " true ", "true");
    want_value(PGCOPY_SCALAR, "false", "false");
    want_value(PGCOPY_SCALAR, "\"\\\\x00ff\"", "\\\\x00ff"); /* bytea's hex form */
    /* an object for a scalar column: its JSON text, as jsonb_populate_record gives it */
    want_value(PGCOPY_SCALAR, "{\"a\": \"x\\ny\"}", "{\"a\": \"x\\\\ny\"}");
    want_refused(PGCOPY_SCALAR, "\"a\\u0000b\"", "\\u0000 cannot be stored");
    want_refused(PGCOPY_SCALAR, "\"\\ud83d\"", "lone high surrogate");
    want_refused(PGCOPY_SCALAR, "\"\\ude00x\"", "lone low surrogate");
    want_refused(PGCOPY_SCALAR, "\"\\u12\"", "malformed \\u escape");
    want_refused(PGCOPY_SCALAR, "\"abc", "not one JSON value");
    want_refused(PGCOPY_SCALAR, "1 2", "not one JSON value");
}

static void test_json(void **state) {
    (void)state;
    /* json as is (spacing kept), only COPY's escapes added */
    want_value(PGCOPY_JSON, "{\"k\": [1, 2], \"s\": \"a\\\\b\\n\"}",
               "{\"k\": [1, 2], \"s\": \"a\\\\\\\\b\\\\n\"}");
    want_value(PGCOPY_JSON, "\"just a string\"", "\"just a string\"");
    want_value(PGCOPY_JSON, "null", "\\N");
    want_value(PGCOPY_JSON, "12.50", "12.50");
}

static void test_arrays(void **state) {
    (void)state;
    /* strings always quoted ("NULL" is not NULL), '"' and '\' escaped twice: for the literal,
     * then for COPY */
    want_value(PGCOPY_ARRAY, "[\"a\",null,\"NULL\",\"q\\\"x\",\"b\\\\s\",\"\",\"x,y\",\"{}\"]",
               "{\"a\",NULL,\"NULL\",\"q\\\\\"x\",\"b\\\\\\\\s\",\"\",\"x,y\",\"{}\"}");
    want_value(PGCOPY_ARRAY, "[[1,2],[3,4]]", "{{1,2},{3,4}}");
    want_value(PGCOPY_ARRAY, "[ ]", "{}");
    want_value(PGCOPY_ARRAY, "[true, false, -1.5e3]", "{true,false,-1.5e3}");
    want_value(PGCOPY_ARRAY, "[\"line\\nbreak\\ttab\"]", "{\"line\\nbreak\\ttab\"}");
    want_value(PGCOPY_ARRAY, "\"{1,2}\"", "{1,2}"); /* a literal given as a string */
    want_value(PGCOPY_ARRAY, "null", "\\N");
    /* json[]: every element its JSON text, quoted */
    want_value(PGCOPY_JSON_ARRAY, "[{\"a\":1},\"s\",null,[1],2]",
               "{\"{\\\\\"a\\\\\":1}\",\"\\\\\"s\\\\\"\",NULL,\"[1]\",2}");
    want_refused(PGCOPY_ARRAY, "[\"\\u0000\"]", "\\u0000");
}

static void test_rows(void **state) {
    (void)state;
    PgCopyRow *r = pgcopy_row_new();
    pgcopy_row_add(r, "id", PGCOPY_SCALAR);
    pgcopy_row_add(r, "data", PGCOPY_JSON);
    pgcopy_row_add(r, "tags", PGCOPY_ARRAY);
    pgcopy_row_add(r, "added", PGCOPY_SCALAR);
    assert_int_equal(pgcopy_row_columns(r), 4);
    Buf out = BUF_INIT;
    Err e;
    /* members out of order, one unknown (a column dropped since), one absent (added since) */
    const char *row = "{\"tags\":[\"a\"],\"id\":\"x\",\"gone\":{\"z\":1},\"data\":{\"k\":[1,2]}}";
    assert_int_equal(pgcopy_row_line(r, row, strlen(row), "\t3", &out, &e), 0);
    assert_string_equal(out.data, "x\t{\"k\":[1,2]}\t{\"a\"}\t\\N\t3\n");
    buf_reset(&out);
    row = " { \"id\" : \"first\" , \"id\" : \"last\" ,\"data\": [ 1 ] } ";
    assert_int_equal(pgcopy_row_line(r, row, strlen(row), "", &out, &e), 0);
    /* a json column keeps its own spacing, around the value too */
    assert_string_equal(out.data, "last\t [ 1 ] \t\\N\t\\N\n");
    buf_reset(&out);
    row = "{}";
    assert_int_equal(pgcopy_row_line(r, row, strlen(row), "", &out, &e), 0);
    assert_string_equal(out.data, "\\N\t\\N\t\\N\t\\N\n");
    /* a refused value names its column and leaves nothing half written */
    buf_reset(&out);
    buf_puts(&out, "kept\n");
    row = "{\"id\":\"ok\",\"tags\":[\"\\u0000\"]}";
    assert_int_equal(pgcopy_row_line(r, row, strlen(row), "", &out, &e), -1);
    assert_non_null(strstr(e.msg, "column tags"));
    assert_string_equal(out.data, "kept\n");
    const char *bad[] = {"[1]", "{\"id\":\"x\"", "{\"id\" 1}", "{\"id\":\"x", "", "{\"id\":}"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        err_clear(&e);
        if (pgcopy_row_line(r, bad[k], strlen(bad[k]), "", &out, &e) != -1)
            fail_msg("accepted %s", bad[k]);
    }
    /* the end of the input is never read past: a row cut inside a string or an escape */
    const char *cut = "{\"id\":\"ab\\u00e9\"}";
    for (size_t n = 0; n < strlen(cut); n++) {
        char *p = malloc(n + 1); /* exactly n bytes used: an overread shows under ASan/valgrind */
        memcpy(p, cut, n);
        buf_reset(&out);
        assert_int_equal(pgcopy_row_line(r, p, n, "", &out, &e), -1);
        free(p);
    }
    buf_free(&out);
    pgcopy_row_free(r);
}

static int collect(Buf *out, void *data) {
    buf_append(data, out->data, out->len);
    buf_reset(out);
    return 0;
}

/* A big row is handed on as it is written, in pieces that add up to the same line. */
static void test_spill(void **state) {
    (void)state;
    PgCopyRow *r = pgcopy_row_new();
    pgcopy_row_add(r, "id", PGCOPY_SCALAR);
    pgcopy_row_add(r, "body", PGCOPY_SCALAR);
    Buf json = BUF_INIT, whole = BUF_INIT, got = BUF_INIT, out = BUF_INIT;
    buf_puts(&json, "{\"id\":\"big\",\"body\":\"");
    for (int i = 0; i < 5000; i++)
        buf_puts(&json, "ab\\\\c\\n\\u00e9 ");
    buf_puts(&json, "\"}");
    Err e;
    assert_int_equal(pgcopy_row_line(r, json.data, json.len, "\t1", &whole, &e), 0);
    pgcopy_row_spill(r, 4096, collect, &got);
    buf_puts(&out, "before\n"); /* what the buffer held goes first */
    assert_int_equal(pgcopy_row_line(r, json.data, json.len, "\t1", &out, &e), 0);
    assert_true(got.len > 0 && out.len < 4096);
    buf_append(&got, out.data, out.len);
    assert_int_equal(got.len, whole.len + 7);
    assert_memory_equal(got.data, "before\n", 7);
    assert_memory_equal(got.data + 7, whole.data, whole.len);
    /* a small row is never split */
    buf_reset(&got);
    buf_reset(&out);
    assert_int_equal(pgcopy_row_line(r, "{\"id\":\"x\"}", 10, "", &out, &e), 0);
    assert_int_equal(got.len, 0);
    buf_free(&json);
    buf_free(&whole);
    buf_free(&got);
    buf_free(&out);
    pgcopy_row_free(r);
}

/* A member found at the top level only, past nested objects that hold its name. */
static void test_member(void **state) {
    (void)state;
    const char *v;
    size_t n;
    const char *row =
        "{\"attrs\": {\"id\": \"inner\", \"l\": [{\"id\": 1}]}, \"note\": \"\\\"id\\\": 2\","
        " \"id\" : \"6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a76\" , \"n\": 5}";
    assert_int_equal(pgcopy_member(row, strlen(row), "id", &v, &n), 0);
    assert_int_equal(n, 38);
    assert_memory_equal(v, "\"6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a76\"", n);
    assert_int_equal(pgcopy_member(row, strlen(row), "n", &v, &n), 0);
    assert_memory_equal(v, "5", n);
    assert_int_equal(pgcopy_member(row, strlen(row), "missing", &v, &n), -1);
    assert_int_equal(pgcopy_member(row, strlen(row), "i", &v, &n), -1); /* a prefix is no name */
    /* malformed or cut short: -1, nothing read past the end */
    const char *bad[] = {"", "[1]", "{\"id\"", "{\"id\":", "{\"x\": \"unterminated", "{\"id\" 1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(pgcopy_member(bad[i], strlen(bad[i]), "id", &v, &n), -1);
    assert_int_equal(pgcopy_member(row, 20, "id", &v, &n), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars), cmocka_unit_test(test_json),  cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_rows),    cmocka_unit_test(test_spill), cmocka_unit_test(test_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
