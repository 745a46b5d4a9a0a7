/*
 * testutil: helpers shared by the tests (see testutil.h).
 */
#include "testutil.h"
#include "io/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tu_env(const char *name) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        print_error("%s is not set: run the tests through `tools/devenv test`, or "
                    "eval \"$(tools/devenv env)\" after `tools/devenv start`\n",
                    name);
        fail();
    }
    return v;
}

static void on_stop_timer(uv_timer_t *t) {
    *(int *)t->data = 1;
}

int tu_run_until(uv_loop_t *loop, volatile int *flag, unsigned timeout_ms) {
    uv_timer_t timer;
    int expired = 0;
    uv_timer_init(loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_stop_timer, timeout_ms, 0);
    while (!*flag && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

int tu_run_until_count(uv_loop_t *loop, volatile int *n, int target, unsigned timeout_ms) {
    uv_timer_t timer;
    int expired = 0;
    uv_timer_init(loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_stop_timer, timeout_ms, 0);
    while (*n < target && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (*n < target)
        print_error("waited %u ms for %d, got %d\n", timeout_ms, target, *n);
    return *n >= target;
}

static void on_deadline(uv_timer_t *t) {
    *(int *)t->data = 1;
    uv_stop(t->loop);
}

int tu_run_to_end(uv_loop_t *loop, unsigned timeout_ms) {
    uv_timer_t timer;
    int expired = 0;
    uv_timer_init(loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_deadline, timeout_ms, 0);
    uv_unref((uv_handle_t *)&timer); /* the deadline does not keep the loop alive */
    while (!expired && uv_run(loop, UV_RUN_DEFAULT) != 0)
        ;
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return !expired;
}

void tu_run_for(uv_loop_t *loop, unsigned ms) {
    int never = 0;
    tu_run_until(loop, &never, ms);
}

static void on_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        fprintf(stderr, "open handle left: type %s\n", uv_handle_type_name(h->type));
}

void tu_loop_close(uv_loop_t *loop) {
    if (!tu_run_to_end(loop, TU_CLOSE_MS))
        print_error("the loop still runs %d ms after the test: a handle was leaked\n", TU_CLOSE_MS);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        uv_walk(loop, on_walk, NULL);
    assert_int_equal(rc, 0);
}

int tu_devenv(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "\"%s\" %s >/dev/null 2>&1", tu_env("BW_DEVENV"), args);
    return system(cmd);
}

void tu_s3_options(S3Options *o) {
    memset(o, 0, sizeof(*o));
    o->endpoint = tu_env("S3_ENDPOINT");
    o->region = tu_env("AWS_REGION");
    o->bucket = tu_env("S3_BUCKET");
    o->access_key = tu_env("AWS_ACCESS_KEY_ID");
    o->secret_key = tu_env("AWS_SECRET_ACCESS_KEY");
    o->path_style = 1;
}

void tu_s3_open(TuS3 *e, const S3Options *o) {
    uv_loop_init(&e->loop);
    e->http = http_client_new(&e->loop, 0);
    e->s3 = s3_client_new(&e->loop, e->http, o);
}

void tu_s3_close(TuS3 *e) {
    s3_client_free(e->s3);
    http_client_free(e->http);
    tu_loop_close(&e->loop);
}

unsigned char tu_pattern_byte(uint64_t i) {
    return (unsigned char)((i * 2654435761u) >> 11);
}

unsigned char *tu_pattern_new(size_t n) {
    unsigned char *p = malloc(n);
    tu_pattern(p, 0, n);
    return p;
}

struct FilterChain *tu_gzip_encoder(void) {
    CodecList l;
    Err e;
    if (codec_list_parse("gzip", &l, &e) != 0)
        return NULL;
    CodecOptions o = {1, NULL};
    return codec_encoder(&l, &o);
}

void tu_pattern(unsigned char *out, uint64_t pos, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = tu_pattern_byte(pos + i);
}
