/*
 * restore: a user's tables put back exactly as a backup saw them, in one
 * transaction that changes nothing unless everything checked out.
 *
 *   CHECK     the backup id names the job's user (else `forbidden`, nothing read)
 *   CHAIN     the backup and its bases down to the full one, all the user's, completed
 *   RECORD    restore_history row (outside the transaction: a failure is kept)
 *   BEGIN     user id set as a bound setting; backup_scope checked; a temporary
 *             staging table
 *   STAGE i   each backup of the chain, full first, streamed from S3 through
 *             SHA-256 and gunzip into the document reader, rows and deleted keys
 *             into the staging table with COPY FROM STDIN. Checked as it comes:
 *             the header names this backup and this user, the layout holds, the
 *             trailer's counts match, and the digest equals the recorded one
 *             (`Backup checksum verification failed`). Only temporary tables are
 *             touched until every object has passed.
 *   FINAL     set-based SQL: the last state of each key over the chain (a step's
 *             deletions apply before its rows), ownership checked (every row is
 *             the user's; a child's parent is restored too or is the user's)
 *   APPLY     per table: delete the user's rows that are not in the backup
 *             (children first), then upsert the rest (parents first), updating only
 *             rows that are the user's; an affected count that falls short means a
 *             key of someone else's row, and everything rolls back
 *   COMMIT    and the history row says what was restored.
 */
#include "jobs.h"

#include "bcheck.h"
#include "bfile.h"
#include "buf.h"
#include "log.h"
#include "s3.h"
#include "scope.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUT_BATCH (256u * 1024)
#define MAX_CHAIN 1000

typedef struct {
    char id[JOBSPEC_ID_MAX + 1];
    char key[256];
    char checksum[65];
    char compression[8];
    uint64_t size;
    int reindexed; /* recorded from a manifest by backupctl reindex: read the manifest again */
} Step;

typedef enum { SQ_EXEC, SQ_COUNTS, SQ_CHECK, SQ_UPSERT } SqlKind;

typedef struct {
    char *sql;
    SqlKind kind;
    int table;     /* scope index (CHECK, UPSERT) */
    char *message; /* CHECK: the error when the count is not 0 */
} Stmt;

typedef struct Restore Restore;
typedef void (*NextFn)(Restore *r, PGresult *res);

struct Restore {
    Job *job;
    const JobSpec *spec;
    const Config *cfg;
    PgPool *pool;
    S3Client *s3;
    PgConn *conn;
    NextFn next;
    int pg_busy, in_txn, copying_in, recorded_start;
    Step *steps;
    int nsteps, si;
    Scope *scope;
    unsigned char *selected; /* per scope table */
    uint64_t *expected;      /* staged final rows per table */
    uint64_t *restored;      /* rows written per table */
    Stmt *stmts;
    int nstmts, qi;
    /* one step's stream */
    BCheck *bc;
    int bc_busy, step_started, manifest_busy;
    Buf out;
    uint64_t rows_total, rows_staged, bytes;
    /* ending */
    Err err;
    int failing, cancelled, recorded;
    uint64_t start_ms;
};

static void fail(Restore *r, const Err *err);
static void teardown(Restore *r);
static void start_step(Restore *r);
static void run_stmt(Restore *r);

