#!/usr/bin/env bash
# Run THERE (the GPU machine), from the repository root, on what scripts/gpu/prepare.sh put in
# .gpu/ (see docs/gpu.md):  bash .gpu/src/scripts/gpu/remote.sh
#
# Unpacks the carried Debian packages into /tmp/deps (never into /), configures the snapshot in
# .gpu/src with CUDA on, builds with every core, runs the whole CTest suite (GPU tests included),
# then compute-sanitizer memcheck over the GPU test binaries, and prints a summary. Logs go to $OUT.
#
# DSPP_GPU_STEPS      which steps, default "build test memcheck"; "train" adds the GPT-2 124M
#                     runs of ds-train (bf16, on the embedded task and on a token file); "multi"
#                     the several-GPU runs of scripts/gpu/multi_gpu.sh (needs 2 GPUs)
# DSPP_GPU_CTEST      extra ctest arguments (e.g. "-R gpu")
# DSPP_GPU_TRAIN_RUNS which "train" runs, default "embedded tokens" (also: embedded-z3, the
#                     embedded task at ZeRO stage 3); DSPP_GPU_TRAIN_STEPS their steps (40)
# DSPP_GPU_BUILD      build folder, default /tmp/dspp-build (kept while the machine stays warm)
set -uo pipefail

ROOT="$(pwd)"
SRC="$ROOT/.gpu/src"
DEPS=/tmp/deps
B="${DSPP_GPU_BUILD:-/tmp/dspp-build}"
OUT="${OUT:-/tmp/dspp-gpu-out}"
STEPS="${DSPP_GPU_STEPS:-build test memcheck}"
CTEST_EXTRA="${DSPP_GPU_CTEST:-}"
TRAIN_RUNS="${DSPP_GPU_TRAIN_RUNS:-embedded tokens}"
TRAIN_STEPS="${DSPP_GPU_TRAIN_STEPS:-40}"
JOBS="$(nproc)"
# dsrun forwards every DSPP_* variable to the ranks (and its tests compare the exact command
# line): keep this script's own settings out of the tests' environment.
unset DSPP_GPU_STEPS DSPP_GPU_CTEST DSPP_GPU_BUILD DSPP_GPU_TRAIN_RUNS DSPP_GPU_TRAIN_STEPS
mkdir -p "$OUT" "$DEPS"
[ -d "$SRC" ] || { echo "remote.sh: no $SRC (run scripts/gpu/prepare.sh here and carry .gpu)"; exit 2; }

# NVLink multicast can take the host's GPUs out of service: never let NCCL use it.
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"

for f in "$ROOT"/.gpu/debs/*.deb; do dpkg -x "$f" "$DEPS"; done
# boost_program_options-config.cmake includes ../BoostDetectToolset-1.83.0.cmake beside it: the
# machine's own copy (same Boost version) serves.
for t in /usr/lib/x86_64-linux-gnu/cmake/BoostDetectToolset-*.cmake; do
  [ -f "$t" ] && ln -sf "$t" "$DEPS/usr/lib/x86_64-linux-gnu/cmake/"
done
export LD_LIBRARY_PATH="$DEPS/usr/lib:$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

summary="$OUT/summary.txt"
{
  echo "snapshot: $(cat "$SRC/.gpu-commit" 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "nvcc: $(nvcc --version | tail -1)"
  echo "cmake: $(cmake --version | head -1)"
  echo "g++: $(g++ --version | head -1)"
} | tee "$summary"

rc_build=skipped rc_test=skipped rc_memcheck=skipped
if [[ " $STEPS " == *" build "* ]]; then
  t0=$SECONDS
  # Debian's RapidJSONConfig.cmake hard-codes /usr/include and GlooTargets.cmake /usr/lib: name
  # the unpacked headers, and let the gloo plugin find Gloo by path instead of its config.
  cmake -S "$SRC" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSPP_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$DEPS/usr" -DRapidJSON_INCLUDE_DIRS="$DEPS/usr/include" \
    -DCMAKE_DISABLE_FIND_PACKAGE_Gloo=ON >"$OUT/configure.log" 2>&1
  rc_build=$?
  if [ $rc_build -eq 0 ]; then
    cmake --build "$B" -j "$JOBS" >"$OUT/build.log" 2>&1
    rc_build=$?
  fi
  [ $rc_build -ne 0 ] && { tail -n 60 "$OUT/configure.log"; tail -n 80 "$OUT/build.log" 2>/dev/null; }
  echo "build: rc=$rc_build in $((SECONDS - t0)) s" | tee -a "$summary"
fi

if [[ " $STEPS " == *" test "* && "$rc_build" != [1-9]* ]]; then
  t0=$SECONDS
  # GPU tests hold the RESOURCE_LOCK "gpu", so -j never runs two of them at once.
  ctest --test-dir "$B" -j "$JOBS" --timeout 600 --output-on-failure $CTEST_EXTRA \
    >"$OUT/ctest.log" 2>&1
  rc_test=$?
  cp "$B/Testing/Temporary/LastTest.log" "$OUT/LastTest.log" 2>/dev/null
  grep -E "tests passed|tests failed|Total Test time" "$OUT/ctest.log" | tee -a "$summary"
  grep -E "^\s*[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess|Not Run|Exception)" "$OUT/ctest.log" |
    head -40 | tee -a "$summary"
  echo "GPU tests (skipped ones print 'Skipped'):" | tee -a "$summary"
  grep -E "Test +#[0-9]+: (test_gpu|gpu_)" "$OUT/ctest.log" | sed 's/^ *//' | head -60 | tee -a "$summary"
  echo "test: rc=$rc_test in $((SECONDS - t0)) s" | tee -a "$summary"
