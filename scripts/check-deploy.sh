#!/usr/bin/env bash
# Checks deploy/haproxy-connect@.service (or the unit file given as $1) the way systemd would read
# it, without installing it:
#   1. `systemd-analyze verify`: fails on an error (a missing ExecStart binary, a bad section);
#      its warnings (an unknown key, a value it cannot parse and ignores) fail the check too,
#      since systemd would run the unit without that line;
#   2. the settings the README promises are there (hardening, token as a credential, stop timeout
#      longer than -shutdown-grace);
#   3. `systemd-analyze security --offline`: the exposure score stays at or below 2.0.
# The unit's ExecStart binary (/usr/bin/haproxy-connect after `npm install -g`) is usually not
# installed where this runs: then a copy of the unit with ExecStart pointing at a stub is verified.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
unit=${1:-$root/deploy/haproxy-connect@.service}
max_exposure=20 # tenths: 2.0
name=haproxy-connect@.service

fail() {
  echo "check-deploy: FAIL: $*" >&2
  exit 1
}
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (apt-get install systemd)"
[ -f "$unit" ] || fail "$unit not found"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$unit" "$tmp/$name"

exec_line=$(grep -E '^ExecStart=' "$unit") || fail "no ExecStart= in $unit"
binary=$(sed -E 's/^ExecStart=[-@:+!]*([^ ]+).*/\1/' <<<"$exec_line")
if [ ! -x "$binary" ]; then
  mkdir -p "$tmp/bin"
  printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/haproxy-connect"
  chmod 755 "$tmp/bin/haproxy-connect"
  sed -i -E "s#^ExecStart=([-@:+!]*)$binary#ExecStart=\\1$tmp/bin/haproxy-connect#" "$tmp/$name"
  echo "check-deploy: $binary is not installed here: verifying a copy whose ExecStart runs a stub"
fi

# 1. systemd-analyze verify: exit status and every line it prints about the unit.
set +e
verify_out=$(systemd-analyze verify "$tmp/$name" 2>&1)
verify_rc=$?
set -e
about_unit=$(grep -F 'haproxy-connect@' <<<"$verify_out" || true)
if [ "$verify_rc" -ne 0 ] || [ -n "$about_unit" ]; then
  printf '%s\n' "$verify_out" >&2
  fail "systemd-analyze verify $(basename "$unit"): exit $verify_rc${about_unit:+, with diagnostics about the unit}"
fi
[ -z "$verify_out" ] || printf 'check-deploy: systemd-analyze verify said (not about this unit):\n%s\n' "$verify_out"
echo "check-deploy: systemd-analyze verify: OK"

# 2. The settings the README describes (systemd takes the last assignment of a key).
setting() { grep -E "^$1=" "$unit" | tail -n1 | cut -d= -f2- || true; }
expect() {
  local key=$1 want=$2 got
  got=$(setting "$key")
  [ "$got" = "$want" ] || fail "$key=$got, expected $key=$want"
}
expect ProtectSystem strict
expect ProtectHome yes
expect PrivateTmp yes
expect NoNewPrivileges yes
expect KillMode mixed
expect Restart on-failure
expect RuntimeDirectory 'haproxy-connect/%i'
expect LoadCredential 'consul-token:/etc/haproxy-connect/%i.token'
expect EnvironmentFile '-/etc/haproxy-connect/%i.env'
grep -qxF 'Environment=CONSUL_HTTP_TOKEN_FILE=%d/consul-token' "$unit" || fail "CONSUL_HTTP_TOKEN_FILE does not point at the credential (%d/consul-token)"
grep -qE '^ExecStart=.* -haproxy-cfg-base-path %t/haproxy-connect/%i( |$)' "$unit" || fail "ExecStart does not use the RuntimeDirectory as -haproxy-cfg-base-path"
grep -qE '^ExecStart=.* -sidecar-for %i( |$)' "$unit" || fail "ExecStart does not pass -sidecar-for %i"
seconds() { # a systemd or Go duration of whole s/m units ("30s", "1m", "1min") -> seconds
  case $1 in
  *min) echo $((${1%min} * 60)) ;;
  *m) echo $((${1%m} * 60)) ;;
  *s) echo "${1%s}" ;;
  *[0-9]) echo "$1" ;;
  *) fail "cannot read the duration '$1'" ;;
  esac
}
grace=$(grep -oE -- '-shutdown-grace [0-9]+(s|m)' <<<"$exec_line" | awk '{print $2}')
grace=${grace:-10s}
stop=$(setting TimeoutStopSec)
[ -n "$stop" ] || fail "no TimeoutStopSec= (the default 90 s would hide a mismatch with -shutdown-grace)"
# The daemon needs the grace period, 3 s for HAProxy's SIGTERM -> SIGKILL, then deregistration.
[ "$(seconds "$stop")" -ge $(($(seconds "$grace") + 10)) ] || fail "TimeoutStopSec=$stop is not at least -shutdown-grace $grace + 10 s"
echo "check-deploy: settings: OK (TimeoutStopSec=$stop, -shutdown-grace $grace)"

# 3. The exposure score of the sandbox.
set +e
security_out=$(systemd-analyze security --offline=yes --threshold=$max_exposure "$tmp/$name" 2>&1)
security_rc=$?
set -e
score=$(grep -oE 'Overall exposure level for [^:]+: [0-9.]+ [A-Z]+' <<<"$security_out" | sed 's/.*: //')
if [ "$security_rc" -ne 0 ]; then
  printf '%s\n' "$security_out" | grep -v '^✓' >&2
  fail "systemd-analyze security: exposure ${score:-unknown} is above $((max_exposure / 10)).$((max_exposure % 10))"
fi
echo "check-deploy: systemd-analyze security: exposure $score (limit $((max_exposure / 10)).$((max_exposure % 10)))"
echo "check-deploy: OK: $(basename "$unit")"
