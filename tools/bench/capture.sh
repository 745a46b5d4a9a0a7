#!/usr/bin/env bash
# Change capture throughput (BACKUP_TRACKING=wal): ROWS inserted, TXN rows per transaction,
# spread over USERS tenants, while one worker captures them into the store. Prints the changes
# per second from the first commit until the slot's confirmed position covers the last one, the
# lag after the last commit, the worker's and the walsender's CPU per change (from /proc ticks),
# the worker's peak RSS and the segments written. Switches the database to wal for the run and
# back to triggers after it. Asserts nothing. With CATCHUP=1 the rows are written while no worker
# reads the slot, then one starts: the capture's own pace (decoding, routing, writing), not the
# application's.
#
#   eval "$(tools/devenv env)"; [CATCHUP=1] tools/bench/capture.sh [ROWS] [TXN] [USERS]
set -euo pipefail
ROWS=${1:-200000}
TXN=${2:-1000}
USERS=${3:-100}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
BUILD=${BUILD:-$ROOT/build}
WORKER=$BUILD/backup-worker
CTL=$BUILD/backupctl
export PGOPTIONS="-c synchronous_commit=on"
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
log=$(mktemp /tmp/bw-capbench.XXXXXX)
wpid=""
cleanup() {
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null
  sleep 0.5
  "$CTL" tracking triggers >/dev/null 2>&1 || true
  q "DELETE FROM profiles WHERE email LIKE '%@capbench.test'" >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

"$CTL" tracking wal >/dev/null
q "DELETE FROM profiles WHERE email LIKE '%@capbench.test'" >/dev/null
q "INSERT INTO profiles (id, email) SELECT gen_random_uuid(), 'u' || g || '@capbench.test'
   FROM generate_series(1, $USERS) g" >/dev/null
start() {
  : >"$log"
  BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=${CAPTURE_FLUSH_INTERVAL:-1s} WORKER_HTTP_PORT=0 \
    REDIS_PREFIX=capbench$$ "$WORKER" >"$log" 2>&1 &
  wpid=$!
  for _ in $(seq 200); do grep -q "capture: streaming from" "$log" && break; sleep 0.05; done
  grep -q "capture: streaming from" "$log" || { cat "$log"; echo "the capture did not start" >&2; exit 1; }
}
start
sleep 1
segs0=$(q "SELECT count(*) FROM change_segments")
bytes0=$(q "SELECT coalesce(sum(size), 0) FROM change_segments")
if [ "${CATCHUP:-}" = 1 ]; then
  kill "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=""
  until [ "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'backup_capture' AND active")" = 0 ]; do sleep 0.1; done
else
  wsnd=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'backup_capture'")
  w0=$(ticks "$wpid")
  s0=$(ticks "$wsnd")
fi
t0=$(date +%s.%N)
ntx=$((ROWS / TXN))
{
  echo "CREATE TEMP TABLE u AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM profiles
        WHERE email LIKE '%@capbench.test';"
  for t in $(seq 1 $ntx); do
    echo "INSERT INTO notifications (user_id, type, title, body) SELECT u.id, 'bench',
          'n-$t-' || g, repeat('x', 100) FROM generate_series(1, $TXN) g JOIN u ON u.k = g % $USERS;"
  done
} | psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null
t1=$(date +%s.%N)
lsn=$(q "SELECT pg_current_wal_flush_lsn()")
if [ "${CATCHUP:-}" = 1 ]; then # the clock starts when the worker does
  t0=$(date +%s.%N)
  start
  t1=$t0
  wsnd=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'backup_capture'")
  w0=0
  s0=$(ticks "$wsnd")
fi
until [ "$(q "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'backup_capture'")" = t ]; do
  sleep 0.05
done
t2=$(date +%s.%N)
w1=$(ticks "$wpid")
s1=$(ticks "$wsnd")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$wpid/status")
# commit to durable: a segment's oldest change waited from its commit until the segment was
# recorded (created_at); over the segments of the run, the median and the 99th percentile
lagq=$(q "SELECT coalesce(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 2), 0) || ' ' ||
          coalesce(round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 2), 0)
          FROM (SELECT extract(epoch FROM created_at - first_commit) AS s FROM change_segments
                ORDER BY created_at DESC LIMIT $(($(q "SELECT count(*) FROM change_segments") - segs0))) x")
segs=$(($(q "SELECT count(*) FROM change_segments") - segs0))
bytes=$(($(q "SELECT coalesce(sum(size), 0) FROM change_segments") - bytes0))
awk -v rows="$ROWS" -v txn="$TXN" -v users="$USERS" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
  -v w="$((w1 - w0))" -v s="$((s1 - s0))" -v hz="$HZ" -v rss="$rss" -v segs="$segs" -v bytes="$bytes" \
  -v lag="$lagq" 'BEGIN {
  split(lag, l, " ")
  printf "capture: %d rows in %d transactions over %d tenants\n", rows, rows / txn, users
  if (t1 > t0) printf "  committed in %.2f s (%.0f rows/s); recorded %.2f s after the first commit\n", t1 - t0, rows / (t1 - t0), t2 - t0
  else printf "  written before the worker started; recorded %.2f s after it started\n", t2 - t0
  printf "  capture throughput: %.0f changes/s; lag after the last commit: %.2f s\n", rows / (t2 - t0), t2 - t1
  printf "  commit to recorded, per segment (its oldest change): median %.2f s, p99 %.2f s\n", l[1], l[2]
  printf "  CPU: worker %.2f s (%.1f us/change), walsender %.2f s (%.1f us/change)\n", w / hz, w / hz / rows * 1e6, s / hz, s / hz / rows * 1e6
  printf "  worker peak RSS %.1f MiB; %d segments, %.1f MiB stored\n", rss / 1024, segs, bytes / 1048576
}'
