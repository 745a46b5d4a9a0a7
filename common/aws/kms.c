/* kms: GenerateDataKey, Decrypt and Encrypt on the loop (see kms.h). */
#include "aws/kms.h"
#include "base/backoff.h"

#include "base/json.h"
#include "aws/sigv4.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CREDS_WAIT_MS 5000

typedef struct Op Op;

struct KmsClient {
    uv_loop_t *loop;
    HttpClient *http;
    AwsCreds *creds;
    char *url, *host, *region, *ca_file;
    long timeout_ms;
    int max_attempts;
    Op *ops; /* in flight, for kms_client_free */
    int closing, nops;
};

struct Op {
    KmsClient *c;
    Op *next, *prev;
    const char *target; /* GenerateDataKey, Decrypt, Encrypt */
    Buf body;
    KmsDoneCb cb;
    void *data;
    int attempts, creds_waited_ms, done;
    HttpRequest *req;
    uv_timer_t retry;
};

static void client_maybe_free(KmsClient *c) {
    if (!c->closing || c->nops > 0)
        return;
    aws_creds_free(c->creds);
    free(c->url);
    free(c->host);
    free(c->region);
    free(c->ca_file);
    free(c);
}

static void on_op_closed(uv_handle_t *h) {
    Op *op = h->data;
    KmsClient *c = op->c;
    crypt_wipe(op->body.data, op->body.len); /* Encrypt's body holds a data key */
    buf_free(&op->body);
    free(op);
    c->nops--;
    client_maybe_free(c);
}

/* The outcome, once; then the op goes. */
static void finish(Op *op, const KmsResult *res, const Err *err) {
    if (op->done)
        return;
    op->done = 1;
    KmsClient *c = op->c;
    if (op->prev)
        op->prev->next = op->next;
    else
        c->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->cb(res, err, op->data);
    uv_close((uv_handle_t *)&op->retry, on_op_closed);
}

