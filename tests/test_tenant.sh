#!/usr/bin/env bash
# test_tenant: a hostile tenant crafts its own backup objects to reach another user's rows.
# The attacker (user A) has S3 write access and can fix the record of the object (database
# access, or a manifest plus `backupctl reindex`). Each crafted object must be refused by the
# restore, name the row, and change nothing, for a full restore and for a `tables` restore:
#  - an order_items key that is user B's item spelled in upper case, or with braces
#  - orders.client_id naming B's client, products.business_id naming B's business,
#    order_items.product_id naming B's product (upper case)
#  - the reindex route: rows recorded from a manifest are marked unverified (backupctl list)
# A restore stages only rows changed since the backup (change tracking): A's rows are written
# again after the backup, so every row is staged and meets the fences. Then rows unchanged since
# a backup: a crafted key among them is caught all the same (the keys left out must be those
# of the user's unchanged rows: their count and digest), and a crafted value of an unchanged row
# is left out, never written. With A's orders and items deleted, the backup's go straight into
# the tables (placed, issue 35): a crafted client, parent or product is refused once written; a
# row of another owner or a key of B's item makes the step read again through staging, refused
# there; the genuine object then restores exactly, its orders and items placed.
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

A=7e5700a1-0000-4000-8000-0000000000a1
B=7e5700b2-0000-4000-8000-0000000000b2
fresh_user "$A" "$B"
"$ROOT/tools/datagen" --user "$A" --orders 40 --seed tt1 >/dev/null
"$ROOT/tools/datagen" --user "$B" --orders 40 --seed tt2 >/dev/null
# every product of both users in a business, every order with a client
for u in $A $B; do
  q "UPDATE products SET business_id = (SELECT id FROM businesses WHERE owner_id = '$u' LIMIT 1) WHERE user_id = '$u';
     UPDATE orders SET client_id = (SELECT id FROM clients WHERE user_id = '$u' LIMIT 1) WHERE user_id = '$u' AND client_id IS NULL" >/dev/null
done

digest() { # U [strict]: every row of the user, every column (with strict, backup_xid too:
  # any write to a row changes it)
  local sel="" t row="(to_jsonb(x) - 'backup_xid')::text"
  [ "${2:-}" = strict ] && row="x::text"
  for t in $TABLES; do
    sel+="${sel:+ UNION ALL }SELECT '$t' || $row AS r FROM $t x WHERE $(filter "$t" "$1")"
  done
  q "SELECT md5(string_agg(r, E'\\n' ORDER BY r)) FROM ($sel) s"
}
B_ITEM=$(q "SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$B' ORDER BY i.id LIMIT 1")
B_CLIENT=$(q "SELECT id FROM clients WHERE user_id = '$B' ORDER BY id LIMIT 1")
B_BUSINESS=$(q "SELECT id FROM businesses WHERE owner_id = '$B' ORDER BY id LIMIT 1")
B_PRODUCT=$(q "SELECT id FROM products WHERE user_id = '$B' ORDER BY id LIMIT 1")
upper() { tr a-f A-F <<<"$1"; }

P=tt$$
start_worker w1 BACKUP_NOTIFY=false
enqueue full type backup user_id "$A" mode full
done_ok full || bad "the backup of A did not complete: $(field full error)"
BA=$(field full backup_id)
KEY=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$BA'")
s3 s3 cp "s3://$S3_BUCKET/$KEY" "$tmp/orig.gz" --quiet
ORIG=$(q "SELECT checksum || ' ' || size FROM backup_metadata WHERE id = '$BA'")
# every row of A written since the backup (same values, updated_at kept): all staged by a restore
for t in $TABLES; do
  q "SELECT set_config('backup.restoring', 'on', true);
     UPDATE $t SET $(q "SELECT key_column FROM backup_scope WHERE table_name = '$t'") = $(q "SELECT key_column FROM backup_scope WHERE table_name = '$t'") WHERE $(filter "$t" "$A")" >/dev/null
done
DA=$(digest "$A")
DB=$(digest "$B" strict)

# forge NAME TABLE FIELD=VALUE...: A's backup object replaced by a crafted one, its record fixed
forge() {
  local name=$1; shift
  read -r sum size < <(python3 "$ROOT/tests/craft.py" "$tmp/orig.gz" "$tmp/$name.gz" "$@")
  s3 s3 cp "$tmp/$name.gz" "s3://$S3_BUCKET/$KEY" --quiet
  q "UPDATE backup_metadata SET checksum = '$sum', size = $size WHERE id = '$BA'" >/dev/null
}
# attack NAME NEEDLE [field value...]: the restore of the forged object fails naming NEEDLE,
# and neither user's rows changed
attack() {
  local name=$1 needle=$2; shift 2
  enqueue "$name" type restore user_id "$A" backup_id "$BA" "$@"
  done_ok "$name" 60 && bad "$name: the restore completed"
  check "$name: the restore failed for good" dead "$(field "$name" status)"
  local e; e=$(field "$name" error)
  expect "$name: refused, naming the row ($e)" grep -q -- "$needle" <<<"$e"
  check "$name: user B's rows unchanged" "$DB" "$(digest "$B" strict)"
  check "$name: user A's rows unchanged" "$DA" "$(digest "$A")"
}

