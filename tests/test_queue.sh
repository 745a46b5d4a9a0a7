#!/usr/bin/env bash
# test_queue: the queue engine against the real Redis, with real worker
# processes: jobs from redis-cli (flat and msgpack), status hash, events and
# pub/sub, retries and dead letters, duplicates, hostile entries, 10,000 pings
# across 3 workers exactly once, kill -9 takeover, a Redis restart mid-run,
# SIGTERM with jobs in flight, and one job per user at a time.
# Every case uses its own REDIS_PREFIX; every wait is bounded.
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL BW_DEVENV
U1=0b7d7c1e-4a2b-4c3d-8e9f-0123456789ab
U2=11111111-2222-4333-8444-555555555555

# ---- 1. flat and msgpack jobs, status hash, events, pub/sub ----
P=tq$$a
timeout 20 redis-cli -h "$RHOST" -p "$RPORT" SUBSCRIBE "$P:progress:$U1" >"$tmp/sub.log" &
sub=$!
pids+=("$sub")
start_worker w1
R XADD "$P:jobs" '*' type ping job_id ping-1 >/dev/null
R XADD "$P:jobs" '*' type sleep ms 600 user_id "$U1" job_id flat-1 trigger manual >/dev/null
# msgpack {"type":"sleep","user_id":U1,"ms":300,"job_id":"mp-1"} (300 as a positive fixint is 0xcd 0x01 0x2c)
printf '\x84\xa4type\xa5sleep\xa7user_id\xd9\x24%s\xa2ms\xcd\x01\x2c\xa6job_id\xa4mp-1' "$U1" |
  R -x XADD "$P:jobs" '*' msgpack >/dev/null
expect "ping completes" wait_until 10 status_is ping-1 completed
expect "flat job completes" wait_until 10 status_is flat-1 completed
expect "msgpack job completes" wait_until 10 status_is mp-1 completed
expect "status hash: type, user, attempts, progress" bash -c \
  "[ '$(field flat-1 type)' = sleep ] && [ '$(field flat-1 user_id)' = $U1 ] && [ '$(field flat-1 attempts)' = 1 ] && [ '$(field flat-1 progress)' = 100 ]"
expect "status hash: timestamps and worker" bash -c \
  "[ -n '$(field flat-1 started_at)' ] && [ -n '$(field flat-1 finished_at)' ] && [ -n '$(field flat-1 worker)' ] && [ -n '$(field flat-1 created_at)' ]"
expect "status hash expires (retention)" bash -c "[ \$(R PTTL '$P:job:flat-1') -gt 0 ]"
R XRANGE "$P:events" - + >"$tmp/events"
expect "events: started, progress, completed" bash -c \
  "grep -qx started '$tmp/events' && grep -qx progress '$tmp/events' && grep -qx completed '$tmp/events'"
expect "pub/sub subscriber got the JSON events" wait_until 5 grep -q '"event":"completed".*\|"job_id":"mp-1"' "$tmp/sub.log"
expect "pub/sub: progress event with stage" grep -q '"stage":"sleeping"' "$tmp/sub.log"
kill "$sub" 2>/dev/null

# ---- 2. retries with backoff, permanent failures, attempts exhausted ----
R XADD "$P:jobs" '*' type sleep ms 10 fail retryable fail_attempts 2 job_id r-ok >/dev/null
R XADD "$P:jobs" '*' type sleep ms 10 fail permanent job_id r-perm >/dev/null
R XADD "$P:jobs" '*' type sleep ms 10 fail retryable job_id r-dead >/dev/null
expect "retryable failure retried, then completed" wait_until 15 status_is r-ok completed
expect "  ... on attempt 3" test "$(field r-ok attempts)" = 3
expect "permanent failure: dead at once" wait_until 10 status_is r-perm dead
expect "  ... after 1 attempt" test "$(field r-perm attempts)" = 1
expect "always failing: dead after JOB_MAX_ATTEMPTS (5)" wait_until 20 status_is r-dead dead
expect "  ... 5 attempts, reason says so" bash -c "[ '$(field r-dead attempts)' = 5 ] && R HGET '$P:job:r-dead' error | grep -q 'gave up after 5 attempts'"
R XRANGE "$P:dead" - + >"$tmp/dead"
expect "dead letters keep the original fields and the reason" bash -c \
  "grep -qx r-perm '$tmp/dead' && grep -qx r-dead '$tmp/dead' && grep -q 'asked to fail (permanent)' '$tmp/dead' && ! grep -qx r-ok '$tmp/dead'"
