/*
 * scope: backup_scope, checked, and its COPY statements (see scope.h).
 *
 * COPY's text format would double every backslash in the JSON; CSV with a
 * quote and a delimiter that JSON text can never contain raw (0x01, 0x02:
 * JSON escapes control characters) emits each row's JSON exactly as
 * PostgreSQL wrote it, one per line, with nothing to undo.
 */
#include "scope/scope_intern.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *scope_load_sql(void) {
    return "SELECT s.table_name, s.key_column, coalesce(s.user_column, ''), "
           "coalesce(s.parent_table, ''), coalesce(s.parent_column, ''), s.restore_order, "
           "coalesce(a.attname::text, ''), coalesce(a.atttypid::regtype::text, ''), "
           "coalesce((SELECT rc.relname::text FROM pg_constraint k JOIN pg_class rc ON rc.oid = "
           "k.confrelid WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.conkey = "
           "ARRAY[a.attnum] AND rc.relnamespace = 'public'::regnamespace ORDER BY 1 LIMIT 1), ''), "
           "coalesce((SELECT ra.attname::text FROM pg_constraint k JOIN pg_class rc ON rc.oid = "
           "k.confrelid JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = "
           "k.confkey[1] WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.conkey = "
           "ARRAY[a.attnum] AND rc.relnamespace = 'public'::regnamespace ORDER BY rc.relname "
           "LIMIT 1), '') "
           /* how restore stages the column (scope_intern.h), through one level of domain, as
            * row_to_json writes it: json as is, arrays as JSON arrays, other types as strings,
            * numbers or booleans; a composite (an object) is left to PostgreSQL ('f') */
           ", coalesce((SELECT CASE WHEN b.oid IN ('json'::regtype, 'jsonb'::regtype) THEN 'j' "
           "WHEN b.typsubscript = 'array_subscript_handler'::regproc THEN (SELECT CASE "
           "WHEN el.oid IN ('json'::regtype, 'jsonb'::regtype) THEN 'J' "
           "WHEN el.typtype IN ('b', 'e', 'r', 'm') AND el.typsubscript <> "
           "'array_subscript_handler'::regproc THEN 'a' ELSE 'f' END FROM pg_type el WHERE el.oid "
           "= b.typelem) WHEN b.typtype IN ('b', 'e', 'r', 'm') THEN 's' ELSE 'f' END "
           /* '=': equal values are the same value (a numeric's 1.0 and 1.00 are equal, not the
            * same; json has no equality): restore compares the others as text */
           "|| CASE WHEN a.atttypid IN ('uuid'::regtype, 'int2'::regtype, 'int4'::regtype, "
           "'int8'::regtype, 'bool'::regtype, 'date'::regtype, 'timestamp'::regtype, "
           "'timestamptz'::regtype, 'bytea'::regtype, 'text'::regtype, 'varchar'::regtype) AND "
           "a.attcollation IN (0, 100) THEN '=' ELSE '' END FROM pg_type t JOIN pg_type b ON "
           "b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END WHERE t.oid = "
           "a.atttypid), 'f') "
           /* how backup writes the column's JSON from its COPY text (pgjson.h): by the type
            * itself, not its base (a domain, an enum, a composite, a range, a type of an
            * extension, which may cast to json: 'f', PostgreSQL's to_json) */
           ", coalesce((SELECT CASE WHEN t.oid = 'bool'::regtype THEN 'b' "
           "WHEN t.oid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'float4'::regtype, "
           "'float8'::regtype, 'numeric'::regtype) THEN 'n' WHEN t.oid = 'date'::regtype THEN 'd' "
           "WHEN t.oid = 'timestamp'::regtype THEN 't' WHEN t.oid = 'timestamptz'::regtype THEN "
           "'z' WHEN t.oid IN ('json'::regtype, 'jsonb'::regtype) THEN 'j' "
           "WHEN t.typtype = 'b' AND t.oid < 16384 AND t.typsubscript <> "
           "'array_subscript_handler'::regproc THEN 's' "
           "WHEN t.typtype = 'b' AND t.oid < 16384 AND t.typcategory = 'A' AND t.oid NOT IN "
           "('int2vector'::regtype, 'oidvector'::regtype) THEN (SELECT upper(CASE "
           "WHEN el.oid = 'bool'::regtype THEN 'b' WHEN el.oid IN ('int2'::regtype, "
           "'int4'::regtype, 'int8'::regtype, 'float4'::regtype, 'float8'::regtype, "
           "'numeric'::regtype) THEN 'n' WHEN el.oid = 'date'::regtype THEN 'd' WHEN el.oid = "
           "'timestamp'::regtype THEN 't' WHEN el.oid = 'timestamptz'::regtype THEN 'z' "
           "WHEN el.oid IN ('json'::regtype, 'jsonb'::regtype) THEN 'j' WHEN el.typtype = 'b' "
           "AND el.oid < 16384 AND el.typsubscript <> 'array_subscript_handler'::regproc AND "
           "el.typdelim = ',' THEN 's' ELSE 'f' END) FROM pg_type el WHERE el.oid = t.typelem) "
           "ELSE 'f' END FROM pg_type t WHERE t.oid = a.atttypid), 'f') "
           "FROM backup_scope s "
           "LEFT JOIN pg_class c ON c.relname = s.table_name AND c.relkind IN ('r', 'p') "
           "AND c.relnamespace = 'public'::regnamespace "
           "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
           "ORDER BY s.restore_order, s.table_name, a.attnum";
}

