/*
 * backup: one user's rows, read in one snapshot, streamed into S3.
 *
 *   ACQUIRE   one pooled connection for the whole job
 *   RECORD    backup_metadata row for the job id: created `pending` (resolving the base of an
 *             incremental or differential once), or found again on a retry (same id, same key)
 *   UPLOADS   abort multipart uploads a crashed run left under the key
 *   RUNNING   status `running`
 *   BEGIN     REPEATABLE READ READ ONLY; pg_current_snapshot(); settings user id and base
 *             snapshot, bound as parameters
 *   SCOPE     backup_scope and the catalog's columns, checked; row counts for the progress
 *   COPY i    each table's rows (COPY TO STDOUT, one JSON object per line) -> document
 *             writer -> filter pipe (size, gzip, SHA-256 on the thread pool) -> multipart upload
 *   TOMB i    incremental and differential: the keys deleted since the base
 *   COMMIT    the snapshot is released while the last parts go up
 *   MANIFEST  <key>.manifest.json once the object is complete
 *   COMPLETE  status `completed` with sizes, checksum, counts; a notification row
 *
 * Backpressure: when S3 has every part in flight the upload blocks the pipe,
 * the pipe fills, and the COPY stream pauses; nothing piles up in memory.
 * Any failure tears down in order: the statement in flight ends (cancelled
 * if need be), the upload is aborted, the transaction rolled back, and the
 * row says `failed` (last attempt) or `pending` (a retry will follow).
 */
#include "jobs.h"

#include "bfile.h"
#include "buf.h"
#include "filterpipe.h"
#include "log.h"
#include "s3list.h"
#include "s3upload.h"
#include "scope.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A row this large (twice the pipe's 1 MiB chunk) goes to the pipe without a copy: libpq's
 * buffer is handed over and filtered a chunk at a time. */
#define BIG_ROW (2u << 20)

typedef enum {
    ST_ACQUIRE,
    ST_RECORD,
    ST_UPLOADS,
    ST_RUNNING,
    ST_BEGIN,
    ST_SNAPSHOT,
    ST_SCOPE,
    ST_COUNT,
    ST_COPY,
    ST_TOMB,
    ST_COMMIT,
    ST_MANIFEST,
    ST_COMPLETE,
    ST_NOTIFY,
} Step;

typedef struct Backup Backup;
typedef void (*NextFn)(Backup *b, PGresult *res);

struct Backup {
    Job *job;
    const JobSpec *spec;
    const Config *cfg;
    PgPool *pool;
    S3Client *s3;
    PgConn *conn;
    Step step;
    NextFn next;
    int pg_busy, in_txn, s3_busy, copying, copy_paused;
    /* what this backup is */
    char id[JOBSPEC_ID_MAX + 1], type[16], requested[16], base_id[JOBSPEC_ID_MAX + 1];
    char compression[8], created_at[40], key[256];
    char *snapshot, *base_snapshot;
    int already_completed;
    /* reading */
    Scope *scope;
    int ti;
    uint64_t *counts, *deleted, *expected;
    uint64_t rows_total, rows_done;
    BfileWriter w;
    Buf piece;
    /* writing */
    FilterPipe *pipe;
    S3Upload *up;
    int pipe_done, up_done, abort_sent;
    char sha256[65];
    uint64_t size, raw_size;
    /* ending */
    Err err;
    int failing, cancelled, recorded, notified;
    uint64_t start_ms;
};

static void fail(Backup *b, const Err *err);
static void teardown(Backup *b);
static void next_table(Backup *b);
static void maybe_manifest(Backup *b);

