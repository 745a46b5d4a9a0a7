/*
 * restore: a user's tables put back exactly as a backup saw them, in one
 * transaction that changes nothing unless everything checked out.
 *
 *   CHECK     the backup id names the job's user (else `forbidden`, nothing read)
 *   CHAIN     the backup and its bases down to the full one, all the user's, completed
 *   RECORD    restore_history row (outside the transaction: a failure is kept)
 *   BEGIN     user id set as a bound setting; backup_scope checked; a temporary
 *             staging table per selected table, shaped like it (the statement lists below)
 *   STAGE i   each backup of the chain, full first, under a savepoint, streamed from
 *             S3 through SHA-256 and gunzip into the document reader; each row's JSON
 *             turned into COPY's text form (pgcopy) and copied into its table's staging
 *             table, so every value goes through its type's own input function. Checked
 *             as it comes: the header names this backup and this user, the layout
 *             holds, the trailer's counts match, and the digest equals the recorded one
 *             (`Backup checksum verification failed`; then the replica's copy is read
 *             instead, after a ROLLBACK TO SAVEPOINT). Only temporary tables are
 *             touched until every object has passed.
 *   PLACE     (one backup, not a dry run) a table that holds none of the user's rows when
 *             the restore begins takes the step's rows straight into itself (COPY ... FROM
 *             STDIN into the table, the user's rows only where it has a user column): nothing
 *             in place can differ, and a key of someone else's row fails the COPY. Any failure
 *             of such a COPY (that key, a foreign key whose row is restored later, a row not
 *             the user's, a lock held) undoes the step to its savepoint and reads it again
 *             through staging, where the checks below name the cause. Once written, the
 *             user's rows of such a table are counted (each placed row still the user's) and
 *             its foreign keys checked, as for a staged table.
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
 *
 * To a point in time (`at`, proto/sql/022): first the capture is waited for until it has
 * recorded every commit up to `at` (NOW, WAIT); PLAN picks the base backup and the cut (the
 * commit LSN of the user's last transaction at or before `at`), or refuses naming why; SEGLIST
 * lists the user's change segments. The base's chain is staged as above (never pruned), then
 * each segment holding a transaction the base does not see is read whole, its SHA-256 checked,
 * decoded, and its changes up to the cut staged as further steps, one per change (segreplay.h):
 * FINAL then takes each key's state after the last of them, and the rest is as for a backup.
 */
#include "jobs/jobs.h"
#include "format/bcheck.h"
#include "format/bfile.h"
#include "base/buf.h"
#include "jobs/jobconfig.h"
#include "jobs/jobrt.h"
#include "format/layout.h"
#include "base/log.h"
#include "format/manifest.h"
#include "scope/scope.h"
#include "services.h"
#include "keys/keys.h"
#include "pg/pgcopy.h"
#include "io/codec.h"
#include "io/crypt.h"
#include "jobs/jobspec.h"
#include "base/rowkeys.h"
#include "capture/segfile.h"
#include "capture/segreplay.h"
#include "pg/pgoutput.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

typedef enum {
    ST_ACQUIRE,
    ST_PITR_NOW,   /* at: the database's clock and WAL position */
    ST_PITR_WAIT,  /* ...until the capture has recorded up to them */
    ST_PITR_SLEEP, /* (a pause between two looks) */
    ST_PITR_PLAN,  /* the base and the cut (proto/sql/022) */
    ST_SEGLIST,    /* the user's change segments up to the cut */
    ST_SEGGET,     /* one read whole (while staging, after the chain) */
    ST_CHAIN,
    ST_KEYS, /* the encrypted steps' data keys */
    ST_HISTORY,
    ST_BEGIN,
    ST_USER,
    ST_SCOPE,
    ST_EMPTY,      /* which selected tables hold none of the user's rows (PLACE above) */
    ST_PRUNE_GATE, /* can tracking say what changed since the backup (PRUNE below) */
    ST_PRUNE_KEYS, /* the keys of what changed */
    ST_SAVEPOINT,  /* each step's: a failed read of the primary's copy is undone to it */
    ST_MANIFEST,   /* a reindexed step's manifest read again */
    ST_STAGE,      /* COPY of one step's rows into the staging tables, read through bcheck */
    ST_UNSTAGE,    /* ROLLBACK TO SAVEPOINT: the step is read again from the replica */
    ST_STMT,       /* a statement list: staging tables, then FINAL and APPLY */
    ST_LOCK_BACK,  /* a row to write is held by another transaction: back to the lock savepoint */
    ST_LOCK_WAIT,  /* ...wait a little (pg_sleep), then take the locks again */
    ST_NOTIFY,     /* the user's notification of the restore, in its transaction */
    ST_COMMIT,
    ST_RECORD,
} State;

typedef struct {
    char id[JOBSPEC_ID_MAX + 1];
    char key[LAYOUT_KEY_MAX];
    char checksum[65];
    CodecList codecs;
    uint64_t size;
    int reindexed; /* recorded from a manifest by backupctl reindex: read the manifest again */
    int encrypted;
    char key_id[CRYPT_ID_MAX + 1], *wrapped; /* encrypted: the record's (newest) wrapping */
    char origin_key_id[CRYPT_ID_MAX + 1];    /* the key of the object header's wrapping */
    int header_key;   /* the newest key is not here, the header's is: the decoder opens that */
    int replica_ok;   /* its copy in the replica completed (replica_status) */
    int from_replica; /* read from the replica (forced, or the primary's copy failed) */
    int again;        /* the primary's copy failed mid-read: unstage, read the replica's */
    unsigned char dek[CRYPT_KEY_LEN]; /* and the data key it opens, before any read */
} Step;

typedef enum { SQ_EXEC, SQ_FINAL, SQ_CHECK, SQ_LOCK, SQ_DELETE, SQ_UPSERT, SQ_PLACED } SqlKind;

typedef struct {
    char *sql;
    SqlKind kind;
    int table;     /* scope index (FINAL, CHECK, DELETE, UPSERT) */
    char *message; /* CHECK: the error when the count is not 0 */
} Stmt;

/* Staged text waiting for its COPY: one staging table's (dest: a scope index, or DEST_*). */
#define DEST_DELETED   SEGREPLAY_DELETED   /* _bw_d: a chain's deleted keys */
#define DEST_CUT       SEGREPLAY_CUT       /* _bw_x: replayed TRUNCATEs and where deletes */
#define DEST_UNCHANGED SEGREPLAY_UNCHANGED /* _bw_u: replayed updates' unchanged columns */
typedef struct {
    int dest;
    Buf b;
    size_t off; /* put so far */
} Seg;

typedef enum { CS_NONE, CS_OPENING, CS_OPEN, CS_ENDING } CopyState;

typedef struct {
    State state;
    JobRt *rt; /* for pgcopy's spill */
    const JobSpec *spec;
    int recorded_start;
    Step *steps;
    int nsteps, si, ki;
    int chain; /* more than one step: rows staged with their step, then the last state taken */
    char fallback[ERR_MSG_MAX]; /* why a primary copy was not used */
    ErrKind fallback_kind;      /* and whether that was an outage (retryable) */
    Scope *scope;
    unsigned char *selected;   /* per scope table */
    PgCopyRow **shape;         /* per selected table: its rows' columns in COPY order */
    uint64_t *expected;        /* staged final rows per table */
    uint64_t *restored;        /* rows in place per table once restored (written or unchanged) */
    uint64_t *ins, *upd, *del; /* per table: inserted, updated, deleted (dry_run: would be) */
    Stmt *stmts;
    int nstmts, qi, applying;
    int lock_first;      /* the first SQ_LOCK statement (-1: none) */
    uint64_t lock_since; /* when the locks were first asked for (ms into the job), 0: not yet */
    int lock_waits;      /* times they were held by another transaction */
    uint64_t stmt_ms;    /* when the statement in flight started */
    /* one step's stream: rows turned into COPY text, one COPY per staging table in turn */
    BCheck *bc;
    int read_done, held, full;
    Seg *segs;
    int nsegs, capsegs;
    size_t buffered;
    CopyState cs;
    int copy_dest;
    int copy_failed; /* the server refused a row: the rest is dropped, copy_err said at the end */
    Err copy_err;
    char suffix[16]; /* chain: "\t<step>" after each row */
    uint64_t rows_total, rows_staged, bytes;
    /* PLACE: per table, 1 when its rows go straight into it; the rows sent to it this step */
    unsigned char *direct;
    unsigned char *partial; /* per table: pruned or placed (the checks' partial[]) */
    uint64_t *sent;
    int direct_failed; /* a COPY into a table itself failed, or took fewer rows than sent */
    int short_locks;   /* lock_timeout was set short for those COPYs: APPLY sets it back */
    /* only what changed since the last step's snapshot is staged (PRUNE below) */
    char *snapshot;     /* the last step's ('' when unknown) */
    char *listed;       /* the snapshot before the changed keys were listed */
    int prunable;       /* no step recorded by reindex */
    char *prune;        /* per scope table: its key's rowkeys kind, or 0 (every row staged) */
    RowKeys **changed;  /* per pruned table: keys written or deleted since */
    RowKeys **deleted;  /* per pruned covering parent: its keys deleted since (017) */
    int *cover;         /* per table: its covering parent's index, or -1 (read per row) */
    uint64_t *kept;     /* per pruned table: the user's rows unchanged since (not staged) */
    uint64_t *kept_sum; /* and the digest of their keys (rowkeys_digest) */
    uint64_t *left, *left_sum; /* per table: rows of the step being read left out, their digest */
    uint64_t nchanged;
    uint64_t staged, step_staged;       /* rows staged: in all, by the step being read */
    char backup_id[JOBSPEC_ID_MAX + 1]; /* the backup restored: the job's, or the base of `at` */
    /* to a point in time */
    int pitr;
    int at_lsn;          /* `at` is an LSN, not a time */
    char target_lsn[24]; /* the capture must have recorded up to here */
    uint64_t wait_from;  /* since when it has been waited for (ms into the job) */
    char cut_lsn[24];    /* the last commit replayed ("0/0": none) */
    char cut_time[40];   /* its commit time ("" when none since the base) */
    char *base_snapshot; /* the base's snapshot: which transactions it holds already */
    PGresult *segments;  /* id, key, checksum, size, codecs, xids of the user's segments */
    int seg_i, seg_read; /* the next segment; how many were read */
    int in_changes;      /* staging the changes (after the chain) */
    SegReplay *replay;
    unsigned char *dels;  /* per table: its deleted keys are staged (restored, or covering) */
    Buf *replay_bufs;     /* per staging table (DEST_UNCHANGED first): a segment's lines */
    int seg_from_replica; /* the segment being read is the replica's copy */
    int seg_replicas;     /* segments read from the replica */
} Restore;

