/*
 * cleanup: retention that never breaks a chain, and never leaves a user with
 * nothing to restore.
 *
 *   OWNER     with requested_by: only the account's owner may clean it up
 *             (profiles.role = 'owner', or the owner of a business), else `forbidden`
 *   EXPIRE    backup_expire(user, days) (proto/sql/007): marks what may go, returns every
 *             expired backup with its key, including those a previous run failed to delete
 *   SEGMENTS  capture_segments_expired(user) (022): the change segments no kept backup needs
 *             (all their transactions seen by the oldest one kept): the PITR window is the
 *             retention period
 *   EXPORTS   backup_exports_expire(user) (024): the user's downloads past their day, and failed
 *             ones a day old
 *   DELETE    objects and manifests with batched DeleteObjects, in the primary, then in the
 *             replica when one is configured (a replica that cannot delete now fails the run
 *             retryably: the rows stay `expired`, and the retry deletes in both again)
 *   MARK      those rows `deleted`, those segments' and exports' rows deleted; a failed delete
 * leaves them for the next run UPLOADS   multipart uploads under the user's prefix older than a day
 * are aborted
 *
 * scope=all runs every user with backups, 100 users per database page.
 * Idempotent: a second run finds nothing to expire and deletes nothing.
 */
#include "jobs/jobs.h"

#include "base/buf.h"
#include "jobs/jobrt.h"
#include "format/layout.h"
#include "base/log.h"
#include "services.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define USERS_PAGE   100
#define STALE_UPLOAD (24 * 3600)

typedef enum {
    ST_OWNER,
    ST_USERS,
    ST_LOCK,
    ST_EXPIRE,
    ST_SEGMENTS,
    ST_EXPORTS,
    ST_DELETE,
    ST_DELETE_REPLICA,
    ST_MARK,
    ST_PURGE,
    ST_UPLOADS,
    ST_ABORT,
    ST_PURGE_ALL,
} State;

typedef struct {
    State state;
    const JobSpec *spec;
    int days;
    char user[37];      /* the user being cleaned */
    char last_user[37]; /* scope=all: paging */
    char **users;       /* scope=all: this page */
    int nusers, ui;
    char **ids, **keys; /* this user's expired backups; keys holds objects and manifests */
    int nids, nkeys;
    char **segs; /* this user's change segments no kept backup needs (their keys in keys) */
    int nsegs;
    uint64_t segments;
    char **exports; /* this user's exports to delete (their keys in keys, when they have one) */
    int nexports, nexport_keys;
    uint64_t exported;
    char **uploads; /* stale multipart uploads: key, id pairs */
    int nuploads, upi;
    uint64_t deleted, objects, aborted, tombstones;
    int users_done, users_busy;
} Cleanup;

static void next_user(JobRt *rt, Cleanup *c);

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void push(char ***v, int *n, const char *s) {
    *v = xrealloc(*v, (size_t)(*n + 1) * sizeof(char *));
    (*v)[(*n)++] = xstrdup(s);
}

static void reset_user(Cleanup *c) {
    free_list(c->ids, c->nids);
    free_list(c->keys, c->nkeys);
    free_list(c->uploads, c->nuploads);
    free_list(c->segs, c->nsegs);
    free_list(c->exports, c->nexports);
    c->ids = c->keys = c->uploads = c->segs = c->exports = NULL;
    c->nids = c->nkeys = c->nuploads = c->upi = c->nsegs = c->nexports = c->nexport_keys = 0;
}

static void pool_query(JobRt *rt, Cleanup *c, State next, const char *sql, int n,
                       const char *const *v) {
    c->state = next;
    jobrt_pool_query(rt, next, 0, sql, n, v);
}

static void done(JobRt *rt, Cleanup *c) {
    char note[288], busy[64] = "";
    if (c->users_busy)
        snprintf(busy, sizeof(busy), "; %d user%s skipped (another job of theirs ran)",
                 c->users_busy, c->users_busy == 1 ? "" : "s");
    snprintf(note, sizeof(note),
             "%" PRIu64 " backup%s deleted (%" PRIu64 " objects) for %d user%s; %" PRIu64
             " change segment%s no kept backup needs deleted; %" PRIu64
             " expired export%s deleted; %" PRIu64 " stale upload%s aborted; %" PRIu64
             " tombstone%s purged%s",
             c->deleted, c->deleted == 1 ? "" : "s", c->objects, c->users_done,
             c->users_done == 1 ? "" : "s", c->segments, c->segments == 1 ? "" : "s", c->exported,
             c->exported == 1 ? "" : "s", c->aborted, c->aborted == 1 ? "" : "s", c->tombstones,
             c->tombstones == 1 ? "" : "s", busy);
    job_set_note(jobrt_job(rt), note);
    log_info(job_log_id(jobrt_job(rt)), "cleanup: %s", note);
    job_progress(jobrt_job(rt), "done", 100, c->deleted, c->objects);
    jobrt_done(rt);
}

