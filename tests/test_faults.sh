#!/usr/bin/env bash
# test_faults: the worker against a failing S3, with real services and real worker processes
# (CI runs it on the ASan + UBSan build too, where a memory error aborts the worker).
#  1. 403 AccessDenied on UploadPart: the backup fails for good, the worker keeps serving
#  2. 503 on CreateMultipartUpload until the retries run out: the same
#  2b. 403 on CompleteMultipartUpload, on the manifest's PutObject, on a restore's GetObject:
#     each job fails for good naming it, its record says failed, the worker keeps serving
#  3. S3 down for 8 s during two big backups: both complete, the worker keeps serving
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=fa170001-0000-4000-8000-00000000000a
V=fa170002-0000-4000-8000-00000000000b
for u in $U $V; do
  q "DELETE FROM profiles WHERE id = '$u'; DELETE FROM backup_metadata WHERE user_id = '$u'; DELETE FROM change_segments WHERE user_id = '$u'" >/dev/null
  s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$u/"
done
"$ROOT/tools/datagen" --user "$U" --orders 8000 --seed tf1 >/dev/null
"$ROOT/tools/datagen" --user "$V" --orders 8000 --seed tf2 >/dev/null

start_faultproxy "$S3_ENDPOINT"
plan() { curl -s -X POST --data "$1" "http://127.0.0.1:$PX/__plan" >/dev/null; }
alive() { # NAME: the worker process is running and still takes jobs
  local pid; eval "pid=\$PID_$1"
  kill -0 "$pid" 2>/dev/null || return 1
  local j=ping-$RANDOM$RANDOM
  enqueue "$j" type ping
  done_ok "$j" 20
}
refused() { # JOB WHAT: the job ended dead, naming AccessDenied
  done_ok "$1" 60 && bad "$2: the job completed"
  check "$2: the job is dead" dead "$(field "$1" status)"
  expect "…naming AccessDenied ($(field "$1" error))" grep -q "AccessDenied" <<<"$(field "$1" error)"
}
# uncompressed, 5 MiB parts, one in flight: each backup is several parts
W=(S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_COMPRESSION=false S3_PART_SIZE_MB=5 S3_UPLOAD_CONCURRENCY=1
   BACKUP_NOTIFY=false JOB_BACKOFF_BASE=200ms JOB_BACKOFF_MAX=1s)

# ---- 1. 403 on a part ----
P=tf$$a
start_worker w1 "${W[@]}" JOB_MAX_ATTEMPTS=3
plan 'PUT~partNumber=2:403:1'
enqueue tf-deny type backup user_id "$U" mode full
refused tf-deny "403 on UploadPart"
check "…its metadata row failed" failed "$(q "SELECT status FROM backup_metadata WHERE job_id = 'tf-deny'")"
expect "…and the worker keeps serving" alive w1

# ---- 2. 503 on CreateMultipartUpload until the retries run out ----
plan 'POST~uploads:503:1000'
enqueue tf-slow type backup user_id "$U" mode full
done_ok tf-slow 90 && bad "a backup that could never start its upload completed"
check "503 on CreateMultipartUpload: the backup is dead" dead "$(field tf-slow status)"
expect "…naming SlowDown ($(field tf-slow error))" grep -q "SlowDown\|503" <<<"$(field tf-slow error)"
plan ''
expect "…and the worker keeps serving" alive w1

# ---- 2b. permanent refusals at the end of a backup, and of a restore's read ----
plan 'POST~uploadId=:403:1'
enqueue tf-complete type backup user_id "$U" mode full
refused tf-complete "403 on CompleteMultipartUpload"
check "…its metadata row failed" failed "$(q "SELECT status FROM backup_metadata WHERE job_id = 'tf-complete'")"
expect "…and the worker keeps serving" alive w1
plan 'PUT~manifest.json:403:1'
enqueue tf-manifest type backup user_id "$U" mode full
refused tf-manifest "403 on the manifest's PutObject"
check "…its metadata row failed, no checksum recorded" "failed|" \
  "$(q "SELECT status || '|' || coalesce(checksum, '') FROM backup_metadata WHERE job_id = 'tf-manifest'")"
