-- 002_backup_metadata: one row per backup (and, later, per restore), readable
-- by its owner through row-level security.
--
-- On Supabase, auth.uid() and the `authenticated` role exist already. Elsewhere
-- this migration creates them: auth.uid() reads the `request.jwt.claim.sub`
-- setting (or the `sub` of `request.jwt.claims`), so the same policy works on
-- both. Idempotent.

CREATE SCHEMA IF NOT EXISTS auth;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'auth' AND p.proname = 'uid') THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE AS $fn$
            SELECT nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                                   current_setting('request.jwt.claims', true)::jsonb ->> 'sub'),
                          '')::uuid
        $fn$;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA auth TO authenticated;

CREATE TABLE IF NOT EXISTS backup_metadata (
    id                 text PRIMARY KEY,
    user_id            uuid NOT NULL,
    type               text NOT NULL CHECK (type IN ('full', 'incremental', 'differential')),
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                         'expired', 'deleted')),
    s3_key             text,
    size               bigint,
    uncompressed_size  bigint,
    checksum           text CHECK (checksum IS NULL OR checksum ~ '^[0-9a-f]{64}$'),
    compression        text NOT NULL DEFAULT 'gzip' CHECK (compression IN ('gzip', 'none')),
    base_backup_id     text REFERENCES backup_metadata (id),
    row_counts         jsonb,
    job_id             text UNIQUE,
    error              text,
    duration_ms        bigint,
    created_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    CHECK (id ~ '^(backup|incremental|differential)-[0-9a-f-]{36}-[0-9A-Za-z]+$')
);

CREATE INDEX IF NOT EXISTS backup_metadata_user_created_idx
    ON backup_metadata (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS backup_metadata_status_idx ON backup_metadata (status);

ALTER TABLE backup_metadata ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS backup_metadata_owner_select ON backup_metadata;
CREATE POLICY backup_metadata_owner_select ON backup_metadata
    FOR SELECT TO authenticated
    USING (user_id = auth.uid());

GRANT SELECT ON backup_metadata TO authenticated;
