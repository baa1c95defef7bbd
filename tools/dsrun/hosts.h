// dsrun's view of the machines a job runs on: the hostfile, DeepSpeed's --include/--exclude
// filters, --num_nodes/--num_procs, and the world info passed to each node.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace dsrun {

// A mistake in what the user asked for (a flag, the hostfile): dsrun prints it and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One machine and the slots (GPU ids, or process indices on a CPU) dsrun starts ranks on there.
struct Host {
  std::string name;
  std::vector<int> slots;
};

// Hosts in hostfile order: node rank K is hosts[K], and global ranks are numbered in this order.
using HostList = std::vector<Host>;

// Parses an MPI-style hostfile: `hostname slots=N` per line, '#' starts a comment, blank lines are
// skipped; other `key=value` words (OpenMPI's max_slots=) are ignored. `origin` names the file in
// errors, which read "<origin>:<line>: <what is wrong>".
HostList parse_hostfile_text(const std::string& text, const std::string& origin);
HostList read_hostfile(const std::string& path);

// DeepSpeed's resource filter: `host1@host2:0,2` — hosts separated by '@', an optional slot list
// after ':'. --include keeps only what it names; --exclude removes what it names (a host without a
// slot list: the whole host). `where` names the host list in errors (the hostfile path).
HostList apply_include(const HostList& hosts, const std::string& spec, const std::string& where);
HostList apply_exclude(const HostList& hosts, const std::string& spec, const std::string& where);

// --num_nodes K keeps the first K hosts (-1: all); --num_procs N uses slots 0..N-1 on each (-1: the
// hostfile's slots).
HostList limit_hosts(const HostList& hosts, int num_nodes, int procs_per_node,
                     const std::string& where);

int total_slots(const HostList& hosts);
// Global rank of the first slot of hosts[node] (the ranks of the hosts before it).
int rank_offset(const HostList& hosts, int node);

// The hosts and their slots as base64 (URL-safe alphabet) of JSON {"host": [slots], ...}, in
// order, the way DeepSpeed passes --world_info to its per-node launcher.
std::string encode_world_info(const HostList& hosts);
HostList decode_world_info(const std::string& encoded);

// True for names that mean this machine (localhost, 127.x, ::1, or its own hostname).
bool is_local_host(const std::string& name);

}  // namespace dsrun
