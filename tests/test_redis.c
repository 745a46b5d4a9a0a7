/*
 * test_redis: the reconnecting Redis client against a real redis-server.
 */
#include "testutil.h"
#include "config/config.h"
#include "base/looplag.h"
#include "redis/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int connected;
    int disconnected;
    int state_changes;
    int replies;
    int errors;
    int redis_errors;
    long long last_int;
    char last_str[256];
    char last_err[ERR_MSG_MAX];
} Counters;

static void on_state(RedisClient *c, int connected, const Err *err, void *data) {
    (void)c;
    (void)err;
    Counters *k = data;
    k->state_changes++;
    if (connected)
        k->connected++;
    else
        k->disconnected++;
}

static void on_reply(RedisClient *c, redisReply *r, const Err *err, void *data) {
    (void)c;
    Counters *k = data;
    k->replies++;
    if (err) {
        k->errors++;
        if (err->code == ERR_CODE_REDIS)
            k->redis_errors++;
        snprintf(k->last_err, sizeof(k->last_err), "%s", err->msg);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER)
        k->last_int = r->integer;
    else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        snprintf(k->last_str, sizeof(k->last_str), "%s", r->str);
}

/* Options for the test server from REDIS_URL, reporting state changes into k. */
static void env_options(RedisEndpoint *ep, RedisOptions *o, Counters *k) {
    const char *why = NULL;
    assert_int_equal(connurl_parse_redis(tu_env("REDIS_URL"), ep, &why), 0);
    memset(o, 0, sizeof(*o));
    o->host = ep->host;
    o->port = ep->port;
    o->password = ep->password;
    o->db = ep->db;
    o->name = "test_redis";
    o->backoff_min_ms = 50;
    o->backoff_max_ms = 400;
    o->on_state = on_state;
    o->data = k;
}

static RedisClient *connect_env(uv_loop_t *loop, Counters *k, RedisEndpoint *ep) {
    RedisOptions o;
    env_options(ep, &o, k);
    RedisClient *c = redis_client_new(loop, &o);
    assert_true(tu_run_until(loop, &k->connected, 5000));
    return c;
}

static void test_commands_and_pipeline(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Counters k;
    memset(&k, 0, sizeof(k));
    RedisEndpoint ep;
    RedisClient *c = connect_env(&loop, &k, &ep);
    LoopLag *lag = looplag_new(&loop, 5);
    Err err;
    err_clear(&err);

    assert_int_equal(redis_command(c, on_reply, &k, &err, "DEL %s", "test:pipe"), 0);
    /* 5000 commands queued before the loop writes anything: one pipeline */
    for (int i = 0; i < 5000; i++)
        assert_int_equal(redis_command(c, on_reply, &k, &err, "INCR %s", "test:pipe"), 0);
    const char *argv[] = {"SET", "test:bin", "a\0b\r\n"};
    size_t argvlen[] = {3, 8, 5};
    assert_int_equal(redis_command_argv(c, on_reply, &k, 3, argv, argvlen, &err), 0);
    int target = 5002;
    assert_true(tu_run_until_count(&loop, &k.replies, target, 120000));
    assert_int_equal(k.errors, 0);
    assert_int_equal(k.last_str[0], 'O'); /* OK */
    assert_int_equal(k.last_int, 5000);

    /* binary-safe round trip */
    Counters g;
    memset(&g, 0, sizeof(g));
    assert_int_equal(redis_command(c, on_reply, &g, &err, "STRLEN %s", "test:bin"), 0);
    assert_true(tu_run_until_count(&loop, &g.replies, 1, 120000));
    assert_int_equal(g.last_int, 5);

    /* an error reply is an error with Redis' own message, and the connection stays */
    assert_int_equal(redis_command(c, on_reply, &g, &err, "INCR %s", "test:bin"), 0);
    assert_int_equal(redis_command(c, on_reply, &g, &err, "PING"), 0);
    assert_true(tu_run_until_count(&loop, &g.replies, 3, 120000));
    assert_int_equal(g.redis_errors, 1);
    assert_non_null(strstr(g.last_err, "not an integer"));
    assert_string_equal(g.last_str, "PONG");
    assert_true(redis_client_connected(c));
    printf("loop lag max during 5000 pipelined commands: %.2f ms\n",
           (double)looplag_max_us(lag) / 1000.0);
    assert_true(looplag_max_us(lag) < TU_LAG_LIMIT_US);

    looplag_free(lag);
    redis_client_free(c);
    connurl_redis_free(&ep);
    tu_loop_close(&loop);
}