static void failf(Restore *r, ErrKind kind, ErrCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void failf(Restore *r, ErrKind kind, ErrCode code, const char *fmt, ...) {
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    Err e;
    err_set(&e, kind, code, "%s", msg);
    fail(r, &e);
}

static void progress(Restore *r, const char *stage, int pct) {
    job_progress(r->job, stage, pct, r->rows_staged, r->bytes);
}

/* ---- statements on the job's connection ---- */

static void on_pg(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    Restore *r = data;
    r->pg_busy = 0;
    r->copying_in = 0;
    if (r->failing) {
        teardown(r);
        return;
    }
    if (err) {
        fail(r, err);
        return;
    }
    r->next(r, res);
}

static void query(Restore *r, const char *sql, int n, const char *const *v, NextFn next) {
    Err e;
    r->next = next;
    r->pg_busy = 1;
    if (pg_conn_query(r->conn, sql, n, v, on_pg, r, &e) != 0) {
        r->pg_busy = 0;
        fail(r, &e);
    }
}

/* ---- the end ---- */

static void free_stream(Restore *r) {
    bcheck_free(r->bc);
    r->bc = NULL;
    buf_free(&r->out);
}

static void finish(Restore *r) {
    Job *job = r->job;
    if (r->conn)
        pg_pool_release(r->pool, r->conn);
    free_stream(r);
    for (int i = 0; i < r->nstmts; i++) {
        free(r->stmts[i].sql);
        free(r->stmts[i].message);
    }
    free(r->stmts);
    scope_free(r->scope);
    free(r->steps);
    free(r->selected);
    free(r->expected);
    free(r->restored);
    Err err = r->err;
    int failing = r->failing;
    free(r);
    job_done(job, failing ? &err : NULL);
}

static void on_teardown_pg(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    (void)res;
    Restore *r = data;
    r->pg_busy = 0;
    if (err && r->conn) {
        pg_pool_release(r->pool, r->conn);
        r->conn = NULL;
        r->in_txn = 0;
    }
    teardown(r);
}

static void teardown_query(Restore *r, const char *sql, int n, const char *const *v) {
    Err e;
    r->pg_busy = 1;
    if (r->conn) {
        if (pg_conn_query(r->conn, sql, n, v, on_teardown_pg, r, &e) == 0)
            return;
        pg_pool_release(r->pool, r->conn);
        r->conn = NULL;
        r->in_txn = 0;
    }
    pg_pool_query(r->pool, sql, n, v, on_teardown_pg, r);
}

static void teardown(Restore *r) {
    if (r->manifest_busy) /* its callback comes back here */
        return;
    if (r->bc_busy) { /* the read ends with a stop; its done callback comes back here */
        bcheck_stop(r->bc);
        return;
    }
    if (r->pg_busy) {
        if (r->copying_in) { /* make the server end the COPY with an error */
            r->copying_in = 0;
            if (pg_conn_copy_end(r->conn, "restore abandoned") != 0)
                pg_conn_cancel(r->conn);
        } else {
            pg_conn_cancel(r->conn);
        }
        return;
    }
    if (r->conn && pg_conn_is_broken(r->conn)) {
        pg_pool_release(r->pool, r->conn);
        r->conn = NULL;
        r->in_txn = 0;
    }
    if (r->conn && r->in_txn) {
        r->in_txn = 0;
        teardown_query(r, "ROLLBACK", 0, NULL);
        return;
    }
    if (!r->recorded && r->recorded_start) {
        r->recorded = 1;
        int final = !r->cancelled && job_error_is_final(r->job, &r->err);
        char ms[24];
        snprintf(ms, sizeof(ms), "%" PRIu64, uv_now(job_loop(r->job)) - r->start_ms);
        const char *v[] = {r->spec->job_id, final ? "failed" : "running", r->err.msg, ms};
        teardown_query(r,
                       "UPDATE restore_history SET status = $2, error = $3, duration_ms = $4, "
                       "finished_at = CASE WHEN $2 = 'failed' THEN now() END WHERE job_id = $1",
                       4, v);
        return;
    }
    finish(r);
}

static void fail(Restore *r, const Err *err) {
    if (!r->failing) {
        r->failing = 1;
        r->err = *err;
        if (!r->cancelled)
            log_warn(job_log_id(r->job), "restore of %s failed: %s", r->spec->backup_id, err->msg);
    }
    teardown(r);
}

/* ---- success ---- */

static void on_recorded_done(Restore *r, PGresult *res) {
    (void)res;
    finish(r);
}

static void counts_json(const Restore *r, const uint64_t *counts, Buf *out) {
    buf_puts(out, "{");
    int first = 1;
    for (int i = 0; i < scope_count(r->scope); i++) {
        if (!r->selected[i])
            continue;
        buf_printf(out, "%s\"%s\":%" PRIu64, first ? "" : ",", scope_table(r->scope, i), counts[i]);
        first = 0;
    }
    buf_puts(out, "}");
}

static void on_committed(Restore *r, PGresult *res) {
    (void)res;
    r->in_txn = 0;
    uint64_t total = 0;
    for (int i = 0; i < scope_count(r->scope); i++)
        total += r->restored[i];
    log_info(job_log_id(r->job), "restored %s (%d backup%s): %" PRIu64 " rows", r->spec->backup_id,
             r->nsteps, r->nsteps > 1 ? "s" : "", total);
    job_progress(r->job, "done", 100, total, r->bytes);
    Buf chain = BUF_INIT, counts = BUF_INIT;
    buf_puts(&chain, "{");
    for (int i = 0; i < r->nsteps; i++)
        buf_printf(&chain, "%s%s", i ? "," : "", r->steps[i].id);
    buf_puts(&chain, "}");
    counts_json(r, r->restored, &counts);
    char ms[24];
    snprintf(ms, sizeof(ms), "%" PRIu64, uv_now(job_loop(r->job)) - r->start_ms);
    const char *v[] = {r->spec->job_id, chain.data, counts.data, ms};
    r->recorded = 1;
    query(r,
          "UPDATE restore_history SET status = 'completed', chain = $2::text[], "
          "row_counts = $3::jsonb, error = NULL, finished_at = now(), duration_ms = $4 "
          "WHERE job_id = $1",
          4, v, on_recorded_done);
    buf_free(&chain);
    buf_free(&counts);
}

/* ---- FINAL and APPLY: one statement after the other ---- */

static void add_stmt(Restore *r, SqlKind kind, int table, Buf *sql, const char *message) {
    r->stmts = xrealloc(r->stmts, (size_t)(r->nstmts + 1) * sizeof(Stmt));
    Stmt *s = &r->stmts[r->nstmts++];
    s->sql = xstrdup(sql->data);
    s->kind = kind;
    s->table = table;
    s->message = message ? xstrdup(message) : NULL;
    buf_reset(sql);
}

static void build_stmts(Restore *r) {
    const Scope *s = r->scope;
    int n = scope_count(s);
    Buf sql = BUF_INIT;
    buf_puts(&sql, "CREATE TEMP TABLE _bw_final ON COMMIT DROP AS "
                   "SELECT DISTINCT ON (tbl, k) tbl, k, j, step FROM (SELECT step, tbl, j, ");
    scope_restore_key_sql(s, "tbl", "j", 0, &sql);
    buf_puts(&sql, " AS k FROM _bw_stage WHERE kind = 'r') s ORDER BY tbl, k, step DESC");
    add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    /* a step deletes first, then writes its rows: only a later step's deletion removes a row */
    buf_puts(&sql, "DELETE FROM _bw_final f USING _bw_stage d WHERE d.kind = 'd' "
                   "AND d.tbl = f.tbl AND d.step > f.step AND f.k = ");
    scope_restore_key_sql(s, "d.tbl", "d.j", 1, &sql);
    add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    buf_puts(&sql, "CREATE INDEX ON _bw_final (tbl, k)");
    add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    buf_puts(&sql, "ANALYZE _bw_final");
    add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    buf_puts(&sql, "SELECT tbl, count(*) FROM _bw_final GROUP BY tbl");
    add_stmt(r, SQ_COUNTS, -1, &sql, NULL);
    char msg[ERR_MSG_MAX];
    for (int i = 0; i < n; i++) {
        if (!r->selected[i])
            continue;
        int p = scope_parent_index(s, i);
        int parent_staged = p >= 0 && r->selected[p];
        scope_restore_owner_sql(s, i, parent_staged, &sql);
        if (p < 0 || parent_staged)
            snprintf(msg, sizeof(msg),
                     "backup holds rows of %s that are not user %s's: refusing to restore them",
                     scope_table(s, i), r->spec->user_id);
        else
            snprintf(msg, sizeof(msg),
                     "restoring %s alone would break a foreign key: some of its rows refer to "
                     "%s rows that are missing (or not the user's); restore %s too "
                     "(tables=%s,%s)",
                     scope_table(s, i), scope_table(s, p), scope_table(s, p), scope_table(s, p),
                     scope_table(s, i));
        add_stmt(r, SQ_CHECK, i, &sql, msg);
        scope_restore_foreign_sql(s, i, &sql);
        snprintf(msg, sizeof(msg),
                 "backup holds %s rows whose keys belong to rows of another user: refusing to "
                 "restore",
                 scope_table(s, i));
        add_stmt(r, SQ_CHECK, i, &sql, msg);
        for (int k = 0; k < scope_restore_ref_count(s, i); k++) {
            const char *col = scope_restore_ref_sql(s, i, k, r->selected, &sql);
            snprintf(msg, sizeof(msg),
                     "backup holds %s rows whose %s refers to a row that is missing or not user "
                     "%s's: refusing to restore",
                     scope_table(s, i), col, r->spec->user_id);
            add_stmt(r, SQ_CHECK, i, &sql, msg);
        }
    }
    for (int i = n - 1; i >= 0; i--) /* children first */
        if (r->selected[i]) {
            scope_restore_delete_sql(s, i, &sql);
            add_stmt(r, SQ_EXEC, i, &sql, NULL);
        }
    for (int i = 0; i < n; i++) /* parents first */
        if (r->selected[i]) {
            scope_restore_upsert_sql(s, i, &sql);
            add_stmt(r, SQ_UPSERT, i, &sql, NULL);
        }
    buf_free(&sql);
}

static void on_stmt(Restore *r, PGresult *res) {
    Stmt *st = &r->stmts[r->qi];
    switch (st->kind) {
    case SQ_EXEC:
        break;
    case SQ_COUNTS:
        for (int k = 0; k < PQntuples(res); k++) {
            int i = scope_find(r->scope, PQgetvalue(res, k, 0));
            if (i >= 0)
                r->expected[i] = strtoull(PQgetvalue(res, k, 1), NULL, 10);
        }
        break;
    case SQ_CHECK:
        if (strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID, "%s (%s row%s, first: %s %s)", st->message,
                  PQgetvalue(res, 0, 0), strcmp(PQgetvalue(res, 0, 0), "1") ? "s" : "",
                  scope_table(r->scope, st->table), PQgetvalue(res, 0, 1));
            return;
        }
        break;
    case SQ_UPSERT: {
        uint64_t n = strtoull(PQcmdTuples(res), NULL, 10);
        r->restored[st->table] = n;
        if (n != r->expected[st->table]) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID,
                  "backup holds %" PRIu64 " %s rows whose keys belong to rows of another user: "
                  "refusing to restore",
                  r->expected[st->table] - n, scope_table(r->scope, st->table));
            return;
        }
        break;
    }
    }
    r->qi++;
    run_stmt(r);
}

