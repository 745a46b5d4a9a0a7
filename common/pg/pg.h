/*
 * pg: one PostgreSQL connection driven by the libuv loop, never blocking it.
 *
 * libpq in nonblocking mode, watched by a uv_poll_t on PQsocket():
 *   - connect: PQconnectStartParams/PQconnectPoll, with the host resolved by
 *     uv_getaddrinfo first (libpq would block on DNS) and a connect timeout;
 *   - queries: PQsendQueryParams (text parameters, never spliced into SQL),
 *     flushed while the socket accepts data, results gathered until NULL;
 *   - COPY ... TO STDOUT streamed row by row to a callback that can pause the
 *     stream (backpressure: libpq buffers are drained before re-arming);
 *   - COPY ... FROM STDIN streamed from the caller, with a writable callback
 *     telling it when to send more.
 * One operation at a time per connection; PgPool (pgpool.h) spreads work.
 *
 * Callbacks: every operation calls its completion callback exactly once, with
 * err NULL on success. A PGresult passed to a callback is freed after it returns.
 */
#ifndef BW_PG_H
#define BW_PG_H

#include "base/err.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct PgConn PgConn;

typedef void (*PgConnectCb)(PgConn *conn, const Err *err, void *data);
/* Completion of a query or COPY. res may be NULL when err is set. */
typedef void (*PgResultCb)(PgConn *conn, PGresult *res, const Err *err, void *data);
/* COPY OUT data: one row (text or binary). Return PG_COPY_PAUSE to stop the flow, or
 * PG_COPY_KEEP to stop it and keep buf (libpq's copy of the row: free it with pg_copy_free). */
typedef int (*PgCopyDataCb)(PgConn *conn, const char *buf, size_t len, void *data);
/* COPY IN: the connection is ready for more data (see pg_conn_copy_put). */
typedef void (*PgWritableCb)(PgConn *conn, void *data);
/* An idle connection broke (server restart, network). */
typedef void (*PgBrokenCb)(PgConn *conn, void *data);

#define PG_COPY_CONTINUE 0
#define PG_COPY_PAUSE    1
#define PG_COPY_KEEP     2

/* Free a row kept with PG_COPY_KEEP. */
void pg_copy_free(void *buf);

/* Start connecting; cb is called once. conninfo: URI or key=value. Never NULL. */
PgConn *pg_conn_new(uv_loop_t *loop, const char *conninfo, unsigned timeout_ms, PgConnectCb cb,
                    void *data);
/* Close. An operation in flight completes with ERR_CODE_CANCELLED. Memory goes asynchronously. */
void pg_conn_free(PgConn *conn);
/* 1 when connected, idle and usable. */
int pg_conn_is_idle(const PgConn *conn);
/* 1 when the connection is lost or failed. */
int pg_conn_is_broken(const PgConn *conn);
/* 1 when a message of 8 MiB or more went through: libpq's buffers grew and never shrink. */
int pg_conn_grown(const PgConn *conn);
/* The libpq handle, for PQescapeLiteral and friends (NULL before connect). */
PGconn *pg_conn_pq(PgConn *conn);
/* Called when the connection breaks while no operation runs. */
void pg_conn_set_on_broken(PgConn *conn, PgBrokenCb cb, void *data);
/* Owner's pointer, free for the caller's use (the pool keeps its bookkeeping here). */
void pg_conn_set_owner(PgConn *conn, void *owner);
void *pg_conn_owner(const PgConn *conn);

/* Run one statement with text parameters ($1..$n; values may be NULL for SQL NULL). */
int pg_conn_query(PgConn *conn, const char *sql, int nparams, const char *const *values,
                  PgResultCb cb, void *data, Err *err);

/* One statement of a pipeline. sync: a Sync follows it, so it and the statements before it
 * since the last Sync commit (or fail) together, as one implicit transaction unless a BEGIN
 * among them opened one; the last statement always has one. */
typedef struct {
    const char *sql;
    int nparams;
    const char *const *values;
    int sync;
    /* prepared on the session the first time (a named statement, kept for the connection's
     * life): for a statement sent again and again whose planning costs more than running it.
     * A session that loses one (a pooler in transaction mode) turns preparing off for the
     * process, and that statement fails retryable. */
    int prepare;
} PgStmt;
/* A pipeline ended: res[i] is statement i's result, NULL when it did not run (an earlier
 * statement of its group failed); err is the first failure. res is NULL when the connection
 * failed. The results are freed after the callback returns. */
typedef void (*PgPipelineCb)(PgConn *conn, PGresult *const *res, int n, const Err *err, void *data);
/* Send n statements at once (libpq's pipeline mode: one round trip), each with text
 * parameters like pg_conn_query; no COPY. The statements and values are copied by libpq. */
int pg_conn_pipeline(PgConn *conn, const PgStmt *stmts, int n, PgPipelineCb cb, void *data,
                     Err *err);

/* Run COPY ... TO STDOUT; on_data gets each row, on_done the final status. */
int pg_conn_copy_out(PgConn *conn, const char *sql, PgCopyDataCb on_data, PgResultCb on_done,
                     void *data, Err *err);
/* Pause or resume the COPY OUT stream (also possible from inside on_data). */
void pg_conn_copy_pause(PgConn *conn);
void pg_conn_copy_resume(PgConn *conn);

/* Run COPY ... FROM STDIN; on_writable is called when data can be put. */
int pg_conn_copy_in(PgConn *conn, const char *sql, PgWritableCb on_writable, PgResultCb on_done,
                    void *data, Err *err);
/*
 * Put COPY data. Returns 1: accepted, put more; 0: accepted, but wait for
 * on_writable before putting more (the socket is full); -1: the connection
 * failed (on_done reports it).
 */
int pg_conn_copy_put(PgConn *conn, const char *buf, size_t len);
/* The same for several pieces sent as one, with one flush. */
int pg_conn_copy_putv(PgConn *c, const char *const *bufs, const size_t *lens, int nbufs);
/* Finish COPY IN; errmsg non-NULL aborts it (the server then reports an error). */
int pg_conn_copy_end(PgConn *conn, const char *errmsg);

/* Run sql by the simple query protocol (no parameters; several statements allowed: the last
 * result, or the first error, comes back). A replication connection speaks only this. */
int pg_conn_simple_query(PgConn *conn, const char *sql, PgResultCb cb, void *data, Err *err);
/* Run a command that answers with COPY BOTH (START_REPLICATION): on_data gets each message
 * from the server, as for COPY OUT (pause and resume alike); pg_conn_copy_send answers;
 * on_done comes when the server ends the stream or the connection fails. */
int pg_conn_copy_both(PgConn *conn, const char *sql, PgCopyDataCb on_data, PgResultCb on_done,
                      void *data, Err *err);
/* Send one message on a COPY BOTH stream (a standby status update): 0, or -1 when the
 * connection failed (on_done reports it). */
int pg_conn_copy_send(PgConn *conn, const char *buf, size_t len);

/* Ask the server to cancel the running statement (PQcancel, on the thread pool). */
void pg_conn_cancel(PgConn *conn);

/* Operations sent since the start, by every connection of the process (a statement, a COPY or
 * a pipeline: each one round trip). Loop thread only. */
uint64_t pg_round_trips(void);

/* Turn an error result into an Err (kind from SQLSTATE: connection, deadlock... retryable). */
void pg_result_to_err(const PGresult *res, Err *err);

#endif
