#!/usr/bin/env bash
# Builds the Consul agent used by the demo and the integration tests from its Go module
# (tools/consul: Consul v1.16.2, MPL-2.0, as a tool dependency) into .deps/bin/consul.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/go-tool.sh
source "$root/scripts/lib/go-tool.sh"

# Consul's go.mod excludes go-msgpack v1.1.5/v1.1.6, and a dependency's excludes are ignored: ours
# copies them. Check the result before a long build.
msgpack=$(cd "$root/tools/consul" && GOSUMDB=off GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' github.com/hashicorp/go-msgpack 2>/dev/null || true)
if [ -n "$msgpack" ] && [ "$msgpack" != v0.5.5 ]; then
  echo "build-consul: go-msgpack resolved to $msgpack, expected v0.5.5 (check the exclude block)" >&2
  exit 1
fi
install_go_tool consul v1.16.2 github.com/hashicorp/consul '^Consul v1\.16\.2$' version
