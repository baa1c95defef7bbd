#include "command_lines.h"

#include <algorithm>
#include <cctype>
#include <cstring>

extern char** environ;

namespace dsrun {
namespace {

bool exported_name(const std::string& name) {
  if (name == "PATH" || name == "LD_LIBRARY_PATH") return true;
  for (const char* prefix : {"DSPP_", "OMP_", "NCCL_", "GLOO_", "UCX_"})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

std::string host_list(const HostList& hosts, bool with_slots) {
  std::string out;
  for (const Host& h : hosts) {
    out += (out.empty() ? "" : ",") + h.name;
    if (with_slots) out += ":" + std::to_string(h.slots.size());
  }
  return out;
}

// mpirun and srun start ranks 0..N-1 on a node and each picks its device by local rank: a slot
// list like worker-1:1,3 cannot be expressed, so refuse it rather than use other devices.
void require_leading_slots(const MultiNode& job, const std::string& launcher) {
  for (const Host& h : job.hosts)
    for (size_t i = 0; i < h.slots.size(); ++i)
      if (h.slots[i] != static_cast<int>(i))
        throw UsageError("--launcher " + launcher +
                         " starts slots 0..N-1 on each host, but host '" + h.name +
                         "' would use slot " + std::to_string(h.slots[i]) +
                         " (choose slots from 0 with --include, or use --launcher ssh/pdsh)");
}

// Who the ranks meet at: always the port, the address when dsrun knows it.
EnvList rendezvous(const MultiNode& job) {
  EnvList env;
  if (!job.master_addr.empty()) env.push_back({"MASTER_ADDR", job.master_addr});
  env.push_back({"MASTER_PORT", std::to_string(job.master_port)});
  return env;
}

}  // namespace

std::string shell_quote(const std::string& s) {
  if (!s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("_@%+=:,./-", c);
      }))
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string join_quoted(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : " ") + shell_quote(w);
  return out;
}

EnvList exported_environment() {
  EnvList env;
  for (char** e = environ; *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (!eq) continue;
    std::string name(*e, static_cast<size_t>(eq - *e));
    if (exported_name(name)) env.push_back({name, eq + 1});
  }
  std::sort(env.begin(), env.end());
  return env;
}

std::string node_command(const MultiNode& job, const std::string& node_rank,
                         bool stop_on_stdin_eof) {
  std::string cmd = "cd " + shell_quote(job.cwd);
  if (!job.exports.empty()) {
    cmd += " && export";
    for (const auto& [name, value] : job.exports) cmd += " " + name + "=" + shell_quote(value);
  }
  std::vector<std::string> argv = {
      job.dsrun_path, "--node_rank=" + node_rank, "--world_info=" + encode_world_info(job.hosts),
      "--master_addr=" + job.master_addr, "--master_port=" + std::to_string(job.master_port)};
  if (stop_on_stdin_eof) argv.push_back("--stop_on_stdin_eof");
  argv.push_back("--");
  argv.insert(argv.end(), job.program.begin(), job.program.end());
  return cmd + " && exec " + join_quoted(argv);
}

std::vector<std::vector<std::string>> ssh_commands(const MultiNode& job) {
  std::vector<std::vector<std::string>> commands;
  for (size_t node = 0; node < job.hosts.size(); ++node) {
    std::vector<std::string> argv = job.ssh;
    if (job.ssh_port > 0) argv.insert(argv.end(), {"-p", std::to_string(job.ssh_port)});
    argv.push_back(job.hosts[node].name);
    // The node-mode dsrun stops its ranks when this ssh's stdin (a pipe dsrun holds) closes.
    argv.push_back(node_command(job, std::to_string(node), true));
    commands.push_back(std::move(argv));
  }
  return commands;
}

Command pdsh_command(const MultiNode& job) {
  Command c;
  c.env.push_back({"PDSH_RCMD_TYPE", "ssh"});
  if (job.ssh_port > 0)
    c.env.push_back({"PDSH_SSH_ARGS_APPEND", "-p " + std::to_string(job.ssh_port)});
  c.argv = {"pdsh", "-S", "-f", "1024", "-w", host_list(job.hosts, false)};
  c.argv.insert(c.argv.end(), job.launcher_args.begin(), job.launcher_args.end());
  // pdsh substitutes %n with the node's index in the -w list. pdsh does not pass stdin on, so the
  // node-mode dsrun cannot watch it; it stops when its output can no longer be written.
  c.argv.push_back(node_command(job, "%n", false));
  return c;
}

Command openmpi_command(const MultiNode& job) {
  require_leading_slots(job, "openmpi");
  Command c;
  int total = total_slots(job.hosts);
  if (job.hostfile.empty()) total = std::max(1, job.procs_per_node) * std::max(1, job.num_nodes);
  c.argv = {"mpirun", "-n", std::to_string(total)};
  if (job.hostfile.empty()) {
    if (job.num_nodes > 0)
      c.argv.insert(c.argv.end(), {"--npernode", std::to_string(std::max(1, job.procs_per_node))});
  } else if (job.hosts_changed) {
    c.argv.insert(c.argv.end(), {"--host", host_list(job.hosts, true)});
  } else {
    c.argv.insert(c.argv.end(), {"-hostfile", job.hostfile});
  }
  c.argv.insert(c.argv.end(), {"--mca", "btl", "^openib"});
  c.argv.insert(c.argv.end(), job.launcher_args.begin(), job.launcher_args.end());
  // mpirun passes only what -x names; the ranks read OMPI_COMM_WORLD_* for rank and size.
  for (const auto& [name, value] : rendezvous(job))
    c.argv.insert(c.argv.end(), {"-x", name + "=" + value});
  for (const auto& [name, value] : job.exports)
    c.argv.insert(c.argv.end(), {"-x", name + "=" + value});
  c.argv.insert(c.argv.end(), job.program.begin(), job.program.end());
  return c;
}

Command slurm_command(const MultiNode& job) {
  require_leading_slots(job, "slurm");
  Command c;
  if (job.hostfile.empty()) {
    const int per_node = std::max(1, job.procs_per_node);
    c.argv = {"srun", "-n", std::to_string(per_node * std::max(1, job.num_nodes))};
    if (job.num_nodes > 0)
      c.argv.insert(c.argv.end(), {"--nodes", std::to_string(job.num_nodes), "--ntasks-per-node",
                                   std::to_string(per_node)});
  } else {
    c.argv = {"srun",
              "-n",
              std::to_string(total_slots(job.hosts)),
              "--nodes",
              std::to_string(job.hosts.size()),
              "--nodelist",
              host_list(job.hosts, false)};
    const size_t first = job.hosts.front().slots.size();
    const bool uniform = std::all_of(job.hosts.begin(), job.hosts.end(),
                                     [&](const Host& h) { return h.slots.size() == first; });
    if (uniform) c.argv.insert(c.argv.end(), {"--ntasks-per-node", std::to_string(first)});
  }
  c.argv.insert(c.argv.end(), job.launcher_args.begin(), job.launcher_args.end());
  // srun passes the whole environment (ALL); the ranks read SLURM_PROCID etc. for rank and size.
  std::string exports = "--export=ALL";
  for (const auto& [name, value] : rendezvous(job)) exports += "," + name + "=" + value;
  c.argv.push_back(exports);
  c.argv.insert(c.argv.end(), job.program.begin(), job.program.end());
  return c;
}

std::string command_text(const Command& command) {
  std::string out;
  for (const auto& [name, value] : command.env) out += name + "=" + shell_quote(value) + " ";
  return out + join_quoted(command.argv);
}

}  // namespace dsrun