static void restore_query(JobRt *rt, Restore *r, State next, int flags, const char *sql, int n,
                          const char *const *v);
static void restore_progress(JobRt *rt, Restore *r, const char *stage, int pct);

/* The notifications the worker writes itself (backup.c, restore.c): a restore keeps those it
 * does not hold (a user restoring yesterday's backup keeps the record of today's). */
#define RESTORE_WORKER_NOTES "'backup_completed', 'backup_failed', 'restore_completed'"
/* 1 if table i is the notifications table the worker writes (it has a type column). */
static int restore_worker_notes(const Scope *s, int i);

/* The staging tables (the statements before the first step is read). */
static void restore_setup_stmts(Restore *r);
/* FINAL and APPLY (after every step is staged). */
static void restore_apply_stmts(Restore *r);
/* The next statement of the list; at its end, restore_stmts_done(). */
static void restore_run_stmt(JobRt *rt, Restore *r);
static void restore_on_stmt(JobRt *rt, Restore *r, PGresult *res);
/* A lock, delete or upsert failed (err): a write after the snapshot is retried as a job, rows
 * held by another transaction are waited for (lock statements, a while), the rest fails. */
static void restore_on_stmt_err(JobRt *rt, Restore *r, const Err *err);
/* ST_LOCK_BACK and ST_LOCK_WAIT ended. */
static void restore_lock_next(JobRt *rt, Restore *r);
static void restore_free_stmts(Restore *r);
/* STAGE: one step read into the staging tables. Start it (a savepoint first), then
 * the events of its read and its COPYs; at its end the next step, or the FINAL statements. */
static void restore_stage_start(JobRt *rt, Restore *r);
static void restore_stage_read(JobRt *rt, Restore *r); /* the savepoint is set */
static void restore_stage_manifest(JobRt *rt, Restore *r, const JobEv *ev);
static int restore_stage_item(JobRt *rt, Restore *r, const JobEv *ev);
static void restore_stage_checked(JobRt *rt, Restore *r, const JobEv *ev);
static void restore_stage_copied(JobRt *rt, Restore *r, const JobEv *ev);
static void restore_stage_writable(JobRt *rt, Restore *r);
static void restore_stage_free(Restore *r);
/* PRUNE: after the scope, decide what to stage (then the setup statements). */
static void restore_prune_start(JobRt *rt, Restore *r);
static void restore_prune_gate(JobRt *rt, Restore *r, PGresult *res);
static int restore_prune_row(JobRt *rt, Restore *r, const JobEv *ev);
static void restore_prune_keys_done(JobRt *rt, Restore *r);
/* 1 when the row or deleted key ev of table i is left out: unchanged since the backup. */
static int restore_prune_skip(Restore *r, int i, const JobEv *ev);
/* One backup read: 1 when the rows it left out are not the user's rows unchanged since (their
 * number or keys differ: a crafted object, or history tracking missed); every row is then
 * staged, and the step must be read again. */
static int restore_prune_mismatch(JobRt *rt, Restore *r);
static void restore_prune_free(Restore *r);
/* To a point in time: a change segment read whole. */
static void on_change_segment(JobRt *rt, Restore *r, const JobEv *ev);
/* A statement list ran to its end. */
static void restore_stmts_done(JobRt *rt, Restore *r);

#define MAX_CHAIN 1000

static void restore_progress(JobRt *rt, Restore *r, const char *stage, int pct) {
    job_progress(jobrt_job(rt), stage, pct, r->rows_staged, r->bytes);
}

static void restore_query(JobRt *rt, Restore *r, State next, int flags, const char *sql, int n,
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
        uint64_t same = r->expected[i] + (r->kept ? r->kept[i] : 0) - r->ins[i] - r->upd[i];
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
    uint64_t total = 0, sum[4] = {0, 0, 0, 0}, placed = 0;
    for (int i = 0; i < scope_count(r->scope); i++) {
        total += r->restored[i];
        placed += r->direct[i] ? r->expected[i] : 0;
    }
    uint64_t staged = r->staged - placed;
    Buf changes = BUF_INIT, result = BUF_INIT;
    changes_json(r, &changes, sum);
    int dry = r->spec->dry_run;
    char what[256];
    snprintf(what, sizeof(what),
             "%s%" PRIu64 " inserted, %" PRIu64 " updated, %" PRIu64 " deleted, %" PRIu64
             " unchanged",
             dry ? "dry run, nothing written: would have " : "", sum[0], sum[1], sum[2], sum[3]);
    log_info(job_log_id(jobrt_job(rt)),
             "%s %s (%d backup%s): %" PRIu64 " rows (%" PRIu64 " staged, %" PRIu64 " placed); %s",
             dry ? "dry run of" : "restored", r->backup_id, r->nsteps, r->nsteps > 1 ? "s" : "",
             total, staged, placed, what);
    buf_printf(
        &result,
        "{\"dry_run\":%s,\"inserted\":%" PRIu64 ",\"updated\":%" PRIu64 ",\"deleted\":%" PRIu64
        ",\"unchanged\":%" PRIu64 ",\"staged\":%" PRIu64 ",\"placed\":%" PRIu64 ",\"tables\":%s}",
        dry ? "true" : "false", sum[0], sum[1], sum[2], sum[3], staged, placed, changes.data);
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
    if (r->seg_replicas) /* change segments read from the replica */
        source = replica == r->nsteps && r->seg_replicas == r->seg_read ? "replica" : "mixed";
    if (replica || r->seg_replicas) {
        char note[ERR_MSG_MAX + 64];
        snprintf(note, sizeof(note), "read from the replica%s%.300s; %.200s",
                 r->fallback[0] ? ": " : "", r->fallback, what);
        job_set_note(jobrt_job(rt), note);
        log_info(job_log_id(jobrt_job(rt)),
                 "%d of %d backup%s and %d of %d change segment%s read from the replica", replica,
                 r->nsteps, r->nsteps > 1 ? "s" : "", r->seg_replicas, r->seg_read,
                 r->seg_read == 1 ? "" : "s");
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

static void restore_stmts_done(JobRt *rt, Restore *r) {
    if (!r->applying) { /* the staging tables are there: read the first step */
        r->si = 0;
        restore_stage_start(rt, r);
        return;
    }
    int notes = 0;
    for (int i = 0; i < scope_count(r->scope); i++)
        notes |= r->selected[i] && restore_worker_notes(r->scope, i);
    if (r->state != ST_NOTIFY && !r->spec->dry_run && notes &&
        services_jobconfig(jobrt_services(rt))->backup_notify) {
        uint64_t ins = 0, upd = 0, del = 0;
        for (int i = 0; i < scope_count(r->scope); i++)
            ins += r->ins[i], upd += r->upd[i], del += r->del[i];
        char counts[96];
        snprintf(counts, sizeof(counts),
                 "%" PRIu64 " inserted, %" PRIu64 " updated, %" PRIu64 " deleted", ins, upd, del);
        char to[JOBSPEC_ID_MAX + 64];
        if (r->pitr)
            snprintf(to, sizeof(to), "its state at %s", r->spec->at);
        else
            snprintf(to, sizeof(to), "backup %s", r->backup_id);
        const char *v[] = {r->spec->user_id, r->backup_id, counts, to};
        restore_query(rt, r, ST_NOTIFY, 0,
                      "INSERT INTO notifications (user_id, type, title, body, data) "
                      "SELECT $1::uuid, 'restore_completed', 'Restore completed', "
                      "format('Your data was restored to %s (%s).', $4::text, $3::text), "
                      "jsonb_build_object('backup_id', $2::text) "
                      "WHERE EXISTS (SELECT 1 FROM profiles WHERE id = $1::uuid)",
                      4, v);
        return;
    }
    restore_progress(rt, r, r->spec->dry_run ? "rolling back (dry run)" : "committing", 99);
    restore_query(rt, r, ST_COMMIT, JRT_END, r->spec->dry_run ? "ROLLBACK" : "COMMIT", 0, NULL);
}

/* ---- setup: scope, selection, staging table ---- */

/* PLACE: one backup restored for real: which selected tables hold none of the user's rows. */
static void restore_place_start(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope), any = 0;
    r->direct = xcalloc((size_t)n, 1);
    r->sent = xcalloc((size_t)n, sizeof(uint64_t));
    if (r->chain || r->spec->dry_run) {
        restore_prune_start(rt, r);
        return;
    }
    unsigned char *candidate = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        any += candidate[i] = r->selected[i] && scope_restore_placeable(r->scope, i);
    if (!any) {
        free(candidate);
        restore_prune_start(rt, r);
        return;
    }
    Buf sql = BUF_INIT;
    scope_restore_empty_sql(r->scope, candidate, &sql);
    restore_query(rt, r, ST_EMPTY, 0, sql.data, 0, NULL);
    buf_free(&sql);
    free(candidate);
}

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
    restore_place_start(rt, r);
}

