#!/usr/bin/env bash
# test_names: the status-hash field names and values in worker/jobstatus.h (what backupctl
# reads) are exactly names the queue's Lua scripts write, and each is documented in
# proto/README.md; the TypeScript client's enqueue script is proto/lua/enqueue.lua. No
# services needed.
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
# the enqueue script: backupctl embeds proto/lua/enqueue.lua, the TypeScript client holds its text
lua=$(grep -v '^--' "$ROOT/proto/lua/enqueue.lua")
ts=$(sed -n '/^const ENQUEUE_LUA = `$/,/`;$/p' "$ROOT/proto/ts/src/node.ts" | sed '1d; s/`;$//')
if [ -n "$lua" ] && [ "$lua" = "$ts" ]; then passed=$((passed + 1)); else
  echo "FAIL proto/ts/src/node.ts ENQUEUE_LUA differs from proto/lua/enqueue.lua:"
  diff <(echo "$lua") <(echo "$ts"); fails=$((fails + 1)); fi
echo "test_names: $passed passed, $fails failed"
[ "$fails" -eq 0 ]
