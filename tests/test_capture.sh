#!/usr/bin/env bash
# test_capture: change capture from the WAL (BACKUP_TRACKING=wal, worker/capture/).
# The worker refuses to start without what it needs, naming it; backupctl tracking wal switches
# an installation (triggers gone, replica identities that name each tenant, the publication, a
# gap); two workers, one leader; every change lands in its tenant's segments as the database
# has it: an item of an order older than the slot (its owner from the slot's snapshot), an
# update whose row equals row_to_json, a delete, an order moved to another user with its items,
# an unchanged TOASTed value carried as "unchanged", TRUNCATE markers, a column added (DDL);
# the leader killed with kill -9 in the middle of a stream: its successor takes over within the
# lease and every transaction is in the segments exactly once; a stale epoch cannot record; a
# quiet database still advances the slot; a slot dropped by hand is a gap; segments encrypted
# with a key set (and read back by backupctl download --decode); PostgreSQL restarted in the
# middle of a stream loses nothing and doubles nothing; a slot invalidated by
# max_slot_wal_keep_size is a gap; tracking triggers switches back.
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL REDIS_URL BW_DEVENV
"$BW_DEVENV" migrate
P=tcap$$
# this test's commits are flushed at once (the devenv's default is asynchronous), so that the
# WAL flushed after them (what a walsender can read) covers them
export PGOPTIONS="-c synchronous_commit=on"
SLOT=backup_capture
A=caca0000-0000-4000-8000-00000000000a
B=caca0000-0000-4000-8000-00000000000b
forget_encrypted_at_exit "$A" "$B"

# the lane's database goes back to triggers whatever happens (other tests expect them)
restore_lane() {
  capture_off
  q "ALTER TABLE clients DROP COLUMN IF EXISTS loyalty; DROP TABLE IF EXISTS capture_noise" \
    >/dev/null 2>&1
  # the owner indexes --replace-owner-indexes dropped (section 2), as 001 makes them
  for t in products clients orders notifications; do
    q "CREATE INDEX IF NOT EXISTS ${t}_user_id_idx ON $t (user_id)" >/dev/null 2>&1
  done
  q "CREATE INDEX IF NOT EXISTS order_items_order_id_idx ON order_items (order_id)" >/dev/null 2>&1
}
on_exit_hooks+=(restore_lane)
restore_lane
capture_fresh
fresh_user "$A" "$B"

wal() { env BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s "$@"; }

# ---- 1. what the worker needs, named at start ----
out=$(wal REDIS_PREFIX=$P "$WORKER" --check-config 2>&1)
check "no publication: exit 2" 2 $?
expect "... naming backupctl tracking wal" grep -q "publication backup_capture is missing (backupctl tracking wal)" <<<"$out"
q "DROP ROLE IF EXISTS bw_norepl; CREATE ROLE bw_norepl LOGIN PASSWORD 'norepl'" >/dev/null
NOREPL_URL=$(sed -E 's#^(postgres(ql)?://)[^@]*@#\1bw_norepl:norepl@#' <<<"$DATABASE_URL")
out=$(wal DATABASE_URL=$NOREPL_URL "$WORKER" --check-config 2>&1)
check "a role without REPLICATION: exit 2" 2 $?
expect "... naming what to grant" grep -q "role bw_norepl lacks REPLICATION (ALTER ROLE bw_norepl REPLICATION" <<<"$out"
q "DROP ROLE bw_norepl" >/dev/null
out=$(env BACKUP_TRACKING=binlog "$WORKER" --check-config 2>&1)
check "BACKUP_TRACKING=binlog refused" 2 $?
expect "... naming the variable" grep -q "BACKUP_TRACKING: 'binlog' is not triggers or wal" <<<"$out"

# ---- 2. backupctl tracking wal ----
# data that exists before the slot: the owners of its orders come from the slot's snapshot
q "INSERT INTO profiles (id, email) VALUES ('$A', 'a@capture.test'), ('$B', 'b@capture.test')" >/dev/null
O1=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$A', 1, 10) RETURNING id")
O2=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$A', 2, 20) RETURNING id")
O2ITEMS=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O2', 1, 5), ('$O2', 2, 7.5)
             RETURNING id" | tr '\n' ' ')
