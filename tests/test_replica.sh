#!/usr/bin/env bash
# test_replica: every backup copied to a second S3 server (moto as the replica, another region
# and other credentials; s3rver stays the primary), with real worker processes.
#  1. after a backup: object and manifest in the replica with the record's SHA-256,
#     replica_status completed, backupctl list says so
#  2. replica unreachable (a proxy cutting every request): backups complete, copies stay
#     pending; the replica back: every pending copy completes without a new backup
#  3. backupctl replicate --missing copies exactly what is missing; a replicate job for a
#     backup that does not exist is dead-lettered with its reason
#  4. kill -9 of a worker mid-copy: another completes it, and the replica holds the whole object
#  5. the primary object deleted, or a byte flipped in it: restore and verify read the replica
#     and say so (history, status hash, log, record); from=replica forces it; rows exact
#  6. cleanup deletes expired backups in both buckets; with the replica down it waits, the rows
#     stay expired, and it completes once the replica is back
#  7. the primary server unreachable: restore and verify from the replica (a reindexed backup's
#     manifest too); backupctl download falls back, list --s3 --replica and reindex --replica
#     work from the replica alone, restore --from replica
#  8. a primary object that is not its record's is never replicated: refused by name, nothing
#     left in the replica
#  9. server-side copies when both buckets are on one service: moto (its SHA-256 of the copy),
#     s3rver (the copy read back); S3_REPLICA_COPY=stream streams; =server across services is
#     refused at start
# 10. a backup that expires during its copy (a cleanup took it): the copy is removed again
# /metrics (section 2): the replica's state, what waits and since when, copies and bytes.
WORKER=$1
CTL=$(realpath "$2")
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV BW_MOTO_ENDPOINT
"$BW_DEVENV" migrate >/dev/null

U=4e900001-0000-4000-8000-00000000000a
forget_encrypted_at_exit "$U"
RB=replica-$$
q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_metadata WHERE user_id = '$U';
   DELETE FROM change_segments WHERE user_id = '$U'" >/dev/null
