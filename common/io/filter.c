/*
 * filter: the chain and the basic filters (see filter.h).
 *
 * Each transforming stage writes into its own scratch buffer, reused from
 * call to call, except the last one, which appends straight to the caller's
 * output; observing stages read whatever buffer the bytes are in.
 */
#include "io/filter.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <libdeflate.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define ZCHUNK (64 * 1024)

struct Filter {
    char *name;
    FilterVtbl vt;
    void *self;
    Buf scratch;
    Buf result;
};

struct FilterChain {
    Filter **f;
    int n, cap;
    int finished;
};

Filter *filter_new(const char *name, const FilterVtbl *vt, void *self) {
    Filter *f = xcalloc(1, sizeof(*f));
    f->name = name ? xstrdup(name) : NULL;
    f->vt = *vt;
    f->self = self;
    return f;
}

static void filter_free(Filter *f) {
    if (f->vt.free)
        f->vt.free(f->self);
    buf_free(&f->scratch);
    buf_free(&f->result);
    free(f->name);
    free(f);
}

/* ---- the chain ---- */

FilterChain *filter_chain_new(void) {
    return xcalloc(1, sizeof(FilterChain));
}

void filter_chain_add(FilterChain *c, Filter *f) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        c->f = xrealloc(c->f, (size_t)c->cap * sizeof(Filter *));
    }
    c->f[c->n++] = f;
}

static int run(FilterChain *c, const char *p, size_t n, int end, Buf *out, Err *err) {
    int last = -1; /* the last transforming stage writes into out */
    for (int i = 0; i < c->n; i++)
        if (c->f[i]->vt.process)
            last = i;
    if (last < 0) {
        for (int i = 0; i < c->n; i++)
            c->f[i]->vt.observe(c->f[i]->self, p, n);
        buf_append(out, p, n);
        return 0;
    }
    for (int i = 0; i < c->n; i++) {
        Filter *f = c->f[i];
        if (f->vt.observe) {
            f->vt.observe(f->self, p, n);
            continue;
        }
        Buf *dst = i == last ? out : &f->scratch;
        size_t before = i == last ? out->len : 0;
        if (i != last)
            buf_reset(dst);
        if (f->vt.process(f->self, p, n, end, dst, err) != 0) {
            err_prefix(err, "%s", f->name ? f->name : "filter");
            return -1;
        }
        p = dst->data ? dst->data + before : "";
        n = dst->len - before;
    }
    return 0;
}

int filter_chain_write(FilterChain *c, const void *buf, size_t len, Buf *out, Err *err) {
    if (c->finished) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "filter chain: write after finish");
        return -1;
    }
    return len ? run(c, buf, len, 0, out, err) : 0;
}

int filter_chain_finish(FilterChain *c, Buf *out, Err *err) {
    if (c->finished)
        return 0;
    c->finished = 1;
    if (run(c, "", 0, 1, out, err) != 0)
        return -1;
    for (int i = 0; i < c->n; i++)
        if (c->f[i]->vt.result)
            c->f[i]->vt.result(c->f[i]->self, &c->f[i]->result);
    return 0;
}

const char *filter_chain_result(const FilterChain *c, const char *name) {
    if (!c->finished)
        return NULL;
    for (int i = 0; i < c->n; i++)
        if (c->f[i]->name && strcmp(c->f[i]->name, name) == 0 && c->f[i]->result.data)
            return c->f[i]->result.data;
    return NULL;
}

void filter_chain_free(FilterChain *c) {
    if (c == NULL)
        return;
    for (int i = 0; i < c->n; i++)
        filter_free(c->f[i]);
    free(c->f);
    free(c);
}

/* ---- gzip ---- */

typedef struct {
    z_stream z;
    int ended;   /* gunzip: the current member is complete */
    int started; /* gunzip: any input seen */
} Zip;

static void zip_free(void *self) {
    Zip *z = self;
    inflateEnd(&z->z);
    free(z);
}

/* gzip is written by libdeflate, each write (the pipe's chunk: 1 MiB for a backup) one gzip
 * member; smaller writes gather to GZ_MIN first. RFC 1952 allows members in turn: gunzip, zlib
 * and every reader we know read them all. At level 1 libdeflate ran 2.4x zlib's speed here and
 * compressed better even in 1 MiB members (393 vs 162 MiB/s, 20.6 vs 23.2 MiB for 134 MiB of
 * backup JSON): gzip bounds a big backup's time. */
#define GZ_MIN (256u << 10)

