-- 015_web_tier: what the web tier's reads and the operators' gauges need.
--
-- The reference REST server (tools/web) reads backup_metadata, restore_history
-- and backup_statistics as the role `authenticated` with the caller's JWT
-- claims set, so row-level security decides what a user sees, as on Supabase.
-- Its connection's role must therefore be able to SET ROLE authenticated: the
-- role that applies the migrations becomes a member when it is not one (on
-- Supabase, `postgres` and `authenticator` already are). Give a web tier of
-- your own a login role of its own that is a member of `authenticated` and
-- nothing else (WEB_DATABASE_URL).
--
-- The workers report when the newest backup completed
-- (bw_backup_last_completed_timestamp_seconds): a partial index answers the
-- max() without reading the table. Idempotent.

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'authenticated', 'MEMBER') THEN
        EXECUTE format('GRANT authenticated TO %I', current_user);
    END IF;
END;
$$;

CREATE INDEX IF NOT EXISTS backup_metadata_completed_at_idx
    ON backup_metadata (completed_at) WHERE status = 'completed';