s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$U/"
"$ROOT/tools/datagen" --user "$U" --orders 300 --seed rep1 >/dev/null
curl -s -f -o /dev/null -X PUT "$BW_MOTO_ENDPOINT/$RB" || bad "cannot create the replica bucket in moto"
moto() { AWS_ACCESS_KEY_ID=replica AWS_SECRET_ACCESS_KEY=replica-secret aws --region eu-west-1 --endpoint-url "$BW_MOTO_ENDPOINT" "$@"; }
ctl() { env "${REPL[@]}" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "$CTL" "$@"; }
quit() { local pid; eval "pid=\$PID_$1"; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
P=trep$$
export REDIS_PREFIX=$P
REPL=(S3_REPLICA_BUCKET=$RB S3_REPLICA_REGION=eu-west-1 S3_REPLICA_FORCE_PATH_STYLE=true
  S3_REPLICA_ACCESS_KEY_ID=replica S3_REPLICA_SECRET_ACCESS_KEY=replica-secret BACKUP_NOTIFY=false)
rstatus() { q "SELECT coalesce(replica_status, '-') FROM backup_metadata WHERE id = '$1'"; }
replica_is() { [ "$(rstatus "$1")" = "$2" ]; }
out=$(env "${REPL[@]}" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "$CTL" config)
check "backupctl config names the replica's settings, never its secret (issue 29)" \
  "S3_REPLICA_BUCKET=$RB S3_REPLICA_REGION=eu-west-1 S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT S3_REPLICA_CREDENTIALS=its own no-secret" \
  "$(grep -E '^S3_REPLICA_(BUCKET|REGION|ENDPOINT)=' <<<"$out" | tr '\n' ' ')$(grep '^S3_REPLICA_CREDENTIALS' <<<"$out") $(grep -q replica-secret <<<"$out" && echo SECRET || echo no-secret)"
backup() { # JOB: a full backup of U, waited for; prints its id
  enqueue "$1" type backup user_id "$U" mode full
  done_ok "$1" || { bad "backup $1 did not complete: $(field "$1" error)"; return 1; }
  field "$1" backup_id
}
same_copy() { # BACKUP_ID: the replica's object and manifest match the record
  local key sum
  key=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$1'")
  sum=$(q "SELECT checksum FROM backup_metadata WHERE id = '$1'")
  [ "$(moto s3 cp "s3://$RB/$key" - 2>/dev/null | sha256sum | cut -c1-64)" = "$sum" ] &&
    [ "$(moto s3 cp "s3://$RB/$key.manifest.json" - 2>/dev/null | jq -r .sha256)" = "$sum" ]
}

# ---- 1. a backup, then its copy ----
start_worker w1 "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "${REPL[@]}"
B1=$(backup rep-b1)
expect "the copy completes on its own" wait_until 30 replica_is "$B1" completed
expect "object and manifest in the replica, with the record's SHA-256" same_copy "$B1"
check "the replicate job says what it did" "completed object and manifest copied (streamed), SHA-256 checked" \
  "$(field "replicate-$B1" status) $(field "replicate-$B1" note)"
check "replicated_at is set" t "$(q "SELECT replicated_at IS NOT NULL FROM backup_metadata WHERE id = '$B1'")"
check "list: the replica column" completed "$(ctl list "$U" | awk -v id="$B1" '$1 == id {print $(NF - 1)}')"
check "list --json: replica_status" completed "$(ctl list "$U" --json | jq -r --arg id "$B1" '.[] | select(.backup_id == $id) | .replica_status')"
quit w1

# ---- 2. the replica unreachable, then back ----
start_faultproxy "$BW_MOTO_ENDPOINT"
curl -s -X POST --data '*:reset' "http://127.0.0.1:$PX/__always" >/dev/null
HP=$(free_port)
metric() { curl -s "http://127.0.0.1:$HP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
metric_is() { [ "$(metric "$1")" "$2" "$3" ]; }
start_worker w2 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}" WORKER_HTTP_PORT=$HP
B2=$(backup rep-b2)
B3=$(backup rep-b3)
check "replica down: the backups completed anyway" "completed completed" \
  "$(q "SELECT string_agg(status, ' ' ORDER BY id) FROM backup_metadata WHERE id IN ('$B2', '$B3')")"
sleep 2
check "…their copies wait" "pending pending" "$(rstatus "$B2") $(rstatus "$B3")"
# (an attempt first lists the replica's unfinished uploads, with the S3 client's retries: on a
# loaded machine its failure comes after a few seconds)
expect "…the reason is recorded" wait_until 30 bash -c \
  "psql -X -q -t -A '$DATABASE_URL' -c \"SELECT replica_error FROM backup_metadata WHERE id = '$B2'\" | grep -q 'replica of'"
check "metrics: the replica is down" 0 "$(metric 'bw_up{service="replica"}')"
expect "metrics: the waiting copies counted (every worker reads the same from the records)" \
  wait_until 15 metric_is bw_replica_waiting_backups -ge 2
expect "…and the oldest one's age" metric_is bw_replica_oldest_waiting_seconds '>' 0
curl -s -X POST --data '' "http://127.0.0.1:$PX/__always" >/dev/null
expect "the replica back: both copies complete without a new backup" \
  wait_until 60 bash -c "[ \"\$(psql -X -q -t -A '$DATABASE_URL' -c \"SELECT count(*) FROM backup_metadata WHERE id IN ('$B2', '$B3') AND replica_status = 'completed'\")\" = 2 ]"
both_match() { same_copy "$B2" && same_copy "$B3"; }
expect "…and match" both_match
expect "metrics: this worker's copies" metric_is 'bw_replica_copies_total{result="completed"}' -ge 2
expect "…the bytes it copied" metric_is bw_replica_bytes_copied_total -gt 1000
expect "…the failed runs while the replica was down" metric_is 'bw_replica_copies_total{result="failed"}' -ge 1
waiting_is_db() { [ "$(metric bw_replica_waiting_backups)" = "$(q "SELECT count(*) FROM backup_metadata WHERE status = 'completed' AND replica_status = 'pending'")" ]; }
expect "…the waiting count follows the records" wait_until 25 waiting_is_db
check "…the replica is up" 1 "$(metric 'bw_up{service="replica"}')"
check "no other backup was made" 3 "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$U'")"
quit w2

# ---- 3. backfill ----
start_worker w3 "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "${REPL[@]}"
K1=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B1'")
moto s3 rm "s3://$RB/$K1" --quiet
moto s3 rm "s3://$RB/$K1.manifest.json" --quiet
q "UPDATE backup_metadata SET replica_status = NULL, replicated_at = NULL WHERE id = '$B1'" >/dev/null
out=$(ctl replicate --missing "$U" --dry-run)
check "replicate --missing --dry-run: exactly the missing one" "$B1: would be copied to the replica" "$(head -1 <<<"$out")"
out=$(ctl replicate --missing "$U"); rc=$?
check "replicate --missing: exit 0, one copy" "0 enqueued 1 copy to the replica for $U" "$rc $out"
expect "…it completes" wait_until 30 replica_is "$B1" completed
expect "…and matches" same_copy "$B1"
out=$(ctl replicate --missing "$U")
check "nothing missing anymore" "enqueued 0 copies to the replica for $U" "$out"
out=$(ctl replicate --missing --all --dry-run)
# (counted here, not passed to a command: on a database with many users the list is long)
check "--all --dry-run lists every user's missing copies (none of this user's)" 0 "$(grep -c "$U" <<<"$out")"
enqueue rep-none type replicate backup_id "backup-$U-1"
wait_until 30 status_is rep-none dead || bad "a replicate of no backup was not dead-lettered"
check "a replicate of no backup: its reason" "backup backup-$U-1 not found" "$(field rep-none error)"
quit w3

# ---- 4. kill -9 mid-copy ----
curl -s -X POST --data '20000' "http://127.0.0.1:$PX/__rate" >/dev/null # bytes/s to the replica
start_worker w4 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}"
B4=$(backup rep-b4)
wait_until 20 bash -c "[ \"\$(R HGET '$P:job:replicate-$B4' status)\" = running ]" || bad "the copy did not start"
sleep 1
quit w4
check "killed mid-copy: not completed" pending "$(rstatus "$B4")"
curl -s -X POST --data '' "http://127.0.0.1:$PX/__rate" >/dev/null
# what a copy killed mid-way leaves when the object is large: a multipart upload in progress
K4M=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B4'")
moto s3api create-multipart-upload --bucket "$RB" --key "$K4M" >/dev/null
uploads() { moto s3api list-multipart-uploads --bucket "$RB" --prefix "$K4M" | jq '[.Uploads // [] | .[] | select(.Key == "'"$K4M"'")] | length'; }
check "…a multipart upload of it left in the replica" 1 "$(uploads)"
start_worker w5 "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "${REPL[@]}"
expect "another worker completes the copy" wait_until 60 replica_is "$B4" completed
expect "…the replica holds the whole object" same_copy "$B4"
check "…and the upload the killed copy left is aborted (issue 29)" "0 yes" \
  "$(uploads) $(grep -q "aborted 1 multipart upload(s) a previous copy left in the replica" "$tmp/w5.log" && echo yes)"
quit w5

# ---- 5. restore and verify fall back to the replica ----
digest() { q "SELECT md5(string_agg((to_jsonb(x) - 'backup_xid')::text, '' ORDER BY x.id)) FROM orders x WHERE user_id = '$U'"; }
D0=$(digest)
scramble() { q "UPDATE orders SET notes = 'scrambled', total = total + 1 WHERE user_id = '$U'" >/dev/null; }
restored_from() { # JOB BACKUP_ID [field value...]: restore, waited for; prints its history's source
  local j=$1 b=$2; shift 2
  enqueue "$j" type restore user_id "$U" backup_id "$b" "$@"
  done_ok "$j" 60 || { echo "failed: $(field "$j" error)"; return; }
  q "SELECT source FROM restore_history WHERE job_id = '$j'"
}
start_worker w6 "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "${REPL[@]}"
K2=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B2'")
s3 s3 mv "s3://$S3_BUCKET/$K2" "s3://$S3_BUCKET/$K2.saved" --quiet
scramble
check "primary object gone: the restore reads the replica, and its history says so" replica "$(restored_from rmiss "$B2")"
check "…the rows exact" "$D0" "$(digest)"
expect "…the status hash says so" grep -q "^read from the replica: .*NoSuchKey" <<<"$(field rmiss note)"
expect "…and the log" grep -q "the primary copy failed" "$tmp/w6.log"
enqueue vmiss type verify backup_id "$B2"
expect "verify of it passes from the replica" done_ok vmiss
check "…and says so" "1 backup verified, 1 from the replica" "$(field vmiss note)"
expect "…keeping the primary's failure on the record" grep -q "^the primary copy failed (.*); verified from the replica" \
  <<<"$(q "SELECT verify_error FROM backup_metadata WHERE id = '$B2'")"
s3 s3 mv "s3://$S3_BUCKET/$K2.saved" "s3://$S3_BUCKET/$K2" --quiet
K3=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B3'")
s3 s3 cp "s3://$S3_BUCKET/$K3" "$tmp/b3" --quiet
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 1; open(sys.argv[1], 'wb').write(b)" "$tmp/b3"
s3 s3 cp "$tmp/b3" "s3://$S3_BUCKET/$K3" --quiet
scramble
check "a byte flipped in the primary: the restore reads the replica" replica "$(restored_from rflip "$B3")"
check "…the rows exact" "$D0" "$(digest)"
expect "…the reason named" grep -q "Backup checksum verification failed" <<<"$(field rflip note)"
scramble
check "from=replica forces the replica" replica "$(restored_from rforce "$B1" from replica)"
check "…the rows exact" "$D0" "$(digest)"
scramble
check "an intact primary is read first" primary "$(restored_from rprim "$B4")"
check "…the rows exact" "$D0" "$(digest)"
quit w6

# ---- 6. cleanup deletes in both, and waits for a replica that cannot delete ----
in_replica() { moto s3 ls "s3://$RB/$1" >/dev/null 2>&1; }
q "UPDATE backup_metadata SET created_at = now() - interval '40 days' WHERE id IN ('$B1', '$B2')" >/dev/null
KB1=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B1'")
KB2=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B2'")
curl -s -X POST --data '*:reset' "http://127.0.0.1:$PX/__always" >/dev/null
start_worker w7 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}"
enqueue cl1 type cleanup user_id "$U" retention_days 30
expect "replica down: the cleanup waits" wait_until 20 grep -q "not deleted in the replica" "$tmp/w7.log"
check "…the rows stay expired" "expired expired" "$(q "SELECT string_agg(status, ' ' ORDER BY id) FROM backup_metadata WHERE id IN ('$B1', '$B2')")"
expect "…the primary's copies are gone" bash -c "! aws --endpoint-url '$S3_ENDPOINT' s3 ls 's3://$S3_BUCKET/$KB1' | grep -q ."
expect "…the replica's are still there" in_replica "$KB1"
curl -s -X POST --data '' "http://127.0.0.1:$PX/__always" >/dev/null
expect "the replica back: the cleanup completes" done_ok cl1 60
check "…both backups deleted" "deleted deleted" "$(q "SELECT string_agg(status, ' ' ORDER BY id) FROM backup_metadata WHERE id IN ('$B1', '$B2')")"
expect "…their objects and manifests gone from the replica too" bash -c "$(declare -f moto); RB=$RB; ! moto s3 ls 's3://$RB/backups/$U/' --recursive | grep -qE '$B1|$B2'"
expect "…and the kept backups still in both" bash -c "$(declare -f moto); RB=$RB; moto s3 ls 's3://$RB/$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B4'")' | grep -q ."
quit w7

