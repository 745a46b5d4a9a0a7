/*
 * jobrt: the runtime every job type runs in.
 *
 * A job type is an enum of states and one step function; the runtime owns
 * everything that outlives a callback: the pooled connection lease, the open
 * transaction, the statement or COPY in flight, the storage operations and
 * streams in flight (write stream, checked read), the user locks, and the
 * job's state itself. The step function receives events (a statement's
 * result, a COPY row, the write stream writable or ended, a storage answer...)
 * and starts the next operation through jobrt_*.
 *
 * Once the job fails, no new operation starts (jobrt_write and jobrt_check return NULL).
 * Errors: an operation that fails fails the job, unless it was started with
 * JRT_SOFT (then the step gets the event with ev->err set). jobrt_fail() may be
 * called from any step, any number of times; the first error wins. Teardown runs
 * exactly once, in one fixed order, each part waiting for the one before:
 *
 *   1. the statement in flight ends (a COPY OUT is drained and cancelled, a
 *      COPY IN ended with an error, a query cancelled); a checked read stops
 *   2. the write stream is aborted (nothing is stored); storage operations and
 *      lock requests in flight answer
 *   3. ROLLBACK of the open transaction (a broken connection is dropped instead)
 *   4. the outcome is recorded: the type's record() statements, one by one
 *   5. locks, lease and streams released, the state freed (type's release()),
 *      job_done()
 *
 * Whether a failure is final (the queue dead-letters it) is decided once,
 * here: jobrt_final().
 */
#ifndef BW_JOBRT_H
#define BW_JOBRT_H

#include "capture/segfile.h"
#include "format/bcheck.h"
#include "jobs/job.h"
#include "storage/storage.h"

typedef struct JobRt JobRt;

typedef enum {
    JEV_START,         /* the job begins */
    JEV_CONN,          /* jobrt_lease(): the connection is the job's */
    JEV_RESULT,        /* a statement or COPY ended: res; a pipeline: results, n (res the last) */
    JEV_ROW,           /* a COPY OUT row: buf, len; the step returns PG_COPY_* */
    JEV_COPY_WRITABLE, /* COPY IN can take more */
    JEV_STORED,        /* put/get/head/abort_pending answered: sres */
    JEV_PAGE,          /* a page of a listing: objs or pending, n; nonzero return stops */
    JEV_LISTED,        /* a listing ended: count */
    JEV_DELETED,       /* a batch delete ended: count deleted, failed */
    JEV_WRITABLE,      /* the write stream takes more */
    JEV_WRITTEN,       /* the write stream ended: written */
    JEV_ITEM,          /* a checked read's row or deleted key: section, table, buf, len;
                          the step returns -1 with *item_err set to stop the read */
    JEV_CHECKED,       /* the checked read ended: check (its counts), err with JRT_SOFT */
    JEV_LOCKED,        /* jobrt_user_lock(): locked (1 locked, 0 busy) */
    JEV_KEY,           /* jobrt_datakey_new/open(): key (the data key and its wrapping) */
    JEV_TIMER,         /* jobrt_sleep() ended */
    JEV_SEGMENT,       /* jobrt_segment(): buf, len (its change lines), count (bytes stored) */
} JobEvKind;

/* A data key, valid during the event only (then wiped). */
typedef struct {
    unsigned char dek[32];
    const char *key_id;  /* the key that wraps it */
    const char *wrapped; /* its wrapping under key_id (base64) */
} JobKey;

typedef struct {
    JobEvKind kind;
    int tag;        /* the tag the operation was started with */
    const Err *err; /* JRT_SOFT operations only: why it failed */
    PGresult *res;
    PGresult *const *results; /* jobrt_pipeline(): statement i's result, NULL if it did not run */
    const char *buf;
    size_t len;
    int section;
    const char *table;
    Err *item_err;
    const StorageResult *sres;
    const StorageObject *objs;
    const StoragePending *pending;
    size_t n;
    uint64_t count, failed;
    const StorageWritten *written;
    const BCheck *check;
    int locked;
    const JobKey *key;
} JobEv;

typedef struct {
    size_t size; /* of the job's state, zeroed by the runtime */
    /* every event; the return value counts for JEV_ROW, JEV_PAGE and JEV_ITEM only */
    int (*step)(JobRt *rt, void *st, const JobEv *ev);
    /* teardown, part 4: issue record statement number k with jobrt_record_query() and return 1,
     * or return 0 when there is none left. May be NULL. */
    int (*record)(JobRt *rt, void *st, int k);
    /* free what the state points to (not the state itself). May be NULL. */
    void (*release)(void *st);
} JobRtOps;

/* Operation flags. */
#define JRT_SOFT  1 /* deliver the error to the step instead of failing the job */
#define JRT_BEGIN 2 /* the statement opens the transaction */
#define JRT_END   4 /* the statement ends it (COMMIT) */

/* JobType run and cancel for a runtime job. */
void jobrt_run(Job *job, const JobRtOps *ops);
void jobrt_cancel(Job *job);

Job *jobrt_job(const JobRt *rt);
Services *jobrt_services(const JobRt *rt);
Storage *jobrt_storage(const JobRt *rt);
PgConn *jobrt_conn(const JobRt *rt);
const Err *jobrt_err(const JobRt *rt);
int jobrt_failing(const JobRt *rt);
int jobrt_cancelled(const JobRt *rt);
/* The failure ends the job for good (decided once, for the queue and the job's records). */
int jobrt_final(const JobRt *rt);
/* Milliseconds since the job started. */
uint64_t jobrt_elapsed_ms(const JobRt *rt);

