/*
 * scope: what a backup covers (the backup_scope table), checked, and the SQL
 * that reads one user's rows of each table.
 *
 * The scope is configuration, not code: rows of backup_scope plus the
 * columns the catalog reports for each table. Everything that will appear in
 * SQL is checked here first: names must be plain identifiers that the catalog
 * knows, each child's parent must be in scope and restore before it, and the
 * chain of parents must end at a table that names its user. The generated
 * statements are COPY ... TO STDOUT (PostgreSQL's fastest way out) and take
 * the user id and the base snapshot from settings the job sets with bound
 * parameters (set_config('backup.user_id', $1, true)), so no value is ever
 * spliced into SQL.
 */
#ifndef BW_SCOPE_H
#define BW_SCOPE_H

#include "base/buf.h"
#include "base/err.h"
#include "pg/pgjson.h"

#include <libpq-fe.h>

#define SCOPE_NAME_MAX 63

typedef struct Scope Scope;

/* The query listing backup_scope with each table's columns in order (one row per column):
 * table_name, key_column, user_column, parent_table, parent_column, restore_order, column,
 * its type, and the table and column its single-column foreign key points at (or ''). */
const char *scope_load_sql(void);

/* An SQL expression (text) that changes whenever a row scope_load_sql reads changes: while
 * it is the same, so is the scope (scopecache.h). */
const char *scope_fingerprint_sql(void);

Scope *scope_new(void);
void scope_free(Scope *s);
/* Add a scope row; empty strings for absent user or parent. -1 with err when malformed. */
int scope_add_table(Scope *s, const char *name, const char *key, const char *user_col,
                    const char *parent, const char *parent_col, int restore_order, Err *err);
/* How restore stages a column: as pgcopy's kinds ('s' scalar, 'j' json, 'a' array, 'J' json
 * array: the worker writes its text), or staged as jsonb and converted by PostgreSQL. */
#define SCOPE_KIND_PG 'f'

/* Add a column the catalog reports for table (in order). kind: its staging kind, then '=' when
 * equal values are the same value (scope_load_sql computes it; anything else means
 * SCOPE_KIND_PG, compared as text). */
int scope_add_column(Scope *s, const char *table, const char *column, const char *type,
                     const char *kind, const char *ref_table, const char *ref_col, Err *err);
/* Check the whole scope (columns exist, parents resolve and restore first) and sort it by
 * restore order. -1 with err naming the first problem. */
int scope_check(Scope *s, Err *err);

/* A checked scope from the rows of scope_load_sql(); NULL with err naming the problem. */
Scope *scope_from_result(const PGresult *res, Err *err);

int scope_count(const Scope *s);
const char *scope_table(const Scope *s, int i);
/* Table i's key column. */
const char *scope_key_column(const Scope *s, int i);
/* The column of table i naming its parent's key ("" when it names its user). */
const char *scope_parent_column(const Scope *s, int i);
/* The column of table i naming its user ("" when a parent names it). */
const char *scope_user_column(const Scope *s, int i);
/* How backup writes stage column c's JSON (scope_stage_column's order): a pgjson kind, or
 * SCOPE_KIND_PG (PostgreSQL's to_json); 0 past the last column. */
char scope_json_kind(const Scope *s, int i, int c);
/* Index of table name, or -1. */
int scope_find(const Scope *s, const char *name);

/* How backup writes column's JSON (scope_load_sql's last column): a pgjson kind, else left to
 * PostgreSQL (to_json in the COPY). */
void scope_set_json_kind(Scope *s, const char *table, const char *column, char kind);

/* Which of the user's rows of a table the statements below select. */
#define SCOPE_ROWS_ALL 0 /* every row: a full backup */
#define SCOPE_ROWS_SINCE_BASE                                                                      \
    1 /* written by transactions the base's snapshot does not see                                  \
         (backup_xid, current_setting('backup.base_snapshot')) */
#define SCOPE_ROWS_KEYS                                                                            \
    2 /* whose key is in current_setting('backup.keys_I'), an array                                \
         literal: the keys the change segments name (wal) */

/*
 * Append to sql the COPY statement that emits table i's rows of the user in
 * current_setting('backup.user_id') in COPY's text format, every column but
 * backup_xid; scope_row_json(s, i) writes each line as row_to_json would. rows: SCOPE_ROWS_*.
 * The session needs DateStyle ISO.
 */
void scope_copy_sql(const Scope *s, int i, int rows, Buf *sql);
/* The rows of scope_copy_sql as PostgreSQL's row_to_json writes them, one per line: what
 * scope_row_json must equal, byte for byte (tests, backupctl scope --sql --json). */
void scope_copy_json_sql(const Scope *s, int i, int rows, Buf *sql);
/* The writer of table i's JSON rows from scope_copy_sql's lines (the caller frees it). */
PgJsonRow *scope_row_json(const Scope *s, int i);

