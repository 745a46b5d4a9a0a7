#!/usr/bin/env bash
# Codec benchmark: the tenant of tools/bench/backup.sh backed up by backup-worker with gzip,
# zstd, gzip + aes-256-gcm and zstd + aes-256-gcm, side by side: ROUNDS rounds, the four
# configurations interleaved in each round (this machine is shared and noisy), one worker per
# backup. Prints, per configuration, the median backup time (the job's own started_at to
# finished_at) and the stored size, then the median of the per-round ratios that the goals
# are about: encryption's cost over the same compression, and zstd's time and size over gzip.
# Asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/codecs.sh [ORDERS] [ROUNDS]
set -euo pipefail
ORDERS=${1:-200000}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
U=be0c0000-0000-4000-8000-$(printf '%012d' "$ORDERS")
P=cbench$$
tmp=$(mktemp -d /tmp/bw-codecbench.XXXXXX)
wpid=""
trap '[ -n "$wpid" ] && kill "$wpid" 2>/dev/null; rm -rf "$tmp"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
RHOST=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$REDIS_URL")
RPORT=$(sed -E 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"$REDIS_URL")
export REDISCLI_AUTH=$(sed -E 's#^redis://[^:]*:([^@]*)@.*#\1#' <<<"$REDIS_URL")
rc() { redis-cli -h "$RHOST" -p "$RPORT" -n "$(sed -E 's#^.*/([0-9]+)$#\1#' <<<"$REDIS_URL")" "$@"; }

have=$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")
if [ "$have" -lt "$ORDERS" ]; then
  echo "codec bench: generating a tenant of $ORDERS orders (once)"
  "$ROOT/tools/datagen" --user "$U" --orders "$ORDERS" --items 3 --products $((ORDERS / 20)) \
    --clients $((ORDERS / 20)) --notifications 100 --seed "bench$ORDERS" >/dev/null
fi
KEYS="bench:$(head -c 32 /dev/urandom | base64)"
CONFIGS="gzip zstd gzip-aes zstd-aes" # job ids allow no "+"

one() { # CONFIG ROUND: one backup; appends "config round ms bytes" to $tmp/runs
  local c=$1 r=$2 j="cb-$P-$1-$2" env=(REDIS_PREFIX=$P WORKER_HTTP_PORT=0 BACKUP_NOTIFY=false)
  env+=("BACKUP_COMPRESSION=${c%-aes}")
  [[ $c == *-aes ]] && env+=("BACKUP_ENCRYPTION_KEYS=$KEYS")
  env "${env[@]}" "$WORKER" >"$tmp/worker.log" 2>&1 &
  wpid=$!
  for _ in $(seq 100); do grep -q "consuming" "$tmp/worker.log" && break; sleep 0.1; done
  rc XADD "$P:jobs" '*' type backup user_id "$U" mode full job_id "$j" >/dev/null
  local s deadline=$((SECONDS + ${BENCH_TIMEOUT:-1800}))
  while ((SECONDS < deadline)); do
    s=$(rc HGET "$P:job:$j" status)
    [ "$s" = completed ] || [ "$s" = dead ] && break
    sleep 0.2
  done
  [ "$s" = completed ] || { echo "codec bench: $c failed: $(rc HGET "$P:job:$j" error)"; exit 1; }
  echo "$c $r $(($(rc HGET "$P:job:$j" finished_at) - $(rc HGET "$P:job:$j" started_at))) $(rc HGET "$P:job:$j" bytes)" >>"$tmp/runs"
  kill -TERM "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=""
}
for r in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do one "$c" "$r"; done
  echo "round $r of $ROUNDS done"
done
rc EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':*')) do redis.call('DEL', k) end" 0 "$P" >/dev/null
rows=$(q "SELECT sum(value::bigint) FROM backup_metadata, jsonb_each_text(row_counts) WHERE job_id = 'cb-$P-gzip-1'")

awk -v rows="$rows" -v rounds="$ROUNDS" '
function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ ms[$1, $2] = $3; by[$1, $2] = $4 }
END {
  printf "tenant: %d rows; %d rounds, configurations interleaved in each\n", rows, rounds
  printf "%-18s %10s %14s\n", "codecs", "time (med)", "stored"
  split("gzip zstd gzip-aes zstd-aes", cs, " ")
  for (k = 1; k <= 4; k++) { c = cs[k]; for (r = 1; r <= rounds; r++) t[r] = ms[c, r] / 1000
    printf "%-18s %9.2fs %11.1f MiB\n", c == "gzip-aes" ? "gzip+aes-256-gcm" : c == "zstd-aes" ? "zstd+aes-256-gcm" : c, median(t, rounds), by[c, 1] / 1048576 }
  for (r = 1; r <= rounds; r++) { a[r] = ms["gzip-aes", r] / ms["gzip", r]; b[r] = ms["zstd-aes", r] / ms["zstd", r]; z[r] = ms["zstd", r] / ms["gzip", r] }
  printf "encryption over gzip: %+.1f%% time (median of per-round ratios); over zstd: %+.1f%%\n", (median(a, rounds) - 1) * 100, (median(b, rounds) - 1) * 100
  printf "zstd over gzip: %.2fx the time, %.2fx the size\n", median(z, rounds), by["zstd", 1] / by["gzip", 1]
  printf "encryption adds %d bytes to a gzip object (%.3f%%)\n", by["gzip-aes", 1] - by["gzip", 1], (by["gzip-aes", 1] - by["gzip", 1]) * 100 / by["gzip", 1]
}' "$tmp/runs"
# the bench's own backups go (they are big): objects, manifests, records
q "SELECT s3_key FROM backup_metadata WHERE job_id LIKE 'cb-$P-%'" | while read -r k; do
  aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/$k" --quiet
  aws --endpoint-url "$S3_ENDPOINT" s3 rm "s3://$S3_BUCKET/$k.manifest.json" --quiet
done
q "DELETE FROM backup_metadata WHERE job_id LIKE 'cb-$P-%'" >/dev/null
