/* rowkeys: keys by value (a uuid in any spelling, an integer with its sign), membership exact
 * through growth, the zero key kept, text that is no key refused. */
#include "base/rowkeys.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void key(char kind, const char *s, unsigned char *out) {
    assert_int_equal(rowkeys_key(kind, s, strlen(s), out), 0);
}

static void test_spellings(void **state) {
    (void)state;
    unsigned char a[ROWKEYS_KEY_LEN], b[ROWKEYS_KEY_LEN];
    key('u', "6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a76", a);
    key('u', "\"6F1C2A4E-8D3B-4F5A-9C7E-2B1D0E9F8A76\"", b); /* a JSON string, upper case */
    assert_memory_equal(a, b, ROWKEYS_KEY_LEN);
    key('u', "{6f1c2a4e8d3b4f5a9c7e2b1d0e9f8a76}", b);
    assert_memory_equal(a, b, ROWKEYS_KEY_LEN);
    key('u', "6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a77", b);
    assert_memory_not_equal(a, b, ROWKEYS_KEY_LEN);
    key('i', "42", a);
    key('i', "+42", b);
    assert_memory_equal(a, b, ROWKEYS_KEY_LEN);
    key('i', "-42", b);
    assert_memory_not_equal(a, b, ROWKEYS_KEY_LEN);
    key('i', "9223372036854775807", a);
    key('i', "-9223372036854775808", b);
    assert_memory_not_equal(a, b, ROWKEYS_KEY_LEN);
    /* not a key: staged, never guessed */
    const char *bad_u[] = {"",
                           "6f1c2a4e",
                           "6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a7g",
                           "6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a7600",
                           "\"6f1c\\u0032a4e-8d3b\"",
                           "null"};
    for (size_t i = 0; i < sizeof(bad_u) / sizeof(*bad_u); i++)
        assert_int_equal(rowkeys_key('u', bad_u[i], strlen(bad_u[i]), a), -1);
    const char *bad_i[] = {"",
                           "-",
                           "1.0",
                           "1e3",
                           "9223372036854775808",
                           "-9223372036854775809",
                           "12345678901234567890",
                           "\"7\\u0030\"",
                           "0x10"};
    for (size_t i = 0; i < sizeof(bad_i) / sizeof(*bad_i); i++)
        assert_int_equal(rowkeys_key('i', bad_i[i], strlen(bad_i[i]), a), -1);
    assert_int_equal(rowkeys_key('x', "1", 1, a), -1);
}

static void test_set(void **state) {
    (void)state;
    RowKeys *s = rowkeys_new();
    unsigned char k[ROWKEYS_KEY_LEN];
    char text[32];
    for (int i = 0; i < 100000; i += 2) { /* the even numbers, through many doublings */
        snprintf(text, sizeof(text), "%d", i);
        key('i', text, k);
        assert_int_equal(rowkeys_add(s, k), 1);
    }
    key('i', "0", k);
    assert_int_equal(rowkeys_add(s, k), 0); /* there already */
    assert_int_equal(rowkeys_count(s), 50000);
    for (int i = 0; i < 100000; i++) {
        snprintf(text, sizeof(text), "%d", i);
        key('i', text, k);
        assert_int_equal(rowkeys_has(s, k), i % 2 == 0);
    }
    /* the zero key (the nil uuid) is a key like any other */
    unsigned char zero[ROWKEYS_KEY_LEN];
    key('u', "00000000-0000-0000-0000-000000000000", zero);
    assert_false(rowkeys_has(s, zero));
    assert_int_equal(rowkeys_add(s, zero), 1);
    assert_true(rowkeys_has(s, zero));
    assert_int_equal(rowkeys_count(s), 50001);
    rowkeys_free(s);
    rowkeys_free(NULL);
}

/* The digest term the database computes too (scope_prune_keys_sql): a uuid's first 4 bytes as
 * a signed big-endian number (PostgreSQL's ('x' || left(k::text, 8))::bit(32)::int gives
 * 16909060 and -1 for the two below); an integer itself, negatives as two's complement. */
static void test_digest(void **state) {
    (void)state;
    unsigned char k[ROWKEYS_KEY_LEN];
    key('u', "01020304-ffff-ffff-ffff-ffffffffffff", k);
    assert_true(rowkeys_digest('u', k) == 16909060);
    key('u', "ffffffff-0000-0000-0000-000000000001", k);
    assert_true(rowkeys_digest('u', k) == 0xffffffffffffffffull); /* -1 */
    key('i', "-1", k);
    assert_true(rowkeys_digest('i', k) == 0xffffffffffffffffull);
    key('i', "1000", k);
    assert_true(rowkeys_digest('i', k) == 1000);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_spellings), cmocka_unit_test(test_set),
                                       cmocka_unit_test(test_digest)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