/* ---- to a point in time: the capture waited for, the plan ---- */

/* How long the capture is waited for (its flush interval, a few times) and how often looked at. */
#define PITR_WAIT_MIN_MS 30000
#define PITR_POLL_MS     200
/* A commit's time is taken just before its WAL record is written: a point this recent may have
 * a commit still to be written, so its position is read a moment later. */
#define PITR_SETTLE_MS 1000

static void load_chain(JobRt *rt, Restore *r);
static void pitr_wait(JobRt *rt, Restore *r);

/* Columns: the point is not in the future; it is older than PITR_SETTLE_MS; where the database
 * is now (its WAL position or its clock); the WAL position the capture must reach. */
static void pitr_now(JobRt *rt, Restore *r) {
    char settle[16];
    snprintf(settle, sizeof(settle), "%d", PITR_SETTLE_MS);
    const char *v[] = {r->spec->at, settle};
    if (r->at_lsn)
        restore_query(rt, r, ST_PITR_NOW, 0,
                      "SELECT $1::pg_lsn <= pg_current_wal_insert_lsn(), true, "
                      "pg_current_wal_insert_lsn()::text, $1::pg_lsn::text",
                      1, v);
    else
        restore_query(rt, r, ST_PITR_NOW, 0,
                      "SELECT $1::timestamptz <= clock_timestamp(), "
                      "$1::timestamptz <= clock_timestamp() - $2::int * interval '1 ms', "
                      "to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_current_wal_insert_lsn()::text",
                      2, v);
}

static void pitr_on_now(JobRt *rt, Restore *r, PGresult *res) {
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "cannot restore to %s: it is in the future (the database is at %s)",
                    r->spec->at, PQgetvalue(res, 0, 2));
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        r->state = ST_PITR_SLEEP;
        jobrt_sleep(rt, ST_PITR_SLEEP, PITR_SETTLE_MS);
        return;
    }
    /* every commit at or before the point is below this position */
    snprintf(r->target_lsn, sizeof(r->target_lsn), "%s", PQgetvalue(res, 0, 3));
    r->wait_from = jobrt_elapsed_ms(rt);
    pitr_wait(rt, r);
}

static void pitr_wait(JobRt *rt, Restore *r) {
    const char *v[] = {r->target_lsn};
    restore_query(rt, r, ST_PITR_WAIT, 0,
                  "SELECT confirmed_lsn >= $1::pg_lsn, pg_wal_lsn_diff($1::pg_lsn, "
                  "confirmed_lsn)::bigint FROM capture_state",
                  1, v);
}

static void pitr_plan(JobRt *rt, Restore *r) {
    const char *v[] = {r->spec->user_id, r->at_lsn ? NULL : r->spec->at,
                       r->at_lsn ? r->spec->at : NULL};
    restore_query(rt, r, ST_PITR_PLAN, 0,
                  "SELECT coalesce(base_id, ''), coalesce(base_snapshot, ''), "
                  "coalesce(cut_lsn::text, ''), coalesce(to_char(cut_time AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), refusal "
                  "FROM pitr_plan($1::uuid, $2::timestamptz, $3::pg_lsn)",
                  3, v);
}

static void pitr_on_wait(JobRt *rt, Restore *r, PGresult *res) {
    if (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        pitr_plan(rt, r); /* (no capture at all: the plan says so) */
        return;
    }
    uint64_t waited = jobrt_elapsed_ms(rt) - r->wait_from;
    uint64_t limit = (uint64_t)services_jobconfig(jobrt_services(rt))->capture_flush_ms * 6;
    if (limit < PITR_WAIT_MIN_MS)
        limit = PITR_WAIT_MIN_MS;
    if (waited >= limit) {
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "cannot restore to %s yet: the change capture has not recorded every commit "
                    "up to it (%s bytes of WAL behind after %.0f s); nothing was read or changed",
                    r->spec->at, PQgetvalue(res, 0, 1), waited / 1000.0);
        return;
    }
    r->state = ST_PITR_SLEEP;
    jobrt_sleep(rt, ST_PITR_SLEEP, PITR_POLL_MS);
}

static void pitr_on_plan(JobRt *rt, Restore *r, PGresult *res) {
    if (PQntuples(res) != 1) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_SQL, "%s",
                    "pitr_plan returned no plan (is proto/sql/022 applied?)");
        return;
    }
    if (!PQgetisnull(res, 0, 4)) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "cannot restore user %s to %s: %s",
                    r->spec->user_id, r->spec->at, PQgetvalue(res, 0, 4));
        return;
    }
    snprintf(r->backup_id, sizeof(r->backup_id), "%s", PQgetvalue(res, 0, 0));
    r->base_snapshot = xstrdup(PQgetvalue(res, 0, 1));
    snprintf(r->cut_lsn, sizeof(r->cut_lsn), "%s", PQgetvalue(res, 0, 2));
    snprintf(r->cut_time, sizeof(r->cut_time), "%s", PQgetvalue(res, 0, 3));
    if (!layout_backup_id_names_user(r->backup_id, r->spec->user_id)) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                    "forbidden: backup %s does not belong to user %s", r->backup_id,
                    r->spec->user_id);
        return;
    }
    job_set_backup_id(jobrt_job(rt), r->backup_id);
    log_info(job_log_id(jobrt_job(rt)),
             "restoring user %s to %s: base %s, changes up to commit %s%s%s", r->spec->user_id,
             r->spec->at, r->backup_id, r->cut_lsn, r->cut_time[0] ? " at " : "", r->cut_time);
    const char *v[] = {r->spec->user_id, r->cut_lsn};
    restore_query(rt, r, ST_SEGLIST, 0,
                  "SELECT id, s3_key, checksum, size, array_to_string(codecs, ','), "
                  "array_to_string(xids, ','), coalesce(replica_status, ''), coalesce(key_id, ''), "
                  "coalesce(wrapped_key, '') FROM change_segments "
                  "WHERE user_id = $1::uuid AND start_lsn <= $2::pg_lsn ORDER BY end_lsn, id",
                  2, v);
}

/* ---- CHAIN ---- */

static void next_key(JobRt *rt, Restore *r);

static void on_chain(JobRt *rt, Restore *r, PGresult *res) {
    const JobSpec *spec = r->spec;
    int n = PQntuples(res);
    if (n == 0) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s not found", r->backup_id);
        return;
    }
    if (n > MAX_CHAIN) {
        jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: chain longer than %d backups",
                    r->backup_id, MAX_CHAIN);
        return;
    }
    r->steps = xcalloc((size_t)n, sizeof(Step));
    /* to a point in time: every row of the base is staged (what changed since the base is
     * known only up to the cut), and the changes are steps after the chain's */
    r->prunable = !r->pitr;
    r->nsteps = n;
    r->chain = n > 1 || r->pitr;
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
        if (!st->encrypted && keys_required(services_jobconfig(jobrt_services(rt))->keys)) {
            /* anyone who can write to the bucket can plant a cleartext object and its manifest
             * (then reindex it): under required encryption only what a known key opens is
             * trusted, and nothing is read */
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup %s is not encrypted, and BACKUP_ENCRYPTION=required refuses to "
                        "restore a cleartext backup: nothing was read or changed",
                        id);
            return;
        }
        snprintf(st->key_id, sizeof(st->key_id), "%s", PQgetvalue(res, k, 11));
        st->wrapped = xstrdup(PQgetvalue(res, k, 12));
        snprintf(st->origin_key_id, sizeof(st->origin_key_id), "%s", PQgetvalue(res, k, 13));
        st->replica_ok = strcmp(PQgetvalue(res, k, 14), "completed") == 0;
        if (st->reindexed)
            r->prunable = 0;
        else if (k == n - 1)
            r->snapshot = xstrdup(PQgetvalue(res, k, 15));
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
             r->backup_id, spec->user_id, n, n > 1 ? "s" : "", r->rows_total);
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
    const char *v[] = {spec->job_id,
                       spec->user_id,
                       r->backup_id,
                       spec->requested_by[0] ? spec->requested_by : NULL,
                       spec->ntables ? tables.data : NULL,
                       r->pitr ? spec->at : NULL,
                       r->pitr ? r->cut_lsn : NULL};
    restore_query(rt, r, ST_HISTORY, 0,
                  "INSERT INTO restore_history (job_id, user_id, backup_id, requested_by, tables, "
                  "restore_at, cut_lsn) "
                  "VALUES ($1, $2::uuid, $3, $4::uuid, $5::text[], $6, $7::pg_lsn) "
                  "ON CONFLICT (job_id) DO UPDATE SET attempts = restore_history.attempts + 1, "
                  "status = 'running', error = NULL, started_at = now(), finished_at = NULL, "
                  "backup_id = EXCLUDED.backup_id, cut_lsn = EXCLUDED.cut_lsn",
                  7, v);
    buf_free(&tables);
}

