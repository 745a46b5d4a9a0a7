/* jobrt: the job runtime (see jobrt.h). */
#include "jobs/jobrt.h"

#include "io/crypt.h"
#include "jobs/jobconfig.h"
#include "keys/keys.h"
#include "base/log.h"
#include "services.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LOCKS 4

typedef enum { Q_NONE, Q_QUERY, Q_COPY_OUT, Q_COPY_IN } QKind;

struct JobRt {
    Job *job;
    const JobRtOps *ops;
    void *st;
    Services *sv;
    PgPool *pool;
    Storage *store;
    uint64_t start_ms;
    /* PostgreSQL */
    PgConn *conn;
    int leasing, in_txn;
    QKind q;
    int q_tag, q_flags;
    int copy_paused, copy_ended, cancel_sent;
    /* storage and locks in flight */
    int ops_busy;
    StorageWrite *w;
    int w_tag, w_busy, w_abort_sent;
    BCheck *bc;
    int bc_tag, bc_flags, bc_busy;
    char locks[MAX_LOCKS][40];
    int nlocks;
    /* the end */
    Err err;
    int failing, cancelled, record_k, recording, finished;
};

static void teardown(JobRt *rt);

Job *jobrt_job(const JobRt *rt) {
    return rt->job;
}
Services *jobrt_services(const JobRt *rt) {
    return rt->sv;
}
Storage *jobrt_storage(const JobRt *rt) {
    return rt->store;
}
PgConn *jobrt_conn(const JobRt *rt) {
    return rt->conn;
}
const Err *jobrt_err(const JobRt *rt) {
    return &rt->err;
}
int jobrt_failing(const JobRt *rt) {
    return rt->failing;
}
int jobrt_cancelled(const JobRt *rt) {
    return rt->cancelled;
}
int jobrt_final(const JobRt *rt) {
    return rt->failing && !rt->cancelled && job_error_is_final(rt->job, &rt->err);
}
uint64_t jobrt_elapsed_ms(const JobRt *rt) {
    return uv_now(job_loop(rt->job)) - rt->start_ms;
}

/* Deliver an event, or (failing) go on with the teardown. An error of an operation not started
 * soft fails the job. */
static int deliver(JobRt *rt, JobEv *ev, const Err *err, int flags) {
    if (rt->failing) {
        teardown(rt);
        return 0;
    }
    if (err && !(flags & JRT_SOFT)) {
        jobrt_fail(rt, err);
        return 0;
    }
    ev->err = err;
    return rt->ops->step(rt, rt->st, ev);
}

/* ---- PostgreSQL ---- */

typedef struct {
    JobRt *rt;
    int tag, flags;
} OpCtx;

static OpCtx *op_new(JobRt *rt, int tag, int flags) {
    OpCtx *o = xmalloc(sizeof(*o));
    *o = (OpCtx){rt, tag, flags};
    rt->ops_busy++;
    return o;
}

static void drop_conn(JobRt *rt) {
    if (rt->conn)
        pg_pool_release(rt->pool, rt->conn); /* inside a transaction or broken: closed */
    rt->conn = NULL;
    rt->in_txn = 0;
}

static void on_lease(PgPool *pool, PgConn *conn, const Err *err, void *data) {
    (void)pool;
    JobRt *rt = data;
    rt->leasing = 0;
    rt->conn = conn;
    JobEv ev = {.kind = JEV_CONN, .tag = rt->q_tag};
    deliver(rt, &ev, err, 0);
}

void jobrt_lease(JobRt *rt, int tag) {
    if (rt->failing) /* the teardown runs: nothing new starts */
        return;
    rt->leasing = 1;
    rt->q_tag = tag;
    pg_pool_acquire(rt->pool, on_lease, rt);
}

static void on_result(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    JobRt *rt = data;
    int flags = rt->q_flags;
    rt->q = Q_NONE;
    if (!err && (flags & JRT_BEGIN))
        rt->in_txn = 1;
    if (!err && (flags & JRT_END))
        rt->in_txn = 0;
    JobEv ev = {.kind = JEV_RESULT, .tag = rt->q_tag, .res = res};
    deliver(rt, &ev, err, flags);
}

