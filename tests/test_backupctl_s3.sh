#!/usr/bin/env bash
# test_backupctl_s3: `backupctl s3` put/get/ls/rm/presign against the local S3
# server: byte-exact round trips, scriptable output and exit codes.
CTL=$1
# second argument: which server this is. moto checks no signatures (so the tampered-URL
# check cannot fail there: reported as not applicable) but has ListMultipartUploads,
# which s3rver lacks (so `s3 uploads` is checked on moto only)
SERVER=${2:-s3rver}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs S3_ENDPOINT
P="test-ctl-$$"

head -c $((12 * 1024 * 1024 + 77)) /dev/urandom >"$tmp/in.bin"
want=$(sha256sum "$tmp/in.bin" | cut -d' ' -f1)
"$CTL" s3 put "$tmp/in.bin" "$P/in.bin" >"$tmp/put.out" 2>&1; rc=$?
expect "put exits 0" test $rc = 0
expect "put prints the SHA-256" grep -q "sha256 $want  $P/in.bin" "$tmp/put.out"
S3_PART_SIZE_MB=5 S3_UPLOAD_CONCURRENCY=1 "$CTL" s3 put "$tmp/in.bin" "$P/small-parts.bin" >"$tmp/put2.out" 2>&1
expect "put with 5 MiB parts, one in flight" grep -q "sha256 $want" "$tmp/put2.out"
S3_UPLOAD_CONCURRENCY=0 "$CTL" s3 put "$tmp/in.bin" "$P/x" >/dev/null 2>&1; rc=$?
expect "S3_UPLOAD_CONCURRENCY=0 is refused (exit 2)" test $rc = 2
printf 'from stdin\n' | "$CTL" s3 put - "$P/stdin.txt" >/dev/null; rc=$?
expect "put from stdin" test $rc = 0

"$CTL" s3 get "$P/in.bin" "$tmp/out.bin"; rc=$?
expect "get exits 0" test $rc = 0
expect "get is byte-exact" cmp -s "$tmp/in.bin" "$tmp/out.bin"
expect "get to stdout" bash -c "test \"\$('$CTL' s3 get '$P/stdin.txt')\" = 'from stdin'"

"$CTL" s3 ls "$P/" >"$tmp/ls.out"; rc=$?
expect "ls exits 0" test $rc = 0
expect "ls: three objects" test "$(wc -l <"$tmp/ls.out")" = 3
expect "ls: size first, key last" grep -Eq "^ *$((12 * 1024 * 1024 + 77))  [0-9T:.Z-]+  $P/in.bin$" "$tmp/ls.out"

url=$("$CTL" s3 presign "$P/stdin.txt" --expires 60)
expect "presigned URL works (the server checks it)" bash -c "test \"\$(curl -sf '$url')\" = 'from stdin'"
bad_url=${url/X-Amz-Expires=60/X-Amz-Expires=61}
if [ "$SERVER" = moto ]; then
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
printf "%s\n" "$P/stdin.txt" "$P/small-parts.bin" | "$CTL" s3 rm - >/dev/null; rc=$?
expect "rm keys from stdin" test $rc = 0
expect "nothing left" test -z "$("$CTL" s3 ls "$P/")"

if [ "$SERVER" = moto ]; then
  curl -sf -o /dev/null -X POST "$S3_ENDPOINT/$S3_BUCKET/$P/left.bin?uploads" || bad "create an upload"
  "$CTL" s3 uploads "$P/" >"$tmp/ups.out" 2>&1; rc=$?
  expect "uploads lists what a crashed writer left" bash -c "[ $rc = 0 ] && grep -q ' $P/left.bin\$' '$tmp/ups.out'"
  "$CTL" s3 uploads "$P/" --abort-older-than 0s >"$tmp/ups.out" 2>&1; rc=$?
  expect "uploads --abort-older-than aborts it" bash -c "[ $rc = 0 ] && grep -q 'aborted 1, failed 0' '$tmp/ups.out'"
  expect "  ... and it is gone" bash -c "[ -z \"\$('$CTL' s3 uploads '$P/')\" ]"
  expect "uploads: a bad duration exits 2" bash -c "'$CTL' s3 uploads --abort-older-than soon >/dev/null 2>&1; [ \$? = 2 ]"
else
  echo "n/a  s3 uploads (s3rver has no ListMultipartUploads; checked against moto)"
fi
finish
