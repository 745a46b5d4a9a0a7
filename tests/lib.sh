# lib.sh: the one preamble of the shell tests (sourced first; set WORKER/CTL before, from the
# script's arguments). ok/bad/expect/check count results in files, so a check run inside
# $(...) or a pipeline still counts; finish prints the totals and fails the script when a
# check failed or none ran; a script that ends without finish fails too. needs VAR... names
# the environment a test requires; wait_until polls with a deadline; R talks to the test
# Redis (REDIS_URL taken apart for redis-cli 7.0); start_worker runs a worker on prefix $P
# logging to $tmp/NAME.log; every process started is killed on exit.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEST_NAME=$(basename "$0" .sh)
tmp=$(mktemp -d)
: >"$tmp/.passed"
: >"$tmp/.failed"
fails=0
passed=0
finished=0
ok() { echo "ok   $1"; echo >>"$tmp/.passed"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; echo >>"$tmp/.failed"; fails=$((fails + 1)); }
expect() { # name command...
  local name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}
check() { # name expected actual
  if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: expected '$2', got '$3'"; fi
}
needs() { # VAR...: the environment this test requires
  local v
  for v in "$@"; do
    [ -n "${!v:-}" ] || { echo "FAIL $TEST_NAME needs $v: run it through tools/devenv test"; exit 1; }
  done
}
# finish: the totals; 1 when a check failed or none ran
finish() {
  fails=$(wc -l <"$tmp/.failed")
  passed=$(wc -l <"$tmp/.passed")
  finished=1
  echo "$TEST_NAME: $passed passed, $fails failed"
  if [ "$passed" -eq 0 ] && [ "$fails" -eq 0 ]; then echo "FAIL $TEST_NAME ran no check"; return 1; fi
  [ "$fails" -eq 0 ]
}
pids=()
on_exit_hooks=() # commands a test adds to run at exit, before the processes are killed
cleanup() {
  local rc=$? h
  for h in "${on_exit_hooks[@]}"; do eval "$h"; done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  if [ "$rc" -eq 0 ] && [ "$finished" -eq 0 ]; then
    echo "FAIL $TEST_NAME ended without finish (its checks were not counted)"
    rc=1
  fi
  if [ -s "$tmp/.failed" ]; then # what the workers said, for the CI log
    for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "---- $f"; tail -25 "$f"; }; done
  fi
  [ -n "${BW_KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

# redis-cli 7.0 reads redis://:pass@ as user "": pass host, port, password and db apart
# (rediss://, lane.sh --tls-redis: over TLS, trusting REDIS_CA_FILE)
RHOST=$(sed -E 's#^rediss?://([^@]*@)?([^:/]+).*#\2#' <<<"${REDIS_URL:-redis://127.0.0.1:6379/0}")
RPORT=$(sed -E 's#^rediss?://([^@]*@)?[^:/]+:([0-9]+).*#\2#' <<<"${REDIS_URL:-redis://127.0.0.1:6379/0}")
RPASS=$(sed -nE 's#^rediss?://[^:@/]*:([^@]*)@.*#\1#p' <<<"${REDIS_URL:-redis://127.0.0.1:6379/0}")
RDB=$(sed -E 's#^.*/([0-9]+)$#\1#' <<<"${REDIS_URL:-redis://127.0.0.1:6379/0}")
[[ "$RDB" =~ ^[0-9]+$ ]] || RDB=0
RTLS_STR=""
[[ "${REDIS_URL:-}" == rediss://* ]] && RTLS_STR="--tls${REDIS_CA_FILE:+ --cacert $REDIS_CA_FILE}"
export REDISCLI_AUTH=$RPASS
R() { redis-cli $RTLS_STR -h "$RHOST" -p "$RPORT" -n "$RDB" "$@"; }
export -f R
export RHOST RPORT RDB RTLS_STR

# wait_until SECONDS command...: poll every 0.1 s; 1 on timeout
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.1
  done
}
field() { R HGET "$P:job:$1" "$2"; }
count_events() { # JOB_ID EVENT: how many such events the stream holds
  R EVAL "local n = 0
    for _, e in ipairs(redis.call('XRANGE', ARGV[1] .. ':events', '-', '+')) do
      local t = {} for i = 1, #e[2], 2 do t[e[2][i]] = e[2][i + 1] end
      if t.job_id == ARGV[2] and t.event == ARGV[3] then n = n + 1 end
    end return n" 0 "$P" "$1" "$2"
}
status_is() { [ "$(field "$1" status)" = "$2" ]; }

# start_worker NAME [VAR=value...]: a worker on prefix $P, logging to $tmp/NAME.log
start_worker() {
  local name=$1; shift
  env REDIS_PREFIX="$P" WORKER_HTTP_PORT=0 WORKER_TEST_JOBS=true JOB_VISIBILITY_TIMEOUT=3s \
    JOB_BACKOFF_BASE=100ms JOB_BACKOFF_MAX=400ms WORKER_SHUTDOWN_GRACE=10s "$@" \
    "$WORKER" >"$tmp/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  eval "PID_$name=$pid"
  wait_until 10 grep -q "consuming $P:jobs" "$tmp/$name.log" ||
    { bad "worker $name did not start"; tail -5 "$tmp/$name.log"; }
}

source "$(dirname "${BASH_SOURCE[0]}")/port.sh" # free_port
stop_worker() { # NAME: SIGTERM, wait, return the exit code
  local pid; eval "pid=\$PID_$1"
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
}


# start_faultproxy ENDPOINT: tests/faultproxy.js in front of ENDPOINT's port; sets PX to its port
start_faultproxy() {
  local up log
  up=$(sed -E 's#.*:([0-9]+)$#\1#' <<<"$1")
  log="$tmp/proxy-$up-$RANDOM.log"
  node "$(dirname "${BASH_SOURCE[0]}")/faultproxy.js" 127.0.0.1 "$up" >"$log" 2>&1 &
  pids+=($!)
  wait_until 10 grep -q listening "$log" || bad "the fault proxy did not start"
  PX=$(awk '/listening/ {print $2}' "$log")
}

# ---- jobs and the database (needs DATABASE_URL, S3_ENDPOINT, P) ----
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
s3() { aws --endpoint-url "$S3_ENDPOINT" "$@"; }
enqueue() { # JOB_ID field value...
  local id=$1; shift
  R XADD "$P:jobs" '*' job_id "$id" "$@" >/dev/null
}
# done_ok JOB: wait for the job to end; 0 if completed
done_ok() {
  wait_until "${2:-60}" bash -c "s=\$(R HGET '$P:job:$1' status); [ \"\$s\" = completed ] || [ \"\$s\" = dead ]"
  [ "$(field "$1" status)" = completed ]
}
filter() { # TABLE USER: the WHERE condition of the user's rows
  case $1 in
    profiles) echo "id = '$2'" ;;
    businesses) echo "owner_id = '$2'" ;;
    order_items) echo "order_id IN (SELECT id FROM orders WHERE user_id = '$2')" ;;
    *) echo "user_id = '$2'" ;;
  esac
}
# ---- the store the worker writes: S3 (the aws CLI), or with BACKUP_STORE=file://DIR (a lane
# option: tests/lane.sh --file-store) that directory. Tests reach objects only through these. ----
STORE_DIR=""
case "${BACKUP_STORE:-s3}" in file://*) STORE_DIR=${BACKUP_STORE#file://} ;; esac
on_s3() { [ -z "$STORE_DIR" ]; }
s3_only() { # WHAT: say so when a section needs S3 itself (multipart uploads, the request log)
  on_s3 || { echo "skip (S3 only, the store is $BACKUP_STORE): $1"; return 1; }
}
store_cat() { # KEY: the object's bytes on stdout
  if on_s3; then s3 s3 cp "s3://$S3_BUCKET/$1" - --quiet; else cat "$STORE_DIR/$1"; fi
}
store_get() { # KEY FILE
  if on_s3; then s3 s3 cp "s3://$S3_BUCKET/$1" "$2" --quiet; else cp "$STORE_DIR/$1" "$2"; fi
}
store_put() { # FILE KEY
  if on_s3; then s3 s3 cp "$1" "s3://$S3_BUCKET/$2" --quiet
  else mkdir -p "$(dirname "$STORE_DIR/$2")" && cp "$1" "$STORE_DIR/$2"; fi
}
store_mv() { # KEY NEWKEY
  if on_s3; then s3 s3 mv "s3://$S3_BUCKET/$1" "s3://$S3_BUCKET/$2" --quiet
  else mv "$STORE_DIR/$1" "$STORE_DIR/$2"; fi
}
store_rm_prefix() { # DIR/: every object under it
  if on_s3; then s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/$1"; else rm -rf "${STORE_DIR:?}/$1"; fi
}
store_exists() { # KEY: yes or no
  if on_s3; then s3 s3api head-object --bucket "$S3_BUCKET" --key "$1" >/dev/null 2>&1
  else [ -f "$STORE_DIR/$1" ]; fi && echo yes || echo no
}
store_keys() { # DIR/: the keys under it, in order, separated by spaces
  if on_s3; then
    s3 s3api list-objects-v2 --bucket "$S3_BUCKET" --prefix "$1" --query 'Contents[].Key' --output text | tr '\t' ' '
  else
    (cd "$STORE_DIR" && find "$1" -type f ! -name '.*' 2>/dev/null | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
  fi
}

# fresh_user UUID...: nothing of these users left from an earlier run (rows, records, objects)
fresh_user() {
  local u
  for u in "$@"; do
    q "DELETE FROM profiles WHERE id = '$u'; DELETE FROM backup_metadata WHERE user_id = '$u';
       DELETE FROM restore_history WHERE user_id = '$u'; DELETE FROM change_segments WHERE user_id = '$u'" >/dev/null
    store_rm_prefix "backups/$u/"
  done
}
# capture_off: a test of change capture (BACKUP_TRACKING=wal) leaves its lane as the others expect
# it: its workers killed, tracking back to triggers, the slot dropped once no walsender holds it
# (an idle one would hold WAL for the rest of the run). capture_fresh: no segment, state, gap or
# owner left from an earlier test.
capture_off() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -n "${CTL:-}" ] && "$CTL" tracking triggers >/dev/null 2>&1
  wait_until 5 slot_idle
  q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
     WHERE slot_name = 'backup_capture' AND NOT active" >/dev/null 2>&1
}
slot_idle() {
  [ "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'backup_capture' AND active")" = 0 ]
}
capture_fresh() {
  q "DELETE FROM change_segments; DELETE FROM capture_state; DELETE FROM capture_gaps;
     DELETE FROM capture_owners" >/dev/null
}
# forget_encrypted_at_exit USER...: at exit, these users' encrypted backups and change segments
# are forgotten (their rows): a later test's `backupctl rekey --all` on this lane must not meet
# keys it was not given
forget_encrypted_at_exit() {
  local ids
  ids=$(printf "'%s'," "$@")
  on_exit_hooks+=("q \"DELETE FROM backup_metadata WHERE key_id IS NOT NULL AND user_id IN (${ids%,}); DELETE FROM change_segments WHERE 'aes-256-gcm' = ANY (codecs) AND user_id IN (${ids%,})\" >/dev/null 2>&1")
}
events_at_least() { [ "$(count_events "$1" "$2")" -ge "$3" ]; }
TABLES="profiles businesses products clients orders order_items notifications user_settings"
# state SUFFIX: user $U's rows of every table, as to_jsonb, saved in snap_SUFFIX
state() {
  q "DROP TABLE IF EXISTS snap_$1" >/dev/null
  local sel="" t
  for t in $TABLES; do
    sel+="${sel:+ UNION ALL }SELECT '$t' AS tbl, to_jsonb(x) - 'backup_xid' AS j FROM $t x WHERE $(filter "$t" "$U")"
  done
  q "CREATE TABLE snap_$1 AS $sel" >/dev/null
}
# differs SUFFIX: rows differing between snap_SUFFIX and the database now (both ways), per table
differs() {
  state now
  q "SELECT coalesce(string_agg(tbl || ':' || n, ' '), 'none') FROM (
       SELECT tbl, count(*) n FROM ((SELECT * FROM snap_$1 EXCEPT ALL SELECT * FROM snap_now)
         UNION ALL (SELECT * FROM snap_now EXCEPT ALL SELECT * FROM snap_$1)) d GROUP BY tbl) s"
}