q "INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'x', 'old'), ('$B', 'x', 'old')" >/dev/null
C1=$(q "INSERT INTO clients (user_id, name, notes) VALUES ('$A', 'toast',
       (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 800) g)) RETURNING id")
# a backup of A while triggers track (its snapshot precedes the switch below)
bk() { REDIS_PREFIX=$P "$CTL" backup "$A" "$@" --wait --json 2>>"$tmp/bk.err" | jq -r .backup_id; }
btype() { q "SELECT type || coalesce(':' || base_backup_id, '') FROM backup_metadata WHERE id = '$1'"; }
start_worker wb
F0=$(bk)
check "a full backup under triggers" full "$(btype "$F0")"
stop_worker wb >/dev/null
out=$("$CTL" tracking wal --replace-owner-indexes 2>&1)
expect "tracking wal switches" grep -q "switched from triggers to wal" <<<"$out"
expect "... --replace-owner-indexes drops the plain owner indexes" grep -q "owner indexes replaced by the capture's identity indexes: .*orders_user_id_idx.*order_items_order_id_idx" <<<"$out"
check "... which the identity index serves instead" "orders_backup_identity" \
  "$(q "SELECT string_agg(indexname, ',') FROM pg_indexes WHERE tablename = 'orders' AND indexdef LIKE '%(user_id%'")"
check "the tracking triggers are gone" 0 "$(q "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%\_backup\_%'")"
check "orders' replica identity names the user (an index)" i "$(q "SELECT relreplident FROM pg_class WHERE relname = 'orders'")"
check "order_items' names the parent" "order_id,id" "$(q "SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum)) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = 'order_items'::regclass AND i.indisreplident")"
check "the publication has the scope's 8 tables" 8 "$(q "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'backup_capture'")"
check "the switch is a gap" 1 "$(q "SELECT count(*) FROM capture_gaps WHERE reason LIKE 'tracking switched from triggers to wal%'")"
expect "tracking shows the mode" grep -q "^mode  *wal" <<<"$("$CTL" tracking)"
check "a second switch does nothing" "already wal" "$("$CTL" tracking wal | head -1)"

# ---- 3. two workers, one leader ----
start_worker w1 BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s
start_worker w2 BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s
wait_until 15 grep -q "capture: streaming from" "$tmp/w1.log" "$tmp/w2.log" ||
  bad "no worker started streaming"
check "exactly one leader" 1 "$(cat "$tmp/w1.log" "$tmp/w2.log" | grep -c "capture: leading")"
LEADER=w1
grep -q "capture: leading" "$tmp/w2.log" && LEADER=w2
OTHER=$([ $LEADER = w1 ] && echo w2 || echo w1)
expect "the slot was made" grep -q "capture: slot $SLOT created" "$tmp/$LEADER.log"
F1=$(bk --incremental)
check "the first incremental after the switch is full (its base precedes the slot)" full \
  "$(btype "$F1")"

# slot_at LSN: the slot's confirmed position is at LSN or past it (a function: wait_until runs
# it again at each poll, where a $(...) in its arguments would be read once)
slot_at() {
  test "$(q "SELECT confirmed_flush_lsn >= '$1' FROM pg_replication_slots WHERE slot_name = '$SLOT'")" = t
}
# recorded: the slot's confirmed position covers the WAL written so far (the capture confirms
# only what it recorded, or WAL with nothing of a tenant in it)
recorded() {
  local lsn
  lsn=$(q "SELECT pg_current_wal_flush_lsn()")
  wait_until "${1:-15}" slot_at "$lsn" && return 0
  echo "waited for $lsn: $(q "SELECT slot_name, confirmed_flush_lsn, active, pg_current_wal_lsn()
    FROM pg_replication_slots")"
  return 1
}
# the change lines of user $1's recorded segments, in commit order
lines() {
  local k
  for k in $(q "SELECT s3_key FROM change_segments WHERE user_id = '$1' ORDER BY end_lsn"); do
    "$CTL" s3 get "$k" - | gzip -dc | sed '1d;$d' # (backupctl: the aws CLI costs a second a call)
  done
}
# the row of table $1 key $2 as PostgreSQL's row_to_json writes it (without the stamp column)
row_json() { q "SELECT (to_jsonb(x) - 'backup_xid')::text FROM $1 x WHERE id = '$2'"; }
jrow() { jq -cS '.row' <<<"$1"; }

