#!/usr/bin/env bash
# test_model: the randomized model test (tests/model.mjs) on a fixed set of seeds, against a
# real worker, Redis, PostgreSQL and S3. MODEL_SEEDS and MODEL_STEPS change the run (tools/bench/model.sh
# runs it long with new seeds); a failure prints its seed, which replays it.
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

P=tm$$
# under the sanitizers (tools/devenv test's second pass) three seeds: its worth there is the C
# paths the model drives, which three seeds already cover
DEFAULT_SEEDS=1,2,3,4,5,6,7,8
[ -n "${ASAN_OPTIONS:-}" ] && DEFAULT_SEEDS=1,2,3
start_worker w1 BACKUP_NOTIFY=false
[ "$fails" -eq 0 ] || exit 1
if node "$ROOT/tests/model.mjs" --prefix "$P" --seeds "${MODEL_SEEDS:-$DEFAULT_SEEDS}" --steps "${MODEL_STEPS:-80}"; then
  ok "model: every backup and restore exact for seeds ${MODEL_SEEDS:-$DEFAULT_SEEDS}"
else
  bad "model: a seed failed (above; MODEL_SEEDS=<seed> replays it)"
fi
finish
