#!/usr/bin/env bash
# Recovery point of a restore to a point in time under load (BACKUP_TRACKING=wal): the OLTP mix
# of tools/bench/tracking.sh (a new order with three items, a status update, an item update, the
# order deleted) at full speed with pgbench (CLIENTS clients, SECS seconds) on one tenant, while
# every EVERY seconds a dry-run restore of that tenant to (now - the flush interval - 2 s) runs.
# Once the load has ended and the capture has caught up, each restore's cut (the commit LSN of the
# last transaction it replayed, restore_history.cut_lsn) is compared with the cut pitr_plan gives
# for the same instant now that every change is recorded: equal means no change committed by the
# point was missing when the restore ran. Prints each, the restores' times (they wait for the
# capture), the mix's rate and the capture's lag. Asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/rpo.sh [SECS] [CLIENTS] [EVERY]
set -euo pipefail
SECS=${1:-60}
CLIENTS=${2:-4}
EVERY=${3:-3}
FLUSH_MS=${FLUSH_MS:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
WORKER=$BUILD/backup-worker
CTL=$BUILD/backupctl
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
PGBENCH=${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}
U=70000000-0000-4000-8000-000000000001
P=rpobench$$
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
tmp=$(mktemp -d /tmp/bw-rpo.XXXXXX)
wpid=""
cleanup() {
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null
  sleep 0.5
  "$CTL" tracking triggers >/dev/null 2>&1 || true
  [ -n "${KEEP_LOG:-}" ] && cp "$tmp/w.log" "$KEEP_LOG"; rm -rf "$tmp"
}
trap cleanup EXIT

q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_metadata WHERE user_id = '$U'" >/dev/null
"$ROOT/tools/datagen" --user "$U" --orders 2000 --seed rpo >/dev/null
"$CTL" tracking wal >/dev/null
BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=${FLUSH_MS}ms WORKER_HTTP_PORT=0 REDIS_PREFIX=$P "$WORKER" >"$tmp/w.log" 2>&1 &
wpid=$!
for _ in $(seq 200); do grep -q "capture: streaming from" "$tmp/w.log" && break; sleep 0.05; done
REDIS_PREFIX=$P "$CTL" backup "$U" --wait --json >/dev/null

"$PGBENCH" -n -D "uid=$U" -f "$ROOT/tools/bench/oltp_mix.sql" -c "$CLIENTS" -j 2 -T "$SECS" "$DATABASE_URL" >"$tmp/pgbench.out" 2>&1 &
bench=$!
sleep 3
: >"$tmp/points"
while kill -0 "$bench" 2>/dev/null; do
  at=$(q "SELECT to_char((clock_timestamp() - make_interval(secs => ($FLUSH_MS + 2000) / 1000.0)) AT TIME ZONE 'UTC',
          'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
  t0=$(date +%s.%N)
  r=$(REDIS_PREFIX=$P "$CTL" restore "$U" --at "$at" --dry-run --wait --json --timeout 120 2>/dev/null || true)
  t1=$(date +%s.%N)
  echo "$at $(jq -r '.job_id + " " + .status' <<<"$r") $(echo "$t1 - $t0" | bc)" >>"$tmp/points"
  sleep "$EVERY"
done
wait "$bench" || true
tps=$(grep -oE 'tps = [0-9.]+' "$tmp/pgbench.out" | head -1)
lsn=$(q "SELECT pg_current_wal_insert_lsn()")
until [ "$(q "SELECT confirmed_lsn >= '$lsn' FROM capture_state")" = t ]; do sleep 0.2; done

same=0 n=0
printf "%-28s %-10s %-14s %-14s %s\n" "point" "status" "cut then" "cut now" "restore s"
while read -r at job status secs; do
  then=$(q "SELECT coalesce(cut_lsn::text, '-') FROM restore_history WHERE job_id = '$job'")
  now=$(q "SELECT cut_lsn FROM pitr_plan('$U', '$at', NULL)")
  n=$((n + 1))
  [ "$then" = "$now" ] && same=$((same + 1))
  printf "%-28s %-10s %-14s %-14s %s\n" "$at" "$status" "$then" "$now" "$secs"
done <"$tmp/points"
echo "mix: $tps (pgbench, $CLIENTS clients, 5 changes a transaction) for $SECS s"
echo "recovery point: $same of $n restores to (now - ${FLUSH_MS} ms - 2 s) had every change committed by then"