forge upper order_items id="\"$(upper "$B_ITEM")\"" quantity=999
attack upper "order_items rows whose keys belong to rows of another user.*first: order_items $B_ITEM"
attack upper_sel "order_items rows whose keys belong to rows of another user" tables orders,order_items
forge braces order_items id="\"{$B_ITEM}\"" quantity=999
attack braces "order_items rows whose keys belong to rows of another user.*first: order_items $B_ITEM"
attack braces_sel "order_items rows whose keys belong to rows of another user" tables orders,order_items
forge client orders client_id="\"$B_CLIENT\""
attack client "orders rows whose client_id refers to a row that is missing or not user $A's.*first: orders"
attack client_sel "orders rows whose client_id refers to a row that is missing or not user $A's" tables orders,order_items
forge business products business_id="\"$(upper "$B_BUSINESS")\""
attack business "products rows whose business_id refers to a row that is missing or not user $A's.*first: products"
attack business_sel "products rows whose business_id" tables products
forge product order_items product_id="\"$(upper "$B_PRODUCT")\""
attack product "order_items rows whose product_id refers to a row that is missing or not user $A's"
attack product_sel "order_items rows whose product_id" tables orders,order_items
forge owner orders user_id="\"$(upper "$B")\""
attack owner "rows of orders that are not user $A's.*first: orders"

# the genuine object still restores, and changes nothing that was not A's
s3 s3 cp "$tmp/orig.gz" "s3://$S3_BUCKET/$KEY" --quiet
read -r sum size <<<"$ORIG"
q "UPDATE backup_metadata SET checksum = '$sum', size = $size WHERE id = '$BA'" >/dev/null
q "UPDATE orders SET notes = 'changed' WHERE user_id = '$A'" >/dev/null
enqueue genuine type restore user_id "$A" backup_id "$BA"
expect "the genuine backup restores" done_ok genuine
check "…A exactly as backed up" "$DA" "$(digest "$A")"
check "…B untouched" "$DB" "$(digest "$B" strict)"

# ---- A's orders and items gone: the backup's go straight into the tables, behind the same fences ----
q "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = '$A');
   DELETE FROM orders WHERE user_id = '$A'" >/dev/null
DA_FULL=$DA
DA=$(digest "$A")
B_ORDER=$(q "SELECT id FROM orders WHERE user_id = '$B' ORDER BY id LIMIT 1")
forge p_client orders client_id="\"$B_CLIENT\""
attack p_client "orders rows whose client_id refers to a row that is missing or not user $A's.*first: orders"
expect "…found once written, without reading the object again" test "$(grep -c "\[job p_client\].*read again, staged" "$tmp/w1.log")" = 0
forge p_parent order_items order_id="\"$B_ORDER\""
attack p_parent "rows of order_items that are not user $A's"
forge p_product order_items product_id="\"$(upper "$B_PRODUCT")\""
attack p_product "order_items rows whose product_id refers to a row that is missing or not user $A's.*first: order_items"
forge p_owner orders user_id="\"$(upper "$B")\""
attack p_owner "rows of orders that are not user $A's.*first: orders"
# its COPY leaves the row out (WHERE user_id = A); its items then name a missing order
expect "…the COPY left the row out: read again, staged" grep -q "\[job p_owner\].*read again, staged" "$tmp/w1.log"
forge p_upper order_items id="\"$(upper "$B_ITEM")\"" quantity=999
attack p_upper "order_items rows whose keys belong to rows of another user.*first: order_items $B_ITEM"
expect "…the key refused the COPY: read again, staged" grep -q "\[job p_upper\].*straight into order_items failed (23505.*read again, staged" "$tmp/w1.log"
s3 s3 cp "$tmp/orig.gz" "s3://$S3_BUCKET/$KEY" --quiet
read -r sum size <<<"$ORIG"
q "UPDATE backup_metadata SET checksum = '$sum', size = $size WHERE id = '$BA'" >/dev/null
enqueue p_genuine type restore user_id "$A" backup_id "$BA"
expect "the genuine backup restores, its orders and items placed" done_ok p_genuine
check "…A exactly as backed up" "$DA_FULL" "$(digest "$A")"
check "…B untouched" "$DB" "$(digest "$B" strict)"
check "…every order and item placed" "$(q "SELECT count(*) FROM orders WHERE user_id = '$A'") $(q "SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$A'")" \
  "$(field p_genuine result | jq -r '"\(.tables.orders.inserted) \(.tables.order_items.inserted)"')"
