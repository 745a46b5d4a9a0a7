/*
 * backup: one user's rows, read in one snapshot, streamed into S3.
 *
 *   ACQUIRE   one pooled connection for the whole job
 *   RECORD    backup_metadata row for the job id: created `pending` (resolving the base of an
 *             incremental or differential once), or found again on a retry (same id, same key)
 *   UPLOADS   abort multipart uploads a crashed run left under the key (a retry only: the
 *             row's attempts say whether a run ever got that far)
 *   RUNNING   one pipeline (one round trip): status `running` (committed on its own); BEGIN
 *             REPEATABLE READ READ ONLY; pg_current_snapshot(), settings user id and base
 *             snapshot bound as parameters, the catalog's fingerprint; and, when this worker
 *             kept a scope, the row counts under it (a guess, used if the fingerprint matches)
 *   SCOPE     backup_scope and the catalog's columns, checked, when the fingerprint is new;
 *             then the row counts for the progress
 *   CAPWAIT   BACKUP_TRACKING=wal, incremental: wait until the capture has recorded every
 *             change up to the snapshot's WAL position (capture_state, polled through the pool:
 *             the snapshot would not see it); SEGLIST the user's segments, SEGGET each one
 *             holding a transaction of the incremental, read and checked (segkeys.h); KEYS
 *             the keys they name as settings, which the COPYs below select by
 *             (SCOPE_ROWS_KEYS): no scan, no trigger
 *   DATAKEY   encrypted: a fresh data key, wrapped under the current key (keyring or KMS)
 *   COPY i    each table's rows (COPY TO STDOUT, one JSON object per line) -> document
 *             writer -> filter pipe (size, gzip, SHA-256 on the thread pool) -> multipart upload
 *   TOMB i    incremental and differential: the keys deleted since the base
 *   COMMIT    the snapshot is released while the last parts go up
 *   MANIFEST  <key>.manifest.json once the object is complete
 *   COMPLETE  status `completed` with sizes, checksum, counts; a notification row (one
 *             pipeline)
 *
 * Backpressure: when S3 has every part in flight the upload blocks the pipe,
 * the pipe fills, and the COPY stream pauses; nothing piles up in memory.
 * Any failure tears down in order: the statement in flight ends (cancelled
 * if need be), the upload is aborted, the transaction rolled back, and the
 * row says `failed` (last attempt) or `pending` (a retry will follow).
 */
#include "jobs/jobs.h"
#include "aws/sigv4.h"
#include "capture/segfile.h"
#include "capture/segkeys.h"
#include "format/bfile.h"
#include "base/buf.h"
#include "io/codec.h"
#include "io/crypt.h"
#include "jobs/jobconfig.h"
#include "jobs/jobrt.h"
#include "format/layout.h"
#include "base/log.h"
#include "format/manifest.h"
#include "scope/scope.h"
#include "scope/scopecache.h"
#include "services.h"
#include "jobs/jobspec.h"
#include "keys/keys.h"
#include "pg/pgjson.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>

typedef enum {
    ST_ACQUIRE,
    ST_RECORD,
    ST_UPLOADS,
    ST_ABORT_STALE,
    ST_RUNNING,
    ST_REBEGIN,
    ST_BEGIN,
    ST_SNAPSHOT,
    ST_SCOPE,
    ST_COUNT,
    ST_CAPWAIT,
    ST_CAPSLEEP,
    ST_SEGLIST,
    ST_SEGGET,
    ST_KEYS,
    ST_FALLBACK,
    ST_UNCLAIM,
    ST_DATAKEY,
    ST_COPY,
    ST_TOMB,
    ST_COMMIT,
    ST_MANIFEST,
    ST_COMPLETE,
} State;

typedef struct {
    State state;
    const JobSpec *spec;
    const JobConfig *cfg;
    /* what this backup is */
    char id[JOBSPEC_ID_MAX + 1], type[16], requested[16], base_id[JOBSPEC_ID_MAX + 1];
    char created_at[40], key[LAYOUT_KEY_MAX];
    CodecList codecs;
    char key_id[CRYPT_ID_MAX + 1]; /* encrypted: the key that wraps the data key */
    char *wrapped;
    char *snapshot, *base_snapshot;
    /* reading */
    Scope *scope;
    char scope_fp[40]; /* the catalog's fingerprint in this snapshot (scopecache.h) */
    char guess_fp[40]; /* the fingerprint of the scope the pipeline's counts were a guess of */
    PgJsonRow *rowj;   /* table ti's rows: COPY text -> JSON */
    char *big;         /* a big row kept from libpq, written in parts (big_cur) */
    size_t big_len;
    PgJsonCursor big_cur;
    int ti;
    uint64_t *counts, *deleted, *expected;
    uint64_t rows_total, rows_done;
    BfileWriter w;
    Buf piece;
    /* writing */
    StorageWrite *out;
    int copy_done, stored, committed;
    StorageWritten written;
    /* a crashed run's multipart uploads under our key */
    char **stale;
    int nstale, si;
    /* wal: an incremental from the change segments */
    int wal;
    char wal_lsn[24];     /* the snapshot's WAL insert position */
    char snapshot_at[40]; /* and a time after it was taken */
    uint64_t wait_from_ms;
    SegKeys *sk;
    char full_why[300]; /* the incremental became a full backup: why */
    PGresult *segs;     /* the user's segments: id, key, checksum, size, codecs, xids */
    int seg_i, seg_read;
} Backup;

