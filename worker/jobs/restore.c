/*
 * restore: a user's tables put back exactly as a backup saw them, in one
 * transaction that changes nothing unless everything checked out.
 *
 *   CHECK     the backup id names the job's user (else `forbidden`, nothing read)
 *   CHAIN     the backup and its bases down to the full one, all the user's, completed
 *   RECORD    restore_history row (outside the transaction: a failure is kept)
 *   BEGIN     user id set as a bound setting; backup_scope checked; a temporary
 *             staging table per selected table, shaped like it (restore_apply.c)
 *   STAGE i   each backup of the chain, full first, under a savepoint, streamed from
 *             S3 through SHA-256 and gunzip into the document reader; each row's JSON
 *             turned into COPY's text form (pgcopy) and copied into its table's staging
 *             table, so every value goes through its type's own input function. Checked
 *             as it comes: the header names this backup and this user, the layout
 *             holds, the trailer's counts match, and the digest equals the recorded one
 *             (`Backup checksum verification failed`; then the replica's copy is read
 *             instead, after a ROLLBACK TO SAVEPOINT). Only temporary tables are
 *             touched until every object has passed.
 *   FINAL     for a chain, the last state of each key (a step's deletions apply before
 *             its rows); ownership checked (every row is the user's; a child's parent
 *             is restored too or is the user's)
 *   APPLY     per table: delete the user's rows that are not in the backup
 *             (children first), then write the rows that are new or differ (parents
 *             first; a row equal to the backup's is not touched: no trigger, no new
 *             tuple, no WAL), updating only rows that are the user's; a write count
 *             that falls short means a key of someone else's row, and everything
 *             rolls back. dry_run: the same counted, nothing written
 *   COMMIT    (dry_run: ROLLBACK) and the history row and the job's result say, per
 *             table, the rows inserted, updated, deleted and unchanged.
 */
#include "jobs.h"
#include "restore_intern.h"

#include "bcheck.h"
#include "bfile.h"
#include "buf.h"
#include "jobconfig.h"
#include "jobrt.h"
#include "layout.h"
#include "log.h"
#include "manifest.h"
#include "scope.h"
#include "services.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHAIN 1000

void restore_progress(JobRt *rt, Restore *r, const char *stage, int pct) {
    job_progress(jobrt_job(rt), stage, pct, r->rows_staged, r->bytes);
}

void restore_query(JobRt *rt, Restore *r, State next, int flags, const char *sql, int n,
                   const char *const *v) {
    r->state = next;
    jobrt_query(rt, next, flags, sql, n, v);
}

/* ---- the end ---- */

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

/* Per table: {"orders":{"inserted":1,"updated":2,"deleted":3,"unchanged":4},...}; the sums. */
static void changes_json(const Restore *r, Buf *out, uint64_t sum[4]) {
    buf_puts(out, "{");
    int first = 1;
    for (int i = 0; i < scope_count(r->scope); i++) {
        if (!r->selected[i])
            continue;
        uint64_t same = r->expected[i] + (r->kept ? r->kept[i] : 0) - r->ins[i] - r->upd[i];
        buf_printf(out,
                   "%s\"%s\":{\"inserted\":%" PRIu64 ",\"updated\":%" PRIu64 ",\"deleted\":%" PRIu64
                   ",\"unchanged\":%" PRIu64 "}",
                   first ? "" : ",", scope_table(r->scope, i), r->ins[i], r->upd[i], r->del[i],
                   same);
        sum[0] += r->ins[i], sum[1] += r->upd[i], sum[2] += r->del[i], sum[3] += same;
        first = 0;
    }
    buf_puts(out, "}");
}

