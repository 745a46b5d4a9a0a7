/*
 * s3: signed and retried S3 requests (see s3.h).
 *
 * One operation (S3Op) runs attempt after attempt: sign, send, judge the
 * answer, then finish or wait in its retry timer. The op owns everything it
 * allocated and is freed from its timer's close callback.
 */
#define _GNU_SOURCE /* strptime */
#include "aws/s3.h"
#include "base/backoff.h"
#include "aws/awscreds.h"
#include "base/buf.h"
#include "base/log.h"
#include "aws/sigv4.h"

#include <openssl/evp.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* How long a request waits for the first web-identity credentials without using an attempt. */
#define CREDS_WAIT_MS 60000u

struct S3Client {
    uv_loop_t *loop;
    HttpClient *http;
    char *endpoint, *region, *bucket;
    AwsCreds *creds;
    char *sse, *sse_kms_key_id, *ca_file;
    int path_style;
    int max_attempts;
    unsigned backoff_base_ms, backoff_max_ms;
    long timeout_ms, connect_timeout_ms, stall_secs;
    long clock_skew; /* server time minus ours, learned from RequestTimeTooSkewed */
    S3Op *ops;
    int nops;
    int closing;
    int halted;       /* s3_client_halt: nothing in flight, nothing retried, nothing new sent */
    uint64_t retries; /* attempts scheduled again after a failed one (a gauge of trouble) */
};

struct S3Op {
    S3Op *prev, *next;
    S3Client *c;
    const char *method;
    char *key;   /* NULL: the bucket itself */
    char *query; /* raw query string, may be NULL */
    char *body;
    size_t len;
    size_t body_off; /* how much of body this attempt has sent */
    char *content_type;
    char *copy_source; /* server-side copy: "/bucket/key", encoded */
    char *copy_range;  /* UploadPartCopy: "bytes=first-last" */
    int content_md5;
    int send_checksum; /* x-amz-checksum-sha256 on a PutObject (s3_put_hashed) */
    size_t max_body;
    char payload_hash[65];
    S3DoneCb cb;
    void *data;
    HttpRequest *req;
    uv_timer_t retry;
    S3Result res;
    Buf got; /* GET body kept past the HTTP request */
    int finished;
    /* streamed GET */
    S3WriteCb write;
    uint64_t offset;       /* bytes delivered to write */
    uint64_t attempt_from; /* offset this attempt asked for */
    uint64_t skip;         /* bytes to drop: the server ignored our Range */
    uint64_t creds_waited_ms;
    int range_checked;    /* this attempt's answer was looked at */
    int stopped;          /* the write callback said S3_STOP */
    char pinned_etag[80]; /* version being read */
};

int s3_retryable(long status, const char *code) {
    if (status == 500 || status == 502 || status == 503 || status == 504 || status == 429)
        return 1;
    static const char *codes[] = {"SlowDown", "RequestTimeout", "InternalError",
                                  "ServiceUnavailable", "RequestTimeTooSkewed"};
    for (size_t i = 0; code && i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(code, codes[i]) == 0)
            return 1;
    return 0;
}

/* Text of <tag>...</tag> in an XML body, or "" (S3 error bodies are flat). */
static void xml_text(const Buf *b, const char *tag, char *out, size_t outlen) {
    out[0] = '\0';
    if (b == NULL || b->data == NULL)
        return;
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *s = strstr(b->data, open);
    if (s == NULL)
        return;
    s += strlen(open);
    const char *e = strstr(s, close);
    if (e == NULL)
        return;
    snprintf(out, outlen, "%.*s", (int)(e - s), s);
}

/* 1 when the document's root element is <Error> (not an <Error> inside a
 * DeleteResult, which reports one key). */
static int root_is_error(const Buf *b) {
    const char *p = b->data;
    while (p && (p = strchr(p, '<')) != NULL) {
        if (p[1] != '?' && p[1] != '!')
            return strncmp(p, "<Error>", 7) == 0;
        p++;
    }
    return 0;
}

/* ---- lifecycle ---- */

static void client_release(S3Client *c) {
    free(c->endpoint);
    free(c->region);
    free(c->bucket);
    free(c->sse);
    free(c->sse_kms_key_id);
    free(c->ca_file);
    free(c);
}

