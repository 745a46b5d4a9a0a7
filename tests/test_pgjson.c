/* pgjson: COPY text rows written as row_to_json's JSON (pure logic; equality with PostgreSQL's
 * own row_to_json over a hostile tenant and every type is tests/test_rowjson.sh). The expected
 * strings below are what PostgreSQL 15 printed for the same values. */
#include "pg/pgjson.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* One column of kind k named "c": the COPY field text -> the JSON object. */
static void want(char k, const char *field, const char *json) {
    PgJsonRow *r = pgjson_row_new();
    pgjson_row_add(r, "c", k);
    Buf out = BUF_INIT;
    Err e;
    err_clear(&e);
    if (pgjson_row_write(r, field, strlen(field), &out, &e) != 0)
        fail_msg("%c [%s]: %s", k, field, e.msg);
    Buf w = BUF_INIT;
    buf_printf(&w, "{\"c\":%s}", json);
    if (strcmp(out.data, w.data) != 0)
        fail_msg("%c [%s]: got [%s], want [%s]", k, field, out.data, w.data);
    buf_free(&w);
    buf_free(&out);
    pgjson_row_free(r);
}

static void refused(char k, const char *field, const char *needle) {
    PgJsonRow *r = pgjson_row_new();
    pgjson_row_add(r, "c", k);
    Buf out = BUF_INIT;
    Err e;
    err_clear(&e);
    assert_int_equal(pgjson_row_write(r, field, strlen(field), &out, &e), -1);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("[%s]: '%s' lacks '%s'", field, e.msg, needle);
    buf_free(&out);
    pgjson_row_free(r);
}

