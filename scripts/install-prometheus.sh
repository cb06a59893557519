#!/usr/bin/env bash
# Installs Debian bookworm's Prometheus (2.42) into .deps/prometheus, for the test that runs the
# Consul UI's own queries against a real Prometheus scraping the sidecars
# (test/integration/consul-ui-metrics.test.ts). The machine's apt sources and services are not
# touched: a private apt configuration under .deps/prometheus/apt downloads the package, `dpkg -x`
# unpacks it under .deps/prometheus/root, and .deps/prometheus/bin/prometheus links to the binary
# (a static Go program). Nothing is started. Safe to run again: skipped when the binary already runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/prometheus"
bin="$dest/bin/prometheus"
want_version=2.42.

# (Output captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.)
if [ -x "$bin" ] && installed=$("$bin" --version 2>&1) && [[ "$installed" == "prometheus, version $want_version"* ]]; then
  exit 0
fi

# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"
ensure_commands dpkg-deb:dpkg apt-get:apt

rm -rf "${dest:?}/bin"
mkdir -p "$dest/bin"
private_apt_unpack bookworm "$dest" prometheus
ln -sf ../root/usr/bin/prometheus "$bin"

version=$("$bin" --version 2>&1 | sed -n 's/^prometheus, version \([0-9.]*\).*/\1/p' | head -n1)
case "$version" in
  "$want_version"*) echo "install-prometheus: Prometheus $version at $bin" ;;
  *)
    echo "install-prometheus: $bin reports version '$version', expected $want_version*" >&2
    exit 1
    ;;
esac