# ---- 4. changes, routed ----
I1=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O1', 3, 1.25) RETURNING id")
q "UPDATE orders SET notes = 'changed', total = 11.5 WHERE id = '$O1'" >/dev/null
q "DELETE FROM notifications WHERE user_id = '$A' AND title = 'old'" >/dev/null
q "UPDATE orders SET user_id = '$B' WHERE id = '$O2'" >/dev/null
I3=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O2', 9, 1) RETURNING id")
q "UPDATE clients SET vip = true WHERE id = '$C1'" >/dev/null
O3=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$A', 3, 30) RETURNING id")
I4=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O3', 1, 1), ('$O3', 1, 2)
        RETURNING id" | tr '\n' ' ')
q "DELETE FROM orders WHERE id = '$O3'" >/dev/null # its items go with it (ON DELETE CASCADE)
recorded || bad "the changes were not recorded within 15 s"
LA=$(lines "$A")
LB=$(lines "$B")
line() { grep "\"table\":\"$2\",\"op\":\"$3\",\"key\":\"$4\"" <<<"$1"; }
l=$(line "$LA" order_items i "$I1")
check "an item of an order older than the slot goes to its user" 1 "$(grep -c . <<<"$l")"
check "... its row is row_to_json's" "$(row_json order_items "$I1" | jq -cS .)" "$(jrow "$l")"
l=$(line "$LA" orders u "$O1")
check "an update's row is the row as it is" "$(row_json orders "$O1" | jq -cS .)" "$(jrow "$l")"
check "the notification deleted" 1 "$(grep -c '"table":"notifications","op":"d"' <<<"$LA")"
check "the moved order: a delete for its old owner" 1 "$(line "$LA" orders d "$O2" | grep -c .)"
check "... an insert for its new owner" "$(row_json orders "$O2" | jq -cS .)" "$(jrow "$(line "$LB" orders i "$O2")")"
check "... its items deleted for the old owner: every item of that order" 1 \
  "$(grep -c "\"table\":\"order_items\",\"op\":\"d\",\"where\":{\"order_id\":\"$O2\"}" <<<"$LA")"
ok_items=0
for it in $(q "SELECT id FROM order_items WHERE order_id = '$O2' AND id <> '$I3'"); do
  [ "$(jrow "$(line "$LB" order_items i "$it")")" = "$(row_json order_items "$it" | jq -cS .)" ] &&
    ok_items=$((ok_items + 1))
done
check "... and inserted, whole, for the new owner" 2 "$ok_items"
# (read after the move's commit, it may also come with the move: early, never lost)
check "an item added after the move goes to the new owner" t "$(test "$(line "$LB" order_items i "$I3" | grep -c .)" -ge 1 && echo t)"
check "... not to the old one" 0 "$(line "$LA" order_items i "$I3" | grep -c .)"
gone=0
for it in $I4; do gone=$((gone + $(line "$LA" order_items d "$it" | grep -c .))); done
check "an order deleted: its items, deleted by the cascade after it, go to its owner" 2 "$gone"
l=$(line "$LA" clients u "$C1")
check "an unchanged TOASTed value is named unchanged" '["notes"]' "$(jq -c .unchanged <<<"$l")"
check "... and not carried as a value" null "$(jq -c .row.notes <<<"$l")"
check "... the other columns are" true "$(jq -c .row.vip <<<"$l")"
check "B's segment names its transactions' commit order" t \
  "$(q "SELECT bool_and(start_lsn <= end_lsn) AND count(*) >= 1 FROM change_segments WHERE user_id = '$B'")"
