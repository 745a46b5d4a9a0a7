#!/usr/bin/env bash
# test_backupctl: the operator's job commands against real Redis, PostgreSQL and S3 (s3rver)
# and a real worker: backup / verify / restore / cleanup enqueued and followed (--wait lines,
# --json, exit codes), list from the database and from S3 alone, stats, status, wait with a
# timeout, download with its checksum verified (and refused when the object was replaced),
# restore given only an S3 key after backup_metadata is lost, schedule twice (each due backup
# once, `off` users none), migrate, and clear errors for unreachable services and bad input.
WORKER=$1
CTL=$(realpath "$2")
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null

A=c7100001-0000-4000-8000-00000000000a
B=c7100002-0000-4000-8000-00000000000b
C=c7100003-0000-4000-8000-00000000000c
for u in $A $B $C; do
  q "DELETE FROM profiles WHERE id = '$u'; DELETE FROM backup_metadata WHERE user_id = '$u'; DELETE FROM change_segments WHERE user_id = '$u';
     DELETE FROM restore_history WHERE user_id = '$u'" >/dev/null
  s3 s3 rm --recursive --quiet "s3://$S3_BUCKET/backups/$u/"
done
"$ROOT/tools/datagen" --user "$A" --orders 60 --seed tc7a >/dev/null
"$ROOT/tools/datagen" --user "$B" --orders 3 --seed tc7b >/dev/null
"$ROOT/tools/datagen" --user "$C" --orders 3 --seed tc7c >/dev/null
q "UPDATE profiles SET role = 'staff' WHERE id = '$B'; DELETE FROM businesses WHERE owner_id = '$B'" >/dev/null

P=tctl$$
export REDIS_PREFIX=$P
ctl() { "$CTL" "$@"; }
start_worker w1 BACKUP_NOTIFY=false

# ---- backup, followed ----
out=$(ctl backup "$A" --wait 2>"$tmp/err"); rc=$?
check "backup --wait: exit 0" 0 "$rc"
expect "…says the job it enqueued" grep -q "^enqueued job ctl-backup-" <<<"$out"
expect "…prints progress lines (not a terminal)" grep -Eq "^[0-9T:-]+Z  (running|completed) +[a-z_]+ +[0-9]+%  rows [0-9]+" <<<"$out"
expect "…ends with the backup it made" grep -Eq "^completed: backup backup-$A-[0-9]+, [0-9]+ rows" <<<"$out"
FULL=$(q "SELECT id FROM backup_metadata WHERE user_id = '$A' AND type = 'full' AND status = 'completed'")
check "…one full backup recorded" 1 "$(wc -w <<<"$FULL")"

q "UPDATE orders SET notes = 'changed by test_backupctl' WHERE user_id = '$A' AND number = 1" >/dev/null
json=$(ctl backup "$A" --incremental --wait --json); rc=$?
check "backup --incremental --wait --json: exit 0" 0 "$rc"
check "…one JSON object, status completed" completed "$(jq -r .status <<<"$json")"
INCR=$(jq -r .backup_id <<<"$json")
check "…an incremental on the full" "$FULL" "$(q "SELECT base_backup_id FROM backup_metadata WHERE id = '$INCR'")"
check "…numbers as JSON numbers" number "$(jq -r '.rows | type' <<<"$json")"

json=$(ctl backup "$A" --no-wait --json --job-id "ctl-fixed-$P"); rc=$?
check "backup --no-wait --json: exit 0 with the job id" "0 ctl-fixed-$P" "$rc $(jq -r .job_id <<<"$json")"
expect "wait JOB_ID follows it to completion" ctl wait "ctl-fixed-$P" --json
check "status JOB_ID: its hash as JSON" "completed backup" \
  "$(ctl status "ctl-fixed-$P" | jq -r '"\(.status) \(.type)"')"
