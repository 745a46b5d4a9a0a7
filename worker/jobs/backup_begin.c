/*
 * backup_begin: a backup before its COPYs (see backup.c): the metadata row, a crashed run's
 * multipart uploads, then one pipeline for the status, the transaction, the snapshot and,
 * when this worker kept a scope, a guess of the counts; the scope read again when the
 * catalog's fingerprint is new.
 */
#include "backup_intern.h"

#include "log.h"
#include "scopecache.h"
#include "services.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- acceptance: the metadata row ---- */

void backup_record_row(JobRt *rt, Backup *b) {
    char ts[24];
    snprintf(ts, sizeof(ts), "%" PRIu64, wall_ms());
    char codecs[64];
    codec_list_csv(&b->codecs, codecs, sizeof(codecs));
    const char *v[] = {b->spec->user_id,
                       b->spec->mode,
                       ts,
                       b->spec->job_id,
                       codec_list_compression(&b->codecs),
                       codecs};
    /* the base is resolved once, when the row is created; a retry finds the row by job id (and
     * keeps the codecs it was created with) */
    backup_query(
        rt, b, ST_RECORD, 0,
        "WITH base AS ("
        "  SELECT id FROM backup_metadata"
        "  WHERE user_id = $1::uuid AND status = 'completed' AND snapshot IS NOT NULL"
        "    AND ($2 = 'incremental' OR type = 'full')"
        "  ORDER BY created_at DESC, id DESC LIMIT 1),"
        " kind AS (SELECT CASE WHEN $2 = 'full' OR NOT EXISTS (SELECT 1 FROM base) THEN 'full'"
        "  ELSE $2 END AS type)"
        " INSERT INTO backup_metadata AS m (id, user_id, type, requested_type, status,"
        "  base_backup_id, job_id, compression, codecs)"
        " SELECT CASE kind.type WHEN 'incremental' THEN 'incremental-' ELSE 'backup-' END"
        "  || $1 || '-' || $3, $1::uuid, kind.type, $2, 'pending',"
        "  CASE WHEN kind.type = 'full' THEN NULL ELSE (SELECT id FROM base) END, $4, $5,"
        "  string_to_array($6, ',')"
        " FROM kind"
        " ON CONFLICT (job_id) DO UPDATE SET job_id = EXCLUDED.job_id"
        " RETURNING m.id, m.user_id::text, m.type, m.status, coalesce(m.base_backup_id, ''),"
        "  coalesce((SELECT s.snapshot FROM backup_metadata s WHERE s.id = m.base_backup_id),"
        "  ''), coalesce(m.requested_type, m.type), " BW_SQL_CODECS("m") ", m.attempts",
        6, v);
}

static void set_running(JobRt *rt, Backup *b);

void backup_on_recorded(JobRt *rt, Backup *b, PGresult *res) {
    const JobSpec *spec = b->spec;
    if (PQntuples(res) != 1) {
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_PROTOCOL, "%s", "backup_metadata: no row recorded");
        return;
    }
    const char *id = PQgetvalue(res, 0, 0);
    if (strcmp(PQgetvalue(res, 0, 1), spec->user_id) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "job id %s already names a backup of another user", spec->job_id);
        return;
    }
    if (!jobspec_valid_backup_id(id, strlen(id))) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "backup_metadata holds a malformed id for job %s", spec->job_id);
        return;
    }
    Err e;
    if (codec_list_parse(PQgetvalue(res, 0, 7), &b->codecs, &e) != 0) {
        jobrt_fail(rt, &e);
        return;
    }
    if (codec_list_encrypted(&b->codecs) && !keys_enabled(b->cfg->keys)) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_CONFIG,
                    "backup %s was begun encrypted, and this worker has no encryption key "
                    "(BACKUP_ENCRYPTION_KEYS)",
                    id);
        return;
    }
    if (!codec_list_encrypted(&b->codecs) && keys_required(b->cfg->keys)) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_CONFIG,
                    "backup %s was begun in cleartext, and BACKUP_ENCRYPTION=required refuses to "
                    "write it: enqueue a new backup",
                    id);
        return;
    }
    snprintf(b->id, sizeof(b->id), "%s", id);
    snprintf(b->type, sizeof(b->type), "%s", PQgetvalue(res, 0, 2));
    const char *status = PQgetvalue(res, 0, 3);
    snprintf(b->base_id, sizeof(b->base_id), "%s", PQgetvalue(res, 0, 4));
    b->base_snapshot = xstrdup(PQgetvalue(res, 0, 5));
    snprintf(b->requested, sizeof(b->requested), "%s", PQgetvalue(res, 0, 6));
    job_set_backup_id(jobrt_job(rt), b->id);
    if (layout_backup_key(b->key, sizeof(b->key), spec->user_id, b->id,
                          strcmp(b->type, "incremental") == 0, &b->codecs) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: key too long", b->id);
        return;
    }
    if (strcmp(b->type, b->requested) != 0) {
        char note[160];
        snprintf(note, sizeof(note),
                 "%s backup requested, but there is no completed %s to build on: made a full one",
                 b->requested,
                 strcmp(b->requested, "differential") == 0 ? "full backup" : "backup");
        job_set_note(jobrt_job(rt), note);
    }
    if (strcmp(status, "completed") == 0) {
        log_info(job_log_id(jobrt_job(rt)), "backup %s was already completed by an earlier run",
                 b->id);
        job_set_note(jobrt_job(rt), "already completed by an earlier run");
        jobrt_done(rt);
        return;
    }
    log_info(job_log_id(jobrt_job(rt)), "backup %s (%s%s%s) of user %s to %s", b->id, b->type,
             b->base_id[0] ? ", base " : "", b->base_id, spec->user_id, b->key);
    if (strcmp(PQgetvalue(res, 0, 8), "0") == 0) {
        /* no run of this backup ever started uploading: nothing can be left under its key */
        set_running(rt, b);
        return;
    }
    b->state = ST_UPLOADS;
    jobrt_list_pending(rt, ST_UPLOADS, JRT_SOFT, b->key);
}

