#!/usr/bin/env bash
# test_redis_cluster: the worker on a real Redis Cluster on loopback (3 masters, 3 replicas,
# cluster-node-timeout 2 s), REDIS_PREFIX with a {hash tag}:
#  1. pointed at a master that does not own the queue's slot: it finds the owner (the log says
#     so) and runs pings and backups
#  2. a prefix without a hash tag is refused by name (its keys would span slots)
#  3. the owning master killed with kill -9 while 50 backups run: its replica takes over, the
#     worker finds it, and every job completes exactly once (one backup_metadata row per job)
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null
unset REDISCLI_AUTH # the cluster below has no password (the lane's Redis has one)

# ---- the cluster ----
# a node's cluster bus listens on its port + 10000: both below the kernel's ephemeral range
# (32768 on: a client socket there would hold the bus port), free, and not chosen twice
cluster_port() {
  local p
  while :; do
    p=$((12000 + RANDOM % 9000))
    [[ " ${ports[*]} " == *" $p "* ]] && continue
    (: >"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    (: >"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null && continue
    echo "$p"
    return
  done
}
ports=()
for i in 1 2 3 4 5 6; do
  p=$(cluster_port)
  ports+=("$p")
  mkdir -p "$tmp/n$p"
  redis-server --port "$p" --cluster-enabled yes --cluster-config-file "$tmp/n$p/nodes.conf" \
    --cluster-node-timeout 2000 --save '' --appendonly no --dir "$tmp/n$p" >"$tmp/n$p.log" 2>&1 &
  pids+=($!)
  eval "PID_n$p=$!"
done
for p in "${ports[@]}"; do wait_until 10 grep -q "Ready to accept" "$tmp/n$p.log" || bad "node $p did not start"; done
hosts=()
for p in "${ports[@]}"; do hosts+=("127.0.0.1:$p"); done
redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes >"$tmp/create.log" 2>&1 ||
  bad "redis-cli --cluster create failed: $(tail -3 "$tmp/create.log")"
cluster_ok() { for p in "$@"; do [ "$(redis-cli -p "$p" CLUSTER INFO | tr -d '\r' | grep cluster_state)" = cluster_state:ok ] || return 1; done; }
wait_until 20 cluster_ok "${ports[@]}" || bad "the cluster did not become ok"

P="{tcl$$}"
SLOT=$(redis-cli -p "${ports[0]}" CLUSTER KEYSLOT "$P")
owner() { # the port of the master that serves $SLOT now, asked of node $1
  redis-cli -p "$1" CLUSTER NODES | tr -d '\r' | awk -v s="$SLOT" '$3 ~ /master/ && $3 !~ /fail/ {
    for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1];
      if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) { split($2, a, "[:@]"); print a[2] } } }'
}
export -f owner
export SLOT
OWNER=$(owner "${ports[0]}")
OTHER=""
for p in "${ports[@]}"; do
  o=$(redis-cli -p "$p" ROLE | head -1 | tr -d '\r')
  [ "$o" = master ] && [ "$p" != "$OWNER" ] && { OTHER=$p; break; }
done
check "a master owns the queue's slot, another does not" "yes" "$([ -n "$OWNER" ] && [ -n "$OTHER" ] && echo yes)"
# the queue's Redis for this test: any node, redirections followed
R() { redis-cli -c -p "$RCLUSTER" "$@"; }
export -f R
export RCLUSTER=$OTHER

# ---- 1. the worker pointed at a node that does not own the slot ----
start_worker w1 "REDIS_URL=redis://127.0.0.1:$OTHER/0" BACKUP_NOTIFY=false JOB_VISIBILITY_TIMEOUT=5s
expect "it finds the slot's master itself" grep -q "the slot of the queue is served by 127.0.0.1:$OWNER" "$tmp/w1.log"
enqueue cl-p1 type ping
expect "a ping runs" done_ok cl-p1
USERS=(4e900001-0000-4000-8000-0000000000c1 4e900001-0000-4000-8000-0000000000c2
  4e900001-0000-4000-8000-0000000000c3 4e900001-0000-4000-8000-0000000000c4
  4e900001-0000-4000-8000-0000000000c5)
fresh_user "${USERS[@]}"
for u in "${USERS[@]}"; do "$ROOT/tools/datagen" --user "$u" --orders 30 --seed "$u" >/dev/null; done
enqueue cl-b0 type backup user_id "${USERS[0]}" mode full
expect "a backup runs" done_ok cl-b0

# ---- 2. a prefix without a hash tag ----
env REDIS_PREFIX="tcl$$" WORKER_HTTP_PORT=0 "REDIS_URL=redis://127.0.0.1:$OTHER/0" "$WORKER" >"$tmp/notag.log" 2>&1 &
pids+=($!)
expect "a prefix without a hash tag: refused, named" wait_until 10 grep -q "REDIS_PREFIX must hold a hash tag" "$tmp/notag.log"
kill "${pids[-1]}" 2>/dev/null

# ---- 3. the owning master killed while backups run ----
jobs=()
for r in 1 2 3 4 5 6 7 8 9 10; do
  for u in "${USERS[@]}"; do
    id="cl-f$r-${u: -2}"
    jobs+=("$id")
    enqueue "$id" type backup user_id "$u" mode full
  done
done
wait_until 30 bash -c "[ \"\$(R HGET '$P:job:${jobs[2]}' status)\" = completed ]" || bad "no backup completed before the kill"
eval "kill -9 \$PID_n$OWNER"
expect "the replica takes the slot over" wait_until 30 bash -c "o=\$(owner $OTHER); [ -n \"\$o\" ] && [ \"\$o\" != $OWNER ]"
NEW=$(owner "$OTHER")
export RCLUSTER=$OTHER
all_ended() { for j in "${jobs[@]}"; do s=$(R HGET "$P:job:$j" status); [ "$s" = completed ] || [ "$s" = dead ] || return 1; done; }
expect "every job ends" wait_until 120 all_ended
done_n=0
for j in "${jobs[@]}"; do [ "$(R HGET "$P:job:$j" status)" = completed ] && done_n=$((done_n + 1)); done
check "every one of the ${#jobs[@]} backups completed" "${#jobs[@]}" "$done_n"
ids=$(printf "'%s'," "${jobs[@]}")
check "each exactly once (one backup_metadata row per job)" "${#jobs[@]} ${#jobs[@]}" \
  "$(q "SELECT count(*) || ' ' || count(DISTINCT job_id) FROM backup_metadata WHERE job_id IN (${ids%,}) AND status = 'completed'")"
expect "the worker found the promoted replica (and is connected to it)" bash -c \
  "grep -qE '(served by|reconnected to) 127.0.0.1:$NEW' '$tmp/w1.log' && redis-cli -p $NEW CLIENT LIST | grep -q 'name=backup-worker'"
stop_worker w1 >/dev/null
finish
