/*
 * test_pg: the nonblocking PostgreSQL connection and pool against a real
 * PostgreSQL 15: concurrency, COPY both ways with backpressure, transactions,
 * pipelines, errors, cancel, and recovery after a server restart.
 */
#include "testutil.h"
#include "base/looplag.h"
#include "pg/pgpool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- synchronous-style helpers over the async API, for readable tests ---- */

typedef struct {
    int done;
    Err err;
    int has_err;
    char value[256]; /* first cell of the first row */
    int ntuples;
    PgConn *conn;
} Wait;

static void on_result(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Wait *w = data;
    w->done = 1;
    if (err) {
        w->has_err = 1;
        w->err = *err;
        return;
    }
    w->ntuples = PQntuples(res);
    if (PQntuples(res) > 0 && PQnfields(res) > 0)
        snprintf(w->value, sizeof(w->value), "%s", PQgetvalue(res, 0, 0));
}

static void on_acquired(PgPool *p, PgConn *conn, const Err *err, void *data) {
    (void)p;
    Wait *w = data;
    w->done = 1;
    w->conn = conn;
    if (err) {
        w->has_err = 1;
        w->err = *err;
    }
}

static PgConn *acquire(uv_loop_t *loop, PgPool *pool) {
    Wait w;
    memset(&w, 0, sizeof(w));
    pg_pool_acquire(pool, on_acquired, &w);
    assert_true(tu_run_until(loop, &w.done, 10000));
    if (w.has_err)
        print_error("acquire: %s\n", w.err.msg);
    assert_false(w.has_err);
    return w.conn;
}

/* Run sql on conn and wait; returns the Wait with value or error. */
static Wait run(uv_loop_t *loop, PgConn *conn, const char *sql) {
    Wait w;
    memset(&w, 0, sizeof(w));
    Err err;
    err_clear(&err);
    if (pg_conn_query(conn, sql, 0, NULL, on_result, &w, &err) != 0) {
        w.done = 1;
        w.has_err = 1;
        w.err = err;
        return w;
    }
    assert_true(tu_run_until(loop, &w.done, 30000));
    return w;
}

static Wait run_ok(uv_loop_t *loop, PgConn *conn, const char *sql) {
    Wait w = run(loop, conn, sql);
    if (w.has_err)
        print_error("%s: %s\n", sql, w.err.msg);
    assert_false(w.has_err);
    return w;
}

static PgPool *new_pool(uv_loop_t *loop, int max) {
    return pg_pool_new(loop, tu_env("DATABASE_URL"), max, 5000);
}

/* ---- 1000 queries over 8 connections ---- */

typedef struct {
    int done;
    int ok;
    int wrong;
    int errors;
    int retryable;
    char pids[64][16];
    int npids;
    char first_err[ERR_MSG_MAX];
    char last_err[ERR_MSG_MAX];
} Many;

typedef struct {
    Many *m;
    int n;
} ManyReq;

static void on_many(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    ManyReq *r = data;
    Many *m = r->m;
    m->done++;
    if (err) {
        if (m->errors++ == 0)
            snprintf(m->first_err, sizeof(m->first_err), "%s", err->msg);
        snprintf(m->last_err, sizeof(m->last_err), "%s", err->msg);
        m->retryable += err->kind == ERR_RETRYABLE;
    } else if (atoi(PQgetvalue(res, 0, 0)) != r->n * 2) {
        m->wrong++;
    } else {
        m->ok++;
        const char *pid = PQgetvalue(res, 0, 1);
        int seen = 0;
        for (int i = 0; i < m->npids; i++)
            seen |= strcmp(m->pids[i], pid) == 0;
        if (!seen && m->npids < 64)
            snprintf(m->pids[m->npids++], 16, "%s", pid);
    }
    free(r);
}

static void submit_many(PgPool *pool, Many *m, int count, const char *sql) {
    for (int i = 0; i < count; i++) {
        ManyReq *r = calloc(1, sizeof(*r));
        r->m = m;
        r->n = i;
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *values[] = {num};
        pg_pool_query(pool, sql, 1, values, on_many, r);
    }
}

