/*
 * test_http: libcurl multi on libuv against the local S3 server (s3rver, with
 * anonymous requests until the signer lands), and the health server.
 */
#include "testutil.h"
#include "http/http.h"
#include "http/httpd.h"
#include "base/looplag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *object_url(const char *key) {
    static char url[512];
    snprintf(url, sizeof(url), "%s/%s/test-http/%s", tu_env("S3_ENDPOINT"), tu_env("S3_BUCKET"),
             key);
    return url;
}

/* deterministic content: byte i of object n */
static unsigned char content_byte(int n, size_t i) {
    return (unsigned char)((i * 2654435761u + (size_t)n * 40503u) >> 13);
}

typedef struct {
    int done;
    int ok;
    int errors;
    int mismatches;
    int cancelled;
} Tally;

typedef struct {
    Tally *t;
    int n;
    size_t size;
} Job;

static void on_put(HttpRequest *req, long status, const Err *err, void *data) {
    (void)req;
    Job *j = data;
    j->t->done++;
    if (err || status != 200)
        j->t->errors++;
    else
        j->t->ok++;
    free(j);
}

static unsigned char *received[100]; /* verified after the loop: keep callbacks cheap */
static size_t received_len[100];

static void on_get(HttpRequest *req, long status, const Err *err, void *data) {
    Job *j = data;
    j->t->done++;
    if (err || status != 200) {
        j->t->errors++;
    } else {
        const Buf *b = http_request_body(req);
        received[j->n] = malloc(b->len + 1);
        memcpy(received[j->n], b->data, b->len);
        received_len[j->n] = b->len;
        j->t->ok++;
        if (http_request_header(req, "ETag") == NULL)
            j->t->mismatches++;
    }
    free(j);
}

static int verify_received(size_t size) {
    int bad = 0;
    for (int n = 0; n < 100; n++) {
        int wrong = received[n] == NULL || received_len[n] != size;
        for (size_t i = 0; !wrong && i < size; i++)
            wrong = received[n][i] != content_byte(n, i);
        bad += wrong;
        free(received[n]);
        received[n] = NULL;
    }
    return bad;
}

static void test_100_concurrent_puts_and_gets(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *c = http_client_new(&loop, 0);
    const size_t size = 64 * 1024;
    unsigned char *bodies = malloc(100 * size); /* made before the clock starts */
    for (int n = 0; n < 100; n++)
        for (size_t i = 0; i < size; i++)
            bodies[(size_t)n * size + i] = content_byte(n, i);
    Tally puts;
    memset(&puts, 0, sizeof(puts));
    Err err;
    err_clear(&err);
    for (int n = 0; n < 100; n++) {
        char key[32];
        snprintf(key, sizeof(key), "obj-%03d", n);
        Job *j = calloc(1, sizeof(*j));
        j->t = &puts;
        j->n = n;
        HttpRequestOpts o;
        memset(&o, 0, sizeof(o));
        o.method = "PUT";
        o.url = object_url(key);
        o.body = bodies + (size_t)n * size;
        o.body_len = size;
        o.done = on_put;
        o.data = j;
        assert_non_null(http_request_start(c, &o, &err));
    }
    free(bodies);
    assert_int_equal(http_client_active(c), 100);
    /* measured from here: the transfers themselves, not the test's own burst
     * of 100 request set-ups above (about 12 ms of copying and curl_easy_init) */
    LoopLag *lag = looplag_new(&loop, 5);
    assert_true(tu_run_until_count(&loop, &puts.done, 100, 120000));
    assert_int_equal(puts.ok, 100);

    Tally gets;
    memset(&gets, 0, sizeof(gets));
    for (int n = 0; n < 100; n++) {
        char key[32];
        snprintf(key, sizeof(key), "obj-%03d", n);
        Job *j = calloc(1, sizeof(*j));
        j->t = &gets;
        j->n = n;
        j->size = size;
        HttpRequestOpts o;
        memset(&o, 0, sizeof(o));
        o.url = object_url(key);
        o.done = on_get;
        o.data = j;
        assert_non_null(http_request_start(c, &o, &err));
    }
    assert_true(tu_run_until_count(&loop, &gets.done, 100, 120000));
    printf("100 PUTs + 100 GETs of 64 KiB: loop lag max %.2f ms, %llu bytes up, %llu down\n",
           (double)looplag_max_us(lag) / 1000.0, (unsigned long long)http_client_bytes_sent(c),
           (unsigned long long)http_client_bytes_received(c));
    assert_int_equal(gets.ok, 100);
    assert_int_equal(gets.mismatches, 0);
    assert_int_equal(verify_received(size), 0);
    assert_true(http_client_bytes_sent(c) >= 100 * size);
    assert_true(http_client_bytes_received(c) >= 100 * size);
    assert_true(looplag_max_us(lag) < TU_LAG_LIMIT_US);

    /* a missing object is an HTTP status, not a transport error */
    Tally miss;
    memset(&miss, 0, sizeof(miss));
    Job *j = calloc(1, sizeof(*j));
    j->t = &miss;
    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.url = object_url("no-such-object");
    o.done = on_put; /* counts status != 200 as an error */
    o.data = j;
    assert_non_null(http_request_start(c, &o, &err));
    assert_true(tu_run_until(&loop, &miss.done, 5000));
    assert_int_equal(miss.errors, 1);

    looplag_free(lag);
    http_client_free(c);
    tu_loop_close(&loop);
}

