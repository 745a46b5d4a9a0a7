/* codec: named transforms of stored bytes (see codec.h). */
#include "io/codec.h"

#include "io/crypt.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *suffix;
    const char *content_type;
} Known;

static const Known known[] = {
    {"gzip", ".gz", "application/gzip"},
    {"zstd", ".zst", "application/zstd"},
    {CRYPT_CODEC, ".enc", "application/octet-stream"},
};

static const Known *find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].name) == len && strncmp(known[i].name, name, len) == 0)
            return &known[i];
    return NULL;
}

static int add(CodecList *out, const char *name, size_t len, Err *err) {
    const Known *k = find(name, len);
    if (k == NULL) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "unknown codec \"%.*s\" (known: gzip, zstd, " CRYPT_CODEC ")",
                (int)(len > 32 ? 32 : len), name);
        return -1;
    }
    if (out->n == CODEC_MAX) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "more than %d codecs", CODEC_MAX);
        return -1;
    }
    snprintf(out->name[out->n++], sizeof(out->name[0]), "%s", k->name);
    return 0;
}

int codec_list_parse(const char *csv, CodecList *out, Err *err) {
    memset(out, 0, sizeof(*out));
    const char *p = csv ? csv : "";
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (add(out, p, len, err) != 0)
            return -1;
        p += len + (e != NULL);
    }
    return 0;
}

int codec_list_from_json(const char *json, size_t len, CodecList *out, Err *err) {
    memset(out, 0, sizeof(*out));
    const char *p = json, *end = json + len;
    while (p < end && *p == ' ')
        p++;
    if (p == end || *p++ != '[')
        goto bad;
    while (p < end && *p != ']') {
        if (*p != '"')
            goto bad;
        const char *name = ++p;
        while (p < end && *p != '"')
            p++;
        if (p == end)
            goto bad;
        if (add(out, name, (size_t)(p - name), err) != 0)
            return -1;
        p++;
        if (p < end && *p == ',')
            p++;
    }
    if (p == end)
        goto bad;
    return 0;
bad:
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "unreadable codec list");
    return -1;
}

void codec_list_csv(const CodecList *l, char *out, size_t outsz) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < l->n && k < outsz; i++)
        k += (size_t)snprintf(out + k, outsz - k, "%s%s", i ? "," : "", l->name[i]);
}

void codec_list_json(const CodecList *l, Buf *out) {
    buf_puts(out, "[");
    for (int i = 0; i < l->n; i++)
        buf_printf(out, "%s\"%s\"", i ? "," : "", l->name[i]);
    buf_puts(out, "]");
}

int codec_list_has(const CodecList *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], name) == 0)
            return 1;
    return 0;
}

static Filter *make(const char *name, int encode, const CodecOptions *o, const CryptParams *cp) {
    if (strcmp(name, "gzip") == 0)
        return encode ? filter_gzip_new(NULL, o && o->gzip_level ? o->gzip_level : 6)
                      : filter_gunzip_new(NULL);
    if (strcmp(name, "zstd") == 0)
        return encode ? filter_zstd_new(NULL, o && o->zstd_level ? o->zstd_level : 1)
                      : filter_unzstd_new(NULL);
    if (strcmp(name, CRYPT_CODEC) == 0 && cp)
        return encode ? crypt_encrypt_new(NULL, cp) : crypt_decrypt_new(NULL, cp);
    return NULL; /* parse refuses every other name; encryption needs its parameters */
}

FilterChain *codec_encoder(const CodecList *l, const CodecOptions *o) {
    FilterChain *c = filter_chain_new();
    for (int i = 0; i < l->n; i++) {
        Filter *f = make(l->name[i], 1, o, o ? o->crypt : NULL);
        if (f == NULL) {
            filter_chain_free(c);
            return NULL;
        }
        filter_chain_add(c, f);
    }
    return c;
}

FilterChain *codec_decoder(const CodecList *l, const CryptParams *crypt) {
    FilterChain *c = filter_chain_new();
    for (int i = l->n - 1; i >= 0; i--) {
        Filter *f = make(l->name[i], 0, NULL, crypt);
        if (f == NULL) {
            filter_chain_free(c);
            return NULL;
        }
        filter_chain_add(c, f);
    }
    return c;
}

const char *codec_list_compression(const CodecList *l) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], "gzip") == 0 || strcmp(l->name[i], "zstd") == 0)
            return l->name[i];
    return "none";
}

int codec_list_encrypted(const CodecList *l) {
    return l->n > 0 && strcmp(l->name[l->n - 1], CRYPT_CODEC) == 0;
}

const char *codec_content_type(const CodecList *l) {
    if (l->n == 0)
        return "application/json";
    const Known *k = find(l->name[l->n - 1], strlen(l->name[l->n - 1]));
    return l->n == 1 && k ? k->content_type : "application/octet-stream";
}

void codec_suffix(const CodecList *l, char *out, size_t outsz) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < l->n && k < outsz; i++) {
        const Known *c = find(l->name[i], strlen(l->name[i]));
        k += (size_t)snprintf(out + k, outsz - k, "%s", c ? c->suffix : ".bin");
    }
}