# ---- 7. the primary server unreachable ----
RPX=$PX
DEAD=http://127.0.0.1:1 # the primary server stopped: nothing listens there
pctl() { env "${REPL[@]}" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "S3_ENDPOINT=$DEAD" "$CTL" "$@"; }
start_worker w8 "S3_ENDPOINT=$DEAD" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "${REPL[@]}" JOB_MAX_ATTEMPTS=40
expect "the worker says it runs on the replica alone" wait_until 20 grep -q "ready on the replica alone" "$tmp/w8.log"
scramble
check "primary down: the restore reads the replica" replica "$(restored_from rdown "$B4")"
check "…the rows exact" "$D0" "$(digest)"
enqueue vdown type verify backup_id "$B4"
expect "…verify passes from the replica" done_ok vdown 60
check "…and says so" "1 backup verified, 1 from the replica" "$(field vdown note)"
out=$(pctl download "$B4" "$tmp/dl4" 2>"$tmp/dl4.err"); rc=$?
check "download: the primary down, the replica's copy (exit 0)" 0 "$rc"
expect "…it says so" grep -q "the primary copy failed; reading the replica's" "$tmp/dl4.err"
expect "…and where it read" grep -q "in the replica" <<<"$out"
check "…the bytes are the record's" "$(q "SELECT checksum FROM backup_metadata WHERE id = '$B4'")" "$(sha256sum <"$tmp/dl4" | cut -c1-64)"
pctl download --from primary "$B4" "$tmp/dl4p" 2>/dev/null; rc=$?
check "download --from primary does not fall back" "1 no" "$rc $([ -e "$tmp/dl4p" ] && echo yes || echo no)"
pctl list "$U" --s3 >/dev/null 2>&1; rc=$?
check "list --s3 fails with the primary down" 1 "$rc"
out=$(pctl list "$U" --s3 --replica --json)
check "list --s3 --replica: the kept backups, from the replica's manifests" \
  "$(q "SELECT string_agg(id, ' ' ORDER BY id) FROM backup_metadata WHERE user_id = '$U' AND status = 'completed'")" \
  "$(jq -r '[.[].backup_id] | sort | join(" ")' <<<"$out")"
