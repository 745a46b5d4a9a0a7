-- 010: the codecs a backup's stored bytes went through, in order (format v2: the header and
-- the manifest carry the same list). NULL on rows of format v1: their `compression` says it
-- (gzip -> {gzip}, none -> {}), and readers fall back to it.
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS codecs text[];

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'backup_metadata_codecs_known') THEN
        ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_codecs_known
            CHECK (codecs IS NULL OR codecs <@ ARRAY['gzip']::text[]);
    END IF;
END $$;