static void failf(Backup *b, ErrKind kind, ErrCode code, const char *fmt, const char *arg) {
    Err e;
    err_set(&e, kind, code, fmt, arg);
    fail(b, &e);
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void iso_now(char *out, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
}

static void progress(Backup *b, const char *stage) {
    /* reading is 95% of the way; the last 5% are the tail of the upload and the records */
    int pct = b->rows_total ? (int)(b->rows_done * 95 / b->rows_total) : 0;
    if (b->step >= ST_COMMIT)
        pct = 95 + (b->step >= ST_MANIFEST) * 3;
    job_progress(b->job, stage, pct, b->rows_done, b->size);
}

/* ---- statements on the job's connection ---- */

static void on_pg(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    Backup *b = data;
    b->pg_busy = 0;
    b->copying = 0;
    if (b->failing) {
        teardown(b);
        return;
    }
    if (err) {
        fail(b, err);
        return;
    }
    b->next(b, res);
}

static void query(Backup *b, const char *sql, int n, const char *const *v, NextFn next) {
    Err e;
    b->next = next;
    b->pg_busy = 1;
    if (pg_conn_query(b->conn, sql, n, v, on_pg, b, &e) != 0) {
        b->pg_busy = 0;
        fail(b, &e);
    }
}

/* ---- the end: success or teardown ---- */

static void finish(Backup *b) {
    Job *job = b->job;
    if (b->conn)
        pg_pool_release(b->pool, b->conn);
    filter_pipe_free(b->pipe); /* first: a chunk in flight would write to the upload */
    s3_upload_free(b->up);
    scope_free(b->scope);
    free(b->counts);
    free(b->deleted);
    free(b->expected);
    free(b->snapshot);
    free(b->base_snapshot);
    buf_free(&b->piece);
    Err err = b->err;
    int failing = b->failing;
    free(b);
    job_done(job, failing ? &err : NULL);
}

static int final_failure(const Backup *b) {
    return !b->cancelled && job_error_is_final(b->job, &b->err);
}

static void on_teardown_pg(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    (void)res;
    Backup *b = data;
    b->pg_busy = 0;
    if (err && b->conn) { /* the connection cannot be trusted: let the pool drop it */
        pg_pool_release(b->pool, b->conn);
        b->conn = NULL;
        b->in_txn = 0;
    }
    teardown(b);
}

static void on_teardown_pool(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    (void)res;
    Backup *b = data;
    b->pg_busy = 0;
    if (err)
        log_warn(job_log_id(b->job), "could not record the failure in backup_metadata: %s",
                 err->msg);
    teardown(b);
}

/* One statement for the teardown: on the job's connection if usable, else through the pool. */
static void teardown_query(Backup *b, const char *sql, int n, const char *const *v) {
    Err e;
    b->pg_busy = 1;
    if (b->conn) {
        if (pg_conn_query(b->conn, sql, n, v, on_teardown_pg, b, &e) == 0)
            return;
        pg_pool_release(b->pool, b->conn);
        b->conn = NULL;
        b->in_txn = 0;
    }
    pg_pool_query(b->pool, sql, n, v, on_teardown_pool, b);
}

static void teardown(Backup *b) {
    if (b->pg_busy) {
        if (b->copying) {
            if (b->copy_paused) { /* drain what is buffered; on_copy_data drops it */
                b->copy_paused = 0;
                pg_conn_copy_resume(b->conn);
            }
            pg_conn_cancel(b->conn);
            b->copying = 0; /* cancel once */
        }
        return;
    }
    if (b->s3_busy)
        return;
    if (b->up && !b->up_done) {
        if (!b->abort_sent) {
            b->abort_sent = 1;
            s3_upload_abort(b->up);
        }
        return;
    }
    if (b->pipe) {
        filter_pipe_free(b->pipe);
        b->pipe = NULL;
    }
    if (b->conn && pg_conn_is_broken(b->conn)) {
        pg_pool_release(b->pool, b->conn);
        b->conn = NULL;
        b->in_txn = 0;
    }
    if (b->conn && b->in_txn) {
        b->in_txn = 0;
        teardown_query(b, "ROLLBACK", 0, NULL);
        return;
    }
    int final = final_failure(b);
    if (!b->recorded && b->id[0]) {
        b->recorded = 1;
        char ms[24];
        snprintf(ms, sizeof(ms), "%" PRIu64, uv_now(job_loop(b->job)) - b->start_ms);
        const char *v[] = {b->id, final ? "failed" : "pending", b->err.msg, ms};
        teardown_query(b,
                       "UPDATE backup_metadata SET status = $2, error = $3, duration_ms = $4 "
                       "WHERE id = $1 AND status <> 'completed'",
                       4, v);
        return;
    }
    if (!b->notified && final && b->cfg->backup_notify && b->spec->user_id[0]) {
        b->notified = 1;
        const char *v[] = {b->spec->user_id, b->id[0] ? b->id : NULL, b->err.msg};
        teardown_query(b,
                       "INSERT INTO notifications (user_id, type, title, body, data) "
                       "SELECT $1::uuid, 'backup_failed', 'Backup failed', $3, "
                       "jsonb_build_object('backup_id', $2::text) "
                       "WHERE EXISTS (SELECT 1 FROM profiles WHERE id = $1::uuid)",
                       3, v);
        return;
    }
    finish(b);
}

static void fail(Backup *b, const Err *err) {
    if (!b->failing) {
        b->failing = 1;
        b->err = *err;
        if (!b->cancelled)
            log_warn(job_log_id(b->job), "backup %s failed: %s", b->id[0] ? b->id : "(none)",
                     err->msg);
    }
    teardown(b);
}

/* ---- success ---- */

static void on_notified(Backup *b, PGresult *res) {
    (void)res;
    finish(b);
}

static void on_completed(Backup *b, PGresult *res) {
    (void)res;
    log_info(job_log_id(b->job),
             "backup %s completed: %" PRIu64 " rows, %" PRIu64 " bytes stored (%" PRIu64
             " raw), sha256 %s",
             b->id, b->rows_done, b->size, b->raw_size, b->sha256);
    job_progress(b->job, "done", 100, b->rows_done, b->size);
    if (!b->cfg->backup_notify) {
        finish(b);
        return;
    }
    b->step = ST_NOTIFY;
    char size[24];
    snprintf(size, sizeof(size), "%" PRIu64, b->size);
    const char *v[] = {b->spec->user_id, b->id, b->type, size};
    query(b,
          "INSERT INTO notifications (user_id, type, title, body, data) "
          "SELECT $1::uuid, 'backup_completed', 'Backup completed', "
          "format('Your %s backup is ready (%s).', $3::text, pg_size_pretty($4::bigint)), "
          "jsonb_build_object('backup_id', $2::text, 'type', $3::text, 'size', $4::bigint) "
          "WHERE EXISTS (SELECT 1 FROM profiles WHERE id = $1::uuid)",
          4, v, on_notified);
}

/* The per-table counts as a JSON object, in restore order. */
static void counts_json(const Backup *b, const uint64_t *counts, Buf *out) {
    buf_puts(out, "{");
    for (int i = 0; b->scope && i < scope_count(b->scope); i++)
        buf_printf(out, "%s\"%s\":%" PRIu64, i ? "," : "", scope_table(b->scope, i), counts[i]);
    buf_puts(out, "}");
}

static void header(const Backup *b, BfileHeader *h) {
    h->backup_id = b->id;
    h->user_id = b->spec->user_id;
    h->type = b->type;
    h->base_backup_id = b->base_id[0] ? b->base_id : NULL;
    h->snapshot = b->snapshot;
    h->base_snapshot = b->base_id[0] ? b->base_snapshot : NULL;
    h->created_at = b->created_at;
    h->compression = b->compression;
}

static void complete(Backup *b) {
    b->step = ST_COMPLETE;
    progress(b, "finalizing");
    Buf rows = BUF_INIT;
    counts_json(b, b->counts, &rows);
    char size[24], raw[24], ms[24], ver[8];
    snprintf(size, sizeof(size), "%" PRIu64, b->size);
    snprintf(raw, sizeof(raw), "%" PRIu64, b->raw_size);
    snprintf(ms, sizeof(ms), "%" PRIu64, uv_now(job_loop(b->job)) - b->start_ms);
    snprintf(ver, sizeof(ver), "%d", BFILE_VERSION);
    const char *v[] = {b->id, size, raw, b->sha256, rows.data, ms, b->snapshot, ver};
    query(b,
          "UPDATE backup_metadata SET status = 'completed', size = $2, uncompressed_size = $3, "
          "checksum = $4, row_counts = $5::jsonb, duration_ms = $6, snapshot = $7, "
          "format_version = $8, completed_at = now(), error = NULL WHERE id = $1",
          8, v, on_completed);
    buf_free(&rows);
}

static void on_manifest(const S3Result *res, const Err *err, void *data) {
    (void)res;
    Backup *b = data;
    b->s3_busy = 0;
    if (b->failing) {
        teardown(b);
        return;
    }
    if (err) {
        fail(b, err);
        return;
    }
    complete(b);
}

static void maybe_manifest(Backup *b) {
    if (b->failing || !b->up_done || b->in_txn || b->pg_busy || b->step >= ST_MANIFEST)
        return;
    b->step = ST_MANIFEST;
    progress(b, "finalizing");
    BfileHeader h;
    header(b, &h);
    Buf rows = BUF_INIT, del = BUF_INIT, man = BUF_INIT;
    counts_json(b, b->counts, &rows);
    counts_json(b, b->deleted, &del);
    char fin[40], key[300];
    iso_now(fin, sizeof(fin));
    bfile_manifest(&man, &h, b->key, rows.data, del.data, b->sha256, b->size, b->raw_size, fin);
    snprintf(key, sizeof(key), "%s.manifest.json", b->key);
    b->s3_busy = 1;
    s3_put_object(b->s3, key, man.data, man.len, "application/json", on_manifest, b);
    buf_free(&rows);
    buf_free(&del);
    buf_free(&man);
}

/* ---- the data path: writer -> pipe -> upload ---- */

static int pipe_sink(const char *buf, size_t len, void *data) {
    Backup *b = data;
    return s3_upload_write(b->up, buf, len);
}

static void pipe_writable(FilterPipe *p, void *data) {
    (void)p;
    Backup *b = data;
    if (b->copy_paused && !b->failing) {
        b->copy_paused = 0;
        pg_conn_copy_resume(b->conn);
    }
}

static void pipe_done(FilterPipe *p, const Err *err, void *data) {
    Backup *b = data;
    if (err) {
        fail(b, err);
        return;
    }
    b->pipe_done = 1;
    b->raw_size = strtoull(filter_chain_result(filter_pipe_chain(p), "raw"), NULL, 10);
    snprintf(b->sha256, sizeof(b->sha256), "%s",
             filter_chain_result(filter_pipe_chain(p), "sha256"));
    s3_upload_finish(b->up);
}

static void up_writable(S3Upload *u, void *data) {
    (void)u;
    Backup *b = data;
    if (b->pipe && !b->failing)
        filter_pipe_unblock(b->pipe);
}

static void up_done(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                    const Err *err, void *data) {
    (void)u;
    (void)res;
    Backup *b = data;
    b->up_done = 1;
    if (b->failing) {
        teardown(b);
        return;
    }
    if (err) {
        fail(b, err);
        return;
    }
    if (!b->pipe_done || strcmp(sha256, b->sha256) != 0) { /* the two hashes saw the same bytes */
        failf(b, ERR_PERMANENT, ERR_CODE_PROTOCOL, "%s",
              "stored object digest differs from the filter chain's: internal error");
        return;
    }
    b->size = bytes;
    maybe_manifest(b);
}

/* Write a piece of the document. 0 when the producer should pause. */
static int emit(Backup *b) {
    int r = filter_pipe_write(b->pipe, b->piece.data, b->piece.len);
    buf_reset(&b->piece);
    return r;
}

static int on_copy_data(PgConn *c, const char *buf, size_t len, void *data) {
    (void)c;
    Backup *b = data;
    if (b->failing)
        return PG_COPY_CONTINUE; /* draining after a cancel */
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    /* the separator, then the row straight from libpq's buffer: a 50 MB value is not copied
     * once more into the piece */
    bfile_item(&b->w, &b->piece, buf, 0);
    int r = emit(b), keep = 0;
    if (r >= 0 && len >= BIG_ROW) { /* handed over whole: the pipe frees it once it went */
        r = filter_pipe_write_owned(b->pipe, (char *)buf, len, pg_copy_free);
        keep = 1;
    } else if (r >= 0 && len > 0) {
        int w = filter_pipe_write(b->pipe, buf, len);
        if (w < 0 || r == 1)
            r = w;
    }
    if (b->step == ST_COPY) {
        b->counts[b->ti]++;
        b->rows_done++;
        if ((b->rows_done & 1023) == 0)
            progress(b, scope_table(b->scope, b->ti));
    } else {
        b->deleted[b->ti]++;
    }
    if (r == 0) {
        b->copy_paused = 1;
        return keep ? PG_COPY_KEEP : PG_COPY_PAUSE;
    }
    /* -1: the upload failed; its on_done reports it (a kept row was freed by the pipe, and the
     * flow stays paused for the teardown to drain) */
    if (keep)
        b->copy_paused = 1;
    return keep ? PG_COPY_KEEP : PG_COPY_CONTINUE;
}

static void on_copy_done(Backup *b, PGresult *res) {
    (void)res;
    bfile_list_end(&b->w, &b->piece);
    emit(b);
    b->ti++;
    next_table(b);
}

static void start_copy(Backup *b, Step step) {
    b->step = step;
    Buf sql = BUF_INIT;
    const char *table = scope_table(b->scope, b->ti);
    if (step == ST_COPY)
        scope_copy_sql(b->scope, b->ti, b->base_id[0] != 0, &sql);
    else
        scope_tombstone_sql(b->scope, b->ti, &sql);
    bfile_list_begin(&b->w, &b->piece, table);
    emit(b);
    progress(b, step == ST_COPY ? table : "deletions");
    Err e;
    b->next = on_copy_done;
    b->pg_busy = b->copying = 1;
    if (pg_conn_copy_out(b->conn, sql.data, on_copy_data, on_pg, b, &e) != 0) {
        b->pg_busy = b->copying = 0;
        fail(b, &e);
    }
    buf_free(&sql);
}

static void on_committed(Backup *b, PGresult *res) {
    (void)res;
    b->in_txn = 0;
    progress(b, "uploading");
    maybe_manifest(b);
}

static void next_table(Backup *b) {
    int n = scope_count(b->scope);
    if (b->step == ST_COPY && b->ti < n) {
        start_copy(b, ST_COPY);
        return;
    }
    if (b->step == ST_COPY && b->base_id[0]) { /* deletions since the base */
        bfile_deleted_begin(&b->w, &b->piece);
        emit(b);
        b->ti = 0;
        start_copy(b, ST_TOMB);
        return;
    }
    if (b->step == ST_TOMB && b->ti < n) {
        start_copy(b, ST_TOMB);
        return;
    }
    /* the trailer, then the end of input; COMMIT while the last parts go up */
    Buf t = BUF_INIT, rows = BUF_INIT, del = BUF_INIT;
    counts_json(b, b->counts, &rows);
    counts_json(b, b->deleted, &del);
    char fin[40];
    iso_now(fin, sizeof(fin));
    buf_printf(&t, "{\"rows\":%s,\"deleted\":%s,\"finished_at\":\"%s\"}", rows.data, del.data, fin);
    bfile_end(&b->w, &b->piece, t.data);
    emit(b);
    buf_free(&t);
    buf_free(&rows);
    buf_free(&del);
    filter_pipe_finish(b->pipe);
    b->step = ST_COMMIT;
    query(b, "COMMIT", 0, NULL, on_committed);
}

/* ---- reading: snapshot, scope, counts ---- */

static void on_counted(Backup *b, PGresult *res) {
    int n = scope_count(b->scope);
    for (int i = 0; i < n && i < PQnfields(res); i++) {
        b->expected[i] = strtoull(PQgetvalue(res, 0, i), NULL, 10);
        b->rows_total += b->expected[i];
    }
    job_set_rows_total(b->job, b->rows_total);
    if (b->rows_total == 0 && b->base_id[0] == 0) { /* a typo'd id must not "succeed" */
        failf(b, ERR_PERMANENT, ERR_CODE_INVALID,
              "user %s has no rows in any table of the backup scope (no such user?)",
              b->spec->user_id);
        return;
    }

    /* the writer, the pipe and the upload, then the tables in restore order */
    FilterChain *chain = filter_chain_new();
    filter_chain_add(chain, filter_size_new("raw"));
    if (strcmp(b->compression, "gzip") == 0)
        filter_chain_add(chain, filter_gzip_new(NULL, b->cfg->backup_compression_level));
    filter_chain_add(chain, filter_sha256_new("sha256"));
    b->pipe = filter_pipe_new(job_loop(b->job), chain, 0, pipe_sink, pipe_writable, pipe_done, b);
    b->up =
        s3_upload_new(b->s3, b->key,
                      strcmp(b->compression, "gzip") == 0 ? "application/gzip" : "application/json",
                      (size_t)b->cfg->s3_part_size_mb << 20, b->cfg->s3_upload_concurrency,
                      up_writable, up_done, b);
    BfileHeader h;
    header(b, &h);
    bfile_begin(&b->w, &b->piece, &h);
    emit(b);
    b->ti = 0;
    b->step = ST_COPY;
    next_table(b);
}

static void on_scope(Backup *b, PGresult *res) {
    Err e;
    b->scope = scope_from_result(res, &e);
    if (b->scope == NULL) {
        fail(b, &e);
        return;
    }
    int n = scope_count(b->scope);
    b->counts = xcalloc((size_t)n, sizeof(uint64_t));
    b->deleted = xcalloc((size_t)n, sizeof(uint64_t));
    b->expected = xcalloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; b->base_id[0] && i < n; i++)
        if (!scope_tracked(b->scope, i)) {
            failf(b, ERR_PERMANENT, ERR_CODE_CONFIG,
                  "table %s has no change tracking (backup_xid): run SELECT backup_track_all()",
                  scope_table(b->scope, i));
            return;
        }
    b->step = ST_COUNT;
    Buf sql = BUF_INIT;
    scope_count_sql(b->scope, b->base_id[0] != 0, &sql);
    query(b, sql.data, 0, NULL, on_counted);
    buf_free(&sql);
}