static void test_refused_connection_does_not_hang(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Counters k;
    memset(&k, 0, sizeof(k));
    RedisOptions o;
    memset(&o, 0, sizeof(o));
    o.host = "127.0.0.1";
    o.port = 1; /* nothing listens here */
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 50;
    o.on_state = on_state;
    o.data = &k;
    RedisClient *c = redis_client_new(&loop, &o);
    tu_run_for(&loop, 300);
    assert_int_equal(k.connected, 0);
    assert_false(redis_client_connected(c));
    /* the failure is known and named, not a silent hang */
    assert_non_null(strstr(redis_client_last_error(c), "connect failed"));
    Err err;
    err_clear(&err);
    assert_int_equal(redis_command(c, on_reply, &k, &err, "PING"), -1);
    assert_int_equal(err.kind, ERR_RETRYABLE);
    assert_non_null(strstr(err.msg, "not connected"));
    assert_int_equal(k.replies, 0);
    redis_client_free(c);
    tu_loop_close(&loop);
}

static void test_wrong_password_is_reported(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Counters k;
    memset(&k, 0, sizeof(k));
    RedisEndpoint ep;
    RedisOptions o;
    env_options(&ep, &o, &k);
    o.password = "wrong-password";
    RedisClient *c = redis_client_new(&loop, &o);
    tu_run_for(&loop, 300);
    assert_int_equal(k.connected, 0);
    assert_non_null(strstr(redis_client_last_error(c), "handshake failed"));
    assert_null(strstr(redis_client_last_error(c), "wrong-password"));
    redis_client_free(c);
    connurl_redis_free(&ep);
    tu_loop_close(&loop);
}

static void test_reconnect_after_restart(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Counters k;
    memset(&k, 0, sizeof(k));
    RedisEndpoint ep;
    RedisClient *c = connect_env(&loop, &k, &ep);
    Err err;
    err_clear(&err);
    Counters s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(redis_command(c, on_reply, &s, &err, "SET %s %s", "test:persist", "kept"), 0);
    assert_true(tu_run_until_count(&loop, &s.replies, 1, 120000));
    assert_int_equal(s.errors, 0);

    /* the server goes away and comes back (AOF keeps the data) */
    assert_int_equal(tu_devenv("restart redis"), 0);
    assert_true(tu_run_until(&loop, &k.disconnected, 5000));
    for (int i = 0; i < 250 && k.connected < 2; i++)
        tu_run_for(&loop, 20);
    assert_int_equal(k.connected, 2);
    assert_int_equal(redis_client_reconnects(c), 1);

    Counters g;
    memset(&g, 0, sizeof(g));
    assert_int_equal(redis_command(c, on_reply, &g, &err, "GET %s", "test:persist"), 0);
    assert_true(tu_run_until_count(&loop, &g.replies, 1, 120000));
    assert_int_equal(g.errors, 0);
    assert_string_equal(g.last_str, "kept");

    redis_client_free(c);
    connurl_redis_free(&ep);
    tu_loop_close(&loop);
}

/*
 * A fake server that answers -LOADING on its first connection, as a restarted
 * Redis does while it reads a large AOF, then +OK to everything.
 */
typedef struct {
    uv_tcp_t server;
    int connections;
    int closed;
} Loading;

typedef struct {
    uv_tcp_t tcp;
    Loading *l;
    int nth;
} LoadingConn;

static void loading_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
    (void)h;
    buf->base = malloc(size);
    buf->len = size;
}

static void loading_write_done(uv_write_t *w, int status) {
    (void)status;
    free(w->data);
    free(w);
}

static void loading_free_conn(uv_handle_t *h) {
    free(h->data);
}

static void loading_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    LoadingConn *lc = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, loading_free_conn);
    } else {
        /* one reply per command: each RESP array starts a line with '*' */
        int commands = 0;
        for (ssize_t i = 0; i < n; i++)
            if (buf->base[i] == '*' && (i == 0 || buf->base[i - 1] == '\n'))
                commands++;
        const char *one =
            lc->nth == 1 ? "-LOADING Redis is loading the dataset in memory\r\n" : "+OK\r\n";
        Buf out = BUF_INIT;
        for (int i = 0; i < commands; i++)
            buf_puts(&out, one);
        if (out.len > 0) {
            uv_write_t *w = malloc(sizeof(*w));
            w->data = out.data;
            uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
            uv_write(w, s, &b, 1, loading_write_done);
        } else {
            buf_free(&out);
        }
    }
    free(buf->base);
}