static void on_committed(JobRt *rt, Restore *r) {
    uint64_t total = 0, sum[4] = {0, 0, 0, 0};
    for (int i = 0; i < scope_count(r->scope); i++)
        total += r->restored[i];
    Buf changes = BUF_INIT, result = BUF_INIT;
    changes_json(r, &changes, sum);
    int dry = r->spec->dry_run;
    char what[256];
    snprintf(what, sizeof(what),
             "%s%" PRIu64 " inserted, %" PRIu64 " updated, %" PRIu64 " deleted, %" PRIu64
             " unchanged",
             dry ? "dry run, nothing written: would have " : "", sum[0], sum[1], sum[2], sum[3]);
    log_info(job_log_id(jobrt_job(rt)),
             "%s %s (%d backup%s): %" PRIu64 " rows (%" PRIu64 " staged); %s",
             dry ? "dry run of" : "restored", r->spec->backup_id, r->nsteps,
             r->nsteps > 1 ? "s" : "", total, r->staged, what);
    buf_printf(&result,
               "{\"dry_run\":%s,\"inserted\":%" PRIu64 ",\"updated\":%" PRIu64
               ",\"deleted\":%" PRIu64 ",\"unchanged\":%" PRIu64 ",\"staged\":%" PRIu64
               ",\"tables\":%s}",
               dry ? "true" : "false", sum[0], sum[1], sum[2], sum[3], r->staged, changes.data);
    job_set_result(jobrt_job(rt), result.data);
    job_set_note(jobrt_job(rt), what);
    job_progress(jobrt_job(rt), "done", 100, total, r->bytes);
    Buf chain = BUF_INIT, counts = BUF_INIT;
    buf_puts(&chain, "{");
    for (int i = 0; i < r->nsteps; i++)
        buf_printf(&chain, "%s%s", i ? "," : "", r->steps[i].id);
    buf_puts(&chain, "}");
    counts_json(r, r->restored, &counts);
    char ms[24];
    snprintf(ms, sizeof(ms), "%" PRIu64, jobrt_elapsed_ms(rt));
    /* which copy was read: said in the log, the status hash and the history */
    int replica = 0;
    for (int i = 0; i < r->nsteps; i++)
        replica += r->steps[i].from_replica;
    const char *source = replica == 0 ? "primary" : replica == r->nsteps ? "replica" : "mixed";
    if (replica) {
        char note[ERR_MSG_MAX + 64];
        snprintf(note, sizeof(note), "read from the replica%s%.300s; %.200s",
                 r->fallback[0] ? ": " : "", r->fallback, what);
        job_set_note(jobrt_job(rt), note);
        log_info(job_log_id(jobrt_job(rt)), "%d of %d backup%s read from the replica", replica,
                 r->nsteps, r->nsteps > 1 ? "s" : "");
    }
    const char *v[] = {r->spec->job_id, chain.data,   counts.data,           ms,
                       source,          changes.data, dry ? "true" : "false"};
    restore_query(rt, r, ST_RECORD, 0,
                  "UPDATE restore_history SET status = 'completed', chain = $2::text[], "
                  "row_counts = $3::jsonb, error = NULL, finished_at = now(), duration_ms = $4, "
                  "source = $5, changes = $6::jsonb, dry_run = $7::boolean WHERE job_id = $1",
                  7, v);
    buf_free(&chain);
    buf_free(&counts);
    buf_free(&changes);
    buf_free(&result);
}

void restore_stmts_done(JobRt *rt, Restore *r) {
    if (!r->applying) { /* the staging tables are there: read the first step */
        r->si = 0;
        restore_stage_start(rt, r);
        return;
    }
    int notes = 0;
    for (int i = 0; i < scope_count(r->scope); i++)
        notes |= r->selected[i] && restore_worker_notes(r->scope, i);
    if (r->state != ST_NOTIFY && !r->spec->dry_run && notes &&
        services_jobconfig(jobrt_services(rt))->backup_notify) {
        uint64_t ins = 0, upd = 0, del = 0;
        for (int i = 0; i < scope_count(r->scope); i++)
            ins += r->ins[i], upd += r->upd[i], del += r->del[i];
        char counts[96];
        snprintf(counts, sizeof(counts),
                 "%" PRIu64 " inserted, %" PRIu64 " updated, %" PRIu64 " deleted", ins, upd, del);
        const char *v[] = {r->spec->user_id, r->spec->backup_id, counts};
        restore_query(rt, r, ST_NOTIFY, 0,
                      "INSERT INTO notifications (user_id, type, title, body, data) "
                      "SELECT $1::uuid, 'restore_completed', 'Restore completed', "
                      "format('Your data was restored to backup %s (%s).', $2::text, $3::text), "
                      "jsonb_build_object('backup_id', $2::text) "
                      "WHERE EXISTS (SELECT 1 FROM profiles WHERE id = $1::uuid)",
                      3, v);
        return;
    }
    restore_progress(rt, r, r->spec->dry_run ? "rolling back (dry run)" : "committing", 99);
    restore_query(rt, r, ST_COMMIT, JRT_END, r->spec->dry_run ? "ROLLBACK" : "COMMIT", 0, NULL);
}

