#!/usr/bin/env bash
# test_backup: the backup job against real Redis, PostgreSQL and S3 (s3rver; moto for the
# stale-upload case), with real worker processes.
#  1. full backup of a hostile tenant: the object read back with the AWS CLI is valid JSON
#     (gunzip | jq) holding exactly the user's rows, every column, compared through
#     PostgreSQL's to_jsonb; checksum = sha256sum of the object = manifest; metadata row;
#     progress events; a writer that began before the snapshot is not in it
#  2. incremental after inserts, updates and deletes: exactly those rows and deleted keys,
#     including the writer that committed after the base's snapshot
#  3. differential: everything since the full; retry-safe ids; an incremental with no base is
#     full; an unknown user is refused
#  4. S3 killed mid-upload, then back: the job retries and completes with one object, one row
#  5. worker killed mid-upload (moto): the next run aborts the stale multipart upload
#  6. a small backup costs two S3 requests: PutObject of the object, PutObject of its manifest
#     (no multipart upload below one part, no stale-upload listing on a first run)
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

# fetch JOB FILE: the job's object, decompressed, into FILE; also FILE.gz and FILE.key
fetch() {
  local key
  key=$(q "SELECT s3_key FROM backup_metadata WHERE job_id = '$1'")
  echo "$key" >"$2.key"
  store_get "$key" "$2.gz" && gunzip -c <"$2.gz" >"$2"
}
# load_doc FILE: the document into t_docj.d, parsed by PostgreSQL (exact numbers, unlike jq 1.6)
load_doc() {
  q "DROP TABLE IF EXISTS t_doc, t_docj; CREATE TABLE t_doc (n bigserial, t text)"
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "COPY t_doc (t) FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')" <"$1"
  q "CREATE TABLE t_docj AS SELECT string_agg(t, E'\\n' ORDER BY n)::jsonb AS d FROM t_doc"
}
# diff_rows TABLE USER [EXTRA]: "<file rows not in db> <db rows not in file>" (db side: EXTRA too)
diff_rows() {
  local w
  w="$(filter "$1" "$2") ${3:-}"
  q "WITH f AS (SELECT jsonb_array_elements(d->'tables'->'$1') r FROM t_docj),
          db AS (SELECT to_jsonb(x) - 'backup_xid' r FROM $1 x WHERE $w)
     SELECT (SELECT count(*) FROM (SELECT r FROM f EXCEPT ALL SELECT r FROM db) a) || ' ' ||
            (SELECT count(*) FROM (SELECT r FROM db EXCEPT ALL SELECT r FROM f) b)"
}

U=5eed0001-0000-4000-8000-00000000000a
V=5eed0002-0000-4000-8000-00000000000b
for u in $U $V; do
  q "DELETE FROM profiles WHERE id = '$u'; DELETE FROM backup_metadata WHERE user_id = '$u'; DELETE FROM change_segments WHERE user_id = '$u'" >/dev/null
done
"$ROOT/tools/datagen" --user "$U" --orders 300 --seed tb1 >/dev/null
"$ROOT/tools/datagen" --user "$V" --orders 50 --seed tb2 >/dev/null
# values a double would round, a huge numeric in jsonb, and a deep JSON string
q "INSERT INTO products (user_id, sku, name, price, weight_grams, attributes)
   VALUES ('$U', 'BIG-1', E'Grande \\\\ \"x\" \\u00e9\\n', 9999999999.99, 9007199254740993,
           '{\"n\": 123456789012345678901234567890.123456789, \"s\": \"\\\\u0000 no\"}')" >/dev/null

CGONE=$(q "INSERT INTO clients (user_id, name) VALUES ('$U', 'Sin pedidos') RETURNING id")

