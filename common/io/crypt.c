/* crypt: chunked AES-256-GCM and data-key wrapping (see crypt.h). */
#include "io/crypt.h"

#include "base/json.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HKDF_INFO  "pedidolist-backup aes-256-gcm v1"
#define WRAP_AAD   "pedidolist-dek v1"
#define SALT_LEN   32
#define PREFIX_LEN 7
#define NONCE_LEN  12
#define HEADER_MAX (16u * 1024)
#define CHUNK_MIN  1024u
#define CHUNK_MAX  (16u << 20)

void crypt_wipe(void *p, size_t len) {
    if (p)
        OPENSSL_cleanse(p, len);
}

int crypt_random(void *out, size_t len, Err *err) {
    if (RAND_bytes(out, (int)len) != 1) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "%s", "no random bytes from OpenSSL");
        return -1;
    }
    return 0;
}

void crypt_b64_encode(const void *in, size_t len, Buf *out) {
    buf_reserve(out, (len + 2) / 3 * 4 + 1);
    int n = EVP_EncodeBlock((unsigned char *)out->data + out->len, in, (int)len);
    out->len += (size_t)n;
    out->data[out->len] = 0;
}

int crypt_b64_decode(const char *s, size_t len, unsigned char *out, size_t outmax) {
    if (len == 0 || len % 4 != 0 || (len / 4) * 3 > outmax + 2)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '+' || c == '/' || (c == '=' && i >= len - 2);
        if (!ok || (c != '=' && i > 0 && s[i - 1] == '='))
            return -1;
    }
    size_t pad = (s[len - 1] == '=') + (s[len - 2] == '=');
    unsigned char *tmp = xmalloc(len / 4 * 3 + 1);
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)len);
    int rc = -1;
    if (n >= 0 && (size_t)n >= pad && (size_t)n - pad <= outmax) {
        rc = n - (int)pad;
        memcpy(out, tmp, (size_t)rc);
    }
    crypt_wipe(tmp, len / 4 * 3 + 1);
    free(tmp);
    return rc;
}

static int hkdf(const unsigned char *dek, const unsigned char *salt, unsigned char *out, Err *err) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)dek, CRYPT_KEY_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, SALT_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)HKDF_INFO,
                                          sizeof(HKDF_INFO) - 1),
        OSSL_PARAM_construct_end(),
    };
    int ok = kctx && EVP_KDF_derive(kctx, out, CRYPT_KEY_LEN, params) == 1;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    if (!ok)
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "%s", "HKDF-SHA256 is not available");
    return ok ? 0 : -1;
}

/* One AES-256-GCM seal or open. open: -1 when the tag does not check (out then holds
 * unusable bytes the caller must drop). */
static int gcm(int seal, const unsigned char *key, const unsigned char *nonce, const void *aad,
               size_t aadlen, const unsigned char *in, size_t len, unsigned char *out,
               unsigned char *tag, EVP_CIPHER_CTX *ctx) {
    /* key NULL: ctx holds it already (gcm_key), and only the nonce changes: a full init per
     * chunk (cipher fetch, key schedule) costs more than the chunk's encryption */
    int n = 0, ok = key ? EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, seal) == 1
                        : EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, seal) == 1;
    if (ok && aadlen)
        ok = EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aadlen) == 1;
    if (ok && len)
        ok = EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1;
    if (ok && !seal)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPT_TAG_LEN, tag) == 1;
    if (ok)
        ok = EVP_CipherFinal_ex(ctx, out + len, &n) == 1;
    if (ok && seal)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPT_TAG_LEN, tag) == 1;
    return ok ? 0 : -1;
}

/* ---- the envelope header ---- */

static void put_str(Buf *b, const char *name, const char *v) {
    buf_printf(b, ",\"%s\":\"", name);
    buf_json_escape(b, v ? v : "", v ? strlen(v) : 0);
    buf_puts(b, "\"");
}

