#!/usr/bin/env bash
# test_types: every type a scope may hold survives backup and restore exactly, through typed
# staging (COPY text written by the worker). A table of edge values joins backup_scope for the
# test: text with control characters and any Unicode, numerics of any precision and NaN,
# floats (NaN, infinities, -0, shortest digits), dates and timestamps (infinity, BC, years
# before 1000 and after 9999), json with its own spacing, jsonb, arrays (nested, NULLs,
# quoting), bytea, an enum, domains, a range, a composite and an array of composites (left
# to PostgreSQL). A json null and SQL NULL are one `null` in row_to_json's rows, so a json
# column (or jsonb[] element) holding null comes back NULL. Checked as each row's text: the full backup restored after every column of
# every row changed; an incremental chain; a second restore onto the intact rows writes
# nothing; a value PostgreSQL refuses names its table and changes nothing.
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=7e570007-0000-4000-8000-0000000000e7
drop_types() {
  q "DELETE FROM backup_scope WHERE table_name = 'bw_types';
     DROP TABLE IF EXISTS bw_types; DROP TYPE IF EXISTS bw_pair; DROP TYPE IF EXISTS bw_mood;
     DROP DOMAIN IF EXISTS bw_posint; DROP DOMAIN IF EXISTS bw_doc" >/dev/null 2>&1
}
on_exit_hooks+=(drop_types)
drop_types
q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_metadata WHERE user_id = '$U'; DELETE FROM change_segments WHERE user_id = '$U';
   DELETE FROM restore_history WHERE user_id = '$U'" >/dev/null
q "INSERT INTO profiles (id, email) VALUES ('$U', 'types@example.com')" >/dev/null
q "CREATE TYPE bw_mood AS ENUM ('sad', 'ok', 'hap py');
   CREATE DOMAIN bw_posint AS integer CHECK (VALUE > 0);
   CREATE DOMAIN bw_doc AS jsonb;
   CREATE TYPE bw_pair AS (a integer, b text);
   CREATE TABLE bw_types (
     id uuid PRIMARY KEY, user_id uuid NOT NULL, t text, vc varchar(40), ch char(4),
     i2 smallint, i4 integer, i8 bigint, num numeric, num2 numeric(12, 2), r4 real,
     r8 double precision, b boolean, d date, ts timestamp, tstz timestamptz, tm time,
     iv interval, j json, jb jsonb, ta text[], ia integer[], ja jsonb[], nma numeric[],
     by bytea, en bw_mood, dm bw_posint, dj bw_doc, rg int4range, ip inet, co bw_pair,
     ca bw_pair[]);
   INSERT INTO backup_scope (table_name, key_column, user_column, restore_order)
     VALUES ('bw_types', 'id', 'user_id', 95);
   SELECT backup_track_all()" >/dev/null
q "INSERT INTO bw_types VALUES
  ('00000000-0000-4000-8000-000000000001', '$U', E'tab\\there \"q\" back\\\\slash\\nnl \\r cr \\u00e9\\u4e2d\\U0001F600 \\x01\\x1f end',
   'v\\N', 'ab', -32768, -2147483648, 9223372036854775807,
   123456789012345678901234567890.123456789012345678901234567890, 5.50, 3.4028235e38,
   1.7976931348623157e308, true, '0044-03-15 BC', '0099-12-31 23:59:59.999999', '12345-06-07 08:09:10+02',
   '24:00:00', '-1 year 2 mons 3 days 04:05:06.789', '{\"sp\" :  [1 ,2],  \"k\":\"v\"}',
   '{\"n\": 1.50, \"big\": 123456789012345678901234567890, \"s\": \"\\\\u00e9\"}',
   ARRAY[E'a,b', NULL, 'NULL', E'q\"x', E'b\\\\s', '', E'multi\\nline', '{}'],
   '{{1,2},{3,NULL}}', ARRAY['{\"a\":1}', '\"s\"', '[1,[2]]']::jsonb[], '{NaN,1.10,-0.0}',
   '\\x00ff5c0a'::bytea, 'hap py', 7, '{\"d\": [true, null]}', '[3,7)', '2001:db8::1/64',
   ROW(1, E'x,\"y\\\\'), ARRAY[ROW(2, 'two')::bw_pair, NULL, ROW(NULL, '')::bw_pair]),
  ('00000000-0000-4000-8000-000000000002', '$U', '', '', '', 0, 0, -9007199254740993,
   'NaN', -0.01, 'NaN', '-Infinity', false, 'infinity', '-infinity', 'infinity', '00:00:00',
   '0 seconds', '\"\"', '0', '{}', '{}', '{}', '{}', '\\x'::bytea, 'sad', 1, '\"str\"',
   'empty', '10.0.0.1', ROW(NULL, NULL), '{}'),
  ('00000000-0000-4000-8000-000000000003', '$U', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   '-0', '-0', NULL, '1000-01-01', '9999-12-31 23:59:59', '1999-12-31 23:59:59.5-03:30',
   NULL, NULL, '  [ ]  ', '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  ('00000000-0000-4000-8000-000000000004', '$U', repeat(E'\\\\', 3000), NULL, NULL, NULL, NULL, NULL,
   0.1, NULL, 0.1, 0.1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)" >/dev/null