static void run_stmt(Restore *r) {
    if (r->qi == r->nstmts) {
        progress(r, "committing", 99);
        query(r, "COMMIT", 0, NULL, on_committed);
        return;
    }
    Stmt *st = &r->stmts[r->qi];
    if (st->table >= 0 && st->kind != SQ_CHECK)
        progress(r, scope_table(r->scope, st->table), 90 + 9 * r->qi / r->nstmts);
    else
        progress(r, "checking", 90);
    query(r, st->sql, 0, NULL, on_stmt);
}

/* ---- STAGE: one backup object streamed into _bw_stage ---- */

/* A row or deleted key of the object being read: staged for COPY, sent in batches. */
static int on_item(int section, const char *table, const char *json, size_t len, void *data,
                   Err *err) {
    Restore *r = data;
    int i = scope_find(r->scope, table);
    if (i < 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "backup %s holds table %s, which is not in backup_scope", r->steps[r->si].id,
                table);
        return -1;
    }
    if (section == 0 && (++r->rows_staged & 0xfff) == 0) {
        int pct = r->rows_total ? (int)(r->rows_staged * 90 / r->rows_total) : 0;
        progress(r, "downloading", pct > 89 ? 89 : pct);
    }
    if (!r->selected[i])
        return 0;
    buf_printf(&r->out, "%d\x02%c\x02%s\x02", r->si, section ? 'd' : 'r', table);
    int rc = 1;
    if (len >= PUT_BATCH) { /* a big row goes to COPY from the reader's buffer, not copied again */
        const char *parts[] = {r->out.data, json, "\n"};
        size_t lens[] = {r->out.len, len, 1};
        rc = pg_conn_copy_putv(r->conn, parts, lens, 3);
        r->out.len = 0;
    } else {
        buf_append(&r->out, json, len);
        buf_puts(&r->out, "\n");
        if (r->out.len >= PUT_BATCH) {
            rc = pg_conn_copy_put(r->conn, r->out.data, r->out.len);
            r->out.len = 0;
        }
    }
    if (rc <= 0) {
        if (rc < 0) {
            err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "postgres: COPY failed");
            return -1;
        }
        if (rc == 0) /* the socket is full: hold S3 until the connection drains */
            bcheck_hold(r->bc);
    }
    return 0;
}