const char *scope_fingerprint_sql(void) {
    /* the rows scope_load_sql reads, by their versions (xmin changes with every update: a
     * column added, dropped or retyped, a key, a table created again, a scope row changed) */
    return "(SELECT md5(string_agg(x, ',' ORDER BY x)) FROM ("
           "SELECT 's' || s.xmin::text || '.' || s.table_name AS x FROM backup_scope s "
           "UNION ALL SELECT 'c' || c.oid::text || '.' || c.xmin::text FROM pg_class c JOIN "
           "backup_scope s ON c.relname = s.table_name AND c.relnamespace = "
           "'public'::regnamespace "
           "UNION ALL SELECT 'a' || a.attrelid::text || '.' || a.attnum::text || '.' || "
           "a.xmin::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN "
           "backup_scope s ON c.relname = s.table_name AND c.relnamespace = "
           "'public'::regnamespace WHERE a.attnum > 0 "
           "UNION ALL SELECT 'k' || k.oid::text || '.' || k.xmin::text FROM pg_constraint k JOIN "
           "pg_class c ON c.oid = k.conrelid JOIN backup_scope s ON c.relname = s.table_name AND "
           "c.relnamespace = 'public'::regnamespace WHERE k.contype = 'f') f)";
}

/* A plain lowercase identifier: safe to quote as "name" and matches the catalog as is. */
static int plain(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > SCOPE_NAME_MAX || !(islower((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

Scope *scope_new(void) {
    return xcalloc(1, sizeof(Scope));
}

void scope_free(Scope *s) {
    if (s == NULL)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->t[i].cols);
    free(s->t);
    free(s);
}

Scope *scope_from_result(const PGresult *res, Err *err) {
    Scope *s = scope_new();
    int rc = 0;
    err_clear(err);
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        const char *table = PQgetvalue(res, r, 0);
        if (scope_find(s, table) < 0)
            rc = scope_add_table(s, table, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
                                 PQgetvalue(res, r, 3), PQgetvalue(res, r, 4),
                                 atoi(PQgetvalue(res, r, 5)), err);
        if (rc == 0 && PQgetvalue(res, r, 6)[0])
            rc = scope_add_column(s, table, PQgetvalue(res, r, 6), PQgetvalue(res, r, 7),
                                  PQgetvalue(res, r, 10), PQgetvalue(res, r, 8),
                                  PQgetvalue(res, r, 9), err);
        if (rc == 0 && PQgetvalue(res, r, 6)[0] && PQnfields(res) > 11)
            scope_set_json_kind(s, table, PQgetvalue(res, r, 6), PQgetvalue(res, r, 11)[0]);
    }
    if (rc == 0 && PQntuples(res) == 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "backup_scope is empty: nothing to back up");
        rc = -1;
    }
    if (rc == 0)
        rc = scope_check(s, err);
    if (rc != 0) {
        scope_free(s);
        return NULL;
    }
    return s;
}

int scope_find(const Scope *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return i;
    return -1;
}

static int bad(Err *err, const char *fmt, const char *a, const char *b) {
    char msg[ERR_MSG_MAX];
    snprintf(msg, sizeof(msg), fmt, a, b);
    err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "backup_scope: %s", msg);
    return -1;
}

