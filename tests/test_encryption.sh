#!/usr/bin/env bash
# test_encryption: encrypted backups (aes-256-gcm) against real Redis, PostgreSQL and S3
# (s3rver), with real worker processes.
#  1. settings: BACKUP_ENCRYPTION=required without a key, a short key, an unknown key id:
#     the worker exits 2 naming the variable, takes no job, uploads nothing; check says so
#  2. round trip for none, gzip and zstd under a keyring: key suffix, record, restored rows
#     identical through to_jsonb; the stored bytes hold none of the tenant's strings
#  3. verify with the key (every tag) and without it (the stored bytes' SHA-256 only);
#     download as stored and --decode
#  4. tampering the digest cannot see (the record's checksum made to match): a flipped byte in
#     the header, a middle chunk, a tag, the last chunk; a cut at a chunk boundary, two chunks swapped, a chunk from another backup
#     under the same key, an object moved to another user with its metadata: each refused
#     before anything is written, the database unchanged
#  5. rotation: k2 added and made current, `backupctl rekey --all`, k1 removed: every backup
#     still verifies and restores; a backup under a key the worker lacks is refused by name
#     AWS KMS (moto) as the key-encryption key: a key KMS does not know stops the worker; round
#     trips of none, gzip and zstd; rekey from KMS to the keyring
#  6. no key in any log, status hash or backupctl output
WORKER=$1
CTL=$(realpath "$2")
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

U=e7c00001-0000-4000-8000-00000000000a
V=e7c00002-0000-4000-8000-00000000000b
for u in $U $V; do
  q "DELETE FROM profiles WHERE id = '$u'; DELETE FROM backup_metadata WHERE user_id = '$u'; DELETE FROM change_segments WHERE user_id = '$u';
     DELETE FROM restore_history WHERE user_id = '$u'" >/dev/null
  s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$u/"
done
"$ROOT/tools/datagen" --user "$U" --orders 500 --seed te1 >/dev/null
"$ROOT/tools/datagen" --user "$V" --orders 20 --seed te2 >/dev/null
# values that must come back exactly (test_restore has more), and strings that must never be
# readable in an encrypted object
q "INSERT INTO products (user_id, sku, name, price, weight_grams, tags, thumbnail, attributes)
   VALUES ('$U', 'HOSTILE-E', E'\u00e9\u4e2d \"q\" \\\\ \\n end', 1234567890.12, 9007199254740995,
           ARRAY['a,b', NULL, '\"'], '\\x00ff'::bytea, '{\"n\": 1234567890123456789012.5}')" >/dev/null
q "INSERT INTO products (user_id, sku, name, price) VALUES ('$U', 'ZEBRA-SKU-4417', 'Quetzal Secret Blend', 12.5);
   UPDATE clients SET email = 'marisol.quintero@example.org' WHERE id = (SELECT id FROM clients WHERE user_id = '$U' ORDER BY id LIMIT 1)" >/dev/null

K1=$(head -c 32 /dev/urandom | base64)
K2=$(head -c 32 /dev/urandom | base64)
K3=$(head -c 32 /dev/urandom | base64)
ctl() { "$CTL" "$@"; }
# a worker whose jobs are done goes at once (a graceful stop waits ~2 s; test_worker covers it)
quit() { local pid; eval "pid=\$PID_$1"; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }

scramble() {
  q "UPDATE orders SET total = total + 1, notes = 'scrambled' WHERE user_id = '$U' AND number % 3 = 0;
     DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 5);
     UPDATE profiles SET full_name = 'Nobody' WHERE id = '$U'" >/dev/null
}
backup() { # JOB [USER]: a full backup, waited for; prints its id
  local j=enc-$1 # a backup's job id is unique for good: apart from the other tests' ids
  enqueue "$j" type backup user_id "${2:-$U}" mode full
  done_ok "$j" || { bad "backup $j did not complete: $(field "$j" error)"; return 1; }
  field "$j" backup_id
}
restore() { # JOB BACKUP_ID
  enqueue "$1" type restore user_id "$U" backup_id "$2"
  done_ok "$1" 90
}
stored() { # BACKUP_ID FILE: its object as stored
  s3 s3 cp "s3://$S3_BUCKET/$(q "SELECT s3_key FROM backup_metadata WHERE id = '$1'")" "$2" --quiet
}

