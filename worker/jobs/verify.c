/*
 * verify: are the stored backups what their records say? Like pgBackRest's
 * verify, without touching the user's data: for one backup (`backup_id`) or
 * every backup of a user (`user_id`), in order:
 *
 *   MANIFEST  <key>.manifest.json must exist and agree with backup_metadata
 *             (checksum, size, per-table counts)
 *   OBJECT    the object streamed through bcheck: SHA-256 of the stored bytes,
 *             gunzip, the layout, every row well-formed JSON, the header, and the
 *             trailer's counts; then the rows counted against the manifest's
 *   RECORD    backup_metadata.verified_at, verify_status (ok | failed), verify_error; a
 *             backup that is no longer completed (a cleanup took it) is skipped
 * It holds the user's lock (like backup, restore and cleanup), so a cleanup of the same user
 * waits for it; a cleanup of every user (scope=all) may still race it: hence the skip.
 *
 * The job completes when every backup passed, and fails (permanently: a
 * retry reads the same bytes) naming how many did not and the first reason.
 */
#include "jobs.h"

#include "bcheck.h"
#include "bfile.h"
#include "buf.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MANIFEST_MAX (1u << 20)

typedef struct {
    char id[JOBSPEC_ID_MAX + 1], key[256], checksum[65], compression[8];
    char *row_counts; /* backup_metadata.row_counts as text */
    uint64_t size;
} Item;

typedef struct {
    Job *job;
    const JobSpec *spec;
    PgPool *pool;
    S3Client *s3;
    Item *items;
    int n, i, failed, skipped, cancelled, busy;
    char user[37];
    BCheck *bc;
    char *manifest; /* the current item's manifest */
    Err first, err;
    uint64_t rows, bytes;
} Verify;

static void next_item(Verify *v);

static void finish(Verify *v, const Err *err) {
    Job *job = v->job;
    for (int i = 0; i < v->n; i++)
        free(v->items[i].row_counts);
    free(v->items);
    free(v->manifest);
    bcheck_free(v->bc);
    Err e;
    if (err)
        e = *err;
    free(v);
    job_done(job, err ? &e : NULL);
}

static void on_recorded(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    Verify *v = data;
    Item *it = &v->items[v->i];
    v->busy = 0;
    if (err) {
        log_warn(job_log_id(v->job), "could not record the verification of %s: %s", it->id,
                 err->msg);
    } else if (PQntuples(res) == 0) {
        /* no longer completed: a cleanup expired or deleted it while we read it */
        log_info(job_log_id(v->job), "verify %s: skipped, a cleanup is deleting it", it->id);
        v->skipped++;
    } else if (strcmp(PQgetvalue(res, 0, 0), "failed") == 0) {
        if (v->failed++ == 0)
            v->first = v->err;
        log_warn(job_log_id(v->job), "verify %s: FAILED: %s", it->id, v->err.msg);
    } else {
        log_info(job_log_id(v->job), "verify %s: ok", it->id);
    }
    v->i++;
    next_item(v);
}

/* The current backup's outcome, recorded, then logged and counted. A backup a cleanup is
 * removing (status no longer 'completed') is neither: its object may be half gone. */
static void record(Verify *v, const Err *err) {
    Item *it = &v->items[v->i];
    err_clear(&v->err);
    if (err)
        v->err = *err;
    const char *p[] = {it->id, err ? "failed" : "ok", err ? err->msg : NULL};
    v->busy = 1;
    pg_pool_query(
        v->pool,
        "UPDATE backup_metadata SET verified_at = now(), verify_status = $2, "
        "verify_error = $3 WHERE id = $1 AND status = 'completed' RETURNING verify_status",
        3, p, on_recorded, v);
}

static int count_item(int section, const char *table, const char *json, size_t len, void *data,
                      Err *err) {
    (void)section;
    (void)table;
    (void)json;
    (void)len;
    (void)err;
    Verify *v = data;
    if (section == 0 && (++v->rows & 0xfff) == 0)
        job_progress(v->job, v->items[v->i].id, v->i * 100 / v->n, v->rows, v->bytes);
    return 0;
}

/* Per-table counts of the manifest ("rows") against backup_metadata.row_counts and the
 * document. -1 with err naming the first difference. */
