#!/usr/bin/env bash
# Installs Debian trixie's HAProxy 3.0 next to the machine's own (bookworm's 2.6), for running the
# test suites against 3.0 (HAPROXY_BIN=.deps/haproxy-3.0/bin/haproxy). The machine's apt sources
# are not touched: a private apt configuration under .deps/haproxy-3.0/apt downloads the trixie
# packages, `dpkg -x` unpacks them under .deps/haproxy-3.0/root, and a copy of the binary gets
# trixie's loader and library directories written into it (patchelf), so it starts on its own and
# the master can re-execute it on reload. Safe to run again: skipped when the binary already runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/haproxy-3.0"
bin="$dest/bin/haproxy"
want_version=3.0.

# (Output captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.)
if [ -x "$bin" ] && installed=$("$bin" -v 2>/dev/null) && [[ "$installed" == "HAProxy version $want_version"* ]]; then
  exit 0
fi

# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"
ensure_commands patchelf:patchelf dpkg-deb:dpkg apt-get:apt

rm -rf "${dest:?}/bin"
mkdir -p "$dest/bin"
# haproxy and the libraries it (and trixie's loader) needs; see shared FACTS.md.
private_apt_unpack trixie "$dest" haproxy libc6 libcrypt1 libjemalloc2 liblua5.4-0 libopentracing-c-wrapper0t64 libopentracing1 libpcre2-8-0 libssl3t64 libstdc++6 libgcc-s1 zlib1g libzstd1

r="$dest/root"
loader="$r/usr/lib64/ld-linux-x86-64.so.2"
[ -e "$loader" ] || loader="$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
cp "$r/usr/sbin/haproxy" "$bin.tmp"
# DT_RPATH (--force-rpath), not DT_RUNPATH: RUNPATH would not apply to the libraries' own
# dependencies (libstdc++ of libopentracing), which would then come from the machine's older copies.
patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$r/usr/lib/x86_64-linux-gnu:$r/lib/x86_64-linux-gnu" "$bin.tmp"
mv "$bin.tmp" "$bin"

# Every library must come from the unpacked root, none from the machine.
outside=$(LD_TRACE_LOADED_OBJECTS=1 "$bin" | awk '$2 == "=>" && $3 !~ "^'"$r"'" { print }' | grep -v 'linux-vdso' || true)
if [ -n "$outside" ]; then
  echo "install-haproxy30: libraries resolved outside $r:" >&2
  echo "$outside" >&2
  exit 1
fi
version=$("$bin" -v | sed -n 's/^HAProxy version \([0-9.]*\).*/\1/p' | head -n1)
case "$version" in
  "$want_version"*) echo "install-haproxy30: HAProxy $version at $bin" ;;
  *)
    echo "install-haproxy30: $bin reports version '$version', expected $want_version*" >&2
    exit 1
    ;;
esac