# ---- 1. settings refused at start ----
P=tenc$$s
refuse() { # NAME WANT VAR=value...: the worker exits 2 naming WANT
  local name=$1 want=$2; shift 2
  env REDIS_PREFIX="$P" WORKER_HTTP_PORT=0 "$@" timeout 10 "$WORKER" >"$tmp/$name.log" 2>&1
  local rc=$?
  check "$name: the worker exits 2" 2 "$rc"
  expect "$name: …naming $want" grep -q "$want" "$tmp/$name.log"
  expect "$name: …showing no key" bash -c "! grep -qF -- '${K1:0:12}' '$tmp/$name.log'"
}
enqueue s0 type backup user_id "$U" mode full
refuse required "BACKUP_ENCRYPTION: is required, but no key is set" BACKUP_ENCRYPTION=required
refuse short "BACKUP_ENCRYPTION_KEYS: key 'k1' is 16 bytes" BACKUP_ENCRYPTION=required \
  "BACKUP_ENCRYPTION_KEYS=k1:$(head -c 16 /dev/urandom | base64)"
refuse unknown "BACKUP_ENCRYPTION_KEY_ID: 'k9' is not in BACKUP_ENCRYPTION_KEYS" \
  "BACKUP_ENCRYPTION_KEYS=k1:$K1" BACKUP_ENCRYPTION_KEY_ID=k9
refuse badb64 "BACKUP_ENCRYPTION_KEYS: key 'k1' is not valid base64" "BACKUP_ENCRYPTION_KEYS=k1:${K1:0:20}*"
check "required without a key: the job was not taken (no consumer group), nothing uploaded" "0 0" \
  "$(R XINFO GROUPS "$P:jobs" 2>/dev/null | grep -c consumers) $(s3 s3 ls --recursive "s3://$S3_BUCKET/backups/$U/" | wc -l)"
out=$(BACKUP_ENCRYPTION=required ctl check 2>&1); rc=$?
check "backupctl check: exit 1 with required and no key" 1 "$rc"
expect "…the keys line says why" grep -q "^keys      FAIL  BACKUP_ENCRYPTION: is required" <<<"$out"

# ---- 2. round trips: none, gzip, zstd under the keyring ----
P=tenc$$a
export REDIS_PREFIX=$P
KEYS1="k1:$K1"
state s0
declare -A B
for codec in none gzip zstd; do
  start_worker "w$codec" BACKUP_NOTIFY=false BACKUP_COMPRESSION=$codec "BACKUP_ENCRYPTION_KEYS=$KEYS1"
  B[$codec]=$(backup "b$codec")
  quit "w$codec"
done
B[clear]=$(P=$P; start_worker wclear BACKUP_NOTIFY=false BACKUP_COMPRESSION=none; backup bclear; quit wclear >/dev/null)
rec() { q "SELECT s3_key || ' ' || codecs::text || ' ' || coalesce(key_id, '-') FROM backup_metadata WHERE id = '$1'"; }
check "none: .json.enc, {aes-256-gcm} under k1" "backups/$U/${B[none]}.json.enc {aes-256-gcm} k1" "$(rec "${B[none]}")"
check "gzip: .json.gz.enc, {gzip,aes-256-gcm} under k1" "backups/$U/${B[gzip]}.json.gz.enc {gzip,aes-256-gcm} k1" "$(rec "${B[gzip]}")"
check "zstd: .json.zst.enc, {zstd,aes-256-gcm} under k1" "backups/$U/${B[zstd]}.json.zst.enc {zstd,aes-256-gcm} k1" "$(rec "${B[zstd]}")"
stored "${B[none]}" "$tmp/none.enc"
stored "${B[clear]}" "$tmp/clear.json"
# (the envelope names the user and the backup in clear, as the format says: not the rows)
for s in ZEBRA-SKU-4417 'Quetzal Secret Blend' marisol.quintero '"total":'; do
  expect "the cleartext object holds '$s' (the check can fail)" grep -qF -- "$s" "$tmp/clear.json"
  check "the encrypted object does not hold '$s'" 0 "$(grep -caF -- "$s" "$tmp/none.enc")"
