#!/usr/bin/env bash
# slowlink: S3 over a slow link that keeps moving, through the fault proxy: at 100 KB/s a
# backup whose one request takes over a minute completes (no fixed cap per request: a 60 s cap
# failed every attempt of it), and its status says the bytes stored while it runs. Over a
# minute by design, so a benchmark, not in CI (tests/test_slowlink.sh checks the stall cut).
#   tools/bench/slowlink.sh build/backup-worker   (services up: tools/devenv start; env)
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/../../tests/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=5104a001-0000-4000-8000-00000000000a
q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_metadata WHERE user_id = '$U'" >/dev/null
s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$U/"
"$ROOT/tools/datagen" --user "$U" --orders 4800 --seed ts1 >/dev/null

start_faultproxy "$S3_ENDPOINT"
ctl() { curl -s -X POST --data "$2" "http://127.0.0.1:$PX/$1" >/dev/null; }

P=ts$$
# uncompressed in 8 MiB parts: the whole object (about 6.7 MB) is one PutObject. On loopback
# the kernel takes megabytes of the body into socket buffers at once, and curl then sees no
# progress while the proxy drains them at 100 KB/s: the stall timeout must outlast that
W=(S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_COMPRESSION=false S3_PART_SIZE_MB=8 BACKUP_NOTIFY=false
   JOB_MAX_ATTEMPTS=2)
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

finish