# ---- 1. full backup ----
P=tb$$a
start_worker w1 BACKUP_NOTIFY=false
X=$(q "SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 1")
# a writer that begins before the backup's snapshot and commits after it
coproc A { psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" 2>&1; }
echo "BEGIN; UPDATE orders SET notes = 'late writer' WHERE id = '$X'; \\echo written" >&"${A[1]}"
while read -r -t 10 line <&"${A[0]}"; do [ "$line" = written ] && break; done

enqueue full1 type backup user_id "$U" mode full
expect "full backup completes" done_ok full1
FULL=$(field full1 backup_id)
expect "backup id is backup-{user}-{ms}" grep -Eq "^backup-$U-[0-9]{13}$" <<<"$FULL"
fetch full1 "$tmp/full.json"
check "key as in the design" "backups/$U/$FULL.json.gz" "$(cat "$tmp/full.json.key")"
expect "gunzip | jq reads the object" jq -e . "$tmp/full.json" >/dev/null
check "header: user" "$U" "$(jq -r .user_id "$tmp/full.json")"
check "header: type and format" "full pedidolist-backup 2" \
  "$(jq -r '"\(.type) \(.format) \(.version)"' "$tmp/full.json")"
check "header, manifest and record name the codecs applied" '["gzip"] ["gzip"] {gzip}' \
  "$(jq -c .codecs "$tmp/full.json") $(store_cat "$(cat "$tmp/full.json.key").manifest.json" | jq -c .codecs) $(q "SELECT codecs FROM backup_metadata WHERE job_id = 'full1'")"
check "one row per line" "$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")" \
  "$(sed -n '/^"orders":\[/,/^\]/p' "$tmp/full.json" | grep -c '^{"id":')"
load_doc "$tmp/full.json"
for t in $TABLES; do
  check "full: $t holds exactly the user's rows" "0 0" "$(diff_rows $t "$U")"
done
check "full: no row of another user" 0 "$(grep -c "$V" "$tmp/full.json")"
expect "full: 9007199254740993 digit for digit" grep -q '"weight_grams":9007199254740993' "$tmp/full.json"
expect "full: the big numeric digit for digit" grep -q '123456789012345678901234567890.123456789' "$tmp/full.json"
check "full: the late writer's change is not in the snapshot" "t" \
  "$(q "SELECT (d->'tables'->'orders') @> jsonb_build_array(jsonb_build_object('id', '$X'::text))
        AND NOT (d->'tables'->'orders') @> '[{\"notes\": \"late writer\"}]' FROM t_docj")"
check "trailer counts match" "$(q "SELECT count(*) FROM order_items WHERE $(filter order_items "$U")")" \
  "$(jq -r .trailer.rows.order_items "$tmp/full.json")"
SUM=$(sha256sum <"$tmp/full.json.gz" | cut -d' ' -f1)
check "metadata: completed, checksum = sha256 of the object, size" \
  "completed|full|$SUM|$(stat -c %s "$tmp/full.json.gz")" \
  "$(q "SELECT status, type, checksum, size FROM backup_metadata WHERE id = '$FULL'")"
check "metadata: snapshot recorded" t "$(q "SELECT snapshot ~ '^[0-9]+:[0-9]+:' FROM backup_metadata WHERE id = '$FULL'")"
store_get "backups/$U/$FULL.json.gz.manifest.json" "$tmp/full.manifest"
check "manifest: checksum, size, counts" "$SUM $(stat -c %s "$tmp/full.json.gz") 300" \
  "$(jq -r '"\(.sha256) \(.size) \(.rows.orders)"' "$tmp/full.manifest")"
check "status hash: rows done of rows expected" "$(jq '[.trailer.rows[]] | add' "$tmp/full.json") $(jq '[.trailer.rows[]] | add' "$tmp/full.json")" "$(field full1 rows) $(field full1 rows_total)"

# the late writer commits after the base
echo "COMMIT; \\echo committed" >&"${A[1]}"
while read -r -t 10 line <&"${A[0]}"; do [ "$line" = committed ] && break; done
echo '\q' >&"${A[1]}"
wait "${A_PID:-0}" 2>/dev/null

# ---- 2. incremental: inserts, updates, deletes ----
read -r O1 O2 <<<"$(q "SELECT string_agg(id::text, ' ') FROM (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id OFFSET 1 LIMIT 2) s")"
GONE=$(q "SELECT id FROM orders WHERE user_id = '$U' ORDER BY id OFFSET 3 LIMIT 1")
q "UPDATE orders SET total = total + 1 WHERE id IN ('$O1', '$O2');
   DELETE FROM orders WHERE id = '$GONE'; DELETE FROM clients WHERE id = '$CGONE';
   UPDATE orders SET notes = 'other user' WHERE user_id = '$V'" >/dev/null
