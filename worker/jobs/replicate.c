/*
 * replicate: one completed backup's object and manifest copied to the same keys in the
 * replica bucket (S3_REPLICA_BUCKET), streamed through the storage layer, the copy's
 * SHA-256 checked against the record.
 *
 *   RECORD    the backup (completed: an expired one is about to go), its key, checksum, size
 *   OBJECT    primary -> replica, streamed (the read holds while the replica is full); a
 *             primary object whose digest differs from the record is never stored (the
 *             upload is aborted before it completes). With S3_REPLICA_COPY server (or auto,
 *             both buckets on one service) the service copies it (CopyObject, UploadPartCopy
 *             for large ones) and the copy's digest, computed by S3 or read back, is checked
 *             (a wrong copy is deleted again); a service that refuses server-side copies
 *             makes the job stream instead
 *   MANIFEST  the same for <key>.manifest.json
 *   DONE      replica_status `completed`, replicated_at, if the backup is still completed and
 *             its wrapping (key_id, wrapped_key) is still the one read at RECORD: a rekey
 *             that rewrote the record (and the primary's manifest) meanwhile makes the job
 *             copy the manifest again (RECHECK, at most MAX_RECOPY times), so a copy never
 *             completes with a manifest under a key the record no longer names
 *   UPLOADS   the copy recorded: multipart uploads of this key a run killed mid-copy left in
 *             the replica are listed and aborted (ABORT), as a backup does in the primary (one
 *             that cannot be listed or aborted is only logged: the copy is whole)
 *   UNDO      it expired during the copy (a cleanup is deleting it, in both buckets, or did):
 *             the copy just made is deleted, so that no object outlives its backup
 *   SEGMENTS  then (and when the backup was already copied) the user's change segments not
 *             yet in the replica (BACKUP_TRACKING=wal, proto/sql/022; the capture's leader
 *             copies each as it is recorded, capture/segcopy.h: this is the catch-up for what
 *             it has not reached yet), oldest first, each
 *             copied the same way, checked against change_segments.checksum and recorded
 *             there (replica_status); one whose primary copy is missing or not the record's
 *             is recorded `failed` with the reason (verify names it too), and the job completes
 *             saying so: the backup's copy is whole
 *
 * Enqueued by the backup when it completes (job id `replicate-<backup id>`, so an
 * enqueue repeated is run once) and accepted from redis-cli like any other job. It takes no
 * user lock: a backup never waits for its copy. A failure while the replica is
 * unreachable is retried with the queue's backoff, an outage not counted as an attempt;
 * on the last attempt the record says `failed` with the reason, and `backupctl replicate
 * --missing` queues it again.
 */
#include "jobs/jobs.h"

#include "jobs/jobrt.h"
#include "format/layout.h"
#include "base/log.h"
#include "services.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    ST_RECORD,
    ST_OBJECT,
    ST_MANIFEST,
    ST_DONE,
    ST_RECHECK,
    ST_UPLOADS,
    ST_ABORT,
    ST_UNDO,
    ST_SEGLIST,
    ST_SEGCOPY,
    ST_SEGDONE,
} State;

#define MAX_RECOPY 5

typedef struct {
    State state;
    const JobSpec *spec;
    char id[JOBSPEC_ID_MAX + 1], user[37], key[LAYOUT_KEY_MAX + 32], checksum[65];
    uint64_t size;
    StorageCopy *copy;
    JobRt *rt;
    uint64_t copied;
    int server;          /* copies made by the service (S3_REPLICA_COPY), until it refuses one */
    int read_back;       /* the object's copy was read back to be hashed */
    char *kid, *wrapped; /* the record's wrapping when the manifest was copied ("" for none) */
    int recopies;
    char **stale; /* upload ids a killed run left in the replica, aborted before copying */
    int nstale, si;
    PGresult *segs; /* the user's segments not in the replica: id, key, checksum, size */
    int seg_i, seg_copied, seg_failed;
    Err seg_err;    /* the first segment that could not be copied */
    char note[200]; /* what the backup's copy did */
} Replicate;

static void done_query(JobRt *rt, Replicate *r) {
    r->state = ST_DONE;
    const char *v[] = {r->id, r->kid, r->wrapped};
    jobrt_pool_query(rt, ST_DONE, 0,
                     "UPDATE backup_metadata SET replica_status = 'completed', "
                     "replicated_at = now(), replica_error = NULL WHERE id = $1 "
                     "AND status = 'completed' AND coalesce(key_id, '') = $2 "
                     "AND coalesce(wrapped_key, '') = $3",
                     3, v);
}