/* ---- setup: scope, selection, staging table ---- */

static void on_scope(JobRt *rt, Restore *r, PGresult *res) {
    Err e;
    r->scope = scope_from_result(res, &e);
    if (r->scope == NULL) {
        jobrt_fail(rt, &e);
        return;
    }
    int n = scope_count(r->scope);
    r->selected = xcalloc((size_t)n, 1);
    r->expected = xcalloc((size_t)n, sizeof(uint64_t));
    r->restored = xcalloc((size_t)n, sizeof(uint64_t));
    r->ins = xcalloc((size_t)n, sizeof(uint64_t));
    r->upd = xcalloc((size_t)n, sizeof(uint64_t));
    r->del = xcalloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; i < n; i++)
        r->selected[i] = r->spec->ntables == 0;
    for (int t = 0; t < r->spec->ntables; t++) {
        int i = scope_find(r->scope, r->spec->tables[t]);
        if (i < 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "table %s is not in backup_scope: cannot restore it", r->spec->tables[t]);
            return;
        }
        r->selected[i] = 1;
    }
    r->shape = xcalloc((size_t)n, sizeof(PgCopyRow *));
    for (int i = 0; i < n; i++) {
        if (!r->selected[i])
            continue;
        r->shape[i] = pgcopy_row_new();
        char kind;
        const char *name;
        for (int c = 0; (name = scope_stage_column(r->scope, i, c, &kind)) != NULL; c++)
            pgcopy_row_add(r->shape[i], name, (PgCopyKind)kind);
    }
    restore_prune_start(rt, r);
}

/* ---- CHAIN ---- */

static void next_key(JobRt *rt, Restore *r);

