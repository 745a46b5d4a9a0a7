/*
 * s3upload: streaming multipart upload (see s3upload.h).
 *
 * States: IDLE (nothing sent: the first part is filling) -> CREATING
 * (CreateMultipartUpload, once the first part is full) -> UPLOADING (parts go
 * out as they fill) -> COMPLETING (CompleteMultipartUpload, once the producer
 * finished and every part is acknowledged) -> DONE; any failure -> ABORTING ->
 * DONE. An object that ends inside its first part is one PutObject instead
 * (IDLE -> PUTTING -> DONE): a small backup costs one request, not three.
 *
 * Ownership: the caller owns the struct until s3_upload_free(), whatever
 * happened to the upload (after on_done, a write just returns -1); the struct
 * itself lives until that call and its last request's answer, whichever is
 * later, and is never freed inside one of its own calls or callbacks.
 */
#include "aws/s3upload.h"
#include "aws/sigv4.h"
#include "base/buf.h"
#include "base/log.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    UP_IDLE,
    UP_CREATING,
    UP_UPLOADING,
    UP_PUTTING,
    UP_COMPLETING,
    UP_ABORTING,
    UP_DONE
} UpState;

typedef struct {
    int number;
    char etag[80];
    char sha256[48]; /* base64, as S3 echoes it in x-amz-checksum-sha256 */
} PartDone;

typedef struct Part {
    struct Part *next;
    int number;
    char *data;
    size_t len;
    struct S3Upload *u;
    uv_work_t work; /* its SHA-256 on the thread pool: the loop never hashes a part */
    char sha[65];
    int hashed;
} Part;

struct S3Upload {
    S3Client *s3;
    char *key;
    char *content_type;
    size_t base_part_size;
    int max_in_flight;
    S3UploadWritableCb on_writable;
    S3UploadDoneCb on_done;
    void *data;

    UpState state;
    char *upload_id;
    Buf current;        /* the part being filled */
    Part *queue, *tail; /* full parts waiting for a slot */
    int queued, in_flight;
    int next_number;
    PartDone *done_parts;
    int ndone, cap_done;
    int finishing;        /* the producer called finish */
    int producer_waiting; /* write returned 0 */
    int outstanding;      /* requests in flight (the struct outlives them) */
    int reported;
    int creating; /* CreateMultipartUpload not answered yet */
    int abort_sent;
    int owner_gone; /* s3_upload_free was called: no more callbacks */
    int depth;      /* inside one of our calls or callbacks: never free there */
    size_t inflight_bytes;
    uint64_t bytes;
    EVP_MD_CTX *sha;
    Err fail;
};

static void pump(S3Upload *u);
static void on_aborted(const S3Result *res, const Err *err, void *data);
static void on_created(const S3Result *res, const Err *err, void *data);

