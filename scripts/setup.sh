#!/usr/bin/env bash
# Installs what the build needs (Debian packages) and builds dspp into build/.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again (only missing packages are
# installed, and the build is incremental).
set -euo pipefail

DSPP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DSPP_BUILD="${DSPP_BUILD:-$DSPP_ROOT/build}"
DSPP_JOBS="${DSPP_JOBS:-$(nproc)}"

# The Debian packages dspp builds with. Nothing is downloaded at build time.
DSPP_DEBS=(cmake make g++ pkg-config libboost-dev libboost-program-options-dev rapidjson-dev catch2
  libopenblas-dev libgloo-dev libprotobuf-dev protobuf-compiler)

# Only the tests need these (scripts/test.sh sets DSPP_INSTALL_TEST_DEBS=1): sshd for dsrun's
# ssh-to-localhost test.
DSPP_TEST_DEBS=(openssh-server openssh-client)

dspp_install_deps() {
  local wanted=("${DSPP_DEBS[@]}") missing=()
  [ -n "${DSPP_INSTALL_TEST_DEBS:-}" ] && wanted+=("${DSPP_TEST_DEBS[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "[setup] installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

dspp_build() {
  if [ ! -f "$DSPP_BUILD/CMakeCache.txt" ]; then
    cmake -S "$DSPP_ROOT" -B "$DSPP_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${DSPP_CMAKE_ARGS:-}
  fi
  # DSPP_TARGET: what to build (the main job builds `runtime`: no tests); default everything.
  cmake --build "$DSPP_BUILD" -j "$DSPP_JOBS" ${DSPP_TARGET:+--target "$DSPP_TARGET"}
}

dspp_install_deps
dspp_build