done
head -c 8 "$tmp/none.enc" >"$tmp/magic"
check "the object starts with the envelope's magic" PLBKENC1 "$(cat "$tmp/magic")"
man=$(s3 s3 cp "s3://$S3_BUCKET/backups/$U/${B[gzip]}.json.gz.enc.manifest.json" - | jq -r '"\(.key_id) \(.wrapped_key | length) \(.codecs | join(","))"')
check "the manifest carries the wrapping" "k1 80 gzip,aes-256-gcm" "$man"

start_worker wr BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=$KEYS1"
scramble
expect "none in cleartext: the restore completes" restore rclear "${B[clear]}"
check "none in cleartext: every row of every table identical" none "$(differs s0)"
for codec in none gzip zstd; do
  scramble
  expect "$codec+aes-256-gcm: the restore completes" restore "r$codec" "${B[$codec]}"
  check "$codec+aes-256-gcm: every row of every table identical" none "$(differs s0)"
done

# an incremental on top of an encrypted full: each step opened with its own data key
q "UPDATE orders SET notes = 'after the full' WHERE user_id = '$U' AND number % 7 = 0;
   DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id DESC LIMIT 3)" >/dev/null
state s1
enqueue enc-inc type backup user_id "$U" mode incremental
expect "an encrypted incremental completes" done_ok enc-inc
BI=$(field enc-inc backup_id)
check "…its own object, .json.gz.enc, under k1" "backups/$U/incremental/$BI.json.gz.enc {gzip,aes-256-gcm} k1" "$(rec "$BI")"
scramble
expect "restore of the incremental (its chain: a full, the encrypted incremental) completes" restore rinc "$BI"
check "…to the incremental's state exactly" none "$(differs s1)"
q "DELETE FROM backup_metadata WHERE id = '$BI'" >/dev/null
s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$U/incremental/"
expect "back to the full backup's state" restore rfull "${B[gzip]}"
check "…exactly" none "$(differs s0)"

# ---- 3. verify with and without the key; download ----
enqueue v1 type verify user_id "$U"
expect "verify with the key: every backup passes" done_ok v1
check "…every one fully (no SHA-256-only)" "4 backups verified" "$(field v1 note)"
quit wr
start_worker wnokey BACKUP_NOTIFY=false
enqueue v2 type verify user_id "$U"
expect "verify without the key: the stored bytes' digests pass" done_ok v2
check "…and it says so" "4 backups verified, 3 by SHA-256 only (their key is not here)" "$(field v2 note)"
quit wnokey
start_worker wr BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=$KEYS1"
(cd "$tmp" && ctl download "${B[gzip]}" stored.bin >/dev/null)
check "download: the stored bytes, as stored" "$(s3 s3 cp "s3://$S3_BUCKET/backups/$U/${B[gzip]}.json.gz.enc" - | sha256sum)" "$(sha256sum <"$tmp/stored.bin")"
(cd "$tmp" && BACKUP_ENCRYPTION_KEYS=$KEYS1 ctl download --decode "${B[gzip]}" >/dev/null); rc=$?
check "download --decode: exit 0" 0 "$rc"
check "…the document, decrypted and gunzipped: its header names the backup" "${B[gzip]} gzip,aes-256-gcm" \
  "$(head -1 "$tmp/${B[gzip]}.json" | sed 's/,"tables":{$/}/' | jq -r '"\(.backup_id) \(.codecs | join(","))"')"
(cd "$tmp" && ctl download --decode "${B[gzip]}" nokey.json >"$tmp/out" 2>&1); rc=$?
check "download --decode without the key: exit 1" 1 "$rc"
expect "…naming the key" grep -q "is encrypted with key 'k1', which is not in BACKUP_ENCRYPTION_KEYS" "$tmp/out"
expect "…and leaving no file" test ! -e "$tmp/nokey.json" -a ! -e "$tmp/nokey.json.part"

