#!/usr/bin/env bash
# test_tracking: proto/sql/004_change_tracking.sql gives exact incrementals.
# A transaction that began before a base backup's snapshot and committed after
# it is caught by the xid test (and would be missed by updated_at > base time);
# deletions leave tombstones that name their user or parent; what the base
# saw is not selected again; web-tier users cannot read tombstones; the COPY
# statements `backupctl scope --sql` prints read exactly one user's rows.
# 014's cheaper triggers: inserts stamped by the column default (the stamp
# trigger's WHEN skips them), statement-level tombstones (one per deleted row),
# an insert bringing its own stamp corrected, and a row moved to another user
# leaves a tombstone for its old owner. 017: an item deleted with its order
# leaves none (the order's stands for it); one deleted alone still does.
CTL=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate

U=cccccccc-0000-4000-8000-00000000000c
q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_tombstones WHERE user_id = '$U'" >/dev/null
q "INSERT INTO profiles (id, email, full_name) VALUES ('$U', 'track@example.com', 'Track')" >/dev/null
OLD=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$U', 1, 10) RETURNING id")
GONE=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$U', 2, 20) RETURNING id")
ITEM=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$GONE', 1, 20) RETURNING id")
check "rows are stamped with their writer" "t" "$(q "SELECT backup_xid IS NOT NULL FROM orders WHERE id = '$OLD'")"

