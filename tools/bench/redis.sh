#!/usr/bin/env bash
# redis.sh [JOBS] [ROUNDS]: the queue benchmark (node/queue.js --ours: ping jobs, throughput and
# pickup latency) on a plain and a TLS-only Redis side by side, in the same run and on the same
# machine: two redis-server processes of this script's own (a CA and a server certificate made
# by openssl), the same worker build, rounds interleaved (plain, TLS, plain, TLS, ...).
#
#   tools/bench/redis.sh 20000 3          # needs (cd tools/bench/node && npm ci)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
JOBS=${1:-20000}
ROUNDS=${2:-3}
WORKER=${WORKER:-$ROOT/build/backup-worker}
eval "$("$ROOT/tools/devenv" env)"
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
cd "$tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
  -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -out s.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >s.ext
openssl x509 -req -in s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile s.ext \
  -out s.crt 2>/dev/null
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PP=$(port)
TP=$(port)
redis-server --port "$PP" --save '' --appendonly no --dir "$tmp" >plain.log 2>&1 &
pids+=($!)
redis-server --port 0 --tls-port "$TP" --tls-cert-file s.crt --tls-key-file s.key \
  --tls-ca-cert-file ca.crt --tls-auth-clients no --save '' --appendonly no --dir "$tmp" >tls.log 2>&1 &
pids+=($!)
sleep 0.5
echo "queue benchmark: $JOBS ping jobs a round, $ROUNDS rounds each, interleaved; worker $WORKER"
for r in $(seq "$ROUNDS"); do
  for mode in plain tls; do
    if [ $mode = plain ]; then tls=(); url="redis://127.0.0.1:$PP/0"; else
      tls=("REDIS_CA_FILE=$tmp/ca.crt"); url="rediss://localhost:$TP/0"; fi
    line=$(env REDIS_URL="$url" "${tls[@]}" node "$ROOT/tools/bench/node/queue.js" "$WORKER" \
      --jobs "$JOBS" --latency 500 --ours | grep '^backup-worker')
    printf '%-6s round %d: %s\n' "$mode" "$r" "${line#backup-worker }"
  done
done