/* ---- one user: expire, delete, mark, purge, stale uploads ---- */

static void clean_user(JobRt *rt, Cleanup *c, const char *user) {
    reset_user(c);
    snprintf(c->user, sizeof(c->user), "%s", user);
    char days[16];
    snprintf(days, sizeof(days), "%d", c->days);
    const char *v[] = {c->user, days};
    job_progress(jobrt_job(rt), c->user, 0, c->deleted, c->objects);
    pool_query(rt, c, ST_EXPIRE, "SELECT backup_id, s3_key FROM backup_expire($1::uuid, $2::int)",
               2, v);
}

static void user_done(JobRt *rt, Cleanup *c) {
    c->users_done++;
    jobrt_user_unlock(rt, c->user); /* scope=all: held since ST_LOCK */
    if (!c->spec->scope_all) {
        done(rt, c);
        return;
    }
    c->ui++;
    next_user(rt, c);
}

static void on_expired(JobRt *rt, Cleanup *c, PGresult *res) {
    for (int k = 0; k < PQntuples(res); k++) {
        const char *id = PQgetvalue(res, k, 0), *key = PQgetvalue(res, k, 1);
        push(&c->ids, &c->nids, id);
        if (PQgetisnull(res, k, 1)) /* never uploaded: nothing to delete */
            continue;
        if (!layout_key_is_users(key, c->user)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s has a key outside backups/%s/: refusing to delete it", id,
                        c->user);
            return;
        }
        char manifest[LAYOUT_KEY_MAX + 16];
        layout_manifest_key(manifest, sizeof(manifest), key);
        push(&c->keys, &c->nkeys, key);
        push(&c->keys, &c->nkeys, manifest);
    }
    if (c->nids)
        log_info(job_log_id(jobrt_job(rt)), "cleanup of user %s: %d expired backup(s) to delete",
                 c->user, c->nids);
    const char *v[] = {c->user};
    pool_query(rt, c, ST_SEGMENTS, "SELECT id, s3_key FROM capture_segments_expired($1::uuid)", 1,
               v);
}

static void on_segments(JobRt *rt, Cleanup *c, PGresult *res) {
    for (int k = 0; k < PQntuples(res); k++) {
        const char *id = PQgetvalue(res, k, 0), *key = PQgetvalue(res, k, 1);
        if (!layout_key_is_users(key, c->user)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "change segment %s has a key outside backups/%s/: refusing to delete it",
                        id, c->user);
            return;
        }
        push(&c->segs, &c->nsegs, id);
        push(&c->keys, &c->nkeys, key);
    }
    if (c->nsegs)
        log_info(job_log_id(jobrt_job(rt)),
                 "cleanup of user %s: %d change segment(s) no kept backup needs", c->user,
                 c->nsegs);
    const char *v[] = {c->user};
    pool_query(rt, c, ST_EXPORTS, "SELECT export_id, s3_key FROM backup_exports_expire($1::uuid)",
               1, v);
}

static void on_exports(JobRt *rt, Cleanup *c, PGresult *res) {
    for (int k = 0; k < PQntuples(res); k++) {
        const char *id = PQgetvalue(res, k, 0), *key = PQgetvalue(res, k, 1);
        push(&c->exports, &c->nexports, id);
        if (PQgetisnull(res, k, 1)) /* failed before it was stored: nothing to delete */
            continue;
        if (!layout_key_is_users_export(key, c->user)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "export %s has a key outside exports/%s/: refusing to delete it", id,
                        c->user);
            return;
        }
        push(&c->keys, &c->nkeys, key);
        c->nexport_keys++;
    }
    c->state = ST_DELETE;
    jobrt_delete(rt, ST_DELETE, JRT_SOFT, (const char *const *)c->keys, (size_t)c->nkeys);
}