static void copy_next(Replicate *r);

static void segment_copied(Replicate *r, const StorageWritten *res, const Err *err);

static void on_copied(StorageCopy *c, const StorageWritten *res, const Err *err, void *data) {
    Replicate *r = data;
    JobRt *rt = r->rt;
    if (jobrt_failing(rt)) /* torn down meanwhile: release frees the copy */
        return;
    int refused = r->server && storage_copy_refused(err);
    if (r->state == ST_SEGCOPY && !refused) {
        segment_copied(r, res, err);
        return;
    }
    if (refused) {
        /* the service will not copy (NotImplemented, AccessDenied across accounts...): the
         * bytes go through this worker instead */
        log_warn(job_log_id(jobrt_job(rt)),
                 "the replica refused a server-side copy (%s): streaming it instead", err->msg);
        r->server = 0;
        storage_copy_free(r->copy);
        r->copy = NULL;
        copy_next(r);
        return;
    }
    if (err && err->code == ERR_CODE_INVALID) { /* the primary's bytes are not the record's */
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "Backup checksum verification failed: backup %s was not replicated: %s", r->id,
                    err->msg);
        return;
    }
    if (err) {
        Err e = *err;
        err_prefix(&e, "replica of %s%s", r->key,
                   r->state == ST_MANIFEST ? LAYOUT_MANIFEST_EXT : "");
        jobrt_fail(rt, &e);
        return;
    }
    if (r->state == ST_OBJECT)
        r->read_back = storage_copy_read_back(c);
    r->copied += res->size;
    job_progress(jobrt_job(rt), r->state == ST_OBJECT ? "manifest" : "recording", 90, 0, r->copied);
    storage_copy_free(r->copy);
    r->copy = NULL;
    if (r->state == ST_OBJECT) {
        r->state = ST_MANIFEST;
        copy_next(r);
        return;
    }
    done_query(rt, r);
}

static void copy_next(Replicate *r) {
    Services *sv = jobrt_services(r->rt);
    char key[LAYOUT_KEY_MAX + 48];
    if (r->state == ST_MANIFEST)
        layout_manifest_key(key, sizeof(key), r->key);
    else if (r->state == ST_SEGCOPY)
        snprintf(key, sizeof(key), "%s", PQgetvalue(r->segs, r->seg_i, 1));
    else
        snprintf(key, sizeof(key), "%s", r->key);
    const char *ctype = r->state == ST_MANIFEST ? "application/json" : "application/octet-stream";
    /* the object is checked against the record; the manifest has no digest recorded */
    const char *sum = r->state == ST_OBJECT    ? r->checksum
                      : r->state == ST_SEGCOPY ? PQgetvalue(r->segs, r->seg_i, 2)
                                               : NULL;
    uint64_t size = r->state == ST_OBJECT    ? r->size
                    : r->state == ST_SEGCOPY ? strtoull(PQgetvalue(r->segs, r->seg_i, 3), NULL, 10)
                                             : 0; /* a manifest: one CopyObject */
    r->copy = r->server ? storage_copy_server_new(services_storage(sv), services_replica(sv), key,
                                                  size, ctype, sum, on_copied, r)
                        : NULL;
    if (r->copy == NULL) { /* streamed (or the stores cannot copy between themselves) */
        r->server = 0;
        r->copy = storage_copy_new(services_storage(sv), services_replica(sv), key, ctype, sum,
                                   size, on_copied, r);
    }
}

/* ---- the user's change segments ---- */

static void segments_start(JobRt *rt, Replicate *r) {
    const char *v[] = {r->user};
    r->state = ST_SEGLIST;
    jobrt_pool_query(rt, ST_SEGLIST, 0,
                     "SELECT id, s3_key, checksum, size FROM change_segments WHERE user_id = "
                     "$1::uuid AND replica_status IS NULL ORDER BY end_lsn, id LIMIT 10000",
                     1, v);
}

