#!/usr/bin/env bash
# test_restore: the restore job against real Redis, PostgreSQL and S3 (s3rver), with real
# worker processes.
#  1. round trip: a hostile tenant backed up, scrambled, restored: every row of every table
#     equal through to_jsonb (updated_at included); another user's rows byte for byte unchanged
#  2. chain: full, incremental, differential (with deletes), incremental: each point restored
#     gives exactly the database state at that point
#  3. tamper: a flipped byte, a truncated object, another user's backup in its place: refused
#     ("Backup checksum verification failed"), the database unchanged
#  4. selective restore, and a selection that would break a foreign key; forbidden cross-user
#  5. kill -9 in the middle of a restore: nothing changed; another worker completes it
#  verify: one backup, all of a user's, a missing manifest, a replaced object
#  6. recovery: backup_metadata lost, `backupctl reindex` rebuilds it from the manifests in S3,
#     and a restore of the last incremental then succeeds
#  7. zstd (BACKUP_COMPRESSION=zstd): key .json.zst, `zstd -d` reads it, round trip, verify
#  8. only what differs is written: onto the intact tenant nothing is inserted, updated or
#     deleted and no row gets a new version; a few changes are counted per table; a preview
#     (dry_run=true, backupctl restore --dry-run) says the same and writes nothing
#  9. only what changed since the backup is staged (change tracking): none onto the intact
#     tenant, a few after a few changes; every row when a tombstone written since was purged,
#     and every row of a table whose tombstone trigger was disabled for a while; exact each time;
#     a row the application writes while the restore runs is not deleted
# 10. a table that holds none of the user's rows takes the backup's straight (COPY into it):
#     exact, counted; a client the orders name deleted too, read again through staging, exact;
#     a key of another user's row refused, nothing changed; a preview places nothing
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=7e570001-0000-4000-8000-00000000000a
V=7e570002-0000-4000-8000-00000000000b
fresh_user "$U" "$V"
"$ROOT/tools/datagen" --user "$U" --orders 400 --seed tr1 >/dev/null
"$ROOT/tools/datagen" --user "$V" --orders 30 --seed tr2 >/dev/null
q "INSERT INTO products (user_id, sku, name, price, weight_grams, tags, thumbnail, attributes, available_from)
   VALUES ('$U', 'HOSTIL', E'\\u00e9\\u4e2d \"q\" \\\\ \\n\\t end', 1234567890.12, 9007199254740993,
           ARRAY['a,b', NULL, E'x\\\\y', '\"'], '\\x00ff10'::bytea,
           '{\"n\": 123456789012345678901234567890.123456789, \"f\": 1.5e300, \"deep\": {\"a\": [1, [2, [3]]]}}',
           '0001-01-01')" >/dev/null

other_user() { # a digest of every row of V, every column
  local sel="" t
  for t in $TABLES; do
    sel+="${sel:+ UNION ALL }SELECT x::text AS r FROM $t x WHERE $(filter "$t" "$V")"
  done
  q "SELECT md5(string_agg(r, E'\\n' ORDER BY r)) FROM ($sel) s"
}
scramble() {
  q "UPDATE orders SET total = total + 1, notes = 'scrambled' WHERE user_id = '$U' AND number % 3 = 0;
     DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 5);
     DELETE FROM clients WHERE user_id = '$U' AND id NOT IN (SELECT client_id FROM orders WHERE client_id IS NOT NULL);
     UPDATE profiles SET full_name = 'Nobody' WHERE id = '$U';
     INSERT INTO orders (user_id, number, total) VALUES ('$U', 900000 + (random() * 1000)::int, 1);
     DELETE FROM user_settings WHERE user_id = '$U'" >/dev/null
}
backup() { # JOB MODE: a backup, waited for; prints its id
  enqueue "$1" type backup user_id "$U" mode "$2"
  done_ok "$1" || { bad "backup $1 did not complete: $(field "$1" error)"; return 1; }
  field "$1" backup_id
}
restore() { # JOB BACKUP_ID [field value...]
  local j=$1 b=$2; shift 2
  enqueue "$j" type restore user_id "$U" backup_id "$b" "$@"
  done_ok "$j" 90
}