static void on_chain(JobRt *rt, Restore *r, PGresult *res) {
    const JobSpec *spec = r->spec;
    int n = PQntuples(res);
    if (n == 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s not found", spec->backup_id);
        return;
    }
    if (n > MAX_CHAIN) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: chain longer than %d backups",
                    spec->backup_id, MAX_CHAIN);
        return;
    }
    r->steps = xcalloc((size_t)n, sizeof(Step));
    r->prunable = 1;
    r->nsteps = n;
    r->chain = n > 1;
    for (int k = 0; k < n; k++) {
        const char *id = PQgetvalue(res, k, 0);
        const char *status = PQgetvalue(res, k, 3);
        const char *key = PQgetvalue(res, k, 4);
        if (strcmp(PQgetvalue(res, k, 1), spec->user_id) != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "forbidden: backup %s does not belong to user %s", id, spec->user_id);
            return;
        }
        if (strcmp(status, "completed") != 0 && strcmp(status, "expired") != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s is %s: it cannot be restored", id, status);
            return;
        }
        Step *st = &r->steps[k];
        Err e;
        if (!layout_key_is_users(key, spec->user_id) || strlen(PQgetvalue(res, k, 5)) != 64 ||
            codec_list_parse(PQgetvalue(res, k, 6), &st->codecs, &e) != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s has no usable key, checksum or codecs in backup_metadata", id);
            return;
        }
        if (k == 0 && (PQgetvalue(res, k, 7)[0] || strcmp(PQgetvalue(res, k, 2), "full") != 0)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s: its chain does not start at a full backup (base %s missing?)",
                        id, PQgetvalue(res, k, 7));
            return;
        }
        snprintf(st->id, sizeof(st->id), "%s", id);
        snprintf(st->key, sizeof(st->key), "%s", key);
        snprintf(st->checksum, sizeof(st->checksum), "%s", PQgetvalue(res, k, 5));
        st->size = strtoull(PQgetvalue(res, k, 9), NULL, 10);
        st->reindexed = strcmp(PQgetvalue(res, k, 10), "reindex") == 0;
        st->encrypted = codec_list_encrypted(&st->codecs);
        if (!st->encrypted && keys_required(services_jobconfig(jobrt_services(rt))->keys)) {
            /* anyone who can write to the bucket can plant a cleartext object and its manifest
             * (then reindex it): under required encryption only what a known key opens is
             * trusted, and nothing is read */
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s is not encrypted, and BACKUP_ENCRYPTION=required refuses to "
                        "restore a cleartext backup: nothing was read or changed",
                        id);
            return;
        }
        snprintf(st->key_id, sizeof(st->key_id), "%s", PQgetvalue(res, k, 11));
        st->wrapped = xstrdup(PQgetvalue(res, k, 12));
        snprintf(st->origin_key_id, sizeof(st->origin_key_id), "%s", PQgetvalue(res, k, 13));
        st->replica_ok = strcmp(PQgetvalue(res, k, 14), "completed") == 0;
        if (st->reindexed)
            r->prunable = 0;
        else if (k == n - 1)
            r->snapshot = xstrdup(PQgetvalue(res, k, 15));
        if (strcmp(spec->from, "replica") == 0) {
            if (services_replica(jobrt_services(rt)) == NULL) {
                jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_CONFIG, "%s",
                            "from=replica, but no replica is configured (S3_REPLICA_BUCKET)");
                return;
            }
            st->from_replica = 1;
        }
        r->rows_total += strtoull(PQgetvalue(res, k, 8), NULL, 10);
    }
    job_set_rows_total(jobrt_job(rt), r->rows_total);
    log_info(job_log_id(jobrt_job(rt)), "restoring %s for user %s: %d backup%s, %" PRIu64 " rows",
             spec->backup_id, spec->user_id, n, n > 1 ? "s" : "", r->rows_total);
    r->ki = 0;
    next_key(rt, r);
}

/* The data keys of the encrypted steps, before anything is read or written: a key this worker
 * lacks is named now, and the database is not touched. */
static void next_key(JobRt *rt, Restore *r) {
    for (; r->ki < r->nsteps; r->ki++) {
        Step *st = &r->steps[r->ki];
        if (!st->encrypted)
            continue;
        const Keys *keys = services_jobconfig(jobrt_services(rt))->keys;
        /* the newest wrapping this worker has a key for: the record's, else the object's own
         * (a rekey to a key not yet given to every worker) */
        if (!keys_has(keys, st->key_id) && keys_has(keys, st->origin_key_id) &&
            !keys_is_kms(st->origin_key_id)) {
            log_info(job_log_id(jobrt_job(rt)),
                     "backup %s: key '%s' is not here; opening its own header's wrapping under "
                     "'%s'",
                     st->id, st->key_id, st->origin_key_id);
            st->header_key = 1;
            continue;
        }
        r->state = ST_KEYS;
        jobrt_datakey_open(rt, ST_KEYS, 0, st->key_id, st->wrapped, r->spec->user_id, st->id);
        return;
    }
    const JobSpec *spec = r->spec;
    Buf tables = BUF_INIT;
    for (int t = 0; t < spec->ntables; t++)
        buf_printf(&tables, "%s%s", t ? "," : "{", spec->tables[t]);
    if (spec->ntables)
        buf_puts(&tables, "}");
    const char *v[] = {spec->job_id, spec->user_id, spec->backup_id,
                       spec->requested_by[0] ? spec->requested_by : NULL,
                       spec->ntables ? tables.data : NULL};
    restore_query(rt, r, ST_HISTORY, 0,
                  "INSERT INTO restore_history (job_id, user_id, backup_id, requested_by, tables) "
                  "VALUES ($1, $2::uuid, $3, $4::uuid, $5::text[]) "
                  "ON CONFLICT (job_id) DO UPDATE SET attempts = restore_history.attempts + 1, "
                  "status = 'running', error = NULL, started_at = now(), finished_at = NULL",
                  5, v);
    buf_free(&tables);
}