NEWP=$(q "INSERT INTO products (user_id, sku, name, price) VALUES ('$U', 'NEW-1', 'Nuevo', 1.5) RETURNING id")
enqueue inc1 type backup user_id "$U" mode incremental
expect "incremental completes" done_ok inc1
INC=$(field inc1 backup_id)
fetch inc1 "$tmp/inc.json"
check "incremental key" "backups/$U/incremental/$INC.json.gz" "$(cat "$tmp/inc.json.key")"
check "incremental header: type, base" "incremental $FULL" "$(jq -r '"\(.type) \(.base_backup_id)"' "$tmp/inc.json")"
check "incremental: changed orders, the late writer's included" \
  "$(printf '%s\n' "$X" "$O1" "$O2" | sort | tr '\n' ' ')" \
  "$(jq -r '.tables.orders[].id' "$tmp/inc.json" | sort | tr '\n' ' ')"
check "incremental: the new product only" "$NEWP" "$(jq -r '.tables.products[].id' "$tmp/inc.json")"
check "incremental: nothing else" "0 0 0 0 0 0" \
  "$(jq -r '[.tables.profiles, .tables.businesses, .tables.clients, .tables.order_items, .tables.notifications, .tables.user_settings] | map(length) | join(" ")' "$tmp/inc.json")"
check "incremental: deleted order" "[\"$GONE\"]" "$(jq -c .deleted.orders "$tmp/inc.json")"
check "incremental: its items, deleted with it, not listed: the order's key stands for them (017)" "[]" \
  "$(jq -c .deleted.order_items "$tmp/inc.json")"
check "incremental: deleted client" "[\"$CGONE\"]" "$(jq -c .deleted.clients "$tmp/inc.json")"
load_doc "$tmp/inc.json"
check "incremental: rows equal the database's" "0 0" "$(diff_rows orders "$U" "AND id IN ('$X', '$O1', '$O2')")"
check "incremental: the late writer's value" "late writer" "$(jq -r --arg x "$X" '.tables.orders[] | select(.id == $x) | .notes' "$tmp/inc.json")"
check "trailer: deleted counts" "1 1" "$(jq -r '"\(.trailer.deleted.orders) \(.trailer.deleted.clients)"' "$tmp/inc.json")"

# ---- 3. differential, retry-safe ids, an incremental with no base ----
q "UPDATE products SET price = 2.5 WHERE id = '$NEWP'" >/dev/null
enqueue dif1 type backup user_id "$U" mode differential
expect "differential completes" done_ok dif1
DIF=$(field dif1 backup_id)
fetch dif1 "$tmp/dif.json"
check "differential: base is the full, key as a full's" "differential $FULL backups/$U/$DIF.json.gz" \
  "$(jq -r '"\(.type) \(.base_backup_id)"' "$tmp/dif.json") $(cat "$tmp/dif.json.key")"
check "differential: every order changed since the full" 3 "$(jq '.tables.orders | length' "$tmp/dif.json")"
check "differential: deletions since the full" "[\"$GONE\"]" "$(jq -c .deleted.orders "$tmp/dif.json")"
check "differential: the product's latest state" "2.50" "$(grep -o '"price":2.50' "$tmp/dif.json" | head -1 | cut -d: -f2)"
# the same job id enqueued again runs once: the queue acknowledges the repeat
enqueue dif1 type backup user_id "$U" mode differential
expect "the same job id again: acknowledged as a duplicate, not run" \
  wait_until 20 events_at_least dif1 duplicate 1
check "…one completed run still" 1 "$(count_events dif1 completed)"
# a run of a job id whose backup completed while its result never reached Redis (the worker
# died between the two): the job hash is gone, the row is there; the run finds it by job id
R DEL "$P:job:dif1" >/dev/null
enqueue dif1 type backup user_id "$U" mode differential
expect "a job id whose backup completed, run again, completes" \
  wait_until 20 events_at_least dif1 completed 2
check "…with the same backup, and no new row" "$DIF 1" \
  "$(field dif1 backup_id) $(q "SELECT count(*) FROM backup_metadata WHERE job_id = 'dif1'")"
expect "…and says it was done before" grep -q "already completed by an earlier run" <<<"$(field dif1 note)"
W=5eed0003-0000-4000-8000-00000000000c
q "DELETE FROM profiles WHERE id = '$W'; DELETE FROM backup_metadata WHERE user_id = '$W'; DELETE FROM change_segments WHERE user_id = '$W';
   INSERT INTO profiles (id, email, full_name) VALUES ('$W', 'w@example.com', 'W')" >/dev/null
