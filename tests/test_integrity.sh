#!/usr/bin/env bash
# test_integrity: the ways issue 29 found to lose a row without an error, each as it was found.
#  1. an order moved to another user: the new owner's incremental holds its items, and both
#     owners' chains restore exactly; the old owner's differential stays restorable after the
#     new owner deletes one of the moved order's items
#  2. TRUNCATE (alone, CASCADE, inside a transaction that inserts again) is tracked: a
#     change-only restore puts the rows back; an incremental taken after it restores none
#  3. migrations applied again change nothing: no trigger re-created, restores stay change-only
#  4. a restore racing the application: one application transaction (an order deleted with its
#     items, two others updated) that commits while the restore waits for a row held by another
#     session is wholly before the restore or wholly after it, never half; no error reaches the
#     application
#  5. under BACKUP_ENCRYPTION=required a cleartext backup (planted, or from before encryption) is
#     refused by restore and verify before anything is read, and reindex records it refused
#  6. a restore keeps the worker's own notifications newer than the backup (the record of the
#     user's later backups), and adds one saying it restored
#  7. reindex refuses an object whose own header names another user's backup
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

D=1e570001-0000-4000-8000-0000000000d1
E=1e570002-0000-4000-8000-0000000000e2
forget_encrypted_at_exit "$D" "$E"
fresh_user "$D" "$E"
for u in $D $E; do
  q "INSERT INTO profiles (id, email) VALUES ('$u', '$u@example.com');
     INSERT INTO clients (user_id, name) VALUES ('$u', 'c');
     INSERT INTO orders (user_id, number, total) SELECT '$u', n, n FROM generate_series(1, 3) n;
     INSERT INTO order_items (order_id, quantity, unit_price)
       SELECT o.id, k, k FROM orders o, generate_series(1, 3) k WHERE o.user_id = '$u';
     INSERT INTO notifications (user_id, type, title) SELECT '$u', 'info', 'n' || k FROM generate_series(1, 5) k" >/dev/null
done
backup() { # JOB USER MODE: a backup, waited for; prints its id
  enqueue "$1" type backup user_id "$2" mode "$3"
  done_ok "$1" || { bad "backup $1 did not complete: $(field "$1" error)"; return 1; }
  field "$1" backup_id
}
restore() { # JOB USER BACKUP_ID
  enqueue "$1" type restore user_id "$2" backup_id "$3"
  done_ok "$1" 90 || { echo "     restore $1: $(field "$1" error)"; return 1; }
}
P=ti$$a
start_worker w1 BACKUP_NOTIFY=false

# ---- 1. an order moved between users ----
FD=$(backup m1 "$D" full)
FE=$(backup m2 "$E" full)
O=$(q "SELECT id FROM orders WHERE user_id = '$D' ORDER BY number LIMIT 1")
q "UPDATE orders SET user_id = '$E', client_id = (SELECT id FROM clients WHERE user_id = '$E') WHERE id = '$O'" >/dev/null
U=$E state e1
IE=$(backup m3 "$E" incremental)
check "the new owner's incremental holds the moved order's 3 items" "1 3" \
  "$(q "SELECT row_counts->>'orders', row_counts->>'order_items' FROM backup_metadata WHERE id = '$IE'" | tr '|' ' ')"
U=$D state d1
ID=$(backup m4 "$D" incremental)
q "DELETE FROM orders WHERE user_id = '$E'; DELETE FROM notifications WHERE user_id = '$E'" >/dev/null
expect "restore of the new owner's chain completes" restore m5 "$E" "$IE"
check "…with the moved order and its items" none "$(U=$E differs e1)"
q "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$D')" >/dev/null
expect "restore of the old owner's chain completes" restore m6 "$D" "$ID"
check "…exactly its rows at its incremental" none "$(U=$D differs d1)"
# the old owner's differential lists the order deleted; the new owner then deletes one of its items
A=$D B=$E
FA=$(backup m7 "$A" full)
X=$(q "SELECT id FROM orders WHERE user_id = '$A' ORDER BY number LIMIT 1")
q "UPDATE orders SET user_id = '$B', client_id = NULL WHERE id = '$X'" >/dev/null
U=$A state a1
DA=$(backup m8 "$A" differential)
q "DELETE FROM order_items WHERE id = (SELECT id FROM order_items WHERE order_id = '$X' ORDER BY quantity LIMIT 1)" >/dev/null
expect "the old owner's differential is restorable after the new owner deletes a moved item" restore m9 "$A" "$DA"
check "…exactly its rows at the differential" none "$(U=$A differs a1)"

# ---- 2. TRUNCATE ----
U=$D
nd() { q "SELECT count(*) FROM notifications WHERE user_id = '$U'"; }
q "DELETE FROM notifications WHERE user_id = '$U';
   INSERT INTO notifications (user_id, type, title) SELECT '$U', 'info', 'n' || k FROM generate_series(1, 5) k" >/dev/null
