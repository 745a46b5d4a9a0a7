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
 *   SEGMENTS  for a user: each change segment (BACKUP_TRACKING=wal) read whole, its SHA-256
 *             against change_segments.checksum, decoded, every line of the segment format with
 *             the trailer's count; recorded in change_segments.verified_at, verify_status,
 *             verify_error (a segment cleanup deleted meanwhile is skipped)
 * It holds the user's lock (like backup, restore and cleanup), so a cleanup of the same user
 * waits for it; a cleanup of every user (scope=all) may still race it: hence the skip.
 *
 * The job completes when every backup passed, and fails (permanently: a
 * retry reads the same bytes) naming how many did not and the first reason.
 */
#include "jobs/jobs.h"

#include "capture/changes.h"
#include "capture/segfile.h"
#include "format/bcheck.h"
#include "format/bfile.h"
#include "base/buf.h"
#include "jobs/jobconfig.h"
#include "jobs/jobrt.h"
#include "format/layout.h"
#include "base/log.h"
#include "format/manifest.h"
#include "services.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    ST_LIST,
    ST_MANIFEST,
    ST_KEY,
    ST_OBJECT,
    ST_RECORD,
    ST_SEGLIST,
    ST_SEGGET,
    ST_SEGRECORD,
} State;

typedef struct {
    char id[JOBSPEC_ID_MAX + 1], key[LAYOUT_KEY_MAX], checksum[65];
    CodecList codecs;
    char *row_counts; /* backup_metadata.row_counts as text */
    uint64_t size;
    char key_id[CRYPT_ID_MAX + 1], *wrapped; /* encrypted: the record's wrapping */
    char origin_key_id[CRYPT_ID_MAX + 1];    /* the key of the object header's own */
    int hash_only; /* encrypted, and the key is not here: the stored bytes' SHA-256 only */
    int replica_ok, from_replica; /* its replica copy completed; being read from there */
    char fallback[ERR_MSG_MAX];   /* why the primary copy was not used */
} Item;

typedef struct {
    State state;
    const JobSpec *spec;
    Item *items;
    int n, i, failed, skipped, hash_only, replicas;
    char user[37];
    Manifest manifest; /* the current item's */
    Err first, err;
    uint64_t rows, bytes;
    PGresult *segs; /* the user's change segments: id, key, checksum, size, codecs */
    int seg_i, seg_failed, seg_skipped;
    uint64_t changes;
} Verify;

static void next_item(JobRt *rt, Verify *v);
static void check_object(JobRt *rt, Verify *v, const JobKey *key, int header_key);
static int fall_back(JobRt *rt, Verify *v, const Err *why);

/* The current backup's outcome, recorded, then logged and counted. A backup a cleanup is
 * removing (status no longer 'completed') is neither: its object may be half gone. */
static void record(JobRt *rt, Verify *v, const Err *err) {
    Item *it = &v->items[v->i];
    err_clear(&v->err);
    if (err)
        v->err = *err;
    /* passed from the replica: ok, and the primary's failure kept where an operator looks */
    char note[ERR_MSG_MAX + 64];
    snprintf(note, sizeof(note), "the primary copy failed (%.400s); verified from the replica",
             it->fallback);
    if (!err && it->from_replica)
        v->replicas++;
    const char *p[] = {it->id, err ? "failed" : "ok",
                       err                ? err->msg
                       : it->from_replica ? note
                                          : NULL};
    v->state = ST_RECORD;
    jobrt_pool_query(
        rt, ST_RECORD, JRT_SOFT,
        "UPDATE backup_metadata SET verified_at = now(), verify_status = $2, "
        "verify_error = $3 WHERE id = $1 AND status = 'completed' RETURNING verify_status",
        3, p);
}