expect "retrying status shows in events" bash -c "R XRANGE '$P:events' - + | grep -qx retrying"

# ---- 3. the same job_id twice runs once ----
R XADD "$P:jobs" '*' type sleep ms 300 job_id dup-1 >/dev/null
R XADD "$P:jobs" '*' type sleep ms 300 job_id dup-1 >/dev/null
expect "duplicate job_id: completed" wait_until 10 status_is dup-1 completed
sleep 0.5
expect "  ... run once" test "$(field dup-1 attempts)" = 1
expect "  ... events: one start, one duplicate" bash -c \
  "[ $(count_events dup-1 started) = 1 ] && [ $(count_events dup-1 duplicate) = 1 ]"

# ---- 4. hostile entries: dead-lettered with a reason, the worker keeps serving ----
before=$(R XLEN "$P:dead")
R XADD "$P:jobs" '*' user_id "$U1" >/dev/null                               # no type
R XADD "$P:jobs" '*' type explode >/dev/null                                 # unknown type
R XADD "$P:jobs" '*' type backup user_id not-a-uuid >/dev/null               # bad UUID
R XADD "$P:jobs" '*' type backup user_id "$U1" "$(head -c 70000 /dev/zero | tr '\0' f)" x >/dev/null # huge field name
head -c 300 /dev/urandom | R -x XADD "$P:jobs" '*' type >/dev/null         # binary garbage
printf '\x92\xa4type\xa4ping' | R -x XADD "$P:jobs" '*' msgpack >/dev/null   # msgpack array
head -c 1100000 /dev/zero | tr '\0' a | R -x XADD "$P:jobs" '*' type ping user_id >/dev/null # 1 MB value
printf '\xdf\xff\xff\xff\xff' | R -x XADD "$P:jobs" '*' msgpack >/dev/null # a map of 4 billion entries
printf 'victim-job\0xyz' | R -x XADD "$P:jobs" '*' type ping job_id >/dev/null # a NUL in the job id
R XADD "$P:jobs" '*' type ping job_id after-hostile >/dev/null
expect "a good job after hostile entries still runs" wait_until 10 status_is after-hostile completed
dead_count_is() { [ "$(R XLEN "$P:dead")" = "$1" ]; }
expect "9 hostile entries in the dead-letter stream" wait_until 5 dead_count_is $((before + 9))
R XRANGE "$P:dead" - + >"$tmp/dead"
for why in "missing field 'type'" "'explode' is not a job type" "'not-a-uuid' is not a UUID" \
  "is not part of a backup job" "is not a job type" "must hold a map" "larger than 1048576 bytes" \
  "declares 8589934590 elements" "field 'job_id'"; do
  expect "dead letter reason: $why" grep -qF "$why" "$tmp/dead"
done
expect "worker 1 still up" kill -0 "$PID_w1"
check "the NUL job id ran as no other job" "" "$(R HGET "$P:job:victim-job" status)"

# ---- operators: backupctl ping, jobs, dead ls / retry / drop ----
export REDIS_PREFIX=$P
expect "backupctl ping: a worker answers" bash -c "'$CTL' ping | grep -q '^pong from '"
"$CTL" jobs >"$tmp/jobs.out"; rc=$?
expect "backupctl jobs lists the group and this worker" bash -c \
  "[ $rc = 0 ] && grep -q 'group backup-workers: 1 consumers' '$tmp/jobs.out' && grep -q \"$(hostname):$PID_w1\" '$tmp/jobs.out'"
