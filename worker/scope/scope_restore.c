/*
 * scope_restore: the SQL of a restore (see scope.h): typed staging tables,
 * the ownership checks, the delete and the upsert.
 *
 * Staged rows have their columns' own types, so every comparison is of
 * values, never of text as a backup spelled it: `{ABC...}` and `abc...` are
 * one uuid, and a lookup into a real table uses its index. Names spliced in
 * are checked identifiers (scope.c); types spliced after `::` are checked to
 * be plain type names; every value comes from a bound setting.
 */
#include "scope/scope_intern.h"

#include <stdio.h>
#include <string.h>

/* The restored columns: all but the stamp. */
static const Column *restored(const Table *t, int c) {
    for (int k = 0; k < t->ncols; k++)
        if (!scope_is_stamp(&t->cols[k]) && c-- == 0)
            return &t->cols[k];
    return NULL;
}

int scope_stage_columns(const Scope *s, int i) {
    const Table *t = &s->t[i];
    int n = 0;
    for (int k = 0; k < t->ncols; k++)
        n += !scope_is_stamp(&t->cols[k]);
    return n;
}

const char *scope_stage_column(const Scope *s, int i, int c, char *kind) {
    const Column *col = restored(&s->t[i], c);
    if (col == NULL)
        return NULL;
    *kind = col->kind == SCOPE_KIND_PG ? 'j' : col->kind;
    return col->name;
}

static void staged_name(int i, int chain, Buf *sql) {
    buf_printf(sql, "%s%d", chain ? "_bw_s" : "_bw_f", i);
}

void scope_stage_create_sql(const Scope *s, int i, int chain, Buf *sql) {
    const Table *t = &s->t[i];
    buf_puts(sql, "CREATE TEMP TABLE ");
    staged_name(i, chain, sql);
    buf_printf(sql, " (LIKE \"%s\"", t->name);
    for (int c = 0; restored(t, c); c++)
        if (restored(t, c)->kind == SCOPE_KIND_PG)
            buf_printf(sql, ", _bw_j%d jsonb", c);
    buf_printf(sql, "%s) ON COMMIT DROP", chain ? ", _bw_step int NOT NULL" : "");
}

int scope_stage_alter_sql(const Scope *s, int i, int chain, Buf *sql) {
    const Table *t = &s->t[i];
    int n = 0;
    for (int c = 0; restored(t, c); c++) {
        const Column *col = restored(t, c);
        if (col->kind != SCOPE_KIND_PG)
            continue;
        if (n++ == 0) {
            buf_puts(sql, "ALTER TABLE ");
            staged_name(i, chain, sql);
        }
        buf_printf(sql, "%s ALTER COLUMN \"%s\" DROP NOT NULL", n > 1 ? "," : "", col->name);
    }
    return n;
}

void scope_stage_copy_sql(const Scope *s, int i, int chain, Buf *sql) {
    const Table *t = &s->t[i];
    buf_puts(sql, "COPY ");
    staged_name(i, chain, sql);
    buf_puts(sql, " (");
    for (int c = 0; restored(t, c); c++) {
        const Column *col = restored(t, c);
        if (col->kind == SCOPE_KIND_PG)
            buf_printf(sql, "%s_bw_j%d", c ? ", " : "", c);
        else
            buf_printf(sql, "%s\"%s\"", c ? ", " : "", col->name);
    }
    buf_puts(sql, chain ? ", _bw_step) FROM STDIN" : ") FROM STDIN");
}