# ---- 4. tampering the digest cannot see ----
KEYN=$(q "SELECT s3_key FROM backup_metadata WHERE id = '${B[none]}'")
SUM=$(q "SELECT checksum || ' ' || size FROM backup_metadata WHERE id = '${B[none]}'")
start_worker w2 BACKUP_NOTIFY=false BACKUP_COMPRESSION=none "BACKUP_ENCRYPTION_KEYS=$KEYS1"
B2=$(backup b2)
quit w2
stored "$B2" "$tmp/other.enc"
python3 - "$tmp/none.enc" "$tmp/other.enc" "$tmp" <<'EOF'
import json, struct, sys
a = open(sys.argv[1], 'rb').read(); o = open(sys.argv[2], 'rb').read(); d = sys.argv[3]
h = 12 + struct.unpack('>I', a[8:12])[0]; ho = 12 + struct.unpack('>I', o[8:12])[0]
c = json.loads(a[12:h])['chunk_size'] + 16
chunks = [a[h + i:h + i + c] for i in range(0, len(a) - h, c)]
assert len(chunks) >= 4, len(chunks)
def out(name, b): open(f'{d}/{name}', 'wb').write(b)
mid = bytearray(a); mid[h + 2 * c + 100] ^= 1; out('t-flip', bytes(mid))
hd = bytearray(a); s = a.index(b'"salt":"') + 8; hd[s] = ord('B') if hd[s] != ord('B') else ord('C'); out('t-header', bytes(hd))
tag = bytearray(a); tag[h + c - 3] ^= 0x40; out('t-tag', bytes(tag))
last = bytearray(a); last[-1] ^= 1; out('t-last', bytes(last))
out('t-cut', a[:h + 2 * c])
out('t-swap', a[:h] + chunks[0] + chunks[2] + chunks[1] + b''.join(chunks[3:]))
out('t-splice', a[:h] + chunks[0] + o[ho + c:ho + 2 * c] + b''.join(chunks[2:]))
EOF
state before
tamper() { # NAME FILE WANT: FILE in place of the object, its digest recorded, restore refused
  s3 s3 cp "$2" "s3://$S3_BUCKET/$KEYN" --quiet
  q "UPDATE backup_metadata SET checksum = '$(sha256sum <"$2" | cut -c1-64)', size = $(stat -c %s "$2") WHERE id = '${B[none]}'" >/dev/null
  enqueue "t$1" type restore user_id "$U" backup_id "${B[none]}"
  wait_until 60 status_is "t$1" dead || bad "tamper $1: the restore did not fail"
  expect "tamper $1: refused, the reason named ($3)" grep -q "$3" <<<"$(field "t$1" error)"
  check "tamper $1: the database unchanged" none "$(differs before)"
}
tamper flip "$tmp/t-flip" "Backup checksum verification failed: backup ${B[none]}: chunk 2 of the encrypted object fails its authentication tag"
tamper header "$tmp/t-header" "Backup checksum verification failed: backup ${B[none]}: chunk 0 "
tamper tag "$tmp/t-tag" "Backup checksum verification failed: backup ${B[none]}: chunk 0 "
tamper last "$tmp/t-last" "Backup checksum verification failed: .*chunk [0-9]* .*(damaged, or cut short)"
tamper cut "$tmp/t-cut" "Backup checksum verification failed: .*chunk 1 .*cut short"
tamper swap "$tmp/t-swap" "Backup checksum verification failed: .*chunk 1 "
tamper splice "$tmp/t-splice" "Backup checksum verification failed: .*chunk 1 "
s3 s3 cp "$tmp/none.enc" "s3://$S3_BUCKET/$KEYN" --quiet
q "UPDATE backup_metadata SET checksum = '${SUM% *}', size = ${SUM#* } WHERE id = '${B[none]}'" >/dev/null
# the object and its record moved to another user: the wrapping is bound to user and backup
VID=backup-$V-1700000000000
s3 s3 cp "s3://$S3_BUCKET/$KEYN" "s3://$S3_BUCKET/backups/$V/$VID.json.enc" --quiet
q "INSERT INTO backup_metadata (id, user_id, type, status, s3_key, size, checksum, compression, codecs, key_id, wrapped_key, row_counts, format_version, completed_at)
   SELECT '$VID', '$V', type, status, 'backups/$V/$VID.json.enc', size, checksum, compression, codecs, key_id, wrapped_key, row_counts, format_version, now()
   FROM backup_metadata WHERE id = '${B[none]}'" >/dev/null
