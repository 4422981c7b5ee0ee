#!/usr/bin/env bash
# Install the Debian packages this project needs, idempotently: only what is
# missing is installed, and apt-get runs only when something is missing.
# Usage: scripts/deps.sh [--check]   (--check: list what is missing, exit 1 if any)
set -euo pipefail

PKGS=(
  # build
  build-essential pkg-config meson ninja-build clang clang-format clang-tidy cppcheck
  # libraries
  libuv1-dev libhttp-parser-dev libjansson-dev libyaml-dev libcyaml-dev
  libnl-3-dev libnl-route-3-dev libsqlite3-dev libhiredis-dev libraft-dev
  libssl-dev
  # HTTP/2 (h2c) framing and HPACK; nghttp for the h2c tests
  libnghttp2-dev nghttp2-client
  # containers (the worker's oci runtime) and a local registry for its tests
  crun skopeo umoci docker-registry iproute2
  # the oci runtime's sandbox firewall (src/worker/firewall.c runs nft)
  nftables
  # the minimal init sandboxes run under (sandboxInit: /usr/bin/tini-static)
  tini
  # gVisor (ociRuntime runsc): sandboxes under a user-space kernel
  runsc
  # shared state
  redis-server haproxy
  # tests, sanitizers, fuzzing
  libcmocka-dev libclang-rt-14-dev curl
  # a shell in a test image (tests/integration/test_init.sh: an entrypoint script)
  busybox-static
  # the reference protobuf codec the hand-written FaasRequest/FaasReply one is checked against
  protobuf-c-compiler libprotobuf-c-dev
  # benchmarks
  nginx-light wrk
  # plots (scripts/plots.py, make plots)
  python3-matplotlib
  # systemd-analyze for tests/integration/test_install.sh (part of Debian's base system;
  # installing it starts nothing where systemd is not PID 1)
  systemd
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  [ "${1:-}" = "--check" ] || echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "deps: missing: ${missing[*]}"
  exit 1
fi

echo "deps: installing missing packages: ${missing[*]}"
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps: done"
