// Starts one node's ranks on this machine: the local launch, and dsrun's node mode under ssh/pdsh.
#pragma once

#include "hosts.h"

#include <string>
#include <vector>

namespace dsrun {

struct NodeLaunch {
  HostList hosts;  // the whole world, in node order
  int node_rank = 0;
  std::string master_addr;
  int master_port = 29500;
  std::vector<std::string> program;  // program and its arguments
  bool dry_run = false;
  bool stop_on_stdin_eof = false;
};

// The environment variables dsrun sets for local rank `local_rank` of the node (NAME=value).
std::vector<std::string> rank_variables(const NodeLaunch& launch, int local_rank);

// Runs the node's ranks and returns dsrun's exit code (see supervise()).
int launch_node(const NodeLaunch& launch);

}  // namespace dsrun