expect "backupctl dead ls shows reasons" bash -c "'$CTL' dead ls 50 | grep -q \"'not-a-uuid' is not a UUID\""
# a letter whose job can run now: retry puts its original fields back on the stream
dl=$(R XADD "$P:dead" '*' type ping job_id revived-1 entry 1-1 error "was broken" attempts 5 failed_at 0)
R HSET "$P:job:revived-1" status dead attempts 5 >/dev/null
"$CTL" dead retry "$dl" >"$tmp/retry.out"; rc=$?
expect "backupctl dead retry re-enqueues" bash -c "[ $rc = 0 ] && grep -q 'job revived-1' '$tmp/retry.out'"
expect "  ... and the job runs afresh (attempt 1)" wait_until 10 status_is revived-1 completed
expect "  ... attempts start over" test "$(field revived-1 attempts)" = 1
expect "  ... the letter left the dead stream" test -z "$(R XRANGE "$P:dead" "$dl" "$dl")"
dl=$(R XADD "$P:dead" '*' type ping job_id doomed error x)
expect "backupctl dead drop removes a letter" bash -c "'$CTL' dead drop '$dl' >/dev/null && [ -z \"\$(R XRANGE '$P:dead' '$dl' '$dl')\" ]"
expect "backupctl dead drop of an unknown id exits 1" bash -c "'$CTL' dead drop 1-1 >/dev/null 2>&1; [ \$? = 1 ]"
expect "backupctl dead retry of a malformed id exits 2" bash -c "'$CTL' dead retry nope >/dev/null 2>&1; [ \$? = 2 ]"
unset REDIS_PREFIX
expect "nothing left pending" test "$(R XPENDING "$P:jobs" backup-workers | head -1)" = 0
expect "SIGTERM: exit 0" stop_worker w1
expect "clean exit left the group" bash -c "! grep -q \"$(hostname):$PID_w1\" <(R XINFO CONSUMERS '$P:jobs' backup-workers)"

# ---- 5. 10,000 pings across 3 workers, each completed exactly once ----
P=tq$$b
N=10000
for i in $(seq 1 $N); do echo "XADD $P:jobs * type ping job_id p$i"; done | R >/dev/null
start_worker a WORKER_CONCURRENCY=8
start_worker b WORKER_CONCURRENCY=8
start_worker c WORKER_CONCURRENCY=8
count_completed() {
  R EVAL "local n = 0 for i = 1, tonumber(ARGV[2]) do if redis.call('HGET', ARGV[1] .. ':job:p' .. i, 'status') == 'completed' then n = n + 1 end end return n" 0 "$P" "$N"
}
all_pings_done() { [ "$(count_completed)" = $N ]; }
t0=$EPOCHREALTIME
expect "10,000 pings completed" wait_until 120 all_pings_done
echo "     10,000 pings took $(awk "BEGIN { printf \"%.2f\", $EPOCHREALTIME - $t0 }") s on 3 workers"
check_once() {
  R EVAL "
    local runs, bad = {}, 0
    local ev = redis.call('XRANGE', ARGV[1] .. ':events', '-', '+')
    for _, e in ipairs(ev) do
      local f = e[2] local t = {}
      for i = 1, #f, 2 do t[f[i]] = f[i + 1] end
      if t.event == 'started' then runs[t.job_id] = (runs[t.job_id] or 0) + 1 end
    end
    for i = 1, tonumber(ARGV[2]) do
      if runs['p' .. i] ~= 1 or redis.call('HGET', ARGV[1] .. ':job:p' .. i, 'attempts') ~= '1' then bad = bad + 1 end
    end
    return bad" 0 "$P" "$N"
}
expect "  ... each started exactly once (events and attempts)" test "$(check_once)" = 0
for w in a b c; do
  n=$(grep -c "completed in" "$tmp/$w.log")
  echo "     worker $w completed $n"
  expect "  ... worker $w did a share" test "$n" -gt 0
done
for w in a b c; do stop_worker $w; done
expect "  ... no entry left pending" test "$(R XPENDING "$P:jobs" backup-workers | head -1)" = 0

