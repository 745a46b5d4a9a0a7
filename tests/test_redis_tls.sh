#!/usr/bin/env bash
# test_redis_tls: the worker on a TLS-only Redis (redis-server 7, its plain port off), with
# certificates made here by openssl: a CA, a server certificate for localhost and 127.0.0.1, one
# signed by another CA, one for another name, an expired one, a client certificate.
#  1. rediss:// with REDIS_CA_FILE: the certificate verified (the log says so), a backup and a
#     restore through the queue, exact
#  2. each bad server certificate refused by name (unknown CA, name mismatch, expired), never
#     falling back to plain text: the worker is not ready and runs nothing
#  3. rediss:// to a plain-text port: "did not answer in TLS"
#  4. mutual TLS required by the server: without a client certificate refused, with one served
#  5. an ACL user with the rule deploy/README.md gives (and nothing more) runs it all; a user
#     without HSET (which the scripts run) gets the failure named, pointing at the rule
#  6. no secret in any log (the password, the key's bytes)
WORKER=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs REDIS_URL DATABASE_URL BW_DEVENV
"$BW_DEVENV" migrate >/dev/null
PLAIN_HOST=$RHOST PLAIN_PORT=$RPORT

# ---- certificates ----
C=$tmp/certs
mkdir -p "$C"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$C/$1.key" 2>/dev/null; }
csr() { key "$1" && openssl req -new -key "$C/$1.key" -subj "/CN=$2" -out "$C/$1.csr" 2>/dev/null; }
ca() { key "$1" && openssl req -x509 -key "$C/$1.key" -subj "/CN=$2" -days 2 -out "$C/$1.crt" 2>/dev/null; }
sign() { # NAME CA SAN
  printf 'subjectAltName=%s\n' "$3" >"$C/$1.ext"
  openssl x509 -req -in "$C/$1.csr" -CA "$C/$2.crt" -CAkey "$C/$2.key" -CAcreateserial -days 2 \
    -extfile "$C/$1.ext" -out "$C/$1.crt" 2>/dev/null
}
ca ca "bw test CA"
ca other "another CA"
csr server localhost && sign server ca "DNS:localhost,IP:127.0.0.1"
cp "$C/server.csr" "$C/alien.csr" && sign alien other "DNS:localhost,IP:127.0.0.1"
cp "$C/server.csr" "$C/wrongname.csr" && sign wrongname ca "DNS:cache.other.example"
csr client worker && sign client ca "DNS:worker"
# expired: openssl 3.0's x509 cannot date a certificate in the past; its ca command can
cat >"$C/ca.cnf" <<EOF
[ ca ]
default_ca = d
[ d ]
database = $C/index.txt
new_certs_dir = $C
serial = $C/serial
default_md = sha256
policy = p
copy_extensions = copy
[ p ]
commonName = supplied
EOF
: >"$C/index.txt"
echo 1000 >"$C/serial"
openssl ca -batch -config "$C/ca.cnf" -cert "$C/ca.crt" -keyfile "$C/ca.key" -in "$C/server.csr" \
  -out "$C/expired.crt" -startdate 20200101000000Z -enddate 20200102000000Z -extfile "$C/server.ext" \
  -notext >/dev/null 2>&1
for f in server alien wrongname client expired; do
  [ -s "$C/$f.crt" ] || bad "openssl did not make $f.crt"
done

# tls_redis NAME CERT [redis-server options...]: a TLS-only Redis with that server certificate;
# sets TP to its port
tls_redis() {
  local name=$1 cert=$2; shift 2
  TP=$(free_port)
  mkdir -p "$tmp/$name"
  redis-server --port 0 --tls-port "$TP" --tls-cert-file "$C/$cert.crt" --tls-key-file "$C/server.key" \
    --tls-ca-cert-file "$C/ca.crt" --tls-auth-clients no --save '' --appendonly no --dir "$tmp/$name" \
    --requirepass tls-secret-7731 "$@" "${REDIS_OPTS[@]}" >"$tmp/$name.redis.log" 2>&1 &
  pids+=($!)
  wait_until 10 grep -q "Ready to accept" "$tmp/$name.redis.log" || bad "redis-server ($name) did not start"
}
REDIS_OPTS=()
# the queue's Redis is the TLS one from here on (redis-cli over TLS, trusting the test CA)
P=ttls$$

