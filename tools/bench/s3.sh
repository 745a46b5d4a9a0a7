#!/usr/bin/env bash
# S3 benchmark: streamed upload and download of SIZE_MB (default 1024) to the
# local S3 server with `backupctl s3`, next to `aws s3 cp` on the same server
# in the same run; peak RSS of both. Prints figures; asserts nothing.
#
#   eval "$(tools/devenv env)"; tools/bench/s3.sh [SIZE_MB] [BACKUPCTL]
#
# Needs an `aws` CLI on PATH (Debian: apt-get install awscli) and GNU time.
set -euo pipefail
SIZE_MB=${1:-1024}
CTL=${2:-$(dirname "$0")/../../build/backupctl}
: "${S3_ENDPOINT:?eval \"\$(tools/devenv env)\" first}"
command -v aws >/dev/null || { echo "s3 bench: no aws CLI (apt-get install awscli)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "s3 bench: needs GNU time (apt-get install time)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/bw-s3bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
key="bench/s3-$$"
echo "s3 bench: ${SIZE_MB} MiB of random bytes, server $S3_ENDPOINT, $(aws --version 2>&1 | cut -d' ' -f1)"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$tmp/in"
want=$(sha256sum "$tmp/in" | cut -d' ' -f1)

# run LABEL command...: wall seconds and peak RSS (KiB) into $secs and $rss
run() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >"$tmp/$label.out" 2>"$tmp/$label.err" ||
    { echo "$label failed:"; cat "$tmp/$label.err"; exit 1; }
  read -r secs rss <"$tmp/time"
}
row() { # label secs rss
  awk -v l="$1" -v s="$2" -v r="$3" -v mb="$SIZE_MB" \
    'BEGIN { printf "%-22s %7.2f s  %8.1f MiB/s  peak RSS %7.1f MiB\n", l, s, mb / s, r / 1024 }'
}

run ctl_put "$CTL" s3 put "$tmp/in" "$key-ctl"
row "backupctl s3 put" "$secs" "$rss"
grep -q "$want" "$tmp/ctl_put.out" || { echo "backupctl put: SHA-256 mismatch"; exit 1; }
ctl_put_rss=$rss
run ctl_get "$CTL" s3 get "$key-ctl" "$tmp/out"
row "backupctl s3 get" "$secs" "$rss"
[ "$(sha256sum "$tmp/out" | cut -d' ' -f1)" = "$want" ] || { echo "backupctl get: mismatch"; exit 1; }
rm -f "$tmp/out"

export AWS_DEFAULT_REGION=${AWS_REGION:-us-east-1}
run aws_put aws --endpoint-url "$S3_ENDPOINT" s3 cp --only-show-errors "$tmp/in" "s3://$S3_BUCKET/$key-aws"
row "aws s3 cp (upload)" "$secs" "$rss"
run aws_get aws --endpoint-url "$S3_ENDPOINT" s3 cp --only-show-errors "s3://$S3_BUCKET/$key-aws" "$tmp/out"
row "aws s3 cp (download)" "$secs" "$rss"
[ "$(sha256sum "$tmp/out" | cut -d' ' -f1)" = "$want" ] || { echo "aws get: mismatch"; exit 1; }

# parts in flight x part size, plus 16 MiB for everything else
inflight=${S3_UPLOAD_CONCURRENCY:-4} part=${S3_PART_SIZE_MB:-8}
echo "backupctl put memory bound: $inflight x $part MiB + 16 MiB = $((inflight * part + 16)) MiB; measured $((ctl_put_rss / 1024)) MiB"
"$CTL" s3 rm "$key-ctl" "$key-aws" >/dev/null