static void failf(Op *op, ErrKind kind, ErrCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void failf(Op *op, ErrKind kind, ErrCode code, const char *fmt, ...) {
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    Err e;
    err_set(&e, kind, code, "kms %s: %s", op->target, msg);
    finish(op, NULL, &e);
}

static void send_op(Op *op);

static void on_retry(uv_timer_t *t) {
    send_op(t->data);
}

static void retry_or_fail(Op *op, const char *why) {
    if (op->attempts < op->c->max_attempts && !op->c->closing) {
        Backoff b = {200, 5000, 0.5};
        uv_timer_start(&op->retry, on_retry, backoff_delay_ms(&b, op->attempts), 0);
        return;
    }
    failf(op, ERR_RETRYABLE, ERR_CODE_HTTP, "%s (after %d attempts)", why, op->attempts);
}

/* A base64 field of the answer, "\/" unescaped (JSON writers may escape '/'). */
static int b64_field(const char *json, size_t len, const char *name, char *out, size_t outsz) {
    if (json_field(json, len, name, out, outsz) != 0)
        return -1;
    char *w = out;
    for (const char *r = out; *r; r++)
        if (!(r[0] == '\\' && r[1] == '/'))
            *w++ = *r;
    *w = 0;
    return 0;
}

static void on_http(HttpRequest *req, long status, const Err *err, void *data) {
    Op *op = data;
    op->req = NULL;
    if (err && err->code == ERR_CODE_CANCELLED) {
        failf(op, ERR_PERMANENT, ERR_CODE_CANCELLED, "%s", "cancelled");
        return;
    }
    if (err) {
        retry_or_fail(op, err->msg);
        return;
    }
    const Buf *b = http_request_body(req);
    const char *j = b->data ? b->data : "";
    size_t n = b->len;
    if (status != 200) {
        char type[128] = "", msg[512] = "", why[700];
        json_field(j, n, "__type", type, sizeof(type));
        json_field(j, n, "message", msg, sizeof(msg));
        if (msg[0] == 0)
            json_field(j, n, "Message", msg, sizeof(msg));
        const char *t = strrchr(type, '#') ? strrchr(type, '#') + 1 : type;
        snprintf(why, sizeof(why), "HTTP %ld %s%s%s", status, t, msg[0] ? ": " : "", msg);
        if (status >= 500 || status == 429 || strstr(t, "Throttling") ||
            strstr(t, "LimitExceeded")) {
            retry_or_fail(op, why);
            return;
        }
        failf(op, ERR_PERMANENT, ERR_CODE_CONFIG, "%s", why);
        return;
    }
    KmsResult res;
    memset(&res, 0, sizeof(res));
    char plain[128] = "";
    json_field(j, n, "KeyId", res.key_arn, sizeof(res.key_arn));
    int want_plain = strcmp(op->target, "Encrypt") != 0;
    int want_blob = strcmp(op->target, "Decrypt") != 0;
    int ok = 1;
    if (want_blob && (b64_field(j, n, "CiphertextBlob", res.wrapped, sizeof(res.wrapped)) != 0 ||
                      res.wrapped[0] == 0))
        ok = 0;
    if (want_plain &&
        (b64_field(j, n, "Plaintext", plain, sizeof(plain)) != 0 ||
         crypt_b64_decode(plain, strlen(plain), res.dek, sizeof(res.dek)) != CRYPT_KEY_LEN))
        ok = 0;
    crypt_wipe(plain, sizeof(plain));
    if (!ok) {
        failf(op, ERR_PERMANENT, ERR_CODE_PROTOCOL, "%s", "an answer without a 32-byte key");
        crypt_wipe(&res, sizeof(res));
        return;
    }
    finish(op, &res, NULL);
    crypt_wipe(&res, sizeof(res));
}

static void send_op(Op *op) {
    KmsClient *c = op->c;
    if (c->closing) {
        failf(op, ERR_PERMANENT, ERR_CODE_CANCELLED, "%s", "cancelled");
        return;
    }
    const char *ak = NULL, *sk = NULL, *tok = NULL;
    int have = aws_creds_get(c->creds, &ak, &sk, &tok);
    if (have == 0 && op->creds_waited_ms < CREDS_WAIT_MS) { /* the first STS answer is coming */
        op->creds_waited_ms += 50;
        uv_timer_start(&op->retry, on_retry, 50, 0);
        return;
    }
    op->attempts++;
    if (have != 1) {
        retry_or_fail(op, "no AWS credentials");
        return;
    }
    char target[64], hash[65];
    snprintf(target, sizeof(target), "TrentService.%s", op->target);
    sigv4_sha256_hex(op->body.data, op->body.len, hash);
    SigV4Header hdrs[] = {{"Host", c->host},
                          {"Content-Type", "application/x-amz-json-1.1"},
                          {"X-Amz-Target", target}};
    SigV4Credentials cred = {ak, sk, tok};
    SigV4Request r;
    memset(&r, 0, sizeof(r));
    r.method = "POST";
    r.path = "/";
    r.headers = hdrs;
    r.nheaders = 3;
    r.payload_hash = hash;
    r.region = c->region;
    r.service = "kms";
    r.now = time(NULL);
    SigV4Result sig;
    sigv4_sign_header(&r, &cred, &sig);
    struct curl_slist *list = NULL;
    Buf line = BUF_INIT;
    buf_printf(&line, "Authorization: %s", sig.authorization.data);
    list = curl_slist_append(list, line.data);
    buf_reset(&line);
    buf_printf(&line, "X-Amz-Date: %s", sig.amz_date);
    list = curl_slist_append(list, line.data);
    buf_reset(&line);
    buf_printf(&line, "X-Amz-Target: %s", target);
    list = curl_slist_append(list, line.data);
    list = curl_slist_append(list, "Content-Type: application/x-amz-json-1.1");
    if (tok) {
        buf_reset(&line);
        buf_printf(&line, "X-Amz-Security-Token: %s", tok);
        list = curl_slist_append(list, line.data);
    }
    buf_free(&line);
    sigv4_result_free(&sig);
    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.method = "POST";
    o.url = c->url;
    o.headers = list;
    o.body = op->body.data;
    o.body_len = op->body.len;
    o.max_body = 64 * 1024;
    o.timeout_ms = c->timeout_ms;
    o.connect_timeout_ms = c->timeout_ms;
    o.ca_file = c->ca_file;
    o.done = on_http;
    o.data = op;
    Err e;
    op->req = http_request_start(c->http, &o, &e);
    curl_slist_free_all(list);
    if (op->req == NULL)
        retry_or_fail(op, e.msg);
}

static void start(KmsClient *c, const char *target, Buf *body, KmsDoneCb cb, void *data) {
    Op *op = xcalloc(1, sizeof(*op));
    op->c = c;
    op->target = target;
    op->body = *body;
    op->cb = cb;
    op->data = data;
    uv_timer_init(c->loop, &op->retry);
    op->retry.data = op;
    op->next = c->ops;
    if (c->ops)
        c->ops->prev = op;
    c->ops = op;
    c->nops++;
    send_op(op);
}

static void put(Buf *b, const char *name, const char *v) {
    buf_printf(b, "\"%s\":\"", name);
    buf_json_escape(b, v, strlen(v));
    buf_puts(b, "\"");
}

/* ,"EncryptionContext":{"user_id":...,"backup_id":...} */
static void context(Buf *b, const char *user_id, const char *backup_id) {
    buf_puts(b, ",\"EncryptionContext\":{");
    put(b, "user_id", user_id);
    buf_puts(b, ",");
    put(b, "backup_id", backup_id);
    buf_puts(b, "}");
}

void kms_generate_data_key(KmsClient *c, const char *key_id, const char *user_id,
                           const char *backup_id, KmsDoneCb cb, void *data) {
    Buf b = BUF_INIT;
    buf_puts(&b, "{");
    put(&b, "KeyId", key_id);
    buf_puts(&b, ",\"KeySpec\":\"AES_256\"");
    context(&b, user_id, backup_id);
    buf_puts(&b, "}");
    start(c, "GenerateDataKey", &b, cb, data);
}

void kms_decrypt(KmsClient *c, const char *wrapped, const char *user_id, const char *backup_id,
                 KmsDoneCb cb, void *data) {
    Buf b = BUF_INIT;
    buf_puts(&b, "{");
    put(&b, "CiphertextBlob", wrapped);
    context(&b, user_id, backup_id);
    buf_puts(&b, "}");
    start(c, "Decrypt", &b, cb, data);
}

void kms_encrypt(KmsClient *c, const char *key_id, const unsigned char dek[CRYPT_KEY_LEN],
                 const char *user_id, const char *backup_id, KmsDoneCb cb, void *data) {
    Buf b = BUF_INIT;
    buf_puts(&b, "{");
    put(&b, "KeyId", key_id);
    buf_puts(&b, ",\"Plaintext\":\"");
    crypt_b64_encode(dek, CRYPT_KEY_LEN, &b);
    buf_puts(&b, "\"");
    context(&b, user_id, backup_id);
    buf_puts(&b, "}");
    start(c, "Encrypt", &b, cb, data);
}

KmsClient *kms_client_new(uv_loop_t *loop, HttpClient *http, const KmsOptions *o) {
    KmsClient *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->http = http;
    c->region = xstrdup(o->region ? o->region : "us-east-1");
    Buf u = BUF_INIT;
    if (o->endpoint)
        buf_printf(&u, "%s/", o->endpoint);
    else
        buf_printf(&u, "https://kms.%s.amazonaws.com/", c->region);
    c->url = buf_steal(&u);
    const char *h = strstr(c->url, "://") + 3;
    c->host = xstrdup(h);
    c->host[strcspn(c->host, "/")] = 0;
    c->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    c->max_attempts = o->max_attempts > 0 ? o->max_attempts : 4;
    c->creds = aws_creds_new(loop, http, &o->creds);
    return c;
}

void kms_client_free(KmsClient *c) {
    if (c == NULL)
        return;
    c->closing = 1;
    for (Op *op = c->ops, *next; op; op = next) {
        next = op->next;
        if (op->req)
            http_request_cancel(op->req); /* on_http fails it */
        else {
            uv_timer_stop(&op->retry);
            failf(op, ERR_PERMANENT, ERR_CODE_CANCELLED, "%s", "cancelled");
        }
    }
    client_maybe_free(c);
}
