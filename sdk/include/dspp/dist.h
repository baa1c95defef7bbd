// Distributed runs: the process groups the engine reduces over, and DeepSpeed's
// deepspeed.init_distributed() for host apps that want the world before initialize().
//
// A run of N processes is started by a launcher (`dsrun -n N prog`, torchrun, mpirun, srun) that
// sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (or OpenMPI's/Slurm's variables).
// initialize() calls init_distributed() itself when it is needed (dist_init_required as DeepSpeed).
#ifndef DSPP_DIST_H
#define DSPP_DIST_H

#include <dspp/kinds/comm.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dspp {

// What a group's collectives moved, for the comms logger and the ZeRO volume checks: per
// operation name ("all_reduce", "reduce_scatter", ...), the calls and the bytes of the logical
// buffer (all_reduce: the buffer; reduce_scatter: the input; all_gather: the output).
struct CommCounter {
  int64_t calls = 0;
  int64_t bytes = 0;
};
using CommStats = std::map<std::string, CommCounter>;

// DeepSpeed's comms_logger: which completed collectives a group records, and how.
struct CommsLogOptions {
  bool enabled = false;
  bool verbose = false;  // log each operation as it completes (on `lead` only)
  bool prof_all = true;  // record every operation, else only those named in prof_ops
  std::vector<std::string> prof_ops;
  bool lead = false;  // this process logs (DeepSpeed: global rank 0)
};

// One (operation, message size) of the comms logger: one entry per completed call. Latency is
// issue to completion (the end of wait()) in milliseconds; bandwidths in Gbps as DeepSpeed's
// calc_bw_log computes them (see comm_bandwidth()).
struct CommRecord {
  int64_t count = 0;
  std::vector<double> latency_ms, algbw_gbps, busbw_gbps;
};
// operation name -> message size in bytes (the bytes stats() counts) -> record
using CommRecords = std::map<std::string, std::map<int64_t, CommRecord>>;

struct CommBandwidth {
  double algbw_gbps = 0.0;  // DeepSpeed's "tput"
  double busbw_gbps = 0.0;
};
// DeepSpeed's calc_bw_log for `bytes` (the logical buffer stats() counts) moved in `ms` over `n`
// ranks: all_reduce algbw 2S/t, busbw S/t * 2(n-1)/n; all_gather and reduce_scatter S/t and
// S/t * (n-1)/n; broadcast, reduce, send, recv, barrier S/t for both. Zero when ms <= 0.
CommBandwidth comm_bandwidth(const std::string& op, int64_t bytes, double ms, int n);
// DeepSpeed's convert_size: "0B", "512.0 B", "4.0 KB", "1.5 MB".
std::string format_message_size(int64_t bytes);
// DeepSpeed's log_all table: a header, then per operation its name and one row per message size
// (count, total latency, trimmed-mean latency, algbw and busbw).
std::string format_comms_summary(const CommRecords& records);

// A set of ranks and the collectives over it. The synchronous helpers throw dspp::Error naming
// the group, the operation and, when the store knows it, the rank that went missing.
class ProcessGroup {
 public:
  ProcessGroup(std::string name, std::vector<int> global_ranks, int rank,
               std::shared_ptr<Communicator> comm);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  const std::string& name() const { return name_; }
  int rank() const { return rank_; }  // this process's index in the group
  int size() const { return static_cast<int>(ranks_.size()); }
  const std::vector<int>& ranks() const { return ranks_; }  // global ranks, in group order
  // The communicator plugins get (ZeRO stages): counts what goes through it.
  Communicator* comm() const;

  void all_reduce(const Tensor& t, ReduceOp op);
  void broadcast(const Tensor& t, int root);  // root: index in the group
  void all_gather(const Tensor& in, const Tensor& out);
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op);
  void barrier();
  double all_reduce(double value, ReduceOp op);  // one float64

  CommStats stats() const;
  void reset_stats();
  // The comms logger (off by default: then a collective costs one relaxed atomic load more).
  void set_comms_logging(const CommsLogOptions& options);
  CommRecords comms_records() const;
  void reset_comms_records();

  struct Counting;

 private:
  std::string name_;
  std::vector<int> ranks_;
  int rank_ = 0;
  std::unique_ptr<Counting> counting_;
};

struct DistOptions {
  // The comm plugin's name; empty: $DSPP_COMM_BACKEND when set, else the accelerator's as
  // DeepSpeed picks it: "nccl" once dspp::use_device chose a GPU, "gloo" on the CPU.
  std::string backend;
  std::string init_method = "env://";     // or "file:///shared/dir" (a file store every rank sees)
  int distributed_port = 29500;           // MASTER_PORT when the environment has none
  std::vector<std::string> plugin_paths;  // extra folders to find the comm plugin in
};

// Starts the world when the launch environment says world size > 1 (a no-op when already
// started): connects to rank 0's store, checks that every rank arrived within DSPP_TIMEOUT
// (naming the ranks that did not), creates the world communicator from the `backend` plugin.
// A single process gets a world of one without any plugin.
void init_distributed(const DistOptions& options = {});
bool is_initialized();
// The world group (init_distributed() first). Its size is 1 in a single process.
std::shared_ptr<ProcessGroup> world_group();
// A new group of the given global ranks (every rank of the world calls it with the same list);
// null on ranks outside it.
std::shared_ptr<ProcessGroup> new_group(const std::vector<int>& global_ranks,
                                        const std::string& name);
// Ends the world: waits (up to the timeout) for every rank to arrive here, so rank 0's store
// outlives its users. Called at exit when the host does not.
void destroy_process_group();

}  // namespace dspp

#endif  // DSPP_DIST_H