static void on_deleted(JobRt *rt, Cleanup *c, const JobEv *ev) {
    int replica = c->state == ST_DELETE_REPLICA;
    if (!replica) /* the backups' objects and manifests (segments are counted apart) */
        c->objects += ev->count > (uint64_t)(c->nsegs + c->nexport_keys)
                          ? ev->count - (uint64_t)(c->nsegs + c->nexport_keys)
                          : 0;
    if (ev->err || ev->failed) { /* the rows stay expired: the next run deletes them */
        Err e;
        err_set(&e, ERR_RETRYABLE, ev->err ? ev->err->code : ERR_CODE_HTTP,
                "cleanup of user %s: %" PRIu64 " object(s) not deleted%s: %s", c->user, ev->failed,
                replica ? " in the replica" : "",
                ev->err ? ev->err->msg : "DeleteObjects reported errors");
        jobrt_fail(rt, &e);
        return;
    }
    Storage *rs = services_replica(jobrt_services(rt));
    if (!replica && rs && c->nkeys > 0) { /* the replica's copies go too, never forgotten */
        c->state = ST_DELETE_REPLICA;
        jobrt_delete_from(rt, rs, ST_DELETE_REPLICA, JRT_SOFT, (const char *const *)c->keys,
                          (size_t)c->nkeys);
        return;
    }
    Buf ids = BUF_INIT, segs = BUF_INIT, exps = BUF_INIT;
    buf_puts(&exps, "{");
    for (int i = 0; i < c->nexports; i++)
        buf_printf(&exps, "%s%s", i ? "," : "", c->exports[i]);
    buf_puts(&exps, "}");
    buf_puts(&ids, "{");
    for (int i = 0; i < c->nids; i++)
        buf_printf(&ids, "%s%s", i ? "," : "", c->ids[i]);
    buf_puts(&ids, "}");
    buf_puts(&segs, "{");
    for (int i = 0; i < c->nsegs; i++)
        buf_printf(&segs, "%s\"%s\"", i ? "," : "", c->segs[i]);
    buf_puts(&segs, "}");
    const char *v[] = {ids.data, c->user, segs.data, exps.data};
    pool_query(rt, c, ST_MARK,
               "WITH s AS (DELETE FROM change_segments WHERE id = ANY($3::text[]) AND "
               "user_id = $2::uuid), x AS (DELETE FROM backup_exports WHERE id = ANY($4::uuid[]) "
               "AND user_id = $2::uuid AND status = 'expired') "
               "UPDATE backup_metadata SET status = 'deleted' WHERE id = ANY($1::text[]) "
               "AND user_id = $2::uuid AND status = 'expired'",
               4, v);
    buf_free(&ids);
    buf_free(&segs);
    buf_free(&exps);
}

/* Tombstones no future incremental can need (proto/sql/008); NULL user: all of them. */
static void purge_tombstones(JobRt *rt, Cleanup *c, State next, const char *user) {
    const char *v[] = {user};
    pool_query(rt, c, next, "SELECT backup_tombstones_purge($1::uuid)", 1, v);
}

static int on_uploads(Cleanup *c, const JobEv *ev) {
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < ev->n; i++) {
        long long at = storage_parse_time(ev->pending[i].initiated);
        if (at > 0 && now - at > STALE_UPLOAD) {
            push(&c->uploads, &c->nuploads, ev->pending[i].key);
            push(&c->uploads, &c->nuploads, ev->pending[i].upload_id);
        }
    }
    return 0;
}

static void abort_next(JobRt *rt, Cleanup *c, const JobEv *ev) {
    const char *log = job_log_id(jobrt_job(rt));
    if (ev->kind == JEV_LISTED && ev->err && strstr(ev->err->msg, "NotImplemented"))
        log_debug(log, "cleanup: cannot list uploads: %s", ev->err->msg); /* s3rver cannot */
    else if (ev->kind == JEV_LISTED && ev->err)
        log_warn(log, "cleanup: could not list uploads: %s", ev->err->msg);
    else if (ev->kind == JEV_STORED && ev->err)
        log_warn(log, "cleanup: could not abort an upload of %s: %s", c->uploads[c->upi - 2],
                 ev->err->msg);
    else if (ev->kind == JEV_STORED)
        c->aborted++;
    if (c->upi < c->nuploads) {
        c->state = ST_ABORT;
        c->upi += 2;
        jobrt_abort_pending(rt, ST_ABORT, JRT_SOFT, c->uploads[c->upi - 2], c->uploads[c->upi - 1]);
        return;
    }
    user_done(rt, c);
}

/* ---- scope=all: users page by page, each under its lock ---- */

static void next_user(JobRt *rt, Cleanup *c) {
    if (c->ui < c->nusers) {
        snprintf(c->last_user, sizeof(c->last_user), "%s", c->users[c->ui]);
        /* the user's lock first, as a job of that user would take it; a user whose backup or
         * restore runs now is left to the next cleanup */
        c->state = ST_LOCK;
        jobrt_user_lock(rt, ST_LOCK, c->users[c->ui]);
        return;
    }
    char page[8];
    snprintf(page, sizeof(page), "%d", USERS_PAGE);
    const char *v[] = {c->last_user, page};
    pool_query(rt, c, ST_USERS,
               "SELECT DISTINCT user_id::text FROM backup_metadata "
               "WHERE status IN ('completed', 'expired') AND user_id::text > $1 "
               "ORDER BY 1 LIMIT $2::int",
               2, v);
}

