/*
 * test_s3fault: the S3 client through tests/faultproxy.js, in front of the
 * real S3 servers. Scheduled 503 SlowDown, 500, 429, a 200 carrying an error,
 * reset connections and a stalled answer: uploads and downloads still come
 * out byte-exact, and no retried request reuses a signature. With every
 * UploadPart failing, the upload fails with S3's code and its multipart
 * upload is aborted, leaving no parts (checked on moto, which implements
 * ListMultipartUploads and AbortMultipartUpload; s3rver does neither).
 * HTTPS with a private CA: trusted through the CA file, refused without it.
 */
#define _GNU_SOURCE /* strcasestr */
#include "testutil.h"
#include "aws/awscreds.h"
#include "aws/s3upload.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PART (5u * 1024 * 1024)

typedef struct {
    pid_t pid;
    int port;
    char url[64];
} Proxy;

static Proxy *running;

/* Start the proxy in front of host:port and read the port it listens on; with cert
 * and key it speaks HTTPS. */
static void proxy_start_tls(Proxy *p, const char *upstream_url, const char *cert, const char *key) {
    char host[64];
    int uport = 0;
    assert_int_equal(sscanf(upstream_url, "http://%63[^:]:%d", host, &uport), 2);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a failed assertion must not leave it running */
        dup2(fds[1], 1);
        close(fds[0]);
        if (cert) {
            setenv("FAULTPROXY_TLS_CERT", cert, 1);
            setenv("FAULTPROXY_TLS_KEY", key, 1);
        }
        char port[16];
        snprintf(port, sizeof(port), "%d", uport);
        execlp("node", "node", FAULTPROXY_JS, host, port, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    running = p;
    FILE *f = fdopen(fds[0], "r");
    char line[128] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_int_equal(sscanf(line, "listening %d", &p->port), 1);
    snprintf(p->url, sizeof(p->url), "%s://127.0.0.1:%d", cert ? "https" : "http", p->port);
}

static void proxy_start(Proxy *p, const char *upstream_url) {
    proxy_start_tls(p, upstream_url, NULL, NULL);
}

static void proxy_stop(Proxy *p) {
    kill(p->pid, SIGTERM);
    waitpid(p->pid, NULL, 0);
    running = NULL;
}

/* After each test, also a failed one: stop a proxy still running. */
static int teardown(void **state) {
    (void)state;
    if (running)
        proxy_stop(running);
    return 0;
}

/* POST a control body to the proxy (curl: the test's own client stays out of it). */
static void proxy_ctl(const Proxy *p, const char *path, const char *body) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "curl -sf -o /dev/null -X POST --data-binary '%s' %s%s", body,
             p->url, path);
    assert_int_equal(system(cmd), 0);
}

/* The proxy's /__stats JSON, as text. */
static void proxy_stats_text(const Proxy *p, char *buf, size_t len) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "curl -sf %s/__stats", p->url);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    buf[0] = '\0';
    assert_non_null(fgets(buf, (int)len, f));
    pclose(f);
}

static void proxy_stats(const Proxy *p, int *requests, int *faults, int *reused, int *stale) {
    char buf[512];
    proxy_stats_text(p, buf, sizeof(buf));
    assert_int_equal(
        sscanf(buf, "{\"requests\":%d,\"faults\":%d,\"reused_signatures\":%d,\"stale_dates\":%d,",
               requests, faults, reused, stale),
        4);
}

typedef TuS3 Env;

static void env_open(Env *e, const char *endpoint, const char *access, const char *secret,
                     int attempts, long timeout_ms) {
    S3Options o;
    tu_s3_options(&o);
    o.endpoint = endpoint;
    if (access) {
        o.access_key = access;
        o.secret_key = secret;
    }
    o.max_attempts = attempts;
    o.backoff_base_ms = 5;
    o.backoff_max_ms = 50;
    o.timeout_ms = timeout_ms;
    tu_s3_open(e, &o);
}

static void env_close(Env *e) {
    tu_s3_close(e);
}

typedef struct {
    uint64_t total, pos;
    int done;
    Err err;
    char sha[65];
    long status;
    char code[64];
} Producer;

