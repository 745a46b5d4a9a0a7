/*
 * redis: reconnecting hiredis client on libuv (see redis.h).
 *
 * States: RESOLVING (uv_getaddrinfo) -> CONNECTING (socket connect, bounded
 * by a timer) -> HANDSHAKE (AUTH, SELECT, SETNAME, PING pipelined; the PING
 * reply marks the end) -> READY. Any failure goes to BACKOFF, whose timer
 * starts RESOLVING again. CLOSED is terminal.
 *
 * hiredis owns the redisAsyncContext: it frees it itself after a failed
 * connect or a disconnect, so c->ac is cleared in those callbacks and never
 * touched again.
 */
#include "redis/redis.h"
#include "base/backoff.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/netaddr.h"
#include "redis/redisuv.h"

#include <hiredis/async.h>
#include <stdlib.h>
#include <string.h>

typedef enum { ST_RESOLVING, ST_CONNECTING, ST_HANDSHAKE, ST_READY, ST_BACKOFF, ST_CLOSED } State;

struct RedisClient {
    uv_loop_t *loop;
    State state;
    redisAsyncContext *ac; /* owned by hiredis once connected */
    char *host, *username, *password, *name;
    int port, db;
    unsigned connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms;
    RedisStateCb on_state;
    void *data;

    uv_getaddrinfo_t gai;
    int gai_active;
    uv_timer_t timer;    /* connect timeout, backoff delay */
    uv_timer_t watchdog; /* stalled-command detection */
    int handles_open;

    unsigned attempt;     /* consecutive failures, for backoff */
    unsigned pending;     /* commands awaiting a reply */
    uint64_t progress_ns; /* last reply, or when pending went from 0 to 1 */
    uint64_t connects;
    int handshake_failed;
    char last_error[256];
};

typedef struct {
    RedisClient *c;
    RedisReplyCb cb;
    void *data;
    int internal; /* handshake command: reply handled here */
} Pending;

static void start_resolve(RedisClient *c);
static void maybe_release(RedisClient *c);
static void schedule_retry(RedisClient *c, const char *why);

static const char *label(const RedisClient *c) {
    return c->name ? c->name : "redis";
}

static void set_last_error(RedisClient *c, const char *msg) {
    snprintf(c->last_error, sizeof(c->last_error), "%s", msg);
}

static void notify(RedisClient *c, int connected, const char *why) {
    if (c->on_state == NULL)
        return;
    Err err;
    err_clear(&err);
    if (!connected)
        err_set(&err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: %s", c->host, c->port, why);
    c->on_state(c, connected, connected ? NULL : &err, c->data);
}

/* ---- replies ---- */

static void on_reply(redisAsyncContext *ac, void *r, void *priv) {
    (void)ac;
    Pending *p = priv;
    RedisClient *c = p->c;
    redisReply *reply = r;
    c->pending--;
    c->progress_ns = uv_hrtime();

    if (p->internal) {
        /* reply NULL: the connection dropped during the handshake; on_disconnect handles it */
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
            /* e.g. -LOADING while a restarted server reads its AOF: retry after a backoff */
            if (!c->handshake_failed) {
                char msg[256];
                snprintf(msg, sizeof(msg), "handshake failed: %.200s", reply->str);
                set_last_error(c, msg);
            }
            c->handshake_failed = 1;
        }
        if (reply != NULL && p->internal == 2 && c->state == ST_HANDSHAKE) { /* the final PING */
            if (c->handshake_failed) {
                redisAsyncDisconnect(c->ac);
            } else {
                c->state = ST_READY;
                c->attempt = 0;
                if (c->connects++ > 0)
                    log_info(NULL, "%s: reconnected to %s:%d", label(c), c->host, c->port);
                c->last_error[0] = '\0';
                notify(c, 1, NULL);
            }
        }
        free(p);
        return;
    }

    Err err;
    err_clear(&err);
    if (reply == NULL) {
        if (c->state == ST_CLOSED)
            err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "redis client closed");
        else
            err_set(&err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: connection lost", c->host,
                    c->port);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        err_set(&err, ERR_PERMANENT, ERR_CODE_REDIS, "redis: %.400s", reply->str);
    }
    p->cb(c, reply, err_is_set(&err) ? &err : NULL, p->data);
    free(p);
}

static int send_argv(RedisClient *c, RedisReplyCb cb, void *data, int internal, int argc,
                     const char **argv, const size_t *argvlen) {
    Pending *p = xcalloc(1, sizeof(*p));
    p->c = c;
    p->cb = cb;
    p->data = data;
    p->internal = internal;
    if (redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        free(p);
        return -1;
    }
    if (c->pending++ == 0)
        c->progress_ns = uv_hrtime();
    return 0;
}

