/*
 * cleanup: retention that never breaks a chain, and never leaves a user with
 * nothing to restore.
 *
 *   OWNER     with requested_by: only the account's owner may clean it up
 *             (profiles.role = 'owner', or the owner of a business), else `forbidden`
 *   EXPIRE    backup_expire(user, days) (proto/sql/007): marks what may go, returns every
 *             expired backup with its key, including those a previous run failed to delete
 *   DELETE    objects and manifests with batched DeleteObjects
 *   MARK      those rows `deleted`; a failed delete leaves them `expired` for the next run
 *   UPLOADS   multipart uploads under the user's prefix older than a day are aborted
 *
 * scope=all runs every user with backups, 100 users per database page.
 * Idempotent: a second run finds nothing to expire and deletes nothing.
 */
#include "jobs.h"

#include "buf.h"
#include "log.h"
#include "s3list.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define USERS_PAGE   100
#define STALE_UPLOAD (24 * 3600)

typedef struct {
    Job *job;
    const JobSpec *spec;
    const Config *cfg;
    PgPool *pool;
    S3Client *s3;
    int days;
    char user[37];      /* the user being cleaned */
    char last_user[37]; /* scope=all: paging */
    char **users;       /* scope=all: this page */
    int nusers, ui;
    char **ids, **keys; /* this user's expired backups; keys holds objects and manifests */
    int nids, nkeys;
    char **uploads; /* stale multipart uploads: key, id pairs */
    int nuploads, upi;
    uint64_t deleted, objects, aborted, tombstones;
    int users_done, users_busy, cancelled;
    int locked; /* scope=all: we hold c->user's lock */
    Err err;
} Cleanup;

static void next_user(Cleanup *c);
static void user_done(Cleanup *c);

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void reset_user(Cleanup *c) {
    free_list(c->ids, c->nids);
    free_list(c->keys, c->nkeys);
    free_list(c->uploads, c->nuploads);
    c->ids = c->keys = c->uploads = NULL;
    c->nids = c->nkeys = c->nuploads = c->upi = 0;
}

static void finish(Cleanup *c, const Err *err) {
    Job *job = c->job;
    if (c->locked)
        job_user_unlock(job, c->user);
    reset_user(c);
    free_list(c->users, c->nusers);
    if (err == NULL) {
        char note[224], busy[64] = "";
        if (c->users_busy)
            snprintf(busy, sizeof(busy), "; %d user%s skipped (another job of theirs ran)",
                     c->users_busy, c->users_busy == 1 ? "" : "s");
        snprintf(note, sizeof(note),
                 "%" PRIu64 " backup%s deleted (%" PRIu64 " objects) for %d user%s; %" PRIu64
                 " stale upload%s aborted; %" PRIu64 " tombstone%s purged%s",
                 c->deleted, c->deleted == 1 ? "" : "s", c->objects, c->users_done,
                 c->users_done == 1 ? "" : "s", c->aborted, c->aborted == 1 ? "" : "s",
                 c->tombstones, c->tombstones == 1 ? "" : "s", busy);
        job_set_note(job, note);
        log_info(job_log_id(job), "cleanup: %s", note);
        job_progress(job, "done", 100, c->deleted, c->objects);
    }
    Err e;
    if (err)
        e = *err;
    free(c);
    job_done(job, err ? &e : NULL);
}

static void failf(Cleanup *c, ErrKind kind, const char *fmt, const char *a, const char *b) {
    Err e;
    err_set(&e, kind, ERR_CODE_INVALID, fmt, a, b);
    finish(c, &e);
}

static void push(char ***v, int *n, const char *s) {
    *v = xrealloc(*v, (size_t)(*n + 1) * sizeof(char *));
    (*v)[(*n)++] = xstrdup(s);
}

/* ---- stale multipart uploads ---- */

static void abort_next(Cleanup *c);

static void on_aborted(const S3Result *res, const Err *err, void *data) {
    (void)res;
    Cleanup *c = data;
    if (err)
        log_warn(job_log_id(c->job), "cleanup: could not abort an upload of %s: %s",
                 c->uploads[c->upi], err->msg);
    else
        c->aborted++;
    c->upi += 2;
    abort_next(c);
}

static void abort_next(Cleanup *c) {
    if (c->upi < c->nuploads && !c->cancelled) {
        s3_abort_upload(c->s3, c->uploads[c->upi], c->uploads[c->upi + 1], on_aborted, c);
        return;
    }
    user_done(c);
}

