#!/usr/bin/env bash
# Makes sure the Debian packages the build needs are present (`deps.sh fuzz`: also clang, for `make fuzz`).
# As root it installs the missing ones (apt-get update once, then install); otherwise it prints the exact
# command and fails.
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkgs=(build-essential libzmq3-dev libmsgpack-dev libjansson-dev libmicrohttpd-dev unicode-data python3-zmq python3-msgpack)
[ "${1:-}" = fuzz ] && pkgs+=(clang) # `make fuzz`: libFuzzer and the sanitizers come with Debian's clang
for p in "${pkgs[@]}"; do
  have_pkg "$p" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "deps: missing packages. Run:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