static void on_recorded(JobRt *rt, Verify *v, const JobEv *ev) {
    Item *it = &v->items[v->i];
    const char *log = job_log_id(jobrt_job(rt));
    if (ev->err) {
        log_warn(log, "could not record the verification of %s: %s", it->id, ev->err->msg);
    } else if (PQntuples(ev->res) == 0) {
        /* no longer completed: a cleanup expired or deleted it while we read it */
        log_info(log, "verify %s: skipped, a cleanup is deleting it", it->id);
        v->skipped++;
    } else if (strcmp(PQgetvalue(ev->res, 0, 0), "failed") == 0) {
        if (v->failed++ == 0)
            v->first = v->err;
        log_warn(log, "verify %s: FAILED: %s", it->id, v->err.msg);
    } else {
        log_info(log, "verify %s: ok", it->id);
    }
    v->i++;
    next_item(rt, v);
}

static int count_item(JobRt *rt, Verify *v, const JobEv *ev) {
    if (ev->section == 0 && (++v->rows & 0xfff) == 0)
        job_progress(jobrt_job(rt), v->items[v->i].id, v->i * 100 / v->n, v->rows, v->bytes);
    return 0;
}

/* Per-table counts of the manifest ("rows") against backup_metadata.row_counts and the
 * document. -1 with err naming the first difference. */
static int counts_agree(Verify *v, const BCheck *c, Err *err) {
    const Item *it = &v->items[v->i];
    const char *p = v->manifest.rows, *end = p + strlen(p);
    char table[64];
    uint64_t want, meta;
    int rc;
    while ((rc = manifest_counts_next(&p, end, table, sizeof(table), &want)) == 1) {
        if (manifest_count_of(it->row_counts, table, &meta) != 0 || meta != want) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "%s: the manifest counts %" PRIu64 " %s rows, backup_metadata %s", it->id, want,
                    table, manifest_count_of(it->row_counts, table, &meta) ? "none" : "differs");
            return -1;
        }
        if (!it->hash_only && bcheck_count(c, 0, table) != want) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "%s: the manifest counts %" PRIu64 " %s rows, the object holds %" PRIu64,
                    it->id, want, table, bcheck_count(c, 0, table));
            return -1;
        }
    }
    if (rc < 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "manifest of %s has unreadable row counts",
                it->id);
        return -1;
    }
    return 0;
}

static void on_checked(JobRt *rt, Verify *v, const JobEv *ev) {
    v->bytes += bcheck_bytes(ev->check);
    Err e;
    if (ev->err == NULL && counts_agree(v, ev->check, &e) == 0)
        record(rt, v, NULL);
    else if (!fall_back(rt, v, ev->err ? ev->err : &e))
        record(rt, v, ev->err ? ev->err : &e);
}

/* The primary's copy failed (why): start the backup again from the replica's manifest, if
 * it has a copy there. 1 when it did. */
static int fall_back(JobRt *rt, Verify *v, const Err *why) {
    Item *it = &v->items[v->i];
    Storage *replica = services_replica(jobrt_services(rt));
    if (it->from_replica || !it->replica_ok || replica == NULL || why->code == ERR_CODE_CANCELLED ||
        strcmp(v->spec->from, "primary") == 0) /* from=primary: that copy alone is verified */
        return 0;
    log_warn(job_log_id(jobrt_job(rt)),
             "verify %s: the primary copy failed (%s): checking the "
             "replica's",
             it->id, why->msg);
    snprintf(it->fallback, sizeof(it->fallback), "%s", why->msg);
    it->from_replica = 1;
    char key[LAYOUT_KEY_MAX + 16];
    layout_manifest_key(key, sizeof(key), it->key);
    v->state = ST_MANIFEST;
    jobrt_get_from(rt, replica, ST_MANIFEST, JRT_SOFT, key, MANIFEST_MAX_BYTES);
    return 1;
}