static void produce(S3Upload *u, void *data) {
    Producer *p = data;
    unsigned char chunk[64 * 1024];
    while (p->pos < p->total) {
        size_t n = sizeof(chunk);
        if (n > p->total - p->pos)
            n = (size_t)(p->total - p->pos);
        tu_pattern(chunk, p->pos, n);
        p->pos += n;
        int r = s3_upload_write(u, chunk, n);
        if (r <= 0)
            return;
    }
    s3_upload_finish(u);
}

static void on_uploaded(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                        const Err *err, void *data) {
    (void)bytes;
    Producer *p = data;
    s3_upload_free(u);
    p->done = 1;
    err_clear(&p->err);
    if (err)
        p->err = *err;
    if (sha256)
        snprintf(p->sha, sizeof(p->sha), "%s", sha256);
    p->status = res ? res->status : 0;
    snprintf(p->code, sizeof(p->code), "%s", res ? res->code : "");
}

static void upload(Env *e, const char *key, uint64_t total, Producer *p) {
    memset(p, 0, sizeof(*p));
    p->total = total;
    S3Upload *u =
        s3_upload_new(e->s3, key, "application/octet-stream", PART, 2, produce, on_uploaded, p);
    produce(u, p);
    assert_true(tu_run_until(&e->loop, &p->done, 60000));
}

typedef struct {
    uint64_t pos;
    int mismatches;
    int done;
    Err err;
    int attempts;
} Reader;

static int on_bytes(S3Op *op, const char *buf, size_t len, void *data) {
    (void)op;
    Reader *r = data;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] != tu_pattern_byte(r->pos + i))
            r->mismatches++;
    r->pos += len;
    return 0;
}

static void on_read_done(const S3Result *res, const Err *err, void *data) {
    Reader *r = data;
    r->done = 1;
    err_clear(&r->err);
    if (err)
        r->err = *err;
    r->attempts = res ? res->attempts : 0;
}

static void test_faults_on_every_kind_of_request(void **state) {
    (void)state;
    Proxy px;
    proxy_start(&px, tu_env("S3_ENDPOINT"));
    proxy_ctl(&px, "/__clear", "");
    /* CreateMultipartUpload, three UploadParts, CompleteMultipartUpload: each kind hit */
    proxy_ctl(&px, "/__plan",
              "POST~uploads:503:1,PUT:503:1,PUT:500:1,PUT:reset:1,PUT:429:1,"
              "POST~uploadId=:200err:1");
    Env e;
    env_open(&e, px.url, NULL, NULL, 6, 5000);
    char key[96];
    snprintf(key, sizeof(key), "test-fault-%d/big.bin", (int)getpid());
    Producer p;
    uint64_t total = 2 * (uint64_t)PART + 123457;
    upload(&e, key, total, &p);
    if (err_is_set(&p.err))
        fail_msg("upload failed: %s", p.err.msg);
    int requests, faults, reused, stale;
    proxy_stats(&px, &requests, &faults, &reused, &stale);
    assert_int_equal(faults, 6);
    assert_true(requests >= 5 + 6);
    assert_int_equal(reused, 0); /* every retry signed again */
    assert_int_equal(stale, 0);

    /* read it back through resets and a 503: resumed with Range, byte-exact */
    proxy_ctl(&px, "/__plan", "GET:reset:2,GET:503:1");
    Reader r;
    memset(&r, 0, sizeof(r));
    s3_get_stream(e.s3, key, on_bytes, on_read_done, &r);
    assert_true(tu_run_until(&e.loop, &r.done, 60000));
    if (err_is_set(&r.err))
        fail_msg("download failed: %s", r.err.msg);
    assert_int_equal(r.pos, total);
    assert_int_equal(r.mismatches, 0);
    proxy_stats(&px, &requests, &faults, &reused, &stale);
    assert_int_equal(faults, 9);
    assert_int_equal(reused, 0);
    assert_int_equal(stale, 0);
    env_close(&e);
    proxy_stop(&px);
}

static void on_put(const S3Result *res, const Err *err, void *data) {
    Reader *r = data;
    r->done = 1;
    err_clear(&r->err);
    if (err)
        r->err = *err;
    r->attempts = res->attempts;
}