KEEP=$(q "SELECT string_agg(quote_literal(id), ',') FROM backup_metadata WHERE user_id = '$U' AND status = 'completed'")
NKEEP=$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$U' AND status = 'completed'")
q "DELETE FROM backup_metadata WHERE id IN ($KEEP)" >/dev/null # the database's records lost
out=$(pctl reindex "$U" --replica); rc=$?
check "reindex --replica: the records back from the replica alone" "0 reindexed $U from the replica: $NKEEP backups added, 0 already known, 0 skipped" "$rc $out"
check "…their copies known to be there" "$NKEEP" "$(q "SELECT count(*) FROM backup_metadata WHERE id IN ($KEEP) AND replica_status = 'completed' AND recorded_by = 'reindex'")"
scramble
check "a reindexed backup restores, its manifest read from the replica" replica "$(restored_from rreix "$B4")"
check "…the rows exact" "$D0" "$(digest)"
scramble
out=$(pctl restore "$B3" --from replica --wait --json --timeout 60); rc=$?
check "backupctl restore --from replica" "0 completed" "$rc $(jq -r .status <<<"$out")"
check "…its history says the replica" replica "$(q "SELECT source FROM restore_history WHERE backup_id = '$B3' ORDER BY started_at DESC LIMIT 1")"
check "…the rows exact" "$D0" "$(digest)"
pctl restore "$B3" --from elsewhere >/dev/null 2>&1; rc=$?
check "restore --from: primary or replica only" 2 "$rc"
# the primary down and the replica's copy damaged: an outage, retried, both causes named (issue 29)
K4=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B4'")
moto s3 cp "s3://$RB/$K4" "$tmp/k4" --quiet
cp "$tmp/k4" "$tmp/k4.bad"
printf 'X' | dd of="$tmp/k4.bad" bs=1 seek=200 conv=notrunc 2>/dev/null
moto s3 cp "$tmp/k4.bad" "s3://$RB/$K4" --quiet
enqueue rboth type restore user_id "$U" backup_id "$B4"
expect "primary down, replica's copy damaged: the restore is retried, not dead at its first attempt" \
  wait_until 60 bash -c "[ \"\$(R HGET '$P:job:rboth' attempts)\" -ge 2 ] && [ \"\$(R HGET '$P:job:rboth' status)\" != dead ]"
