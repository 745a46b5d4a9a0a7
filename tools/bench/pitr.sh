#!/usr/bin/env bash
# Restore to a point in time (BACKUP_TRACKING=wal): the benchmark tenant of ORDERS orders (100000:
# about 410,000 rows), a full backup of it, then CHANGES changes since (the OLTP mix in
# transactions of TXN changes: half updates of orders, a quarter items inserted, a quarter
# deleted), captured by one worker. Then, in the same run:
#   at      restore --at the instant after the last change: the base staged, every change
#           replayed (the database is already in that state: nothing is written)
#   base    restore of the base alone, by id (it writes the changes back)
# Prints both wall times (the job's duration), the replay's own time and rate (from the
# worker's log: the base staged to the changes staged), and the goal's bound (1.5 x base +
# changes / 50,000 per second). Switches the database to wal and back to triggers after.
# Asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/pitr.sh [ORDERS] [CHANGES] [TXN]
set -euo pipefail
ORDERS=${1:-100000}
CHANGES=${2:-200000}
TXN=${3:-100}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
WORKER=$BUILD/backup-worker
CTL=$BUILD/backupctl
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
U=be0c0000-0000-4000-8000-$(printf '%012d' "$ORDERS")
P=pitrbench$$
export PGOPTIONS="-c synchronous_commit=on"
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
log=$(mktemp /tmp/bw-pitrbench.XXXXXX)
wpid=""
cleanup() {
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null
  sleep 0.5
  "$CTL" tracking triggers >/dev/null 2>&1 || true
  [ -n "${KEEP_LOG:-}" ] && cp "$log" "$KEEP_LOG"; rm -f "$log" "$log.sql"
}
trap cleanup EXIT

have=$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")
if [ "$have" -lt "$ORDERS" ]; then
  echo "pitr bench: generating a tenant of $ORDERS orders (once)"
  "$ROOT/tools/datagen" --user "$U" --orders "$ORDERS" --items 3 --products $((ORDERS / 20)) \
    --clients $((ORDERS / 20)) --notifications 100 --seed "bench$ORDERS" >/dev/null
fi
rows=$(q "SELECT (SELECT count(*) FROM orders WHERE user_id = '$U') * 1 +
                 (SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U') +
                 (SELECT count(*) FROM products WHERE user_id = '$U') + (SELECT count(*) FROM clients WHERE user_id = '$U')")
"$CTL" tracking wal >/dev/null
BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=1s WORKER_HTTP_PORT=0 REDIS_PREFIX=$P "$WORKER" >"$log" 2>&1 &
wpid=$!
for _ in $(seq 200); do grep -q "capture: streaming from" "$log" && break; sleep 0.05; done
grep -q "capture: streaming from" "$log" || { cat "$log"; echo "the capture did not start" >&2; exit 1; }
job() { REDIS_PREFIX=$P "$CTL" "$@" --wait --json --timeout 3600; }

B=$(job backup "$U" | jq -r .backup_id)
echo "tenant $U: $rows rows; base $B"

# the changes: TXN per transaction, one psql session
n=$((CHANGES / TXN))
q "SELECT setseed(0.42)" >/dev/null
{
  for ((k = 0; k < n; k++)); do
    case $((k % 4)) in
      0 | 1) echo "UPDATE orders SET total = total + 1 WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' AND number % $((ORDERS / TXN + 1)) = $((k % (ORDERS / TXN + 1))) LIMIT $TXN);" ;;
      2) echo "INSERT INTO order_items (order_id, quantity, unit_price) SELECT id, 1, 1 FROM orders WHERE user_id = '$U' AND number % $((ORDERS / TXN + 1)) = $((k % (ORDERS / TXN + 1))) LIMIT $TXN;" ;;
      3) echo "DELETE FROM order_items WHERE id IN (SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U' AND o.number % $((ORDERS / TXN + 1)) = $((k % (ORDERS / TXN + 1))) LIMIT $TXN);" ;;
    esac
  done
} >"$log.sql"
t0=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$log.sql" >/dev/null
t1=$(date +%s.%N)
made=$(q "SELECT coalesce(sum(changes), 0) FROM change_segments WHERE user_id = '$U' AND first_commit > (SELECT completed_at FROM backup_metadata WHERE id = '$B')")
AT=$(q "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
# (as autovacuum would have after an hour: both restores then read settled pages)
q "VACUUM ANALYZE orders, order_items" >/dev/null
sleep 1.5
echo "changes written in $(echo "$t1 - $t0" | bc) s; the point: $AT"

ms() { q "SELECT duration_ms FROM restore_history WHERE job_id = '$1'"; }
r=$(job restore "$U" --at "$AT")
[ "$(jq -r .status <<<"$r")" = completed ] || { jq . <<<"$r"; tail -20 "$log"; exit 1; }
J=$(jq -r .job_id <<<"$r")
at_ms=$(ms "$J")
replayed=$(grep "\[job $J\] replayed" "$log" | grep -oE 'replayed [0-9]+' | grep -oE '[0-9]+')
ts() { date -d "$(grep "\[job $J\] $1" "$log" | head -1 | cut -d' ' -f1)" +%s.%N; }
replay_s=$(echo "$(ts replayed) - $(ts staged)" | bc)
apply_s=$(echo "$(ts "restored") - $(ts replayed)" | bc)
r=$(job restore "$B")
[ "$(jq -r .status <<<"$r")" = completed ] || { jq . <<<"$r"; exit 1; }
base_ms=$(ms "$(jq -r .job_id <<<"$r")")
echo "restore --at:      $at_ms ms ($replayed changes replayed in $replay_s s: $(echo "$replayed / $replay_s" | bc) changes/s; FINAL+checks+apply $apply_s s)"
echo "restore of base:   $base_ms ms ($(jq -c '.result | {inserted, updated, deleted}' <<<"$r"))"
echo "goal bound:        $(echo "1.5 * $base_ms + $replayed * 1000 / 50000" | bc) ms (1.5 x base + changes at 50,000/s)"
echo "(captured since the base: $made changes)"
