#!/usr/bin/env bash
# test_deploy: deploy/ validated (tests/validate_deploy.mjs): Kubernetes and KEDA schemas,
# the Compose file, and the Dockerfile's runtime packages against the libraries the built
# binaries link (readelf NEEDED -> ldd path -> dpkg -S package). Then the validator is shown
# to fail on broken copies, so a pass means something.
WORKER=$1
CTL=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# every setting the worker knows, from its own help
"$CTL" --help | sed -n '/^Environment:/,$p' | awk '/^  [A-Z][A-Z0-9_]+ /{print $1}' >"$tmp/vars"
[ "$(wc -l <"$tmp/vars")" -ge 20 ] && ok "settings from backupctl --help" || bad "settings from backupctl --help"

# the Debian packages owning the libraries the binaries need
for bin in "$WORKER" "$CTL"; do
  for lib in $(readelf -d "$bin" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
    case $lib in lib[aults]san.so* | libubsan.so*) continue ;; esac # sanitizer builds only
    path=$(ldd "$bin" | awk -v l="$lib" '$1 == l {print $3}')
    [ -n "$path" ] || { bad "$lib: not resolved by ldd"; continue; }
    pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null)
    [ -n "$pkg" ] || { bad "$lib ($path): no package owns it"; continue; }
    echo "${pkg%%:*}"
  done
done >"$tmp/pkgs.all"
sort -u "$tmp/pkgs.all" >"$tmp/pkgs"
grep -q . "$tmp/pkgs" && ok "runtime packages: $(tr '\n' ' ' <"$tmp/pkgs")" || bad "no runtime packages found"

validate() { node "$ROOT/tests/validate_deploy.mjs" "$1" "$tmp/vars" "$tmp/pkgs"; }
if out=$(cd "$ROOT" && validate "$ROOT/deploy"); then ok "deploy/ validates: ${out##*$'\n'}"; else bad "deploy/ validates:"$'\n'"$out"; fi

# broken copies must fail, each for its reason
broken() { # NAME SED_FILE SED_EXPR EXPECTED_MESSAGE
  rm -rf "$tmp/d" && cp -r "$ROOT/deploy" "$tmp/d" && mkdir -p "$tmp/proto" && cp -r "$ROOT/proto/sql" "$tmp/proto/"
  sed -i "$3" "$tmp/d/$2"
  local o
  if o=$(cd "$ROOT" && validate "$tmp/d"); then bad "$1: accepted"; return; fi
  grep -q -- "$4" <<<"$o" && ok "$1: refused ($4)" || bad "$1: refused for another reason: $o"
}
broken "replicas as a string" k8s/deployment.yaml 's/replicas: 1/replicas: "one"/' "must be integer"
broken "a KEDA trigger without its type" k8s/scaledobject.yaml '0,/- type: redis-streams/s//- metadata: {}\n    - type: redis-streams/' "required property 'type'\|required property type"
broken "grace period below the worker's" k8s/deployment.yaml 's/terminationGracePeriodSeconds: 45/terminationGracePeriodSeconds: 10/' "terminationGracePeriodSeconds must exceed"
broken "a misspelt setting" k8s/configmap.yaml 's/WORKER_CONCURRENCY/WORKER_CONCURENCY/' "WORKER_CONCURENCY is not a setting"
broken "a real-looking secret" k8s/secret.example.yaml 's/REDIS_PASSWORD: CHANGE-ME/REDIS_PASSWORD: hunter2/' "Secret REDIS_PASSWORD"
broken "a runtime library missing" Dockerfile 's/ libpq5 libssl3/ libssl3/' "lacks libpq5"
broken "a root container" Dockerfile 's/^USER 10001:10001/USER root/' "non-root USER"
broken "a Compose file that does not parse" docker-compose.yml '0,/^services:/s//services: [/' "compose\|docker-compose.yml"

finish
