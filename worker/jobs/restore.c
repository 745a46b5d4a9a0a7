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

#define PUT_BATCH    (256u * 1024)
#define MAX_BUFFERED (4 * PUT_BATCH) /* staged text held while a COPY opens or drains */
#define MAX_CHAIN    1000

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
        uint64_t same = r->expected[i] - r->ins[i] - r->upd[i];
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
    log_info(job_log_id(jobrt_job(rt)), "%s %s (%d backup%s): %" PRIu64 " rows; %s",
             dry ? "dry run of" : "restored", r->spec->backup_id, r->nsteps,
             r->nsteps > 1 ? "s" : "", total, what);
    buf_printf(&result,
               "{\"dry_run\":%s,\"inserted\":%" PRIu64 ",\"updated\":%" PRIu64
               ",\"deleted\":%" PRIu64 ",\"unchanged\":%" PRIu64 ",\"tables\":%s}",
               dry ? "true" : "false", sum[0], sum[1], sum[2], sum[3], changes.data);
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

/* ---- STAGE: one backup object streamed into the staging tables ----
 *
 * The object holds each table's rows together, so a step is one COPY per table in turn. Rows
 * are turned into COPY text as they come and queued per staging table (segs); the queue is
 * pumped into the open COPY, which is ended and the next one opened when the table changes.
 * The reader is held while the queue is over MAX_BUFFERED or the connection's output is full:
 * memory stays bounded whatever the object's size. */

static void step_staged(JobRt *rt, Restore *r);
static int to_replica(JobRt *rt, Restore *r, Step *st, const Err *why);

static void segs_drop(Restore *r) {
    for (int k = 0; k < r->nsegs; k++)
        buf_free(&r->segs[k].b);
    r->nsegs = 0;
    r->buffered = 0;
}

static void seg_pop(Restore *r) {
    buf_free(&r->segs[0].b);
    memmove(r->segs, r->segs + 1, (size_t)(r->nsegs - 1) * sizeof(Seg));
    r->nsegs--;
}

/* The buffer a row of dest goes to: the last one if it is dest's (and, unless the row goes
 * straight into the COPY, not already big: a queue is cut in pieces rather than grown by
 * doubling past a big row), else a new one. */
static Buf *seg_for(Restore *r, int dest, int direct) {
    if (r->nsegs && r->segs[r->nsegs - 1].dest == dest &&
        (direct || r->segs[r->nsegs - 1].b.len < MAX_BUFFERED))
        return &r->segs[r->nsegs - 1].b;
    if (r->nsegs == r->capsegs) {
        r->capsegs = r->capsegs ? r->capsegs * 2 : 8;
        r->segs = xrealloc(r->segs, (size_t)r->capsegs * sizeof(Seg));
    }
    r->segs[r->nsegs] = (Seg){dest, BUF_INIT, 0};
    return &r->segs[r->nsegs++].b;
}

static void open_copy(JobRt *rt, Restore *r, int dest) {
    Buf sql = BUF_INIT;
    if (dest == DEST_DELETED)
        buf_puts(&sql, "COPY _bw_d (step, tbl, k) FROM STDIN");
    else
        scope_stage_copy_sql(r->scope, dest, r->chain, &sql);
    r->cs = CS_OPENING;
    r->copy_dest = dest;
    r->state = ST_STAGE;
    /* soft: a row the server refuses is told apart from a damaged object at the read's end */
    jobrt_copy_in(rt, ST_STAGE, JRT_SOFT, sql.data);
    buf_free(&sql);
}

/* Move queued text into the COPYs, open and end them as the tables change, and hold or resume
 * the reader. At the read's end, once everything is in, the step is staged. */
static void pump(JobRt *rt, Restore *r) {
    while (!jobrt_failing(rt) && r->cs != CS_OPENING && r->cs != CS_ENDING) {
        if (r->nsegs && r->copy_failed)
            segs_drop(r);
        if (r->nsegs == 0) {
            if (!r->read_done)
                break;
            if (r->cs == CS_OPEN) {
                r->cs = CS_ENDING;
                jobrt_copy_end(rt);
                return;
            }
            step_staged(rt, r);
            return;
        }
        Seg *h = &r->segs[0];
        if (r->cs == CS_OPEN && r->copy_dest != h->dest) {
            r->cs = CS_ENDING;
            jobrt_copy_end(rt);
            return;
        }
        if (r->cs == CS_NONE) {
            open_copy(rt, r, h->dest);
            return;
        }
        int last = r->nsegs == 1;
        size_t left = h->b.len - h->off;
        if (r->full || (last && !r->read_done && left < PUT_BATCH))
            break;
        /* a batch at a time: what the socket does not take waits here, not in libpq */
        size_t n = left > PUT_BATCH ? PUT_BATCH : left;
        int rc = pg_conn_copy_put(jobrt_conn(rt), h->b.data ? h->b.data + h->off : "", n);
        if (rc < 0) {
            jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_CONNECT, "%s", "postgres: COPY failed");
            return;
        }
        r->buffered -= n;
        h->off += n;
        if (h->off == h->b.len) {
            if (last && !r->read_done && h->b.cap <= MAX_BUFFERED) { /* kept, to be filled again */
                buf_reset(&h->b);
                h->off = 0;
            } else { /* a big row's memory goes back at once */
                seg_pop(r);
            }
        }
        if (rc == 0) /* the socket is full: on when the connection drains */
            r->full = 1;
    }
    if (r->bc == NULL || r->read_done)
        return;
    int hold = r->full || r->buffered > MAX_BUFFERED;
    if (hold && !r->held)
        bcheck_hold(r->bc);
    else if (!hold && r->held)
        bcheck_resume(r->bc);
    r->held = hold;
}