static int on_uploads(const S3MultipartUpload *ups, size_t n, void *data) {
    Cleanup *c = data;
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < n; i++) {
        long long at = s3_parse_time(ups[i].initiated);
        if (at > 0 && now - at > STALE_UPLOAD) {
            push(&c->uploads, &c->nuploads, ups[i].key);
            push(&c->uploads, &c->nuploads, ups[i].upload_id);
        }
    }
    return 0;
}

static void on_uploads_listed(uint64_t count, const Err *err, void *data) {
    (void)count;
    Cleanup *c = data;
    if (err && strstr(err->msg, "NotImplemented")) /* some stores (s3rver) cannot list them */
        log_debug(job_log_id(c->job), "cleanup: cannot list uploads: %s", err->msg);
    else if (err)
        log_warn(job_log_id(c->job), "cleanup: could not list uploads: %s", err->msg);
    c->upi = 0;
    abort_next(c);
}

static void stale_uploads(Cleanup *c) {
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "backups/%s/", c->user);
    s3_list_uploads(c->s3, prefix, on_uploads, on_uploads_listed, c);
}

/* ---- expire, delete, mark ---- */

/* Tombstones no future incremental can need (proto/sql/008); NULL user: all of them. */
static void purge_tombstones(Cleanup *c, const char *user, PgResultCb cb) {
    const char *v[] = {user};
    pg_pool_query(c->pool, "SELECT backup_tombstones_purge($1::uuid)", 1, v, cb, c);
}

static void on_purged(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Cleanup *c = data;
    if (err) {
        finish(c, err);
        return;
    }
    c->tombstones += strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    stale_uploads(c);
}

static void on_marked(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Cleanup *c = data;
    if (err) {
        finish(c, err);
        return;
    }
    c->deleted += strtoull(PQcmdTuples(res), NULL, 10);
    purge_tombstones(c, c->user, on_purged);
}

static void on_deleted(size_t deleted, size_t failed, const Err *err, void *data) {
    Cleanup *c = data;
    c->objects += deleted;
    if (err || failed) { /* the rows stay expired: the next run deletes them */
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_HTTP,
                "cleanup of user %s: %zu object(s) not deleted: %s", c->user, failed,
                err ? err->msg : "DeleteObjects reported errors");
        finish(c, &e);
        return;
    }
    Buf ids = BUF_INIT;
    buf_puts(&ids, "{");
    for (int i = 0; i < c->nids; i++)
        buf_printf(&ids, "%s%s", i ? "," : "", c->ids[i]);
    buf_puts(&ids, "}");
    const char *v[] = {ids.data, c->user};
    pg_pool_query(c->pool,
                  "UPDATE backup_metadata SET status = 'deleted' WHERE id = ANY($1::text[]) "
                  "AND user_id = $2::uuid AND status = 'expired'",
                  2, v, on_marked, c);
    buf_free(&ids);
}

static void on_expired(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Cleanup *c = data;
    if (err) {
        finish(c, err);
        return;
    }
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "backups/%s/", c->user);
    for (int k = 0; k < PQntuples(res); k++) {
        const char *id = PQgetvalue(res, k, 0), *key = PQgetvalue(res, k, 1);
        push(&c->ids, &c->nids, id);
        if (PQgetisnull(res, k, 1)) /* never uploaded: nothing to delete */
            continue;
        if (strncmp(key, prefix, strlen(prefix)) != 0 || strstr(key, "..")) {
            failf(c, ERR_PERMANENT, "backup %s has a key outside %s: refusing to delete it", id,
                  prefix);
            return;
        }
        char manifest[300];
        snprintf(manifest, sizeof(manifest), "%s.manifest.json", key);
        push(&c->keys, &c->nkeys, key);
        push(&c->keys, &c->nkeys, manifest);
    }
    if (c->nids)
        log_info(job_log_id(c->job), "cleanup of user %s: %d expired backup(s) to delete", c->user,
                 c->nids);
    s3_delete_keys(c->s3, (const char *const *)c->keys, (size_t)c->nkeys, on_deleted, c);
}

static void clean_user(Cleanup *c, const char *user) {
    reset_user(c);
    snprintf(c->user, sizeof(c->user), "%s", user);
    char days[16];
    snprintf(days, sizeof(days), "%d", c->days);
    const char *v[] = {c->user, days};
    job_progress(c->job, c->user, 0, c->deleted, c->objects);
    pg_pool_query(c->pool, "SELECT backup_id, s3_key FROM backup_expire($1::uuid, $2::int)", 2, v,
                  on_expired, c);
}

