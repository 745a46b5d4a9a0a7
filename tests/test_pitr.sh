#!/usr/bin/env bash
# test_pitr: restore of one user to a point in time (restore with `at`, proto/sql/022) from a
# base backup and the change segments captured from the WAL (BACKUP_TRACKING=wal).
# The user's rows are recorded at known instants while a series of hard transactions runs (a
# transaction open across the base's snapshot, an order moved to another user, a TRUNCATE, a
# key deleted and inserted again, an update that leaves a TOASTed value unchanged, an
# incremental in between); a restore to each instant gives exactly those rows; --dry-run
# previews and writes nothing; a point before the oldest backup, in the future, inside a gap, or
# given with a backup id is refused naming why; a damaged segment is refused before anything is
# written; a restore to `at` while the application keeps writing other rows is exact.
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL REDIS_URL BW_DEVENV BW_MOTO_ENDPOINT
"$BW_DEVENV" migrate
P=tpitr$$
export PGOPTIONS="-c synchronous_commit=on -c client_min_messages=warning"
A=c1c1c1c1-0000-4000-8000-00000000000a
B=c1c1c1c1-0000-4000-8000-00000000000b
U=$A

restore_lane() {
  capture_off
  q "DROP TABLE IF EXISTS snap_now, snap_t0, snap_t1, snap_t2, snap_t3, snap_t4, snap_t5,
     snap_t6, snap_t7, snap_t8, snap_t9, snap_t10, snap_before_t3, snap_before_damage" >/dev/null 2>&1
}
on_exit_hooks+=(restore_lane)
restore_lane
capture_fresh
fresh_user "$A" "$B"
q "INSERT INTO profiles (id, email) VALUES ('$A', 'a@pitr.test'), ('$B', 'b@pitr.test')" >/dev/null
O1=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$A', 1, 10) RETURNING id")
q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O1', 1, 5)" >/dev/null
C1=$(q "INSERT INTO clients (user_id, name, notes) VALUES ('$A', 'toast',
       (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 800) g)) RETURNING id")
q "INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'x', 'n1')" >/dev/null

"$CTL" tracking wal >/dev/null || bad "tracking wal"
W="BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s"
# shellcheck disable=SC2086
start_worker w1 $W
wait_until 15 grep -q "capture: streaming from" "$tmp/w1.log" || bad "the capture did not start"

bk() { REDIS_PREFIX=$P "$CTL" backup "$A" "$@" --wait --json 2>>"$tmp/bk.err" | jq -r .backup_id; }
# now: the database's clock, after a commit (microseconds, UTC)
now() { q "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"; }
# mark N: the instant tN after the last commit, and the user's rows then (snap_tN)
mark() {
  sleep 0.05
  eval "T$1=\$(now)"
  state "t$1"
  sleep 0.05
}
# restore_at AT [options]: the restore job's JSON
restore_at() {
  local at=$1; shift
  REDIS_PREFIX=$P "$CTL" restore "$A" --at "$at" "$@" --wait --json --timeout 90 2>"$tmp/r.err"
}
# only the application's notifications are compared: the worker's own (backup_completed,
# restore_completed) outlive a restore and are written by it
eval "lib_$(declare -f filter)"
filter() { if [ "$1" = notifications ]; then echo "user_id = '$2' AND type = 'x'"; else lib_filter "$@"; fi; }

# ---- 1. the base, with a transaction open across its snapshot ----
mark 0
psql -X -q "$DATABASE_URL" -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<SQL &
BEGIN;
INSERT INTO orders (user_id, number, total) VALUES ('$A', 77, 77);
SELECT pg_sleep(4);
COMMIT;
SQL
OPEN=$!
sleep 1
F1=$(bk)
check "a full base while a transaction is open" full "$(q "SELECT type FROM backup_metadata WHERE id = '$F1'")"
check "... its snapshot's time and WAL position recorded" tt \
  "$(q "SELECT (snapshot_at IS NOT NULL)::text || '' || (snapshot_lsn IS NOT NULL)::text FROM backup_metadata WHERE id = '$F1'" | sed 's/true/t/g')"
