# Sourced by the benchmarks: the CPU time of the processes a backup runs through, from /proc
# (utime + stime, in clock ticks), so that what a deployment on real S3 pays (the client and
# PostgreSQL) stands apart from what the local S3 server costs here.
#
#   cpu_pid PID      ticks of one live process
#   cpu_pg           ticks of the whole PostgreSQL cluster of $DEV: the postmaster, its live
#                    children (backends, walsenders, background processes) and the children it
#                    already reaped (cutime + cstime: a backend that exited still counts)
#   cpu_s3, cpu_redis  the devenv's S3 server (node s3rver) and Redis
#   cpu_ms TICKS     ticks in milliseconds
# Sourcing it also warns (stderr) when backup-worker processes are already running.
# A process that is gone reads as 0: take the readings while it runs.
: "${DEV:=${BW_DEV_DIR:-/tmp/backup-worker-dev}}"
CPU_HZ=$(getconf CLK_TCK)

# fields 14-17 of /proc/PID/stat: utime stime cutime cstime (the name in field 2 may hold
# spaces: count from the closing parenthesis)
_cpu_stat() { # PID CHILDREN(0|1)
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $2 $s
  local kids=$1; shift
  # now $1 is field 3 (state): utime is field 14 -> ${12}
  if [ "$kids" = 1 ]; then echo $((${12} + ${13} + ${14} + ${15})); else echo $((${12} + ${13})); fi
}
cpu_pid() { _cpu_stat "$1" 0; }
cpu_pg() {
  local pm t p
  pm=$(head -1 "$DEV/pg/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  t=$(_cpu_stat "$pm" 1)
  for p in $(ps -o pid= --ppid "$pm"); do t=$((t + $(_cpu_stat "$p" 0))); done
  echo "$t"
}
cpu_s3() { cpu_pid "$(cat "$DEV/s3.pid" 2>/dev/null || echo 0)"; }
cpu_redis() { cpu_pid "$(cat "$DEV/redis.pid" 2>/dev/null || echo 0)"; }
cpu_ms() { echo $(($1 * 1000 / CPU_HZ)); }

# A bench's figures are only worth its machine's quiet: worker processes left from an earlier
# run (a script killed before its own kill) each probe S3 every 10 s, and on s3rver with
# thousands of objects 15 of them burned 0.4 s of CPU per second (stop 42). Sourcing this
# says so on stderr before anything is measured.
if stray=$(pgrep -f '(^|/)backup-worker( |$)' 2>/dev/null) && [ -n "$stray" ]; then
  echo "bench: $(wc -w <<<"$stray") backup-worker process(es) already running ($(tr '\n' ' ' <<<"$stray")): figures taken beside them are not this machine's; stop them first" >&2
fi