/* The base64 of the 32 bytes a 64-digit hex string spells. */
static void hex_to_base64(const char *hex, char *out, size_t outlen) {
    unsigned char bin[32];
    for (int i = 0; i < 32; i++) {
        unsigned int v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        bin[i] = (unsigned char)v;
    }
    unsigned char b64[48];
    EVP_EncodeBlock(b64, bin, 32);
    snprintf(out, outlen, "%s", (const char *)b64);
}

static void on_op_closed(uv_handle_t *h) {
    S3Op *op = h->data;
    S3Client *c = op->c;
    free(op->key);
    free(op->query);
    free(op->body);
    free(op->content_type);
    free(op->copy_source);
    free(op->copy_range);
    buf_free(&op->got);
    free(op);
    if (--c->nops == 0 && c->closing)
        client_release(c);
}

static void finish(S3Op *op, const Err *err) {
    if (op->finished)
        return;
    op->finished = 1;
    S3Client *c = op->c;
    if (op->prev)
        op->prev->next = op->next;
    else
        c->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->res.body = &op->got;
    /* the request body (an upload part: megabytes) goes now, not at the close a loop
     * turn later: the callback may start the next part, and memory must stay bounded */
    free(op->body);
    op->body = NULL;
    op->cb(&op->res, err, op->data);
    uv_timer_stop(&op->retry);
    uv_close((uv_handle_t *)&op->retry, on_op_closed);
}

static void attempt(S3Op *op);

static void on_retry_timer(uv_timer_t *t) {
    attempt(t->data);
}

static void retry_or_fail(S3Op *op, const Err *err) {
    S3Client *c = op->c;
    if (op->res.attempts >= c->max_attempts || c->closing || c->halted) {
        Err e = *err;
        err_prefix(&e, "after %d attempts", op->res.attempts);
        finish(op, &e);
        return;
    }
    Backoff b = {c->backoff_base_ms, c->backoff_max_ms, 0};
    uint64_t delay = backoff_delay_ms(&b, op->res.attempts);
    c->retries++;
    log_debug(NULL, "s3: %s %s: %s; attempt %d in %llu ms", op->method,
              op->key ? op->key : "(bucket)", err->msg, op->res.attempts + 1,
              (unsigned long long)delay);
    uv_timer_start(&op->retry, on_retry_timer, delay, 0);
}

/* ---- one attempt ---- */