/* How long an incremental waits for the capture to reach its snapshot. */
#define CAPWAIT_MIN_MS  30000
#define CAPWAIT_POLL_MS 200

/* backup.c */
static void backup_query(JobRt *rt, Backup *b, State next, int flags, const char *sql, int n,
                         const char *const *v);
static void backup_progress(JobRt *rt, Backup *b, const char *stage);
/* The write stream (key: the data key of an encrypted object), then the tables. */
static void backup_open_stream(JobRt *rt, Backup *b, const JobKey *key);

/* before the COPYs */
static void backup_record_row(JobRt *rt, Backup *b);
static void backup_on_recorded(JobRt *rt, Backup *b, PGresult *res);
static int backup_on_stale_page(Backup *b, const JobEv *ev);
static void backup_abort_next_stale(JobRt *rt, Backup *b, const JobEv *ev);
static void backup_on_running(JobRt *rt, Backup *b, const JobEv *ev);
static void backup_snapshot(JobRt *rt, Backup *b); /* after BEGIN (again) */
/* counts: the row counts guessed from the kept scope (b->scope) in the same pipeline, or NULL */
static void backup_on_snapshot(JobRt *rt, Backup *b, PGresult *res, PGresult *counts);
static void backup_on_scope(JobRt *rt, Backup *b, PGresult *res);
static void backup_on_counted(JobRt *rt, Backup *b, PGresult *res);
/* wal: the capture's position, the segments, the keys */
static void count_rows(JobRt *rt, Backup *b);
static void capture_wait(JobRt *rt, Backup *b);
static void on_capture_state(JobRt *rt, Backup *b, PGresult *res);
static void next_segment(JobRt *rt, Backup *b);
static void on_segment(JobRt *rt, Backup *b, const JobEv *ev);
static void unclaim(JobRt *rt, Backup *b);

/* A row this large (twice the pipe's 1 MiB chunk) is kept from libpq and its JSON written in
 * parts as the stream takes them: never a second whole copy of a 50 MB value. */
#define BIG_ROW (2u << 20)
/* Rows are sent on to the pipe in pieces of about this size; a big row in parts of BIG_PART. */
#define PIECE_MAX (64u << 10)
#define BIG_PART  (1u << 20)

static void iso_now(char *out, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
}

static void backup_progress(JobRt *rt, Backup *b, const char *stage) {
    /* reading is 95% of the way; the last 5% are the tail of the upload and the records */
    int pct = b->rows_total ? (int)(b->rows_done * 95 / b->rows_total) : 0;
    if (b->state >= ST_COMMIT)
        pct = 95 + (b->state >= ST_MANIFEST) * 3;
    /* bytes stored so far while the object is written (proto/README), its size once stored */
    uint64_t bytes = b->written.size ? b->written.size : b->out ? storage_write_stored(b->out) : 0;
    job_progress(jobrt_job(rt), stage, pct, b->rows_done, bytes);
}

/* Which rows the statements select (SCOPE_ROWS_*). */
static int rows_mode(const Backup *b) {
    return !b->base_id[0] ? SCOPE_ROWS_ALL : b->wal ? SCOPE_ROWS_KEYS : SCOPE_ROWS_SINCE_BASE;
}

static void backup_query(JobRt *rt, Backup *b, State next, int flags, const char *sql, int n,
                         const char *const *v) {
    b->state = next;
    jobrt_query(rt, next, flags, sql, n, v);
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
    h->codecs = &b->codecs;
}

/* Write a piece of the document. 0 when the producer should pause. */
static int emit(Backup *b) {
    int r = storage_write(b->out, b->piece.data, b->piece.len);
    buf_reset(&b->piece);
    return r;
}

static void next_table(JobRt *rt, Backup *b);

static void start_copy(JobRt *rt, Backup *b, State state) {
    b->state = state;
    Buf sql = BUF_INIT;
    const char *table = scope_table(b->scope, b->ti);
    if (state == ST_COPY) {
        scope_copy_sql(b->scope, b->ti, rows_mode(b), &sql);
        pgjson_row_free(b->rowj);
        b->rowj = scope_row_json(b->scope, b->ti);
    } else
        scope_tombstone_sql(b->scope, b->ti, rows_mode(b), &sql);
    bfile_list_begin(&b->w, &b->piece, table);
    emit(b);
    backup_progress(rt, b, state == ST_COPY ? table : "deletions");
    jobrt_copy_out(rt, state, sql.data);
    buf_free(&sql);
}

/* The write stream (key: the data key of an encrypted object), then the tables in restore
 * order. */
