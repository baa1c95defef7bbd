#!/usr/bin/env bash
# Run HERE (the development machine) before sending work to the GPU machine: fills .gpu/ (ignored
# by git) with what one `run` call carries there (see docs/gpu.md):
#   .gpu/debs/  the Debian packages the GPU machine lacks (RapidJSON, Gloo and Gloo's libraries,
#               protobuf and protoc for the TensorBoard monitor, Boost.Program_options 1.83),
#               fetched once with `apt-get download` and kept
#   .gpu/src/   a clean snapshot of the source: `git archive HEAD`, then the files named in
#               $DSPP_GPU_EXTRA (paths relative to the repo root, whitespace-separated) copied
#               over it. Other people's half-written files in the checkout never reach the build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
G="$ROOT/.gpu"
DEBS=(rapidjson-dev libgloo-dev libgloo0 libhiredis0.14 libibverbs1 libnl-3-200 libnl-route-3-200
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32)
# The GPU machine has Boost 1.83's headers but no compiled Boost library: Boost.Program_options
# 1.83 comes from Debian trixie (bookworm has 1.74), read through a private apt list in /tmp.
TRIXIE_DEBS=(libboost-program-options1.83.0 libboost-program-options1.83-dev)

mkdir -p "$G/debs"
missing=()
for p in "${DEBS[@]}"; do
  ls "$G/debs/${p}_"*.deb >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[prepare] apt-get download ${missing[*]}"
  (cd "$G/debs" && apt-get download "${missing[@]}")
fi
missing=()
for p in "${TRIXIE_DEBS[@]}"; do
  ls "$G/debs/${p}_"*.deb >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  A=/tmp/dspp-apt-trixie
  mkdir -p "$A/lists/partial"
  echo "deb http://deb.debian.org/debian trixie main" >"$A/sources.list"
  o=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$A/lists")
  [ -f "$A/lists/deb.debian.org_debian_dists_trixie_InRelease" ] || apt-get "${o[@]}" update -qq
  echo "[prepare] apt-get download (trixie) ${missing[*]}"
  (cd "$G/debs" && apt-get "${o[@]}" download "${missing[@]}")
fi

rm -rf "$G/src"
mkdir -p "$G/src"
git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$G/src"
for f in ${DSPP_GPU_EXTRA:-}; do
  if [ -e "$ROOT/$f" ]; then
    mkdir -p "$G/src/$(dirname "$f")"
    cp -a "$ROOT/$f" "$G/src/$f"
  else
    # A path committed at HEAD but deleted in the checkout: delete it from the snapshot too.
    rm -rf "${G:?}/src/$f"
  fi
done
echo "[prepare] snapshot of $(git -C "$ROOT" rev-parse --short HEAD)${DSPP_GPU_EXTRA:+ + extra files} in .gpu/src ($(du -sh "$G" | cut -f1) in .gpu)"
echo "$(git -C "$ROOT" rev-parse HEAD)${DSPP_GPU_EXTRA:+ + ${DSPP_GPU_EXTRA}}" >"$G/src/.gpu-commit"
