#!/usr/bin/env bash
# Restore benchmark: the backup benchmark's tenant restored by backup-worker from its full
# backup, next to PostgreSQL's own bulk load of the same rows in the same run: one
# transaction that deletes the user's rows and `\copy ... from` a CSV of each table (made
# beforehand with COPY TO; not timed). Both end in the same state. The worker restores in
# three situations, each from the same backup, a full one taken after psql's load:
#   intact    nothing changed since the backup
#   1pct      1 % of the orders changed and 1 % of the items deleted
#   orders    the tenant's orders and items deleted
# Last, the orders and items deleted again and `\copy`d back alone (the floor of the orders
# case). Prints wall times, what the restore changed, and the ratios to psql, then the CPU of
# the orders case by process (tools/bench/cpu.sh) next to PostgreSQL's for the \copy alone;
# asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/restore.sh [ORDERS]
#
# Run tools/bench/backup.sh ORDERS first: it makes the tenant and a full backup of it.
set -euo pipefail
ORDERS=${1:-200000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
U=be0c0000-0000-4000-8000-$(printf '%012d' "$ORDERS")
P=rbench$$
tmp=$(mktemp -d /tmp/bw-restorebench.XXXXXX)
wpid=""
trap '[ -n "$wpid" ] && kill "$wpid" 2>/dev/null; [ -n "${BENCH_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
source "$ROOT/tools/bench/cpu.sh"
RHOST=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$REDIS_URL")
RPORT=$(sed -E 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"$REDIS_URL")
export REDISCLI_AUTH=$(sed -E 's#^redis://[^:]*:([^@]*)@.*#\1#' <<<"$REDIS_URL")
rc() { redis-cli -h "$RHOST" -p "$RPORT" "$@"; }

B=$(q "SELECT id FROM backup_metadata WHERE user_id = '$U' AND type = 'full' AND status = 'completed'
       ORDER BY created_at DESC LIMIT 1")
[ -n "$B" ] || { echo "restore bench: no full backup of $U; run tools/bench/backup.sh $ORDERS" >&2; exit 1; }
TABLES="profiles businesses products clients orders order_items notifications user_settings"
filter() {
  case $1 in
    profiles) echo "id = '$U'" ;;
    businesses) echo "owner_id = '$U'" ;;
    order_items) echo "order_id IN (SELECT id FROM orders WHERE user_id = '$U')" ;;
    *) echo "user_id = '$U'" ;;
  esac
}
cols() { q "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = '$1'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'backup_xid'"; }
rows=0
for t in $TABLES; do
  q "\\copy (SELECT $(cols "$t") FROM $t WHERE $(filter "$t")) TO '$tmp/$t.csv' (FORMAT csv)"
  rows=$((rows + $(q "SELECT count(*) FROM $t WHERE $(filter "$t")")))
done

# PostgreSQL's own bulk load: delete the user's rows, \copy them back, in one transaction
{ echo "BEGIN;"
  echo "SELECT set_config('backup.restoring', 'on', true) \\g /dev/null"
  for t in $(echo "$TABLES" | tr ' ' '\n' | tac); do echo "DELETE FROM $t WHERE $(filter "$t");"; done
  for t in $TABLES; do echo "\\copy $t ($(cols "$t")) FROM '$tmp/$t.csv' (FORMAT csv)"; done
  echo "COMMIT;"; } >"$tmp/load.sql"
t0=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$tmp/load.sql" >/dev/null
t1=$(date +%s.%N)

