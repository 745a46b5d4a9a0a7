/* keys: the key-encryption keys of this process (see keys.h). */
#include "keys.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct Keys {
    Keyring *ring;
    char current[CRYPT_ID_MAX + 1];
    int required;
    const char *source; /* the variable the keyring came from */
};

static const ConfigVar vars[] = {
    {"BACKUP_ENCRYPTION", "auto",
     "auto: encrypt new backups whenever a key is set; required: refuse to start without one"},
    {"BACKUP_ENCRYPTION_KEYS", NULL,
     "keyring, ID:BASE64 entries separated by commas, 32-byte keys (secret; never logged)"},
    {"BACKUP_ENCRYPTION_KEYS_FILE", NULL, "file with the keyring, one ID:BASE64 entry per line"},
    {"BACKUP_ENCRYPTION_KEY_ID", NULL, "key of new backups (default: the keyring's last entry)"},
};

void keys_print_help(FILE *out) {
    config_print_vars(out, vars, sizeof(vars) / sizeof(vars[0]));
}

static char *read_file(const char *path, Err *err) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "cannot read '%.200s': %s", path,
                strerror(errno));
        return NULL;
    }
    Buf b = BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < (1u << 20))
        buf_append(&b, chunk, n);
    crypt_wipe(chunk, sizeof(chunk));
    fclose(f);
    if (b.data == NULL)
        buf_puts(&b, "");
    return buf_steal(&b);
}

static void free_secret(char *s) {
    if (s)
        crypt_wipe(s, strlen(s));
    free(s);
}

Keys *keys_load(ConfigGetenv get, void *data, Buf *errors, int *nerr) {
    ConfigLoader l;
    config_loader_init(&l, get, data, errors, vars, sizeof(vars) / sizeof(vars[0]));
    Keys *k = xcalloc(1, sizeof(*k));
    char *mode = config_get_str(&l, "BACKUP_ENCRYPTION", 1);
    if (mode && strcmp(mode, "required") == 0)
        k->required = 1;
    else if (mode == NULL || strcmp(mode, "auto") != 0)
        config_bad(&l, "BACKUP_ENCRYPTION", "'%.40s' is not auto or required", mode ? mode : "");
    free(mode);
    char *inline_keys = config_get_str(&l, "BACKUP_ENCRYPTION_KEYS", 0);
    char *file = config_get_str(&l, "BACKUP_ENCRYPTION_KEYS_FILE", 0);
    char *id = config_get_str(&l, "BACKUP_ENCRYPTION_KEY_ID", 0);
    Err e;
    if (inline_keys && file) {
        config_bad(&l, "BACKUP_ENCRYPTION_KEYS", "%s",
                   "and BACKUP_ENCRYPTION_KEYS_FILE are both set: give one");
    } else if (inline_keys || file) {
        char *text = inline_keys ? inline_keys : read_file(file, &e);
        k->source = inline_keys ? "BACKUP_ENCRYPTION_KEYS" : "BACKUP_ENCRYPTION_KEYS_FILE";
        if (text == NULL)
            config_bad(&l, k->source, "%s", e.msg);
        else if ((k->ring = keyring_parse(text, inline_keys ? ',' : '\n', &e)) == NULL)
            config_bad(&l, k->source, "%s", e.msg);
        if (text != inline_keys)
            free_secret(text);
    }
    if (id && k->ring && keyring_find(k->ring, id) == NULL)
        config_bad(&l, "BACKUP_ENCRYPTION_KEY_ID", "'%.64s' is not in %s", id, k->source);
    else if (id && k->ring == NULL && l.count == 0)
        config_bad(&l, "BACKUP_ENCRYPTION_KEY_ID", "%s",
                   "is set, but there is no keyring (BACKUP_ENCRYPTION_KEYS)");
    else if (k->ring)
        snprintf(k->current, sizeof(k->current), "%s",
                 id ? id : keyring_id(k->ring, keyring_count(k->ring) - 1));
    if (k->required && k->current[0] == 0 && k->ring == NULL && inline_keys == NULL && file == NULL)
        config_bad(&l, "BACKUP_ENCRYPTION", "%s",
                   "is required, but no key is set (BACKUP_ENCRYPTION_KEYS or "
                   "BACKUP_ENCRYPTION_KEYS_FILE)");
    free_secret(inline_keys);
    free(file);
    free(id);
    *nerr += l.count;
    return k;
}

