#include "launch_local.h"

#include "command_lines.h"
#include "supervise.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <thread>

extern char** environ;

namespace dsrun {
namespace {

std::string join_ints(const std::vector<int>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out;
}

// CUDA_VISIBLE_DEVICES for the node, or "" to leave it alone. When the node's slots are 0..N-1,
// rank i uses device i anyway, so nothing is set (a CPU machine sees no change). Otherwise (say
// --include host:1,3) the ranks see only those devices, in order; a CUDA_VISIBLE_DEVICES the user
// set is the list the slot numbers index into.
std::string visible_devices(const std::vector<int>& slots) {
  bool identity = true;
  for (size_t i = 0; i < slots.size(); ++i) identity = identity && slots[i] == static_cast<int>(i);
  if (identity) return "";
  const char* user = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!user) return join_ints(slots);
  std::vector<std::string> devices;
  std::string item;
  for (const char* p = user;; ++p) {
    if (*p == ',' || *p == '\0') {
      devices.push_back(item);
      item.clear();
      if (*p == '\0') break;
    } else {
      item += *p;
    }
  }
  std::string out;
  for (int s : slots) {
    if (static_cast<size_t>(s) >= devices.size())
      throw UsageError("slot " + std::to_string(s) + " is not in CUDA_VISIBLE_DEVICES=" + user);
    out += (out.empty() ? "" : ",") + devices[static_cast<size_t>(s)];
  }
  return out;
}

}  // namespace

std::vector<std::string> rank_variables(const NodeLaunch& launch, int local_rank) {
  const Host& node = launch.hosts[static_cast<size_t>(launch.node_rank)];
  const int local_size = static_cast<int>(node.slots.size());
  const int rank = rank_offset(launch.hosts, launch.node_rank) + local_rank;
  std::vector<std::string> vars = {
      "RANK=" + std::to_string(rank),
      "LOCAL_RANK=" + std::to_string(local_rank),
      "WORLD_SIZE=" + std::to_string(total_slots(launch.hosts)),
      "LOCAL_WORLD_SIZE=" + std::to_string(local_size),
      "NODE_RANK=" + std::to_string(launch.node_rank),
      "CROSS_RANK=" + std::to_string(launch.node_rank),
      "CROSS_SIZE=" + std::to_string(launch.hosts.size()),
      "MASTER_ADDR=" + launch.master_addr,
      "MASTER_PORT=" + std::to_string(launch.master_port),
      // dsrun prefixes every line with the rank: dspp's logger then leaves its own out.
      "DSPP_LOG_RANK=0",
  };
  const std::string devices = visible_devices(node.slots);
  if (!devices.empty()) vars.push_back("CUDA_VISIBLE_DEVICES=" + devices);
  return vars;
}

int launch_node(const NodeLaunch& launch) {
  const Host& node = launch.hosts.at(static_cast<size_t>(launch.node_rank));
  const int local_size = static_cast<int>(node.slots.size());

  // As torchrun: several ranks each running one OpenMP thread per core would oversubscribe the
  // machine many times over, so each gets its share unless the user chose.
  std::string omp;
  if (!std::getenv("OMP_NUM_THREADS") && local_size > 1) {
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    omp = "OMP_NUM_THREADS=" + std::to_string(std::max(1, cores / local_size));
    if (!launch.dry_run)
      std::cerr << "dsrun: setting " << omp << " for each of the " << local_size
                << " ranks on this node (cores / local ranks); set OMP_NUM_THREADS to override"
                << std::endl;
  }

  std::vector<ChildSpec> children;
  for (int local = 0; local < local_size; ++local) {
    std::vector<std::string> vars = rank_variables(launch, local);
    if (!omp.empty()) vars.push_back(omp);
    const std::string rank = vars[0].substr(5);  // "RANK=<n>"
    if (launch.dry_run) {
      std::cout << join_quoted(vars) << " " << join_quoted(launch.program) << "\n";
      continue;
    }
    ChildSpec child;
    child.label = "rank " + rank;
    child.prefix = "[rank " + rank + "] ";
    child.argv = launch.program;
    // The inherited environment, minus what dsrun sets, plus dsrun's values.
    for (char** e = environ; *e; ++e) {
      const std::string entry = *e;
      const std::string name = entry.substr(0, entry.find('='));
      const bool ours = std::any_of(vars.begin(), vars.end(), [&](const std::string& v) {
        return v.compare(0, name.size() + 1, name + "=") == 0;
      });
      if (!ours) child.env.push_back(entry);
    }
    child.env.insert(child.env.end(), vars.begin(), vars.end());
    children.push_back(std::move(child));
  }
  if (launch.dry_run) return 0;

  SuperviseOptions options;
  options.stop_on_stdin_eof = launch.stop_on_stdin_eof;
  options.others = "ranks";
  return supervise(children, options);
}

}  // namespace dsrun