P=tr$$a
start_worker w1 BACKUP_NOTIFY=false

# ---- 1. round trip ----
OTHER=$(other_user)
state s0
B0=$(backup b0 full)
scramble
check "scrambled: the state differs" yes "$([ "$(differs s0)" != none ] && echo yes)"
expect "restore of the full backup completes" restore r0 "$B0"
check "round trip: every row of every table identical" none "$(differs s0)"
check "another user's rows byte for byte unchanged" "$OTHER" "$(other_user)"
check "restore_history: completed, chain, counts" "completed|{$B0}|400" \
  "$(q "SELECT status, chain, row_counts->>'orders' FROM restore_history WHERE job_id = 'r0'")"
check "status hash: rows restored" "$(q "SELECT count(*) FROM snap_s0")" "$(field r0 rows)"
expect "the hostile product came back digit for digit" test "$(q "SELECT count(*) FROM products WHERE user_id = '$U' AND weight_grams = 9007199254740993 AND attributes->>'n' = '123456789012345678901234567890.123456789' AND thumbnail = '\\x00ff10'::bytea AND tags[3] = E'x\\\\y'")" = 1

# ---- 2. chain ----
q "UPDATE orders SET status = 'shipped' WHERE user_id = '$U' AND number % 5 = 1;
   INSERT INTO clients (user_id, name) VALUES ('$U', 'Nuevo 1')" >/dev/null
state s1
B1=$(backup b1 incremental)
q "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id DESC LIMIT 7);
   UPDATE products SET price = price * 2 WHERE user_id = '$U' AND sku LIKE '%1';
   DELETE FROM clients WHERE user_id = '$U' AND name = 'Nuevo 1'" >/dev/null
state s2
B2=$(backup b2 differential)
q "INSERT INTO orders (user_id, number, total) VALUES ('$U', 777777, 7.77);
   UPDATE notifications SET read = NOT read WHERE user_id = '$U'" >/dev/null
state s3
B3=$(backup b3 incremental)
check "chain: types and bases" "incremental $B0|differential $B0|incremental $B2" \
  "$(q "SELECT string_agg(type || ' ' || base_backup_id, '|' ORDER BY created_at) FROM backup_metadata WHERE id IN ('$B1', '$B2', '$B3')")"
scramble
expect "restore of the last incremental (full, differential, incremental)" restore r3 "$B3"
check "chain: the state at the last incremental" none "$(differs s3)"
# scramble changed about a third of the orders: their rows in the three steps are staged
check "…staging only the rows changed since its snapshot (under half of $(q "SELECT count(*) FROM snap_s3"))" yes \
  "$(n=$(field r3 result | jq -r .staged); [ "$n" -gt 0 ] && [ "$n" -lt "$(( $(q "SELECT count(*) FROM snap_s3") / 2 ))" ] && echo yes || echo "no: $n")"
check "…applied three backups" "{$B0,$B2,$B3}" "$(q "SELECT chain FROM restore_history WHERE job_id = 'r3'")"
expect "restore of the first incremental" restore r1 "$B1"
check "chain: the state at the first incremental" none "$(differs s1)"
expect "restore of the differential" restore r2 "$B2"
check "chain: the state at the differential (deletes applied)" none "$(differs s2)"
expect "restore of the full again" restore r0b "$B0"
check "chain: the state at the full" none "$(differs s0)"
check "another user's rows still unchanged" "$OTHER" "$(other_user)"