/* Append one SELECT returning, per table in order, how many rows scope_copy_sql emits. */
void scope_count_sql(const Scope *s, int rows, Buf *sql);
/*
 * Append the COPY statement that emits, one JSON string per line, the keys of table i's rows
 * of the user deleted since the base: by transactions not visible in the base snapshot
 * (backup_tombstones; SCOPE_ROWS_SINCE_BASE), or, SCOPE_ROWS_KEYS, the keys of
 * backup.keys_I that are no row of the user's in this snapshot.
 */
void scope_tombstone_sql(const Scope *s, int i, int rows, Buf *sql);
/* The name of table i's setting for SCOPE_ROWS_KEYS (backup.keys_I). */
void scope_keys_setting(int i, char *out, size_t n);
/* 1 if table i carries backup_xid (backup_track_all() ran since it was added). */
int scope_tracked(const Scope *s, int i);

/*
 * Restore. Table i's rows are staged in a temporary table shaped like it (LIKE), filled by COPY
 * in text form: _bw_f<i> when one backup is restored, else _bw_s<i> with each row's step
 * (_bw_step), from which _bw_f<i> is made: the last state of each key over the chain, less the
 * keys a later step deleted (staged in _bw_d: step, tbl (the scope index), k). A column of
 * SCOPE_KIND_PG is staged as jsonb in _bw_j<c> (c its position) and converted in place by
 * PostgreSQL. Then every check and write reads _bw_f<i>, whose columns have their own types: a
 * key spelled in upper case or with braces is the same uuid, never a new key.
 */
/* Index of table i's parent in scope, or -1 when it names its user. */
int scope_parent_index(const Scope *s, int i);
/* Index of table i's parent when that parent names its user, else -1. Such a child deleted with
 * its parent leaves no tombstone (proto/sql/017): the parent's stands for it, and readers drop
 * or stage the children of a deleted parent key. */
int scope_covering_parent(const Scope *s, int i);
/* The columns restored (all but the tracking stamp), in COPY order: count, then each one's name
 * in the backup's rows and kind ('s', 'j', 'a', 'J'; SCOPE_KIND_PG is staged as 'j'). */
int scope_stage_columns(const Scope *s, int i);
const char *scope_stage_column(const Scope *s, int i, int c, char *kind);
/* CREATE TEMP TABLE of table i's staged rows (chain: _bw_s<i>, else _bw_f<i>). */
void scope_stage_create_sql(const Scope *s, int i, int chain, Buf *sql);
/* ALTER TABLE that lets the staged table take NULL in columns converted later; 0 when none. */
int scope_stage_alter_sql(const Scope *s, int i, int chain, Buf *sql);
/* COPY ... FROM STDIN (text) into the staged table, the columns of scope_stage_column in order,
 * then _bw_step (chain). */
void scope_stage_copy_sql(const Scope *s, int i, int chain, Buf *sql);
/* UPDATE converting the SCOPE_KIND_PG columns from their jsonb; 0 when none. */
int scope_stage_convert_sql(const Scope *s, int i, int chain, Buf *sql);
/* Chain: CREATE TEMP TABLE _bw_f<i> AS the last state of each key, less later deletions. cuts:
 * a point-in-time restore, whose replayed changes also stage in _bw_x (step, tbl, k) the
 * TRUNCATEs of table tbl (k NULL) and deletes of its rows whose parent column is k. */
void scope_stage_final_sql(const Scope *s, int i, int cuts, Buf *sql);
/* A point-in-time restore's updates that left column c of table i unchanged (staged in _bw_u:
 * step, tbl, col) take the value of the key's previous state: an UPDATE of _bw_s<i>. */
void scope_stage_unchanged_sql(const Scope *s, int i, int c, Buf *sql);
/* ... and the check first: count and first key of those updates whose key has no earlier
 * state. */
void scope_stage_unchanged_check_sql(const Scope *s, int i, Buf *sql);
/* CREATE UNIQUE INDEX on _bw_f<i>'s key (a key staged twice fails the restore). */
void scope_stage_index_sql(const Scope *s, int i, Buf *sql);
/*
 * The checks below are SELECTs of two columns: how many staged rows of table i fail, and the
 * key of the first (to name it in the error).
 *
 * The staged rows of table i that are not the user's: the user column differs, or the parent
 * is neither staged (parent_staged) nor the user's in the database.
 */
void scope_restore_owner_sql(const Scope *s, int i, int parent_staged, int parent_partial,
                             Buf *sql);
/* How many foreign keys of table i point at other tables of the scope (besides its user and
 * parent columns): each is checked by scope_restore_ref_sql. */
int scope_restore_ref_count(const Scope *s, int i);
/* The staged rows of table i whose k-th such foreign key is set but names no row of the user:
 * neither a staged row (when the referenced table is selected) nor the user's row in the
 * database. Returns the column's name. */
const char *scope_restore_ref_sql(const Scope *s, int i, int k, const unsigned char *selected,
                                  const unsigned char *partial, Buf *sql);