static void load_chain(JobRt *rt, Restore *r) {
    const char *v[] = {r->backup_id};
    restore_query(
        rt, r, ST_CHAIN, 0,
        "WITH RECURSIVE chain AS ("
        "  SELECT id, user_id, type, status, s3_key, checksum, compression, codecs,"
        "    base_backup_id, row_counts, size, recorded_by, key_id, wrapped_key, origin_key_id,"
        "    replica_status, snapshot, 0 AS depth"
        "  FROM backup_metadata"
        "  WHERE id = $1"
        "  UNION ALL"
        "  SELECT b.id, b.user_id, b.type, b.status, b.s3_key, b.checksum, b.compression,"
        "    b.codecs, b.base_backup_id, b.row_counts, b.size, b.recorded_by, b.key_id,"
        "    b.wrapped_key, b.origin_key_id, b.replica_status, b.snapshot, c.depth + 1"
        "  FROM backup_metadata b JOIN chain c ON b.id = c.base_backup_id WHERE c.depth < 1001)"
        " SELECT id, user_id::text, type, status, coalesce(s3_key, ''), coalesce(checksum, ''),"
        "  " BW_SQL_CODECS(
            "chain") ", coalesce(base_backup_id, ''),"
                     "  coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(row_counts)), 0),"
                     "  coalesce(size, 0), recorded_by, coalesce(key_id, ''),"
                     "  coalesce(wrapped_key, ''), coalesce(origin_key_id, key_id, ''),"
                     "  coalesce(replica_status, ''), coalesce(snapshot, '') FROM chain "
                     "ORDER BY depth DESC",
        1, v);
}

/* ---- the state machine ---- */