VSUM=$(q "SELECT md5(string_agg(x::text, '' ORDER BY x::text)) FROM orders x WHERE user_id = '$V'")
enqueue tmove type restore user_id "$V" backup_id "$VID"
wait_until 60 status_is tmove dead || bad "tamper move: the restore did not fail"
expect "tamper move: refused, the key does not open for this backup" grep -q "does not open under key 'k1'" <<<"$(field tmove error)"
check "tamper move: the other user's rows unchanged" "$VSUM" "$(q "SELECT md5(string_agg(x::text, '' ORDER BY x::text)) FROM orders x WHERE user_id = '$V'")"
q "DELETE FROM backup_metadata WHERE id = '$VID'" >/dev/null
expect "the original object restores again" restore rback "${B[none]}"
check "…exactly" none "$(differs s0)"
quit wr

# ---- 5. rotation and retirement ----
start_worker wk2 BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=k1:$K1,k2:$K2"
BK2=$(backup bk2)
check "k2 added last: new backups are under k2" k2 "$(q "SELECT key_id FROM backup_metadata WHERE id = '$BK2'")"
quit wk2
out=$(BACKUP_ENCRYPTION_KEYS="k1:$K1,k2:$K2" ctl rekey --all 2>&1); rc=$?
check "rekey --all: exit 0" 0 "$rc"
[ "$rc" = 0 ] || head -5 <<<"$out" # (which backup could not be rewrapped, and why)
expect "…rewrapped the four k1 backups" grep -q "^rekeyed 4 backups and [0-9]* change segments\? under 'k2'; 0 failed" <<<"$out"
expect "…and no backup needs k1 anymore" bash -c "! grep -q \"key 'k1'\" <<<\"\$1\"" _ "$out"
check "the records say k2" 0 "$(q "SELECT count(*) FROM backup_metadata WHERE user_id = '$U' AND key_id = 'k1'")"
check "the manifests say k2" k2 "$(s3 s3 cp "s3://$S3_BUCKET/backups/$U/${B[zstd]}.json.zst.enc.manifest.json" - | jq -r .key_id)"
out=$(BACKUP_ENCRYPTION_KEYS="k1:$K1,k2:$K2" ctl rekey --all 2>&1)
expect "rekey again: nothing to do" grep -q "^rekeyed 0 backups" <<<"$out"
# rekeyed with a keyring the workers do not have yet: the object's own header still opens
start_worker wk1only BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=k1:$K1"
scramble
expect "a worker without k2 restores a backup rekeyed to k2, from the header's k1 wrapping" restore rhdr "${B[zstd]}"
check "…exactly" none "$(differs s0)"
enqueue vhdr type verify backup_id "${B[zstd]}"
expect "…and verifies it, every chunk" done_ok vhdr
check "…not by SHA-256 only" "1 backup verified" "$(field vhdr note)"
quit wk1only
start_worker wk2only BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=k2:$K2"
enqueue v3 type verify user_id "$U"
expect "k1 removed: every backup verifies, every chunk" done_ok v3
check "…fully" "6 backups verified" "$(field v3 note)"
scramble
expect "k1 removed: a backup made under k1 restores" restore rk1 "${B[zstd]}"
check "…exactly" none "$(differs s0)"
quit wk2only
start_worker wk3 BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=k2025:$K3"
B3=$(backup bk3)
quit wk3
start_worker wk2b BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=k2:$K2"
scramble
state scrambled
enqueue rk3 type restore user_id "$U" backup_id "$B3"
wait_until 60 status_is rk3 dead || bad "a restore without its key did not fail"
check "a key the worker lacks: the error names it" "backup $B3 is encrypted with key 'k2025', which is not in BACKUP_ENCRYPTION_KEYS" "$(field rk3 error)"
check "…and the database is unchanged" none "$(differs scrambled)"
list=$(ctl list "$U")
check "list: the key of each backup" "k2025" "$(awk -v id="$B3" '$1 == id {print $(NF - 2)}' <<<"$list")"
check "list --json: key_id" k2 "$(ctl list "$U" --json | jq -r --arg id "${B[gzip]}" '.[] | select(.backup_id == $id) | .key_id')"
quit wk2b

