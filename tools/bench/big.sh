#!/usr/bin/env bash
# Big-tenant benchmark: one tenant backed up by backup-worker next to its peers, ROUNDS rounds,
# the peers interleaved in each round (this machine is shared and noisy):
#   text COPY    PostgreSQL's COPY text of the scope's tables (what the worker reads) > /dev/null
#   JSON COPY    PostgreSQL's COPY (SELECT row_to_json(...)) of the same rows > /dev/null
#   shell        psql's row_to_json COPY | gzip -1 | aws s3 cp - (to the same S3)
#   seed         the seed's design (tools/bench/node/seed.mjs: node-postgres, JSON.stringify,
#                gzip, one PutObject)
#   worker       a backup job (the job's own started_at to finished_at), one worker for all rounds
#   before       the same with BEFORE_WORKER=path (another build, on its own prefix), when set
#   zstd         this build with BACKUP_COMPRESSION=zstd (gzip is the default, and the bound)
# Prints the median time of each, peak RSS (GNU time; the worker's VmHWM), and the median of the
# per-round ratios the goals are about; the worker's event-loop lag (the gauge sampled every
# 250 ms while it backs up: p99 and max); and the CPU of one backup by process for the worker,
# zstd and the seed (tools/bench/cpu.sh: the client, PostgreSQL, the S3 server, Redis; the
# client + PostgreSQL is what a deployment on real S3 pays). Asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/big.sh [ORDERS] [ROUNDS]   # needs aws and GNU time
set -euo pipefail
ORDERS=${1:-100000}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
CTL=${CTL:-$ROOT/build/backupctl}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
U=be0c0000-0000-4000-8000-$(printf '%012d' "$ORDERS")
P=bbench$$
PORT=${BENCH_HTTP_PORT:-18098}
tmp=$(mktemp -d /tmp/bw-bigbench.XXXXXX)
wpid=""
trap '[ -n "$wpid" ] && kill $wpid 2>/dev/null; rm -rf "$tmp"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
RHOST=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$REDIS_URL")
RPORT=$(sed -E 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"$REDIS_URL")
export REDISCLI_AUTH=$(sed -E 's#^redis://[^:]*:([^@]*)@.*#\1#' <<<"$REDIS_URL")
rc() { redis-cli -h "$RHOST" -p "$RPORT" -n "$(sed -E 's#^.*/([0-9]+)$#\1#' <<<"$REDIS_URL")" "$@"; }
command -v aws >/dev/null || { echo "big bench: needs the aws CLI" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "big bench: needs GNU time (apt-get install time)" >&2; exit 1; }
[ -d "$ROOT/tools/bench/node/node_modules" ] || (cd "$ROOT/tools/bench/node" && npm ci --silent)

have=$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")
if [ "$have" -lt "$ORDERS" ]; then
  echo "big bench: generating a tenant of $ORDERS orders (once)"
  "$ROOT/tools/datagen" --user "$U" --orders "$ORDERS" --items 3 --products $((ORDERS / 20)) \
    --clients $((ORDERS / 20)) --notifications 100 --seed "bench$ORDERS" >/dev/null
fi
q "VACUUM ANALYZE profiles, businesses, products, clients, orders, order_items, notifications, user_settings" >/dev/null
"$CTL" scope --sql | cut -f2 | sed 's/$/;/' >"$tmp/text.sql"
"$CTL" scope --sql --json | cut -f2 | sed 's/$/;/' >"$tmp/json.sql"
echo "$U" >"$tmp/users"