static void user_done(Cleanup *c) {
    c->users_done++;
    if (c->locked) {
        c->locked = 0;
        job_user_unlock(c->job, c->user);
    }
    if (c->cancelled) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "cleanup cancelled");
        finish(c, &e);
        return;
    }
    if (!c->spec->scope_all) {
        finish(c, NULL);
        return;
    }
    c->ui++;
    next_user(c);
}

/* ---- scope=all: users page by page ---- */

static void on_all_purged(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Cleanup *c = data;
    if (!err)
        c->tombstones += strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    finish(c, err);
}

static void on_users(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Cleanup *c = data;
    if (err) {
        finish(c, err);
        return;
    }
    free_list(c->users, c->nusers);
    c->users = NULL;
    c->nusers = c->ui = 0;
    for (int k = 0; k < PQntuples(res); k++)
        push(&c->users, &c->nusers, PQgetvalue(res, k, 0));
    if (c->nusers == 0) { /* last page: tombstones of users without backups, parent-only ones */
        purge_tombstones(c, NULL, on_all_purged);
        return;
    }
    next_user(c);
}

/* scope=all: the user's lock first, as a job of that user would take it; a user whose backup
 * or restore runs now is left to the next cleanup. */
static void on_user_locked(Job *job, int locked, void *data) {
    (void)job;
    Cleanup *c = data;
    const char *user = c->users[c->ui];
    if (locked < 0) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CONNECT,
                "cleanup: cannot take the lock of user %s (Redis unreachable, or the job was "
                "taken over)",
                user);
        finish(c, &e);
        return;
    }
    if (locked == 0) {
        log_info(job_log_id(c->job), "cleanup: user %s skipped: another job of theirs runs", user);
        c->users_busy++;
        c->ui++;
        next_user(c);
        return;
    }
    c->locked = 1;
    clean_user(c, user);
}

static void next_user(Cleanup *c) {
    if (c->ui < c->nusers) {
        snprintf(c->last_user, sizeof(c->last_user), "%s", c->users[c->ui]);
        if (c->cancelled) {
            Err e;
            err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "cleanup cancelled");
            finish(c, &e);
            return;
        }
        job_user_lock(c->job, c->users[c->ui], on_user_locked, c);
        return;
    }
    char page[8];
    snprintf(page, sizeof(page), "%d", USERS_PAGE);
    const char *v[] = {c->last_user, page};
    pg_pool_query(c->pool,
                  "SELECT DISTINCT user_id::text FROM backup_metadata "
                  "WHERE status IN ('completed', 'expired') AND user_id::text > $1 "
                  "ORDER BY 1 LIMIT $2::int",
                  2, v, on_users, c);
}

/* ---- OWNER ---- */

static void on_owner(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Cleanup *c = data;
    if (err) {
        finish(c, err);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        failf(c, ERR_PERMANENT,
              "forbidden: %s is not the owner of account %s: only owners may clean up backups",
              c->spec->requested_by, c->spec->user_id);
        return;
    }
    clean_user(c, c->spec->user_id);
}

static void cleanup_run(Job *job) {
    Cleanup *c = xcalloc(1, sizeof(*c));
    c->job = job;
    c->spec = job_spec(job);
    Services *sv = job_services(job);
    c->cfg = services_config(sv);
    c->pool = services_pg(sv);
    c->s3 = services_s3(sv);
    c->days = c->spec->retention_days ? c->spec->retention_days : c->cfg->backup_retention_days;
    job_set_data(job, c);
    job_progress(job, "starting", 0, 0, 0);
    if (c->spec->scope_all) {
        next_user(c);
        return;
    }
    if (c->spec->requested_by[0] == 0) { /* the system's own run for one user */
        clean_user(c, c->spec->user_id);
        return;
    }
    const char *v[] = {c->spec->requested_by, c->spec->user_id};
    pg_pool_query(c->pool,
                  "SELECT $1::uuid = $2::uuid AND EXISTS (SELECT 1 FROM profiles p WHERE p.id = "
                  "$1::uuid AND (p.role = 'owner' OR EXISTS (SELECT 1 FROM businesses b "
                  "WHERE b.owner_id = p.id)))",
                  2, v, on_owner, c);
}

static void cleanup_cancel(Job *job) {
    Cleanup *c = job_data(job);
    c->cancelled = 1; /* the user in progress completes; no further user starts */
}

const JobType job_type_cleanup = {"cleanup", 1, cleanup_run, cleanup_cancel};
