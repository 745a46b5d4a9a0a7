#!/usr/bin/env bash
# test_names: the status-hash field names and values in worker/queue/jobstatus.h (what backupctl
# reads) are exactly names the queue's Lua scripts write, and each is documented in
# proto/README.md; the TypeScript client's enqueue script is proto/lua/enqueue.lua. No
# services needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
names=$(sed -n 's/^#define JS_[A-Z_]* *"\([a-z_]*\)".*/\1/p' "$ROOT/worker/queue/jobstatus.h")
[ "$(wc -w <<<"$names")" -ge 15 ] || { echo "FAIL jobstatus.h: too few names read"; exit 1; }
for n in $names; do
  expect "$n: in jobstatus.h, written by a script in worker/queue/lua/" grep -q "'$n'" "$ROOT"/worker/queue/lua/*.lua
  expect "$n: documented in proto/README.md" grep -q "\`$n\`" "$ROOT/proto/README.md"
done
# the enqueue script: backupctl embeds proto/lua/enqueue.lua, the TypeScript client holds its text
lua=$(grep -v '^--' "$ROOT/proto/lua/enqueue.lua")
ts=$(sed -n '/^const ENQUEUE_LUA = `$/,/`;$/p' "$ROOT/proto/ts/src/node.ts" | sed '1d; s/`;$//')
if [ -n "$lua" ] && [ "$lua" = "$ts" ]; then ok "proto/ts/src/node.ts ENQUEUE_LUA is proto/lua/enqueue.lua"; else
  bad "proto/ts/src/node.ts ENQUEUE_LUA differs from proto/lua/enqueue.lua:"
  diff <(echo "$lua") <(echo "$ts"); fi
finish
