#!/usr/bin/env bash
# The main job: set up, build, then train a small GPT with ds-train as 2 data-parallel processes
# (dsrun -n 2; Gloo on loopback, ZeRO stage 0) from the example DeepSpeed config
# (examples/configs/ds-train.json: AdamW, warmup + cosine, fp32) on the embedded addition task,
# and report the final train and held-out losses. About a minute of training on 2 CPU cores. On a
# machine with GPUs: one process per GPU, training on the GPUs (NCCL). DSPP_NPROCS=1 trains in
# one process. Extra arguments go to ds-train (e.g. --steps 300, --seed 2;
# ds-train --help).
set -euo pipefail
export DSPP_TARGET=runtime  # the main job needs no tests
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# OpenMP threads that spin while waiting take the core their partner needs on a shared machine
# (measured: 3x slower steps with another build running); passive waiting costs little when idle.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# One process per GPU when the machine has GPUs (ds-train then trains on them: --device auto),
# else two CPU processes.
GPUS=0
if command -v nvidia-smi >/dev/null 2>&1; then GPUS="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"; fi
NPROCS="${DSPP_NPROCS:-$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 2)}"
echo "== ds-plugins list"
"$DSPP_BUILD/bin/ds-plugins" list
CONFIG="$DSPP_ROOT/examples/configs/ds-train.json"
echo "== dsrun -n $NPROCS ds-train --config $CONFIG --csv $DSPP_BUILD/ds-train.csv $*"
# A free port for rank 0's store, so a second run on the same machine does not collide.
PORT="${MASTER_PORT:-$(( 20000 + RANDOM % 20000 ))}"
"$DSPP_BUILD/bin/dsrun" -n "$NPROCS" --master_port "$PORT" \
  "$DSPP_BUILD/bin/ds-train" --config "$CONFIG" --csv "$DSPP_BUILD/ds-train.csv" "$@"