typedef struct {
    struct libdeflate_compressor *c;
    Buf pend;  /* writes short of GZ_MIN */
    int wrote; /* a member was written */
} Gzip;

static void gzip_free(void *self) {
    Gzip *g = self;
    libdeflate_free_compressor(g->c);
    buf_free(&g->pend);
    free(g);
}

static int gzip_member(Gzip *g, const char *in, size_t len, Buf *out, Err *err) {
    size_t bound = libdeflate_gzip_compress_bound(g->c, len);
    buf_reserve(out, bound);
    size_t n = libdeflate_gzip_compress(g->c, in, len, out->data + out->len, bound);
    if (n == 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "gzip compression failed");
        return -1;
    }
    out->len += n;
    out->data[out->len] = '\0';
    g->wrote = 1;
    return 0;
}

static int gzip_process(void *self, const char *in, size_t len, int end, Buf *out, Err *err) {
    Gzip *g = self;
    if (g->pend.len == 0 && len >= GZ_MIN) { /* in place: no copy */
        if (gzip_member(g, in, len, out, err) != 0)
            return -1;
    } else if (len > 0) {
        buf_append(&g->pend, in, len);
    }
    /* gathered enough, or the end (an empty input is still one empty member: a gzip stream) */
    if (g->pend.len >= GZ_MIN || (end && (g->pend.len > 0 || !g->wrote))) {
        if (gzip_member(g, g->pend.data ? g->pend.data : "", g->pend.len, out, err) != 0)
            return -1;
        buf_reset(&g->pend);
    }
    return 0;
}

Filter *filter_gzip_new(const char *name, int level) {
    Gzip *g = xcalloc(1, sizeof(*g));
    g->c = libdeflate_alloc_compressor(level < 1 || level > 9 ? 1 : level);
    if (g->c == NULL)
        abort(); /* only fails without memory, like xmalloc */
    static const FilterVtbl vt = {gzip_process, NULL, NULL, gzip_free};
    return filter_new(name, &vt, g);
}

static int gunzip_process(void *self, const char *in, size_t len, int end, Buf *out, Err *err) {
    Zip *z = self;
    z->z.next_in = (Bytef *)(uintptr_t)in;
    z->z.avail_in = (uInt)len;
    int more_out = 0; /* the last call filled the buffer: zlib may hold more output */
    while (z->z.avail_in > 0 || (more_out && !z->ended)) {
        if (z->ended) { /* another member follows: gzip allows concatenation */
            inflateReset(&z->z);
            z->ended = 0;
        }
        z->started = 1;
        buf_reserve(out, ZCHUNK);
        z->z.next_out = (Bytef *)out->data + out->len;
        z->z.avail_out = ZCHUNK;
        int rc = inflate(&z->z, Z_NO_FLUSH);
        out->len += ZCHUNK - z->z.avail_out;
        out->data[out->len] = '\0';
        more_out = z->z.avail_out == 0;
        if (rc == Z_STREAM_END) {
            z->ended = 1;
        } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR ||
                   rc == Z_MEM_ERROR) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "corrupt gzip data (%s)",
                    z->z.msg ? z->z.msg : "invalid stream");
            return -1;
        } else if (rc == Z_BUF_ERROR) {
            break; /* no progress possible: more input needed */
        }
    }
    if (end && (!z->started || !z->ended)) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                z->started ? "truncated gzip data (the stream ends early)" : "no gzip data");
        return -1;
    }
    return 0;
}

Filter *filter_gunzip_new(const char *name) {
    Zip *z = xcalloc(1, sizeof(*z));
    if (inflateInit2(&z->z, 15 + 16) != Z_OK)
        abort();
    static const FilterVtbl vt = {gunzip_process, NULL, NULL, zip_free};
    return filter_new(name, &vt, z);
}

/* ---- zstd ---- */

typedef struct {
    ZSTD_CCtx *c;
    ZSTD_DCtx *d;
    int in_frame; /* unzstd: inside a frame (not at a boundary) */
    int started;
} Zst;

static void zst_free(void *self) {
    Zst *z = self;
    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    free(z);
}

static int zstd_process(void *self, const char *in, size_t len, int end, Buf *out, Err *err) {
    Zst *z = self;
    ZSTD_inBuffer ib = {in, len, 0};
    for (;;) {
        buf_reserve(out, ZCHUNK);
        ZSTD_outBuffer ob = {out->data + out->len, ZCHUNK, 0};
        size_t left = ZSTD_compressStream2(z->c, &ob, &ib, end ? ZSTD_e_end : ZSTD_e_continue);
        out->len += ob.pos;
        if (ZSTD_isError(left)) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "zstd: %s", ZSTD_getErrorName(left));
            return -1;
        }
        if (end ? left == 0 : (ib.pos == ib.size && ob.pos < ob.size))
            break;
    }
    out->data[out->len] = '\0';
    return 0;
}

