/*
 * pgpool: connection pool (see pgpool.h).
 *
 * Every hand-out happens in the `dispatch` timer callback on the next loop
 * pass, so acquire and release never call user code inside their own frame
 * and a released connection is never handed to someone while its previous
 * user is still unwinding.
 */
#include "pg/pgpool.h"
#include "base/buf.h"
#include "base/log.h"

#include <stdlib.h>
#include <string.h>

typedef enum { SLOT_FREE = 0, SLOT_CONNECTING, SLOT_IDLE, SLOT_LEASED } SlotState;

typedef struct {
    PgConn *conn;
    SlotState state;
} Slot;

typedef struct Waiter {
    struct Waiter *next;
    PgAcquireCb cb;
    void *data;
} Waiter;

struct PgPool {
    uv_loop_t *loop;
    char *conninfo;
    unsigned connect_timeout_ms;
    int max;
    Slot *slots;
    Waiter *head, *tail;
    int waiting;
    uv_timer_t dispatch;
    unsigned retry_ms; /* backoff before the next connect after a failure */
    int closing;
    int timers_open;
    char last_error[ERR_MSG_MAX];
};

static void schedule(PgPool *p);
static void on_dispatch_timer(uv_timer_t *t);

static Slot *slot_of(PgPool *p, PgConn *conn) {
    for (int i = 0; i < p->max; i++)
        if (p->slots[i].conn == conn)
            return &p->slots[i];
    return NULL;
}

static int count(const PgPool *p, SlotState st) {
    int n = 0;
    for (int i = 0; i < p->max; i++)
        n += p->slots[i].state == st;
    return n;
}

static void maybe_release_pool(PgPool *p) {
    if (!p->closing || p->timers_open > 0 || count(p, SLOT_LEASED) > 0)
        return;
    free(p->slots);
    free(p->conninfo);
    free(p);
}

static void drop(Slot *s) {
    PgConn *conn = s->conn;
    s->conn = NULL;
    s->state = SLOT_FREE;
    if (conn)
        pg_conn_free(conn);
}

static Waiter *pop_waiter(PgPool *p) {
    Waiter *w = p->head;
    if (w) {
        p->head = w->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->waiting--;
    }
    return w;
}

static void fail_waiters(PgPool *p, const Err *err) {
    Waiter *w;
    while ((w = pop_waiter(p)) != NULL) {
        w->cb(p, NULL, err, w->data);
        free(w);
    }
}

static void on_idle_broken(PgConn *conn, void *data) {
    PgPool *p = data;
    Slot *s = slot_of(p, conn);
    if (s && s->state == SLOT_IDLE) {
        log_debug(NULL, "postgres pool: dropping a connection that broke while idle");
        drop(s);
    }
}

static void on_connected(PgConn *conn, const Err *err, void *data) {
    PgPool *p = data;
    Slot *s = slot_of(p, conn);
    if (s == NULL)
        return; /* pool closing: pg_conn_free() reported the cancel */
    if (err) {
        snprintf(p->last_error, sizeof(p->last_error), "%s", err->msg);
        drop(s);
        /* nobody can serve the waiters: fail them rather than let them hang */
        if (count(p, SLOT_IDLE) + count(p, SLOT_LEASED) + count(p, SLOT_CONNECTING) == 0) {
            fail_waiters(p, err);
            return;
        }
        /* others may still serve them; try again later, not in a tight loop */
        p->retry_ms = p->retry_ms ? p->retry_ms * 2 : 50;
        if (p->retry_ms > 2000)
            p->retry_ms = 2000;
        uv_timer_start(&p->dispatch, on_dispatch_timer, p->retry_ms, 0);
        return;
    }
    p->last_error[0] = '\0';
    p->retry_ms = 0;
    s->state = SLOT_IDLE;
    pg_conn_set_on_broken(conn, on_idle_broken, p);
    schedule(p);
}

static void on_dispatch(PgPool *p) {
    if (p->closing)
        return;
    for (int i = 0; i < p->max && p->head; i++) {
        Slot *s = &p->slots[i];
        if (s->state != SLOT_IDLE)
            continue;
        if (!pg_conn_is_idle(s->conn)) {
            drop(s);
            continue;
        }
        Waiter *w = pop_waiter(p);
        s->state = SLOT_LEASED;
        w->cb(p, s->conn, NULL, w->data);
        free(w);
        if (p->closing)
            return;
    }
    int need = p->waiting - count(p, SLOT_CONNECTING);
    for (int i = 0; i < p->max && need > 0; i++) {
        Slot *s = &p->slots[i];
        if (s->state != SLOT_FREE)
            continue;
        s->state = SLOT_CONNECTING;
        s->conn = pg_conn_new(p->loop, p->conninfo, p->connect_timeout_ms, on_connected, p);
        need--;
    }
}

