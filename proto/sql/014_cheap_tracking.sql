-- 014: change tracking the application does not feel (README, "Change tracking"). The same
-- contract as 004 (backup_xid on every written row, a tombstone per deleted row, both stamped
-- with the writing transaction's xid), paid for differently:
--
--   insert   backup_xid's column DEFAULT is pg_current_xact_id(): no trigger runs. The stamp
--            trigger's WHEN clause (evaluated by the executor, no PL/pgSQL call) catches an
--            insert that brings its own value (a copy from another table or database).
--   update   the stamp trigger, row level (each new row version needs the value).
--   delete   one statement-level AFTER DELETE trigger per table: its transition table is read
--            once by an INSERT ... SELECT of the key, user and parent columns (a function per
--            table, static SQL, planned once per session), instead of a PL/pgSQL call and
--            to_jsonb(OLD) of the whole row for each row.
--   moved    a row whose user column (or parent column) changes leaves a tombstone for its
--            old owner's next incremental: a row trigger that fires only when that column
--            changed (UPDATE OF ... WHEN), so ordinary updates never call it.
--
-- Converts 004's triggers in place (backup_track_all() again); idempotent.

-- A moved row's tombstone for its old owner comes from 004's backup_tombstone() (a row trigger's
-- tombstone of OLD; an AFTER trigger's return value is ignored).

CREATE OR REPLACE FUNCTION backup_track_all() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n integer := 0;
    fn text;
    owner_col text;
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
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION %I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
            'SET search_path = public, pg_temp AS $f$ BEGIN '
            'INSERT INTO backup_tombstones (table_name, row_id, user_id, parent_id) '
            'SELECT %L, o.%I::text, %s, %s FROM backup_old o; RETURN NULL; END $f$',
            fn, t.table_name, t.key_column,
            CASE WHEN t.user_column IS NULL THEN 'NULL::uuid'
                 ELSE format('NULLIF(o.%I::text, %L)::uuid', t.user_column, '') END,
            CASE WHEN t.parent_column IS NULL THEN 'NULL::uuid'
                 ELSE format('NULLIF(o.%I::text, %L)::uuid', t.parent_column, '') END);
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