source "$ROOT/tools/bench/cpu.sh"
# cpu_all [PID]: "client PostgreSQL S3 Redis" ticks now (client: PID, or 0)
cpu_all() { echo "$( [ -n "${1:-}" ] && cpu_pid "$1" || echo 0) $(cpu_pg) $(cpu_s3) $(cpu_redis)"; }
cpu_log() { # NAME ROUND "before" "after" [CLIENT_TICKS]: appends "cpu name round c pg s3 redis" (ms)
  local -a a b
  read -r -a a <<<"$3"; read -r -a b <<<"$4"
  echo "cpu $1 $2 $(cpu_ms "${5:-$((b[0] - a[0]))}") $(cpu_ms $((b[1] - a[1]))) $(cpu_ms $((b[2] - a[2]))) $(cpu_ms $((b[3] - a[3])))" >>"$tmp/runs"
}
copy_all() { # SQL_FILE: the statements in one REPEATABLE READ transaction, rows to stdout
  { echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
    echo "SELECT set_config('backup.user_id', '$U', true), set_config('DateStyle', 'ISO', true) \\g /dev/null"
    cat "$1"
    echo "COMMIT;"; } | psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL"
}
timed() { # NAME ROUND command...: appends "name round seconds peak_kB" to $tmp/runs
  local name=$1 r=$2 t0 t1; shift 2
  t0=$(date +%s.%N)
  /usr/bin/time -o "$tmp/time" -f '%M %U %S' "$@"
  t1=$(date +%s.%N)
  echo "$name $r $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}') $(tail -1 "$tmp/time" | cut -d' ' -f1)" >>"$tmp/runs"
}
export -f copy_all
export U DATABASE_URL tmp
# the workers: this build's, and (BEFORE_WORKER=path) another build's on its own prefix, as a peer
declare -A wpids
start_one() { # NAME BINARY PREFIX PORT [VAR=value...]
  local name=$1 bin=$2 pre=$3 port=$4; shift 4
  env REDIS_PREFIX=$pre WORKER_HTTP_PORT=$port BACKUP_NOTIFY=false "$@" "$bin" >"$tmp/$name.log" 2>&1 &
  wpids[$name]=$!
  wpid="$wpid ${wpids[$name]}"
  for _ in $(seq 100); do grep -q "consuming" "$tmp/$name.log" && break; sleep 0.1; done
}
start_one worker "$WORKER" "$P" "$PORT"
[ -n "${BEFORE_WORKER:-}" ] && start_one before "$BEFORE_WORKER" "${P}b" $((PORT + 1))
start_one zstd "$WORKER" "${P}z" $((PORT + 2)) BACKUP_COMPRESSION=zstd
peer_worker() { # NAME ROUND
  local pre=$P port=$PORT s deadline=$((SECONDS + ${BENCH_TIMEOUT:-1800}))
  [ "$1" = before ] && pre=${P}b port=$((PORT + 1))
  [ "$1" = zstd ] && pre=${P}z port=$((PORT + 2))
  local j="bb-$P-$1-$2" c0 c1
  c0=$(cpu_all "${wpids[$1]}")
  rc XADD "$pre:jobs" '*' type backup user_id "$U" mode full job_id "$j" >/dev/null
  while ((SECONDS < deadline)); do
    s=$(rc HGET "$pre:job:$j" status)
    [ "$s" = completed ] || [ "$s" = dead ] && break
    curl -s "127.0.0.1:$port/metrics" | awk '/^bw_event_loop_lag_seconds / {print $2 * 1000}' >>"$tmp/lag-$1"
    # every 0.25 s: a curl and a redis-cli every 50 ms took so much of the two cores that a
    # backup ran 1.8x longer (3.3 s vs 1.8 s, stop 28); the time is the job's own anyway
    sleep 0.25
  done
  c1=$(cpu_all "${wpids[$1]}")
  [ "$s" = completed ] || { echo "big bench: $1's backup failed: $(rc HGET "$pre:job:$j" error)"; exit 1; }
  cpu_log "$1" "$2" "$c0" "$c1"
  local ms=$(($(rc HGET "$pre:job:$j" finished_at) - $(rc HGET "$pre:job:$j" started_at)))
  echo "$1 $2 $(awk -v ms="$ms" 'BEGIN {print ms / 1000}') $(awk '/VmHWM/ {print $2}' "/proc/${wpids[$1]}/status")" >>"$tmp/runs"
}

for r in $(seq "$ROUNDS"); do
  timed text "$r" bash -c 'copy_all "$tmp/text.sql" >/dev/null'
  timed json "$r" bash -c 'copy_all "$tmp/json.sql" >/dev/null'
  timed shell "$r" bash -c "copy_all '$tmp/json.sql' | gzip -1 | aws --endpoint-url '$S3_ENDPOINT' \
    s3 cp - 's3://$S3_BUCKET/bench/$P/shell.json.gz' --quiet"
  peer_worker worker "$r"
  [ -n "${BEFORE_WORKER:-}" ] && peer_worker before "$r"
  peer_worker zstd "$r"
  # the seed design last: the worker that ran right after its 1 GB process was slower, whichever
  # build it was (stop 28: two runs with the builds swapped)
  c0=$(cpu_all)
  timed seed "$r" node "$ROOT/tools/bench/node/seed.mjs" "$tmp/users" --concurrency 1 >/dev/null 2>&1
  c1=$(cpu_all)
  cpu_log seed "$r" "$c0" "$c1" "$(tail -1 "$tmp/time" | awk -v hz="$CPU_HZ" '{printf "%d", ($2 + $3) * hz}')"
  sleep 3
  echo "round $r of $ROUNDS done"
