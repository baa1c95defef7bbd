// comm/gloo: dspp's CPU communicator over Gloo's TCP transport (Debian's libgloo).
//
// init_world: one Gloo TCP device bound to CommInitArgs::local_addr, a gloo::rendezvous::Store over
// the host's KvStore (every key under args->prefix; waits poll KvStore::check with backoff and give
// up after args->timeout_ms naming the ranks that never published their address), and a full mesh
// of pairs. split() builds a new mesh among the members on the same device, under
// prefix/split/<tag>/<ranks>/<n> (n counts splits with that tag and list, so a repeated split
// gets fresh keys). The KvStore must therefore stay valid while any communicator of the world
// lives.
//
// Algorithms: all_reduce is Gloo's ring allreduce (gloo/allreduce.h) with our own element-wise
// function per dtype and op, so f16 and bf16 reduce through float with round-to-nearest-even;
// all_gather is Gloo's ring allgather, broadcast Gloo's binomial tree, barrier Gloo's barrier.
// reduce_scatter is our own ring over unbound buffers (see ring_reduce_scatter): bandwidth-optimal,
// where an all_reduce plus a copy would move twice the bytes. send/recv are unbound-buffer
// transfers on a slot made from the tag.
//
// Asynchrony: each communicator has one worker thread running its operations in issue order from a
// FIFO queue. Collectives run to completion on the worker. A send or recv is only *posted* there
// (Gloo moves the bytes when both sides have posted), and a second thread waits for posted
// transfers in order: so a rank may issue send-then-recv while its neighbour does the same (a
// ring) without deadlock. A failed operation closes the communicator's connections (its peers then
// fail fast instead of waiting for their timeout) and poisons it: every later operation fails
// with the first error. Argument errors are reported at issue time and change nothing: every
// rank issuing the same call is refused the same way, so the ranks' sequences stay aligned.
#include <dspp/kinds/comm.h>
#include <dspp/plugin.h>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "reduce.h"

namespace {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
using dspp::plugin::StatusError;
using dspp_gloo::DtypeInfo;
using dspp_gloo::ReduceFn;
using UnboundBuffer = gloo::transport::UnboundBuffer;

// Slot prefixes of our own transfers; Gloo's collectives use 0x01..0x08 (gloo/types.h).
constexpr uint64_t kSlotReduceScatter = 0x40;
constexpr uint64_t kSlotP2P = 0x41;
uint64_t make_slot(uint64_t prefix, uint32_t tag) {
  return (prefix << 56) | tag;
}

// Each ring step is cut into segments of this size: posted together, reduced as they arrive.
constexpr size_t kSegmentBytes = 256 * 1024;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A Gloo failure as a status: timeouts (ours, or a pair Gloo closed because of one) are
// DSPP_ERR_TIMEOUT, everything else on the wire DSPP_ERR_COMM.
dspp_status status_of_gloo(const std::string& text) {
  const std::string t = lower(text);
  return (t.find("timed out") != std::string::npos || t.find("timeout") != std::string::npos)
             ? DSPP_ERR_TIMEOUT
             : DSPP_ERR_COMM;
}

// Runs the current exception through the mapping above; `what` names the operation.
std::pair<dspp_status, std::string> describe_current(const std::string& what) {
  try {
    throw;
  } catch (const StatusError& e) {
    return {e.code(), what + ": " + e.what()};
  } catch (const gloo::Exception& e) {
    return {status_of_gloo(e.what()), what + ": " + e.what()};
  } catch (const std::bad_alloc&) {
    return {DSPP_ERR_OUT_OF_MEMORY, what + ": out of memory"};
  } catch (const std::exception& e) {
    return {DSPP_ERR_RUNTIME, what + ": " + e.what()};
  } catch (...) {
    return {DSPP_ERR_INTERNAL, what + ": unknown exception"};
  }
}

Millis remaining(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  return std::max(left, Millis(1));
}

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// ---- the store Gloo rendezvouses through ----------------------------------------------------

class KvGlooStore final : public gloo::rendezvous::Store {
 public:
  // `members` maps the group's ranks to global ranks, to name a rank that never arrived.
  KvGlooStore(const dspp::KvStore* kv, std::string prefix, Millis timeout,
              std::vector<int32_t> members)
      : kv_(kv), prefix_(std::move(prefix)), timeout_(timeout), members_(std::move(members)) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    const std::string k = full(key);
    check(kv_->set(kv_->self, k.c_str(), data.data(), data.size()), "set", k);
  }