expect "…its error names both copies" grep -q "\[job rboth\] attempt 1 of 40 failed: .*both copies failed: the primary's: .*Failed to connect.*; the replica's: Backup checksum verification failed" "$tmp/w8.log"
moto s3 cp "$tmp/k4" "s3://$RB/$K4" --quiet
expect "…the replica's copy repaired: the restore completes" done_ok rboth 90
quit w8

# ---- 8. a primary object that is not its record's is never replicated ----
PX=$RPX
curl -s -X POST --data '*:reset' "http://127.0.0.1:$PX/__always" >/dev/null
start_worker w9 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}"
B5=$(backup rep-b5)
quit w9
K5=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B5'")
s3 s3 cp "s3://$S3_BUCKET/$K5" "$tmp/b5" --quiet
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 3] ^= 4; open(sys.argv[1], 'wb').write(b)" "$tmp/b5"
s3 s3 cp "$tmp/b5" "s3://$S3_BUCKET/$K5" --quiet
curl -s -X POST --data '' "http://127.0.0.1:$PX/__always" >/dev/null
start_worker w10 "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "${REPL[@]}"
expect "the copy of a damaged primary object fails" wait_until 30 status_is "replicate-$B5" dead
expect "…named" grep -q "^Backup checksum verification failed: backup $B5 was not replicated" <<<"$(field "replicate-$B5" error)"
check "…the record says failed" failed "$(rstatus "$B5")"
expect "…nothing at its key in the replica" bash -c "$(declare -f moto); ! moto s3 ls 's3://$RB/$K5' | grep -q ."
quit w10