env REDIS_PREFIX=$P WORKER_HTTP_PORT=0 "$WORKER" >"$tmp/worker.log" 2>&1 &
wpid=$!
for _ in $(seq 100); do grep -q "consuming" "$tmp/worker.log" && break; sleep 0.1; done
job() { # JOB_ID FIELDS...: run one job to its end
  local j=$1 s
  shift
  rc XADD "$P:jobs" '*' "$@" job_id "$j" >/dev/null
  deadline=$((SECONDS + ${BENCH_TIMEOUT:-1800}))
  while ((SECONDS < deadline)); do
    s=$(rc HGET "$P:job:$j" status)
    [ "$s" = completed ] || [ "$s" = dead ] && break
    sleep 0.05
  done
  [ "$s" = completed ] || { echo "$j failed: $(rc HGET "$P:job:$j" error)"; exit 1; }
}
restore() { # NAME: one restore of B, timed; appends "NAME seconds note" to the figures
  local t2 t3
  t2=$(date +%s.%N)
  job "$P-$1" type restore user_id "$U" backup_id "$B"
  t3=$(date +%s.%N)
  echo "$1 $(awk -v a="$t2" -v b="$t3" 'BEGIN {printf "%.2f", b - a}') $(rc HGET "$P:job:$P-$1" note)" >>"$tmp/figures"
}
# psql's load left every old row version dead: cleared now, as autovacuum would within a minute
# (else the first scans of each session pay for pruning them, whoever runs them)
q "VACUUM (ANALYZE) profiles, businesses, products, clients, orders, order_items, notifications,
   user_settings, backup_tombstones" >/dev/null
# psql rewrote every row: a full backup now is what "intact" means (nothing changed since it);
# an older backup would see every row as written since its snapshot
job "$P-full" type backup user_id "$U" mode full
B=$(rc HGET "$P:job:$P-full" backup_id)
# the tombstones older than that backup, as retention purges them (every run deletes the
# tenant's orders and items three times: unpurged, they grew past 3 million rows here and
# slowed every delete and every listing of the changed keys, whoever ran it)
q "SELECT backup_tombstones_purge('$U')" >/dev/null
restore intact
q "UPDATE orders SET notes = coalesce(notes, '') || ' (changed)' WHERE user_id = '$U' AND number % 100 = 7;
   DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$U' AND number % 100 = 11)" >/dev/null
restore 1pct
q "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$U');
   DELETE FROM orders WHERE user_id = '$U'" >/dev/null
read -r w0 g0 s0 <<<"$(cpu_pid "$wpid") $(cpu_pg) $(cpu_s3)"
restore orders
read -r w1 g1 s1 <<<"$(cpu_pid "$wpid") $(cpu_pg) $(cpu_s3)"
# PostgreSQL's own load of those rows alone, in the same situation: orders and items deleted
# (committed, not vacuumed), then \copy'd back in one transaction
q "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$U');
   DELETE FROM orders WHERE user_id = '$U'" >/dev/null
{ echo "BEGIN;"
  echo "SELECT set_config('backup.restoring', 'on', true) \\g /dev/null"
  for t in orders order_items; do echo "\\copy $t ($(cols "$t")) FROM '$tmp/$t.csv' (FORMAT csv)"; done
  echo "COMMIT;"; } >"$tmp/orders.sql"
g2=$(cpu_pg)
t4=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$tmp/orders.sql" >/dev/null
t5=$(date +%s.%N)
g3=$(cpu_pg)
kill -TERM "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=""
rc EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':*')) do redis.call('DEL', k) end" 0 "$P" >/dev/null
awk -v rows="$rows" -v a="$t0" -v b="$t1" -v c="$t4" -v d="$t5" 'BEGIN {
  printf "tenant: %d rows\n", rows
  printf "%-34s %8.2f s  %9.0f rows/s\n", "psql: delete + \\copy from CSV", b - a, rows / (b - a)
  printf "%-34s %8.2f s\n", "psql: \\copy of orders + items alone", d - c
}
{ note = $0; sub(/^[^ ]+ [^ ]+ /, "", note)
  printf "%-34s %8.2f s  ratio %.2f", "backup-worker restore, " $1, $2, $2 / (b - a)
  if ($1 == "orders") printf " (%.2f of the \\copy alone)", $2 / (d - c)
  printf "   %s\n", note }' "$tmp/figures"
echo "CPU, ms: the orders case: worker $(cpu_ms $((w1 - w0))), PostgreSQL $(cpu_ms $((g1 - g0))), S3 server $(cpu_ms $((s1 - s0))); psql's \\copy of those rows alone: PostgreSQL $(cpu_ms $((g3 - g2)))"
