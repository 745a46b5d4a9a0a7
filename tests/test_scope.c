/* scope: backup_scope checked, and the COPY statements built from it (pure logic). */
#include "scope/scope.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static const char *const order_cols[] = {"id", "user_id", "number", "total", "backup_xid", NULL};
static const char *const item_cols[] = {"id", "order_id", "quantity", "backup_xid", NULL};
static const char *const profile_cols[] = {"id", "email", NULL};

static void add_cols(Scope *s, const char *table, const char *const *cols) {
    Err e;
    for (int i = 0; cols[i]; i++)
        assert_int_equal(scope_add_column(s, table, cols[i], "uuid", "s=", "", "", &e), 0);
}

/* profiles <- orders <- order_items, added out of order on purpose */
static Scope *sample(void) {
    Scope *s = scope_new();
    Err e;
    assert_int_equal(scope_add_table(s, "order_items", "id", "", "orders", "order_id", 60, &e), 0);
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 50, &e), 0);
    assert_int_equal(scope_add_table(s, "profiles", "id", "id", "", "", 10, &e), 0);
    add_cols(s, "orders", order_cols);
    add_cols(s, "order_items", item_cols);
    add_cols(s, "profiles", profile_cols);
    return s;
}

static void test_valid_scope_and_sql(void **state) {
    (void)state;
    Scope *s = sample();
    Err e;
    err_clear(&e);
    assert_int_equal(scope_check(s, &e), 0);
    assert_int_equal(scope_count(s), 3);
    assert_string_equal(scope_table(s, 0), "profiles"); /* sorted by restore order */
    assert_string_equal(scope_table(s, 2), "order_items");

    /* the worker writes the JSON of the columns it knows; PostgreSQL that of the others */
    scope_set_json_kind(s, "orders", "number", PGJSON_NUMBER);
    scope_set_json_kind(s, "orders", "total", 'x'); /* no such kind: PostgreSQL's */
    scope_set_json_kind(s, "orders", "id", PGJSON_STRING);
    scope_set_json_kind(s, "orders", "user_id", PGJSON_STRING);
    Buf sql = BUF_INIT;
    scope_copy_sql(s, scope_find(s, "orders"), 0, &sql);
    assert_string_equal(sql.data,
                        "COPY (SELECT \"id\", \"user_id\", \"number\", to_json(\"total\") "
                        "FROM \"orders\" WHERE \"user_id\" = "
                        "current_setting('backup.user_id')::uuid) TO STDOUT");
    PgJsonRow *w = scope_row_json(s, scope_find(s, "orders"));
    Buf json = BUF_INIT;
    assert_int_equal(pgjson_row_columns(w), 4); /* not the stamp */
    assert_int_equal(pgjson_row_write(w, "a\tb\t7\t{\"x\": 1}", 14, &json, &e), 0);
    assert_string_equal(json.data,
                        "{\"id\":\"a\",\"user_id\":\"b\",\"number\":7,\"total\":{\"x\": 1}}");
    buf_free(&json);
    pgjson_row_free(w);
    buf_reset(&sql);
    /* the reference: PostgreSQL's own row_to_json of the same columns */
    scope_copy_json_sql(s, scope_find(s, "orders"), 0, &sql);
    assert_string_equal(sql.data,
                        "COPY (SELECT row_to_json(r)::text FROM (SELECT \"id\", \"user_id\", "
                        "\"number\", \"total\" FROM \"orders\" WHERE \"user_id\" = "
                        "current_setting('backup.user_id')::uuid) r) TO STDOUT (FORMAT csv, "
                        "QUOTE e'\\x01', DELIMITER e'\\x02')");
    buf_reset(&sql);
    scope_copy_sql(s, scope_find(s, "order_items"), 1, &sql);
    assert_non_null(strstr(sql.data, "FROM \"order_items\" WHERE \"order_id\" IN (SELECT \"id\" "
                                     "FROM \"orders\" WHERE \"user_id\" = "
                                     "current_setting('backup.user_id')::uuid)"));
    assert_non_null(strstr(sql.data, "NOT pg_visible_in_snapshot(\"backup_xid\", "
                                     "current_setting('backup.base_snapshot')::pg_snapshot)"));
    assert_null(strstr(sql.data, "\"backup_xid\", \"")); /* the stamp is not backed up */
    buf_free(&sql);
    scope_free(s);
}

static void expect_check_error(Scope *s, const char *needle);