static void backup_open_stream(JobRt *rt, Backup *b, const JobKey *key) {
    CodecOptions co = {b->cfg->backup_compression_level, NULL};
    CryptParams cp;
    memset(&cp, 0, sizeof(cp));
    Buf codecs = BUF_INIT;
    if (key) {
        snprintf(b->key_id, sizeof(b->key_id), "%s", key->key_id);
        b->wrapped = xstrdup(key->wrapped);
        codec_list_json(&b->codecs, &codecs);
        cp = (CryptParams){.user_id = b->spec->user_id,
                           .backup_id = b->id,
                           .codecs_json = codecs.data,
                           .key_id = b->key_id,
                           .wrapped_key = b->wrapped,
                           .have_dek = 1};
        memcpy(cp.dek, key->dek, CRYPT_KEY_LEN);
        co.crypt = &cp;
    }
    FilterChain *enc = codec_encoder(&b->codecs, &co);
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&codecs);
    b->out = jobrt_write(rt, ST_COPY, b->key, codec_content_type(&b->codecs), enc);
    if (b->out == NULL) /* failing already */
        return;
    BfileHeader h;
    header(b, &h);
    bfile_begin(&b->w, &b->piece, &h);
    emit(b);
    b->ti = 0;
    b->state = ST_COPY;
    next_table(rt, b);
}

/* The piece sent on once it holds PIECE_MAX. Returns PG_COPY_*. */
static int flush_full(Backup *b) {
    if (b->piece.len < PIECE_MAX)
        return PG_COPY_CONTINUE;
    return emit(b) == 1 ? PG_COPY_CONTINUE : PG_COPY_PAUSE;
}

/* Write the kept big row on in parts while the stream takes them. 1 when it is written (*w:
 * the stream's last answer), 0 to wait for the stream, -1 when the job failed. */
static int pump_big(JobRt *rt, Backup *b, int *w) {
    for (;;) {
        Err e;
        int done = pgjson_row_write_part(b->rowj, b->big, b->big_len, &b->big_cur, &b->piece,
                                         BIG_PART, &e);
        if (done < 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_PROTOCOL, "table %s: %s",
                        scope_table(b->scope, b->ti), e.msg);
            return -1;
        }
        *w = emit(b);
        if (*w < 0)
            return -1;
        if (done)
            return 1;
        if (*w == 0)
            return 0;
    }
}

/* A table's row: its COPY text written as row_to_json's JSON after the separator. Rows gather
 * in the piece, sent on in PIECE_MAX batches (a pipe write per row cost more than the JSON). A
 * big row is kept from libpq (PG_COPY_KEEP) and written in parts as the stream takes them, so
 * its JSON is never held whole beside it. Returns PG_COPY_*. */
static int put_row(JobRt *rt, Backup *b, const char *buf, size_t len) {
    bfile_item(&b->w, &b->piece, "", 0);
    if (len >= BIG_ROW) {
        b->big = (char *)buf;
        b->big_len = len;
        b->big_cur = (PgJsonCursor)PGJSON_CURSOR_INIT;
        int w = 1, r = pump_big(rt, b, &w);
        if (r == 0)
            return PG_COPY_KEEP; /* ours now: freed once written */
        b->big = NULL;
        return r == 1 && w == 1 ? PG_COPY_CONTINUE : PG_COPY_PAUSE;
    }
    Err e;
    if (pgjson_row_write(b->rowj, buf, len, &b->piece, &e) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_PROTOCOL, "table %s: %s",
                    scope_table(b->scope, b->ti), e.msg);
        return PG_COPY_PAUSE;
    }
    return flush_full(b);
}

/* The stream takes more: the rest of a big row first, then the COPY's next rows. */
static void on_writable(JobRt *rt, Backup *b) {
    if (b->big) {
        int w = 1, r = pump_big(rt, b, &w);
        if (r == 0)
            return;
        pg_copy_free(b->big);
        b->big = NULL;
        if (r < 0 || w != 1) /* failed, or the stream is full again: its next call resumes */
            return;
    }
    jobrt_copy_resume(rt);
}

/* One COPY row: a table's (put_row), or a deleted key, JSON already. Returns PG_COPY_*: pausing
 * when the stream is full, or failed (the teardown then drains the COPY). */
static int on_row(JobRt *rt, Backup *b, const char *buf, size_t len) {
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (b->state == ST_COPY) {
        b->counts[b->ti]++;
        b->rows_done++;
        if ((b->rows_done & 1023) == 0)
            backup_progress(rt, b, scope_table(b->scope, b->ti));
        return put_row(rt, b, buf, len);
    }
    bfile_item(&b->w, &b->piece, buf, len);
    b->deleted[b->ti]++;
    return flush_full(b);
}