static void on_snapshot(Backup *b, PGresult *res) {
    b->snapshot = xstrdup(PQgetvalue(res, 0, 0));
    snprintf(b->created_at, sizeof(b->created_at), "%s", PQgetvalue(res, 0, 3));
    b->step = ST_SCOPE;
    query(b, scope_load_sql(), 0, NULL, on_scope);
}

static void on_begun(Backup *b, PGresult *res) {
    (void)res;
    b->in_txn = 1;
    b->step = ST_SNAPSHOT;
    progress(b, "snapshot");
    const char *v[] = {b->spec->user_id, b->base_snapshot ? b->base_snapshot : ""};
    query(b,
          "SELECT pg_current_snapshot()::text, set_config('backup.user_id', $1, true), "
          "set_config('backup.base_snapshot', $2, true), "
          "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
          2, v, on_snapshot);
}

static void on_running(Backup *b, PGresult *res) {
    (void)res;
    b->step = ST_BEGIN;
    query(b, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, on_begun);
}

static void set_running(Backup *b) {
    b->step = ST_RUNNING;
    char ver[8];
    snprintf(ver, sizeof(ver), "%d", BFILE_VERSION);
    const char *v[] = {b->id, b->key, ver};
    query(b,
          "UPDATE backup_metadata SET status = 'running', s3_key = $2, started_at = now(), "
          "attempts = attempts + 1, format_version = $3 WHERE id = $1",
          3, v, on_running);
}