int scope_stage_convert_sql(const Scope *s, int i, int chain, Buf *sql) {
    const Table *t = &s->t[i];
    int n = 0;
    Buf cols = BUF_INIT, vals = BUF_INIT;
    for (int c = 0; restored(t, c); c++) {
        const Column *col = restored(t, c);
        if (col->kind != SCOPE_KIND_PG)
            continue;
        buf_printf(&cols, "%s\"%s\"", n ? ", " : "", col->name);
        buf_printf(&vals, "%sr.\"%s\"", n ? ", " : "", col->name);
        n++;
    }
    if (n) {
        /* jsonb_populate_record does what a restore of these types always did */
        buf_puts(sql, "UPDATE ");
        staged_name(i, chain, sql);
        buf_printf(sql, " SET (%s) = (SELECT %s FROM jsonb_populate_record(NULL::\"%s\", ",
                   cols.data, vals.data, t->name);
        buf_puts(sql, "jsonb_build_object(");
        int k = 0;
        for (int c = 0; restored(t, c); c++)
            if (restored(t, c)->kind == SCOPE_KIND_PG)
                buf_printf(sql, "%s'%s', _bw_j%d", k++ ? ", " : "", restored(t, c)->name, c);
        buf_puts(sql, ")) r)");
    }
    buf_free(&cols);
    buf_free(&vals);
    return n;
}

/* No later step deleted key `col` of the staged row s, a key of table d (its scope index). */
static void not_deleted_later(const Scope *s, int d, const char *col, Buf *sql) {
    buf_printf(sql,
               "NOT EXISTS (SELECT 1 FROM _bw_d d WHERE d.tbl = %d AND d.step > s._bw_step AND "
               "(d.k)::%s = s.\"%s\")",
               d, scope_col_type(&s->t[d], s->t[d].key), col);
}

void scope_stage_final_sql(const Scope *s, int i, int cuts, Buf *sql) {
    const Table *t = &s->t[i];
    /* a step deletes first, then writes its rows: only a later step's deletion removes a row */
    buf_printf(sql,
               "CREATE TEMP TABLE _bw_f%d ON COMMIT DROP AS SELECT DISTINCT ON (s.\"%s\") s.* "
               "FROM _bw_s%d s WHERE ",
               i, t->key, i);
    not_deleted_later(s, i, t->key, sql);
    int p = scope_covering_parent(s, i);
    if (p >= 0) { /* deleted with its parent: the parent's key stands for it (017) */
        buf_puts(sql, " AND ");
        not_deleted_later(s, p, t->parent_col, sql);
    }
    if (cuts) { /* a point in time: no later TRUNCATE, no later delete of its parent's rows */
        buf_printf(sql,
                   " AND NOT EXISTS (SELECT 1 FROM _bw_x x WHERE x.tbl = %d AND x.k IS NULL AND "
                   "x.step > s._bw_step)",
                   i);
        if (t->parent_col[0])
            buf_printf(sql,
                       " AND NOT EXISTS (SELECT 1 FROM _bw_x x WHERE x.tbl = %d AND x.k IS NOT "
                       "NULL AND x.step > s._bw_step AND (x.k)::%s = s.\"%s\")",
                       i, scope_col_type(t, t->parent_col), t->parent_col);
    }
    buf_printf(sql, " ORDER BY s.\"%s\", s._bw_step DESC", t->key);
}

void scope_stage_unchanged_sql(const Scope *s, int i, int c, Buf *sql) {
    const Table *t = &s->t[i];
    const char *col = restored(t, c)->name;
    buf_printf(sql,
               "UPDATE _bw_s%d s SET \"%s\" = (SELECT p.\"%s\" FROM _bw_s%d p WHERE p.\"%s\" = "
               "s.\"%s\" AND p._bw_step < s._bw_step AND NOT EXISTS (SELECT 1 FROM _bw_u u WHERE "
               "u.step = p._bw_step AND u.tbl = %d AND u.col = %d) ORDER BY p._bw_step DESC "
               "LIMIT 1) WHERE EXISTS (SELECT 1 FROM _bw_u u WHERE u.step = s._bw_step AND "
               "u.tbl = %d AND u.col = %d)",
               i, col, col, i, t->key, t->key, i, c, i, c);
}

