#!/usr/bin/env bash
# Installs everything haproxy-connect's demo and tests need on a fresh Debian machine:
# HAProxy 2.6 from Debian, the Consul agent (built from its Go module), Node 24 and HAProxy 3.0
# into .deps/ (the suite runs on both platforms), the npm packages, and the compiled CLI. Safe to run again: each step is skipped when already done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"
ensure_commands haproxy:haproxy curl:curl openssl:openssl systemd-analyze:systemd
haproxy_version=$(haproxy -v | sed -n 's/^HAProxy version \([0-9.]*\).*/\1/p' | head -n1)
IFS=. read -r major minor _ <<<"$haproxy_version"
if [ -z "$major" ] || [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "${minor:-0}" -lt 6 ]; }; then
  echo "setup: haproxy '$haproxy_version' found; haproxy-connect needs 2.6 or later" >&2
  exit 1
fi
bash scripts/build-consul.sh
# The second platform of the test suite: Node 24 LTS and HAProxy 3.0 LTS, into .deps/.
bash scripts/install-node24.sh
bash scripts/install-haproxy30.sh
# Prometheus for the Consul UI metrics test, into .deps/ (nothing is started).
bash scripts/install-prometheus.sh

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
