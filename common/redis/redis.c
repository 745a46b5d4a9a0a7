/*
 * redis: a reconnecting Redis client on libuv, plain or TLS (see redis.h).
 *
 * Our own connection on a uv_tcp_t: hiredis 0.14 lends its RESP reader (redisReader) and its
 * command formatter (redisFormatCommandArgv) and nothing else, so one code path carries plain
 * text and TLS (io/tls.h: OpenSSL over memory BIOs, the bytes moved here). Replies come back in
 * the order the commands went out: a FIFO of pending commands pairs them.
 *
 * States: RESOLVING (uv_getaddrinfo) -> CONNECTING (TCP, then the TLS handshake; bounded by a
 * timer) -> HANDSHAKE (AUTH, SELECT, SETNAME, PING pipelined; the PING reply marks the end) ->
 * READY. Any failure drops the connection (every pending command gets a retryable error) and
 * goes to BACKOFF, whose timer starts RESOLVING again. CLOSED is terminal.
 *
 * A connection (Conn) outlives its use: uv_close is asynchronous, so a dropped one is detached
 * (its client pointer cleared) and frees itself once libuv has closed it.
 */
#include "redis/redis.h"
#include "base/backoff.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/netaddr.h"

#include <stdlib.h>
#include <string.h>

typedef enum { ST_RESOLVING, ST_CONNECTING, ST_HANDSHAKE, ST_READY, ST_BACKOFF, ST_CLOSED } State;

typedef struct Pending Pending;
typedef struct Conn Conn;

struct RedisClient {
    uv_loop_t *loop;
    State state;
    Conn *conn; /* the connection in use, NULL when none */
    char *host, *username, *password, *name;
    int port, db;
    TlsConfig *tls; /* borrowed; NULL: plain text */
    unsigned connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms;
    RedisStateCb on_state;
    void *data;

    uv_getaddrinfo_t gai;
    int gai_active;
    uv_timer_t timer;    /* connect timeout, backoff delay */
    uv_timer_t watchdog; /* stalled-command detection */
    uv_idle_t flusher;   /* the commands of one loop turn leave in one write (one TLS record) */
    int flushing;
    int handles_open;

    Pending *head, *tail; /* commands awaiting a reply, in the order sent */
    unsigned attempt;     /* consecutive failures, for backoff */
    unsigned pending;     /* commands awaiting a reply */
    uint64_t progress_ns; /* last reply, or when pending went from 0 to 1 */
    uint64_t connects;
    int handshake_failed;
    int said_tls; /* the TLS version was logged once */
    char last_error[256];

    /* Redis Cluster (redis.h): the one slot served, the nodes learnt, where to go next */
    int cluster_mode, is_cluster;
    int slot, slot_tagged; /* slot_key's slot; 1 when slot_key holds a {hash tag} */
    char conn_ip[64];      /* the address the current connection dialled */
    char **nodes;          /* "host:port" of every node CLUSTER SLOTS named, and the seed */
    int nnodes, next_node;
    char redirect[80]; /* the owner to dial now ("" none): MOVED, or the handshake found it */
};

struct Conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    RedisClient *c; /* NULL once detached */
    TlsSession *tls;
    redisReader *reader;
    Buf plain, wire;
    Buf out;          /* commands not yet written: sent together at the end of the loop turn */
    char rbuf[65536]; /* every read lands here (libuv reads one buffer at a time) */
};

struct Pending {
    Pending *next;
    RedisReplyCb cb;
    void *data;
    int internal; /* handshake command: reply handled here (2: the final PING) */
    char cmd[24]; /* its name, for an ACL refusal's message */
};

static void start_resolve(RedisClient *c);
static void maybe_release(RedisClient *c);
static void schedule_retry(RedisClient *c, const char *why);
static void drop(RedisClient *c, const char *why);
static void handshake(RedisClient *c);

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

/* ---- Redis Cluster ---- */

