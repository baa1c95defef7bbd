#!/usr/bin/env bash
# Run THERE, on a machine with 2 or more GPUs, after remote.sh's build (it runs this as its
# "multi" step): the several-GPU runs of the multi-GPU issue, with one process per GPU started by
# dsrun, NCCL, NCCL_NVLS_ENABLE=0.
#  1. Equivalence: ds-train on 2 GPUs against 1 GPU (the same global batch), ZeRO 0, 1, 2 with
#     AdamW in fp32, ZeRO 2 in bf16, ZeRO 2 with optimizer offload, Muon at ZeRO 1 and 2 (with and
#     without offload), and ZeRO 3 likewise (fp32, bf16, offload, built under zero::Init, Muon,
#     Muon + offload): every step's loss.
#  2. Memory: a 24-layer, 1024-wide GPT (355M parameters) at ZeRO 0-3 on 2 GPUs, fp32 AdamW:
#     parameters, gradients and Adam states per GPU as the caching allocator counts them (its
#     categories after setup) and as the stages account them, against the ZeRO paper's formula;
#     and the allocator's peaks per category.
#  3. A rank killed mid-step (SIGKILL): how long the other takes to stop, and what it says.
# Prints a summary; logs in $OUT/multi. To repeat only some runs: MULTI_RUNS, an extended regex
# over the names of section 1 (default: all); MULTI_STAGES, the stages of section 2 (default
# "0 1 2 3"); MULTI_KILL=0 skips section 3.
set -uo pipefail
B="${1:?build folder}"
# Logs stay on that machine (the summary says what matters; failures print their tails).
OUT=/tmp/dspp-multi
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
NG="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
if [ "$NG" -lt 2 ]; then
  echo "multi: $NG GPU(s) here; these runs need 2"
  exit 0
fi
DST="$B/bin/ds-train"
DSRUN="$B/bin/dsrun"
port() { echo $(( 20000 + RANDOM % 20000 )); }
SMALL="--device cuda --n-layer 2 --n-embd 128 --n-head 4 --seed 3 --eval-batches 1"

# "<name> <N> B" in a ds-train line: N.
bytes_of() { sed -n "s/.*$1 \([0-9]*\) B.*/\1/p" <<<"$2"; }

# Column 2 of a ds-train CSV: the step's loss. Prints the largest relative difference.
max_rel() {
  paste -d, <(awk -F, 'NR > 1 { print $2 }' "$1") <(awk -F, 'NR > 1 { print $2 }' "$2") |
    awk -F, '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > m) m = r; n++ }
             END { printf "%d steps, max relative loss difference %.3g\n", n, m }'
}