/* ---- a crashed run's multipart upload under our key ---- */

int backup_on_stale_page(Backup *b, const JobEv *ev) {
    jobrt_pending_of(ev, b->key, &b->stale, &b->nstale);
    return 0;
}

/* The snapshot statement: its settings, the start time, and the catalog's fingerprint. */
static void snapshot_sql(Buf *sql) {
    buf_printf(sql,
               "SELECT pg_current_snapshot()::text, set_config('backup.user_id', $1, true), "
               "set_config('backup.base_snapshot', $2, true), "
               "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
               /* the dates and times the worker turns into JSON are read in ISO */
               "set_config('DateStyle', 'ISO', true), "
               /* whether the scope read last still holds */
               "%s",
               scope_fingerprint_sql());
}

/* After a BEGIN sent again (a failed guess): the snapshot statement alone. */
void backup_snapshot(JobRt *rt, Backup *b) {
    const char *v[] = {b->spec->user_id, b->base_snapshot ? b->base_snapshot : ""};
    Buf sql = BUF_INIT;
    snapshot_sql(&sql);
    backup_query(rt, b, ST_SNAPSHOT, 0, sql.data, 2, v);
    buf_free(&sql);
}

/* Everything before the COPYs in one round trip (see backup.c's top). */
static void set_running(JobRt *rt, Backup *b) {
    char ver[8];
    snprintf(ver, sizeof(ver), "%d", BFILE_VERSION);
    const char *v[] = {b->id, b->key, ver};
    const char *sv[] = {b->spec->user_id, b->base_snapshot ? b->base_snapshot : ""};
    Buf snap = BUF_INIT, count = BUF_INIT;
    snapshot_sql(&snap);
    PgStmt st[4] = {
        {"UPDATE backup_metadata SET status = 'running', s3_key = $2, started_at = now(), "
         "attempts = attempts + 1, format_version = $3 WHERE id = $1",
         3, v, 1},
        {"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, 0},
        {snap.data, 2, sv, 0},
        {NULL, 0, NULL, 0},
    };
    int n = 3;
    b->scope = scopecache_latest(services_scope_cache(jobrt_services(rt)), b->guess_fp,
                                 sizeof(b->guess_fp));
    if (b->scope) {
        scope_count_sql(b->scope, b->base_id[0] != 0, &count);
        st[n++] = (PgStmt){count.data, 0, NULL, 0};
    }
    b->state = ST_RUNNING;
    backup_progress(rt, b, "snapshot");
    /* soft: a guessed count that fails (the catalog changed under it) is read again */
    jobrt_pipeline(rt, ST_RUNNING, JRT_SOFT, st, n);
    buf_free(&snap);
    buf_free(&count);
}

static int res_ok(PGresult *const *r, size_t n, size_t i) {
    return i < n && r[i] &&
           (PQresultStatus(r[i]) == PGRES_COMMAND_OK || PQresultStatus(r[i]) == PGRES_TUPLES_OK);
}

void backup_on_running(JobRt *rt, Backup *b, const JobEv *ev) {
    int guessed = b->scope != NULL;
    if (ev->err) {
        /* only a failed guess is ours to mend: its transaction is rolled back and begun again */
        if (!guessed || !res_ok(ev->results, ev->n, 0) || !res_ok(ev->results, ev->n, 1) ||
            !res_ok(ev->results, ev->n, 2)) {
            jobrt_fail(rt, ev->err);
            return;
        }
        log_info(job_log_id(jobrt_job(rt)), "the kept scope's counts failed (%s): reading it again",
                 ev->err->msg);
        scope_free(b->scope);
        b->scope = NULL;
        backup_query(rt, b, ST_REBEGIN, JRT_END, "ROLLBACK", 0, NULL);
        return;
    }
    backup_on_snapshot(rt, b, ev->results[2], guessed ? ev->results[3] : NULL);
}

void backup_abort_next_stale(JobRt *rt, Backup *b, const JobEv *ev) {
    const char *log = job_log_id(jobrt_job(rt));
    if (ev->kind == JEV_LISTED && ev->err && strstr(ev->err->msg, "NotImplemented"))
        log_debug(log, "cannot list stale uploads: %s", ev->err->msg); /* s3rver cannot */
    else if (ev->kind == JEV_LISTED && ev->err) /* not fatal: cleanup aborts old uploads too */
        log_warn(log, "could not list stale uploads: %s", ev->err->msg);
    else if (ev->kind == JEV_STORED && ev->err)
        log_warn(log, "could not abort a stale upload of %s: %s", b->key, ev->err->msg);
    if (b->si < b->nstale) {
        b->state = ST_ABORT_STALE;
        jobrt_abort_pending(rt, ST_ABORT_STALE, JRT_SOFT, b->key, b->stale[b->si++]);
        return;
    }
    if (b->nstale)
        log_info(log, "aborted %d multipart upload(s) a previous run left", b->nstale);
    set_running(rt, b);
}

/* ---- reading: snapshot, scope, counts ---- */

static int prepare_scope(JobRt *rt, Backup *b);
static void use_scope(JobRt *rt, Backup *b);

/* The scope: the one this worker read last when the catalog's fingerprint, read with the
 * snapshot, is the same (with its counts when they were guessed in the same pipeline: counts);
 * else read from the catalog (on_scope). */
void backup_on_snapshot(JobRt *rt, Backup *b, PGresult *res, PGresult *counts) {
    b->snapshot = xstrdup(PQgetvalue(res, 0, 0));
    snprintf(b->created_at, sizeof(b->created_at), "%s", PQgetvalue(res, 0, 3));
    snprintf(b->scope_fp, sizeof(b->scope_fp), "%s", PQgetvalue(res, 0, 5));
    ScopeCache *cache = services_scope_cache(jobrt_services(rt));
    if (b->scope && counts && strcmp(b->scope_fp, b->guess_fp) == 0) {
        scopecache_hit(cache);
        if (prepare_scope(rt, b) == 0)
            backup_on_counted(rt, b, counts);
        return;
    }
    scope_free(b->scope); /* a guess the catalog changed under: dropped */
    b->scope = scopecache_get(cache, b->scope_fp);
    if (b->scope) {
        use_scope(rt, b);
        return;
    }
    backup_query(rt, b, ST_SCOPE, 0, scope_load_sql(), 0, NULL);
}

void backup_on_scope(JobRt *rt, Backup *b, PGresult *res) {
    Err e;
    b->scope = scope_from_result(res, &e);
    if (b->scope == NULL) {
        jobrt_fail(rt, &e);
        return;
    }
    scopecache_put(services_scope_cache(jobrt_services(rt)), b->scope_fp, res);
    use_scope(rt, b);
}

/* Counters for the scope's tables; an incremental needs every table tracked. -1: failed. */
static int prepare_scope(JobRt *rt, Backup *b) {
    int n = scope_count(b->scope);
    b->counts = xcalloc((size_t)n, sizeof(uint64_t));
    b->deleted = xcalloc((size_t)n, sizeof(uint64_t));
    b->expected = xcalloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; b->base_id[0] && i < n; i++)
        if (!scope_tracked(b->scope, i)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_CONFIG,
                        "table %s has no change tracking (backup_xid): run SELECT "
                        "backup_track_all()",
                        scope_table(b->scope, i));
            return -1;
        }
    return 0;
}

