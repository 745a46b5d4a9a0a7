/*
 * pg: nonblocking libpq on libuv (see pg.h).
 *
 * A connection runs one operation at a time. Its life:
 *   RESOLVING -> CONNECTING -> READY <-> (operation) ... -> BROKEN | CLOSED
 * and an operation moves through phases:
 *   RESULTS (gather PGresults until NULL) -> STREAM (COPY data) -> FINAL.
 *
 * Failures that happen inside a call made by the user (pg_conn_copy_put, a
 * failed send) are delivered from the `kick` timer on the next loop pass, so
 * that a completion callback never runs inside the caller's own frame. The
 * same timer continues a COPY OUT stream after a pause or after a slice of
 * work: rows already inside libpq's buffer raise no readable event, so they
 * must be drained before the poll is re-armed.
 */
#include "base/log.h"
#include "base/netaddr.h"
#include "base/strmap.h"
#include "pg/pg.h"
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

typedef enum { CS_RESOLVING, CS_CONNECTING, CS_READY, CS_BROKEN, CS_CLOSED } ConnState;
typedef enum {
    OP_NONE,
    OP_CONNECT,
    OP_QUERY,
    OP_COPY_OUT,
    OP_COPY_IN,
    OP_PIPELINE,
    OP_COPY_BOTH
} OpKind;

/* Operations whose stream flows from the server (COPY OUT, and COPY BOTH's replication). */
#define OP_STREAMS_OUT(op) ((op) == OP_COPY_OUT || (op) == OP_COPY_BOTH)
typedef enum { PH_RESULTS, PH_STREAM, PH_FINAL } Phase;

/* COPY OUT bytes handled per loop pass before yielding to other work. */
#define STREAM_SLICE_BYTES (512 * 1024)

/* A message this large grew libpq's buffers, which it never shrinks: such a connection is
 * closed when released rather than kept holding the memory. */
#define PG_BIG_MESSAGE (8u << 20)

/* Statements a connection keeps prepared (PgStmt.prepare); past this, sent unprepared. */
#define MAX_PREPARED 64

/* Set once a session lost a statement it had prepared (26000): a pooler in transaction mode
 * (PgBouncer before 1.21, for one) hands each transaction another server connection. From then
 * on this process prepares nothing; the statement that met it failed retryable. */
static int prepare_off;

struct PgConn {
    uv_loop_t *loop;
    PGconn *pq;
    ConnState state;
    int grown;        /* a message of PG_BIG_MESSAGE or more went through, or waited in libpq */
    size_t unflushed; /* COPY data put since libpq's output last drained */
    unsigned timeout_ms;

    uv_poll_t *poll; /* re-created when libpq changes sockets while connecting */
    int poll_fd;
    int poll_events;
    uv_timer_t timer; /* connect timeout */
    uv_timer_t kick;  /* deferred work on the next loop pass */
    uv_getaddrinfo_t gai;
    int gai_active;
    uv_work_t work; /* PQconnectPoll on the thread pool */
    int work_active;
    PostgresPollingStatusType work_status;
    int handles_open;

    char **keys, **vals; /* connect parameters, NULL-terminated */
    char *host;          /* to resolve; NULL when not needed */

    OpKind op;
    Phase phase;
    PgConnectCb connect_cb;
    PgResultCb done_cb;
    PgCopyDataCb data_cb;
    PgWritableCb writable_cb;
    void *op_data;
    PGresult *result; /* kept result: the first error, else the last one */
    /* OP_PIPELINE: a result per statement, the statement whose results come next, Syncs due */
    PgPipelineCb pipe_cb;
    PGresult **pres;
    int pn, pi, psyncs;
    /* the pipeline's messages that answer, in order: statement i's (i), or the Prepare sent
     * before it (-1 - i); and the name each such Prepare gave */
    int *punit;
    char **pname;
    int nunits;
    StrMap *prepared; /* sql -> statement name, prepared on this session */
    int nprepared;
    int paused;
    int flushing;      /* output pending: wait for writable */
    int want_writable; /* COPY IN producer waits for on_writable */
    int end_pending;   /* PQputCopyEnd could not be queued yet */
    char *end_errmsg;