static void on_dispatch_timer(uv_timer_t *t) {
    on_dispatch(t->data);
}

/* Dispatch on the next loop pass, unless a connect backoff is running. */
static void schedule(PgPool *p) {
    if (p->closing)
        return;
    if (p->retry_ms > 0 && uv_is_active((uv_handle_t *)&p->dispatch))
        return;
    uv_timer_start(&p->dispatch, on_dispatch_timer, 0, 0);
}

PgPool *pg_pool_new(uv_loop_t *loop, const char *conninfo, int max_conns,
                    unsigned connect_timeout_ms) {
    PgPool *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->conninfo = xstrdup(conninfo);
    p->connect_timeout_ms = connect_timeout_ms;
    p->max = max_conns > 0 ? max_conns : 1;
    p->slots = xcalloc((size_t)p->max, sizeof(Slot));
    uv_timer_init(loop, &p->dispatch);
    p->dispatch.data = p;
    p->timers_open = 1;
    return p;
}

void pg_pool_acquire(PgPool *p, PgAcquireCb cb, void *data) {
    Waiter *w = xcalloc(1, sizeof(*w));
    w->cb = cb;
    w->data = data;
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    p->waiting++;
    schedule(p);
}

void pg_pool_release(PgPool *p, PgConn *conn) {
    Slot *s = slot_of(p, conn);
    if (s == NULL) {
        pg_conn_free(conn);
        return;
    }
    PGconn *pq = pg_conn_pq(conn);
    if (p->closing || !pg_conn_is_idle(conn) || pq == NULL ||
        PQtransactionStatus(pq) != PQTRANS_IDLE || pg_conn_grown(conn)) {
        /* broken, mid-operation, left inside a transaction, or holding the buffers of a huge
         * row: never reuse */
        drop(s);
        if (p->closing)
            maybe_release_pool(p);
        else
            schedule(p);
        return;
    }
    s->state = SLOT_IDLE;
    schedule(p);
}

static void on_timer_closed(uv_handle_t *h) {
    PgPool *p = h->data;
    p->timers_open--;
    maybe_release_pool(p);
}

void pg_pool_free(PgPool *p) {
    if (p == NULL || p->closing)
        return;
    p->closing = 1;
    Err err;
    err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "postgres pool closed");
    fail_waiters(p, &err);
    for (int i = 0; i < p->max; i++) {
        Slot *s = &p->slots[i];
        if (s->state == SLOT_IDLE || s->state == SLOT_CONNECTING)
            drop(s);
    }
    uv_timer_stop(&p->dispatch);
    uv_close((uv_handle_t *)&p->dispatch, on_timer_closed);
}

/* ---- one-shot queries ---- */

typedef struct {
    char *sql;
    int nparams;
    char **values;
    PgResultCb cb;
    void *data;
} QueryReq;

static void query_req_free(QueryReq *q) {
    for (int i = 0; i < q->nparams; i++)
        free(q->values[i]);
    free(q->values);
    free(q->sql);
    free(q);
}

static void on_query_done(PgConn *conn, PGresult *res, const Err *err, void *data) {
    QueryReq *q = data;
    PgPool *p = pg_conn_owner(conn);
    pg_pool_release(p, conn);
    q->cb(NULL, res, err, q->data);
    query_req_free(q);
}

static void on_query_conn(PgPool *p, PgConn *conn, const Err *err, void *data) {
    QueryReq *q = data;
    if (err) {
        q->cb(NULL, NULL, err, q->data);
        query_req_free(q);
        return;
    }
    Err qerr;
    err_clear(&qerr);
    pg_conn_set_owner(conn, p);
    if (pg_conn_query(conn, q->sql, q->nparams, (const char *const *)q->values, on_query_done, q,
                      &qerr) != 0) {
        pg_pool_release(p, conn);
        q->cb(NULL, NULL, &qerr, q->data);
        query_req_free(q);
    }
}

void pg_pool_query(PgPool *p, const char *sql, int nparams, const char *const *values,
                   PgResultCb cb, void *data) {
    QueryReq *q = xcalloc(1, sizeof(*q));
    q->sql = xstrdup(sql);
    q->nparams = nparams;
    q->values = xcalloc((size_t)nparams + 1, sizeof(char *));
    for (int i = 0; i < nparams; i++)
        q->values[i] = values[i] ? xstrdup(values[i]) : NULL;
    q->cb = cb;
    q->data = data;
    pg_pool_acquire(p, on_query_conn, q);
}

int pg_pool_open(const PgPool *p) {
    return p->max - count(p, SLOT_FREE);
}

int pg_pool_idle(const PgPool *p) {
    return count(p, SLOT_IDLE);
}

int pg_pool_waiting(const PgPool *p) {
    return p->waiting;
}

const char *pg_pool_last_error(const PgPool *p) {
    return p->last_error;
}