Filter *filter_zstd_new(const char *name, int level) {
    Zst *z = xcalloc(1, sizeof(*z));
    z->c = ZSTD_createCCtx();
    if (z->c == NULL)
        abort(); /* only fails without memory, like xmalloc */
    ZSTD_CCtx_setParameter(z->c, ZSTD_c_compressionLevel, level < 1 || level > 19 ? 1 : level);
    ZSTD_CCtx_setParameter(z->c, ZSTD_c_checksumFlag, 1); /* zstd -d checks it too */
    static const FilterVtbl vt = {zstd_process, NULL, NULL, zst_free};
    return filter_new(name, &vt, z);
}

static int unzstd_process(void *self, const char *in, size_t len, int end, Buf *out, Err *err) {
    Zst *z = self;
    ZSTD_inBuffer ib = {in, len, 0};
    int more_out = 0;
    while (ib.pos < ib.size || more_out) {
        z->started = 1;
        buf_reserve(out, ZCHUNK);
        ZSTD_outBuffer ob = {out->data + out->len, ZCHUNK, 0};
        size_t hint = ZSTD_decompressStream(z->d, &ob, &ib);
        out->len += ob.pos;
        out->data[out->len] = '\0';
        if (ZSTD_isError(hint)) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "corrupt zstd data (%s)",
                    ZSTD_getErrorName(hint));
            return -1;
        }
        z->in_frame = hint != 0; /* 0: a frame just ended */
        more_out = ob.pos == ob.size;
    }
    if (end && (!z->started || z->in_frame)) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                z->started ? "truncated zstd data (the stream ends early)" : "no zstd data");
        return -1;
    }
    return 0;
}

Filter *filter_unzstd_new(const char *name) {
    Zst *z = xcalloc(1, sizeof(*z));
    z->d = ZSTD_createDCtx();
    if (z->d == NULL)
        abort();
    static const FilterVtbl vt = {unzstd_process, NULL, NULL, zst_free};
    return filter_new(name, &vt, z);
}

/* ---- observers ---- */

static void sha_observe(void *self, const char *in, size_t len) {
    EVP_DigestUpdate(self, in, len);
}

static void sha_result(void *self, Buf *res) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(self, md, &n);
    for (unsigned int i = 0; i < n; i++)
        buf_printf(res, "%02x", md[i]);
}

static void sha_free(void *self) {
    EVP_MD_CTX_free(self);
}

Filter *filter_sha256_new(const char *name) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        abort();
    static const FilterVtbl vt = {NULL, sha_observe, sha_result, sha_free};
    return filter_new(name, &vt, ctx);
}

static void size_observe(void *self, const char *in, size_t len) {
    (void)in;
    *(uint64_t *)self += len;
}

static void size_result(void *self, Buf *res) {
    buf_printf(res, "%llu", (unsigned long long)*(uint64_t *)self);
}

Filter *filter_size_new(const char *name) {
    static const FilterVtbl vt = {NULL, size_observe, size_result, free};
    return filter_new(name, &vt, xcalloc(1, sizeof(uint64_t)));
}

/* ---- a chain as a filter ---- */

typedef struct {
    FilterChain *inner;
    int tolerant, failed;
    Err err;
} Nested;

static int nested_process(void *self, const char *in, size_t len, int end, Buf *out, Err *err) {
    Nested *t = self;
    if (t->failed)
        return 0;
    int rc = filter_chain_write(t->inner, in, len, out, &t->err);
    if (rc == 0 && end)
        rc = filter_chain_finish(t->inner, out, &t->err);
    if (rc == 0)
        return 0;
    t->failed = 1;
    if (t->tolerant)
        return 0;
    *err = t->err;
    return -1;
}

static void nested_result(void *self, Buf *res) {
    Nested *t = self;
    if (t->failed)
        buf_puts(res, t->err.msg);
}

static void nested_free(void *self) {
    Nested *t = self;
    filter_chain_free(t->inner);
    free(t);
}

Filter *filter_chain_filter_new(const char *name, FilterChain *inner, int tolerant) {
    static const FilterVtbl vt = {nested_process, NULL, nested_result, nested_free};
    Nested *t = xcalloc(1, sizeof(*t));
    t->inner = inner;
    t->tolerant = tolerant;
    return filter_new(name, &vt, t);
}
