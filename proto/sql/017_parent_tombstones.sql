-- 017: a child deleted with its parent leaves no tombstone of its own (README, "Change
-- tracking"). Deleting an order cascades to its items one statement per order, so 014's
-- statement-level trigger on order_items ran once per order and wrote a tombstone per item:
-- a bulk delete of 100,000 orders wrote 400,000 tombstones and took 2.6x its time without
-- tracking. Now a child table's trigger (a table whose parent names its user: order_items)
-- writes tombstones only for rows whose parent row still exists (or that have none); a row
-- deleted with its parent is covered by the parent's tombstone, written at the end of the
-- same statement. Readers apply the rule: a restore of a chain drops a child whose parent's
-- key a later step deleted, and a restore that stages only what changed stages the backed-up
-- children of every parent deleted since (worker/scope_restore.c).
--
-- Re-creates the triggers (backup_track_all() again), so a restore from a backup taken before
-- this migration stages those tables whole (their triggers are newer than its snapshot).
-- Idempotent.

CREATE OR REPLACE FUNCTION backup_track_all() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n integer := 0;
    fn text;
    owner_col text;
    parent_key text;
BEGIN
    FOR t IN SELECT * FROM backup_scope ORDER BY restore_order LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS backup_xid xid8', t.table_name);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN backup_xid SET DEFAULT pg_current_xact_id()',
                       t.table_name);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.table_name || '_backup_stamp',
                       t.table_name);
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %I FOR EACH ROW '
                       'WHEN (NEW.backup_xid IS DISTINCT FROM pg_current_xact_id()) '
                       'EXECUTE FUNCTION backup_stamp()',
                       t.table_name || '_backup_stamp', t.table_name);
        -- deletes: one INSERT ... SELECT per statement
        fn := left('backup_tombstone_' || t.table_name, 63);
        -- a row whose parent (a table naming its user) is gone was deleted with it: the
        -- parent's tombstone, written at the end of the same statement, stands for it
        SELECT p.key_column INTO parent_key FROM backup_scope p
        WHERE p.table_name = t.parent_table AND p.user_column IS NOT NULL;
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION %I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
            'SET search_path = public, pg_temp AS $f$ BEGIN '
            'INSERT INTO backup_tombstones (table_name, row_id, user_id, parent_id) '
            'SELECT %L, o.%I::text, %s, %s FROM backup_old o%s; RETURN NULL; END $f$',
            fn, t.table_name, t.key_column,
            CASE WHEN t.user_column IS NULL THEN 'NULL::uuid'
                 ELSE format('NULLIF(o.%I::text, %L)::uuid', t.user_column, '') END,
            CASE WHEN t.parent_column IS NULL THEN 'NULL::uuid'
                 ELSE format('NULLIF(o.%I::text, %L)::uuid', t.parent_column, '') END,
            CASE WHEN parent_key IS NULL THEN ''
                 ELSE format(' WHERE o.%I IS NULL OR EXISTS (SELECT 1 FROM %I p WHERE p.%I = o.%I)',
                             t.parent_column, t.parent_table, parent_key, t.parent_column) END);
        EXECUTE format('REVOKE ALL ON FUNCTION %I() FROM PUBLIC', fn);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.table_name || '_backup_tombstone',
                       t.table_name);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS backup_old '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %I()',
                       t.table_name || '_backup_tombstone', t.table_name, fn);
        -- a row moved to another owner
        owner_col := coalesce(t.user_column, t.parent_column);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.table_name || '_backup_moved',
                       t.table_name);
        IF owner_col IS NOT NULL AND owner_col <> t.key_column THEN
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
