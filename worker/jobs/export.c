/*
 * export: "download my data". One of the user's backups rewritten as a plain, readable JSON
 * document (gzip) under exports/{user_id}/{export_id}.json.gz, recorded in backup_exports
 * (proto/sql/024) for a day; the web tier hands the owner a presigned URL of it.
 *
 *   FIND    the backup, the user's and completed; the export id not another user's; under
 *           BACKUP_ENCRYPTION=required refused unless EXPORT_PLAINTEXT=allowed (the document
 *           is plain text by design: the user is to read it)
 *   CLAIM   backup_exports row 'running' (a retry takes the same row; a completed export of
 *           the same id completes again without writing)
 *   KEY     an encrypted backup's data key, opened by the worker (never by the web tier)
 *   STREAM  the stored object read through bcheck (SHA-256 against the record, codecs undone,
 *           layout, header, trailer) while the export is written through gzip; the rows go
 *           through as the backup holds them. A damaged object fails the job with
 *           "Backup checksum verification failed" and the write stream is aborted: nothing
 *           of it is stored
 *   RECORD  the row 'completed' with its key, size, SHA-256, rows and expiry
 *
 * The document: {"format":"pedidolist-export","version":1, the backup's id, type, user and
 * time, "exported_at", "tables":{"<table>":[rows...]}, "deleted":{...}, "trailer":{counts}}.
 * An incremental backup's export holds what it holds: the rows changed since its base and the
 * keys deleted since then ("deleted"), as its header's "type" says.
 */
#include "jobs/jobs.h"

#include "base/buf.h"
#include "base/log.h"
#include "format/bcheck.h"
#include "format/bfile.h"
#include "format/layout.h"
#include "jobs/jobconfig.h"
#include "jobs/jobrt.h"
#include "services.h"

#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT_FORMAT  "pedidolist-export"
#define EXPORT_VERSION 1
#define PIECE_MAX      (256u << 10)

typedef enum { ST_FIND, ST_CLAIM, ST_KEY, ST_STREAM, ST_RECORD } State;

typedef struct {
    State state;
    const JobSpec *spec;
    char export_id[37], key[LAYOUT_KEY_MAX], src_key[LAYOUT_KEY_MAX], checksum[65];
    char type[16], base_id[JOBSPEC_ID_MAX + 1], created_at[40], key_id[CRYPT_ID_MAX + 1];
    char *wrapped;
    CodecList codecs;
    uint64_t size;
    StorageWrite *out;
    BCheck *bc;
    BfileWriter w;
    Buf piece;
    char table[64];
    int section, open_list, held, full, read_done;
    uint64_t rows, deleted;
    StorageWritten written;
} Export;

/* A retry must write the same export: without export_id, one derived from the job id (a UUID
 * of version 8, RFC 9562: SHA-256 of the id). */