static void on_pipeline(PgConn *c, PGresult *const *res, int n, const Err *err, void *data) {
    JobRt *rt = data;
    rt->q = Q_NONE;
    PGconn *pq = pg_conn_pq(c);
    PGTransactionStatusType ts = pq ? PQtransactionStatus(pq) : PQTRANS_UNKNOWN;
    rt->in_txn = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
    JobEv ev = {.kind = JEV_RESULT,
                .tag = rt->q_tag,
                .results = res,
                .n = res ? (size_t)n : 0,
                .res = res && n > 0 ? res[n - 1] : NULL};
    deliver(rt, &ev, err, rt->q_flags);
}

static int started(JobRt *rt, int rc, const Err *e) {
    if (rc == 0)
        return 1;
    rt->q = Q_NONE;
    jobrt_fail(rt, e);
    return 0;
}

/* The statement in flight is now of this kind. */
static void begin(JobRt *rt, QKind kind, int tag, int flags) {
    rt->q = kind;
    rt->q_tag = tag;
    rt->q_flags = flags;
    rt->copy_paused = rt->copy_ended = 0;
}

void jobrt_query(JobRt *rt, int tag, int flags, const char *sql, int n, const char *const *v) {
    if (rt->failing) /* the teardown runs: nothing new starts */
        return;
    Err e;
    begin(rt, Q_QUERY, tag, flags);
    started(rt, pg_conn_query(rt->conn, sql, n, v, on_result, rt, &e), &e);
}

void jobrt_pipeline(JobRt *rt, int tag, int flags, const PgStmt *stmts, int n) {
    if (rt->failing)
        return;
    Err e;
    begin(rt, Q_QUERY, tag, flags & JRT_SOFT);
    started(rt, pg_conn_pipeline(rt->conn, stmts, n, on_pipeline, rt, &e), &e);
}

static void on_pool_result(PgConn *c, PGresult *res, const Err *err, void *data);

void jobrt_pool_query(JobRt *rt, int tag, int flags, const char *sql, int n, const char *const *v) {
    if (rt->failing)
        return;
    /* not cancellable, and needs no lease: waited for like a storage operation */
    pg_pool_query(rt->pool, sql, n, v, on_pool_result, op_new(rt, tag, flags));
}

typedef struct {
    uv_timer_t t;
    OpCtx o;
} SleepOp;

static void on_sleep_closed(uv_handle_t *h) {
    SleepOp *s = h->data;
    JobRt *rt = s->o.rt;
    int tag = s->o.tag;
    free(s);
    rt->ops_busy--;
    JobEv ev = {.kind = JEV_TIMER, .tag = tag};
    deliver(rt, &ev, NULL, 0);
}

static void on_sleep(uv_timer_t *t) {
    uv_close((uv_handle_t *)t, on_sleep_closed);
}

void jobrt_sleep(JobRt *rt, int tag, uint64_t ms) {
    if (rt->failing)
        return;
    SleepOp *s = xcalloc(1, sizeof(*s));
    s->o = (OpCtx){rt, tag, 0};
    rt->ops_busy++;
    uv_timer_init(job_loop(rt->job), &s->t);
    s->t.data = s;
    uv_timer_start(&s->t, on_sleep, ms, 0);
}

static int on_row(PgConn *c, const char *buf, size_t len, void *data) {
    (void)c;
    JobRt *rt = data;
    if (rt->failing)
        return PG_COPY_CONTINUE; /* draining after the cancel */
    JobEv ev = {.kind = JEV_ROW, .tag = rt->q_tag, .buf = buf, .len = len};
    int r = rt->ops->step(rt, rt->st, &ev);
    if (r != PG_COPY_CONTINUE)
        rt->copy_paused = 1;
    if (rt->failing && r == PG_COPY_PAUSE) { /* failed inside the row: keep draining */
        rt->copy_paused = 0;
        return PG_COPY_CONTINUE;
    }
    return r;
}

void jobrt_copy_out(JobRt *rt, int tag, const char *sql) {
    if (rt->failing) /* the teardown runs: nothing new starts */
        return;
    Err e;
    begin(rt, Q_COPY_OUT, tag, 0);
    started(rt, pg_conn_copy_out(rt->conn, sql, on_row, on_result, rt, &e), &e);
}