static void segment_next(JobRt *rt, Replicate *r) {
    int n = PQntuples(r->segs);
    /* a key outside the user's prefix is never copied (the capture writes none): named */
    for (; r->seg_i < n && !layout_key_is_users(PQgetvalue(r->segs, r->seg_i, 1), r->user);
         r->seg_i++)
        if (r->seg_failed++ == 0)
            err_set(&r->seg_err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "change segment %s has a key outside backups/%s/",
                    PQgetvalue(r->segs, r->seg_i, 0), r->user);
    if (r->seg_i < n) {
        job_progress(jobrt_job(rt), "change segments", 90 + 9 * r->seg_i / n, 0, r->copied);
        r->state = ST_SEGCOPY;
        copy_next(r);
        return;
    }
    if (r->seg_copied)
        log_info(job_log_id(jobrt_job(rt)), "replicated %d change segment%s of user %s",
                 r->seg_copied, r->seg_copied == 1 ? "" : "s", r->user);
    char note[ERR_MSG_MAX];
    int k = snprintf(note, sizeof(note), "%s; %d change segment%s copied", r->note, r->seg_copied,
                     r->seg_copied == 1 ? "" : "s");
    if (r->seg_failed)
        snprintf(note + k, sizeof(note) - (size_t)k, ", %d not (%.300s)", r->seg_failed,
                 r->seg_err.msg);
    job_set_note(jobrt_job(rt), r->seg_copied || r->seg_failed ? note : r->note);
    job_progress(jobrt_job(rt), "done", 100, 0, r->copied);
    jobrt_done(rt);
}

/* One segment copied (or not): recorded in change_segments, then the next. */
static void segment_copied(Replicate *r, const StorageWritten *res, const Err *err) {
    JobRt *rt = r->rt;
    storage_copy_free(r->copy);
    r->copy = NULL;
    const char *id = PQgetvalue(r->segs, r->seg_i, 0);
    int lost = storage_copy_source_lost(err);
    if (err && !lost) { /* an outage: the job is retried */
        Err e = *err;
        err_prefix(&e, "replica of change segment %s", PQgetvalue(r->segs, r->seg_i, 1));
        jobrt_fail(rt, &e);
        return;
    }
    char msg[ERR_MSG_MAX];
    if (err) {
        snprintf(msg, sizeof(msg), "%s: %.200s: %.200s",
                 err->code == ERR_CODE_INVALID ? "Change segment checksum verification failed"
                                               : "change segment missing in the primary",
                 PQgetvalue(r->segs, r->seg_i, 1), err->msg);
        if (r->seg_failed++ == 0)
            err_set(&r->seg_err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", msg);
        log_warn(job_log_id(jobrt_job(rt)), "%s", msg);
    } else {
        r->copied += res->size;
        r->seg_copied++;
    }
    const char *v[] = {id, err ? "failed" : "completed", err ? msg : NULL};
    r->state = ST_SEGDONE;
    jobrt_pool_query(rt, ST_SEGDONE, 0,
                     "UPDATE change_segments SET replica_status = $2, replicated_at = CASE WHEN "
                     "$2 = 'completed' THEN now() END, replica_error = $3 WHERE id = $1",
                     3, v);
}

static void on_record(JobRt *rt, Replicate *r, PGresult *res) {
    if (PQntuples(res) != 1) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s not found", r->spec->backup_id);
        return;
    }
    const char *status = PQgetvalue(res, 0, 3), *replica = PQgetvalue(res, 0, 5);
    snprintf(r->id, sizeof(r->id), "%s", PQgetvalue(res, 0, 0));
    snprintf(r->user, sizeof(r->user), "%s", PQgetvalue(res, 0, 1));
    if (r->spec->user_id[0] && strcmp(r->spec->user_id, r->user) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "forbidden: backup %s does not belong to user %s", r->id, r->spec->user_id);
        return;
    }
    if (strcmp(status, "completed") != 0) { /* expired: about to be deleted, in both */
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s is %s: nothing to replicate",
                    r->id, status);
        return;
    }
    const char *key = PQgetvalue(res, 0, 2), *sum = PQgetvalue(res, 0, 4);
    if (!layout_key_is_users(key, r->user) || strlen(sum) != 64) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "backup %s has no usable key or checksum in backup_metadata", r->id);
        return;
    }
    if (strcmp(replica, "completed") == 0) { /* the user's segments may still be missing */
        snprintf(r->note, sizeof(r->note), "already replicated");
        segments_start(rt, r);
        return;
    }
    snprintf(r->key, sizeof(r->key), "%s", key);
    snprintf(r->checksum, sizeof(r->checksum), "%s", sum);
    r->size = strtoull(PQgetvalue(res, 0, 6), NULL, 10);
    r->kid = xstrdup(PQgetvalue(res, 0, 7));
    r->wrapped = xstrdup(PQgetvalue(res, 0, 8));
    log_info(job_log_id(jobrt_job(rt)), "replicating %s (%" PRIu64 " bytes) to the replica", r->id,
             r->size);
    job_progress(jobrt_job(rt), "copying", 0, 0, 0);
    r->state = ST_OBJECT;
    copy_next(r);
}