    Err fail; /* why the connection broke */
    int broken_notified;
    PgBrokenCb on_broken;
    void *broken_data;
    void *owner;
};

static void pgi_connect_step(PgConn *c);
static void pgi_fail(PgConn *c, ErrKind kind, const char *what, const char *detail);
static void pgi_kick(PgConn *c);
static void pgi_on_notice(void *arg, const char *message);
static void pgi_release(PgConn *c);
static void pgi_watch(PgConn *c, int events);

static void update_poll(PgConn *c);
static void process(PgConn *c);

/* ---- helpers ---- */

static void clean_message(const char *in, char *out, size_t outlen) {
    size_t j = 0;
    for (size_t i = 0; in && in[i] && j + 1 < outlen; i++) {
        char ch = in[i];
        if (ch == '\n' || ch == '\t' || ch == '\r') {
            if (j > 0 && out[j - 1] != ' ')
                out[j++] = ' ';
        } else {
            out[j++] = ch;
        }
    }
    while (j > 0 && out[j - 1] == ' ')
        j--;
    out[j] = '\0';
}

void pg_result_to_err(const PGresult *res, Err *err) {
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    char msg[ERR_MSG_MAX];
    clean_message(primary ? primary : PQresultErrorMessage(res), msg, sizeof(msg));
    ErrKind kind = ERR_PERMANENT;
    ErrCode code = ERR_CODE_SQL;
    if (state != NULL) {
        /* connection exceptions, serialization failures, deadlocks, resource
         * shortages and server shutdowns are worth another try */
        if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
            kind = ERR_RETRYABLE, code = ERR_CODE_CONNECT;
        else if (strcmp(state, "26000") == 0) /* a prepared statement lost: see prepare_off */
            kind = ERR_RETRYABLE;
        else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
                 strncmp(state, "53", 2) == 0 || strcmp(state, "55P03") == 0)
            kind = ERR_RETRYABLE;
    }
    if (detail != NULL)
        err_set(err, kind, code, "%s: %s (%.200s)", state ? state : "XX000", msg, detail);
    else
        err_set(err, kind, code, "%s: %s", state ? state : "XX000", msg);
}

static void pgi_on_notice(void *arg, const char *message) {
    (void)arg;
    char msg[512];
    clean_message(message, msg, sizeof(msg));
    log_debug(NULL, "postgres: %s", msg);
}

/* ---- handles ---- */

static void pgi_release(PgConn *c) {
    if (c->handles_open > 0 || c->gai_active || c->work_active)
        return;
    if (c->pq)
        PQfinish(c->pq);
    if (c->keys) {
        for (int i = 0; c->keys[i]; i++) {
            free(c->keys[i]);
            free(c->vals[i]);
        }
    }
    free(c->keys);
    free(c->vals);
    free(c->host);
    free(c->end_errmsg);
    strmap_free(c->prepared, free);
    free(c);
}

static void on_handle_closed(uv_handle_t *h) {
    PgConn *c = h->data;
    if (h->type == UV_POLL)
        free(h); /* poll handles are allocated one per socket */
    c->handles_open--;
    pgi_release(c);
}