void jobrt_copy_resume(JobRt *rt) {
    if (rt->q == Q_COPY_OUT && rt->copy_paused) {
        rt->copy_paused = 0;
        pg_conn_copy_resume(rt->conn);
    }
}

static void on_copy_writable(PgConn *c, void *data) {
    (void)c;
    JobRt *rt = data;
    if (rt->failing) { /* opened after the job failed: ended with the error */
        if (rt->q == Q_COPY_IN && !rt->copy_ended) {
            rt->copy_ended = 1;
            if (pg_conn_copy_end(rt->conn, "job abandoned") != 0)
                pg_conn_cancel(rt->conn);
        }
        return;
    }
    JobEv ev = {.kind = JEV_COPY_WRITABLE, .tag = rt->q_tag};
    rt->ops->step(rt, rt->st, &ev);
}

void jobrt_copy_in(JobRt *rt, int tag, int flags, const char *sql) {
    if (rt->failing) /* the teardown runs: nothing new starts */
        return;
    Err e;
    begin(rt, Q_COPY_IN, tag, flags & JRT_SOFT);
    started(rt, pg_conn_copy_in(rt->conn, sql, on_copy_writable, on_result, rt, &e), &e);
}

void jobrt_copy_end(JobRt *rt) {
    if (rt->q != Q_COPY_IN || rt->copy_ended)
        return;
    rt->copy_ended = 1;
    if (pg_conn_copy_end(rt->conn, NULL) != 0)
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_CONNECT, "%s", "postgres: COPY could not be ended");
}

/* ---- storage ---- */

static void on_pool_result(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    OpCtx o = *(OpCtx *)data;
    free(data);
    o.rt->ops_busy--;
    JobEv ev = {.kind = JEV_RESULT, .tag = o.tag, .res = res};
    deliver(o.rt, &ev, err, o.flags);
}

static void on_stored(const StorageResult *res, const Err *err, void *data) {
    OpCtx o = *(OpCtx *)data;
    free(data);
    o.rt->ops_busy--;
    JobEv ev = {.kind = JEV_STORED, .tag = o.tag, .sres = res};
    deliver(o.rt, &ev, err, o.flags);
}

void jobrt_put(JobRt *rt, int tag, int flags, const char *key, const void *body, size_t len,
               const char *content_type) {
    if (rt->failing)
        return;
    storage_put(rt->store, key, body, len, content_type, on_stored, op_new(rt, tag, flags));
}

void jobrt_get(JobRt *rt, int tag, int flags, const char *key, size_t max_bytes) {
    jobrt_get_from(rt, rt->store, tag, flags, key, max_bytes);
}

void jobrt_get_from(JobRt *rt, Storage *store, int tag, int flags, const char *key,
                    size_t max_bytes) {
    if (rt->failing)
        return;
    storage_get(store, key, max_bytes, on_stored, op_new(rt, tag, flags));
}

void jobrt_abort_pending(JobRt *rt, int tag, int flags, const char *key, const char *upload_id) {
    jobrt_abort_pending_from(rt, rt->store, tag, flags, key, upload_id);
}

void jobrt_abort_pending_from(JobRt *rt, Storage *store, int tag, int flags, const char *key,
                              const char *upload_id) {
    if (rt->failing)
        return;
    storage_abort_pending(store, key, upload_id, on_stored, op_new(rt, tag, flags));
}

void jobrt_pending_of(const JobEv *ev, const char *key, char ***ids, int *n) {
    for (size_t i = 0; i < ev->n; i++) {
        if (strcmp(ev->pending[i].key, key) != 0)
            continue;
        *ids = xrealloc(*ids, (size_t)(*n + 1) * sizeof(char *));
        (*ids)[(*n)++] = xstrdup(ev->pending[i].upload_id);
    }
}

static int on_pending_page(const StoragePending *p, size_t n, void *data) {
    OpCtx *o = data;
    if (o->rt->failing)
        return 1;
    JobEv ev = {.kind = JEV_PAGE, .tag = o->tag, .pending = p, .n = n};
    return o->rt->ops->step(o->rt, o->rt->st, &ev);
}

static void on_listed(uint64_t count, const Err *err, void *data) {
    OpCtx o = *(OpCtx *)data;
    free(data);
    o.rt->ops_busy--;
    JobEv ev = {.kind = JEV_LISTED, .tag = o.tag, .count = count};
    deliver(o.rt, &ev, err, o.flags);
}

