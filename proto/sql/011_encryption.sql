-- 011: encrypted backups (proto/README.md, "Encrypted objects"). An encrypted object's data key
-- is wrapped under a key-encryption key; the record keeps the newest wrapping (after
-- `backupctl rekey`) and the id of the key that opens it, so keys can be rotated and retired
-- without rewriting objects. Both are NULL for objects in cleartext. The wrapped key is not a
-- secret (only its key-encryption key is), so the owner may read it like the rest of the row.
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS key_id text;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS wrapped_key text;
-- the key of the wrapping in the object's own header (key_id until the first rekey): a worker
-- that lacks the newest key may still hold this one
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS origin_key_id text;

DO $$
BEGIN
    -- the known codecs, re-made on every run: the newest migration's list is the truth
    ALTER TABLE backup_metadata DROP CONSTRAINT IF EXISTS backup_metadata_codecs_known;
    ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_codecs_known
        CHECK (codecs IS NULL OR codecs <@ ARRAY['gzip', 'zstd', 'aes-256-gcm']::text[]);
    -- a completed encrypted backup can always be opened by someone holding its key
    ALTER TABLE backup_metadata DROP CONSTRAINT IF EXISTS backup_metadata_key_recorded;
    ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_key_recorded
        CHECK (status <> 'completed' OR NOT coalesce('aes-256-gcm' = ANY (codecs), false)
               OR (key_id IS NOT NULL AND wrapped_key IS NOT NULL));
END $$;
