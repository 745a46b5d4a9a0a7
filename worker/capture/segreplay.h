/*
 * segreplay: a restore to a point in time replays a user's change segments onto its base
 * backup; this turns decoded segments into the COPY text of the restore's staging tables;
 * no I/O.
 *
 * The changes replayed are those of the transactions the base's snapshot does not see whose
 * commit LSN is at most the cut, in commit order. Each change is a step of its own, numbered on
 * from the base's chain, so the restore's FINAL (the last state of each key; a step's deletion
 * removes only earlier steps' rows) applies them in order, a key deleted and inserted again
 * included:
 *   i, u   the row, as a backup's row, into its table's staging COPY with "\t<step>";
 *          an update's unchanged columns (TOAST the WAL did not carry) one line each into
 *          SEGREPLAY_UNCHANGED: "step\ttable\tcolumn index", filled from the key's previous
 *          state by the restore
 *   d      "step\ttable\tkey" into SEGREPLAY_DELETED (the chain's deleted keys)
 *   where  "step\ttable\tparent key" into SEGREPLAY_CUT: the table's rows of that parent
 *   t      "step\ttable\t\N" into SEGREPLAY_CUT: every earlier row of the table
 */
#ifndef BW_SEGREPLAY_H
#define BW_SEGREPLAY_H

#include "base/buf.h"
#include "base/err.h"
#include "pg/pgcopy.h"
#include "scope/scope.h"

#include <stdint.h>

#define SEGREPLAY_DELETED   (-2)
#define SEGREPLAY_CUT       (-3)
#define SEGREPLAY_UNCHANGED (-4)

typedef struct SegReplay SegReplay;

/* The buffer the next line for dest (a scope index or SEGREPLAY_*) is appended to. */
typedef Buf *(*SegReplaySink)(int dest, void *data);

typedef struct {
    const Scope *scope;
    PgCopyRow *const *shape;   /* per table: its staged columns (NULL: not restored) */
    const unsigned char *dels; /* per table: its deletions are staged (restored, or covering) */
    const char *user_id;
    const char *base_snapshot; /* pg_snapshot text of the base */
    uint64_t cut_lsn;          /* the last commit LSN replayed */
    int first_step;            /* the first change's step number */
} SegReplayParams;

/* NULL with err when the base's snapshot is malformed. */
SegReplay *segreplay_new(const SegReplayParams *p, Err *err);
void segreplay_free(SegReplay *r);
/* 1 when a segment whose transactions are xids (comma-separated 32-bit xids, change_segments'
 * xids) holds one the base does not see. */
int segreplay_wanted(const SegReplay *r, const char *xids);
/* A decoded segment of the user, its changes appended through sink. -1 with err: not a segment
 * of the user, a table outside the scope, a row that cannot be staged, or changes out of commit
 * order (segments that overlap). */
int segreplay_add(SegReplay *r, const char *buf, size_t len, SegReplaySink sink, void *data,
                  Err *err);
/* Changes replayed so far; the next step's number. */
uint64_t segreplay_changes(const SegReplay *r);
int segreplay_next_step(const SegReplay *r);
/* 1 when column c of table i was left unchanged by an update replayed. */
int segreplay_unchanged(const SegReplay *r, int i, int c);

#endif
