-- 003_retention: the original design's retention function and statistics view.
--
-- cleanup_old_backups(days) cannot delete S3 objects from SQL, so it never
-- deletes rows: it marks expired the completed backups older than `days` that
-- are safe to drop, and the worker's cleanup job deletes their objects and
-- then marks them deleted. Nothing is orphaned: an expired row still names its
-- object. It never expires a user's newest full backup, nor a backup that a
-- kept (not expired) incremental or differential depends on.
-- Returns the number of rows marked. Idempotent.

CREATE OR REPLACE FUNCTION cleanup_old_backups(days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    marked integer;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'cleanup_old_backups: days must be at least 1 (got %)', days;
    END IF;

    WITH RECURSIVE
    candidates AS (
        SELECT b.id
        FROM backup_metadata b
        WHERE b.status = 'completed'
          AND b.created_at < now() - make_interval(days => days)
          AND b.id <> (SELECT n.id FROM backup_metadata n
                       WHERE n.user_id = b.user_id AND n.type = 'full'
                         AND n.status = 'completed'
                       ORDER BY n.created_at DESC, n.id DESC LIMIT 1)
    ),
    -- every ancestor of a backup that stays must stay too
    needed AS (
        SELECT k.base_backup_id AS id
        FROM backup_metadata k
        WHERE k.status IN ('pending', 'running', 'completed') AND k.base_backup_id IS NOT NULL
          AND k.id NOT IN (SELECT id FROM candidates)
        UNION
        SELECT b.base_backup_id
        FROM backup_metadata b JOIN needed ON b.id = needed.id
        WHERE b.base_backup_id IS NOT NULL
    )
    UPDATE backup_metadata
    SET status = 'expired'
    WHERE id IN (SELECT id FROM candidates)
      AND id NOT IN (SELECT id FROM needed WHERE id IS NOT NULL);
    GET DIAGNOSTICS marked = ROW_COUNT;
    RETURN marked;
END;
$$;

-- Per-user totals, as the profile page shows them. security_invoker makes the
-- view obey backup_metadata's row-level security for the querying user.
CREATE OR REPLACE VIEW backup_statistics WITH (security_invoker = true) AS
SELECT user_id,
       count(*) FILTER (WHERE status <> 'deleted')                      AS total_backups,
       coalesce(sum(size) FILTER (WHERE status = 'completed'), 0)      AS total_size_bytes,
       count(*) FILTER (WHERE status = 'completed')                    AS successful_backups,
       count(*) FILTER (WHERE status = 'failed')                       AS failed_backups,
       round(100.0 * count(*) FILTER (WHERE status = 'completed')
             / nullif(count(*) FILTER (WHERE status IN ('completed', 'failed')), 0), 1)
                                                                      AS success_rate,
       max(created_at) FILTER (WHERE status = 'completed')             AS last_backup_at
FROM backup_metadata
GROUP BY user_id;

GRANT SELECT ON backup_statistics TO authenticated;