/* CRC16-CCITT (XMODEM), as Redis Cluster hashes keys: CRC16("123456789") is 0x31C3. */
static unsigned crc16(const char *buf, size_t len) {
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

/* The {hash tag} of a key (its first non-empty {...}), or NULL. */
static const char *hash_tag(const char *key, size_t len, size_t *taglen) {
    const char *open = memchr(key, '{', len);
    if (open == NULL)
        return NULL;
    const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
    if (close == NULL || close == open + 1)
        return NULL;
    *taglen = (size_t)(close - open - 1);
    return open + 1;
}

int redis_key_slot(const char *key, size_t len) {
    size_t n;
    const char *tag = hash_tag(key, len, &n);
    return (int)(tag ? crc16(tag, n) : crc16(key, len)) & 16383;
}

static void learn_node(RedisClient *c, const char *host, long long port) {
    char hp[80];
    snprintf(hp, sizeof(hp), "%s:%lld", host, port);
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i], hp) == 0)
            return;
    c->nodes = xrealloc(c->nodes, (size_t)(c->nnodes + 1) * sizeof(char *));
    c->nodes[c->nnodes++] = xstrdup(hp);
}

/* Dial hp ("host:port") from now on. */
static void retarget(RedisClient *c, const char *hp) {
    const char *colon = strrchr(hp, ':');
    if (colon == NULL || colon == hp)
        return;
    free(c->host);
    c->host = xmalloc((size_t)(colon - hp) + 1);
    memcpy(c->host, hp, (size_t)(colon - hp));
    c->host[colon - hp] = '\0';
    c->port = atoi(colon + 1);
}

/* The handshake's CLUSTER SLOTS: learn the nodes, find the slot's master. */
static void on_slots(RedisClient *c, const redisReply *r) {
    if (r->type == REDIS_REPLY_ERROR) {
        if (c->cluster_mode == 1 && !c->handshake_failed) {
            char msg[256];
            snprintf(msg, sizeof(msg),
                     "REDIS_CLUSTER=on, but this server is no cluster node: %.150s", r->str);
            set_last_error(c, msg);
            c->handshake_failed = 1;
        }
        return; /* auto: a single server */
    }
    if (r->type != REDIS_REPLY_ARRAY)
        return;
    c->is_cluster = 1;
    if (!c->slot_tagged) {
        if (!c->handshake_failed)
            set_last_error(c, "Redis Cluster: REDIS_PREFIX must hold a hash tag, {backup} for one, "
                              "so that every key of the queue is in one slot (proto/README.md, "
                              "\"Redis Cluster\")");
        c->handshake_failed = 1;
        return;
    }
    char owner[80] = "";
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3)
            continue;
        for (size_t j = 2; j < e->elements; j++) {
            const redisReply *n = e->element[j];
            if (n->type != REDIS_REPLY_ARRAY || n->elements < 2 ||
                n->element[0]->type != REDIS_REPLY_STRING ||
                n->element[1]->type != REDIS_REPLY_INTEGER)
                continue;
            /* "" or "?": the address this connection used */
            const char *host = n->element[0]->len && strcmp(n->element[0]->str, "?") != 0
                                   ? n->element[0]->str
                                   : c->conn_ip;
            learn_node(c, host, n->element[1]->integer);
            if (j == 2 && e->element[0]->integer <= c->slot && c->slot <= e->element[1]->integer)
                snprintf(owner, sizeof(owner), "%s:%lld", host, n->element[1]->integer);
        }
    }
    char here[80];
    snprintf(here, sizeof(here), "%s:%d", c->conn_ip, c->port);
    if (owner[0] && strcmp(owner, here) != 0)
        snprintf(c->redirect, sizeof(c->redirect), "%s", owner);
}

/* ---- replies ---- */

static Pending *pop(RedisClient *c) {
    Pending *p = c->head;
    if (p) {
        c->head = p->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->pending--;
    }
    return p;
}