static void close_poll(PgConn *c) {
    if (c->poll == NULL)
        return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, on_handle_closed);
    c->poll = NULL;
    c->poll_fd = -1;
    c->poll_events = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void pgi_watch(PgConn *c, int events) {
    int fd = c->pq ? PQsocket(c->pq) : -1;
    if (fd < 0) {
        close_poll(c);
        return;
    }
    if (c->poll != NULL && c->poll_fd != fd)
        close_poll(c);
    if (c->poll == NULL) {
        c->poll = xcalloc(1, sizeof(*c->poll));
        if (uv_poll_init_socket(c->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return;
        }
        c->poll->data = c;
        c->handles_open++;
        c->poll_fd = fd;
        c->poll_events = 0;
    }
    if (events == c->poll_events)
        return;
    c->poll_events = events;
    if (events)
        uv_poll_start(c->poll, events, on_poll);
    else
        uv_poll_stop(c->poll);
}

static void on_kick(uv_timer_t *t);

static void pgi_kick(PgConn *c) {
    if (c->state != CS_CLOSED)
        uv_timer_start(&c->kick, on_kick, 0, 0);
}

/* ---- failure and completion ---- */

/* Mark the connection broken; the operation's callback runs on the next pass. */
static void pgi_fail(PgConn *c, ErrKind kind, const char *what, const char *detail) {
    if (c->state == CS_BROKEN || c->state == CS_CLOSED)
        return;
    char msg[ERR_MSG_MAX - 64];
    clean_message(detail, msg, sizeof(msg));
    /* the server refused who we are (password, role, database, pg_hba.conf): a configuration
     * error, not an outage; still retryable, so that a job waits for the fix instead of dying */
    static const char *const refused[] = {"password authentication failed", "no pg_hba.conf entry",
                                          "does not exist", "no password supplied",
                                          "permission denied for database"};
    ErrCode code = ERR_CODE_CONNECT;
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (strstr(msg, refused[i]))
            code = ERR_CODE_CONFIG;
    err_set(&c->fail, kind, code, "postgres: %s%s%s", what, msg[0] ? ": " : "", msg);
    c->state = CS_BROKEN;
    uv_timer_stop(&c->timer);
    close_poll(c);
    pgi_kick(c);
}

static void clear_units(PgConn *c) {
    for (int j = 0; j < c->nunits; j++)
        free(c->pname[j]);
    free(c->punit);
    free(c->pname);
    c->punit = NULL;
    c->pname = NULL;
    c->nunits = 0;
}

static void clear_pipeline(PgConn *c) {
    for (int i = 0; i < c->pn; i++)
        PQclear(c->pres[i]);
    free(c->pres);
    c->pres = NULL;
    c->pn = c->pi = c->psyncs = 0;
    clear_units(c);
}

/* A Prepare that did not run or failed: its statement is not on the session. */
static void forget_prepared(PgConn *c, const char *name) {
    size_t pos = 0;
    const char *sql;
    void *v;
    while (c->prepared && strmap_next(c->prepared, &pos, &sql, &v))
        if (strcmp(v, name) == 0) {
            free(strmap_del(c->prepared, sql));
            return;
        }
}

/* An operation ends without a result (op already cleared from c). */
static void fail_op(PgConn *c, OpKind op, const Err *err, void *data) {
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    if (op == OP_CONNECT) {
        c->connect_cb(c, err, data);
    } else if (op == OP_PIPELINE) {
        int n = c->pn;
        clear_pipeline(c);
        c->pipe_cb(c, NULL, n, err, data);
    } else {
        c->done_cb(c, NULL, err, data);
    }
}

/* Deliver a broken connection's failure to whoever waits on it. */
static void deliver_failure(PgConn *c) {
    OpKind op = c->op;
    void *data = c->op_data;
    c->op = OP_NONE;
    if (op != OP_NONE) {
        fail_op(c, op, &c->fail, data);
    } else if (!c->broken_notified) {
        c->broken_notified = 1;
        if (c->on_broken)
            c->on_broken(c, c->broken_data);
    }
}

static void finish_op(PgConn *c) {
    PGresult *res = c->result;
    PgResultCb cb = c->done_cb;
    void *data = c->op_data;
    c->result = NULL;
    c->op = OP_NONE;
    c->paused = c->want_writable = c->end_pending = 0;
    Err err;
    err_clear(&err);
    if (res == NULL)
        err_set(&err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "postgres: no result");
    else if (PQresultStatus(res) == PGRES_FATAL_ERROR || PQresultStatus(res) == PGRES_BAD_RESPONSE)
        pg_result_to_err(res, &err);
    cb(c, res, err_is_set(&err) ? &err : NULL, data);
    if (res)
        PQclear(res);
}

static void on_kick(uv_timer_t *t) {
    PgConn *c = t->data;
    if (c->state == CS_CLOSED)
        return;
    if (c->state == CS_BROKEN) {
        deliver_failure(c);
        return;
    }
    if (c->state == CS_READY) {
        process(c);
        if (c->state == CS_READY)
            update_poll(c);
    }
}

/* ---- operations ---- */

static void update_poll(PgConn *c) {
    if (c->state != CS_READY)
        return;
    int ev = 0;
    if (!c->paused)
        ev |= UV_READABLE;
    if (c->flushing)
        ev |= UV_WRITABLE;
    pgi_watch(c, ev);
}

static void flush(PgConn *c) {
    int r = PQflush(c->pq);
    if (r < 0) {
        pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
        return;
    }
    c->flushing = r == 1;
    update_poll(c);
}

static void keep_result(PgConn *c, PGresult *res) {
    ExecStatusType st = PQresultStatus(res);
    int is_err = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
    if (c->result != NULL) {
        ExecStatusType kept = PQresultStatus(c->result);
        if ((kept == PGRES_FATAL_ERROR || kept == PGRES_BAD_RESPONSE) && !is_err) {
            PQclear(res); /* keep the first error */
            return;
        }
        PQclear(c->result);
    }
    c->result = res;
}

static void stream_copy_out(PgConn *c);

/* Every Sync came back: out of pipeline mode, and the results to the caller. */
static void finish_pipeline(PgConn *c) {
    if (!PQexitPipelineMode(c->pq)) {
        pgi_fail(c, ERR_RETRYABLE, "pipeline did not end", PQerrorMessage(c->pq));
        return;
    }
    PgPipelineCb cb = c->pipe_cb;
    void *data = c->op_data;
    PGresult **res = c->pres;
    int n = c->pn;
    c->pres = NULL;
    c->pn = c->pi = c->psyncs = 0;
    clear_units(c);
    c->op = OP_NONE;
    Err err;
    err_clear(&err);
    /* the first failure; a statement is only skipped after an earlier one of its group failed */
    for (int i = 0; i < n && !err_is_set(&err); i++) {
        ExecStatusType st = res[i] ? PQresultStatus(res[i]) : PGRES_PIPELINE_ABORTED;
        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE)
            pg_result_to_err(res[i], &err);
        else if (res[i] == NULL)
            err_set(&err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "postgres: statement %d not run", i);
    }
    cb(c, res, n, err_is_set(&err) ? &err : NULL, data);
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    free(res);
}

