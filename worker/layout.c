/* layout: keys and ids of backups (see layout.h). */
#include "layout.h"

#include <stdio.h>
#include <string.h>

int layout_backup_key(char *out, size_t n, const char *user_id, const char *backup_id,
                      int incremental, const CodecList *codecs) {
    char suffix[32];
    codec_suffix(codecs, suffix, sizeof(suffix));
    int k = snprintf(out, n, "backups/%s/%s%s.json%s", user_id, incremental ? "incremental/" : "",
                     backup_id, suffix);
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

int layout_backup_id_names_user(const char *backup_id, const char *user_id) {
    const char *dash = strchr(backup_id, '-');
    return dash && strlen(user_id) == 36 && strncmp(dash + 1, user_id, 36) == 0 && dash[37] == '-';
}