LAST=$(field "ctl-fixed-$P" backup_id)
# an enqueued job has its status at once, before any worker claims it (a prefix none reads)
Q=tctlq$$
REDIS_PREFIX=$Q ctl backup "$A" --no-wait --job-id "q-$P" >/dev/null
check "a job no worker claimed yet: status queued, with its type, user and entry" \
  "queued backup $A $(R XRANGE "$Q:jobs" - + | head -1)" \
  "$(REDIS_PREFIX=$Q ctl status "q-$P" | jq -r '"\(.status) \(.type) \(.user_id)"') $(R HGET "$Q:job:q-$P" entry)"
R HSET "$Q:job:q-$P" status completed >/dev/null
REDIS_PREFIX=$Q ctl backup "$A" --no-wait --job-id "q-$P" >/dev/null
check "…enqueued again: a second entry, the known status untouched" "2 completed" \
  "$(R XLEN "$Q:jobs") $(R HGET "$Q:job:q-$P" status)"
R DEL "$Q:jobs" "$Q:job:q-$P" >/dev/null

# ---- list, stats ----
list=$(ctl list "$A")
expect "list: the full and the incremental, with its base" grep -Eq "^$INCR +incremental +completed .* $FULL\$" <<<"$list"
check "list --json: three backups, the second built on the first" "3 $FULL" \
  "$(ctl list "$A" --json | jq -r '"\(length) \(.[1].base_backup_id)"')"
check "list: the codecs of each backup, in text and JSON" "gzip gzip" \
  "$(awk -v id="$FULL" '$1 == id {print $(NF - 3)}' <<<"$list") $(ctl list "$A" --json | jq -r '.[0].codecs')"
s3json=$(ctl list "$A" --s3 --json)
check "list --s3 --json: the same ids, from the manifests alone" \
  "$(q "SELECT string_agg(id, ' ' ORDER BY s3_key) FROM backup_metadata WHERE user_id = '$A'")" \
  "$(jq -r '[.[].backup_id] | join(" ")' <<<"$s3json")"
check "…with the recorded sizes" \
  "$(q "SELECT string_agg(size::text, ' ' ORDER BY s3_key) FROM backup_metadata WHERE user_id = '$A'")" \
  "$(jq -r '[.[].size | tostring] | join(" ")' <<<"$s3json")"
check "stats USER --json: 3 backups, 3 completed, 100%" "3 3 100" \
  "$(ctl stats "$A" --json | jq -r '.[] | select(.user_id != "all") | "\(.total_backups) \(.successful_backups) \(.success_rate)"')"
expect "stats (all users) prints the totals" grep -q "^users with backups:" <<<"$(ctl stats)"

# ---- verify ----
expect "verify BACKUP_ID --wait: exit 0" ctl verify "$INCR" --wait
check "verify --user --json: every backup" "3 backups verified" "$(ctl verify --user "$A" --wait --json | jq -r .note)"

# ---- download ----
ctl download "$FULL" "$tmp/full.json.gz" >"$tmp/dl.out"; rc=$?
check "download BACKUP_ID FILE: exit 0" 0 "$rc"
check "…the file's sha256 is the recorded checksum" "$(q "SELECT checksum FROM backup_metadata WHERE id = '$FULL'")" \
  "$(sha256sum "$tmp/full.json.gz" | cut -d' ' -f1)"
expect "…and it is the backup (gunzip | jq)" bash -c "gunzip -c '$tmp/full.json.gz' | jq -e '.backup_id == \"$FULL\"' >/dev/null"
KINCR=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$INCR'")
(cd "$tmp" && ctl download "$KINCR" >/dev/null); rc=$?
check "download S3_KEY: exit 0, named after the object" "0 yes" "$rc $([ -s "$tmp/$(basename "$KINCR")" ] && echo yes)"
(cd "$tmp" && ctl download --plain "$FULL" >/dev/null); rc=$?
check "download --plain: exit 0, the document named $FULL.json, its codecs undone" "0 same" \
  "$rc $(gunzip -c "$tmp/full.json.gz" | cmp -s - "$tmp/$FULL.json" && echo same)"

