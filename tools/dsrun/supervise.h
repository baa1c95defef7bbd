// Runs a set of child processes (a node's ranks, or one ssh per node) as one job: their output is
// relayed line by line with a prefix, and the first one to fail, or a signal to dsrun, stops all.
#pragma once

#include <string>
#include <vector>

namespace dsrun {

struct ChildSpec {
  std::string label;   // how dsrun's own messages name it: "rank 3", "node 1 (worker-2)"
  std::string prefix;  // written before each of its output lines: "[rank 3] "
  // Lines that already start with "[rank " pass unchanged: an ssh child relays a node-mode dsrun
  // that prefixed them; its other lines (ssh's own errors) get `prefix`.
  bool keep_rank_lines = false;
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::vector<std::string> env;   // the whole environment, NAME=value
  // stdin: /dev/null, or (true) a pipe whose write end only dsrun holds and never writes, so the
  // child sees EOF when dsrun is gone however it died. ssh forwards that EOF to the node-mode
  // dsrun.
  bool stdin_pipe = false;
};

struct SuperviseOptions {
  // Node mode under ssh: stop everything when dsrun's stdin reaches EOF (the ssh session is gone).
  bool stop_on_stdin_eof = false;
  std::string others = "ranks";  // "stopping the other ranks" / "... nodes"
  int grace_ms = 5000;           // SIGTERM, then SIGKILL after this long
};

// Starts all children and waits for them. Returns 0 when all exit 0; otherwise the exit code of
// the first child that failed (128+signal when a signal killed it), or 128+signal when dsrun
// itself was interrupted. Throws std::runtime_error naming the call when a syscall fails.
int supervise(const std::vector<ChildSpec>& children, const SuperviseOptions& options);

}  // namespace dsrun