/* Restore compares keys as their own type: a uuid spelled in upper case or with braces is the
 * same key, never a new one (the cross-tenant write of the hardening issue). */
static void test_restore_sql_is_typed(void **state) {
    (void)state;
    Scope *s = sample();
    Err e;
    assert_int_equal(
        scope_add_column(s, "order_items", "product_id", "uuid", "s=", "products", "id", &e), 0);
    assert_int_equal(scope_check(s, &e), 0);
    int items = scope_find(s, "order_items"), orders = scope_find(s, "orders");
    Buf sql = BUF_INIT;
    /* staged in a table shaped like the target: values are parsed by their own types */
    scope_stage_create_sql(s, items, 0, &sql);
    assert_string_equal(sql.data, "CREATE TEMP TABLE _bw_f2 (LIKE \"order_items\") ON COMMIT DROP");
    buf_reset(&sql);
    scope_stage_create_sql(s, items, 1, &sql);
    assert_string_equal(sql.data, "CREATE TEMP TABLE _bw_s2 (LIKE \"order_items\", _bw_step int "
                                  "NOT NULL) ON COMMIT DROP");
    buf_reset(&sql);
    assert_int_equal(scope_stage_alter_sql(s, items, 0, &sql), 0);
    assert_int_equal(scope_stage_convert_sql(s, items, 0, &sql), 0);
    scope_stage_copy_sql(s, items, 0, &sql); /* the stamp is not restored */
    assert_string_equal(sql.data, "COPY _bw_f2 (\"id\", \"order_id\", \"quantity\", "
                                  "\"product_id\") FROM STDIN");
    buf_reset(&sql);
    scope_stage_copy_sql(s, items, 1, &sql);
    assert_non_null(strstr(sql.data, "\"product_id\", _bw_step) FROM STDIN"));
    buf_reset(&sql);
    /* a chain: the last state of each key; a deleted key is compared as the key's type */
    scope_stage_final_sql(s, items, 0, &sql);
    assert_non_null(strstr(sql.data, "DISTINCT ON (s.\"id\")"));
    assert_non_null(
        strstr(sql.data, "d.tbl = 2 AND d.step > s._bw_step AND (d.k)::uuid = s.\"id\""));
    buf_reset(&sql);
    scope_restore_foreign_sql(s, items, &sql);
    assert_non_null(strstr(sql.data,
                           "JOIN \"order_items\" x ON x.\"id\" = f.\"id\" WHERE NOT EXISTS "
                           "(SELECT 1 FROM \"orders\" WHERE \"orders\".\"id\" = x.\"order_id\""));
    assert_null(strstr(sql.data, "::text ="));
    buf_reset(&sql);
    scope_restore_owner_sql(s, orders, 0, 0, &sql);
    assert_non_null(strstr(sql.data, "FROM _bw_f1 f WHERE f.\"user_id\" IS DISTINCT FROM "
                                     "(current_setting('backup.user_id'))::uuid"));
    buf_reset(&sql);
    scope_restore_owner_sql(s, items, 0, 0, &sql);
    assert_non_null(strstr(sql.data, "\"orders\".\"id\" = f.\"order_id\""));
    buf_reset(&sql);
    scope_restore_owner_sql(s, items, 1, 0, &sql);
    assert_non_null(strstr(sql.data, "NOT EXISTS (SELECT 1 FROM _bw_f1 g WHERE g.\"id\" = "
                                     "f.\"order_id\")"));
    buf_reset(&sql);
    /* products is not in this scope: its foreign key is left to the database */
    assert_int_equal(scope_restore_ref_count(s, items), 0);
    scope_restore_upsert_sql(s, items, 0, &sql);
    /* new keys by a plain INSERT (no conflict arbiter), the rest by an UPDATE in place */
    assert_non_null(strstr(sql.data, "n AS (INSERT INTO \"order_items\" (\"id\", \"order_id\""));
    assert_non_null(strstr(sql.data, " FROM w WHERE _bw_new RETURNING 1)"));
    assert_null(strstr(sql.data, "ON CONFLICT"));
    assert_non_null(strstr(sql.data, "u AS (UPDATE \"order_items\" AS x SET (\"order_id\""));
    assert_non_null(strstr(sql.data, ") = ROW(w.\"order_id\""));
    assert_non_null(strstr(sql.data, "FROM w WHERE NOT w._bw_new AND x.\"id\" = w.\"id\" AND "));
    /* only rows that are new or differ are written, compared as values without backup_xid */
    assert_non_null(strstr(sql.data, "x.\"id\" IS NULL OR ROW(x.\"id\""));
    assert_non_null(strstr(sql.data, ") IS DISTINCT FROM ROW(f.\"id\", f.\"order_id\""));
    assert_null(strstr(sql.data, "x.\"backup_xid\""));
    /* the row updated must be the user's, through its parent */
    assert_non_null(strstr(sql.data, "AND EXISTS (SELECT 1 FROM \"orders\" WHERE \"orders\".\"id\" "
                                     "= x.\"order_id\" AND \"user_id\" = "));
    assert_non_null(strstr(sql.data, "SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM n), "
                                     "(SELECT count(*) FROM u)"));
    buf_reset(&sql);
    /* placed: straight into the table, the user's rows only where it has a user column */
    assert_int_equal(scope_restore_placeable(s, orders), 1);
    scope_restore_place_sql(s, orders, &sql);
    assert_non_null(strstr(sql.data, "COPY \"orders\" (\"id\", \"user_id\""));
    assert_non_null(strstr(sql.data, ") FROM STDIN WHERE \"user_id\" = "
                                     "current_setting('backup.user_id')::uuid"));
    buf_reset(&sql);
    scope_restore_place_sql(s, items, &sql); /* a parent's filter: no WHERE (a subquery) */
    assert_null(strstr(sql.data, "WHERE"));
    buf_reset(&sql);
    unsigned char cand[3] = {0, 1, 1};
    scope_restore_empty_sql(s, cand, &sql);
    assert_non_null(strstr(sql.data, "SELECT false, NOT EXISTS (SELECT 1 FROM \"orders\" WHERE "));
    assert_non_null(strstr(sql.data, "NOT EXISTS (SELECT 1 FROM \"order_items\" WHERE "
                                     "\"order_id\" IN (SELECT \"id\" FROM \"orders\" WHERE "));
    buf_reset(&sql);
    scope_restore_placed_sql(s, items, &sql); /* no checked foreign key: the count alone */
    assert_string_equal(sql.data, "SELECT count(*) FROM \"order_items\" f WHERE f.\"order_id\" IN "
                                  "(SELECT \"id\" FROM \"orders\" WHERE \"user_id\" = "
                                  "current_setting('backup.user_id')::uuid)");
    buf_reset(&sql);
    scope_restore_upsert_sql(s, items, 1, &sql); /* a dry run: counted, nothing written */
    assert_null(strstr(sql.data, "INSERT"));
    assert_non_null(strstr(sql.data, "count(*) FILTER (WHERE _bw_new)"));
    buf_reset(&sql);
    scope_restore_delete_sql(s, items, 1, NULL, NULL, &sql);
    assert_non_null(strstr(sql.data, "SELECT count(*) FROM \"order_items\" WHERE "));
    buf_reset(&sql);
    scope_restore_delete_sql(s, items, 0, NULL, NULL, &sql);
    assert_non_null(strstr(sql.data, "DELETE FROM \"order_items\" WHERE "));
    buf_free(&sql);
    scope_free(s);

    /* a foreign key to a table of the scope is checked, against staged rows when selected */
    s = sample();
    assert_int_equal(
        scope_add_column(s, "order_items", "owner_order", "uuid", "s=", "orders", "id", &e), 0);
    assert_int_equal(scope_check(s, &e), 0);
    items = scope_find(s, "order_items");
    assert_int_equal(scope_restore_ref_count(s, items), 1);
    unsigned char all[3] = {1, 1, 1}, alone[3] = {0, 0, 0};
    assert_string_equal(scope_restore_ref_sql(s, items, 0, all, NULL, &sql), "owner_order");
    assert_non_null(strstr(sql.data, "FROM _bw_f1 g WHERE g.\"id\" = f.\"owner_order\""));
    buf_reset(&sql);
    alone[items] = 1;
    scope_restore_ref_sql(s, items, 0, alone, NULL, &sql);
    assert_non_null(strstr(sql.data,
                           "NOT EXISTS (SELECT 1 FROM \"orders\" WHERE \"orders\".\"id\" = "
                           "f.\"owner_order\" AND \"user_id\" = "));
    assert_null(scope_restore_ref_sql(s, items, 1, all, NULL, &sql));
    buf_reset(&sql);
    /* placed: one scan counts the user's rows and checks the key against the user's rows */
    scope_restore_placed_sql(s, items, &sql);
    assert_string_equal(scope_restore_ref_column(s, items, 0), "owner_order");
    assert_null(scope_restore_ref_column(s, items, 1));
    assert_non_null(strstr(sql.data, "SELECT count(*), count(*) FILTER (WHERE f.\"owner_order\" "
                                     "IS NOT NULL AND NOT EXISTS (SELECT 1 FROM \"orders\" WHERE "
                                     "\"orders\".\"id\" = f.\"owner_order\" AND \"user_id\" = "));
    assert_non_null(strstr(sql.data, "coalesce(min(f.\"id\"::text) FILTER (WHERE "));
    buf_free(&sql);
    scope_free(s);

    /* a key whose type cannot be spliced into SQL is refused */
    s = scope_new();
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 1, &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "id", "\"evil\"; drop", "s", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "user_id", "uuid", "s=", "", "", &e), 0);
    expect_check_error(s, "column id of orders has a type that cannot be compared as a key");
}