# verify: objects and manifests against their records, the database untouched
enqueue v3 type verify backup_id "$B3"
expect "verify of one backup completes" done_ok v3
check "…says so" "1 backup verified" "$(field v3 note)"
check "…and records it" "ok" "$(q "SELECT verify_status FROM backup_metadata WHERE id = '$B3' AND verified_at IS NOT NULL")"
enqueue vall type verify user_id "$U"
expect "verify of all the user's backups completes" done_ok vall
check "…all of them" "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$U' AND status = 'completed'") backups verified" "$(field vall note)"
KEY1=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B1'")
store_mv "$KEY1.manifest.json" "$KEY1.manifest.saved"
enqueue vman type verify backup_id "$B1"
wait_until 30 status_is vman dead || bad "verify without a manifest did not fail"
expect "verify: a missing manifest is named" grep -q "manifest.*NoSuchKey" <<<"$(field vman error)"
check "…and recorded" failed "$(q "SELECT verify_status FROM backup_metadata WHERE id = '$B1'")"
store_mv "$KEY1.manifest.saved" "$KEY1.manifest.json"

# ---- 3. tamper ----
scramble
state before
KEY0=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$B0'")
store_get "$KEY0" "$tmp/orig.gz"
tamper() { # NAME FILE: put FILE in place of the full backup's object, restore, expect refusal
  store_put "$2" "$KEY0"
  enqueue "t$1" type restore user_id "$U" backup_id "$B0"
  wait_until 60 status_is "t$1" dead || bad "tamper $1: the restore did not fail"
  expect "tamper $1: refused, the reason named" grep -q "Backup checksum verification failed" <<<"$(field "t$1" error)"
  check "tamper $1: the database unchanged" none "$(differs before)"
  check "tamper $1: recorded as failed" failed "$(q "SELECT status FROM restore_history WHERE job_id = 't$1'")"
}
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 1; open(sys.argv[2], 'wb').write(b)" "$tmp/orig.gz" "$tmp/flip.gz"
tamper flip "$tmp/flip.gz"
head -c $(($(stat -c %s "$tmp/orig.gz") - 1000)) "$tmp/orig.gz" >"$tmp/trunc.gz"
tamper trunc "$tmp/trunc.gz"
VB=$(P=$P; enqueue vb type backup user_id "$V" mode full; done_ok vb && field vb backup_id)
store_get "$(q "SELECT s3_key FROM backup_metadata WHERE id = '$VB'")" "$tmp/other.gz"
tamper other "$tmp/other.gz"
expect "tamper other: the error also says whose backup it is" grep -q "the object holds backup $VB of user $V, not $B0" <<<"$(field tother error)"
enqueue vbad type verify backup_id "$B0"
wait_until 60 status_is vbad dead || bad "verify of a replaced object did not fail"
expect "verify: a replaced object fails its checksum" grep -q "1 of 1 backup failed verification: Backup checksum verification failed" <<<"$(field vbad error)"
check "…and is recorded so" failed "$(q "SELECT verify_status FROM backup_metadata WHERE id = '$B0'")"
store_put "$tmp/orig.gz" "$KEY0"
expect "the original object restores again" restore r0c "$B0"
check "…exactly" none "$(differs s0)"

# ---- 4. selective and forbidden ----
q "UPDATE products SET name = 'kept' WHERE user_id = '$U'; DELETE FROM orders WHERE user_id = '$U'" >/dev/null
enqueue sel1 type restore user_id "$U" backup_id "$B0" tables order_items
wait_until 30 status_is sel1 dead || bad "order_items alone did not fail"
expect "order_items without their orders: refused, the fix named" grep -q "restore orders too (tables=orders,order_items)" <<<"$(field sel1 error)"
check "…and nothing restored" 0 "$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")"
expect "orders with their items: restored" restore sel2 "$B0" tables orders,order_items
check "…orders and items back" "400 $(q "SELECT count(*) FROM snap_s0 WHERE tbl = 'order_items'")" \
  "$(q "SELECT count(*) FROM orders WHERE user_id = '$U'") $(q "SELECT count(*) FROM order_items WHERE $(filter order_items "$U")")"
check "…other tables untouched" "$(q "SELECT count(*) FROM products WHERE user_id = '$U'")" \
  "$(q "SELECT count(*) FROM products WHERE user_id = '$U' AND name = 'kept'")"