/* ---- a crashed run's multipart upload under our key ---- */

typedef struct {
    Backup *b;
    char **ids;
    size_t n, i;
} Stale;

static void abort_next(Stale *st);

static void on_stale_aborted(const S3Result *res, const Err *err, void *data) {
    (void)res;
    Stale *st = data;
    if (err)
        log_warn(job_log_id(st->b->job), "could not abort a stale upload of %s: %s", st->b->key,
                 err->msg);
    st->i++;
    abort_next(st);
}

static void abort_next(Stale *st) {
    Backup *b = st->b;
    if (st->i < st->n && !b->failing) {
        s3_abort_upload(b->s3, b->key, st->ids[st->i], on_stale_aborted, st);
        return;
    }
    if (st->n)
        log_info(job_log_id(b->job), "aborted %zu multipart upload(s) a previous run left", st->n);
    for (size_t i = 0; i < st->n; i++)
        free(st->ids[i]);
    free(st->ids);
    free(st);
    b->s3_busy = 0;
    if (b->failing)
        teardown(b);
    else
        set_running(b);
}

static int on_uploads_page(const S3MultipartUpload *ups, size_t n, void *data) {
    Stale *st = data;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ups[i].key, st->b->key) != 0)
            continue;
        st->ids = xrealloc(st->ids, (st->n + 1) * sizeof(char *));
        st->ids[st->n++] = xstrdup(ups[i].upload_id);
    }
    return 0;
}

