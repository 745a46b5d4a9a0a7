-- 012: the replica region (README, "Replica"). A backup's object and manifest are copied to
-- the same keys in S3_REPLICA_BUCKET by a `replicate` job once the backup completed.
-- replica_status: NULL (no replica configured when it completed), pending (the copy is
-- queued or being retried), completed (the copy's SHA-256 equals `checksum`), failed (gave up;
-- `backupctl replicate --missing` queues it again). replica_error: the last failure.
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS replica_status text;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS replicated_at timestamptz;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS replica_error text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'backup_metadata_replica_status') THEN
        ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_replica_status
            CHECK (replica_status IS NULL OR replica_status IN ('pending', 'completed', 'failed'));
    END IF;
END $$;

-- what waits for a copy, oldest first (metrics, backfill)
CREATE INDEX IF NOT EXISTS backup_metadata_replica_waiting ON backup_metadata (completed_at)
    WHERE replica_status IN ('pending', 'failed');

-- which copy a restore read: primary, replica (forced, or the primary's failed) or mixed
ALTER TABLE restore_history ADD COLUMN IF NOT EXISTS source text;
