#!/usr/bin/env bash
# The main job: set up, build, then train a small GPT with ds-train from the example DeepSpeed
# config (examples/configs/ds-train.json: AdamW, warmup + cosine, fp32, ZeRO 0) on the embedded
# addition task, and report the final train and held-out losses. About 1.5 minutes of training on
# 2 CPU cores. Extra arguments go to ds-train (e.g. --steps 300, --seed 2; ds-train --help).
set -euo pipefail
export DSPP_TARGET=runtime  # the main job needs no tests
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# OpenMP threads that spin while waiting take the core their partner needs on a shared machine
# (measured: 3x slower steps with another build running); passive waiting costs little when idle.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
echo "== ds-plugins list"
"$DSPP_BUILD/bin/ds-plugins" list
CONFIG="$DSPP_ROOT/examples/configs/ds-train.json"
echo "== ds-train --config $CONFIG --csv $DSPP_BUILD/ds-train.csv $*"
"$DSPP_BUILD/bin/ds-train" --config "$CONFIG" --csv "$DSPP_BUILD/ds-train.csv" "$@"
