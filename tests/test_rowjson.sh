#!/usr/bin/env bash
# test_rowjson: the worker writes each row's JSON itself from COPY text (common/pg/pgjson.c), and it
# must be byte for byte what PostgreSQL's row_to_json writes. Compared (tests/rowjson_cmp.c) over
# every table of the scope for a generated tenant (hostile text: quotes, backslashes, newlines,
# tabs, emoji, jsonb, arrays) and a table of every type the worker writes itself and edge values
# (text with every control character, bigints beyond 2^53, numerics of any precision and NaN,
# floats: NaN, infinities, -0, subnormals, shortest digits, 2,000 random ones; dates and
# timestamps: infinity, BC, years before 1000 and after 9999, offsets of hours, half hours and
# seconds; json with its own spacing, jsonb, arrays nested, with NULLs, quoting and bounds, bytea)
# plus types left to PostgreSQL (enum, domain, composite, range), in five time zones. Then a
# worker whose sessions default to DateStyle SQL, DMY backs the table up, and the rows in the
# stored object are row_to_json's. That worker reads the scope from the catalog once, and again
# after a column was added; a backup with the scope kept costs its COPYs + 4 round trips; a
# guessed count that fails (the table renamed) is read again in the same job.
WORKER=$1
CMP=$2
CTL=$3
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=7e570008-0000-4000-8000-0000000000e8
G=7e570008-0000-4000-8000-0000000000e9
drop_types() {
  q "DELETE FROM backup_scope WHERE table_name IN ('bw_rowjson', 'bw_rowjson_r');
     DROP TABLE IF EXISTS bw_rowjson; DROP TABLE IF EXISTS bw_rowjson_r; DROP TYPE IF EXISTS bw_rj_pair; DROP TYPE IF EXISTS bw_rj_mood;
     DROP DOMAIN IF EXISTS bw_rj_posint" >/dev/null 2>&1
}
on_exit_hooks+=(drop_types)
drop_types
q "DELETE FROM profiles WHERE id IN ('$U', '$G'); DELETE FROM backup_metadata WHERE user_id IN ('$U', '$G'); DELETE FROM change_segments WHERE user_id IN ('$U', '$G')" >/dev/null
q "INSERT INTO profiles (id, email) VALUES ('$U', 'rowjson@example.com')" >/dev/null
"$ROOT/tools/datagen" --user "$G" --orders 300 --items 3 --products 60 --clients 30 \
  --notifications 20 --seed 8 >/dev/null
q "CREATE TYPE bw_rj_mood AS ENUM ('sad', 'hap py');
   CREATE DOMAIN bw_rj_posint AS integer CHECK (VALUE > 0);
   CREATE TYPE bw_rj_pair AS (a integer, b text);
   CREATE TABLE bw_rowjson (
     id integer PRIMARY KEY, user_id uuid NOT NULL, t text, vc varchar(40), ch char(4), u uuid,
     i2 smallint, i4 integer, i8 bigint, num numeric, num2 numeric(12, 2), r4 real,
     r8 double precision, b boolean, d date, ts timestamp, tstz timestamptz, tm time, tz timetz,
     iv interval, j json, jb jsonb, ta text[], ia integer[], ja jsonb[], jja json[], nma numeric[],
     r8a float8[], ba boolean[], da date[], tsa timestamp[], tza timestamptz[], ua uuid[],
     bya bytea[], by bytea, ip inet, en bw_rj_mood, dm bw_rj_posint, rg int4range,
     co bw_rj_pair, ca bw_rj_pair[], bx box[]);
   INSERT INTO backup_scope (table_name, key_column, user_column, restore_order)
     VALUES ('bw_rowjson', 'id', 'user_id', 96)" >/dev/null