done
kill -TERM $wpid; wait $wpid 2>/dev/null || true; wpid=""
rows=$(rc HGET "$P:job:bb-$P-worker-1" rows)
rc EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do redis.call('DEL', k) end" 0 "$P" >/dev/null

cp "$tmp/runs" "/tmp/bw-bigbench-runs.txt" # the raw figures, kept
for w in worker before zstd; do
  [ -f "$tmp/lag-$w" ] && sort -n "$tmp/lag-$w" | awk -v w="$w" '{ v[NR] = $1 } END {
    i = int(NR * 0.99); if (i < 1) i = 1; printf "lag %s %s %s %d\n", w, v[i], v[NR], NR }' >>"$tmp/runs"
done
awk -v rows="$rows" -v rounds="$ROUNDS" '
function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
$1 == "lag" { lp99[$2] = $3; lmax[$2] = $4; ln[$2] = $5; next }
$1 == "cpu" { for (k = 4; k <= 7; k++) c[$2, k, $3] = $k; cs[$2] = 1; next }
{ s[$1, $2] = $3; if ($4 > rss[$1]) rss[$1] = $4; seen[$1] = 1 }
END {
  printf "tenant: %d rows; %d rounds, peers interleaved in each\n", rows, rounds
  printf "%-44s %10s %12s %13s %13s\n", "", "time (med)", "peak RSS", "worker / it", "zstd / it"
  split("text json shell seed before worker zstd", ps, " ")
  split("PostgreSQL COPY text > /dev/null;PostgreSQL COPY row_to_json > /dev/null;psql row_to_json | gzip -1 | aws s3 cp -;seed design (node-postgres, JSON.stringify);backup-worker (BEFORE_WORKER);backup-worker;backup-worker, BACKUP_COMPRESSION=zstd", names, ";")
  for (k = 1; k <= 7; k++) { p = ps[k]; if (!seen[p]) continue
    for (r = 1; r <= rounds; r++) { t[r] = s[p, r]; q[r] = s["worker", r] / s[p, r]; z[r] = s["zstd", r] / s[p, r] }
    printf "%-44s %9.2fs %9.1f MiB %12.2fx %12.2fx\n", names[k], median(t, rounds), rss[p] / 1024, median(q, rounds), median(z, rounds) }
  printf "(worker / it, zstd / it: the median of the per-round ratios of the time; goals: JSON COPY <= 0.7,\n"
  printf " the shell pipeline <= 0.67 (1.5x faster), the seed design <= 0.2 (5x faster))\n"
  for (w in ln) printf "%s event-loop lag while backing up: p99 %.1f ms, max %.1f ms (%d samples)\n", w, lp99[w], lmax[w], ln[w]
  printf "(peak RSS: the largest process of a pipeline as GNU time sees it; psql for the COPYs)\n"
  printf "CPU of one backup, ms (median of the rounds; /proc):\n%-44s %9s %11s %10s %8s %11s\n", "", "client", "PostgreSQL", "S3 server", "Redis", "client+PG"
  split("worker zstd seed", cp, " ")
  for (k = 1; k <= 3; k++) { p = cp[k]; if (!cs[p]) continue
    for (j = 4; j <= 7; j++) { for (r = 1; r <= rounds; r++) t[r] = c[p, j, r]; m[j] = median(t, rounds) }
    for (r = 1; r <= rounds; r++) t[r] = c[p, 4, r] + c[p, 5, r]; cp_[p] = median(t, rounds)
    printf "%-44s %9d %11d %10d %8d %11d\n", p == "seed" ? "seed design (node)" : p == "zstd" ? "backup-worker, zstd" : "backup-worker", m[4], m[5], m[6], m[7], cp_[p] }
  if (cs["seed"] && cp_["seed"] > 0) printf "client+PostgreSQL: backup-worker %.2fx the seed design'"'"'s\n", cp_["worker"] / cp_["seed"]
}' "$tmp/runs"
q "SELECT s3_key FROM backup_metadata WHERE job_id LIKE 'bb-$P-%' OR (user_id = '$U' AND job_id LIKE 'seed-%')" | while read -r k; do
  aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/$k" --quiet || true
  aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/$k.manifest.json" --quiet 2>/dev/null || true
done
aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/bench/$P/shell.json.gz" --quiet || true
q "DELETE FROM backup_metadata WHERE job_id LIKE 'bb-$P-%' OR (user_id = '$U' AND job_id LIKE 'seed-%')" >/dev/null
