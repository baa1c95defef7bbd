// The command lines dsrun runs for a multi-node job, per launcher, built the way DeepSpeed's
// runner builds them. Pure functions of their inputs, so --dry_run and the tests see exactly
// what would run.
#pragma once

#include "hosts.h"

#include <string>
#include <utility>
#include <vector>

namespace dsrun {

// `s` as one word for a POSIX shell: unchanged when it is plainly safe, else in single quotes.
std::string shell_quote(const std::string& s);
std::string join_quoted(const std::vector<std::string>& words);

using EnvList = std::vector<std::pair<std::string, std::string>>;

// What a remote node must inherit from here: PATH, LD_LIBRARY_PATH and every DSPP_*, OMP_*,
// NCCL_*, GLOO_*, UCX_* variable, sorted by name. (CUDA_VISIBLE_DEVICES is per node: not passed.)
EnvList exported_environment();

struct MultiNode {
  HostList hosts;        // resolved: after the hostfile, filters and limits
  std::string hostfile;  // "" when there is none
  bool hosts_changed =
      false;  // --include/--exclude/--num_nodes/--num_procs changed the hostfile's list
  std::string master_addr;  // "" when unknown (left to the scheduler's variables)
  int master_port = 29500;
  std::vector<std::string> program;
  std::string dsrun_path;  // this executable, the same path on every node (as DeepSpeed's python)
  std::string cwd;
  EnvList exports;                         // usually exported_environment()
  std::vector<std::string> ssh;            // the ssh command: {"ssh"} or DSRUN_SSH split at spaces
  int ssh_port = 0;                        // 0: ssh's default
  std::vector<std::string> launcher_args;  // --launcher_args, split at spaces
  // Without a hostfile (openmpi/slurm allocate the nodes): ranks per node and node count, -1 unset.
  int procs_per_node = -1;
  int num_nodes = -1;
};

// The shell command a node runs: cd here, export the variables, exec dsrun's node mode.
// `node_rank` is a number, or pdsh's "%n".
std::string node_command(const MultiNode& job, const std::string& node_rank,
                         bool stop_on_stdin_eof);

// One argv per host: ssh [-p PORT] HOST '<node command>'.
std::vector<std::vector<std::string>> ssh_commands(const MultiNode& job);

// A command and the variables it needs in its environment (shown as NAME=value in --dry_run).
struct Command {
  EnvList env;
  std::vector<std::string> argv;
};

Command pdsh_command(const MultiNode& job);
Command openmpi_command(const MultiNode& job);
Command slurm_command(const MultiNode& job);

// `NAME=value ... argv...`, quoted for a shell: what --dry_run prints.
std::string command_text(const Command& command);

}  // namespace dsrun