static void on_users(JobRt *rt, Cleanup *c, PGresult *res) {
    free_list(c->users, c->nusers);
    c->users = NULL;
    c->nusers = c->ui = 0;
    for (int k = 0; k < PQntuples(res); k++)
        push(&c->users, &c->nusers, PQgetvalue(res, k, 0));
    if (c->nusers == 0) { /* last page: tombstones of users without backups, parent-only ones */
        purge_tombstones(rt, c, ST_PURGE_ALL, NULL);
        return;
    }
    next_user(rt, c);
}

static void on_locked(JobRt *rt, Cleanup *c, int locked) {
    const char *user = c->users[c->ui];
    if (!locked) {
        log_info(job_log_id(jobrt_job(rt)), "cleanup: user %s skipped: another job of theirs runs",
                 user);
        c->users_busy++;
        c->ui++;
        next_user(rt, c);
        return;
    }
    clean_user(rt, c, user);
}

/* ---- the state machine ---- */

static void on_result(JobRt *rt, Cleanup *c, PGresult *res) {
    switch (c->state) {
    case ST_OWNER:
        if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "forbidden: %s is not the owner of account %s: only owners may clean up "
                        "backups",
                        c->spec->requested_by, c->spec->user_id);
            return;
        }
        clean_user(rt, c, c->spec->user_id);
        break;
    case ST_USERS:
        on_users(rt, c, res);
        break;
    case ST_EXPIRE:
        on_expired(rt, c, res);
        break;
    case ST_SEGMENTS:
        on_segments(rt, c, res);
        break;
    case ST_EXPORTS:
        on_exports(rt, c, res);
        break;
    case ST_MARK:
        c->deleted += strtoull(PQcmdTuples(res), NULL, 10);
        c->segments += (uint64_t)c->nsegs;
        c->exported += (uint64_t)c->nexports;
        purge_tombstones(rt, c, ST_PURGE, c->user);
        break;
    case ST_PURGE: {
        c->tombstones += strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        char prefix[64];
        layout_user_prefix(prefix, sizeof(prefix), c->user);
        c->state = ST_UPLOADS;
        jobrt_list_pending(rt, ST_UPLOADS, JRT_SOFT, prefix);
        break;
    }
    case ST_PURGE_ALL:
        c->tombstones += strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        done(rt, c);
        break;
    default:
        break;
    }
}

static int cleanup_step(JobRt *rt, void *st, const JobEv *ev) {
    Cleanup *c = st;
    switch (ev->kind) {
    case JEV_START: {
        c->spec = job_spec(jobrt_job(rt));
        const JobConfig *cfg = services_jobconfig(jobrt_services(rt));
        c->days = c->spec->retention_days ? c->spec->retention_days : cfg->backup_retention_days;
        job_progress(jobrt_job(rt), "starting", 0, 0, 0);
        if (c->spec->scope_all) {
            next_user(rt, c);
            break;
        }
        if (c->spec->requested_by[0] == 0) { /* the system's own run for one user */
            clean_user(rt, c, c->spec->user_id);
            break;
        }
        const char *v[] = {c->spec->requested_by, c->spec->user_id};
        pool_query(rt, c, ST_OWNER,
                   "SELECT $1::uuid = $2::uuid AND EXISTS (SELECT 1 FROM profiles p WHERE p.id = "
                   "$1::uuid AND (p.role = 'owner' OR EXISTS (SELECT 1 FROM businesses b "
                   "WHERE b.owner_id = p.id)))",
                   2, v);
        break;
    }
    case JEV_RESULT:
        on_result(rt, c, ev->res);
        break;
    case JEV_DELETED:
        on_deleted(rt, c, ev);
        break;
    case JEV_PAGE:
        return on_uploads(c, ev);
    case JEV_LISTED:
    case JEV_STORED:
        abort_next(rt, c, ev);
        break;
    case JEV_LOCKED:
        on_locked(rt, c, ev->locked);
        break;
    default:
        break;
    }
    return 0;
}

static void cleanup_release(void *st) {
    Cleanup *c = st;
    reset_user(c);
    free_list(c->users, c->nusers);
}

static const JobRtOps ops = {sizeof(Cleanup), cleanup_step, NULL, cleanup_release};

static void cleanup_run(Job *job) {
    jobrt_run(job, &ops);
}

static int cleanup_check(JobSpec *spec, Err *err) {
    if (spec->scope_all && spec->user_id[0] != '\0')
        return jobspec_refuse(
            err, "a cleanup with scope=all covers every user: drop the field 'user_id'");
    return spec->scope_all ? 0 : jobspec_need_user(spec, err);
}

const JobType job_type_cleanup = {
    .name = "cleanup",
    .fields = "user_id retention_days scope",
    .user_lock = 1,
    .check = cleanup_check,
    .summary = "delete a user's (scope=all: every user's) backups past retention",
    .run = cleanup_run,
    .cancel = jobrt_cancel,
};