static void next_table(JobRt *rt, Backup *b) {
    int n = scope_count(b->scope);
    if (b->state == ST_COPY && b->ti < n) {
        start_copy(rt, b, ST_COPY);
        return;
    }
    if (b->state == ST_COPY && b->base_id[0]) { /* deletions since the base */
        bfile_deleted_begin(&b->w, &b->piece);
        emit(b);
        b->ti = 0;
        start_copy(rt, b, ST_TOMB);
        return;
    }
    if (b->state == ST_TOMB && b->ti < n) {
        start_copy(rt, b, ST_TOMB);
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
    storage_write_finish(b->out);
    backup_query(rt, b, ST_COMMIT, JRT_END, "COMMIT", 0, NULL);
}

/* ---- the end of a success: manifest, record, notification ---- */

/* Once the snapshot is released and the object stored. */
static void maybe_manifest(JobRt *rt, Backup *b) {
    if (!b->stored || !b->committed || b->state >= ST_MANIFEST)
        return;
    b->state = ST_MANIFEST;
    backup_progress(rt, b, "finalizing");
    BfileHeader h;
    header(b, &h);
    Buf rows = BUF_INIT, del = BUF_INIT, man = BUF_INIT;
    counts_json(b, b->counts, &rows);
    counts_json(b, b->deleted, &del);
    char fin[40], key[LAYOUT_KEY_MAX + 16];
    iso_now(fin, sizeof(fin));
    manifest_write(&man, &h, b->key, rows.data, del.data, b->written.sha256, b->written.size,
                   b->written.raw_size, fin, b->wrapped ? b->key_id : NULL, b->wrapped,
                   b->wrapped ? b->key_id : NULL);
    layout_manifest_key(key, sizeof(key), b->key);
    jobrt_put(rt, ST_MANIFEST, 0, key, man.data, man.len, "application/json");
    buf_free(&rows);
    buf_free(&del);
    buf_free(&man);
}

/* The record says completed and, in the same round trip (its own transaction after it), the
 * user's notification row is written. */
static void complete(JobRt *rt, Backup *b) {
    Buf rows = BUF_INIT;
    counts_json(b, b->counts, &rows);
    char size[24], raw[24], ms[24], ver[8];
    snprintf(size, sizeof(size), "%" PRIu64, b->written.size);
    snprintf(raw, sizeof(raw), "%" PRIu64, b->written.raw_size);
    snprintf(ms, sizeof(ms), "%" PRIu64, jobrt_elapsed_ms(rt));
    snprintf(ver, sizeof(ver), "%d", BFILE_VERSION);
    const char *v[] = {b->id,
                       size,
                       raw,
                       b->written.sha256,
                       rows.data,
                       ms,
                       b->snapshot,
                       ver,
                       b->wrapped ? b->key_id : NULL,
                       b->wrapped,
                       services_replica(jobrt_services(rt)) ? "pending" : NULL,
                       b->snapshot_at,
                       b->wal_lsn};
    const char *nv[] = {b->spec->user_id, b->id, b->type, size};
    PgStmt st[] = {
        {"UPDATE backup_metadata SET status = 'completed', size = $2, uncompressed_size = $3, "
         "checksum = $4, row_counts = $5::jsonb, duration_ms = $6, snapshot = $7, "
         "format_version = $8, key_id = $9, wrapped_key = $10, origin_key_id = $9, "
         "replica_status = $11, completed_at = now(), error = NULL, "
         "snapshot_at = $12::timestamptz, snapshot_lsn = $13::pg_lsn WHERE id = $1",
         13, v, 1, 1},
        {"INSERT INTO notifications (user_id, type, title, body, data) "
         "SELECT $1::uuid, 'backup_completed', 'Backup completed', "
         "format('Your %s backup is ready (%s).', $3::text, pg_size_pretty($4::bigint)), "
         "jsonb_build_object('backup_id', $2::text, 'type', $3::text, 'size', $4::bigint) "
         "WHERE EXISTS (SELECT 1 FROM profiles WHERE id = $1::uuid)",
         4, nv, 1, 0},
    };
    b->state = ST_COMPLETE;
    jobrt_pipeline(rt, ST_COMPLETE, 0, st, b->cfg->backup_notify ? 2 : 1);
    buf_free(&rows);
}

static void on_completed(JobRt *rt, Backup *b) {
    log_info(job_log_id(jobrt_job(rt)),
             "backup %s completed: %" PRIu64 " rows, %" PRIu64 " bytes stored (%" PRIu64
             " raw), sha256 %s; codecs ran %" PRIu64 " ms off the loop, the rows waited %" PRIu64
             " ms for them, the store held them back %" PRIu64 " ms",
             b->id, b->rows_done, b->written.size, b->written.raw_size, b->written.sha256,
             b->written.codec_ms, b->written.wait_ms, b->written.store_held_ms);
    job_progress(jobrt_job(rt), "done", 100, b->rows_done, b->written.size);
    if (services_replica(jobrt_services(rt))) { /* the copy follows on its own (replicate.c) */
        char jid[JOBSPEC_ID_MAX + 16];
        snprintf(jid, sizeof(jid), "replicate-%s", b->id);
        const char *fv[] = {"job_id", jid, "type", "replicate", "backup_id", b->id};
        job_enqueue(jobrt_job(rt), fv, 6);
    }
    jobrt_done(rt);
}

/* ---- the state machine ---- */

static void on_result(JobRt *rt, Backup *b, PGresult *res) {
    switch (b->state) {
    case ST_RECORD:
        backup_on_recorded(rt, b, res);
        break;
    case ST_REBEGIN:
        backup_query(rt, b, ST_BEGIN, JRT_BEGIN, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                     0, NULL);
        break;
    case ST_BEGIN:
        backup_snapshot(rt, b);
        break;
    case ST_SNAPSHOT:
        backup_on_snapshot(rt, b, res, NULL);
        break;
    case ST_SCOPE:
        backup_on_scope(rt, b, res);
        break;
    case ST_COUNT:
        backup_on_counted(rt, b, res);
        break;
    case ST_CAPWAIT:
        on_capture_state(rt, b, res);
        break;
    case ST_SEGLIST:
        b->segs = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
        b->seg_i = 0;
        next_segment(rt, b);
        break;
    case ST_KEYS:
        count_rows(rt, b);
        break;
    case ST_FALLBACK:
        unclaim(rt, b);
        break;
    case ST_UNCLAIM:
        backup_record_row(rt, b);
        break;
    case ST_COPY:
    case ST_TOMB: /* a table's COPY ended */
        bfile_list_end(&b->w, &b->piece);
        emit(b);
        b->ti++;
        next_table(rt, b);
        break;
    case ST_COMMIT:
        b->committed = 1;
        backup_progress(rt, b, "uploading");
        maybe_manifest(rt, b);
        break;
    case ST_COMPLETE:
        on_completed(rt, b);
        break;
    default:
        break;
    }
}

static int backup_step(JobRt *rt, void *st, const JobEv *ev) {
    Backup *b = st;
    switch (ev->kind) {
    case JEV_START:
        b->spec = job_spec(jobrt_job(rt));
        b->cfg = services_jobconfig(jobrt_services(rt));
        if (b->spec->user_id[0] == 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "No authenticated user");
            break;
        }
        Err ce;
        char codecs[64];
        /* encryption is the last codec, whenever a key is set */
        snprintf(codecs, sizeof(codecs), "%s%s%s", b->cfg->backup_codecs,
                 b->cfg->backup_codecs[0] && keys_enabled(b->cfg->keys) ? "," : "",
                 keys_enabled(b->cfg->keys) ? CRYPT_CODEC : "");
        if (codec_list_parse(codecs, &b->codecs, &ce) != 0) {
            jobrt_fail(rt, &ce);
            break;
        }
        job_progress(jobrt_job(rt), "starting", 0, 0, 0);
        b->state = ST_ACQUIRE;
        jobrt_lease(rt, ST_ACQUIRE);
        break;
    case JEV_CONN:
        backup_record_row(rt, b);
        break;
    case JEV_RESULT:
        if (b->state == ST_RUNNING)
            backup_on_running(rt, b, ev);
        else
            on_result(rt, b, ev->res);
        break;
    case JEV_ROW:
        return on_row(rt, b, ev->buf, ev->len);
    case JEV_WRITABLE:
        on_writable(rt, b);
        break;
    case JEV_WRITTEN:
        b->written = *ev->written;
        b->stored = 1;
        maybe_manifest(rt, b);
        break;
    case JEV_KEY:
        backup_open_stream(rt, b, ev->key);
        break;
    case JEV_PAGE:
        return backup_on_stale_page(b, ev);
    case JEV_LISTED:
        backup_abort_next_stale(rt, b, ev);
        break;
    case JEV_TIMER:
        capture_wait(rt, b);
        break;
    case JEV_SEGMENT:
        on_segment(rt, b, ev);
        break;
    case JEV_STORED:
        if (b->state == ST_ABORT_STALE)
            backup_abort_next_stale(rt, b, ev);
        else /* the manifest is stored */
            complete(rt, b);
        break;
    default:
        break;
    }
    return 0;
}