static void on_manifest(JobRt *rt, Verify *v, const JobEv *ev) {
    Item *it = &v->items[v->i];
    Err e;
    if (ev->err) {
        e = *ev->err;
        err_prefix(&e, "%s: manifest %s%s", it->id, it->key, LAYOUT_MANIFEST_EXT);
        if (!fall_back(rt, v, &e))
            record(rt, v, &e);
        return;
    }
    const Buf *body = ev->sres->body;
    if (manifest_parse(body->data, body->len, &v->manifest, &e) != 0 ||
        strcmp(v->manifest.backup_id, it->id) != 0) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID, "%s: the manifest is not this backup's",
                it->id);
        record(rt, v, &e);
        return;
    }
    const Manifest *m = &v->manifest;
    if (strcmp(m->sha256, it->checksum) != 0 || m->size != it->size) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "%s: the manifest (sha256 %.16s..., %" PRIu64 " bytes) disagrees with "
                "backup_metadata (%.16s..., %" PRIu64 " bytes)",
                it->id, m->sha256, m->size, it->checksum, it->size);
        record(rt, v, &e);
        return;
    }
    char a[64], b[64];
    codec_list_csv(&it->codecs, a, sizeof(a));
    codec_list_csv(&m->codecs, b, sizeof(b));
    if (strcmp(a, b) != 0) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "%s: the manifest's codecs (%s) disagree with backup_metadata (%s)", it->id, b, a);
        record(rt, v, &e);
        return;
    }
    const Keys *keys = services_jobconfig(jobrt_services(rt))->keys;
    int encrypted = codec_list_encrypted(&it->codecs);
    if (keys_required(keys) && !encrypted) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "%s is not encrypted, and BACKUP_ENCRYPTION=required trusts only what a known "
                "key opens: a restore would refuse it",
                it->id);
        record(rt, v, &e);
        return;
    }
    /* without the key, the stored bytes' digest is still checked; with it, every chunk too (the
     * record's key, else the one of the object header's own wrapping) */
    int header_key = encrypted && !keys_has(keys, it->key_id) &&
                     keys_has(keys, it->origin_key_id) && !keys_is_kms(it->origin_key_id);
    it->hash_only = encrypted && !keys_has(keys, it->key_id) && !header_key;
    if (keys_required(keys) && it->hash_only) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "%s is encrypted under key '%s', which this deployment does not know, and "
                "BACKUP_ENCRYPTION=required trusts only what a known key opens",
                it->id, it->key_id);
        record(rt, v, &e);
        return;
    }
    if (header_key) {
        check_object(rt, v, NULL, 1);
        return;
    }
    if (it->hash_only) {
        v->hash_only++;
        log_info(job_log_id(jobrt_job(rt)),
                 "verify %s: key '%s' is not here: checking the stored bytes' SHA-256 only", it->id,
                 it->key_id);
    }
    if (encrypted && !it->hash_only) {
        v->state = ST_KEY;
        jobrt_datakey_open(rt, ST_KEY, JRT_SOFT, it->key_id, it->wrapped, v->user, it->id);
        return;
    }
    check_object(rt, v, NULL, 0);
}

/* The object through bcheck; key: an encrypted object's data key (NULL: SHA-256 only, or with
 * header_key the key of the object's own wrapping). */
static void check_object(JobRt *rt, Verify *v, const JobKey *key, int header_key) {
    Item *it = &v->items[v->i];
    Buf codecs = BUF_INIT;
    codec_list_json(&it->codecs, &codecs);
    CryptParams cp = {.user_id = v->user,
                      .backup_id = it->id,
                      .codecs_json = codecs.data,
                      .have_dek = !header_key,
                      .unwrap = keys_unwrap_fn,
                      .unwrap_data = (void *)services_jobconfig(jobrt_services(rt))->keys};
    if (key)
        memcpy(cp.dek, key->dek, CRYPT_KEY_LEN);
    BCheckTarget t = {it->id,
                      v->user,
                      it->key,
                      it->checksum,
                      &it->codecs,
                      key || header_key ? &cp : NULL,
                      it->from_replica ? services_replica(jobrt_services(rt)) : NULL};
    v->state = ST_OBJECT;
    jobrt_check(rt, ST_OBJECT, JRT_SOFT, &t, 1);
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&codecs);
}

/* ---- the user's change segments ---- */

static void next_segment(JobRt *rt, Verify *v);