static void on_checked(BCheck *c, const Err *err, void *data) {
    Restore *r = data;
    r->bc_busy = 0;
    r->bytes += bcheck_bytes(c);
    if (r->failing) {
        teardown(r);
        return;
    }
    if (err) {
        fail(r, err);
        return;
    }
    if (r->out.len && pg_conn_copy_put(r->conn, r->out.data, r->out.len) < 0)
        return; /* the COPY's done callback reports it */
    r->out.len = 0;
    r->copying_in = 0;
    if (pg_conn_copy_end(r->conn, NULL) != 0)
        failf(r, ERR_RETRYABLE, ERR_CODE_CONNECT, "%s", "postgres: COPY could not be ended");
}

static void on_copy_writable(PgConn *c, void *data) {
    (void)c;
    Restore *r = data;
    if (r->failing)
        return;
    if (!r->step_started) { /* the COPY is open: start reading */
        const Step *st = &r->steps[r->si];
        BCheckTarget t = {st->id, r->spec->user_id, st->key, st->checksum, st->compression};
        r->step_started = 1;
        r->bc_busy = 1;
        r->bc = bcheck_start(r->s3, &t, 0, on_item, on_checked, r);
        return;
    }
    if (r->bc_busy)
        bcheck_resume(r->bc);
}

