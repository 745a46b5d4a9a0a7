/*
 * s3copy: server-side copy (see s3copy.h).
 *
 *   SINGLE    CopyObject -> done
 *   CREATING  CreateMultipartUpload -> PARTS
 *   PARTS     UploadPartCopy of each range, parts_in_flight at once -> COMPLETING
 *   COMPLETING CompleteMultipartUpload -> done
 * A failure in PARTS waits for the parts in flight, then aborts the upload, then reports.
 */
#include "aws/s3copy.h"

#include "base/buf.h"
#include "base/log.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_PART  (5ull * 1024 * 1024)
#define MAX_PARTS 10000

typedef struct {
    char etag[80];
    char sha256_b64[48];
} Part;

struct S3Copy {
    S3Client *s3;
    char *src_bucket, *key, *content_type;
    uint64_t size, part_size;
    int nparts, next, in_flight, done_parts, parts_in_flight;
    Part *parts;
    char upload_id[256];
    int multipart, failed, finished, gone, aborting;
    Err err;
    S3CopyDoneCb done;
    void *data;
};

/* Text of the first <tag>...</tag> of an XML answer, "&quot;" undone (ETags are quoted). */
static void xml_field(const Buf *b, const char *tag, char *out, size_t outlen) {
    out[0] = 0;
    char open[48], close[48];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *s = b && b->data ? strstr(b->data, open) : NULL;
    const char *e = s ? strstr(s, close) : NULL;
    if (e == NULL)
        return;
    s += strlen(open);
    size_t n = 0;
    while (s < e && n + 1 < outlen) {
        if (strncmp(s, "&quot;", 6) == 0 || *s == '"') {
            s += *s == '"' ? 1 : 6;
            continue;
        }
        out[n++] = *s++;
    }
    out[n] = 0;
}

static void release(S3Copy *cp) {
    free(cp->src_bucket);
    free(cp->key);
    free(cp->content_type);
    free(cp->parts);
    free(cp);
}

static void report(S3Copy *cp, const char *sha256, const Err *err) {
    if (cp->finished)
        return;
    cp->finished = 1;
    if (cp->gone) {
        release(cp);
        return;
    }
    Err e; /* err may be cp's own, and done may free cp */
    if (err)
        e = *err;
    cp->done(cp, sha256, err ? &e : NULL, cp->data);
}

/* ---- abort ---- */

static void on_aborted(const S3Result *res, const Err *err, void *data) {
    (void)res;
    S3Copy *cp = data;
    if (err)
        log_warn(NULL, "s3: abort of the multipart copy of %s failed: %s", cp->key, err->msg);
    report(cp, NULL, &cp->err);
}

/* After a failure, once no part is in flight: abort the upload, then report. */
static void maybe_abort(S3Copy *cp) {
    if (!cp->failed || cp->in_flight > 0 || cp->aborting)
        return;
    cp->aborting = 1;
    if (cp->upload_id[0] == 0) {
        report(cp, NULL, &cp->err);
        return;
    }
    Buf q = BUF_INIT;
    buf_puts(&q, "uploadId=");
    buf_puts(&q, cp->upload_id);
    s3_request(cp->s3, "DELETE", cp->key, q.data, NULL, 0, NULL, 0, on_aborted, cp);
    buf_free(&q);
}

static void fail(S3Copy *cp, const Err *err) {
    if (!cp->failed) {
        cp->failed = 1;
        cp->err = *err;
    }
    maybe_abort(cp);
}

/* ---- one CopyObject ---- */

static void on_single(const S3Result *res, const Err *err, void *data) {
    S3Copy *cp = data;
    if (err) {
        report(cp, NULL, err);
        return;
    }
    char b64[64], type[32], hex[65] = "";
    unsigned char raw[48];
    xml_field(res->body, "ChecksumSHA256", b64, sizeof(b64));
    /* a digest of the parts' digests (a multipart source) is not the object's: read it back */
    xml_field(res->body, "ChecksumType", type, sizeof(type));
    if ((type[0] == 0 || strcmp(type, "FULL_OBJECT") == 0) && strlen(b64) == 44 &&
        EVP_DecodeBlock(raw, (const unsigned char *)b64, 44) == 33) {
        for (int i = 0; i < 32; i++) /* 44 characters decode to 33 bytes: one is padding */
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    }
    report(cp, hex, NULL);
}

/* ---- multipart ---- */

static void pump(S3Copy *cp);

static void on_completed(const S3Result *res, const Err *err, void *data) {
    (void)res;
    S3Copy *cp = data;
    if (err) {
        cp->failed = 1;
        cp->err = *err;
        maybe_abort(cp); /* a refused completion leaves the parts: abort them */
        return;
    }
    cp->upload_id[0] = 0;
    report(cp, "", NULL);
}

