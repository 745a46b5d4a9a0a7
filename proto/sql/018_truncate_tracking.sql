-- 018: TRUNCATE is tracked, and tracking is installed once (README, "Change tracking").
--
-- TRUNCATE fires no DELETE trigger: a truncated table's rows left no tombstone, so the next
-- incremental brought them back and a change-only restore believed nothing had changed since
-- (issue 29). Each table in backup_scope now has <table>_backup_truncate, a statement-level
-- BEFORE TRUNCATE trigger that writes a tombstone for every row still there, just as the
-- delete trigger would (key, user, parent; stamped with the truncating transaction's xid). It
-- fires for every table a TRUNCATE ... CASCADE reaches, and within a transaction that writes
-- rows again after the TRUNCATE (those are stamped as written: a step deletes first, then
-- writes). The cost moves to the TRUNCATE, which becomes as slow as reading the table's keys
-- once; the rows it removes were going to be reported deleted anyway.
--
-- backup_track_all() now creates what is missing and leaves in place a trigger that exists:
-- re-applying the migrations no longer re-creates every trigger (which made every restore of an
-- older backup stage every row: the restore trusts tracking only when the triggers are older
-- than the backup's snapshot). A migration that changes a trigger drops it first. Idempotent.

CREATE OR REPLACE FUNCTION backup_track_all() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n integer := 0;
    fn text;
    owner_col text;
    parent_key text;
    user_expr text;
    parent_expr text;
BEGIN
    FOR t IN SELECT * FROM backup_scope ORDER BY restore_order LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS backup_xid xid8', t.table_name);
        IF NOT EXISTS (SELECT 1 FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid
                       AND a.attnum = d.adnum WHERE d.adrelid = t.table_name::regclass
                       AND a.attname = 'backup_xid') THEN
            EXECUTE format('ALTER TABLE %I ALTER COLUMN backup_xid SET DEFAULT pg_current_xact_id()',
                           t.table_name);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.table_name::regclass
                       AND tgname = t.table_name || '_backup_stamp') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %I FOR EACH ROW '
                           'WHEN (NEW.backup_xid IS DISTINCT FROM pg_current_xact_id()) '
                           'EXECUTE FUNCTION backup_stamp()',
                           t.table_name || '_backup_stamp', t.table_name);
        END IF;
        user_expr := CASE WHEN t.user_column IS NULL THEN 'NULL::uuid'
                          ELSE format('NULLIF(o.%I::text, %L)::uuid', t.user_column, '') END;
        parent_expr := CASE WHEN t.parent_column IS NULL THEN 'NULL::uuid'
                            ELSE format('NULLIF(o.%I::text, %L)::uuid', t.parent_column, '') END;
        -- deletes: one INSERT ... SELECT per statement (017's rule for children)
        fn := left('backup_tombstone_' || t.table_name, 63);
        SELECT p.key_column INTO parent_key FROM backup_scope p
        WHERE p.table_name = t.parent_table AND p.user_column IS NOT NULL;
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION %I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
            'SET search_path = public, pg_temp AS $f$ BEGIN '
            'INSERT INTO backup_tombstones (table_name, row_id, user_id, parent_id) '
            'SELECT %L, o.%I::text, %s, %s FROM backup_old o%s; RETURN NULL; END $f$',
            fn, t.table_name, t.key_column, user_expr, parent_expr,
            CASE WHEN parent_key IS NULL THEN ''
                 ELSE format(' WHERE o.%I IS NULL OR EXISTS (SELECT 1 FROM %I p WHERE p.%I = o.%I)',
                             t.parent_column, t.parent_table, parent_key, t.parent_column) END);
        EXECUTE format('REVOKE ALL ON FUNCTION %I() FROM PUBLIC', fn);
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.table_name::regclass
                       AND tgname = t.table_name || '_backup_tombstone') THEN
            EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS backup_old '
                           'FOR EACH STATEMENT EXECUTE FUNCTION %I()',
                           t.table_name || '_backup_tombstone', t.table_name, fn);
        END IF;
        -- TRUNCATE: a tombstone for every row, read before the table is emptied
        fn := left('backup_truncate_' || t.table_name, 63);
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION %I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
            'SET search_path = public, pg_temp AS $f$ BEGIN '
            'INSERT INTO backup_tombstones (table_name, row_id, user_id, parent_id) '
            'SELECT %L, o.%I::text, %s, %s FROM %I o; RETURN NULL; END $f$',
            fn, t.table_name, t.key_column, user_expr, parent_expr, t.table_name);
        EXECUTE format('REVOKE ALL ON FUNCTION %I() FROM PUBLIC', fn);
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.table_name::regclass
                       AND tgname = t.table_name || '_backup_truncate') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                           'EXECUTE FUNCTION %I()',
                           t.table_name || '_backup_truncate', t.table_name, fn);
        END IF;
        -- a row moved to another owner
        owner_col := coalesce(t.user_column, t.parent_column);
        IF owner_col IS NOT NULL AND owner_col <> t.key_column AND NOT EXISTS (
               SELECT 1 FROM pg_trigger WHERE tgrelid = t.table_name::regclass
               AND tgname = t.table_name || '_backup_moved') THEN
            EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %I ON %I FOR EACH ROW '
                           'WHEN (OLD.%I IS DISTINCT FROM NEW.%I) '
                           'EXECUTE FUNCTION backup_tombstone(%L, %L, %L)',
                           t.table_name || '_backup_moved', owner_col, t.table_name, owner_col,
                           owner_col, t.key_column, coalesce(t.user_column, ''),
                           coalesce(t.parent_column, ''));
        END IF;
        n := n + 1;
    END LOOP;
    -- a few rows autovacuum never analyzes: without statistics the workers' scope query is
    -- planned as if huge and JIT-compiled on every run (proto/sql/015)
    ANALYZE backup_scope;
    RETURN n;
END
$$;

SELECT backup_track_all();