  std::vector<char> get(const std::string& key) override {
    wait({key}, timeout_);
    const std::string k = full(key);
    const void* value = nullptr;
    size_t len = 0;
    check(kv_->get(kv_->self, k.c_str(), &value, &len), "get", k);
    const char* p = static_cast<const char*>(value);
    return std::vector<char>(p, p + len);
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    const Millis limit = t.count() > 0 ? std::min<Millis>(t, timeout_) : timeout_;
    const auto deadline = Clock::now() + limit;
    std::vector<std::string> missing = keys;
    Millis pause(1);
    while (true) {
      std::vector<std::string> still;
      for (const std::string& key : missing) {
        int32_t exists = 0;
        const std::string k = full(key);
        check(kv_->check(kv_->self, k.c_str(), &exists), "check", k);
        if (!exists) still.push_back(key);
      }
      missing.swap(still);
      if (missing.empty()) return;
      if (Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::min(pause, remaining(deadline)));
      pause = std::min(pause * 2, Millis(50));
    }
    std::string keys_text, ranks_text;
    for (const std::string& key : missing) {
      keys_text += (keys_text.empty() ? "'" : ", '") + full(key) + "'";
      // Gloo's TCP rendezvous publishes each rank's addresses under "<group rank>" (newer
      // Gloo: "rank_<group rank>").
      const std::string digits = key.rfind("rank_", 0) == 0 ? key.substr(5) : key;
      if (!digits.empty() && digits.size() < 9 &&
          std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        const size_t r = std::stoul(digits);
        if (r < members_.size()) {
          ranks_text += (ranks_text.empty() ? "" : ", ") + std::to_string(members_[r]);
        }
      }
    }
    std::string msg = "rendezvous timed out after " + std::to_string(limit.count()) + " ms";
    if (!ranks_text.empty()) msg += ": rank(s) " + ranks_text + " never arrived";
    msg += " (missing store key(s) " + keys_text + ")";
    throw StatusError(DSPP_ERR_TIMEOUT, msg);
  }

 private:
  std::string full(const std::string& key) const { return prefix_ + "/" + key; }
  static void check(dspp_status st, const char* op, const std::string& key) {
    if (st == DSPP_OK) return;
    throw StatusError(st == DSPP_ERR_TIMEOUT ? DSPP_ERR_TIMEOUT : DSPP_ERR_COMM,
                      std::string("the rendezvous store's ") + op + " of key '" + key +
                          "' failed (status " + std::to_string(st) + ")");
  }

  const dspp::KvStore* kv_;
  std::string prefix_;
  Millis timeout_;
  std::vector<int32_t> members_;
};

// ---- what every communicator of one world shares -------------------------------------------

struct World {
  const dspp_host_api* host = nullptr;
  const dspp::KvStore* store = nullptr;
  std::string prefix;
  Millis timeout{0};
  std::shared_ptr<gloo::transport::Device> device;

  std::mutex split_mutex;
  std::map<std::string, int> split_counts;
  std::string next_split_key(const std::string& base) {
    std::lock_guard<std::mutex> lock(split_mutex);
    return base + "/" + std::to_string(split_counts[base]++);
  }
};

// A connected Gloo context and, per group rank, the address its device listens on ("[ip]:port",
// as Gloo's messages print a peer), so a failure Gloo reports by address can name the rank.
struct Connected {
  std::shared_ptr<gloo::Context> ctx;
  std::vector<std::string> addresses;
};

// Connects `members` (global ranks); `index` is ours among them.
Connected connect(World& world, const std::string& key_prefix, int index,
                  const std::vector<int32_t>& members, const std::string& what) {
  const int n = static_cast<int>(members.size());
  Connected c;
  auto ctx = std::make_shared<gloo::rendezvous::Context>(index, n);
  ctx->setTimeout(world.timeout);
  KvGlooStore store(world.store, key_prefix, world.timeout, members);
  try {
    ctx->connectFullMesh(store, world.device);
    c.addresses.resize(static_cast<size_t>(n));
    if (n > 1) {
      std::string mine = ctx->getPair(index == 0 ? 1 : 0)->address().str();
      mine = mine.substr(0, mine.find('$'));  // drop the pair's sequence number, if printed
      store.set("addr/" + std::to_string(index), std::vector<char>(mine.begin(), mine.end()));
      for (int i = 0; i < n; ++i) {
        if (i == index) continue;
        const std::vector<char> a = store.get("addr/" + std::to_string(i));
        c.addresses[i].assign(a.begin(), a.end());
      }
    }
  } catch (...) {
    auto [st, msg] = describe_current(what + ": connecting rank " + std::to_string(index) + " of " +
                                      std::to_string(n) + " to its peers failed");
    throw StatusError(st, msg);
  }
  c.ctx = std::move(ctx);
  return c;
}

// ---- work handles --------------------------------------------------------------------------

struct WorkState {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  dspp_status status = DSPP_OK;
  std::string message;

  void finish(dspp_status s, std::string msg) {
    {
      std::lock_guard<std::mutex> lock(m);
      status = s;
      message = std::move(msg);
      done = true;
    }
    cv.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done; });
  }
};