void scope_stage_unchanged_check_sql(const Scope *s, int i, Buf *sql) {
    const Table *t = &s->t[i];
    buf_printf(sql,
               "SELECT count(*), min(s.\"%s\"::text) FROM _bw_s%d s WHERE EXISTS (SELECT 1 FROM "
               "_bw_u u WHERE u.step = s._bw_step AND u.tbl = %d) AND NOT EXISTS (SELECT 1 FROM "
               "_bw_s%d p WHERE p.\"%s\" = s.\"%s\" AND p._bw_step < s._bw_step)",
               t->key, i, i, i, t->key, t->key);
}

void scope_stage_index_sql(const Scope *s, int i, Buf *sql) {
    buf_printf(sql, "CREATE UNIQUE INDEX ON _bw_f%d (\"%s\")", i, s->t[i].key);
}

/* ---- checks ---- */

/* A row of table p whose column col equals the staged column f.scol, that is the user's. */
static void exists_users_row(const Scope *s, const Table *p, const char *col, const char *scol,
                             Buf *sql) {
    buf_printf(sql, "EXISTS (SELECT 1 FROM \"%s\" WHERE \"%s\".\"%s\" = f.\"%s\" AND ", p->name,
               p->name, col, scol);
    scope_user_filter(s, p, "", sql);
    buf_puts(sql, ")");
}

/* A staged row of table p (index pi) whose key equals the staged column f.scol. */
static void exists_staged(const Table *p, int pi, const char *scol, Buf *sql) {
    buf_printf(sql, "EXISTS (SELECT 1 FROM _bw_f%d g WHERE g.\"%s\" = f.\"%s\")", pi, p->key, scol);
}

static void check_head(const Table *t, int i, Buf *sql) {
    buf_printf(sql, "SELECT count(*), coalesce(min(f.\"%s\"::text), '') FROM _bw_f%d f WHERE ",
               t->key, i);
}

/* A row the staged column f.scol names in table p (index pi) after the restore: a staged row
 * when p is restored (and, when p is staged in part, one the user has that is unchanged, not
 * staged), else the user's row in the database. */
static void exists_after(const Scope *s, const Table *p, int pi, int staged, int partial,
                         const char *scol, Buf *sql) {
    if (staged && !partial) {
        exists_staged(p, pi, scol, sql);
        return;
    }
    buf_puts(sql, "(");
    if (staged) {
        exists_staged(p, pi, scol, sql);
        buf_puts(sql, " OR ");
    }
    exists_users_row(s, p, p->key, scol, sql);
    buf_puts(sql, ")");
}

void scope_restore_owner_sql(const Scope *s, int i, int parent_staged, int parent_partial,
                             Buf *sql) {
    const Table *t = &s->t[i];
    check_head(t, i, sql);
    if (t->user_col[0]) {
        buf_printf(sql, "f.\"%s\" IS DISTINCT FROM (current_setting('backup.user_id'))::%s",
                   t->user_col, scope_col_type(t, t->user_col));
        return;
    }
    int pi = scope_find(s, t->parent);
    buf_puts(sql, "NOT ");
    exists_after(s, &s->t[pi], pi, parent_staged, parent_partial, t->parent_col, sql);
}

int scope_restore_ref_count(const Scope *s, int i) {
    const Table *t = &s->t[i];
    int n = 0;
    for (int c = 0; c < t->ncols; c++)
        n += scope_checked_ref(s, t, &t->cols[c]);
    return n;
}

/* The k-th checked foreign key of table t (scope_restore_ref_count), or NULL. */
static const Column *checked_ref(const Scope *s, const Table *t, int k) {
    for (int n = 0; n < t->ncols; n++)
        if (scope_checked_ref(s, t, &t->cols[n]) && k-- == 0)
            return &t->cols[n];
    return NULL;
}