check "a segment's row carries its counts" 1 "$(q "SELECT (counts->'orders'->>'i')::int FROM change_segments WHERE user_id = '$B' ORDER BY end_lsn LIMIT 1")"
check "web users read only their own segments (RLS)" "0" \
  "$(psql -X -q -t -A "$DATABASE_URL" -c "SET ROLE authenticated; SET request.jwt.claim.sub = '$A'; SELECT count(*) FROM change_segments WHERE user_id <> '$A'" | tail -1)"

# TRUNCATE: a marker for every tenant with history; DDL: a column added is written
q "TRUNCATE notifications" >/dev/null
q "ALTER TABLE clients ADD COLUMN loyalty int DEFAULT 0" >/dev/null
q "UPDATE clients SET loyalty = 5, notes = 'short now' WHERE id = '$C1'" >/dev/null
recorded || bad "the truncate was not recorded"
check "TRUNCATE: a marker for A" 1 "$(lines "$A" | grep -c '"table":"notifications","op":"t"')"
check "... and one for B" 1 "$(lines "$B" | grep -c '"table":"notifications","op":"t"')"
l=$(lines "$A" | grep '"table":"clients"' | tail -1)
check "a column added since is in the row" 5 "$(jq -c .row.loyalty <<<"$l")"
check "... the row is row_to_json's" "$(row_json clients "$C1" | jq -cS .)" "$(jrow "$l")"

# the timeline: A's transactions, one entry each (change_segments.txns), and the gaps
tl=$("$CTL" timeline "$A" --json)
check "timeline: every one of A's transactions has its xid" 0 "$(jq '[.[] | select(.kind == "commit" and .xid == null)] | length' <<<"$tl")"
lsns=$(jq -r '[.[] | select(.kind == "commit") | .lsn] | join(",")' <<<"$tl")
check "... in commit order" t "$(q "SELECT bool_and(a < b) FROM (SELECT l::pg_lsn AS a, lead(l::pg_lsn)
  OVER (ORDER BY o) AS b FROM unnest('{$lsns}'::text[]) WITH ORDINALITY x(l, o)) y WHERE b IS NOT NULL")"
check "... the TRUNCATE among them" 1 "$(jq '[.[] | select(.counts.notifications.t == 1)] | length' <<<"$tl")"
check "... the move of O2 away: its order deleted and its items" true \
  "$(jq 'any(.[]; .counts.orders.d == 1 and .counts.order_items.w >= 1)' <<<"$tl")"
expect "... and in text, the gap of the switch" grep -q "gap: tracking switched from triggers to wal" <<<"$("$CTL" timeline "$A")"
expect "... --since in the future: nothing" grep -q "^no changes of $A captured since" <<<"$("$CTL" timeline "$A" --since 2999-01-01)"

# ---- 4b. incrementals built from the segments ----
out=$(REDIS_PREFIX=$P "$CTL" backup "$A" --incremental --wait --json 2>>"$tmp/bk.err")
F2=$(jq -r .backup_id <<<"$out")
check "an incremental after an order moved away and a TRUNCATE is full" full "$(btype "$F2")"
check "... saying why" "incremental backup requested, but a TRUNCATE, or an order moved to another user, since the base: made a full one" "$(jq -r .note <<<"$out")"
O4=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$A', 4, 40) RETURNING id")
I5A=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$O4', 1, 3), ('$O4', 2, 4)
         RETURNING id" | sort | tr '\n' ' ')
q "UPDATE orders SET notes = 'incremental' WHERE id = '$O1'" >/dev/null
q "DELETE FROM order_items WHERE id = '$I1'" >/dev/null
q "INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'x', 'brief')" >/dev/null
q "DELETE FROM notifications WHERE title = 'brief'" >/dev/null
q "UPDATE orders SET notes = 'not A' WHERE user_id = '$B'" >/dev/null # B's: not in A's
INC=$(bk --incremental)
# the worker's own notification of F2's completion is a change since F2 too
NOTE=$(q "SELECT count(*) FROM notifications WHERE user_id = '$A' AND data->>'backup_id' = '$F2'")
check "the next incremental builds on the full one, from the segments" "incremental:$F2" "$(btype "$INC")"
expect "... which it read" grep -q "backup $INC: [1-9][0-9]* change segments\? of [0-9]* since base $F2 name $((6 + NOTE)) keys" \
  "$tmp/$LEADER.log" "$tmp/$OTHER.log"
