// Where this process sits in a launch: rank, world size and local rank, read from the variables
// torchrun/DeepSpeed set, or else from OpenMPI's or Slurm's.
#pragma once

#include <string>

namespace dspp::dist {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  // which variables the values came from
};

// The first host of a Slurm node list ("node[01-04,07],gpu5" -> "node01").
std::string first_slurm_host(const std::string& nodelist);

// Reads RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, else OMPI_COMM_WORLD_*, else SLURM_*
// (then MASTER_ADDR, when unset, is the first host of SLURM_JOB_NODELIST).
// `default_port` is initialize()'s distributed_port. Throws Error(kInvalidArgument) naming the
// variable when one is malformed or inconsistent (rank outside the world).
LaunchEnv read_launch_env(int default_port);

}  // namespace dspp::dist