static void test_stalled_answer_times_out_and_retries(void **state) {
    (void)state;
    Proxy px;
    proxy_start(&px, tu_env("S3_ENDPOINT"));
    proxy_ctl(&px, "/__plan", "PUT:stall:1");
    Env e;
    env_open(&e, px.url, NULL, NULL, 3, 1200);
    Reader r;
    memset(&r, 0, sizeof(r));
    uint64_t t0 = uv_hrtime();
    s3_put_object(e.s3, "test-fault/stall.txt", "hello", 5, "text/plain", on_put, &r);
    assert_true(tu_run_until(&e.loop, &r.done, 20000));
    if (err_is_set(&r.err))
        fail_msg("put failed: %s", r.err.msg);
    assert_int_equal(r.attempts, 2);
    assert_true(uv_hrtime() - t0 >= 1100u * 1000000u); /* the first attempt waited its timeout */
    /* the retry came more than a second later: a re-used signature would show here */
    int requests, faults, reused, stale;
    proxy_stats(&px, &requests, &faults, &reused, &stale);
    assert_int_equal(requests, 2);
    assert_int_equal(faults, 1);
    assert_int_equal(reused, 0);
    assert_int_equal(stale, 0);
    env_close(&e);
    proxy_stop(&px);
}

/* A server whose clock is ahead: the client learns the offset from its Date and signs again. */
static void test_clock_skew_is_corrected(void **state) {
    (void)state;
    Proxy px;
    proxy_start(&px, tu_env("S3_ENDPOINT"));
    proxy_ctl(&px, "/__plan", "PUT:skew:1");
    Env e;
    env_open(&e, px.url, NULL, NULL, 3, 5000);
    Reader r;
    memset(&r, 0, sizeof(r));
    s3_put_object(e.s3, "test-fault/skew.txt", "tick", 4, "text/plain", on_put, &r);
    assert_true(tu_run_until(&e.loop, &r.done, 20000));
    if (err_is_set(&r.err))
        fail_msg("put failed: %s", r.err.msg);
    assert_int_equal(r.attempts, 2);
    char stats[512];
    proxy_stats_text(&px, stats, sizeof(stats));
    const char *ahead = strstr(stats, "\"max_ahead_s\":");
    assert_non_null(ahead);
    int secs = atoi(ahead + strlen("\"max_ahead_s\":"));
    if (secs < 295 || secs > 305)
        fail_msg("retry signed %d s ahead, expected about 300: %s", secs, stats);
    env_close(&e);
    proxy_stop(&px);
}

/* Multipart uploads moto still holds under prefix (its ListMultipartUploads, unsigned). */
static int moto_uploads(const char *moto, const char *bucket, const char *prefix) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "curl -sf '%s/%s?uploads&prefix=%s' | grep -o '<UploadId>' | wc -l",
             moto, bucket, prefix);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    int n = -1;
    assert_int_equal(fscanf(f, "%d", &n), 1);
    pclose(f);
    return n;
}

static void test_persistent_failure_aborts_and_leaves_nothing(void **state) {
    (void)state;
    const char *moto = tu_env("BW_MOTO_ENDPOINT");
    Proxy px;
    proxy_start(&px, moto);
    proxy_ctl(&px, "/__always", "PUT:503"); /* every UploadPart, every attempt */
    Env e;
    env_open(&e, px.url, "testing", "testing", 3, 5000);
    char prefix[64], key[96];
    snprintf(prefix, sizeof(prefix), "test-abort-%d", (int)getpid());
    snprintf(key, sizeof(key), "%s/doomed.bin", prefix);
    Producer p;
    upload(&e, key, PART + 1000, &p);
    assert_true(err_is_set(&p.err));
    if (strstr(p.err.msg, "SlowDown") == NULL)
        fail_msg("error does not name S3's code: %s", p.err.msg);
    assert_int_equal(moto_uploads(moto, tu_env("S3_BUCKET"), prefix), 0);

    /* the control: without faults the same upload works, and the check can see uploads */
    proxy_ctl(&px, "/__always", "");
    upload(&e, key, PART + 1000, &p);
    assert_false(err_is_set(&p.err));
    env_close(&e);
    proxy_stop(&px);
}

/* The caller owns an upload until s3_upload_free, whatever S3 answered: a producer still
 * holding a chunk after a permanent error writes into a live struct and is told -1 (the
 * hardening issue's use-after-free: the struct used to free itself on a final error). */
static void on_kept(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                    const Err *err, void *data) {
    (void)u;
    (void)res;
    (void)sha256;
    (void)bytes;
    Producer *p = data;
    p->done++;
    err_clear(&p->err);
    if (err)
        p->err = *err;
}

