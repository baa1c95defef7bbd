#!/usr/bin/env bash
# dsrun's launch tests, run by CTest (tests/dsrun.cmake) as: dsrun_test.sh MODE DSRUN PROBE WORKDIR
#   env       -n 3: each rank sees its RANK/LOCAL_RANK/WORLD_SIZE/MASTER_*, stdout and stderr lines
#             prefixed, OMP_NUM_THREADS set once; flags and a local hostfile; program args untouched
#   lines     many long lines from 3 ranks at once (and one 300 KB line) arrive whole, never mixed;
#             a last line without newline is still printed
#   fail      rank 1 exits 3: dsrun exits 3 within seconds and no rank is left running; ranks
#             that ignore SIGTERM get SIGKILL after the grace period
#   signals   rank 1 dies of SIGKILL: dsrun exits 137; SIGINT/SIGTERM to dsrun, stdin EOF in node
#             mode and SIGKILL of dsrun itself all stop every rank
#   dry_run   the command lines for local, ssh (and DSRUN_SSH), pdsh, openmpi and slurm
#   errors    usage errors exit 2 with a message naming the flag, file or line
#   ssh       two "hosts" (localhost, 127.0.0.1) over real ssh to a private sshd; exit 77 (skip)
#             when sshd is missing or can not start here
set -euo pipefail
mode=$1
dsrun=$2
probe=$3
work=$4
rm -rf "$work"
mkdir -p "$work"
cd "$work"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
skip() {
  echo "SKIP: $*"
  exit 77
}
# expect_in FILE TEXT: the file contains TEXT as a fixed string.
expect_in() {
  grep -qF -- "$2" "$1" || {
    echo "--- $1:" >&2
    cat "$1" >&2
    fail "expected '$2' in $1"
  }
}
now_ms() { date +%s%3N; }
# wait_pidfiles DIR N: until DIR holds N pid files (the ranks have started), at most 10 s.
wait_pidfiles() {
  for _ in $(seq 100); do
    [ "$(ls "$1" | grep -c '\.pid$')" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "only $(ls "$1" | grep -c '\.pid$') of $2 ranks wrote their pid to $1"
}
# ranks_gone DIR: every pid in DIR/*.pid has exited (waits up to 10 s for it).
ranks_gone() {
  local f pid
  for f in "$1"/*.pid; do
    pid=$(cat "$f")
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || continue 2
      sleep 0.1
    done
    fail "rank pid $pid ($f) is still running"
  done
}

env_test() {
  unset OMP_NUM_THREADS DSPP_PROBE_TAG
  "$dsrun" -n 3 "$probe" env >out 2>err || fail "dsrun exited $?"
  [ "$(wc -l <out)" -eq 3 ] || fail "expected 3 lines on stdout, got: $(cat out)"
  local omp=$(($(nproc) / 3))
  [ "$omp" -ge 1 ] || omp=1
  for r in 0 1 2; do
    expect_in out "[rank $r] RANK=$r LOCAL_RANK=$r WORLD_SIZE=3 LOCAL_WORLD_SIZE=3 NODE_RANK=0 CROSS_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 OMP_NUM_THREADS=$omp "
    expect_in err "[rank $r] stderr of rank $r"
  done
  [ "$(grep -c 'dsrun: setting OMP_NUM_THREADS' err)" -eq 1 ] || fail "OMP_NUM_THREADS notice not once: $(cat err)"

  # The user's OMP_NUM_THREADS and master flags win; no notice then.
  OMP_NUM_THREADS=7 "$dsrun" --num_gpus 2 --master_addr 10.1.2.3 --master_port 1234 "$probe" env >out 2>err
  expect_in out "[rank 1] RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 NODE_RANK=0 CROSS_RANK=0 MASTER_ADDR=10.1.2.3 MASTER_PORT=1234 OMP_NUM_THREADS=7 "
  grep -q 'setting OMP_NUM_THREADS' err && fail "OMP notice although OMP_NUM_THREADS was set"

  # A hostfile naming only this machine runs locally, with its slots.
  printf '# just me\nlocalhost slots=2\n' >hostfile
  "$dsrun" --hostfile hostfile "$probe" env >out 2>err
  [ "$(wc -l <out)" -eq 2 ] || fail "expected 2 ranks from the hostfile: $(cat out err)"
  expect_in out "[rank 1] RANK=1 LOCAL_RANK=1 WORLD_SIZE=2"
  # --include picks slots; the ranks are renumbered from 0.
  "$dsrun" -n 4 --include localhost:1,3 "$probe" env >out 2>err
  [ "$(wc -l <out)" -eq 2 ] || fail "expected 2 ranks from --include: $(cat out err)"
  expect_in out "[rank 1] RANK=1 LOCAL_RANK=1 WORLD_SIZE=2"

  # Everything from the program on is the program's, even words that look like dsrun's flags.
  "$dsrun" -n 1 sh -c 'echo "args: $*"' sh --num_procs 5 -n 2 --dry_run >out 2>err
  expect_in out "[rank 0] args: --num_procs 5 -n 2 --dry_run"
  "$dsrun" --num_procs=1 -- "$probe" env >out 2>err
  expect_in out "[rank 0] RANK=0 LOCAL_RANK=0 WORLD_SIZE=1"
  # No -n, no hostfile, no GPU: one rank.
  if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    "$dsrun" "$probe" env >out 2>err
    [ "$(wc -l <out)" -eq 1 ] || fail "expected one rank by default: $(cat out)"
  fi
}

lines_test() {
  "$dsrun" -n 3 "$probe" lines 300 5000 >out 2>err || fail "dsrun exited $?: $(cat err)"
  # Every line is whole: its prefix, its rank's text, 5000 of its letter, "end".
  awk '
    /^\[rank [0-2]\] last line of rank [0-2] without newline$/ { r = substr($2, 1, 1); if ($2 != $7 "]") bad++; last[r]++; next }
    {
      r = substr($2, 1, 1)
      letter = sprintf("%c", 97 + r)
      body = $7
      if ($1 != "[rank" || $2 != r "]" || $3 != "rank" || $4 != r || $5 != "line" || $8 != "end" || NF != 8 ||
          length(body) != 5000 || body !~ ("^" letter "+$")) { bad++; if (bad < 3) print "bad line: " substr($0, 1, 80) > "/dev/stderr"; next }
      count[r]++
    }
    END {
      for (r = 0; r < 3; r++) if (count[r] != 300 || last[r] != 1) { print "rank " r ": " count[r] " lines, " last[r] " last lines" > "/dev/stderr"; bad++ }
      exit bad > 0
    }' out || fail "lines were split, mixed or lost"
  # One very long line (300 KB) in one piece.
  "$dsrun" -n 1 "$probe" lines 1 300000 >out 2>err
  # "[rank 0] " + "rank 0 line 0 " + 300000 letters + " end\n"
  [ "$(head -n 1 out | wc -c)" -eq $((9 + 14 + 300000 + 5)) ] || fail "the long line is $(head -n 1 out | wc -c) bytes"
  [ "$(tail -n 1 out)" = "[rank 0] last line of rank 0 without newline" ] || fail "last line: $(tail -n 1 out)"
}

fail_test() {
  mkdir pids
  local t0=$(now_ms) rc=0
  "$dsrun" -n 3 "$probe" fail pids 1 3 500 >out 2>err || rc=$?
  local ms=$(($(now_ms) - t0))
  [ "$rc" -eq 3 ] || fail "dsrun exited $rc, expected 3: $(cat err)"
  [ "$ms" -lt 5000 ] || fail "dsrun took $ms ms to stop"
  expect_in err "dsrun: rank 1 exited with code 3; stopping the other ranks"
  [ "$(ls pids | grep -c '\.pid$')" -eq 3 ] || fail "not all ranks started"
  ranks_gone pids
  echo "rank 1 failed after 500 ms; dsrun exited 3 after $ms ms"

  # Ranks that ignore SIGTERM get SIGKILL after the grace period (5 s).
  mkdir stubborn
  rc=0
  t0=$(now_ms)
  "$dsrun" -n 3 "$probe" stubborn stubborn 2 4 200 >out 2>err || rc=$?
  ms=$(($(now_ms) - t0))
  [ "$rc" -eq 4 ] || fail "dsrun exited $rc, expected 4: $(cat err)"
  expect_in err "dsrun: rank 2 exited with code 4; stopping the other ranks"
  expect_in err "dsrun: ranks still running 5.0 s after SIGTERM; sending SIGKILL"
  [ "$ms" -ge 5000 ] && [ "$ms" -lt 8000 ] || fail "expected SIGKILL 5 s after the failure, dsrun took $ms ms"
  ranks_gone stubborn
  echo "ranks ignoring SIGTERM: dsrun exited 4 after $ms ms"
}

signals_test() {
  local rc=0 t0 ms pid
  # A rank killed by a signal: 128 + 9.
  mkdir p1
  "$dsrun" -n 2 "$probe" kill p1 1 300 >out 2>err || rc=$?
  [ "$rc" -eq 137 ] || fail "dsrun exited $rc, expected 137: $(cat err)"
  expect_in err "dsrun: rank 1 was killed by signal 9 (SIGKILL); stopping the other ranks"
  ranks_gone p1

  # SIGINT (what a terminal's Ctrl-C sends) and SIGTERM to dsrun: forwarded, everything stops.
  for sig in INT TERM; do
    mkdir "p$sig"
    "$dsrun" -n 2 "$probe" sleep "p$sig" >out 2>err &
    pid=$!
    wait_pidfiles "p$sig" 2
    t0=$(now_ms)
    kill -s "$sig" "$pid"
    rc=0
    wait "$pid" || rc=$?
    ms=$(($(now_ms) - t0))
    local want=$((128 + $(kill -l "$sig")))
    [ "$rc" -eq "$want" ] || fail "SIG$sig: dsrun exited $rc, expected $want: $(cat err)"
    [ "$ms" -lt 3000 ] || fail "SIG$sig: dsrun took $ms ms"
    expect_in err "dsrun: got SIG$sig; stopping the ranks"
    ranks_gone "p$sig"
  done

  # Node mode under ssh watches its stdin: EOF (the session is gone) stops the ranks.
  mkdir peof
  local info
  info=$(printf '{"localhost":[0,1]}' | base64 -w0 | tr '+/' '-_')
  rc=0
  sleep 1 | "$dsrun" --node_rank 0 --world_info "$info" --stop_on_stdin_eof -- "$probe" sleep peof >out 2>err || rc=$?
  [ "$rc" -eq 129 ] || fail "stdin EOF: dsrun exited $rc, expected 129: $(cat err)"
  expect_in err "dsrun: stdin closed"
  ranks_gone peof

  # dsrun itself killed with SIGKILL (no chance to clean up): the kernel kills the ranks.
  mkdir pkill
  "$dsrun" -n 2 "$probe" sleep pkill >out 2>err &
  pid=$!
  wait_pidfiles pkill 2
  kill -s KILL "$pid"
  wait "$pid" || true
  ranks_gone pkill
}

dry_run_test() {
  printf 'worker-0 slots=2\nworker-1 slots=2\n' >hostfile
  local here exe
  here=$(pwd)
  exe=$(readlink -f "$dsrun")
  unset DSRUN_SSH
  "$dsrun" -n 2 --dry_run "$probe" env >out
  [ "$(cat out)" = "RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 NODE_RANK=0 CROSS_RANK=0 CROSS_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 DSPP_LOG_RANK=0 OMP_NUM_THREADS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 )) $probe env
RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 NODE_RANK=0 CROSS_RANK=0 CROSS_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 DSPP_LOG_RANK=0 OMP_NUM_THREADS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 )) $probe env" ] ||
    fail "local dry run: $(cat out)"

  DSPP_X=1 "$dsrun" --hostfile hostfile --dry_run "$probe" env 'a b' >out
  [ "$(wc -l <out)" -eq 2 ] || fail "ssh dry run: expected 2 lines: $(cat out)"
  local n=0
  while read -r line; do
    case "$line" in
      "ssh worker-$n 'cd $here && export "*"DSPP_X=1 "*"PATH="*" && exec $exe --node_rank=$n --world_info="*" --master_addr=worker-0 --master_port=29500 --stop_on_stdin_eof -- $probe env '\\''a b'\\'''") ;;
      *) fail "ssh dry run line $n: $line" ;;
    esac
    n=$((n + 1))
  done <out

  DSRUN_SSH="ssh -p 2222 -i key -o StrictHostKeyChecking=no" "$dsrun" --hostfile hostfile --include worker-1:1 --dry_run "$probe" env >out
  [ "$(wc -l <out)" -eq 1 ] || fail "DSRUN_SSH dry run: $(cat out)"
  expect_in out "ssh -p 2222 -i key -o StrictHostKeyChecking=no worker-1 'cd $here && export "
  expect_in out " --node_rank=0 --world_info=$(printf '{"worker-1":[1]}' | base64 -w0 | tr '+/' '-_') --master_addr=worker-1 "
  "$dsrun" --hostfile hostfile --ssh_port 2200 --dry_run "$probe" env >out
  expect_in out "ssh -p 2200 worker-0 "

  "$dsrun" --hostfile hostfile --launcher pdsh --master_port 4000 --dry_run "$probe" env >out
  [ "$(wc -l <out)" -eq 1 ] || fail "pdsh dry run: $(cat out)"
  expect_in out "PDSH_RCMD_TYPE=ssh pdsh -S -f 1024 -w worker-0,worker-1 'cd $here && export "
  expect_in out " && exec $exe --node_rank=%n --world_info=$(printf '{"worker-0":[0,1],"worker-1":[0,1]}' | base64 -w0 | tr '+/' '-_') --master_addr=worker-0 --master_port=4000 -- $probe env'"

  PATH=/usr/bin:/bin DSPP_X=1 "$dsrun" --hostfile hostfile --launcher openmpi --dry_run "$probe" env >out
  expect_in out "mpirun -n 4 -hostfile hostfile --mca btl '^openib' -x MASTER_ADDR=worker-0 -x MASTER_PORT=29500 -x DSPP_X=1 "
  expect_in out " -x PATH=/usr/bin:/bin $probe env"
  "$dsrun" --hostfile hostfile --launcher openmpi --num_nodes 1 --dry_run "$probe" env >out
  expect_in out "mpirun -n 2 --host worker-0:2 --mca btl '^openib' "
  "$dsrun" --launcher openmpi -n 4 --dry_run "$probe" env >out
  expect_in out "mpirun -n 4 --mca btl '^openib' -x MASTER_PORT=29500 "

  "$dsrun" --hostfile hostfile --launcher slurm --launcher_args "--partition gpu" --dry_run "$probe" env >out
  [ "$(cat out)" = "srun -n 4 --nodes 2 --nodelist worker-0,worker-1 --ntasks-per-node 2 --partition gpu --export=ALL,MASTER_ADDR=worker-0,MASTER_PORT=29500 $probe env" ] ||
    fail "slurm dry run: $(cat out)"
  "$dsrun" --launcher slurm --num_nodes 2 -n 8 --dry_run "$probe" env >out
  [ "$(cat out)" = "srun -n 16 --nodes 2 --ntasks-per-node 8 --export=ALL,MASTER_PORT=29500 $probe env" ] ||
    fail "slurm dry run without hostfile: $(cat out)"
}

errors_test() {
  printf 'worker-0 slots=2\n# second\nworker-1 slots=2\n' >hostfile
  printf 'worker-0 slots=2\nworker-1 slotz=2\n' >badhostfile
  # expect_error TEXT dsrun-args...: exits 2 and says TEXT on stderr.
  expect_error() {
    local text=$1 rc=0
    shift
    "$dsrun" "$@" >out 2>err || rc=$?
    [ "$rc" -eq 2 ] || fail "dsrun $* exited $rc, expected 2: $(cat err)"
    expect_in err "$text"
  }
  expect_error "dsrun: no program given" -n 2
  expect_error "dsrun: no program given" --hostfile hostfile --
  expect_error "--include: host 'worker-9' is not in hostfile hostfile (hosts: worker-0, worker-1)" --hostfile hostfile --include worker-9 "$probe" env
  expect_error "--include: host 'worker-1' has no slot 2 in hostfile hostfile (its slots: 0,1)" --hostfile hostfile --include worker-0@worker-1:0,2 "$probe" env
  expect_error "--exclude 'worker-0@worker-1' leaves no hosts to run on" --hostfile hostfile --exclude worker-0@worker-1 "$probe" env
  expect_error "--include: host 'localhost' has no slot 2 in the local host list" -n 2 --include localhost:2 "$probe" env
  expect_error "badhostfile:2: expected \`hostname slots=N\`, got 'worker-1 slotz=2'" --hostfile badhostfile "$probe" env
  expect_error "--hostfile: cannot read 'missing'" --hostfile missing "$probe" env
  expect_error "--include and --exclude are mutually exclusive" --hostfile hostfile --include worker-0 --exclude worker-1 "$probe" env
  expect_error "cannot be combined with --include/--exclude" --hostfile hostfile --include worker-0 -n 1 "$probe" env
  expect_error "--num_nodes 3 but hostfile hostfile lists 2 host(s)" --hostfile hostfile --num_nodes 3 "$probe" env
  expect_error "--num_nodes 2 needs a hostfile" --num_nodes 2 "$probe" env
  expect_error "--launcher 'mpich': expected local, ssh, pdsh, openmpi or slurm" --launcher mpich "$probe" env
  expect_error "unrecognised option '--bogus'" --bogus "$probe" env
  expect_error "--num_procs 2 and --num_gpus 3 disagree" -n 2 --num_gpus 3 "$probe" env
  # --help: exit 0, the usage.
  "$dsrun" --help >out || fail "--help exited $?"
  expect_in out "usage: dsrun [options] program [program args...]"
  expect_in out "--include"
  # A program that can not be started: said by the rank, exit 127.
  local rc=0
  "$dsrun" -n 2 ./no-such-program >out 2>err || rc=$?
  [ "$rc" -eq 127 ] || fail "missing program: exit $rc"
  expect_in err "[rank 0] dsrun: cannot run './no-such-program': No such file or directory"
  expect_in err "dsrun: rank "
}

ssh_test() {
  local sshd=/usr/sbin/sshd
  [ -x "$sshd" ] || skip "no $sshd (install openssh-server)"
  command -v ssh >/dev/null || skip "no ssh client (install openssh-client)"
  command -v ssh-keygen >/dev/null || skip "no ssh-keygen"
  # sshd's privilege separation needs /run/sshd; only root can create it (and needs it).
  if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
  ssh-keygen -q -t ed25519 -N '' -f host_key
  ssh-keygen -q -t ed25519 -N '' -f client_key
  cp client_key.pub authorized_keys
  chmod 600 authorized_keys client_key host_key
  local port pid ok=""
  # A free port: try a few at random; sshd exits at once when the bind fails.
  for _ in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 40000))
    cat >sshd_config <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
CONF
    # Its output to a file: an inherited stdout would keep CTest waiting for it.
    "$sshd" -D -e -f "$work/sshd_config" >sshd.log 2>&1 </dev/null &
    pid=$!
    sshd_pid=$pid
    trap 'kill "$sshd_pid" 2>/dev/null || true' EXIT
    export DSRUN_SSH="ssh -p $port -i $work/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5"
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || break
      if $DSRUN_SSH 127.0.0.1 true 2>ssh.log; then
        ok=1
        break 2
      fi
      sleep 0.2
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ -n "$ok" ] || skip "could not start sshd and log in to it here: $(tail -n 3 sshd.log | tr '\n' ' ') $(tail -n 2 ssh.log | tr '\n' ' ')"

  # Two "hosts", both this machine: ranks 0 and 1, one per node, over ssh.
  printf 'localhost slots=1\n127.0.0.1 slots=1\n' >hostfile
  unset OMP_NUM_THREADS
  DSPP_PROBE_TAG=exported "$dsrun" --hostfile hostfile "$probe" env >out 2>err || fail "dsrun over ssh exited $?: $(cat out err)"
  [ "$(wc -l <out)" -eq 2 ] || fail "expected 2 lines: $(cat out err)"
  expect_in out "[rank 0] RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=1 NODE_RANK=0 CROSS_RANK=0 MASTER_ADDR=localhost MASTER_PORT=29500 OMP_NUM_THREADS=<unset> DSPP_PROBE_TAG=exported"
  expect_in out "[rank 1] RANK=1 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=1 NODE_RANK=1 CROSS_RANK=1 MASTER_ADDR=localhost MASTER_PORT=29500 OMP_NUM_THREADS=<unset> DSPP_PROBE_TAG=exported"
  expect_in err "[rank 0] stderr of rank 0"
  expect_in err "[rank 1] stderr of rank 1"

  # Two ranks per node; global rank 3 (node 1, local rank 1) fails: everything stops.
  printf 'localhost slots=2\n127.0.0.1 slots=2\n' >hostfile2
  mkdir pids
  local rc=0 t0
  t0=$(now_ms)
  "$dsrun" --hostfile hostfile2 "$probe" fail pids 3 5 1000 >out 2>err || rc=$?
  local ms=$(($(now_ms) - t0))
  [ "$rc" -eq 5 ] || fail "dsrun over ssh exited $rc, expected 5: $(cat err)"
  expect_in err "dsrun: rank 3 exited with code 5; stopping the other ranks"
  expect_in err "dsrun: node 1 (127.0.0.1) exited with code 5; stopping the other nodes"
  [ "$(ls pids | grep -c '\.pid$')" -eq 4 ] || fail "not all 4 ranks started"
  ranks_gone pids
  echo "rank 3 failed after 1 s; dsrun exited after $ms ms"

  # The top-level dsrun killed with SIGKILL: the ssh sessions close, the nodes' stdin reaches
  # EOF, and the node-mode dsruns stop their ranks.
  mkdir pkill
  "$dsrun" --hostfile hostfile "$probe" sleep pkill >out 2>err &
  local top=$!
  wait_pidfiles pkill 2
  kill -s KILL "$top"
  wait "$top" || true
  ranks_gone pkill
}

case "$mode" in
  env) env_test ;;
  lines) lines_test ;;
  fail) fail_test ;;
  signals) signals_test ;;
  dry_run) dry_run_test ;;
  errors) errors_test ;;
  ssh) ssh_test ;;
  *) fail "unknown mode $mode" ;;
esac
echo "dsrun:$mode ok"