/* ---- streaming both ways with pauses ---- */

typedef struct {
    HttpRequest *req;
    uv_timer_t resume;
    size_t total;
    size_t pos;
    size_t calls;
    int pauses;
    int done;
    long status;
    int failed;
    uint64_t hash;
} Stream;

static void on_resume(uv_timer_t *t) {
    Stream *s = t->data;
    http_request_resume(s->req);
}

static size_t stream_read(HttpRequest *req, char *buf, size_t len, void *data) {
    Stream *s = data;
    s->req = req;
    if (++s->calls % 7 == 0) { /* the producer is sometimes not ready */
        s->pauses++;
        uv_timer_start(&s->resume, on_resume, 1, 0);
        return HTTP_PAUSE;
    }
    size_t n = s->total - s->pos;
    if (n > len)
        n = len;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)content_byte(7, s->pos + i);
    s->pos += n;
    return n;
}

static size_t stream_write(HttpRequest *req, const char *buf, size_t len, void *data) {
    Stream *s = data;
    s->req = req;
    if (++s->calls % 5 == 0) { /* the consumer is sometimes full */
        s->pauses++;
        uv_timer_start(&s->resume, on_resume, 1, 0);
        return HTTP_PAUSE;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] != content_byte(7, s->pos + i))
            s->failed = 1;
    s->pos += len;
    return len;
}

static void on_stream_done(HttpRequest *req, long status, const Err *err, void *data) {
    (void)req;
    Stream *s = data;
    s->done = 1;
    s->status = status;
    if (err) {
        s->failed = 1;
        print_error("stream: %s\n", err->msg);
    }
}

static void test_streaming_with_backpressure(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *c = http_client_new(&loop, 0);
    Err err;
    err_clear(&err);

    Stream up;
    memset(&up, 0, sizeof(up));
    up.total = 8 * 1024 * 1024 + 123;
    uv_timer_init(&loop, &up.resume);
    up.resume.data = &up;
    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.method = "PUT";
    o.url = object_url("stream.bin");
    o.read = stream_read;
    o.body_size = (int64_t)up.total;
    o.done = on_stream_done;
    o.data = &up;
    assert_non_null(http_request_start(c, &o, &err));
    assert_true(tu_run_until(&loop, &up.done, 60000));
    assert_false(up.failed);
    assert_int_equal(up.status, 200);
    assert_int_equal(up.pos, up.total);
    assert_true(up.pauses > 0);

    Stream down;
    memset(&down, 0, sizeof(down));
    uv_timer_init(&loop, &down.resume);
    down.resume.data = &down;
    memset(&o, 0, sizeof(o));
    o.url = object_url("stream.bin");
    o.write = stream_write;
    o.done = on_stream_done;
    o.data = &down;
    assert_non_null(http_request_start(c, &o, &err));
    assert_true(tu_run_until(&loop, &down.done, 60000));
    assert_false(down.failed);
    assert_int_equal(down.status, 200);
    assert_int_equal(down.pos, up.total);
    assert_true(down.pauses > 0);
    printf("streamed %zu bytes up (%d pauses) and down (%d pauses)\n", up.total, up.pauses,
           down.pauses);

    uv_close((uv_handle_t *)&up.resume, NULL);
    uv_close((uv_handle_t *)&down.resume, NULL);
    http_client_free(c);
    tu_loop_close(&loop);
}