# session A starts writing before the base backup and commits after it
coproc A { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" 2>&1; }
echo "BEGIN; INSERT INTO orders (user_id, number, total) VALUES ('$U', 3, 30) RETURNING id; \\echo written" >&"${A[1]}"
LATE=""
while read -r -t 10 line <&"${A[0]}"; do
  [ "$line" = written ] && break
  LATE=$line
done
check "late writer inserted (uncommitted)" 36 "${#LATE}"

# the base backup: one REPEATABLE READ transaction, its snapshot recorded
BASE=$(psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" <<SQL | tail -1
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT count(*) FROM orders WHERE user_id = '$U';
SELECT pg_current_snapshot()::text || ' ' || extract(epoch FROM clock_timestamp());
COMMIT;
SQL
)
SNAP=${BASE% *}
BASE_TIME=${BASE#* }
check "the base saw two orders, not the uncommitted one" 2 \
  "$(q "SELECT count(*) FROM orders WHERE user_id = '$U' AND pg_visible_in_snapshot(backup_xid, '$SNAP')")"

if [ -n "${A[1]:-}" ]; then
  echo "COMMIT; \\echo committed" >&"${A[1]}"
  while read -r -t 10 line <&"${A[0]}"; do [ "$line" = committed ] && break; done
  echo '\q' >&"${A[1]}"
fi
wait "${A_PID:-0}" 2>/dev/null

# after the base: an update and deletions
q "UPDATE orders SET total = 11 WHERE id = '$OLD'" >/dev/null
q "DELETE FROM orders WHERE id = '$GONE'" >/dev/null # cascades to its item

INC="SELECT string_agg(id::text, ' ' ORDER BY total) FROM orders
     WHERE user_id = '$U' AND backup_xid IS NOT NULL AND NOT pg_visible_in_snapshot(backup_xid, '$SNAP')"
check "incremental: the late commit and the update" "$OLD $LATE" "$(q "$INC")"
check "a timestamp test would miss the late commit" "f" \
  "$(q "SELECT extract(epoch FROM updated_at) > $BASE_TIME FROM orders WHERE id = '$LATE'")"
check "deleted order: tombstone names its user" "$GONE" \
  "$(q "SELECT row_id FROM backup_tombstones WHERE table_name = 'orders' AND user_id = '$U' AND NOT pg_visible_in_snapshot(xid, '$SNAP')")"
check "an item deleted with its order leaves no tombstone: the order's stands for it (017)" 0 \
  "$(q "SELECT count(*) FROM backup_tombstones WHERE table_name = 'order_items' AND parent_id = '$GONE'")"
LONE=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$OLD', 1, 1) RETURNING id")
q "DELETE FROM order_items WHERE id = '$LONE'" >/dev/null
check "an item deleted alone: its tombstone names its order" "$OLD" \
  "$(q "SELECT parent_id FROM backup_tombstones WHERE table_name = 'order_items' AND row_id = '$LONE'")"
check "user_settings: keyed by user_id" "t" \
  "$(q "INSERT INTO user_settings (user_id) VALUES ('$U') ON CONFLICT DO NOTHING; DELETE FROM user_settings WHERE user_id = '$U'; SELECT count(*) = 1 FROM backup_tombstones WHERE table_name = 'user_settings' AND row_id = '$U'")"

# the scope table drives the triggers: one pair per table it lists
check "every scoped table is tracked" "$(q "SELECT count(*) FROM backup_scope")" \
  "$(q "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%_backup_tombstone'")"
check "a scope row needs exactly one way to its user" "ERROR" \
  "$(q "INSERT INTO backup_scope (table_name, restore_order) VALUES ('bw_test_nowhere', 1)" 2>&1 | grep -o ERROR | head -1)"

# web-tier users cannot read tombstones
ADMIN_URL=${BW_ADMIN_DATABASE_URL:?run through tools/devenv test}
out=$(psql -X -q -t -A "$ADMIN_URL" 2>&1 <<SQL
SET ROLE authenticated;
SELECT count(*) FROM backup_tombstones;
SQL
)
check "authenticated role cannot read tombstones" "permission denied" "$(grep -o 'permission denied' <<<"$out" | head -1)"

# the scope's COPY statements: one user's rows, one JSON object per line as PostgreSQL writes it
# (--json; the worker reads the same rows as COPY text and writes that JSON: test_rowjson.sh)
q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$OLD', 2, 5.5)" >/dev/null
"$CTL" scope --sql --json >"$tmp/scope.sql"; rc=$?
check "backupctl scope --sql --json" "0 8" "$rc $(wc -l <"$tmp/scope.sql")"
"$CTL" scope --sql >"$tmp/text.sql"
check "backupctl scope --sql: COPY text of the same rows" "0 8" \
  "$(grep -c row_to_json "$tmp/text.sql") $(grep -c 'TO STDOUT$' "$tmp/text.sql")"
copy_of() { # TABLE [USER]: run the table's COPY for the user, print its output
  psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "SELECT set_config('backup.user_id', '${2:-$U}', false)" \
    -c "$(awk -F'\t' -v t="$1" '$1 == t { print $2 }' "$tmp/scope.sql")" | tail -n +2
}
check "COPY orders: the user's two orders" 2 "$(copy_of orders | wc -l)"
check "COPY order_items: through the user's orders" 1 "$(copy_of order_items | wc -l)"
check "COPY output is JSON, every column but backup_xid" "2 false" \
  "$(copy_of order_items | jq -r '[.quantity, has("backup_xid")] | map(tostring) | join(" ")')"
check "numeric keeps its digits (5.50, not 5.5)" 1 "$(copy_of order_items | grep -c '"unit_price":5.50')"
check "COPY for another user reads none of these" 0 \
  "$(copy_of orders dddddddd-0000-4000-8000-0000000000ff | wc -l)"

# 014: cheaper triggers, the same contract
check "the stamp trigger is skipped when the default already stamped the row (a WHEN clause)" "t" \
  "$(q "SELECT tgqual IS NOT NULL FROM pg_trigger WHERE tgname = 'orders_backup_stamp'")"
check "tombstones: one trigger per statement, reading its transition table" "0 backup_old" \
  "$(q "SELECT (tgtype & 1)::text || ' ' || tgoldtable FROM pg_trigger WHERE tgname = 'orders_backup_tombstone'")"
check "an insert bringing its own stamp gets the writer's" "t" \
  "$(q "INSERT INTO orders (user_id, number, total, backup_xid) VALUES ('$U', 40, 1, '1') RETURNING backup_xid = pg_current_xact_id()")"
q "INSERT INTO orders (user_id, number, total) SELECT '$U', 1000 + g, g FROM generate_series(1, 50) g" >/dev/null
q "INSERT INTO order_items (order_id, quantity, unit_price) SELECT id, 1, 1 FROM orders WHERE user_id = '$U' AND number > 1000" >/dev/null
q "DELETE FROM backup_tombstones WHERE user_id = '$U' OR parent_id IN (SELECT id FROM orders WHERE user_id = '$U')" >/dev/null
q "DELETE FROM orders WHERE user_id = '$U' AND number > 1000" >/dev/null # its items go by cascade
check "a bulk delete: one tombstone per order, in one statement" 50 \
  "$(q "SELECT count(*) FROM backup_tombstones WHERE table_name = 'orders' AND user_id = '$U'")"
check "…and none for the items the cascade deleted (their orders' stand for them)" 0 \
  "$(q "SELECT count(*) FROM backup_tombstones t WHERE table_name = 'order_items' AND parent_id::text = ANY (SELECT row_id FROM backup_tombstones WHERE table_name = 'orders' AND user_id = '$U')")"
V=cccccccc-0000-4000-8000-00000000000d
q "DELETE FROM profiles WHERE id = '$V'; INSERT INTO profiles (id, email, full_name) VALUES ('$V', 'track2@example.com', 'Track 2')" >/dev/null
MOVED=$(q "INSERT INTO orders (user_id, number, total) VALUES ('$U', 50, 5) RETURNING id")
q "UPDATE orders SET total = 6 WHERE id = '$MOVED'" >/dev/null
check "an update that keeps the owner leaves no tombstone" 0 "$(q "SELECT count(*) FROM backup_tombstones WHERE row_id = '$MOVED'")"
q "UPDATE orders SET user_id = '$V' WHERE id = '$MOVED'" >/dev/null
check "a row moved to another user: a tombstone for its old owner" "$U" \
  "$(q "SELECT user_id FROM backup_tombstones WHERE table_name = 'orders' AND row_id = '$MOVED'")"
ITEM2=$(q "INSERT INTO order_items (order_id, quantity, unit_price) VALUES ('$OLD', 1, 1) RETURNING id")
q "UPDATE order_items SET order_id = '$MOVED' WHERE id = '$ITEM2'" >/dev/null
check "an item moved to another order: a tombstone naming the old order" "$OLD" \
  "$(q "SELECT parent_id FROM backup_tombstones WHERE table_name = 'order_items' AND row_id = '$ITEM2'")"
q "DELETE FROM profiles WHERE id = '$V'; DELETE FROM backup_tombstones WHERE user_id = '$V' OR row_id = '$MOVED'" >/dev/null

q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_tombstones WHERE user_id = '$U' OR parent_id = '$GONE' OR parent_id = '$OLD'" >/dev/null
finish