/* The failure recorded on the row, and (last attempt) told to the user. */
static int backup_record(JobRt *rt, void *st, int k) {
    Backup *b = st;
    int final = jobrt_final(rt);
    const char *msg = jobrt_err(rt)->msg;
    if (!b->id[0]) /* no row yet: only the notification */
        k++;
    if (k == 0) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%" PRIu64, jobrt_elapsed_ms(rt));
        const char *v[] = {b->id, final ? "failed" : "pending", msg, ms};
        jobrt_record_query(rt,
                           "UPDATE backup_metadata SET status = $2, error = $3, duration_ms = $4 "
                           "WHERE id = $1 AND status <> 'completed'",
                           4, v);
        return 1;
    }
    if (k == 1 && final && b->cfg && b->cfg->backup_notify && b->spec->user_id[0]) {
        const char *v[] = {b->spec->user_id, b->id[0] ? b->id : NULL, msg};
        jobrt_record_query(rt,
                           "INSERT INTO notifications (user_id, type, title, body, data) "
                           "SELECT $1::uuid, 'backup_failed', 'Backup failed', $3, "
                           "jsonb_build_object('backup_id', $2::text) "
                           "WHERE EXISTS (SELECT 1 FROM profiles WHERE id = $1::uuid)",
                           3, v);
        return 1;
    }
    return 0;
}

static void backup_release(void *st) {
    Backup *b = st;
    scope_free(b->scope);
    pgjson_row_free(b->rowj);
    if (b->big)
        pg_copy_free(b->big);
    free(b->counts);
    free(b->deleted);
    free(b->expected);
    free(b->snapshot);
    free(b->base_snapshot);
    free(b->wrapped);
    buf_free(&b->piece);
    segkeys_free(b->sk);
    PQclear(b->segs);
    for (int i = 0; i < b->nstale; i++)
        free(b->stale[i]);
    free(b->stale);
}