# ---- 9. server-side copies, both buckets on one service ----
MP=mprim-$$ MR=mrepl-$$ SR=srepl-$$
curl -s -f -o /dev/null -X PUT "$BW_MOTO_ENDPOINT/$MP" && curl -s -f -o /dev/null -X PUT "$BW_MOTO_ENDPOINT/$MR" ||
  bad "cannot create the moto buckets"
s3 s3 mb "s3://$SR" >/dev/null || bad "cannot create a second s3rver bucket"
ONE=(S3_ENDPOINT=$BW_MOTO_ENDPOINT S3_BUCKET=$MP S3_REPLICA_BUCKET=$MR S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT
  S3_REPLICA_FORCE_PATH_STYLE=true BACKUP_NOTIFY=false)
in_moto() { # BUCKET BACKUP_ID: the object there has the record's SHA-256
  [ "$(moto s3 cp "s3://$1/$(q "SELECT s3_key FROM backup_metadata WHERE id = '$2'")" - 2>/dev/null | sha256sum | cut -c1-64)" = \
    "$(q "SELECT checksum FROM backup_metadata WHERE id = '$2'")" ]
}
start_worker w11 "${ONE[@]}"
B6=$(backup rep-b6)
expect "moto to moto: the copy completes" wait_until 30 replica_is "$B6" completed
check "…made by the service, its SHA-256 computed by S3" "object and manifest copied server-side, SHA-256 checked (computed by S3)" "$(field "replicate-$B6" note)"
expect "…the replica's object is the record's" in_moto "$MR" "$B6"
quit w11
SAME=(S3_REPLICA_BUCKET=$SR "S3_REPLICA_ENDPOINT=$S3_ENDPOINT" S3_REPLICA_FORCE_PATH_STYLE=true BACKUP_NOTIFY=false)
start_worker w12 "${SAME[@]}"
B7=$(backup rep-b7)
expect "s3rver to s3rver: the copy completes" wait_until 30 replica_is "$B7" completed
check "…made by the service, read back to be hashed" "object and manifest copied server-side, SHA-256 checked (read back)" "$(field "replicate-$B7" note)"
K7=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B7'")
check "…the replica's object is the record's" "$(q "SELECT checksum FROM backup_metadata WHERE id = '$B7'")" "$(s3 s3 cp "s3://$SR/$K7" - | sha256sum | cut -c1-64)"
quit w12
start_worker w13 "${SAME[@]}" S3_REPLICA_COPY=stream
B8=$(backup rep-b8)
expect "S3_REPLICA_COPY=stream: the copy completes" wait_until 30 replica_is "$B8" completed
check "…streamed" "object and manifest copied (streamed), SHA-256 checked" "$(field "replicate-$B8" note)"
quit w13
out=$(env REDIS_PREFIX=$P "${REPL[@]}" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" S3_REPLICA_COPY=server timeout 10 "$WORKER" 2>&1); rc=$?
check "S3_REPLICA_COPY=server across two services: refused at start (exit 2)" 2 "$rc"
expect "…naming the setting" grep -q "S3_REPLICA_COPY: server: the replica must be on the primary's service" <<<"$out"

# ---- 10. a backup expires during its copy ----
PX=$RPX
curl -s -X POST --data '*:reset' "http://127.0.0.1:$PX/__always" >/dev/null
start_worker w14 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}"
B9=$(backup rep-b9)
quit w14
curl -s -X POST --data '' "http://127.0.0.1:$PX/__always" >/dev/null
curl -s -X POST --data '20000' "http://127.0.0.1:$PX/__rate" >/dev/null
start_worker w15 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}"
wait_until 20 grep -q "replicating $B9" "$tmp/w15.log" || bad "the copy of $B9 did not start"
q "UPDATE backup_metadata SET status = 'expired' WHERE id = '$B9'" >/dev/null # a cleanup's mark
expect "expired mid-copy: the job ends" wait_until 60 status_is "replicate-$B9" completed
check "…saying the copy was removed" "the backup expired during its copy: the copy was removed" "$(field "replicate-$B9" note)"
K9=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B9'")
expect "…nothing of it in the replica" bash -c "$(declare -f moto); ! moto s3 ls 's3://$RB/$K9' | grep -q ."
check "…its record not marked replicated" pending "$(rstatus "$B9")"
curl -s -X POST --data '' "http://127.0.0.1:$PX/__rate" >/dev/null
quit w15

