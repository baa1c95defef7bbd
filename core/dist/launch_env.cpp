#include "dist/launch_env.h"

#include <dspp/error.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace dspp::dist {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

int parse_int(const char* name, const char* text) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 0 || v > 1000000) {
    throw Error(Errc::kInvalidArgument, std::string("environment variable ") + name + "='" + text +
                                            "' is not a non-negative integer");
  }
  return static_cast<int>(v);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // "node[01-04,07],gpu5" -> "node01": the first entry (commas inside brackets do not split),
  // each bracket replaced by its first number (as written, leading zeros kept).
  std::string out;
  int depth = 0;
  for (size_t i = 0; i < nodelist.size(); ++i) {
    const char c = nodelist[i];
    if (c == ',' && depth == 0) break;
    if (c == '[') {
      const size_t close = nodelist.find(']', i);
      if (close == std::string::npos) {
        throw Error(Errc::kInvalidArgument,
                    "SLURM_JOB_NODELIST='" + nodelist + "': '[' without ']'");
      }
      const std::string inside = nodelist.substr(i + 1, close - i - 1);
      out += inside.substr(0, inside.find_first_of(",-"));
      i = close;
      continue;
    }
    out += c;
  }
  if (out.empty()) {
    throw Error(Errc::kInvalidArgument, "SLURM_JOB_NODELIST='" + nodelist + "' names no host");
  }
  return out;
}

LaunchEnv read_launch_env(int default_port) {
  LaunchEnv e;
  e.master_port = default_port;
  const char* rank_var = nullptr;
  const char* world_var = nullptr;
  const char* local_var = nullptr;
  if (env("RANK") || env("WORLD_SIZE")) {
    rank_var = "RANK", world_var = "WORLD_SIZE", local_var = "LOCAL_RANK";
    e.source = "RANK/WORLD_SIZE";
  } else if (env("OMPI_COMM_WORLD_RANK")) {
    rank_var = "OMPI_COMM_WORLD_RANK", world_var = "OMPI_COMM_WORLD_SIZE";
    local_var = "OMPI_COMM_WORLD_LOCAL_RANK";
    e.source = "OpenMPI (OMPI_COMM_WORLD_*)";
  } else if (env("SLURM_PROCID")) {
    rank_var = "SLURM_PROCID", world_var = "SLURM_NTASKS", local_var = "SLURM_LOCALID";
    e.source = "Slurm (SLURM_PROCID/SLURM_NTASKS)";
  } else {
    return e;
  }
  if (!env(rank_var) || !env(world_var)) {
    throw Error(Errc::kInvalidArgument, std::string("launch environment from ") + e.source +
                                            ": both " + rank_var + " and " + world_var +
                                            " must be set");
  }
  e.rank = parse_int(rank_var, env(rank_var));
  e.world_size = parse_int(world_var, env(world_var));
  if (e.world_size < 1 || e.rank >= e.world_size) {
    throw Error(Errc::kInvalidArgument, std::string(rank_var) + "=" + std::to_string(e.rank) +
                                            " is outside " + world_var + "=" +
                                            std::to_string(e.world_size));
  }
  e.local_rank = env(local_var) ? parse_int(local_var, env(local_var)) : 0;
  if (const char* a = env("MASTER_ADDR")) {
    e.master_addr = a;
  } else if (e.source.rfind("Slurm", 0) == 0) {
    // Under srun rank 0 runs on the job's first node.
    if (const char* list =
            env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST")) {
      e.master_addr = first_slurm_host(list);
    }
  }
  if (const char* p = env("MASTER_PORT")) e.master_port = parse_int("MASTER_PORT", p);
  return e;
}

}  // namespace dspp::dist