static const JobRtOps ops = {sizeof(Backup), backup_step, backup_record, backup_release};

static void backup_run(Job *job) {
    jobrt_run(job, &ops);
}

static int backup_check(JobSpec *spec, Err *err) {
    if (jobspec_need_user(spec, err) != 0)
        return -1;
    if (spec->mode[0] == '\0')
        snprintf(spec->mode, sizeof(spec->mode), "full");
    return 0;
}

const JobType job_type_backup = {
    .name = "backup",
    .fields = "user_id mode",
    .user_lock = 1,
    .check = backup_check,
    .summary = "back up a user's rows (mode full, incremental or differential; default full)",
    .run = backup_run,
    .cancel = jobrt_cancel,
};

/* ---- before the COPYs: the metadata row, a crashed run's
 * multipart uploads, then one pipeline for the status, the transaction, the snapshot and,
 * when this worker kept a scope, a guess of the counts; the scope read again when the
 * catalog's fingerprint is new.
 */

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- acceptance: the metadata row ---- */

static void backup_record_row(JobRt *rt, Backup *b) {
    char ts[24];
    snprintf(ts, sizeof(ts), "%" PRIu64, wall_ms());
    char codecs[64];
    codec_list_csv(&b->codecs, codecs, sizeof(codecs));
    const char *v[] = {
        b->spec->user_id, b->spec->mode, ts, b->spec->job_id, codec_list_compression(&b->codecs),
        codecs,           b->full_why};
    /* the base is resolved once, when the row is created; a retry finds the row by job id (and
     * keeps the codecs it was created with); prepared (a one-statement pipeline): planning it
     * cost as much as running it */
    PgStmt st = {
        "WITH base AS ("
        "  SELECT id FROM backup_metadata"
        "  WHERE user_id = $1::uuid AND status = 'completed' AND snapshot IS NOT NULL"
        "    AND ($2 = 'incremental' OR type = 'full')"
        /* changes may have gone unseen since a gap (slot lost, tracking switched): no base
         * whose snapshot was taken before one */
        "    AND NOT EXISTS (SELECT 1 FROM capture_gaps g"
        "                    WHERE NOT pg_visible_in_snapshot(g.xid, snapshot::pg_snapshot))"
        "  ORDER BY created_at DESC, id DESC LIMIT 1),"
        /* wal: an incremental builds on the change segments when they cover the base */
        " why AS (SELECT CASE WHEN $7 <> '' THEN $7"
        "  WHEN $2 <> 'full' AND backup_tracking_mode() = 'wal'"
        "  AND EXISTS (SELECT 1 FROM base) THEN capture_incremental_ok($1::uuid,"
        "  (SELECT id FROM base)) END AS why),"
        " kind AS (SELECT CASE WHEN $2 = 'full' OR NOT EXISTS (SELECT 1 FROM base)"
        "  OR (SELECT why FROM why) IS NOT NULL THEN 'full'"
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
        "  ''), coalesce(m.requested_type, m.type), " BW_SQL_CODECS(
            "m") ", m.attempts,"
                 "  coalesce((SELECT why FROM why), ''), backup_tracking_mode()",
        7, v, 1, 1};
    b->state = ST_RECORD;
    jobrt_pipeline(rt, ST_RECORD, 0, &st, 1);
}

static void set_running(JobRt *rt, Backup *b);

