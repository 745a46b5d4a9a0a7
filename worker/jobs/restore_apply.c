/*
 * restore_apply: a restore's statement lists, run one after the other on the
 * job's connection (see restore.c for where they fit):
 *
 *   setup    a typed staging table per selected table (and one of deleted
 *            keys for a chain), before any row is read
 *   FINAL    columns PostgreSQL converts; for a chain the last state of each
 *            key; a unique index on the key (a key twice fails); ANALYZE
 *   CHECK    ownership: every row the user's, every parent and reference the
 *            user's or restored too, no key of another user's row
 *   APPLY    deletes (children first), then the upserts of what differs
 *            (parents first); dry_run counts the same and writes nothing
 */
#include "restore_intern.h"

#include "buf.h"
#include "jobs.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int restore_worker_notes(const Scope *s, int i) {
    if (strcmp(scope_table(s, i), "notifications") != 0)
        return 0;
    char kind;
    for (int c = 0; c < scope_stage_columns(s, i); c++)
        if (strcmp(scope_stage_column(s, i, c, &kind), "type") == 0)
            return 1;
    return 0;
}

static void add_stmt(Restore *r, SqlKind kind, int table, Buf *sql, const char *message) {
    r->stmts = xrealloc(r->stmts, (size_t)(r->nstmts + 1) * sizeof(Stmt));
    Stmt *s = &r->stmts[r->nstmts++];
    s->sql = xstrdup(sql->data);
    s->kind = kind;
    s->table = table;
    s->message = message ? xstrdup(message) : NULL;
    buf_reset(sql);
}

void restore_free_stmts(Restore *r) {
    for (int i = 0; i < r->nstmts; i++) {
        free(r->stmts[i].sql);
        free(r->stmts[i].message);
    }
    free(r->stmts);
    r->stmts = NULL;
    r->nstmts = r->qi = 0;
}