/* DELETE the user's rows of table i that are not staged (count_only: count them). since, until:
 * when only the rows that changed since the backup's snapshot were staged (scope_prune_*), that
 * snapshot and the one before the changed keys were listed: only rows written between the two
 * can go; else NULL, NULL. */
void scope_restore_delete_sql(const Scope *s, int i, int count_only, const char *since,
                              const char *until, Buf *sql);
/* SELECT ... FOR UPDATE NOWAIT of the rows of table i the restore will delete or update (the
 * arguments as for scope_restore_delete_sql): taken before any is written, so that the restore
 * never waits for the application while holding rows the application may wait for. */
void scope_restore_lock_sql(const Scope *s, int i, const char *since, const char *until, Buf *sql);
/* The staged rows of table i whose key is a row of another user. */
void scope_restore_foreign_sql(const Scope *s, int i, Buf *sql);
/* Write the staged rows of table i that are new or differ from the row with their key (the
 * others are not touched: no trigger, no new tuple, no WAL): the new keys by a plain INSERT (a
 * key inserted meanwhile by another transaction fails it: 23505 naming the key column), the
 * others by an UPDATE of the row in place, only when it is the user's (through the user column
 * or the parent row). One row back: the rows to write, those inserted, those updated (short of
 * the first when a row was not the user's). dry_run: write nothing; the same row, planned (to
 * write, new, differing). */
void scope_restore_upsert_sql(const Scope *s, int i, int dry_run, Buf *sql);

/*
 * A table that holds none of the user's rows when the restore begins takes the backup's rows
 * straight from the stream, inside the restore's transaction ("placed": restore.c, PLACE),
 * instead of through staging, comparison and upsert: nothing in place can differ, and the
 * unique keys are the fence against a key of another user's row. The checks above then take
 * such a table as partial (its staged rows are none; its rows in place are the user's).
 *
 * 1 when table i's restored columns all go straight into the table (none converted later).
 */
int scope_restore_placeable(const Scope *s, int i);
/* SELECT of one boolean per table: the user has no row in table i (false where !candidate[i]). */
void scope_restore_empty_sql(const Scope *s, const unsigned char *candidate, Buf *sql);
/* COPY ... FROM STDIN into table i itself, scope_stage_column's columns in order; a table with
 * a user column takes only the user's rows (WHERE): the count copied falls short otherwise. */
void scope_restore_place_sql(const Scope *s, int i, Buf *sql);
/* Once written, one scan of the user's rows of table i: their count (a placed row whose parent
 * is not the user's, or that a foreign key's action removed, is missing from it), then for each
 * k-th checked foreign key (scope_restore_ref_count) the rows where it is set but names no row
 * of the user, and the key of the first ('' when none). */
void scope_restore_placed_sql(const Scope *s, int i, Buf *sql);
/* The column of table i's k-th checked foreign key, or NULL. */
const char *scope_restore_ref_column(const Scope *s, int i, int k);

/*
 * A restore stages only the rows that changed since its backup's snapshot, when change tracking
 * can say which (restore.c, PRUNE): a row whose stamp the snapshot sees, and that left no
 * tombstone since, is the backup's row. The parent checks and the ref checks above then take
 * a table staged in part (parent_partial, partial[]) as its staged rows plus the user's rows
 * in place, and the delete only removes rows that changed.
 *
 * How table i's keys are compared (rowkeys_key's kind: 'u' uuid, 'i' integer), or 0 when its
 * rows cannot be left out (not tracked, or a key of another type).
 */
char scope_prune_kind(const Scope *s, int i);
/* SELECT that sets backup.base_snapshot to $1 (the backup's snapshot) for the transaction (and
 * max_parallel_workers_per_gather to 0: SET LOCAL ... TO DEFAULT after the keys' query) and
 * returns the present snapshot (the keys listed after it see every write it sees), then two
 * booleans: no tombstone of user $2 written since was purged; the snapshot is of this
 * database's past (not newer than now, nor 2e9 transactions old); then per scope table whether
 * its triggers were in place, unchanged, since the snapshot (false for tables not in
 * candidate). */
void scope_prune_gate_sql(const Scope *s, const unsigned char *candidate, Buf *sql);
/* 1 if snap is a snapshot as pg_current_snapshot() prints it (safe to splice as a literal). */
int scope_snapshot_valid(const char *snap);
/* COPY TO STDOUT of (table index, key, 1, NULL) per row of a pruned table written since the
 * snapshot snap (for a child of a covering parent, also a row whose parent's key was deleted
 * since), (table index, key, 2, NULL) per key deleted since (a tombstone), and (table index,
 * NULL, count, digest) of its rows unchanged since: their number and the sum of their keys'
 * rowkeys_digest (mod 2^64). -1 when snap is not a snapshot. */
int scope_prune_keys_sql(const Scope *s, const unsigned char *pruned, const char *snap, Buf *sql);

#endif
