#!/usr/bin/env bash
# Set up, build, and run every test (CTest). GPU tests skip themselves without a GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ctest --test-dir "$DSPP_BUILD" --output-on-failure -j "$DSPP_JOBS" "$@"
