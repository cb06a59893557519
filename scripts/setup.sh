#!/usr/bin/env bash
# Installs everything haproxy-connect's demo and tests need on a fresh Debian machine:
# HAProxy 2.6 from Debian, the Consul agent (built from its Go module), the npm packages, and
# the compiled CLI. Safe to run again: each step is skipped when already done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
command -v haproxy >/dev/null || apt_packages+=(haproxy)
command -v curl >/dev/null || apt_packages+=(curl)
command -v openssl >/dev/null || apt_packages+=(openssl)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]} from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
haproxy_version=$(haproxy -v | sed -n 's/^HAProxy version \([0-9.]*\).*/\1/p' | head -n1)
case "$haproxy_version" in
  2.6.*|2.[7-9].*|3.*) ;;
  *) echo "setup: haproxy $haproxy_version found; haproxy-connect needs 2.6 or later" >&2; exit 1 ;;
esac

bash scripts/build-consul.sh

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
