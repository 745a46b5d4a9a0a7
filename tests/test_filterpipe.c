/*
 * test_filterpipe: a filter chain on the thread pool between a producer and a
 * sink (pure logic, valgrind too): a gzip round trip through a sink that keeps
 * blocking, with the producer pausing on backpressure and the memory held
 * staying bounded; a chunk that decompresses 1024:1 reaching a bounded pipe's sink in
 * slices; freeing while a chunk is on the pool; a failing sink; no input.
 */
#include "io/filterpipe.h"
#include "testutil.h"

#include <openssl/sha.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define CHUNK (256u * 1024)
#define PIECE 10000

typedef struct {
    uv_loop_t loop;
    uv_timer_t unblock;
    FilterPipe *p;
    const char *in;
    size_t n, off;
    Buf out;
    int sink_calls, block_every, fail_sink, paused, done, writable_calls;
    size_t max_buffered;
    size_t big_at, big_len; /* one owned write of big_len bytes at offset big_at */
    int big_sent;
    Err err;
} Ctx;

static int released;
static void release_big(void *buf) {
    released++;
    free(buf);
}

static void produce(Ctx *c) {
    while (c->off < c->n) {
        if (c->big_len && !c->big_sent && c->off == c->big_at) {
            char *own = malloc(c->big_len);
            memcpy(own, c->in + c->off, c->big_len);
            c->big_sent = 1;
            c->off += c->big_len;
            int r = filter_pipe_write_owned(c->p, own, c->big_len, release_big);
            assert_int_equal(r, 0); /* always: wait for on_writable */
            c->paused++;
            return;
        }
        size_t k = c->n - c->off < PIECE ? c->n - c->off : PIECE;
        int r = filter_pipe_write(c->p, c->in + c->off, k);
        c->off += k;
        size_t b = filter_pipe_buffered(c->p);
        if (b > c->max_buffered)
            c->max_buffered = b;
        if (r < 0)
            return;
        if (r == 0) {
            c->paused++;
            return; /* until on_writable */
        }
    }
    filter_pipe_finish(c->p);
}

static void on_unblock(uv_timer_t *t) {
    Ctx *c = t->data;
    filter_pipe_unblock(c->p);
}

static int sink(const char *buf, size_t len, void *data) {
    Ctx *c = data;
    buf_append(&c->out, buf, len);
    c->sink_calls++;
    if (c->fail_sink)
        return -1;
    if (c->block_every && c->sink_calls % c->block_every == 0) {
        uv_timer_start(&c->unblock, on_unblock, 2, 0);
        return 0;
    }
    return 1;
}

static void on_writable(FilterPipe *p, void *data) {
    (void)p;
    Ctx *c = data;
    c->writable_calls++;
    produce(c);
}

static void on_done(FilterPipe *p, const Err *err, void *data) {
    (void)p;
    Ctx *c = data;
    c->done++;
    if (err)
        c->err = *err;
}

static FilterChain *gzip_chain(void) {
    FilterChain *ch = filter_chain_new();
    filter_chain_add(ch, filter_size_new("raw"));
    filter_chain_add(ch, filter_gzip_new(NULL, 1));
    filter_chain_add(ch, filter_sha256_new("sha256"));
    return ch;
}

static void ctx_init(Ctx *c) {
    memset(c, 0, sizeof(*c));
    uv_loop_init(&c->loop);
    uv_timer_init(&c->loop, &c->unblock);
    c->unblock.data = c;
}

static void ctx_close(Ctx *c) {
    uv_close((uv_handle_t *)&c->unblock, NULL);
    tu_loop_close(&c->loop);
    buf_free(&c->out);
}

static char *sample(size_t n) {
    char *p = malloc(n);
    uint32_t x = 7;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (i / 3000) % 3 ? "{\"row\":42}\n"[i % 11] : (char)(x >> 24);
    }
    return p;
}

/* gz, gunzipped, is exactly the n bytes at in. */
static void assert_gunzips_to(const Buf *gz, const char *in, size_t n) {
    FilterChain *un = filter_chain_new();
    filter_chain_add(un, filter_gunzip_new(NULL));
    Buf back = BUF_INIT;
    Err e;
    assert_int_equal(filter_chain_write(un, gz->data, gz->len, &back, &e), 0);
    assert_int_equal(filter_chain_finish(un, &back, &e), 0);
    assert_int_equal(back.len, n);
    assert_memory_equal(back.data, in, n);
    buf_free(&back);
    filter_chain_free(un);
}