static void loading_accept(uv_stream_t *server, int status) {
    Loading *l = server->data;
    assert_int_equal(status, 0);
    LoadingConn *lc = calloc(1, sizeof(*lc));
    lc->l = l;
    lc->nth = ++l->connections;
    uv_tcp_init(server->loop, &lc->tcp);
    lc->tcp.data = lc;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&lc->tcp), 0);
    uv_read_start((uv_stream_t *)&lc->tcp, loading_alloc, loading_read);
}

static void loading_closed(uv_handle_t *h) {
    Loading *l = h->data;
    l->closed = 1;
}

static void close_conns(uv_handle_t *h, void *arg) {
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h))
        uv_close(h, h->data == NULL ? NULL : loading_free_conn);
}

static void test_loading_server_is_retried(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Loading l;
    memset(&l, 0, sizeof(l));
    uv_tcp_init(&loop, &l.server);
    l.server.data = &l;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&l.server, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&l.server, 8, loading_accept), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&l.server, (struct sockaddr *)&bound, &len);

    Counters k;
    memset(&k, 0, sizeof(k));
    RedisOptions o;
    memset(&o, 0, sizeof(o));
    o.host = "127.0.0.1";
    o.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    o.password = "pw";
    o.name = "test_loading";
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 50;
    o.on_state = on_state;
    o.data = &k;
    RedisClient *c = redis_client_new(&loop, &o);
    /* the handshake fails with LOADING, the client backs off and tries again */
    assert_true(tu_run_until(&loop, &k.connected, 3000));
    assert_int_equal(l.connections, 2);
    assert_int_equal(k.disconnected, 0); /* never announced ready, so never announced lost */
    redis_client_free(c);
    uv_close((uv_handle_t *)&l.server, loading_closed);
    l.server.data = &l;
    tu_run_for(&loop, 50);
    uv_walk(&loop, close_conns, NULL);
    tu_loop_close(&loop);
}

static void test_pending_commands_fail_on_free(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Counters k;
    memset(&k, 0, sizeof(k));
    RedisEndpoint ep;
    RedisClient *c = connect_env(&loop, &k, &ep);
    Err err;
    err_clear(&err);
    Counters b;
    memset(&b, 0, sizeof(b));
    /* a blocking read that would wait 10 s: freeing the client cancels it */
    assert_int_equal(redis_command(c, on_reply, &b, &err, "BLPOP %s 10", "test:never"), 0);
    tu_run_for(&loop, 50);
    redis_client_free(c);
    assert_int_equal(b.replies, 1);
    assert_int_equal(b.errors, 1);
    assert_non_null(strstr(b.last_err, "closed"));
    connurl_redis_free(&ep);
    tu_loop_close(&loop);
}

static void test_command_timeout_drops_stalled_connection(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Counters k;
    memset(&k, 0, sizeof(k));
    RedisEndpoint ep;
    RedisOptions o;
    env_options(&ep, &o, &k);
    o.command_timeout_ms = 300;
    RedisClient *c = redis_client_new(&loop, &o);
    assert_true(tu_run_until(&loop, &k.connected, 5000));
    Err err;
    err_clear(&err);
    Counters b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(redis_command(c, on_reply, &b, &err, "BLPOP %s 5", "test:never"), 0);
    assert_true(tu_run_until(&loop, &b.replies, 3000));
    assert_int_equal(b.errors, 1);
    assert_int_equal(b.redis_errors, 0); /* a connection error, retryable */
    /* and it reconnects by itself */
    int want = 2;
    for (int i = 0; i < 100 && k.connected < want; i++)
        tu_run_for(&loop, 20);
    assert_int_equal(k.connected, 2);
    redis_client_free(c);
    connurl_redis_free(&ep);
    tu_loop_close(&loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands_and_pipeline),
        cmocka_unit_test(test_refused_connection_does_not_hang),
        cmocka_unit_test(test_wrong_password_is_reported),
        cmocka_unit_test(test_pending_commands_fail_on_free),
        cmocka_unit_test(test_command_timeout_drops_stalled_connection),
        cmocka_unit_test(test_reconnect_after_restart),
        cmocka_unit_test(test_loading_server_is_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