/* ---- failures ---- */

static void test_refused_and_cancelled(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *c = http_client_new(&loop, 0);
    Err err;
    err_clear(&err);

    Stream r;
    memset(&r, 0, sizeof(r));
    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.url = "http://127.0.0.1:1/nothing";
    o.done = on_stream_done;
    o.data = &r;
    assert_non_null(http_request_start(c, &o, &err));
    assert_true(tu_run_until(&loop, &r.done, 5000));
    assert_true(r.failed);
    assert_int_equal(r.status, 0);

    Tally t;
    memset(&t, 0, sizeof(t));
    Job *j = calloc(1, sizeof(*j));
    j->t = &t;
    memset(&o, 0, sizeof(o));
    o.url = object_url("stream.bin");
    o.done = on_put;
    o.data = j;
    HttpRequest *req = http_request_start(c, &o, &err);
    assert_non_null(req);
    http_request_cancel(req);
    assert_int_equal(t.done, 0); /* never inside the caller's frame */
    assert_true(tu_run_until(&loop, &t.done, 5000));
    assert_int_equal(t.errors, 1);
    assert_int_equal(http_client_active(c), 0);

    /* requests still in flight when the client is freed are cancelled */
    Stream f;
    memset(&f, 0, sizeof(f));
    memset(&o, 0, sizeof(o));
    o.url = object_url("stream.bin");
    o.done = on_stream_done;
    o.data = &f;
    o.max_body = 64 * 1024 * 1024;
    assert_non_null(http_request_start(c, &o, &err));
    http_client_free(c);
    assert_int_equal(f.done, 1);
    assert_true(f.failed);
    tu_loop_close(&loop);
}

/* ---- the health server ---- */

static void handler(const char *method, const char *path, HttpdResponse *resp, void *data) {
    (void)method;
    int *calls = data;
    (*calls)++;
    if (strcmp(path, "/healthz") == 0) {
        buf_puts(&resp->body, "ok\n");
    } else {
        resp->status = 404;
        buf_puts(&resp->body, "nope\n");
    }
}

typedef struct {
    int done;
    long status;
    char body[1024];
} Get;

static void on_simple(HttpRequest *req, long status, const Err *err, void *data) {
    Get *g = data;
    g->done = 1;
    g->status = err ? -1 : status;
    snprintf(g->body, sizeof(g->body), "%s",
             http_request_body(req)->data ? http_request_body(req)->data : "");
}

static long get(uv_loop_t *loop, HttpClient *c, const char *url, struct curl_slist *hdrs, Get *g) {
    memset(g, 0, sizeof(*g));
    HttpRequestOpts o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.headers = hdrs;
    o.done = on_simple;
    o.data = g;
    Err err;
    err_clear(&err);
    assert_non_null(http_request_start(c, &o, &err));
    assert_true(tu_run_until(loop, &g->done, 5000));
    return g->status;
}

static void test_httpd(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int calls = 0;
    Err err;
    err_clear(&err);
    Httpd *h = httpd_new(&loop, "127.0.0.1", 0, handler, &calls, &err);
    assert_non_null(h);
    int port = httpd_port(h);
    assert_true(port > 0);
    HttpClient *c = http_client_new(&loop, 0);
    char url[128];
    Get g;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz?x=1", port);
    assert_int_equal(get(&loop, c, url, NULL, &g), 200);
    assert_string_equal(g.body, "ok\n");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/other", port);
    assert_int_equal(get(&loop, c, url, NULL, &g), 404);
    /* oversized requests are refused without reaching the handler */
    char big[12000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "X-Big: ", 7);
    struct curl_slist *hdrs = curl_slist_append(NULL, big);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", port);
    assert_int_equal(get(&loop, c, url, hdrs, &g), 413);
    curl_slist_free_all(hdrs);
    assert_int_equal(calls, 2);
    /* the port is taken: a clear error */
    Httpd *h2 = httpd_new(&loop, "127.0.0.1", port, handler, &calls, &err);
    assert_null(h2);
    assert_non_null(strstr(err.msg, "cannot listen"));
    http_client_free(c);
    httpd_free(h);
    tu_loop_close(&loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_100_concurrent_puts_and_gets),
        cmocka_unit_test(test_streaming_with_backpressure),
        cmocka_unit_test(test_refused_and_cancelled),
        cmocka_unit_test(test_httpd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