/* Pipeline mode: each statement's results end with a NULL, each Sync is a result of its own. */
static void collect_pipeline(PgConn *c) {
    while (c->state == CS_READY && c->psyncs > 0 && !PQisBusy(c->pq)) {
        PGresult *res = PQgetResult(c->pq);
        if (res == NULL) {
            c->pi++;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            c->psyncs--;
            continue;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            pgi_fail(c, ERR_PERMANENT, "COPY must use pg_conn_copy_in/out", "");
            return;
        }
        int unit = c->pi < c->nunits ? c->punit[c->pi] : c->pn;
        if (unit < 0) { /* a Prepare: only its failure is kept, as its statement's */
            int i = -1 - unit;
            if (st != PGRES_COMMAND_OK)
                forget_prepared(c, c->pname[c->pi]);
            if (st == PGRES_FATAL_ERROR && c->pres[i] == NULL)
                c->pres[i] = res;
            else
                PQclear(res);
            continue;
        }
        const char *state =
            st == PGRES_FATAL_ERROR ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "26000") == 0 && !prepare_off) {
            prepare_off = 1;
            log_warn(NULL, "postgres: a prepared statement vanished from its session (a pooler in "
                           "transaction mode between this worker and PostgreSQL?): statements "
                           "are sent unprepared from now on");
        }
        if (st == PGRES_PIPELINE_ABORTED || unit >= c->pn || c->pres[unit] != NULL) {
            PQclear(res); /* not run; or a second result of one statement: the first is kept */
            continue;
        }
        c->pres[unit] = res;
    }
    if (c->state != CS_READY)
        return;
    if (c->psyncs == 0)
        finish_pipeline(c);
    else if (PQstatus(c->pq) == CONNECTION_BAD)
        pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
}