static void test_round_trip_with_backpressure(void **state) {
    (void)state;
    Ctx c;
    ctx_init(&c);
    c.n = 12u << 20;
    char *in = sample(c.n);
    c.in = in;
    c.block_every = 2;
    c.p = filter_pipe_new(&c.loop, gzip_chain(), CHUNK, sink, on_writable, on_done, &c);
    produce(&c);
    assert_true(tu_run_to_end(&c.loop, 60000));
    assert_int_equal(c.done, 1);
    assert_false(err_is_set(&c.err));
    assert_true(c.paused > 0); /* the producer was held back */
    assert_int_equal(c.paused, c.writable_calls);
    /* where the time went: the chain ran, the producer waited, the sink held output back (not
     * a bound per block: a 2 ms timer fires at once when the loop's cached time is stale, as
     * under valgrind, where the chain's runs are slow) */
    FilterPipeTimes t;
    filter_pipe_times(c.p, &t);
    assert_true(t.chain_ns > 0);
    assert_true(t.wait_ns > 0);
    assert_true(t.sink_held_ns > 0);
    /* two chunks (each at most CHUNK + one piece) and one chunk's output, in buffers
     * that grow by doubling: 12 MiB went through in at most 6 x 256 KiB */
    if (c.max_buffered > 6 * CHUNK)
        fail_msg("held %zu bytes", c.max_buffered);

    const FilterChain *ch = filter_pipe_chain(c.p);
    char raw[32];
    snprintf(raw, sizeof(raw), "%zu", c.n);
    assert_string_equal(filter_chain_result(ch, "raw"), raw);
    unsigned char md[32];
    char hex[65];
    SHA256((const unsigned char *)c.out.data, c.out.len, md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(filter_chain_result(ch, "sha256"), hex);

    assert_gunzips_to(&c.out, in, c.n);
    filter_pipe_free(c.p);
    free(in);
    ctx_close(&c);
}

/* A huge write handed over without a copy goes through a chunk at a time, in order between
 * ordinary writes, and is released once: the pipe's own buffers stay about a chunk. */
static void test_owned_big_write(void **state) {
    (void)state;
    Ctx c;
    ctx_init(&c);
    c.n = 8u << 20;
    char *in = sample(c.n);
    c.in = in;
    c.big_at = 3 * PIECE;
    c.big_len = 5u << 20;
    c.block_every = 3;
    released = 0;
    c.p = filter_pipe_new(&c.loop, gzip_chain(), CHUNK, sink, on_writable, on_done, &c);
    produce(&c);
    assert_true(tu_run_to_end(&c.loop, 60000));
    assert_int_equal(c.done, 1);
    assert_false(err_is_set(&c.err));
    assert_int_equal(released, 1);
    if (c.max_buffered > 6 * CHUNK)
        fail_msg("held %zu bytes", c.max_buffered);
    assert_gunzips_to(&c.out, in, c.n);
    filter_pipe_free(c.p);

    /* freed while the owned buffer is still pending: released with the pipe */
    Ctx d;
    ctx_init(&d);
    released = 0;
    d.p = filter_pipe_new(&d.loop, gzip_chain(), CHUNK, sink, on_writable, on_done, &d);
    char *own = malloc(4 * CHUNK);
    memcpy(own, in, 4 * CHUNK);
    assert_int_equal(filter_pipe_write_owned(d.p, own, 4 * CHUNK, release_big), 0);
    filter_pipe_free(d.p);
    assert_true(tu_run_to_end(&d.loop, 60000));
    assert_int_equal(released, 1);
    free(in);
    ctx_close(&c);
    ctx_close(&d);
}

/* 64 MiB of zeros gzipped (~64 KiB, one chunk): unbounded, the sink gets it in one call; with
 * the output bounded at 1 MiB, in slices of at most the bound + 4 KiB x 1032, through a sink
 * that keeps blocking, every byte in order. */
static size_t max_piece;
static int sink_max(const char *buf, size_t len, void *data) {
    if (len > max_piece)
        max_piece = len;
    return sink(buf, len, data);
}

static void test_bounded_output(void **state) {
    (void)state;
    size_t n = 64u << 20;
    char *zeros = calloc(1, n);
    Buf gz = BUF_INIT;
    Err e;
    FilterChain *z = filter_chain_new();
    filter_chain_add(z, filter_gzip_new(NULL, 6));
    assert_int_equal(filter_chain_write(z, zeros, n, &gz, &e), 0);
    assert_int_equal(filter_chain_finish(z, &gz, &e), 0);
    filter_chain_free(z);
    assert_true(gz.len < CHUNK);
    for (int bounded = 0; bounded < 2; bounded++) {
        Ctx c;
        ctx_init(&c);
        c.block_every = bounded ? 2 : 0;
        FilterChain *un = filter_chain_new();
        filter_chain_add(un, filter_sha256_new("sha256"));
        filter_chain_add(un, filter_gunzip_new(NULL));
        c.p = filter_pipe_new(&c.loop, un, CHUNK, sink_max, on_writable, on_done, &c);
        if (bounded)
            filter_pipe_bound_output(c.p, 1u << 20);
        max_piece = 0;
        for (size_t off = 0; off < gz.len; off += PIECE)
            filter_pipe_write(c.p, gz.data + off, gz.len - off < PIECE ? gz.len - off : PIECE);
        filter_pipe_finish(c.p);
        assert_true(tu_run_to_end(&c.loop, 60000));
        assert_int_equal(c.done, 1);
        assert_false(err_is_set(&c.err));
        assert_int_equal(c.out.len, n);
        assert_memory_equal(c.out.data, zeros, n);
        if (bounded) {
            if (max_piece > (1u << 20) + 4096 * 1032)
                fail_msg("a slice of %zu bytes", max_piece);
            assert_true(c.sink_calls >= 12);
        } else {
            assert_int_equal(max_piece, n);
        }
        filter_pipe_free(c.p);
        ctx_close(&c);
    }
    buf_free(&gz);
    free(zeros);
}

static void test_free_while_working(void **state) {
    (void)state;
    Ctx c;
    ctx_init(&c);
    c.n = 3 * CHUNK;
    char *in = sample(c.n);
    c.p = filter_pipe_new(&c.loop, gzip_chain(), CHUNK, sink, on_writable, on_done, &c);
    filter_pipe_write(c.p, in, c.n); /* one chunk goes to the pool at once */
    filter_pipe_free(c.p);           /* released when it comes back, silently */
    assert_true(tu_run_to_end(&c.loop, 60000));
    assert_int_equal(c.done, 0);
    assert_int_equal(c.sink_calls, 0);
    free(in);
    ctx_close(&c);
}

static void test_failing_sink_stops_the_pipe(void **state) {
    (void)state;
    Ctx c;
    ctx_init(&c);
    c.n = 4 * CHUNK;
    char *in = sample(c.n);
    c.in = in;
    c.fail_sink = 1;
    c.p = filter_pipe_new(&c.loop, gzip_chain(), CHUNK, sink, on_writable, on_done, &c);
    produce(&c);
    assert_true(tu_run_to_end(&c.loop, 60000));
    assert_int_equal(c.sink_calls, 1);
    assert_int_equal(c.done, 0); /* the sink's owner reports its own failure */
    assert_int_equal(filter_pipe_write(c.p, "x", 1), -1);
    filter_pipe_free(c.p);
    free(in);
    ctx_close(&c);
}

static void test_no_input(void **state) {
    (void)state;
    Ctx c;
    ctx_init(&c);
    c.p = filter_pipe_new(&c.loop, gzip_chain(), 0, sink, on_writable, on_done, &c);
    filter_pipe_finish(c.p);
    assert_true(tu_run_to_end(&c.loop, 60000));
    assert_int_equal(c.done, 1);
    assert_string_equal(filter_chain_result(filter_pipe_chain(c.p), "raw"), "0");
    assert_true(c.out.len >= 18); /* an empty gzip member: header and trailer */
    assert_int_equal((unsigned char)c.out.data[0], 0x1f);
    filter_pipe_free(c.p);
    ctx_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_with_backpressure),
        cmocka_unit_test(test_owned_big_write),
        cmocka_unit_test(test_bounded_output),
        cmocka_unit_test(test_free_while_working),
        cmocka_unit_test(test_failing_sink_stops_the_pipe),
        cmocka_unit_test(test_no_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
