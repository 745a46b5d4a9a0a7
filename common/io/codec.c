/* codec: named transforms of stored bytes (see codec.h). */
#include "io/codec.h"

#include "io/crypt.h"

#include <stdio.h>
#include <string.h>

/* The constructors of one codec's filters: level is the option's (0: the codec's default). */
typedef Filter *(*EncoderFn)(int level, const CryptParams *cp);
typedef Filter *(*DecoderFn)(const CryptParams *cp);

typedef struct {
    const char *name;
    const char *suffix;
    const char *content_type;
    int level_min, level_max, level_default; /* a compression codec's; 0 0 0: not one */
    EncoderFn encoder;
    DecoderFn decoder;
} Known;

static Filter *gzip_enc(int level, const CryptParams *cp) {
    (void)cp;
    return filter_gzip_new(NULL, level);
}
static Filter *gzip_dec(const CryptParams *cp) {
    (void)cp;
    return filter_gunzip_new(NULL);
}
static Filter *zstd_enc(int level, const CryptParams *cp) {
    (void)cp;
    return filter_zstd_new(NULL, level);
}
static Filter *zstd_dec(const CryptParams *cp) {
    (void)cp;
    return filter_unzstd_new(NULL);
}
/* encryption needs its parameters: without them, no chain */
static Filter *aes_enc(int level, const CryptParams *cp) {
    (void)level;
    return cp ? crypt_encrypt_new(NULL, cp) : NULL;
}
static Filter *aes_dec(const CryptParams *cp) {
    return cp ? crypt_decrypt_new(NULL, cp) : NULL;
}

/* Every codec: one row each. Levels 1 by default: on our rows (random UUIDs) gzip -1 and
 * zstd -1 are both smaller for their time than higher levels (deploy/README.md). */
static const Known known[] = {
    {"gzip", ".gz", "application/gzip", 1, 9, 1, gzip_enc, gzip_dec},
    {"zstd", ".zst", "application/zstd", 1, 19, 1, zstd_enc, zstd_dec},
    {CRYPT_CODEC, ".enc", "application/octet-stream", 0, 0, 0, aes_enc, aes_dec},
};
#define NKNOWN (sizeof(known) / sizeof(known[0]))

static const Known *find(const char *name, size_t len) {
    for (size_t i = 0; i < NKNOWN; i++)
        if (strlen(known[i].name) == len && strncmp(known[i].name, name, len) == 0)
            return &known[i];
    return NULL;
}

static void names(char *out, size_t outsz, int compression_only) {
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NKNOWN && k < outsz; i++)
        if (!compression_only || known[i].level_max > 0)
            k += (size_t)snprintf(out + k, outsz - k, "%s%s", k ? ", " : "", known[i].name);
}

void codec_compression_names(char *out, size_t outsz) {
    names(out, outsz, 1);
}

int codec_levels(const char *name, int *min, int *max, int *def) {
    const Known *k = find(name, strlen(name));
    if (k == NULL || k->level_max == 0)
        return -1;
    *min = k->level_min;
    *max = k->level_max;
    *def = k->level_default;
    return 0;
}

static int add(CodecList *out, const char *name, size_t len, Err *err) {
    const Known *k = find(name, len);
    if (k == NULL) {
        char all[128];
        names(all, sizeof(all), 0);
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "unknown codec \"%.*s\" (known: %s)",
                (int)(len > 32 ? 32 : len), name, all);
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
    const Known *k = find(name, strlen(name));
    if (k == NULL)
        return NULL; /* parse refuses every other name */
    if (!encode)
        return k->decoder(cp);
    int level = o && o->level ? o->level : k->level_default;
    if (level < k->level_min)
        level = k->level_min;
    if (level > k->level_max)
        level = k->level_max;
    return k->encoder(level, cp);
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
    for (int i = 0; i < l->n; i++) {
        const Known *k = find(l->name[i], strlen(l->name[i]));
        if (k && k->level_max > 0)
            return l->name[i];
    }
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