void keys_free(Keys *k) {
    if (k == NULL)
        return;
    keyring_free(k->ring);
    free(k);
}

int keys_enabled(const Keys *k) {
    return k && k->current[0] != 0;
}

int keys_required(const Keys *k) {
    return k && k->required;
}

const char *keys_current(const Keys *k) {
    return k ? k->current : "";
}

int keys_has(const Keys *k, const char *key_id) {
    return k && keyring_find(k->ring, key_id) != NULL;
}

void keys_describe(const Keys *k, Buf *out) {
    if (!keys_enabled(k)) {
        buf_printf(out, "off (no key set; BACKUP_ENCRYPTION=%s)",
                   keys_required(k) ? "required" : "auto");
        return;
    }
    buf_printf(out, "aes-256-gcm, new backups under '%s'; %s holds", k->current, k->source);
    for (int i = 0; i < keyring_count(k->ring); i++)
        buf_printf(out, "%s'%s'", i ? ", " : " ", keyring_id(k->ring, i));
    buf_puts(out, k->required ? " (required)" : "");
}

static const unsigned char *kek_of(const Keys *k, const char *key_id, const char *backup_id,
                                   Err *err) {
    const unsigned char *kek = k ? keyring_find(k->ring, key_id) : NULL;
    if (kek == NULL)
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "backup %s is encrypted with key '%.64s', which is not in %s", backup_id, key_id,
                k && k->source ? k->source : "BACKUP_ENCRYPTION_KEYS");
    return kek;
}

int keys_new_dek(const Keys *k, const char *key_id, const char *user_id, const char *backup_id,
                 unsigned char dek[CRYPT_KEY_LEN], Buf *wrapped, Err *err) {
    const char *id = key_id ? key_id : keys_current(k);
    const unsigned char *kek = keyring_find(k ? k->ring : NULL, id);
    if (kek == NULL) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "no key '%.64s' to encrypt with", id);
        return -1;
    }
    if (crypt_random(dek, CRYPT_KEY_LEN, err) != 0)
        return -1;
    crypt_wrap(kek, id, user_id, backup_id, dek, wrapped);
    return 0;
}

int keys_unwrap(const Keys *k, const char *key_id, const char *wrapped, const char *user_id,
                const char *backup_id, unsigned char dek[CRYPT_KEY_LEN], Err *err) {
    const unsigned char *kek = kek_of(k, key_id, backup_id, err);
    if (kek == NULL)
        return -1;
    return crypt_unwrap(kek, key_id, user_id, backup_id, wrapped, dek, err);
}

int keys_rewrap(const Keys *k, const char *from_id, const char *wrapped, const char *to_id,
                const char *user_id, const char *backup_id, Buf *out, Err *err) {
    unsigned char dek[CRYPT_KEY_LEN];
    const char *to = to_id ? to_id : keys_current(k);
    const unsigned char *kek = keyring_find(k ? k->ring : NULL, to);
    if (kek == NULL) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "no key '%.64s' to wrap with", to);
        return -1;
    }
    if (keys_unwrap(k, from_id, wrapped, user_id, backup_id, dek, err) != 0)
        return -1;
    crypt_wrap(kek, to, user_id, backup_id, dek, out);
    crypt_wipe(dek, sizeof(dek));
    return 0;
}

int keys_unwrap_fn(const char *key_id, const char *wrapped, const char *user_id,
                   const char *backup_id, unsigned char dek[CRYPT_KEY_LEN], void *data, Err *err) {
    return keys_unwrap(data, key_id, wrapped, user_id, backup_id, dek, err);
}
