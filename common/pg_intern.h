/*
 * pg_intern: what the two halves of one PostgreSQL connection share (pg.c:
 * operations, handles, failure; pgconnect.c: resolving and connecting).
 * Not for anyone else.
 */
#ifndef BW_PG_INTERN_H
#define BW_PG_INTERN_H

#include "pg.h"
#include "buf.h"
#include "log.h"
#include "netaddr.h"

#include <stdlib.h>
#include <string.h>

typedef enum { CS_RESOLVING, CS_CONNECTING, CS_READY, CS_BROKEN, CS_CLOSED } ConnState;
typedef enum { OP_NONE, OP_CONNECT, OP_QUERY, OP_COPY_OUT, OP_COPY_IN, OP_PIPELINE } OpKind;
typedef enum { PH_RESULTS, PH_STREAM, PH_FINAL } Phase;

/* COPY OUT bytes handled per loop pass before yielding to other work. */
#define STREAM_SLICE_BYTES (512 * 1024)

/* A message this large grew libpq's buffers, which it never shrinks: such a connection is
 * closed when released rather than kept holding the memory. */
#define PG_BIG_MESSAGE (8u << 20)

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

void pgi_connect_step(PgConn *c);
void pgi_fail(PgConn *c, ErrKind kind, const char *what, const char *detail);
void pgi_kick(PgConn *c);
void pgi_on_notice(void *arg, const char *message);
void pgi_release(PgConn *c);
void pgi_watch(PgConn *c, int events);

#endif