# ---- 5b. AWS KMS (moto) as the key-encryption key ----
: "${BW_MOTO_ENDPOINT:?run through tools/devenv test (moto serves KMS)}"
kms() { AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --region "${AWS_REGION:-us-east-1}" --endpoint-url "$BW_MOTO_ENDPOINT" kms "$@"; }
KMSID=$(kms create-key --query KeyMetadata.KeyId --output text)
ALIAS=alias/bw-enc-$$
kms create-alias --alias-name "$ALIAS" --target-key-id "$KMSID"
KMSENV=("BACKUP_KMS_KEY_ID=$ALIAS" "AWS_KMS_ENDPOINT=$BW_MOTO_ENDPOINT")
refuse kmsbad "BACKUP_KMS_KEY_ID: key 'alias/nope-$$' cannot be used: kms GenerateDataKey: HTTP 400 NotFoundException" \
  "BACKUP_KMS_KEY_ID=alias/nope-$$" "AWS_KMS_ENDPOINT=$BW_MOTO_ENDPOINT"
out=$(env "${KMSENV[@]}" "$CTL" check 2>&1)
expect "backupctl check: the KMS key works (generated and decrypted a data key)" grep -q "^keys      ok    encryption aes-256-gcm, new backups under 'kms:$ALIAS'" <<<"$out"
state s5
declare -A BK
for codec in none gzip zstd; do
  start_worker "wk$codec" BACKUP_NOTIFY=false BACKUP_COMPRESSION=$codec "${KMSENV[@]}" BACKUP_ENCRYPTION=required
  BK[$codec]=$(backup "kms$codec")
  scramble
  expect "$codec+aes-256-gcm under KMS: the restore completes" restore "rkms$codec" "${BK[$codec]}"
  check "$codec+aes-256-gcm under KMS: every row of every table identical" none "$(differs s5)"
  quit "wk$codec"
done
check "KMS: the record names the KMS key" "kms:$ALIAS" "$(q "SELECT key_id FROM backup_metadata WHERE id = '${BK[gzip]}'")"
stored "${BK[none]}" "$tmp/kms.enc"
check "KMS: the stored bytes hold none of the tenant's strings" 0 "$(grep -caE 'ZEBRA-SKU-4417|Quetzal Secret|marisol.quintero' "$tmp/kms.enc")"
# from KMS to the keyring: the KMS key can be retired too
out=$(env "${KMSENV[@]}" BACKUP_ENCRYPTION_KEYS="k2:$K2" "$CTL" rekey "$U" --to k2 2>&1); rc=$?
check "rekey from KMS to k2: exit 1 (the k2025 backup's key is not here)" 1 "$rc"
expect "…the three KMS backups rekeyed, the other named" grep -q "^rekeyed 3 backups and [0-9]* change segments\? under 'k2', 1 failed" <<<"$out"
expect "…naming the missing key" grep -q "$B3 is encrypted with key 'k2025', which is not in BACKUP_ENCRYPTION_KEYS" <<<"$out"
start_worker wk2c BACKUP_NOTIFY=false "BACKUP_ENCRYPTION_KEYS=k2:$K2"
scramble
expect "without KMS, a backup made under KMS restores with k2" restore rkms2 "${BK[zstd]}"
check "…exactly" none "$(differs s5)"
quit wk2c

# ---- 6. no key anywhere ----
out=$(BACKUP_ENCRYPTION_KEYS="k1:$K1,k2:$K2" ctl config 2>&1)
expect "backupctl config: the key ids, masked keys" grep -q "^ENCRYPTION=aes-256-gcm, new backups under 'k2'; BACKUP_ENCRYPTION_KEYS holds 'k1', 'k2'" <<<"$out"
leaks=0
for k in "$K1" "$K2" "$K3"; do
  grep -rqF -- "${k:0:16}" "$tmp"/*.log && leaks=$((leaks + 1))
  grep -qF -- "${k:0:16}" <<<"$out" && leaks=$((leaks + 1))
  R --scan --pattern "$P:job:*" | while read -r h; do R HGETALL "$h"; done | grep -qF -- "${k:0:16}" && leaks=$((leaks + 1))
done
check "no key in the worker logs, status hashes or backupctl config" 0 "$leaks"

q "DROP TABLE IF EXISTS snap_s0, snap_s1, snap_s5, snap_now, snap_before, snap_scrambled" >/dev/null
finish