# ---- 11. a rekey racing a copy to the replica (issue 29) ----
# The copy reads the manifest under k1 and its PUT to the replica stalls; meanwhile rekey rewraps
# the backup under k2 (the primary's manifest and the record; the replica's copy is not made
# yet). The copy must not complete with the k1 manifest in the replica.
EK1=$(head -c 32 /dev/urandom | base64) EK2=$(head -c 32 /dev/urandom | base64)
PX=$RPX
curl -s -X POST --data '' "http://127.0.0.1:$PX/__clear" >/dev/null
curl -s -X POST --data 'PUT~manifest.json:stall:1' "http://127.0.0.1:$PX/__plan" >/dev/null
start_worker w16 "S3_REPLICA_ENDPOINT=http://127.0.0.1:$PX" "${REPL[@]}" "BACKUP_ENCRYPTION_KEYS=k1:$EK1" \
  S3_STALL_TIMEOUT=60s
B10=$(backup rep-b10)
expect "the copy's manifest PUT stalls" wait_until 30 bash -c \
  "curl -s http://127.0.0.1:$PX/__stats | grep -q '\"faults\":1'"
out=$(env "${REPL[@]}" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "BACKUP_ENCRYPTION_KEYS=k1:$EK1,k2:$EK2" \
  "$CTL" rekey "$U" --to k2 2>&1); rc=$?
check "rekey during the copy: exit 0, the backup rewrapped" "0 k2" "$rc $(q "SELECT key_id FROM backup_metadata WHERE id = '$B10'")"
expect "…it says a copy is in flight (a key not listed is not yet safe to retire)" grep -q "^in flight: .*1 copy to the replica not yet made" <<<"$out"
curl -s -X POST "http://127.0.0.1:$PX/__cut" >/dev/null
expect "the copy completes" wait_until 60 replica_is "$B10" completed
K10=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B10'")
check "…its manifest in the replica is under the record's key (k2), not the one it first read" k2 \
  "$(moto s3 cp "s3://$RB/$K10.manifest.json" - 2>/dev/null | jq -r .key_id)"
out=$(env "${REPL[@]}" "S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT" "BACKUP_ENCRYPTION_KEYS=k1:$EK1,k2:$EK2" \
  "$CTL" rekey "$U" --to k2 2>&1)
expect "rekey again, nothing in flight: it says no key but those listed is needed" \
  grep -q "^nothing in flight" <<<"$out"
quit w16

finish