wait "$OPEN"
mark 1 # the open transaction committed after the base: its order is in no backup

# ---- 2. the hard cases, one instant after each ----
q "UPDATE orders SET total = 11, notes = 'second' WHERE id = '$O1';
   INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O1', 2, 6)" >/dev/null
mark 2
O2=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$A', 2, 20) RETURNING id")
q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O2', 3, 7), ('$O2', 4, 8)" >/dev/null
mark 3
q "UPDATE orders SET user_id = '$B' WHERE id = '$O2'" >/dev/null # moved, items and all
mark 4
# a key deleted and inserted again, and an update that keeps the TOASTed notes unchanged
q "BEGIN; DELETE FROM orders WHERE id = '$O1';
   INSERT INTO orders (id, user_id, number, total) VALUES ('$O1', '$A', 1, 99); COMMIT" >/dev/null
q "UPDATE clients SET name = 'renamed' WHERE id = '$C1'" >/dev/null
I1=$(bk --incremental)
mark 5
q "TRUNCATE notifications" >/dev/null
q "INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'x', 'after truncate')" >/dev/null
q "UPDATE clients SET vip = true WHERE id = '$C1'" >/dev/null
mark 6
# two transactions in quick succession, then the point between them
q "UPDATE orders SET total = 100 WHERE id = '$O1'" >/dev/null
mark 7
q "UPDATE orders SET total = 101 WHERE id = '$O1'" >/dev/null
mark 8
sleep 0.5
# (full: the moved order's items since the base name no keys, proto/sql/020)
check "a second backup between" completed "$(q "SELECT status FROM backup_metadata WHERE id = '$I1'")"

# ---- 3. restores to each instant, newest first (each starts from the state the last left) ----
for n in 8 7 6 5 4 2 1; do
  eval "at=\$T$n"
  out=$(restore_at "$at")
  check "restore to t$n completes" completed "$(jq -r .status <<<"$out")"
  [ "$(jq -r .status <<<"$out")" = completed ] || { cat "$tmp/r.err"; jq -r .error <<<"$out"; }
  check "... the user's rows are as they were at t$n" none "$(differs "t$n")"
done
# t3 had the order that moved to B since: A's restore would take B's row, and is refused
state before_t3
out=$(restore_at "$T3")
check "restore to t3 (an order of A's then, B's now) is refused" dead "$(jq -r .status <<<"$out")"
expect "... naming the other user's rows" grep -q "belong to rows of another user" <<<"$(jq -r .error <<<"$out")"
check "... nothing was changed" none "$(differs before_t3)"
base_of() { q "SELECT backup_id FROM restore_history WHERE job_id = '$1'"; }
out=$(restore_at "$T5" --dry-run)
check "a dry run to t5 completes" completed "$(jq -r .status <<<"$out")"
check "... and changes nothing (still at t1)" none "$(differs t1)"
R5=$(jq -r .job_id <<<"$out")
check "... its base is the second backup, made before t5" "$I1" "$(base_of "$R5")"
check "... the history records the point and the cut" "$T5:t" \
  "$(q "SELECT restore_at || ':' || (cut_lsn IS NOT NULL)::text FROM restore_history WHERE job_id = '$R5'" | sed 's/true/t/')"
check "... it would change orders" t "$(jq -r '.result.tables.orders.inserted + .result.tables.orders.updated + .result.tables.orders.deleted > 0' <<<"$out" | sed 's/true/t/')"
# by LSN: the commit LSN the time form cut at
LSN7=$(q "SELECT cut_lsn FROM restore_history WHERE restore_at = '$T7' ORDER BY id DESC LIMIT 1")
out=$(restore_at "$LSN7")
check "a restore to an LSN (t7's cut) completes" completed "$(jq -r .status <<<"$out")"
check "... to t7's rows" none "$(differs t7)"