# ---- restore given only a key, after backup_metadata is lost ----
q "UPDATE orders SET notes = 'scrambled' WHERE user_id = '$A'" >/dev/null
q "DELETE FROM backup_metadata WHERE user_id = '$A'" >/dev/null
out=$(ctl restore --key "$KINCR" --wait 2>&1); rc=$?
check "restore --key (rows lost): exit 0" 0 "$rc"
expect "…rebuilt the rows from S3 first" grep -q "reindexed $A: 3 backups added" <<<"$out"
check "…and restored the incremental's state" "1|0" \
  "$(q "SELECT count(*) FILTER (WHERE notes = 'changed by test_backupctl'), count(*) FILTER (WHERE notes = 'scrambled') FROM orders WHERE user_id = '$A'")"
expect "restore BACKUP_ID --tables orders,order_items --wait" ctl restore "$FULL" --tables orders,order_items --wait
check "…back to the full's state" 0 "$(q "SELECT count(*) FROM orders WHERE user_id = '$A' AND notes = 'changed by test_backupctl'")"

# ---- failures and their exit codes ----
ctl backup 00000000-0000-4000-8000-0000000000ff --wait >/dev/null 2>"$tmp/err"; rc=$?
check "a job that fails: exit 1" 1 "$rc"
expect "…with its reason" grep -q "^failed: backup .*has no rows" <<<"$(cat "$tmp/err")"
ctl cleanup "$A" --requested-by "$B" --wait >/dev/null 2>"$tmp/err"; rc=$?
check "cleanup by a non-owner: exit 1" 1 "$rc"
expect "…forbidden" grep -q "forbidden: $B is not the owner" "$tmp/err"
expect "cleanup by the owner: exit 0" ctl cleanup "$A" --requested-by "$A" --retention-days 30 --wait
stop_worker w1
ctl backup "$A" --wait --timeout 1 --job-id "ctl-late-$P" >/dev/null 2>"$tmp/err"; rc=$?
check "--timeout with no worker: exit 3" 3 "$rc"
expect "…saying the job goes on" grep -q "backupctl wait ctl-late-$P" "$tmp/err"

# tamper: the full's object replaced: download refuses and leaves no file
KFULL=$(q "SELECT s3_key FROM backup_metadata WHERE id = '$FULL'")
gunzip -c "$tmp/full.json.gz" | sed 's/changed/CHANGED/' | gzip -1 >"$tmp/evil.gz"
s3 s3 cp --quiet "$tmp/evil.gz" "s3://$S3_BUCKET/$KFULL"
ctl download "$FULL" "$tmp/bad.gz" >/dev/null 2>"$tmp/err"; rc=$?
check "download of a replaced object: exit 1" 1 "$rc"
expect "…Backup checksum verification failed" grep -q "Backup checksum verification failed" "$tmp/err"
check "…no file left behind" "no no" "$([ -e "$tmp/bad.gz" ] && echo yes || echo no) $([ -e "$tmp/bad.gz.part" ] && echo yes || echo no)"

# bad input, unreachable services: exit 2 / 1, named, no secrets
ctl backup not-a-uuid >/dev/null 2>"$tmp/err"; rc=$?
check "a bad user id: exit 2" 2 "$rc"
expect "…named" grep -q "user 'not-a-uuid' is not a UUID" "$tmp/err"
ctl restore "$FULL" --frobnicate >/dev/null 2>&1; check "an unknown option: exit 2" 2 $?
REDIS_URL=redis://:sekrit@127.0.0.1:1/0 "$CTL" backup "$A" >/dev/null 2>"$tmp/err"; rc=$?
check "Redis unreachable: exit 1" 1 "$rc"
expect "…names the endpoint and what to check" grep -q "cannot reach Redis at 127.0.0.1:1: .*check REDIS_URL" "$tmp/err"
DATABASE_URL=postgresql://u:sekrit@127.0.0.1:1/db "$CTL" list "$A" >/dev/null 2>"$tmp/err"; rc=$?
check "PostgreSQL unreachable: exit 1" 1 "$rc"
expect "…names the endpoint and what to check" grep -q "cannot connect to PostgreSQL at postgresql://u:\*\*\*@127.0.0.1:1/db: .*check DATABASE_URL" "$tmp/err"
expect "…without the password" bash -c "! grep -q sekrit '$tmp/err'"