static void on_result(JobRt *rt, Restore *r, PGresult *res) {
    switch (r->state) {
    case ST_PITR_NOW:
        pitr_on_now(rt, r, res);
        break;
    case ST_PITR_WAIT:
        pitr_on_wait(rt, r, res);
        break;
    case ST_PITR_PLAN:
        pitr_on_plan(rt, r, res);
        break;
    case ST_SEGLIST:
        r->segments = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
        load_chain(rt, r);
        break;
    case ST_CHAIN:
        on_chain(rt, r, res);
        break;
    case ST_HISTORY:
        r->recorded_start = 1;
        /* one snapshot for the whole restore: the keys listed, the rows compared and the rows
         * written are of the same instant, and a row the application changes after it fails
         * the write (40001, retried) instead of being half overwritten (proto/README) */
        restore_query(rt, r, ST_BEGIN, JRT_BEGIN, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL);
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
    case ST_EMPTY:
        for (int i = 0; i < scope_count(r->scope); i++)
            r->direct[i] = strcmp(PQgetvalue(res, 0, i), "t") == 0;
        restore_prune_start(rt, r);
        break;
    case ST_PRUNE_GATE:
        restore_prune_gate(rt, r, res);
        break;
    case ST_PRUNE_KEYS:
        restore_prune_keys_done(rt, r);
        break;
    case ST_SAVEPOINT:
        restore_stage_read(rt, r);
        break;
    case ST_UNSTAGE:
        restore_stage_start(rt, r);
        break;
    case ST_STMT:
        restore_on_stmt(rt, r, res);
        break;
    case ST_NOTIFY:
        restore_stmts_done(rt, r);
        break;
    case ST_LOCK_BACK:
    case ST_LOCK_WAIT:
        restore_lock_next(rt, r);
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
        r->pitr = r->spec->at[0] != 0;
        r->at_lsn = r->pitr && jobspec_at_kind(r->spec->at, strlen(r->spec->at)) == 'l';
        snprintf(r->backup_id, sizeof(r->backup_id), "%s", r->spec->backup_id);
        if (!r->pitr)
            job_set_backup_id(jobrt_job(rt), r->spec->backup_id);
        if (r->spec->user_id[0] == 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "No authenticated user");
            break;
        }
        if (!r->pitr && !layout_backup_id_names_user(r->spec->backup_id, r->spec->user_id)) {
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
        if (r->pitr)
            pitr_now(rt, r);
        else
            load_chain(rt, r);
        break;
    case JEV_RESULT:
        if (ev->tag == ST_STMT && ev->err)
            restore_on_stmt_err(rt, r, ev->err);
        else if (ev->tag == ST_STAGE)
            restore_stage_copied(rt, r, ev);
        else
            on_result(rt, r, ev->res);
        break;
    case JEV_COPY_WRITABLE:
        restore_stage_writable(rt, r);
        break;
    case JEV_TIMER:
        if (r->target_lsn[0])
            pitr_wait(rt, r);
        else
            pitr_now(rt, r);
        break;
    case JEV_ROW:
        return restore_prune_row(rt, r, ev);
    case JEV_ITEM:
        return restore_stage_item(rt, r, ev);
    case JEV_CHECKED:
        restore_stage_checked(rt, r, ev);
        break;
    case JEV_KEY:
        memcpy(r->steps[r->ki].dek, ev->key->dek, CRYPT_KEY_LEN);
        r->ki++;
        next_key(rt, r);
        break;
    case JEV_SEGMENT:
        on_change_segment(rt, r, ev);
        break;
    case JEV_STORED:
        restore_stage_manifest(rt, r, ev);
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
    restore_stage_free(r);
    restore_free_stmts(r);
    restore_prune_free(r);
    for (int i = 0; r->shape && r->scope && i < scope_count(r->scope); i++)
        pgcopy_row_free(r->shape[i]);
    free(r->shape);
    scope_free(r->scope);
    segreplay_free(r->replay);
    free(r->replay_bufs);
    PQclear(r->segments);
    free(r->base_snapshot);
    free(r->dels);
    for (int i = 0; r->steps && i < r->nsteps; i++)
        free(r->steps[i].wrapped);
    crypt_wipe(r->steps, (size_t)r->nsteps * sizeof(Step));
    free(r->steps);
    free(r->selected);
    free(r->direct);
    free(r->partial);
    free(r->sent);
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

static int restore_check(JobSpec *spec, Err *err) {
    if (jobspec_need_user(spec, err) != 0)
        return -1;
    if (spec->backup_id[0] && spec->at[0])
        return jobspec_refuse(err, "%s",
                              "both 'backup_id' and 'at': a restore is to a backup, or to a point "
                              "in time (its base backup is chosen)");
    if (spec->backup_id[0] == '\0' && spec->at[0] == '\0')
        return jobspec_refuse(err, "missing field 'backup_id' (the backup to restore) or 'at' "
                                   "(the point in time to restore to)");
    return 0;
}

const JobType job_type_restore = {
    .name = "restore",
    .fields = "user_id backup_id at tables from dry_run",
    .user_lock = 1,
    .check = restore_check,
    .summary = "put a user's rows back as a backup holds them, or as they were at a point in "
               "time (change-only; dry_run previews)",
    .run = restore_run,
    .cancel = jobrt_cancel,
};

/* ---- STAGE: one step of a restore, one backup object streamed into the staging tables.
 *
 * The object holds each table's rows together, so a step is one COPY per table in turn. Rows
 * are turned into COPY text as they come and queued per staging table (segs); the queue is
 * pumped into the open COPY, which is ended and the next one opened when the table changes.
 * The reader is held while the queue is over MAX_BUFFERED or the connection's output is full:
 * memory stays bounded whatever the object's size. */

#define PUT_BATCH    (256u * 1024)
#define MAX_BUFFERED (4 * PUT_BATCH) /* staged text held while a COPY opens or drains */

static void step_staged(JobRt *rt, Restore *r);
static void next_change_segment(JobRt *rt, Restore *r);
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
    else if (dest == DEST_CUT)
        buf_puts(&sql, "COPY _bw_x (step, tbl, k) FROM STDIN");
    else if (dest == DEST_UNCHANGED)
        buf_puts(&sql, "COPY _bw_u (step, tbl, col) FROM STDIN");
    else if (r->direct[dest])
        scope_restore_place_sql(r->scope, dest, &sql);
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
static int restore_stage_item(JobRt *rt, Restore *r, const JobEv *ev) {
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
    if (ev->section == 0)
        r->sent[i]++;
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

static void restore_stage_checked(JobRt *rt, Restore *r, const JobEv *ev) {
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
static void restore_stage_copied(JobRt *rt, Restore *r, const JobEv *ev) {
    r->cs = CS_NONE;
    r->full = 0;
    if (ev->err && !r->copy_failed && r->copy_dest >= 0 && r->direct[r->copy_dest]) {
        /* read again through staging (step_staged), whose checks name what was wrong */
        r->copy_failed = r->direct_failed = 1;
        r->copy_err = *ev->err;
    } else if (ev->err && !r->copy_failed) {
        r->copy_failed = 1;
        r->copy_err = *ev->err;
        err_prefix(&r->copy_err, "%s %s: its %s cannot be staged",
                   r->in_changes ? "change segment" : "backup",
                   r->in_changes ? PQgetvalue(r->segments, r->seg_i, 1) : r->steps[r->si].id,
                   r->copy_dest == DEST_DELETED     ? "deleted keys"
                   : r->copy_dest == DEST_CUT       ? "truncations and moved rows"
                   : r->copy_dest == DEST_UNCHANGED ? "unchanged columns"
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
    r->read_done = r->held = r->full = r->copy_failed = r->direct_failed = 0;
    r->step_staged = 0;
    memset(r->sent, 0, (size_t)scope_count(r->scope) * sizeof(uint64_t));
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
static void restore_stage_start(JobRt *rt, Restore *r) {
    restore_query(rt, r, ST_SAVEPOINT, 0, "SAVEPOINT bw_step", 0, NULL);
}

static void restore_stage_read(JobRt *rt, Restore *r) {
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
static void restore_stage_manifest(JobRt *rt, Restore *r, const JobEv *ev) {
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

/* PLACE: 1 when a COPY into a table itself failed, or a table took fewer rows than were sent
 * (rows not the user's, left out by its WHERE): nothing goes straight in any more, and the step
 * is read again through staging. */
static int place_failed(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope), short_of = -1;
    for (int i = 0; i < n && !r->direct_failed && short_of < 0; i++)
        if (r->direct[i] && r->expected[i] != r->sent[i])
            short_of = i;
    if (!r->direct_failed && short_of < 0)
        return 0;
    if (r->direct_failed)
        log_warn(job_log_id(jobrt_job(rt)),
                 "%s: writing its rows straight into %s failed (%.200s): read again, staged",
                 r->steps[r->si].id, scope_table(r->scope, r->copy_dest), r->copy_err.msg);
    else
        log_warn(job_log_id(jobrt_job(rt)),
                 "%s: %s took %" PRIu64 " of its %" PRIu64
                 " rows (the others are not the user's): read again, staged",
                 r->steps[r->si].id, scope_table(r->scope, short_of), r->expected[short_of],
                 r->sent[short_of]);
    memset(r->direct, 0, (size_t)n);
    r->copy_failed = r->direct_failed = 0;
    return 1;
}

/* The step's read ended and every COPY with it. */
static void step_staged(JobRt *rt, Restore *r) {
    if (r->in_changes) { /* a change segment */
        if (r->copy_failed) {
            jobrt_fail(rt, &r->copy_err);
            return;
        }
        segs_drop(r);
        r->seg_i++;
        next_change_segment(rt, r);
        return;
    }
    Step *cur = &r->steps[r->si];
    if (!cur->again && (r->direct_failed || !r->copy_failed) && place_failed(rt, r))
        cur->again = 1;
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
    if (r->pitr) {
        Err e;
        int n = scope_count(r->scope);
        r->dels = xcalloc((size_t)n, 1);
        for (int i = 0; i < n; i++)
            r->dels[i] = r->selected[i] || covers_selected(r, i);
        SegReplayParams p = {r->scope,         r->shape, r->dels,  r->spec->user_id,
                             r->base_snapshot, 0,        r->nsteps};
        if (pgo_lsn_parse(r->cut_lsn, &p.cut_lsn) != 0 ||
            (r->replay = segreplay_new(&p, &e)) == NULL) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "the plan's cut (%s) or base snapshot cannot be read", r->cut_lsn);
            return;
        }
        r->in_changes = 1;
        r->seg_i = 0;
        next_change_segment(rt, r);
        return;
    }
    restore_apply_stmts(r);
    restore_run_stmt(rt, r);
}

/* ---- to a point in time: the change segments after the chain, read whole, as steps ---- */

/* The next segment holding a transaction the base does not see; after the last, FINAL. */
static void next_change_segment(JobRt *rt, Restore *r) {
    int n = PQntuples(r->segments);
    while (r->seg_i < n && !segreplay_wanted(r->replay, PQgetvalue(r->segments, r->seg_i, 5)))
        r->seg_i++;
    if (r->seg_i < n) {
        const char *key = PQgetvalue(r->segments, r->seg_i, 1);
        if (!layout_key_is_users(key, r->spec->user_id)) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "change segment %s is recorded under a key outside user %s's: refusing "
                        "to read it",
                        PQgetvalue(r->segments, r->seg_i, 0), r->spec->user_id);
            return;
        }
        if (strcmp(r->spec->from, "replica") == 0 && !r->seg_from_replica) {
            if (strcmp(PQgetvalue(r->segments, r->seg_i, 6), "completed") != 0) {
                jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                            "from=replica: change segment %s has no copy in the replica yet "
                            "(the capture's leader copies each one once it is recorded)",
                            key);
                return;
            }
            r->seg_from_replica = 1;
            r->seg_replicas++;
        }
        char stage[64];
        snprintf(stage, sizeof(stage), "replaying changes (%d of %d segments)", r->seg_i + 1, n);
        restore_progress(rt, r, stage, 89);
        uint64_t size = strtoull(PQgetvalue(r->segments, r->seg_i, 3), NULL, 10);
        const PGresult *g = r->segments;
        int i = r->seg_i;
        SegFileRecord rec = {PQgetvalue(g, i, 0), key,
                             r->spec->user_id,    PQgetvalue(g, i, 2),
                             PQgetvalue(g, i, 4), PQgetvalue(g, i, 7),
                             PQgetvalue(g, i, 8)};
        r->state = ST_SEGGET;
        /* soft: a copy missing, unreachable or damaged is told from the replica's */
        jobrt_segment(rt, ST_SEGGET, JRT_SOFT,
                      r->seg_from_replica ? services_replica(jobrt_services(rt)) : NULL, &rec,
                      (size_t)size + 1);
        return;
    }
    log_info(job_log_id(jobrt_job(rt)),
             "replayed %" PRIu64 " change%s of %d segment%s after base %s, up to commit %s",
             segreplay_changes(r->replay), segreplay_changes(r->replay) == 1 ? "" : "s",
             r->seg_read, r->seg_read == 1 ? "" : "s", r->backup_id, r->cut_lsn);
    r->in_changes = 0;
    restore_apply_stmts(r);
    restore_run_stmt(rt, r);
}

/* A segment's changes, one buffer per staging table: the order of the COPYs does not matter
 * (FINAL orders by step), and a COPY per table instead of one per change of another table is
 * what makes the replay fast (an OLTP mix alternates tables at every change). */
#define REPLAY_DESTS(r) (scope_count((r)->scope) - DEST_UNCHANGED)
static Buf *replay_sink(int dest, void *data) {
    Restore *r = data;
    return &r->replay_bufs[dest - DEST_UNCHANGED];
}

/* A segment read whole: its stored bytes' SHA-256 checked against its record (before a byte of
 * it is used) and decoded (jobrt_segment), its changes up to the cut queued for the staging
 * COPYs. */
static void on_change_segment(JobRt *rt, Restore *r, const JobEv *ev) {
    const char *key = PQgetvalue(r->segments, r->seg_i, 1);
    Err e;
    int rc = 0;
    if (ev->err) {
        e = *ev->err;
        rc = -1;
    }
    if (rc != 0) {
        /* the primary's copy failed: the replica's, when it has a completed one (nothing of
         * this segment was staged yet) */
        if (!r->seg_from_replica && e.code != ERR_CODE_CANCELLED &&
            services_replica(jobrt_services(rt)) &&
            strcmp(PQgetvalue(r->segments, r->seg_i, 6), "completed") == 0 &&
            strcmp(r->spec->from, "primary") != 0) {
            log_warn(job_log_id(jobrt_job(rt)), "%s: reading the replica's copy", e.msg);
            snprintf(r->fallback, sizeof(r->fallback), "%s", e.msg);
            r->seg_from_replica = 1;
            r->seg_replicas++;
            next_change_segment(rt, r);
            return;
        }
        jobrt_failf(rt, e.kind, e.code, "%s: nothing was changed", e.msg);
        return;
    }
    r->seg_from_replica = 0;
    r->bytes += ev->count;
    r->read_done = r->held = r->full = r->copy_failed = 0;
    r->cs = CS_NONE;
    segs_drop(r);
    uint64_t before = segreplay_changes(r->replay);
    int nd = REPLAY_DESTS(r);
    if (r->replay_bufs == NULL)
        r->replay_bufs = xcalloc((size_t)nd, sizeof(Buf));
    rc = segreplay_add(r->replay, ev->buf, ev->len, replay_sink, r, &e);
    for (int d = 0; d < nd; d++) { /* each table's lines queued whole: one COPY each */
        if (rc == 0 && r->replay_bufs[d].len) {
            if (r->nsegs == r->capsegs) {
                r->capsegs = r->capsegs ? r->capsegs * 2 : 8;
                r->segs = xrealloc(r->segs, (size_t)r->capsegs * sizeof(Seg));
            }
            r->segs[r->nsegs++] = (Seg){d + DEST_UNCHANGED, r->replay_bufs[d], 0};
            r->buffered += r->replay_bufs[d].len;
        } else {
            buf_free(&r->replay_bufs[d]);
        }
        r->replay_bufs[d] = (Buf)BUF_INIT;
    }
    if (rc != 0) {
        err_prefix(&e, "change segment %s", key);
        jobrt_fail(rt, &e);
        return;
    }
    r->seg_read++;
    r->rows_staged += segreplay_changes(r->replay) - before;
    r->read_done = 1;
    pump(rt, r);
}

static void restore_stage_writable(JobRt *rt, Restore *r) {
    if (r->cs == CS_OPENING)
        r->cs = CS_OPEN;
    r->full = 0;
    pump(rt, r);
}

static void restore_stage_free(Restore *r) {
    segs_drop(r);
    free(r->segs);
}

/* ---- PRUNE: a restore stages only what changed since its backup.
 *
 * Change tracking (proto/sql/004, 014) stamps every written row with its transaction and leaves
 * a tombstone for every deleted one. A row whose stamp the backup's snapshot sees, and whose
 * key left no tombstone since, is exactly the backup's row: it is neither staged nor compared,
 * and the delete leaves it alone. So a restore onto an intact tenant reads the object and
 * writes nothing, and one after a few changes stages those few.
 *
 * Only when tracking can be trusted for the whole time since the snapshot (the gate): no
 * tombstone of the user written since was purged (016), the snapshot is of this database, and
 * each table's stamp and tombstone triggers were in place, unchanged, when it was taken. Else,
 * or for a table whose key is neither a uuid nor an integer, every row is staged, as before.
 * The keys written or deleted since come in one COPY and are held as 16 bytes each (rowkeys);
 * past MAX_CHANGED the restore stages everything instead, keeping memory bounded.
 *
 * A child deleted with its parent (an order's items) leaves no tombstone (proto/sql/017): the
 * parent's stands for it. So a child table is pruned only with its parent, whose deleted keys
 * are kept apart: a backed-up child of a parent deleted since is staged, and the database's
 * children of such a key count as changed (scope_prune_keys_sql).
 */

#define MAX_CHANGED (2u * 1000 * 1000) /* keys held: 64 MB at most */

static void setup(JobRt *rt, Restore *r) {
    restore_setup_stmts(r);
    restore_run_stmt(rt, r);
}

static void free_sets(Restore *r) {
    for (int i = 0; r->changed && i < scope_count(r->scope); i++) {
        rowkeys_free(r->changed[i]);
        rowkeys_free(r->deleted[i]);
    }
    free(r->changed);
    free(r->deleted);
    free(r->cover);
    r->changed = r->deleted = NULL;
    r->cover = NULL;
}

/* A child table is pruned only while its covering parent is: the parent's deleted keys say
 * which of its backed-up rows are gone with their parent. */
static void prune_children(Restore *r) {
    for (int i = 0; r->prune && i < scope_count(r->scope); i++) {
        int p = scope_covering_parent(r->scope, i);
        if (r->prune[i] && p >= 0 && (!r->prune[p] || (r->changed && !r->deleted[p]))) {
            r->prune[i] = 0;
            if (r->kept)
                r->kept[i] = r->kept_sum[i] = 0;
        }
    }
}

static void restore_prune_free(Restore *r) {
    free_sets(r);
    free(r->prune);
    free(r->kept);
    free(r->kept_sum);
    free(r->left);
    free(r->left_sum);
    free(r->snapshot);
    free(r->listed);
    r->listed = NULL;
    r->prune = NULL;
    r->kept = r->kept_sum = r->left = r->left_sum = NULL;
    r->snapshot = NULL;
}

/* Every row is staged after all. */
static void stage_all(JobRt *rt, Restore *r, const char *why) {
    log_info(job_log_id(jobrt_job(rt)), "every row of the backup is staged: %s", why);
    int n = scope_count(r->scope);
    free_sets(r);
    if (r->prune)
        memset(r->prune, 0, (size_t)n);
    if (r->kept)
        memset(r->kept, 0, (size_t)n * sizeof(uint64_t));
}

static int restore_prune_mismatch(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope);
    for (int i = 0; r->changed && i < n; i++) {
        if (!r->prune[i] || (r->left[i] == r->kept[i] && r->left_sum[i] == r->kept_sum[i]))
            continue;
        log_warn(job_log_id(jobrt_job(rt)),
                 "backup %s disagrees with the database's history: %" PRIu64
                 " %s rows left out as unchanged since its snapshot, %" PRIu64
                 " in the database%s; read again, every row staged",
                 r->steps[r->si].id, r->left[i], scope_table(r->scope, i), r->kept[i],
                 r->left[i] == r->kept[i] ? " (with other keys)" : "");
        stage_all(rt, r, "the backup disagrees with the database's history");
        return 1;
    }
    return 0;
}

static void restore_prune_start(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope), any = 0;
    if (!r->prunable || r->snapshot == NULL || !scope_snapshot_valid(r->snapshot)) {
        setup(rt, r);
        return;
    }
    r->prune = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        any += r->selected[i] && !r->direct[i] && (r->prune[i] = scope_prune_kind(r->scope, i));
    if (!any) {
        setup(rt, r);
        return;
    }
    Buf sql = BUF_INIT;
    scope_prune_gate_sql(r->scope, (const unsigned char *)r->prune, &sql);
    const char *v[] = {r->snapshot, r->spec->user_id};
    restore_query(rt, r, ST_PRUNE_GATE, 0, sql.data, 2, v);
    buf_free(&sql);
}

static void restore_prune_gate(JobRt *rt, Restore *r, PGresult *res) {
    int n = scope_count(r->scope), any = 0;
    r->listed = xstrdup(PQgetvalue(res, 0, 0));
    if (!scope_snapshot_valid(r->listed)) {
        stage_all(rt, r, "the database's present snapshot could not be read");
    } else if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        stage_all(rt, r, "tombstones written since the backup's snapshot were purged");
    } else if (strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        stage_all(rt, r, "the backup's snapshot is not of this database's recent past");
    } else {
        Buf off = BUF_INIT;
        for (int i = 0; i < n; i++) {
            if (r->prune[i] && strcmp(PQgetvalue(res, 0, 3 + i), "t") != 0) {
                r->prune[i] = 0;
                buf_printf(&off, "%s%s", off.len ? ", " : "", scope_table(r->scope, i));
            }
            any += r->prune[i] != 0;
        }
        if (off.len)
            log_info(job_log_id(jobrt_job(rt)),
                     "every backed-up row of %s is staged: its tracking triggers were not in "
                     "place, unchanged, since the backup's snapshot",
                     off.data);
        buf_free(&off);
        prune_children(r);
        any = 0;
        for (int i = 0; i < n; i++)
            any += r->prune[i] != 0;
    }
    if (!any) {
        setup(rt, r);
        return;
    }
    r->changed = xcalloc((size_t)n, sizeof(RowKeys *));
    r->deleted = xcalloc((size_t)n, sizeof(RowKeys *));
    r->cover = xcalloc((size_t)n, sizeof(int));
    r->kept = xcalloc((size_t)n, sizeof(uint64_t));
    r->kept_sum = xcalloc((size_t)n, sizeof(uint64_t));
    r->left = xcalloc((size_t)n, sizeof(uint64_t));
    r->left_sum = xcalloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; i < n; i++) {
        if (r->prune[i])
            r->changed[i] = rowkeys_new();
        int p = r->cover[i] = scope_covering_parent(r->scope, i);
        if (r->prune[i] && p >= 0 && r->deleted[p] == NULL)
            r->deleted[p] = rowkeys_new();
    }
    Buf sql = BUF_INIT;
    scope_prune_keys_sql(r->scope, (const unsigned char *)r->prune, r->snapshot, &sql);
    r->state = ST_PRUNE_KEYS;
    jobrt_copy_out(rt, ST_PRUNE_KEYS, sql.data);
    buf_free(&sql);
}