const char *scope_restore_ref_sql(const Scope *s, int i, int k, const unsigned char *selected,
                                  const unsigned char *partial, Buf *sql) {
    const Table *t = &s->t[i];
    const Column *c = checked_ref(s, t, k);
    if (c == NULL)
        return NULL;
    int pi = scope_find(s, c->ref_table);
    const Table *p = &s->t[pi];
    check_head(t, i, sql);
    buf_printf(sql, "f.\"%s\" IS NOT NULL AND NOT ", c->name);
    /* a referenced table being restored too is replaced by its staged rows (themselves checked
     * to be the user's); one left alone must hold the user's row */
    if (selected[pi] && strcmp(c->ref_col, p->key) == 0)
        exists_after(s, p, pi, 1, partial != NULL && partial[pi], c->name, sql);
    else
        exists_users_row(s, p, c->ref_col, c->name, sql);
    return c->name;
}

void scope_restore_foreign_sql(const Scope *s, int i, Buf *sql) {
    const Table *t = &s->t[i];
    buf_printf(sql,
               "SELECT count(*), coalesce(min(f.\"%s\"::text), '') FROM _bw_f%d f JOIN \"%s\" x ON "
               "x.\"%s\" = f.\"%s\" WHERE ",
               t->key, i, t->name, t->key, t->key);
    /* NOT EXISTS, not NOT (... IN ...): the latter is a subplan run per row once the user's
     * parent keys outgrow work_mem (an 820k-row restore sat here for minutes) */
    if (t->user_col[0]) {
        buf_printf(sql, "x.\"%s\" IS DISTINCT FROM (current_setting('backup.user_id'))::%s",
                   t->user_col, scope_col_type(t, t->user_col));
        return;
    }
    const Table *p = &s->t[scope_find(s, t->parent)];
    buf_printf(sql, "NOT EXISTS (SELECT 1 FROM \"%s\" WHERE \"%s\".\"%s\" = x.\"%s\" AND ", p->name,
               p->name, p->key, t->parent_col);
    scope_user_filter(s, p, "", sql);
    buf_puts(sql, ")");
}

/* ---- writes ---- */

int scope_snapshot_valid(const char *snap) {
    /* xmin:xmax:xip,... as pg_current_snapshot() prints it */
    size_t n = strlen(snap), colons = 0, digits = 0;
    if (n == 0 || n > 64 * 1024)
        return 0;
    for (size_t k = 0; k < n; k++) {
        if (snap[k] >= '0' && snap[k] <= '9') {
            digits++;
        } else if (snap[k] == ':' && digits && colons < 2) {
            colons++;
            digits = 0;
        } else if (snap[k] != ',' || colons != 2 || !digits) {
            return 0;
        } else {
            digits = 0;
        }
    }
    return colons == 2 && (digits || snap[n - 1] == ':');
}

/* The stamp of a row (column qual"backup_xid") says the snapshot snap (checked, spliced as a
 * literal: planned as a constant, not parsed per row) did not see its last write (or it has
 * none: written before tracking, or by a copy that brought its own); !changed: the opposite. A
 * stamp below the snapshot's xmin is seen without a look at the snapshot's list. */
static void changed_since(const char *qual, int changed, const char *snap, Buf *sql) {
    char xmin[24];
    size_t k = strcspn(snap, ":");
    snprintf(xmin, sizeof(xmin), "%.*s", (int)(k < 20 ? k : 20), snap);
    if (changed)
        buf_printf(sql,
                   "(%s\"backup_xid\" IS NULL OR %s\"backup_xid\" >= '%s'::xid8 AND NOT "
                   "pg_visible_in_snapshot(%s\"backup_xid\", '%s'::pg_snapshot))",
                   qual, qual, xmin, qual, snap);
    else
        buf_printf(sql,
                   "%s\"backup_xid\" IS NOT NULL AND (%s\"backup_xid\" < '%s'::xid8 OR "
                   "pg_visible_in_snapshot(%s\"backup_xid\", '%s'::pg_snapshot))",
                   qual, qual, xmin, qual, snap);
}