int scope_add_table(Scope *s, const char *name, const char *key, const char *user_col,
                    const char *parent, const char *parent_col, int restore_order, Err *err) {
    const char *names[] = {name, key, user_col, parent, parent_col};
    for (int i = 0; i < 5; i++)
        if ((i < 2 || names[i][0]) && !plain(names[i]))
            return bad(err, "'%.64s' (table %.64s) is not a plain lowercase identifier", names[i],
                       name);
    if (scope_find(s, name) >= 0)
        return bad(err, "table %.64s is listed twice%s", name, "");
    int by_user = user_col[0] != '\0', by_parent = parent[0] != '\0';
    if (by_user == by_parent || by_parent != (parent_col[0] != '\0'))
        return bad(err,
                   "table %.64s needs either user_column or parent_table with "
                   "parent_column%s",
                   name, "");
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->t = xrealloc(s->t, (size_t)s->cap * sizeof(Table));
    }
    Table *t = &s->t[s->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->key, sizeof(t->key), "%s", key);
    snprintf(t->user_col, sizeof(t->user_col), "%s", user_col);
    snprintf(t->parent, sizeof(t->parent), "%s", parent);
    snprintf(t->parent_col, sizeof(t->parent_col), "%s", parent_col);
    t->order = restore_order;
    return 0;
}

/* A type name safe to splice after `::`: what regtype prints for built-in types (uuid, bigint,
 * character varying, timestamp with time zone...). Anything else is kept out of SQL. */
static int plain_type(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > SCOPE_NAME_MAX || !islower((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' &&
            s[i] != ' ')
            return 0;
    return 1;
}

int scope_add_column(Scope *s, const char *table, const char *column, const char *type,
                     const char *kind, const char *ref_table, const char *ref_col, Err *err) {
    int i = scope_find(s, table);
    if (i < 0)
        return bad(err, "column %.64s for unknown table %.64s", column, table);
    if (!plain(column))
        return bad(err, "column '%.64s' of %.64s is not a plain lowercase identifier", column,
                   table);
    Table *t = &s->t[i];
    if (t->ncols == t->capcols) {
        t->capcols = t->capcols ? t->capcols * 2 : 16;
        t->cols = xrealloc(t->cols, (size_t)t->capcols * sizeof(*t->cols));
    }
    Column *c = &t->cols[t->ncols++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", column);
    if (type && plain_type(type)) /* else empty: refused by scope_check if used as a key */
        snprintf(c->type, sizeof(c->type), "%s", type);
    c->kind = kind && strchr("sjaJ", kind[0]) && kind[0] ? kind[0] : SCOPE_KIND_PG;
    c->exact = kind && kind[0] && kind[1] == '=';
    c->json = SCOPE_KIND_PG; /* scope_set_json_kind tells better */
    if (ref_table && ref_col && plain(ref_table) && plain(ref_col)) {
        snprintf(c->ref_table, sizeof(c->ref_table), "%s", ref_table);
        snprintf(c->ref_col, sizeof(c->ref_col), "%s", ref_col);
    }
    return 0;
}

void scope_set_json_kind(Scope *s, const char *table, const char *column, char kind) {
    int i = scope_find(s, table);
    if (i < 0)
        return;
    Column *c = (Column *)scope_col(&s->t[i], column);
    if (c)
        c->json = pgjson_kind_valid(kind) ? kind : SCOPE_KIND_PG;
}

const Column *scope_col(const Table *t, const char *c) {
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, c) == 0)
            return &t->cols[i];
    return NULL;
}