enqueue cross type restore user_id "$V" backup_id "$B0"
wait_until 30 status_is cross dead || bad "cross-user restore did not fail"
expect "another user's backup: forbidden" grep -q "forbidden" <<<"$(field cross error)"
check "…before anything was read or recorded" 0 "$(q "SELECT count(*) FROM restore_history WHERE job_id = 'cross'")"
stop_worker w1

# ---- 5. kill -9 mid-restore (a read held by a proxy in front of S3) ----
if s3_only "section 5 (kill -9 mid-restore: the read is held by a proxy in front of S3)"; then
S3PORT=$(sed -E 's#.*:([0-9]+)$#\1#' <<<"$S3_ENDPOINT")
node "$ROOT/tests/faultproxy.js" 127.0.0.1 "$S3PORT" >"$tmp/proxy.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q listening "$tmp/proxy.log"
PX=$(awk '/listening/ {print $2}' "$tmp/proxy.log")
scramble
state before
P=tr$$k
curl -s -X POST --data "GET~$B2:stall:1" "http://127.0.0.1:$PX/__plan" >/dev/null
start_worker k1 S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_NOTIFY=false
enqueue kill1 type restore user_id "$U" backup_id "$B3"
expect "the restore is inside its transaction (reading the second backup)" \
  wait_until 30 bash -c "curl -s http://127.0.0.1:$PX/__stats | grep -q '\"faults\":1'"
check "…with the first backup staged" 1 "$(grep -c "staged backup $B0" "$tmp/k1.log")"
kill -9 "$PID_k1"
curl -s -X POST "http://127.0.0.1:$PX/__cut" >/dev/null
check "killed mid-restore: the database unchanged" none "$(differs before)"
start_worker k2 S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_NOTIFY=false
expect "another worker takes the restore over and completes it" done_ok kill1 60
check "…to exactly the last incremental's state" none "$(differs s3)"
check "…one history row, two runs" "1|2" "$(q "SELECT count(*), max(attempts) FROM restore_history WHERE job_id = 'kill1'")"
stop_worker k2
fi

# ---- 6. recovery without backup_metadata ----
BEFORE=$(q "SELECT string_agg(id || ' ' || type || ' ' || coalesce(base_backup_id, '-') || ' ' || checksum || ' ' || size, ',' ORDER BY id) FROM backup_metadata WHERE user_id = '$U' AND status = 'completed'")
N=$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$U' AND status = 'completed'")
q "DELETE FROM backup_metadata WHERE user_id = '$U'" >/dev/null
check "reindex from S3" "reindexed $U: $N backups added, 0 already known, 0 skipped" "$("$CTL" reindex "$U" 2>&1)"
check "…the same ids, types, chain, checksums and sizes" "$BEFORE" \
  "$(q "SELECT string_agg(id || ' ' || type || ' ' || coalesce(base_backup_id, '-') || ' ' || checksum || ' ' || size, ',' ORDER BY id) FROM backup_metadata WHERE user_id = '$U'")"
check "a second reindex adds nothing" "reindexed $U: 0 backups added, $N already known, 0 skipped" "$("$CTL" reindex "$U" 2>&1)"
scramble
P=tr$$r
start_worker w6 BACKUP_NOTIFY=false
expect "a restore after the reindex completes" restore r6 "$B3"
check "…to the last incremental's state" none "$(differs s3)"
stop_worker w6

# ---- 7. zstd: another codec, the same round trip ----
P=tr$$z
start_worker wz BACKUP_NOTIFY=false BACKUP_COMPRESSION=zstd
state sz
BZ=$(backup bz full)
KZ=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$BZ'")
check "zstd: the key says .json.zst, the record {zstd}" "backups/$U/$BZ.json.zst {zstd} zstd" \
  "$KZ $(q "SELECT codecs::text || ' ' || compression FROM backup_metadata WHERE id = '$BZ'")"
check "…and zstd -d | jq reads the object, its header naming the codec" '["zstd"]' \
  "$(store_cat "$KZ" | zstd -dc | head -1 | sed 's/,"tables":{$/}/' | jq -c .codecs)"