/* One reply (NULL: the connection is gone) to the oldest pending command. */
static void deliver(RedisClient *c, Pending *p, redisReply *reply) {
    c->progress_ns = uv_hrtime();
    if (p->internal == 3) { /* CLUSTER SLOTS */
        if (reply != NULL)
            on_slots(c, reply);
        free(p);
        return;
    }
    if (p->internal) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
            /* e.g. -LOADING while a restarted server reads its AOF, -WRONGPASS: after a backoff */
            if (!c->handshake_failed) {
                char msg[256];
                snprintf(msg, sizeof(msg), "handshake failed: %.200s", reply->str);
                set_last_error(c, msg);
            }
            c->handshake_failed = 1;
        }
        if (reply != NULL && p->internal == 2 && c->state == ST_HANDSHAKE) { /* the final PING */
            if (c->handshake_failed) {
                drop(c, c->last_error);
            } else if (c->redirect[0]) { /* another node serves the slot: dial it at once */
                char to[80], msg[160];
                snprintf(to, sizeof(to), "%s", c->redirect);
                c->redirect[0] = '\0';
                snprintf(msg, sizeof(msg), "the slot of the queue is served by %s", to);
                retarget(c, to);
                c->attempt = 0;
                drop(c, msg);
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
    char moved[80] = "";
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        (strncmp(reply->str, "MOVED ", 6) == 0 || strncmp(reply->str, "ASK ", 4) == 0 ||
         strncmp(reply->str, "TRYAGAIN", 8) == 0 || strncmp(reply->str, "CLUSTERDOWN", 11) == 0)) {
        /* the cluster changes under us (a failover, a resharding): a retryable error, as for a
         * restart; MOVED also says where the slot went, dialled at once */
        if (strncmp(reply->str, "MOVED ", 6) == 0) {
            const char *to = strchr(reply->str + 6, ' ');
            if (to)
                snprintf(moved, sizeof(moved), "%s", to + 1);
        }
        err_set(&err, ERR_RETRYABLE, ERR_CODE_CONNECT,
                "redis %s:%d: %.200s (the cluster is changing: retried)", c->host, c->port,
                reply->str);
        p->cb(c, NULL, &err, p->data);
        free(p);
        if (moved[0] && c->conn != NULL) {
            char msg[160];
            snprintf(msg, sizeof(msg), "MOVED: the slot of the queue is now served by %s", moved);
            retarget(c, moved);
            c->attempt = 0;
            drop(c, msg);
        }
        return;
    }
    if (reply == NULL) {
        if (c->state == ST_CLOSED)
            err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "redis client closed");
        else
            err_set(&err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: connection lost", c->host,
                    c->port);
    } else if (reply->type == REDIS_REPLY_ERROR &&
               (strncmp(reply->str, "NOPERM", 6) == 0 ||
                strstr(reply->str, "user executing the script can't run") != NULL)) {
        /* an ACL user without a right the worker needs (Redis 7 says NOPERM for a command, and
         * this for one a script runs): say so, and where the rule is */
        err_set(&err, ERR_PERMANENT, ERR_CODE_REDIS,
                "redis: the ACL user %s may not run %s%s here: %.300s (deploy/README.md, "
                "\"Redis\", gives the rule the worker needs)",
                c->username ? c->username : "default", p->cmd,
                strncmp(reply->str, "NOPERM", 6) == 0 ? "" : " (a command its script runs)",
                reply->str);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        err_set(&err, ERR_PERMANENT, ERR_CODE_REDIS, "redis: %.400s", reply->str);
    }
    p->cb(c, reply, err_is_set(&err) ? &err : NULL, p->data);
    free(p);
}

/* ---- the wire ---- */

/* The peer ended the connection (a read or a write failed). */
static void lost(RedisClient *c, Conn *k, const char *why) {
    char msg[256];
    const char *hint = k->tls ? tls_config_client_hint(c->tls) : NULL;
    if (k->tls && c->state == ST_HANDSHAKE && hint)
        /* TLS 1.3: a server that wants a client certificate says so after the handshake, and
         * its reset can overtake the alert */
        snprintf(msg, sizeof(msg),
                 "connection lost as the TLS session began: %s (a server that requires a client "
                 "certificate ends it so; %s)",
                 why, hint);
    else
        snprintf(msg, sizeof(msg), "connection lost: %s", why);
    drop(c, msg);
}

typedef struct {
    uv_write_t req;
    char *bytes;
} WriteReq;

static void on_written(uv_write_t *req, int status) {
    WriteReq *w = (WriteReq *)req;
    Conn *k = req->handle->data;
    free(w->bytes);
    free(w);
    if (status < 0 && status != UV_ECANCELED && k->c != NULL)
        lost(k->c, k, uv_strerror(status));
}