static int has_col(const Table *t, const char *c) {
    return scope_col(t, c) != NULL;
}

const char *scope_col_type(const Table *t, const char *c) {
    const Column *col = scope_col(t, c);
    return col ? col->type : "";
}

int scope_checked_ref(const Scope *s, const Table *t, const Column *c) {
    return c->ref_table[0] && strcmp(c->name, t->user_col) != 0 &&
           strcmp(c->name, t->parent_col) != 0 && scope_find(s, c->ref_table) >= 0;
}

static int by_order(const void *a, const void *b) {
    const Table *x = a, *y = b;
    return x->order != y->order ? (x->order < y->order ? -1 : 1) : strcmp(x->name, y->name);
}

int scope_check(Scope *s, Err *err) {
    if (s->n == 0)
        return bad(err, "is empty: nothing to back up%s%s", "", "");
    qsort(s->t, (size_t)s->n, sizeof(Table), by_order);
    for (int i = 0; i < s->n; i++) {
        const Table *t = &s->t[i];
        if (t->ncols == 0)
            return bad(err, "table %.64s does not exist in schema public%s", t->name, "");
        for (int c = 0; c < t->ncols; c++)
            if (strncmp(t->cols[c].name, "_bw_", 4) == 0)
                return bad(err,
                           "column %.64s of %.64s: names starting with _bw_ are kept for "
                           "restore's staging tables",
                           t->cols[c].name, t->name);
        if (!has_col(t, t->key))
            return bad(err, "table %.64s has no column %.64s (key_column)", t->name, t->key);
        if (t->user_col[0] && !has_col(t, t->user_col))
            return bad(err, "table %.64s has no column %.64s (user_column)", t->name, t->user_col);
        const char *typed[] = {t->key, t->user_col, t->parent_col};
        for (int k = 0; k < 3; k++)
            if (typed[k][0] && has_col(t, typed[k]) && !scope_col_type(t, typed[k])[0])
                return bad(err, "column %.64s of %.64s has a type that cannot be compared as a key",
                           typed[k], t->name);
        for (int c = 0; c < t->ncols; c++)
            if (scope_checked_ref(s, t, &t->cols[c]) && !t->cols[c].type[0])
                return bad(err, "column %.64s of %.64s has a type that cannot be compared as a key",
                           t->cols[c].name, t->name);
        if (t->parent[0]) {
            int p = scope_find(s, t->parent);
            if (p < 0)
                return bad(err, "parent %.64s of %.64s is not in the scope", t->parent, t->name);
            if (p >= i) /* sorted: a parent must restore strictly before its children */
                return bad(err, "parent %.64s must have a lower restore_order than %.64s",
                           t->parent, t->name);
            if (!has_col(t, t->parent_col))
                return bad(err, "table %.64s has no column %.64s (parent_column)", t->name,
                           t->parent_col);
        }
    }
    return 0;
}

int scope_parent_index(const Scope *s, int i) {
    return s->t[i].parent[0] ? scope_find(s, s->t[i].parent) : -1;
}

int scope_covering_parent(const Scope *s, int i) {
    int p = scope_parent_index(s, i);
    return p >= 0 && s->t[p].user_col[0] ? p : -1;
}

int scope_count(const Scope *s) {
    return s->n;
}

const char *scope_table(const Scope *s, int i) {
    return s->t[i].name;
}

const char *scope_parent_column(const Scope *s, int i) {
    return s->t[i].parent_col;
}

const char *scope_key_column(const Scope *s, int i) {
    return s->t[i].key;
}

const char *scope_user_column(const Scope *s, int i) {
    return s->t[i].user_col;
}

char scope_json_kind(const Scope *s, int i, int c) {
    const Table *t = &s->t[i];
    for (int k = 0; k < t->ncols; k++)
        if (!scope_is_stamp(&t->cols[k]) && c-- == 0)
            return t->cols[k].json;
    return 0;
}

