// ProcessGroup: a communicator plus the counting layer every collective goes through (the comms
// logger and the ZeRO volume checks read it), and the one-rank communicator a single process uses.
#include <dspp/device.h>
#include <dspp/dist.h>
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugin.h>
#include <dspp/plugins.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <mutex>
#include <numeric>
#include <sstream>

#include "device/compute_device.h"
#include "dist/world.h"
#include "log/log.h"
#include "monitor/csv_monitor.h"

namespace dspp {
namespace {

using Clock = std::chrono::steady_clock;

int64_t bytes_of(const dspp_tensor_view& v) {
  int64_t n = 1;
  for (int32_t d = 0; d < v.ndim; ++d) n *= v.shape[d];
  return n * static_cast<int64_t>(dtype_size(static_cast<dspp_dtype>(v.dtype)));
}

// A work that is already complete (the one-rank communicator finishes every call at once).
class DoneWork final : public CommWork {
 public:
  dspp_status wait() noexcept override { return DSPP_OK; }
  void release() noexcept override {}
};
DoneWork g_done;

dspp_status self_error(const char* what) {
  return host_api()->set_error(host_api()->self, DSPP_ERR_INVALID_ARGUMENT, what);
}

}  // namespace

namespace dist {

// The world of a single process: every collective over one rank is the identity (or a copy).
class SelfCommunicator final : public Communicator {
 public:
  int32_t rank() const noexcept override { return 0; }
  int32_t size() const noexcept override { return 1; }
  dspp_status split(const int32_t* ranks, int32_t n, const char*,
                    Communicator** out) noexcept override {
    *out = nullptr;
    if (n == 1 && ranks[0] == 0) *out = new (std::nothrow) SelfCommunicator();
    return DSPP_OK;
  }
  void release() noexcept override { delete this; }
  dspp_status all_reduce(dspp_tensor_view, int32_t, CommWork** work) noexcept override {
    *work = &g_done;
    return DSPP_OK;
  }
  dspp_status reduce_scatter(dspp_tensor_view in, dspp_tensor_view out, int32_t,
                             CommWork** work) noexcept override {
    return copy(in, out, work);
  }
  dspp_status all_gather(dspp_tensor_view in, dspp_tensor_view out,
                         CommWork** work) noexcept override {
    return copy(in, out, work);
  }
  dspp_status broadcast(dspp_tensor_view, int32_t, CommWork** work) noexcept override {
    *work = &g_done;
    return DSPP_OK;
  }
  dspp_status send(dspp_tensor_view, int32_t, int32_t, CommWork**) noexcept override {
    return self_error("send: a one-rank group has no peer");
  }
  dspp_status recv(dspp_tensor_view, int32_t, int32_t, CommWork**) noexcept override {
    return self_error("recv: a one-rank group has no peer");
  }
  dspp_status barrier() noexcept override { return DSPP_OK; }
  dspp_status reduce(dspp_tensor_view, int32_t, int32_t, CommWork** work) noexcept override {
    *work = &g_done;
    return DSPP_OK;
  }

 private:
  // Host or device memory (a device copy is ordered on the legacy default stream).
  static dspp_status copy(dspp_tensor_view in, dspp_tensor_view out, CommWork** work) {
    if (bytes_of(in) != bytes_of(out)) return self_error("in and out differ in size");
    const auto n = static_cast<size_t>(bytes_of(in));
    if (in.data != out.data && n > 0) {
      if (in.device.type == DSPP_DEVICE_CPU && out.device.type == DSPP_DEVICE_CPU) {
        std::memmove(out.data, in.data, n);
      } else {
        try {
          device::copy_bytes(out.data, out.device, in.data, in.device, n);
        } catch (const std::exception& e) {
          return host_api()->set_error(host_api()->self, DSPP_ERR_RUNTIME, e.what());
        }
      }
    }
    *work = &g_done;
    return DSPP_OK;
  }
};

std::shared_ptr<Communicator> make_self_communicator() {
  return std::shared_ptr<Communicator>(new SelfCommunicator(),
                                       [](Communicator* c) { c->release(); });
}

}  // namespace dist

// Forwards to the plugin's communicator, counting calls and bytes, and adds to a failure's
// message which rank the store saw disappear.
struct ProcessGroup::Counting final : public Communicator {
  Counting(std::string group, std::shared_ptr<Communicator> c) : name(std::move(group)) {
    inner = std::move(c);
  }