static void header_build(const CryptParams *p, size_t chunk, const unsigned char *salt,
                         const unsigned char *prefix, Buf *out) {
    Buf j = BUF_INIT;
    buf_printf(&j, "{\"alg\":\"%s\",\"version\":1,\"chunk_size\":%zu", CRYPT_CODEC, chunk);
    put_str(&j, "user_id", p->user_id);
    put_str(&j, "backup_id", p->backup_id);
    buf_printf(&j, ",\"codecs\":%s", p->codecs_json ? p->codecs_json : "[]");
    put_str(&j, "key_id", p->key_id);
    put_str(&j, "wrapped_key", p->wrapped_key);
    buf_puts(&j, ",\"salt\":\"");
    crypt_b64_encode(salt, SALT_LEN, &j);
    buf_puts(&j, "\",\"nonce_prefix\":\"");
    crypt_b64_encode(prefix, PREFIX_LEN, &j);
    buf_puts(&j, "\"}");
    unsigned char len[4] = {(unsigned char)(j.len >> 24), (unsigned char)(j.len >> 16),
                            (unsigned char)(j.len >> 8), (unsigned char)j.len};
    buf_append(out, CRYPT_MAGIC, 8);
    buf_append(out, len, 4);
    buf_append(out, j.data, j.len);
    buf_free(&j);
}

static int bad_header(Err *err, const char *why) {
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "the encrypted object's header %s", why);
    return -1;
}

/* Salt and prefix decoded too (the filter needs them; the public parse does not). */
static int header_parse(const unsigned char *b, size_t len, CryptHeader *h, unsigned char *salt,
                        unsigned char *prefix, Err *err) {
    if (len < 12)
        return memcmp(b, CRYPT_MAGIC, len < 8 ? len : 8) == 0
                   ? 0
                   : bad_header(err, "is missing: not an encrypted backup object");
    if (memcmp(b, CRYPT_MAGIC, 8) != 0)
        return bad_header(err, "is missing: not an encrypted backup object");
    uint32_t n = (uint32_t)b[8] << 24 | (uint32_t)b[9] << 16 | (uint32_t)b[10] << 8 | b[11];
    if (n < 2 || n > HEADER_MAX)
        return bad_header(err, "has an impossible length");
    if (len < 12 + (size_t)n)
        return 0;
    const char *j = (const char *)b + 12;
    char alg[32], ver[8], chunk[16], s64[64], p64[16];
    memset(h, 0, sizeof(*h));
    if (j[0] != '{' || j[n - 1] != '}' || memchr(j, 0, n) != NULL ||
        json_field(j, n, "alg", alg, sizeof(alg)) ||
        json_field(j, n, "version", ver, sizeof(ver)) ||
        json_field(j, n, "chunk_size", chunk, sizeof(chunk)) ||
        json_field(j, n, "user_id", h->user_id, sizeof(h->user_id)) ||
        json_field(j, n, "backup_id", h->backup_id, sizeof(h->backup_id)) ||
        json_field(j, n, "codecs", h->codecs, sizeof(h->codecs)) ||
        json_field(j, n, "key_id", h->key_id, sizeof(h->key_id)) ||
        json_field(j, n, "wrapped_key", h->wrapped_key, sizeof(h->wrapped_key)) ||
        json_field(j, n, "salt", s64, sizeof(s64)) ||
        json_field(j, n, "nonce_prefix", p64, sizeof(p64)))
        return bad_header(err, "is malformed");
    if (strcmp(alg, CRYPT_CODEC) != 0 || strcmp(ver, "1") != 0)
        return bad_header(err, "names an unknown algorithm or version");
    unsigned long cs = strtoul(chunk, NULL, 10);
    if (cs < CHUNK_MIN || cs > CHUNK_MAX)
        return bad_header(err, "has an impossible chunk size");
    h->chunk_size = (uint32_t)cs;
    unsigned char tmp[SALT_LEN];
    if (crypt_b64_decode(s64, strlen(s64), salt ? salt : tmp, SALT_LEN) != SALT_LEN ||
        crypt_b64_decode(p64, strlen(p64), prefix ? prefix : tmp, PREFIX_LEN) != PREFIX_LEN)
        return bad_header(err, "has a malformed salt or nonce");
    h->header_len = 12 + (size_t)n;
    return 1;
}

int crypt_header_parse(const void *buf, size_t len, CryptHeader *h, Err *err) {
    return header_parse(buf, len, h, NULL, NULL, err);
}

/* ---- the stream ---- */