scramble
expect "restore of the zstd backup completes" restore rz "$BZ"
check "zstd round trip: every row of every table identical" none "$(differs sz)"
enqueue vz type verify backup_id "$BZ"
expect "verify of the zstd backup completes" done_ok vz
stop_worker wz

# ---- 8. only what differs is written; a preview writes nothing ----
P=tr$$c
start_worker wc BACKUP_NOTIFY=false
state sc
BC=$(backup bc full)
counts() { # JOB: inserted updated deleted unchanged, from its result
  field "$1" result | jq -r '"\(.inserted) \(.updated) \(.deleted) \(.unchanged)"'
}
q "DROP TABLE IF EXISTS snap_xm; CREATE TABLE snap_xm AS SELECT id, xmin::text AS xm FROM orders WHERE user_id = '$U'" >/dev/null
new_versions() { q "SELECT count(*) FROM snap_xm s JOIN orders o USING (id) WHERE o.xmin::text <> s.xm"; }
expect "restore onto the intact tenant completes" restore rc0 "$BC"
check "…nothing inserted, updated or deleted, every row unchanged" "0 0 0 $(q "SELECT count(*) FROM snap_sc")" "$(counts rc0)"
check "…no row was rewritten (the same row versions)" 0 "$(new_versions)"
check "…the note says so" "0 inserted, 0 updated, 0 deleted, $(q "SELECT count(*) FROM snap_sc") unchanged" "$(field rc0 note)"
check "…restore_history per table" "0|0|0|$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")|f" \
  "$(q "SELECT concat_ws('|', changes->'orders'->>'inserted', changes->'orders'->>'updated', changes->'orders'->>'deleted', changes->'orders'->>'unchanged', dry_run) FROM restore_history WHERE job_id = 'rc0'")"
