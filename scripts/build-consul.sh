#!/usr/bin/env bash
# Builds the Consul agent used by the demo and the integration tests from its Go module
# (tools/consul: Consul v1.16.2, MPL-2.0, as a tool dependency) into .deps/bin/consul.
# Reuses .deps/bin/consul, or a copy cached per user, when it is already the right version.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
want=v1.16.2
dest="$root/.deps/bin/consul"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/haproxy-connect"
cached="$cache_dir/consul-$want-$(sha256sum "$root/tools/consul/go.sum" | cut -c1-12)"

is_wanted() { [ -x "$1" ] && "$1" version 2>/dev/null | head -n1 | grep -q "Consul $want"; }

save_to_cache() { mkdir -p "$cache_dir" && cp "$dest" "$cached.tmp" && mv "$cached.tmp" "$cached"; }

if is_wanted "$dest"; then
  is_wanted "$cached" || save_to_cache
  exit 0
fi
mkdir -p "$(dirname "$dest")"
if is_wanted "$cached"; then
  cp "$cached" "$dest.tmp" && mv "$dest.tmp" "$dest"
  echo "consul $want: reused $cached"
  exit 0
fi
command -v go >/dev/null || { echo "build-consul: the Go toolchain (go) is required to build Consul $want" >&2; exit 1; }
echo "consul $want: building from its Go module (the first build downloads a few hundred modules)..."
cd "$root/tools/consul"
# go.sum pins every module's hash; the checksum database is not reachable from our machines.
export GOSUMDB=off GOFLAGS=-mod=readonly
msgpack=$(go list -m -f '{{.Version}}' github.com/hashicorp/go-msgpack)
[ "$msgpack" = v0.5.5 ] || { echo "build-consul: go-msgpack resolved to $msgpack, expected v0.5.5 (check the exclude block)" >&2; exit 1; }
go build -trimpath -ldflags='-s -w' -o "$dest.tmp" github.com/hashicorp/consul
mv "$dest.tmp" "$dest"
is_wanted "$dest" || { echo "build-consul: built binary does not report Consul $want" >&2; exit 1; }
save_to_cache
echo "consul $want: built $dest"
