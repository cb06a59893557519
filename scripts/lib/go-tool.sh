# Builds a program from a Go module pinned as a tool dependency in tools/<name> into
# .deps/bin/<name>, reusing that binary, or a copy cached per user, when it already reports the
# wanted version. Source this file, then:
#   install_go_tool <name> <version> <package> <version-pattern> [version-args...]
# <version-pattern> is a grep -E pattern matched against the first line `<binary> <version-args>` prints.
install_go_tool() {
  local name=$1 want=$2 package=$3 pattern=$4
  shift 4
  local version_args=("$@")
  local root dest cache_dir cached
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  dest="$root/.deps/bin/$name"
  cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/haproxy-connect"
  cached="$cache_dir/$name-$want-$(sha256sum "$root/tools/$name/go.sum" | cut -c1-12)"

  is_wanted() { [ -x "$1" ] && "$1" "${version_args[@]}" 2>/dev/null | head -n1 | grep -qE "$pattern"; }
  save_to_cache() { mkdir -p "$cache_dir" && cp "$dest" "$cached.tmp" && mv "$cached.tmp" "$cached"; }

  if is_wanted "$dest"; then
    is_wanted "$cached" || save_to_cache
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  if is_wanted "$cached"; then
    cp "$cached" "$dest.tmp" && mv "$dest.tmp" "$dest"
    echo "$name $want: reused $cached"
    return 0
  fi
  command -v go >/dev/null || { echo "$name: the Go toolchain (go) is required to build $name $want" >&2; return 1; }
  echo "$name $want: building from its Go module (the first build downloads its dependencies)..."
  # go.sum pins every module's hash; the checksum database is not reachable from our machines.
  (cd "$root/tools/$name" && GOSUMDB=off GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' -o "$dest.tmp" "$package")
  mv "$dest.tmp" "$dest"
  is_wanted "$dest" || { echo "$name: the built binary does not report version $want" >&2; return 1; }
  save_to_cache
  echo "$name $want: built $dest"
}
