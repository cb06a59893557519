# shellcheck shell=bash
# Installs Debian packages for commands that are missing. Source this file, then:
#   ensure_commands <command>:<package> ...
ensure_commands() {
  local wanted=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || wanted+=("${pair#*:}")
  done
  [ ${#wanted[@]} -gt 0 ] || return 0
  echo "installing ${wanted[*]} from Debian"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${wanted[@]}" >/dev/null
}

# The machine's Debian mirror: the URIs of its bookworm entry (deb822 or one-line format), else
# deb.debian.org.
debian_mirror() {
  local mirror="" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '
      /^[[:space:]]*$/ { if (uri != "" && suites ~ /(^| )bookworm( |$)/) { print uri; exit } uri = ""; suites = ""; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { $1 = ""; suites = $0 " " }
      END { if (uri != "" && suites ~ /(^| )bookworm( |$)/) print uri }' "$f" | head -n1)
    [ -z "$mirror" ] || break
  done
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list | head -n1)
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

# Downloads Debian packages of <suite> with a private apt configuration under <dest>/apt (the
# machine's apt sources, lists and status are not touched; no root needed) and unpacks them with
# `dpkg -x` under <dest>/root, which is emptied first. Nothing is installed or started.
#   private_apt_unpack <suite> <dest> <package> ...
private_apt_unpack() {
  local suite=$1 dest=$2
  shift 2
  local mirror apt_dir="$dest/apt" deb
  mirror=$(debian_mirror)
  rm -rf "${dest:?}/root" "$apt_dir/debs"
  mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$dest/root"
  cat >"$apt_dir/sources.list.d/$suite.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  : >"$apt_dir/status"
  local apt_opts=(
    -o "Dir::Etc::sourcelist=/dev/null"
    -o "Dir::Etc::sourceparts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Cache::archives=$apt_dir/cache/archives"
    -o "APT::Architecture=amd64"
    -o "APT::Sandbox::User=root"
  )
  echo "downloading $* from Debian $suite ($mirror)"
  apt-get "${apt_opts[@]}" -qq update
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "$@")
  for deb in "$apt_dir/debs"/*.deb; do
    dpkg -x "$deb" "$dest/root"
  done
}