check "…written straight" "$(field p_genuine result | jq -r '.tables.orders.inserted + .tables.order_items.inserted')" "$(field p_genuine result | jq -r .placed)"
DA=$DA_FULL

# ---- rows unchanged since the backup are left out: a crafted one among them is never written ----
enqueue full2 type backup user_id "$A" mode full
done_ok full2 || bad "the second backup of A did not complete: $(field full2 error)"
BA2=$(field full2 backup_id)
KEY2=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$BA2'")
s3 s3 cp "s3://$S3_BUCKET/$KEY2" "$tmp/orig2.gz" --quiet
forge2() { # NAME TABLE FIELD=VALUE...: the second backup's object crafted, its record fixed
  local name=$1; shift
  read -r sum size < <(python3 "$ROOT/tests/craft.py" "$tmp/orig2.gz" "$tmp/$name.gz" "$@")
  s3 s3 cp "$tmp/$name.gz" "s3://$S3_BUCKET/$KEY2" --quiet
  q "UPDATE backup_metadata SET checksum = '$sum', size = $size WHERE id = '$BA2'" >/dev/null
}
forge2 left order_items id="\"$(upper "$B_ITEM")\"" quantity=999
BA=$BA2 attack left "order_items rows whose keys belong to rows of another user.*first: order_items $B_ITEM"
expect "…found by the keys left out" grep -q "disagrees with the database's history: .* order_items rows left out as unchanged since its snapshot, .* in the database (with other keys)" "$tmp/w1.log"
forge2 value order_items quantity=999
enqueue value type restore user_id "$A" backup_id "$BA2"
expect "a crafted value of an unchanged row: the restore completes" done_ok value
check "…no row staged, nothing written" "0 0 0 0" "$(field value result | jq -r '"\(.staged) \(.inserted) \(.updated) \(.deleted)"')"
check "…user B's rows unchanged" "$DB" "$(digest "$B" strict)"
check "…user A's rows unchanged (the crafted value is nowhere)" "$DA 0" \
  "$(digest "$A") $(q "SELECT count(*) FROM order_items WHERE quantity = 999")"
q "DELETE FROM backup_metadata WHERE id = '$BA2'" >/dev/null
s3 s3 rm "s3://$S3_BUCKET/$KEY2" --quiet
s3 s3 rm "s3://$S3_BUCKET/$KEY2.manifest.json" --quiet

# ---- the reindex route: a manifest rewritten to match a crafted object ----
read -r sum size < <(python3 "$ROOT/tests/craft.py" "$tmp/orig.gz" "$tmp/re.gz" order_items id="\"$(upper "$B_ITEM")\"" quantity=999)
s3 s3 cp "$tmp/re.gz" "s3://$S3_BUCKET/$KEY" --quiet
s3 s3 cp "s3://$S3_BUCKET/$KEY.manifest.json" - | jq -c --arg s "$sum" --argjson n "$size" '.sha256 = $s | .size = $n' >"$tmp/m.json"
s3 s3 cp "$tmp/m.json" "s3://$S3_BUCKET/$KEY.manifest.json" --quiet
q "DELETE FROM backup_metadata WHERE user_id = '$A'" >/dev/null
check "reindex records the forged manifest" "reindexed $A: 1 backup added, 0 already known, 0 skipped" "$("$CTL" reindex "$A" 2>&1)"
check "…as not verified by the worker" "reindex" "$(q "SELECT recorded_by FROM backup_metadata WHERE id = '$BA'")"
expect "backupctl list says so" grep -q "unverified" <<<"$("$CTL" list "$A")"
check "backupctl list --json says so" false "$("$CTL" list "$A" --json | jq -r '.[0].worker_verified')"
attack reindexed "order_items rows whose keys belong to rows of another user"
# a record edited after the reindex: the restore of an unverified backup reads its manifest again
q "UPDATE backup_metadata SET checksum = '$(sha256sum "$tmp/orig.gz" | cut -c1-64)', size = $(stat -c %s "$tmp/orig.gz") WHERE id = '$BA'" >/dev/null
s3 s3 cp "$tmp/orig.gz" "s3://$S3_BUCKET/$KEY" --quiet
attack remanifest "Backup checksum verification failed: .*manifest"
stop_worker w1

finish