T0=$(backup t1 "$U" full)
T1=$(backup t2 "$U" incremental)
q "TRUNCATE notifications" >/dev/null
expect "after TRUNCATE, a restore of the incremental completes" restore t3 "$U" "$T1"
check "…the 5 notifications are back" 5 "$(nd)"
check "…counted inserted" 5 "$(field t3 result | jq -r .tables.notifications.inserted)"
q "TRUNCATE notifications" >/dev/null
T2=$(backup t4 "$U" incremental)
q "INSERT INTO notifications (user_id, type, title) VALUES ('$U', 'info', 'later')" >/dev/null
expect "an incremental taken after a TRUNCATE restores" restore t5 "$U" "$T2"
check "…no notification (not the base's)" 0 "$(nd)"
state t6
T6=$(backup t6 "$U" incremental)
q "TRUNCATE orders CASCADE" >/dev/null
expect "after TRUNCATE ... CASCADE, a restore completes" restore t7 "$U" "$T6"
check "…orders and their items back" none "$(differs t6)"
q "BEGIN; INSERT INTO notifications (user_id, type, title) VALUES ('$U', 'info', 'before');
   TRUNCATE notifications; INSERT INTO notifications (user_id, type, title) VALUES ('$U', 'info', 'after'); COMMIT" >/dev/null
state t8
T8=$(backup t8 "$U" incremental)
q "DELETE FROM notifications WHERE user_id = '$U'" >/dev/null
expect "a TRUNCATE inside a transaction that inserts again: restore completes" restore t9 "$U" "$T8"
check "…only the row written after it" "none after" "$(differs t8) $(q "SELECT string_agg(title, ',') FROM notifications WHERE user_id = '$U'")"

# ---- 3. migrations applied again ----
TRIG() { q "SELECT md5(string_agg(tgname || xmin::text, ',' ORDER BY tgname)) FROM pg_trigger WHERE tgname LIKE '%_backup_%'"; }
before=$(TRIG)
"$BW_DEVENV" migrate >/dev/null
"$CTL" migrate >/dev/null 2>&1
check "migrations applied again re-create no trigger" "$before" "$(TRIG)"
check "…and are recorded once each" "$(ls "$(dirname "${BASH_SOURCE[0]}")"/../proto/sql/[0-9]*.sql | wc -l)" \
  "$(q "SELECT count(*) FROM backup_schema_migrations")"
q "UPDATE notifications SET read = true WHERE user_id = '$U'" >/dev/null
expect "a restore of a backup taken before the migrations ran again completes" restore g1 "$U" "$T8"
check "…staging only what changed since (change-only restores still on)" 1 "$(field g1 result | jq -r .staged)"

# ---- 4. a restore racing the application ----
U=$E
q "DELETE FROM orders WHERE user_id = '$U';
   INSERT INTO orders (user_id, number, total, notes) SELECT '$U', n, n, 'orig' FROM generate_series(1, 4) n;
   INSERT INTO order_items (order_id, quantity, unit_price)
     SELECT o.id, k, k FROM orders o, generate_series(1, 3) k WHERE o.user_id = '$U'" >/dev/null
state r0
R0=$(backup r1 "$U" full)
ord() { q "SELECT id FROM orders WHERE user_id = '$U' AND number = $1"; }
X=$(ord 1) W=$(ord 2) V=$(ord 3)
q "UPDATE orders SET notes = 'changed' WHERE id IN ('$X', '$W')" >/dev/null
Z=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$U', 99, 99) RETURNING id")
# another session holds Z (which the restore must delete) for 4 s
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "BEGIN; SELECT id FROM orders WHERE id = '$Z' FOR UPDATE;
  SELECT pg_sleep(4); COMMIT" >/dev/null 2>&1 &
HOLD=$!
sleep 0.5
enqueue r2 type restore user_id "$U" backup_id "$R0"
sleep 1.5
# meanwhile the application, in one transaction: X deleted (its items by cascade), W and V updated
app_rc=0
q "BEGIN; DELETE FROM orders WHERE id = '$X'; UPDATE orders SET notes = 'app' WHERE id IN ('$W', '$V'); COMMIT" \
  >"$tmp/app.out" 2>&1 || app_rc=$?