static void on_uploads_listed(uint64_t count, const Err *err, void *data) {
    (void)count;
    Stale *st = data;
    if (err && strstr(err->msg, "NotImplemented")) /* some stores (s3rver) cannot list them */
        log_debug(job_log_id(st->b->job), "cannot list stale uploads: %s", err->msg);
    else if (err) /* not fatal: cleanup aborts old uploads too */
        log_warn(job_log_id(st->b->job), "could not list stale uploads: %s", err->msg);
    abort_next(st);
}

static void clean_stale_uploads(Backup *b) {
    b->step = ST_UPLOADS;
    Stale *st = xcalloc(1, sizeof(*st));
    st->b = b;
    b->s3_busy = 1;
    s3_list_uploads(b->s3, b->key, on_uploads_page, on_uploads_listed, st);
}

/* ---- acceptance: the metadata row ---- */

static void on_recorded(Backup *b, PGresult *res) {
    const JobSpec *spec = b->spec;
    if (PQntuples(res) != 1) {
        failf(b, ERR_RETRYABLE, ERR_CODE_PROTOCOL, "%s", "backup_metadata: no row recorded");
        return;
    }
    const char *id = PQgetvalue(res, 0, 0);
    if (strcmp(PQgetvalue(res, 0, 1), spec->user_id) != 0) {
        failf(b, ERR_PERMANENT, ERR_CODE_INVALID,
              "job id %s already names a backup of another user", spec->job_id);
        return;
    }
    if (!jobspec_valid_backup_id(id, strlen(id))) {
        failf(b, ERR_PERMANENT, ERR_CODE_INVALID, "backup_metadata holds a malformed id for job %s",
              spec->job_id);
        return;
    }
    snprintf(b->id, sizeof(b->id), "%s", id);
    snprintf(b->type, sizeof(b->type), "%s", PQgetvalue(res, 0, 2));
    const char *status = PQgetvalue(res, 0, 3);
    snprintf(b->base_id, sizeof(b->base_id), "%s", PQgetvalue(res, 0, 4));
    b->base_snapshot = xstrdup(PQgetvalue(res, 0, 5));
    snprintf(b->requested, sizeof(b->requested), "%s", PQgetvalue(res, 0, 6));
    snprintf(b->compression, sizeof(b->compression), "%s", PQgetvalue(res, 0, 7));
    job_set_backup_id(b->job, b->id);
    if (strcmp(b->type, "incremental") == 0)
        snprintf(b->key, sizeof(b->key), "backups/%s/incremental/%s.json%s", spec->user_id, b->id,
                 strcmp(b->compression, "gzip") == 0 ? ".gz" : "");
    else
        snprintf(b->key, sizeof(b->key), "backups/%s/%s.json%s", spec->user_id, b->id,
                 strcmp(b->compression, "gzip") == 0 ? ".gz" : "");
    if (strcmp(b->type, b->requested) != 0) {
        char note[160];
        snprintf(note, sizeof(note),
                 "%s backup requested, but there is no completed %s to build on: made a full one",
                 b->requested,
                 strcmp(b->requested, "differential") == 0 ? "full backup" : "backup");
        job_set_note(b->job, note);
    }
    if (strcmp(status, "completed") == 0) {
        log_info(job_log_id(b->job), "backup %s was already completed by an earlier run", b->id);
        job_set_note(b->job, "already completed by an earlier run");
        finish(b);
        return;
    }
    log_info(job_log_id(b->job), "backup %s (%s%s%s) of user %s to %s", b->id, b->type,
             b->base_id[0] ? ", base " : "", b->base_id, spec->user_id, b->key);
    clean_stale_uploads(b);
}

