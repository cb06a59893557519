#!/usr/bin/env bash
# Installs the benchmark's load generators: wrk from Debian (closed-loop saturation) and fortio
# built from its Go module (tools/fortio: fortio.org/fortio v1.68.2, Apache-2.0, as a tool
# dependency; open-loop fixed-rate latency) into .deps/bin/fortio, with a copy cached per user.
# fortio v1.68.2 is the newest release whose dependencies the Go module proxy serves here
# (v1.69+ need grol.io/grol, whose module zips the proxy refuses with 403).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/go-tool.sh
source "$root/scripts/lib/go-tool.sh"

# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"
ensure_commands wrk:wrk taskset:util-linux

install_go_tool fortio 1.68.2 fortio.org/fortio '^1\.68\.2$' version