static void collect_results(PgConn *c) {
    while (c->state == CS_READY && !PQisBusy(c->pq)) {
        PGresult *res = PQgetResult(c->pq);
        if (res == NULL) {
            finish_op(c);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (((st == PGRES_COPY_OUT && c->op == OP_COPY_OUT) ||
             (st == PGRES_COPY_BOTH && c->op == OP_COPY_BOTH)) &&
            c->phase == PH_RESULTS) {
            PQclear(res);
            c->phase = PH_STREAM;
            stream_copy_out(c);
            return;
        }
        if (st == PGRES_COPY_IN && c->op == OP_COPY_IN && c->phase == PH_RESULTS) {
            PQclear(res);
            c->phase = PH_STREAM;
            c->writable_cb(c, c->op_data);
            return;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            /* COPY sent through pg_conn_query: not supported, and the
             * protocol state cannot be recovered cheaply */
            PQclear(res);
            pgi_fail(c, ERR_PERMANENT, "COPY must use pg_conn_copy_in/out", "");
            return;
        }
        keep_result(c, res);
    }
    if (c->state == CS_READY && PQstatus(c->pq) == CONNECTION_BAD)
        pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
}

static void stream_copy_out(PgConn *c) {
    size_t slice = 0;
    while (c->state == CS_READY && !c->paused) {
        char *buf = NULL;
        int n = PQgetCopyData(c->pq, &buf, 1);
        if (n > 0) {
            if ((size_t)n >= PG_BIG_MESSAGE)
                c->grown = 1;
            int r = c->data_cb(c, buf, (size_t)n, c->op_data);
            if (r != PG_COPY_KEEP)
                PQfreemem(buf);
            if (c->state != CS_READY || !OP_STREAMS_OUT(c->op))
                return;
            if (r == PG_COPY_PAUSE || r == PG_COPY_KEEP)
                c->paused = 1;
            slice += (size_t)n;
            if (slice >= STREAM_SLICE_BYTES && !c->paused) {
                pgi_kick(c); /* yield: other callbacks run before the next slice */
                return;
            }
            continue;
        }
        if (n == 0)
            return; /* wait until readable */
        if (n == -1) {
            c->phase = PH_FINAL;
            collect_results(c);
            return;
        }
        pgi_fail(c, ERR_RETRYABLE, "COPY failed", PQerrorMessage(c->pq));
        return;
    }
}

static void process(PgConn *c) {
    switch (c->op) {
    case OP_NONE:
        /* idle: consume stray results or notice a dead connection */
        if (PQstatus(c->pq) == CONNECTION_BAD)
            pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
        return;
    case OP_COPY_OUT:
    case OP_COPY_BOTH:
        if (c->phase == PH_STREAM)
            stream_copy_out(c);
        else
            collect_results(c);
        return;
    case OP_PIPELINE:
        collect_pipeline(c);
        return;
    case OP_COPY_IN:
        if (c->phase == PH_STREAM) {
            if (PQstatus(c->pq) == CONNECTION_BAD)
                pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
            return; /* the server may send an error early; it is read after the end */
        }
        collect_results(c);
        return;
    default:
        collect_results(c);
        return;
    }
}

static void try_copy_end(PgConn *c) {
    int r = PQputCopyEnd(c->pq, c->end_errmsg);
    if (r < 0) {
        pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
        return;
    }
    if (r == 0) {
        c->end_pending = 1;
        c->flushing = 1;
        update_poll(c);
        return;
    }
    c->end_pending = 0;
    c->phase = PH_FINAL;
    flush(c);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    PgConn *c = h->data;
    if (c->poll != h)
        return;
    if (status < 0)
        c->poll_events = 0; /* stopped by libuv (see below) */
    if (c->state == CS_CONNECTING) {
        pgi_connect_step(c);
        return;
    }
    if (c->state != CS_READY)
        return;
    if (status < 0) {
        /* libuv stops a poll handle that reports an error: note it, so that
         * update_poll() below starts it again if the connection survives */
        c->poll_events = 0;
        events |= UV_READABLE | (c->flushing ? UV_WRITABLE : 0);
    }
    if ((events & UV_WRITABLE) && c->flushing) {
        int r = PQflush(c->pq);
        if (r < 0) {
            pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
            return;
        }
        c->flushing = r == 1;
        if (!c->flushing && c->end_pending) {
            try_copy_end(c);
            if (c->state != CS_READY)
                return;
        }
        if (!c->flushing && c->want_writable && c->op == OP_COPY_IN) {
            c->want_writable = 0;
            update_poll(c);
            c->writable_cb(c, c->op_data);
            if (c->state != CS_READY)
                return;
        }
    }
    if ((events & UV_READABLE) && !c->paused) {
        if (!PQconsumeInput(c->pq)) {
            pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
            return;
        }
        process(c);
    }
    if (c->state == CS_READY)
        update_poll(c);
}

static uint64_t round_trips;

uint64_t pg_round_trips(void) {
    return round_trips;
}

static int op_begin(PgConn *c, OpKind op, Err *err) {
    if (c->state != CS_READY) {
        err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "postgres: connection not ready%s%s",
                err_is_set(&c->fail) ? ": " : "", c->fail.msg);
        return -1;
    }
    if (c->op != OP_NONE) {
        err_set(err, ERR_PERMANENT, ERR_CODE_BUSY, "postgres: connection busy");
        return -1;
    }
    c->op = op;
    c->phase = PH_RESULTS;
    round_trips++;
    c->paused = c->want_writable = c->end_pending = 0;
    return 0;
}