static void on_step_staged(Restore *r, PGresult *res) {
    (void)res;
    log_info(job_log_id(r->job), "staged backup %s (%d of %d)", r->steps[r->si].id, r->si + 1,
             r->nsteps);
    free_stream(r);
    r->si++;
    if (r->si < r->nsteps) {
        start_step(r);
        return;
    }
    build_stmts(r);
    r->qi = 0;
    run_stmt(r);
}

static void open_step(Restore *r);

/* A reindexed step's record came from its manifest: the manifest must still say the same
 * (a record edited since, or a manifest replaced, is refused before any byte is used). */
static void on_step_manifest(const S3Result *res, const Err *err, void *data) {
    Restore *r = data;
    const Step *st = &r->steps[r->si];
    r->manifest_busy = 0;
    if (r->failing) {
        teardown(r);
        return;
    }
    if (err) {
        Err e = *err;
        err_prefix(&e, "backup %s: manifest %s.manifest.json", st->id, st->key);
        fail(r, &e);
        return;
    }
    char sha[80], size[32], id[160];
    const char *m = res->body->data;
    size_t n = res->body->len;
    if (bfile_field(m, n, "backup_id", id, sizeof(id)) != 0 || strcmp(id, st->id) != 0 ||
        bfile_field(m, n, "sha256", sha, sizeof(sha)) != 0 ||
        bfile_field(m, n, "size", size, sizeof(size)) != 0 || strcmp(sha, st->checksum) != 0 ||
        strtoull(size, NULL, 10) != st->size) {
        failf(r, ERR_PERMANENT, ERR_CODE_INVALID,
              "Backup checksum verification failed: backup %s was recorded by reindex, and its "
              "manifest no longer agrees with that record (sha256 %.16s..., %" PRIu64 " bytes)",
              st->id, st->checksum, st->size);
        return;
    }
    open_step(r);
}

static void start_step(Restore *r) {
    const Step *st = &r->steps[r->si];
    if (st->reindexed) {
        char key[sizeof(st->key) + 16];
        snprintf(key, sizeof(key), "%s.manifest.json", st->key);
        r->manifest_busy = 1;
        s3_get_object(r->s3, key, 64 * 1024, on_step_manifest, r);
        return;
    }
    open_step(r);
}

static void open_step(Restore *r) {
    const Step *st = &r->steps[r->si];
    r->step_started = 0;
    char stage[JOBSPEC_ID_MAX + 16];
    snprintf(stage, sizeof(stage), "downloading %s", st->id);
    progress(r, stage, r->rows_total ? (int)(r->rows_staged * 90 / r->rows_total) : 0);
    Err e;
    r->next = on_step_staged;
    r->pg_busy = r->copying_in = 1;
    if (pg_conn_copy_in(r->conn,
                        "COPY _bw_stage (step, kind, tbl, j) FROM STDIN "
                        "(FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')",
                        on_copy_writable, on_pg, r, &e) != 0) {
        r->pg_busy = r->copying_in = 0;
        fail(r, &e);
    }
}