/* Hand bytes (taken: malloc'd) to the socket. */
static void put_bytes(Conn *k, char *bytes, size_t len) {
    WriteReq *w = xcalloc(1, sizeof(*w));
    w->bytes = bytes;
    uv_buf_t b = uv_buf_init(bytes, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&k->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(bytes);
        free(w);
        char msg[128];
        snprintf(msg, sizeof(msg), "cannot write: %s", uv_strerror(rc));
        drop(k->c, msg);
    }
}

/* What the TLS session must send now (handshake records, encrypted data). */
static void flush_tls(Conn *k) {
    tls_session_output(k->tls, &k->wire);
    if (k->wire.len == 0)
        return;
    char *bytes = xmalloc(k->wire.len);
    memcpy(bytes, k->wire.data, k->wire.len);
    size_t n = k->wire.len;
    buf_reset(&k->wire);
    put_bytes(k, bytes, n);
}

/* The commands queued this loop turn, in one write: one syscall, and under TLS one record,
 * instead of one per command (hiredis's own async context batches the same way). */
static void on_flush(uv_idle_t *h) {
    RedisClient *c = h->data;
    uv_idle_stop(h);
    c->flushing = 0;
    Conn *k = c->conn;
    if (k == NULL || k->out.len == 0)
        return;
    if (k->tls == NULL) {
        char *bytes = xmalloc(k->out.len);
        memcpy(bytes, k->out.data, k->out.len);
        size_t n = k->out.len;
        buf_reset(&k->out);
        put_bytes(k, bytes, n);
        return;
    }
    Err err;
    int rc = tls_session_write(k->tls, k->out.data, k->out.len, &err);
    buf_reset(&k->out);
    if (rc != 0) {
        drop(c, err.msg);
        return;
    }
    flush_tls(k);
}

/* A formatted command (taken) onto the connection, written at the end of the loop turn. */
static void send_bytes(RedisClient *c, char *cmd, size_t len) {
    buf_append(&c->conn->out, cmd, len);
    free(cmd);
    if (!c->flushing) {
        c->flushing = 1;
        uv_idle_start(&c->flusher, on_flush);
    }
}

/* A formatted command (taken) queued for its reply and sent; name names it in ACL messages. */
static void enqueue(RedisClient *c, RedisReplyCb cb, void *data, int internal, char *cmd,
                    size_t len, const char *name, size_t namelen) {
    Pending *p = xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->data = data;
    p->internal = internal;
    snprintf(p->cmd, sizeof(p->cmd), "%.*s", (int)namelen, name);
    if (c->pending++ == 0)
        c->progress_ns = uv_hrtime();
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    send_bytes(c, cmd, len);
}

static int send_argv(RedisClient *c, RedisReplyCb cb, void *data, int internal, int argc,
                     const char **argv, const size_t *argvlen) {
    if (c->conn == NULL) /* dropped during a pipeline (the handshake's) */
        return -1;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return -1;
    enqueue(c, cb, data, internal, cmd, (size_t)len, argv[0],
            argvlen ? argvlen[0] : strlen(argv[0]));
    return 0;
}

/* 0 when commands may be sent, else -1 with err saying why not. */
static int not_ready(const RedisClient *c, Err *err) {
    if (c->state == ST_READY && c->conn != NULL)
        return 0;
    err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "redis %s:%d: not connected%s%s", c->host,
            c->port, c->last_error[0] ? ": " : "", c->last_error);
    return -1;
}

int redis_command_argv(RedisClient *c, RedisReplyCb cb, void *data, int argc, const char **argv,
                       const size_t *argvlen, Err *err) {
    if (not_ready(c, err) != 0)
        return -1;
    if (send_argv(c, cb, data, 0, argc, argv, argvlen) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "redis: cannot format command");
        return -1;
    }
    return 0;
}

int redis_vcommand(RedisClient *c, RedisReplyCb cb, void *data, Err *err, const char *fmt,
                   va_list ap) {
    if (not_ready(c, err) != 0)
        return -1;
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "redis: cannot format command");
        return -1;
    }
    enqueue(c, cb, data, 0, cmd, (size_t)len, fmt, strcspn(fmt, " "));
    return 0;
}