int redis_command_argv(RedisClient *c, RedisReplyCb cb, void *data, int argc, const char **argv,
                       const size_t *argvlen, Err *err) {
    if (c->state != ST_READY || c->ac == NULL) {
        err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: not connected%s%s", c->host,
                c->port, c->last_error[0] ? ": " : "", c->last_error);
        return -1;
    }
    if (send_argv(c, cb, data, 0, argc, argv, argvlen) != 0) {
        err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: cannot send command", c->host,
                c->port);
        return -1;
    }
    return 0;
}

int redis_command(RedisClient *c, RedisReplyCb cb, void *data, Err *err, const char *fmt, ...) {
    if (c->state != ST_READY || c->ac == NULL) {
        err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: not connected%s%s", c->host,
                c->port, c->last_error[0] ? ": " : "", c->last_error);
        return -1;
    }
    Pending *p = xcalloc(1, sizeof(*p));
    p->c = c;
    p->cb = cb;
    p->data = data;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(c->ac, on_reply, p, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(p);
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "redis: cannot format command");
        return -1;
    }
    if (c->pending++ == 0)
        c->progress_ns = uv_hrtime();
    return 0;
}

/* ---- connection lifecycle ---- */

static void handshake(RedisClient *c) {
    c->state = ST_HANDSHAKE;
    c->handshake_failed = 0;
    if (c->password != NULL) {
        if (c->username != NULL) {
            const char *argv[] = {"AUTH", c->username, c->password};
            send_argv(c, NULL, NULL, 1, 3, argv, NULL);
        } else {
            const char *argv[] = {"AUTH", c->password};
            send_argv(c, NULL, NULL, 1, 2, argv, NULL);
        }
    }
    if (c->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", c->db);
        const char *argv[] = {"SELECT", db};
        send_argv(c, NULL, NULL, 1, 2, argv, NULL);
    }
    if (c->name != NULL) {
        const char *argv[] = {"CLIENT", "SETNAME", c->name};
        send_argv(c, NULL, NULL, 1, 3, argv, NULL);
    }
    const char *ping[] = {"PING"};
    send_argv(c, NULL, NULL, 2, 1, ping, NULL);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    RedisClient *c = ac->data;
    uv_timer_stop(&c->timer);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback returns */
        char msg[256];
        snprintf(msg, sizeof(msg), "connect failed: %.200s", ac->errstr);
        c->ac = NULL;
        if (c->state != ST_CLOSED)
            schedule_retry(c, msg);
        return;
    }
    if (c->state == ST_CLOSED)
        return;
    handshake(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    RedisClient *c = ac->data;
    int was_ready = c->state == ST_READY;
    c->ac = NULL;
    c->pending = 0;
    if (c->state == ST_CLOSED)
        return;
    char msg[256];
    if (status != REDIS_OK)
        snprintf(msg, sizeof(msg), "connection lost: %.200s", ac->errstr);
    else
        snprintf(msg, sizeof(msg), "%s", c->last_error[0] ? c->last_error : "disconnected");
    if (was_ready)
        notify(c, 0, msg);
    schedule_retry(c, msg);
}

static void on_connect_timeout(uv_timer_t *t) {
    RedisClient *c = t->data;
    if (c->state != ST_CONNECTING || c->ac == NULL)
        return;
    /* Not yet connected: hiredis calls no callback on free, so we retry ourselves. */
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    redisAsyncFree(ac);
    schedule_retry(c, "connect timed out");
}

