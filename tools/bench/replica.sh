#!/usr/bin/env bash
# Replica benchmark: the backup benchmark's tenant backed up by backup-worker with a replica
# configured, and the time from each backup's completion (backup_metadata.completed_at) to its
# copy's (replicated_at), next to the AWS CLI copying the same object between the same two
# buckets in the same round. Four set-ups, interleaved round by round:
#   stream-2svc    s3rver -> moto, streamed through the worker;  aws s3 cp - | aws s3 cp -
#   server-s3rver  s3rver -> s3rver, server-side (CopyObject; s3rver computes no SHA-256: the
#                  copy is read back);                           aws s3 cp s3:// s3://
#   stream-s3rver  the same streamed (S3_REPLICA_COPY=stream);   aws s3 cp s3:// s3://
#   server-moto    moto -> moto, server-side (CopyObject, its SHA-256 computed by the service,
#                  nothing read back);                           aws s3 cp s3:// s3://
# Prints the medians and the per-round ratios; asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/replica.sh [ORDERS] [ROUNDS]
#
# Run tools/bench/backup.sh ORDERS first: it makes the tenant.
set -euo pipefail
ORDERS=${1:-200000}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
: "${BW_MOTO_ENDPOINT:?eval \"\$(tools/devenv env)\" first (moto is the second service)}"
U=be0c0000-0000-4000-8000-$(printf '%012d' "$ORDERS")
tmp=$(mktemp -d /tmp/bw-replicabench.XXXXXX)
wpids=()
trap 'for p in "${wpids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
RHOST=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$REDIS_URL")
RPORT=$(sed -E 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"$REDIS_URL")
export REDISCLI_AUTH=$(sed -E 's#^redis://[^:]*:([^@]*)@.*#\1#' <<<"$REDIS_URL")
rc() { redis-cli -h "$RHOST" -p "$RPORT" "$@"; }
[ "$(q "SELECT count(*) FROM profiles WHERE id = '$U'")" = 1 ] ||
  { echo "replica bench: no tenant $U; run tools/bench/backup.sh $ORDERS" >&2; exit 1; }

MB=rbench-moto-$$ SB=rbench-same-$$ MP=rbench-mprim-$$
for b in $MB $MP; do curl -s -f -o /dev/null -X PUT "$BW_MOTO_ENDPOINT/$b"; done
aws --endpoint-url "$S3_ENDPOINT" s3 mb "s3://$SB" >/dev/null
NAMES=(stream-2svc server-s3rver stream-s3rver server-moto)
N=${#NAMES[@]}
CONF_0=(S3_REPLICA_BUCKET=$MB "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" S3_REPLICA_FORCE_PATH_STYLE=true)
CONF_1=(S3_REPLICA_BUCKET=$SB "S3_REPLICA_ENDPOINT=$S3_ENDPOINT" S3_REPLICA_FORCE_PATH_STYLE=true)
CONF_2=("${CONF_1[@]}" S3_REPLICA_COPY=stream)
CONF_3=("S3_ENDPOINT=$BW_MOTO_ENDPOINT" S3_BUCKET=$MP S3_REPLICA_BUCKET=$MB
  "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" S3_REPLICA_FORCE_PATH_STYLE=true)
for i in $(seq 0 $((N - 1))); do
  eval "conf=(\"\${CONF_$i[@]}\")"
  env REDIS_PREFIX=rb$$-$i WORKER_HTTP_PORT=0 BACKUP_NOTIFY=false "${conf[@]}" "$WORKER" >"$tmp/w$i.log" 2>&1 &
  wpids+=($!)
done
for i in $(seq 0 $((N - 1))); do
  for _ in $(seq 100); do grep -q consuming "$tmp/w$i.log" && break; sleep 0.1; done
done

wait_status() { # PREFIX JOB: its final status
  local s
  for _ in $(seq 6000); do
    s=$(rc HGET "$1:job:$2" status)
    [ "$s" = completed ] || [ "$s" = dead ] && break
    sleep 0.05
  done
  echo "$s"
}
peer() { # CONFIG KEY: the AWS CLI's copy of KEY to the other bucket; prints seconds
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$1" = 0 ]; then
    aws --endpoint-url "$S3_ENDPOINT" s3 cp "s3://$S3_BUCKET/$2" - --quiet |
      aws --endpoint-url "$BW_MOTO_ENDPOINT" s3 cp - "s3://$MB/$2.aws" --quiet
  elif [ "$1" = 3 ]; then
    aws --endpoint-url "$BW_MOTO_ENDPOINT" s3 cp "s3://$MP/$2" "s3://$MB/$2.aws" --quiet
  else
    aws --endpoint-url "$S3_ENDPOINT" s3 cp "s3://$S3_BUCKET/$2" "s3://$SB/$2.aws" --quiet
  fi
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'
}
size=""
for r in $(seq "$ROUNDS"); do
  for i in $(seq 0 $((N - 1))); do
    P=rb$$-$i J=rb$$-b$i-$r # job ids name backups: unique across the three
    rc XADD "$P:jobs" '*' type backup user_id "$U" mode full job_id "$J" >/dev/null
    [ "$(wait_status "$P" "$J")" = completed ] || { echo "backup failed: $(rc HGET "$P:job:$J" error)"; exit 1; }
    B=$(rc HGET "$P:job:$J" backup_id)
    [ "$(wait_status "$P" "replicate-$B")" = completed ] ||
      { echo "copy failed: $(rc HGET "$P:job:replicate-$B" error)"; exit 1; }
    lat=$(q "SELECT extract(epoch FROM replicated_at - completed_at)::numeric(10,3) FROM backup_metadata WHERE id = '$B'")
    key=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B'")
    size=$(q "SELECT size FROM backup_metadata WHERE id = '$B'")
    p=$(peer "$i" "$key")
    echo "round $r ${NAMES[$i]}: worker $lat s ($(rc HGET "$P:job:replicate-$B" note)), aws $p s"
    echo "$i $lat $p" >>"$tmp/figures"
  done
done
echo
awk -v size="$size" -v names="${NAMES[*]}" '
  { w[$1] = w[$1] " " $2; a[$1] = a[$1] " " $3; r[$1] = r[$1] " " $2 / $3 }
  function median(s,   v, n, i, j, t) {
    n = split(s, v, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  END {
    n = split(names, nm, " ")
    printf "object: %.1f MiB; medians over the rounds\n", size / 1048576
    printf "%-14s %26s %16s %14s\n", "set-up", "completed -> replicated", "aws cli", "ratio"
    for (i = 0; i < n; i++)
      printf "%-14s %24.2f s %14.2f s %14.2f\n", nm[i + 1], median(w[i]), median(a[i]), median(r[i])
  }' "$tmp/figures"
rc EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do redis.call('DEL', k) end" 0 "rb$$-" >/dev/null
# the records of backups whose objects live in this run's buckets go (a later restore.sh
# takes the tenant's newest full backup, which must be in S3_BUCKET)
q "DELETE FROM backup_metadata WHERE job_id LIKE 'rb$$-%'" >/dev/null