  // Wraps the plugin's work so a failure seen at wait() is explained too, and so the comms
  // logger sees when the operation completed.
  struct Work final : public CommWork {
    Counting* owner = nullptr;
    CommWork* inner = nullptr;
    const char* op = "";
    int64_t bytes = 0;
    Clock::time_point start{};  // set only while the comms logger is on
    dspp_status wait() noexcept override {
      const dspp_status s = owner->explain(inner->wait(), op);
      if (s == DSPP_OK && start != Clock::time_point{}) {
        owner->record(op, bytes, start);
        start = {};  // a second wait() is not a second operation
      }
      return s;
    }
    void release() noexcept override {
      inner->release();
      delete this;
    }
  };

  dspp_status explain(dspp_status s, const char* op) noexcept {
    if (s == DSPP_OK) return s;
    try {
      std::string msg = "group '" + name + "' " + op + ": " + last_plugin_error();
      std::string lost = dist::describe_lost_ranks();
      if (!lost.empty()) msg += " [" + lost + "]";
      return host_api()->set_error(host_api()->self, s, msg.c_str());
    } catch (...) {
      return s;
    }
  }

  // The issue time of an operation when the comms logger is on; the epoch (no timing) when off.
  Clock::time_point start_time() const noexcept {
    return logging.load(std::memory_order_relaxed) ? Clock::now() : Clock::time_point{};
  }

  // One completed operation for the comms logger: latency from issue to completion.
  void record(const char* op, int64_t bytes, Clock::time_point start) noexcept {
    try {
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      std::string line;
      {
        std::lock_guard<std::mutex> lock(mu);
        const auto& ops = log_options.prof_ops;
        if (!log_options.prof_all && std::find(ops.begin(), ops.end(), op) == ops.end()) return;
        const CommBandwidth bw = comm_bandwidth(op, bytes, ms, inner->size());
        CommRecord& r = records[op][bytes];
        ++r.count;
        r.latency_ms.push_back(ms);
        r.algbw_gbps.push_back(bw.algbw_gbps);
        r.busbw_gbps.push_back(bw.busbw_gbps);
        if (log_options.verbose && log_options.lead) {
          // DeepSpeed's CommsLogger.append line.
          std::ostringstream o;
          o << std::fixed << std::setprecision(2) << "comm op: " << op << " | time (ms): " << ms
            << " | msg size: " << format_message_size(bytes) << " | algbw (Gbps): " << bw.algbw_gbps
            << " | busbw (Gbps): " << bw.busbw_gbps;
          line = o.str();
        }
      }
      if (!line.empty()) log::info("comms", line);
    } catch (...) {
      // A record lost to a failed allocation must not fail the collective.
    }
  }

  dspp_status wrap(dspp_status s, const char* op, int64_t bytes, CommWork** work,
                   Clock::time_point start) noexcept {
    if (s != DSPP_OK) return explain(s, op);
    {
      std::lock_guard<std::mutex> lock(mu);
      CommCounter& c = counters[op];
      ++c.calls;
      c.bytes += bytes;
    }
    if (*work == &g_done) {  // complete already (a group of one)
      if (start != Clock::time_point{}) record(op, bytes, start);
      return s;
    }
    Work* w = new (std::nothrow) Work();
    if (!w) {
      (*work)->release();
      return host_api()->set_error(host_api()->self, DSPP_ERR_OUT_OF_MEMORY, "comm work handle");
    }
    w->owner = this;
    w->inner = *work;
    w->op = op;
    w->bytes = bytes;
    w->start = start;
    *work = w;
    return s;
  }

