/* backup's insides, shared by backup.c (the job: the stream, the tables, the end) and
 * backup_begin.c (before the COPYs: the record, a crashed run's uploads, the snapshot, the
 * scope and the counts). */
#ifndef BW_BACKUP_INTERN_H
#define BW_BACKUP_INTERN_H

#include "bfile.h"
#include "buf.h"
#include "codec.h"
#include "crypt.h"
#include "jobconfig.h"
#include "jobrt.h"
#include "jobspec.h"
#include "layout.h"
#include "pgjson.h"
#include "scope.h"

#include <stdint.h>

typedef enum {
    ST_ACQUIRE,
    ST_RECORD,
    ST_UPLOADS,
    ST_ABORT_STALE,
    ST_RUNNING,
    ST_REBEGIN,
    ST_BEGIN,
    ST_SNAPSHOT,
    ST_SCOPE,
    ST_COUNT,
    ST_DATAKEY,
    ST_COPY,
    ST_TOMB,
    ST_COMMIT,
    ST_MANIFEST,
    ST_COMPLETE,
} State;

typedef struct {
    State state;
    const JobSpec *spec;
    const JobConfig *cfg;
    /* what this backup is */
    char id[JOBSPEC_ID_MAX + 1], type[16], requested[16], base_id[JOBSPEC_ID_MAX + 1];
    char created_at[40], key[LAYOUT_KEY_MAX];
    CodecList codecs;
    char key_id[CRYPT_ID_MAX + 1]; /* encrypted: the key that wraps the data key */
    char *wrapped;
    char *snapshot, *base_snapshot;
    /* reading */
    Scope *scope;
    char scope_fp[40]; /* the catalog's fingerprint in this snapshot (scopecache.h) */
    char guess_fp[40]; /* the fingerprint of the scope the pipeline's counts were a guess of */
    PgJsonRow *rowj;   /* table ti's rows: COPY text -> JSON */
    char *big;         /* a big row kept from libpq, written in parts (big_cur) */
    size_t big_len;
    PgJsonCursor big_cur;
    int ti;
    uint64_t *counts, *deleted, *expected;
    uint64_t rows_total, rows_done;
    BfileWriter w;
    Buf piece;
    /* writing */
    StorageWrite *out;
    int copy_done, stored, committed;
    StorageWritten written;
    /* a crashed run's multipart uploads under our key */
    char **stale;
    int nstale, si;
} Backup;

/* backup.c */
void backup_query(JobRt *rt, Backup *b, State next, int flags, const char *sql, int n,
                  const char *const *v);
void backup_progress(JobRt *rt, Backup *b, const char *stage);
/* The write stream (key: the data key of an encrypted object), then the tables. */
void backup_open_stream(JobRt *rt, Backup *b, const JobKey *key);

/* backup_begin.c */
void backup_record_row(JobRt *rt, Backup *b);
void backup_on_recorded(JobRt *rt, Backup *b, PGresult *res);
int backup_on_stale_page(Backup *b, const JobEv *ev);
void backup_abort_next_stale(JobRt *rt, Backup *b, const JobEv *ev);
void backup_on_running(JobRt *rt, Backup *b, const JobEv *ev);
void backup_snapshot(JobRt *rt, Backup *b); /* after BEGIN (again) */
/* counts: the row counts guessed from the kept scope (b->scope) in the same pipeline, or NULL */
void backup_on_snapshot(JobRt *rt, Backup *b, PGresult *res, PGresult *counts);
void backup_on_scope(JobRt *rt, Backup *b, PGresult *res);
void backup_on_counted(JobRt *rt, Backup *b, PGresult *res);

#endif