# ---- 1. a TLS-only Redis: backup and restore ----
tls_redis good server
RHOST=localhost RPORT=$TP
export RHOST RPORT
export RTLS_STR="--tls --cacert $C/ca.crt -a tls-secret-7731 --no-auth-warning"
R() { redis-cli $RTLS_STR -h "$RHOST" -p "$RPORT" -n 0 "$@"; }
export -f R
check "redis-cli over TLS reaches it, the plain port is off" "PONG" "$(R PING)"
U=4e900001-0000-4000-8000-0000000000f1
fresh_user "$U"
"$ROOT/tools/datagen" --user "$U" --orders 40 --seed tls1 >/dev/null
# the worker as an ACL user of its own, with exactly deploy/README.md's rule
rule=$(sed -n '/^ACL SETUSER backup-worker/,/^```/p' "$ROOT/deploy/README.md" | grep -v '^```' | tr '\n' ' ' |
  sed -e 's/^ACL SETUSER backup-worker //' -e "s/>PASSWORD/>acl-secret-5120/" -e "s/backup:\*/$P:*/g")
set -f # the rule's patterns are not file names
R ACL SETUSER bwworker $rule >/dev/null
set +f
check "the README's rule is accepted by Redis" "on" "$(R ACL GETUSER bwworker | sed -n 2p | tr -d '\r' | grep -o '^on')"
TLSURL="rediss://bwworker:acl-secret-5120@localhost:$TP/0"
start_worker w1 "REDIS_URL=$TLSURL" "REDIS_CA_FILE=$C/ca.crt" BACKUP_NOTIFY=false
expect "the log says TLS, the version, and that the certificate was verified" \
  grep -qE "TLS to localhost:$TP \(TLSv1\.[23] .*\), the server's certificate verified" "$tmp/w1.log"
enqueue tls-b1 type backup user_id "$U" mode full
expect "a backup through the TLS queue completes" done_ok tls-b1
B1=$(field tls-b1 backup_id)
q "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = '$U' ORDER BY id LIMIT 10)" >/dev/null
enqueue tls-r1 type restore user_id "$U" backup_id "$B1"
expect "…and its restore" done_ok tls-r1
check "…exact" 40 "$(q "SELECT count(*) FROM orders WHERE user_id = '$U'")"
# the web tier on the same TLS Redis (ioredis, the same CA file): a backup through its API
WEB_SECRET=web-secret-of-this-test-0123456789abcdef
env REDIS_URL="rediss://:tls-secret-7731@localhost:$TP/0" REDIS_CA_FILE="$C/ca.crt" REDIS_PREFIX="$P" \
  WEB_PORT=0 SUPABASE_JWT_SECRET=$WEB_SECRET WEB_LOG_LEVEL=warn node "$ROOT/tools/web/dist/main.js" >"$tmp/web.log" 2>&1 &
pids+=($!)
wait_until 15 grep -q "listening on" "$tmp/web.log" || bad "the web tier did not start: $(head -3 "$tmp/web.log")"
WEB=$(grep -o 'http://[0-9.:]*' "$tmp/web.log" | head -1)
check "the web tier's health check pings Redis over TLS" '{"ok":true}' "$(curl -s "$WEB/healthz")"
cat >"$tmp/web.mjs" <<EOF
import { signJwt } from '$ROOT/tools/web/dist/jwt.js';
import { BackupService } from '$ROOT/proto/ts/dist/browser.js';
const now = Math.floor(Date.now() / 1000);
const token = signJwt({ sub: '$U', role: 'authenticated', aud: 'authenticated', iat: now, exp: now + 600 }, '$WEB_SECRET');
const svc = new BackupService({ baseUrl: '$WEB', getToken: () => token });
const { jobId } = await svc.createBackup({ type: 'full' });
const done = await svc.watch(jobId);
console.log(done.status, done.backupId ? 'with-backup' : 'none');
EOF
check "…and a backup enqueued and followed through the web tier" "completed with-backup" \
  "$(timeout 60 node "$tmp/web.mjs" 2>&1 | tail -1)"
