/*
 * test_redisslot: the hash slot of a key as Redis Cluster computes it (CRC16 XMODEM of the
 * {hash tag}, else of the whole key): the values CLUSTER KEYSLOT gives.
 */
#include "testutil.h"
#include "redis/redis.h"

#include <string.h>

static int slot(const char *k) {
    return redis_key_slot(k, strlen(k));
}

static void test_slots(void **state) {
    (void)state;
    assert_int_equal(slot("123456789"), 12739); /* CRC16 0x31C3, Redis Cluster's spec */
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot("{backup}:jobs"), slot("backup"));
    assert_int_equal(slot("{backup}:job:abc"), slot("{backup}:events"));
    assert_int_equal(slot("{}backup"), slot("{}backup")); /* an empty tag: the whole key */
    assert_true(slot("{}backup") != slot(""));
    assert_int_equal(slot("x{a}{b}"), slot("a")); /* the first tag */
    assert_int_equal(slot("x{a"), slot("x{a"));   /* no closing brace: the whole key */
    assert_true(slot("backup:jobs") != slot("backup:job:abc")); /* why the prefix needs a tag */
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_slots)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