static void load_chain(JobRt *rt, Restore *r) {
    const char *v[] = {r->spec->backup_id};
    restore_query(
        rt, r, ST_CHAIN, 0,
        "WITH RECURSIVE chain AS ("
        "  SELECT id, user_id, type, status, s3_key, checksum, compression, codecs,"
        "    base_backup_id, row_counts, size, recorded_by, key_id, wrapped_key, origin_key_id,"
        "    replica_status, snapshot, 0 AS depth"
        "  FROM backup_metadata"
        "  WHERE id = $1"
        "  UNION ALL"
        "  SELECT b.id, b.user_id, b.type, b.status, b.s3_key, b.checksum, b.compression,"
        "    b.codecs, b.base_backup_id, b.row_counts, b.size, b.recorded_by, b.key_id,"
        "    b.wrapped_key, b.origin_key_id, b.replica_status, b.snapshot, c.depth + 1"
        "  FROM backup_metadata b JOIN chain c ON b.id = c.base_backup_id WHERE c.depth < 1001)"
        " SELECT id, user_id::text, type, status, coalesce(s3_key, ''), coalesce(checksum, ''),"
        "  " BW_SQL_CODECS(
            "chain") ", coalesce(base_backup_id, ''),"
                     "  coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(row_counts)), 0),"
                     "  coalesce(size, 0), recorded_by, coalesce(key_id, ''),"
                     "  coalesce(wrapped_key, ''), coalesce(origin_key_id, key_id, ''),"
                     "  coalesce(replica_status, ''), coalesce(snapshot, '') FROM chain "
                     "ORDER BY depth DESC",
        1, v);
}

/* ---- the state machine ---- */

static void on_result(JobRt *rt, Restore *r, PGresult *res) {
    switch (r->state) {
    case ST_CHAIN:
        on_chain(rt, r, res);
        break;
    case ST_HISTORY:
        r->recorded_start = 1;
        /* one snapshot for the whole restore: the keys listed, the rows compared and the rows
         * written are of the same instant, and a row the application changes after it fails
         * the write (40001, retried) instead of being half overwritten (proto/README) */
        restore_query(rt, r, ST_BEGIN, JRT_BEGIN, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL);
        break;
    case ST_BEGIN: {
        const char *v[] = {r->spec->user_id};
        restore_query(rt, r, ST_USER, 0,
                      "SELECT set_config('backup.user_id', $1, true), "
                      "set_config('backup.restoring', 'on', true)",
                      1, v);
        break;
    }
    case ST_USER:
        restore_query(rt, r, ST_SCOPE, 0, scope_load_sql(), 0, NULL);
        break;
    case ST_SCOPE:
        on_scope(rt, r, res);
        break;
    case ST_PRUNE_GATE:
        restore_prune_gate(rt, r, res);
        break;
    case ST_PRUNE_KEYS:
        restore_prune_keys_done(rt, r);
        break;
    case ST_SAVEPOINT:
        restore_stage_read(rt, r);
        break;
    case ST_UNSTAGE:
        restore_stage_start(rt, r);
        break;
    case ST_STMT:
        restore_on_stmt(rt, r, res);
        break;
    case ST_NOTIFY:
        restore_stmts_done(rt, r);
        break;
    case ST_LOCK_BACK:
    case ST_LOCK_WAIT:
        restore_lock_next(rt, r);
        break;
    case ST_COMMIT:
        on_committed(rt, r);
        break;
    case ST_RECORD:
        jobrt_done(rt);
        break;
    default:
        break;
    }
}