q "UPDATE orders SET notes = 'changed' WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 3);
   DELETE FROM order_items WHERE id IN (SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U' ORDER BY i.id LIMIT 2);
   INSERT INTO orders (user_id, number, total) VALUES ('$U', 888888, 8.88)" >/dev/null
q "DELETE FROM snap_xm WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' AND notes = 'changed')" >/dev/null
tables_of() { # JOB: orders updated, orders deleted, order_items inserted
  field "$1" result | jq -r '"\(.tables.orders.updated) \(.tables.orders.deleted) \(.tables.order_items.inserted)"'
}
expect "a preview (dry_run=true) completes" restore rcd "$BC" dry_run true
check "…it counts 3 orders updated, 1 deleted, 2 items inserted" "3 1 2" "$(tables_of rcd)"
check "…and says it wrote nothing" "dry run, nothing written: would have 2 inserted, 3 updated, 1 deleted" "$(field rcd note | sed 's/, [0-9]* unchanged$//')"
check "…nothing was written" "1 3" "$(q "SELECT count(*) FROM orders WHERE user_id = '$U' AND number = 888888") $(q "SELECT count(*) FROM orders WHERE user_id = '$U' AND notes = 'changed'")"
check "…restore_history: a dry run" t "$(q "SELECT dry_run FROM restore_history WHERE job_id = 'rcd'")"
out=$(env REDIS_PREFIX=$P "$CTL" restore "$BC" --dry-run --wait --json --timeout 60); rc=$?
check "backupctl restore --dry-run: exit 0, the same counts" "0 true 3 1 2" \
  "$rc $(jq -r '"\(.result.dry_run) \(.result.tables.orders.updated) \(.result.tables.orders.deleted) \(.result.tables.order_items.inserted)"' <<<"$out")"
check "…still nothing written" 1 "$(q "SELECT count(*) FROM orders WHERE user_id = '$U' AND number = 888888")"
expect "the restore itself completes" restore rc1 "$BC"
check "…with the counts the preview gave" "3 1 2" "$(tables_of rc1)"
check "…every row of every table identical" none "$(differs sc)"
check "…the untouched rows not rewritten" 0 "$(new_versions)"
stop_worker wc

# ---- 9. only what changed since the backup is staged ----
P=tr$$d
start_worker wd BACKUP_NOTIFY=false
staged() { field "$1" result | jq -r .staged; }
state sd
ND=$(q "SELECT count(*) FROM snap_sd")
BD=$(backup bd full)
expect "restore onto the intact tenant completes" restore rd0 "$BD"
check "…no row staged, every row unchanged" "0 0 0 0 $ND" "$(staged rd0) $(counts rd0)"
expect "…the log says what was read" grep -q "only what changed since the backup's snapshot is staged (profiles, businesses, products, clients, orders, order_items, notifications, user_settings): 0 keys" "$tmp/wd.log"
# the keys about to change, whose backed-up rows alone must be staged
q "DROP TABLE IF EXISTS snap_chg; CREATE TABLE snap_chg AS
   SELECT id FROM (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 4) a
   UNION SELECT id FROM (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id DESC LIMIT 2) b
   UNION SELECT id FROM (SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U' ORDER BY i.id LIMIT 3) c
   UNION SELECT id FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id DESC LIMIT 2)
   UNION SELECT '$U'::uuid" >/dev/null
q "UPDATE orders SET notes = 'tracked' WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 4);
   DELETE FROM order_items WHERE id IN (SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U' ORDER BY i.id LIMIT 3);
   DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id DESC LIMIT 2);
   INSERT INTO orders (user_id, number, total) VALUES ('$U', 999001, 9.01);
   UPDATE profiles SET full_name = 'Tracked' WHERE id = '$U'" >/dev/null
expect "restore after a few changes completes" restore rd1 "$BD"
check "…every row of every table identical" none "$(differs sd)"
check "…the changed rows alone staged: 4 orders updated, 2 deleted, their items and 3 more, the profile" \
  "$(q "SELECT count(*) FROM snap_chg")" "$(staged rd1)"
check "…counted: the new order deleted, the rest updated or inserted" "1" "$(field rd1 result | jq -r .tables.orders.deleted)"
# a tombstone written since the backup, then purged (a newer full made it old): tracking can no
# longer say what changed, so every row is staged, and the deleted order comes back
q "DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 1)" >/dev/null
BE=$(backup be full)
check "a purge after the newer full removes the tombstone" yes \
  "$([ "$(q "SELECT backup_tombstones_purge('$U')")" -gt 0 ] && echo yes)"
check "…and records the newest xid it removed, past the older backup's snapshot" t \
  "$(q "SELECT xid >= pg_snapshot_xmin((SELECT snapshot FROM backup_metadata WHERE id = '$BD')::pg_snapshot) FROM backup_tombstone_purged WHERE user_id = '$U'")"
expect "restore of the older backup completes" restore rd2 "$BD"
check "…every row staged" "$ND" "$(staged rd2)"
check "…every row of every table identical (the deleted order is back)" none "$(differs sd)"
expect "…the log says why" grep -q "every row of the backup is staged: tombstones written since the backup's snapshot were purged" "$tmp/wd.log"
# deletes that left no tombstone (the trigger disabled meanwhile): that table is staged whole
BF=$(backup bf full)
NREF=$(q "SELECT count(*) FROM orders WHERE client_id = (SELECT id FROM clients WHERE user_id = '$U' ORDER BY id LIMIT 1)")
q "ALTER TABLE clients DISABLE TRIGGER clients_backup_tombstone;
   DELETE FROM clients WHERE id = (SELECT id FROM clients WHERE user_id = '$U' ORDER BY id LIMIT 1);
   ALTER TABLE clients ENABLE TRIGGER clients_backup_tombstone" >/dev/null
expect "restore after an untracked delete completes" restore rd3 "$BF"
check "…every row of every table identical (the client is back)" none "$(differs sd)"
check "…the clients staged whole, and the orders that named the client (stamped by SET NULL)" \
  "$(( $(q "SELECT count(*) FROM snap_sd WHERE tbl = 'clients'") + NREF )) 1 $NREF" \
  "$(field rd3 result | jq -r '"\(.staged) \(.tables.clients.inserted) \(.tables.orders.updated)"')"
expect "…the log names the table" grep -q "every backed-up row of clients is staged: its tracking triggers were not in place" "$tmp/wd.log"
# the application writes while the restore runs, after the changed keys were listed: a row the
# backup holds, left out as unchanged, is not deleted for having been written meanwhile
BG=$(backup bg full)
q "UPDATE profiles SET full_name = 'Before' WHERE id = '$U'" >/dev/null
KEEP=$(q "SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 1 OFFSET 10")
psql -X -q "$DATABASE_URL" -c "BEGIN; LOCK TABLE user_settings IN SHARE MODE; SELECT pg_sleep(4); COMMIT" >/dev/null 2>&1 &
lockpid=$!
sleep 0.5
enqueue rd4 type restore user_id "$U" backup_id "$BG"
expect "…the restore waits for the table, holding none of its rows (issue 29)" wait_until 10 \
  grep -q "user_settings (rows to write, or the table) held by another transaction: waiting" "$tmp/wd.log"
q "UPDATE orders SET notes = 'meanwhile' WHERE id = '$KEEP'" >/dev/null
wait "$lockpid"
expect "a restore with a write meanwhile completes" done_ok rd4
check "…the row written meanwhile is still there, as written; the profile restored" "meanwhile $(q "SELECT j->>'full_name' FROM snap_sd WHERE tbl = 'profiles'")" \
  "$(q "SELECT notes FROM orders WHERE id = '$KEEP'") $(q "SELECT full_name FROM profiles WHERE id = '$U'")"
stop_worker wd

# ---- 10. a table without the user's rows takes the backup's straight (issue 35) ----
P=tr$$e
start_worker we BACKUP_NOTIFY=false
placed() { field "$1" result | jq -r '"\(.placed) \(.staged)"'; }
drop_orders() { q "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$U');
                   DELETE FROM orders WHERE user_id = '$U'" >/dev/null; }
state se
NO=$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")
NI=$(q "SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U'")
BH=$(backup bh full)
OTHER=$(other_user)
drop_orders
expect "restore after the orders and items were deleted completes" restore re0 "$BH"
check "…every row of every table identical" none "$(differs se)"
check "…the orders and items written straight into their tables, none staged" "$((NO + NI)) 0" "$(placed re0)"
check "…counted as inserted" "$NO $NI" "$(field re0 result | jq -r '"\(.tables.orders.inserted) \(.tables.order_items.inserted)"')"
expect "…the log says so" grep -q "(0 staged, $((NO + NI)) placed)" "$tmp/we.log"
check "…another user's rows unchanged" "$OTHER" "$(other_user)"
# a client some orders name deleted too: the orders cannot go in before the client is back,
# so the step is read again through staging, and the restore is as exact
drop_orders
q "DELETE FROM clients WHERE id = (SELECT (j->>'client_id')::uuid FROM snap_se WHERE tbl = 'orders' AND j->>'client_id' IS NOT NULL ORDER BY j->>'id' LIMIT 1)" >/dev/null
expect "restore after the orders, items and a client they name were deleted completes" restore re1 "$BH"
check "…every row of every table identical (the client is back)" none "$(differs se)"
expect "…the log says the step was read again, staged" grep -q "writing its rows straight into orders failed (23503.*read again, staged" "$tmp/we.log"
check "…every row of the orders and items staged, none placed" "0 yes" \
  "$(field re1 result | jq -r .placed) $([ "$(field re1 result | jq -r .staged)" -ge $((NO + NI)) ] && echo yes)"
# a key of another user's row: one of the user's orders moved to V, the others deleted; the
# unique key refuses the copy, staging names it, nothing changes
drop_orders
q "INSERT INTO orders SELECT * FROM jsonb_populate_record(NULL::orders, (SELECT j FROM snap_se WHERE tbl = 'orders' ORDER BY j->>'id' LIMIT 1) || jsonb_build_object('user_id', '$V', 'client_id', NULL, 'number', 999999))" >/dev/null
MOVED=$(q "SELECT j->>'id' FROM snap_se WHERE tbl = 'orders' ORDER BY j->>'id' LIMIT 1")
enqueue re2 type restore user_id "$U" backup_id "$BH"
wait_until 30 status_is re2 dead || bad "a restore onto another user's key did not fail"
expect "…refused, naming the key of the other user's row" grep -q "orders rows whose keys belong to rows of another user.*first: orders $MOVED" <<<"$(field re2 error)"
check "…nothing changed: the user has no orders, V's row is there" "0 1" \
  "$(q "SELECT count(*) FROM orders WHERE user_id = '$U'") $(q "SELECT count(*) FROM orders WHERE id = '$MOVED' AND user_id = '$V'")"
q "DELETE FROM orders WHERE id = '$MOVED'" >/dev/null
expect "restore once the other row is gone completes" restore re3 "$BH"
check "…every row of every table identical" none "$(differs se)"
# a damaged object whose orders and items went in before the damage was read: refused, and
# what went in is gone with the step
drop_orders
state se_gone
KH=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$BH'")
store_get "$KH" "$tmp/h.gz"
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) - 40] ^= 1; open(sys.argv[2], 'wb').write(b)" "$tmp/h.gz" "$tmp/h_bad.gz"
store_put "$tmp/h_bad.gz" "$KH"
enqueue re7 type restore user_id "$U" backup_id "$BH"
wait_until 60 status_is re7 dead || bad "the restore of a damaged object did not fail"
expect "a damaged object, its orders placed first: refused, the reason named" grep -q "Backup checksum verification failed" <<<"$(field re7 error)"
check "…nothing changed (the placed rows rolled back)" "none 0" "$(differs se_gone) $(q "SELECT count(*) FROM orders WHERE user_id = '$U'")"
store_put "$tmp/h.gz" "$KH"
expect "the object put back restores" restore re8 "$BH"
check "…every row of every table identical" none "$(differs se)"
# a key the restore inserts, inserted and committed by the application after the restore's
# snapshot (while it waits for a table lock): the plain INSERT meets it, the attempt changes
# nothing and runs again, and the second attempt restores the backup's row over it
K=$(q "SELECT j->>'id' FROM snap_se WHERE tbl = 'orders' ORDER BY j->>'id' DESC LIMIT 1")
q "DELETE FROM orders WHERE id = '$K'" >/dev/null
psql -X -q "$DATABASE_URL" -c "BEGIN; LOCK TABLE user_settings IN SHARE MODE; SELECT pg_sleep(3); COMMIT" >/dev/null 2>&1 &
lockpid=$!
sleep 0.5
enqueue re6 type restore user_id "$U" backup_id "$BH"
wait_until 10 grep -q "\[job re6\].*user_settings (rows to write, or the table) held by another transaction" "$tmp/we.log" ||
  bad "the restore did not wait for the table lock"