static int counts_agree(Verify *v, BCheck *c, Err *err) {
    const Item *it = &v->items[v->i];
    const char *rows = strstr(v->manifest, "\"rows\":{");
    if (rows == NULL) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "manifest of %s has no row counts", it->id);
        return -1;
    }
    rows += 7;
    const char *end = strchr(rows, '}');
    for (const char *p = rows + 1; end && p < end;) {
        const char *q = strchr(p + 1, '"');
        if (*p != '"' || q == NULL || q - p - 1 >= 64)
            break;
        char table[64], meta[32], man[32];
        snprintf(table, sizeof(table), "%.*s", (int)(q - p - 1), p + 1);
        if (bfile_field(rows, (size_t)(end - rows + 1), table, man, sizeof(man)) != 0)
            break;
        uint64_t want = strtoull(man, NULL, 10);
        /* row_counts is jsonb text: "name": N, with a space */
        char pat[80];
        snprintf(pat, sizeof(pat), "\"%s\": ", table);
        const char *m = it->row_counts ? strstr(it->row_counts, pat) : NULL;
        snprintf(meta, sizeof(meta), "%s", m ? m + strlen(pat) : "");
        if (m == NULL || strtoull(meta, NULL, 10) != want) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "%s: the manifest counts %" PRIu64 " %s rows, backup_metadata %s", it->id, want,
                    table, m ? meta : "none");
            return -1;
        }
        if (bcheck_count(c, 0, table) != want) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "%s: the manifest counts %" PRIu64 " %s rows, the object holds %" PRIu64,
                    it->id, want, table, bcheck_count(c, 0, table));
            return -1;
        }
        p = strchr(q, ',');
        if (p == NULL)
            break;
        p++;
    }
    return 0;
}

static void on_checked(BCheck *c, const Err *err, void *data) {
    Verify *v = data;
    v->bc = NULL;
    v->bytes += bcheck_bytes(c);
    Err e;
    if (v->cancelled) {
        bcheck_free(c);
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "verify cancelled");
        finish(v, &e);
        return;
    }
    if (err == NULL && counts_agree(v, c, &e) == 0)
        record(v, NULL);
    else
        record(v, err ? err : &e);
    bcheck_free(c);
}

static void on_manifest(const S3Result *res, const Err *err, void *data) {
    Verify *v = data;
    Item *it = &v->items[v->i];
    v->busy = 0;
    Err e;
    if (v->cancelled) {
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "verify cancelled");
        finish(v, &e);
        return;
    }
    if (err) {
        e = *err;
        err_prefix(&e, "%s: manifest %s.manifest.json", it->id, it->key);
        record(v, &e);
        return;
    }
    free(v->manifest);
    v->manifest = xmalloc(res->body->len + 1);
    memcpy(v->manifest, res->body->data, res->body->len);
    v->manifest[res->body->len] = 0;
    size_t n = res->body->len;
    char sha[80], size[32], id[160];
    if (bfile_field(v->manifest, n, "backup_id", id, sizeof(id)) != 0 || strcmp(id, it->id) != 0 ||
        bfile_field(v->manifest, n, "sha256", sha, sizeof(sha)) != 0 ||
        bfile_field(v->manifest, n, "size", size, sizeof(size)) != 0) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID, "%s: the manifest is not this backup's",
                it->id);
        record(v, &e);
        return;
    }
    if (strcmp(sha, it->checksum) != 0 || strtoull(size, NULL, 10) != it->size) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "%s: the manifest (sha256 %.16s..., %s bytes) disagrees with backup_metadata "
                "(%.16s..., %" PRIu64 " bytes)",
                it->id, sha, size, it->checksum, it->size);
        record(v, &e);
        return;
    }
    BCheckTarget t = {it->id, v->user, it->key, it->checksum, it->compression};
    v->bc = bcheck_start(v->s3, &t, 1, count_item, on_checked, v);
}

