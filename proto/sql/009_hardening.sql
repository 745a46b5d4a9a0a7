-- 009: who recorded a backup_metadata row.
--
-- 'worker': the worker wrote the object and its record, with the digest it computed as the
-- bytes went out. 'reindex': `backupctl reindex` rebuilt the row from a manifest in S3, whose
-- checksum it can only trust; backupctl list shows such rows as unverified, and a restore of
-- one reads the manifest again and compares it with the record before using the object.
ALTER TABLE backup_metadata
    ADD COLUMN IF NOT EXISTS recorded_by text NOT NULL DEFAULT 'worker';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'backup_metadata_recorded_by_check') THEN
        ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_recorded_by_check
            CHECK (recorded_by IN ('worker', 'reindex'));
    END IF;
END $$;
