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