/* Columns whose equality is not sameness are compared as text; a type the worker cannot write
 * (a composite) is staged as jsonb and converted by PostgreSQL; _bw_ names are restore's. */
static void test_restore_kinds(void **state) {
    (void)state;
    Scope *s = scope_new();
    Err e;
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 1, &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "id", "uuid", "s=", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "user_id", "uuid", "s=", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "total", "numeric", "s", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "addr", "", "f", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "tags", "", "a", "", "", &e), 0);
    assert_int_equal(scope_check(s, &e), 0);
    char kind = 0;
    assert_string_equal(scope_stage_column(s, 0, 2, &kind), "total");
    assert_int_equal(kind, 's');
    assert_string_equal(scope_stage_column(s, 0, 3, &kind), "addr");
    assert_int_equal(kind, 'j'); /* its JSON, as jsonb */
    assert_string_equal(scope_stage_column(s, 0, 4, &kind), "tags");
    assert_int_equal(kind, 'a');
    assert_null(scope_stage_column(s, 0, 5, &kind));
    /* a column PostgreSQL converts after staging: this table is never placed straight */
    assert_int_equal(scope_restore_placeable(s, 0), 0);
    Buf sql = BUF_INIT;
    scope_stage_create_sql(s, 0, 0, &sql);
    assert_string_equal(sql.data,
                        "CREATE TEMP TABLE _bw_f0 (LIKE \"orders\", _bw_j3 jsonb) ON COMMIT DROP");
    buf_reset(&sql);
    assert_int_equal(scope_stage_alter_sql(s, 0, 0, &sql), 1);
    assert_string_equal(sql.data, "ALTER TABLE _bw_f0 ALTER COLUMN \"addr\" DROP NOT NULL");
    buf_reset(&sql);
    scope_stage_copy_sql(s, 0, 0, &sql);
    assert_string_equal(
        sql.data, "COPY _bw_f0 (\"id\", \"user_id\", \"total\", _bw_j3, \"tags\") FROM STDIN");
    buf_reset(&sql);
    assert_int_equal(scope_stage_convert_sql(s, 0, 0, &sql), 1);
    assert_string_equal(sql.data, "UPDATE _bw_f0 SET (\"addr\") = (SELECT r.\"addr\" FROM "
                                  "jsonb_populate_record(NULL::\"orders\", "
                                  "jsonb_build_object('addr', _bw_j3)) r)");
    buf_reset(&sql);
    scope_restore_upsert_sql(s, 0, 0, &sql);
    assert_non_null(strstr(sql.data, "ROW(x.\"id\", x.\"user_id\", x.\"total\"::text, "
                                     "x.\"addr\"::text, x.\"tags\"::text) IS DISTINCT FROM"));
    buf_free(&sql);
    scope_free(s);

    s = scope_new();
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 1, &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "id", "uuid", "s=", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "user_id", "uuid", "s=", "", "", &e), 0);
    assert_int_equal(scope_add_column(s, "orders", "_bw_step", "integer", "s=", "", "", &e), 0);
    expect_check_error(s, "column _bw_step of orders: names starting with _bw_ are kept");
}

