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

-- backup_scope holds a handful of rows that never reach autovacuum's analyze
-- threshold: without statistics the planner takes it for 420 rows, prices the
-- workers' scope query (scope_load_sql, run by every backup and restore) over
-- the JIT threshold, and each run then spends ~45 ms compiling it for 1 ms of
-- work (EXPLAIN ANALYZE: JIT Emission 44.5 ms of 52.3 ms). Measured with
-- tools/bench/small.sh: that compile was 93 % of PostgreSQL's time in a small
-- backup. backup_track_all(), run after adding a table, analyzes it again.
ANALYZE backup_scope;
