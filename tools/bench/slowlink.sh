#!/usr/bin/env bash
# slowlink: S3 over a slow link that keeps moving (tests/test_slowlink.sh's soak): at 100 KB/s
# a backup whose one request takes over a minute completes, its status says the bytes stored
# while it runs, and the object is whole. Prints the time it took. Out of CI by design.
#   tools/bench/slowlink.sh build/backup-worker   (services up: tools/devenv start; env)
exec bash "$(dirname "$0")/../../tests/test_slowlink.sh" "${1:?the worker binary}" soak