/* A big row's text goes into the open COPY as it is written (pgcopy_row_spill), after what was
 * queued before it: held whole, it would be there three times (the reader's, ours, libpq's).
 * Even when the socket is full: libpq then holds it, as much as one piece of the reader. */
static int spill(Buf *out, void *data) {
    Restore *r = data;
    Seg *h = &r->segs[0];
    int rc = pg_conn_copy_put(jobrt_conn(r->rt), out->data + h->off, out->len - h->off);
    buf_reset(out);
    h->off = 0;
    if (rc == 0)
        r->full = 1;
    return rc < 0 ? -1 : 0;
}

/* A row or deleted key of the object being read: its COPY text queued for its table. */
static int on_item(JobRt *rt, Restore *r, const JobEv *ev) {
    int i = scope_find(r->scope, ev->table);
    if (i < 0) {
        err_set(ev->item_err, ERR_PERMANENT, ERR_CODE_INVALID,
                "backup %s holds table %s, which is not in backup_scope", r->steps[r->si].id,
                ev->table);
        return -1;
    }
    if (ev->section == 0 && (++r->rows_staged & 0xfff) == 0) {
        int pct = r->rows_total ? (int)(r->rows_staged * 90 / r->rows_total) : 0;
        restore_progress(rt, r, "downloading", pct > 89 ? 89 : pct);
    }
    /* deleted keys only remove rows of earlier steps: the first step's have none to remove */
    if (!r->selected[i] || (ev->section && r->si == 0) || r->copy_failed)
        return 0;
    int dest = ev->section ? DEST_DELETED : i;
    /* a row straight into the open COPY of its table, when nothing is queued before it */
    int direct = dest >= 0 && r->cs == CS_OPEN && r->copy_dest == dest &&
                 (r->nsegs == 0 || (r->nsegs == 1 && r->segs[0].dest == dest));
    Buf *b = seg_for(r, dest, direct);
    Err e;
    int rc;
    if (ev->section) {
        buf_printf(b, "%d\t%d\t", r->si, i);
        rc = pgcopy_value(PGCOPY_SCALAR, ev->buf, ev->len, b, &e);
        buf_puts(b, "\n");
    } else {
        pgcopy_row_spill(r->shape[i], PUT_BATCH, direct ? spill : NULL, r);
        rc = pgcopy_row_line(r->shape[i], ev->buf, ev->len, r->suffix, b, &e);
    }
    if (rc != 0) {
        err_set(ev->item_err, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: a %s %s: %s",
                r->steps[r->si].id, ev->table, ev->section ? "deleted key" : "row", e.msg);
        return -1;
    }
    r->buffered = 0; /* a spill emptied the buffer: counted again */
    for (int k = 0; k < r->nsegs; k++)
        r->buffered += r->segs[k].b.len - r->segs[k].off;
    if (r->buffered >= PUT_BATCH || r->nsegs > 1 || r->cs == CS_NONE)
        pump(rt, r);
    return 0;
}

static void on_checked(JobRt *rt, Restore *r, const JobEv *ev) {
    Step *st = &r->steps[r->si];
    r->bytes += bcheck_bytes(ev->check);
    r->read_done = 1;
    r->bc = NULL;
    if (ev->err) {
        /* the primary's copy is missing, unreachable after retries, or damaged: the replica's,
         * checked the same way, if it has one, after the step's rows are rolled back */
        if (!to_replica(rt, r, st, ev->err)) {
            jobrt_fail(rt, ev->err);
            return;
        }
        st->again = 1;
        segs_drop(r);
    }
    pump(rt, r);
}