static void connect_to(RedisClient *c, const char *ip) {
    c->state = ST_CONNECTING;
    redisAsyncContext *ac = redisAsyncConnect(ip, c->port);
    if (ac == NULL) {
        schedule_retry(c, "cannot allocate a connection");
        return;
    }
    if (ac->err) {
        char msg[256];
        snprintf(msg, sizeof(msg), "connect failed: %.200s", ac->errstr);
        redisAsyncFree(ac);
        schedule_retry(c, msg);
        return;
    }
    if (redisuv_attach(ac, c->loop) != 0) {
        redisAsyncFree(ac);
        schedule_retry(c, "cannot watch the socket");
        return;
    }
    ac->data = c;
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* hiredis 0.14 only learns that connect() finished from a write event */
    ac->ev.addWrite(ac->ev.data);
    uv_timer_start(&c->timer, on_connect_timeout, c->connect_timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    RedisClient *c = req->data;
    c->gai_active = 0;
    if (c->state == ST_CLOSED) {
        uv_freeaddrinfo(res);
        maybe_release(c);
        return;
    }
    if (status != 0 || res == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "cannot resolve host: %s", uv_strerror(status));
        uv_freeaddrinfo(res);
        schedule_retry(c, msg);
        return;
    }
    char ip[NETADDR_IP_MAX];
    netaddr_first_ip(res, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    connect_to(c, ip);
}

static void start_resolve(RedisClient *c) {
    if (netaddr_is_ip(c->host)) {
        connect_to(c, c->host);
        return;
    }
    c->state = ST_RESOLVING;
    c->gai.data = c;
    int rc = netaddr_resolve(c->loop, &c->gai, on_resolved, c->host);
    if (rc != 0) {
        schedule_retry(c, uv_strerror(rc));
        return;
    }
    c->gai_active = 1;
}

static void on_backoff_done(uv_timer_t *t) {
    RedisClient *c = t->data;
    if (c->state == ST_BACKOFF)
        start_resolve(c);
}

static void schedule_retry(RedisClient *c, const char *why) {
    set_last_error(c, why);
    /* "equal jitter": a reconnect waits at least half the bound */
    Backoff b = {c->backoff_min_ms, c->backoff_max_ms, 0.5};
    uint64_t delay = backoff_delay_ms(&b, (int)c->attempt + 1);
    c->attempt++;
    if (c->attempt == 1 || c->attempt % 10 == 0)
        log_warn(NULL, "%s: %s:%d %s; retrying in %llu ms (attempt %u)", label(c), c->host, c->port,
                 why, (unsigned long long)delay, c->attempt);
    c->state = ST_BACKOFF;
    uv_timer_start(&c->timer, on_backoff_done, delay, 0);
}

static void on_watchdog(uv_timer_t *t) {
    RedisClient *c = t->data;
    if (c->command_timeout_ms == 0 || c->pending == 0 || c->ac == NULL)
        return;
    if (c->state != ST_READY && c->state != ST_HANDSHAKE)
        return;
    uint64_t idle_ms = (uv_hrtime() - c->progress_ns) / 1000000u;
    if (idle_ms < c->command_timeout_ms)
        return;
    log_warn(NULL, "%s: no reply for %llu ms with %u commands pending; dropping the connection",
             label(c), (unsigned long long)idle_ms, c->pending);
    set_last_error(c, "command timed out");
    /* redisAsyncFree fails every pending command with a NULL reply, then runs
     * on_disconnect (the context was connected), which schedules the retry. */
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);
}

RedisClient *redis_client_new(uv_loop_t *loop, const RedisOptions *o) {
    RedisClient *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->host = xstrdup(o->host ? o->host : "127.0.0.1");
    c->port = o->port ? o->port : 6379;
    c->username = o->username ? xstrdup(o->username) : NULL;
    c->password = o->password ? xstrdup(o->password) : NULL;
    c->name = o->name ? xstrdup(o->name) : NULL;
    c->db = o->db;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
    c->command_timeout_ms = o->command_timeout_ms;
    c->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : 100;
    c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    if (c->backoff_max_ms < c->backoff_min_ms)
        c->backoff_max_ms = c->backoff_min_ms;
    c->on_state = o->on_state;
    c->data = o->data;
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->watchdog);
    c->timer.data = c->watchdog.data = c;
    c->handles_open = 2;
    uv_timer_start(&c->watchdog, on_watchdog, 250, 250);
    uv_unref((uv_handle_t *)&c->watchdog);
    start_resolve(c);
    return c;
}

/* Freed once both timers are closed and no getaddrinfo request is out. */
static void maybe_release(RedisClient *c) {
    if (c->handles_open > 0 || c->gai_active)
        return;
    free(c->host);
    free(c->username);
    free(c->password);
    free(c->name);
    free(c);
}

static void on_handle_closed(uv_handle_t *h) {
    RedisClient *c = h->data;
    c->handles_open--;
    maybe_release(c);
}

void redis_client_free(RedisClient *c) {
    if (c == NULL)
        return;
    c->state = ST_CLOSED;
    if (c->gai_active)
        uv_cancel((uv_req_t *)&c->gai);
    if (c->ac != NULL) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks see ST_CLOSED: cancelled */
    }
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->watchdog, on_handle_closed);
}

int redis_client_connected(const RedisClient *c) {
    return c->state == ST_READY;
}

uint64_t redis_client_reconnects(const RedisClient *c) {
    return c->connects > 0 ? c->connects - 1 : 0;
}

const char *redis_client_last_error(const RedisClient *c) {
    return c->last_error;
}

void *redis_client_data(const RedisClient *c) {
    return c->data;
}