enqueue nobase type backup user_id "$W" mode incremental
expect "incremental with no base completes" done_ok nobase
check "…as a full backup, and says so" "full|backup-" \
  "$(q "SELECT type FROM backup_metadata WHERE job_id = 'nobase'")|$(field nobase backup_id | cut -c1-7)"
expect "…in its note" grep -q "made a full one" <<<"$(field nobase note)"
q "DELETE FROM backup_metadata WHERE job_id = 'ghost'" >/dev/null
enqueue ghost type backup user_id 5eed0009-0000-4000-8000-000000000009 mode full
expect "a user with no rows at all: dead, not an empty backup" wait_until 20 status_is ghost dead
expect "…and the reason says so" grep -q "no rows in any table" <<<"$(field ghost error)"
check "…recorded as failed" failed "$(q "SELECT status FROM backup_metadata WHERE job_id = 'ghost'")"
stop_worker w1

# notifications, on by default
P=tb$$n
start_worker wn
enqueue note1 type backup user_id "$W" mode full
expect "backup with notifications completes" done_ok note1
check "a notification row for the user" 1 \
  "$(q "SELECT count(*) FROM notifications WHERE user_id = '$W' AND type = 'backup_completed' AND data->>'backup_id' = '$(field note1 backup_id)'")"
stop_worker wn

if s3_only "sections 4-6 (S3 killed mid-upload, multipart uploads on moto, the requests of a small backup)"; then
# ---- 4. S3 killed mid-upload (uncompressed, 5 MiB parts: several parts) ----
# A stall on the third part holds the upload open while s3rver is killed
B=5eed0004-0000-4000-8000-00000000000d
q "DELETE FROM profiles WHERE id = '$B'; DELETE FROM backup_metadata WHERE user_id = '$B'; DELETE FROM change_segments WHERE user_id = '$B'" >/dev/null
s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$B/"
"$ROOT/tools/datagen" --user "$B" --orders 8000 --seed tb4 >/dev/null
S3PORT=$(sed -E 's#.*:([0-9]+)$#\1#' <<<"$S3_ENDPOINT")
node "$ROOT/tests/faultproxy.js" 127.0.0.1 "$S3PORT" >"$tmp/proxy.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q listening "$tmp/proxy.log"
PX=$(awk '/listening/ {print $2}' "$tmp/proxy.log")
curl -s -X POST --data 'PUT~partNumber=3:stall:1' "http://127.0.0.1:$PX/__plan" >/dev/null
P=tb$$k
start_worker wk S3_ENDPOINT="http://127.0.0.1:$PX" BACKUP_COMPRESSION=false S3_PART_SIZE_MB=5 \
  S3_UPLOAD_CONCURRENCY=1 JOB_BACKOFF_BASE=500ms JOB_BACKOFF_MAX=1s JOB_MAX_ATTEMPTS=20 BACKUP_NOTIFY=false
enqueue kill1 type backup user_id "$B" mode full
expect "the upload reached its third part" wait_until 30 bash -c "curl -s http://127.0.0.1:$PX/__stats | grep -q '\"faults\":1'"
"$BW_DEVENV" kill s3 >/dev/null
curl -s -X POST "http://127.0.0.1:$PX/__cut" >/dev/null
expect "the job fails over to a retry while S3 is down" wait_until 60 events_at_least kill1 retrying 1
"$BW_DEVENV" start >/dev/null 2>&1
expect "after S3 is back the backup completes" done_ok kill1 120
KB=$(field kill1 backup_id)
check "one metadata row, completed after several runs" "1|completed|t" \
  "$(q "SELECT count(*), min(status), min(attempts) >= 2 FROM backup_metadata WHERE job_id = 'kill1'")"
check "one object and its manifest under the user's prefix" \
  "backups/$B/$KB.json backups/$B/$KB.json.manifest.json" \
  "$(s3 s3api list-objects-v2 --bucket "$S3_BUCKET" --prefix "backups/$B/" --query 'Contents[].Key' --output text | tr '\t' ' ')"
s3 s3 cp "s3://$S3_BUCKET/backups/$B/$KB.json" "$tmp/kill.json" --quiet
check "the uncompressed object: checksum and counts" \
  "$(q "SELECT checksum FROM backup_metadata WHERE id = '$KB'") 8000" \
  "$(sha256sum <"$tmp/kill.json" | cut -d' ' -f1) $(jq '.tables.orders | length' "$tmp/kill.json")"
