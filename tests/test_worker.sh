#!/usr/bin/env bash
# test_worker: the daemon's configuration errors, --help/--version, a run that
# connects to Redis, PostgreSQL and S3 and answers /healthz, /readyz and
# /metrics, a clean exit on SIGTERM, and no secret in any output.
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL REDIS_URL
pid=
on_exit_hooks+=('[ -n "$pid" ] && kill $pid 2>/dev/null')

# secrets of this environment that must never be printed
REDIS_PASS=$(sed -nE 's#^rediss?://[^:@/]*:([^@]*)@.*#\1#p' <<<"$REDIS_URL")
REDIS_PASS=${REDIS_PASS:-no-redis-password-set}
PG_PASS=$(sed -E 's#^postgresql://[^:]*:([^@]*)@.*#\1#' <<<"$DATABASE_URL")
no_secret() { ! grep -q -e "$REDIS_PASS" -e "$PG_PASS" -e "$AWS_SECRET_ACCESS_KEY" "$1"; }

expect "--version" bash -c "'$WORKER' --version | grep -q '^backup-worker [0-9]'"
"$WORKER" --help >"$tmp/help"
for v in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_REGION S3_BUCKET S3_ENDPOINT \
  S3_FORCE_PATH_STYLE BACKUP_RETENTION_DAYS BACKUP_COMPRESSION REDIS_URL DATABASE_URL \
  WORKER_CONCURRENCY WORKER_HTTP_PORT LOG_LEVEL LOG_FORMAT; do
  grep -q "^  $v " "$tmp/help" || echo "$v" >>"$tmp/help-missing"
done
check "--help lists every variable" "" "$(cat "$tmp/help-missing" 2>/dev/null)"
expect "--help shows defaults" grep -q "default us-east-1" "$tmp/help"

# configuration errors: exit 2, the variable named, nothing started, no secret
# every spelling of a PostgreSQL secret is masked: sslpassword= before password=, %-escaped
for url in "postgresql://u@127.0.0.1:1/db?sslpassword=x&password=SECRET1234" \
  "postgresql://u@127.0.0.1:1/db?%70assword=SECRET1234" "host=127.0.0.1 port=1 sslpassword=SECRET1234"; do
  DATABASE_URL="$url" "$WORKER" --check-config >"$tmp/out" 2>&1
  DATABASE_URL="$url" "$CTL" list 7e570001-0000-4000-8000-00000000000a >>"$tmp/out" 2>&1
  expect "no PostgreSQL secret printed for $url" bash -c "! grep -q SECRET1234 '$tmp/out' && grep -q '\*\*\*' '$tmp/out'"
done
# option values libpq checks only when it connects: refused at start, naming the option
for opt in "sslmode=bogus" "port=notaport"; do
  DATABASE_URL="host=127.0.0.1 $opt password=SECRET1234" "$WORKER" >"$tmp/out" 2>&1; rc=$?
  expect "DATABASE_URL with $opt exits 2, naming it" bash -c "[ $rc = 2 ] && grep -q 'DATABASE_URL: option $opt is not valid' '$tmp/out' && ! grep -q SECRET1234 '$tmp/out'"
done
env -u DATABASE_URL "$WORKER" >"$tmp/out" 2>&1; rc=$?
expect "missing DATABASE_URL exits 2" test $rc = 2
expect "missing DATABASE_URL is named" grep -q "DATABASE_URL: is required but not set" "$tmp/out"
WORKER_CONCURRENCY=zero REDIS_URL="ftp://:$REDIS_PASS@x" "$WORKER" >"$tmp/out" 2>&1; rc=$?
expect "two bad variables exit 2" test $rc = 2
expect "both reported" bash -c "grep -q WORKER_CONCURRENCY '$tmp/out' && grep -q 'REDIS_URL:.*must start with redis://' '$tmp/out'"
expect "no secret in config errors" no_secret "$tmp/out"
expect "backupctl: bad config exits 2" bash -c "LOG_FORMAT=xml '$CTL' check >/dev/null 2>&1; test \$? = 2"

# backupctl check against the real services
"$CTL" check >"$tmp/check" 2>&1; rc=$?
cat "$tmp/check"
expect "backupctl check passes" test $rc = 0
expect "backupctl check names all four (the keys too)" bash -c "grep -c '  ok  ' '$tmp/check' | grep -q 4"
expect "no secret in backupctl output" no_secret "$tmp/check"
DATABASE_URL="postgresql://backup:$PG_PASS@127.0.0.1:1/x" "$CTL" check >"$tmp/check2" 2>&1; rc=$?
expect "backupctl check fails on a dead PostgreSQL" test $rc = 1
expect "and says which" grep -q "postgres  FAIL  postgres: connect failed" "$tmp/check2"
expect "no secret when failing" no_secret "$tmp/check2"

AWS_SECRET_ACCESS_KEY=wrong-secret-value "$CTL" check >"$tmp/check3" 2>&1; rc=$?
expect "backupctl check fails on a wrong S3 secret" test $rc = 1
expect "and names S3's reason" grep -q "s3        FAIL  .*HTTP 403 AccessDenied: check the access key" "$tmp/check3"
expect "without the secret" bash -c "! grep -q wrong-secret-value '$tmp/check3'"