# ---- 6. kill -9 of a worker holding jobs: taken over, none lost ----
P=tq$$c
start_worker k1 WORKER_CONCURRENCY=2
R XADD "$P:jobs" '*' type sleep ms 4000 job_id k-1 >/dev/null
R XADD "$P:jobs" '*' type sleep ms 4000 job_id k-2 >/dev/null
expect "two long jobs running on k1" wait_until 10 bash -c "[ \"\$(R HGET $P:job:k-2 status)\" = running ] && [ \"\$(R HGET $P:job:k-1 status)\" = running ]"
kill -9 "$PID_k1"; wait "$PID_k1" 2>/dev/null
t0=$SECONDS
start_worker k2 WORKER_CONCURRENCY=2
expect "k2 takes both over and completes them" wait_until 30 bash -c "[ \"\$(R HGET $P:job:k-1 status)\" = completed ] && [ \"\$(R HGET $P:job:k-2 status)\" = completed ]"
echo "     takeover and completion after $((SECONDS - t0)) s (visibility 3 s, jobs 4 s)"
expect "  ... run twice (attempts 2), by k2" bash -c "[ '$(field k-1 attempts)' = 2 ] && grep -q 'taking over entry' '$tmp/k2.log'"
stop_worker k2 >/dev/null

# ---- 6b. the fresh worker starts after the lease lapsed: its sweep claims the entries, and
# its first read of its own pending list (id 0) returns them too: each must run once ----
P=tq$$t
start_worker t1 WORKER_CONCURRENCY=3
for i in 1 2 3; do R XADD "$P:jobs" '*' type sleep ms 3000 job_id t-$i >/dev/null; done
expect "three long jobs running on t1" wait_until 10 bash -c "[ \"\$(R HGET $P:job:t-1 status)\$(R HGET $P:job:t-2 status)\$(R HGET $P:job:t-3 status)\" = runningrunningrunning ]"
kill -9 "$PID_t1"; wait "$PID_t1" 2>/dev/null
sleep 3.5 # past JOB_VISIBILITY_TIMEOUT: claimable at the new worker's first sweep
start_worker t2 WORKER_CONCURRENCY=4
expect "t2 takes the three over and completes them" wait_until 30 bash -c "[ \"\$(R HGET $P:job:t-1 status)\$(R HGET $P:job:t-2 status)\$(R HGET $P:job:t-3 status)\" = completedcompletedcompleted ]"
for i in 1 2 3; do
  check "  ... t-$i started once by t2" 1 "$(grep -c "job t-$i\] started" "$tmp/t2.log")"
  check "  ... t-$i attempts 2" 2 "$(field t-$i attempts)"
done
stop_worker t2 >/dev/null

# ---- 7. SIGTERM with jobs in flight ----
P=tq$$d
start_worker g1 WORKER_CONCURRENCY=2
R XADD "$P:jobs" '*' type sleep ms 1000 job_id g-short >/dev/null
expect "short job running" wait_until 10 status_is g-short running
t0=$SECONDS
stop_worker g1; rc=$?
expect "SIGTERM while a short job runs: it finishes, exit 0" bash -c "[ $rc = 0 ] && [ '$(field g-short status)' = completed ]"
start_worker g2 WORKER_CONCURRENCY=2 WORKER_SHUTDOWN_GRACE=500ms
R XADD "$P:jobs" '*' type sleep ms 20000 job_id g-long >/dev/null
expect "long job running" wait_until 10 status_is g-long running
t0=$SECONDS
stop_worker g2; rc=$?
expect "SIGTERM with a long job: exit 0 within a few seconds" bash -c "[ $rc = 0 ] && [ $((SECONDS - t0)) -le 5 ]"
expect "  ... handed back: queued, attempt not counted" bash -c "[ '$(field g-long status)' = queued ] && [ '$(field g-long attempts)' = 0 ]"
start_worker g3 WORKER_CONCURRENCY=2
expect "  ... another worker takes it at once" wait_until 8 status_is g-long running
stop_worker g3 >/dev/null

