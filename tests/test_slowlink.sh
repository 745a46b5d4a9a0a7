#!/usr/bin/env bash
# test_slowlink: S3 over a link that stops, through the fault proxy: a request that moves
# nothing is cut after S3_STALL_TIMEOUT and retried, and the backup completes.
# With a second argument `soak` (tools/bench/slowlink.sh; over a minute by design, out of CI)
# instead a link that is slow but keeps moving: at 100 KB/s a backup whose one request takes
# over a minute completes (no fixed cap per request: a 60 s cap failed every attempt of it), and
# its status says the bytes stored while it runs.
WORKER=$1
MODE=${2:-stall}
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
# uncompressed in 8 MiB parts: the whole object (about 6.7 MB) is one PutObject. On loopback
# the kernel takes megabytes of the body into socket buffers at once, and curl then sees no
# progress while the proxy drains them at 100 KB/s: the soak's stall timeout must outlast that
W=(S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_COMPRESSION=false S3_PART_SIZE_MB=8 BACKUP_NOTIFY=false
   JOB_MAX_ATTEMPTS=2)
if [ "$MODE" = soak ]; then
  start_worker w1 "${W[@]}" S3_STALL_TIMEOUT=150s
  ctl __rate 100000
  t0=$SECONDS
  enqueue sl-slow type backup user_id "$U" mode full
  expect "while it runs, its status says the bytes stored so far (issue 29: 0 until done)" wait_until 120 \
    bash -c "[ \"\$(R HGET '$P:job:sl-slow' status)\" = running ] && [ \"\$(R HGET '$P:job:sl-slow' bytes)\" -gt 0 ]"
  expect "at 100 KB/s the backup completes ($(field sl-slow error))" done_ok sl-slow 180
  took=$((SECONDS - t0))
  echo "     took $took s"
  expect "…though its upload took over a minute" test "$took" -gt 60
  KEY=$(q "SELECT s3_key FROM backup_metadata WHERE job_id = 'sl-slow' AND user_id = '$U'")
  check "…in one attempt of each request" '"faults":0' "$(curl -s "http://127.0.0.1:$PX/__stats" | grep -o '"faults":[0-9]*')"
  check "…the object is whole" "$(q "SELECT checksum FROM backup_metadata WHERE job_id = 'sl-slow' AND user_id = '$U'")" \
    "$(s3 s3 cp "s3://$S3_BUCKET/$KEY" - | sha256sum | cut -d' ' -f1)"
  stop_worker w1
  ctl __rate 0
else
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
fi

finish
