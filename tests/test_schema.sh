#!/usr/bin/env bash
# test_schema: the migrations apply twice, the seed's SQL runs verbatim,
# row-level security limits a user to their own backup_metadata rows, and
# cleanup_old_backups() keeps chains and each user's newest full backup.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL BW_DEVENV

# all migrations, applied twice (the runner applies each once: backup_schema_migrations); each
# file is still idempotent when applied by hand again
rc=0
"$BW_DEVENV" migrate && "$BW_DEVENV" migrate || rc=$?
check "migrations apply twice" 0 "$rc"
rc=0
for f in "$(dirname "$0")"/../proto/sql/[0-9]*.sql; do
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$f" >/dev/null 2>&1 || rc=$f
done
check "every file applies again by hand" 0 "$rc"
check "tables" "backup_exports backup_metadata backup_schema_migrations backup_scope backup_tombstone_purged backup_tombstones businesses capture_gaps capture_owners capture_state change_segments clients notifications order_items orders products profiles restore_history user_settings" \
  "$(q "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'bw_test%' AND tablename NOT LIKE 'snap\_%'")"
check "updated_at triggers" 8 "$(q "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%_set_updated_at'")"

A=aaaaaaaa-0000-4000-8000-000000000001
B=bbbbbbbb-0000-4000-8000-000000000002
q "DELETE FROM backup_metadata WHERE user_id IN ('$A', '$B')" >/dev/null
q "INSERT INTO backup_metadata (id, user_id, type, status, size, created_at, base_backup_id) VALUES
   ('backup-$A-1', '$A', 'full', 'completed', 100, now() - interval '60 days', NULL),
   ('incremental-$A-2', '$A', 'incremental', 'completed', 10, now() - interval '50 days', 'backup-$A-1'),
   ('backup-$A-3', '$A', 'full', 'completed', 100, now() - interval '40 days', NULL),
   ('incremental-$A-4', '$A', 'incremental', 'completed', 10, now() - interval '1 day', 'backup-$A-3'),
   ('backup-$A-5', '$A', 'full', 'failed', NULL, now() - interval '2 days', NULL),
   ('backup-$B-1', '$B', 'full', 'completed', 300, now() - interval '90 days', NULL)" >/dev/null

# the seed's own SQL, verbatim
check "seed space query" "$A|4|220" \
  "$(q "SELECT user_id, COUNT(*) as total_backups, SUM(size) as total_size_bytes FROM backup_metadata WHERE status = 'completed' GROUP BY user_id;" | grep "$A")"

# RLS: a non-owner role with the JWT subject set sees only its rows
# Connect as a login role that may switch to `authenticated`, as Supabase's
# PostgREST does; the worker's own role owns the tables and bypasses RLS.
ADMIN_URL=${BW_ADMIN_DATABASE_URL:?run through tools/devenv test}
rls() { # user-id sql
  psql -X -q -t -A -v ON_ERROR_STOP=1 "$ADMIN_URL" <<SQL
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claim.sub', '$1', true);
$2
COMMIT;
SQL
}
check "RLS: A sees only A" "$A" "$(rls "$A" "SELECT DISTINCT user_id FROM backup_metadata;" | tail -n +2)"
check "RLS: A row count" 5 "$(rls "$A" "SELECT count(*) FROM backup_metadata;" | tail -n +2)"
check "RLS: B sees one" 1 "$(rls "$B" "SELECT count(*) FROM backup_metadata;" | tail -n +2)"
check "RLS: no subject, no rows" 0 "$(rls "" "SELECT count(*) FROM backup_metadata;" | tail -n +2)"
q "DELETE FROM backup_exports WHERE user_id IN ('$A', '$B');
   INSERT INTO backup_exports (id, user_id, backup_id) VALUES (gen_random_uuid(), '$A', 'backup-$A-1')" >/dev/null
check "RLS: an export is its user's only (024)" "1 0" \
  "$(rls "$A" "SELECT count(*) FROM backup_exports;" | tail -n +2) $(rls "$B" "SELECT count(*) FROM backup_exports;" | tail -n +2)"
check "an export's key must be under its user's exports/" 1 \
  "$(q "INSERT INTO backup_exports (id, user_id, backup_id, s3_key) VALUES (gen_random_uuid(), '$A', 'x', 'exports/$B/y.json.gz')" 2>&1 | grep -c 'violates check constraint')"
q "DELETE FROM backup_exports WHERE user_id IN ('$A', '$B')" >/dev/null
check "RLS: statistics view obeys RLS" "$A|5|220|4|1" \
  "$(rls "$A" "SELECT user_id, total_backups, total_size_bytes, successful_backups, failed_backups FROM backup_statistics;" | tail -n +2)"
# Supabase style: claims as JSON
check "RLS: request.jwt.claims JSON" 1 "$(psql -X -q -t -A "$ADMIN_URL" <<SQL | tail -n 1
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"$B","role":"authenticated"}', true);
SELECT count(*) FROM backup_metadata;
COMMIT;
SQL
)"
check "RLS: authenticated cannot write" "denied" \
  "$({ rls "$A" "UPDATE backup_metadata SET size = 0;" 2>&1 || true; } | grep -q 'permission denied' && echo denied)"

# retention: 30 days expires A-1 and A-2 (A-3 is the base of kept A-4, and B-1
# is B's newest full), the seed's call runs verbatim, and a second run marks nothing
check "cleanup_old_backups(30)" 2 "$(q "SELECT cleanup_old_backups(30);")"
check "expired rows" "backup-$A-1 incremental-$A-2" \
  "$(q "SELECT string_agg(id, ' ' ORDER BY id) FROM backup_metadata WHERE status = 'expired' AND user_id IN ('$A', '$B')")"
check "second cleanup marks nothing" 0 "$(q "SELECT cleanup_old_backups(30);")"
check "expired rows keep their key column" "backup-$A-1" "$(q "SELECT id FROM backup_metadata WHERE id = 'backup-$A-1' AND status = 'expired'")"
check "bad days refused" "refused" "$({ q "SELECT cleanup_old_backups(0);" 2>&1 || true; } | grep -q 'at least 1' && echo refused)"
check "bad backup id refused" "refused" \
  "$({ q "INSERT INTO backup_metadata (id, user_id, type) VALUES ('../../etc', '$A', 'full')" 2>&1 || true; } | grep -q 'check constraint' && echo refused)"

# 015: the planner knows backup_scope is small (without statistics the workers' scope query
# was priced as huge and JIT-compiled on every backup: ~45 ms each), and the web tier's reads
# can SET ROLE authenticated
check "backup_scope has statistics" yes "$(q "SELECT CASE WHEN reltuples > 0 THEN 'yes' ELSE 'no' END FROM pg_class WHERE oid = 'backup_scope'::regclass")"
check "the migrating role may act as authenticated" t "$(q "SELECT pg_has_role(current_user, 'authenticated', 'MEMBER')")"

q "DELETE FROM backup_metadata WHERE user_id IN ('$A', '$B')" >/dev/null
finish
