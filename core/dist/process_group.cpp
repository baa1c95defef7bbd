// ProcessGroup: a communicator plus the counting layer every collective goes through (the comms
// logger and the ZeRO volume checks read it), and the one-rank communicator a single process uses.
#include <dspp/dist.h>
#include <dspp/error.h>
#include <dspp/plugins.h>

#include <cstring>
#include <mutex>

#include "dist/world.h"

namespace dspp {
namespace {

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
  static dspp_status copy(dspp_tensor_view in, dspp_tensor_view out, CommWork** work) {
    if (bytes_of(in) != bytes_of(out)) return self_error("in and out differ in size");
    if (in.data != out.data) std::memmove(out.data, in.data, static_cast<size_t>(bytes_of(in)));
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

  // Wraps the plugin's work so a failure seen at wait() is explained too.
  struct Work final : public CommWork {
    Counting* owner = nullptr;
    CommWork* inner = nullptr;
    const char* op = "";
    dspp_status wait() noexcept override { return owner->explain(inner->wait(), op); }
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

  dspp_status wrap(dspp_status s, const char* op, int64_t bytes, CommWork** work) noexcept {
    if (s != DSPP_OK) return explain(s, op);
    {
      std::lock_guard<std::mutex> lock(mu);
      CommCounter& c = counters[op];
      ++c.calls;
      c.bytes += bytes;
    }
    if (*work == &g_done) return s;
    Work* w = new (std::nothrow) Work();
    if (!w) {
      (*work)->release();
      return host_api()->set_error(host_api()->self, DSPP_ERR_OUT_OF_MEMORY, "comm work handle");
    }
    w->owner = this;
    w->inner = *work;
    w->op = op;
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
    return wrap(inner->all_reduce(buf, op, work), "all_reduce", bytes_of(buf), work);
  }
  dspp_status reduce_scatter(dspp_tensor_view in, dspp_tensor_view out, int32_t op,
                             CommWork** work) noexcept override {
    return wrap(inner->reduce_scatter(in, out, op, work), "reduce_scatter", bytes_of(in), work);
  }
  dspp_status all_gather(dspp_tensor_view in, dspp_tensor_view out,
                         CommWork** work) noexcept override {
    return wrap(inner->all_gather(in, out, work), "all_gather", bytes_of(out), work);
  }
  dspp_status broadcast(dspp_tensor_view buf, int32_t root, CommWork** work) noexcept override {
    return wrap(inner->broadcast(buf, root, work), "broadcast", bytes_of(buf), work);
  }
  dspp_status send(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   CommWork** work) noexcept override {
    return wrap(inner->send(buf, peer, tag, work), "send", bytes_of(buf), work);
  }
  dspp_status recv(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   CommWork** work) noexcept override {
    return wrap(inner->recv(buf, peer, tag, work), "recv", bytes_of(buf), work);
  }
  dspp_status reduce(dspp_tensor_view buf, int32_t root, int32_t op,
                     CommWork** work) noexcept override {
    const dspp_status s = inner->reduce(buf, root, op, work);
    if (s == DSPP_ERR_NOT_SUPPORTED && !*work) return s;  // optional: the caller falls back
    return wrap(s, "reduce", bytes_of(buf), work);
  }
  dspp_status barrier() noexcept override {
    dspp_status s = explain(inner->barrier(), "barrier");
    if (s == DSPP_OK) {
      std::lock_guard<std::mutex> lock(mu);
      ++counters["barrier"].calls;
    }
    return s;
  }

  std::string name;
  std::shared_ptr<Communicator> inner;
  mutable std::mutex mu;
  CommStats counters;
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

void ProcessGroup::all_reduce(const Tensor& t, ReduceOp op) {
  CommWork* w = nullptr;
  run(comm()->all_reduce(t.view(), op, &w), w);
}

void ProcessGroup::broadcast(const Tensor& t, int root) {
  CommWork* w = nullptr;
  run(comm()->broadcast(t.view(), root, &w), w);
}

void ProcessGroup::all_gather(const Tensor& in, const Tensor& out) {
  CommWork* w = nullptr;
  run(comm()->all_gather(in.view(), out.view(), &w), w);
}

void ProcessGroup::reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
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

}  // namespace dspp