static void on_conn(PgPool *pool, PgConn *conn, const Err *err, void *data) {
    (void)pool;
    Backup *b = data;
    b->pg_busy = 0;
    b->conn = conn;
    if (b->failing) {
        teardown(b);
        return;
    }
    if (err) {
        fail(b, err);
        return;
    }
    b->step = ST_RECORD;
    char ts[24];
    snprintf(ts, sizeof(ts), "%" PRIu64, wall_ms());
    const char *v[] = {b->spec->user_id, b->spec->mode, ts, b->spec->job_id,
                       b->cfg->backup_compression ? "gzip" : "none"};
    /* the base is resolved once, when the row is created; a retry finds the row by job id */
    query(b,
          "WITH base AS ("
          "  SELECT id FROM backup_metadata"
          "  WHERE user_id = $1::uuid AND status = 'completed' AND snapshot IS NOT NULL"
          "    AND ($2 = 'incremental' OR type = 'full')"
          "  ORDER BY created_at DESC, id DESC LIMIT 1),"
          " kind AS (SELECT CASE WHEN $2 = 'full' OR NOT EXISTS (SELECT 1 FROM base) THEN 'full'"
          "  ELSE $2 END AS type)"
          " INSERT INTO backup_metadata AS m (id, user_id, type, requested_type, status,"
          "  base_backup_id, job_id, compression)"
          " SELECT CASE kind.type WHEN 'incremental' THEN 'incremental-' ELSE 'backup-' END"
          "  || $1 || '-' || $3, $1::uuid, kind.type, $2, 'pending',"
          "  CASE WHEN kind.type = 'full' THEN NULL ELSE (SELECT id FROM base) END, $4, $5"
          " FROM kind"
          " ON CONFLICT (job_id) DO UPDATE SET job_id = EXCLUDED.job_id"
          " RETURNING m.id, m.user_id::text, m.type, m.status, coalesce(m.base_backup_id, ''),"
          "  coalesce((SELECT s.snapshot FROM backup_metadata s WHERE s.id = m.base_backup_id),"
          "  ''), coalesce(m.requested_type, m.type), m.compression",
          5, v, on_recorded);
}

static void backup_run(Job *job) {
    Backup *b = xcalloc(1, sizeof(*b));
    b->job = job;
    b->spec = job_spec(job);
    Services *sv = job_services(job);
    b->cfg = services_config(sv);
    b->pool = services_pg(sv);
    b->s3 = services_s3(sv);
    b->start_ms = uv_now(job_loop(job));
    job_set_data(job, b);
    if (b->spec->user_id[0] == 0) {
        failf(b, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "No authenticated user");
        return;
    }
    job_progress(job, "starting", 0, 0, 0);
    b->step = ST_ACQUIRE;
    b->pg_busy = 1;
    pg_pool_acquire(b->pool, on_conn, b);
}

static void backup_cancel(Job *job) {
    Backup *b = job_data(job);
    if (b->failing)
        return;
    b->cancelled = 1;
    Err e;
    err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "backup cancelled (shutdown or lease lost)");
    fail(b, &e);
}

const JobType job_type_backup = {"backup", 1, backup_run, backup_cancel};
