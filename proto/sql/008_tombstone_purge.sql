-- 008_tombstone_purge: backup_tombstones must not grow forever.
--
-- A tombstone matters only to an incremental or differential whose base
-- snapshot does not see it. Future backups build on the user's newest
-- completed full (differential) or a backup at least as new (incremental);
-- backups already recorded (pending, running) build on the base their row
-- names. So a tombstone whose xid is below the xmin of all those base
-- snapshots is visible in every snapshot any backup will ever compare it with
-- (xid < xmin: finished before the snapshot), and can go. A user with no full
-- backup needs none of them: the next incremental becomes a full.
--
-- Tombstones that name only a parent (order_items: the order) cannot be
-- attributed to one user cheaply; they use the lowest horizon of all users.
--
-- backup_tombstones_purge(user) purges one user's; backup_tombstones_purge(NULL)
-- every user's and the parent-only ones. Returns how many rows went. The
-- cleanup job calls it after each user (and with NULL after scope=all).
-- Idempotent: safe to apply again.

CREATE OR REPLACE FUNCTION backup_tombstone_horizon(p_user uuid) RETURNS xid8
LANGUAGE sql STABLE AS $$
    SELECT least(
        (SELECT pg_snapshot_xmin(f.snapshot::pg_snapshot) FROM backup_metadata f
         WHERE f.user_id = p_user AND f.type = 'full' AND f.status = 'completed'
           AND f.snapshot IS NOT NULL
         ORDER BY f.created_at DESC, f.id DESC LIMIT 1),
        (SELECT min(pg_snapshot_xmin(b.snapshot::pg_snapshot)) FROM backup_metadata k
         JOIN backup_metadata b ON b.id = k.base_backup_id
         WHERE k.user_id = p_user AND k.status IN ('pending', 'running')
           AND b.snapshot IS NOT NULL),
        pg_snapshot_xmin(pg_current_snapshot()))
$$;

CREATE OR REPLACE FUNCTION backup_tombstones_purge(p_user uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    k bigint;
    global_horizon xid8;
BEGIN
    IF p_user IS NOT NULL THEN
        global_horizon := backup_tombstone_horizon(p_user); -- once, not per row
        DELETE FROM backup_tombstones WHERE user_id = p_user AND xid < global_horizon;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
    END IF;
    WITH h AS MATERIALIZED (
        SELECT u.user_id, backup_tombstone_horizon(u.user_id) AS x
        FROM (SELECT DISTINCT user_id FROM backup_tombstones WHERE user_id IS NOT NULL) u)
    DELETE FROM backup_tombstones t USING h WHERE t.user_id = h.user_id AND t.xid < h.x;
    GET DIAGNOSTICS n = ROW_COUNT;
    SELECT least(min(backup_tombstone_horizon(u.user_id)), pg_snapshot_xmin(pg_current_snapshot()))
    INTO global_horizon
    FROM (SELECT DISTINCT user_id FROM backup_metadata) u;
    DELETE FROM backup_tombstones WHERE user_id IS NULL AND xid < global_horizon;
    GET DIAGNOSTICS k = ROW_COUNT;
    RETURN n + k;
END;
$$;