/* One line of the keys' COPY: "table\tkey\t1\t\N" (written since), "table\tkey\t2\t\N"
 * (deleted since) or "table\t\N\tcount\tdigest". */
static int restore_prune_row(JobRt *rt, Restore *r, const JobEv *ev) {
    const char *p = ev->buf, *e = ev->buf + ev->len;
    if (r->changed == NULL) /* given up: the rest is read and dropped */
        return PG_COPY_CONTINUE;
    while (e > p && (e[-1] == '\n' || e[-1] == '\r'))
        e--;
    char *end;
    long i = strtol(p, &end, 10);
    const char *k = end + 1, *ke = k < e ? memchr(k, '\t', (size_t)(e - k)) : NULL;
    if (end == p || *end != '\t' || i < 0 || i >= scope_count(r->scope) || r->changed[i] == NULL ||
        ke == NULL) {
        stage_all(rt, r, "the database's list of changed keys could not be read");
        return PG_COPY_CONTINUE;
    }
    if (!r->prune[i]) /* this table is staged whole */
        return PG_COPY_CONTINUE;
    if (ke - k == 2 && memcmp(k, "\\N", 2) == 0) {
        char *d;
        r->kept[i] += strtoull(ke + 1, &d, 10);
        r->kept_sum[i] += *d == '\t' ? strtoull(d + 1, NULL, 10) : 0;
        return PG_COPY_CONTINUE;
    }
    unsigned char key[ROWKEYS_KEY_LEN];
    if (rowkeys_key(r->prune[i], k, (size_t)(ke - k), key) != 0) {
        /* a tombstone's key of another shape (written by hand?): this table is staged whole */
        log_info(job_log_id(jobrt_job(rt)),
                 "every backed-up row of %s is staged: a changed key is not a %s",
                 scope_table(r->scope, (int)i), r->prune[i] == 'u' ? "uuid" : "number");
        r->prune[i] = 0;
        r->kept[i] = r->kept_sum[i] = 0;
        rowkeys_free(r->deleted[i]); /* its children cannot be told apart either */
        r->deleted[i] = NULL;
        prune_children(r);
        return PG_COPY_CONTINUE;
    }
    r->nchanged += rowkeys_add(r->changed[i], key);
    if (r->deleted[i] && ke + 1 < e && ke[1] == '2')
        rowkeys_add(r->deleted[i], key);
    if (r->nchanged > MAX_CHANGED)
        stage_all(rt, r, "more than 2,000,000 rows changed since the backup's snapshot");
    return PG_COPY_CONTINUE;
}

static void restore_prune_keys_done(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope);
    Buf tables = BUF_INIT;
    for (int i = 0; r->changed && i < n; i++) {
        if (!r->prune[i])
            continue;
        buf_printf(&tables, "%s%s", tables.len ? ", " : "", scope_table(r->scope, i));
    }
    if (tables.len)
        log_info(job_log_id(jobrt_job(rt)),
                 "only what changed since the backup's snapshot is staged (%s): %" PRIu64
                 " keys written or deleted since",
                 tables.data, r->nchanged);
    buf_free(&tables);
    setup(rt, r);
}

