/*
 * awscreds: static keys, or STS AssumeRoleWithWebIdentity kept fresh (see awscreds.h).
 */
#define _DEFAULT_SOURCE /* timegm */
#include "aws/awscreds.h"
#include "base/buf.h"
#include "base/log.h"
#include "aws/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_MAX    (64 * 1024)
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 60000

struct AwsCreds {
    uv_loop_t *loop;
    HttpClient *http;
    char *ak, *sk, *tok; /* current keys (owned) */
    char *token_file, *role_arn, *session_name, *sts_url, *ca_file;
    int duration_s;
    int web;
    int state; /* 1 ok, 0 first answer pending, -1 failing */
    time_t expires;
    char error[256];
    uv_timer_t timer;
    HttpRequest *req;
    unsigned retry_ms;
    int closing, timer_closed;
};

static void fetch(AwsCreds *c);

static void wipe(char *s) {
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

static void maybe_release(AwsCreds *c) {
    if (!c->closing || c->req || !c->timer_closed)
        return;
    wipe(c->ak);
    wipe(c->sk);
    wipe(c->tok);
    free(c->token_file);
    free(c->role_arn);
    free(c->session_name);
    free(c->sts_url);
    free(c->ca_file);
    free(c);
}

/* Text of <tag>...</tag> in body, copied; NULL if absent. */
static char *tag(const char *body, const char *name) {
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", name);
    snprintf(close, sizeof(close), "</%s>", name);
    const char *s = strstr(body, open);
    if (s == NULL)
        return NULL;
    s += strlen(open);
    const char *e = strstr(s, close);
    if (e == NULL)
        return NULL;
    char *v = xmalloc((size_t)(e - s) + 1);
    memcpy(v, s, (size_t)(e - s));
    v[e - s] = '\0';
    return v;
}

static time_t parse_iso(const char *s) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return (time_t)-1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

static void on_timer(uv_timer_t *t) {
    fetch(t->data);
}

static void schedule(AwsCreds *c, uint64_t ms) {
    if (!c->closing)
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void failed(AwsCreds *c, const char *fmt, const char *detail) {
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, detail);
    if (strcmp(msg, c->error) != 0) /* once per distinct failure, not per retry */
        log_warn(NULL, "AWS credentials: %s; retrying", msg);
    snprintf(c->error, sizeof(c->error), "%s", msg);
    /* old keys stay in use while they are valid */
    if (c->state != 1 || time(NULL) >= c->expires)
        c->state = -1;
    schedule(c, c->retry_ms);
    c->retry_ms = c->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->retry_ms * 2;
}

static void on_sts(HttpRequest *req, long status, const Err *err, void *data) {
    AwsCreds *c = data;
    c->req = NULL;
    if (c->closing) {
        maybe_release(c);
        return;
    }
    const Buf *b = http_request_body(req);
    const char *body = b && b->data ? b->data : "";
    if (err) {
        failed(c, "STS unreachable: %s", err->msg);
        return;
    }
    char *ak = tag(body, "AccessKeyId"), *sk = tag(body, "SecretAccessKey");
    char *tok = tag(body, "SessionToken"), *exp = tag(body, "Expiration");
    time_t expires = exp ? parse_iso(exp) : (time_t)-1;
    free(exp);
    if (status != 200 || !ak || !sk || !tok || expires == (time_t)-1) {
        char *code = tag(body, "Code"), *message = tag(body, "Message");
        char detail[200];
        snprintf(detail, sizeof(detail), "HTTP %ld %s%s%.120s", status, code ? code : "no keys",
                 message ? ": " : "", message ? message : "");
        free(code);
        free(message);
        wipe(ak);
        wipe(sk);
        wipe(tok);
        failed(c, "AssumeRoleWithWebIdentity failed: %s", detail);
        return;
    }
    int first = c->state != 1;
    wipe(c->ak);
    wipe(c->sk);
    wipe(c->tok);
    c->ak = ak;
    c->sk = sk;
    c->tok = tok;
    c->expires = expires;
    c->state = 1;
    c->error[0] = '\0';
    c->retry_ms = RETRY_MIN_MS;
    long life = (long)(expires - time(NULL));
    long at = life > 600 ? life - 300 : life / 2;
    if (at < 5)
        at = 5;
    /* the key id is not secret (it appears in every request); logged to trace roles */
    log_info(NULL, "AWS credentials %s for %s: key %.8s..., valid %ld s, refresh in %ld s",
             first ? "obtained" : "refreshed", c->role_arn, c->ak, life, at);
    schedule(c, (uint64_t)at * 1000);
}

static void fetch(AwsCreds *c) {
    if (c->closing || c->req)
        return;
    /* a small file on a local volume (the projected token): read it in place */
    FILE *f = fopen(c->token_file, "r");
    if (f == NULL) {
        failed(c, "cannot read AWS_WEB_IDENTITY_TOKEN_FILE %s", c->token_file);
        return;
    }
    char *token = xmalloc(TOKEN_MAX + 1);
    size_t n = fread(token, 1, TOKEN_MAX, f);
    fclose(f);
    while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' '))
        n--;
    token[n] = '\0';
    if (n == 0) {
        free(token);
        failed(c, "AWS_WEB_IDENTITY_TOKEN_FILE %s is empty", c->token_file);
        return;
    }
    Buf body = BUF_INIT;
    buf_puts(&body, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=");
    sigv4_encode(&body, c->role_arn, strlen(c->role_arn));
    buf_puts(&body, "&RoleSessionName=");
    sigv4_encode(&body, c->session_name, strlen(c->session_name));
    buf_printf(&body, "&DurationSeconds=%d&WebIdentityToken=", c->duration_s);
    sigv4_encode(&body, token, n);
    memset(token, 0, n);
    free(token);

    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    h = curl_slist_append(h, "Accept: application/xml");
    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.method = "POST";
    o.url = c->sts_url;
    o.headers = h;
    o.body = body.data;
    o.body_len = body.len;
    o.max_body = 64 * 1024;
    o.timeout_ms = 30000;
    o.ca_file = c->ca_file;
    o.done = on_sts;
    o.data = c;
    Err err;
    c->req = http_request_start(c->http, &o, &err);
    curl_slist_free_all(h);
    memset(body.data, 0, body.len); /* held the token */
    buf_free(&body);
    if (c->req == NULL)
        failed(c, "cannot start the STS request: %s", err.msg);
}