COLS=$(q "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
          WHERE attrelid = 'bw_types'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'backup_xid'")
state() { q "SELECT string_agg(ROW($COLS)::text, E'\\n' ORDER BY id) FROM bw_types WHERE user_id = '$U'"; }
S0=$(state)

P=ty$$
J=ty$$- # job ids name backups and restores in the database for good: never reused across tests
start_worker w1 BACKUP_NOTIFY=false
backup() {
  enqueue "$J$1" type backup user_id "$U" mode "$2"
  done_ok "$J$1" || { bad "backup $1 did not complete: $(field "$J$1" error)"; return 1; }
  field "$J$1" backup_id
}
restore() { # JOB BACKUP_ID: waited for
  enqueue "$J$1" type restore user_id "$U" backup_id "$2"
  done_ok "$J$1" 90
}
B0=$(backup b0 full)
check "the backup counts every row" 4 "$(q "SELECT row_counts->>'bw_types' FROM backup_metadata WHERE id = '$B0'")"
# every column of every row changed, one row deleted, one added
q "UPDATE bw_types SET t = 'x', vc = 'x', ch = 'x', i2 = 1, i4 = 1, i8 = 1, num = 1, num2 = 1,
     r4 = 1, r8 = 1, b = NOT coalesce(b, false), d = '2000-01-01', ts = '2000-01-01', tstz = '2000-01-01',
     tm = '01:00', iv = '1 day', j = '{\"a\":1}', jb = '{\"a\":1}', ta = '{x}', ia = '{1}', ja = '{}',
     nma = '{1}', by = '\\x01', en = 'ok', dm = 2, dj = '1', rg = '[1,2)', ip = '1.1.1.1',
     co = ROW(9, 'z'), ca = '{}' WHERE user_id = '$U';
   DELETE FROM bw_types WHERE id = '00000000-0000-4000-8000-000000000002';
   INSERT INTO bw_types (id, user_id) VALUES ('00000000-0000-4000-8000-000000000009', '$U')" >/dev/null
expect "restore of the full backup completes ($(field "${J}r0" error))" restore r0 "$B0"
S=$(state)
check "every row back exactly, as its text (json spacing, numeric scale, -0, BC, infinity...)" \
  "$(md5sum <<<"$S0")" "$(md5sum <<<"$S")"
[ "$S0" = "$S" ] || diff <(echo "$S0") <(echo "$S") | cut -c1-400 | head -20
changes() { # JOB: inserted updated deleted unchanged of bw_types
  q "SELECT concat_ws(' ', c->>'inserted', c->>'updated', c->>'deleted', c->>'unchanged')
     FROM (SELECT changes->'bw_types' AS c FROM restore_history WHERE job_id = '$J$1') s"
}
check "…counted: inserted, updated, deleted, unchanged" "1 3 1 0" "$(changes r0)"
expect "a second restore onto the intact rows" restore r1 "$B0"
check "…writes nothing: every value compares equal to its own text" "0 0 0 4" "$(changes r1)"

# a chain: an incremental that changes and deletes rows, restored through the chain's staging
q "UPDATE bw_types SET j = '{ \"changed\" : true }', num = 2.000, ca = ARRAY[ROW(5, E'five\\n')::bw_pair]
   WHERE id = '00000000-0000-4000-8000-000000000001';
   DELETE FROM bw_types WHERE id = '00000000-0000-4000-8000-000000000004'" >/dev/null
S1=$(state)
B1=$(backup b1 incremental)
q "UPDATE bw_types SET t = 'scrambled', num = 3 WHERE user_id = '$U';
   INSERT INTO bw_types (id, user_id) VALUES ('00000000-0000-4000-8000-00000000000a', '$U')" >/dev/null
expect "restore of the incremental (full + incremental) completes ($(field "${J}r2" error))" restore r2 "$B1"
check "…the state at the incremental exactly" "$(md5sum <<<"$S1")" "$(state | md5sum)"

# a value the current schema refuses (a column's type changed since the backup): the table named
q "ALTER TABLE bw_types ALTER COLUMN vc TYPE integer USING length(vc)" >/dev/null
SB=$(state)
enqueue "${J}r3" type restore user_id "$U" backup_id "$B0"
wait_until 60 status_is "${J}r3" dead || bad "a restore into a changed column did not fail"
expect "…refused, naming the backup and the table ($(field "${J}r3" error))" \
  grep -q "backup $B0: its bw_types cannot be staged: .*invalid input syntax for type integer" <<<"$(field "${J}r3" error)"
check "…nothing changed" "$(md5sum <<<"$SB")" "$(state | md5sum)"
check "…recorded as failed" failed "$(q "SELECT status FROM restore_history WHERE job_id = '${J}r3'")"

finish
