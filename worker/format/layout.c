/* layout: keys and ids of backups (see layout.h). */
#include "format/layout.h"

#include <stdio.h>
#include <ctype.h>
#include <string.h>

int layout_backup_key(char *out, size_t n, const char *user_id, const char *backup_id,
                      int incremental, const CodecList *codecs) {
    char suffix[32];
    codec_suffix(codecs, suffix, sizeof(suffix));
    int k = snprintf(out, n, "backups/%s/%s%s.json%s", user_id, incremental ? "incremental/" : "",
                     backup_id, suffix);
    return k < 0 || (size_t)k >= n || (size_t)k >= LAYOUT_KEY_MAX ? -1 : 0;
}

int layout_segment_key(char *out, size_t n, const char *user_id, unsigned long long start_lsn,
                       unsigned long long end_lsn, unsigned long long epoch,
                       const CodecList *codecs) {
    char suffix[32];
    codec_suffix(codecs, suffix, sizeof(suffix));
    int k = snprintf(out, n, "backups/%s/changes/%016llX-%016llX-e%llu.jsonl%s", user_id, start_lsn,
                     end_lsn, epoch, suffix);
    return k < 0 || (size_t)k >= n || (size_t)k >= LAYOUT_KEY_MAX ? -1 : 0;
}

void layout_manifest_key(char *out, size_t n, const char *key) {
    snprintf(out, n, "%s%s", key, LAYOUT_MANIFEST_EXT);
}

void layout_user_prefix(char *out, size_t n, const char *user_id) {
    snprintf(out, n, "backups/%s/", user_id);
}

int layout_key_is_users(const char *key, const char *user_id) {
    char prefix[64];
    layout_user_prefix(prefix, sizeof(prefix), user_id);
    return strncmp(key, prefix, strlen(prefix)) == 0 && strstr(key, "..") == NULL &&
           strlen(key) < LAYOUT_KEY_MAX;
}

void layout_export_key(char *out, size_t n, const char *user_id, const char *export_id) {
    snprintf(out, n, "exports/%s/%s.json.gz", user_id, export_id);
}

int layout_key_is_users_export(const char *key, const char *user_id) {
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "exports/%s/", user_id);
    return strncmp(key, prefix, strlen(prefix)) == 0 && strstr(key, "..") == NULL &&
           strlen(key) < LAYOUT_KEY_MAX;
}

/* a UUID's shape: 8-4-4-4-12 hex digits */
static int uuid_at(const char *s) {
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

int layout_user_of_backup_id(const char *backup_id, char user[37]) {
    const char *dash = strchr(backup_id, '-');
    if (dash == NULL || strnlen(dash + 1, 37) < 37 || !uuid_at(dash + 1) || dash[37] != '-')
        return -1;
    memcpy(user, dash + 1, 36);
    user[36] = '\0';
    return 0;
}

int layout_user_of_key(const char *key, char user[37]) {
    static const char top[] = "backups/";
    size_t n = sizeof(top) - 1;
    if (strncmp(key, top, n) != 0 || strnlen(key + n, 37) < 37 || !uuid_at(key + n) ||
        key[n + 36] != '/' || strstr(key, "..") || strlen(key) >= LAYOUT_KEY_MAX)
        return -1;
    memcpy(user, key + n, 36);
    user[36] = '\0';
    return 0;
}

int layout_backup_id_names_user(const char *backup_id, const char *user_id) {
    const char *dash = strchr(backup_id, '-');
    return dash && strlen(user_id) == 36 && strncmp(dash + 1, user_id, 36) == 0 && dash[37] == '-';
}
