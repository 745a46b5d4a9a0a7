/*
 * restore_stage: one step of a restore, one backup object streamed into the
 * staging tables (see restore.c for where it fits).
 *
 * The object holds each table's rows together, so a step is one COPY per table in turn. Rows
 * are turned into COPY text as they come and queued per staging table (segs); the queue is
 * pumped into the open COPY, which is ended and the next one opened when the table changes.
 * The reader is held while the queue is over MAX_BUFFERED or the connection's output is full:
 * memory stays bounded whatever the object's size. */
#include "restore_intern.h"

#include "jobconfig.h"
#include "jobs.h"
#include "keys.h"
#include "log.h"
#include "manifest.h"
#include "services.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUT_BATCH    (256u * 1024)
#define MAX_BUFFERED (4 * PUT_BATCH) /* staged text held while a COPY opens or drains */

static void step_staged(JobRt *rt, Restore *r);
static int to_replica(JobRt *rt, Restore *r, Step *st, const Err *why);
static void fail_step(JobRt *rt, Restore *r, const Step *st, const Err *err);

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

/* Table i is the covering parent of a selected table: its deleted keys remove that table's rows
 * too (a child deleted with its parent has no tombstone of its own, proto/sql/017). */
static int covers_selected(const Restore *r, int i) {
    for (int c = 0; c < scope_count(r->scope); c++)
        if (r->selected[c] && scope_covering_parent(r->scope, c) == i)
            return 1;
    return 0;
}

/* A row or deleted key of the object being read: its COPY text queued for its table. */
int restore_stage_item(JobRt *rt, Restore *r, const JobEv *ev) {
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
    if ((ev->section && r->si == 0) || r->copy_failed)
        return 0;
    if (!r->selected[i] && !(ev->section && covers_selected(r, i)))
        return 0;
    if (r->prune && r->prune[i] && restore_prune_skip(r, i, ev))
        return 0;
    r->step_staged += ev->section == 0;
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

void restore_stage_checked(JobRt *rt, Restore *r, const JobEv *ev) {
    Step *st = &r->steps[r->si];
    r->bytes += bcheck_bytes(ev->check);
    r->read_done = 1;
    r->bc = NULL;
    if (ev->err) {
        /* the primary's copy is missing, unreachable after retries, or damaged: the replica's,
         * checked the same way, if it has one, after the step's rows are rolled back */
        if (!to_replica(rt, r, st, ev->err)) {
            fail_step(rt, r, st, ev->err);
            return;
        }
        st->again = 1;
        segs_drop(r);
    }
    pump(rt, r);
}

/* A COPY into a staging table ended. */
void restore_stage_copied(JobRt *rt, Restore *r, const JobEv *ev) {
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
    r->step_staged = 0;
    r->cs = CS_NONE;
    segs_drop(r);
    if (!r->chain) { /* counted as read: a primary copy read in part counts for nothing */
        memset(r->expected, 0, (size_t)scope_count(r->scope) * sizeof(uint64_t));
        if (r->left) {
            memset(r->left, 0, (size_t)scope_count(r->scope) * sizeof(uint64_t));
            memset(r->left_sum, 0, (size_t)scope_count(r->scope) * sizeof(uint64_t));
        }
    }
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
void restore_stage_start(JobRt *rt, Restore *r) {
    restore_query(rt, r, ST_SAVEPOINT, 0, "SAVEPOINT bw_step", 0, NULL);
}

void restore_stage_read(JobRt *rt, Restore *r) {
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
    r->fallback_kind = why->kind;
    st->from_replica = 1;
    return 1;
}

/* The step cannot be read: after a fallback, the error names both copies, and a primary that
 * was unreachable (an outage) keeps the job retryable whatever the replica's copy said. */
static void fail_step(JobRt *rt, Restore *r, const Step *st, const Err *err) {
    if (!st->from_replica || !r->fallback[0]) {
        jobrt_fail(rt, err);
        return;
    }
    Err e;
    /* the primary's cause is at the end of its message (after the key and the attempts) */
    size_t pl = strlen(r->fallback);
    const char *pm = pl > 180 ? r->fallback + pl - 180 : r->fallback;
    err_set(&e, r->fallback_kind == ERR_RETRYABLE ? ERR_RETRYABLE : err->kind, err->code,
            "backup %s: both copies failed: the primary's: %s%s; the replica's: %.220s", st->id,
            pm != r->fallback ? "..." : "", pm, err->msg);
    jobrt_fail(rt, &e);
}

/* A reindexed step's record came from its manifest: the manifest must still say the same
 * (a record edited since, or a manifest replaced, is refused before any byte is used); the
 * replica's is read when the primary's is missing, unreachable or disagrees. */
void restore_stage_manifest(JobRt *rt, Restore *r, const JobEv *ev) {
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
        restore_stage_read(rt, r);
    else
        fail_step(rt, r, st, &e);
}

/* The step's read ended and every COPY with it. */
static void step_staged(JobRt *rt, Restore *r) {
    Step *cur = &r->steps[r->si];
    if (!cur->again && !r->copy_failed && !r->chain && restore_prune_mismatch(rt, r))
        cur->again = 1;
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
    r->staged += r->step_staged;
    r->si++;
    if (r->si < r->nsteps) {
        restore_stage_start(rt, r);
        return;
    }
    restore_apply_stmts(r);
    restore_run_stmt(rt, r);
}

void restore_stage_writable(JobRt *rt, Restore *r) {
    if (r->cs == CS_OPENING)
        r->cs = CS_OPEN;
    r->full = 0;
    pump(rt, r);
}

void restore_stage_free(Restore *r) {
    segs_drop(r);
    free(r->segs);
}
