# port.sh: sourced by the shell tests.

# free_port: a TCP port no socket holds, below Linux's ephemeral range (32768-60999) so an
# outgoing connection cannot take it before the server binds it (a port from $$ or RANDOM
# alone once met one: the worker exited "cannot listen")
free_port() {
  local p hex
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    printf -v hex ':%04X ' "$p"
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" 'index($2 " ", h) {f = 1} END {exit !f}' ||
      { echo "$p"; return 0; }
  done
  return 1
}
