#!/usr/bin/env bash
# Checks the npm package as users get it:
#   1. `npm pack` of the built tree: the tarball holds package.json, README.md, LICENSE and
#      dist/ only — dist/cli.js (src/ bundled by `npm run build`), every .js.map next to its .js — and
#      nothing else (no src/, test/, bench/, devtools/, demo/, .ts files, fakes); else it fails and
#      prints what is extra;
#   2. `npm install --prefix <empty dir> <tarball>` (production dependencies from the registry);
#   3. `<prefix>/node_modules/.bin/haproxy-connect -version` prints the package's version;
#   4. devtools/check-package.ts runs that installed bin against a real Consul dev agent and real
#      HAProxy: `sidecar ready`, one mTLS request to the app, exit 0 on SIGTERM, nothing left.
# Needs dist/ built from the current src/ (`npm run build`; `make test` builds it in setup).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() {
  echo "check-package: FAIL: $*" >&2
  exit 1
}

[ -f dist/cli.js ] || fail "dist/cli.js not found: run npm run build first"
stale=$(find src -name '*.ts' -newer dist/cli.js -print | head -n 5)
[ -z "$stale" ] || fail "dist/ is older than src/ (e.g. ${stale//$'\n'/, }): run npm run build first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/pack" "$tmp/prefix"

# 1. The tarball.
npm pack --silent --pack-destination "$tmp/pack" >/dev/null
tarball=$(ls "$tmp"/pack/*.tgz)
tar -tzf "$tarball" | sed 's#^package/##' | sort >"$tmp/files"
extra=()
while IFS= read -r f; do
  case $f in
  package.json | README.md | LICENSE | LICENSE.md | LICENSE.txt) ;;
  dist/*.js)
    [ -f "src/${f#dist/}" ] || [ -f "src/$(sed 's#^dist/##; s#[.]js$#.ts#' <<<"$f")" ] || extra+=("$f (no src/ file compiles to it)")
    ;;
  dist/*.js.map)
    grep -qxF "${f%.map}" "$tmp/files" || extra+=("$f (no .js next to it)")
    ;;
  *) extra+=("$f") ;;
  esac
done <"$tmp/files"
if [ "${#extra[@]}" -gt 0 ]; then
  printf '  %s\n' "${extra[@]}" >&2
  fail "the tarball holds ${#extra[@]} file(s) it should not (fix \"files\" in package.json or rebuild dist/)"
fi
for required in package.json README.md dist/cli.js; do
  grep -qxF "$required" "$tmp/files" || fail "the tarball lacks $required"
done
head -n1 dist/cli.js | grep -qE '^#!/usr/bin/env (-S )?node( |$)' || fail "dist/cli.js does not start with #!/usr/bin/env [-S] node"
grep -qE '^LICENSE' "$tmp/files" || echo "check-package: warning: no LICENSE file in the tarball (package.json says $(node -p 'require("./package.json").license'))"
count=$(wc -l <"$tmp/files")
size=$(stat -c %s "$tarball")
unpacked=$(tar -xzOf "$tarball" | wc -c)
echo "check-package: $(basename "$tarball"): $count files, $((size / 1024)) KiB packed, $((unpacked / 1024)) KiB unpacked; only package.json, README and dist/"

# 2. Install it as a user would, into an empty prefix (no dev dependencies, no repo on any path).
npm install --prefix "$tmp/prefix" --omit=dev --no-audit --no-fund --loglevel=error "$tarball" >/dev/null
bin="$tmp/prefix/node_modules/.bin/haproxy-connect"
[ -x "$bin" ] || fail "npm install did not create an executable $bin"
deps=$(ls "$tmp/prefix/node_modules" | grep -v '^[.]' | wc -l)
echo "check-package: installed into an empty prefix: $deps top-level node_modules entries, $(du -sk "$tmp/prefix/node_modules" | cut -f1) KiB"

# 3. The bin runs.
want="haproxy-connect $(node -p 'require("./package.json").version')"
got=$(cd "$tmp" && env -i PATH="$PATH" "$bin" -version) || fail "$bin -version exited with $?"
[ "$got" = "$want" ] || fail "$bin -version printed '$got', expected '$want'"
echo "check-package: $got"
# The bundle leaves re2js out (loaded when a pattern is first compiled): it resolves from the installed bin.
cli="$tmp/prefix/node_modules/haproxy-connect/dist/cli.js"
(cd "$tmp" && env -i PATH="$PATH" node --input-type=module -e "import { createRequire } from 'node:module'; createRequire('$cli')('re2js').RE2JS.compile('a+')") || fail "re2js does not load from $cli"

# 4. A sidecar from the installed copy, against a real Consul dev agent and HAProxy.
node --import tsx devtools/check-package.ts "$bin"
echo "check-package: OK"