static void test_1000_queries_on_8_connections(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 8);
    Many m;
    memset(&m, 0, sizeof(m));
    uint64_t t0 = uv_hrtime();
    submit_many(pool, &m, 1000, "SELECT $1::int * 2, pg_backend_pid()");
    assert_int_equal(pg_pool_waiting(pool), 1000);
    /* measured from here: the pool's work on the loop, not the test's own burst of 1000
     * submissions above (a first timer after it would count the burst as lag) */
    LoopLag *lag = looplag_new(&loop, 5);
    assert_true(tu_run_until_count(&loop, &m.done, 1000, 120000));
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    printf("1000 queries over 8 connections: %.1f ms, %d backends, loop lag max %.2f ms\n", ms,
           m.npids, (double)looplag_max_us(lag) / 1000.0);
    assert_int_equal(m.ok, 1000);
    assert_int_equal(m.wrong, 0);
    assert_int_equal(m.errors, 0);
    /* the pool grew to its limit under load and never beyond it; how many of
     * its connections got work depends on how fast each one came up */
    assert_int_equal(pg_pool_open(pool), 8);
    assert_true(m.npids >= 2 && m.npids <= 8);
    assert_true(looplag_max_us(lag) < TU_LAG_LIMIT_US);
    looplag_free(lag);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

/* ---- COPY OUT: 1M rows through a bounded buffer ---- */

#define COPY_BOUND (256 * 1024)

typedef struct {
    uv_timer_t drain;
    PgConn *conn;
    size_t buffered;
    size_t max_buffered;
    long rows;
    uint64_t sum;
    int pauses;
    int done;
    int failed;
    char status[64];
} CopyOut;

static void on_drain(uv_timer_t *t) {
    CopyOut *c = t->data;
    c->buffered = 0; /* the slow consumer caught up */
    pg_conn_copy_resume(c->conn);
}

static int on_copy_row(PgConn *conn, const char *buf, size_t len, void *data) {
    (void)conn;
    CopyOut *c = data;
    c->rows++;
    c->sum += strtoull(buf, NULL, 10);
    c->buffered += len;
    if (c->buffered > c->max_buffered)
        c->max_buffered = c->buffered;
    if (c->buffered >= COPY_BOUND) {
        c->pauses++;
        uv_timer_start(&c->drain, on_drain, 1, 0);
        return PG_COPY_PAUSE;
    }
    return PG_COPY_CONTINUE;
}

static void on_copy_done(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    CopyOut *c = data;
    c->done = 1;
    if (err) {
        c->failed = 1;
        print_error("copy out: %s\n", err->msg);
        return;
    }
    snprintf(c->status, sizeof(c->status), "%s", PQcmdStatus(res));
}

static void test_copy_out_1m_rows_bounded(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 2);
    PgConn *conn = acquire(&loop, pool);
    LoopLag *lag = looplag_new(&loop, 5);
    CopyOut c;
    memset(&c, 0, sizeof(c));
    c.conn = conn;
    uv_timer_init(&loop, &c.drain);
    c.drain.data = &c;
    Err err;
    err_clear(&err);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(pg_conn_copy_out(conn,
                                      "COPY (SELECT g, md5(g::text) FROM generate_series(1, "
                                      "1000000) g) TO STDOUT",
                                      on_copy_row, on_copy_done, &c, &err),
                     0);
    assert_true(tu_run_until(&loop, &c.done, 120000));
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    printf("COPY OUT 1M rows: %.0f ms, %d pauses, max buffered %zu bytes, loop lag max %.2f "
           "ms\n",
           ms, c.pauses, c.max_buffered, (double)looplag_max_us(lag) / 1000.0);
    assert_false(c.failed);
    assert_int_equal(c.rows, 1000000);
    assert_true(c.sum == 500000500000ULL);
    assert_string_equal(c.status, "COPY 1000000");
    assert_true(c.pauses > 100);
    /* never more than one row past the bound: the stream really stopped */
    assert_true(c.max_buffered < COPY_BOUND + 64);
    assert_true(looplag_max_us(lag) < TU_LAG_LIMIT_US);
    /* the connection is reusable afterwards */
    Wait w = run_ok(&loop, conn, "SELECT 41 + 1");
    assert_string_equal(w.value, "42");
    pg_pool_release(pool, conn);
    uv_close((uv_handle_t *)&c.drain, NULL);
    looplag_free(lag);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