void restore_setup_stmts(Restore *r) {
    const Scope *s = r->scope;
    Buf sql = BUF_INIT;
    restore_free_stmts(r);
    r->applying = 0;
    if (r->prune) { /* the gate turned parallel query off for the keys' query */
        buf_puts(&sql, "SET LOCAL max_parallel_workers_per_gather TO DEFAULT");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = 0; i < scope_count(s); i++) {
        if (!r->selected[i])
            continue;
        scope_stage_create_sql(s, i, r->chain, &sql);
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        if (scope_stage_alter_sql(s, i, r->chain, &sql))
            add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    if (r->chain) {
        buf_puts(&sql, "CREATE TEMP TABLE _bw_d (step int NOT NULL, tbl int NOT NULL, k text NOT "
                       "NULL) ON COMMIT DROP");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    buf_free(&sql);
}

static void check_stmts(Restore *r, int i, Buf *sql) {
    const Scope *s = r->scope;
    char msg[ERR_MSG_MAX];
    int p = scope_parent_index(s, i);
    int parent_staged = p >= 0 && r->selected[p];
    scope_restore_owner_sql(s, i, parent_staged, parent_staged && r->prune && r->prune[p], sql);
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
    add_stmt(r, SQ_CHECK, i, sql, msg);
    scope_restore_foreign_sql(s, i, sql);
    snprintf(msg, sizeof(msg),
             "backup holds %s rows whose keys belong to rows of another user: refusing to "
             "restore",
             scope_table(s, i));
    add_stmt(r, SQ_CHECK, i, sql, msg);
    for (int k = 0; k < scope_restore_ref_count(s, i); k++) {
        const char *col =
            scope_restore_ref_sql(s, i, k, r->selected, (const unsigned char *)r->prune, sql);
        snprintf(msg, sizeof(msg),
                 "backup holds %s rows whose %s refers to a row that is missing or not user "
                 "%s's: refusing to restore",
                 scope_table(s, i), col, r->spec->user_id);
        add_stmt(r, SQ_CHECK, i, sql, msg);
    }
}

void restore_apply_stmts(Restore *r) {
    const Scope *s = r->scope;
    int n = scope_count(s);
    Buf sql = BUF_INIT;
    restore_free_stmts(r);
    r->applying = 1;
    for (int i = 0; i < n; i++) {
        if (!r->selected[i])
            continue;
        if (scope_stage_convert_sql(s, i, r->chain, &sql))
            add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        if (r->chain) {
            scope_stage_final_sql(s, i, &sql);
            add_stmt(r, SQ_FINAL, i, &sql, NULL);
        }
        scope_stage_index_sql(s, i, &sql);
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        buf_printf(&sql, "ANALYZE _bw_f%d", i);
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = 0; i < n; i++)
        if (r->selected[i])
            check_stmts(r, i, &sql);
    int dry = r->spec->dry_run;
    r->lock_first = -1;
    if (!dry) {
        /* Every row to delete or update is locked first, none waited for (NOWAIT): the restore
         * then never waits for the application while holding rows the application may wait
         * for, so no deadlock reaches the application. Rows held by another transaction are
         * released (back to the savepoint) and asked for again (restore_on_stmt_err). A short
         * lock_timeout covers the writes the locks cannot name (a new key inserted meanwhile,
         * a foreign key's action): such a wait fails the attempt, which is retried. */
        buf_puts(&sql, "SAVEPOINT _bw_lock");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        r->lock_first = r->nstmts;
        /* the tables first (a LOCK TABLE, a DDL the application runs), every table of the
         * scope: a foreign key's action may write one that is not restored */
        for (int i = n - 1; i >= 0; i--) {
            buf_printf(&sql, "LOCK TABLE \"%s\" IN ROW EXCLUSIVE MODE NOWAIT", scope_table(s, i));
            add_stmt(r, SQ_LOCK, i, &sql, NULL);
        }
        for (int i = n - 1; i >= 0; i--)
            if (r->selected[i]) {
                int part = r->prune && r->prune[i];
                scope_restore_lock_sql(s, i, part ? r->snapshot : NULL, part ? r->listed : NULL,
                                       &sql);
                add_stmt(r, SQ_LOCK, i, &sql, NULL);
            }
        buf_puts(&sql, "SET LOCAL lock_timeout = '100ms'");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = n - 1; i >= 0; i--) /* children first */
        if (r->selected[i]) {
            int part = r->prune && r->prune[i];
            scope_restore_delete_sql(s, i, dry, part ? r->snapshot : NULL, part ? r->listed : NULL,
                                     &sql);
            /* the record of the user's backups outlives a restore */
            if (restore_worker_notes(s, i))
                buf_puts(&sql, " AND \"type\" NOT IN (" RESTORE_WORKER_NOTES ")");
            add_stmt(r, SQ_DELETE, i, &sql, NULL);
        }
    for (int i = 0; i < n; i++) /* parents first */
        if (r->selected[i]) {
            scope_restore_upsert_sql(s, i, dry, &sql);
            add_stmt(r, SQ_UPSERT, i, &sql, NULL);
        }
    buf_free(&sql);
}

void restore_run_stmt(JobRt *rt, Restore *r) {
    if (r->qi == r->nstmts) {
        restore_stmts_done(rt, r);
        return;
    }
    Stmt *st = &r->stmts[r->qi];
    if (!r->applying)
        restore_progress(rt, r, "preparing", 0);
    else if (st->table >= 0 && st->kind != SQ_CHECK)
        restore_progress(rt, r, scope_table(r->scope, st->table), 90 + 9 * r->qi / r->nstmts);
    else
        restore_progress(rt, r, "checking", 90);
    r->stmt_ms = jobrt_elapsed_ms(rt);
    if (st->kind == SQ_LOCK && r->lock_since == 0)
        r->lock_since = r->stmt_ms ? r->stmt_ms : 1;
    int soft = st->kind == SQ_LOCK || st->kind == SQ_DELETE || st->kind == SQ_UPSERT;
    restore_query(rt, r, ST_STMT, soft ? JRT_SOFT : 0, st->sql, 0, NULL);
}

/* How long rows held by other transactions are waited for, in steps of LOCK_PAUSE. */
#define LOCK_WAIT_MS 30000
#define LOCK_PAUSE   "0.2"

void restore_on_stmt_err(JobRt *rt, Restore *r, const Err *err) {
    const Stmt *st = &r->stmts[r->qi];
    int busy = strncmp(err->msg, "55P03", 5) == 0; /* lock_not_available */
    if (strncmp(err->msg, "40001", 5) == 0 || strncmp(err->msg, "40P01", 5) == 0) {
        /* a row written after the restore's snapshot: its transaction is before the restore,
         * which runs again from a new snapshot (the job's retry) */
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "another transaction wrote user %s's %s while the restore ran: nothing was "
                    "changed, the restore runs again (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), err->msg);
        return;
    }
    if (busy && st->kind != SQ_LOCK) {
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "writing user %s's %s waited for another transaction (a key it inserts, a "
                    "row a foreign key names): nothing was changed, the restore runs again (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), err->msg);
        return;
    }
    if (!busy) {
        jobrt_fail(rt, err);
        return;
    }
    if (jobrt_elapsed_ms(rt) - r->lock_since >= LOCK_WAIT_MS) {
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "rows of user %s's %s (or the table) are held by another transaction for "
                    "over %d s: nothing was changed (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), LOCK_WAIT_MS / 1000,
                    err->msg);
        return;
    }
    if (r->lock_waits++ == 0)
        log_info(job_log_id(jobrt_job(rt)),
                 "%s (rows to write, or the table) held by another transaction: waiting (at "
                 "most %d s), holding none meanwhile",
                 scope_table(r->scope, st->table), LOCK_WAIT_MS / 1000);
    restore_query(rt, r, ST_LOCK_BACK, 0, "ROLLBACK TO SAVEPOINT _bw_lock", 0, NULL);
}

void restore_lock_next(JobRt *rt, Restore *r) {
    if (r->state == ST_LOCK_BACK) {
        restore_query(rt, r, ST_LOCK_WAIT, 0, "SELECT pg_sleep(" LOCK_PAUSE ")", 0, NULL);
        return;
    }
    r->qi = r->lock_first;
    restore_run_stmt(rt, r);
}

/* A statement that took long is named in the log: where a restore's time goes. */
#define SLOW_STMT_MS 250

static void log_slow(JobRt *rt, Restore *r, const Stmt *st) {
    uint64_t ms = jobrt_elapsed_ms(rt) - r->stmt_ms;
    if (ms >= SLOW_STMT_MS)
        log_info(job_log_id(jobrt_job(rt)), "%" PRIu64 " ms: %.90s%s", ms, st->sql,
                 strlen(st->sql) > 90 ? "..." : "");
}

void restore_on_stmt(JobRt *rt, Restore *r, PGresult *res) {
    Stmt *st = &r->stmts[r->qi];
    log_slow(rt, r, st);
    switch (st->kind) {
    case SQ_EXEC:
        break;
    case SQ_FINAL:
        r->expected[st->table] = strtoull(PQcmdTuples(res), NULL, 10);
        break;
    case SQ_LOCK:
        break;
    case SQ_CHECK:
        if (strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s (%s row%s, first: %s %s)",
                        st->message, PQgetvalue(res, 0, 0),
                        strcmp(PQgetvalue(res, 0, 0), "1") ? "s" : "",
                        scope_table(r->scope, st->table), PQgetvalue(res, 0, 1));
            return;
        }
        break;
    case SQ_DELETE:
        r->del[st->table] =
            strtoull(r->spec->dry_run ? PQgetvalue(res, 0, 0) : PQcmdTuples(res), NULL, 10);
        break;
    case SQ_UPSERT: {
        int i = st->table;
        uint64_t want = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        r->ins[i] = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        r->upd[i] = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        if (r->ins[i] + r->upd[i] != want || want > r->expected[i]) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup holds %" PRIu64 " %s rows whose keys belong to rows of another "
                        "user: refusing to restore",
                        want - r->ins[i] - r->upd[i], scope_table(r->scope, i));
            return;
        }
        r->restored[i] = r->expected[i] + (r->kept ? r->kept[i] : 0);
        break;
    }
    }
    r->qi++;
    restore_run_stmt(rt, r);
}
