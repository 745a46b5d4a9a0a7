#!/usr/bin/env bash
# lane.sh COMMAND...: run a service test on a set of services (a lane) no other test holds.
#
# tools/devenv test starts BW_TEST_LANES sets of Redis, PostgreSQL, S3 and moto (lane 0 is
# the environment's own; lane N listens on its ports + 1000 N, its data in $BW_DEV_DIR/laneN)
# so that ctest -j runs that many service tests at once. Each lane is taken with flock(1);
# with one lane (the default, a developer's `tools/devenv start`) the service tests run one
# at a time whatever -j says. The lock is not passed to the test, so a process a test leaves
# behind cannot keep its lane. lane.sh --file-store COMMAND... runs the test on a file store
# (below) instead of the lane's S3; lane.sh --tls-redis COMMAND... on a TLS-only Redis of its
# own (below) instead of the lane's plain one.
set -uo pipefail
store=s3
tls_redis=0
while :; do
  case "${1:-}" in
    --file-store) store=file; shift ;;
    --tls-redis) tls_redis=1; shift ;;
    *) break ;;
  esac
done
: "${BW_DEVENV:?run through tools/devenv test (or eval \"\$(tools/devenv env)\")}"
lanes=${BW_TEST_LANES:-1}
dir=$("$BW_DEVENV" dir)
mkdir -p "$dir"
lane=""
while [ -z "$lane" ]; do
  for ((n = 0; n < lanes; n++)); do
    exec {fd}>"$dir/lane$n.lock"
    if flock -n "$fd"; then lane=$n; break; fi
    exec {fd}>&-
  done
  [ -n "$lane" ] || sleep 0.2
done
if [ "$lane" -gt 0 ]; then
  eval "$("$BW_DEVENV" lane "$lane" env)"
fi
# --file-store: the lane's worker and backupctl keep backups in a directory of the lane
if [ "$store" = file ]; then
  export BACKUP_STORE="file://$dir/store-lane$lane"
fi
# --tls-redis: a Redis 7 with its plain port off, for this test alone (a CA and a certificate for
# localhost made once per lane by openssl), REDIS_URL=rediss://... and REDIS_CA_FILE pointing
# at it: the worker, backupctl, redis-cli (lib.sh's R) and the web tier all speak TLS to it
if [ "$tls_redis" = 1 ]; then
  t="$dir/tls-lane$lane"
  if [ ! -s "$t/server.crt" ]; then
    mkdir -p "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$t/ca.key" \
      -out "$t/ca.crt" -days 30 -subj "/CN=lane $lane CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$t/server.key" \
      -out "$t/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$t/server.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
      -days 30 -extfile "$t/server.ext" -out "$t/server.crt" 2>/dev/null
  fi
  source "$(dirname "${BASH_SOURCE[0]}")/port.sh"
  tport=$(free_port)
  rm -rf "$t/data" && mkdir -p "$t/data"
  redis-server --port 0 --tls-port "$tport" --tls-cert-file "$t/server.crt" \
    --tls-key-file "$t/server.key" --tls-ca-cert-file "$t/ca.crt" --tls-auth-clients no \
    --save '' --appendonly no --dir "$t/data" >"$t/redis.log" 2>&1 {fd}>&- &
  rpid=$!
  trap 'kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null' EXIT
  for _ in $(seq 100); do grep -q "Ready to accept" "$t/redis.log" && break; sleep 0.05; done
  export REDIS_URL="rediss://localhost:$tport/0" REDIS_CA_FILE="$t/ca.crt"
fi
echo "lane $lane${BACKUP_STORE:+ (store $BACKUP_STORE)}${REDIS_CA_FILE:+ (Redis over TLS)}"
"$@" {fd}>&-