stop_worker w1 >/dev/null
# a user without HSET: the failure names the command (the scripts write the status hash)
R ACL SETUSER bwnohash on '>acl-secret-5121' "~$P:*" "&$P:*" -@all +@stream +@sortedset +get +set +del \
  +exists +pexpire +eval +evalsha +publish +ping +select '+client|setname' '+client|id' '+client|unblock' >/dev/null
start_worker w3 "REDIS_URL=rediss://bwnohash:acl-secret-5121@localhost:$TP/0" "REDIS_CA_FILE=$C/ca.crt"
enqueue tls-n1 type ping
expect "NOPERM: named, with the command and where the rule is" \
  wait_until 15 grep -qE "ACL user bwnohash may not run EVAL(SHA)? \(a command its script runs\) here: .*deploy/README.md" "$tmp/w3.log"
kill -9 "$PID_w3" 2>/dev/null

# ---- 2. bad server certificates: refused by name ----
refused() { # NAME CERT WHAT [worker env...]: the worker never becomes ready, and says WHAT
  local name=$1 cert=$2 what=$3; shift 3
  tls_redis "$name" "$cert"
  local url="rediss://:tls-secret-7731@localhost:$TP/0"
  env REDIS_PREFIX="$P" WORKER_HTTP_PORT=0 "REDIS_URL=$url" "REDIS_CA_FILE=$C/ca.crt" "$@" \
    "$WORKER" >"$tmp/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  if wait_until 10 grep -qF -- "$what" "$tmp/$name.log" && ! grep -q "consuming" "$tmp/$name.log"; then
    ok "$name: refused, naming the cause ($what)"
  else
    bad "$name: expected '$what' and no start; the log: $(grep -m2 -i tls "$tmp/$name.log")"
  fi
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
refused alien alien "unknown CA"
refused wrongname wrongname "name mismatch"
refused expired expired "expired: the server's certificate is past its validity"
# by IP address: the certificate names 127.0.0.1 too, so the same certificate passes
tls_redis byip server
env REDIS_PREFIX="$P" WORKER_HTTP_PORT=0 "REDIS_URL=rediss://:tls-secret-7731@127.0.0.1:$TP/0" \
  "REDIS_CA_FILE=$C/ca.crt" "$WORKER" >"$tmp/byip.log" 2>&1 &
pids+=($!)
expect "dialled by IP address: verified against the certificate's IP entry" \
  wait_until 10 grep -q "TLS to 127.0.0.1:$TP" "$tmp/byip.log"
kill "${pids[-1]}" 2>/dev/null

# ---- 3. TLS to a plain-text port ----
env REDIS_PREFIX="$P" WORKER_HTTP_PORT=0 "REDIS_URL=rediss://$PLAIN_HOST:$PLAIN_PORT/0" \
  "REDIS_CA_FILE=$C/ca.crt" "$WORKER" >"$tmp/plain.log" 2>&1 &
pids+=($!)
expect "rediss:// to a plain-text port: named, no fallback" \
  wait_until 15 grep -q "did not answer in TLS" "$tmp/plain.log"
kill "${pids[-1]}" 2>/dev/null

# ---- 4. mutual TLS ----
REDIS_OPTS=(--tls-auth-clients yes) # the server requires a client certificate from here on
refused mtls server "mutual TLS: REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE" # the alert, or the reset that overtakes it
tls_redis mtls2 server
start_worker w2 "REDIS_URL=rediss://:tls-secret-7731@localhost:$TP/0" "REDIS_CA_FILE=$C/ca.crt" \
  "REDIS_TLS_CERT_FILE=$C/client.crt" "REDIS_TLS_KEY_FILE=$C/client.key" BACKUP_NOTIFY=false
RPORT=$TP
RTLS_STR="--tls --cacert $C/ca.crt --cert $C/client.crt --key $C/client.key -a tls-secret-7731 --no-auth-warning"
export RPORT RTLS_STR
enqueue tls-p1 type ping
expect "mutual TLS required and met: a job runs" done_ok tls-p1
stop_worker w2 >/dev/null

# ---- 6. secrets ----
check "no log holds the password or the client key" "" \
  "$(grep -l -e tls-secret-7731 -e acl-secret-512 -e "$(sed -n 2p "$C/client.key")" "$tmp"/*.log 2>/dev/null | grep -v redis.log)"
finish