# a real run
port=$(free_port)
WORKER_HTTP_PORT=$port LOG_FORMAT=json LOG_LEVEL=debug "$WORKER" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q '"ready: ' "$tmp/log" && break; sleep 0.1; done
cat "$tmp/log"
expect "connected to Redis" grep -q "\"connected to Redis at $RHOST" "$tmp/log"
expect "connected to PostgreSQL" grep -q '"connected to PostgreSQL 15' "$tmp/log"
expect "S3 reachable" grep -q '"S3 bucket [a-z0-9.-]* at http://127.0.0.1:[0-9]* reachable (HTTP 200)' "$tmp/log"
expect "ready" grep -q '"ready: Redis, PostgreSQL and the store (s3) are reachable"' "$tmp/log"
expect "log lines are JSON" bash -c "jq -e . '$tmp/log' >/dev/null"
expect "/healthz 200" bash -c "curl -sf localhost:$port/healthz | jq -e '.status == \"ok\"' >/dev/null"
expect "/readyz 200" bash -c "curl -sf localhost:$port/readyz | jq -e '.redis and .postgres and .s3' >/dev/null"
curl -s localhost:$port/metrics >"$tmp/metrics"
expect "/metrics has the loop lag" grep -q '^bw_event_loop_lag_seconds [0-9.]*$' "$tmp/metrics"
for m in bw_jobs_started_total bw_jobs_completed_total bw_jobs_failed_total bw_jobs_dead_total \
  bw_jobs_retried_total bw_job_duration_seconds_bucket bw_jobs_in_flight bw_queue_pending \
  bw_job_rows_total bw_job_bytes_total bw_redis_reconnects_total bw_s3_bytes_total; do
  grep -q "^$m" "$tmp/metrics" || bad "/metrics has $m"
done
expect "/metrics passes promtool" bash -c "promtool check metrics <'$tmp/metrics'"
expect "/nope 404" bash -c "test \$(curl -s -o /dev/null -w '%{http_code}' localhost:$port/nope) = 404"
kill -TERM $pid
wait $pid; rc=$?
pid=
expect "SIGTERM exits 0" test $rc = 0
expect "says it stopped" grep -q '"stopped"' "$tmp/log"
expect "no secret in the worker log" no_secret "$tmp/log"

# wrong S3 credentials: alive, but not ready, and the log says why
port2=$(free_port)
AWS_SECRET_ACCESS_KEY=wrong-secret-value WORKER_HTTP_PORT=$port2 "$WORKER" >"$tmp/log3" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'unusable' "$tmp/log3" && break; sleep 0.1; done
expect "wrong S3 secret: /healthz 200" bash -c "curl -sf localhost:$port2/healthz >/dev/null"
expect "wrong S3 secret: /readyz 503" bash -c "test \$(curl -s -o /dev/null -w '%{http_code}' localhost:$port2/readyz) = 503"
expect "wrong S3 secret: logged with the reason" grep -q 'HTTP 403 AccessDenied' "$tmp/log3"
kill -TERM $pid; wait $pid
pid=
expect "no secret in that log" bash -c "! grep -q wrong-secret-value '$tmp/log3'"

# a wrong PostgreSQL password: a configuration error, not an outage: not ready, said once (issue 29)
port4=$(free_port)
BADPG=$(sed -E 's#(postgresql://[^:]+:)[^@]*@#\1wrong-pg-password@#' <<<"$DATABASE_URL")
DATABASE_URL=$BADPG WORKER_HTTP_PORT=$port4 "$WORKER" >"$tmp/log4" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'configuration error' "$tmp/log4" && break; sleep 0.1; done
sleep 2 # a few more probes: still said once
expect "wrong PostgreSQL password: /readyz 503" bash -c "test \$(curl -s -o /dev/null -w '%{http_code}' localhost:$port4/readyz) = 503"
check "…logged once as a configuration error, not an outage" "1 0" \
  "$(grep -c 'PostgreSQL refuses the worker (a configuration error' "$tmp/log4") $(grep -c 'PostgreSQL unreachable' "$tmp/log4")"
kill -TERM $pid; wait $pid
pid=
expect "no password in that log" bash -c "! grep -q wrong-pg-password '$tmp/log4'"

# the port is taken: a clear error, exit 1
# (a port the kernel picks: a fixed one may be held by a closing connection of the tests above)
python3 -u -c "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); print(s.getsockname()[1]); time.sleep(3)" >"$tmp/busy" &
for _ in $(seq 50); do [ -s "$tmp/busy" ] && break; sleep 0.1; done
busy=$(cat "$tmp/busy")
WORKER_HTTP_PORT=$busy timeout 10 "$WORKER" >"$tmp/log2" 2>&1; rc=$?
expect "busy port exits 1" test $rc = 1
expect "busy port is named" grep -q "cannot listen on 0.0.0.0:$busy" "$tmp/log2"
wait

# WORKER_HTTP_HOST: the HTTP port listens on that address only
WORKER_HTTP_HOST=127.0.0.2 WORKER_HTTP_PORT=$port "$WORKER" >"$tmp/log4" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.2:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
expect "WORKER_HTTP_HOST=127.0.0.2: /healthz there" curl -sf "127.0.0.2:$port/healthz" -o /dev/null
expect "…and not on 127.0.0.1" bash -c "! curl -s -o /dev/null 127.0.0.1:$port/healthz"
kill -TERM $pid; wait $pid
pid=

finish