static void backup_on_recorded(JobRt *rt, Backup *b, PGresult *res) {
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
    b->wal = b->base_id[0] && strcmp(PQgetvalue(res, 0, 10), "wal") == 0;
    job_set_backup_id(jobrt_job(rt), b->id);
    if (layout_backup_key(b->key, sizeof(b->key), spec->user_id, b->id,
                          strcmp(b->type, "incremental") == 0, &b->codecs) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: key too long", b->id);
        return;
    }
    if (strcmp(b->type, b->requested) != 0) {
        char note[240];
        const char *why = PQgetvalue(res, 0, 9);
        if (why[0])
            snprintf(note, sizeof(note), "%s backup requested, but %s: made a full one",
                     b->requested, why);
        else
            snprintf(note, sizeof(note),
                     "%s backup requested, but there is no completed %s to build on: made a full "
                     "one",
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

static int backup_on_stale_page(Backup *b, const JobEv *ev) {
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
               "%s, "
               /* every commit this snapshot sees is before it (wal: what the capture must
                * have recorded) */
               "pg_current_wal_insert_lsn()::text, "
               /* and it was taken before this instant (a restore to a point in time starts
                * from a backup taken before the point: proto/sql/022) */
               "to_char(clock_timestamp() AT TIME ZONE 'UTC', "
               "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
               scope_fingerprint_sql());
}

/* After a BEGIN sent again (a failed guess): the snapshot statement alone. */
static void backup_snapshot(JobRt *rt, Backup *b) {
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
         3, v, 1, 1},
        {"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, 0, 0},
        /* prepared: its catalog fingerprint took 2.7 ms to plan and 0.8 ms to run for every
         * backup (pg_stat_statements, tools/bench/small.sh) */
        {snap.data, 2, sv, 0, 1},
        {NULL, 0, NULL, 0, 0},
    };
    int n = 3;
    /* no guess for wal: its counts wait for the segments' keys */
    b->scope = b->wal ? NULL
                      : scopecache_latest(services_scope_cache(jobrt_services(rt)), b->guess_fp,
                                          sizeof(b->guess_fp));
    if (b->scope) {
        scope_count_sql(b->scope, rows_mode(b), &count);
        st[n++] = (PgStmt){count.data, 0, NULL, 0, 1};
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

static void backup_on_running(JobRt *rt, Backup *b, const JobEv *ev) {
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

static void backup_abort_next_stale(JobRt *rt, Backup *b, const JobEv *ev) {
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
static void backup_on_snapshot(JobRt *rt, Backup *b, PGresult *res, PGresult *counts) {
    b->snapshot = xstrdup(PQgetvalue(res, 0, 0));
    snprintf(b->created_at, sizeof(b->created_at), "%s", PQgetvalue(res, 0, 3));
    snprintf(b->scope_fp, sizeof(b->scope_fp), "%s", PQgetvalue(res, 0, 5));
    snprintf(b->wal_lsn, sizeof(b->wal_lsn), "%s", PQgetvalue(res, 0, 6));
    snprintf(b->snapshot_at, sizeof(b->snapshot_at), "%s", PQgetvalue(res, 0, 7));
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

static void backup_on_scope(JobRt *rt, Backup *b, PGresult *res) {
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
    for (int i = 0; b->base_id[0] && !b->wal && i < n; i++)
        if (!scope_tracked(b->scope, i)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_CONFIG,
                        "table %s has no change tracking (backup_xid): run SELECT "
                        "backup_track_all()",
                        scope_table(b->scope, i));
            return -1;
        }
    return 0;
}

static void count_rows(JobRt *rt, Backup *b) {
    Buf sql = BUF_INIT;
    scope_count_sql(b->scope, rows_mode(b), &sql);
    backup_query(rt, b, ST_COUNT, 0, sql.data, 0, NULL);
    buf_free(&sql);
}

static void use_scope(JobRt *rt, Backup *b) {
    if (prepare_scope(rt, b) != 0)
        return;
    if (b->wal) {
        Err e;
        b->sk = segkeys_new(b->scope, b->spec->user_id, b->base_snapshot, b->snapshot, &e);
        if (b->sk == NULL) {
            jobrt_fail(rt, &e);
            return;
        }
        b->wait_from_ms = jobrt_elapsed_ms(rt);
        backup_progress(rt, b, "changes");
        capture_wait(rt, b);
        return;
    }
    count_rows(rt, b);
}

/* ---- wal: the keys from the change segments ---- */

/* The segments cannot make this incremental (a gap since the base, a change that names no
 * key, a capture that does not catch up): a full backup instead, under a new id, as the claim
 * would have made had it known. Nothing is stored yet: the snapshot is let go, the row of the
 * incremental deleted, and the claim made again with the reason. */
static void fall_back_to_full(JobRt *rt, Backup *b, const char *why) {
    log_info(job_log_id(jobrt_job(rt)), "backup %s: %s: a full backup instead", b->id, why);
    /* cut to the field (a reason quotes an error of up to ERR_MSG_MAX) */
    snprintf(b->full_why, sizeof(b->full_why), "%.*s", (int)sizeof(b->full_why) - 1, why);
    backup_query(rt, b, ST_FALLBACK, JRT_END, "ROLLBACK", 0, NULL);
}

/* After the ROLLBACK: everything the incremental had read, dropped. */
static void unclaim(JobRt *rt, Backup *b) {
    scope_free(b->scope);
    b->scope = NULL;
    free(b->counts);
    free(b->deleted);
    free(b->expected);
    b->counts = b->deleted = b->expected = NULL;
    b->rows_total = 0;
    free(b->snapshot);
    free(b->base_snapshot);
    b->snapshot = b->base_snapshot = NULL;
    segkeys_free(b->sk);
    b->sk = NULL;
    PQclear(b->segs);
    b->segs = NULL;
    b->wal = 0;
    b->seg_read = 0;
    const char *v[] = {b->id};
    backup_query(rt, b, ST_UNCLAIM, 0,
                 "DELETE FROM backup_metadata WHERE id = $1 AND status <> 'completed'", 1, v);
}

/* Polled through the pool: the job's own transaction would see capture_state as it was. */
static void capture_wait(JobRt *rt, Backup *b) {
    const char *v[] = {b->wal_lsn, b->base_snapshot};
    b->state = ST_CAPWAIT;
    jobrt_pool_query(rt, ST_CAPWAIT, 0,
                     "SELECT confirmed_lsn >= $1::pg_lsn, coalesce(pg_visible_in_snapshot("
                     "reset_xid, $2::pg_snapshot), false), confirmed_lsn::text, "
                     "pg_wal_lsn_diff($1::pg_lsn, confirmed_lsn)::bigint FROM capture_state",
                     2, v);
}

static void on_capture_state(JobRt *rt, Backup *b, PGresult *res) {
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        /* a gap since the base: a slot made after it holds none of what came between */
        fall_back_to_full(rt, b, "the change capture started after the base");
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        const char *v[] = {b->spec->user_id};
        b->state = ST_SEGLIST;
        jobrt_pool_query(rt, ST_SEGLIST, 0,
                         "SELECT id, s3_key, checksum, size, array_to_string(codecs, ','), "
                         "array_to_string(xids, ','), coalesce(key_id, ''), "
                         "coalesce(wrapped_key, '') FROM change_segments "
                         "WHERE user_id = $1::uuid ORDER BY end_lsn, id",
                         1, v);
        return;
    }
    uint64_t waited = jobrt_elapsed_ms(rt) - b->wait_from_ms;
    uint64_t limit = (uint64_t)b->cfg->capture_flush_ms * 6;
    if (limit < CAPWAIT_MIN_MS)
        limit = CAPWAIT_MIN_MS;
    if (waited >= limit) {
        char why[240];
        snprintf(why, sizeof(why),
                 "the change capture was still %s bytes of WAL behind the snapshot after %.0f s",
                 PQgetvalue(res, 0, 3), waited / 1000.0);
        fall_back_to_full(rt, b, why);
        return;
    }
    b->state = ST_CAPSLEEP;
    jobrt_sleep(rt, ST_CAPSLEEP, CAPWAIT_POLL_MS);
}

/* The next segment holding a transaction of the incremental; then the keys as settings. */
static void next_segment(JobRt *rt, Backup *b) {
    int n = PQntuples(b->segs);
    while (b->seg_i < n && !segkeys_wanted(b->sk, PQgetvalue(b->segs, b->seg_i, 5)))
        b->seg_i++;
    if (b->seg_i < n) {
        uint64_t size = strtoull(PQgetvalue(b->segs, b->seg_i, 3), NULL, 10);
        const PGresult *g = b->segs;
        int i = b->seg_i;
        SegFileRecord rec = {PQgetvalue(g, i, 0), PQgetvalue(g, i, 1), b->spec->user_id,
                             PQgetvalue(g, i, 2), PQgetvalue(g, i, 4), PQgetvalue(g, i, 6),
                             PQgetvalue(g, i, 7)};
        b->state = ST_SEGGET;
        jobrt_segment(rt, ST_SEGGET, JRT_SOFT, NULL, &rec, (size_t)size + 1);
        return;
    }
    log_info(job_log_id(jobrt_job(rt)),
             "backup %s: %d change segment%s of %d since base %s name %zu key%s", b->id,
             b->seg_read, b->seg_read == 1 ? "" : "s", n, b->base_id, segkeys_total(b->sk),
             segkeys_total(b->sk) == 1 ? "" : "s");
    int nt = scope_count(b->scope);
    Buf sql = BUF_INIT;
    Buf *vals = xcalloc((size_t)nt * 2, sizeof(Buf));
    const char **v = xcalloc((size_t)nt * 2, sizeof(char *));
    buf_puts(&sql, "SELECT ");
    for (int i = 0; i < nt; i++) {
        char name[32];
        scope_keys_setting(i, name, sizeof(name));
        buf_puts(&vals[2 * i], name);
        segkeys_array(b->sk, i, &vals[2 * i + 1]);
        v[2 * i] = vals[2 * i].data;
        v[2 * i + 1] = vals[2 * i + 1].data;
        buf_printf(&sql, "%sset_config($%d, $%d, true)", i ? ", " : "", 2 * i + 1, 2 * i + 2);
    }
    backup_query(rt, b, ST_KEYS, 0, sql.data, nt * 2, v);
    for (int i = 0; i < nt * 2; i++)
        buf_free(&vals[i]);
    free(vals);
    free(v);
    buf_free(&sql);
}

/* A segment read whole, checked against its record and decoded (jobrt_segment), its keys
 * taken. A store that did not answer fails the job (tried again later); a segment that is
 * missing, damaged or cannot be opened makes the backup full, saying why. */
static void on_segment(JobRt *rt, Backup *b, const JobEv *ev) {
    Err e;
    int rc = -1;
    if (ev->err) {
        if (ev->err->kind != ERR_PERMANENT) {
            jobrt_fail(rt, ev->err);
            return;
        }
        e = *ev->err;
    } else {
        rc = segkeys_add(b->sk, ev->buf, ev->len, &e);
    }
    if (rc != 0) {
        /* a segment that names no keys for a change, or one that cannot be read (a full backup
         * needs none: the user still gets one; the second is said loudly) */
        if (rc != SEGKEYS_NO_KEYS)
            log_warn(job_log_id(jobrt_job(rt)), "backup %s: %s", b->id, e.msg);
        fall_back_to_full(rt, b, e.msg);
        return;
    }
    b->seg_read++;
    b->seg_i++;
    next_segment(rt, b);
}

static void backup_on_counted(JobRt *rt, Backup *b, PGresult *res) {
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
