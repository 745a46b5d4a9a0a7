/* keys: the key-encryption keys of this process (see keys.h). */
#include "keys/keys.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KMS_PREFIX "kms:"

struct Keys {
    Keyring *ring;
    char current[CRYPT_ID_MAX + 1];
    int required;
    const char *source; /* the variable the keyring came from */
    char *kms_key, *kms_endpoint;
};

static const ConfigVar vars[] = {
    {"BACKUP_ENCRYPTION", "auto",
     "auto: encrypt new backups whenever a key is set; required: refuse to start without one, "
     "and refuse to restore, verify or reindex a cleartext backup (one planted in the store)"},
    {"BACKUP_ENCRYPTION_KEYS", NULL,
     "keyring, ID:BASE64 entries separated by commas, 32-byte keys (secret; never logged)"},
    {"BACKUP_ENCRYPTION_KEYS_FILE", NULL, "file with the keyring, one ID:BASE64 entry per line"},
    {"BACKUP_ENCRYPTION_KEY_ID", NULL,
     "key of new backups (default: the KMS key if set, else the keyring's last entry)"},
    {"BACKUP_KMS_KEY_ID", NULL,
     "AWS KMS key (id, ARN or alias/...) wrapping the data keys of new backups"},
    {"AWS_KMS_ENDPOINT", NULL, "KMS endpoint (default: https://kms.{AWS_REGION}.amazonaws.com)"},
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
    k->kms_key = config_get_str(&l, "BACKUP_KMS_KEY_ID", 0);
    k->kms_endpoint = config_get_str(&l, "AWS_KMS_ENDPOINT", 0);
    if (k->kms_key && (k->kms_key[0] == 0 || strlen(k->kms_key) > CRYPT_ID_MAX - 8 ||
                       strpbrk(k->kms_key, " \t\r\n\",\\"))) {
        config_bad(&l, "BACKUP_KMS_KEY_ID", "%s", "is not a KMS key id, ARN or alias");
        free(k->kms_key);
        k->kms_key = NULL;
    }
    if (k->kms_endpoint && strncmp(k->kms_endpoint, "http://", 7) != 0 &&
        strncmp(k->kms_endpoint, "https://", 8) != 0)
        config_bad(&l, "AWS_KMS_ENDPOINT", "%s", "must start with http:// or https://");
    if (id && keys_is_kms(id)) {
        if (k->kms_key == NULL || strcmp(id + strlen(KMS_PREFIX), k->kms_key) != 0)
            config_bad(&l, "BACKUP_ENCRYPTION_KEY_ID", "'%.64s' is not kms:BACKUP_KMS_KEY_ID", id);
        else
            snprintf(k->current, sizeof(k->current), "%s", id);
    } else if (id && k->ring && keyring_find(k->ring, id) == NULL) {
        config_bad(&l, "BACKUP_ENCRYPTION_KEY_ID", "'%.64s' is not in %s", id, k->source);
    } else if (id && k->ring == NULL && l.count == 0) {
        config_bad(&l, "BACKUP_ENCRYPTION_KEY_ID", "%s",
                   "is set, but there is no keyring (BACKUP_ENCRYPTION_KEYS)");
    } else if (id && k->ring) {
        snprintf(k->current, sizeof(k->current), "%s", id);
    } else if (k->kms_key) {
        snprintf(k->current, sizeof(k->current), KMS_PREFIX "%s", k->kms_key);
    } else if (k->ring) {
        snprintf(k->current, sizeof(k->current), "%s",
                 keyring_id(k->ring, keyring_count(k->ring) - 1));
    }
    if (k->required && k->ring == NULL && k->kms_key == NULL && inline_keys == NULL && file == NULL)
        config_bad(&l, "BACKUP_ENCRYPTION", "%s",
                   "is required, but no key is set (BACKUP_ENCRYPTION_KEYS, "
                   "BACKUP_ENCRYPTION_KEYS_FILE or BACKUP_KMS_KEY_ID)");
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
    free(k->kms_key);
    free(k->kms_endpoint);
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

int keys_is_kms(const char *key_id) {
    return strncmp(key_id, KMS_PREFIX, strlen(KMS_PREFIX)) == 0;
}

int keys_has(const Keys *k, const char *key_id) {
    if (k && keys_is_kms(key_id))
        return k->kms_key != NULL; /* KMS itself knows which of its keys opens a blob */
    return k && keyring_find(k->ring, key_id) != NULL;
}

void keys_describe(const Keys *k, Buf *out) {
    if (!keys_enabled(k)) {
        buf_printf(out, "off (no key set; BACKUP_ENCRYPTION=%s)",
                   keys_required(k) ? "required" : "auto");
        return;
    }
    buf_printf(out, "aes-256-gcm, new backups under '%s'", k->current);
    if (k->ring) {
        buf_printf(out, "; %s holds", k->source);
        for (int i = 0; i < keyring_count(k->ring); i++)
            buf_printf(out, "%s'%s'", i ? ", " : " ", keyring_id(k->ring, i));
    }
    if (k->kms_key)
        buf_printf(out, "; AWS KMS key '%s'%s%s", k->kms_key, k->kms_endpoint ? " at " : "",
                   k->kms_endpoint ? k->kms_endpoint : "");
    buf_puts(out, k->required ? " (required)" : "");
}

static const unsigned char *kek_of(const Keys *k, const char *key_id, const char *backup_id,
                                   Err *err) {
    const unsigned char *kek = k ? keyring_find(k->ring, key_id) : NULL;
    if (kek == NULL && keys_is_kms(key_id))
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "backup %s is encrypted with AWS KMS key '%.200s', and BACKUP_KMS_KEY_ID is not "
                "set",
                backup_id, key_id + strlen(KMS_PREFIX));
    else if (kek == NULL)
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

/* ---- KMS, and the asynchronous forms ---- */

KmsClient *keys_kms_client(const Keys *k, uv_loop_t *loop, HttpClient *http, const S3Options *s3) {
    if (k == NULL || k->kms_key == NULL)
        return NULL;
    KmsOptions o;
    memset(&o, 0, sizeof(o));
    o.endpoint = k->kms_endpoint;
    o.region = s3->region;
    o.ca_file = s3->ca_file;
    o.creds.access_key = s3->access_key;
    o.creds.secret_key = s3->secret_key;
    o.creds.session_token = s3->session_token;
    o.creds.token_file = s3->web_identity_token_file;
    o.creds.role_arn = s3->role_arn;
    o.creds.session_name = s3->role_session_name;
    o.creds.sts_endpoint = s3->sts_endpoint;
    o.creds.region = s3->region;
    o.creds.ca_file = s3->ca_file;
    return kms_client_new(loop, http, &o);
}

typedef struct {
    KeysDoneCb cb;
    void *data;
    KmsClient *kms;
    char key_id[CRYPT_ID_MAX + 1], user[64], backup[160];
    int wrap; /* Encrypt answered: the wrapped key is the result, the dek given */
    unsigned char dek[CRYPT_KEY_LEN];
} KmsCall;

static void on_kms(const KmsResult *res, const Err *err, void *data) {
    KmsCall *c = data;
    if (err) {
        Err e = *err;
        /* which backup and key (keys_probe names its key itself) */
        if (e.code != ERR_CODE_CANCELLED && strcmp(c->backup, "probe") != 0)
            err_prefix(&e, "backup %s, key '%s'", c->backup, c->key_id);
        c->cb(NULL, c->key_id, NULL, &e, c->data);
    } else {
        c->cb(c->wrap ? c->dek : res->dek, c->key_id, res->wrapped[0] ? res->wrapped : NULL, NULL,
              c->data);
    }
    crypt_wipe(c, sizeof(*c));
    free(c);
}

static KmsCall *kms_call(KmsClient *kms, const char *key_id, const char *user, const char *backup,
                         KeysDoneCb cb, void *data) {
    KmsCall *c = xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->data = data;
    c->kms = kms;
    snprintf(c->key_id, sizeof(c->key_id), "%s", key_id);
    snprintf(c->user, sizeof(c->user), "%s", user);
    snprintf(c->backup, sizeof(c->backup), "%s", backup);
    return c;
}

static int no_kms(const Keys *k, KmsClient *kms, const char *key_id, const char *backup_id,
                  KeysDoneCb cb, void *data) {
    if (kms && k && k->kms_key)
        return 0;
    Err e;
    err_set(&e, ERR_PERMANENT, ERR_CODE_CONFIG,
            "backup %s is encrypted with AWS KMS key '%.200s', and BACKUP_KMS_KEY_ID is not set",
            backup_id, key_id + strlen(KMS_PREFIX));
    cb(NULL, key_id, NULL, &e, data);
    return 1;
}

void keys_new_dek_async(const Keys *k, KmsClient *kms, const char *user_id, const char *backup_id,
                        KeysDoneCb cb, void *data) {
    const char *id = keys_current(k);
    if (keys_is_kms(id)) {
        if (!no_kms(k, kms, id, backup_id, cb, data))
            kms_generate_data_key(kms, k->kms_key, user_id, backup_id, on_kms,
                                  kms_call(kms, id, user_id, backup_id, cb, data));
        return;
    }
    unsigned char dek[CRYPT_KEY_LEN];
    Buf w = BUF_INIT;
    Err e;
    if (keys_new_dek(k, id, user_id, backup_id, dek, &w, &e) != 0)
        cb(NULL, id, NULL, &e, data);
    else
        cb(dek, id, w.data, NULL, data);
    crypt_wipe(dek, sizeof(dek));
    buf_free(&w);
}

void keys_unwrap_async(const Keys *k, KmsClient *kms, const char *key_id, const char *wrapped,
                       const char *user_id, const char *backup_id, KeysDoneCb cb, void *data) {
    if (keys_is_kms(key_id)) {
        if (!no_kms(k, kms, key_id, backup_id, cb, data))
            kms_decrypt(kms, wrapped, user_id, backup_id, on_kms,
                        kms_call(kms, key_id, user_id, backup_id, cb, data));
        return;
    }
    unsigned char dek[CRYPT_KEY_LEN];
    Err e;
    if (keys_unwrap(k, key_id, wrapped, user_id, backup_id, dek, &e) != 0)
        cb(NULL, key_id, NULL, &e, data);
    else
        cb(dek, key_id, wrapped, NULL, data);
    crypt_wipe(dek, sizeof(dek));
}

void keys_wrap_async(const Keys *k, KmsClient *kms, const char *to_id,
                     const unsigned char dek[CRYPT_KEY_LEN], const char *user_id,
                     const char *backup_id, KeysDoneCb cb, void *data) {
    const char *to = to_id ? to_id : keys_current(k);
    if (keys_is_kms(to)) {
        if (no_kms(k, kms, to, backup_id, cb, data))
            return;
        KmsCall *c = kms_call(kms, to, user_id, backup_id, cb, data);
        c->wrap = 1;
        memcpy(c->dek, dek, CRYPT_KEY_LEN);
        kms_encrypt(kms, to + strlen(KMS_PREFIX), dek, user_id, backup_id, on_kms, c);
        return;
    }
    const unsigned char *kek = keyring_find(k ? k->ring : NULL, to);
    Err e;
    if (kek == NULL) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_CONFIG, "no key '%.64s' to wrap with", to);
        cb(NULL, to, NULL, &e, data);
        return;
    }
    Buf w = BUF_INIT;
    crypt_wrap(kek, to, user_id, backup_id, dek, &w);
    cb(dek, to, w.data, NULL, data);
    buf_free(&w);
}