# ---- 8. one job per user at a time, across two processes ----
P=tq$$e
# l1 runs the user's first job with its only slot; the rest arrive once l2 reads too, so both
# processes hold jobs of the user (which worker takes an entry is otherwise up to Redis)
start_worker l1 WORKER_CONCURRENCY=1
R XADD "$P:jobs" '*' type sleep ms 1500 user_id "$U1" job_id u-1 >/dev/null
wait_until 10 status_is u-1 running || bad "the first job of the user did not start"
start_worker l2 WORKER_CONCURRENCY=4
for i in 2 3 4 5 6; do R XADD "$P:jobs" '*' type sleep ms 300 user_id "$U1" job_id u-$i >/dev/null; done
R XADD "$P:jobs" '*' type sleep ms 300 user_id "$U2" job_id other >/dev/null
expect "six jobs of one user all complete" wait_until 40 bash -c "for i in 1 2 3 4 5 6; do [ \"\$(R HGET $P:job:u-\$i status)\" = completed ] || exit 1; done"
for i in 1 2 3 4 5 6; do echo "$(field u-$i started_at) $(field u-$i finished_at)"; done | sort -n >"$tmp/intervals"
# started_at and finished_at are each worker's clock when it prepared the script call, not when
# Redis ran it: a START prepared just before the other worker's FINISH ran can read a
# millisecond or two earlier than it. Two of these 300 ms jobs really running at once would
# overlap by far more than 50 ms.
echo "     closest start after the previous end: $(awk 'NR > 1 { g = $1 - prev; if (NR == 2 || g < m) m = g } { prev = $2 } END { print m }' "$tmp/intervals") ms"
expect "  ... never overlapping" awk 'NR > 1 && $1 < prev - 50 { exit 1 } { prev = $2 }' "$tmp/intervals"
expect "  ... spread over both workers" bash -c "grep -q 'started sleep' '$tmp/l1.log' && grep -q 'started sleep' '$tmp/l2.log'"
expect "  ... waiting did not count as attempts" bash -c "for i in 1 2 3 4 5 6; do [ \"\$(R HGET $P:job:u-\$i attempts)\" = 1 ] || exit 1; done"
expect "another user's job was not held up" test "$(field other status)" = completed
stop_worker l1 >/dev/null
stop_worker l2 >/dev/null

# ---- 9. Redis restarted (AOF) mid-run: every job completes ----
P=tq$$f
start_worker r1 WORKER_CONCURRENCY=4
for i in $(seq 1 200); do echo "XADD $P:jobs * type sleep ms 50 job_id s$i"; done | R >/dev/null
wait_until 10 status_is s20 completed
"$BW_DEVENV" restart redis >/dev/null 2>&1 || bad "devenv restart redis"
count_done() {
  R EVAL "local n = 0 for i = 1, 200 do if redis.call('HGET', ARGV[1] .. ':job:s' .. i, 'status') == 'completed' then n = n + 1 end end return n" 0 "$P"
}
all_200_done() { [ "$(count_done)" = 200 ]; }
expect "all 200 jobs complete across the restart" wait_until 60 all_200_done
expect "the worker saw Redis go and come back" grep -q "lost Redis" "$tmp/r1.log"
stop_worker r1 >/dev/null

# a persistent Redis error (here the stream's key of another type; a cluster's MOVED alike): the
# group is asked for again with backoff, and the error logged once, not every 100 ms (issue 29)
G=tq$$g
R SET "$G:jobs" not-a-stream >/dev/null
env REDIS_PREFIX="$G" WORKER_HTTP_PORT=0 "$WORKER" >"$tmp/g.log" 2>&1 &
gpid=$!
pids+=("$gpid")
sleep 3
check "a persistent error creating the group is logged once in 3 s" 1 "$(grep -c 'cannot create consumer group' "$tmp/g.log")"
R DEL "$G:jobs" >/dev/null
expect "…and the worker consumes once it is gone" wait_until 15 grep -q "consuming $G:jobs" "$tmp/g.log"
kill -TERM "$gpid"; wait "$gpid" 2>/dev/null

for w in "$tmp"/*.log; do
  if grep -q "AddressSanitizer\|runtime error" "$w"; then bad "sanitizer report in $(basename "$w")"; cat "$w"; fi
done
# leave Redis tidy
R EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do redis.call('DEL', k) end" 0 "tq$$" >/dev/null
finish