typedef struct {
    int encrypt;
    CryptParams p; /* strings owned */
    EVP_CIPHER_CTX *ctx;
    unsigned char key[CRYPT_KEY_LEN], prefix[PREFIX_LEN];
    Buf header; /* as stored: the AAD of every chunk */
    int started, failed;
    size_t chunk;  /* plaintext bytes per chunk */
    Buf pend;      /* encoder: plaintext of the next chunk; decoder: header or sealed bytes */
    uint32_t next; /* chunk number */
    int overflow;
} Crypt;

/* The payload key into the context, once per object. */
static int gcm_key(Crypt *c, int seal, Err *err) {
    if (EVP_CipherInit_ex(c->ctx, EVP_aes_256_gcm(), NULL, c->key, NULL, seal) != 1) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "AES-256-GCM is not available");
        return -1;
    }
    return 0;
}

static void nonce_of(const Crypt *c, int last, unsigned char *nonce) {
    memcpy(nonce, c->prefix, PREFIX_LEN);
    nonce[7] = (unsigned char)(c->next >> 24);
    nonce[8] = (unsigned char)(c->next >> 16);
    nonce[9] = (unsigned char)(c->next >> 8);
    nonce[10] = (unsigned char)c->next;
    nonce[11] = (unsigned char)(last != 0);
}

static int next_chunk(Crypt *c, Err *err) {
    if (c->overflow) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "more than 2^32 encrypted chunks");
        return -1;
    }
    if (++c->next == 0)
        c->overflow = 1;
    return 0;
}

static int seal(Crypt *c, const void *in, size_t len, int last, Buf *out, Err *err) {
    unsigned char nonce[NONCE_LEN];
    nonce_of(c, last, nonce);
    buf_reserve(out, len + CRYPT_TAG_LEN + 16);
    unsigned char *o = (unsigned char *)out->data + out->len;
    if (gcm(1, NULL, nonce, c->header.data, c->header.len, in, len, o, o + len, c->ctx) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "AES-256-GCM failed");
        return -1;
    }
    out->len += len + CRYPT_TAG_LEN;
    out->data[out->len] = 0;
    return next_chunk(c, err);
}

static int enc_start(Crypt *c, Buf *out, Err *err) {
    unsigned char dek_salt[SALT_LEN];
    if (crypt_random(dek_salt, SALT_LEN, err) != 0 || crypt_random(c->prefix, PREFIX_LEN, err))
        return -1;
    header_build(&c->p, c->chunk, dek_salt, c->prefix, &c->header);
    if (hkdf(c->p.dek, dek_salt, c->key, err) != 0 || gcm_key(c, 1, err) != 0)
        return -1;
    buf_append(out, c->header.data, c->header.len);
    c->started = 1;
    return 0;
}

static int enc_process(Crypt *c, const char *in, size_t len, int end, Buf *out, Err *err) {
    if (!c->started && enc_start(c, out, err) != 0)
        return -1;
    while (len > 0) {
        if (c->pend.len == c->chunk) { /* more follows: not the last */
            if (seal(c, c->pend.data, c->pend.len, 0, out, err) != 0)
                return -1;
            buf_reset(&c->pend);
        }
        if (c->pend.len == 0 && len > c->chunk) { /* straight from the input */
            if (seal(c, in, c->chunk, 0, out, err) != 0)
                return -1;
            in += c->chunk;
            len -= c->chunk;
            continue;
        }
        size_t take = c->chunk - c->pend.len < len ? c->chunk - c->pend.len : len;
        buf_append(&c->pend, in, take);
        in += take;
        len -= take;
    }
    if (end) {
        if (seal(c, c->pend.data ? c->pend.data : "", c->pend.len, 1, out, err) != 0)
            return -1;
        crypt_wipe(c->pend.data, c->pend.len);
        buf_reset(&c->pend);
    }
    return 0;
}

static int tag_failed(Crypt *c, Err *err, const char *why) {
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
            "Backup checksum verification failed: chunk %u of the encrypted object %s", c->next,
            why);
    return -1;
}