static void test_a_failed_upload_stays_the_callers(void **state) {
    (void)state;
    Proxy px;
    proxy_start(&px, tu_env("S3_ENDPOINT"));
    proxy_ctl(&px, "/__plan", "PUT~partNumber=2:403:1");
    Env e;
    env_open(&e, px.url, NULL, NULL, 3, 5000);
    char key[96];
    snprintf(key, sizeof(key), "test-owned-%d/denied.bin", (int)getpid());
    Producer p;
    memset(&p, 0, sizeof(p));
    p.total = 3 * (uint64_t)PART;
    S3Upload *u = s3_upload_new(e.s3, key, NULL, PART, 1, produce, on_kept, &p);
    produce(u, &p);
    assert_true(tu_run_until(&e.loop, &p.done, 60000));
    if (strstr(p.err.msg, "AccessDenied") == NULL)
        fail_msg("error does not name S3's code: %s", p.err.msg);
    unsigned char chunk[4096];
    tu_pattern(chunk, 0, sizeof(chunk));
    assert_int_equal(s3_upload_write(u, chunk, sizeof(chunk)), -1); /* a late chunk */
    s3_upload_finish(u);
    s3_upload_abort(u);
    assert_int_equal(p.done, 1); /* on_done once, always */
    s3_upload_free(u);

    /* freed while parts are in flight: aborted in the background, no callback */
    proxy_ctl(&px, "/__plan", "");
    memset(&p, 0, sizeof(p));
    p.total = 3 * (uint64_t)PART;
    u = s3_upload_new(e.s3, key, NULL, PART, 1, produce, on_kept, &p);
    produce(u, &p);
    s3_upload_free(u);
    int never = 0;
    tu_run_until(&e.loop, &never, 2000);
    assert_int_equal(p.done, 0);
    env_close(&e);
    proxy_stop(&px);
}

static void test_control_check_sees_a_pending_upload(void **state) {
    (void)state;
    /* an upload created and never completed is listed: the zero above means something */
    const char *moto = tu_env("BW_MOTO_ENDPOINT");
    char prefix[64], cmd[512];
    snprintf(prefix, sizeof(prefix), "test-pending-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "curl -sf -o /dev/null -X POST '%s/%s/%s/x.bin?uploads'", moto,
             tu_env("S3_BUCKET"), prefix);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(moto_uploads(moto, tu_env("S3_BUCKET"), prefix), 1);
}

/* HTTPS with a private CA: trusted through the CA file, refused without it. */
static void test_tls_with_ca_file(void **state) {
    (void)state;
    char dir[] = "/tmp/bw-tls-XXXXXX", cert[96], key[96], cmd[512];
    assert_non_null(mkdtemp(dir));
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key, cert);
    assert_int_equal(system(cmd), 0);
    Proxy px;
    proxy_start_tls(&px, tu_env("S3_ENDPOINT"), cert, key);

    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *http = http_client_new(&loop, 0);
    S3Options o;
    tu_s3_options(&o);
    o.endpoint = px.url;
    o.max_attempts = 2;
    o.backoff_base_ms = 5;
    o.ca_file = cert;
    S3Client *with_ca = s3_client_new(&loop, http, &o);
    o.ca_file = NULL;
    S3Client *without_ca = s3_client_new(&loop, http, &o);

    Reader ok, refused;
    memset(&ok, 0, sizeof(ok));
    memset(&refused, 0, sizeof(refused));
    s3_put_object(with_ca, "test-tls/hello.txt", "over TLS", 8, "text/plain", on_put, &ok);
    s3_put_object(without_ca, "test-tls/nope.txt", "no", 2, "text/plain", on_put, &refused);
    assert_true(tu_run_until(&loop, &ok.done, 20000));
    assert_true(tu_run_until(&loop, &refused.done, 20000));
    if (err_is_set(&ok.err))
        fail_msg("put with the CA file failed: %s", ok.err.msg);
    assert_true(err_is_set(&refused.err));
    if (strcasestr(refused.err.msg, "certificate") == NULL)
        fail_msg("refusal does not name the certificate: %s", refused.err.msg);
    s3_client_free(with_ca);
    s3_client_free(without_ca);
    http_client_free(http);
    tu_loop_close(&loop);
    proxy_stop(&px);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Web identity: keys from STS (moto), re-fetched on demand, used with their session token. */