/* ---- setup: scope, selection, staging table ---- */

static void on_staging(Restore *r, PGresult *res) {
    (void)res;
    r->si = 0;
    start_step(r);
}

static void on_scope(Restore *r, PGresult *res) {
    Err e;
    r->scope = scope_from_result(res, &e);
    if (r->scope == NULL) {
        fail(r, &e);
        return;
    }
    int n = scope_count(r->scope);
    r->selected = xcalloc((size_t)n, 1);
    r->expected = xcalloc((size_t)n, sizeof(uint64_t));
    r->restored = xcalloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; i < n; i++)
        r->selected[i] = r->spec->ntables == 0;
    for (int t = 0; t < r->spec->ntables; t++) {
        int i = scope_find(r->scope, r->spec->tables[t]);
        if (i < 0) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID,
                  "table %s is not in backup_scope: cannot restore it", r->spec->tables[t]);
            return;
        }
        r->selected[i] = 1;
    }
    query(r,
          "CREATE TEMP TABLE _bw_stage (step int NOT NULL, kind \"char\" NOT NULL, "
          "tbl text NOT NULL, j jsonb NOT NULL) ON COMMIT DROP",
          0, NULL, on_staging);
}

static void on_user_set(Restore *r, PGresult *res) {
    (void)res;
    query(r, scope_load_sql(), 0, NULL, on_scope);
}

static void on_begun(Restore *r, PGresult *res) {
    (void)res;
    r->in_txn = 1;
    const char *v[] = {r->spec->user_id};
    query(
        r,
        "SELECT set_config('backup.user_id', $1, true), set_config('backup.restoring', 'on', true)",
        1, v, on_user_set);
}

static void on_history(Restore *r, PGresult *res) {
    (void)res;
    r->recorded_start = 1;
    query(r, "BEGIN", 0, NULL, on_begun);
}

/* ---- CHAIN ---- */

static void on_chain(Restore *r, PGresult *res) {
    const JobSpec *spec = r->spec;
    int n = PQntuples(res);
    if (n == 0) {
        failf(r, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s not found", spec->backup_id);
        return;
    }
    if (n > MAX_CHAIN) {
        failf(r, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: chain longer than %d backups",
              spec->backup_id, MAX_CHAIN);
        return;
    }
    r->steps = xcalloc((size_t)n, sizeof(Step));
    r->nsteps = n;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "backups/%s/", spec->user_id);
    for (int k = 0; k < n; k++) {
        const char *id = PQgetvalue(res, k, 0);
        const char *status = PQgetvalue(res, k, 3);
        const char *key = PQgetvalue(res, k, 4);
        if (strcmp(PQgetvalue(res, k, 1), spec->user_id) != 0) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID,
                  "forbidden: backup %s does not belong to user %s", id, spec->user_id);
            return;
        }
        if (strcmp(status, "completed") != 0 && strcmp(status, "expired") != 0) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s is %s: it cannot be restored", id,
                  status);
            return;
        }
        if (strncmp(key, prefix, strlen(prefix)) != 0 || strstr(key, "..") ||
            strlen(key) >= sizeof(r->steps[k].key) || strlen(PQgetvalue(res, k, 5)) != 64) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID,
                  "backup %s has no usable key or checksum in backup_metadata", id);
            return;
        }
        if (k == 0 && (PQgetvalue(res, k, 7)[0] || strcmp(PQgetvalue(res, k, 2), "full") != 0)) {
            failf(r, ERR_PERMANENT, ERR_CODE_INVALID,
                  "backup %s: its chain does not start at a full backup (base %s missing?)", id,
                  PQgetvalue(res, k, 7));
            return;
        }
        Step *st = &r->steps[k];
        snprintf(st->id, sizeof(st->id), "%s", id);
        snprintf(st->key, sizeof(st->key), "%s", key);
        snprintf(st->checksum, sizeof(st->checksum), "%s", PQgetvalue(res, k, 5));
        snprintf(st->compression, sizeof(st->compression), "%s", PQgetvalue(res, k, 6));
        st->size = strtoull(PQgetvalue(res, k, 9), NULL, 10);
        st->reindexed = strcmp(PQgetvalue(res, k, 10), "reindex") == 0;
        r->rows_total += strtoull(PQgetvalue(res, k, 8), NULL, 10);
    }
    job_set_rows_total(r->job, r->rows_total);
    log_info(job_log_id(r->job), "restoring %s for user %s: %d backup%s, %" PRIu64 " rows",
             spec->backup_id, spec->user_id, n, n > 1 ? "s" : "", r->rows_total);
    Buf tables = BUF_INIT;
    for (int t = 0; t < spec->ntables; t++)
        buf_printf(&tables, "%s%s", t ? "," : "{", spec->tables[t]);
    if (spec->ntables)
        buf_puts(&tables, "}");
    const char *v[] = {spec->job_id, spec->user_id, spec->backup_id,
                       spec->requested_by[0] ? spec->requested_by : NULL,
                       spec->ntables ? tables.data : NULL};
    query(r,
          "INSERT INTO restore_history (job_id, user_id, backup_id, requested_by, tables) "
          "VALUES ($1, $2::uuid, $3, $4::uuid, $5::text[]) "
          "ON CONFLICT (job_id) DO UPDATE SET attempts = restore_history.attempts + 1, "
          "status = 'running', error = NULL, started_at = now(), finished_at = NULL",
          5, v, on_history);
    buf_free(&tables);
}