static void use_scope(JobRt *rt, Backup *b) {
    if (prepare_scope(rt, b) != 0)
        return;
    Buf sql = BUF_INIT;
    scope_count_sql(b->scope, b->base_id[0] != 0, &sql);
    backup_query(rt, b, ST_COUNT, 0, sql.data, 0, NULL);
    buf_free(&sql);
}

void backup_on_counted(JobRt *rt, Backup *b, PGresult *res) {
    int n = scope_count(b->scope);
    for (int i = 0; i < n && i < PQnfields(res); i++) {
        b->expected[i] = strtoull(PQgetvalue(res, 0, i), NULL, 10);
        b->rows_total += b->expected[i];
    }
    job_set_rows_total(jobrt_job(rt), b->rows_total);
    if (b->rows_total == 0 && b->base_id[0] == 0) { /* a typo'd id must not "succeed" */
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "user %s has no rows in any table of the backup scope (no such user?)",
                    b->spec->user_id);
        return;
    }
    /* a fresh data key for this object only, then the write stream */
    if (codec_list_encrypted(&b->codecs)) {
        b->state = ST_DATAKEY;
        jobrt_datakey_new(rt, ST_DATAKEY, 0, b->spec->user_id, b->id);
        return;
    }
    backup_open_stream(rt, b, NULL);
}
