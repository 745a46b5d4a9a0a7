#!/usr/bin/env bash
# The randomized model test (tests/model.mjs) run long, with new seeds: SEEDS seeds from FIRST
# (default: from the clock, so each run explores new ones), STEPS steps each, against a worker
# it starts. Prints each seed's result and the figures: seeds, steps, backups and restores per
# minute, failures with the seed that replays each (MODEL_SEEDS=<seed> tests/test_model.sh).
# CI runs a bounded version (tests/test_model.sh: seeds 1-8, 80 steps).
#
#   eval "$(tools/devenv env)"; tools/bench/model.sh [SEEDS] [STEPS] [FIRST]
set -uo pipefail
SEEDS=${1:-50}
STEPS=${2:-200}
FIRST=${3:-$(( $(date +%s) % 100000 * 10 ))}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER=${WORKER:-$ROOT/build/backup-worker}
: "${DATABASE_URL:?eval \"\$(tools/devenv env)\" first}"
P=modelbench$$
tmp=$(mktemp -d /tmp/bw-modelbench.XXXXXX)
REDIS_PREFIX=$P BACKUP_NOTIFY=false WORKER_HTTP_PORT=0 JOB_BACKOFF_BASE=100ms JOB_BACKOFF_MAX=400ms \
  "$WORKER" >"$tmp/worker.log" 2>&1 &
wpid=$!
trap 'kill $wpid 2>/dev/null; wait $wpid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do grep -q "consuming $P:jobs" "$tmp/worker.log" && break; sleep 0.1; done
seeds=$(seq -s, "$FIRST" $((FIRST + SEEDS - 1)))
t0=$(date +%s.%N)
node "$ROOT/tests/model.mjs" --prefix "$P" --seeds "$seeds" --steps "$STEPS" | tee "$tmp/out"
t1=$(date +%s.%N)
awk -v t="$(echo "$t1 - $t0" | bc)" '
  /^ok/ { ok++; for (i = 1; i <= NF; i++) { if ($(i+1) == "backups,") b += $i; if ($(i+1) == "restores,") r += $i; if ($(i+1) == "steps,") s += $i } }
  /^FAIL seed/ { bad++; failed = failed " " $3 }
  END { printf "model bench: %d seeds in %.0f s (%d passed, %d failed%s); %d steps, %d backups, %d restores: %.0f backups and %.0f restores a minute\n",
        ok + bad, t, ok, bad, bad ? ": seeds" failed : "", s, b, r, b * 60 / t, r * 60 / t }' "$tmp/out"
