#!/usr/bin/env bash
# lane.sh COMMAND...: run a service test on a set of services (a lane) no other test holds.
#
# tools/devenv test starts BW_TEST_LANES sets of Redis, PostgreSQL, S3 and moto (lane 0 is
# the environment's own; lane N listens on its ports + 1000 N, its data in $BW_DEV_DIR/laneN)
# so that ctest -j runs that many service tests at once. Each lane is taken with flock(1);
# with one lane (the default, a developer's `tools/devenv start`) the service tests run one
# at a time whatever -j says. The lock is not passed to the test, so a process a test leaves
# behind cannot keep its lane. lane.sh --file-store COMMAND... runs the test on a file store
# (below) instead of the lane's S3.
set -uo pipefail
store=s3
if [ "${1:-}" = --file-store ]; then store=file; shift; fi
: "${BW_DEVENV:?run through tools/devenv test (or eval \"\$(tools/devenv env)\")}"
lanes=${BW_TEST_LANES:-1}
dir=$("$BW_DEVENV" dir)
mkdir -p "$dir"
lane=""
while [ -z "$lane" ]; do
  for ((n = 0; n < lanes; n++)); do
    exec {fd}>"$dir/lane$n.lock"
    if flock -n "$fd"; then lane=$n; break; fi
    exec {fd}>&-
  done
  [ -n "$lane" ] || sleep 0.2
done
if [ "$lane" -gt 0 ]; then
  eval "$("$BW_DEVENV" lane "$lane" env)"
fi
# --file-store: the lane's worker and backupctl keep backups in a directory of the lane
if [ "$store" = file ]; then
  export BACKUP_STORE="file://$dir/store-lane$lane"
fi
echo "lane $lane${BACKUP_STORE:+ (store $BACKUP_STORE)}"
"$@" {fd}>&-
