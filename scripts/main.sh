#!/usr/bin/env bash
# The main job: set up, build, then show what dspp makes of an example DeepSpeed config and which
# plugins it found.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
CONFIG="${1:-$DSPP_ROOT/examples/configs/gpt2-zero2.json}"
echo "== ds-config explain $CONFIG"
"$DSPP_BUILD/bin/ds-config" explain "$CONFIG"
echo "== ds-config check $CONFIG --world-size 4"
"$DSPP_BUILD/bin/ds-config" check "$CONFIG" --world-size 4
echo "== ds-plugins list"
"$DSPP_BUILD/bin/ds-plugins" list
