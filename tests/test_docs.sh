#!/usr/bin/env bash
# test_docs: the README stays a front door (under 250 lines), its configuration table is what
# the worker's settings tables say (tools/readme-config writes it), and every relative link of
# the READMEs points at a file that exists. No services needed.
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lines=$(wc -l <"$ROOT/README.md")
expect "README.md is a front door ($lines lines, under 250)" test "$lines" -lt 250
"$WORKER" --help-markdown >"$tmp/table"
sed -n '/^<!-- config-table: generated/,/^<!-- config-table: end -->/p' "$ROOT/README.md" | sed '1d;$d' >"$tmp/readme-table"
if cmp -s "$tmp/table" "$tmp/readme-table"; then
  ok "the README's configuration table is the settings tables'"
else
  bad "the README's configuration table differs from backup-worker --help-markdown (run tools/readme-config):"
  diff "$tmp/readme-table" "$tmp/table" | head -20
fi
check "…one row per variable --help lists" "$(grep -c '^  [A-Z][A-Z0-9_]* ' <("$WORKER" --help))" \
  "$(grep -c '^| `' "$tmp/readme-table")"
for doc in README.md common/README.md worker/README.md deploy/README.md proto/README.md proto/ts/README.md \
  tools/README.md tools/web/README.md tests/README.md tools/bench/README.md; do
  dir=$(dirname "$ROOT/$doc")
  missing=""
  for link in $(grep -oE '\]\([^) ]+\)' "$ROOT/$doc" | sed 's/^](//; s/)$//; s/#.*//'); do
    case $link in "" | *://* | mailto:*) continue ;; esac # anchors and other sites
    [ -e "$dir/$link" ] || missing+=" $link"
  done
  check "$doc: every relative link resolves" "" "$missing"
done
finish
