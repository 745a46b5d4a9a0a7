-- 005_backup_runs: what the backup job records beyond 002's columns.
--
-- snapshot: the pg_current_snapshot() of the backup's REPEATABLE READ
-- transaction; the next incremental or differential selects what it did not
-- see. requested_type: what the job asked for (an incremental with no base
-- becomes a full backup, and says so). attempts: runs of the job so far.
-- Idempotent.

ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS snapshot text;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS requested_type text;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS started_at timestamptz;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS format_version integer;

-- the newest completed backup of a user, which an incremental builds on
CREATE INDEX IF NOT EXISTS backup_metadata_user_completed_idx
    ON backup_metadata (user_id, created_at DESC) WHERE status = 'completed';