# Stage 3 with every parameter gathered per use (persistence 0) and prefetch of 2 modules' worth.
Z3="--set zero_optimization.stage=3 --set zero_optimization.reduce_bucket_size=50000"
Z3="$Z3 --set zero_optimization.stage3_param_persistence_threshold=0"
Z3="$Z3 --set zero_optimization.stage3_prefetch_bucket_size=100000"
echo "== 1. 2 GPUs against 1 (global batch 32)"
for run in "z0:--set zero_optimization.stage=0" "z1:--set zero_optimization.stage=1" \
           "z2:--set zero_optimization.stage=2 --set zero_optimization.reduce_bucket_size=50000" \
           "z2-bf16:--set zero_optimization.stage=2 --set bf16.enabled=true" \
           "z2-offload:--set zero_optimization.stage=2 --set zero_optimization.offload_optimizer.device=cpu" \
           "z1-muon:--set zero_optimization.stage=1 --set optimizer.type=Muon" \
           "z2-muon:--set zero_optimization.stage=2 --set optimizer.type=Muon" \
           "z2-muon-offload:--set zero_optimization.stage=2 --set optimizer.type=Muon --set zero_optimization.offload_optimizer.device=cpu" \
           "z3:$Z3" "z3-bf16:$Z3 --set bf16.enabled=true" \
           "z3-offload:$Z3 --set zero_optimization.offload_optimizer.device=cpu" \
           "z3-zero-init:$Z3 --zero-init" \
           "z3-muon:$Z3 --set optimizer.type=Muon" \
           "z3-muon-offload:$Z3 --set optimizer.type=Muon --set zero_optimization.offload_optimizer.device=cpu"; do
  name="${run%%:*}"
  [[ "$name" =~ ${MULTI_RUNS:-.} ]] || continue
  # shellcheck disable=SC2086
  "$DST" $SMALL --steps 20 ${run#*:} --set train_micro_batch_size_per_gpu=32 --csv "$OUT/$name-1.csv" \
    >"$OUT/$name-1.log" 2>&1
  rc1=$?
  # shellcheck disable=SC2086
  "$DSRUN" -n 2 --master_port "$(port)" "$DST" $SMALL --steps 20 ${run#*:} \
    --set train_micro_batch_size_per_gpu=16 --csv "$OUT/$name-2.csv" >"$OUT/$name-2.log" 2>&1
  rc2=$?
  if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]; then
    echo "$name: $(max_rel "$OUT/$name-1.csv" "$OUT/$name-2.csv")"
  else
    echo "$name: FAILED (1 GPU rc=$rc1, 2 GPUs rc=$rc2)"; tail -n 5 "$OUT/$name-2.log"
  fi
done

echo "== 2. model states per GPU, 355M parameters, fp32 AdamW, 2 GPUs"
BIG="--device cuda --steps 2 --n-layer 24 --n-embd 1024 --n-head 16 --context 1024"
BIG="$BIG --vocab-size 50304 --eval-batches 1 --set train_micro_batch_size_per_gpu=4"
for stage in ${MULTI_STAGES:-0 1 2 3}; do
  # (Stage 3: nothing kept gathered, so the parameters are the partition alone.)
  # shellcheck disable=SC2086
  "$DSRUN" -n 2 --master_port "$(port)" "$DST" $BIG --set zero_optimization.stage=$stage \
    --set zero_optimization.reduce_bucket_size=50000000 \
    --set zero_optimization.stage3_param_persistence_threshold=0 >"$OUT/mem-z$stage.log" 2>&1
  rc=$?
  psi="$(sed -n 's/.*vocab=[0-9]*, \([0-9]*\) parameters.*/\1/p' "$OUT/mem-z$stage.log" | head -1)"
  # The stages' accounting, then the caching allocator's categories after setup (bytes as asked).
  line="$(grep -m1 'model states per rank' "$OUT/mem-z$stage.log")"
  cat="$(grep -m1 'GPU memory after setup on rank 0, by category' "$OUT/mem-z$stage.log")"
  p="$(bytes_of parameters "$line")" g="$(bytes_of gradients "$line")"
  s="$(bytes_of "optimizer states" "$line")"
  ap="$(bytes_of parameters "$cat")" ag="$(bytes_of gradients "$cat")"
  as="$(bytes_of "optimizer states" "$cat")"
  peaks="$(grep 'GPU memory on rank' "$OUT/mem-z$stage.log" | sed 's/.*peak allocated \([0-9.]*\) GiB.*/\1/' | tr '\n' ' ')"
  catpeaks="$(grep -m1 'GPU memory on rank' "$OUT/mem-z$stage.log" | sed -n 's/.*peaks by category: \(.*\))$/\1/p')"
  if [ $rc -ne 0 ] || [ -z "$psi" ]; then
    echo "z$stage: FAILED rc=$rc"; tail -n 5 "$OUT/mem-z$stage.log"; continue
  fi
  awk -v st="$stage" -v psi="$psi" -v p="$p" -v g="$g" -v s="$s" -v ap="$ap" -v ag="$ag" \
      -v as="$as" -v peaks="$peaks" 'BEGIN {
    nd = 2; fp = (st >= 3 ? 4 * psi / nd : 4 * psi); fg = (st >= 2 ? 4 * psi / nd : 4 * psi)
    fs = (st >= 1 ? 8 * psi / nd : 8 * psi)
    printf "z%d: psi %d | params: paper %d, engine %d, allocator %s | grads: paper %d, engine %d, allocator %s | Adam states: paper %d, engine %d, allocator %s | rank 0 peak allocated %s GiB\n",
      st, psi, fp, p, ap, fg, g, ag, fs, s, as, peaks }'
  echo "   rank 0 peaks by category: $catpeaks"
done

[ "${MULTI_KILL:-1}" = 0 ] && exit 0
echo "== 3. a rank killed mid-step"
export MASTER_ADDR=127.0.0.1 MASTER_PORT="$(port)" WORLD_SIZE=2 DSPP_TIMEOUT=0.5
# ds-train itself is the background job (no wrapper), so SIGKILL reaches the rank; rank 0 has 240 s
# before a watchdog kills it (rc 137: it hung).
for r in 0 1; do
  # shellcheck disable=SC2086
  RANK=$r LOCAL_RANK=$r "$DST" $SMALL --steps 1000000 --print-every 50 >"$OUT/kill-rank$r.log" 2>&1 &
  eval "pid$r=$!"
done
for _ in $(seq 60); do grep -q "^step 50/" "$OUT/kill-rank0.log" && break; sleep 1; done
kill -9 "$pid1"
t0=$SECONDS
( sleep 240; kill -9 "$pid0" 2>/dev/null ) &
watchdog=$!
wait "$pid0"
rc0=$?
kill "$watchdog" 2>/dev/null
echo "rank 1 killed after $(grep -c '^step' "$OUT/kill-rank0.log") progress lines; rank 0 exited rc=$rc0 $((SECONDS - t0)) s later (DSPP_TIMEOUT=0.5 min; rc 137 after 240 s would be a hang):"
tail -n 3 "$OUT/kill-rank0.log" | sed 's/^/  /'