static void test_strings(void **state) {
    (void)state;
    /* COPY's escapes undone, then escaped as escape_json does: \v and raw controls as \u00xx */
    want('s', "tab\\there \"q\" back\\\\slash\\nnl \\r cr \\b\\f\\v",
         "\"tab\\there \\\"q\\\" back\\\\slash\\nnl \\r cr \\b\\f\\u000b\"");
    want('s', "\x01\x1f\x7f \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80",
         "\"\\u0001\\u001f\x7f \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"");
    want('s', "", "\"\"");
    want('s', "\\\\N", "\"\\\\N\""); /* the text \N, not NULL */
    want('s', "\\N", "null");
    want('s', "\\101\\x42\\q", "\"ABq\""); /* octal, hex, any other char: COPY FROM's rules */
    want('s', "\\\\x00ff5c0a", "\"\\\\x00ff5c0a\""); /* bytea */
    want('d', "0044-03-15 BC", "\"0044-03-15 BC\"");
    want('d', "-infinity", "\"-infinity\"");
}

static void test_numbers_and_bools(void **state) {
    (void)state;
    want('n', "9223372036854775807", "9223372036854775807");
    want('n', "-9007199254740993", "-9007199254740993");
    want('n', "123456789012345678901234567890.123456789012345678901234567890",
         "123456789012345678901234567890.123456789012345678901234567890");
    want('n', "1.50", "1.50");
    want('n', "-0", "-0");
    want('n', "1e+100", "1e+100");
    want('n', "3.4028235e+38", "3.4028235e+38");
    want('n', "1.5e-07", "1.5e-07");
    want('n', "NaN", "\"NaN\"");
    want('n', "Infinity", "\"Infinity\"");
    want('n', "-Infinity", "\"-Infinity\"");
    want('b', "t", "true");
    want('b', "f", "false");
    refused('b', "yes", "not a boolean");
    assert_true(pgjson_is_number("0.5", 3));
    assert_false(pgjson_is_number("01", 2));
    assert_false(pgjson_is_number("1.", 2));
    assert_false(pgjson_is_number(".5", 2));
    assert_false(pgjson_is_number("1e", 2));
    assert_false(pgjson_is_number("-", 1));
    assert_false(pgjson_is_number("", 0));
}

static void test_timestamps(void **state) {
    (void)state;
    want('t', "2024-01-02 03:04:05.5", "\"2024-01-02T03:04:05.5\"");
    want('t', "0099-12-31 23:59:59.999999 BC", "\"0099-12-31T23:59:59.999999 BC\"");
    want('t', "12345-06-07 08:09:10", "\"12345-06-07T08:09:10\"");
    want('t', "infinity", "\"infinity\"");
    /* an offset of whole hours gets its minutes (XSD); others are kept */
    want('z', "2024-01-02 03:04:05+00", "\"2024-01-02T03:04:05+00:00\"");
    want('z', "1999-12-31 23:59:59.5-03:30", "\"1999-12-31T23:59:59.5-03:30\"");
    want('z', "1890-01-01 00:00:00+00:19:32", "\"1890-01-01T00:00:00+00:19:32\"");
    want('z', "0044-03-15 10:00:00-01 BC", "\"0044-03-15T10:00:00-01:00 BC\"");
    want('z', "-infinity", "\"-infinity\"");
    /* not ISO (a session's DateStyle left as SQL): kept as text, never read past its end */
    want('z', "01/01/1890 00:19:32 LMT", "\"01/01/1890T00:19:32 LMT\"");
    want('z', "x ", "\"xT\"");
}

static void test_json_and_arrays(void **state) {
    (void)state;
    want('j', "{\"sp\" :  [1 ,2],\\t\"s\": \"\\\\u00e9\"}",
         "{\"sp\" :  [1 ,2],\t\"s\": \"\\u00e9\"}");
    want('S', "{\"a,b\",NULL,\"NULL\",\"q\\\\\"x\",\"b\\\\\\\\s\",\"\",abc,\"{}\"}",
         "[\"a,b\",null,\"NULL\",\"q\\\"x\",\"b\\\\s\",\"\",\"abc\",\"{}\"]");
    want('N', "{{1,2},{3,NULL}}", "[[1,2],[3,null]]");
    want('N', "[0:1]={1,2}", "[1,2]");
    want('N', "[1:1][2:3]={{1,2}}", "[[1,2]]");
    want('N', "{NaN,1.10,-0.0}", "[\"NaN\",1.10,-0.0]");
    want('N', "{}", "[]");
    want('B', "{t,f,NULL}", "[true,false,null]");
    want('Z', "{\"2024-01-02 03:04:05+00\",infinity}",
         "[\"2024-01-02T03:04:05+00:00\",\"infinity\"]");
    want('J', "{\"{\\\\\"a\\\\\": 1}\",\"\\\\\"s\\\\\"\",\"[1, [2]]\",NULL}",
         "[{\"a\": 1},\"s\",[1, [2]],null]");
    refused('N', "{1,2", "not an array literal");
    refused('N', "1,2}", "not an array literal");
    refused('N', "{1}}", "not an array literal");
    refused('S', "{\"abc}", "not an array literal");
}

static void test_rows(void **state) {
    (void)state;
    PgJsonRow *r = pgjson_row_new();
    pgjson_row_add(r, "id", 'n');
    pgjson_row_add(r, "na\"me", 's');
    pgjson_row_add(r, "tags", 'S');
    assert_int_equal(pgjson_row_columns(r), 3);
    Buf out = BUF_INIT;
    Err e;
    err_clear(&e);
    const char *line = "7\tx\\ty\t\\N\n";
    assert_int_equal(pgjson_row_write(r, line, strlen(line), &out, &e), 0);
    assert_string_equal(out.data, "{\"id\":7,\"na\\\"me\":\"x\\ty\",\"tags\":null}");
    buf_reset(&out);
    assert_int_equal(pgjson_row_write(r, "7\tx", 3, &out, &e), -1);
    assert_non_null(strstr(e.msg, "does not have 3 fields"));
    buf_reset(&out);
    assert_int_equal(pgjson_row_write(r, "7\tx\t{}\tmore", 11, &out, &e), -1);
    buf_reset(&out);
    assert_int_equal(pgjson_row_write(r, "7\tx\t{oops", 9, &out, &e), -1);
    assert_non_null(strstr(e.msg, "column 3: "));
    buf_free(&out);
    pgjson_row_free(r);
}

/* A value longer than a reservation slice, escapes straddling the slices' edges. */
static void test_big_value(void **state) {
    (void)state;
    Buf field = BUF_INIT, want_json = BUF_INIT, out = BUF_INIT;
    buf_puts(&want_json, "{\"c\":\"");
    for (int i = 0; i < 100000; i++) {
        buf_puts(&field, i % 3 ? "ab\\n" : "\x01\\\\");
        buf_puts(&want_json, i % 3 ? "ab\\n" : "\\u0001\\\\");
    }
    buf_puts(&want_json, "\"}");
    PgJsonRow *r = pgjson_row_new();
    pgjson_row_add(r, "c", 's');
    Err e;
    assert_int_equal(pgjson_row_write(r, field.data, field.len, &out, &e), 0);
    assert_int_equal(out.len, want_json.len);
    assert_memory_equal(out.data, want_json.data, out.len);
    /* the worst case: every byte escaped, 6 bytes each (the buffer grows as the escapes come),
     * appended after what the buffer already holds */
    buf_reset(&field);
    buf_reset(&want_json);
    buf_append(&want_json, out.data, out.len);
    buf_puts(&want_json, "{\"c\":\"");
    for (int i = 0; i < 200000; i++) {
        buf_puts(&field, "\x1f");
        buf_puts(&want_json, "\\u001f");
    }
    buf_puts(&want_json, "\"}");
    assert_int_equal(pgjson_row_write(r, field.data, field.len, &out, &e), 0);
    assert_int_equal(out.len, want_json.len);
    assert_memory_equal(out.data, want_json.data, out.len);
    pgjson_row_free(r);
    buf_free(&field);
    buf_free(&want_json);
    buf_free(&out);
}

/* A row written in parts of at least 1000 bytes is the row written whole; a value that is not
 * text is never cut. */
static void test_parts(void **state) {
    (void)state;
    PgJsonRow *r = pgjson_row_new();
    pgjson_row_add(r, "a", 's');
    pgjson_row_add(r, "n", 'n');
    pgjson_row_add(r, "j", 'j');
    pgjson_row_add(r, "z", 'N');
    pgjson_row_add(r, "e", 's');
    Buf line = BUF_INIT, whole = BUF_INIT, parts = BUF_INIT;
    for (int i = 0; i < 200000; i++)
        buf_puts(&line, i % 7 ? "x\\\"" : "\\t\x01");
    buf_puts(&line, "\t42\t{\"k\": \"");
    for (int i = 0; i < 100000; i++)
        buf_puts(&line, "\\\\u00e9\\n");
    buf_puts(&line, "\"}\t{1,2}\t\\N\n");
    Err e;
    assert_int_equal(pgjson_row_write(r, line.data, line.len, &whole, &e), 0);
    PgJsonCursor cur = PGJSON_CURSOR_INIT;
    int calls = 0, rc;
    Buf piece = BUF_INIT;
    while ((rc = pgjson_row_write_part(r, line.data, line.len, &cur, &piece, 1000, &e)) == 0) {
        assert_true(piece.len >= 1000);
        assert_true(piece.len < 1000 + 6 * 65536 + 64); /* one slice past the limit at most */
        buf_append(&parts, piece.data, piece.len);
        buf_reset(&piece);
        calls++;
    }
    assert_int_equal(rc, 1);
    buf_append(&parts, piece.data, piece.len);
    assert_true(calls > 10);
    assert_int_equal(parts.len, whole.len);
    assert_memory_equal(parts.data, whole.data, whole.len);
    assert_int_equal(cur.field, 0); /* ready for the next row */
    assert_int_equal(cur.pos, 0);
    buf_free(&piece);
    buf_free(&line);
    buf_free(&whole);
    buf_free(&parts);
    pgjson_row_free(r);
}

/* Malformed lines of every kind: an error or some output, never a read or write out of bounds
 * (valgrind and ASan run this). */
static void test_garbage(void **state) {
    (void)state;
    static const char alphabet[] = "\\\t{}\",NUL[]=:+- 0123456789tfTxBC\n\x01";
    const char kinds[] = "snbdtzjSNBDTZJ";
    unsigned seed = 12345;
    Buf out = BUF_INIT;
    for (int i = 0; i < 20000; i++) {
        char line[48];
        seed = seed * 1103515245 + 12345;
        size_t n = (seed >> 16) % sizeof(line);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 1103515245 + 12345;
            line[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        PgJsonRow *r = pgjson_row_new();
        pgjson_row_add(r, "a", kinds[i % 14]);
        pgjson_row_add(r, "b", kinds[(i / 14) % 14]);
        char *exact = malloc(n ? n : 1); /* no slack after the line for a read past it */
        memcpy(exact, line, n);
        Err e;
        buf_reset(&out);
        (void)pgjson_row_write(r, exact, n, &out, &e);
        free(exact);
        pgjson_row_free(r);
    }
    buf_free(&out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings),    cmocka_unit_test(test_numbers_and_bools),
        cmocka_unit_test(test_timestamps), cmocka_unit_test(test_json_and_arrays),
        cmocka_unit_test(test_rows),       cmocka_unit_test(test_big_value),
        cmocka_unit_test(test_parts),      cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