static void complete(S3Copy *cp) {
    Buf xml = BUF_INIT;
    buf_puts(&xml, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (int i = 0; i < cp->nparts; i++) {
        buf_printf(&xml, "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag>", i + 1,
                   cp->parts[i].etag);
        if (cp->parts[i].sha256_b64[0])
            buf_printf(&xml, "<ChecksumSHA256>%s</ChecksumSHA256>", cp->parts[i].sha256_b64);
        buf_puts(&xml, "</Part>");
    }
    buf_puts(&xml, "</CompleteMultipartUpload>");
    Buf q = BUF_INIT;
    buf_puts(&q, "uploadId=");
    buf_puts(&q, cp->upload_id);
    size_t len = xml.len;
    s3_request(cp->s3, "POST", cp->key, q.data, buf_steal(&xml), len, "application/xml", 0,
               on_completed, cp);
    buf_free(&q);
}

typedef struct {
    S3Copy *cp;
    int number;
} PartCall;

static void on_part(const S3Result *res, const Err *err, void *data) {
    PartCall pc = *(PartCall *)data;
    free(data);
    S3Copy *cp = pc.cp;
    cp->in_flight--;
    if (err == NULL && !cp->failed && !cp->gone) {
        Part *p = &cp->parts[pc.number - 1];
        xml_field(res->body, "ETag", p->etag, sizeof(p->etag));
        xml_field(res->body, "ChecksumSHA256", p->sha256_b64, sizeof(p->sha256_b64));
        if (p->etag[0] == 0) {
            Err e;
            err_set(&e, ERR_RETRYABLE, ERR_CODE_PROTOCOL,
                    "s3: UploadPartCopy of part %d of %s gave no ETag", pc.number, cp->key);
            fail(cp, &e);
            return;
        }
        cp->done_parts++;
        pump(cp);
        return;
    }
    if (err)
        fail(cp, err);
    else if (cp->gone && !cp->failed) {
        Err e;
        err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: copy abandoned");
        fail(cp, &e);
    } else
        maybe_abort(cp);
}

static void pump(S3Copy *cp) {
    if (cp->failed)
        return;
    if (cp->done_parts == cp->nparts) {
        complete(cp);
        return;
    }
    while (cp->next < cp->nparts && cp->in_flight < cp->parts_in_flight) {
        int n = ++cp->next;
        uint64_t first = (uint64_t)(n - 1) * cp->part_size;
        uint64_t last =
            first + cp->part_size - 1 < cp->size - 1 ? first + cp->part_size - 1 : cp->size - 1;
        char q[400], range[64];
        snprintf(q, sizeof(q), "partNumber=%d&uploadId=%s", n, cp->upload_id);
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, first, last);
        PartCall *pc = xmalloc(sizeof(*pc));
        pc->cp = cp;
        pc->number = n;
        cp->in_flight++;
        s3_copy(cp->s3, cp->key, q, cp->src_bucket, cp->key, range, on_part, pc);
    }
}

static void on_created(const S3Result *res, const Err *err, void *data) {
    S3Copy *cp = data;
    if (err == NULL)
        xml_field(res->body, "UploadId", cp->upload_id, sizeof(cp->upload_id));
    if (err == NULL && cp->upload_id[0] == 0) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_PROTOCOL, "s3: CreateMultipartUpload gave no UploadId");
        fail(cp, &e);
        return;
    }
    if (err) {
        fail(cp, err);
        return;
    }
    if (cp->gone) {
        Err e;
        err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: copy abandoned");
        fail(cp, &e);
        return;
    }
    pump(cp);
}

S3Copy *s3_copy_object_new(S3Client *dst, const char *src_bucket, const char *key, uint64_t size,
                           const char *content_type, uint64_t single_max, size_t part_size,
                           int parts_in_flight, S3CopyDoneCb done, void *data) {
    S3Copy *cp = xcalloc(1, sizeof(*cp));
    cp->s3 = dst;
    cp->src_bucket = xstrdup(src_bucket);
    cp->key = xstrdup(key);
    cp->content_type = xstrdup(content_type ? content_type : "application/octet-stream");
    cp->size = size;
    cp->part_size = part_size ? part_size : 8u << 20;
    if (cp->part_size < MIN_PART)
        cp->part_size = MIN_PART;
    while (size / cp->part_size >= MAX_PARTS)
        cp->part_size *= 2;
    cp->parts_in_flight = parts_in_flight > 0 ? parts_in_flight : 4;
    cp->done = done;
    cp->data = data;
    if (size <= (single_max ? single_max : S3_COPY_SINGLE_MAX) || size <= cp->part_size) {
        s3_copy(dst, key, NULL, src_bucket, key, NULL, on_single, cp);
        return cp;
    }
    cp->multipart = 1;
    cp->nparts = (int)((size + cp->part_size - 1) / cp->part_size);
    cp->parts = xcalloc((size_t)cp->nparts, sizeof(Part));
    s3_request(dst, "POST", key, "uploads", NULL, 0, cp->content_type, 0, on_created, cp);
    return cp;
}

void s3_copy_object_free(S3Copy *cp) {
    if (cp == NULL)
        return;
    if (cp->finished) {
        release(cp);
        return;
    }
    /* in flight: the request's answer frees it (after the abort, for a multipart copy) */
    cp->gone = 1;
}
