#!/usr/bin/env bash
# test_model: the randomized model test (tests/model.mjs) on a fixed set of seeds, against a
# real worker, Redis, PostgreSQL and S3. MODEL_SEEDS and MODEL_STEPS change the run (tools/bench/model.sh
# runs it long with new seeds); a failure prints its seed, which replays it.
#
# test_model.sh WORKER BACKUPCTL wal: the same with change capture (BACKUP_TRACKING=wal): the
# lane switched to wal for the run (and back after it), and the model's second oracle: each
# user's change segments replayed are exactly its rows.
WORKER=$1
CTL=${2:-}
MODE=${3:-triggers}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null
SEGMENTS=()
if [ "$MODE" = wal ]; then
  on_exit_hooks+=(capture_off)
  capture_off
  capture_fresh
  "$CTL" tracking wal >/dev/null || bad "backupctl tracking wal failed"
  SEGMENTS=(--segments "$CTL")
  export PGOPTIONS="-c synchronous_commit=on" # commits flushed: the capture confirms past them
fi

P=tm$$
# under the sanitizers (tools/devenv test's second pass) three seeds: its worth there is the C
# paths the model drives, which three seeds already cover
DEFAULT_SEEDS=1,2,3,4,5,6,7,8
[ -n "${ASAN_OPTIONS:-}" ] && DEFAULT_SEEDS=1,2,3
# (wal: the walsender streams any transaction over 64 kB before its commit: protocol 2's path)
start_worker w1 BACKUP_NOTIFY=false BACKUP_TRACKING=$MODE CAPTURE_FLUSH_INTERVAL=300ms \
  CAPTURE_DECODING_KB=64
if [ "$MODE" = wal ]; then
  wait_until 15 grep -q "capture: streaming from" "$tmp/w1.log" || bad "the capture did not start"
fi
[ "$fails" -eq 0 ] || exit 1
if node "$ROOT/tests/model.mjs" --prefix "$P" --seeds "${MODEL_SEEDS:-$DEFAULT_SEEDS}" --steps "${MODEL_STEPS:-80}" \
  --ctl "${CTL:-$(dirname "$WORKER")/backupctl}" "${SEGMENTS[@]}"; then
  ok "model: every backup, restore and export exact for seeds ${MODEL_SEEDS:-$DEFAULT_SEEDS}"
else
  bad "model: a seed failed (above; MODEL_SEEDS=<seed> replays it)"
fi
if [ "$MODE" = wal ]; then # the oracle held with incrementals that did come from the segments
  built=$(grep -c "change segments\? of" "$tmp/w1.log")
  fell=$(grep -c "a full backup instead" "$tmp/w1.log")
  streamed=$(grep -c "streamed before its commit" "$tmp/w1.log")
  check "incrementals built from the change segments: $built ($fell fell back to full; $streamed transactions streamed before their commit)" t \
    "$([ "$built" -gt 0 ] && echo t || echo "none of $((built + fell))")"
fi
finish
