/* test_json: the strict JSON syntax check (pure logic). */
#include "base/json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static int ok(const char *s) {
    return json_valid(s, strlen(s), NULL);
}

static void test_valid(void **state) {
    (void)state;
    const char *good[] = {
        "{}",
        "[]",
        " 0 ",
        "-0.5e+10",
        "9007199254740993",
        "123456789012345678901234567890.12",
        "\"caf\xc3\xa9 \\u00e9 \\\" \\\\ \\n \xf0\x9f\x98\x80\"",
        "{\"a\":[1,{\"b\":null}],\"c\":true}",
        "[[[[[]]]]]",
        "{\"id\":\"x\",\"v\":\"\\\\x0001\"}",
        "[1,2,3]\n",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!ok(good[i]))
            fail_msg("refused valid JSON: %s", good[i]);
}

static void test_invalid(void **state) {
    (void)state;
    const char *bad[] = {
        "",
        "{",
        "}",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "\"tab\there\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\xc3\"",
        "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"",
        "tru",
        "nul",
        "[1] [2]",
        "{\"a\":1}}",
        "\"open",
        "[\"a\" \"b\"]",
        "NaN",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ok(bad[i]))
            fail_msg("accepted invalid JSON: %s", bad[i]);
    size_t at = 0;
    assert_int_equal(json_valid("[1,2,x]", 7, &at), 0);
    assert_int_equal(at, 5);
}

static void test_depth_limit(void **state) {
    (void)state;
    size_t n = 2 * (JSON_MAX_DEPTH + 1);
    char *s = malloc(n);
    memset(s, '[', n / 2);
    memset(s + n / 2, ']', n / 2);
    assert_int_equal(json_valid(s, n, NULL), 0);
    assert_int_equal(json_valid(s + 1, n - 2, NULL), 1); /* exactly at the limit */
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_depth_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