/* Open one sealed chunk into out, handed on only once its tag checked. */
static int open_chunk(Crypt *c, const unsigned char *in, size_t sealed, int last, Buf *out,
                      Err *err) {
    size_t len = sealed - CRYPT_TAG_LEN;
    unsigned char nonce[NONCE_LEN];
    nonce_of(c, last, nonce);
    buf_reserve(out, len + 16);
    unsigned char *o = (unsigned char *)out->data + out->len;
    if (gcm(0, c->key, nonce, c->header.data, c->header.len, in, len, o, (unsigned char *)in + len,
            c->ctx) != 0) {
        crypt_wipe(o, len);
        return tag_failed(c, err,
                          last ? "fails its authentication tag (damaged, or cut short)"
                               : "fails its authentication tag (damaged, moved or from another "
                                 "object)");
    }
    out->len += len;
    out->data[out->len] = 0;
    return next_chunk(c, err);
}

static int dec_header(Crypt *c, Err *err) {
    CryptHeader h;
    unsigned char salt[SALT_LEN];
    int r =
        header_parse((const unsigned char *)c->pend.data, c->pend.len, &h, salt, c->prefix, err);
    if (r <= 0)
        return r;
    if ((c->p.user_id && strcmp(h.user_id, c->p.user_id) != 0) ||
        (c->p.backup_id && strcmp(h.backup_id, c->p.backup_id) != 0)) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "the encrypted object belongs to backup %.80s of user %.40s, not %s of user %s",
                h.backup_id, h.user_id, c->p.backup_id ? c->p.backup_id : h.backup_id,
                c->p.user_id ? c->p.user_id : h.user_id);
        return -1;
    }
    if (c->p.codecs_json && strcmp(h.codecs, c->p.codecs_json) != 0)
        return bad_header(err, "names other codecs than the backup's record");
    if (!c->p.have_dek) {
        if (c->p.unwrap == NULL)
            return bad_header(err, "cannot be opened: no key was given");
        if (c->p.unwrap(h.key_id, h.wrapped_key, h.user_id, h.backup_id, c->p.dek, c->p.unwrap_data,
                        err) != 0)
            return -1;
        c->p.have_dek = 1;
    }
    if (hkdf(c->p.dek, salt, c->key, err) != 0 || gcm_key(c, 0, err) != 0)
        return -1;
    c->chunk = h.chunk_size;
    buf_append(&c->header, c->pend.data, h.header_len);
    buf_consume(&c->pend, h.header_len);
    c->started = 1;
    return 1;
}

static int dec_process(Crypt *c, const char *in, size_t len, int end, Buf *out, Err *err) {
    if (c->failed)
        return -1;
    buf_append(&c->pend, in, len);
    if (!c->started) {
        int r = dec_header(c, err);
        if (r < 0 || (r == 0 && end)) {
            if (r == 0)
                bad_header(err, "is cut short");
            c->failed = 1;
            return -1;
        }
        if (r == 0)
            return 0;
    }
    size_t sealed = c->chunk + CRYPT_TAG_LEN, at = 0;
    /* a full chunk with more after it is not the last */
    while (c->pend.len - at > sealed) {
        if (open_chunk(c, (unsigned char *)c->pend.data + at, sealed, 0, out, err) != 0) {
            c->failed = 1;
            return -1;
        }
        at += sealed;
    }
    buf_consume(&c->pend, at);
    if (end) {
        if (c->pend.len < CRYPT_TAG_LEN) {
            c->failed = 1;
            return tag_failed(c, err, "is cut short (no final chunk)");
        }
        if (open_chunk(c, (unsigned char *)c->pend.data, c->pend.len, 1, out, err) != 0) {
            c->failed = 1;
            return -1;
        }
        buf_reset(&c->pend);
    }
    return 0;
}

static int crypt_process(void *self, const char *in, size_t len, int end, Buf *out, Err *err) {
    Crypt *c = self;
    return c->encrypt ? enc_process(c, in, len, end, out, err)
                      : dec_process(c, in, len, end, out, err);
}

static void crypt_free(void *self) {
    Crypt *c = self;
    EVP_CIPHER_CTX_free(c->ctx);
    crypt_wipe(c->key, sizeof(c->key));
    crypt_wipe(c->p.dek, sizeof(c->p.dek));
    crypt_wipe(c->pend.data, c->pend.len);
    buf_free(&c->pend);
    buf_free(&c->header);
    free((char *)c->p.user_id);
    free((char *)c->p.backup_id);
    free((char *)c->p.codecs_json);
    free((char *)c->p.key_id);
    free((char *)c->p.wrapped_key);
    free(c);
}