static void expect_check_error(Scope *s, const char *needle) {
    Err e;
    err_clear(&e);
    assert_int_equal(scope_check(s, &e), -1);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' lacks '%s'", e.msg, needle);
    scope_free(s);
}

static void test_errors(void **state) {
    (void)state;
    Err e;
    Scope *s = scope_new();
    assert_int_equal(scope_add_table(s, "orders; drop table x", "id", "user_id", "", "", 1, &e),
                     -1);
    assert_non_null(strstr(e.msg, "is not a plain lowercase identifier"));
    assert_int_equal(scope_add_table(s, "Orders", "id", "user_id", "", "", 1, &e), -1);
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "profiles", "x", 1, &e), -1);
    assert_non_null(strstr(e.msg, "needs either user_column or parent_table"));
    assert_int_equal(scope_add_table(s, "orders", "id", "", "", "", 1, &e), -1);
    assert_int_equal(scope_add_table(s, "orders", "id", "", "profiles", "", 1, &e), -1);
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 1, &e), 0);
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 2, &e), -1);
    assert_non_null(strstr(e.msg, "listed twice"));
    assert_int_equal(scope_add_column(s, "nope", "id", "uuid", "s=", "", "", &e), -1);
    assert_int_equal(scope_add_column(s, "orders", "Id\"", "uuid", "s=", "", "", &e), -1);
    expect_check_error(s, "does not exist"); /* no columns: not in the catalog */

    s = scope_new();
    expect_check_error(s, "is empty");

    Scope *t = scope_new();
    assert_int_equal(scope_add_table(t, "orders", "id", "owner", "", "", 1, &e), 0);
    add_cols(t, "orders", order_cols);
    expect_check_error(t, "has no column owner (user_column)");

    s = scope_new();
    assert_int_equal(scope_add_table(s, "order_items", "id", "", "orders", "order_id", 10, &e), 0);
    assert_int_equal(scope_add_table(s, "orders", "id", "user_id", "", "", 50, &e), 0);
    add_cols(s, "orders", order_cols);
    add_cols(s, "order_items", item_cols);
    expect_check_error(s, "parent orders must have a lower restore_order than order_items");

    s = scope_new();
    assert_int_equal(scope_add_table(s, "order_items", "id", "", "orders", "order_id", 10, &e), 0);
    add_cols(s, "order_items", item_cols);
    expect_check_error(s, "parent orders of order_items is not in the scope");

    s = scope_new();
    assert_int_equal(scope_add_table(s, "order_items", "uuid", "", "", "", 10, &e), -1);
    assert_int_equal(scope_add_table(s, "orders", "uuid", "user_id", "", "", 1, &e), 0);
    add_cols(s, "orders", order_cols);
    expect_check_error(s, "has no column uuid (key_column)");
}