expect "…and the worker keeps serving" alive w1
plan ''
enqueue tf-good type backup user_id "$U" mode full
expect "a backup to restore from completes" done_ok tf-good 60
GOOD=$(field tf-good backup_id)
before=$(q "SELECT md5(string_agg(id::text || coalesce(notes, ''), ',' ORDER BY id)) FROM orders WHERE user_id = '$U'")
q "UPDATE orders SET notes = 'changed after the backup' WHERE user_id = '$U'" >/dev/null
changed=$(q "SELECT md5(string_agg(id::text || coalesce(notes, ''), ',' ORDER BY id)) FROM orders WHERE user_id = '$U'")
plan "GET~$GOOD.json:403:1"
enqueue tf-get type restore user_id "$U" backup_id "$GOOD"
refused tf-get "403 on a restore's GetObject"
check "…its history row failed" failed "$(q "SELECT status FROM restore_history WHERE job_id = 'tf-get'")"
check "…and the user's rows are untouched" "$changed" \
  "$(q "SELECT md5(string_agg(id::text || coalesce(notes, ''), ',' ORDER BY id)) FROM orders WHERE user_id = '$U'")"
plan ''
enqueue tf-get2 type restore user_id "$U" backup_id "$GOOD"
expect "…while the same restore without the fault completes" done_ok tf-get2 60
check "…and puts the rows back" "$before" \
  "$(q "SELECT md5(string_agg(id::text || coalesce(notes, ''), ',' ORDER BY id)) FROM orders WHERE user_id = '$U'")"
expect "…and the worker keeps serving" alive w1
stop_worker w1

# ---- 3. S3 down for 8 s during two big backups ----
P=tf$$c
start_worker w3 "${W[@]}" JOB_MAX_ATTEMPTS=20
plan 'PUT~partNumber=2:stall:2'
enqueue tf-big1 type backup user_id "$U" mode full
enqueue tf-big2 type backup user_id "$V" mode full
expect "an upload is under way" wait_until 60 bash -c "curl -s http://127.0.0.1:$PX/__stats | grep -q '\"faults\":[12]'"
expect "…with both backups running" wait_until 30 bash -c "[ \"\$(R HGET $P:job:tf-big1 status)\$(R HGET $P:job:tf-big2 status)\" = runningrunning ]"
"$BW_DEVENV" kill s3 >/dev/null
curl -s -X POST "http://127.0.0.1:$PX/__cut" >/dev/null
sleep 8
"$BW_DEVENV" start >/dev/null 2>&1
expect "after S3 is back, the first backup completes" done_ok tf-big1 180
expect "…and the second" done_ok tf-big2 180
expect "…and the worker keeps serving" alive w3
stop_worker w3
check "the worker exited cleanly" 0 "$?"

# ---- 4. SIGTERM while S3 stalls: the exit is bounded by the grace, not by S3 ----
P=tf$$d
curl -s -X POST --data 'PUT:stall' "http://127.0.0.1:$PX/__always" >/dev/null
curl -s -X POST "http://127.0.0.1:$PX/__clear" >/dev/null
curl -s -X POST --data 'PUT:stall' "http://127.0.0.1:$PX/__always" >/dev/null
start_worker w4 "${W[@]}" WORKER_SHUTDOWN_GRACE=3s
enqueue tf-term type backup user_id "$U" mode full
expect "a part upload is stalled" wait_until 60 bash -c "curl -s http://127.0.0.1:$PX/__stats | grep -q '\"faults\":[1-9]'"
t0=$(date +%s%N)
stop_worker w4; rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
echo "     exited $ms ms after SIGTERM (grace 3 s)"
expect "SIGTERM with S3 stalled: exit within the grace plus a few seconds" test "$ms" -lt 8000
check "…cleanly" 0 "$rc"
expect "…having handed the job back" grep -q "handing back (shutdown)" "$tmp/w4.log"
curl -s -X POST --data '' "http://127.0.0.1:$PX/__always" >/dev/null
curl -s -X POST "http://127.0.0.1:$PX/__cut" >/dev/null
start_worker w5 "${W[@]}"
expect "…which another worker then completes" done_ok tf-term 120
stop_worker w5

finish