fi

if [[ " $STEPS " == *" memcheck "* && "$rc_build" != [1-9]* ]]; then
  t0=$SECONDS
  rc_memcheck=0
  : >"$OUT/memcheck.log"
  for exe in "$B"/bin/test_gpu_*; do
    [ -x "$exe" ] || continue
    # Child processes (the NCCL ranks) are checked too; any memory error fails the step. API
    # errors are not reported: the OOM tests provoke cudaMalloc failures on purpose, and NCCL
    # 2.28 probes kernels it has no sm_90 image for (cudaFuncGetAttributes -> error 209). Our
    # own CUDA calls are all checked, so a failing one fails its test anyway.
    echo "=== $(basename "$exe")" >>"$OUT/memcheck.log"
    # test_gpu_train: the layer cases (every layer kernel through the layers); its ds-train runs
    # would take minutes under the sanitizer and call the same kernels.
    filter=()
    [ "$(basename "$exe")" = test_gpu_train ] && filter=("GPT gradients*")
    compute-sanitizer --tool memcheck --report-api-errors no --target-processes all \
      --error-exitcode 99 "$exe" "${filter[@]}" >>"$OUT/memcheck.log" 2>&1
    rc=$?
    echo "memcheck $(basename "$exe"): rc=$rc" | tee -a "$summary"
    [ $rc -ne 0 ] && rc_memcheck=$rc
  done
  grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | sort | uniq -c | tee -a "$summary"
  echo "memcheck: rc=$rc_memcheck in $((SECONDS - t0)) s" | tee -a "$summary"
fi

if [[ " $STEPS " == *" train "* && "$rc_build" != [1-9]* ]]; then
  # GPT-2 124M shapes (12 layers, 12 heads, 768 wide, vocab 50304, T 1024), bf16, ZeRO 0, AdamW, micro batch
  # 16 (16k tokens per step). The token file: the bytes of this repository's sources as tokens of
  # GPT-2's padded vocabulary 50304 (real text, so the loss falls far below ln 50304 = 10.8), in
  # llm.c's format (256 int32 header words: magic 20240520, version 1, count; uint16 tokens),
  # kept on that machine (not in $OUT, which is copied back after every call).
  python3 - "$SRC" /tmp/dspp-tokens.bin <<'PY'
import os, struct, sys
src, out = sys.argv[1], sys.argv[2]
data = bytearray()
for root, _, files in sorted(os.walk(src)):
    for f in sorted(files):
        if f.endswith((".cpp", ".h", ".cu", ".cuh", ".md", ".cmake", ".txt", ".sh", ".py")):
            with open(os.path.join(root, f), "rb") as fh:
                data += fh.read()
header = struct.pack("<256i", *([20240520, 1, len(data)] + [0] * 253))
with open(out, "wb") as fh:
    fh.write(header)
    fh.write(struct.pack("<%dH" % len(data), *data))
print("tokens.bin: %d tokens" % len(data))
PY
  GPT2="--device cuda --n-layer 12 --n-head 12 --n-embd 768 --context 1024 --set bf16.enabled=true"
  GPT2="$GPT2 --set train_micro_batch_size_per_gpu=16 --set optimizer.params.lr=6e-4 --print-every 10"
  # (--eval-batches 1 on the embedded task: its accuracy reads the 50304-wide logits on the host.)
  for run in "embedded:--steps $TRAIN_STEPS --vocab-size 50304 --eval-batches 1" \
             "tokens:--steps $TRAIN_STEPS --data /tmp/dspp-tokens.bin --vocab-size 50304" \
             "embedded-z3:--steps $TRAIN_STEPS --vocab-size 50304 --eval-batches 1 --set zero_optimization.stage=3"; do
    name="${run%%:*}"
    [[ " $TRAIN_RUNS " == *" $name "* ]] || continue
    t0=$SECONDS
    # shellcheck disable=SC2086
    "$B/bin/ds-train" $GPT2 ${run#*:} >"$OUT/train-$name.log" 2>&1
    rc=$?
    echo "train $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$summary"
    grep -E "ds-train: (device|model|data)|^final|tokens/s|error" "$OUT/train-$name.log" | tail -8 |
      tee -a "$summary"
  done
fi

if [[ " $STEPS " == *" multi "* && "$rc_build" != [1-9]* ]]; then
  t0=$SECONDS
  bash "$SRC/scripts/gpu/multi_gpu.sh" "$B" 2>&1 | tee -a "$summary"
  echo "multi: in $((SECONDS - t0)) s" | tee -a "$summary"
fi

echo "=== summary ==="
cat "$summary"
[ "$rc_build" = 0 ] || [ "$rc_build" = skipped ] || exit 1
[ "$rc_test" = 0 ] || [ "$rc_test" = skipped ] || exit 1
[ "$rc_memcheck" = 0 ] || [ "$rc_memcheck" = skipped ] || exit 1
exit 0
