#!/usr/bin/env bash
# test_cleanup: the cleanup job against real Redis, PostgreSQL and S3 (s3rver).
# Five backups of one user, aged: full F1 (40 days), incremental I1 (39, on F1), full F2 (35),
# incremental I2 (5, on F2), full F3 (1). Retention 30 days deletes F1 and I1 (objects and
# manifests, rows marked deleted) and keeps F2, which the kept I2 builds on, though it is old
# and not the newest full. A non-owner is refused; a second run deletes nothing; the SQL
# function agrees; scope=all runs every user.
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

C=c1ea0001-0000-4000-8000-00000000000a
O=c1ea0002-0000-4000-8000-00000000000b
D=c1ea0003-0000-4000-8000-00000000000d
for u in $C $O $D; do
  q "DELETE FROM profiles WHERE id = '$u'; DELETE FROM backup_metadata WHERE user_id = '$u'; DELETE FROM change_segments WHERE user_id = '$u'" >/dev/null
  store_rm_prefix "backups/$u/"
done
"$ROOT/tools/datagen" --user "$C" --orders 20 --seed tc1 >/dev/null
"$ROOT/tools/datagen" --user "$O" --orders 5 --seed tc2 >/dev/null
"$ROOT/tools/datagen" --user "$D" --orders 200 --seed tc3 >/dev/null

P=tc$$a
start_worker w1 BACKUP_NOTIFY=false
made() { # JOB MODE AGE_DAYS [USER]: a backup, then aged; prints its id
  enqueue "$1" type backup user_id "${4:-$C}" mode "$2"
  done_ok "$1" || { bad "backup $1 did not complete: $(field "$1" error)"; return 1; }
  local id
  id=$(field "$1" backup_id)
  q "UPDATE backup_metadata SET created_at = now() - interval '$3 days' WHERE id = '$id'" >/dev/null
  q "UPDATE orders SET total = total + 1 WHERE user_id = '$C' AND number = 1" >/dev/null
  echo "$id"
}
F1=$(made f1 full 40)
I1=$(made i1 incremental 39)
F2=$(made f2 full 35)
I2=$(made i2 incremental 5)
F3=$(made f3 full 1)
check "the chain as built" "$F1|$F2" "$(q "SELECT string_agg(base_backup_id, '|' ORDER BY created_at) FROM backup_metadata WHERE id IN ('$I1', '$I2')")"
exists() { store_exists "$1"; }
key() { q "SELECT s3_key FROM backup_metadata WHERE id = '$1'"; }
KF1=$(key "$F1"); KI1=$(key "$I1"); KF2=$(key "$F2")

enqueue nonowner type cleanup user_id "$C" requested_by "$O" retention_days 30
wait_until 30 status_is nonowner dead || bad "a non-owner's cleanup did not fail"
expect "a non-owner's cleanup: forbidden" grep -q "forbidden: $O is not the owner" <<<"$(field nonowner error)"
check "…and nothing expired" 0 "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$C' AND status <> 'completed'")"

enqueue clean1 type cleanup user_id "$C" requested_by "$C" retention_days 30
expect "the owner's cleanup completes" done_ok clean1
check "F1 and I1 deleted; F2 (base of the kept I2), I2, F3 kept" \
  "deleted deleted completed completed completed" \
  "$(q "SELECT string_agg(status, ' ' ORDER BY created_at) FROM backup_metadata WHERE user_id = '$C'")"
check "objects and manifests of F1 and I1 gone" "no no no no" \
  "$(exists "$KF1") $(exists "$KF1.manifest.json") $(exists "$KI1") $(exists "$KI1.manifest.json")"
check "F2's object and manifest still there" "yes yes" "$(exists "$KF2") $(exists "$KF2.manifest.json")"
expect "the note counts them" grep -q "^2 backups deleted (4 objects) for 1 user" <<<"$(field clean1 note)"
enqueue rs type restore user_id "$C" backup_id "$I2"
expect "I2 still restores (its base was kept)" done_ok rs

enqueue clean2 type cleanup user_id "$C" requested_by "$C" retention_days 30
expect "a second cleanup completes" done_ok clean2
expect "…and deletes nothing" grep -q "^0 backups deleted (0 objects)" <<<"$(field clean2 note)"
check "the SQL function agrees: nothing more to expire" 0 "$(q "SELECT cleanup_old_backups(30)")"
check "…and keeps the chain" "completed completed completed" \
  "$(q "SELECT string_agg(status, ' ' ORDER BY created_at) FROM backup_metadata WHERE user_id = '$C' AND status <> 'deleted'")"

enqueue all1 type cleanup scope all retention_days 30
expect "scope=all completes" done_ok all1 120
expect "…over every user with backups" grep -Eq "for [0-9]+ users?" <<<"$(field all1 note)"
check "…leaving this user's kept backups alone" 3 \
  "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$C' AND status = 'completed'")"

