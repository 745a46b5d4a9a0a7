#!/usr/bin/env bash
# test_outage: dependencies that go away for 25 s, longer than every retry budget (the S3
# client's attempts and backoff, PostgreSQL's connect timeout, the queue's retry delays)
# (release build only: it takes minutes by design). An outage (connection refused or lost) does not use a job's attempts: jobs wait
# for the service, the worker reads no new job while it is down (/readyz false), and resumes.
#  1. PostgreSQL killed for 25 s while 20 backups run: all complete, none dead, nothing left
#     running in backup_metadata, no job used more attempts than JOB_MAX_ATTEMPTS allows
#  2. S3 killed for 25 s while 20 backups run: the same
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

users=()
for i in $(seq 10 49); do users+=("0a7a0000-0000-4000-8000-0000000000$i"); done
ids=$(printf "'%s'," "${users[@]}"); ids=${ids%,}
q "DELETE FROM profiles WHERE id IN ($ids); DELETE FROM backup_metadata WHERE user_id IN ($ids); DELETE FROM change_segments WHERE user_id IN ($ids)" >/dev/null
q "INSERT INTO profiles (id, email) SELECT u::uuid, u || '@outage.example' FROM unnest(ARRAY[$ids]) u" >/dev/null
for i in $(seq 0 39); do
  q "INSERT INTO orders (user_id, number, total) SELECT '${users[$i]}', n, n FROM generate_series(1, 3000) n" >/dev/null
done

# The development cluster runs with synchronous_commit off, which loses the last commits when
# its processes are killed: for this test a commit the worker saw must survive the kill
admin() { psql -X -q -v ON_ERROR_STOP=1 "$BW_ADMIN_DATABASE_URL" -c "$1" >/dev/null; }
admin "ALTER SYSTEM SET synchronous_commit = on"
admin "SELECT pg_reload_conf()"
restore_conf() { admin "ALTER SYSTEM RESET synchronous_commit" && admin "SELECT pg_reload_conf()"; }

port=$(free_port)
P=to$$
# JOB_MAX_ATTEMPTS=2: an outage that used attempts would kill these jobs
start_worker w1 WORKER_CONCURRENCY=8 JOB_MAX_ATTEMPTS=2 WORKER_HTTP_PORT=$port BACKUP_NOTIFY=false
if ! grep -q "consuming $P:jobs" "$tmp/w1.log"; then # say why at once, not after every wait
  cat "$tmp/w1.log"
  restore_conf
  exit 1
fi
readyz() { curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/readyz"; }

outage() { # NAME SERVICE FIRST_USER: 20 backups, SERVICE down 25 s, every backup completes
  local name=$1 svc=$2 from=$3 i
  # ten under way when the service goes, ten more enqueued while it is down
  for i in $(seq "$from" $((from + 9))); do
    enqueue "$name-$i" type backup user_id "${users[$i]}" mode full
  done
  "$BW_DEVENV" kill "$svc" >/dev/null
  for i in $(seq $((from + 10)) $((from + 19))); do
    enqueue "$name-$i" type backup user_id "${users[$i]}" mode full
  done
  expect "$name: the worker says it is not ready while $svc is down" wait_until 20 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$port/readyz) = 503 ]"
  sleep 22 # (plus the wait above for /readyz to say so)
  "$BW_DEVENV" start >/dev/null 2>&1
  local done_all=1
  for i in $(seq "$from" $((from + 19))); do
    done_ok "$name-$i" 120 || { done_all=0; bad "$name-$i: $(field "$name-$i" status) $(field "$name-$i" error)"; }
  done
  check "$name: all 20 backups completed" 1 "$done_all"
  expect "$name: ready again" wait_until 20 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$port/readyz) = 200 ]"
  check "$name: none used more than one attempt" 0 \
    "$(for i in $(seq "$from" $((from + 19))); do field "$name-$i" attempts; done | awk '$1 > 1' | wc -l)"
}
outage to-pg postgres 0
outage to-s3 s3 20
check "nothing left running or pending in backup_metadata" 0 \
  "$(q "SELECT count(*) FROM backup_metadata WHERE user_id IN ($ids) AND status NOT IN ('completed')")"
expect "the outages reached running jobs (they waited, as the same attempt)" grep -q "stopped by an outage" "$tmp/w1.log"
check "one completed backup per job" 40 \
  "$(q "SELECT count(DISTINCT job_id) FROM backup_metadata WHERE user_id IN ($ids) AND status = 'completed'")"
stop_worker w1
restore_conf
q "DELETE FROM profiles WHERE id IN ($ids)" >/dev/null

finish