# ---- schedule (no worker: the entries stay in the stream to be counted) ----
q "UPDATE user_settings SET backup_schedule = 'daily' WHERE user_id = '$A';
   UPDATE user_settings SET backup_schedule = 'weekly' WHERE user_id = '$B';
   UPDATE user_settings SET backup_schedule = 'off' WHERE user_id = '$C'" >/dev/null
entries() { # USER: the schedule's entries for the user: "job_id mode" lines
  R --raw EVAL "local out = {}
    for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
      local t = {} for i = 1, #e[2], 2 do t[e[2][i]] = e[2][i + 1] end
      if t.user_id == ARGV[1] and t.trigger == 'scheduled' then out[#out + 1] = t.job_id .. ' ' .. t.mode end
    end return out" 1 "$P:jobs" "$1"
}
dry=$(ctl schedule --dry-run --json)
check "schedule --dry-run enqueues nothing" "true " "$(jq -r .dry_run <<<"$dry") $(entries "$A")"
ctl schedule --json >"$tmp/s1"; rc=$?
check "schedule: exit 0" 0 "$rc"
check "…user A (daily, a recent full): one incremental" "sched-$(date -u +%Y%m%d)-$A incremental" "$(entries "$A")"
check "…user B (weekly): one full" "sched-$(date -u +%GW%V)-$B full" "$(entries "$B")"
check "…user C (off): none" "" "$(entries "$C")"
ctl schedule --json >"$tmp/s2"
check "schedule again: nothing more for them" "1 1 0" "$(entries "$A" | grep -c .) $(entries "$B" | grep -c .) $(entries "$C" | grep -c .)"
check "…and it says so" "0" "$(jq -r .enqueued "$tmp/s2")"
check "…counting the users that are off" "true" "$(jq -r '.off >= 1' "$tmp/s1")"

# ---- migrate ----
out=$(ctl migrate); rc=$?
NF=$(ls "$ROOT"/proto/sql/[0-9]*.sql | wc -l)
check "migrate: exit 0, every file applied now or before" "0 $NF" \
  "$rc $(( $(grep -c '^applied ' <<<"$out") + $(sed -nE 's/.*, ([0-9]+) applied before\).*/\1/p' <<<"$out") ))"
out=$(ctl migrate); rc=$?
check "…again: exit 0, nothing applied (each file once: backup_schema_migrations)" "0 0 $NF" \
  "$rc $(grep -c '^applied ' <<<"$out") $(sed -nE 's/.*, ([0-9]+) applied before\).*/\1/p' <<<"$out")"

# issue 29: wait on an id that is no job ends, as status does; an entry added by XADD alone (no
# status hash yet) is still waited for
out=$(timeout 20 "$CTL" wait "no-such-job-$$" 2>&1); rc=$?
check "wait on an unknown job ends: exit 1, naming it" "1 yes" "$rc $(grep -q "no job no-such-job-$$" <<<"$out" && echo yes)"
R XADD "nowk$$:jobs" '*' job_id "xadd-only-$$" type ping >/dev/null # no worker on this prefix
out=$(REDIS_PREFIX=nowk$$ timeout 20 "$CTL" wait "xadd-only-$$" --timeout 1 2>&1); rc=$?
R DEL "nowk$$:jobs" >/dev/null
check "…an entry not yet claimed is waited for (--timeout: exit 3)" 3 "$rc"
check "after eval \"\$(tools/devenv env)\", backupctl is on the PATH" "$(cd "$(dirname "$0")/.." && pwd)/build/backupctl" \
  "$(env -i HOME="$HOME" PATH=/usr/bin:/bin bash -c 'eval "$("$0" env)"; command -v backupctl' "$BW_DEVENV")"

R EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':*')) do redis.call('DEL', k) end" 0 "$P" >/dev/null
finish