/* The condition on table i's rows that the delete removes (scope_restore_delete_sql). */
static void delete_where(const Scope *s, int i, const char *since, const char *until, Buf *sql) {
    const Table *t = &s->t[i];
    scope_user_filter(s, t, "", sql);
    if (since && !(until && scope_snapshot_valid(since) && scope_snapshot_valid(until))) {
        buf_puts(sql, " AND false"); /* staged in part, bounds unknown: nothing may go */
    } else if (since) {
        /* a row unchanged since the backup is the backup's; one written after the changed keys
         * were listed (the application, meanwhile) was not staged for that reason: both stay */
        buf_puts(sql, " AND ");
        changed_since("", 1, since, sql);
        buf_printf(sql,
                   " AND (\"backup_xid\" IS NULL OR pg_visible_in_snapshot(\"backup_xid\", "
                   "'%s'::pg_snapshot))",
                   until);
    }
    buf_printf(sql, " AND NOT EXISTS (SELECT 1 FROM _bw_f%d f WHERE f.\"%s\" = \"%s\".\"%s\")", i,
               t->key, t->name, t->key);
}

void scope_restore_delete_sql(const Scope *s, int i, int count_only, const char *since,
                              const char *until, Buf *sql) {
    buf_printf(sql, count_only ? "SELECT count(*) FROM \"%s\" WHERE " : "DELETE FROM \"%s\" WHERE ",
               s->t[i].name);
    delete_where(s, i, since, until, sql);
}

/* The restored columns, each after prefix; compare: as they are compared (as text unless equal
 * values are the same value). */
static void restored_cols(const Table *t, const char *prefix, int compare, Buf *sql) {
    for (int c = 0; restored(t, c); c++) {
        const Column *col = restored(t, c);
        buf_printf(sql, "%s%s\"%s\"%s", c ? ", " : "", prefix, col->name,
                   compare && !col->exact ? "::text" : "");
    }
}

void scope_restore_upsert_sql(const Scope *s, int i, int dry_run, Buf *sql) {
    const Table *t = &s->t[i];
    /* w: the staged rows to write, those that are new or differ from the row in place; a value
     * that prints differently (1.0 and 1.00, json's spacing) is written back exactly as it was */
    buf_puts(sql, "WITH w AS (SELECT ");
    restored_cols(t, "f.", 0, sql);
    buf_printf(sql,
               ", x.\"%s\" IS NULL AS _bw_new FROM _bw_f%d f LEFT JOIN \"%s\" x ON x.\"%s\" = "
               "f.\"%s\" WHERE x.\"%s\" IS NULL OR ROW(",
               t->key, i, t->name, t->key, t->key, t->key);
    restored_cols(t, "x.", 1, sql);
    buf_puts(sql, ") IS DISTINCT FROM ROW(");
    restored_cols(t, "f.", 1, sql);
    buf_puts(sql, "))");
    if (dry_run) {
        buf_puts(sql, " SELECT count(*), count(*) FILTER (WHERE _bw_new), "
                      "count(*) FILTER (WHERE NOT _bw_new) FROM w");
        return;
    }
    /* the new keys by a plain INSERT (no speculative insertion, no conflict arbiter: a key
     * another transaction inserted meanwhile fails it, restore.c retries); the others by an
     * UPDATE of the row in place, when it is the user's (through its user column, or a parent
     * row that is the user's: one index lookup per row) */
    buf_printf(sql, ", n AS (INSERT INTO \"%s\" (", t->name);
    restored_cols(t, "", 0, sql);
    buf_puts(sql, ") SELECT ");
    restored_cols(t, "", 0, sql);
    buf_printf(sql, " FROM w WHERE _bw_new RETURNING 1), u AS (UPDATE \"%s\" AS x SET (", t->name);
    int n = 0;
    for (int c = 0; restored(t, c); c++)
        if (strcmp(restored(t, c)->name, t->key) != 0)
            buf_printf(sql, "%s\"%s\"", n++ ? ", " : "", restored(t, c)->name);
    if (n == 0) /* only a key: nothing to update, but the row must still be the user's */
        buf_printf(sql, "\"%s\"", t->key);
    buf_puts(sql, ") = ROW(");
    n = 0;
    for (int c = 0; restored(t, c); c++)
        if (strcmp(restored(t, c)->name, t->key) != 0)
            buf_printf(sql, "%sw.\"%s\"", n++ ? ", " : "", restored(t, c)->name);
    if (n == 0)
        buf_printf(sql, "w.\"%s\"", t->key);
    buf_printf(sql, ") FROM w WHERE NOT w._bw_new AND x.\"%s\" = w.\"%s\" AND ", t->key, t->key);
    if (t->user_col[0]) {
        scope_user_filter(s, t, "x.", sql);
    } else {
        const Table *p = &s->t[scope_find(s, t->parent)];
        buf_printf(sql, "EXISTS (SELECT 1 FROM \"%s\" WHERE \"%s\".\"%s\" = x.\"%s\" AND ", p->name,
                   p->name, p->key, t->parent_col);
        scope_user_filter(s, p, "", sql);
        buf_puts(sql, ")");
    }
    buf_puts(sql, " RETURNING 1) SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM n), "
                  "(SELECT count(*) FROM u)");
}