void scope_user_filter(const Scope *s, const Table *t, const char *qual, Buf *sql) {
    if (t->user_col[0]) {
        buf_printf(sql, "%s\"%s\" = current_setting('backup.user_id')::uuid", qual, t->user_col);
        return;
    }
    const Table *p = &s->t[scope_find(s, t->parent)];
    buf_printf(sql, "%s\"%s\" IN (SELECT \"%s\" FROM \"%s\" WHERE ", qual, t->parent_col, p->key,
               p->name);
    scope_user_filter(s, p, "", sql);
    buf_puts(sql, ")");
}

static void user_filter(const Scope *s, const Table *t, Buf *sql) {
    scope_user_filter(s, t, "", sql);
}

int scope_is_stamp(const Column *c) {
    return strcmp(c->name, "backup_xid") == 0;
}

/* An incremental's rows of table i: written by a transaction the base snapshot does not see; for a
 * child of a parent naming its user, also every row whose parent's key left a tombstone since,
 * whoever it named: a parent moved to this user (proto/sql/014's move tombstone for its old owner)
 * brings its children, whose own rows did not change (issue 29). A parent deleted and written again
 * brings them too, which is harmless: a step may hold unchanged rows. */
void scope_keys_setting(int i, char *out, size_t n) {
    snprintf(out, n, "backup.keys_%d", i);
}

/* table i's keys of SCOPE_ROWS_KEYS, as an array of the key's type: evaluated once (an
 * InitPlan), so that the array is parsed once and the key's index used. */
static void keys_array(const Scope *s, int i, Buf *sql) {
    const Table *t = &s->t[i];
    const char *type = scope_col_type(t, t->key);
    /* the outer cast keeps ANY from reading the subquery as a set of rows */
    buf_printf(sql, "(SELECT current_setting('backup.keys_%d')::%s[])::%s[]", i, type, type);
}

static void incremental_filter(const Scope *s, int i, int rows, Buf *sql) {
    const Table *t = &s->t[i];
    if (rows == SCOPE_ROWS_KEYS) {
        buf_printf(sql, " AND \"%s\" = ANY(", t->key);
        keys_array(s, i, sql);
        buf_puts(sql, ")");
        return;
    }
    const char *base = "current_setting('backup.base_snapshot')::pg_snapshot";
    int p = scope_covering_parent(s, i);
    buf_printf(sql,
               " AND (\"backup_xid\" IS NOT NULL AND NOT pg_visible_in_snapshot(\"backup_xid\", "
               "%s)",
               base);
    if (p >= 0)
        buf_printf(sql,
                   " OR \"%s\"::text IN (SELECT row_id FROM backup_tombstones WHERE table_name = "
                   "'%s' AND xid >= pg_snapshot_xmin(%s) AND NOT pg_visible_in_snapshot(xid, %s))",
                   t->parent_col, s->t[p].name, base, base);
    buf_puts(sql, ")");
}

/* SELECT of table i's backed-up columns (to_json of those PostgreSQL must write: json) and the
 * user's rows. */
static void copy_select(const Scope *s, int i, int rows, int plain, Buf *sql) {
    const Table *t = &s->t[i];
    buf_puts(sql, "SELECT ");
    int first = 1;
    for (int c = 0; c < t->ncols; c++) {
        const Column *col = &t->cols[c];
        if (scope_is_stamp(col))
            continue;
        if (plain && col->json == SCOPE_KIND_PG)
            buf_printf(sql, "%sto_json(\"%s\")", first ? "" : ", ", col->name);
        else
            buf_printf(sql, "%s\"%s\"", first ? "" : ", ", col->name);
        first = 0;
    }
    buf_printf(sql, " FROM \"%s\" WHERE ", t->name);
    user_filter(s, t, sql);
    if (rows != SCOPE_ROWS_ALL)
        incremental_filter(s, i, rows, sql);
}