"$CTL" download --decode "$INC" "$tmp/inc.json" >/dev/null 2>"$tmp/dl.err" || bad "download: $(cat "$tmp/dl.err")"
doc=$(jq -c . "$tmp/inc.json")
check "its orders: the new one and the changed one, as they are" \
  "$(q "SELECT jsonb_agg((to_jsonb(x) - 'backup_xid') ORDER BY id)::text FROM orders x WHERE id IN ('$O4', '$O1')" | jq -cS .)" \
  "$(jq -cS '.tables.orders | sort_by(.id)' <<<"$doc")"
check "... the new order's items" "$I5A" "$(jq -r '.tables.order_items[].id' <<<"$doc" | sort | tr '\n' ' ')"
check "... no other row (no scan of the tables)" $((4 + NOTE)) "$(jq '[.tables[] | length] | add' <<<"$doc")"
check "... the deleted item among its deletions" "\"$I1\"" "$(jq -c '.deleted.order_items[]' <<<"$doc")"
check "... and the notification written and deleted since" 1 "$(jq '.deleted.notifications | length' <<<"$doc")"
check "... its counts in backup_metadata" 2 "$(q "SELECT (row_counts->>'orders')::int FROM backup_metadata WHERE id = '$INC'")"
# a scope table the publication lacks (its changes are not captured), or the base lacks (it
# joined the scope since): the incremental is full, naming it
note_of() { REDIS_PREFIX=$P "$CTL" backup "$A" --incremental --wait --json 2>>"$tmp/bk.err" | jq -r "$1"; }
q "ALTER PUBLICATION backup_capture DROP TABLE user_settings" >/dev/null
expect "a worker starting warns of it" grep -q "the publication backup_capture lacks user_settings of backup_scope" \
  <<<"$(wal REDIS_PREFIX=$P "$WORKER" --check-config 2>&1)"
check "a scope table outside the publication: the incremental is full, naming it" \
  "incremental backup requested, but the publication backup_capture lacks user_settings (its changes are not captured: backupctl tracking wal sets it up): made a full one" \
  "$(note_of .note)"
expect "... backupctl tracking wal (already) puts it back" grep -q "publication backup_capture and replica identities up to date (8 tables)" <<<"$("$CTL" tracking wal)"
check "... in the publication" 1 "$(q "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'backup_capture' AND tablename = 'user_settings'")"
F4=$(q "SELECT id FROM backup_metadata WHERE user_id = '$A' AND status = 'completed' ORDER BY created_at DESC, id DESC LIMIT 1")
q "UPDATE backup_metadata SET row_counts = row_counts - 'user_settings' WHERE id = '$F4'" >/dev/null
check "a scope table the base does not hold: full, naming it" \
  "incremental backup requested, but the base does not hold user_settings (joined the backup scope since): made a full one" \
  "$(note_of .note)"
# a TRUNCATE names no keys: the next incremental is full, whether the claim saw its segment
# or (not recorded yet then) the incremental met it among the segments and started over
q "TRUNCATE notifications" >/dev/null
out=$(REDIS_PREFIX=$P "$CTL" backup "$A" --incremental --wait --json 2>>"$tmp/bk.err")
F3=$(jq -r .backup_id <<<"$out")
check "an incremental right after a TRUNCATE is full" full "$(btype "$F3")"
expect "... saying why" grep -q "incremental backup requested, but a TRUNCATE" <<<"$(jq -r .note <<<"$out")"
check "... and no row of the incremental it began is left" 0 \
  "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$A' AND status <> 'completed'")"

# ---- 5. kill -9 of the leader in the middle: every transaction exactly once ----
N=300
( for i in $(seq 1 $N); do
    echo "INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'n', 'n-$i');"
    echo "SELECT pg_sleep(0.005);"
  done | psql -X -q "$DATABASE_URL" >/dev/null ) &
writer=$!
sleep 0.4
eval "kill -9 \$PID_$LEADER"
wait "$writer"
wait_until 20 grep -q "capture: streaming from" "$tmp/$OTHER.log" ||
  bad "the other worker did not take over within the lease"