  int32_t rank() const noexcept override { return inner->rank(); }
  int32_t size() const noexcept override { return inner->size(); }
  dspp_status split(const int32_t* ranks, int32_t n, const char* tag,
                    Communicator** out) noexcept override {
    return explain(inner->split(ranks, n, tag, out), "split");
  }
  void release() noexcept override {}  // owned by the ProcessGroup
  dspp_status all_reduce(dspp_tensor_view buf, int32_t op, CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    return wrap(inner->all_reduce(buf, op, work), "all_reduce", bytes_of(buf), work, t0);
  }
  dspp_status reduce_scatter(dspp_tensor_view in, dspp_tensor_view out, int32_t op,
                             CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    return wrap(inner->reduce_scatter(in, out, op, work), "reduce_scatter", bytes_of(in), work, t0);
  }
  dspp_status all_gather(dspp_tensor_view in, dspp_tensor_view out,
                         CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    return wrap(inner->all_gather(in, out, work), "all_gather", bytes_of(out), work, t0);
  }
  dspp_status broadcast(dspp_tensor_view buf, int32_t root, CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    return wrap(inner->broadcast(buf, root, work), "broadcast", bytes_of(buf), work, t0);
  }
  dspp_status send(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    return wrap(inner->send(buf, peer, tag, work), "send", bytes_of(buf), work, t0);
  }
  dspp_status recv(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    return wrap(inner->recv(buf, peer, tag, work), "recv", bytes_of(buf), work, t0);
  }
  dspp_status reduce(dspp_tensor_view buf, int32_t root, int32_t op,
                     CommWork** work) noexcept override {
    const Clock::time_point t0 = start_time();
    const dspp_status s = inner->reduce(buf, root, op, work);
    if (s == DSPP_ERR_NOT_SUPPORTED && !*work) return s;  // optional: the caller falls back
    return wrap(s, "reduce", bytes_of(buf), work, t0);
  }
  dspp_status barrier() noexcept override {
    const Clock::time_point t0 = start_time();
    dspp_status s = explain(inner->barrier(), "barrier");
    if (s == DSPP_OK) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++counters["barrier"].calls;
      }
      if (t0 != Clock::time_point{}) record("barrier", 0, t0);
    }
    return s;
  }

  std::string name;
  std::shared_ptr<Communicator> inner;
  mutable std::mutex mu;
  CommStats counters;
  // The comms logger: `logging` is read without the lock on every call (off: no clock read).
  std::atomic<bool> logging{false};
  CommsLogOptions log_options;
  CommRecords records;
};

ProcessGroup::ProcessGroup(std::string name, std::vector<int> global_ranks, int rank,
                           std::shared_ptr<Communicator> comm)
    : name_(std::move(name)), ranks_(std::move(global_ranks)), rank_(rank) {
  if (!comm || comm->size() != static_cast<int32_t>(ranks_.size()) || comm->rank() != rank) {
    throw Error(Errc::kRuntime,
                "process group '" + name_ + "': the communicator does not match its ranks");
  }
  counting_ = std::make_unique<Counting>(name_, std::move(comm));
}

ProcessGroup::~ProcessGroup() = default;

Communicator* ProcessGroup::comm() const {
  return counting_.get();
}

namespace {

// Issues, waits and releases; the message already names the group and the operation.
void run(dspp_status s, CommWork*& work) {  // by reference: read after the call sets it
  const char* what = "collective";
  check_plugin(s, what);
  dspp_status w = work->wait();
  work->release();
  check_plugin(w, what);
}

}  // namespace

namespace {

// comm/nccl moves GPU memory only: a host tensor of the core's own collectives goes through a
// copy on the compute device (and back when it is written).
bool staged(const Tensor& t) {
  return t.defined() && t.device().type == DSPP_DEVICE_CPU && dist::comm_needs_device_memory() &&
         current_device().type == DSPP_DEVICE_CUDA;
}

// The device copy a staged tensor goes through (counted as a comm buffer by the allocator).
Tensor on_comm_device(const Tensor& t) {
  plugin::MemoryCategory tag(host_api(), DSPP_MEM_COMM_BUFFERS);
  return t.to(current_device());
}

}  // namespace

void ProcessGroup::all_reduce(const Tensor& t, ReduceOp op) {
  if (staged(t)) {
    Tensor d = on_comm_device(t);
    all_reduce(d, op);
    Tensor(t).copy_from(d);
    return;
  }
  CommWork* w = nullptr;
  run(comm()->all_reduce(t.view(), op, &w), w);
}

void ProcessGroup::broadcast(const Tensor& t, int root) {
  if (staged(t)) {
    Tensor d = on_comm_device(t);
    broadcast(d, root);
    Tensor(t).copy_from(d);
    return;
  }
  CommWork* w = nullptr;
  run(comm()->broadcast(t.view(), root, &w), w);
}

void ProcessGroup::all_gather(const Tensor& in, const Tensor& out) {
  if (staged(in) || staged(out)) {
    Tensor o = on_comm_device(out);
    all_gather(on_comm_device(in), o);
    Tensor(out).copy_from(o);
    return;
  }
  CommWork* w = nullptr;
  run(comm()->all_gather(in.view(), out.view(), &w), w);
}

void ProcessGroup::reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  if (staged(in) || staged(out)) {
    Tensor o = on_comm_device(out);
    reduce_scatter(on_comm_device(in), o, op);
    Tensor(out).copy_from(o);
    return;
  }
  CommWork* w = nullptr;
  run(comm()->reduce_scatter(in.view(), out.view(), op, &w), w);
}

void ProcessGroup::barrier() {
  check_plugin(comm()->barrier(), "collective");
}