static void derive_id(const char *job_id, char out[37]) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)job_id, strlen(job_id), d);
    d[6] = (unsigned char)((d[6] & 0x0f) | 0x80);
    d[8] = (unsigned char)((d[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[d[i] >> 4];
        out[o++] = hex[d[i] & 15];
    }
    out[o] = '\0';
}

static void emit(Export *e) {
    if (e->piece.len == 0 || e->out == NULL)
        return;
    int r = storage_write(e->out, e->piece.data, e->piece.len);
    buf_reset(&e->piece);
    if (r == 0)
        e->full = 1;
}

/* Hold the read while the store is behind, go on once it drains. */
static void pace(Export *e) {
    if (e->bc == NULL || e->read_done)
        return;
    if (e->full && !e->held)
        bcheck_hold(e->bc);
    else if (!e->full && e->held)
        bcheck_resume(e->bc);
    e->held = e->full;
}

static void on_found(JobRt *rt, Export *e, PGresult *res) {
    const JobConfig *cfg = services_jobconfig(jobrt_services(rt));
    if (PQntuples(res) == 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "Backup not found: %s is not a backup of user %s", e->spec->backup_id,
                    e->spec->user_id);
        return;
    }
    const char *status = PQgetvalue(res, 0, 0);
    if (strcmp(status, "completed") != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "backup %s is %s: only a completed backup can be exported", e->spec->backup_id,
                    status);
        return;
    }
    snprintf(e->src_key, sizeof(e->src_key), "%s", PQgetvalue(res, 0, 1));
    snprintf(e->checksum, sizeof(e->checksum), "%s", PQgetvalue(res, 0, 2));
    Err err;
    if (codec_list_parse(PQgetvalue(res, 0, 3), &e->codecs, &err) != 0) {
        jobrt_fail(rt, &err);
        return;
    }
    snprintf(e->key_id, sizeof(e->key_id), "%s", PQgetvalue(res, 0, 4));
    e->wrapped = xstrdup(PQgetvalue(res, 0, 5));
    snprintf(e->type, sizeof(e->type), "%s", PQgetvalue(res, 0, 6));
    snprintf(e->base_id, sizeof(e->base_id), "%s", PQgetvalue(res, 0, 7));
    snprintf(e->created_at, sizeof(e->created_at), "%s", PQgetvalue(res, 0, 8));
    e->size = strtoull(PQgetvalue(res, 0, 9), NULL, 10);
    const char *owner = PQgetvalue(res, 0, 10);
    const char *done_status = PQgetvalue(res, 0, 11);
    if (owner[0] && strcmp(owner, e->spec->user_id) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "export id %s is taken by another user's export", e->export_id);
        return;
    }
    if (!layout_key_is_users(e->src_key, e->spec->user_id) || e->checksum[0] == '\0') {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "backup %s has no object of user %s on record: refusing to export it",
                    e->spec->backup_id, e->spec->user_id);
        return;
    }
    if (keys_required(cfg->keys) && !cfg->export_plaintext) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s",
                    "exports are plain, readable JSON and BACKUP_ENCRYPTION=required: refused "
                    "(an operator may set EXPORT_PLAINTEXT=allowed)");
        return;
    }
    if (strcmp(done_status, "completed") == 0) { /* a retry after the row was recorded */
        layout_export_key(e->key, sizeof(e->key), e->spec->user_id, e->export_id);
        char json[LAYOUT_KEY_MAX + 96];
        snprintf(json, sizeof(json), "{\"export_id\":\"%s\",\"key\":\"%s\",\"again\":true}",
                 e->export_id, e->key);
        job_set_result(jobrt_job(rt), json);
        jobrt_done(rt);
        return;
    }
    layout_export_key(e->key, sizeof(e->key), e->spec->user_id, e->export_id);
    const char *v[] = {e->export_id, e->spec->user_id, e->spec->backup_id, e->spec->job_id,
                       e->spec->requested_by[0] ? e->spec->requested_by : NULL};
    e->state = ST_CLAIM;
    jobrt_pool_query(rt, ST_CLAIM, 0,
                     "INSERT INTO backup_exports (id, user_id, backup_id, job_id, requested_by) "
                     "VALUES ($1::uuid, $2::uuid, $3, $4, $5::uuid) ON CONFLICT (id) DO UPDATE "
                     "SET status = 'running', error = NULL, job_id = EXCLUDED.job_id "
                     "WHERE backup_exports.user_id = EXCLUDED.user_id AND "
                     "backup_exports.status IN ('running', 'failed') RETURNING id",
                     5, v);
}

static void open_stream(JobRt *rt, Export *e, const JobKey *key) {
    CodecList gz = {1, {"gzip"}};
    CodecOptions co = {0, NULL};
    e->out = jobrt_write(rt, ST_STREAM, e->key, "application/gzip", codec_encoder(&gz, &co));
    if (e->out == NULL)
        return;
    char now[40];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
    Buf fields = BUF_INIT;
    buf_printf(&fields, "\"format\":\"%s\",\"version\":%d", EXPORT_FORMAT, EXPORT_VERSION);
    bfile_put_string(&fields, "user_id", e->spec->user_id);
    bfile_put_string(&fields, "backup_id", e->spec->backup_id);
    bfile_put_string(&fields, "backup_type", e->type);
    bfile_put_string(&fields, "base_backup_id", e->base_id[0] ? e->base_id : NULL);
    bfile_put_string(&fields, "backup_created_at", e->created_at);
    bfile_put_string(&fields, "exported_at", now);
    bfile_begin_fields(&e->w, &e->piece, fields.data);
    buf_free(&fields);
    emit(e);

    Buf codecs = BUF_INIT;
    codec_list_json(&e->codecs, &codecs);
    CryptParams cp = {.user_id = e->spec->user_id,
                      .backup_id = e->spec->backup_id,
                      .codecs_json = codecs.data,
                      .have_dek = 1,
                      .unwrap = keys_unwrap_fn,
                      .unwrap_data = (void *)services_jobconfig(jobrt_services(rt))->keys};
    if (key)
        memcpy(cp.dek, key->dek, CRYPT_KEY_LEN);
    BCheckTarget bt = {e->spec->backup_id, e->spec->user_id, e->src_key, e->checksum,
                       &e->codecs,         key ? &cp : NULL, NULL};
    e->state = ST_STREAM;
    e->bc = jobrt_check(rt, ST_STREAM, 0, &bt, 1);
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&codecs);
    job_progress(jobrt_job(rt), "exporting", 0, 0, 0);
}

