#!/usr/bin/env bash
# ds-train's own tests, run by CTest (tests/ds_train.cmake):
#   ds_train_test.sh learns DS_TRAIN WORKDIR   a short run on the addition task with a tiny GPT must
#       lower the loss (in the CSV, the mean of the last 10 step losses below the mean of the first
#       10), reach a held-out loss below chance, and print `final train_loss=X eval_loss=Y ...` as
#       its last line.
#   ds_train_test.sh dsrun DS_TRAIN WORKDIR DSRUN   the same run as 2 data-parallel processes under
#       `dsrun -n 2`: the same checks, on rank 0's lines, and exactly one final line (rank 0's).
#   ds_train_test.sh errors DS_TRAIN WORKDIR   a missing data file, a missing config file, a
#       misspelt config key, an unknown --device and a GPU that does not exist each exit non-zero
#       with the dspp::Error message.
set -euo pipefail
mode="$1"
ds_train="$2"
work="$3"
mkdir -p "$work"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# learns [LAUNCHER...]: ds-train, started by the launcher words when given.
learns() {
  local csv="$work/learns.csv" out="$work/learns.out" err="$work/learns.err"
  "$@" "$ds_train" --steps 60 --n-layer 1 --n-head 2 --n-embd 32 --context 32 --eval-batches 4 \
    --seed 7 --csv "$csv" >"$out" 2>"$err" || { cat "$out" "$err"; fail "ds-train exited non-zero"; }
  cat "$out"
  if [ $# -gt 0 ]; then
    # Under dsrun every line carries its rank; only rank 0 reports.
    local finals
    finals=$(grep -c "final train_loss=" "$out" || true)
    [ "$finals" -eq 1 ] || fail "expected one final line (rank 0's), got $finals"
    grep -q "^\[rank 0\] final train_loss=" "$out" || fail "the final line is not rank 0's"
    sed -i 's/^\[rank [0-9]*\] //' "$out"
  fi

  # Column 2 is the step's loss; 60 data rows, one per step.
  local rows
  rows=$(awk -F, 'NR > 1' "$csv" | wc -l)
  [ "$rows" -eq 60 ] || fail "expected 60 rows in $csv, got $rows"
  awk -F, 'NR == 1 { if ($1 != "step" || $2 != "loss") { print "bad header: " $0; exit 1 } next }
           { loss[NR - 1] = $2; n = NR - 1 }
           END {
             for (i = 1; i <= 10; i++) { first += loss[i]; last += loss[n - 10 + i] }
             first /= 10; last /= 10
             printf "mean loss: first 10 steps %.4f, last 10 steps %.4f\n", first, last
             if (!(last < first)) { print "the loss did not go down"; exit 1 }
           }' "$csv" || fail "loss curve in $csv"

  local final
  final=$(tail -n 1 "$out")
  [[ "$final" =~ ^final\ train_loss=[0-9]+\.[0-9]+\ eval_loss=([0-9]+\.[0-9]+)(\ [a-z_]+=[^ ]+)*$ ]] ||
    fail "last line is not 'final train_loss=X eval_loss=Y [key=value ...]': '$final'"
  local eval_loss="${BASH_REMATCH[1]}" chance
  chance=$(sed -n 's/.* chance_loss=\([0-9.]*\).*/\1/p' <<<"$final")
  [ -n "$chance" ] || fail "no chance_loss in '$final'"
  awk -v e="$eval_loss" -v c="$chance" 'BEGIN { exit !(e < c) }' ||
    fail "held-out loss $eval_loss is not below chance $chance"
  echo "ok: held-out loss $eval_loss < chance $chance"
}

# Runs ds-train with the given arguments; it must fail and say `pattern` on stderr.
expect_error() {
  local pattern="$1"
  shift
  local rc=0
  "$ds_train" "$@" >"$work/errors.out" 2>"$work/errors.err" || rc=$?
  [ "$rc" -ne 0 ] || fail "ds-train $* exited 0"
  grep -q "ds-train: error: .*$pattern" "$work/errors.err" ||
    { cat "$work/errors.err"; fail "ds-train $*: no error naming '$pattern'"; }
  echo "ok (exit $rc): $(head -n 1 "$work/errors.err")"
}

errors() {
  expect_error "$work/no-such.bin" --steps 1 --data "$work/no-such.bin"
  expect_error "$work/no-such.json" --steps 1 --config "$work/no-such.json"
  expect_error "gradient_clipping" --steps 1 --set gradient_cliping=1.0
  expect_error "'tpu' is not one of auto, cpu, cuda" --steps 1 --device tpu
  # More GPUs asked for than any machine here has (the plugin missing or seeing none says so too).
  expect_error "use_device(\"cuda:99\")" --steps 1 --device cuda:99
}

case "$mode" in
  learns) learns ;;
  dsrun) learns "$4" -n 2 --master_port "$((20000 + RANDOM % 20000))" ;;
  errors) errors ;;
  *) fail "unknown mode $mode" ;;
esac
