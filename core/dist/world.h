// The process-wide distributed state behind <dspp/dist.h>: the launch environment, the store, the
// comm plugin and the world group, plus the checks every rank makes at start.
#pragma once

#include <dspp/dist.h>
#include <dspp/engine.h>

#include <memory>
#include <string>

#include "dist/launch_env.h"
#include "dist/store.h"

namespace dspp {
class PluginRegistry;
}

namespace dspp::dist {

// The launch environment of the started world (rank 0 of 1 before init_distributed()).
LaunchEnv current_env();

// "rank 3 exited or lost its connection" when the store saw ranks disappear, "" when it saw none
// (or there is no store). Used to explain a failed collective.
std::string describe_lost_ranks();

// Every rank lists its loaded plugins (kind, name, version, ABI, build id); all ranks compare the
// lists and fail together, naming the ranks and the plugins that differ. A no-op for one process.
void check_plugins_match(const PluginRegistry& registry);

// The groups of a mesh, laid out as DeepSpeed's (dp, sp) device mesh: rank = dp_index * sp +
// sp_index. `sp` holds consecutive ranks; `dp` holds the ranks with the same sp_index; `grad` is
// the group gradients are averaged over (dp x sp, DeepSpeed's seq_data_parallel group; equal to dp
// when sp = 1).
struct MeshGroups {
  std::shared_ptr<ProcessGroup> dp, sp, grad;
  int dp_rank = 0;
};
MeshGroups make_mesh_groups(const Mesh& mesh);

// Whether the world's comm plugin moves GPU memory only (comm/nccl): the core's own collectives
// over host tensors (loss averages, checkpoint summaries) then go through a device copy.
bool comm_needs_device_memory();

// The one-rank communicator of a single process.
std::shared_ptr<Communicator> make_self_communicator();

}  // namespace dspp::dist