/* A COPY into a staging table ended. */
static void on_copied(JobRt *rt, Restore *r, const JobEv *ev) {
    r->cs = CS_NONE;
    r->full = 0;
    if (ev->err && !r->copy_failed) {
        r->copy_failed = 1;
        r->copy_err = *ev->err;
        err_prefix(&r->copy_err, "backup %s: its %s cannot be staged", r->steps[r->si].id,
                   r->copy_dest == DEST_DELETED ? "deleted keys"
                                                : scope_table(r->scope, r->copy_dest));
    } else if (!ev->err && !r->chain && r->copy_dest >= 0) {
        r->expected[r->copy_dest] += strtoull(PQcmdTuples(ev->res), NULL, 10);
    }
    pump(rt, r);
}

static void open_step(JobRt *rt, Restore *r) {
    const Step *st = &r->steps[r->si];
    char stage[JOBSPEC_ID_MAX + 16];
    snprintf(stage, sizeof(stage), "downloading %s", st->id);
    restore_progress(rt, r, stage, r->rows_total ? (int)(r->rows_staged * 90 / r->rows_total) : 0);
    r->read_done = r->held = r->full = r->copy_failed = 0;
    r->cs = CS_NONE;
    segs_drop(r);
    if (!r->chain) /* counted by the COPYs: a primary copy read in part counts for nothing */
        memset(r->expected, 0, (size_t)scope_count(r->scope) * sizeof(uint64_t));
    snprintf(r->suffix, sizeof(r->suffix), r->chain ? "\t%d" : "", r->si);
    Buf codecs = BUF_INIT;
    codec_list_json(&st->codecs, &codecs);
    CryptParams cp = {.user_id = r->spec->user_id,
                      .backup_id = st->id,
                      .codecs_json = codecs.data,
                      .have_dek = !st->header_key,
                      .unwrap = keys_unwrap_fn,
                      .unwrap_data = (void *)services_jobconfig(jobrt_services(rt))->keys};
    memcpy(cp.dek, st->dek, CRYPT_KEY_LEN);
    BCheckTarget t = {st->id,
                      r->spec->user_id,
                      st->key,
                      st->checksum,
                      &st->codecs,
                      st->encrypted ? &cp : NULL,
                      st->from_replica ? services_replica(jobrt_services(rt)) : NULL};
    r->state = ST_STAGE;
    /* every row checked to be JSON before it is staged: a damaged object is then named by its
     * digest (and the replica's copy tried), not by a conversion error */
    r->bc = jobrt_check(rt, ST_STAGE, JRT_SOFT, &t, 1);
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&codecs);
}

/* Each step runs under a savepoint: the rows of a primary copy that failed are undone. */
static void start_step(JobRt *rt, Restore *r) {
    restore_query(rt, r, ST_SAVEPOINT, 0, "SAVEPOINT bw_step", 0, NULL);
}

static void read_step(JobRt *rt, Restore *r) {
    const Step *st = &r->steps[r->si];
    if (st->reindexed) {
        char key[LAYOUT_KEY_MAX + 16];
        layout_manifest_key(key, sizeof(key), st->key);
        r->state = ST_MANIFEST;
        if (st->from_replica)
            jobrt_get_from(rt, services_replica(jobrt_services(rt)), ST_MANIFEST, JRT_SOFT, key,
                           64 * 1024);
        else
            jobrt_get(rt, ST_MANIFEST, JRT_SOFT, key, 64 * 1024);
        return;
    }
    open_step(rt, r);
}

/* The primary's copy failed (why): 1 when the step goes on from the replica's (which has a
 * completed copy), 0 when there is none to try. */
static int to_replica(JobRt *rt, Restore *r, Step *st, const Err *why) {
    if (st->from_replica || !st->replica_ok || why->code == ERR_CODE_CANCELLED ||
        services_replica(jobrt_services(rt)) == NULL ||
        strcmp(r->spec->from, "primary") == 0) /* from=primary: no other copy is wanted */
        return 0;
    log_warn(job_log_id(jobrt_job(rt)),
             "backup %s: the primary copy failed (%s): reading the "
             "replica's",
             st->id, why->msg);
    snprintf(r->fallback, sizeof(r->fallback), "%s", why->msg);
    st->from_replica = 1;
    return 1;
}

/* A reindexed step's record came from its manifest: the manifest must still say the same
 * (a record edited since, or a manifest replaced, is refused before any byte is used); the
 * replica's is read when the primary's is missing, unreachable or disagrees. */