static int count_change(const ChangesItem *it, void *data, Err *err) {
    (void)it, (void)err;
    ((Verify *)data)->changes++;
    return 0;
}

static void on_segment(JobRt *rt, Verify *v, const JobEv *ev) {
    const char *id = PQgetvalue(v->segs, v->seg_i, 0), *key = PQgetvalue(v->segs, v->seg_i, 1);
    Err e;
    int rc = -1;
    if (ev->err) {
        e = *ev->err;
    } else {
        v->bytes += ev->count;
        rc = changes_read(ev->buf, ev->len, v->user, count_change, v, &e);
        if (rc != 0)
            err_prefix(&e, "change segment %s", key);
    }
    err_clear(&v->err);
    if (rc != 0)
        v->err = e;
    const char *p[] = {id, rc ? "failed" : "ok", rc ? e.msg : NULL};
    v->state = ST_SEGRECORD;
    jobrt_pool_query(rt, ST_SEGRECORD, JRT_SOFT,
                     "UPDATE change_segments SET verified_at = now(), verify_status = $2, "
                     "verify_error = $3 WHERE id = $1 RETURNING verify_status",
                     3, p);
}

static void on_segment_recorded(JobRt *rt, Verify *v, const JobEv *ev) {
    const char *id = PQgetvalue(v->segs, v->seg_i, 0), *log = job_log_id(jobrt_job(rt));
    if (ev->err) {
        log_warn(log, "could not record the verification of segment %s: %s", id, ev->err->msg);
    } else if (PQntuples(ev->res) == 0) { /* a cleanup deleted it meanwhile */
        v->seg_skipped++;
    } else if (v->err.msg[0]) {
        if (v->failed++ == 0)
            v->first = v->err;
        v->seg_failed++;
        log_warn(log, "verify: change segment %s FAILED: %s", id, v->err.msg);
    }
    v->seg_i++;
    next_segment(rt, v);
}

static void finish(JobRt *rt, Verify *v);

static void next_segment(JobRt *rt, Verify *v) {
    int n = PQntuples(v->segs);
    if (v->seg_i < n) {
        const char *key = PQgetvalue(v->segs, v->seg_i, 1);
        job_progress(jobrt_job(rt), PQgetvalue(v->segs, v->seg_i, 0), 99, v->rows, v->bytes);
        if (!layout_key_is_users(key, v->user)) {
            Err e;
            err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                    "change segment %s is recorded under a key outside backups/%s/",
                    PQgetvalue(v->segs, v->seg_i, 0), v->user);
            if (v->failed++ == 0)
                v->first = e;
            v->seg_failed++;
            v->seg_i++;
            next_segment(rt, v);
            return;
        }
        uint64_t size = strtoull(PQgetvalue(v->segs, v->seg_i, 3), NULL, 10);
        const PGresult *g = v->segs;
        int i = v->seg_i;
        SegFileRecord rec = {PQgetvalue(g, i, 0),
                             key,
                             v->user,
                             PQgetvalue(g, i, 2),
                             PQgetvalue(g, i, 4),
                             PQgetvalue(g, i, 5),
                             PQgetvalue(g, i, 6)};
        v->state = ST_SEGGET;
        jobrt_segment(rt, ST_SEGGET, JRT_SOFT, NULL, &rec, (size_t)size + 1);
        return;
    }
    finish(rt, v);
}

static void next_item(JobRt *rt, Verify *v) {
    if (v->i == v->n && v->spec->backup_id[0] == '\0' && v->segs == NULL) {
        /* a user's verify: their change segments too */
        const char *p[] = {v->user};
        v->state = ST_SEGLIST;
        jobrt_pool_query(rt, ST_SEGLIST, 0,
                         "SELECT id, s3_key, checksum, size, array_to_string(codecs, ','), "
                         "coalesce(key_id, ''), coalesce(wrapped_key, '') "
                         "FROM change_segments WHERE user_id = $1::uuid ORDER BY end_lsn, id",
                         1, p);
        return;
    }
    if (v->i == v->n) {
        finish(rt, v);
        return;
    }
    Item *it = &v->items[v->i];
    job_progress(jobrt_job(rt), it->id, v->i * 100 / v->n, v->rows, v->bytes);
    char key[LAYOUT_KEY_MAX + 16];
    layout_manifest_key(key, sizeof(key), it->key);
    v->state = ST_MANIFEST;
    jobrt_get_from(rt, it->from_replica ? services_replica(jobrt_services(rt)) : jobrt_storage(rt),
                   ST_MANIFEST, JRT_SOFT, key, MANIFEST_MAX_BYTES);
}

