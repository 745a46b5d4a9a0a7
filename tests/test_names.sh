#!/usr/bin/env bash
# test_names: the status-hash field names and values in worker/jobstatus.h (what backupctl
# reads) are exactly names the queue's Lua scripts write, and each is documented in
# proto/README.md. No services needed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fails=0 passed=0
names=$(sed -n 's/^#define JS_[A-Z_]* *"\([a-z_]*\)".*/\1/p' "$ROOT/worker/jobstatus.h")
[ "$(wc -w <<<"$names")" -ge 15 ] || { echo "FAIL jobstatus.h: too few names read"; exit 1; }
for n in $names; do
  if grep -q "'$n'" "$ROOT"/worker/lua/*.lua; then passed=$((passed + 1)); else
    echo "FAIL $n: in jobstatus.h, written by no script in worker/lua/"; fails=$((fails + 1)); fi
  if grep -q "\`$n\`" "$ROOT/proto/README.md"; then passed=$((passed + 1)); else
    echo "FAIL $n: not documented in proto/README.md"; fails=$((fails + 1)); fi
done
echo "test_names: $passed passed, $fails failed"
[ "$fails" -eq 0 ]
