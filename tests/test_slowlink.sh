#!/usr/bin/env bash
# test_slowlink: S3 over a link that stops, through the fault proxy: a request that moves
# nothing is cut after S3_STALL_TIMEOUT and retried, and the backup completes. (A link that is
# slow but keeps moving, a request of over a minute at 100 KB/s that no fixed cap may cut, is
# tools/bench/slowlink.sh: over a minute by design, out of CI.)
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=5104a001-0000-4000-8000-00000000000a
q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_metadata WHERE user_id = '$U'; DELETE FROM change_segments WHERE user_id = '$U'" >/dev/null
s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$U/"
"$ROOT/tools/datagen" --user "$U" --orders 4800 --seed ts1 >/dev/null

start_faultproxy "$S3_ENDPOINT"
ctl() { curl -s -X POST --data "$2" "http://127.0.0.1:$PX/$1" >/dev/null; }

P=ts$$
# uncompressed in 8 MiB parts: the whole object (about 6.7 MB) is one PutObject
W=(S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_COMPRESSION=false S3_PART_SIZE_MB=8 BACKUP_NOTIFY=false
   JOB_MAX_ATTEMPTS=2)
ctl __clear ''
ctl __plan 'PUT~/backups/:stall:1' # the object's PutObject (its manifest comes after it)
start_worker w2 "${W[@]}" S3_STALL_TIMEOUT=3s
t0=$SECONDS
enqueue sl-stalled type backup user_id "$U" mode full
expect "a stalled upload is cut after S3_STALL_TIMEOUT (3 s) and sent again" done_ok sl-stalled 60
took=$((SECONDS - t0))
expect "…well before the proxy's own 20 s cut ($took s)" test "$took" -lt 18
check "…the stalled request was the only fault" '"faults":1' "$(curl -s "http://127.0.0.1:$PX/__stats" | grep -o '"faults":[0-9]*')"
stop_worker w2

finish