q "INSERT INTO orders (id, user_id, number, total, notes) VALUES ('$K', '$U', 424242, 1, 'meanwhile')" >/dev/null
wait "$lockpid"
expect "a restore whose new key the application inserted meanwhile completes" done_ok re6 60
expect "…its first attempt met the key, changed nothing, and ran again" grep -q "\[job re6\].*another transaction inserted a key of user $U's orders while the restore ran: nothing was changed, the restore runs again" "$tmp/we.log"
check "…every row of every table identical (the backup's row over the application's)" none "$(differs se)"
# a preview never writes straight
drop_orders
expect "a preview of that restore completes" restore re4 "$BH" dry_run true
check "…counts the inserts, writes nothing, places nothing" "$NO 0 0" \
  "$(field re4 result | jq -r .tables.orders.inserted) $(q "SELECT count(*) FROM orders WHERE user_id = '$U'") $(field re4 result | jq -r .placed)"
expect "restore after the preview completes" restore re5 "$BH"
check "…every row of every table identical" none "$(differs se)"
stop_worker we

q "DROP TABLE IF EXISTS snap_se, snap_se_gone, snap_s0, snap_s1, snap_s2, snap_s3, snap_sz, snap_sc, snap_sd, snap_chg, snap_xm, snap_now, snap_before" >/dev/null
finish