static int restore_step(JobRt *rt, void *st, const JobEv *ev) {
    Restore *r = st;
    switch (ev->kind) {
    case JEV_START:
        r->rt = rt;
        r->spec = job_spec(jobrt_job(rt));
        job_set_backup_id(jobrt_job(rt), r->spec->backup_id);
        if (r->spec->user_id[0] == 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "No authenticated user");
            break;
        }
        if (!layout_backup_id_names_user(r->spec->backup_id, r->spec->user_id)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "forbidden: backup %s does not belong to user %s", r->spec->backup_id,
                        r->spec->user_id);
            break;
        }
        job_progress(jobrt_job(rt), "starting", 0, 0, 0);
        r->state = ST_ACQUIRE;
        jobrt_lease(rt, ST_ACQUIRE);
        break;
    case JEV_CONN:
        load_chain(rt, r);
        break;
    case JEV_RESULT:
        if (ev->tag == ST_STMT && ev->err)
            restore_on_stmt_err(rt, r, ev->err);
        else if (ev->tag == ST_STAGE)
            restore_stage_copied(rt, r, ev);
        else
            on_result(rt, r, ev->res);
        break;
    case JEV_COPY_WRITABLE:
        restore_stage_writable(rt, r);
        break;
    case JEV_ROW:
        return restore_prune_row(rt, r, ev);
    case JEV_ITEM:
        return restore_stage_item(rt, r, ev);
    case JEV_CHECKED:
        restore_stage_checked(rt, r, ev);
        break;
    case JEV_KEY:
        memcpy(r->steps[r->ki].dek, ev->key->dek, CRYPT_KEY_LEN);
        r->ki++;
        next_key(rt, r);
        break;
    case JEV_STORED:
        restore_stage_manifest(rt, r, ev);
        break;
    default:
        break;
    }
    return 0;
}

/* The history row says how it ended (a retry will run it again: 'running'). */
static int restore_record(JobRt *rt, void *st, int k) {
    Restore *r = st;
    if (k > 0 || !r->recorded_start || r->state == ST_RECORD)
        return 0;
    char ms[24];
    snprintf(ms, sizeof(ms), "%" PRIu64, jobrt_elapsed_ms(rt));
    const char *v[] = {r->spec->job_id, jobrt_final(rt) ? "failed" : "running", jobrt_err(rt)->msg,
                       ms};
    jobrt_record_query(rt,
                       "UPDATE restore_history SET status = $2, error = $3, duration_ms = $4, "
                       "finished_at = CASE WHEN $2 = 'failed' THEN now() END WHERE job_id = $1",
                       4, v);
    return 1;
}

static void restore_release(void *st) {
    Restore *r = st;
    restore_stage_free(r);
    restore_free_stmts(r);
    restore_prune_free(r);
    for (int i = 0; r->shape && r->scope && i < scope_count(r->scope); i++)
        pgcopy_row_free(r->shape[i]);
    free(r->shape);
    scope_free(r->scope);
    for (int i = 0; r->steps && i < r->nsteps; i++)
        free(r->steps[i].wrapped);
    crypt_wipe(r->steps, (size_t)r->nsteps * sizeof(Step));
    free(r->steps);
    free(r->selected);
    free(r->expected);
    free(r->restored);
    free(r->ins);
    free(r->upd);
    free(r->del);
}

static const JobRtOps ops = {sizeof(Restore), restore_step, restore_record, restore_release};

static void restore_run(Job *job) {
    jobrt_run(job, &ops);
}

static int restore_check(JobSpec *spec, Err *err) {
    if (jobspec_need_user(spec, err) != 0)
        return -1;
    if (spec->backup_id[0] == '\0')
        return jobspec_refuse(err, "missing field 'backup_id' (the backup to restore)");
    return 0;
}

const JobType job_type_restore = {
    .name = "restore",
    .fields = "user_id backup_id tables from dry_run",
    .user_lock = 1,
    .check = restore_check,
    .summary = "put a user's rows back as a backup holds them (change-only; dry_run previews)",
    .run = restore_run,
    .cancel = jobrt_cancel,
};