q "INSERT INTO bw_rowjson VALUES
  (1, '$U', E'tab\\there \"q\" back\\\\slash\\nnl \\r cr \\b\\f\\v \\u00e9\\u4e2d\\U0001F600 \\x01\\x1f\\x7f end \\\\N',
   'v\\N', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -32768, -2147483648, 9223372036854775807,
   123456789012345678901234567890.123456789012345678901234567890, 5.50, 3.4028235e38,
   1.7976931348623157e308, true, '0044-03-15 BC', '0099-12-31 23:59:59.999999 BC',
   '12345-06-07 08:09:10+02', '24:00:00', '23:59:59.999999+05:30',
   '-1 year 2 mons 3 days 04:05:06.789', E'{\"sp\" :  [1 ,2],\\t  \"k\":\"v\\\\u00e9\"}',
   '{\"n\": 1.50, \"big\": 123456789012345678901234567890, \"s\": \"\\\\u00e9\"}',
   ARRAY[E'a,b', NULL, 'NULL', 'null', E'q\"x', E'b\\\\s', '', E'multi\\nline', '{}', ' sp ', E'\\t'],
   '{{1,2},{3,NULL}}', ARRAY['{\"a\":1}', '\"s\"', '[1,[2]]', 'null']::jsonb[],
   ARRAY['{\"a\" : 1}', '  2 ']::json[], '{NaN,1.10,-0.0,Infinity}', '{NaN,-Infinity,1e-310,-0}',
   '{t,f,NULL}', '{2024-02-29,infinity,0001-01-01 BC}',
   '{\"1999-01-01 00:00:00\",\"0500-05-05 05:05:05.5 BC\"}',
   '{\"2024-01-02 03:04:05+00\",-infinity}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}',
   ARRAY['\\x00'::bytea, '\\x5c'::bytea], '\\x00ff5c0a'::bytea, '2001:db8::1/64', 'hap py', 7, '[3,7)',
   ROW(1, E'x,\"y\\\\'), ARRAY[ROW(2, 'two')::bw_rj_pair, NULL], ARRAY[box '((0,0),(1,1))', box '((2,2),(3,3))']),
  (2, '$U', '', '', '', NULL, 0, 0, -9007199254740993, 'NaN', -0.01, 'NaN', '-Infinity', false,
   'infinity', '-infinity', 'infinity', '00:00:00', '00:00:00-00:00:30', '0 seconds', '\"\"', '0',
   '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '\\x'::bytea, '10.0.0.1',
   'sad', 1, 'empty', ROW(NULL, NULL), '{}', '{}'),
  (3, '$U', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-0', '-0', NULL, '1000-01-01',
   '9999-12-31 23:59:59', '1999-12-31 23:59:59.5-03:30', NULL, NULL, NULL, '  [ ]  ', '[]', NULL,
   '[0:1]={7,8}', NULL, NULL, NULL, '{4.9e-324,1.7976931348623157e308}', NULL, NULL, NULL,
   '{\"1890-01-01 00:00:00+00\",\"1937-07-01 00:00:00+00\"}', NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL),
  (4, '$U', repeat(E'\\\\', 3000) || repeat(E'\\x02', 100), NULL, NULL, NULL, NULL, NULL, NULL,
   0.1, NULL, 0.1, 0.1, NULL, '0999-01-01', '1890-01-01 00:00:00', '1890-01-01 00:00:00+00',
   NULL, NULL, NULL, NULL, NULL, '{{\"a b\",\"c\"},{NULL,\"\\\\\\\\\"}}', '[-2:-1][1:2]={{1,2},{3,4}}',
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL)" >/dev/null
# generated rows: random floats of every magnitude, numerics, timestamps across the centuries
q "INSERT INTO bw_rowjson (id, user_id, t, i8, num, r4, r8, d, ts, tstz, tm, iv, r8a)
   SELECT 100 + n, '$U', md5(n::text) || chr(1 + n % 31), (random() * 9e18)::bigint * (1 - 2 * (n % 2)),
     round((random() * 10 ^ (n % 40))::numeric, n % 20), (random() * 10 ^ (n % 70 - 35))::real,
     random() * 10 ^ (n % 600 - 300), date '0001-01-01' + (random() * 3000000)::int,
     timestamp '1500-01-01' + random() * interval '800 years',
     timestamptz '1800-01-01 00:00:00+00' + random() * interval '300 years',
     time '00:00' + random() * interval '24 hours', random() * interval '5000 days',
     ARRAY[random() * 10 ^ (n % 30), -random() / 3]
   FROM generate_series(1, 2000) n" >/dev/null

out=$("$CMP" "$U" "$G" 2>&1)
rc=$?
echo "$out" | grep -E "bw_rowjson|differs|rows by|row [0-9]+:" | head -20
expect "row_to_json and the worker's JSON are equal byte for byte (5 zones, 2 tenants, every table)" test "$rc" -eq 0
expect "…the type table was compared in every zone ($(echo "$out" | grep -c 'bw_rowjson .*2004 rows equal') of 5)" \
  test "$(echo "$out" | grep -c 'bw_rowjson .*2004 rows equal')" -eq 5
expect "…and the generated tenant's orders" grep -q "orders .* 300 rows equal" <<<"$out"