# ---- 4. refused, naming why ----
out=$(restore_at "$T0")
check "before the oldest backup: refused" dead "$(jq -r .status <<<"$out")"
expect "... naming why" grep -q "before the oldest backup of user $A" <<<"$(jq -r .error <<<"$out")"
out=$(restore_at "2099-01-01T00:00:00Z")
expect "a point in the future is refused" grep -q "is in the future" <<<"$(jq -r .error <<<"$out")"
out=$(REDIS_PREFIX=$P "$CTL" restore "$A" --at "yesterday" 2>&1)
check "a malformed --at: usage error" 2 $?
expect "... naming the forms" grep -q "a time with its offset" <<<"$out"
out=$(REDIS_PREFIX=$P "$CTL" restore "$A" --at "2026-12-07T09:14:00" 2>&1)
check "a time without its offset: refused" 2 $?
R XADD "$P:jobs" '*' type restore user_id "$A" at "$T5" backup_id "$F1" job_id both$$ >/dev/null
wait_until 15 status_is "both$$" dead
expect "backup_id and at together: dead-lettered, naming both" grep -q "both 'backup_id' and 'at'" <<<"$(field "both$$" error)"

# ---- 5. a damaged segment is refused before anything is written ----
state before_damage
SEGKEY=$(q "SELECT s3_key FROM change_segments WHERE user_id = '$A' AND first_commit <= '$T8'
             ORDER BY end_lsn DESC LIMIT 1")
store_get "$SEGKEY" "$tmp/seg.orig"
printf 'x' | cat "$tmp/seg.orig" - >"$tmp/seg.bad"
store_put "$tmp/seg.bad" "$SEGKEY"
out=$(restore_at "$T8")
expect "a segment that fails its SHA-256 is named" grep -q "Change segment checksum verification failed" <<<"$(jq -r .error <<<"$out")"
check "... nothing was changed" none "$(differs before_damage)"
out=$(REDIS_PREFIX=$P "$CTL" verify --user "$A" --wait --json 2>&1)
expect "verify of the user names the damaged segment" grep -q "change segments\? failed verification: Change segment checksum verification failed: $SEGKEY" <<<"$(jq -r .error <<<"$out")"
check "... and records it" failed "$(q "SELECT verify_status FROM change_segments WHERE s3_key = '$SEGKEY'")"
store_put "$tmp/seg.orig" "$SEGKEY"
out=$(REDIS_PREFIX=$P "$CTL" verify --user "$A" --wait --json 2>&1)
check "once put back, verify passes" completed "$(jq -r .status <<<"$out")"
expect "... its note counts the segments" grep -Eq "; [1-9][0-9]* change segments verified \([1-9][0-9]* changes\)" <<<"$(jq -r .note <<<"$out")"
check "... each recorded ok" 0 "$(q "SELECT count(*) FROM change_segments WHERE user_id = '$A' AND verify_status IS DISTINCT FROM 'ok'")"

# ---- 6. a gap after the point's base ----
q "INSERT INTO capture_gaps (reason, last_lsn) VALUES ('test: slot lost', pg_current_wal_lsn())" >/dev/null
sleep 0.2
out=$(restore_at "$(now)")
expect "a point after a gap since its base is refused" grep -q "gap after backup" <<<"$(jq -r .error <<<"$out")"
out=$(restore_at "$T8")
check "... one before the gap still restores" completed "$(jq -r .status <<<"$out")"
check "... exactly" none "$(differs t8)"
q "DELETE FROM capture_gaps WHERE reason = 'test: slot lost'" >/dev/null

# ---- 7. while the application writes other rows ----
(for i in $(seq 1 60); do
   q "INSERT INTO orders (user_id, number, total) VALUES ('$B', $((1000 + i)), $i)" >/dev/null
   sleep 0.05
 done) &
BUSY=$!
out=$(restore_at "$T6")
wait "$BUSY"
check "a restore to t6 while another user writes completes" completed "$(jq -r .status <<<"$out")"
check "... exactly" none "$(differs t6)"
check "... and B's rows were all written" 60 "$(q "SELECT count(*) FROM orders WHERE user_id = '$B' AND number > 1000")"

# ---- 8. retention: cleanup deletes the segments no kept backup needs ----
F3=$(bk)
q "UPDATE backup_metadata SET created_at = created_at - interval '40 days' WHERE id IN ('$F1', '$I1')" >/dev/null
OLDSEG=$(q "SELECT s3_key FROM change_segments WHERE user_id = '$A' ORDER BY end_lsn LIMIT 1")
before=$(q "SELECT count(*) FROM change_segments WHERE user_id = '$A'")
needed() { # the segments F3 needs: those with a transaction its snapshot does not see
  q "SELECT count(*) FROM change_segments s, backup_metadata m WHERE m.id = '$F3' AND s.user_id = '$A'
     AND EXISTS (SELECT 1 FROM unnest(s.xids) x WHERE NOT pg_visible_in_snapshot(
       capture_xid8(x, m.snapshot::pg_snapshot), m.snapshot::pg_snapshot))"
}
need=$(needed)
expect "(the old bases' segments are more than the kept one needs: $before > $need)" test "$before" -gt "$need"
out=$(REDIS_PREFIX=$P "$CTL" cleanup "$A" --retention-days 30 --wait --json 2>&1)
check "cleanup completes" completed "$(jq -r .status <<<"$out")"
check "... the two old bases are deleted" "deleted deleted" \
  "$(q "SELECT string_agg(status, ' ') FROM backup_metadata WHERE id IN ('$F1', '$I1')")"
expect "... and the segments only they needed ($before before, $need needed by the kept base)" \
  test "$(q "SELECT count(*) FROM change_segments WHERE user_id = '$A'")" -eq "$need"
check "... their objects too" no "$(store_exists "$OLDSEG")"
expect "... its note counts them" grep -Eq "[1-9][0-9]* change segments? no kept backup needs deleted" <<<"$(jq -r .note <<<"$out")"
out=$(restore_at "$T8")
expect "a point before the oldest kept backup is now refused" grep -q "before the oldest backup" <<<"$(jq -r .error <<<"$out")"
q "UPDATE orders SET total = 555 WHERE id = '$O1'" >/dev/null
mark 9
out=$(restore_at "$T9")
check "a point after it still restores" completed "$(jq -r .status <<<"$out")"
check "... exactly" none "$(differs t9)"

# ---- 9. the replica: segments copied as they are recorded; a restore reads the replica's
# copy of a segment the primary lost; segments under a KMS key (moto) ----
RB=pitr-replica-$$
curl -s -f -o /dev/null -X PUT "$BW_MOTO_ENDPOINT/$RB" || bad "cannot create the replica bucket in moto"
REPL=(S3_REPLICA_BUCKET=$RB S3_REPLICA_REGION=eu-west-1 S3_REPLICA_FORCE_PATH_STYLE=true
  S3_REPLICA_ENDPOINT=$BW_MOTO_ENDPOINT S3_REPLICA_ACCESS_KEY_ID=replica S3_REPLICA_SECRET_ACCESS_KEY=replica-secret)
kms() { AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --region "${AWS_REGION:-us-east-1}" --endpoint-url "$BW_MOTO_ENDPOINT" kms "$@"; }
ALIAS=alias/bw-pitr-$$
kms create-alias --alias-name "$ALIAS" --target-key-id "$(kms create-key --query KeyMetadata.KeyId --output text)"
KMSENV=("BACKUP_KMS_KEY_ID=$ALIAS" "AWS_KMS_ENDPOINT=$BW_MOTO_ENDPOINT")
forget_encrypted_at_exit "$A" "$B"
stop_worker w1 >/dev/null
# shellcheck disable=SC2086
start_worker w2 $W "${REPL[@]}" "${KMSENV[@]}"
wait_until 15 grep -q "capture: streaming from" "$tmp/w2.log" || bad "the capture did not start again"
q "UPDATE orders SET total = 556 WHERE id = '$O1'" >/dev/null
mark 10
replicated() { [ "$(q "SELECT count(*) FROM change_segments WHERE user_id = '$A' AND first_commit <= '$T10' AND replica_status IS DISTINCT FROM 'completed'")" = 0 ]; }
expect "without a backup, the user's segments reach the replica (the capture's leader copies them)" wait_until 30 replicated
check "... the last one is encrypted under the KMS key, its wrapping in its record" "kms:$ALIAS" \
  "$(q "SELECT key_id FROM change_segments WHERE user_id = '$A' AND wrapped_key IS NOT NULL ORDER BY end_lsn DESC LIMIT 1")"
# the segment the restore to t10 needs most: the last one before it, gone from the primary
SEGKEY=$(q "SELECT s3_key FROM change_segments WHERE user_id = '$A' AND first_commit <= '$T10' ORDER BY end_lsn DESC LIMIT 1")
store_get "$SEGKEY" "$tmp/seg10"
if on_s3; then s3 s3 rm --quiet "s3://$S3_BUCKET/$SEGKEY"; else rm -f "$STORE_DIR/$SEGKEY"; fi
check "(the primary's copy is gone)" no "$(store_exists "$SEGKEY")"
q "UPDATE orders SET total = 557 WHERE id = '$O1'" >/dev/null
out=$(restore_at "$T10")
check "a restore whose segment the primary lost completes from the replica's copy" completed "$(jq -r .status <<<"$out")"
check "... exactly" none "$(differs t10)"
check "... the history says mixed" mixed "$(q "SELECT source FROM restore_history WHERE job_id = '$(jq -r .job_id <<<"$out")'")"
expect "... the log says which" grep -q "change segment $SEGKEY.*reading the replica's copy" "$tmp/w2.log"
store_put "$tmp/seg10" "$SEGKEY"
stop_worker w2 >/dev/null

# ---- 10. rekey: the segments' wrappings rewritten in their records, the KMS key retired ----
K9=$(head -c 32 /dev/urandom | base64)
out=$(env "${KMSENV[@]}" BACKUP_ENCRYPTION_KEYS="k9:$K9" "$CTL" rekey "$A" --to k9 2>&1); rc=$?
check "rekey of the user from KMS to k9: exit 0" 0 "$rc"
expect "... its KMS segments rewrapped" grep -Eq "^rekeyed [0-9]+ backups? and [1-9][0-9]* change segments? under 'k9'; 0 failed" <<<"$out"
check "... every encrypted segment of the user recorded under k9" 0 \
  "$(q "SELECT count(*) FROM change_segments WHERE user_id = '$A' AND 'aes-256-gcm' = ANY (codecs) AND key_id IS DISTINCT FROM 'k9'")"
check "... the objects are not rewritten (the stored bytes are still the recorded ones)" \
  "$(q "SELECT checksum FROM change_segments WHERE s3_key = '$SEGKEY'")" "$(store_cat "$SEGKEY" | sha256sum | cut -d' ' -f1)"
BACKUP_ENCRYPTION_KEYS="k9:$K9" "$CTL" download --decode "$SEGKEY" "$tmp/seg9.jsonl" >/dev/null 2>"$tmp/dl.err"
check "backupctl download --decode opens it with k9 alone (its record's wrapping)" 0 $?
# shellcheck disable=SC2086
start_worker w3 $W "BACKUP_ENCRYPTION_KEYS=k9:$K9"
out=$(restore_at "$T10")
check "a worker with k9 and no KMS restores to t10 through the rekeyed segments" completed "$(jq -r .status <<<"$out")"
check "... exactly" none "$(differs t10)"
stop_worker w3 >/dev/null
finish