recorded 20 || bad "the stream was not recorded after the takeover"
got=$(lines "$A" | grep -o '"title":"n-[0-9]*"' | sort | uniq -c)
check "after kill -9: all $N transactions captured" $N "$(grep -c . <<<"$got")"
check "... none twice" 0 "$(awk '$1 != 1' <<<"$got" | grep -c .)"
check "the new leader's epoch is higher" t "$(q "SELECT epoch > 1 FROM capture_state")"

# a stale leader cannot record (its epoch is in capture_state no more)
out=$(q "SELECT capture_record(1, '0/1', '[]', '[]', '{}')" 2>&1)
expect "a stale epoch's recording is refused" grep -q "capture epoch 1 is stale" <<<"$out"

# ---- 6. a quiet database: the slot advances without changes of the scope ----
before=$(q "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'")
q "CREATE TABLE capture_noise (x int); INSERT INTO capture_noise SELECT generate_series(1, 1000)" >/dev/null
noise=$(q "SELECT pg_current_wal_flush_lsn()")
wait_until 20 slot_at "$noise" ||
  bad "the slot did not advance past WAL of other tables (was $before)"
ok "the slot advances on a quiet database"

# ---- 7. a slot dropped by hand: a gap, and capture carries on with a new one ----
inactive() { test "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SLOT' AND active")" = 0; }
stop_worker "$OTHER" >/dev/null
wait_until 10 inactive || bad "the slot stayed active after the worker stopped"
q "SELECT pg_drop_replication_slot('$SLOT')" >/dev/null
gaps=$(q "SELECT count(*) FROM capture_gaps")
# from here on with an encryption key: segments are encrypted as backups are
KEYS="k1:$(head -c 32 /dev/urandom | base64)"
start_worker w3 BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s \
  BACKUP_ENCRYPTION_KEYS="$KEYS"
wait_until 20 grep -q "capture: streaming from" "$tmp/w3.log" || bad "w3 did not stream"
expect "the gap is logged" grep -q "gap recorded: the replication slot $SLOT was dropped" "$tmp/w3.log"
check "... and recorded" $((gaps + 1)) "$(q "SELECT count(*) FROM capture_gaps")"
expect "backupctl tracking shows it" grep -q "last_gap.*was dropped" <<<"$("$CTL" tracking)"
q "UPDATE orders SET notes = 'after the gap' WHERE id = '$O1'" >/dev/null
recorded 20 || bad "nothing recorded after the gap"
ENC=$(q "SELECT s3_key FROM change_segments WHERE user_id = '$A' ORDER BY end_lsn DESC LIMIT 1")
check "capture carries on after the gap, encrypted with the key" "gzip,aes-256-gcm" \
  "$(q "SELECT array_to_string(codecs, ',') FROM change_segments WHERE s3_key = '$ENC'")"
check "... the object is sealed (the envelope's magic)" PLBKENC1 "$(store_cat "$ENC" | head -c 8)"
expect "... nothing of it in clear" test "$(store_cat "$ENC" | grep -c 'after the gap')" = 0
BACKUP_ENCRYPTION_KEYS="$KEYS" "$CTL" download --decode "$ENC" "$tmp/enc.jsonl" >/dev/null 2>"$tmp/dl.err"
check "backupctl download --decode reads it (checksum from its record, key from its header)" 0 $?
expect "... the change is in it" grep -q '"notes":"after the gap"' "$tmp/enc.jsonl"
"$CTL" download --decode "$ENC" "$tmp/enc2.jsonl" >/dev/null 2>&1
check "... and without the key it does not" 1 $?
# an incremental from encrypted segments (each one's data key unwrapped from its own header)
check "after the gap, an incremental is full (its base precedes the new slot)" full "$(btype "$(bk --incremental)")"
q "UPDATE orders SET notes = 'sealed' WHERE id = '$O1'" >/dev/null
recorded 20 || bad "nothing recorded"
ENCI=$(bk --incremental)
check "... the next one is built from the encrypted segments" incremental "$(btype "$ENCI" | cut -d: -f1)"
BACKUP_ENCRYPTION_KEYS="$KEYS" "$CTL" download --decode "$ENCI" "$tmp/enci.json" >/dev/null 2>&1
check "... with the row as it is" sealed "$(jq -r '.tables.orders[0].notes' "$tmp/enci.json")"