static void next_item(Verify *v) {
    if (v->cancelled) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "verify cancelled");
        finish(v, &e);
        return;
    }
    if (v->i == v->n) {
        if (v->failed) {
            Err e;
            err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                    "%d of %d backup%s failed verification: %s", v->failed, v->n,
                    v->n > 1 ? "s" : "", v->first.msg);
            finish(v, &e);
            return;
        }
        char note[96];
        int ok = v->n - v->skipped;
        if (v->skipped)
            snprintf(note, sizeof(note), "%d backup%s verified, %d skipped (being deleted)", ok,
                     ok == 1 ? "" : "s", v->skipped);
        else
            snprintf(note, sizeof(note), "%d backup%s verified", ok, ok == 1 ? "" : "s");
        job_set_note(v->job, note);
        job_progress(v->job, "done", 100, v->rows, v->bytes);
        finish(v, NULL);
        return;
    }
    Item *it = &v->items[v->i];
    job_progress(v->job, it->id, v->i * 100 / v->n, v->rows, v->bytes);
    char key[300];
    snprintf(key, sizeof(key), "%s.manifest.json", it->key);
    v->busy = 1;
    s3_get_object(v->s3, key, MANIFEST_MAX, on_manifest, v);
}

static void on_list(PgConn *c, PGresult *res, const Err *err, void *data) {
    (void)c;
    Verify *v = data;
    v->busy = 0;
    Err e;
    if (err || v->cancelled) {
        if (!err)
            err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "verify cancelled");
        finish(v, err ? err : &e);
        return;
    }
    int n = PQntuples(res);
    if (n == 0) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID, "no completed backup to verify (%s)",
                v->spec->backup_id[0] ? v->spec->backup_id : v->spec->user_id);
        finish(v, &e);
        return;
    }
    const char *user = PQgetvalue(res, 0, 1);
    if (v->spec->user_id[0] && strcmp(user, v->spec->user_id) != 0) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "forbidden: backup %s does not belong to user %s", v->spec->backup_id,
                v->spec->user_id);
        finish(v, &e);
        return;
    }
    snprintf(v->user, sizeof(v->user), "%s", user);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "backups/%s/", user);
    v->items = xcalloc((size_t)n, sizeof(Item));
    v->n = n;
    for (int k = 0; k < n; k++) {
        Item *it = &v->items[k];
        snprintf(it->id, sizeof(it->id), "%s", PQgetvalue(res, k, 0));
        snprintf(it->key, sizeof(it->key), "%s", PQgetvalue(res, k, 2));
        snprintf(it->checksum, sizeof(it->checksum), "%s", PQgetvalue(res, k, 3));
        snprintf(it->compression, sizeof(it->compression), "%s", PQgetvalue(res, k, 4));
        it->row_counts = xstrdup(PQgetvalue(res, k, 5));
        it->size = strtoull(PQgetvalue(res, k, 6), NULL, 10);
        if (strncmp(it->key, prefix, strlen(prefix)) != 0 || strstr(it->key, "..") ||
            strlen(it->checksum) != 64) {
            err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                    "backup %s has no usable key or checksum in backup_metadata", it->id);
            finish(v, &e);
            return;
        }
    }
    v->i = 0;
    next_item(v);
}

static void verify_run(Job *job) {
    Verify *v = xcalloc(1, sizeof(*v));
    v->job = job;
    v->spec = job_spec(job);
    Services *sv = job_services(job);
    v->pool = services_pg(sv);
    v->s3 = services_s3(sv);
    job_set_data(job, v);
    if (v->spec->backup_id[0])
        job_set_backup_id(job, v->spec->backup_id);
    job_progress(job, "starting", 0, 0, 0);
    const char *p[] = {v->spec->backup_id, v->spec->user_id[0] ? v->spec->user_id : NULL};
    v->busy = 1;
    pg_pool_query(v->pool,
                  "SELECT id, user_id::text, coalesce(s3_key, ''), coalesce(checksum, ''), "
                  "compression, coalesce(row_counts::text, ''), coalesce(size, 0) "
                  "FROM backup_metadata WHERE status IN ('completed', 'expired') AND "
                  "(id = $1 OR ($1 = '' AND user_id = $2::uuid)) ORDER BY created_at, id",
                  2, p, on_list, v);
}

static void verify_cancel(Job *job) {
    Verify *v = job_data(job);
    v->cancelled = 1;
    if (v->bc)
        bcheck_stop(v->bc);
}

const JobType job_type_verify = {"verify", 1, verify_run, verify_cancel};