void scope_restore_lock_sql(const Scope *s, int i, const char *since, const char *until, Buf *sql) {
    const Table *t = &s->t[i];
    /* the keys of the rows the delete removes and of those the upsert writes (in place, with a
     * key staged, differing), one IN over their union: as "delete's rows OR key IN (...)" the
     * IN stayed a SubPlan under the OR, run again for every row of the table once its estimate
     * outgrew work_mem (2.8 s instead of 1.3 s on a 410k-row tenant's order_items) */
    buf_printf(sql,
               "SELECT count(*) FROM (SELECT 1 FROM \"%s\" WHERE \"%s\" IN (SELECT \"%s\" FROM "
               "\"%s\" WHERE ",
               t->name, t->key, t->key, t->name);
    delete_where(s, i, since, until, sql);
    buf_printf(sql,
               " UNION ALL SELECT f.\"%s\" FROM _bw_f%d f JOIN \"%s\" x ON x.\"%s\" = f.\"%s\" "
               "WHERE ROW(",
               t->key, i, t->name, t->key, t->key);
    restored_cols(t, "x.", 1, sql);
    buf_puts(sql, ") IS DISTINCT FROM ROW(");
    restored_cols(t, "f.", 1, sql);
    buf_puts(sql, ")) FOR UPDATE NOWAIT) l");
}

/* ---- placed: a table without rows of the user takes the backup's straight ---- */

int scope_restore_placeable(const Scope *s, int i) {
    const Table *t = &s->t[i];
    for (int c = 0; restored(t, c); c++)
        if (restored(t, c)->kind == SCOPE_KIND_PG)
            return 0;
    return 1;
}

void scope_restore_empty_sql(const Scope *s, const unsigned char *candidate, Buf *sql) {
    buf_puts(sql, "SELECT ");
    for (int i = 0; i < s->n; i++) {
        const Table *t = &s->t[i];
        if (!candidate[i]) {
            buf_printf(sql, "%sfalse", i ? ", " : "");
            continue;
        }
        buf_printf(sql, "%sNOT EXISTS (SELECT 1 FROM \"%s\" WHERE ", i ? ", " : "", t->name);
        scope_user_filter(s, t, "", sql);
        buf_puts(sql, ")");
    }
}

void scope_restore_place_sql(const Scope *s, int i, Buf *sql) {
    const Table *t = &s->t[i];
    buf_printf(sql, "COPY \"%s\" (", t->name);
    restored_cols(t, "", 0, sql);
    buf_puts(sql, ") FROM STDIN");
    if (t->user_col[0]) { /* a parent's filter is a subquery, which COPY's WHERE cannot hold */
        buf_puts(sql, " WHERE ");
        scope_user_filter(s, t, "", sql);
    }
}