void scope_copy_sql(const Scope *s, int i, int rows, Buf *sql) {
    buf_puts(sql, "COPY (");
    copy_select(s, i, rows, 1, sql);
    buf_puts(sql, ") TO STDOUT");
}

void scope_copy_json_sql(const Scope *s, int i, int rows, Buf *sql) {
    buf_puts(sql, "COPY (SELECT row_to_json(r)::text FROM (");
    copy_select(s, i, rows, 0, sql);
    buf_puts(sql, ") r) TO STDOUT (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')");
}

PgJsonRow *scope_row_json(const Scope *s, int i) {
    const Table *t = &s->t[i];
    PgJsonRow *r = pgjson_row_new();
    for (int c = 0; c < t->ncols; c++)
        if (!scope_is_stamp(&t->cols[c]))
            pgjson_row_add(r, t->cols[c].name,
                           t->cols[c].json == SCOPE_KIND_PG ? PGJSON_JSON : t->cols[c].json);
    return r;
}

void scope_count_sql(const Scope *s, int rows, Buf *sql) {
    buf_puts(sql, "SELECT ");
    for (int i = 0; i < s->n; i++) {
        buf_printf(sql, "%s(SELECT count(*) FROM \"%s\" WHERE ", i ? ", " : "", s->t[i].name);
        user_filter(s, &s->t[i], sql);
        if (rows != SCOPE_ROWS_ALL)
            incremental_filter(s, i, rows, sql);
        buf_puts(sql, ")");
    }
}

/* Tombstones of t that belong to the user: by its user column, or by a parent that is the
 * user's (still there, or itself deleted). Names are checked identifiers, safe as literals.
 * One IN over a UNION ALL, not two INs joined by OR: PostgreSQL plans the one as a semi-join
 * (a hash that may spill), the other as subplans that, once the tombstones outgrow work_mem,
 * are scanned once per row (a differential of a 440k-tombstone user ran for over 15 min). */
void scope_tombstone_filter(const Scope *s, const Table *t, Buf *sql) {
    if (t->user_col[0]) {
        buf_printf(sql, "(table_name = '%s' AND user_id = current_setting('backup.user_id')::uuid)",
                   t->name);
        return;
    }
    const Table *p = &s->t[scope_find(s, t->parent)];
    buf_printf(sql,
               "(table_name = '%s' AND parent_id::text IN (SELECT \"%s\"::text FROM \"%s\" WHERE ",
               t->name, p->key, p->name);
    user_filter(s, p, sql);
    buf_puts(sql, " UNION ALL SELECT row_id FROM backup_tombstones WHERE ");
    scope_tombstone_filter(s, p, sql);
    buf_puts(sql, "))");
}

void scope_tombstone_sql(const Scope *s, int i, int rows, Buf *sql) {
    if (rows == SCOPE_ROWS_KEYS) {
        const Table *t = &s->t[i];
        buf_puts(sql, "COPY (SELECT to_json(_bk.k::text)::text FROM unnest(");
        keys_array(s, i, sql);
        buf_printf(sql, ") _bk(k) WHERE NOT EXISTS (SELECT 1 FROM \"%s\" WHERE \"%s\" = _bk.k AND ",
                   t->name, t->key);
        user_filter(s, t, sql);
        buf_puts(sql, ") ORDER BY 1) TO STDOUT (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')");
        return;
    }
    buf_puts(sql, "COPY (SELECT to_json(row_id)::text FROM (SELECT DISTINCT row_id FROM "
                  "backup_tombstones WHERE ");
    scope_tombstone_filter(s, &s->t[i], sql);
    buf_puts(sql, " AND NOT pg_visible_in_snapshot(xid, "
                  "current_setting('backup.base_snapshot')::pg_snapshot) ORDER BY row_id) d) "
                  "TO STDOUT (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')");
}

int scope_tracked(const Scope *s, int i) {
    const Table *t = &s->t[i];
    for (int c = 0; c < t->ncols; c++)
        if (strcmp(t->cols[c].name, "backup_xid") == 0)
            return 1;
    return 0;
}