void jobrt_list_pending(JobRt *rt, int tag, int flags, const char *prefix) {
    jobrt_list_pending_from(rt, rt->store, tag, flags, prefix);
}

void jobrt_list_pending_from(JobRt *rt, Storage *store, int tag, int flags, const char *prefix) {
    if (rt->failing)
        return;
    storage_list_pending(store, prefix, on_pending_page, on_listed, op_new(rt, tag, flags));
}

static void on_deleted(size_t deleted, size_t failed, const Err *err, void *data) {
    OpCtx o = *(OpCtx *)data;
    free(data);
    o.rt->ops_busy--;
    JobEv ev = {.kind = JEV_DELETED, .tag = o.tag, .count = deleted, .failed = failed};
    deliver(o.rt, &ev, err, o.flags);
}

void jobrt_delete(JobRt *rt, int tag, int flags, const char *const *keys, size_t n) {
    jobrt_delete_from(rt, rt->store, tag, flags, keys, n);
}

void jobrt_delete_from(JobRt *rt, Storage *store, int tag, int flags, const char *const *keys,
                       size_t n) {
    if (rt->failing)
        return;
    storage_delete(store, keys, n, on_deleted, op_new(rt, tag, flags));
}

static void on_w_writable(StorageWrite *w, void *data) {
    (void)w;
    JobRt *rt = data;
    if (rt->failing)
        return;
    JobEv ev = {.kind = JEV_WRITABLE, .tag = rt->w_tag};
    rt->ops->step(rt, rt->st, &ev);
}

static void on_written(StorageWrite *w, const StorageWritten *res, const Err *err, void *data) {
    (void)w;
    JobRt *rt = data;
    rt->w_busy = 0;
    JobEv ev = {.kind = JEV_WRITTEN, .tag = rt->w_tag, .written = res};
    deliver(rt, &ev, err, 0);
}

StorageWrite *jobrt_write(JobRt *rt, int tag, const char *key, const char *content_type,
                          FilterChain *codecs) {
    if (rt->failing) {
        filter_chain_free(codecs);
        return NULL;
    }
    storage_write_free(rt->w); /* a finished earlier one */
    rt->w_tag = tag;
    rt->w_busy = 1;
    rt->w_abort_sent = 0;
    rt->w = storage_write_new(rt->store, key, content_type, codecs, on_w_writable, on_written, rt);
    return rt->w;
}

static int on_check_item(int section, const char *table, const char *json, size_t len, void *data,
                         Err *err) {
    JobRt *rt = data;
    if (rt->failing)
        return 0;
    JobEv ev = {.kind = JEV_ITEM,
                .tag = rt->bc_tag,
                .section = section,
                .table = table,
                .buf = json,
                .len = len,
                .item_err = err};
    return rt->ops->step(rt, rt->st, &ev);
}

static void on_checked(BCheck *c, const Err *err, void *data) {
    JobRt *rt = data;
    rt->bc_busy = 0;
    JobEv ev = {.kind = JEV_CHECKED, .tag = rt->bc_tag, .check = c};
    deliver(rt, &ev, err, rt->bc_flags);
}

BCheck *jobrt_check(JobRt *rt, int tag, int flags, const BCheckTarget *t, int check_json) {
    if (rt->failing)
        return NULL;
    bcheck_free(rt->bc);
    rt->bc_tag = tag;
    rt->bc_flags = flags;
    rt->bc_busy = 1;
    rt->bc =
        bcheck_start(t->store ? t->store : rt->store, t, check_json, on_check_item, on_checked, rt);
    return rt->bc;
}

/* ---- encryption keys ---- */

typedef struct {
    OpCtx o;
    uv_timer_t defer; /* a keyring's answer, delivered on the next turn like any other */
    int local;
    Err err;
    int failed;
    unsigned char dek[32];
    char key_id[CRYPT_ID_MAX + 1], wrapped[CRYPT_WRAPPED_MAX + 1];
} KeyOp;

