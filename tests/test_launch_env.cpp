// Where a process sits in a launch: torchrun/DeepSpeed's variables first, then OpenMPI's, then
// Slurm's, each source named; Slurm's node list gives rank 0's host.
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "catch.h"
#include "dist/launch_env.h"
#include "test_util.h"

namespace {

const std::vector<const char*> kVars = {
    "RANK",          "WORLD_SIZE",           "LOCAL_RANK",           "MASTER_ADDR",
    "MASTER_PORT",   "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_PROCID",  "SLURM_NTASKS",         "SLURM_LOCALID",        "SLURM_JOB_NODELIST",
    "SLURM_NODELIST"};

// Sets exactly the given variables of the launch set for one test, and clears them after.
struct Env {
  explicit Env(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const char* v : kVars) ::unsetenv(v);
    for (auto [k, v] : vars) ::setenv(k, v, 1);
  }
  ~Env() {
    for (const char* v : kVars) ::unsetenv(v);
  }
};

using dspp::dist::read_launch_env;

}  // namespace

TEST_CASE("launch env: nothing set is a single process with DeepSpeed's defaults") {
  Env e({});
  const auto l = read_launch_env(29500);
  CHECK(l.rank == 0);
  CHECK(l.world_size == 1);
  CHECK(l.master_addr == "127.0.0.1");
  CHECK(l.master_port == 29500);
}

TEST_CASE("launch env: RANK and WORLD_SIZE win over OpenMPI's and Slurm's") {
  Env e({{"RANK", "2"},
         {"WORLD_SIZE", "4"},
         {"LOCAL_RANK", "1"},
         {"MASTER_ADDR", "node7"},
         {"MASTER_PORT", "1234"},
         {"OMPI_COMM_WORLD_RANK", "0"},
         {"OMPI_COMM_WORLD_SIZE", "8"},
         {"SLURM_PROCID", "5"},
         {"SLURM_NTASKS", "16"}});
  const auto l = read_launch_env(29500);
  CHECK(l.rank == 2);
  CHECK(l.world_size == 4);
  CHECK(l.local_rank == 1);
  CHECK(l.master_addr == "node7");
  CHECK(l.master_port == 1234);
  CHECK(l.source == "RANK/WORLD_SIZE");
}

TEST_CASE("launch env: OpenMPI's variables, distributed_port when MASTER_PORT is unset") {
  Env e({{"OMPI_COMM_WORLD_RANK", "3"},
         {"OMPI_COMM_WORLD_SIZE", "8"},
         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
         {"SLURM_PROCID", "5"},
         {"SLURM_NTASKS", "16"}});
  const auto l = read_launch_env(29600);
  CHECK(l.rank == 3);
  CHECK(l.world_size == 8);
  CHECK(l.local_rank == 1);
  CHECK(l.master_port == 29600);
  CHECK(contains(l.source, "OpenMPI"));
}

TEST_CASE("launch env: Slurm's variables, rank 0 on the job's first node") {
  Env e({{"SLURM_PROCID", "5"},
         {"SLURM_NTASKS", "16"},
         {"SLURM_LOCALID", "1"},
         {"SLURM_JOB_NODELIST", "gpu[07-10,12],login3"}});
  const auto l = read_launch_env(29500);
  CHECK(l.rank == 5);
  CHECK(l.world_size == 16);
  CHECK(l.local_rank == 1);
  CHECK(l.master_addr == "gpu07");
  CHECK(contains(l.source, "Slurm"));
}

TEST_CASE("launch env: the first host of a Slurm node list") {
  using dspp::dist::first_slurm_host;
  CHECK(first_slurm_host("node1") == "node1");
  CHECK(first_slurm_host("node1,node2") == "node1");
  CHECK(first_slurm_host("node[01-04]") == "node01");
  CHECK(first_slurm_host("node[3,5-7]") == "node3");
  CHECK(first_slurm_host("rack[2-3]-n[010-020],x") == "rack2-n010");
  CHECK(contains(error_of([] { first_slurm_host("node[01-04"); }), "without ']'"));
  CHECK(contains(error_of([] { first_slurm_host(",x"); }), "names no host"));
}

TEST_CASE("launch env: malformed or inconsistent values name the variable") {
  {
    Env e({{"RANK", "x"}, {"WORLD_SIZE", "2"}});
    CHECK(contains(error_of([] { read_launch_env(29500); }), "RANK='x'"));
  }
  {
    Env e({{"RANK", "1"}});
    CHECK(contains(error_of([] { read_launch_env(29500); }), "WORLD_SIZE must be set"));
  }
  {
    Env e({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}});
    CHECK(contains(error_of([] { read_launch_env(29500); }), "SLURM_PROCID=4 is outside"));
  }
}
