#!/usr/bin/env bash
# Install + find_package test: install the build into a scratch prefix, build the out-of-tree
# plugin example and the host-app example against it, load the plugin by name with the installed
# tools and the host app, then move the prefix and check that it still works (relocatable).
#
# usage: install_test.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail

build=$1
src=$2
work=$3

step() { echo "== $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# Runs a command quietly; on failure shows its output.
quiet() {
  local log="$work/last.log"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "command failed: $*"
  fi
}

rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
unset DSPP_PLUGIN_PATH

step "cmake --install into $prefix"
quiet cmake --install "$build" --prefix "$prefix"
[ -x "$prefix/bin/ds-plugins" ] || fail "no bin/ds-plugins in the install"
libdspp=$(find "$prefix" -name 'libdspp.so' | head -n 1)
[ -n "$libdspp" ] || fail "no libdspp.so in the install"
libdir=$(dirname "$libdspp")
[ -f "$libdir/cmake/dspp/dsppConfig.cmake" ] || fail "no dsppConfig.cmake in $libdir/cmake/dspp"
[ -f "$prefix/include/dspp/abi.h" ] || fail "no SDK headers in the install"

step "build examples/plugin-example against the install"
quiet cmake -S "$src/examples/plugin-example" -B "$work/plugin-build" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release
quiet cmake --build "$work/plugin-build" -j2
plugin_dir="$work/plugin-build/plugins"
plugin=$(find "$plugin_dir" -name '*.so' | head -n 1)
[ -n "$plugin" ] || fail "the example plugin was not built into $plugin_dir"
# The plugin links the SDK only, never libdspp, and exports one symbol.
if readelf -d "$plugin" | grep -q 'libdspp'; then fail "the example plugin links libdspp"; fi
exported=$(nm -D --defined-only "$plugin" | awk '$2 ~ /[TDRB]/ {print $3}')
[ "$exported" = "dspp_plugin_entry_v1" ] || fail "the plugin exports: $exported"

step "build examples/host-app against the install"
quiet cmake -S "$src/examples/host-app" -B "$work/host-build" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release
quiet cmake --build "$work/host-build" -j2

step "ds-plugins list --path finds the example plugin"
out=$("$prefix/bin/ds-plugins" list --path "$plugin_dir")
echo "$out" | grep -E '^scheduler +example_step_decay +1\.0\.0 +abi 1\.[0-9]+ +/' ||
  fail "example_step_decay not listed:
$out"

step "ds-plugins check on the example plugin"
"$prefix/bin/ds-plugins" check "$plugin" || fail "ds-plugins check failed"

step "ctest of the example (its own ds-plugins check test)"
quiet ctest --test-dir "$work/plugin-build" --output-on-failure

step "host app loads the plugin by name from DSPP_PLUGIN_PATH"
out=$(DSPP_PLUGIN_PATH="$plugin_dir" "$work/host-build/host-app" Example_Step_Decay)
echo "$out"
echo "$out" | grep -q '^scheduler example_step_decay 1.0.0$' || fail "host app did not list it"
echo "$out" | grep -q '^lr(step=9) = 0.1$' || fail "wrong lr at step 9"
echo "$out" | grep -q '^lr(step=10) = 0.05$' || fail "wrong lr at step 10"
echo "$out" | grep -q '^lr(step=25) = 0.025$' || fail "wrong lr at step 25"
# An unknown name fails with the list of what is there.
if err=$(DSPP_PLUGIN_PATH="$plugin_dir" "$work/host-build/host-app" step_decayy 2>&1); then
  fail "an unknown scheduler name did not fail"
fi
echo "$err" | grep -q "no scheduler plugin named 'step_decayy'; available: .*example_step_decay" ||
  fail "unexpected error for an unknown name: $err"

step "cmake --install of the plugin puts it into dspp's plugin folder"
quiet cmake --install "$work/plugin-build"
[ -f "$libdir/dspp/plugins/$(basename "$plugin")" ] || fail "the plugin was not installed into $libdir/dspp/plugins"

step "move the prefix: tools still find libdspp and the built-in plugins"
mv "$prefix" "$work/moved"
out=$("$work/moved/bin/ds-plugins" list --verbose)
echo "$out" | grep -E "^  built-in +$work/moved/" || fail "built-in folder not next to the moved libdspp:
$out"
echo "$out" | grep -E "^scheduler +example_step_decay .* $work/moved/.*/dspp/plugins/" ||
  fail "the installed example plugin is not found as a built-in after the move:
$out"
if echo "$out" | grep -q 'testconst'; then fail "test plugins were installed"; fi
"$work/moved/bin/ds-plugins" check "$work/moved/${libdir#"$prefix"/}/dspp/plugins/$(basename "$plugin")" >/dev/null ||
  fail "ds-plugins check failed after the move"

echo "install test passed"