static void key_deliver(KeyOp *k) {
    JobRt *rt = k->o.rt;
    rt->ops_busy--;
    JobKey key;
    memcpy(key.dek, k->dek, sizeof(key.dek));
    key.key_id = k->key_id;
    key.wrapped = k->wrapped;
    JobEv ev = {.kind = JEV_KEY, .tag = k->o.tag, .key = &key};
    deliver(rt, &ev, k->failed ? &k->err : NULL, k->o.flags);
    crypt_wipe(&key, sizeof(key));
}

static void on_key_closed(uv_handle_t *h) {
    KeyOp *k = h->data;
    key_deliver(k);
    crypt_wipe(k, sizeof(*k));
    free(k);
}

static void on_key_defer(uv_timer_t *t) {
    uv_close((uv_handle_t *)t, on_key_closed);
}

static void on_key(const unsigned char *dek, const char *key_id, const char *wrapped,
                   const Err *err, void *data) {
    KeyOp *k = data;
    if (err) {
        k->err = *err;
        k->failed = 1;
    } else {
        memcpy(k->dek, dek, sizeof(k->dek));
        snprintf(k->wrapped, sizeof(k->wrapped), "%s", wrapped ? wrapped : "");
    }
    snprintf(k->key_id, sizeof(k->key_id), "%s", key_id);
    if (k->local) { /* answered inside the call: the step is still running */
        uv_timer_start(&k->defer, on_key_defer, 0, 0);
        return;
    }
    key_deliver(k);
    crypt_wipe(k, sizeof(*k));
    free(k);
}

static KeyOp *key_op(JobRt *rt, int tag, int flags, const char *key_id) {
    KeyOp *k = xcalloc(1, sizeof(*k));
    k->o = (OpCtx){rt, tag, flags};
    rt->ops_busy++;
    k->local = !keys_is_kms(key_id);
    if (k->local) {
        uv_timer_init(job_loop(rt->job), &k->defer);
        k->defer.data = k;
    }
    return k;
}

void jobrt_datakey_new(JobRt *rt, int tag, int flags, const char *user_id, const char *backup_id) {
    if (rt->failing)
        return;
    const Keys *keys = services_jobconfig(rt->sv)->keys;
    keys_new_dek_async(keys, services_kms(rt->sv), user_id, backup_id, on_key,
                       key_op(rt, tag, flags, keys_current(keys)));
}

void jobrt_datakey_open(JobRt *rt, int tag, int flags, const char *key_id, const char *wrapped,
                        const char *user_id, const char *backup_id) {
    if (rt->failing)
        return;
    keys_unwrap_async(services_jobconfig(rt->sv)->keys, services_kms(rt->sv), key_id, wrapped,
                      user_id, backup_id, on_key, key_op(rt, tag, flags, key_id));
}

/* ---- change segments ---- */

typedef struct {
    OpCtx o;
    SegFileRecord rec;
    char *strs[7]; /* the record's strings, owned */
    Buf body;      /* the stored bytes, held while the data key is opened */
} SegOp;

static void seg_deliver(SegOp *s, const Buf *lines, const Err *err) {
    JobRt *rt = s->o.rt;
    rt->ops_busy--;
    JobEv ev = {.kind = JEV_SEGMENT,
                .tag = s->o.tag,
                .buf = lines && lines->data ? lines->data : "",
                .len = lines ? lines->len : 0,
                .count = s->body.len};
    deliver(rt, &ev, err, s->o.flags);
    for (int i = 0; i < 7; i++)
        free(s->strs[i]);
    buf_free(&s->body);
    free(s);
}

static void seg_decode(SegOp *s, const unsigned char *dek) {
    Buf out = BUF_INIT;
    Err e;
    int rc = segfile_decode(s->body.data, s->body.len, &s->rec, dek, &out, &e);
    seg_deliver(s, rc == 0 ? &out : NULL, rc == 0 ? NULL : &e);
    buf_free(&out);
}

static void on_seg_key(const unsigned char *dek, const char *key_id, const char *wrapped,
                       const Err *err, void *data) {
    (void)key_id, (void)wrapped;
    SegOp *s = data;
    if (err) {
        Err e = *err;
        err_prefix(&e, "change segment %s", s->rec.key);
        seg_deliver(s, NULL, &e);
        return;
    }
    seg_decode(s, dek);
}