int redis_command(RedisClient *c, RedisReplyCb cb, void *data, Err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = redis_vcommand(c, cb, data, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* Replies in the plaintext just read, each to its command. */
static void parse(RedisClient *c, Conn *k, const char *buf, size_t len) {
    if (redisReaderFeed(k->reader, buf, len) != REDIS_OK) {
        drop(c, "protocol error");
        return;
    }
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(k->reader, &reply) != REDIS_OK) {
            char msg[192];
            snprintf(msg, sizeof(msg), "protocol error: %.150s", k->reader->errstr);
            drop(c, msg);
            return;
        }
        if (reply == NULL)
            return;
        Pending *p = pop(c);
        if (p == NULL) { /* a reply nobody asked for: the stream is out of step */
            freeReplyObject(reply);
            drop(c, "protocol error: a reply to no command");
            return;
        }
        deliver(c, p, reply);
        freeReplyObject(reply);
        if (c->conn != k) /* a callback closed the client, or the connection dropped */
            return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    Conn *k = h->data;
    buf->base = k->rbuf;
    buf->len = sizeof(k->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    Conn *k = s->data;
    RedisClient *c = k->c;
    if (c == NULL || n <= 0) {
        if (c != NULL && n < 0)
            lost(c, k, n == UV_EOF ? "closed by the server" : uv_strerror((int)n));
        return;
    }
    if (k->tls == NULL) {
        parse(c, k, buf->base, (size_t)n);
        return;
    }
    int was = tls_session_established(k->tls);
    tls_session_feed(k->tls, buf->base, (size_t)n);
    Err err;
    buf_reset(&k->plain);
    int rc = tls_session_read(k->tls, &k->plain, &err);
    flush_tls(k);
    if (c->conn != k)
        return;
    if (rc != 0) {
        drop(c, err.msg);
        return;
    }
    if (!was && tls_session_established(k->tls)) {
        if (!c->said_tls) {
            char d[96];
            log_info(NULL, "%s: TLS to %s:%d (%s), the server's certificate verified", label(c),
                     c->host, c->port, tls_session_describe(k->tls, d, sizeof(d)));
            c->said_tls = 1;
        }
        handshake(c);
        if (c->conn != k)
            return;
    }
    if (k->plain.len)
        parse(c, k, k->plain.data, k->plain.len);
}

/* ---- connection lifecycle ---- */

static void handshake(RedisClient *c) {
    uv_timer_stop(&c->timer);
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
    if (c->cluster_mode) {
        const char *slots[] = {"CLUSTER", "SLOTS"};
        send_argv(c, NULL, NULL, 3, 2, slots, NULL);
    }
    const char *ping[] = {"PING"};
    send_argv(c, NULL, NULL, 2, 1, ping, NULL);
}

static void on_conn_closed(uv_handle_t *h) {
    Conn *k = h->data;
    tls_session_free(k->tls);
    redisReaderFree(k->reader);
    buf_free(&k->plain);
    buf_free(&k->wire);
    buf_free(&k->out);
    free(k);
}

/* The connection is gone (or given up): close it, answer every pending command (connection
 * lost, or cancelled once the client is closed), and unless closed, retry after a backoff. */
static void drop(RedisClient *c, const char *why) {
    Conn *k = c->conn;
    if (k == NULL)
        return;
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", why); /* why may live in what goes now */
    c->conn = NULL;
    k->c = NULL;
    uv_timer_stop(&c->timer);
    int was_ready = c->state == ST_READY;
    if (c->state != ST_CLOSED)
        c->state = ST_BACKOFF; /* no new command while the pending ones are answered */
    uv_read_stop((uv_stream_t *)&k->tcp);
    uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
    Pending *p;
    while ((p = pop(c)) != NULL)
        deliver(c, p, NULL);
    c->pending = 0;
    if (c->state == ST_CLOSED) /* closed, perhaps by a callback just now */
        return;
    if (was_ready)
        notify(c, 0, msg);
    if (c->state != ST_CLOSED)
        schedule_retry(c, msg);
}

static void on_tcp_connect(uv_connect_t *req, int status) {
    Conn *k = req->data;
    RedisClient *c = k->c;
    if (c == NULL) /* given up meanwhile */
        return;
    if (status < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "connect failed: %s", uv_strerror(status));
        drop(c, msg);
        return;
    }
    uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (c->tls != NULL) { /* the TLS handshake first, under the same connect timeout */
        Err err;
        k->tls = tls_session_new(c->tls, c->host, &err);
        if (k->tls == NULL) {
            drop(c, err.msg);
            return;
        }
        flush_tls(k);
        return;
    }
    uv_timer_stop(&c->timer);
    handshake(c);
}

static void on_connect_timeout(uv_timer_t *t) {
    RedisClient *c = t->data;
    if (c->state != ST_CONNECTING || c->conn == NULL)
        return;
    drop(c, c->conn->tls ? "the TLS handshake timed out: the server did not answer in TLS (a "
                           "plain-text port, or a stalled server?)"
                         : "connect timed out");
}

static void connect_to(RedisClient *c, const char *ip) {
    c->state = ST_CONNECTING;
    snprintf(c->conn_ip, sizeof(c->conn_ip), "%s", ip);
    struct sockaddr_storage sa;
    int rc = strchr(ip, ':') ? uv_ip6_addr(ip, c->port, (struct sockaddr_in6 *)&sa)
                             : uv_ip4_addr(ip, c->port, (struct sockaddr_in *)&sa);
    if (rc != 0) {
        schedule_retry(c, "not an address");
        return;
    }
    Conn *k = xcalloc(1, sizeof(*k));
    uv_tcp_init(c->loop, &k->tcp);
    k->tcp.data = k;
    k->creq.data = k;
    k->c = c;
    k->reader = redisReaderCreate();
    c->conn = k;
    uv_tcp_nodelay(&k->tcp, 1);
    uv_timer_start(&c->timer, on_connect_timeout, c->connect_timeout_ms, 0);
    rc = uv_tcp_connect(&k->creq, &k->tcp, (const struct sockaddr *)&sa, on_tcp_connect);
    if (rc != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "connect failed: %s", uv_strerror(rc));
        drop(c, msg);
    }
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
    /* a cluster's node failed: the next attempt asks another one where the slot went (after a
     * failover, its promoted replica) */
    if (c->is_cluster && c->attempt > 0 && c->nnodes > 1)
        retarget(c, c->nodes[c->next_node++ % c->nnodes]);
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
    if (c->command_timeout_ms == 0 || c->pending == 0 || c->conn == NULL)
        return;
    if (c->state != ST_READY && c->state != ST_HANDSHAKE)
        return;
    uint64_t idle_ms = (uv_hrtime() - c->progress_ns) / 1000000u;
    if (idle_ms < c->command_timeout_ms)
        return;
    log_warn(NULL, "%s: no reply for %llu ms with %u commands pending; dropping the connection",
             label(c), (unsigned long long)idle_ms, c->pending);
    drop(c, "command timed out");
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
    c->tls = o->tls;
    c->cluster_mode = o->cluster;
    if (c->cluster_mode) /* the seed is a node to come back to */
        learn_node(c, c->host, c->port);
    if (o->slot_key) {
        size_t n;
        c->slot = redis_key_slot(o->slot_key, strlen(o->slot_key));
        c->slot_tagged = hash_tag(o->slot_key, strlen(o->slot_key), &n) != NULL;
    }
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
    uv_idle_init(loop, &c->flusher);
    c->timer.data = c->watchdog.data = c->flusher.data = c;
    c->handles_open = 3;
    uv_timer_start(&c->watchdog, on_watchdog, 250, 250);
    uv_unref((uv_handle_t *)&c->watchdog);
    start_resolve(c);
    return c;
}

/* Freed once both timers are closed and no getaddrinfo request is out. */
static void maybe_release(RedisClient *c) {
    if (c->handles_open > 0 || c->gai_active)
        return;
    for (int i = 0; i < c->nnodes; i++)
        free(c->nodes[i]);
    free(c->nodes);
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
    drop(c, "closed"); /* pending callbacks see ST_CLOSED: cancelled */
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->watchdog, on_handle_closed);
    uv_close((uv_handle_t *)&c->flusher, on_handle_closed);
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

int redis_client_is_cluster(const RedisClient *c) {
    return c->is_cluster;
}
