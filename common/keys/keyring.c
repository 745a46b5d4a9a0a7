/* keyring: key-encryption keys from the environment or a file (see keyring.h). */
#include "keys/keyring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char id[65];
    unsigned char key[CRYPT_KEY_LEN];
} Entry;

struct Keyring {
    Entry *e;
    int n;
};

int keyring_valid_id(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* One "ID:BASE64" entry, spaces around it dropped. */
static int entry(Keyring *k, const char *s, size_t len, int pos, Err *err) {
    while (len && is_space(*s))
        s++, len--;
    while (len && is_space(s[len - 1]))
        len--;
    if (len == 0 || s[0] == '#')
        return 0;
    const char *colon = memchr(s, ':', len);
    size_t idlen = colon ? (size_t)(colon - s) : 0;
    char id[65];
    if (colon == NULL || idlen == 0 || idlen > 64) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "entry %d is not ID:BASE64 (an id of 1 to 64 characters, a colon, the key)", pos);
        return -1;
    }
    memcpy(id, s, idlen);
    id[idlen] = 0;
    if (!keyring_valid_id(id)) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "entry %d: the key id may only hold letters, digits, '.', '_' and '-'", pos);
        return -1;
    }
    for (int i = 0; i < k->n; i++)
        if (strcmp(k->e[i].id, id) == 0) {
            err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "key id '%s' is given twice", id);
            return -1;
        }
    unsigned char key[256];
    size_t b64len = len - idlen - 1;
    int n = b64len > 340 ? 256 : crypt_b64_decode(colon + 1, b64len, key, sizeof(key));
    if (n != CRYPT_KEY_LEN) {
        crypt_wipe(key, sizeof(key));
        if (n < 0)
            err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "key '%s' is not valid base64", id);
        else
            err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                    "key '%s' is %d bytes; a key is 32 random bytes (openssl rand -base64 32)", id,
                    n);
        return -1;
    }
    k->e = xrealloc(k->e, (size_t)(k->n + 1) * sizeof(Entry));
    memcpy(k->e[k->n].id, id, idlen + 1);
    memcpy(k->e[k->n].key, key, CRYPT_KEY_LEN);
    crypt_wipe(key, sizeof(key));
    k->n++;
    return 0;
}

Keyring *keyring_parse(const char *text, char sep, Err *err) {
    Keyring *k = xcalloc(1, sizeof(*k));
    const char *p = text ? text : "";
    for (int pos = 1;; pos++) {
        const char *e = strchr(p, sep);
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (entry(k, p, len, pos, err) != 0) {
            keyring_free(k);
            return NULL;
        }
        if (e == NULL)
            break;
        p = e + 1;
    }
    if (k->n == 0) {
        keyring_free(k);
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "%s", "holds no key");
        return NULL;
    }
    return k;
}

void keyring_free(Keyring *k) {
    if (k == NULL)
        return;
    crypt_wipe(k->e, (size_t)k->n * sizeof(Entry));
    free(k->e);
    free(k);
}

int keyring_count(const Keyring *k) {
    return k ? k->n : 0;
}

const char *keyring_id(const Keyring *k, int i) {
    return k->e[i].id;
}

const unsigned char *keyring_find(const Keyring *k, const char *id) {
    for (int i = 0; k && i < k->n; i++)
        if (strcmp(k->e[i].id, id) == 0)
            return k->e[i].key;
    return NULL;
}