# progress is coalesced (a fast job may send none); this one stalled long enough to send some
check "progress events carry rows_total" "$(field kill1 rows)" \
  "$(R EVAL "for _, e in ipairs(redis.call('XRANGE', ARGV[1] .. ':events', '-', '+')) do
      local t = {} for i = 1, #e[2], 2 do t[e[2][i]] = e[2][i + 1] end
      if t.job_id == ARGV[2] and t.event == 'progress' and tonumber(t.rows_total or '0') > 0 then
        return t.rows_total end end return ''" 0 "$P" kill1)"
stop_worker wk

# ---- 5. worker killed mid-upload (moto, which lists multipart uploads) ----
MOTOPORT=$(sed -E 's#.*:([0-9]+)$#\1#' <<<"$BW_MOTO_ENDPOINT")
node "$ROOT/tests/faultproxy.js" 127.0.0.1 "$MOTOPORT" >"$tmp/proxy2.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q listening "$tmp/proxy2.log"
PM=$(awk '/listening/ {print $2}' "$tmp/proxy2.log")
curl -s -X POST --data 'PUT~partNumber=2:stall:1' "http://127.0.0.1:$PM/__plan" >/dev/null
M=(S3_ENDPOINT="http://127.0.0.1:$PM" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
   BACKUP_COMPRESSION=false S3_PART_SIZE_MB=5 S3_UPLOAD_CONCURRENCY=1 BACKUP_NOTIFY=false)
P=tb$$m
start_worker wm "${M[@]}"
enqueue kill2 type backup user_id "$B" mode full
expect "moto: the upload reached its second part" wait_until 30 bash -c "curl -s http://127.0.0.1:$PM/__stats | grep -q '\"faults\":1'"
kill -9 "$PID_wm"
curl -s -X POST "http://127.0.0.1:$PM/__cut" >/dev/null
KEY2=$(q "SELECT s3_key FROM backup_metadata WHERE job_id = 'kill2'")
ms3() { AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url "$BW_MOTO_ENDPOINT" "$@"; }
uploads() { ms3 s3api list-multipart-uploads --bucket "$S3_BUCKET" --prefix "$KEY2" --query 'Uploads[].UploadId' --output text; }
check "moto: the killed run left its multipart upload open" 1 "$(uploads | wc -w)"
start_worker wm2 "${M[@]}"
expect "moto: another worker takes the job over and completes it" done_ok kill2 60
check "moto: no multipart upload left open" None "$(uploads)"
expect "moto: the stale upload was aborted by the new run" grep -q "aborted 1 multipart upload" "$tmp/wm2.log"
check "moto: the object is complete" "$(q "SELECT size FROM backup_metadata WHERE job_id = 'kill2'")" \
  "$(ms3 s3api head-object --bucket "$S3_BUCKET" --key "$KEY2" --query ContentLength --output text)"
stop_worker wm2

# ---- 6. the S3 requests of a small backup ----
node "$ROOT/tests/faultproxy.js" 127.0.0.1 "$(sed -E 's#.*:([0-9]+)$#\1#' <<<"$S3_ENDPOINT")" >"$tmp/proxy3.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q listening "$tmp/proxy3.log"
P3=$(awk '/listening/ {print $2}' "$tmp/proxy3.log")
P=tb$$s
start_worker ws S3_ENDPOINT="http://127.0.0.1:$P3" BACKUP_NOTIFY=false
enqueue small1 type backup user_id "$V" mode full
expect "small: the backup completes" done_ok small1 30
KEYS=$(q "SELECT s3_key FROM backup_metadata WHERE job_id = 'small1'")
mine=$(curl -s "http://127.0.0.1:$P3/__log" | grep -F "/backups/$V/" | sed -E 's/\?.*//; s#/'"$S3_BUCKET"'/##')
check "small: two requests, the object and its manifest, each one PutObject" \
  "PUT $KEYS|PUT $KEYS.manifest.json" "$(tr '\n' '|' <<<"$mine" | sed 's/|$//')"
check "small: the object is whole (its SHA-256 is the record's)" \
  "$(q "SELECT checksum FROM backup_metadata WHERE job_id = 'small1'")" \
  "$(s3 s3 cp "s3://$S3_BUCKET/$KEYS" - --quiet | sha256sum | cut -d' ' -f1)"
stop_worker ws

fi

q "DROP TABLE IF EXISTS t_doc, t_docj" >/dev/null
finish
