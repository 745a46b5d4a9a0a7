/* pgconnect: resolving the host off the loop, then PQconnectPoll (see pg.h). */
#include "pg_intern.h"

#include "log.h"
#include "netaddr.h"

#include <stdlib.h>
#include <string.h>

/* ---- connect ---- */

static void on_connect_timeout(uv_timer_t *t) {
    PgConn *c = t->data;
    char msg[64];
    snprintf(msg, sizeof(msg), "after %u ms", c->timeout_ms);
    pgi_fail(c, ERR_RETRYABLE, "connect timed out", msg);
}

/*
 * PQconnectPoll runs on the thread pool: with SCRAM authentication it derives
 * the client proof (PBKDF2, 4096 rounds), a few milliseconds of CPU that would
 * otherwise stall every other job on the loop while a pool opens connections.
 * The connection is used by one thread at a time: the poll is stopped before
 * the hop and re-armed after it.
 */
static void connect_work(uv_work_t *req) {
    PgConn *c = req->data;
    c->work_status = PQconnectPoll(c->pq);
}

static void connect_after_work(uv_work_t *req, int status) {
    PgConn *c = req->data;
    c->work_active = 0;
    if (c->state == CS_CLOSED) {
        pgi_release(c);
        return;
    }
    if (c->state != CS_CONNECTING)
        return; /* timed out meanwhile: pgi_fail() already reported it */
    if (status != 0) {
        pgi_fail(c, ERR_RETRYABLE, "connect failed", uv_strerror(status));
        return;
    }
    switch (c->work_status) {
    case PGRES_POLLING_OK: {
        uv_timer_stop(&c->timer);
        if (PQsetnonblocking(c->pq, 1) != 0) {
            pgi_fail(c, ERR_RETRYABLE, "cannot enter nonblocking mode", PQerrorMessage(c->pq));
            return;
        }
        PQsetNoticeProcessor(c->pq, pgi_on_notice, c);
        c->state = CS_READY;
        c->op = OP_NONE;
        pgi_watch(c, UV_READABLE);
        c->connect_cb(c, NULL, c->op_data);
        return;
    }
    case PGRES_POLLING_READING:
        pgi_watch(c, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        pgi_watch(c, UV_WRITABLE);
        return;
    default:
        pgi_fail(c, ERR_RETRYABLE, "connect failed", PQerrorMessage(c->pq));
        return;
    }
}

void pgi_connect_step(PgConn *c) {
    if (c->work_active)
        return;
    pgi_watch(c, 0); /* libpq may close or replace the socket in PQconnectPoll */
    c->work.data = c;
    int rc = uv_queue_work(c->loop, &c->work, connect_work, connect_after_work);
    if (rc != 0) {
        pgi_fail(c, ERR_RETRYABLE, "connect failed", uv_strerror(rc));
        return;
    }
    c->work_active = 1;
}

static void start_connect(PgConn *c) {
    c->state = CS_CONNECTING;
    c->pq = PQconnectStartParams((const char *const *)c->keys, (const char *const *)c->vals, 0);
    if (c->pq == NULL) {
        pgi_fail(c, ERR_RETRYABLE, "connect failed", "out of memory");
        return;
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        pgi_fail(c, ERR_PERMANENT, "connect failed", PQerrorMessage(c->pq));
        return;
    }
    /* libpq starts in PGRES_POLLING_WRITING: wait until the socket connects */
    pgi_watch(c, UV_WRITABLE);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    PgConn *c = req->data;
    c->gai_active = 0;
    if (c->state != CS_RESOLVING) { /* closed, or timed out meanwhile */
        uv_freeaddrinfo(res);
        if (c->state == CS_CLOSED)
            pgi_release(c);
        return;
    }
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        pgi_fail(c, ERR_RETRYABLE, "cannot resolve host", uv_strerror(status));
        return;
    }
    char ip[NETADDR_IP_MAX];
    netaddr_first_ip(res, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    int n = 0;
    while (c->keys[n])
        n++;
    c->keys[n] = xstrdup("hostaddr");
    c->vals[n] = xstrdup(ip);
    start_connect(c);
}

static int needs_resolve(const char *host) {
    if (host == NULL || host[0] == '\0' || host[0] == '/' || strchr(host, ','))
        return 0; /* unix socket, default, or a host list libpq handles itself */
    return !netaddr_is_ip(host);
}

PgConn *pg_conn_new(uv_loop_t *loop, const char *conninfo, unsigned timeout_ms, PgConnectCb cb,
                    void *data) {
    PgConn *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->timeout_ms = timeout_ms ? timeout_ms : 10000;
    c->poll_fd = -1;
    c->op = OP_CONNECT;
    c->connect_cb = cb;
    c->op_data = data;
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->kick);
    c->timer.data = c->kick.data = c;
    c->handles_open = 2;

    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (opts == NULL) {
        pgi_fail(c, ERR_PERMANENT, "invalid connection string", "");
        return c;
    }
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    c->keys = xcalloc((size_t)n + 3, sizeof(char *));
    c->vals = xcalloc((size_t)n + 3, sizeof(char *));
    int k = 0, has_app = 0, has_hostaddr = 0;
    const char *host = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "application_name") == 0)
            has_app = 1;
        if (strcmp(o->keyword, "hostaddr") == 0)
            has_hostaddr = 1;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        c->keys[k] = xstrdup(o->keyword);
        c->vals[k] = xstrdup(o->val);
        k++;
    }
    if (!has_app) {
        c->keys[k] = xstrdup("application_name");
        c->vals[k] = xstrdup("backup-worker");
        k++;
    }
    if (!has_hostaddr && needs_resolve(host))
        c->host = xstrdup(host);
    PQconninfoFree(opts);

    uv_timer_start(&c->timer, on_connect_timeout, c->timeout_ms, 0);
    if (c->host != NULL) {
        c->state = CS_RESOLVING;
        c->gai.data = c;
        int rc = netaddr_resolve(loop, &c->gai, on_resolved, c->host);
        if (rc != 0)
            pgi_fail(c, ERR_RETRYABLE, "cannot resolve host", uv_strerror(rc));
        else
            c->gai_active = 1;
    } else {
        start_connect(c);
    }
    return c;
}