static int restore_prune_skip(Restore *r, int i, const JobEv *ev) {
    const char *v = ev->buf;
    size_t n = ev->len;
    unsigned char key[ROWKEYS_KEY_LEN];
    /* a step's deleted keys are all staged, changed since or not: a row an earlier step holds
     * can be staged for another reason than its own key (its parent deleted since: 017; its key
     * deleted by a parent's new owner), and only the later step's deletion then drops it */
    if (ev->section != 0)
        return 0;
    /* a row whose key cannot be read is staged: the staging and its checks say what is wrong */
    if (pgcopy_member(ev->buf, ev->len, scope_key_column(r->scope, i), &v, &n) != 0)
        return 0;
    if (rowkeys_key(r->prune[i], v, n, key) != 0 || rowkeys_has(r->changed[i], key))
        return 0;
    int p = r->cover[i];
    if (p >= 0) { /* gone with its parent since: staged, like the parent */
        const char *pv;
        size_t pn;
        unsigned char pk[ROWKEYS_KEY_LEN];
        if (r->deleted[p] == NULL ||
            pgcopy_member(ev->buf, ev->len, scope_parent_column(r->scope, i), &pv, &pn) != 0 ||
            rowkeys_key(r->prune[p], pv, pn, pk) != 0 || rowkeys_has(r->deleted[p], pk))
            return 0;
    }
    r->left[i]++;
    r->left_sum[i] += rowkeys_digest(r->prune[i], key);
    return 1;
}

/* ---- the statement lists, run one after the other on the job's connection:
 *
 *   setup    a typed staging table per selected table (and one of deleted
 *            keys for a chain), before any row is read
 *   FINAL    columns PostgreSQL converts; for a chain the last state of each
 *            key; a unique index on the key (a key twice fails); ANALYZE
 *   CHECK    ownership: every row the user's, every parent and reference the
 *            user's or restored too, no key of another user's row
 *   APPLY    deletes (children first), then the upserts of what differs
 *            (parents first); dry_run counts the same and writes nothing
 */

static int restore_worker_notes(const Scope *s, int i) {
    if (strcmp(scope_table(s, i), "notifications") != 0)
        return 0;
    char kind;
    for (int c = 0; c < scope_stage_columns(s, i); c++)
        if (strcmp(scope_stage_column(s, i, c, &kind), "type") == 0)
            return 1;
    return 0;
}

static void add_stmt(Restore *r, SqlKind kind, int table, Buf *sql, const char *message) {
    r->stmts = xrealloc(r->stmts, (size_t)(r->nstmts + 1) * sizeof(Stmt));
    Stmt *s = &r->stmts[r->nstmts++];
    s->sql = xstrdup(sql->data);
    s->kind = kind;
    s->table = table;
    s->message = message ? xstrdup(message) : NULL;
    buf_reset(sql);
}

static void restore_free_stmts(Restore *r) {
    for (int i = 0; i < r->nstmts; i++) {
        free(r->stmts[i].sql);
        free(r->stmts[i].message);
    }
    free(r->stmts);
    r->stmts = NULL;
    r->nstmts = r->qi = 0;
}

static int any_direct(const Restore *r) {
    for (int i = 0; r->direct && i < scope_count(r->scope); i++)
        if (r->direct[i])
            return 1;
    return 0;
}