class Work final : public dspp::CommWork {
 public:
  Work(const dspp_host_api* host, std::shared_ptr<WorkState> state)
      : host_(host), state_(std::move(state)) {}

  dspp_status wait() noexcept override {
    state_->wait();
    if (state_->status == DSPP_OK) return DSPP_OK;
    // Set on the waiting thread: the host's error message is per thread.
    return host_->set_error(host_->self, state_->status, state_->message.c_str());
  }
  void release() noexcept override {
    state_->wait();
    delete this;
  }

 private:
  const dspp_host_api* host_;
  std::shared_ptr<WorkState> state_;
};

// ---- the communicator ----------------------------------------------------------------------

struct View {
  char* data = nullptr;
  int32_t dtype = 0;
  DtypeInfo info{};
  size_t numel = 0;
  size_t bytes() const { return numel * info.size; }
};

class GlooComm final : public dspp::Communicator {
 public:
  GlooComm(std::shared_ptr<World> world, Connected connected, std::vector<int32_t> members,
           int32_t index, std::string name)
      : world_(std::move(world)),
        host_(world_->host),
        ctx_(std::move(connected.ctx)),
        addresses_(std::move(connected.addresses)),
        members_(std::move(members)),
        index_(index),
        name_(std::move(name)) {
    worker_ = std::thread([this] { worker_loop(); });
    completer_ = std::thread([this] { completer_loop(); });
  }

  int32_t rank() const noexcept override { return index_; }
  int32_t size() const noexcept override { return static_cast<int32_t>(members_.size()); }