AwsCreds *aws_creds_new(uv_loop_t *loop, HttpClient *http, const AwsCredsOptions *o) {
    AwsCreds *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->http = http;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->retry_ms = RETRY_MIN_MS;
    if (o->token_file && o->role_arn) {
        c->web = 1;
        c->token_file = xstrdup(o->token_file);
        c->role_arn = xstrdup(o->role_arn);
        c->session_name = xstrdup(o->session_name ? o->session_name : "backup-worker");
        c->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
        c->duration_s = o->duration_s > 0 ? o->duration_s : 3600;
        if (o->sts_endpoint) {
            c->sts_url = xstrdup(o->sts_endpoint);
        } else {
            Buf u = BUF_INIT;
            buf_printf(&u, "https://sts.%s.amazonaws.com/", o->region ? o->region : "us-east-1");
            c->sts_url = buf_steal(&u);
        }
        fetch(c);
    } else {
        c->ak = xstrdup(o->access_key ? o->access_key : "");
        c->sk = xstrdup(o->secret_key ? o->secret_key : "");
        c->tok = o->session_token ? xstrdup(o->session_token) : NULL;
        c->state = 1;
    }
    return c;
}

static void on_timer_closed(uv_handle_t *h) {
    AwsCreds *c = h->data;
    c->timer_closed = 1;
    maybe_release(c);
}

void aws_creds_free(AwsCreds *c) {
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (c->req)
        http_request_cancel(c->req); /* on_sts releases */
}

int aws_creds_get(AwsCreds *c, const char **access_key, const char **secret_key,
                  const char **session_token) {
    if (c->state != 1)
        return c->state;
    *access_key = c->ak;
    *secret_key = c->sk;
    *session_token = c->tok;
    return 1;
}

const char *aws_creds_error(const AwsCreds *c) {
    return c->error[0] ? c->error : "waiting for STS";
}

void aws_creds_refresh(AwsCreds *c) {
    if (!c->web || c->closing || c->req)
        return;
    uv_timer_stop(&c->timer);
    fetch(c);
}

int aws_creds_temporary(const AwsCreds *c) {
    return c->web;
}
