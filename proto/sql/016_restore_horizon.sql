-- 016_restore_horizon: what a restore needs to trust change tracking.
--
-- A restore reads only the rows that changed since its backup's snapshot (README, "Restore"):
-- a row whose backup_xid the snapshot sees, and that left no tombstone since, is the backup's
-- row unchanged, so it is neither staged nor compared. That holds only while every tombstone
-- written since the snapshot is still there. backup_tombstones_purge (008) removes old ones;
-- it now records, per user, the newest xid it ever removed (the nil uuid: tombstones that name
-- only a parent), and a restore trusts tracking only for a backup whose snapshot's xmin is
-- above both the user's and the nil row's. Purges made before this migration are unknown: the
-- nil row starts at the present, so older backups are restored the full way. Idempotent.

-- The tombstones written since a snapshot, found without reading the others: a restore asks
-- for xid >= the snapshot's xmin (an index on an ever-growing value: inserts go to its end).
CREATE INDEX IF NOT EXISTS backup_tombstones_xid_idx ON backup_tombstones (xid);

CREATE TABLE IF NOT EXISTS backup_tombstone_purged (
    user_id uuid PRIMARY KEY, -- '00000000-0000-0000-0000-000000000000': parent-only tombstones
    xid     xid8 NOT NULL     -- the newest tombstone xid a purge removed
);
ALTER TABLE backup_tombstone_purged ENABLE ROW LEVEL SECURITY;

INSERT INTO backup_tombstone_purged (user_id, xid)
VALUES ('00000000-0000-0000-0000-000000000000', pg_current_xact_id())
ON CONFLICT (user_id) DO NOTHING;

CREATE OR REPLACE FUNCTION backup_tombstones_purged_note(p_user uuid, p_xid xid8) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO backup_tombstone_purged (user_id, xid)
    VALUES (coalesce(p_user, '00000000-0000-0000-0000-000000000000'), p_xid)
    ON CONFLICT (user_id) DO UPDATE SET xid = greatest(backup_tombstone_purged.xid, EXCLUDED.xid)
$$;

CREATE OR REPLACE FUNCTION backup_tombstones_purge(p_user uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    k bigint;
    newest xid8;
    global_horizon xid8;
BEGIN
    IF p_user IS NOT NULL THEN
        global_horizon := backup_tombstone_horizon(p_user); -- once, not per row
        WITH d AS (DELETE FROM backup_tombstones WHERE user_id = p_user AND xid < global_horizon
                   RETURNING xid)
        SELECT count(*), max(xid) INTO n, newest FROM d;
        IF n > 0 THEN
            PERFORM backup_tombstones_purged_note(p_user, newest);
        END IF;
        RETURN n;
    END IF;
    WITH h AS MATERIALIZED (
        SELECT u.user_id, backup_tombstone_horizon(u.user_id) AS x
        FROM (SELECT DISTINCT user_id FROM backup_tombstones WHERE user_id IS NOT NULL) u),
    d AS (DELETE FROM backup_tombstones t USING h WHERE t.user_id = h.user_id AND t.xid < h.x
          RETURNING t.user_id, t.xid),
    g AS (SELECT user_id, max(xid) AS x, count(*) AS c FROM d GROUP BY user_id),
    noted AS (SELECT backup_tombstones_purged_note(user_id, x) FROM g)
    SELECT coalesce(sum(c), 0) INTO n FROM g, (SELECT count(*) FROM noted) z;
    SELECT least(min(backup_tombstone_horizon(u.user_id)), pg_snapshot_xmin(pg_current_snapshot()))
    INTO global_horizon
    FROM (SELECT DISTINCT user_id FROM backup_metadata) u;
    WITH d AS (DELETE FROM backup_tombstones WHERE user_id IS NULL AND xid < global_horizon
               RETURNING xid)
    SELECT count(*), max(xid) INTO k, newest FROM d;
    IF k > 0 THEN
        PERFORM backup_tombstones_purged_note(NULL, newest);
    END IF;
    RETURN n + k;
END;
$$;