static void on_done(HttpRequest *req, long status, const Err *err, void *data) {
    S3Op *op = data;
    S3Client *c = op->c;
    op->req = NULL;
    if (op->write && op->pinned_etag[0] == '\0' && (status == 200 || status == 206)) {
        const char *tag = http_request_header(req, "ETag");
        if (tag != NULL) {
            size_t n = strlen(tag);
            if (n >= 2 && tag[0] == '"')
                snprintf(op->pinned_etag, sizeof(op->pinned_etag), "%.*s", (int)(n - 2), tag + 1);
            else
                snprintf(op->pinned_etag, sizeof(op->pinned_etag), "%s", tag);
        }
    }
    op->res.status = status;
    op->res.code[0] = '\0';
    if (err != NULL || op->stopped) {
        if (op->stopped || err->code == ERR_CODE_CANCELLED || c->closing || c->halted) {
            Err e;
            err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: cancelled");
            finish(op, &e);
        } else {
            retry_or_fail(op, err);
        }
        return;
    }
    const char *len = http_request_header(req, "Content-Length");
    op->res.size = len ? strtoll(len, NULL, 10) : -1;
    const char *etag = http_request_header(req, "ETag");
    if (etag != NULL) {
        size_t n = strlen(etag);
        if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"')
            snprintf(op->res.etag, sizeof(op->res.etag), "%.*s", (int)(n - 2), etag + 1);
        else
            snprintf(op->res.etag, sizeof(op->res.etag), "%s", etag);
    }
    /* S3 can answer 200 and put the error in the body (CompleteMultipartUpload) */
    int error_inside = status == 200 && (strcmp(op->method, "POST") == 0 || op->copy_source) &&
                       root_is_error(http_request_body(req));
    if (status >= 200 && status < 300 && !error_inside) {
        const Buf *b = http_request_body(req);
        buf_reset(&op->got);
        if (b->len)
            buf_append(&op->got, b->data, b->len);
        finish(op, NULL);
        return;
    }
    char message[256];
    const Buf *ebody = op->write ? &op->got : http_request_body(req);
    xml_text(ebody, "Code", op->res.code, sizeof(op->res.code));
    xml_text(ebody, "Message", message, sizeof(message));
    if (op->write)
        buf_reset(&op->got);
    if (op->res.code[0] == '\0' && status == 403)
        snprintf(message, sizeof(message),
                 "check the access key, the secret and the bucket policy");
    if (op->res.code[0] == '\0') { /* HEAD answers carry no body */
        const char *name = status == 404   ? (op->key ? "NoSuchKey" : "NoSuchBucket")
                           : status == 403 ? "AccessDenied"
                           : status == 503 ? "SlowDown"
                                           : "HttpError";
        snprintf(op->res.code, sizeof(op->res.code), "%s", name);
    }
    if (strcmp(op->res.code, "RequestTimeTooSkewed") == 0) {
        const char *date = http_request_header(req, "Date");
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        if (date && strptime(date, "%a, %d %b %Y %H:%M:%S", &tm) != NULL) {
            c->clock_skew = (long)(timegm(&tm) - time(NULL));
            log_warn(NULL, "s3: our clock is %ld s off the server's; correcting", c->clock_skew);
        }
    }
    /* temporary keys that S3 no longer takes: fetch new ones and try again */
    int expired = aws_creds_temporary(c->creds) && (strcmp(op->res.code, "ExpiredToken") == 0 ||
                                                    strcmp(op->res.code, "InvalidToken") == 0);
    if (expired)
        aws_creds_refresh(c->creds);
    Err e;
    err_set(&e, s3_retryable(status, op->res.code) || expired ? ERR_RETRYABLE : ERR_PERMANENT,
            ERR_CODE_HTTP, "s3 %s %s: HTTP %ld %s%s%s", op->method, op->key ? op->key : c->bucket,
            status, op->res.code, message[0] ? ": " : "", message);
    if (e.kind == ERR_RETRYABLE)
        retry_or_fail(op, &e);
    else
        finish(op, &e);
}

/* Streamed GET: deliver each byte once across attempts. */
static size_t write_body(HttpRequest *req, const char *buf, size_t len, void *data) {
    S3Op *op = data;
    long status = http_request_status(req);
    if (status != 200 && status != 206) {
        /* an error document: keep it for the error message */
        if (op->got.len + len <= 64 * 1024)
            buf_append(&op->got, buf, len);
        return len;
    }
    if (!op->range_checked) {
        op->range_checked = 1;
        if (status == 200 && op->attempt_from > 0)
            op->skip = op->attempt_from; /* Range ignored: the whole object again */
    }
    size_t dropped = 0;
    if (op->skip > 0) {
        dropped = len < op->skip ? len : (size_t)op->skip;
        op->skip -= dropped;
        if (dropped == len)
            return len;
    }
    int r = op->write(op, buf + dropped, len - dropped, op->data);
    if (r == S3_PAUSE)
        return HTTP_PAUSE; /* curl calls again with the same bytes: nothing counted yet */
    if (r == S3_STOP) {
        op->stopped = 1;
        return 0; /* a short write: curl ends the transfer */
    }
    op->offset += len - dropped;
    return len;
}

/* The body streams from the op's own buffer: no copy per attempt. */
static size_t read_body(HttpRequest *req, char *buf, size_t len, void *data) {
    (void)req;
    S3Op *op = data;
    size_t n = op->len - op->body_off;
    if (n > len)
        n = len;
    memcpy(buf, op->body + op->body_off, n);
    op->body_off += n;
    return n;
}

/* What a request is, from its method and query (one place reads them). */
static int is_create_mpu(const S3Op *op) {
    return strcmp(op->method, "POST") == 0 && op->query && strcmp(op->query, "uploads") == 0;
}
static int is_part(const S3Op *op) {
    return strcmp(op->method, "PUT") == 0 && op->query && strstr(op->query, "partNumber=");
}
/* PutObject and CreateMultipartUpload create an object: server-side encryption applies there */
static int creates_object(const S3Op *op) {
    return (strcmp(op->method, "PUT") == 0 && op->query == NULL) || is_create_mpu(op);
}