static void on_seg_got(const StorageResult *res, const Err *err, void *data) {
    SegOp *s = data;
    JobRt *rt = s->o.rt;
    if (err || rt->failing) {
        Err e;
        if (err) {
            e = *err;
            err_prefix(&e, "change segment %s", s->rec.key);
        }
        seg_deliver(s, NULL, err ? &e : NULL);
        return;
    }
    buf_append(&s->body, res->body->data, res->body->len);
    const Keys *keys = services_jobconfig(rt->sv)->keys;
    SegFileKey k;
    Err e;
    if (segfile_check(s->body.data, s->body.len, &s->rec, keys, &k, &e) != 0) {
        seg_deliver(s, NULL, &e);
        return;
    }
    if (!k.encrypted) {
        seg_decode(s, NULL);
        return;
    }
    /* not inside a step: a keyring key answering at once is fine */
    keys_unwrap_async(keys, services_kms(rt->sv), k.key_id, k.wrapped, s->rec.user_id, s->rec.id,
                      on_seg_key, s);
    crypt_wipe(&k, sizeof(k));
}

void jobrt_segment(JobRt *rt, int tag, int flags, Storage *store, const SegFileRecord *rec,
                   size_t max_bytes) {
    if (rt->failing)
        return;
    SegOp *s = xcalloc(1, sizeof(*s));
    s->o = (OpCtx){rt, tag, flags};
    rt->ops_busy++;
    const char *in[7] = {rec->id,     rec->key,    rec->user_id,    rec->checksum,
                         rec->codecs, rec->key_id, rec->wrapped_key};
    for (int i = 0; i < 7; i++)
        s->strs[i] = in[i] ? xstrdup(in[i]) : NULL;
    s->rec = (SegFileRecord){s->strs[0], s->strs[1], s->strs[2], s->strs[3],
                             s->strs[4], s->strs[5], s->strs[6]};
    storage_get(store ? store : rt->store, rec->key, max_bytes, on_seg_got, s);
}

/* ---- locks ---- */

static void on_locked(Job *job, int locked, void *data) {
    (void)job;
    OpCtx o = *(OpCtx *)data;
    free(data);
    JobRt *rt = o.rt;
    rt->ops_busy--;
    const char *user = rt->locks[rt->nlocks];
    if (locked == 1 && rt->failing) {
        job_user_unlock(rt->job, user);
        teardown(rt);
        return;
    }
    if (locked == 1)
        rt->nlocks++;
    Err e;
    if (locked < 0)
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CONNECT,
                "cannot take the lock of user %s (Redis unreachable, or the job was taken over)",
                user);
    JobEv ev = {.kind = JEV_LOCKED, .tag = o.tag, .locked = locked == 1};
    deliver(rt, &ev, locked < 0 ? &e : NULL, o.flags);
}

void jobrt_user_lock(JobRt *rt, int tag, const char *user_id) {
    if (rt->failing) /* the teardown runs: nothing new starts */
        return;
    if (rt->nlocks == MAX_LOCKS) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "too many user locks held");
        return;
    }
    snprintf(rt->locks[rt->nlocks], sizeof(rt->locks[0]), "%s", user_id);
    job_user_lock(rt->job, user_id, on_locked, op_new(rt, tag, 0));
}

void jobrt_user_unlock(JobRt *rt, const char *user_id) {
    for (int i = 0; i < rt->nlocks; i++)
        if (strcmp(rt->locks[i], user_id) == 0) {
            job_user_unlock(rt->job, user_id);
            memmove(rt->locks[i], rt->locks[i + 1],
                    (size_t)(rt->nlocks - i - 1) * sizeof(rt->locks[0]));
            rt->nlocks--;
            return;
        }
}

/* ---- the end ---- */

static void finish(JobRt *rt) {
    if (rt->finished)
        return;
    rt->finished = 1;
    Job *job = rt->job;
    while (rt->nlocks > 0)
        jobrt_user_unlock(rt, rt->locks[rt->nlocks - 1]);
    if (rt->conn)
        pg_pool_release(rt->pool, rt->conn);
    storage_write_free(rt->w);
    bcheck_free(rt->bc);
    if (rt->ops->release)
        rt->ops->release(rt->st);
    Err err = rt->err;
    int failing = rt->failing;
    free(rt->st);
    free(rt);
    job_done(job, failing ? &err : NULL);
}

