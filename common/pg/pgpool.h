/*
 * pgpool: a small PostgreSQL connection pool on the loop.
 *
 * Opens up to max connections lazily, hands them out in FIFO order to
 * waiting requests, drops connections that broke or were released inside a
 * transaction, and opens fresh ones afterwards, so the pool recovers by itself
 * after a server restart. When no connection can be opened at all, waiting
 * requests fail with the connect error instead of hanging.
 *
 *   pg_pool_query(pool, "SELECT ... $1", 1, values, on_result, ctx);
 *   pg_pool_acquire(pool, on_conn, ctx);  // then BEGIN ... COMMIT, pg_pool_release()
 */
#ifndef BW_PGPOOL_H
#define BW_PGPOOL_H

#include "pg/pg.h"

typedef struct PgPool PgPool;

/* conn is NULL when err is set. The caller must pg_pool_release() the conn. */
typedef void (*PgAcquireCb)(PgPool *pool, PgConn *conn, const Err *err, void *data);

PgPool *pg_pool_new(uv_loop_t *loop, const char *conninfo, int max_conns,
                    unsigned connect_timeout_ms);
/* Close idle connections now and leased ones when released; waiters get ERR_CODE_CANCELLED. */
void pg_pool_free(PgPool *pool);
/* Get a connection (callback on a later loop pass, never inside this call). */
void pg_pool_acquire(PgPool *pool, PgAcquireCb cb, void *data);
/* Return a connection: kept when idle and outside a transaction, else closed. */
void pg_pool_release(PgPool *pool, PgConn *conn);
/* Acquire, run one statement, release, then call cb (values are copied). */
void pg_pool_query(PgPool *pool, const char *sql, int nparams, const char *const *values,
                   PgResultCb cb, void *data);

/* Counters for health and metrics. */
int pg_pool_open(const PgPool *pool);    /* connected or connecting */
int pg_pool_idle(const PgPool *pool);    /* ready and not leased */
int pg_pool_waiting(const PgPool *pool); /* requests waiting for a connection */
const char *pg_pool_last_error(const PgPool *pool);

#endif
