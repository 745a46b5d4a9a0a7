-- 004_change_tracking: what an exact incremental backup needs from the database.
--
-- Every tracked row carries backup_xid, the transaction that last wrote it
-- (pg_current_xact_id(), set by a trigger); every deleted row leaves a
-- tombstone stamped the same way. A backup reads all of a user's tables in one
-- REPEATABLE READ transaction and records that transaction's snapshot
-- (pg_current_snapshot()). The next incremental takes the rows and tombstones
-- whose xid is not visible in the base's snapshot:
--
--   WHERE backup_xid IS NOT NULL AND NOT pg_visible_in_snapshot(backup_xid, :base_snapshot)
--
-- which is exactly what the base did not see, including the work of a
-- transaction that began before the base and committed after it (a test on
-- updated_at > base time misses those). Rows written before tracking existed
-- have backup_xid NULL: every snapshot taken since sees them.
--
-- Idempotent: safe to apply again.

CREATE TABLE IF NOT EXISTS backup_tombstones (
    table_name  text        NOT NULL,
    row_id      text        NOT NULL,            -- the deleted row's key, as text
    user_id     uuid,                            -- its user, when the row names it
    parent_id   uuid,                            -- else its parent (order_items: the order)
    xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS backup_tombstones_user_idx ON backup_tombstones (user_id, table_name);
CREATE INDEX IF NOT EXISTS backup_tombstones_parent_idx ON backup_tombstones (parent_id)
    WHERE parent_id IS NOT NULL;
-- written by the trigger only (SECURITY DEFINER); users of the web tier see none of it
ALTER TABLE backup_tombstones ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION backup_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.backup_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

-- TG_ARGV: key column, user column ('' if none), parent column ('' if none)
CREATE OR REPLACE FUNCTION backup_tombstone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    old_row jsonb := to_jsonb(OLD);
BEGIN
    INSERT INTO backup_tombstones (table_name, row_id, user_id, parent_id)
    VALUES (TG_TABLE_NAME,
            old_row ->> TG_ARGV[0],
            NULLIF(old_row ->> NULLIF(TG_ARGV[1], ''), '')::uuid,
            NULLIF(old_row ->> NULLIF(TG_ARGV[2], ''), '')::uuid);
    RETURN OLD;
END
$$;
REVOKE ALL ON FUNCTION backup_tombstone() FROM PUBLIC;

-- What a backup covers, and how: one row per table. An operator adds a table
-- here (and runs SELECT backup_track_all()) without recompiling anything. The
-- worker validates every name against the catalog and quotes it.
CREATE TABLE IF NOT EXISTS backup_scope (
    table_name     text PRIMARY KEY,
    key_column     text NOT NULL DEFAULT 'id',  -- identifies a row (tombstones, restores)
    user_column    text,                        -- the row's user, when it names it
    parent_table   text REFERENCES backup_scope (table_name),
    parent_column  text,                        -- else: the column pointing at its parent
    restore_order  integer NOT NULL,            -- parents first; deletes run in reverse
    CHECK ((user_column IS NULL) <> (parent_table IS NULL AND parent_column IS NULL)),
    CHECK ((parent_table IS NULL) = (parent_column IS NULL))
);
ALTER TABLE backup_scope ENABLE ROW LEVEL SECURITY;

INSERT INTO backup_scope (table_name, key_column, user_column, parent_table, parent_column, restore_order)
VALUES ('profiles',      'id',      'id',       NULL,     NULL,       10),
       ('businesses',    'id',      'owner_id', NULL,     NULL,       20),
       ('products',      'id',      'user_id',  NULL,     NULL,       30),
       ('clients',       'id',      'user_id',  NULL,     NULL,       40),
       ('orders',        'id',      'user_id',  NULL,     NULL,       50),
       ('order_items',   'id',      NULL,       'orders', 'order_id', 60),
       ('notifications', 'id',      'user_id',  NULL,     NULL,       70),
       ('user_settings', 'user_id', 'user_id',  NULL,     NULL,       80)
ON CONFLICT (table_name) DO NOTHING;

-- Install the stamp column and both triggers on every table in backup_scope.
CREATE OR REPLACE FUNCTION backup_track_all() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n integer := 0;
BEGIN
    FOR t IN SELECT * FROM backup_scope ORDER BY restore_order LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS backup_xid xid8', t.table_name);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.table_name || '_backup_stamp',
                       t.table_name);
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION backup_stamp()',
                       t.table_name || '_backup_stamp', t.table_name);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.table_name || '_backup_tombstone',
                       t.table_name);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION backup_tombstone(%L, %L, %L)',
                       t.table_name || '_backup_tombstone', t.table_name, t.key_column,
                       coalesce(t.user_column, ''), coalesce(t.parent_column, ''));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

SELECT backup_track_all();
