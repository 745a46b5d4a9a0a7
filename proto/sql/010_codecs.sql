-- 010: the codecs a backup's stored bytes went through, in order (format v2: the header and
-- the manifest carry the same list). NULL on rows of format v1: their `compression` says it
-- (gzip -> {gzip}, none -> {}), and readers fall back to it. `compression` keeps naming the
-- first codec (gzip, zstd) or none, for readers of format v1.
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS codecs text[];

DO $$
BEGIN
    -- the known codecs, made here once; a later migration that adds a codec re-makes it (011)
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'backup_metadata_codecs_known') THEN
        ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_codecs_known
            CHECK (codecs IS NULL OR codecs <@ ARRAY['gzip', 'zstd']::text[]);
    END IF;
    ALTER TABLE backup_metadata DROP CONSTRAINT IF EXISTS backup_metadata_compression_check;
    ALTER TABLE backup_metadata ADD CONSTRAINT backup_metadata_compression_check
        CHECK (compression IN ('gzip', 'zstd', 'none'));
END $$;
