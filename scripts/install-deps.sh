#!/usr/bin/env bash
# Installs every build and test dependency of Foxden from Debian's packages. Idempotent: a second
# run changes nothing. Needs root (or sudo) on Debian 12.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config git
  libcpprest-dev libboost-dev rapidjson-dev libssl-dev openssl
  libcgroup-dev libseccomp-dev libcap-dev libarchive-dev cgroup-tools doctest-dev libsqlite3-dev sqlite3 libyaml-cpp-dev libcli11-dev libre2-dev
  libclang-rt-14-dev clang clang-tidy
  haproxy curl jq python3 procps
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# kubectl is the peer the integration tests drive. The machine image ships Google's kubectl with
# every minor under /usr/lib/google-cloud-sdk/bin; Debian's kubernetes-client (v1.20) is too old.
if ! command -v kubectl >/dev/null 2>&1 && ! ls /usr/lib/google-cloud-sdk/bin/kubectl.1.* >/dev/null 2>&1; then
  echo "install-deps: warning: no kubectl found; kubectl integration tests will fail" >&2
fi