/* ---- COPY IN ---- */

typedef struct {
    PgConn *conn;
    long next;
    long total;
    int waits;
    int done;
    int failed;
    char status[64];
    Err err;
    const char *abort_msg;
} CopyIn;

static void on_writable(PgConn *conn, void *data) {
    CopyIn *c = data;
    char chunk[64 * 1024];
    for (;;) {
        if (c->next >= c->total) {
            pg_conn_copy_end(conn, c->abort_msg);
            return;
        }
        size_t n = 0;
        while (c->next < c->total && n + 64 < sizeof(chunk)) {
            c->next++;
            n += (size_t)snprintf(chunk + n, sizeof(chunk) - n, "%ld\tname \\\\ %ld\\n\n", c->next,
                                  c->next);
        }
        int r = pg_conn_copy_put(conn, chunk, n);
        if (r < 0)
            return; /* on_done reports it */
        if (r == 0) {
            c->waits++;
            return; /* called again when the socket drains */
        }
    }
}

static void on_copy_in_done(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    CopyIn *c = data;
    c->done = 1;
    if (err) {
        c->failed = 1;
        c->err = *err;
        return;
    }
    snprintf(c->status, sizeof(c->status), "%s", PQcmdStatus(res));
}

static void test_copy_in(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 1);
    PgConn *conn = acquire(&loop, pool);
    run_ok(&loop, conn, "CREATE TEMP TABLE copy_in_t (a bigint, b text)");
    CopyIn c;
    memset(&c, 0, sizeof(c));
    c.total = 300000;
    Err err;
    err_clear(&err);
    assert_int_equal(
        pg_conn_copy_in(conn, "COPY copy_in_t FROM STDIN", on_writable, on_copy_in_done, &c, &err),
        0);
    assert_true(tu_run_until(&loop, &c.done, 60000));
    if (c.failed)
        print_error("copy in: %s\n", c.err.msg);
    assert_false(c.failed);
    printf("COPY IN 300000 rows: %d waits for a writable socket\n", c.waits);
    assert_string_equal(c.status, "COPY 300000");
    Wait w = run_ok(&loop, conn, "SELECT count(*) || ':' || sum(a) FROM copy_in_t");
    assert_string_equal(w.value, "300000:45000150000");
    /* COPY's text escapes arrive decoded: a backslash and a newline */
    w = run_ok(&loop, conn, "SELECT b FROM copy_in_t WHERE a = 7");
    assert_string_equal(w.value, "name \\ 7\n");

    /* an aborted COPY IN fails with the reason, loads nothing, leaves the connection usable */
    CopyIn a;
    memset(&a, 0, sizeof(a));
    a.total = 1000;
    a.abort_msg = "producer gave up";
    assert_int_equal(
        pg_conn_copy_in(conn, "COPY copy_in_t FROM STDIN", on_writable, on_copy_in_done, &a, &err),
        0);
    assert_true(tu_run_until(&loop, &a.done, 10000));
    assert_true(a.failed);
    assert_non_null(strstr(a.err.msg, "producer gave up"));
    w = run_ok(&loop, conn, "SELECT count(*) FROM copy_in_t");
    assert_string_equal(w.value, "300000");
    pg_pool_release(pool, conn);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

/* ---- transactions, errors, parameters, cancel ---- */