# Tombstones: purged once no future incremental can need them (below the newest full's and
# every in-flight backup's base snapshot), kept otherwise.
tomb() { q "SELECT count(*) FROM backup_tombstones WHERE table_name = 'orders' AND row_id = '$1'"; }
OA=$(q "SELECT id FROM orders WHERE user_id = '$C' ORDER BY number DESC LIMIT 1")
q "DELETE FROM orders WHERE id = '$OA'" >/dev/null
F4=$(made f4 full 0)
q "INSERT INTO backup_metadata (id, user_id, type, status, base_backup_id) VALUES ('incremental-$C-1', '$C', 'incremental', 'pending', '$F3')" >/dev/null
enqueue clean3 type cleanup user_id "$C" retention_days 30
expect "cleanup with an in-flight incremental on F3 completes" done_ok clean3
check "…keeps the tombstone F3's incremental still needs" 1 "$(tomb "$OA")"
q "DELETE FROM backup_metadata WHERE id = 'incremental-$C-1'" >/dev/null
OB=$(q "SELECT id FROM orders WHERE user_id = '$C' ORDER BY number DESC LIMIT 1")
q "DELETE FROM orders WHERE id = '$OB'" >/dev/null
enqueue clean4 type cleanup user_id "$C" retention_days 30
expect "cleanup completes" done_ok clean4
check "…purges the tombstone older than the newest full (F4)" 0 "$(tomb "$OA")"
check "…keeps the one deleted after F4" 1 "$(tomb "$OB")"
expect "…and says so in its note" grep -Eq "; [1-9][0-9]* tombstones? purged" <<<"$(field clean4 note)"
enqueue i5 type backup user_id "$C" mode incremental
expect "an incremental after the purge" done_ok i5
check "…still holds the order deleted after its base, and only that one" "[\"$OB\"]" \
  "$(store_cat "$(key "$(field i5 backup_id)")" | gunzip | jq -c .deleted.orders)"
check "the SQL function alone agrees (nothing more of this user's to purge)" 0 \
  "$(q "SELECT backup_tombstones_purge('$C')")"
stop_worker w1

# Verify while a cleanup deletes the same user's backups: no false failure recorded on rows
# being deleted. The user's lock orders the two; a cleanup of every user (no user lock) may
# still overlap a verify, which then skips what is being deleted.
P=tc$$v
start_worker w2 BACKUP_NOTIFY=false WORKER_CONCURRENCY=4
race() { # NAME CLEANUP_FIELDS...: six old fulls and a new one, then verify and cleanup at once
  local name=$1 i; shift
  for i in 1 2 3 4 5 6; do made "$name-old$i" full 40 "$D" >/dev/null; done
  made "$name-new" full 0 "$D" >/dev/null
  enqueue "$name-v" type verify user_id "$D"
  enqueue "$name-c" type cleanup "$@" retention_days 30
  expect "$name: the cleanup completes" done_ok "$name-c" 60
  expect "$name: the verify completes ($(field "$name-v" error))" done_ok "$name-v" 60
  check "$name: no backup recorded as failing verification" 0 \
    "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$D' AND verify_status = 'failed'")"
}
race same user_id "$D"
check "the verify and the cleanup of one user did not overlap: one waited for the other" 1 \
  "$(($(count_events same-v waiting) + $(count_events same-c waiting)))"
race all scope all
# scope=all takes each user's lock as it goes: a user whose job holds it is left alone
for i in 1 2; do made "lk-old$i" full 40 "$D" >/dev/null; done
old_d() { q "SELECT count(*) FROM backup_metadata WHERE user_id = '$D' AND status = 'completed' AND created_at < now() - interval '30 days'"; }
OLD_D=$(old_d)
R SET "$P:lock:user:$D" "another-worker/1-0" PX 60000 >/dev/null
enqueue lk1 type cleanup scope all retention_days 30
expect "scope=all while another job holds a user's lock completes" done_ok lk1 60
expect "…skipping that user, and saying so" grep -q "1 user skipped (another job of theirs ran)" <<<"$(field lk1 note)"
check "…whose old backups are all still there" "$OLD_D" "$(old_d)"
check "…and whose lock is untouched" "another-worker/1-0" "$(R GET "$P:lock:user:$D")"
R DEL "$P:lock:user:$D" >/dev/null
enqueue lk2 type cleanup scope all retention_days 30
expect "once the lock is free, the next scope=all cleans the user" done_ok lk2 60
check "…deleting the old backups" 0 "$(old_d)"
check "…and releasing the lock it took" "" "$(R GET "$P:lock:user:$D")"
stop_worker w2

finish
