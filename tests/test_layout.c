/*
 * test_layout: where a backup lives and how its id and key name its user (worker/format/
 * layout.h), with hostile inputs: a key outside backups/, a "..", a short or malformed uuid,
 * a backup id whose user part is not a uuid, a key that is too long.
 */
#include "format/layout.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define U "0a1c0000-0000-4000-8000-00000000d3e0"

static void test_keys(void **state) {
    (void)state;
    char key[LAYOUT_KEY_MAX], m[LAYOUT_KEY_MAX + 32];
    CodecList l;
    Err e;
    assert_int_equal(codec_list_parse("gzip,aes-256-gcm", &l, &e), 0);
    assert_int_equal(layout_backup_key(key, sizeof(key), U, "backup-" U "-1", 0, &l), 0);
    assert_string_equal(key, "backups/" U "/backup-" U "-1.json.gz.enc");
    assert_int_equal(layout_backup_key(key, sizeof(key), U, "incremental-" U "-2", 1, &l), 0);
    assert_string_equal(key, "backups/" U "/incremental/incremental-" U "-2.json.gz.enc");
    layout_manifest_key(m, sizeof(m), key);
    assert_string_equal(m, "backups/" U "/incremental/incremental-" U "-2.json.gz.enc.manifest.json");
    char small[20];
    assert_int_equal(layout_backup_key(small, sizeof(small), U, "backup-" U "-1", 0, &l), -1);
    layout_user_prefix(key, sizeof(key), U);
    assert_string_equal(key, "backups/" U "/");
}

static void test_users_of_ids_and_keys(void **state) {
    (void)state;
    char user[37];
    assert_int_equal(layout_user_of_backup_id("backup-" U "-1732790000000", user), 0);
    assert_string_equal(user, U);
    assert_int_equal(layout_user_of_backup_id("differential-" U "-1", user), 0);
    assert_int_equal(layout_user_of_backup_id("backup-" U, user), -1);            /* no stamp */
    assert_int_equal(layout_user_of_backup_id("backup-0a1c0000-0000", user), -1); /* short */
    assert_int_equal(layout_user_of_backup_id("backup-0a1c0000x0000-4000-8000-00000000d3e0-1", user),
                     -1);
    assert_int_equal(layout_user_of_backup_id("backup", user), -1);
    assert_int_equal(layout_user_of_key("backups/" U "/backup-" U "-1.json.gz", user), 0);
    assert_string_equal(user, U);
    assert_int_equal(layout_user_of_key("backups/" U "/../other/x", user), -1);
    assert_int_equal(layout_user_of_key("other/" U "/x", user), -1);
    assert_int_equal(layout_user_of_key("backups/" U "x", user), -1);
    assert_int_equal(layout_user_of_key("backups/short/x", user), -1);
    char longkey[LAYOUT_KEY_MAX + 10];
    memset(longkey, 'a', sizeof(longkey));
    memcpy(longkey, "backups/" U "/", 45);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(layout_user_of_key(longkey, user), -1);
    assert_true(layout_key_is_users("backups/" U "/x.json", U));
    assert_false(layout_key_is_users("backups/" U "/../x.json", U));
    assert_false(layout_key_is_users("backups/0a1c0000-0000-4000-8000-00000000d3e1/x", U));
    assert_true(layout_backup_id_names_user("backup-" U "-1", U));
    assert_false(layout_backup_id_names_user("backup-" U "1", U));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_users_of_ids_and_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
