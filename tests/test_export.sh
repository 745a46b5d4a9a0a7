#!/usr/bin/env bash
# test_export: "download my data" (the export job, proto/README.md "Exports"), with a real
# worker, Redis, PostgreSQL and store.
#  1. a full backup exported: a gzip of one plain JSON document under exports/{user}/, its rows
#     exactly the user's rows at the backup (every table), recorded completed with its size,
#     SHA-256 and a day's expiry; the same export id again completes without writing
#  2. an incremental backup's export: its changed rows and deleted keys, its type said
#  3. refused, nothing stored: another user's backup (dead-lettered by the decoder), an export id
#     another user's export holds, a backup that is not completed, a damaged object
#     ("Backup checksum verification failed", the row failed, no object)
#  4. an encrypted backup: exported decrypted by the worker; under BACKUP_ENCRYPTION=required
#     refused unless EXPORT_PLAINTEXT=allowed
#  5. cleanup deletes exports past their day (object and row), keeps the others
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=4e900001-0000-4000-8000-0000000000e1
V=4e900001-0000-4000-8000-0000000000e2
forget_encrypted_at_exit "$U"
fresh_user "$U" "$V"
q "DELETE FROM backup_exports WHERE user_id IN ('$U', '$V')" >/dev/null
store_rm_prefix "exports/$U/"
store_rm_prefix "exports/$V/"
"$ROOT/tools/datagen" --user "$U" --orders 60 --seed exp1 >/dev/null
"$ROOT/tools/datagen" --user "$V" --orders 10 --seed exp2 >/dev/null
P=texp$$
export BACKUP_NOTIFY=false # no notification row written by a backup after its snapshot
K1=$(head -c 32 /dev/urandom | base64)
dead_with() { # JOB TEXT: the job is dead and its error holds TEXT
  wait_until 30 status_is "$1" dead && grep -qF -- "$2" <<<"$(field "$1" error)"
}
# the user's rows of every table as sorted JSON lines, as PostgreSQL prints them (backup_xid is
# the change tracking's own column, which backups leave out)
db_rows() {
  local t
  for t in $TABLES; do
    q "SELECT '$t ' || (to_jsonb(x))::text FROM $t x WHERE $(filter "$t" "$U")" 
  done | jq -S -c -R 'split(" ") as $p | {t: $p[0], r: (.[($p[0] | length) + 1:] | fromjson | del(.backup_xid))}' | sort
}
# an export's rows the same way
export_rows() { # FILE.json.gz
  gunzip -c "$1" | jq -S -c '.tables | to_entries[] | .key as $t | .value[] | {t: $t, r: .}' | sort
}

start_worker w1 "BACKUP_ENCRYPTION_KEYS=k1:$K1" BACKUP_ENCRYPTION_KEY_ID=k1
# ---- 1. a full backup, exported ----
enqueue exp-b1 type backup user_id "$U" mode full
done_ok exp-b1 || bad "backup: $(field exp-b1 error)"
B1=$(field exp-b1 backup_id)
db_rows >"$tmp/db1"
# the backup above is encrypted (a key is set): this lane's first export is of an encrypted one
E1=7a0e0001-0000-4000-8000-000000000001
enqueue exp-e1 type export user_id "$U" backup_id "$B1" export_id "$E1" requested_by "$U"
expect "the export completes" done_ok exp-e1
check "its result names the export, its key and its rows" \
  "$E1 exports/$U/$E1.json.gz $(wc -l <"$tmp/db1")" \
  "$(field exp-e1 result | jq -r '"\(.export_id) \(.key) \(.rows)"')"
store_get "exports/$U/$E1.json.gz" "$tmp/e1.json.gz"
check "a gzip of one JSON document" "pedidolist-export 1 $B1 full $U" \
  "$(gunzip -c "$tmp/e1.json.gz" | jq -r '"\(.format) \(.version) \(.backup_id) \(.backup_type) \(.user_id)"')"
export_rows "$tmp/e1.json.gz" >"$tmp/x1"
expect "its rows are exactly the user's rows at the backup (every table)" cmp -s "$tmp/db1" "$tmp/x1"
check "nothing encrypted in it: the worker decrypted it" 0 "$(gunzip -c "$tmp/e1.json.gz" | grep -c '"aes-256-gcm"')"
check "recorded: completed, size and SHA-256 of the object, a day to live" \
  "completed $(stat -c %s "$tmp/e1.json.gz") $(sha256sum <"$tmp/e1.json.gz" | cut -c1-64) true" \
  "$(q "SELECT status || ' ' || size || ' ' || checksum || ' ' || (expires_at BETWEEN now() + interval '23 hours' AND now() + interval '25 hours') FROM backup_exports WHERE id = '$E1'")"
enqueue exp-e1b type export user_id "$U" backup_id "$B1" export_id "$E1"
expect "the same export id again completes without writing" done_ok exp-e1b
check "…and says so" true "$(field exp-e1b result | jq -r .again)"

# ---- 2. an incremental backup ----
q "UPDATE orders SET notes = 'exportada' WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 3);
   DELETE FROM notifications WHERE id IN (SELECT id FROM notifications WHERE user_id = '$U' ORDER BY id LIMIT 2)" >/dev/null