static int on_item(JobRt *rt, Export *e, const JobEv *ev) {
    if (ev->section != e->section) { /* the tables are over: the deleted keys begin */
        if (e->open_list)
            bfile_list_end(&e->w, &e->piece);
        e->open_list = 0;
        e->table[0] = '\0';
        bfile_deleted_begin(&e->w, &e->piece);
        e->section = ev->section;
    }
    if (!e->open_list || strcmp(e->table, ev->table) != 0) {
        if (e->open_list)
            bfile_list_end(&e->w, &e->piece);
        bfile_list_begin(&e->w, &e->piece, ev->table);
        snprintf(e->table, sizeof(e->table), "%s", ev->table);
        e->open_list = 1;
    }
    bfile_item(&e->w, &e->piece, ev->buf, ev->len);
    if (ev->section == 0)
        e->rows++;
    else
        e->deleted++;
    if (e->piece.len >= PIECE_MAX) {
        emit(e);
        pace(e);
        uint64_t read = bcheck_bytes(e->bc);
        job_progress(jobrt_job(rt), "exporting",
                     e->size ? (int)(read * 99 / (e->size ? e->size : 1)) : 0, e->rows, read);
    }
    return 0;
}

static void on_checked(Export *e) {
    e->read_done = 1;
    e->bc = NULL;
    if (e->open_list)
        bfile_list_end(&e->w, &e->piece);
    char trailer[96];
    snprintf(trailer, sizeof(trailer), "{\"rows\":%" PRIu64 ",\"deleted\":%" PRIu64 "}", e->rows,
             e->deleted);
    bfile_end(&e->w, &e->piece, trailer);
    emit(e);
    storage_write_finish(e->out);
}

static void on_written(JobRt *rt, Export *e, const StorageWritten *w) {
    e->written = *w;
    char size[24], rows[24];
    snprintf(size, sizeof(size), "%" PRIu64, w->size);
    snprintf(rows, sizeof(rows), "%" PRIu64, e->rows);
    const char *v[] = {e->export_id, e->spec->user_id, e->key, size, w->sha256, rows};
    e->state = ST_RECORD;
    jobrt_pool_query(rt, ST_RECORD, 0,
                     "UPDATE backup_exports SET status = 'completed', s3_key = $3, size = $4, "
                     "checksum = $5, row_count = $6, completed_at = now(), expires_at = now() + "
                     "interval '1 day' WHERE id = $1::uuid AND user_id = $2::uuid "
                     "RETURNING to_char(expires_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                     6, v);
}

static void on_recorded(JobRt *rt, Export *e, PGresult *res) {
    if (PQntuples(res) == 0) { /* the row went (a cleanup): the object is nobody's to find */
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_INVALID,
                    "export %s: its record went while it was written", e->export_id);
        return;
    }
    char json[LAYOUT_KEY_MAX + 256];
    snprintf(json, sizeof(json),
             "{\"export_id\":\"%s\",\"key\":\"%s\",\"size\":%" PRIu64 ",\"rows\":%" PRIu64
             ",\"deleted\":%" PRIu64 ",\"expires_at\":\"%s\"}",
             e->export_id, e->key, e->written.size, e->rows, e->deleted, PQgetvalue(res, 0, 0));
    job_set_result(jobrt_job(rt), json);
    log_info(job_log_id(jobrt_job(rt)),
             "export %s of %s: %" PRIu64 " rows, %" PRIu64 " deleted keys, %" PRIu64
             " bytes (gzip) in %" PRIu64 " ms",
             e->export_id, e->spec->backup_id, e->rows, e->deleted, e->written.size,
             jobrt_elapsed_ms(rt));
    job_progress(jobrt_job(rt), "done", 100, e->rows, e->written.size);
    jobrt_done(rt);
}