static void wait_keys(uv_loop_t *loop, AwsCreds *c, int want) {
    const char *ak, *sk, *tok;
    for (int i = 0; i < 400 && aws_creds_get(c, &ak, &sk, &tok) != want; i++)
        tu_run_for(loop, 25);
    assert_int_equal(aws_creds_get(c, &ak, &sk, &tok), want);
}

static void test_web_identity(void **state) {
    (void)state;
    const char *moto = tu_env("BW_MOTO_ENDPOINT");
    char dir[] = "/tmp/bw-wi-XXXXXX", token[96];
    assert_non_null(mkdtemp(dir));
    snprintf(token, sizeof(token), "%s/token", dir);
    FILE *f = fopen(token, "w");
    assert_non_null(f);
    fputs("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmFja3VwIn0.c2ln\n", f);
    fclose(f);

    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *http = http_client_new(&loop, 0);
    AwsCredsOptions ao;
    memset(&ao, 0, sizeof(ao));
    ao.token_file = token;
    ao.role_arn = "arn:aws:iam::123456789012:role/backup";
    ao.sts_endpoint = moto;
    AwsCreds *c = aws_creds_new(&loop, http, &ao);
    wait_keys(&loop, c, 1);
    const char *ak, *sk, *tok;
    aws_creds_get(c, &ak, &sk, &tok);
    char first[64];
    snprintf(first, sizeof(first), "%s", ak);
    assert_true(strncmp(first, "ASIA", 4) == 0 && sk[0] && tok && tok[0]);
    aws_creds_refresh(c); /* as after an ExpiredToken answer: new keys */
    for (int i = 0; i < 400; i++) {
        aws_creds_get(c, &ak, &sk, &tok);
        if (strcmp(ak, first) != 0)
            break;
        tu_run_for(&loop, 25);
    }
    assert_string_not_equal(ak, first);
    aws_creds_free(c);

    /* a missing token file: no keys, and the error names the file */
    ao.token_file = "/no/such/token";
    c = aws_creds_new(&loop, http, &ao);
    wait_keys(&loop, c, -1);
    assert_non_null(strstr(aws_creds_error(c), "/no/such/token"));
    aws_creds_free(c);

    /* the S3 client signs with the STS keys and sends their session token */
    Proxy px;
    proxy_start(&px, moto);
    S3Options o;
    tu_s3_options(&o);
    o.endpoint = px.url;
    o.access_key = o.secret_key = NULL;
    o.web_identity_token_file = token;
    o.role_arn = "arn:aws:iam::123456789012:role/backup";
    o.sts_endpoint = moto;
    S3Client *s3 = s3_client_new(&loop, http, &o);
    Reader r;
    memset(&r, 0, sizeof(r));
    s3_put_object(s3, "test-wi/hello.txt", "hi", 2, "text/plain", on_put, &r);
    assert_true(tu_run_until(&loop, &r.done, 20000));
    if (err_is_set(&r.err))
        fail_msg("put with web identity failed: %s", r.err.msg);
    assert_int_equal(r.attempts, 1); /* waited for STS without burning an attempt */
    char stats[512];
    proxy_stats_text(&px, stats, sizeof(stats));
    assert_non_null(strstr(stats, "\"with_token\":1,"));
    assert_non_null(strstr(stats, "\"last_key\":\"ASIA"));
    s3_client_free(s3);
    http_client_free(http);
    tu_loop_close(&loop);
    proxy_stop(&px);
    unlink(token);
    rmdir(dir);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_faults_on_every_kind_of_request, teardown),
        cmocka_unit_test_teardown(test_stalled_answer_times_out_and_retries, teardown),
        cmocka_unit_test_teardown(test_persistent_failure_aborts_and_leaves_nothing, teardown),
        cmocka_unit_test(test_control_check_sees_a_pending_upload),
        cmocka_unit_test_teardown(test_a_failed_upload_stays_the_callers, teardown),
        cmocka_unit_test_teardown(test_clock_skew_is_corrected, teardown),
        cmocka_unit_test_teardown(test_tls_with_ca_file, teardown),
        cmocka_unit_test_teardown(test_web_identity, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