enqueue exp-b2 type backup user_id "$U" mode incremental
done_ok exp-b2 || bad "incremental: $(field exp-b2 error)"
B2=$(field exp-b2 backup_id)
enqueue exp-e2 type export user_id "$U" backup_id "$B2"
expect "an incremental backup's export completes (its id derived from the job's)" done_ok exp-e2
E2=$(field exp-e2 result | jq -r .export_id)
store_get "exports/$U/$E2.json.gz" "$tmp/e2.json.gz"
check "it holds the changed rows and the deleted keys, and says it is incremental" \
  "incremental $B1 3 exportada 2" \
  "$(gunzip -c "$tmp/e2.json.gz" | jq -r '"\(.backup_type) \(.base_backup_id) \(.tables.orders | length) \(.tables.orders[0].notes) \(.deleted.notifications | length)"')"

# ---- 3. refused ----
enqueue exp-bv type backup user_id "$V" mode full
done_ok exp-bv || bad "backup of V: $(field exp-bv error)"
BV=$(field exp-bv backup_id)
enqueue exp-x1 type export user_id "$U" backup_id "$BV"
expect "another user's backup: dead-lettered by the decoder" dead_with exp-x1 "is not a backup of user $U"
enqueue exp-x2 type export user_id "$V" backup_id "$BV" export_id "$E1"
expect "an export id another user's export holds: refused" dead_with exp-x2 "is taken by another user's export"
check "…and that export is still U's, completed" "$U completed" \
  "$(q "SELECT user_id || ' ' || status FROM backup_exports WHERE id = '$E1'")"
q "UPDATE backup_metadata SET status = 'failed' WHERE id = '$BV'" >/dev/null
enqueue exp-x3 type export user_id "$V" backup_id "$BV"
expect "a backup that is not completed: refused" dead_with exp-x3 "only a completed backup can be exported"
q "UPDATE backup_metadata SET status = 'completed' WHERE id = '$BV'" >/dev/null
KV=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$BV'")
store_get "$KV" "$tmp/v.obj"
cp "$tmp/v.obj" "$tmp/v.bad"
printf '\x01' | dd of="$tmp/v.bad" bs=1 seek=200 conv=notrunc status=none
store_put "$tmp/v.bad" "$KV"
E3=7a0e0001-0000-4000-8000-000000000003
enqueue exp-x4 type export user_id "$V" backup_id "$BV" export_id "$E3"
expect "a damaged object: refused by its checksum" dead_with exp-x4 "Backup checksum verification failed"
check "…recorded failed, with no object" "failed no" \
  "$(q "SELECT status FROM backup_exports WHERE id = '$E3'") $(store_exists "exports/$V/$E3.json.gz")"
store_put "$tmp/v.obj" "$KV"

# ---- 4. encryption required ----
stop_worker w1 >/dev/null
start_worker w2 "BACKUP_ENCRYPTION_KEYS=k1:$K1" BACKUP_ENCRYPTION_KEY_ID=k1 BACKUP_ENCRYPTION=required
enqueue exp-r1 type export user_id "$U" backup_id "$B1"
expect "required: an export is refused, naming EXPORT_PLAINTEXT" dead_with exp-r1 "EXPORT_PLAINTEXT=allowed"
check "…and nothing is stored" "" "$(store_keys "exports/$U/" | tr ' ' '\n' | grep -v -e "$E1" -e "$E2")"
stop_worker w2 >/dev/null
start_worker w3 "BACKUP_ENCRYPTION_KEYS=k1:$K1" BACKUP_ENCRYPTION_KEY_ID=k1 BACKUP_ENCRYPTION=required \
  EXPORT_PLAINTEXT=allowed
enqueue exp-r2 type export user_id "$U" backup_id "$B1"
expect "required with EXPORT_PLAINTEXT=allowed: exported" done_ok exp-r2
E4=$(field exp-r2 result | jq -r .export_id)
store_get "exports/$U/$E4.json.gz" "$tmp/e4.json.gz"
export_rows "$tmp/e4.json.gz" >"$tmp/x4"
expect "…the same rows" cmp -s "$tmp/db1" "$tmp/x4"

# ---- 5. cleanup ----
q "UPDATE backup_exports SET expires_at = now() - interval '1 minute' WHERE id IN ('$E1', '$E2')" >/dev/null
enqueue exp-c1 type cleanup user_id "$U"
expect "cleanup completes" done_ok exp-c1
check "it counts the expired exports" 1 "$(field exp-c1 note | grep -c '2 expired exports deleted')"
check "their objects and rows are gone, the one still in its day is kept" "no no yes 1" \
  "$(store_exists "exports/$U/$E1.json.gz") $(store_exists "exports/$U/$E2.json.gz") $(store_exists "exports/$U/$E4.json.gz") $(q "SELECT count(*) FROM backup_exports WHERE user_id = '$U'")"
stop_worker w3 >/dev/null
q "DELETE FROM backup_exports WHERE user_id IN ('$U', '$V')" >/dev/null
store_rm_prefix "exports/$U/"
store_rm_prefix "exports/$V/"
finish