static void on_step_manifest(JobRt *rt, Restore *r, const JobEv *ev) {
    Step *st = &r->steps[r->si];
    Err e;
    Manifest m;
    if (ev->err) {
        e = *ev->err;
        err_prefix(&e, "backup %s: manifest %s%s", st->id, st->key, LAYOUT_MANIFEST_EXT);
    } else if (manifest_parse(ev->sres->body->data, ev->sres->body->len, &m, &e) != 0 ||
               strcmp(m.backup_id, st->id) != 0 || strcmp(m.sha256, st->checksum) != 0 ||
               m.size != st->size) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "Backup checksum verification failed: backup %s was recorded by reindex, and "
                "its manifest no longer agrees with that record (sha256 %.16s..., %" PRIu64
                " bytes)",
                st->id, st->checksum, st->size);
    } else {
        open_step(rt, r);
        return;
    }
    if (to_replica(rt, r, st, &e))
        read_step(rt, r);
    else
        jobrt_fail(rt, &e);
}

/* The step's read ended and every COPY with it. */
static void step_staged(JobRt *rt, Restore *r) {
    Step *cur = &r->steps[r->si];
    if (cur->again) { /* the primary's partial rows go, then the replica's copy is read */
        cur->again = 0;
        restore_query(rt, r, ST_UNSTAGE, 0, "ROLLBACK TO SAVEPOINT bw_step", 0, NULL);
        return;
    }
    if (r->copy_failed) { /* the object is sound (its digest matched): its rows are refused */
        jobrt_fail(rt, &r->copy_err);
        return;
    }
    log_info(job_log_id(jobrt_job(rt)), "staged backup %s (%d of %d)", r->steps[r->si].id,
             r->si + 1, r->nsteps);
    segs_drop(r);
    r->si++;
    if (r->si < r->nsteps) {
        start_step(rt, r);
        return;
    }
    restore_apply_stmts(r);
    restore_run_stmt(rt, r);
}

void restore_stmts_done(JobRt *rt, Restore *r) {
    if (!r->applying) { /* the staging tables are there: read the first step */
        r->si = 0;
        start_step(rt, r);
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
    restore_setup_stmts(r);
    restore_run_stmt(rt, r);
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
        snprintf(st->key_id, sizeof(st->key_id), "%s", PQgetvalue(res, k, 11));
        st->wrapped = xstrdup(PQgetvalue(res, k, 12));
        snprintf(st->origin_key_id, sizeof(st->origin_key_id), "%s", PQgetvalue(res, k, 13));
        st->replica_ok = strcmp(PQgetvalue(res, k, 14), "completed") == 0;
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
        "    replica_status, 0 AS depth"
        "  FROM backup_metadata"
        "  WHERE id = $1"
        "  UNION ALL"
        "  SELECT b.id, b.user_id, b.type, b.status, b.s3_key, b.checksum, b.compression,"
        "    b.codecs, b.base_backup_id, b.row_counts, b.size, b.recorded_by, b.key_id,"
        "    b.wrapped_key, b.origin_key_id, b.replica_status, c.depth + 1"
        "  FROM backup_metadata b JOIN chain c ON b.id = c.base_backup_id WHERE c.depth < 1001)"
        " SELECT id, user_id::text, type, status, coalesce(s3_key, ''), coalesce(checksum, ''),"
        "  " BW_SQL_CODECS(
            "chain") ", coalesce(base_backup_id, ''),"
                     "  coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(row_counts)), 0),"
                     "  coalesce(size, 0), recorded_by, coalesce(key_id, ''),"
                     "  coalesce(wrapped_key, ''), coalesce(origin_key_id, key_id, ''),"
                     "  coalesce(replica_status, '') FROM chain ORDER BY depth DESC",
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
        restore_query(rt, r, ST_BEGIN, JRT_BEGIN, "BEGIN", 0, NULL);
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
    case ST_SAVEPOINT:
        read_step(rt, r);
        break;
    case ST_UNSTAGE:
        start_step(rt, r);
        break;
    case ST_STMT:
        restore_on_stmt(rt, r, res);
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
        if (ev->tag == ST_STAGE)
            on_copied(rt, r, ev);
        else
            on_result(rt, r, ev->res);
        break;
    case JEV_COPY_WRITABLE:
        if (r->cs == CS_OPENING)
            r->cs = CS_OPEN;
        r->full = 0;
        pump(rt, r);
        break;
    case JEV_ITEM:
        return on_item(rt, r, ev);
    case JEV_CHECKED:
        on_checked(rt, r, ev);
        break;
    case JEV_KEY:
        memcpy(r->steps[r->ki].dek, ev->key->dek, CRYPT_KEY_LEN);
        r->ki++;
        next_key(rt, r);
        break;
    case JEV_STORED:
        on_step_manifest(rt, r, ev);
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
    segs_drop(r);
    free(r->segs);
    restore_free_stmts(r);
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

const JobType job_type_restore = {"restore", 1, restore_run, jobrt_cancel};