static const FilterVtbl crypt_vt = {crypt_process, NULL, NULL, crypt_free};

static char *dup_or_null(const char *s) {
    return s ? xstrdup(s) : NULL;
}

static Filter *make(const char *name, const CryptParams *p, int encrypt) {
    Crypt *c = xcalloc(1, sizeof(*c));
    c->encrypt = encrypt;
    c->p = *p;
    c->p.user_id = dup_or_null(p->user_id);
    c->p.backup_id = dup_or_null(p->backup_id);
    c->p.codecs_json = dup_or_null(p->codecs_json);
    c->p.key_id = dup_or_null(p->key_id);
    c->p.wrapped_key = dup_or_null(p->wrapped_key);
    c->chunk = p->chunk_size ? p->chunk_size : CRYPT_CHUNK;
    if (c->chunk < CHUNK_MIN || c->chunk > CHUNK_MAX)
        c->chunk = CRYPT_CHUNK;
    c->ctx = EVP_CIPHER_CTX_new();
    if (c->ctx == NULL)
        abort(); /* as for allocation failures (buf.h) */
    return filter_new(name, &crypt_vt, c);
}

Filter *crypt_encrypt_new(const char *name, const CryptParams *p) {
    return make(name, p, 1);
}

Filter *crypt_decrypt_new(const char *name, const CryptParams *p) {
    return make(name, p, 0);
}

/* ---- data-key wrapping ---- */

static void wrap_aad(const char *key_id, const char *user_id, const char *backup_id, Buf *aad) {
    buf_append(aad, WRAP_AAD, sizeof(WRAP_AAD)); /* with its NUL: names are separated */
    buf_append(aad, key_id, strlen(key_id) + 1);
    buf_append(aad, user_id, strlen(user_id) + 1);
    buf_append(aad, backup_id, strlen(backup_id));
}

void crypt_wrap(const unsigned char kek[CRYPT_KEY_LEN], const char *key_id, const char *user_id,
                const char *backup_id, const unsigned char dek[CRYPT_KEY_LEN], Buf *out) {
    unsigned char blob[NONCE_LEN + CRYPT_KEY_LEN + CRYPT_TAG_LEN];
    Err e;
    if (crypt_random(blob, NONCE_LEN, &e) != 0)
        abort(); /* no CSPRNG: nothing safe can be written */
    Buf aad = BUF_INIT;
    wrap_aad(key_id, user_id, backup_id, &aad);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || gcm(1, kek, blob, aad.data, aad.len, dek, CRYPT_KEY_LEN, blob + NONCE_LEN,
                           blob + NONCE_LEN + CRYPT_KEY_LEN, ctx) != 0)
        abort();
    EVP_CIPHER_CTX_free(ctx);
    buf_free(&aad);
    crypt_b64_encode(blob, sizeof(blob), out);
}

int crypt_unwrap(const unsigned char kek[CRYPT_KEY_LEN], const char *key_id, const char *user_id,
                 const char *backup_id, const char *wrapped, unsigned char dek[CRYPT_KEY_LEN],
                 Err *err) {
    unsigned char blob[NONCE_LEN + CRYPT_KEY_LEN + CRYPT_TAG_LEN + 2];
    if (crypt_b64_decode(wrapped, strlen(wrapped), blob, sizeof(blob)) !=
        NONCE_LEN + CRYPT_KEY_LEN + CRYPT_TAG_LEN) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "the data key wrapped under key '%s' is "
                "malformed",
                key_id);
        return -1;
    }
    Buf aad = BUF_INIT;
    wrap_aad(key_id, user_id, backup_id, &aad);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int rc = ctx ? gcm(0, kek, blob, aad.data, aad.len, blob + NONCE_LEN, CRYPT_KEY_LEN, dek,
                       blob + NONCE_LEN + CRYPT_KEY_LEN, ctx)
                 : -1;
    EVP_CIPHER_CTX_free(ctx);
    buf_free(&aad);
    if (rc != 0) {
        crypt_wipe(dek, CRYPT_KEY_LEN);
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "the data key of backup %s does not open under key '%s' (another key with the "
                "same id, or a key moved from another backup)",
                backup_id, key_id);
        return -1;
    }
    return 0;
}