/* The copy is complete; the uploads earlier runs left are aborted, one by one, then the job is
 * done (a failure here is only said: the copy itself is whole). */
static void abort_next_stale(JobRt *rt, Replicate *r, const JobEv *ev) {
    const char *log = job_log_id(jobrt_job(rt));
    if (ev->kind == JEV_LISTED && ev->err && strstr(ev->err->msg, "NotImplemented"))
        log_debug(log, "cannot list stale uploads in the replica: %s", ev->err->msg);
    else if (ev->kind == JEV_LISTED && ev->err)
        log_warn(log, "could not list stale uploads in the replica: %s", ev->err->msg);
    else if (ev->kind == JEV_STORED && ev->err)
        log_warn(log, "could not abort a stale upload of %s in the replica: %s", r->key,
                 ev->err->msg);
    if (r->si < r->nstale) {
        r->state = ST_ABORT;
        jobrt_abort_pending_from(rt, services_replica(jobrt_services(rt)), ST_ABORT, JRT_SOFT,
                                 r->key, r->stale[r->si++]);
        return;
    }
    if (r->nstale)
        log_info(log, "aborted %d multipart upload(s) a previous copy left in the replica",
                 r->nstale);
    snprintf(r->note, sizeof(r->note), "%s",
             !r->server     ? "object and manifest copied (streamed), SHA-256 checked"
             : r->read_back ? "object and manifest copied server-side, SHA-256 checked (read back)"
                            : "object and manifest copied server-side, SHA-256 checked (computed "
                              "by S3)");
    services_replica_copied(jobrt_services(rt), r->copied, 0);
    segments_start(rt, r);
}

/* The copy could not be recorded: a backup still completed whose wrapping changed (a rekey
 * rewrote its record and its primary manifest) gets its manifest copied again; otherwise it
 * expired during the copy, which is removed (UNDO). */
static void on_recheck(JobRt *rt, Replicate *r, PGresult *res) {
    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "completed") == 0 &&
        (strcmp(PQgetvalue(res, 0, 1), r->kid) != 0 ||
         strcmp(PQgetvalue(res, 0, 2), r->wrapped) != 0)) {
        log_info(job_log_id(jobrt_job(rt)),
                 "%s was rekeyed during its copy (now under '%s'): copying its manifest again",
                 r->id, PQgetvalue(res, 0, 1));
        free(r->kid);
        free(r->wrapped);
        r->kid = xstrdup(PQgetvalue(res, 0, 1));
        r->wrapped = xstrdup(PQgetvalue(res, 0, 2));
        r->recopies++;
        r->state = ST_MANIFEST;
        copy_next(r);
        return;
    }
    char mkey[LAYOUT_KEY_MAX + 48];
    layout_manifest_key(mkey, sizeof(mkey), r->key);
    const char *keys[] = {r->key, mkey};
    r->state = ST_UNDO;
    jobrt_delete_from(rt, services_replica(jobrt_services(rt)), ST_UNDO, 0, keys, 2);
}