static void test_transactions(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 2);
    PgConn *a = acquire(&loop, pool);
    PgConn *b = acquire(&loop, pool);
    run_ok(&loop, a, "CREATE TABLE IF NOT EXISTS bw_test_tx (id int)");
    run_ok(&loop, a, "TRUNCATE bw_test_tx");

    run_ok(&loop, a, "BEGIN");
    run_ok(&loop, a, "INSERT INTO bw_test_tx VALUES (1)");
    assert_string_equal(run_ok(&loop, a, "SELECT count(*) FROM bw_test_tx").value, "1");
    assert_string_equal(run_ok(&loop, b, "SELECT count(*) FROM bw_test_tx").value, "0");
    run_ok(&loop, a, "ROLLBACK");
    assert_string_equal(run_ok(&loop, b, "SELECT count(*) FROM bw_test_tx").value, "0");

    run_ok(&loop, a, "BEGIN");
    run_ok(&loop, a, "INSERT INTO bw_test_tx VALUES (2)");
    run_ok(&loop, a, "COMMIT");
    assert_string_equal(run_ok(&loop, b, "SELECT count(*) FROM bw_test_tx").value, "1");

    /* a failed statement aborts the transaction; released inside it, the conn is dropped */
    run_ok(&loop, a, "BEGIN");
    Wait w = run(&loop, a, "INSERT INTO bw_test_tx VALUES ('not a number')");
    assert_true(w.has_err);
    assert_int_equal(w.err.kind, ERR_PERMANENT);
    assert_non_null(strstr(w.err.msg, "22P02"));
    assert_int_equal(pg_pool_open(pool), 2);
    pg_pool_release(pool, a);
    assert_int_equal(pg_pool_open(pool), 1);
    run_ok(&loop, b, "DROP TABLE bw_test_tx");
    pg_pool_release(pool, b);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

/* ---- pipelines ---- */

typedef struct {
    int done, n, has_err, nulls;
    Err err;
    char vals[8][64];
    ExecStatusType st[8];
} PWait;

static void on_pipeline(PgConn *conn, PGresult *const *res, int n, const Err *err, void *data) {
    (void)conn;
    PWait *w = data;
    w->done = 1;
    w->n = n;
    if (err) {
        w->has_err = 1;
        w->err = *err;
    }
    for (int i = 0; res && i < n && i < 8; i++) {
        if (res[i] == NULL) {
            w->nulls++;
            w->st[i] = PGRES_PIPELINE_ABORTED;
            continue;
        }
        w->st[i] = PQresultStatus(res[i]);
        if (PQntuples(res[i]) > 0)
            snprintf(w->vals[i], sizeof(w->vals[i]), "%s", PQgetvalue(res[i], 0, 0));
    }
}

static PWait pipeline(uv_loop_t *loop, PgConn *conn, const PgStmt *stmts, int n) {
    PWait w;
    memset(&w, 0, sizeof(w));
    Err err;
    err_clear(&err);
    assert_int_equal(pg_conn_pipeline(conn, stmts, n, on_pipeline, &w, &err), 0);
    assert_true(tu_run_until(loop, &w.done, 10000));
    return w;
}

/* Statements sent at once, in one round trip: results in order, Syncs ending each group's
 * implicit transaction, a BEGIN among them opening one that stays open after; a failure
 * aborts the rest of its group only, and names the statement's error. */