# A worker whose sessions default to another DateStyle, time zone and float digits: the backup
# sets DateStyle ISO for itself; the others are PostgreSQL's too and row_to_json follows them.
P=rj$$
J=rj$$-
SESSION='-c DateStyle=SQL,DMY -c TimeZone=Asia/Kolkata -c extra_float_digits=0'
MPORT=$(free_port)
start_worker w1 BACKUP_NOTIFY=false PGOPTIONS="$SESSION" WORKER_HTTP_PORT=$MPORT
enqueue "${J}b" type backup user_id "$U" mode full
expect "a backup under DateStyle SQL, DMY completes ($(field "${J}b" error))" done_ok "${J}b"
BID=$(field "${J}b" backup_id)
"$CTL" download --decode "$BID" "$tmp/doc.json" >/dev/null 2>&1
COLS=$(q "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
          WHERE attrelid = 'bw_rowjson'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'backup_xid'")
PGOPTIONS="$SESSION" psql -X -q -t -A -v ON_ERROR_STOP=1 "$DATABASE_URL" -c \
  "COPY (SELECT row_to_json(r) FROM (SELECT $COLS FROM bw_rowjson WHERE user_id = '$U') r) TO STDOUT
   (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')" >"$tmp/want.jsonl"
same_rows() {
  python3 - "$tmp/doc.json" "$tmp/want.jsonl" <<'EOF'
import sys
doc = open(sys.argv[1], 'rb').read()
rows = open(sys.argv[2], 'rb').read().rstrip(b'\n').split(b'\n')
want = b'"bw_rowjson":[\n' + b',\n'.join(rows) + b'\n]'
sys.exit(0 if want in doc else 1)
EOF
}
expect "…its object holds the rows as row_to_json writes them in that session (byte for byte)" same_rows
expect "…and they were written as dates and times in ISO (no DMY date in the object)" \
  bash -c "! grep -q '\"d\":\"01/01/0999' '$tmp/doc.json'"

# The scope is read from the catalog once, and again only when the catalog changed: a column
# added between two backups is in the second one.
metric() { curl -s "127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
check "the first backup read the scope from the catalog" "1 0" "$(metric bw_scope_reads_total) $(metric bw_scope_reuses_total)"
enqueue "${J}b2" type backup user_id "$U" mode full
expect "a second backup completes ($(field "${J}b2" error))" done_ok "${J}b2"
check "…with the scope it read before (the catalog unchanged)" "1 1" "$(metric bw_scope_reads_total) $(metric bw_scope_reuses_total)"
q "ALTER TABLE bw_rowjson ADD COLUMN late text DEFAULT 'late'" >/dev/null
enqueue "${J}b3" type backup user_id "$U" mode full
expect "a backup after a column was added completes ($(field "${J}b3" error))" done_ok "${J}b3"
check "…read the scope again" "2 1" "$(metric bw_scope_reads_total) $(metric bw_scope_reuses_total)"
"$CTL" download --decode "$(field "${J}b3" backup_id)" "$tmp/doc3.json" >/dev/null 2>&1
expect "…and its rows have the new column" grep -q '"late":"late"}' "$tmp/doc3.json"

# Before its COPYs a backup makes two round trips: the record, then one pipeline (status,
# BEGIN, snapshot, and the row counts guessed from the kept scope). With the scope kept, a full
# backup of N tables is N COPYs + 4 (record, pipeline, COMMIT, completion); the least of three
# (the worker's probes may fall inside one).
NT=$(q "SELECT count(*) FROM backup_scope")
best=999
for k in 1 2 3; do
  r0=$(metric bw_pg_round_trips_total)
  enqueue "${J}rt$k" type backup user_id "$U" mode full
  done_ok "${J}rt$k" || bad "backup ${J}rt$k ($(field "${J}rt$k" error))"
  r1=$(metric bw_pg_round_trips_total)
  [ $((r1 - r0)) -lt "$best" ] && best=$((r1 - r0))
done
check "a full backup of $NT tables: $NT COPYs + 4 round trips to PostgreSQL" $((NT + 4)) "$best"

# A guess that fails (the table renamed, its scope row with it: the kept scope's count names
# a table gone) is rolled back and read again in the same job.
q "ALTER TABLE bw_rowjson RENAME TO bw_rowjson_r; UPDATE backup_scope SET table_name = 'bw_rowjson_r' WHERE table_name = 'bw_rowjson'" >/dev/null
enqueue "${J}b4" type backup user_id "$U" mode full
expect "a backup after its table was renamed completes ($(field "${J}b4" error))" done_ok "${J}b4"
expect "…the failed guess said so" grep -q "the kept scope's counts failed (42P01" "$tmp/w1.log"
check "…read the scope again" "3 4" "$(metric bw_scope_reads_total) $(metric bw_scope_reuses_total)"
"$CTL" download --decode "$(field "${J}b4" backup_id)" "$tmp/doc4.json" >/dev/null 2>&1
expect "…its rows under the new name" grep -q '"bw_rowjson_r":\[' "$tmp/doc4.json"
stop_worker w1 >/dev/null

finish