static int send_query(PgConn *c, const char *sql, int nparams, const char *const *values,
                      Err *err) {
    if (!PQsendQueryParams(c->pq, sql, nparams, NULL, values, NULL, NULL, 0)) {
        char msg[ERR_MSG_MAX - 64];
        clean_message(PQerrorMessage(c->pq), msg, sizeof(msg));
        c->op = OP_NONE;
        if (PQstatus(c->pq) == CONNECTION_BAD) {
            err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "postgres: connection lost: %s", msg);
            pgi_fail(c, ERR_RETRYABLE, "connection lost", msg);
        } else {
            err_set(err, ERR_PERMANENT, ERR_CODE_SQL, "postgres: cannot send query: %s", msg);
        }
        return -1;
    }
    flush(c);
    return 0;
}

int pg_conn_query(PgConn *c, const char *sql, int nparams, const char *const *values, PgResultCb cb,
                  void *data, Err *err) {
    if (op_begin(c, OP_QUERY, err) != 0)
        return -1;
    c->done_cb = cb;
    c->op_data = data;
    return send_query(c, sql, nparams, values, err);
}

/* The simple query protocol (PQsendQuery): the only one a replication connection speaks. */
static int send_simple(PgConn *c, const char *sql, Err *err) {
    if (!PQsendQuery(c->pq, sql)) {
        char msg[ERR_MSG_MAX - 64];
        clean_message(PQerrorMessage(c->pq), msg, sizeof(msg));
        c->op = OP_NONE;
        err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "postgres: cannot send: %s", msg);
        if (PQstatus(c->pq) == CONNECTION_BAD)
            pgi_fail(c, ERR_RETRYABLE, "connection lost", msg);
        return -1;
    }
    flush(c);
    return 0;
}

int pg_conn_simple_query(PgConn *c, const char *sql, PgResultCb cb, void *data, Err *err) {
    if (op_begin(c, OP_QUERY, err) != 0)
        return -1;
    c->done_cb = cb;
    c->op_data = data;
    return send_simple(c, sql, err);
}

int pg_conn_copy_both(PgConn *c, const char *sql, PgCopyDataCb on_data, PgResultCb on_done,
                      void *data, Err *err) {
    if (op_begin(c, OP_COPY_BOTH, err) != 0)
        return -1;
    c->data_cb = on_data;
    c->done_cb = on_done;
    c->op_data = data;
    return send_simple(c, sql, err);
}

int pg_conn_copy_send(PgConn *c, const char *buf, size_t len) {
    if (c->state != CS_READY || c->op != OP_COPY_BOTH || c->phase != PH_STREAM)
        return -1;
    if (PQputCopyData(c->pq, buf, (int)len) != 1) {
        pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
        return -1;
    }
    flush(c); /* a small message: what does not fit waits for writable */
    return c->state == CS_READY ? 0 : -1;
}

