#!/usr/bin/env bash
# Small tenants: N users of about 78 rows each, backed up at concurrency C by
# backup-worker and by the seed's design (tools/bench/node/seed.mjs:
# node-postgres, JSON.stringify, gzip, one PutObject), in the same run; prints
# backups/s side by side. Then what one small backup costs the worker: S3
# requests (counted by tests/faultproxy.js in front of S3), SQL statements
# (PostgreSQL's log_statement, set for the worker's role during a short run) and
# round trips to PostgreSQL (the worker's bw_pg_round_trips_total: a pipeline of
# several statements is one). And the CPU of one small backup by process (/proc,
# tools/bench/cpu.sh), for both: the client (worker or node), PostgreSQL's processes,
# the local S3 server and Redis, so that what a deployment on real S3 pays (client +
# PostgreSQL) stands apart.
# Asserts nothing.
#
#   (cd tools/bench/node && npm ci)      # the seed design's packages, once
#   eval "$(tools/devenv env)"; tools/bench/small.sh [USERS] [CONCURRENCY] [COUNT_RUN]
#
# USERS (default 2000) are generated once (same seed: a second run reuses them).
set -euo pipefail
N=${1:-2000}
C=${2:-8}
K=${3:-20}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
DEV=${BW_DEV_DIR:-/tmp/backup-worker-dev}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
[ -d "$ROOT/tools/bench/node/node_modules/@aws-sdk" ] || { echo "small bench: run (cd tools/bench/node && npm ci) first" >&2; exit 1; }
P=small$$
tmp=$(mktemp -d /tmp/bw-smallbench.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
admin() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$BW_ADMIN_DATABASE_URL" -c "$1"; }
RHOST=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$REDIS_URL")
RPORT=$(sed -E 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"$REDIS_URL")
export REDISCLI_AUTH=$(sed -E 's#^redis://[^:]*:([^@]*)@.*#\1#' <<<"$REDIS_URL")
rc() { redis-cli -h "$RHOST" -p "$RPORT" -n "$(sed -E 's#^.*/([0-9]+)$#\1#' <<<"$REDIS_URL")" "$@"; }

SEED=small$N
q "SELECT overlay(overlay(md5('$SEED-user-' || n) PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid
   FROM generate_series(1, $N) n ORDER BY n" >"$tmp/users"
if [ "$(q "SELECT count(*) FROM profiles WHERE id IN (SELECT overlay(overlay(md5('$SEED-user-' || n) PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid FROM generate_series(1, $N) n)")" -lt "$N" ]; then
  echo "small bench: generating $N tenants (once)"
  "$ROOT/tools/datagen" --users "$N" --orders 10 --items 3 --products 20 --clients 10 \
    --notifications 5 --seed "$SEED" >/dev/null
fi
rows=$(q "SELECT count(*) FROM orders WHERE user_id = '$(head -1 "$tmp/users")'")
q "VACUUM ANALYZE profiles, businesses, products, clients, orders, order_items, notifications, user_settings, backup_metadata" >/dev/null

source "$ROOT/tests/port.sh"
source "$ROOT/tools/bench/cpu.sh"
# cpu_all [PID]: "client PostgreSQL S3 Redis" ticks now (client: PID, or 0)
cpu_all() { echo "$( [ -n "${1:-}" ] && cpu_pid "$1" || echo 0) $(cpu_pg) $(cpu_s3) $(cpu_redis)"; }
# cpu_row LABEL "before" "after" N [CLIENT_MS]: one row of the CPU table, ms per backup
cpu_row() {
  local -a a b
  read -r -a a <<<"$2"; read -r -a b <<<"$3"
  local cl=${5:-$(cpu_ms $((b[0] - a[0])))} pg s3 rd
  pg=$(cpu_ms $((b[1] - a[1]))); s3=$(cpu_ms $((b[2] - a[2]))); rd=$(cpu_ms $((b[3] - a[3])))
  printf '%-26s %9.2f %11.2f %10.2f %8.2f %14.2f\n' "$1" "$(echo "$cl / $4" | bc -l)" \
    "$(echo "$pg / $4" | bc -l)" "$(echo "$s3 / $4" | bc -l)" "$(echo "$rd / $4" | bc -l)" \
    "$(echo "($cl + $pg) / $4" | bc -l)"
  echo "$(echo "($cl + $pg) / $4" | bc -l)" >"$tmp/cpu-$6"
}
MP=$(free_port)
metric() { curl -s "http://127.0.0.1:$MP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
start_worker() { # LOG VAR=value...: a worker on prefix $P (metrics on $MP), waits for it to consume
  local log=$1; shift
  env REDIS_PREFIX=$P WORKER_HTTP_PORT="$MP" WORKER_CONCURRENCY=$C BACKUP_NOTIFY=false "$@" "$WORKER" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "consuming" "$log" && break; sleep 0.1; done
}
# TAG COUNT: enqueue COUNT backups of the first COUNT users, wait for them; prints the seconds
# from the enqueue to the last backup's completed_at. The wait polls the worker's metric once a
# second: polling every 50 ms with psql (Debian's is a Perl wrapper, plus a new backend per
# call) took ~12 % of this machine's two cores from the worker, curl every 0.1 s ~13 % (perf).
run_jobs() {
  local tag=$1 n=$2 t0 t1 c0
  c0=$(metric 'bw_jobs_completed_total{type="backup"}')
  t0=$(date +%s.%N)
  head -n "$n" "$tmp/users" | awk -v p="$P" -v t="$tag" '{printf "XADD %s:jobs * type backup user_id %s mode full job_id %s-%s-%d\n", p, $1, p, t, NR}' |
    rc >/dev/null
  local deadline=$((SECONDS + 1800))
  until [ "$(metric 'bw_jobs_completed_total{type="backup"}')" -ge $((c0 + n)) ]; do
    ((SECONDS < deadline)) || { echo "small bench: $tag timed out" >&2; exit 1; }
    sleep 1
  done
  local ok
  read -r ok t1 < <(q "SELECT count(*), extract(epoch FROM max(completed_at)) FROM backup_metadata
                        WHERE job_id LIKE '$P-$tag-%' AND status = 'completed'" | tr '|' ' ')
  [ "$ok" -eq "$n" ] || { echo "small bench: $tag: $ok of $n backups completed" >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}

echo "small bench: $N tenants of $(q "SELECT (SELECT count(*) FROM orders WHERE user_id = u) + (SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = u) + (SELECT count(*) FROM products WHERE user_id = u) + (SELECT count(*) FROM clients WHERE user_id = u) + (SELECT count(*) FROM notifications WHERE user_id = u) + 3 FROM (SELECT '$(head -1 "$tmp/users")'::uuid AS u) x") rows ($rows orders), concurrency $C"

# 1. backup-worker
start_worker "$tmp/w1.log"
wpid=${pids[-1]}
sleep 1 # its start (connections, probes) is not a backup's
cw0=$(cpu_all "$wpid")
w_s=$(run_jobs all "$N")
cw1=$(cpu_all "$wpid")
kill "$wpid"; wait "$wpid" 2>/dev/null || true

# 2. the seed's design, the same users (its node process timed by bash: user + sys)
cs0=$(cpu_all)
TIMEFORMAT='%3U %3S'
{ time (cd "$ROOT/tools/bench/node" && NODE_NO_WARNINGS=1 node seed.mjs "$tmp/users" --concurrency "$C" >"$tmp/seed.json"); } 2>"$tmp/seed.time"
cs1=$(cpu_all)
seed=$(cat "$tmp/seed.json")
s_s=$(jq -r .seconds <<<"$seed")
node_ms=$(awk '{printf "%d", ($1 + $2) * 1000}' "$tmp/seed.time")

# 2b. what any design pays PostgreSQL to read these rows: the scope's COPYs alone, each user in
# its own REPEATABLE READ transaction, in one psql session over the first FLOOR users
FLOOR=$((N < 400 ? N : 400))
"${CTL:-$ROOT/build/backupctl}" scope --sql | cut -f2 | sed 's/$/;/' >"$tmp/copies.sql"
{ echo '\o /dev/null'
  head -n "$FLOOR" "$tmp/users" | while read -r u; do
    echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT set_config('backup.user_id', '$u', true), set_config('DateStyle', 'ISO', true);"
    cat "$tmp/copies.sql"
    echo "COMMIT;"
  done; } >"$tmp/floor.sql"
cf0=$(cpu_all)
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$tmp/floor.sql"
sleep 0.5 # its backend reaped: counted in the postmaster's children
cf1=$(cpu_all)

printf '%-40s %8.2f s %8.1f backups/s\n' "backup-worker (WORKER_CONCURRENCY=$C)" "$w_s" "$(echo "$N / $w_s" | bc -l)"
printf '%-40s %8.2f s %8.1f backups/s\n' "seed design (node, $C at a time)" "$s_s" "$(echo "$N / $s_s" | bc -l)"
printf 'ratio: backup-worker does %.2fx the seed design'"'"'s backups/s\n' "$(echo "$s_s / $w_s" | bc -l)"
echo "CPU per backup, ms (/proc; the worker's and PostgreSQL's include their idle work meanwhile):"
printf '%-26s %9s %11s %10s %8s %14s\n' "" client PostgreSQL "S3 server" Redis "client+PG"
cpu_row "backup-worker" "$cw0" "$cw1" "$N" "" w
cpu_row "seed design (node)" "$cs0" "$cs1" "$N" "$node_ms" s
cpu_row "PostgreSQL reading alone" "$cf0" "$cf1" "$FLOOR" 0 f
echo "(reading alone: the scope's COPYs for $FLOOR users from one psql session, no client work:"
echo " the PostgreSQL CPU any design pays for these rows)"
printf 'client+PostgreSQL: backup-worker %.2fx the seed design'"'"'s (goal: at most 0.33)\n' \
  "$(echo "$(cat "$tmp/cpu-w") / $(cat "$tmp/cpu-s")" | bc -l)"

# 3. what one small backup costs the worker: S3 requests and SQL statements, over K backups
: >"$tmp/proxy.log"
node "$ROOT/tests/faultproxy.js" 127.0.0.1 "$(sed -E 's#.*:([0-9]+)$#\1#' <<<"$S3_ENDPOINT")" >"$tmp/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$tmp/proxy.log" && break; sleep 0.1; done
PX=$(awk '/listening/ {print $2}' "$tmp/proxy.log")
admin "ALTER ROLE $(q "SELECT current_user") SET log_statement = 'all'"
pglog=$DEV/postgres.log
before=$(stat -c %s "$pglog")
start_worker "$tmp/w2.log" S3_ENDPOINT="http://127.0.0.1:$PX"
sleep 1 # the worker's own probes, before the count starts
curl -s -X POST "http://127.0.0.1:$PX/__clear" >/dev/null
trips() { metric bw_pg_round_trips_total; }
rt0=$(trips)
stmt0=$(tail -c +"$((before + 1))" "$pglog" | grep -cE 'LOG:  (statement|execute [^:]*):' || true)
run_jobs count "$K" >/dev/null
reqs=$(curl -s "http://127.0.0.1:$PX/__stats" | jq -r .requests)
rt1=$(trips)
stmt1=$(tail -c +"$((before + 1))" "$pglog" | grep -cE 'LOG:  (statement|execute [^:]*):' || true)
admin "ALTER ROLE $(q "SELECT current_user") RESET log_statement"
printf 'one small backup: %.1f S3 requests, %.1f SQL statements in %.1f round trips (over %d backups; the probes every 10 s included)\n' \
  "$(echo "$reqs / $K" | bc -l)" "$(echo "($stmt1 - $stmt0) / $K" | bc -l)" "$(echo "($rt1 - $rt0) / $K" | bc -l)" "$K"
tail -c +"$((before + 1))" "$pglog" | grep -oE 'LOG:  (statement|execute [^:]*): .{0,60}' | sed -E 's/LOG:  (statement|execute [^:]*): //' |
  sort | uniq -c | sort -rn | head -25 >"$tmp/stmts"
echo "statements by kind (over all $K):"; sed 's/^/  /' "$tmp/stmts"