/* Restore leaves out rows unchanged since the backup: which tables can, the SQL of the keys
 * that changed (the snapshot spliced only once checked), and the fences of a table staged in
 * part. */
static void test_prune_sql(void **state) {
    (void)state;
    Scope *s = sample();
    Err e;
    assert_int_equal(scope_check(s, &e), 0);
    int profiles = scope_find(s, "profiles"), orders = scope_find(s, "orders"),
        items = scope_find(s, "order_items");
    assert_int_equal(scope_prune_kind(s, orders), 'u');
    assert_int_equal(scope_prune_kind(s, profiles), 0); /* not tracked: no backup_xid */
    assert_string_equal(scope_key_column(s, items), "id");

    assert_true(scope_snapshot_valid("21142:21142:"));
    assert_true(scope_snapshot_valid("100:105:100,102,104"));
    const char *bad[] = {"",       "1:2",    "1:2:3:",     "1::",    ":1:", "1:2:3,",
                         "1:2:,3", "1:2:3'", "1:2:3;DROP", "1:2:3 ", "a:b:"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (scope_snapshot_valid(bad[i]))
            fail_msg("'%s' taken for a snapshot", bad[i]);

    unsigned char pruned[3] = {0, 0, 0};
    pruned[orders] = pruned[items] = 1;
    Buf sql = BUF_INIT;
    assert_int_equal(scope_prune_keys_sql(s, pruned, "1:2:3'; DROP TABLE x; --", &sql), -1);
    assert_int_equal(scope_prune_keys_sql(s, pruned, "100:105:100,102", &sql), 0);
    /* rows written since (or never stamped) one by one, the others counted and their keys
     * summed, in one scan; then tombstones since, found from the xmin up */
    assert_non_null(strstr(sql.data, "SELECT 1, k, n, CASE WHEN k IS NULL THEN"));
    assert_non_null(strstr(sql.data, "THEN \"id\"::text END AS k, count(*) AS n, coalesce(sum(('x' "
                                     "|| left(\"id\"::text, 8))::bit(32)::int)"));
    assert_non_null(strstr(sql.data, "FROM \"orders\" WHERE \"user_id\" = "));
    assert_non_null(strstr(sql.data, "(\"backup_xid\" IS NULL OR \"backup_xid\" >= '100'::xid8 "
                                     "AND NOT pg_visible_in_snapshot(\"backup_xid\", "
                                     "'100:105:100,102'::pg_snapshot))"));
    assert_non_null(strstr(sql.data, "AND xid >= '100'::xid8 AND NOT pg_visible_in_snapshot(xid, "
                                     "'100:105:100,102'::pg_snapshot)"));
    assert_null(strstr(sql.data, "profiles\" WHERE"));
    buf_reset(&sql);

    unsigned char candidate[3] = {0, 0, 0};
    candidate[orders] = 1;
    scope_prune_gate_sql(s, candidate, &sql);
    assert_non_null(strstr(sql.data, "set_config('backup.base_snapshot', $1, true)"));
    assert_non_null(strstr(sql.data, "backup_tombstone_purged WHERE user_id IN ($2::uuid"));
    assert_non_null(strstr(sql.data, "tgname IN ('orders_backup_stamp', 'orders_backup_tombstone', "
                                     "'orders_backup_truncate', 'orders_backup_moved')"));
    /* a TRUNCATE leaves tombstones only since 018: its trigger must be older than the snapshot */
    assert_non_null(strstr(sql.data, "'orders_backup_tombstone', 'orders_backup_truncate')) = 3"));
    assert_null(strstr(sql.data, "order_items_backup"));
    buf_reset(&sql);

    /* staged in part: only rows changed since go; a parent is staged or the user's in place */
    scope_restore_delete_sql(s, items, 0, "100:105:", "120:124:121", &sql);
    assert_non_null(
        strstr(sql.data, "\"backup_xid\" >= '100'::xid8 AND NOT pg_visible_in_snapshot("));
    /* not a row written after the keys were listed */
    assert_non_null(
        strstr(sql.data, "pg_visible_in_snapshot(\"backup_xid\", '120:124:121'::pg_snapshot)"));
    buf_reset(&sql);
    scope_restore_delete_sql(s, items, 0, "100:105:", "bad", &sql); /* bounds unknown: none */
    assert_non_null(strstr(sql.data, " AND false AND NOT EXISTS"));
    buf_reset(&sql);
    /* the lock taken before writing: the rows the delete removes and those the upsert changes,
     * none waited for */
    scope_restore_lock_sql(s, items, "100:105:", "120:124:121", &sql);
    assert_non_null(strstr(sql.data, "SELECT count(*) FROM (SELECT 1 FROM \"order_items\" WHERE "
                                     "\"id\" IN (SELECT \"id\" FROM \"order_items\" WHERE "));
    assert_non_null(strstr(sql.data, "'120:124:121'::pg_snapshot)"));
    assert_non_null(strstr(sql.data, " UNION ALL SELECT f.\"id\" FROM _bw_f2 f JOIN"));
    assert_non_null(strstr(sql.data, ") IS DISTINCT FROM ROW("));
    assert_non_null(strstr(sql.data, " FOR UPDATE NOWAIT) l"));
    buf_reset(&sql);
    /* a child of a parent moved in since the snapshot counts as changed (any user's tombstone) */
    unsigned char pr[3] = {0, 0, 0};
    pr[items] = 1;
    assert_int_equal(0, scope_prune_keys_sql(s, pr, "100:105:", &sql));
    assert_non_null(strstr(sql.data,
                           "OR \"order_id\"::text IN (SELECT row_id FROM backup_tombstones "
                           "WHERE table_name = 'orders' AND xid >= '100'::xid8"));
    buf_reset(&sql);
    scope_copy_sql(s, items, 1, &sql);
    assert_non_null(strstr(sql.data,
                           "OR \"order_id\"::text IN (SELECT row_id FROM backup_tombstones "
                           "WHERE table_name = 'orders' AND xid >= pg_snapshot_xmin("));
    buf_reset(&sql);
    scope_restore_owner_sql(s, items, 1, 1, &sql);
    assert_non_null(strstr(sql.data, "NOT (EXISTS (SELECT 1 FROM _bw_f1 g WHERE g.\"id\" = "
                                     "f.\"order_id\") OR EXISTS (SELECT 1 FROM \"orders\" WHERE "
                                     "\"orders\".\"id\" = f.\"order_id\" AND "));
    buf_free(&sql);
    scope_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prune_sql),     cmocka_unit_test(test_valid_scope_and_sql),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_restore_sql_is_typed),
        cmocka_unit_test(test_restore_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