static void on_record_pg(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    (void)res;
    JobRt *rt = data;
    rt->recording = 0;
    if (err && rt->conn)
        drop_conn(rt);
    if (err)
        log_warn(job_log_id(rt->job), "could not record the failure: %s", err->msg);
    teardown(rt);
}

void jobrt_record_query(JobRt *rt, const char *sql, int n, const char *const *v) {
    Err e;
    rt->recording = 1;
    if (rt->conn && pg_conn_query(rt->conn, sql, n, v, on_record_pg, rt, &e) == 0)
        return;
    drop_conn(rt);
    pg_pool_query(rt->pool, sql, n, v, on_record_pg, rt);
}

static void teardown(JobRt *rt) {
    if (rt->recording || rt->leasing || rt->finished)
        return;
    /* 1. the statement in flight, and a checked read */
    if (rt->bc_busy) {
        bcheck_stop(rt->bc);
        return;
    }
    if (rt->q != Q_NONE) {
        if (!rt->cancel_sent) {
            rt->cancel_sent = 1;
            if (rt->q == Q_COPY_OUT && rt->copy_paused) { /* drain what is buffered */
                rt->copy_paused = 0;
                pg_conn_copy_resume(rt->conn);
            }
            if (rt->q == Q_COPY_IN && !rt->copy_ended) {
                if (pg_conn_copy_end(rt->conn, "job abandoned") == 0) {
                    rt->copy_ended = 1;
                    return;
                }
                /* not open yet: ended as soon as it opens (on_copy_writable); a cancel would
                 * not be seen by a server waiting for COPY data */
                if (!pg_conn_is_broken(rt->conn))
                    return;
            }
            pg_conn_cancel(rt->conn);
        }
        return;
    }
    /* 2. the write stream, then whatever else is in flight */
    if (rt->w_busy) {
        if (!rt->w_abort_sent) {
            rt->w_abort_sent = 1;
            storage_write_abort(rt->w);
        }
        return;
    }
    if (rt->ops_busy > 0)
        return;
    /* 3. the transaction */
    if (rt->conn && pg_conn_is_broken(rt->conn))
        drop_conn(rt);
    if (rt->conn && rt->in_txn) {
        rt->in_txn = 0;
        jobrt_record_query(rt, "ROLLBACK", 0, NULL);
        return;
    }
    /* 4. the records */
    if (rt->ops->record && rt->ops->record(rt, rt->st, rt->record_k++))
        return;
    /* 5. */
    finish(rt);
}

void jobrt_fail(JobRt *rt, const Err *err) {
    if (rt->finished)
        return;
    if (!rt->failing) {
        rt->failing = 1;
        rt->err = *err;
        if (!rt->cancelled)
            log_warn(job_log_id(rt->job), "%s failed: %s", job_spec(rt->job)->type, err->msg);
    }
    teardown(rt);
}

void jobrt_failf(JobRt *rt, ErrKind kind, ErrCode code, const char *fmt, ...) {
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    Err e;
    err_set(&e, kind, code, "%s", msg);
    jobrt_fail(rt, &e);
}

void jobrt_done(JobRt *rt) {
    if (rt->failing || rt->finished)
        return;
    if (rt->in_txn) /* a bug of the job: never commit by accident */
        drop_conn(rt);
    finish(rt);
}

void jobrt_run(Job *job, const JobRtOps *ops) {
    JobRt *rt = xcalloc(1, sizeof(*rt));
    rt->job = job;
    rt->ops = ops;
    rt->st = xcalloc(1, ops->size);
    rt->sv = job_services(job);
    rt->pool = services_pg(rt->sv);
    rt->store = services_storage(rt->sv);
    rt->start_ms = uv_now(job_loop(job));
    job_set_data(job, rt);
    JobEv ev = {.kind = JEV_START};
    ops->step(rt, rt->st, &ev);
}

void jobrt_cancel(Job *job) {
    JobRt *rt = job_data(job);
    if (rt->failing || rt->finished)
        return;
    rt->cancelled = 1;
    Err e;
    err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "%s cancelled (shutdown or lease lost)",
            job_spec(job)->type);
    jobrt_fail(rt, &e);
}
