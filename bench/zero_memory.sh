#!/usr/bin/env bash
# Per-rank model-state bytes at ZeRO stages 0-3 and worlds 1, 2, 4, as the engine reports them
# (ds-train's "model states per rank" line), next to the ZeRO paper's fp32 formula
# (params 4 Psi, grads 4 Psi, Adam states 8 Psi; stage 1 divides the states by Nd, stage 2 the
# grads too, stage 3 the params too). Prints a Markdown table.
#   bash bench/zero_memory.sh [build-dir]
set -euo pipefail
build="${1:-build}"
args=(--steps 1 --n-layer 2 --n-embd 128 --n-head 4 --context 16 --eval-every 0 --eval-batches 1
      --set zero_optimization.stage3_param_persistence_threshold=0)
echo "| stage | Nd | params B (paper) | grads B (paper) | optimizer states B (paper) | buffers B |"
echo "|---|---|---|---|---|---|"
for stage in 0 1 2 3; do
  for world in 1 2 4; do
    out=$(OMP_NUM_THREADS=1 "$build/bin/dsrun" -n "$world" "$build/bin/ds-train" "${args[@]}" \
      --set "train_micro_batch_size_per_gpu=$((16 / world))" --set "zero_optimization.stage=$stage" 2>&1)
    psi=$(grep -o '[0-9]* parameters$' <<<"$out" | head -1 | cut -d' ' -f1)
    line=$(grep 'model states per rank' <<<"$out" | head -1)
    num() { grep -o "$1 [0-9]*" <<<"$line" | awk '{print $NF}'; }
    p=$(num "parameters"); g=$(num "gradients"); s=$(num "optimizer states"); b=$(num "buffers")
    fp=$((4 * psi)); fg=$((4 * psi)); fs=$((8 * psi))
    [ "$stage" -ge 1 ] && fs=$((fs / world))
    [ "$stage" -ge 2 ] && fg=$((fg / world))
    [ "$stage" -ge 3 ] && fp=$((fp / world))
    echo "| $stage | $world | $p ($fp) | $g ($fg) | $s ($fs) | $b |"
  done
done