double ProcessGroup::all_reduce(double value, ReduceOp op) {
  Tensor t = Tensor::empty({1}, DSPP_F64);
  *t.data<double>() = value;
  all_reduce(t, op);
  return *t.data<double>();
}

CommStats ProcessGroup::stats() const {
  std::lock_guard<std::mutex> lock(counting_->mu);
  return counting_->counters;
}

void ProcessGroup::reset_stats() {
  std::lock_guard<std::mutex> lock(counting_->mu);
  counting_->counters.clear();
}

void ProcessGroup::set_comms_logging(const CommsLogOptions& options) {
  std::lock_guard<std::mutex> lock(counting_->mu);
  counting_->log_options = options;
  counting_->logging.store(options.enabled, std::memory_order_relaxed);
}

CommRecords ProcessGroup::comms_records() const {
  std::lock_guard<std::mutex> lock(counting_->mu);
  return counting_->records;
}

void ProcessGroup::reset_comms_records() {
  std::lock_guard<std::mutex> lock(counting_->mu);
  counting_->records.clear();
}

CommBandwidth comm_bandwidth(const std::string& op, int64_t bytes, double ms, int n) {
  CommBandwidth bw;
  if (ms <= 0.0 || n <= 0) return bw;
  const double per_ms = static_cast<double>(bytes) / ms;
  const double nn = static_cast<double>(n);
  if (op == "all_reduce") {
    bw.algbw_gbps = 2.0 * per_ms;  // DeepSpeed counts both directions in "tput"
    bw.busbw_gbps = per_ms * 2.0 * (nn - 1.0) / nn;
  } else if (op == "all_gather" || op == "reduce_scatter") {
    // DeepSpeed multiplies its message size (the shard) by n; ours is the full buffer already.
    bw.algbw_gbps = per_ms;
    bw.busbw_gbps = per_ms * (nn - 1.0) / nn;
  } else {  // broadcast, reduce, send, recv, barrier
    bw.algbw_gbps = per_ms;
    bw.busbw_gbps = per_ms;
  }
  // bytes per ms -> Gbps, DeepSpeed's "* 8 / 1e6".
  bw.algbw_gbps = bw.algbw_gbps * 8.0 / 1e6;
  bw.busbw_gbps = bw.busbw_gbps * 8.0 / 1e6;
  return bw;
}

std::string format_message_size(int64_t bytes) {
  if (bytes <= 0) return "0B";
  static const char* const kUnits[] = {"B", "KB", "MB", "GB", "TB", "PB", "EB"};
  const double b = static_cast<double>(bytes);
  const int i = std::min(6, static_cast<int>(std::floor(std::log(b) / std::log(1024.0))));
  const double s = std::round(b / std::pow(1024.0, i) * 100.0) / 100.0;  // Python's round(x, 2)
  return monitor::python_float(s) + " " + kUnits[i];
}

namespace {

// DeepSpeed's trim_mean(data, 0.1): drop round(n * 0.1) values at each end of the sorted data
// (Python's round: half to even, as nearbyint in the default rounding mode).
double trim_mean(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const auto n = static_cast<int64_t>(v.size());
  const auto k = static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * 0.1));
  if (n - 2 * k <= 0) return 0.0;
  const double sum = std::accumulate(v.begin() + k, v.end() - k, 0.0);
  return sum / static_cast<double>(n - 2 * k);
}

// Python's f"{x: <20}": left-aligned in 20 columns, never cut.
std::string cell(const std::string& s) {
  return s.size() >= 20 ? s : s + std::string(20 - s.size(), ' ');
}

std::string cell(double v) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(2) << v;
  return cell(o.str());
}

}  // namespace

std::string format_comms_summary(const CommRecords& records) {
  std::ostringstream out;
  out << cell("Comm. Op") << cell("Message Size") << cell("Count") << cell("Total Latency(ms)")
      << cell("Avg Latency(ms)") << cell("tput_avg (Gbps)") << cell("busbw_avg (Gbps)") << "\n";
  for (const auto& [op, sizes] : records) {
    out << op << "\n";
    for (const auto& [bytes, r] : sizes) {
      const double total = std::accumulate(r.latency_ms.begin(), r.latency_ms.end(), 0.0);
      out << cell(" ") << cell(format_message_size(bytes)) << cell(std::to_string(r.count))
          << cell(total) << cell(trim_mean(r.latency_ms)) << cell(trim_mean(r.algbw_gbps))
          << cell(trim_mean(r.busbw_gbps)) << "\n";
    }
  }
  return out.str();
}

}  // namespace dspp