static void restore_setup_stmts(Restore *r) {
    const Scope *s = r->scope;
    Buf sql = BUF_INIT;
    restore_free_stmts(r);
    r->applying = 0;
    if (r->prune) { /* the gate turned parallel query off for the keys' query */
        buf_puts(&sql, "SET LOCAL max_parallel_workers_per_gather TO DEFAULT");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = 0; i < scope_count(s); i++) {
        if (!r->selected[i])
            continue;
        scope_stage_create_sql(s, i, r->chain, &sql);
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        if (scope_stage_alter_sql(s, i, r->chain, &sql))
            add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    if (r->chain) {
        buf_puts(&sql, "CREATE TEMP TABLE _bw_d (step int NOT NULL, tbl int NOT NULL, k text NOT "
                       "NULL) ON COMMIT DROP");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    if (any_direct(r)) {
        /* a COPY into a table waits for no one: a lock held there fails it, and the step is
         * read again through staging, whose writes take their locks without waiting (APPLY) */
        buf_puts(&sql, "SET LOCAL lock_timeout = '100ms'");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        r->short_locks = 1;
    }
    if (r->pitr) {
        buf_puts(&sql, "CREATE TEMP TABLE _bw_x (step int NOT NULL, tbl int NOT NULL, k text) ON "
                       "COMMIT DROP");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        buf_puts(&sql, "CREATE TEMP TABLE _bw_u (step int NOT NULL, tbl int NOT NULL, col int NOT "
                       "NULL) ON COMMIT DROP");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    buf_free(&sql);
}

/* To a point in time: the columns replayed updates left unchanged take the key's previous
 * value, after the conversion of staged jsonb (a converted column is copied as its type). */
static void unchanged_stmts(Restore *r, int i, Buf *sql) {
    int any = 0;
    for (int c = 0; c < scope_stage_columns(r->scope, i); c++)
        any |= segreplay_unchanged(r->replay, i, c);
    if (!any)
        return;
    char msg[ERR_MSG_MAX];
    snprintf(msg, sizeof(msg),
             "an update replayed left columns of %s unchanged (values the WAL does not carry), "
             "and neither the base backup nor an earlier change holds the row: cannot restore "
             "to %s",
             scope_table(r->scope, i), r->spec->at);
    scope_stage_unchanged_check_sql(r->scope, i, sql);
    add_stmt(r, SQ_CHECK, i, sql, msg);
    buf_printf(sql, "CREATE INDEX ON _bw_s%d (\"%s\", _bw_step)", i, scope_key_column(r->scope, i));
    add_stmt(r, SQ_EXEC, -1, sql, NULL);
    for (int c = 0; c < scope_stage_columns(r->scope, i); c++)
        if (segreplay_unchanged(r->replay, i, c)) {
            scope_stage_unchanged_sql(r->scope, i, c, sql);
            add_stmt(r, SQ_EXEC, -1, sql, NULL);
        }
}

/* Table i is staged in part: pruned, or placed (nothing staged, its rows in place). */
static int partial(const Restore *r, int i) {
    return (r->prune && r->prune[i]) || r->direct[i];
}

/* A placed table's checks, once everything is written: every placed row is still the user's
 * (its parent the user's; none removed by a foreign key's action), and its foreign keys name
 * rows of the user (restore_on_stmt). */
static void placed_stmts(Restore *r, int i, Buf *sql) {
    scope_restore_placed_sql(r->scope, i, sql);
    add_stmt(r, SQ_PLACED, i, sql, NULL);
}

static void check_stmts(Restore *r, int i, Buf *sql) {
    const Scope *s = r->scope;
    char msg[ERR_MSG_MAX];
    int p = scope_parent_index(s, i);
    int parent_staged = p >= 0 && r->selected[p];
    scope_restore_owner_sql(s, i, parent_staged, parent_staged && partial(r, p), sql);
    if (p < 0 || parent_staged)
        snprintf(msg, sizeof(msg),
                 "backup holds rows of %s that are not user %s's: refusing to restore them",
                 scope_table(s, i), r->spec->user_id);
    else
        snprintf(msg, sizeof(msg),
                 "restoring %s alone would break a foreign key: some of its rows refer to "
                 "%s rows that are missing (or not the user's); restore %s too "
                 "(tables=%s,%s)",
                 scope_table(s, i), scope_table(s, p), scope_table(s, p), scope_table(s, p),
                 scope_table(s, i));
    add_stmt(r, SQ_CHECK, i, sql, msg);
    scope_restore_foreign_sql(s, i, sql);
    snprintf(msg, sizeof(msg),
             "backup holds %s rows whose keys belong to rows of another user: refusing to "
             "restore",
             scope_table(s, i));
    add_stmt(r, SQ_CHECK, i, sql, msg);
    for (int k = 0; k < scope_restore_ref_count(s, i); k++) {
        const char *col = scope_restore_ref_sql(s, i, k, r->selected, r->partial, sql);
        snprintf(msg, sizeof(msg),
                 "backup holds %s rows whose %s refers to a row that is missing or not user "
                 "%s's: refusing to restore",
                 scope_table(s, i), col, r->spec->user_id);
        add_stmt(r, SQ_CHECK, i, sql, msg);
    }
}

static void restore_apply_stmts(Restore *r) {
    const Scope *s = r->scope;
    int n = scope_count(s);
    Buf sql = BUF_INIT;
    restore_free_stmts(r);
    r->applying = 1;
    free(r->partial);
    r->partial = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        r->partial[i] = (unsigned char)partial(r, i);
    if (r->short_locks) { /* even when nothing went straight in after all: the checks wait as
                           * they always did; the APPLY's writes set their own (after locks) */
        buf_puts(&sql, "SET LOCAL lock_timeout TO DEFAULT");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = 0; i < n; i++) {
        if (!r->selected[i])
            continue;
        if (scope_stage_convert_sql(s, i, r->chain, &sql))
            add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        if (r->replay)
            unchanged_stmts(r, i, &sql);
        if (r->chain) {
            scope_stage_final_sql(s, i, r->pitr, &sql);
            add_stmt(r, SQ_FINAL, i, &sql, NULL);
        }
        scope_stage_index_sql(s, i, &sql);
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        buf_printf(&sql, "ANALYZE _bw_f%d", i);
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = 0; i < n; i++)
        if (r->selected[i] && !r->direct[i])
            check_stmts(r, i, &sql);
    int dry = r->spec->dry_run;
    r->lock_first = -1;
    if (!dry) {
        /* Every row to delete or update is locked first, none waited for (NOWAIT): the restore
         * then never waits for the application while holding rows the application may wait
         * for, so no deadlock reaches the application. Rows held by another transaction are
         * released (back to the savepoint) and asked for again (restore_on_stmt_err). A short
         * lock_timeout covers the writes the locks cannot name (a new key inserted meanwhile,
         * a foreign key's action): such a wait fails the attempt, which is retried. */
        buf_puts(&sql, "SAVEPOINT _bw_lock");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
        r->lock_first = r->nstmts;
        /* the tables first (a LOCK TABLE, a DDL the application runs), every table of the
         * scope: a foreign key's action may write one that is not restored */
        for (int i = n - 1; i >= 0; i--) {
            buf_printf(&sql, "LOCK TABLE \"%s\" IN ROW EXCLUSIVE MODE NOWAIT", scope_table(s, i));
            add_stmt(r, SQ_LOCK, i, &sql, NULL);
        }
        for (int i = n - 1; i >= 0; i--)
            if (r->selected[i] && !r->direct[i]) {
                int part = r->prune && r->prune[i];
                scope_restore_lock_sql(s, i, part ? r->snapshot : NULL, part ? r->listed : NULL,
                                       &sql);
                add_stmt(r, SQ_LOCK, i, &sql, NULL);
            }
        buf_puts(&sql, "SET LOCAL lock_timeout = '100ms'");
        add_stmt(r, SQ_EXEC, -1, &sql, NULL);
    }
    for (int i = n - 1; i >= 0; i--) /* children first */
        if (r->selected[i] && !r->direct[i]) {
            int part = r->prune && r->prune[i];
            scope_restore_delete_sql(s, i, dry, part ? r->snapshot : NULL, part ? r->listed : NULL,
                                     &sql);
            /* the record of the user's backups outlives a restore */
            if (restore_worker_notes(s, i))
                buf_puts(&sql, " AND \"type\" NOT IN (" RESTORE_WORKER_NOTES ")");
            add_stmt(r, SQ_DELETE, i, &sql, NULL);
        }
    for (int i = 0; i < n; i++) /* parents first */
        if (r->selected[i] && !r->direct[i]) {
            scope_restore_upsert_sql(s, i, dry, &sql);
            add_stmt(r, SQ_UPSERT, i, &sql, NULL);
        }
    for (int i = 0; i < n; i++)
        if (r->selected[i] && r->direct[i])
            placed_stmts(r, i, &sql);
    buf_free(&sql);
}

static void restore_run_stmt(JobRt *rt, Restore *r) {
    if (r->qi == r->nstmts) {
        restore_stmts_done(rt, r);
        return;
    }
    Stmt *st = &r->stmts[r->qi];
    if (!r->applying)
        restore_progress(rt, r, "preparing", 0);
    else if (st->table >= 0 && st->kind != SQ_CHECK)
        restore_progress(rt, r, scope_table(r->scope, st->table), 90 + 9 * r->qi / r->nstmts);
    else
        restore_progress(rt, r, "checking", 90);
    r->stmt_ms = jobrt_elapsed_ms(rt);
    if (st->kind == SQ_LOCK && r->lock_since == 0)
        r->lock_since = r->stmt_ms ? r->stmt_ms : 1;
    int soft = st->kind == SQ_LOCK || st->kind == SQ_DELETE || st->kind == SQ_UPSERT;
    restore_query(rt, r, ST_STMT, soft ? JRT_SOFT : 0, st->sql, 0, NULL);
}

/* How long rows held by other transactions are waited for, in steps of LOCK_PAUSE. */
#define LOCK_WAIT_MS 30000
#define LOCK_PAUSE   "0.2"

/* A unique violation of the table's key itself (PostgreSQL's detail names the column): not one
 * of another unique index the backup's rows break. */
static int key_conflict(const Restore *r, const Stmt *st, const Err *err) {
    char want[SCOPE_NAME_MAX + 16];
    snprintf(want, sizeof(want), "Key (%s)=", scope_key_column(r->scope, st->table));
    return strstr(err->msg, want) != NULL;
}

static void restore_on_stmt_err(JobRt *rt, Restore *r, const Err *err) {
    const Stmt *st = &r->stmts[r->qi];
    int busy = strncmp(err->msg, "55P03", 5) == 0; /* lock_not_available */
    if (strncmp(err->msg, "40001", 5) == 0 || strncmp(err->msg, "40P01", 5) == 0) {
        /* a row written after the restore's snapshot: its transaction is before the restore,
         * which runs again from a new snapshot (the job's retry) */
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "another transaction wrote user %s's %s while the restore ran: nothing was "
                    "changed, the restore runs again (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), err->msg);
        return;
    }
    if (strncmp(err->msg, "23505", 5) == 0 && st->kind == SQ_UPSERT && key_conflict(r, st, err)) {
        /* a new key's INSERT met a row another transaction inserted after the snapshot */
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "another transaction inserted a key of user %s's %s while the restore ran: "
                    "nothing was changed, the restore runs again (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), err->msg);
        return;
    }
    if (busy && st->kind != SQ_LOCK) {
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "writing user %s's %s waited for another transaction (a key it inserts, a "
                    "row a foreign key names): nothing was changed, the restore runs again (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), err->msg);
        return;
    }
    if (!busy) {
        jobrt_fail(rt, err);
        return;
    }
    if (jobrt_elapsed_ms(rt) - r->lock_since >= LOCK_WAIT_MS) {
        jobrt_failf(rt, ERR_RETRYABLE, ERR_CODE_SQL,
                    "rows of user %s's %s (or the table) are held by another transaction for "
                    "over %d s: nothing was changed (%s)",
                    r->spec->user_id, scope_table(r->scope, st->table), LOCK_WAIT_MS / 1000,
                    err->msg);
        return;
    }
    if (r->lock_waits++ == 0)
        log_info(job_log_id(jobrt_job(rt)),
                 "%s (rows to write, or the table) held by another transaction: waiting (at "
                 "most %d s), holding none meanwhile",
                 scope_table(r->scope, st->table), LOCK_WAIT_MS / 1000);
    restore_query(rt, r, ST_LOCK_BACK, 0, "ROLLBACK TO SAVEPOINT _bw_lock", 0, NULL);
}

static void restore_lock_next(JobRt *rt, Restore *r) {
    if (r->state == ST_LOCK_BACK) {
        restore_query(rt, r, ST_LOCK_WAIT, 0, "SELECT pg_sleep(" LOCK_PAUSE ")", 0, NULL);
        return;
    }
    r->qi = r->lock_first;
    restore_run_stmt(rt, r);
}

/* A statement that took long is named in the log: where a restore's time goes. */
#define SLOW_STMT_MS 250

static void log_slow(JobRt *rt, Restore *r, const Stmt *st) {
    uint64_t ms = jobrt_elapsed_ms(rt) - r->stmt_ms;
    if (ms >= SLOW_STMT_MS)
        log_info(job_log_id(jobrt_job(rt)), "%" PRIu64 " ms: %.90s%s", ms, st->sql,
                 strlen(st->sql) > 90 ? "..." : "");
}

static void restore_on_stmt(JobRt *rt, Restore *r, PGresult *res) {
    Stmt *st = &r->stmts[r->qi];
    log_slow(rt, r, st);
    switch (st->kind) {
    case SQ_EXEC:
        break;
    case SQ_FINAL:
        r->expected[st->table] = strtoull(PQcmdTuples(res), NULL, 10);
        break;
    case SQ_LOCK:
        break;
    case SQ_PLACED: {
        int i = st->table;
        uint64_t have = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        if (have != r->expected[i]) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup holds rows of %s that are not user %s's: refusing to restore them "
                        "(%" PRIu64 " of the %" PRIu64 " written are not, or a foreign key's "
                        "action removed them)",
                        scope_table(r->scope, i), r->spec->user_id,
                        have < r->expected[i] ? r->expected[i] - have : have - r->expected[i],
                        r->expected[i]);
            return;
        }
        for (int k = 0; k < scope_restore_ref_count(r->scope, i); k++) {
            const char *n = PQgetvalue(res, 0, 1 + 2 * k);
            if (strcmp(n, "0") != 0) {
                jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                            "backup holds %s rows whose %s refers to a row that is missing or "
                            "not user %s's: refusing to restore (%s row%s, first: %s %s)",
                            scope_table(r->scope, i), scope_restore_ref_column(r->scope, i, k),
                            r->spec->user_id, n, strcmp(n, "1") ? "s" : "",
                            scope_table(r->scope, i), PQgetvalue(res, 0, 2 + 2 * k));
                return;
            }
        }
        r->ins[i] = r->restored[i] = r->expected[i];
        break;
    }
    case SQ_CHECK:
        if (strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID, "%s (%s row%s, first: %s %s)",
                        st->message, PQgetvalue(res, 0, 0),
                        strcmp(PQgetvalue(res, 0, 0), "1") ? "s" : "",
                        scope_table(r->scope, st->table), PQgetvalue(res, 0, 1));
            return;
        }
        break;
    case SQ_DELETE:
        r->del[st->table] =
            strtoull(r->spec->dry_run ? PQgetvalue(res, 0, 0) : PQcmdTuples(res), NULL, 10);
        break;
    case SQ_UPSERT: {
        int i = st->table;
        uint64_t want = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        r->ins[i] = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        r->upd[i] = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        if (r->ins[i] + r->upd[i] != want || want > r->expected[i]) {
            jobrt_failf(rt, ERR_PERMANENT, ERR_CODE_INVALID,
                        "backup holds %" PRIu64 " %s rows whose keys belong to rows of another "
                        "user: refusing to restore",
                        want - r->ins[i] - r->upd[i], scope_table(r->scope, i));
            return;
        }
        r->restored[i] = r->expected[i] + (r->kept ? r->kept[i] : 0);
        break;
    }
    }
    r->qi++;
    restore_run_stmt(rt, r);
}