int pg_conn_pipeline(PgConn *c, const PgStmt *stmts, int n, PgPipelineCb cb, void *data, Err *err) {
    if (n <= 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "postgres: empty pipeline");
        return -1;
    }
    if (op_begin(c, OP_PIPELINE, err) != 0)
        return -1;
    c->pipe_cb = cb;
    c->op_data = data;
    c->pres = xcalloc((size_t)n, sizeof(PGresult *));
    c->pn = n;
    c->pi = c->psyncs = 0;
    c->punit = xcalloc((size_t)n * 2, sizeof(int));
    c->pname = xcalloc((size_t)n * 2, sizeof(char *));
    c->nunits = 0;
    int ok = PQenterPipelineMode(c->pq);
    for (int i = 0; ok && i < n; i++) {
        int prep = stmts[i].prepare && !prepare_off;
        const char *name = prep && c->prepared ? strmap_get(c->prepared, stmts[i].sql) : NULL;
        if (prep && name == NULL && c->nprepared < MAX_PREPARED) {
            /* prepared once per session: parsed and planned once (a generic plan after five
             * executions), where a statement sent whole is both every time */
            char nm[24];
            snprintf(nm, sizeof(nm), "bw_%d", ++c->nprepared);
            if (c->prepared == NULL)
                c->prepared = strmap_new();
            name = xstrdup(nm);
            strmap_put(c->prepared, stmts[i].sql, (void *)name);
            ok = PQsendPrepare(c->pq, name, stmts[i].sql, stmts[i].nparams, NULL);
            c->pname[c->nunits] = xstrdup(name);
            c->punit[c->nunits++] = -1 - i;
        }
        if (ok && name)
            ok = PQsendQueryPrepared(c->pq, name, stmts[i].nparams, stmts[i].values, NULL, NULL, 0);
        else if (ok)
            ok = PQsendQueryParams(c->pq, stmts[i].sql, stmts[i].nparams, NULL, stmts[i].values,
                                   NULL, NULL, 0);
        c->punit[c->nunits++] = i;
        if (ok && (stmts[i].sync || i == n - 1)) {
            ok = PQpipelineSync(c->pq);
            c->psyncs++;
        }
    }
    if (!ok) {
        /* half a pipeline may be on its way: the connection cannot be trusted again */
        char msg[ERR_MSG_MAX - 64];
        clean_message(PQerrorMessage(c->pq), msg, sizeof(msg));
        c->op = OP_NONE;
        clear_pipeline(c);
        err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "postgres: cannot send pipeline: %s", msg);
        pgi_fail(c, ERR_RETRYABLE, "cannot send pipeline", msg);
        return -1;
    }
    flush(c);
    return 0;
}

int pg_conn_copy_out(PgConn *c, const char *sql, PgCopyDataCb on_data, PgResultCb on_done,
                     void *data, Err *err) {
    if (op_begin(c, OP_COPY_OUT, err) != 0)
        return -1;
    c->data_cb = on_data;
    c->done_cb = on_done;
    c->op_data = data;
    return send_query(c, sql, 0, NULL, err);
}

void pg_conn_copy_pause(PgConn *c) {
    if (!OP_STREAMS_OUT(c->op) || c->paused)
        return;
    c->paused = 1;
    update_poll(c);
}

void pg_conn_copy_resume(PgConn *c) {
    if (!OP_STREAMS_OUT(c->op) || !c->paused)
        return;
    c->paused = 0;
    pgi_kick(c); /* drain what libpq holds before waiting for the socket */
}

int pg_conn_copy_in(PgConn *c, const char *sql, PgWritableCb on_writable, PgResultCb on_done,
                    void *data, Err *err) {
    if (op_begin(c, OP_COPY_IN, err) != 0)
        return -1;
    c->writable_cb = on_writable;
    c->done_cb = on_done;
    c->op_data = data;
    return send_query(c, sql, 0, NULL, err);
}

int pg_conn_copy_put(PgConn *c, const char *buf, size_t len) {
    return pg_conn_copy_putv(c, &buf, &len, 1);
}

