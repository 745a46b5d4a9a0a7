#!/usr/bin/env bash
# Backup benchmark: one big tenant backed up by backup-worker, next to PostgreSQL
# itself doing the same reads (the scope's COPY statements into /dev/null, and
# into gzip -1) in the same run. Prints wall time, rows/s, raw and stored MiB/s,
# the worker's peak RSS (sampled every 0.1 s), its event-loop lag (max, from
# /metrics) while ping jobs run beside the backup, and their latency. Asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/backup.sh [ORDERS] [SAMPLES]
#
# ORDERS (default 200000) orders of 3 items, plus 5% as many products and clients.
# The tenant is generated once (same seed: a second run reuses it).
set -euo pipefail
ORDERS=${1:-200000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
CTL=${CTL:-$ROOT/build/backupctl}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
U=be0c0000-0000-4000-8000-$(printf '%012d' "$ORDERS")
PORT=${BENCH_HTTP_PORT:-18099}
P=bench$$
tmp=$(mktemp -d /tmp/bw-backupbench.XXXXXX)
wpid=""
trap '[ -n "$wpid" ] && kill "$wpid" 2>/dev/null; rm -rf "$tmp"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
# redis-cli 7.0 reads redis://:pass@ as user "": give it host, port, password and db apart
RHOST=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$REDIS_URL")
RPORT=$(sed -E 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"$REDIS_URL")
export REDISCLI_AUTH=$(sed -E 's#^redis://[^:]*:([^@]*)@.*#\1#' <<<"$REDIS_URL")
rc() { redis-cli -h "$RHOST" -p "$RPORT" -n "$(sed -E 's#^.*/([0-9]+)$#\1#' <<<"$REDIS_URL")" "$@"; }
rc PING >/dev/null || { echo "backup bench: Redis unreachable" >&2; exit 1; }

have=$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")
if [ "$have" -lt "$ORDERS" ]; then
  echo "backup bench: generating a tenant of $ORDERS orders (once)"
  "$ROOT/tools/datagen" --user "$U" --orders "$ORDERS" --items 3 --products $((ORDERS / 20)) \
    --clients $((ORDERS / 20)) --notifications 100 --seed "bench$ORDERS" >/dev/null
fi
q "VACUUM ANALYZE profiles, businesses, products, clients, orders, order_items, notifications, user_settings" >/dev/null

# PostgreSQL alone: the same COPY statements, in one REPEATABLE READ transaction
copy_all() { # SINK command
  { echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
    echo "SELECT set_config('backup.user_id', '$U', true) \\g /dev/null"
    "$CTL" scope --sql --json | cut -f2 | sed 's/$/;/'
    echo "COMMIT;"; } | psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" | "$@"
}
t0=$(date +%s.%N); copy_all cat >/dev/null; t1=$(date +%s.%N)
raw=$(copy_all wc -c)
t2=$(date +%s.%N); copy_all gzip -1 >/dev/null; t3=$(date +%s.%N)

# the worker, with ping jobs beside the backup
env REDIS_PREFIX=$P WORKER_HTTP_PORT=$PORT BACKUP_NOTIFY=false "$WORKER" >"$tmp/worker.log" 2>&1 &
wpid=$!
for _ in $(seq 100); do grep -q "consuming" "$tmp/worker.log" && break; sleep 0.1; done
rc XADD "$P:jobs" '*' type backup user_id "$U" mode full job_id "bench-$P" >/dev/null
start=$(date +%s.%N)
peak=0 pings=0
deadline=$((SECONDS + ${BENCH_TIMEOUT:-1800}))
while ((SECONDS < deadline)); do
  s=$(rc HGET "$P:job:bench-$P" status)
  [ "$s" = completed ] || [ "$s" = dead ] && break
  r=$(ps -o rss= -p "$wpid" | tr -d ' ')
  [ "${r:-0}" -gt "$peak" ] && peak=$r
  rc XADD "$P:jobs" '*' type ping job_id "ping$pings" >/dev/null
  pings=$((pings + 1))
  sleep 0.1
done
end=$(date +%s.%N)
[ "$s" = completed ] || { echo "backup failed: $(rc HGET "$P:job:bench-$P" error)"; exit 1; }
lag=$(curl -s "localhost:$PORT/metrics" | awk '/^bw_event_loop_lag_max_seconds/ {print $2 * 1000}')
lat=$(rc EVAL "local t = {} for i = 0, tonumber(ARGV[2]) - 1 do
    local h = redis.call('HMGET', ARGV[1] .. ':job:ping' .. i, 'created_at', 'finished_at')
    if h[1] and h[2] then t[#t + 1] = tonumber(h[2]) - tonumber(h[1]) end end
  table.sort(t) if #t == 0 then return 'none' end
  return t[math.ceil(#t * 0.5)] .. ' ' .. t[math.ceil(#t * 0.99)] .. ' ' .. #t" 0 "$P" "$pings")
rows=$(rc HGET "$P:job:bench-$P" rows)
stored=$(rc HGET "$P:job:bench-$P" bytes)
kill -TERM "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=""
rc EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':*')) do redis.call('DEL', k) end" 0 "$P" >/dev/null

awk -v rows="$rows" -v raw="$raw" -v st="$stored" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
    -v s="$start" -v e="$end" -v peak="$peak" -v lag="$lag" -v lat="$lat" \
    -v store="$(case "${BACKUP_STORE:-s3}" in file://*) echo "to files" ;; *) echo "to S3" ;; esac)" 'BEGIN {
  mib = 1048576; w = e - s
  printf "tenant: %d rows, %.1f MiB of JSON, %.1f MiB stored (gzip)\n", rows, raw / mib, st / mib
  printf "%-34s %7.2f s  %9.0f rows/s  %7.1f MiB/s raw\n", "PostgreSQL COPY > /dev/null", b - a, rows / (b - a), raw / mib / (b - a)
  printf "%-34s %7.2f s  %9.0f rows/s  %7.1f MiB/s raw\n", "PostgreSQL COPY | gzip -1", d - c, rows / (d - c), raw / mib / (d - c)
  printf "%-34s %7.2f s  %9.0f rows/s  %7.1f MiB/s raw\n", "backup-worker (" store ", polled 0.1 s)", w, rows / w, raw / mib / w
  split(lat, l, " ")
  printf "worker peak RSS %.1f MiB; loop lag max %.1f ms; pings beside it: p50 %s ms, p99 %s ms (%s)\n", peak / 1024, lag, l[1], l[2], l[3]
}'