static void finish(JobRt *rt, Verify *v) {
    int nseg = v->segs ? PQntuples(v->segs) - v->seg_skipped : 0;
    if (v->failed) {
        int bad = v->failed - v->seg_failed;
        char segs[80] = "";
        if (v->seg_failed)
            snprintf(segs, sizeof(segs), "%s%d of %d change segment%s", bad ? " and " : "",
                     v->seg_failed, nseg, nseg == 1 ? "" : "s");
        char backups[64] = "";
        if (bad || !v->seg_failed)
            snprintf(backups, sizeof(backups), "%d of %d backup%s", bad, v->n, v->n > 1 ? "s" : "");
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s%s failed verification: %s", backups,
                    segs, v->first.msg);
        return;
    }
    char note[240];
    int ok = v->n - v->skipped, k;
    k = snprintf(note, sizeof(note), "%d backup%s verified", ok, ok == 1 ? "" : "s");
    if (v->skipped)
        k += snprintf(note + k, sizeof(note) - (size_t)k, ", %d skipped (being deleted)",
                      v->skipped);
    if (v->hash_only)
        k += snprintf(note + k, sizeof(note) - (size_t)k,
                      ", %d by SHA-256 only (their key is not here)", v->hash_only);
    if (v->replicas)
        k += snprintf(note + k, sizeof(note) - (size_t)k, ", %d from the replica", v->replicas);
    if (nseg)
        snprintf(note + k, sizeof(note) - (size_t)k,
                 "; %d change segment%s verified (%" PRIu64 " changes)", nseg, nseg == 1 ? "" : "s",
                 v->changes);
    job_set_note(jobrt_job(rt), note);
    job_progress(jobrt_job(rt), "done", 100, v->rows, v->bytes);
    jobrt_done(rt);
}

static void on_list(JobRt *rt, Verify *v, PGresult *res) {
    int n = PQntuples(res);
    if (n == 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "no completed backup to verify (%s)",
                    v->spec->backup_id[0] ? v->spec->backup_id : v->spec->user_id);
        return;
    }
    const char *user = PQgetvalue(res, 0, 1);
    if (v->spec->user_id[0] && strcmp(user, v->spec->user_id) != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "forbidden: backup %s does not belong to user %s", v->spec->backup_id,
                    v->spec->user_id);
        return;
    }
    snprintf(v->user, sizeof(v->user), "%s", user);
    v->items = xcalloc((size_t)n, sizeof(Item));
    v->n = n;
    for (int k = 0; k < n; k++) {
        Item *it = &v->items[k];
        Err e;
        snprintf(it->id, sizeof(it->id), "%s", PQgetvalue(res, k, 0));
        snprintf(it->key, sizeof(it->key), "%s", PQgetvalue(res, k, 2));
        snprintf(it->checksum, sizeof(it->checksum), "%s", PQgetvalue(res, k, 3));
        it->row_counts = xstrdup(PQgetvalue(res, k, 5));
        it->size = strtoull(PQgetvalue(res, k, 6), NULL, 10);
        snprintf(it->key_id, sizeof(it->key_id), "%s", PQgetvalue(res, k, 7));
        it->wrapped = xstrdup(PQgetvalue(res, k, 8));
        snprintf(it->origin_key_id, sizeof(it->origin_key_id), "%s", PQgetvalue(res, k, 9));
        it->replica_ok = strcmp(PQgetvalue(res, k, 10), "completed") == 0;
        it->from_replica = strcmp(v->spec->from, "replica") == 0 && it->replica_ok;
        if (!layout_key_is_users(PQgetvalue(res, k, 2), user) || strlen(it->checksum) != 64 ||
            codec_list_parse(PQgetvalue(res, k, 4), &it->codecs, &e) != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s has no usable key, checksum or codecs in backup_metadata",
                        it->id);
            return;
        }
    }
    v->i = 0;
    next_item(rt, v);
}