int pg_conn_copy_putv(PgConn *c, const char *const *bufs, const size_t *lens, int nbufs) {
    if (c->state != CS_READY || c->op != OP_COPY_IN || c->phase != PH_STREAM)
        return -1;
    for (int i = 0; i < nbufs; i++) {
        const char *buf = bufs[i];
        size_t len = lens[i];
        if (len >= PG_BIG_MESSAGE)
            c->grown = 1;
        while (len > 0) {
            /* PQputCopyData takes an int length */
            int n = len > (1u << 30) ? (1 << 30) : (int)len;
            if (PQputCopyData(c->pq, buf, n) != 1) {
                pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
                return -1;
            }
            buf += n;
            len -= (size_t)n;
        }
    }
    int r = PQflush(c->pq);
    if (r < 0) {
        pgi_fail(c, ERR_RETRYABLE, "connection lost", PQerrorMessage(c->pq));
        return -1;
    }
    /* what libpq holds unsent: once that is big, its buffer stays big (closed at release) */
    for (int i = 0; i < nbufs && r == 1; i++)
        c->unflushed += lens[i];
    if (r == 0)
        c->unflushed = 0;
    if (c->unflushed >= PG_BIG_MESSAGE)
        c->grown = 1;
    if (r == 1) {
        /* libpq would buffer without limit: stop the producer here */
        c->flushing = 1;
        c->want_writable = 1;
        update_poll(c);
        return 0;
    }
    return 1;
}

int pg_conn_copy_end(PgConn *c, const char *errmsg) {
    if (c->state != CS_READY || c->op != OP_COPY_IN || c->phase != PH_STREAM)
        return -1;
    free(c->end_errmsg);
    c->end_errmsg = errmsg ? xstrdup(errmsg) : NULL;
    c->want_writable = 0;
    if (c->flushing) {
        c->end_pending = 1; /* sent once the output drains */
        return 0;
    }
    try_copy_end(c);
    return c->state == CS_READY ? 0 : -1;
}

/* ---- cancel ---- */

typedef struct {
    uv_work_t req;
    PGcancel *cancel;
    char errbuf[256];
    int ok;
} CancelReq;

static void cancel_work(uv_work_t *req) {
    CancelReq *cr = req->data;
    cr->ok = PQcancel(cr->cancel, cr->errbuf, sizeof(cr->errbuf));
}

static void cancel_done(uv_work_t *req, int status) {
    CancelReq *cr = req->data;
    if (status == 0 && !cr->ok)
        log_warn(NULL, "postgres: cancel request failed: %s", cr->errbuf);
    PQfreeCancel(cr->cancel);
    free(cr);
}

void pg_conn_cancel(PgConn *c) {
    if (c->state != CS_READY || c->op == OP_NONE)
        return;
    PGcancel *cancel = PQgetCancel(c->pq);
    if (cancel == NULL)
        return;
    CancelReq *cr = xcalloc(1, sizeof(*cr));
    cr->cancel = cancel;
    cr->req.data = cr;
    /* PQcancel blocks (connect + send): keep it off the loop thread */
    if (uv_queue_work(c->loop, &cr->req, cancel_work, cancel_done) != 0) {
        PQfreeCancel(cancel);
        free(cr);
    }
}

/* ---- accessors and teardown ---- */

int pg_conn_is_idle(const PgConn *c) {
    return c->state == CS_READY && c->op == OP_NONE;
}

void pg_copy_free(void *buf) {
    PQfreemem(buf);
}

int pg_conn_grown(const PgConn *c) {
    return c->grown;
}

int pg_conn_is_broken(const PgConn *c) {
    return c->state == CS_BROKEN || c->state == CS_CLOSED;
}

PGconn *pg_conn_pq(PgConn *c) {
    return c->state == CS_READY ? c->pq : NULL;
}

void pg_conn_set_on_broken(PgConn *c, PgBrokenCb cb, void *data) {
    c->on_broken = cb;
    c->broken_data = data;
}

void pg_conn_set_owner(PgConn *c, void *owner) {
    c->owner = owner;
}

void *pg_conn_owner(const PgConn *c) {
    return c->owner;
}

void pg_conn_free(PgConn *c) {
    if (c == NULL || c->state == CS_CLOSED)
        return;
    OpKind op = c->op;
    c->state = CS_CLOSED;
    c->op = OP_NONE;
    if (op != OP_NONE) {
        Err err;
        err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "postgres: connection closed");
        fail_op(c, op, &err, c->op_data);
    } else if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    if (c->gai_active)
        uv_cancel((uv_req_t *)&c->gai);
    close_poll(c);
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->kick);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->kick, on_handle_closed);
}

/* ---- connecting: resolving the host off the loop, then PQconnectPoll (see pg.h). */

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

static void pgi_connect_step(PgConn *c) {
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