wait $HOLD
check "the application's transaction committed (no deadlock, no error)" "0:" "$app_rc:$(cat "$tmp/app.out")"
expect "the restore completes" done_ok r2 90
before=$(differs r0)
after=$(q "SELECT (SELECT count(*) FROM orders WHERE id = '$X') || ' ' || (SELECT count(*) FROM order_items WHERE order_id = '$X')
  || ' ' || (SELECT string_agg(notes, ',' ORDER BY number) FROM orders WHERE id IN ('$W', '$V'))")
if [ "$before" = none ]; then
  ok "the application's transaction is wholly before the restore: every row is the backup's"
elif [ "$after" = "0 0 app,app" ]; then
  ok "the application's transaction is wholly after the restore: X gone with its items, W and V updated"
else
  bad "the application's transaction is half applied: differs from the backup: $before; X rows, X items, W,V notes: $after"
fi

# ---- 5. a cleartext backup under required encryption ----
U=$D
state c0
C0=$(backup c1 "$U" full) # w1 has no key: cleartext, as a planted object would be
K1=$(head -c 32 /dev/urandom | base64)
P=ti$$b
start_worker w2 BACKUP_NOTIFY=false BACKUP_ENCRYPTION=required "BACKUP_ENCRYPTION_KEYS=k1:$K1"
q "UPDATE notifications SET title = 'changed' WHERE user_id = '$U'" >/dev/null
state c2
enqueue c3 type restore user_id "$U" backup_id "$C0"
wait_until 30 status_is c3 dead || bad "the restore of a cleartext backup did not end dead"
expect "required encryption: a cleartext backup's restore is refused, naming why" \
  grep -q "is not encrypted, and BACKUP_ENCRYPTION=required refuses" <<<"$(field c3 error)"
check "…nothing changed" none "$(differs c2)"
enqueue c4 type verify backup_id "$C0"
wait_until 30 status_is c4 dead || bad "the verify of a cleartext backup did not end dead"
check "…verify records it failed, naming why" "failed yes" \
  "$(q "SELECT verify_status FROM backup_metadata WHERE id = '$C0'") $(grep -q 'is not encrypted' <<<"$(field c4 error)" && echo yes)"
q "DELETE FROM backup_metadata WHERE id = '$C0'" >/dev/null
env BACKUP_ENCRYPTION=required "BACKUP_ENCRYPTION_KEYS=k1:$K1" "$CTL" reindex "$U" >"$tmp/reindex.out" 2>&1
check "…reindex records the cleartext object refused" "failed|refused: not encrypted, and BACKUP_ENCRYPTION=required" \
  "$(q "SELECT status, error FROM backup_metadata WHERE id = '$C0'")"
enqueue c5 type restore user_id "$U" backup_id "$C0"
wait_until 30 status_is c5 dead || bad "the restore of a refused backup did not end dead"
check "…and no restore takes it" none "$(differs c2)"

# ---- 6. the worker's own notifications ----
U=$E
P=ti$$c
start_worker w3 # BACKUP_NOTIFY on (the default)
N1=$(backup n1 "$U" full)
N2=$(backup n2 "$U" incremental)
check "two backups, two notifications of the worker's" 2 \
  "$(q "SELECT count(*) FROM notifications WHERE user_id = '$U' AND type = 'backup_completed'")"
expect "restore of the older backup completes" restore n3 "$U" "$N1"
check "…the notification of the newer backup is kept" 1 \
  "$(q "SELECT count(*) FROM notifications WHERE user_id = '$U' AND type = 'backup_completed' AND data->>'backup_id' = '$N2'")"
check "…and one says the restore" 1 \
  "$(q "SELECT count(*) FROM notifications WHERE user_id = '$U' AND type = 'restore_completed' AND data->>'backup_id' = '$N1'")"

# ---- 7. reindex and an object's own header ----
# D's object copied under E's key, with a manifest that claims it is E's backup
SRC=$(q "SELECT id || ' ' || s3_key FROM backup_metadata WHERE user_id = '$D' AND status = 'completed' AND codecs = '{gzip}' ORDER BY created_at LIMIT 1")
SID=${SRC% *} SKEY=${SRC#* }
FAKE=backup-$E-9999999999999
FKEY=backups/$E/$FAKE.json.gz
s3 s3 cp "s3://$S3_BUCKET/$SKEY" "s3://$S3_BUCKET/$FKEY" --quiet
s3 s3 cp "s3://$S3_BUCKET/$SKEY.manifest.json" - | jq -c --arg b "$FAKE" --arg u "$E" --arg k "$FKEY" \
  '.backup_id = $b | .user_id = $u | .key = $k' | s3 s3 cp - "s3://$S3_BUCKET/$FKEY.manifest.json" --quiet
out=$("$CTL" reindex "$E" 2>&1)
expect "reindex refuses an object whose header names another user's backup" \
  grep -q "$FKEY.manifest.json: the object's own header names backup '$SID' of user '$D'" <<<"$out"
check "…and records nothing of it" 0 "$(q "SELECT count(*) FROM backup_metadata WHERE id = '$FAKE'")"

q "DROP TABLE IF EXISTS snap_a1, snap_c0, snap_c2, snap_d1, snap_e1, snap_now, snap_r0, snap_t6, snap_t8" >/dev/null
finish
