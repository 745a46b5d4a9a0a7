/* restore's insides, shared by restore.c (the job: chain, keys, staging) and restore_apply.c
 * (the statement lists: staging tables, checks, writes). */
#ifndef BW_RESTORE_INTERN_H
#define BW_RESTORE_INTERN_H

#include "bcheck.h"
#include "buf.h"
#include "codec.h"
#include "crypt.h"
#include "jobrt.h"
#include "jobspec.h"
#include "keyset.h"
#include "layout.h"
#include "pgcopy.h"
#include "scope.h"

#include <stdint.h>

typedef enum {
    ST_ACQUIRE,
    ST_CHAIN,
    ST_KEYS, /* the encrypted steps' data keys */
    ST_HISTORY,
    ST_BEGIN,
    ST_USER,
    ST_SCOPE,
    ST_PRUNE_GATE, /* can tracking say what changed since the backup (restore_prune.c) */
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

typedef enum { SQ_EXEC, SQ_FINAL, SQ_CHECK, SQ_LOCK, SQ_DELETE, SQ_UPSERT } SqlKind;

typedef struct {
    char *sql;
    SqlKind kind;
    int table;     /* scope index (FINAL, CHECK, DELETE, UPSERT) */
    char *message; /* CHECK: the error when the count is not 0 */
} Stmt;

/* Staged text waiting for its COPY: one staging table's (dest: a scope index, or DEST_DELETED). */
#define DEST_DELETED (-2)
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
    /* only what changed since the last step's snapshot is staged (restore_prune.c) */
    char *snapshot;            /* the last step's ('' when unknown) */
    char *listed;              /* the snapshot before the changed keys were listed */
    int prunable;              /* no step recorded by reindex */
    char *prune;               /* per scope table: its key's keyset kind, or 0 (every row staged) */
    KeySet **changed;          /* per pruned table: keys written or deleted since */
    KeySet **deleted;          /* per pruned covering parent: its keys deleted since (017) */
    int *cover;                /* per table: its covering parent's index, or -1 (read per row) */
    uint64_t *kept;            /* per pruned table: the user's rows unchanged since (not staged) */
    uint64_t *kept_sum;        /* and the digest of their keys (keyset_digest) */
    uint64_t *left, *left_sum; /* per table: rows of the step being read left out, their digest */
    uint64_t nchanged;
    uint64_t staged, step_staged; /* rows staged: in all, by the step being read */
} Restore;

void restore_query(JobRt *rt, Restore *r, State next, int flags, const char *sql, int n,
                   const char *const *v);
void restore_progress(JobRt *rt, Restore *r, const char *stage, int pct);

/* The notifications the worker writes itself (backup.c, restore.c): a restore keeps those it
 * does not hold (a user restoring yesterday's backup keeps the record of today's). */
#define RESTORE_WORKER_NOTES "'backup_completed', 'backup_failed', 'restore_completed'"
/* 1 if table i is the notifications table the worker writes (it has a type column). */
int restore_worker_notes(const Scope *s, int i);

/* restore_apply.c. The staging tables (the statements before the first step is read). */
void restore_setup_stmts(Restore *r);
/* FINAL and APPLY (after every step is staged). */
void restore_apply_stmts(Restore *r);
/* The next statement of the list; at its end, restore_stmts_done(). */
void restore_run_stmt(JobRt *rt, Restore *r);
void restore_on_stmt(JobRt *rt, Restore *r, PGresult *res);
/* A lock, delete or upsert failed (err): a write after the snapshot is retried as a job, rows
 * held by another transaction are waited for (lock statements, a while), the rest fails. */
void restore_on_stmt_err(JobRt *rt, Restore *r, const Err *err);
/* ST_LOCK_BACK and ST_LOCK_WAIT ended. */
void restore_lock_next(JobRt *rt, Restore *r);
void restore_free_stmts(Restore *r);
/* restore_stage.c: one step read into the staging tables. Start it (a savepoint first), then
 * the events of its read and its COPYs; at its end the next step, or the FINAL statements. */
void restore_stage_start(JobRt *rt, Restore *r);
void restore_stage_read(JobRt *rt, Restore *r); /* the savepoint is set */
void restore_stage_manifest(JobRt *rt, Restore *r, const JobEv *ev);
int restore_stage_item(JobRt *rt, Restore *r, const JobEv *ev);
void restore_stage_checked(JobRt *rt, Restore *r, const JobEv *ev);
void restore_stage_copied(JobRt *rt, Restore *r, const JobEv *ev);
void restore_stage_writable(JobRt *rt, Restore *r);
void restore_stage_free(Restore *r);
/* restore_prune.c: after the scope, decide what to stage (then the setup statements). */
void restore_prune_start(JobRt *rt, Restore *r);
void restore_prune_gate(JobRt *rt, Restore *r, PGresult *res);
int restore_prune_row(JobRt *rt, Restore *r, const JobEv *ev);
void restore_prune_keys_done(JobRt *rt, Restore *r);
/* 1 when the row or deleted key ev of table i is left out: unchanged since the backup. */
int restore_prune_skip(Restore *r, int i, const JobEv *ev);
/* One backup read: 1 when the rows it left out are not the user's rows unchanged since (their
 * number or keys differ: a crafted object, or history tracking missed); every row is then
 * staged, and the step must be read again. */
int restore_prune_mismatch(JobRt *rt, Restore *r);
void restore_prune_free(Restore *r);
/* restore.c: a statement list ran to its end. */
void restore_stmts_done(JobRt *rt, Restore *r);

#endif