static int verify_step(JobRt *rt, void *st, const JobEv *ev) {
    Verify *v = st;
    switch (ev->kind) {
    case JEV_START: {
        v->spec = job_spec(jobrt_job(rt));
        if (v->spec->backup_id[0])
            job_set_backup_id(jobrt_job(rt), v->spec->backup_id);
        job_progress(jobrt_job(rt), "starting", 0, 0, 0);
        const char *p[] = {v->spec->backup_id, v->spec->user_id[0] ? v->spec->user_id : NULL};
        v->state = ST_LIST;
        jobrt_pool_query(
            rt, ST_LIST, 0,
            "SELECT id, user_id::text, coalesce(s3_key, ''), coalesce(checksum, ''), "
            " " BW_SQL_CODECS(
                "m") ", coalesce(row_counts::text, ''), "
                     "coalesce(size, 0), coalesce(key_id, ''), coalesce(wrapped_key, ''), "
                     "coalesce(origin_key_id, key_id, ''), coalesce(replica_status, '') "
                     "FROM backup_metadata m "
                     "WHERE status IN ('completed', 'expired') AND "
                     "(id = $1 OR ($1 = '' AND user_id = $2::uuid)) ORDER BY created_at, id",
            2, p);
        break;
    }
    case JEV_RESULT:
        if (v->state == ST_LIST) {
            on_list(rt, v, ev->res);
        } else if (v->state == ST_SEGLIST) {
            v->segs = PQcopyResult(ev->res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
            next_segment(rt, v);
        } else if (v->state == ST_SEGRECORD) {
            on_segment_recorded(rt, v, ev);
        } else {
            on_recorded(rt, v, ev);
        }
        break;
    case JEV_SEGMENT:
        on_segment(rt, v, ev);
        break;
    case JEV_STORED:
        on_manifest(rt, v, ev);
        break;
    case JEV_ITEM:
        return count_item(rt, v, ev);
    case JEV_CHECKED:
        on_checked(rt, v, ev);
        break;
    case JEV_KEY:
        if (ev->err) /* the key does not open this backup's data key: a failure of this backup */
            record(rt, v, ev->err);
        else
            check_object(rt, v, ev->key, 0);
        break;
    default:
        break;
    }
    return 0;
}

static void verify_release(void *st) {
    Verify *v = st;
    for (int i = 0; i < v->n; i++) {
        free(v->items[i].row_counts);
        free(v->items[i].wrapped);
    }
    free(v->items);
    PQclear(v->segs);
}

static const JobRtOps ops = {sizeof(Verify), verify_step, NULL, verify_release};

static void verify_run(Job *job) {
    jobrt_run(job, &ops);
}

static int verify_check(JobSpec *spec, Err *err) {
    if (spec->backup_id[0] == '\0' && spec->user_id[0] == '\0')
        return jobspec_refuse(err, "a verify job needs 'backup_id' or 'user_id'");
    /* a backup id names its user (kind-<uuid>-stamp): verify takes that user's lock */
    if (spec->user_id[0] == '\0' && layout_user_of_backup_id(spec->backup_id, spec->user_id) != 0)
        spec->user_id[0] = '\0';
    return 0;
}

const JobType job_type_verify = {
    .name = "verify",
    .fields = "user_id backup_id from",
    .user_lock = 1,
    .check = verify_check,
    .summary = "read a backup (or each of a user's) end to end and check its checksums",
    .run = verify_run,
    .cancel = jobrt_cancel,
};