static void on_conn(PgPool *pool, PgConn *conn, const Err *err, void *data) {
    (void)pool;
    Restore *r = data;
    r->pg_busy = 0;
    r->conn = conn;
    if (r->failing) {
        teardown(r);
        return;
    }
    if (err) {
        fail(r, err);
        return;
    }
    const char *v[] = {r->spec->backup_id};
    query(r,
          "WITH RECURSIVE chain AS ("
          "  SELECT id, user_id, type, status, s3_key, checksum, compression, base_backup_id,"
          "    row_counts, size, recorded_by, 0 AS depth FROM backup_metadata WHERE id = $1"
          "  UNION ALL"
          "  SELECT b.id, b.user_id, b.type, b.status, b.s3_key, b.checksum, b.compression,"
          "    b.base_backup_id, b.row_counts, b.size, b.recorded_by, c.depth + 1"
          "  FROM backup_metadata b JOIN chain c ON b.id = c.base_backup_id WHERE c.depth < 1001)"
          " SELECT id, user_id::text, type, status, coalesce(s3_key, ''), coalesce(checksum, ''),"
          "  compression, coalesce(base_backup_id, ''),"
          "  coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(row_counts)), 0),"
          "  coalesce(size, 0), recorded_by"
          " FROM chain ORDER BY depth DESC",
          1, v, on_chain);
}

/* A backup id names its user: backup-<uuid>-<stamp>. */
static int names_user(const char *backup_id, const char *user_id) {
    const char *dash = strchr(backup_id, '-');
    return dash && strncmp(dash + 1, user_id, 36) == 0 && dash[37] == '-';
}

static void restore_run(Job *job) {
    Restore *r = xcalloc(1, sizeof(*r));
    r->job = job;
    r->spec = job_spec(job);
    Services *sv = job_services(job);
    r->cfg = services_config(sv);
    r->pool = services_pg(sv);
    r->s3 = services_s3(sv);
    r->start_ms = uv_now(job_loop(job));
    job_set_data(job, r);
    job_set_backup_id(job, r->spec->backup_id);
    if (r->spec->user_id[0] == 0) {
        failf(r, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "No authenticated user");
        return;
    }
    if (!names_user(r->spec->backup_id, r->spec->user_id)) {
        failf(r, ERR_PERMANENT, ERR_CODE_INVALID, "forbidden: backup %s does not belong to user %s",
              r->spec->backup_id, r->spec->user_id);
        return;
    }
    job_progress(job, "starting", 0, 0, 0);
    r->pg_busy = 1;
    pg_pool_acquire(r->pool, on_conn, r);
}

static void restore_cancel(Job *job) {
    Restore *r = job_data(job);
    if (r->failing)
        return;
    r->cancelled = 1;
    Err e;
    err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "restore cancelled (shutdown or lease lost)");
    fail(r, &e);
}

const JobType job_type_restore = {"restore", 1, restore_run, restore_cancel};