/* Credentials for this attempt into ak, sk, tok: 1, or 0 when the attempt waits for them (the
 * first STS answer is on its way) or failed (the op retried or finished). */
static int attempt_credentials(S3Op *op, const char **ak, const char **sk, const char **tok) {
    S3Client *c = op->c;
    if (c->halted) {
        Err e;
        err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: cancelled (shutting down)");
        finish(op, &e);
        return 0;
    }
    int have = aws_creds_get(c->creds, ak, sk, tok);
    if (have == 0 && op->creds_waited_ms < CREDS_WAIT_MS) {
        /* wait without using an attempt */
        op->creds_waited_ms += 50;
        uv_timer_start(&op->retry, on_retry_timer, 50, 0);
        return 0;
    }
    op->res.attempts++;
    if (have != 1) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CONFIG, "s3: no AWS credentials: %s",
                aws_creds_error(c->creds));
        retry_or_fail(op, &e);
        return 0;
    }
    return 1;
}

/* Where: path-style puts the bucket in the path, virtual-hosted in the host. url gets the
 * scheme, host and encoded path (the query comes after signing). */
static void request_target(const S3Client *c, const S3Op *op, Buf *url, Buf *host, Buf *raw_path) {
    Buf aws = BUF_INIT;
    const char *base;
    if (c->endpoint) {
        base = strstr(c->endpoint, "://") + 3;
        buf_append(url, c->endpoint, (size_t)(base - c->endpoint));
    } else {
        buf_printf(&aws, "s3.%s.amazonaws.com", c->region);
        base = aws.data;
        buf_puts(url, "https://");
    }
    if (c->path_style) {
        buf_puts(host, base);
        if (op->key)
            buf_printf(raw_path, "/%s/%s", c->bucket, op->key);
        else
            buf_printf(raw_path, "/%s", c->bucket); /* no trailing slash: S3 signs "/bucket" */
    } else {
        buf_printf(host, "%s.%s", c->bucket, base);
        buf_printf(raw_path, "/%s", op->key ? op->key : "");
    }
    buf_puts(url, host->data);
    sigv4_encode_path(url, raw_path->data);
    buf_free(&aws);
}

/* The x-amz-* headers S3 requires signed, after Host (hdrs[0]); their number. */
static size_t signed_headers(const S3Client *c, const S3Op *op, SigV4Header *hdrs) {
    size_t n = 1;
    /* Integrity end to end: S3 checks each part against the SHA-256 we already computed for
     * the signature (one pass serves both), and the object records the algorithm. A
     * server-side copy sends no body: S3 computes the copy's SHA-256 (CopyObject answers it). */
    if (is_create_mpu(op) || (op->copy_source && !is_part(op)))
        hdrs[n++] = (SigV4Header){"x-amz-checksum-algorithm", "SHA256"};
    if ((is_part(op) || op->send_checksum) && !op->copy_source)
        hdrs[n++] = (SigV4Header){"x-amz-checksum-sha256", op->res.checksum_sha256};
    if (op->copy_source)
        hdrs[n++] = (SigV4Header){"x-amz-copy-source", op->copy_source};
    if (op->copy_range)
        hdrs[n++] = (SigV4Header){"x-amz-copy-source-range", op->copy_range};
    if (creates_object(op) && c->sse) {
        hdrs[n++] = (SigV4Header){"x-amz-server-side-encryption", c->sse};
        if (c->sse_kms_key_id)
            hdrs[n++] =
                (SigV4Header){"x-amz-server-side-encryption-aws-kms-key-id", c->sse_kms_key_id};
    }
    return n;
}