/* ---- PostgreSQL ---- */
/* Lease a pooled connection for the job (JEV_CONN). */
void jobrt_lease(JobRt *rt, int tag);
/* One statement on the leased connection (JEV_RESULT). */
void jobrt_query(JobRt *rt, int tag, int flags, const char *sql, int n, const char *const *v);
/* Statements sent at once on the leased connection (pg_conn_pipeline: one round trip; a Sync
 * after each with sync set), one JEV_RESULT with every result. The transaction state is the
 * connection's afterwards (a BEGIN among them opens it; JRT_BEGIN/JRT_END are not used).
 * JRT_SOFT: a failure comes as ev->err with the results (NULL when the connection failed). */
void jobrt_pipeline(JobRt *rt, int tag, int flags, const PgStmt *stmts, int n);
/* JEV_TIMER after ms (waited for by the teardown like any operation: keep it short). */
void jobrt_sleep(JobRt *rt, int tag, uint64_t ms);
/* One statement through the pool, no lease needed (JEV_RESULT). */
void jobrt_pool_query(JobRt *rt, int tag, int flags, const char *sql, int n, const char *const *v);
/* COPY ... TO STDOUT: JEV_ROW per row, then JEV_RESULT. */
void jobrt_copy_out(JobRt *rt, int tag, const char *sql);
void jobrt_copy_resume(JobRt *rt);
/* COPY ... FROM STDIN: JEV_COPY_WRITABLE, jobrt_copy_end() when all is put, then JEV_RESULT.
 * JRT_SOFT: rows the server refuses come as ev->err (the transaction is then aborted: only a
 * ROLLBACK TO SAVEPOINT goes on). */
void jobrt_copy_in(JobRt *rt, int tag, int flags, const char *sql);
void jobrt_copy_end(JobRt *rt);

/* ---- storage ---- */
void jobrt_put(JobRt *rt, int tag, int flags, const char *key, const void *body, size_t len,
               const char *content_type);
void jobrt_get(JobRt *rt, int tag, int flags, const char *key, size_t max_bytes);
/* The same from another store (the replica). */
void jobrt_get_from(JobRt *rt, Storage *store, int tag, int flags, const char *key,
                    size_t max_bytes);
void jobrt_list_pending(JobRt *rt, int tag, int flags, const char *prefix);
void jobrt_abort_pending(JobRt *rt, int tag, int flags, const char *key, const char *upload_id);
/* From a JEV_PAGE of jobrt_list_pending*: append to *ids (n of them) the upload ids of key. */
void jobrt_pending_of(const JobEv *ev, const char *key, char ***ids, int *n);
/* The same two in another store (the replica). */
void jobrt_list_pending_from(JobRt *rt, Storage *store, int tag, int flags, const char *prefix);
void jobrt_abort_pending_from(JobRt *rt, Storage *store, int tag, int flags, const char *key,
                              const char *upload_id);
void jobrt_delete(JobRt *rt, int tag, int flags, const char *const *keys, size_t n);
/* The same in another store (the replica). */
void jobrt_delete_from(JobRt *rt, Storage *store, int tag, int flags, const char *const *keys,
                       size_t n);
/* The job's write stream (one at a time): JEV_WRITABLE, JEV_WRITTEN. codecs taken. */
StorageWrite *jobrt_write(JobRt *rt, int tag, const char *key, const char *content_type,
                          FilterChain *codecs);
/* The job's checked read of a backup object (one at a time): JEV_ITEM, JEV_CHECKED. */
BCheck *jobrt_check(JobRt *rt, int tag, int flags, const BCheckTarget *t, int check_json);

/* ---- encryption keys (keys.h): keyring keys answer on the next loop turn, KMS keys when KMS
 * answers; a key the worker lacks fails the job naming it (or, JRT_SOFT, ev->err) ---- */
/* A fresh data key for a new object of user_id/backup_id, wrapped under the current key. */
void jobrt_datakey_new(JobRt *rt, int tag, int flags, const char *user_id, const char *backup_id);
/* The data key of a wrapping. */
void jobrt_datakey_open(JobRt *rt, int tag, int flags, const char *key_id, const char *wrapped,
                        const char *user_id, const char *backup_id);

/* ---- change segments ---- */
/* One change segment read whole from store (NULL: the job's), checked against its record and
 * decoded (segfile: SHA-256 first, then its data key opened from the record's wrapping or its
 * header's, a KMS key asynchronously): JEV_SEGMENT. The record is copied. */
void jobrt_segment(JobRt *rt, int tag, int flags, Storage *store, const SegFileRecord *rec,
                   size_t max_bytes);

/* ---- locks (cleanup scope=all) ---- */
void jobrt_user_lock(JobRt *rt, int tag, const char *user_id);
void jobrt_user_unlock(JobRt *rt, const char *user_id);

/* ---- the end ---- */
void jobrt_fail(JobRt *rt, const Err *err);
void jobrt_failf(JobRt *rt, ErrKind kind, ErrCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Success: release everything and complete the job. */
void jobrt_done(JobRt *rt);
/* Teardown part 4: one record statement (on the connection if usable, else the pool). */
void jobrt_record_query(JobRt *rt, const char *sql, int n, const char *const *v);

#endif