static char *xstrdup_range(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static size_t part_size_for(const S3Upload *u, int number) {
    int doublings = (number - 1) / 1000;
    if (doublings > 9)
        doublings = 9;
    return u->base_part_size << doublings;
}

static void release(S3Upload *u) {
    if (!u->owner_gone || u->outstanding > 0 || u->depth > 0)
        return;
    while (u->queue) {
        Part *p = u->queue;
        u->queue = p->next;
        free(p->data);
        free(p);
    }
    buf_free(&u->current);
    EVP_MD_CTX_free(u->sha);
    free(u->done_parts);
    free(u->upload_id);
    free(u->key);
    free(u->content_type);
    free(u);
}

static void report(S3Upload *u, const S3Result *res, const Err *err) {
    if (u->reported)
        return;
    u->reported = 1;
    u->state = UP_DONE;
    if (u->owner_gone)
        return;
    S3Result empty;
    memset(&empty, 0, sizeof(empty));
    char hex[65];
    if (err == NULL && u->sha) {
        unsigned char md[32];
        unsigned int n = 0;
        EVP_DigestFinal_ex(u->sha, md, &n);
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    u->on_done(u, res ? res : &empty, err || !u->sha ? NULL : hex, u->bytes, err, u->data);
}

/* ---- abort ---- */

static void on_aborted(const S3Result *res, const Err *err, void *data) {
    (void)res;
    S3Upload *u = data;
    u->outstanding--;
    if (err)
        log_warn(NULL, "s3: abort of multipart upload %s failed: %s", u->key, err->msg);
    u->depth++;
    report(u, NULL, &u->fail);
    u->depth--;
    release(u);
}

/* While aborting: once nothing is in flight, abort the upload (or just report
 * when none was created). Called after every answer. */
static void maybe_abort(S3Upload *u) {
    if (u->state != UP_ABORTING || u->abort_sent || u->creating || u->in_flight > 0)
        return;
    if (u->upload_id == NULL) {
        report(u, NULL, &u->fail);
        return;
    }
    u->abort_sent = 1;
    Buf q = BUF_INIT;
    buf_printf(&q, "uploadId=%s", u->upload_id);
    u->outstanding++;
    s3_request(u->s3, "DELETE", u->key, q.data, NULL, 0, NULL, 0, on_aborted, u);
    buf_free(&q);
}

static void fail(S3Upload *u, const Err *err) {
    if (u->state == UP_DONE)
        return;
    if (u->state != UP_ABORTING) {
        u->fail = *err;
        u->state = UP_ABORTING;
    }
    maybe_abort(u);
}

/* ---- complete ---- */

static void on_completed(const S3Result *res, const Err *err, void *data) {
    S3Upload *u = data;
    u->outstanding--;
    u->depth++;
    if (err) {
        fail(u, err);
    } else {
        report(u, res, NULL);
    }
    u->depth--;
    release(u);
}

static int cmp_part(const void *a, const void *b) {
    return ((const PartDone *)a)->number - ((const PartDone *)b)->number;
}

static void complete(S3Upload *u) {
    u->state = UP_COMPLETING;
    qsort(u->done_parts, (size_t)u->ndone, sizeof(PartDone), cmp_part);
    Buf xml = BUF_INIT;
    buf_puts(&xml, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (int i = 0; i < u->ndone; i++)
        buf_printf(&xml,
                   "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag>"
                   "<ChecksumSHA256>%s</ChecksumSHA256></Part>",
                   u->done_parts[i].number, u->done_parts[i].etag, u->done_parts[i].sha256);
    buf_puts(&xml, "</CompleteMultipartUpload>");
    Buf q = BUF_INIT;
    buf_printf(&q, "uploadId=%s", u->upload_id);
    size_t len = xml.len;
    u->outstanding++;
    s3_request(u->s3, "POST", u->key, q.data, buf_steal(&xml), len, "application/xml", 0,
               on_completed, u);
    buf_free(&q);
}

/* ---- parts ---- */

typedef struct {
    S3Upload *u;
    int number;
    size_t len;
} PartReq;

static void on_part(const S3Result *res, const Err *err, void *data) {
    PartReq *pr = data;
    S3Upload *u = pr->u;
    int number = pr->number;
    u->inflight_bytes -= pr->len;
    free(pr);
    u->outstanding--;
    u->in_flight--;
    u->depth++;
    if (err == NULL && res->etag[0] == '\0') {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_PROTOCOL, "s3: part %d answered without an ETag",
                number);
        fail(u, &e);
    } else if (err) {
        fail(u, err);
    } else if (u->state == UP_UPLOADING) {
        if (u->ndone == u->cap_done) {
            u->cap_done = u->cap_done ? u->cap_done * 2 : 64;
            u->done_parts = xrealloc(u->done_parts, (size_t)u->cap_done * sizeof(PartDone));
        }
        u->done_parts[u->ndone].number = number;
        snprintf(u->done_parts[u->ndone].etag, sizeof(u->done_parts[0].etag), "%s", res->etag);
        snprintf(u->done_parts[u->ndone].sha256, sizeof(u->done_parts[0].sha256), "%s",
                 res->checksum_sha256);
        u->ndone++;
    }
    if (u->state == UP_ABORTING)
        maybe_abort(u);
    else
        pump(u);
    u->depth--;
    release(u);
}

static int buffers_full(const S3Upload *u) {
    return u->queued + u->in_flight >= u->max_in_flight;
}

static void hash_part(uv_work_t *w) {
    Part *p = w->data;
    sigv4_sha256_hex(p->data, p->len, p->sha);
}

static void part_hashed(uv_work_t *w, int status) {
    Part *p = w->data;
    S3Upload *u = p->u;
    u->outstanding--;
    if (status == 0)
        p->hashed = 1;
    else /* cancelled (the loop is closing): hashed on the loop after all */
        p->hashed = (sigv4_sha256_hex(p->data, p->len, p->sha), 1);
    u->depth++;
    pump(u);
    u->depth--;
    release(u);
}

static void push_current(S3Upload *u) {
    Part *p = xcalloc(1, sizeof(*p));
    p->number = ++u->next_number;
    p->len = u->current.len;
    p->data = buf_steal(&u->current);
    p->u = u;
    p->work.data = p;
    if (u->tail)
        u->tail->next = p;
    else
        u->queue = p;
    u->tail = p;
    u->queued++;
    if (u->state == UP_IDLE && !u->finishing) { /* more than one part: a multipart upload */
        u->state = UP_CREATING;
        u->creating = 1;
        u->outstanding++;
        s3_request(u->s3, "POST", u->key, "uploads", NULL, 0, u->content_type, 0, on_created, u);
    }
    u->outstanding++; /* the struct and the part outlive the hashing */
    if (uv_queue_work(s3_client_loop(u->s3), &p->work, hash_part, part_hashed) != 0) {
        u->outstanding--;
        sigv4_sha256_hex(p->data, p->len, p->sha);
        p->hashed = 1;
    }
}

static void on_put(const S3Result *res, const Err *err, void *data) {
    S3Upload *u = data;
    u->outstanding--;
    u->in_flight--;
    u->inflight_bytes = 0;
    u->depth++;
    if (u->state == UP_ABORTING && err == NULL) {
        /* the caller gave up while the object went up: it must not stay behind */
        u->abort_sent = 1;
        u->outstanding++;
        s3_delete_object(u->s3, u->key, on_aborted, u);
    } else if (u->state == UP_ABORTING) {
        report(u, NULL, &u->fail);
    } else if (err) {
        fail(u, err); /* nothing to abort: no multipart upload was created */
    } else {
        report(u, res, NULL);
    }
    u->depth--;
    release(u);
}

/* The whole object is the one hashed part: PutObject it. */
static void put_whole(S3Upload *u) {
    Part *p = u->queue;
    u->queue = u->tail = NULL;
    u->queued--;
    u->state = UP_PUTTING;
    u->in_flight++;
    u->outstanding++;
    u->inflight_bytes = p->len;
    s3_put_hashed(u->s3, u->key, p->data, p->len, u->content_type, p->sha, on_put, u);
    free(p);
}

/* Send queued parts into free slots; complete when everything is in. */
static void pump(S3Upload *u) {
    if (u->state == UP_IDLE && u->finishing && u->queue && u->queue->hashed) {
        put_whole(u);
        return;
    }
    if (u->state != UP_UPLOADING)
        return;
    while (u->queue && u->queue->hashed && u->in_flight < u->max_in_flight) {
        Part *p = u->queue;
        u->queue = p->next;
        if (u->queue == NULL)
            u->tail = NULL;
        u->queued--;
        PartReq *pr = xcalloc(1, sizeof(*pr));
        pr->u = u;
        pr->number = p->number;
        pr->len = p->len;
        u->inflight_bytes += p->len;
        Buf q = BUF_INIT;
        buf_printf(&q, "partNumber=%d&uploadId=%s", p->number, u->upload_id);
        u->in_flight++;
        u->outstanding++;
        s3_request_hashed(u->s3, "PUT", u->key, q.data, p->data, p->len, p->sha, on_part, pr);
        buf_free(&q);
        free(p);
    }
    if (u->finishing && u->queue == NULL && u->in_flight == 0) {
        complete(u);
        return;
    }
    if (u->producer_waiting && !buffers_full(u) && !u->finishing) {
        u->producer_waiting = 0;
        u->on_writable(u, u->data);
    }
}

static void on_created(const S3Result *res, const Err *err, void *data) {
    S3Upload *u = data;
    u->outstanding--;
    u->creating = 0;
    u->depth++;
    if (err == NULL) {
        const char *s = res->body && res->body->data ? strstr(res->body->data, "<UploadId>") : NULL;
        const char *e = s ? strstr(s, "</UploadId>") : NULL;
        if (s && e && e > s + 10)
            u->upload_id = xstrdup_range(s + 10, (size_t)(e - s - 10));
    }
    if (err) {
        fail(u, err);
    } else if (u->upload_id == NULL) {
        Err x;
        err_set(&x, ERR_RETRYABLE, ERR_CODE_PROTOCOL, "s3: CreateMultipartUpload gave no UploadId");
        fail(u, &x);
    } else if (u->state == UP_ABORTING) {
        maybe_abort(u); /* aborted while it was being created */
    } else {
        u->state = UP_UPLOADING;
        pump(u);
    }
    u->depth--;
    release(u);
}

S3Upload *s3_upload_new(S3Client *s3, const char *key, const char *content_type, size_t part_size,
                        int parts_in_flight, S3UploadWritableCb on_writable, S3UploadDoneCb on_done,
                        void *data) {
    S3Upload *u = xcalloc(1, sizeof(*u));
    u->s3 = s3;
    u->key = xstrdup(key);
    u->content_type = content_type ? xstrdup(content_type) : NULL;
    u->base_part_size = part_size ? part_size : 8u * 1024 * 1024;
    if (u->base_part_size < S3_UPLOAD_MIN_PART)
        u->base_part_size = S3_UPLOAD_MIN_PART;
    u->max_in_flight = parts_in_flight > 0 ? parts_in_flight : 4;
    u->on_writable = on_writable;
    u->on_done = on_done;
    u->data = data;
    u->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(u->sha, EVP_sha256(), NULL);
    u->state = UP_IDLE; /* the first request waits for the first full part, or the end */
    return u;
}

int s3_upload_write(S3Upload *u, const void *buf, size_t len) {
    if (u->state == UP_ABORTING || u->state == UP_DONE || u->finishing || u->owner_gone)
        return -1;
    const char *p = buf;
    if (u->sha) /* NULL: the caller hashes the stream itself (storage.h, off the loop) */
        EVP_DigestUpdate(u->sha, buf, len);
    u->bytes += len;
    while (len > 0) {
        size_t want = part_size_for(u, u->next_number + 1);
        if (u->current.cap == 0) { /* exactly one part: doubling would reserve twice that */
            u->current.data = xmalloc(want + 1);
            u->current.cap = want + 1;
        }
        size_t room = want - u->current.len;
        size_t n = len < room ? len : room;
        buf_append(&u->current, p, n);
        p += n;
        len -= n;
        if (u->current.len == want)
            push_current(u);
    }
    u->depth++;
    pump(u);
    u->depth--;
    if (u->state == UP_ABORTING || u->state == UP_DONE)
        return -1;
    if (buffers_full(u)) {
        u->producer_waiting = 1;
        return 0;
    }
    return 1;
}

void s3_upload_finish(S3Upload *u) {
    if (u->finishing || u->state == UP_ABORTING || u->state == UP_DONE)
        return;
    u->finishing = 1;
    if (u->current.len > 0 || u->next_number == 0)
        push_current(u); /* the last part may be short; an empty object is one empty part */
    u->depth++;
    pump(u);
    u->depth--;
}

void s3_upload_abort(S3Upload *u) {
    Err e;
    err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: upload aborted by the caller");
    u->depth++;
    fail(u, &e);
    u->depth--;
}

void s3_upload_free(S3Upload *u) {
    if (u == NULL)
        return;
    u->owner_gone = 1;       /* report() stays silent from now on */
    if (u->state != UP_DONE) /* abandoned: abort it in the background */
        s3_upload_abort(u);
    release(u);
}

size_t s3_upload_buffered(const S3Upload *u) {
    size_t n = u->current.len + u->inflight_bytes;
    for (const Part *p = u->queue; p; p = p->next)
        n += p->len;
    return n;
}

void s3_upload_no_digest(S3Upload *u) {
    EVP_MD_CTX_free(u->sha);
    u->sha = NULL;
}