const char *scope_restore_ref_column(const Scope *s, int i, int k) {
    const Column *c = checked_ref(s, &s->t[i], k);
    return c ? c->name : NULL;
}

void scope_restore_placed_sql(const Scope *s, int i, Buf *sql) {
    const Table *t = &s->t[i];
    buf_puts(sql, "SELECT count(*)");
    const Column *c;
    for (int k = 0; (c = checked_ref(s, t, k)) != NULL; k++) {
        /* one scan of the user's rows for the count and every foreign key */
        Buf bad = BUF_INIT;
        buf_printf(&bad, "f.\"%s\" IS NOT NULL AND NOT ", c->name);
        exists_users_row(s, &s->t[scope_find(s, c->ref_table)], c->ref_col, c->name, &bad);
        buf_printf(
            sql,
            ", count(*) FILTER (WHERE %s), coalesce(min(f.\"%s\"::text) FILTER (WHERE %s), '')",
            bad.data, t->key, bad.data);
        buf_free(&bad);
    }
    buf_printf(sql, " FROM \"%s\" f WHERE ", t->name);
    scope_user_filter(s, t, "f.", sql);
}

/* ---- only what changed since the backup ---- */

char scope_prune_kind(const Scope *s, int i) {
    const Table *t = &s->t[i];
    if (!scope_tracked(s, i))
        return 0;
    const char *type = scope_col_type(t, t->key);
    if (strcmp(type, "uuid") == 0)
        return 'u';
    if (strcmp(type, "integer") == 0 || strcmp(type, "bigint") == 0 ||
        strcmp(type, "smallint") == 0)
        return 'i';
    return 0;
}

void scope_prune_gate_sql(const Scope *s, const unsigned char *candidate, Buf *sql) {
    /* the present as a 64-bit xid, to read the catalog's 32-bit xmins against */
    const char *now = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint";
    buf_printf(sql,
               /* the keys' query runs serially: on two cores, parallel workers made it 2.5x
                * slower (each built the same hash of the user's parents) */
               "SELECT CASE WHEN set_config('backup.base_snapshot', $1, true) IS NOT NULL AND "
               "set_config('max_parallel_workers_per_gather', '0', true) IS NOT NULL THEN "
               "pg_current_snapshot()::text END, "
               "pg_snapshot_xmin($1::pg_snapshot) > coalesce((SELECT max(xid) FROM "
               "backup_tombstone_purged WHERE user_id IN ($2::uuid, "
               "'00000000-0000-0000-0000-000000000000')), '0'::xid8), "
               "pg_snapshot_xmax($1::pg_snapshot) <= pg_snapshot_xmax(pg_current_snapshot()) "
               "AND pg_snapshot_xmin($1::pg_snapshot)::text::bigint > %s - 2000000000",
               now);
    for (int i = 0; i < s->n; i++) {
        if (!candidate[i]) {
            buf_puts(sql, ", false");
            continue;
        }
        const char *n = s->t[i].name;
        /* its stamp, tombstone and truncate (018) triggers were there, enabled, when the snapshot
         * was taken, and have not been touched since (a trigger disabled for a while is rewritten,
         * so is one created again): every write since then left its mark */
        buf_printf(sql,
                   ", (SELECT count(*) FILTER (WHERE tgname IN ('%s_backup_stamp', "
                   "'%s_backup_tombstone', '%s_backup_truncate')) = 3 AND coalesce(bool_and("
                   "tgenabled <> 'D' AND "
                   "pg_visible_in_snapshot((CASE WHEN xmin::text::bigint < 3 THEN 3 ELSE %s - "
                   "((%s - xmin::text::bigint) %% 4294967296 + 4294967296) %% 4294967296 END)"
                   "::text::xid8, $1::pg_snapshot)), false) FROM pg_trigger WHERE tgrelid = "
                   "'\"%s\"'::regclass AND tgname IN ('%s_backup_stamp', '%s_backup_tombstone', "
                   "'%s_backup_truncate', '%s_backup_moved'))",
                   n, n, n, now, now, n, n, n, n, n);
    }
}