# ---- 8. PostgreSQL restarted in the middle of a stream: nothing lost, nothing twice ----
( for i in $(seq 1 40); do
    psql -X -q "$DATABASE_URL" -c "INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'r', 'r-$i')" \
      >/dev/null 2>&1
    sleep 0.05
  done ) &
writer=$!
sleep 0.8
"$BW_DEVENV" restart postgres >"$tmp/restart.log" 2>&1 || { bad "PostgreSQL did not restart"; cat "$tmp/restart.log"; }
wait "$writer"
streams() { test "$(grep -c "capture: streaming from" "$tmp/w3.log")" -ge 2; }
wait_until 30 streams || bad "the capture did not stream again after the restart"
recorded 30 || bad "the capture did not catch up after the restart"
want=$(q "SELECT title FROM notifications WHERE user_id = '$A' AND type = 'r' ORDER BY 1")
got=$(for k in $(q "SELECT s3_key FROM change_segments WHERE user_id = '$A' ORDER BY end_lsn"); do
  BACKUP_ENCRYPTION_KEYS="$KEYS" "$CTL" download --decode "$k" "$tmp/seg.jsonl" >/dev/null 2>&1 &&
    sed '1d;$d' "$tmp/seg.jsonl"
done | grep -o '"title":"r-[0-9]*"' | sed -E 's/.*"(r-[0-9]+)"/\1/' | sort)
check "after a PostgreSQL restart: every committed insert captured" "$(wc -l <<<"$want")" "$(sort -u <<<"$got" | wc -l)"
check "... the same ones" "" "$(comm -3 <(sort -u <<<"$got") <(sort <<<"$want") | head -3)"
check "... none twice" "$(sort -u <<<"$got" | wc -l)" "$(wc -l <<<"$got")"

# ---- 9. max_slot_wal_keep_size exceeded while nobody reads: the slot is lost, a gap ----
stop_worker w3 >/dev/null
wait_until 10 inactive || bad "the slot stayed active after the worker stopped"
admin() { psql -X -q -v ON_ERROR_STOP=1 "$BW_ADMIN_DATABASE_URL" -c "$1" >/dev/null; }
keep=$(q "SHOW max_slot_wal_keep_size")
admin "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'"
admin "SELECT pg_reload_conf()"
on_exit_hooks+=("admin \"ALTER SYSTEM SET max_slot_wal_keep_size = '$keep'\"; admin \"SELECT pg_reload_conf()\"")
for _ in 1 2 3; do admin "CREATE TABLE IF NOT EXISTS capture_noise (x int); INSERT INTO capture_noise SELECT generate_series(1, 50000); SELECT pg_switch_wal()"; done
admin "CHECKPOINT"
check "the slot is lost" lost "$(q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$SLOT'")"
admin "ALTER SYSTEM SET max_slot_wal_keep_size = '$keep'"
admin "SELECT pg_reload_conf()"
gaps=$(q "SELECT count(*) FROM capture_gaps")
# and Redis lost the epoch counter meanwhile: the next leader's epoch still goes past the last
stored=$(q "SELECT epoch FROM capture_state")
R DEL "$P:capture:epoch" >/dev/null
start_worker w4 BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s \
  CAPTURE_SEGMENT_MB=1 CAPTURE_DECODING_KB=64
wait_until 20 grep -q "capture: streaming from" "$tmp/w4.log" || bad "w4 did not stream"
check "Redis lost the epoch: the leader's epoch is past the recorded one" $((stored + 1)) \
  "$(q "SELECT epoch FROM capture_state")"
expect "the invalidation is a gap" grep -q "gap recorded: the replication slot $SLOT was invalidated" "$tmp/w4.log"
check "... recorded" $((gaps + 1)) "$(q "SELECT count(*) FROM capture_gaps")"
check "... and a new slot made" reserved "$(q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$SLOT'")"

