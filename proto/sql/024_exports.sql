-- 024_exports: "download my data" (the export job, proto/README.md "Exports").
--
-- An export is one of the user's backups rewritten by the worker as a plain,
-- readable JSON document (gzip) under exports/{user_id}/{id}.json.gz, kept a
-- day: the web tier hands the owner a presigned URL of it (15 minutes), and
-- cleanup deletes the object and the row once expires_at has passed (the
-- bucket's lifecycle rule on exports/ is the second fence, deploy/README.md).
-- Readable by its user through row-level security, like backup_metadata; only
-- the worker writes it. Idempotent.

CREATE TABLE IF NOT EXISTS backup_exports (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL,
    backup_id     text NOT NULL,
    job_id        text,
    requested_by  uuid,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'completed', 'failed', 'expired')),
    s3_key        text CHECK (s3_key IS NULL OR s3_key LIKE 'exports/' || user_id || '/%'),
    size          bigint,
    checksum      text CHECK (checksum IS NULL OR checksum ~ '^[0-9a-f]{64}$'),
    row_count     bigint,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    expires_at    timestamptz NOT NULL DEFAULT now() + interval '1 day'
);
CREATE INDEX IF NOT EXISTS backup_exports_user_idx ON backup_exports (user_id, created_at DESC);

ALTER TABLE backup_exports ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS backup_exports_owner_select ON backup_exports;
CREATE POLICY backup_exports_owner_select ON backup_exports
    FOR SELECT TO authenticated
    USING (user_id = auth.uid());
GRANT SELECT ON backup_exports TO authenticated;

-- The exports cleanup may delete now: past their day, or failed (no object:
-- the write stream stores nothing of a failed export) a day after they began.
-- Marks them expired and returns them, with those a previous run marked and
-- failed to delete, so a failed DeleteObjects is tried again.
CREATE OR REPLACE FUNCTION backup_exports_expire(p_user uuid)
RETURNS TABLE (export_id uuid, s3_key text)
LANGUAGE sql AS $$
    UPDATE backup_exports e SET status = 'expired'
     WHERE e.user_id = p_user
       AND (e.status = 'expired'
            OR (e.status = 'completed' AND e.expires_at <= now())
            OR (e.status IN ('failed', 'running') AND e.created_at <= now() - interval '1 day'))
    RETURNING e.id, e.s3_key
$$;