/* The key's digest term (rowkeys_digest): a uuid's first 4 bytes as a signed number (from its
 * text: 75 ms over 300k rows where both halves took 500), an integer itself. */
static void key_digest(const Table *t, Buf *sql) {
    if (strcmp(scope_col_type(t, t->key), "uuid") == 0)
        buf_printf(sql, "('x' || left(\"%s\"::text, 8))::bit(32)::int", t->key);
    else
        buf_printf(sql, "\"%s\"::numeric", t->key);
}

/* The tombstones of t written since snap (xmin: its xmin), by the user. */
static void tombstones_since(const Scope *s, const Table *t, const char *xmin, const char *snap,
                             Buf *sql) {
    buf_puts(sql, "FROM backup_tombstones WHERE ");
    scope_tombstone_filter(s, t, sql);
    buf_printf(sql, " AND xid >= '%s'::xid8 AND NOT pg_visible_in_snapshot(xid, '%s'::pg_snapshot)",
               xmin, snap);
}

/* Row of table i changed since snap: its stamp, or (a child of a covering parent) its parent's
 * key deleted or moved since, whose tombstone stands for it. */
static void prune_changed(const Scope *s, int i, const char *xmin, const char *snap, Buf *sql) {
    int p = scope_covering_parent(s, i);
    if (p < 0) {
        changed_since("", 1, snap, sql);
        return;
    }
    buf_puts(sql, "(");
    changed_since("", 1, snap, sql);
    /* any user's tombstone: a parent moved here since brings children unchanged themselves */
    buf_printf(sql,
               " OR \"%s\"::text IN (SELECT row_id FROM backup_tombstones WHERE table_name = '%s' "
               "AND xid >= '%s'::xid8 AND NOT pg_visible_in_snapshot(xid, '%s'::pg_snapshot)))",
               s->t[i].parent_col, s->t[p].name, xmin, snap);
}

int scope_prune_keys_sql(const Scope *s, const unsigned char *pruned, const char *snap, Buf *sql) {
    if (!scope_snapshot_valid(snap))
        return -1;
    char xmin[24];
    size_t k = strcspn(snap, ":");
    snprintf(xmin, sizeof(xmin), "%.*s", (int)(k < 20 ? k : 20), snap);
    buf_puts(sql, "COPY (");
    int first = 1;
    for (int i = 0; i < s->n; i++) {
        if (!pruned[i])
            continue;
        const Table *t = &s->t[i];
        /* one scan: each changed key a group of its own, the unchanged rows one group (key
         * NULL) with their count and the digest of their keys */
        buf_printf(sql,
                   "%sSELECT %d, k, n, CASE WHEN k IS NULL THEN (d %% 18446744073709551616 + "
                   "18446744073709551616) %% 18446744073709551616 END FROM (SELECT CASE WHEN ",
                   first ? "" : " UNION ALL ", i);
        prune_changed(s, i, xmin, snap, sql);
        buf_printf(sql, " THEN \"%s\"::text END AS k, count(*) AS n, coalesce(sum(", t->key);
        key_digest(t, sql);
        buf_puts(sql, ") FILTER (WHERE NOT ");
        prune_changed(s, i, xmin, snap, sql);
        buf_printf(sql, "), 0) AS d FROM \"%s\" WHERE ", t->name);
        scope_user_filter(s, t, "", sql);
        buf_puts(sql, " GROUP BY 1) g");
        /* 2: deleted (a covering parent's deleted keys also stage the children, restore.c PRUNE) */
        buf_printf(sql, " UNION ALL SELECT %d, row_id, 2, NULL ", i);
        tombstones_since(s, t, xmin, snap, sql);
        first = 0;
    }
    buf_puts(sql, ") TO STDOUT");
    return 0;
}