static void test_pipeline(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 2);
    PgConn *a = acquire(&loop, pool);
    PgConn *b = acquire(&loop, pool);
    run_ok(&loop, a, "CREATE TABLE IF NOT EXISTS bw_test_pl (id int)");
    run_ok(&loop, a, "TRUNCATE bw_test_pl");

    const char *one[] = {"1"};
    const char *two[] = {"2"};
    PgStmt ok[] = {
        {"INSERT INTO bw_test_pl VALUES ($1::int)", 1, one, 1, 0},
        {"BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL, 0, 0},
        {"INSERT INTO bw_test_pl VALUES ($1::int)", 1, two, 0, 0},
        {"SELECT string_agg(id::text, ',' ORDER BY id) FROM bw_test_pl", 0, NULL, 0, 0},
    };
    PWait w = pipeline(&loop, a, ok, 4);
    assert_false(w.has_err);
    assert_int_equal(w.n, 4);
    assert_int_equal(w.nulls, 0);
    assert_int_equal(w.st[0], PGRES_COMMAND_OK);
    assert_int_equal(w.st[3], PGRES_TUPLES_OK);
    assert_string_equal(w.vals[3], "1,2");
    /* the first group committed on its own; the BEGIN's transaction is still open */
    assert_int_equal(PQtransactionStatus(pg_conn_pq(a)), PQTRANS_INTRANS);
    assert_string_equal(run_ok(&loop, b, "SELECT count(*) FROM bw_test_pl").value, "1");
    run_ok(&loop, a, "COMMIT");
    assert_string_equal(run_ok(&loop, b, "SELECT count(*) FROM bw_test_pl").value, "2");

    /* a failure in the second group: the first committed, the rest of the second not run */
    const char *bad[] = {"x"};
    const char *three[] = {"3"};
    PgStmt fail[] = {
        {"INSERT INTO bw_test_pl VALUES ($1::int)", 1, three, 1, 0},
        {"INSERT INTO bw_test_pl VALUES ($1::int)", 1, bad, 0, 0},
        {"INSERT INTO bw_test_pl VALUES (4)", 0, NULL, 0, 0},
    };
    w = pipeline(&loop, a, fail, 3);
    assert_true(w.has_err);
    assert_non_null(strstr(w.err.msg, "22P02"));
    assert_int_equal(w.st[0], PGRES_COMMAND_OK);
    assert_int_equal(w.st[1], PGRES_FATAL_ERROR);
    assert_int_equal(w.st[2], PGRES_PIPELINE_ABORTED); /* NULL: not run */
    assert_int_equal(PQtransactionStatus(pg_conn_pq(a)), PQTRANS_IDLE);
    assert_string_equal(
        run_ok(&loop, b, "SELECT string_agg(id::text, ',' ORDER BY id) FROM bw_test_pl").value,
        "1,2,3");
    /* the connection is usable again, in and out of pipeline mode */
    assert_string_equal(run_ok(&loop, a, "SELECT 'after'").value, "after");
    PgStmt one_stmt[] = {{"SELECT $1::int + 1", 1, one, 0, 0}};
    w = pipeline(&loop, a, one_stmt, 1);
    assert_false(w.has_err);
    assert_string_equal(w.vals[0], "2");

    /* prepared statements: prepared on the session once, run again by name; one whose
     * Prepare did not run (its group aborted) or failed is prepared again next time */
    const char *pv[] = {"40"};
    PgStmt prep[] = {{"SELECT $1::int + 2", 1, pv, 0, 1}};
    const char *count_sql = "SELECT count(*) FROM pg_prepared_statements";
    for (int k = 0; k < 3; k++) {
        w = pipeline(&loop, a, prep, 1);
        assert_false(w.has_err);
        assert_string_equal(w.vals[0], "42");
        assert_string_equal(run_ok(&loop, a, count_sql).value, "1");
    }
    PgStmt aborted[] = {
        {"INSERT INTO bw_test_pl VALUES ($1::int)", 1, bad, 0, 0},
        {"SELECT $1::int * 2", 1, pv, 0, 1}, /* its Prepare never runs */
    };
    w = pipeline(&loop, a, aborted, 2);
    assert_true(w.has_err);
    assert_non_null(strstr(w.err.msg, "22P02"));
    assert_int_equal(w.st[1], PGRES_PIPELINE_ABORTED);
    PgStmt again[] = {{"SELECT $1::int * 2", 1, pv, 0, 1}, {"SELECT $1::int + 2", 1, pv, 0, 1}};
    w = pipeline(&loop, a, again, 2);
    assert_false(w.has_err);
    assert_string_equal(w.vals[0], "80");
    assert_string_equal(w.vals[1], "42");
    assert_string_equal(run_ok(&loop, a, count_sql).value, "2");
    PgStmt broken[] = {{"SELEC 1", 0, NULL, 0, 1}, {"SELECT 'next'", 0, NULL, 1, 0}};
    w = pipeline(&loop, a, broken, 2);
    assert_true(w.has_err);
    assert_non_null(strstr(w.err.msg, "42601")); /* the Prepare's own error, for its statement */
    assert_string_equal(w.vals[1], "");
    w = pipeline(&loop, a, broken, 2); /* not taken for prepared: it fails the same way */
    assert_non_null(strstr(w.err.msg, "42601"));
    assert_string_equal(run_ok(&loop, a, count_sql).value, "2");
    /* the session loses them (as behind a pooler in transaction mode): that statement fails
     * retryable, and from then on nothing is prepared */
    run_ok(&loop, a, "DEALLOCATE ALL");
    w = pipeline(&loop, a, prep, 1);
    assert_true(w.has_err);
    assert_non_null(strstr(w.err.msg, "26000"));
    assert_int_equal(w.err.kind, ERR_RETRYABLE);
    w = pipeline(&loop, a, again, 2);
    assert_false(w.has_err);
    assert_string_equal(w.vals[1], "42");
    assert_string_equal(run_ok(&loop, a, count_sql).value, "0");

    /* busy: one operation at a time, a pipeline included */
    Wait q;
    memset(&q, 0, sizeof(q));
    Err err;
    err_clear(&err);
    assert_int_equal(pg_conn_query(a, "SELECT 1", 0, NULL, on_result, &q, &err), 0);
    PWait r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(pg_conn_pipeline(a, one_stmt, 1, on_pipeline, &r, &err), -1);
    assert_int_equal(err.code, ERR_CODE_BUSY);
    assert_true(tu_run_until(&loop, &q.done, 5000));

    /* cancelled midway: the error of the statement cancelled */
    PgStmt slow[] = {{"SELECT 1", 0, NULL, 0, 0}, {"SELECT pg_sleep(20)", 0, NULL, 0, 0}};
    PWait s;
    memset(&s, 0, sizeof(s));
    uint64_t t0 = uv_hrtime();
    assert_int_equal(pg_conn_pipeline(a, slow, 2, on_pipeline, &s, &err), 0);
    tu_run_for(&loop, 200);
    pg_conn_cancel(a);
    assert_true(tu_run_until(&loop, &s.done, 10000));
    assert_true(s.has_err);
    assert_non_null(strstr(s.err.msg, "57014"));
    assert_true((uv_hrtime() - t0) / 1000000 < 5000);
    assert_string_equal(run_ok(&loop, a, "SELECT 'after cancel'").value, "after cancel");

    /* closed with a pipeline in flight: the callback says so, once */
    PWait c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(pg_conn_pipeline(a, slow, 2, on_pipeline, &c, &err), 0);
    pg_pool_release(pool, a); /* mid-operation: closed */
    assert_true(tu_run_until(&loop, &c.done, 5000));
    assert_true(c.has_err);
    assert_int_equal(c.err.code, ERR_CODE_CANCELLED);

    run_ok(&loop, b, "DROP TABLE bw_test_pl");
    pg_pool_release(pool, b);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

static void test_errors_and_parameters(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 1);
    PgConn *conn = acquire(&loop, pool);
    Wait w = run(&loop, conn, "SELEC 1");
    assert_true(w.has_err);
    assert_int_equal(w.err.code, ERR_CODE_SQL);
    assert_int_equal(w.err.kind, ERR_PERMANENT);
    assert_non_null(strstr(w.err.msg, "42601"));
    assert_string_equal(run_ok(&loop, conn, "SELECT 'still usable'").value, "still usable");

    /* parameters are data, never SQL */
    Wait p;
    memset(&p, 0, sizeof(p));
    const char *hostile[] = {"'); DROP TABLE profiles; --", NULL};
    Err err;
    err_clear(&err);
    assert_int_equal(pg_conn_query(conn, "SELECT $1::text || coalesce($2, '<null>')", 2, hostile,
                                   on_result, &p, &err),
                     0);
    assert_true(tu_run_until(&loop, &p.done, 5000));
    assert_false(p.has_err);
    assert_string_equal(p.value, "'); DROP TABLE profiles; --<null>");

    /* busy: one operation at a time */
    Wait q;
    memset(&q, 0, sizeof(q));
    assert_int_equal(pg_conn_query(conn, "SELECT 1", 0, NULL, on_result, &q, &err), 0);
    Wait r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(pg_conn_query(conn, "SELECT 2", 0, NULL, on_result, &r, &err), -1);
    assert_int_equal(err.code, ERR_CODE_BUSY);
    assert_true(tu_run_until(&loop, &q.done, 5000));

    /* cancel a long statement */
    Wait s;
    memset(&s, 0, sizeof(s));
    uint64_t t0 = uv_hrtime();
    assert_int_equal(pg_conn_query(conn, "SELECT pg_sleep(20)", 0, NULL, on_result, &s, &err), 0);
    tu_run_for(&loop, 100);
    pg_conn_cancel(conn);
    assert_true(tu_run_until(&loop, &s.done, 10000));
    assert_true(s.has_err);
    assert_non_null(strstr(s.err.msg, "57014"));
    assert_true((uv_hrtime() - t0) / 1000000 < 5000);
    assert_string_equal(run_ok(&loop, conn, "SELECT 'after cancel'").value, "after cancel");

    pg_pool_release(pool, conn);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

static void test_connect_failures(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* nothing listens on port 1: the waiters fail, they do not hang */
    PgPool *pool = pg_pool_new(&loop, "postgresql://u:pw@127.0.0.1:1/db", 2, 2000);
    Many m;
    memset(&m, 0, sizeof(m));
    submit_many(pool, &m, 5, "SELECT $1::int");
    tu_run_for(&loop, 1000);
    assert_int_equal(m.done, 5);
    assert_int_equal(m.errors, 5);
    assert_int_equal(m.retryable, 5);
    assert_non_null(strstr(pg_pool_last_error(pool), "connect failed"));
    assert_null(strstr(pg_pool_last_error(pool), "pw@"));
    pg_pool_free(pool);

    /* an unknown host name is resolved off the loop and reported */
    Wait w;
    memset(&w, 0, sizeof(w));
    PgPool *p2 = pg_pool_new(&loop, "host=no-such-host.invalid dbname=x", 1, 5000);
    pg_pool_query(p2, "SELECT 1", 0, NULL, on_result, &w);
    assert_true(tu_run_until(&loop, &w.done, 10000));
    assert_true(w.has_err);
    assert_non_null(strstr(w.err.msg, "resolve"));
    pg_pool_free(p2);
    tu_loop_close(&loop);
}

/* ---- server restart in the middle of a run ---- */

static void test_restart_mid_run(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    PgPool *pool = new_pool(&loop, 8);
    Many m;
    memset(&m, 0, sizeof(m));
    submit_many(pool, &m, 200, "SELECT $1::int * 2, pg_backend_pid(), pg_sleep(0.01)");
    tu_run_for(&loop, 60); /* some done, some in flight, some waiting */
    assert_true(m.done < 200);
    assert_int_equal(tu_devenv("restart postgres"), 0);
    assert_true(tu_run_until_count(&loop, &m.done, 200, 120000));
    printf("during restart: %d ok, %d failed (%d retryable): first '%s', last '%s'\n", m.ok,
           m.errors, m.retryable, m.first_err, m.last_err);
    assert_int_equal(m.ok + m.errors, 200);
    assert_int_equal(m.wrong, 0);
    assert_true(m.errors > 0);
    assert_int_equal(m.retryable, m.errors);

    /* the pool recovers by itself */
    Many after;
    memset(&after, 0, sizeof(after));
    submit_many(pool, &after, 100, "SELECT $1::int * 2, pg_backend_pid()");
    assert_true(tu_run_until_count(&loop, &after.done, 100, 120000));
    assert_int_equal(after.ok, 100);
    assert_int_equal(after.errors, 0);
    pg_pool_free(pool);
    tu_loop_close(&loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_1000_queries_on_8_connections),
        cmocka_unit_test(test_copy_out_1m_rows_bounded),
        cmocka_unit_test(test_copy_in),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_errors_and_parameters),
        cmocka_unit_test(test_connect_failures),
        cmocka_unit_test(test_restart_mid_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