  dspp_status split(const int32_t* ranks, int32_t n, const char* tag,
                    Communicator** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument(prefix("split") + "out is NULL");
      *out = nullptr;
      throw_if_failed("split");
      if (!ranks || n < 1) {
        throw std::invalid_argument(prefix("split") +
                                    "needs at least one rank (got n = " + std::to_string(n) + ")");
      }
      const std::string tag_text = tag ? tag : "";
      std::vector<int32_t> list(ranks, ranks + n);
      int32_t my_index = -1;
      for (int32_t i = 0; i < n; ++i) {
        if (std::find(members_.begin(), members_.end(), list[i]) == members_.end()) {
          throw std::invalid_argument(prefix("split") + "rank " + std::to_string(list[i]) +
                                      " is not a member of this group [" + join(members_) + "]");
        }
        if (std::find(list.begin(), list.begin() + i, list[i]) != list.begin() + i) {
          throw std::invalid_argument(prefix("split") + "rank " + std::to_string(list[i]) +
                                      " is listed twice");
        }
        if (list[i] == members_[index_]) my_index = i;
      }
      if (my_index < 0) return;  // not a member: no group, nothing to wait for
      const std::string what = "comm/gloo split '" + tag_text + "' [" + join(list) + "]";
      const std::string key =
          world_->next_split_key(world_->prefix + "/split/" + tag_text + "/" + join(list));
      Connected c = connect(*world_, key, my_index, list, what);
      *out =
          new GlooComm(world_, std::move(c), std::move(list), my_index, "group '" + tag_text + "'");
    });
  }

  void release() noexcept override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();  // runs what is queued (fast once failed)
    {
      std::lock_guard<std::mutex> lock(p2p_mutex_);
      p2p_stop_ = true;
    }
    p2p_cv_.notify_all();
    completer_.join();
    delete this;
  }

  dspp_status all_reduce(dspp_tensor_view buf, int32_t op,
                         dspp::CommWork** work) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      const char* opn = "all_reduce";
      start(opn, work);
      View v = view(opn, "buf", buf);
      const ReduceFn fn = reduce_for(opn, op, v);
      const std::string what = describe(opn, v, std::string(", ") + dspp_gloo::op_name(op));
      enqueue(work, what, false, [this, v, op, fn](uint32_t tag, Clock::time_point deadline) {
        const int n = size();
        if (n == 1 || v.numel == 0) return;
        gloo::AllreduceOptions o(ctx_);
        with_storage(v.info.size, [&](auto t) {
          using T = decltype(t);
          o.setOutput<T>(reinterpret_cast<T*>(v.data), v.numel);
        });
        o.setReduceFunction(fn);
        o.setTag(tag);
        o.setTimeout(remaining(deadline));
        gloo::allreduce(o);
        if (op == dspp::kReduceAvg) dspp_gloo::divide_by(v.data, v.dtype, v.numel, n);
      });
    });
  }

  dspp_status reduce(dspp_tensor_view buf, int32_t root, int32_t op,
                     dspp::CommWork** work) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      const char* opn = "reduce";
      start(opn, work);
      View v = view(opn, "buf", buf);
      check_peer(opn, "root", root, true);
      const ReduceFn fn = reduce_for(opn, op, v);
      const std::string what = describe(
          opn, v, std::string(", ") + dspp_gloo::op_name(op) + ", root " + std::to_string(root));
      enqueue(work, what, false, [this, v, op, fn, root](uint32_t tag, Clock::time_point deadline) {
        const int n = size();
        if (n == 1 || v.numel == 0) return;
        // Gloo's reduce: a ring of reduce-scatter then a gather to the root.
        gloo::ReduceOptions o(ctx_);
        with_storage(v.info.size, [&](auto t) {
          using T = decltype(t);
          o.setOutput<T>(reinterpret_cast<T*>(v.data), v.numel);
        });
        o.setRoot(root);
        o.setReduceFunction(fn);
        o.setTag(tag);
        o.setTimeout(remaining(deadline));
        gloo::reduce(o);
        if (op == dspp::kReduceAvg && index_ == root) {
          dspp_gloo::divide_by(v.data, v.dtype, v.numel, n);
        }
      });
    });
  }

  dspp_status reduce_scatter(dspp_tensor_view in, dspp_tensor_view out, int32_t op,
                             dspp::CommWork** work) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      const char* opn = "reduce_scatter";
      start(opn, work);
      View vi = view(opn, "in", in);
      View vo = view(opn, "out", out);
      same_dtype(opn, vi, vo);
      const ReduceFn fn = reduce_for(opn, op, vi);
      const size_t n = static_cast<size_t>(size());
      if (vi.numel != n * vo.numel) {
        throw std::invalid_argument(prefix(opn) + "in has " + std::to_string(vi.numel) +
                                    " elements, which is not size() x out = " + std::to_string(n) +
                                    " x " + std::to_string(vo.numel));
      }
      // Only the NCCL-style in-place form may overlap: out is this rank's slice of in.
      if (overlap(vi, vo) && vo.data != vi.data + index_ * vo.bytes()) {
        throw std::invalid_argument(prefix(opn) +
                                    "out overlaps in other than as this rank's slice of it");
      }
      const std::string what =
          describe(opn, vo, std::string(" per rank, ") + dspp_gloo::op_name(op));
      enqueue(work, what, false, [this, vi, vo, op, fn](uint32_t tag, Clock::time_point deadline) {
        const int n = size();
        if (vo.numel == 0) return;
        if (n == 1) {
          if (vo.data != vi.data) std::memmove(vo.data, vi.data, vo.bytes());
          return;
        }
        ring_reduce_scatter(vi, vo, fn, make_slot(kSlotReduceScatter, tag), deadline);
        if (op == dspp::kReduceAvg) dspp_gloo::divide_by(vo.data, vo.dtype, vo.numel, n);
      });
    });
  }

  dspp_status all_gather(dspp_tensor_view in, dspp_tensor_view out,
                         dspp::CommWork** work) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      const char* opn = "all_gather";
      start(opn, work);
      View vi = view(opn, "in", in);
      View vo = view(opn, "out", out);
      same_dtype(opn, vi, vo);
      const size_t n = static_cast<size_t>(size());
      if (vo.numel != n * vi.numel) {
        throw std::invalid_argument(prefix(opn) + "out has " + std::to_string(vo.numel) +
                                    " elements, which is not size() x in = " + std::to_string(n) +
                                    " x " + std::to_string(vi.numel));
      }
      if (overlap(vi, vo) && vi.data != vo.data + index_ * vi.bytes()) {
        throw std::invalid_argument(prefix(opn) +
                                    "in overlaps out other than as this rank's slice of it");
      }
      const std::string what = describe(opn, vi, " per rank");
      enqueue(work, what, false, [this, vi, vo](uint32_t tag, Clock::time_point deadline) {
        if (vi.numel == 0) return;
        if (size() == 1) {
          if (vo.data != vi.data) std::memmove(vo.data, vi.data, vi.bytes());
          return;
        }
        // In place (in is our slice of out): Gloo copies in into out, so give it a copy.
        std::vector<char> copy;
        char* src = vi.data;
        if (overlap(vi, vo)) {
          copy.assign(vi.data, vi.data + vi.bytes());
          src = copy.data();
        }
        gloo::AllgatherOptions o(ctx_);
        with_storage(vi.info.size, [&](auto t) {
          using T = decltype(t);
          o.setInput<T>(reinterpret_cast<T*>(src), vi.numel);
          o.setOutput<T>(reinterpret_cast<T*>(vo.data), vo.numel);
        });
        o.setTag(tag);
        o.setTimeout(remaining(deadline));
        gloo::allgather(o);
      });
    });
  }

  dspp_status broadcast(dspp_tensor_view buf, int32_t root,
                        dspp::CommWork** work) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      const char* opn = "broadcast";
      start(opn, work);
      View v = view(opn, "buf", buf);
      check_peer(opn, "root", root, true);
      const std::string what = describe(opn, v, ", root " + std::to_string(root));
      enqueue(work, what, false, [this, v, root](uint32_t tag, Clock::time_point deadline) {
        if (size() == 1 || v.numel == 0) return;
        gloo::BroadcastOptions o(ctx_);
        with_storage(v.info.size, [&](auto t) {
          using T = decltype(t);
          o.setOutput<T>(reinterpret_cast<T*>(v.data), v.numel);
        });
        o.setRoot(root);
        o.setTag(tag);
        o.setTimeout(remaining(deadline));
        gloo::broadcast(o);
      });
    });
  }

  dspp_status send(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   dspp::CommWork** work) noexcept override {
    return p2p("send", buf, peer, tag, work, true);
  }

  dspp_status recv(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   dspp::CommWork** work) noexcept override {
    return p2p("recv", buf, peer, tag, work, false);
  }

  dspp_status barrier() noexcept override {
    auto state = std::make_shared<WorkState>();
    dspp_status st = dspp::plugin::guard(host_, [&] {
      throw_if_failed("barrier");
      push(Op{describe_group("barrier"),
              state,
              false,
              [this](uint32_t tag, Clock::time_point deadline) {
                if (size() == 1) return;
                gloo::BarrierOptions o(ctx_);
                o.setTag(tag);
                o.setTimeout(remaining(deadline));
                gloo::barrier(o);
              },
              {}});
    });
    if (st != DSPP_OK) return st;
    return Work(host_, state).wait();
  }

 private:
  // run(tag, deadline): a collective runs to completion; a send/recv only posts and returns the
  // wait that completes it (run by the completer thread).
  using Finish = std::function<void(Clock::time_point deadline)>;
  struct Op {
    std::string what;
    std::shared_ptr<WorkState> state;
    bool p2p = false;
    std::function<void(uint32_t tag, Clock::time_point deadline)> run;
    std::function<Finish(Clock::time_point deadline)> post;
  };
  struct Posted {
    std::string what;
    std::shared_ptr<WorkState> state;
    Finish finish;
    Clock::time_point deadline;
  };

  ~GlooComm() = default;

  // ---- issue-time checks ----

  std::string describe_group(const std::string& opn) const {
    std::string s = "comm/gloo " + opn + " on rank " + std::to_string(index_) + " of " + name_ +
                    " (" + std::to_string(members_.size()) + " ranks";
    if (name_ != "world") s += ": [" + join(members_) + "]";
    return s + ")";
  }
  std::string prefix(const std::string& opn) const { return "comm/gloo " + opn + ": "; }
  std::string describe(const std::string& opn, const View& v, const std::string& extra) const {
    return describe_group(opn + "(" + v.info.name + " x " + std::to_string(v.numel) + extra + ")");
  }
  std::string peer_name(int32_t peer) const {
    std::string s = "rank " + std::to_string(peer);
    if (name_ != "world" && peer >= 0 && peer < size()) {
      s += " (global rank " + std::to_string(members_[peer]) + ")";
    }
    return s;
  }

  void start(const char* opn, dspp::CommWork** work) {
    if (!work) throw std::invalid_argument(prefix(opn) + "work is NULL");
    *work = nullptr;
    throw_if_failed(opn);
  }

  void throw_if_failed(const std::string& opn) {
    std::lock_guard<std::mutex> lock(fail_mutex_);
    if (failed_) {
      throw StatusError(fail_status_,
                        prefix(opn) + "this communicator failed earlier: " + fail_message_);
    }
  }

  View view(const char* opn, const char* arg, const dspp_tensor_view& t) const {
    View v;
    if (t.device.type != DSPP_DEVICE_CPU) {
      throw std::invalid_argument(prefix(opn) + arg + " is on device type " +
                                  std::to_string(t.device.type) +
                                  ", but comm/gloo moves host (CPU) memory only");
    }
    if (!dspp_gloo::dtype_info(t.dtype, &v.info)) {
      throw std::invalid_argument(prefix(opn) + arg + " has dtype " + std::to_string(t.dtype) +
                                  ", which comm/gloo does not support (f32, f64, f16, bf16, i32, "
                                  "i64, u8)");
    }
    if (t.ndim < 0 || t.ndim > DSPP_MAX_DIMS) {
      throw std::invalid_argument(prefix(opn) + arg + " has ndim " + std::to_string(t.ndim));
    }
    size_t numel = 1;
    for (int32_t d = 0; d < t.ndim; ++d) {
      if (t.shape[d] < 0) {
        throw std::invalid_argument(prefix(opn) + arg + " has a negative dimension");
      }
      numel *= static_cast<size_t>(t.shape[d]);
    }
    if (numel > 0 && !t.data) throw std::invalid_argument(prefix(opn) + arg + " has no data");
    v.data = static_cast<char*>(t.data);
    v.dtype = t.dtype;
    v.numel = numel;
    return v;
  }

  void same_dtype(const char* opn, const View& in, const View& out) const {
    if (in.dtype != out.dtype) {
      throw std::invalid_argument(prefix(opn) + "in is " + in.info.name + " but out is " +
                                  out.info.name + "; both must have one dtype");
    }
  }

  ReduceFn reduce_for(const char* opn, int32_t op, const View& v) const {
    if (op < dspp::kReduceSum || op > dspp::kReduceMin) {
      throw std::invalid_argument(prefix(opn) + "unknown reduce op " + std::to_string(op) +
                                  " (0 sum, 1 avg, 2 max, 3 min)");
    }
    if (op == dspp::kReduceAvg && !v.info.is_float) {
      throw std::invalid_argument(prefix(opn) + "avg is not defined for the integer dtype " +
                                  v.info.name + "; reduce with sum and divide yourself");
    }
    return dspp_gloo::reduce_fn(v.dtype, op);
  }

  void check_peer(const char* opn, const char* arg, int32_t peer, bool self_ok) const {
    if (peer < 0 || peer >= size()) {
      throw std::invalid_argument(prefix(opn) + arg + " " + std::to_string(peer) +
                                  " is not a rank of this group (size " + std::to_string(size()) +
                                  ")");
    }
    if (!self_ok && peer == index_) {
      throw std::invalid_argument(prefix(opn) + arg + " " + std::to_string(peer) +
                                  " is this rank itself");
    }
  }

  static bool overlap(const View& a, const View& b) {
    if (a.bytes() == 0 || b.bytes() == 0) return false;
    return a.data < b.data + b.bytes() && b.data < a.data + a.bytes();
  }

  template <class Fn>
  static void with_storage(size_t element_size, Fn&& fn) {
    switch (element_size) {
      case 1:
        fn(uint8_t{});
        break;
      case 2:
        fn(uint16_t{});
        break;
      case 4:
        fn(uint32_t{});
        break;
      default:
        fn(uint64_t{});
        break;
    }
  }

  // ---- the queue ----

  void enqueue(dspp::CommWork** work, std::string what, bool p2p,
               std::function<void(uint32_t, Clock::time_point)> run,
               std::function<Finish(Clock::time_point)> post = {}) {
    auto state = std::make_shared<WorkState>();
    auto* handle = new Work(host_, state);
    push(Op{std::move(what), std::move(state), p2p, std::move(run), std::move(post)});
    *work = handle;
  }

  void push(Op op) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(op));
    }
    cv_.notify_one();
  }

  void worker_loop() {
    while (true) {
      Op op;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        op = std::move(queue_.front());
        queue_.pop_front();
      }
      execute(op);
    }
  }

  void execute(Op& op) {
    {
      std::lock_guard<std::mutex> lock(fail_mutex_);
      if (failed_) {
        op.state->finish(fail_status_,
                         op.what + ": not run, this communicator failed earlier: " + fail_message_);
        return;
      }
    }
    const auto deadline = Clock::now() + world_->timeout;
    try {
      if (op.p2p) {
        Finish finish = op.post(deadline);
        {
          std::lock_guard<std::mutex> lock(p2p_mutex_);
          posted_.push_back(
              Posted{std::move(op.what), std::move(op.state), std::move(finish), deadline});
        }
        p2p_cv_.notify_one();
      } else {
        op.run(next_tag_++, deadline);  // only collectives count: every member runs them all
        op.state->finish(DSPP_OK, {});
      }
    } catch (...) {
      auto [st, msg] = describe_current(op.what);
      msg = name_peers(msg);
      fail(st, msg);
      op.state->finish(st, std::move(msg));
    }
  }

  // Gloo names a peer by its address: add the rank whose device listens there. (A peer that
  // connected to us shows an ephemeral port instead, which names no rank.)
  std::string name_peers(std::string msg) const {
    for (size_t i = 0; i < addresses_.size(); ++i) {
      const std::string& a = addresses_[i];
      if (a.empty()) continue;
      for (size_t at = msg.find(a); at != std::string::npos; at = msg.find(a, at + 1)) {
        const size_t end = at + a.size();
        if (end < msg.size() && std::isdigit(static_cast<unsigned char>(msg[end]))) continue;
        msg.insert(end, " (" + peer_name(static_cast<int32_t>(i)) + ")");
        break;
      }
    }
    return msg;
  }

  void completer_loop() {
    while (true) {
      Posted p;
      {
        std::unique_lock<std::mutex> lock(p2p_mutex_);
        p2p_cv_.wait(lock, [&] { return p2p_stop_ || !posted_.empty(); });
        if (posted_.empty()) return;
        p = std::move(posted_.front());
        posted_.pop_front();
      }
      try {
        p.finish(p.deadline);
        p.state->finish(DSPP_OK, {});
      } catch (...) {
        auto [st, msg] = describe_current(p.what);
        msg = name_peers(msg);
        fail(st, msg);
        p.state->finish(st, std::move(msg));
      }
    }
  }

  // The first failure poisons the communicator and closes its connections, so peers blocked on
  // us fail now instead of at their timeout.
  void fail(dspp_status st, const std::string& msg) {
    {
      std::lock_guard<std::mutex> lock(fail_mutex_);
      if (failed_) return;
      failed_ = true;
      fail_status_ = st;
      fail_message_ = msg;
    }
    try {
      ctx_->closeConnections();
    } catch (...) {
    }
  }

  // ---- operations ----

  dspp_status p2p(const char* opn, const dspp_tensor_view& buf, int32_t peer, int32_t tag,
                  dspp::CommWork** work, bool is_send) {
    return dspp::plugin::guard(host_, [&] {
      start(opn, work);
      View v = view(opn, "buf", buf);
      check_peer(opn, "peer", peer, false);
      const std::string what = describe(opn, v,
                                        std::string(is_send ? " to " : " from ") + peer_name(peer) +
                                            ", tag " + std::to_string(tag));
      const uint64_t slot = make_slot(kSlotP2P, static_cast<uint32_t>(tag));
      enqueue(work, what, true, {}, [this, v, peer, slot, is_send](Clock::time_point) -> Finish {
        if (v.numel == 0) return [](Clock::time_point) {};
        std::shared_ptr<UnboundBuffer> ub(ctx_->createUnboundBuffer(v.data, v.bytes()));
        if (is_send) {
          ub->send(peer, slot);
        } else {
          ub->recv(peer, slot);
        }
        return [this, ub, peer, is_send](Clock::time_point deadline) {
          if (is_send) {
            wait_send(*ub, peer, deadline);
          } else {
            wait_recv(*ub, peer, deadline);
          }
        };
      });
    });
  }

  void wait_recv(UnboundBuffer& ub, int peer, Clock::time_point deadline) const {
    try {
      if (!ub.waitRecv(nullptr, remaining(deadline))) {
        throw StatusError(DSPP_ERR_COMM, "receive aborted");
      }
    } catch (const gloo::Exception& e) {
      throw StatusError(status_of_gloo(e.what()),
                        "receiving from " + peer_name(peer) + " failed: " + e.what());
    }
  }
  void wait_send(UnboundBuffer& ub, int peer, Clock::time_point deadline) const {
    try {
      if (!ub.waitSend(nullptr, remaining(deadline))) {
        throw StatusError(DSPP_ERR_COMM, "send aborted");
      }
    } catch (const gloo::Exception& e) {
      throw StatusError(status_of_gloo(e.what()),
                        "sending to " + peer_name(peer) + " failed: " + e.what());
    }
  }

  // Ring reduce-scatter over unbound buffers, n - 1 steps. `in` holds n blocks of m elements.
  // At step s rank r sends its partial sum of block (r - s - 1) mod n to rank r + 1 and receives
  // rank r - 1's partial of block (r - s - 2) mod n, to which it adds its own input block; after
  // the last step the block it holds is block r, complete. Every rank sends and receives
  // (n - 1) * m elements, the lower bound (an all_reduce would move twice that). Each step is cut
  // into segments of kSegmentBytes, all posted at once and each reduced as soon as it arrives, so
  // the additions overlap the rest of the transfer. Partials are kept in the dtype (as NCCL
  // does): f16/bf16 round once per step.
  void ring_reduce_scatter(const View& in, const View& out, ReduceFn fn, uint64_t slot,
                           Clock::time_point deadline) {
    const int n = size();
    const int r = index_;
    const int right = (r + 1) % n;
    const int left = (r + n - 1) % n;
    const size_t block = out.bytes();
    const size_t esize = in.info.size;
    const size_t seg = std::max(esize, kSegmentBytes / esize * esize);
    const size_t nseg = (block + seg - 1) / seg;
    auto seg_len = [&](size_t k) { return std::min(seg, block - k * seg); };
    auto blk = [&](int b) { return static_cast<size_t>(((b % n) + n) % n) * block; };
    const bool in_place = overlap(in, out);

    std::unique_ptr<UnboundBuffer> ub_in(ctx_->createUnboundBuffer(in.data, in.bytes()));
    std::unique_ptr<UnboundBuffer> ub_out(ctx_->createUnboundBuffer(out.data, block));
    std::vector<char> tmp[2];
    std::unique_ptr<UnboundBuffer> ub_tmp[2];
    UnboundBuffer* send_buf = ub_in.get();
    size_t send_off = blk(r - 1);
    for (int s = 0; s <= n - 2; ++s) {
      const bool last = s == n - 2;
      const size_t add_off = blk(r - s - 2);  // the block received this step, in `in`
      UnboundBuffer* recv_buf = ub_out.get();
      char* recv_ptr = out.data;
      if (!last || in_place) {
        const int t = s % 2;
        if (!ub_tmp[t]) {
          tmp[t].resize(block);
          ub_tmp[t] = ctx_->createUnboundBuffer(tmp[t].data(), block);
        }
        recv_buf = ub_tmp[t].get();
        recv_ptr = tmp[t].data();
      }
      for (size_t k = 0; k < nseg; ++k) recv_buf->recv(left, slot, k * seg, seg_len(k));
      for (size_t k = 0; k < nseg; ++k) send_buf->send(right, slot, send_off + k * seg, seg_len(k));
      for (size_t k = 0; k < nseg; ++k) {
        wait_recv(*recv_buf, left, deadline);  // segments of one pair and slot arrive in order
        char* dst = last ? out.data + k * seg : recv_ptr + k * seg;
        fn(dst, recv_ptr + k * seg, in.data + add_off + k * seg, seg_len(k) / esize);
      }
      for (size_t k = 0; k < nseg; ++k) wait_send(*send_buf, right, deadline);
      send_buf = recv_buf;
      send_off = 0;
    }
  }

  std::shared_ptr<World> world_;
  const dspp_host_api* host_;
  std::shared_ptr<gloo::Context> ctx_;
  std::vector<std::string> addresses_;  // per group rank, see Connected
  std::vector<int32_t> members_;        // global ranks, in group-rank order
  int32_t index_;
  std::string name_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  bool stop_ = false;
  uint32_t next_tag_ = 0;  // worker thread only

  std::mutex p2p_mutex_;
  std::condition_variable p2p_cv_;
  std::deque<Posted> posted_;
  bool p2p_stop_ = false;

  std::mutex fail_mutex_;
  bool failed_ = false;
  dspp_status fail_status_ = DSPP_OK;
  std::string fail_message_;

  std::thread worker_;
  std::thread completer_;
};