typedef struct {
    const Keys *k;
    KmsClient *kms;
    int done;
    Err err;
    unsigned char dek[CRYPT_KEY_LEN];
    char wrapped[CRYPT_WRAPPED_MAX + 1];
} Probe;

static void on_probe(const unsigned char *dek, const char *key_id, const char *wrapped,
                     const Err *err, void *data) {
    Probe *p = data;
    if (err) {
        p->err = *err;
        p->done = 1;
        return;
    }
    if (wrapped && p->wrapped[0] == 0) { /* generated: now it must open again */
        memcpy(p->dek, dek, CRYPT_KEY_LEN);
        snprintf(p->wrapped, sizeof(p->wrapped), "%s", wrapped);
        keys_unwrap_async(p->k, p->kms, key_id, p->wrapped, "-", "probe", on_probe, p);
        return;
    }
    if (memcmp(dek, p->dek, CRYPT_KEY_LEN) != 0)
        err_set(&p->err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "%s",
                "the data key KMS decrypted is not the one it generated");
    p->done = 1;
}

int keys_probe(const Keys *k, const S3Options *s3, Err *err) {
    if (k == NULL || k->kms_key == NULL)
        return 0;
    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *http = http_client_new(&loop, 2);
    Probe p;
    memset(&p, 0, sizeof(p));
    p.k = k;
    p.kms = keys_kms_client(k, &loop, http, s3);
    char id[CRYPT_ID_MAX + 1];
    snprintf(id, sizeof(id), KMS_PREFIX "%s", k->kms_key);
    /* the KMS key itself, whatever the current key: older backups may need it */
    Keys tmp = *k;
    snprintf(tmp.current, sizeof(tmp.current), "%s", id);
    p.k = &tmp;
    keys_new_dek_async(&tmp, p.kms, "-", "probe", on_probe, &p);
    while (!p.done)
        uv_run(&loop, UV_RUN_ONCE);
    kms_client_free(p.kms);
    http_client_free(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    crypt_wipe(p.dek, sizeof(p.dek));
    if (p.err.msg[0]) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "BACKUP_KMS_KEY_ID: key '%s' cannot be used: %s", k->kms_key, p.err.msg);
        return -1;
    }
    return 0;
}
