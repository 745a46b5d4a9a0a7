#!/usr/bin/env bash
# test_harness: lib.sh's rules hold, so a shell test cannot pass by accident: a script that ran
# no check fails, a failure inside $(...) still counts, a script that ends without finish fails,
# a failing check fails the script, and a script whose checks pass passes. No services needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LIB="$ROOT/tests/lib.sh"
outcome() { # BODY: the exit code of a script that sources lib.sh and then runs BODY
  printf 'source %q\n%s\n' "$LIB" "$1" >"$tmp/t.sh"
  bash "$tmp/t.sh" >"$tmp/t.out" 2>&1
  echo $?
}
check "no check run: fails" 1 "$(outcome 'finish')"
check "a check that passes: passes" 0 "$(outcome 'ok one; finish')"
check "a failed check: fails" 1 "$(outcome 'ok one; bad two; finish')"
check "a failure inside \$(...) counts" 1 "$(outcome 'ok one; x=$(bad inner; echo v); finish')"
check "a failure in a pipeline counts" 1 "$(outcome 'ok one; echo | while read -r _; do bad piped; done; finish')"
check "ended without finish: fails" 1 "$(outcome 'ok one')"
check "check compares" 1 "$(outcome 'check same a b; finish')"
check "needs names a missing variable" 1 "$(outcome 'unset NOPE_X; needs NOPE_X; ok one; finish')"
expect "…and says which" grep -q "needs NOPE_X" "$tmp/t.out"
finish