// ---- the backend ---------------------------------------------------------------------------

class GlooBackend final : public dspp::CommBackend {
 public:
  GlooBackend(const dspp_host_api* host, const dspp::plugin::ConfigReader&) : host_(host) {}

  dspp_status init_world(const dspp::CommInitArgs* args,
                         dspp::Communicator** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument("comm/gloo init_world: out is NULL");
      *out = nullptr;
      if (!args) throw std::invalid_argument("comm/gloo init_world: args is NULL");
      const dspp::KvStore* kv = args->store;
      if (!kv || !kv->set || !kv->get || !kv->check) {
        throw std::invalid_argument("comm/gloo init_world: no key-value store");
      }
      if (args->world_size < 1 || args->rank < 0 || args->rank >= args->world_size) {
        throw std::invalid_argument("comm/gloo init_world: rank " + std::to_string(args->rank) +
                                    " is not in a world of size " +
                                    std::to_string(args->world_size));
      }
      if (args->timeout_ms <= 0) {
        throw std::invalid_argument("comm/gloo init_world: timeout_ms must be positive, got " +
                                    std::to_string(args->timeout_ms));
      }
      auto world = std::make_shared<World>();
      world->host = host_;
      world->store = kv;
      world->prefix = args->prefix ? args->prefix : "";
      world->timeout = Millis(args->timeout_ms);
      const std::string addr =
          args->local_addr && *args->local_addr ? args->local_addr : "127.0.0.1";
      try {
        gloo::transport::tcp::attr attr;
        attr.hostname = addr;
        world->device = gloo::transport::tcp::CreateDevice(attr);
      } catch (const std::exception& e) {
        throw StatusError(DSPP_ERR_COMM, "comm/gloo init_world: cannot open a TCP device on '" +
                                             addr + "': " + e.what());
      }
      std::vector<int32_t> members(static_cast<size_t>(args->world_size));
      for (int32_t i = 0; i < args->world_size; ++i) members[i] = i;
      Connected c = connect(*world, world->prefix + "/world", args->rank, members,
                            "comm/gloo init_world (rank " + std::to_string(args->rank) + " of " +
                                std::to_string(args->world_size) + ", " + addr + ")");
      *out = new GlooComm(world, std::move(c), std::move(members), args->rank, "world");
    });
  }

 private:
  const dspp_host_api* host_;
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::CommBackend, GlooBackend>(
        DSPP_KIND_COMM, "gloo", "1.0.0",
        "CPU collectives and point-to-point over Gloo's TCP transport (ring all_reduce, "
        "reduce_scatter and all_gather; f32, f64, f16, bf16, i32, i64, u8)."),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_comm_gloo", kPlugins)