static struct curl_slist *add_header(struct curl_slist *list, Buf *line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static struct curl_slist *add_header(struct curl_slist *list, Buf *line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    buf_reset(line);
    buf_vprintf(line, fmt, ap);
    va_end(ap);
    return curl_slist_append(list, line->data);
}

/* The request's HTTP headers: the signature's, the signed ones, and the unsigned ones a read
 * that resumes (Range, If-Match) or a DeleteObjects (Content-MD5) needs. */
static struct curl_slist *http_headers(S3Op *op, const SigV4Result *sig, const char *tok,
                                       const SigV4Header *hdrs, size_t nhdrs) {
    struct curl_slist *list = NULL;
    Buf line = BUF_INIT;
    list = add_header(list, &line, "Authorization: %s", sig->authorization.data);
    list = add_header(list, &line, "x-amz-date: %s", sig->amz_date);
    list = add_header(list, &line, "x-amz-content-sha256: %s", op->payload_hash);
    if (tok)
        list = add_header(list, &line, "x-amz-security-token: %s", tok);
    if (op->content_type)
        list = add_header(list, &line, "Content-Type: %s", op->content_type);
    for (size_t i = 1; i < nhdrs; i++)
        list = add_header(list, &line, "%s: %s", hdrs[i].name, hdrs[i].value);
    if (op->write && op->offset > 0) { /* resume where the broken read stopped */
        list = add_header(list, &line, "Range: bytes=%llu-", (unsigned long long)op->offset);
        if (op->pinned_etag[0])
            list = add_header(list, &line, "If-Match: \"%s\"", op->pinned_etag);
    }
    if (op->content_md5) { /* DeleteObjects requires it */
        unsigned char md[16], b64[32];
        unsigned int mdlen = 0;
        EVP_Digest(op->body, op->len, md, &mdlen, EVP_md5(), NULL);
        EVP_EncodeBlock(b64, md, 16);
        list = add_header(list, &line, "Content-MD5: %s", b64);
    }
    memset(line.data, 0, line.len); /* it may have held the token */
    buf_free(&line);
    return list;
}

/* One attempt: credentials, target, signature, headers, then the transfer on the loop. */
static void attempt(S3Op *op) {
    S3Client *c = op->c;
    const char *ak = NULL, *sk = NULL, *tok = NULL;
    if (!attempt_credentials(op, &ak, &sk, &tok))
        return;
    Buf raw_path = BUF_INIT, url = BUF_INIT, host = BUF_INIT;
    request_target(c, op, &url, &host, &raw_path);
    SigV4Header hdrs[8] = {{"Host", host.data}};
    size_t nhdrs = signed_headers(c, op, hdrs);
    SigV4Credentials cred = {ak, sk, tok};
    SigV4Request r;
    memset(&r, 0, sizeof(r));
    r.method = op->method;
    r.path = raw_path.data;
    r.query = op->query;
    r.headers = hdrs;
    r.nheaders = nhdrs;
    r.payload_hash = op->payload_hash;
    r.region = c->region;
    r.service = "s3";
    r.now = time(NULL) + c->clock_skew;
    r.s3 = 1;
    r.add_content_sha256 = 1;
    SigV4Result sig;
    sigv4_sign_header(&r, &cred, &sig);
    if (op->query) {
        /* send the query exactly as signed: the canonical form, line 3 */
        const char *q = strchr(strchr(sig.canonical_request.data, '\n') + 1, '\n') + 1;
        buf_puts(&url, "?");
        buf_append(&url, q, strcspn(q, "\n"));
    }
    struct curl_slist *list = http_headers(op, &sig, tok, hdrs, nhdrs);
    op->attempt_from = op->offset;
    op->skip = 0;
    op->range_checked = 0;

    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.method = op->method;
    o.url = url.data;
    o.headers = list;
    if (op->body != NULL) {
        op->body_off = 0;
        o.read = read_body;
        o.body_size = (int64_t)op->len;
    }
    o.max_body = op->max_body;
    if (op->write)
        o.write = write_body;
    /* no total cap by default: a slow link that moves finishes; one that stops does not */
    o.low_speed_secs = c->stall_secs;
    o.connect_timeout_ms = c->connect_timeout_ms;
    o.timeout_ms = c->timeout_ms;
    o.ca_file = c->ca_file;
    o.done = on_done;
    o.data = op;
    Err err;
    err_clear(&err);
    op->req = http_request_start(c->http, &o, &err);

    curl_slist_free_all(list);
    sigv4_result_free(&sig);
    buf_free(&raw_path);
    buf_free(&url);
    buf_free(&host);
    if (op->req == NULL)
        retry_or_fail(op, &err);
}

static S3Op *op_new(S3Client *c, const char *method, const char *key, S3DoneCb cb, void *data) {
    S3Op *op = xcalloc(1, sizeof(*op));
    op->c = c;
    op->method = method;
    op->key = key ? xstrdup(key) : NULL;
    op->cb = cb;
    op->data = data;
    op->max_body = 1024 * 1024;
    op->res.size = -1;
    sigv4_sha256_hex("", 0, op->payload_hash);
    uv_timer_init(c->loop, &op->retry);
    op->retry.data = op;
    op->next = c->ops;
    if (c->ops)
        c->ops->prev = op;
    c->ops = op;
    c->nops++;
    return op;
}

/* Start on the next loop pass, so that cb never runs inside the caller. */
static void op_start(S3Op *op) {
    op->res.attempts = 0;
    uv_timer_start(&op->retry, on_retry_timer, 0, 0);
}

void s3_put_object(S3Client *c, const char *key, const void *body, size_t len,
                   const char *content_type, S3DoneCb cb, void *data) {
    S3Op *op = op_new(c, "PUT", key, cb, data);
    op->body = xmalloc(len);
    memcpy(op->body, body, len);
    op->len = len;
    op->content_type = content_type ? xstrdup(content_type) : NULL;
    sigv4_sha256_hex(body, len, op->payload_hash);
    op_start(op);
}

/* sha256_hex: the body's digest when the caller computed it already (off the loop), else NULL. */
static S3Op *request_op(S3Client *c, const char *method, const char *key, const char *query,
                        char *body, size_t len, const char *content_type, size_t max_body,
                        S3DoneCb cb, void *data, const char *sha256_hex) {
    S3Op *op = op_new(c, method, key, cb, data);
    op->query = query ? xstrdup(query) : NULL;
    op->body = body;
    op->len = len;
    op->content_type = content_type ? xstrdup(content_type) : NULL;
    if (max_body)
        op->max_body = max_body;
    if (sha256_hex)
        snprintf(op->payload_hash, sizeof(op->payload_hash), "%s", sha256_hex);
    else
        sigv4_sha256_hex(body ? body : "", body ? len : 0, op->payload_hash);
    hex_to_base64(op->payload_hash, op->res.checksum_sha256, sizeof(op->res.checksum_sha256));
    return op;
}

void s3_request(S3Client *c, const char *method, const char *key, const char *query, char *body,
                size_t len, const char *content_type, size_t max_body, S3DoneCb cb, void *data) {
    op_start(request_op(c, method, key, query, body, len, content_type, max_body, cb, data, NULL));
}

void s3_request_hashed(S3Client *c, const char *method, const char *key, const char *query,
                       char *body, size_t len, const char *sha256_hex, S3DoneCb cb, void *data) {
    op_start(request_op(c, method, key, query, body, len, NULL, 0, cb, data, sha256_hex));
}

void s3_put_hashed(S3Client *c, const char *key, char *body, size_t len, const char *content_type,
                   const char *sha256_hex, S3DoneCb cb, void *data) {
    S3Op *op = request_op(c, "PUT", key, NULL, body, len, content_type, 0, cb, data, sha256_hex);
    op->send_checksum = 1; /* S3 checks the object as it checks a part */
    op_start(op);
}

uv_loop_t *s3_client_loop(const S3Client *c) {
    return c->loop;
}

void s3_delete_objects_xml(S3Client *c, char *xml, size_t len, S3DoneCb cb, void *data) {
    S3Op *op = request_op(c, "POST", NULL, "delete", xml, len, "application/xml", 4u << 20, cb,
                          data, NULL);
    op->content_md5 = 1;
    op_start(op);
}

S3Op *s3_get_stream(S3Client *c, const char *key, S3WriteCb write, S3DoneCb cb, void *data) {
    S3Op *op = op_new(c, "GET", key, cb, data);
    op->write = write;
    op_start(op);
    return op;
}

void s3_copy(S3Client *c, const char *key, const char *query, const char *src_bucket,
             const char *src_key, const char *range, S3DoneCb cb, void *data) {
    S3Op *op = request_op(c, "PUT", key, query, NULL, 0, NULL, 0, cb, data, NULL);
    Buf src = BUF_INIT, raw = BUF_INIT;
    buf_printf(&raw, "/%s/%s", src_bucket, src_key);
    sigv4_encode_path(&src, raw.data); /* the key encoded as in a path: '/' stays */
    op->copy_source = xstrdup(src.data);
    op->copy_range = range ? xstrdup(range) : NULL;
    buf_free(&src);
    buf_free(&raw);
    op_start(op);
}

const char *s3_client_bucket(const S3Client *c) {
    return c->bucket;
}

const char *s3_client_endpoint(const S3Client *c) {
    return c->endpoint;
}

void s3_op_resume(S3Op *op) {
    if (op->req != NULL)
        http_request_resume(op->req);
}

void s3_get_object(S3Client *c, const char *key, size_t max_bytes, S3DoneCb cb, void *data) {
    S3Op *op = op_new(c, "GET", key, cb, data);
    op->max_body = max_bytes;
    op_start(op);
}

void s3_head_object(S3Client *c, const char *key, S3DoneCb cb, void *data) {
    op_start(op_new(c, "HEAD", key, cb, data));
}

void s3_delete_object(S3Client *c, const char *key, S3DoneCb cb, void *data) {
    op_start(op_new(c, "DELETE", key, cb, data));
}

void s3_head_bucket(S3Client *c, S3DoneCb cb, void *data) {
    op_start(op_new(c, "HEAD", NULL, cb, data));
}

uint64_t s3_client_retries(const S3Client *c) {
    return c->retries;
}

S3Client *s3_client_new(uv_loop_t *loop, HttpClient *http, const S3Options *o) {
    S3Client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->http = http;
    c->endpoint = o->endpoint ? xstrdup(o->endpoint) : NULL;
    c->region = xstrdup(o->region ? o->region : "us-east-1");
    c->bucket = xstrdup(o->bucket);
    AwsCredsOptions ao;
    memset(&ao, 0, sizeof(ao));
    ao.access_key = o->access_key;
    ao.secret_key = o->secret_key;
    ao.session_token = o->session_token;
    ao.token_file = o->web_identity_token_file;
    ao.role_arn = o->role_arn;
    ao.session_name = o->role_session_name;
    ao.sts_endpoint = o->sts_endpoint;
    ao.region = o->region;
    ao.ca_file = o->ca_file;
    c->creds = aws_creds_new(loop, http, &ao);
    c->sse = o->sse ? xstrdup(o->sse) : NULL;
    c->sse_kms_key_id = o->sse_kms_key_id ? xstrdup(o->sse_kms_key_id) : NULL;
    c->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
    c->path_style = o->path_style;
    c->max_attempts = o->max_attempts > 0 ? o->max_attempts : 5;
    c->backoff_base_ms = o->backoff_base_ms ? o->backoff_base_ms : 100;
    c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 0;
    c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
    c->stall_secs = o->stall_secs > 0 ? o->stall_secs : 30;
    return c;
}

void s3_client_halt(S3Client *c) {
    if (c == NULL || c->halted || c->closing)
        return;
    c->halted = 1;
    Err e;
    err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: cancelled (shutting down)");
    int n = 0;
    while (c->ops) { /* each callback may start another request: it fails on its first attempt */
        S3Op *op = c->ops;
        if (op->req) {
            HttpRequest *req = op->req;
            op->req = NULL;
            http_request_cancel(req);
        }
        finish(op, &e);
        n++;
    }
    if (n)
        log_info(NULL, "s3: %d request%s cancelled for shutdown", n, n == 1 ? "" : "s");
}

void s3_client_free(S3Client *c) {
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    Err e;
    err_set(&e, ERR_PERMANENT, ERR_CODE_CANCELLED, "s3: client closed");
    while (c->ops) {
        S3Op *op = c->ops;
        if (op->req) {
            HttpRequest *req = op->req;
            op->req = NULL;
            http_request_cancel(req); /* its done callback comes later: finish now */
        }
        finish(op, &e);
    }
    aws_creds_free(c->creds);
    if (c->nops == 0)
        client_release(c);
}