# ---- 9b. large transactions: streamed before their commit, kept on disk, aborts dropped ----
# (the walsender streams past 64 kB here; w4 holds 1 MB of change lines in memory at most)
big() { # $1 rows titled $2 in one transaction, with $3 (SQL) before its end
  q "BEGIN; INSERT INTO notifications (user_id, type, title, body)
     SELECT '$A', 'big', '$2', repeat('x', 200) FROM generate_series(1, $1); $3" >/dev/null 2>&1
}
titled() { lines "$A" | grep -c "\"title\":\"$1\""; }
big 20000 big-commit "COMMIT"
big 3000 big-abort "ROLLBACK"
q "BEGIN; INSERT INTO notifications (user_id, type, title, body) SELECT '$A', 'big', 'sp-kept', 'k'
   FROM generate_series(1, 1000); SAVEPOINT s;
   INSERT INTO notifications (user_id, type, title, body) SELECT '$A', 'big', 'sp-gone', repeat('y', 200)
   FROM generate_series(1, 2000); ROLLBACK TO s;
   INSERT INTO notifications (user_id, type, title) VALUES ('$A', 'big', 'sp-after'); COMMIT" >/dev/null
recorded 60 || bad "the large transactions were not recorded"
expect "a large transaction is streamed before its commit and routed at its commit" \
  grep -q "capture: transaction [0-9]*, streamed before its commit ([0-9]* bytes kept on disk)" "$tmp/w4.log"
expect "... its changes beyond memory went to disk" grep -q "capture: a transaction outgrew memory" "$tmp/w4.log"
check "... every row of it captured once" 20000 "$(titled big-commit)"
expect "a streamed transaction that aborts is dropped" grep -q "capture: transaction [0-9]*, streamed before its end, aborted" "$tmp/w4.log"
check "... none of its rows in a segment" 0 "$(titled big-abort)"
check "a savepoint rolled back inside a streamed transaction: its rows are not captured" 0 "$(titled sp-gone)"
check "... the rows before it are" 1000 "$(titled sp-kept)"
check "... and after it" 1 "$(titled sp-after)"
# the leader killed while a streamed transaction is open (its blocks on the dead leader's disk):
# the next leader reads it again from the slot, every row once (the walsender sends it whole at
# its commit then: it does not stream again what it decoded before the restart point)
( q "BEGIN; INSERT INTO notifications (user_id, type, title, body) SELECT '$A', 'big', 'kill-mid',
     repeat('z', 200) FROM generate_series(1, 10000); SELECT pg_sleep(10); COMMIT" >/dev/null ) &
writer=$!
sleep 2
kill -9 "$PID_w4"
start_worker w6 BACKUP_TRACKING=wal CAPTURE_FLUSH_INTERVAL=300ms CAPTURE_LEASE=3s \
  CAPTURE_SEGMENT_MB=1 CAPTURE_DECODING_KB=64
wait "$writer"
wait_until 20 grep -q "capture: streaming from" "$tmp/w6.log" || bad "w6 did not take over"
recorded 60 || bad "the transaction was not recorded after the takeover"
check "the leader killed in the middle of a streamed transaction: every row once" 10000 "$(titled kill-mid)"
stop_worker w6 >/dev/null
wait_until 10 inactive || bad "the slot stayed active after the worker stopped"

# ---- 10. back to triggers ----
out=$("$CTL" tracking triggers 2>&1)
expect "tracking triggers switches back" grep -q "switched from wal to triggers" <<<"$out"
check "the triggers are back" 0 "$(q "SELECT count(*) FROM backup_scope s WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = s.table_name || '_backup_stamp')")"
check "the publication is gone" 0 "$(q "SELECT count(*) FROM pg_publication WHERE pubname = 'backup_capture'")"
check "the slot is gone" 0 "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SLOT'")"
# the switch back is a gap: no base taken before it (every wal-era backup) carries an incremental
start_worker w5
I5=$(bk --incremental)
check "after the switch back, an incremental asked for is full" full "$(btype "$I5")"
check "... and the next one builds on it" "incremental:$I5" "$(btype "$(bk --incremental)")"
finish