static int export_step(JobRt *rt, void *st, const JobEv *ev) {
    Export *e = st;
    switch (ev->kind) {
    case JEV_START: {
        e->spec = job_spec(jobrt_job(rt));
        job_set_backup_id(jobrt_job(rt), e->spec->backup_id);
        if (e->spec->export_id[0])
            snprintf(e->export_id, sizeof(e->export_id), "%s", e->spec->export_id);
        else
            derive_id(e->spec->job_id, e->export_id);
        job_progress(jobrt_job(rt), "starting", 0, 0, 0);
        const char *v[] = {e->spec->backup_id, e->spec->user_id, e->export_id};
        e->state = ST_FIND;
        jobrt_pool_query(
            rt, ST_FIND, 0,
            "SELECT m.status, coalesce(m.s3_key, ''), coalesce(m.checksum, ''), " BW_SQL_CODECS(
                "m") ", coalesce(m.key_id, ''), coalesce(m.wrapped_key, ''), m.type, "
                     "coalesce(m.base_backup_id, ''), to_char(m.created_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), coalesce(m.size, 0), "
                     "coalesce(x.user_id::text, ''), coalesce(x.status, '') "
                     "FROM backup_metadata m LEFT JOIN backup_exports x ON x.id = $3::uuid "
                     "WHERE m.id = $1 AND m.user_id = $2::uuid",
            3, v);
        break;
    }
    case JEV_RESULT:
        if (e->state == ST_FIND) {
            on_found(rt, e, ev->res);
        } else if (e->state == ST_CLAIM) {
            if (PQntuples(ev->res) == 0) {
                jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                            "export id %s is taken by another export", e->export_id);
                break;
            }
            if (codec_list_encrypted(&e->codecs)) {
                e->state = ST_KEY;
                jobrt_datakey_open(rt, ST_KEY, 0, e->key_id, e->wrapped, e->spec->user_id,
                                   e->spec->backup_id);
            } else {
                open_stream(rt, e, NULL);
            }
        } else if (e->state == ST_RECORD) {
            on_recorded(rt, e, ev->res);
        }
        break;
    case JEV_KEY:
        open_stream(rt, e, ev->key);
        break;
    case JEV_ITEM:
        return on_item(rt, e, ev);
    case JEV_CHECKED:
        on_checked(e);
        break;
    case JEV_WRITABLE:
        e->full = 0;
        pace(e);
        break;
    case JEV_WRITTEN:
        on_written(rt, e, ev->written);
        break;
    default:
        break;
    }
    return 0;
}

/* Teardown: a failure that ends the job is recorded on the row (a retry leaves it running). */
static int export_record(JobRt *rt, void *st, int k) {
    Export *e = st;
    if (k > 0 || e->state < ST_CLAIM || !jobrt_final(rt))
        return 0;
    const char *v[] = {e->export_id, e->spec->user_id, jobrt_err(rt)->msg};
    jobrt_record_query(rt,
                       "UPDATE backup_exports SET status = 'failed', error = $3 "
                       "WHERE id = $1::uuid AND user_id = $2::uuid AND status = 'running'",
                       3, v);
    return 1;
}

static void export_release(void *st) {
    Export *e = st;
    free(e->wrapped);
    buf_free(&e->piece);
}

static const JobRtOps ops = {sizeof(Export), export_step, export_record, export_release};

static void export_run(Job *job) {
    jobrt_run(job, &ops);
}

static int export_check(JobSpec *spec, Err *err) {
    if (jobspec_need_user(spec, err) != 0)
        return -1;
    if (spec->backup_id[0] == '\0')
        return jobspec_refuse(err, "missing field 'backup_id' (the backup to export)");
    if (!layout_backup_id_names_user(spec->backup_id, spec->user_id))
        return jobspec_refuse(err, "field 'backup_id': '%s' is not a backup of user %s",
                              spec->backup_id, spec->user_id);
    return 0;
}

const JobType job_type_export = {
    .name = "export",
    .fields = "user_id backup_id export_id",
    .user_lock = 1, /* a cleanup of the user waits: the backup read stays there */
    .check = export_check,
    .summary = "write one of a user's backups as a plain JSON document (gzip) under exports/ for "
               "the user to download",
    .run = export_run,
    .cancel = jobrt_cancel,
};
