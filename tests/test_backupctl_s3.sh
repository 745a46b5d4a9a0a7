#!/usr/bin/env bash
# test_backupctl_s3: `backupctl s3` put/get/ls/rm/presign against the local S3
# server: byte-exact round trips, scriptable output and exit codes.
set -uo pipefail
CTL=$1
# second argument "nosig": the server does not check signatures (moto's default), so
# the tampered-URL check cannot fail there and is reported as not applicable
NOSIG=${2:-}
: "${S3_ENDPOINT:?run through tools/devenv test}"
fails=0 passed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
expect() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
P="test-ctl-$$"

head -c $((12 * 1024 * 1024 + 77)) /dev/urandom >"$tmp/in.bin"
want=$(sha256sum "$tmp/in.bin" | cut -d' ' -f1)
"$CTL" s3 put "$tmp/in.bin" "$P/in.bin" >"$tmp/put.out" 2>&1; rc=$?
expect "put exits 0" test $rc = 0
expect "put prints the SHA-256" grep -q "sha256 $want  $P/in.bin" "$tmp/put.out"
printf 'from stdin\n' | "$CTL" s3 put - "$P/stdin.txt" >/dev/null; rc=$?
expect "put from stdin" test $rc = 0

"$CTL" s3 get "$P/in.bin" "$tmp/out.bin"; rc=$?
expect "get exits 0" test $rc = 0
expect "get is byte-exact" cmp -s "$tmp/in.bin" "$tmp/out.bin"
expect "get to stdout" bash -c "test \"\$('$CTL' s3 get '$P/stdin.txt')\" = 'from stdin'"

"$CTL" s3 ls "$P/" >"$tmp/ls.out"; rc=$?
expect "ls exits 0" test $rc = 0
expect "ls: two objects" test "$(wc -l <"$tmp/ls.out")" = 2
expect "ls: size first, key last" grep -Eq "^ *$((12 * 1024 * 1024 + 77))  [0-9T:.Z-]+  $P/in.bin$" "$tmp/ls.out"

url=$("$CTL" s3 presign "$P/stdin.txt" --expires 60)
expect "presigned URL works (the server checks it)" bash -c "test \"\$(curl -sf '$url')\" = 'from stdin'"
bad_url=${url/X-Amz-Expires=60/X-Amz-Expires=61}
if [ "$NOSIG" = nosig ]; then
  echo "n/a  a tampered presigned URL is refused (this server checks no signatures)"
else
  expect "a tampered presigned URL is refused" bash -c "! curl -sf '$bad_url' >/dev/null"
fi

"$CTL" s3 get "$P/missing" "$tmp/missing.out" 2>"$tmp/err"; rc=$?
expect "missing key exits 1" test $rc = 1
expect "and names S3's code" grep -q "NoSuchKey" "$tmp/err"
expect "and leaves no file" test ! -e "$tmp/missing.out"
"$CTL" s3 put "$tmp/nope" "$P/x" 2>"$tmp/err"; rc=$?
expect "missing local file exits 1" test $rc = 1
"$CTL" s3 frobnicate >/dev/null 2>&1; rc=$?
expect "bad usage exits 2" test $rc = 2

"$CTL" s3 rm "$P/in.bin" >"$tmp/rm.out"; rc=$?
expect "rm exits 0" test $rc = 0
expect "rm reports" grep -q "deleted 1, failed 0" "$tmp/rm.out"
echo "$P/stdin.txt" | "$CTL" s3 rm - >/dev/null; rc=$?
expect "rm keys from stdin" test $rc = 0
expect "nothing left" test -z "$("$CTL" s3 ls "$P/")"

echo "$passed passed, $fails failed"
[ "$fails" = 0 ]