static int replicate_step(JobRt *rt, void *st, const JobEv *ev) {
    Replicate *r = st;
    switch (ev->kind) {
    case JEV_START:
        r->rt = rt;
        r->spec = job_spec(jobrt_job(rt));
        job_set_backup_id(jobrt_job(rt), r->spec->backup_id);
        if (services_replica(jobrt_services(rt)) == NULL) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_CONFIG, "%s",
                        "no replica is configured (S3_REPLICA_BUCKET)");
            break;
        }
        r->state = ST_RECORD;
        r->server = services_config(jobrt_services(rt))->s3_replica_server_copy;
        const char *v[] = {r->spec->backup_id};
        jobrt_pool_query(rt, ST_RECORD, 0,
                         "SELECT id, user_id::text, coalesce(s3_key, ''), status, "
                         "coalesce(checksum, ''), coalesce(replica_status, ''), coalesce(size, 0), "
                         "coalesce(key_id, ''), coalesce(wrapped_key, '') "
                         "FROM backup_metadata WHERE id = $1",
                         1, v);
        break;
    case JEV_RESULT:
        if (r->state == ST_SEGLIST) {
            r->segs = PQcopyResult(ev->res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
            r->seg_i = 0;
            segment_next(rt, r);
        } else if (r->state == ST_SEGDONE) {
            r->seg_i++;
            segment_next(rt, r);
        } else if (r->state == ST_RECORD) {
            on_record(rt, r, ev->res);
        } else if (r->state == ST_RECHECK) {
            on_recheck(rt, r, ev->res);
        } else if (strcmp(PQcmdTuples(ev->res), "1") != 0 && r->recopies < MAX_RECOPY) {
            /* expired, or rewrapped by a rekey since the record was read: which one */
            r->state = ST_RECHECK;
            const char *id[] = {r->id};
            jobrt_pool_query(rt, ST_RECHECK, 0,
                             "SELECT status, coalesce(key_id, ''), coalesce(wrapped_key, '') "
                             "FROM backup_metadata WHERE id = $1",
                             1, id);
        } else if (strcmp(PQcmdTuples(ev->res), "1") != 0) {
            jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_BUSY,
                        "backup %s was rekeyed %d times during its copy: copied again later", r->id,
                        r->recopies);
        } else { /* recorded: what a killed earlier run left in the replica goes */
            r->state = ST_UPLOADS;
            jobrt_list_pending_from(rt, services_replica(jobrt_services(rt)), ST_UPLOADS, JRT_SOFT,
                                    r->key);
        }
        break;
    case JEV_PAGE:
        jobrt_pending_of(ev, r->key, &r->stale, &r->nstale);
        return 0;
    case JEV_LISTED:
        abort_next_stale(rt, r, ev);
        break;
    case JEV_STORED:
        if (r->state == ST_ABORT)
            abort_next_stale(rt, r, ev);
        break;
    case JEV_DELETED: /* ST_UNDO: a delete that failed fails the job (retried) */
        if (ev->failed) {
            jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_HTTP,
                        "backup %s expired during its copy, and the copy could not be removed "
                        "from the replica yet",
                        r->id);
            break;
        }
        job_set_note(jobrt_job(rt), "the backup expired during its copy: the copy was removed");
        jobrt_done(rt);
        break;
    default:
        break;
    }
    return 0;
}

/* Not completed: the record says why, `pending` while a retry follows, `failed` at the end. */
static int replicate_record(JobRt *rt, void *st, int k) {
    Replicate *r = st;
    if (k > 0 || r->id[0] == 0 || r->segs) /* (the backup's copy is recorded already) */
        return 0;
    if (jobrt_err(rt)->code != ERR_CODE_CANCELLED) /* a worker's stop is no failure */
        services_replica_copied(jobrt_services(rt), 0, 1);
    const char *v[] = {r->id, jobrt_final(rt) ? "failed" : "pending", jobrt_err(rt)->msg};
    jobrt_record_query(rt,
                       "UPDATE backup_metadata SET replica_status = $2, replica_error = $3 "
                       "WHERE id = $1 AND replica_status IS DISTINCT FROM 'completed'",
                       3, v);
    return 1;
}

static void replicate_release(void *st) {
    Replicate *r = st;
    storage_copy_free(r->copy); /* mid-copy: the replica's upload is aborted, nothing stored */
    free(r->kid);
    free(r->wrapped);
    for (int i = 0; i < r->nstale; i++)
        free(r->stale[i]);
    free(r->stale);
    PQclear(r->segs);
}

static const JobRtOps ops = {sizeof(Replicate), replicate_step, replicate_record,
                             replicate_release};

static void replicate_run(Job *job) {
    jobrt_run(job, &ops);
}

static int replicate_check(JobSpec *spec, Err *err) {
    if (spec->backup_id[0] == '\0')
        return jobspec_refuse(err, "missing field 'backup_id' (the backup to copy to the replica)");
    return 0;
}

const JobType job_type_replicate = {
    .name = "replicate",
    .fields = "user_id backup_id",
    .check = replicate_check,
    .summary = "copy a completed backup to the replica region (S3_REPLICA_*)",
    .run = replicate_run,
    .cancel = jobrt_cancel,
};
