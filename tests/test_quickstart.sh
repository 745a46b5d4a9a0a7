#!/usr/bin/env bash
# test_quickstart: README command 1 (tools/devenv quickstart) run non-interactively on the
# running services, on a Redis prefix of its own: it must exit 0 and end with a verified
# restore of the full backup it made, the database back at the full's state.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs BW_DEVENV DATABASE_URL
export REDIS_PREFIX=qs$$
U=0a1c0000-0000-4000-8000-00000000d3e0
q "DELETE FROM profiles WHERE id = '$U'; DELETE FROM backup_metadata WHERE user_id = '$U'; DELETE FROM change_segments WHERE user_id = '$U';
   DELETE FROM restore_history WHERE user_id = '$U'" >/dev/null
export WEB_PORT=$(free_port)
"$BW_DEVENV" quickstart >"$tmp/out" 2>&1; rc=$?
# the web server it left running answers with the token it printed
web_url=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/out" | sed -n 's#^web server: \(http://[^ ]*/\) .*#\1#p')
tok=$(grep -A1 "^sign in to the page with this token" "$tmp/out" | tail -1)
web_list=$(curl -fsS -H "Authorization: Bearer $tok" "${web_url}api/backup/list" 2>&1)
web_page=$(curl -fsS "${web_url}" 2>&1)
"$BW_DEVENV" stop-workers
check "quickstart: exit 0" 0 "$rc"
out=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/out")
expect "…two workers ready" grep -q "^worker 2 ready" <<<"$out"
expect "…a full backup of ~33k rows" grep -Eq "^completed: backup backup-$U-[0-9]+, 32908 rows" <<<"$out"
expect "…an incremental of what changed" grep -Eq "^completed: backup incremental-$U-[0-9]+, [0-9]+ rows" <<<"$out"
expect "…the restore, back at the full's 8000 orders" grep -q "^orders after the restore: 8000, delivered: " <<<"$out"
expect "…verified" grep -q "^completed: verify backup-$U-.*; 1 backup verified" <<<"$out"
expect "…the stats" grep -q "^backups: *2 (2 completed, 0 failed)" <<<"$out"
expect "…the objects in S3" grep -q "backups/$U/incremental/incremental-$U-.*manifest.json" <<<"$out"
expect "…ends with a verified restore" grep -q "^Quickstart done: a verified restore of backup-$U-" <<<"$(tail -2 <<<"$out" | head -1)"
expect "…and how to stop the services" grep -q "tools/devenv stop\$" <<<"$(tail -1 <<<"$out")"
check "…the web server on \$WEB_PORT" "http://127.0.0.1:$WEB_PORT/" "$web_url"
check "…its API lists the user's 2 backups with the printed token" 2 "$(jq 'map(select(.status == "completed")) | length' <<<"$web_list" 2>&1)"
expect "…and serves the backup page" grep -q "Backup de datos" <<<"$web_page"
expect "…stop-workers stopped it" bash -c "! curl -fsS -o /dev/null ${web_url}healthz 2>/dev/null"
check "the restored orders in the database" 8000 "$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")"
[ "$fails" -eq 0 ] || cat "$tmp/out"
R EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':*')) do redis.call('DEL', k) end" 0 "$REDIS_PREFIX" >/dev/null
finish
