#!/usr/bin/env bash
# Set up, build, and run every test (CTest). GPU tests skip themselves without a GPU.
set -euo pipefail
DSPP_INSTALL_TEST_DEBS=1  # setup.sh then installs DSPP_TEST_DEBS too
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ctest --test-dir "$DSPP_BUILD" --output-on-failure -j "$DSPP_JOBS" "$@"
