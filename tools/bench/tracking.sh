#!/usr/bin/env bash
# Change-tracking benchmark: what the application pays for exact incrementals. Three fresh
# databases with the same schema (proto/sql), side by side in one run:
#   none   no tracking (the stamp column stays, its default, triggers and tombstones go)
#   004    the first tracking: a PL/pgSQL row trigger stamping every insert and update, and a
#          row trigger per deleted row writing its tombstone from to_jsonb(OLD)
#   017    the current one (014, then 017): inserts stamped by the column default, updates
#          by the row trigger, tombstones by one statement-level trigger per DELETE
#          (transition table); an item deleted with its order leaves none (017)
# 1. an OLTP mix with pgbench (a new order with three items, a status update, an item update,
#    the order deleted with its items), ROUNDS x SECONDS on each database, alternating;
#    the median transactions/s and its ratio to `none`
# 2. a bulk delete of 100,000 orders with their 300,000 items (ON DELETE CASCADE), on each
# With PARTS=1, two more databases say where 017's cost goes: `stamps` (017 without its
# tombstone triggers: only rows written are stamped) and `deletes` (017 without its stamp
# triggers and default: only deletes are tracked).
# With WAL=1, one more: `wal` (BACKUP_TRACKING=wal: no trigger, no stamp default, the replica
# identities and publication of backup_capture_setup(), and a backup-worker capturing its slot
# into the store for the whole run; needs the built worker, Redis and S3 of tools/devenv). Its
# walsender's CPU (the decoding) is reported apart: read from /proc, per transaction.
# With WAL=all, the replica identity's choices side by side, each with its own worker and slot:
# `wal` (a unique index (owner, key) beside the application's own index on the owner column),
# `walfull` (REPLICA IDENTITY FULL, no index added: deletes and updates log the whole old row),
# `walswap` (the unique index in place of the application's single-column owner index, which it
# serves as well: backupctl tracking wal --replace-owner-indexes). The WAL each writes is shown.
# With CPU=1, PostgreSQL's CPU time is measured instead of the wall clock (perf's task-clock
# on the postmaster and every backend it forks; needs perf and a local PostgreSQL): the mix
# runs TRANSACTIONS at a time on one client, and the bulk delete BULK_ROUNDS times (3). On this
# machine's noisy cores, tps moved +-15 % between rounds of one database; CPU per
# transaction over many short alternating rounds moved +-5 %.
# Prints the figures; asserts nothing.
#
#   eval "$(tools/devenv env)"; [PARTS=1] tools/bench/tracking.sh [SECONDS] [ROUNDS] [CLIENTS]
#   CPU=1 [PARTS=1] tools/bench/tracking.sh [TRANSACTIONS] [ROUNDS]
set -euo pipefail
CPU=${CPU:-}
SECS=${1:-$([ -n "$CPU" ] && echo 1000 || echo 20)}
ROUNDS=${2:-$([ -n "$CPU" ] && echo 15 || echo 3)}
CLIENTS=${3:-4}
BULK_ROUNDS=${BULK_ROUNDS:-$([ -n "$CPU" ] && echo 3 || echo 1)}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${BW_ADMIN_DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
PGBENCH=${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}
tmp=$(mktemp -d /tmp/bw-trackbench.XXXXXX)
base=${BW_ADMIN_DATABASE_URL%/*}
NAMES=(none 004 017)
[ "${PARTS:-}" = 1 ] && NAMES+=(stamps deletes)
[ "${WAL:-}" = 1 ] && NAMES+=(wal)
[ "${WAL:-}" = all ] && NAMES+=(wal walfull walswap)
WORKER=${WORKER:-$ROOT/build/backup-worker}
declare -A wpid wsnd wlast
cleanup() {
  for n in "${!wpid[@]}"; do
    kill "${wpid[$n]}" 2>/dev/null; wait "${wpid[$n]}" 2>/dev/null
    sleep 0.5
    psql -X -q "$base/bw_track_$n" -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'bw_track_$n'" >/dev/null 2>&1 || true
  done
  for n in "${NAMES[@]}"; do psql -X -q "$BW_ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS bw_track_$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
U=7bac0000-0000-4000-8000-000000000001
BULK=7bac0000-0000-4000-8000-000000000002
for n in "${NAMES[@]}"; do
  psql -X -q "$BW_ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS bw_track_$n" -c "CREATE DATABASE bw_track_$n"
  url=$base/bw_track_$n
  for f in "$ROOT"/proto/sql/*.sql; do
    [ "$n" = 004 ] && [[ $(basename "$f") > 014 ]] && continue # 004's triggers: before 014
    psql -X -q -v ON_ERROR_STOP=1 "$url" -f "$f" >/dev/null 2>"$tmp/migrate.err" ||
      { cat "$tmp/migrate.err" >&2; exit 1; }
  done
  # the triggers (and the stamp's default) each variant goes without
  drop=""
  case $n in
    none | wal*) drop="%backup%" ;;
    stamps) drop="%backup_tombstone%|%backup_moved%" ;;
    deletes) drop="%backup_stamp%" ;;
  esac
  if [ -n "$drop" ]; then
    psql -X -q -v ON_ERROR_STOP=1 -v pat="$drop" "$url" >/dev/null <<'SQL'
SELECT set_config('bench.drop', :'pat', false);
DO $$
DECLARE t record; g record;
BEGIN
  FOR t IN SELECT table_name FROM backup_scope LOOP
    FOR g IN SELECT tgname FROM pg_trigger WHERE tgrelid = t.table_name::regclass
             AND tgname LIKE ANY (string_to_array(current_setting('bench.drop'), '|')) LOOP
      EXECUTE format('DROP TRIGGER %I ON %I', g.tgname, t.table_name);
    END LOOP;
    IF current_setting('bench.drop') IN ('%backup%', '%backup_stamp%') THEN
      EXECUTE format('ALTER TABLE %I ALTER COLUMN backup_xid DROP DEFAULT', t.table_name);
    END IF;
  END LOOP;
END $$;
SQL
  fi
  case $n in
    wal) psql -X -q -v ON_ERROR_STOP=1 "$url" -c "SELECT backup_capture_setup()" >/dev/null ;;
    walswap) psql -X -q -v ON_ERROR_STOP=1 "$url" -c "SELECT backup_capture_setup()" \
      -c "SELECT backup_capture_replace_owner_indexes()" >/dev/null ;;
    walfull) psql -X -q -v ON_ERROR_STOP=1 "$url" -c "SELECT backup_capture_setup()" >/dev/null
      psql -X -q -v ON_ERROR_STOP=1 "$url" >/dev/null <<'SQL'
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT table_name FROM backup_scope LOOP
    EXECUTE format('ALTER TABLE %I REPLICA IDENTITY FULL', t.table_name);
    EXECUTE format('DROP INDEX IF EXISTS %I', t.table_name || '_backup_identity');
  END LOOP;
END $$;
SQL
      ;;
  esac
  psql -X -q -v ON_ERROR_STOP=1 "$url" >/dev/null <<SQL
INSERT INTO profiles (id, email, full_name) VALUES ('$U', 'oltp@example.com', 'OLTP'), ('$BULK', 'bulk@example.com', 'Bulk');
INSERT INTO orders (user_id, number, total) SELECT '$U', g, g FROM generate_series(1, 10000) g;
INSERT INTO order_items (order_id, quantity, unit_price) SELECT id, 1, 1 FROM orders, generate_series(1, 3);
VACUUM ANALYZE;
SQL
done

for n in "${NAMES[@]}"; do # each wal variant's capture, running through every round
  [[ $n == wal* ]] || continue
  DATABASE_URL=$base/bw_track_$n BACKUP_TRACKING=wal REDIS_PREFIX=trackbench$$$n WORKER_HTTP_PORT=0 \
    CAPTURE_SLOT=bt_$n "$WORKER" >"$tmp/worker-$n.log" 2>&1 &
  wpid[$n]=$!
  for _ in $(seq 200); do grep -q "capture: streaming from" "$tmp/worker-$n.log" && break; sleep 0.05; done
  grep -q "capture: streaming from" "$tmp/worker-$n.log" || { cat "$tmp/worker-$n.log" >&2; exit 1; }
  wsnd[$n]=$(psql -X -q -t -A "$base/bw_track_$n" -c "SELECT active_pid FROM pg_replication_slots WHERE database = 'bw_track_$n'")
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# wal_ms NAME: its walsender's CPU milliseconds since the last call
wal_ms() {
  local now
  now=$(ticks "${wsnd[$1]}")
  awk -v a="${wlast[$1]:-$now}" -v b="$now" -v hz="$HZ" 'BEGIN {printf "%.1f", (b - a) * 1000 / hz}'
  wlast[$1]=$now
}
# wal_wait URL: until the capture confirmed everything written so far
wal_wait() {
  local lsn
  lsn=$(psql -X -q -t -A "$1" -c "SELECT pg_current_wal_flush_lsn()")
  until [ "$(psql -X -q -t -A "$1" -c "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE database = current_database()")" = t ]; do
    sleep 0.1
  done
}
# WAL bytes written since the last call (cluster-wide: only one database is written at a time)
wal_bytes() {
  local now
  now=$(psql -X -q -t -A "$BW_ADMIN_DATABASE_URL" -c "SELECT pg_current_wal_insert_lsn() - '0/0'")
  awk -v a="${wblast:-$now}" -v b="$now" 'BEGIN {printf "%.0f", b - a}'
  wblast=$now
}

MIX=(-D "uid=$U" -f "$ROOT/tools/bench/oltp_mix.sql")
if [ -n "$CPU" ]; then
  command -v perf >/dev/null || { echo "CPU=1 needs perf" >&2; exit 1; }
  pm=$(psql -X -q -t -A "$BW_ADMIN_DATABASE_URL" -c "SELECT split_part(pg_read_file('postmaster.pid'), E'\n', 1)")
fi
# pg_cpu COMMAND...: PostgreSQL's CPU milliseconds while COMMAND runs
pg_cpu() {
  perf stat -x, -e task-clock -p "$pm" -o "$tmp/perf" -- "$@" >/dev/null 2>&1
  awk -F, '/task-clock/ {printf "%.1f", $1}' "$tmp/perf"
}
# CPU: a first run on each database warms its caches (the first round cost up to 1.5x the rest)
[ -n "$CPU" ] && for n in "${NAMES[@]}"; do
  "$PGBENCH" -n "${MIX[@]}" -c 1 -t 300 "$base/bw_track_$n" >/dev/null 2>&1
done
for r in $(seq "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    if [ -n "$CPU" ]; then # kept as transactions per CPU millisecond, so that more is better as with tps
      [[ $n == wal* ]] && wal_ms "$n" >/dev/null
      wal_bytes >/dev/null
      ms=$(pg_cpu "$PGBENCH" -n "${MIX[@]}" -c 1 -t "$SECS" "$base/bw_track_$n")
      wb=$(wal_bytes)
      echo "$r $n $(awk -v b="$wb" -v t="$SECS" 'BEGIN {printf "%.0f", b / t}')" >>"$tmp/walbytes"
      extra=""
      if [[ $n == wal* ]]; then
        wal_wait "$base/bw_track_$n"
        wms=$(wal_ms "$n")
        echo "$r $n $(awk -v m="$wms" -v t="$SECS" 'BEGIN {printf "%.1f", m * 1000 / t}')" >>"$tmp/walsender"
        extra=" (+ walsender $(awk -v m="$wms" -v t="$SECS" 'BEGIN {printf "%.0f", m * 1000 / t}') us)"
      fi
      echo "round $r $n: $(awk -v m="$ms" -v t="$SECS" 'BEGIN {printf "%.0f", m * 1000 / t}') us of PostgreSQL CPU a transaction$extra"
      echo "$r $n $(awk -v m="$ms" -v t="$SECS" 'BEGIN {printf "%.6f", t / m}')" >>"$tmp/tps"
    else
      tps=$("$PGBENCH" -n "${MIX[@]}" -c "$CLIENTS" -j 2 -T "$SECS" "$base/bw_track_$n" 2>&1 |
        awk '/^tps/ {print $3; exit}')
      echo "round $r $n: $tps tps"
      echo "$r $n $tps" >>"$tmp/tps"
    fi
  done
done

for r in $(seq "$BULK_ROUNDS"); do
  for n in "${NAMES[@]}"; do
    url=$base/bw_track_$n
    psql -X -q -v ON_ERROR_STOP=1 "$url" >/dev/null <<SQL
INSERT INTO orders (user_id, number, total) SELECT '$BULK', g, g FROM generate_series(1, 100000) g;
INSERT INTO order_items (order_id, quantity, unit_price) SELECT id, 1, 1 FROM orders o, generate_series(1, 3) WHERE o.user_id = '$BULK';
VACUUM ANALYZE;
SQL
    del=(psql -X -q -v ON_ERROR_STOP=1 "$url" -c "DELETE FROM orders WHERE user_id = '$BULK'")
    [[ $n == wal* ]] && wal_wait "$url" && wal_ms "$n" >/dev/null
    if [ -n "$CPU" ]; then
      secs=$(awk -v m="$(pg_cpu "${del[@]}")" 'BEGIN {printf "%.3f", m / 1000}')
    else
      t0=$(date +%s.%N)
      "${del[@]}" >/dev/null
      t1=$(date +%s.%N)
      secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    fi
    if [[ $n == wal* ]]; then
      wal_wait "$url"
      echo "bulk round $r $n: the walsender's decoding $(awk -v m="$(wal_ms "$n")" 'BEGIN {printf "%.2f", m / 1000}') s of CPU"
    fi
    [ -n "$CPU" ] && echo "bulk round $r $n: $secs s of PostgreSQL CPU"
    tomb=$(psql -X -q -t -A "$url" -c "SELECT count(*) FROM backup_tombstones")
    echo "$r $n $secs $tomb" >>"$tmp/bulk"
  done
done
echo
awk -v names="${NAMES[*]}" -v cpu="$CPU" 'FNR == NR { v[$2] = v[$2] " " $3; t[$1, $2] = $3; rounds[$1] = 1; next }
  { b[$2] = b[$2] " " $3; bt[$1, $2] = $3; brounds[$1] = 1; tomb[$2] = $4 }
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    if (cpu) {
      printf "%-7s %16s %10s   %24s %10s\n", "", "OLTP mix PG CPU", "vs none", "bulk delete PG CPU", "vs none"
      printf "%-7s %16s %10s   %24s\n", "", "(us/txn, median)", "(if PG-bound)", "(median, median ratio)"
    } else {
      printf "%-7s %16s %10s   %-30s %10s\n", "", "OLTP mix tps", "vs none", "bulk delete 100k orders+items", "vs none"
      printf "%-7s %16s %10s\n", "", "(median)", "(median of per-round ratios)"
    }
    k = split(names, name, " ")
    for (i = 1; i <= k; i++) {
      n = name[i]; rs = ""; bs = ""
      for (r in rounds) rs = rs " " t[r, n] / t[r, "none"]
      for (r in brounds) bs = bs " " bt[r, n] / bt[r, "none"]
      if (cpu)
        printf "%-7s %13.0f us %9.1f%%   %21.2f s %9.2fx   (%d tombstones)\n", n, 1000 / median(v[n]),
          100 * (median(rs) - 1), median(b[n]), median(bs), tomb[n]
      else
        printf "%-7s %16.0f %9.1f%%   %27.2f s %9.2fx   (%d tombstones)\n", n, median(v[n]),
          100 * (median(rs) - 1), median(b[n]), median(bs), tomb[n]
    }
  }' "$tmp/tps" "$tmp/bulk"
med() { # the median of column 3 of the lines of file $1 whose column 2 is $2
  awk -v n="$2" '$2 == n { s = s " " $3 } END { k = split(s, a, " "); for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    printf "%.0f", k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }' "$1"
}
if [ -s "$tmp/walbytes" ]; then
  echo "WAL written by the mix (bytes a transaction, median):"
  for n in "${NAMES[@]}"; do echo "  $n: $(med "$tmp/walbytes" "$n")"; done
fi
[ -s "$tmp/walsender" ] && for n in "${NAMES[@]}"; do
  [[ $n == wal* ]] && echo "$n: the walsender decoding the mix: $(med "$tmp/walsender" "$n") us of CPU a transaction (median), apart from PostgreSQL's above"
done
