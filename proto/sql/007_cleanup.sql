-- 007_cleanup: one retention rule, used by the worker's cleanup job and by
-- cleanup_old_backups() alike.
--
-- backup_expire(user, days) marks `expired` the user's completed backups older
-- than `days` that are safe to drop, and returns every expired backup of the
-- user with its key (those marked now and those a previous run could not
-- delete): the cleanup job deletes their objects, then marks them `deleted`.
-- Never expired: the user's newest full backup, and any backup that a kept
-- backup (pending, running or completed, not expiring now) builds on, down its
-- whole chain. Idempotent.

CREATE OR REPLACE FUNCTION backup_expire(p_user uuid, days integer)
RETURNS TABLE (backup_id text, s3_key text)
LANGUAGE plpgsql AS $$
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'backup_expire: days must be at least 1 (got %)', days;
    END IF;
    WITH RECURSIVE
    mine AS (SELECT * FROM backup_metadata WHERE user_id = p_user),
    candidates AS (
        SELECT m.id FROM mine m
        WHERE m.status = 'completed'
          AND m.created_at < now() - make_interval(days => days)
          AND m.id IS DISTINCT FROM (SELECT n.id FROM mine n
                                     WHERE n.type = 'full' AND n.status = 'completed'
                                     ORDER BY n.created_at DESC, n.id DESC LIMIT 1)
    ),
    needed AS (
        SELECT k.base_backup_id AS id FROM mine k
        WHERE k.status IN ('pending', 'running', 'completed') AND k.base_backup_id IS NOT NULL
          AND k.id NOT IN (SELECT id FROM candidates)
        UNION
        SELECT b.base_backup_id FROM mine b JOIN needed ON b.id = needed.id
        WHERE b.base_backup_id IS NOT NULL
    )
    UPDATE backup_metadata SET status = 'expired'
    WHERE id IN (SELECT id FROM candidates)
      AND id NOT IN (SELECT id FROM needed WHERE id IS NOT NULL);
    RETURN QUERY SELECT m.id, m.s3_key FROM backup_metadata m
                 WHERE m.user_id = p_user AND m.status = 'expired' ORDER BY m.created_at;
END;
$$;

-- The original design's function, now the same rule for every user. SQL cannot
-- delete S3 objects: it only marks; the worker's cleanup deletes what is expired.
CREATE OR REPLACE FUNCTION cleanup_old_backups(days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    before integer;
    after integer;
BEGIN
    SELECT count(*) INTO before FROM backup_metadata WHERE status = 'expired';
    PERFORM backup_expire(u.user_id, days)
    FROM (SELECT DISTINCT user_id FROM backup_metadata WHERE status = 'completed') u;
    SELECT count(*) INTO after FROM backup_metadata WHERE status = 'expired';
    RETURN after - before;
END;
$$;
