// comm/nccl: dspp's GPU communicator over NCCL.
//
// init_world: the GPU is CommInitArgs::local_rank. Rank 0 makes the NCCL unique id and publishes
// it in the host's KvStore under <prefix>/nccl/id; the others read it there. Communicators are
// non-blocking (ncclConfig_t::blocking = 0): init, split and every operation return at once and
// we poll ncclCommGetAsyncError, so that nothing can hang past CommInitArgs::timeout_ms; on a
// timeout the communicator is aborted (ncclCommAbort) and the call fails with DSPP_ERR_TIMEOUT.
// split() is ncclCommSplit: members pass colour 0 and their index in the list as key,
// non-members NCCL_SPLIT_NOCOLOR (every member of the parent calls it, in the same order).
//
// Streams: each communicator runs its operations on its own stream, after the work already
// issued on the buffer's stream (dspp_tensor_view::stream; NULL is the legacy default stream):
// an event recorded there is waited for by the communicator's stream. An event recorded after
// the operation is what CommWork::wait() polls, together with NCCL's asynchronous error state.
//
// send/recv: NCCL matches a pair's transfers in issue order and has no tags (tags are only
// checked). A send blocks its stream until the peer's recv is posted, so a ring where everyone
// sends first would deadlock; sends and recvs are therefore collected and issued together in one
// ncclGroupStart/End at the next other operation, wait(), barrier() or release().
//
// A failed or timed-out operation aborts the communicator: every later call fails at once with
// the first error. NVLink multicast (NVLS) is never used: NCCL_NVLS_ENABLE=0 is set unless the
// environment already says otherwise.
#include <dspp/kinds/comm.h>
#include <dspp/plugin.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../../common/comm_types.h"
#include "../../common/cuda_check.h"

namespace {

using Clock = std::chrono::steady_clock;
using dspp::plugin::StatusError;

constexpr const char* kWho = "comm/nccl";
#define CUDA_CHECK(call) DSPP_CUDA_CHECK(kWho, call)

// Any NCCL result but success and "in progress" (non-blocking communicators) is an error.
[[noreturn]] void throw_nccl(ncclResult_t r, ncclComm_t comm, const char* call, const char* file,
                             int line) {
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  throw StatusError(DSPP_ERR_COMM, std::string(kWho) + ": " + call + " failed at " + file + ":" +
                                       std::to_string(line) + ": " + ncclGetErrorString(r) +
                                       (last && *last ? std::string(" (") + last + ")" : ""));
}
#define NCCL_CHECK(comm, call)                                           \
  do {                                                                   \
    const ncclResult_t dspp_nccl_r_ = (call);                            \
    if (dspp_nccl_r_ != ncclSuccess && dspp_nccl_r_ != ncclInProgress) { \
      throw_nccl(dspp_nccl_r_, comm, #call, DSPP_CUDA_FILE, __LINE__);   \
    }                                                                    \
  } while (0)

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// Polls until `done()` or the deadline; spins briefly, then sleeps with growing pauses.
template <class Done>
bool poll_until(Clock::time_point deadline, Done&& done) {
  for (int i = 0;; ++i) {
    if (done()) return true;
    if (Clock::now() > deadline) return false;
    if (i < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(i < 1000 ? 20 : 500));
    }
  }
}

struct Dtype {
  ncclDataType_t nccl;
  size_t size;
  const char* name;
  bool is_float;
};

bool dtype_of(int32_t dt, Dtype* out) {
  dspp::comm_types::DtypeInfo info{};
  if (!dspp::comm_types::dtype_info(dt, &info)) return false;
  ncclDataType_t t = ncclFloat32;
  switch (dt) {
    case DSPP_F64:
      t = ncclFloat64;
      break;
    case DSPP_F16:
      t = ncclFloat16;
      break;
    case DSPP_BF16:
      t = ncclBfloat16;
      break;
    case DSPP_I32:
      t = ncclInt32;
      break;
    case DSPP_I64:
      t = ncclInt64;
      break;
    case DSPP_U8:
      t = ncclUint8;
      break;
    default:
      break;
  }
  *out = {t, info.size, info.name, info.is_float};
  return true;
}

using dspp::comm_types::op_name;

// A checked buffer.
struct View {
  char* data = nullptr;
  Dtype dt{};
  size_t numel = 0;
  cudaStream_t stream = nullptr;
  size_t bytes() const { return numel * dt.size; }
};

// ---- the state a communicator shares with its works ------------------------------------------

struct Op {
  std::string what;
  cudaEvent_t done = nullptr;  // recorded on the communicator's stream after the operation
  Clock::time_point deadline;
};

struct P2P {
  bool send;
  View v;
  int32_t peer;
  std::shared_ptr<Op> op;
};

struct State {
  const dspp_host_api* host = nullptr;
  ncclComm_t comm = nullptr;  // NULL once destroyed or aborted
  int device = 0;
  int rank = 0;
  int size = 1;
  std::vector<int32_t> members;  // global ranks, in group order
  std::string name;              // "world" or "group '<tag>'"
  std::chrono::milliseconds timeout{600000};
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;  // recorded on a buffer's stream, waited for by `stream`
  int32_t* scratch = nullptr;   // one int on the GPU, for barrier()
  std::vector<cudaEvent_t> spare_events;
  std::vector<P2P> p2p;  // sends/recvs not issued yet

  std::mutex mutex;  // NCCL calls on one communicator must not run concurrently
  bool failed = false;
  dspp_status fail_status = DSPP_OK;
  std::string fail_message;

  ~State() {
    // Errors are ignored: this runs from release() or the last work's release.
    cudaSetDevice(device);
    if (stream) cudaStreamSynchronize(stream);
    for (cudaEvent_t e : spare_events) cudaEventDestroy(e);
    if (ready) cudaEventDestroy(ready);
    if (scratch) cudaFree(scratch);
    if (stream) cudaStreamDestroy(stream);
    (void)cudaGetLastError();
  }

  std::string describe(const std::string& opn) const {
    std::string s = std::string(kWho) + " " + opn + " on rank " + std::to_string(rank) + " of " +
                    name + " (" + std::to_string(size) + " ranks";
    if (name != "world") s += ": [" + join(members) + "]";
    return s + ", GPU " + std::to_string(device) + ")";
  }

  void bind() const { CUDA_CHECK(cudaSetDevice(device)); }

  cudaEvent_t take_event() {
    if (!spare_events.empty()) {
      cudaEvent_t e = spare_events.back();
      spare_events.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  // Caller holds mutex. Throws the first error again, so later calls fail fast.
  void throw_if_failed(const std::string& opn) const {
    if (failed) {
      throw StatusError(fail_status, std::string(kWho) + " " + opn +
                                         ": the communicator failed earlier: " + fail_message);
    }
  }

  // Caller holds mutex. Records the first failure and aborts the NCCL communicator (which makes
  // its kernels on the GPU return), then throws.
  [[noreturn]] void fail(dspp_status st, const std::string& msg) {
    if (!failed) {
      failed = true;
      fail_status = st;
      fail_message = msg;
      if (comm) {
        ncclCommAbort(comm);
        comm = nullptr;
      }
      dspp::plugin::log(host, DSPP_LOG_ERROR, kWho, msg);
    }
    throw StatusError(st, msg);
  }

  // Caller holds mutex. Non-blocking NCCL: waits until the last call on `c` has been taken in.
  void wait_issued(ncclComm_t c, const std::string& what, Clock::time_point deadline) {
    ncclResult_t r = ncclSuccess;
    const bool ok = poll_until(deadline, [&] {
      const ncclResult_t q = ncclCommGetAsyncError(c, &r);
      if (q != ncclSuccess) r = q;
      return r != ncclInProgress;
    });
    if (!ok) {
      fail(DSPP_ERR_TIMEOUT, what + ": NCCL did not finish within " +
                                 std::to_string(timeout.count()) + " ms; communicator aborted");
    }
    if (r != ncclSuccess) {
      const char* last = ncclGetLastError(c);
      fail(DSPP_ERR_COMM, what + ": " + ncclGetErrorString(r) +
                              (last && *last ? std::string(" (") + last + ")" : ""));
    }
  }

  // Caller holds mutex. Makes the communicator's stream wait for the work issued so far on `s`.
  void order_after(cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(ready, s));
    CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
  }

  // Caller holds mutex. Issues the collected sends and recvs as one group.
  void flush_p2p() {
    if (p2p.empty()) return;
    std::vector<P2P> batch;
    batch.swap(p2p);
    for (const P2P& p : batch) order_after(p.v.stream);
    const std::string what = describe("send/recv group of " + std::to_string(batch.size()));
    NCCL_CHECK(comm, ncclGroupStart());
    for (const P2P& p : batch) {
      if (p.send) {
        NCCL_CHECK(comm, ncclSend(p.v.data, p.v.numel, p.v.dt.nccl, p.peer, comm, stream));
      } else {
        NCCL_CHECK(comm, ncclRecv(p.v.data, p.v.numel, p.v.dt.nccl, p.peer, comm, stream));
      }
    }
    NCCL_CHECK(comm, ncclGroupEnd());
    wait_issued(comm, what, Clock::now() + timeout);
    for (const P2P& p : batch) {
      p.op->done = take_event();
      CUDA_CHECK(cudaEventRecord(p.op->done, stream));
    }
  }
};

// ---- work handles ------------------------------------------------------------------------------

class NcclWork final : public dspp::CommWork {
 public:
  NcclWork(std::shared_ptr<State> state, std::shared_ptr<Op> op)
      : state_(std::move(state)), op_(std::move(op)) {}

  dspp_status wait() noexcept override {
    if (finished_) return report();
    status_ = dspp::plugin::guard(state_->host, [&] {
      try {
        run_wait();
      } catch (const std::exception& e) {
        message_ = e.what();  // kept, so that a second wait() reports the same failure
        throw;
      }
    });
    finished_ = true;
    return status_;
  }

  void release() noexcept override {
    if (!finished_) wait();
    delete this;
  }

 private:
  ~NcclWork() {
    // Return the event for reuse only when the operation is known to be finished.
    if (op_->done && status_ == DSPP_OK && finished_) {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->spare_events.push_back(op_->done);
    } else if (op_->done) {
      cudaEventDestroy(op_->done);
      (void)cudaGetLastError();
    }
  }

  dspp_status report() {
    if (status_ == DSPP_OK) return DSPP_OK;
    const dspp_host_api* h = state_->host;
    return h && h->set_error ? h->set_error(h->self, status_, message_.c_str()) : status_;
  }

  void run_wait() {
    State& st = *state_;
    {
      std::lock_guard<std::mutex> lock(st.mutex);
      st.bind();
      if (!op_->done) {  // a send or recv still collected: issue the group now
        st.throw_if_failed(op_->what);
        st.flush_p2p();
      }
    }
    {
      bool ok = false;
      ncclResult_t async = ncclSuccess;
      std::string cuda_error;
      const bool finished = poll_until(op_->deadline, [&] {
        const cudaError_t q = cudaEventQuery(op_->done);
        if (q == cudaSuccess) return ok = true;
        if (q != cudaErrorNotReady) {
          cuda_error = std::string(cudaGetErrorName(q)) + " (" + cudaGetErrorString(q) + ")";
          (void)cudaGetLastError();
          return true;
        }
        std::lock_guard<std::mutex> lock(st.mutex);
        if (st.failed) return true;
        if (st.comm && ncclCommGetAsyncError(st.comm, &async) == ncclSuccess &&
            async != ncclSuccess && async != ncclInProgress) {
          return true;
        }
        return false;
      });
      if (ok) return;
      std::lock_guard<std::mutex> lock(st.mutex);
      if (!cuda_error.empty()) {
        st.fail(DSPP_ERR_RUNTIME, op_->what + ": cudaEventQuery failed at " + DSPP_CUDA_FILE + ":" +
                                      std::to_string(__LINE__) + ": " + cuda_error);
      }
      st.throw_if_failed(op_->what);
      if (!finished) {
        st.fail(DSPP_ERR_TIMEOUT, op_->what + " did not finish within " +
                                      std::to_string(st.timeout.count()) +
                                      " ms (a peer stopped or never issued it); communicator "
                                      "aborted");
      }
      const char* last = st.comm ? ncclGetLastError(st.comm) : nullptr;
      st.fail(DSPP_ERR_COMM, op_->what + ": NCCL reported " + ncclGetErrorString(async) +
                                 (last && *last ? std::string(" (") + last + ")" : ""));
    }
  }

  std::shared_ptr<State> state_;
  std::shared_ptr<Op> op_;
  bool finished_ = false;
  dspp_status status_ = DSPP_OK;
  std::string message_;
};

// ---- communicators -----------------------------------------------------------------------------

ncclConfig_t nonblocking_config() {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  c.blocking = 0;
  return c;
}

// Makes the stream, events and scratch of a new communicator (its comm is already set).
std::shared_ptr<State> make_state(const dspp_host_api* host, ncclComm_t comm, int device,
                                  std::vector<int32_t> members, int rank, std::string name,
                                  std::chrono::milliseconds timeout) {
  auto st = std::make_shared<State>();
  st->host = host;
  st->comm = comm;
  st->device = device;
  st->members = std::move(members);
  st->rank = rank;
  st->size = static_cast<int>(st->members.size());
  st->name = std::move(name);
  st->timeout = timeout;
  st->bind();
  CUDA_CHECK(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&st->ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaMalloc(&st->scratch, sizeof(int32_t)));
  CUDA_CHECK(cudaMemset(st->scratch, 0, sizeof(int32_t)));
  return st;
}

class NcclComm final : public dspp::Communicator {
 public:
  explicit NcclComm(std::shared_ptr<State> state) : st_(std::move(state)) {}

  int32_t rank() const noexcept override { return st_->rank; }
  int32_t size() const noexcept override { return st_->size; }

  dspp_status split(const int32_t* ranks, int32_t n, const char* tag,
                    dspp::Communicator** out) noexcept override {
    return dspp::plugin::guard(st_->host, [&] {
      if (!out) throw std::invalid_argument(st_->describe("split") + ": out is NULL");
      *out = nullptr;
      std::lock_guard<std::mutex> lock(st_->mutex);
      st_->throw_if_failed("split");
      if (!ranks || n < 1) {
        throw std::invalid_argument(st_->describe("split") + ": needs at least one rank (got n = " +
                                    std::to_string(n) + ")");
      }
      std::vector<int32_t> list(ranks, ranks + n);
      int32_t my_index = -1;
      for (int32_t i = 0; i < n; ++i) {
        if (std::find(st_->members.begin(), st_->members.end(), list[i]) == st_->members.end()) {
          throw std::invalid_argument(st_->describe("split") + ": rank " + std::to_string(list[i]) +
                                      " is not a member of this group [" + join(st_->members) +
                                      "]");
        }
        if (std::find(list.begin(), list.begin() + i, list[i]) != list.begin() + i) {
          throw std::invalid_argument(st_->describe("split") + ": rank " + std::to_string(list[i]) +
                                      " is listed twice");
        }
        if (list[i] == st_->members[st_->rank]) my_index = i;
      }
      st_->bind();
      st_->flush_p2p();
      const std::string tag_text = tag ? tag : "";
      const std::string what = st_->describe("split '" + tag_text + "' [" + join(list) + "]");
      ncclConfig_t config = nonblocking_config();
      ncclComm_t child = nullptr;
      // Collective over the parent: non-members take part with NCCL_SPLIT_NOCOLOR.
      NCCL_CHECK(st_->comm, ncclCommSplit(st_->comm, my_index >= 0 ? 0 : NCCL_SPLIT_NOCOLOR,
                                          std::max(my_index, 0), &child, &config));
      const auto deadline = Clock::now() + st_->timeout;
      st_->wait_issued(st_->comm, what, deadline);
      if (my_index < 0) return;
      if (!child) throw StatusError(DSPP_ERR_INTERNAL, what + ": NCCL made no communicator");
      st_->wait_issued(child, what, deadline);
      int child_rank = -1;
      NCCL_CHECK(child, ncclCommUserRank(child, &child_rank));
      if (child_rank != my_index) {
        ncclCommAbort(child);
        throw StatusError(DSPP_ERR_INTERNAL, what + ": NCCL gave rank " +
                                                 std::to_string(child_rank) + ", expected " +
                                                 std::to_string(my_index));
      }
      auto child_state = make_state(st_->host, child, st_->device, std::move(list), my_index,
                                    "group '" + tag_text + "'", st_->timeout);
      *out = new NcclComm(std::move(child_state));
    });
  }

  void release() noexcept override {
    dspp::plugin::guard(st_->host, [&] {
      std::lock_guard<std::mutex> lock(st_->mutex);
      State& st = *st_;
      if (!st.comm) return;
      st.bind();
      const auto deadline = Clock::now() + st.timeout;
      if (!st.failed) {
        st.flush_p2p();
        // Finish what is queued, then take leave of the peers (ncclCommFinalize) and destroy.
        const bool drained = poll_until(deadline, [&] {
          const cudaError_t q = cudaStreamQuery(st.stream);
          if (q != cudaErrorNotReady) (void)cudaGetLastError();
          return q != cudaErrorNotReady;
        });
        if (drained) {
          ncclResult_t r = ncclCommFinalize(st.comm);
          if (r == ncclSuccess || r == ncclInProgress) {
            poll_until(deadline, [&] {
              if (ncclCommGetAsyncError(st.comm, &r) != ncclSuccess) r = ncclInternalError;
              return r != ncclInProgress;
            });
          }
          if (r == ncclSuccess) {
            ncclCommDestroy(st.comm);
            st.comm = nullptr;
            return;
          }
        }
      }
      ncclCommAbort(st.comm);
      st.comm = nullptr;
    });
    delete this;  // the State lives on while works hold it
  }

  dspp_status all_reduce(dspp_tensor_view buf, int32_t op,
                         dspp::CommWork** work) noexcept override {
    return issue("all_reduce", work, [&](State& st, std::string& what) {
      const View v = view("all_reduce", "buf", buf);
      const ncclRedOp_t rop = red_op("all_reduce", op, v);
      what = st.describe("all_reduce " + std::string(v.dt.name) + " x " + std::to_string(v.numel) +
                         " (" + op_name(op) + ")");
      st.order_after(v.stream);
      if (v.numel == 0) return;
      NCCL_CHECK(st.comm,
                 ncclAllReduce(v.data, v.data, v.numel, v.dt.nccl, rop, st.comm, st.stream));
    });
  }

  dspp_status reduce_scatter(dspp_tensor_view in, dspp_tensor_view out, int32_t op,
                             dspp::CommWork** work) noexcept override {
    return issue("reduce_scatter", work, [&](State& st, std::string& what) {
      const char* opn = "reduce_scatter";
      const View vi = view(opn, "in", in);
      const View vo = view(opn, "out", out);
      same_dtype(opn, vi, vo);
      const ncclRedOp_t rop = red_op(opn, op, vi);
      const size_t n = static_cast<size_t>(st.size);
      if (vi.numel != n * vo.numel) {
        throw std::invalid_argument(st.describe(opn) + ": in has " + std::to_string(vi.numel) +
                                    " elements, which is not size() x out = " + std::to_string(n) +
                                    " x " + std::to_string(vo.numel));
      }
      if (overlap(vi, vo) && vo.data != vi.data + static_cast<size_t>(st.rank) * vo.bytes()) {
        throw std::invalid_argument(st.describe(opn) +
                                    ": out overlaps in other than as this rank's slice of it");
      }
      what = st.describe(std::string(opn) + " " + vo.dt.name + " x " + std::to_string(vo.numel) +
                         " per rank (" + op_name(op) + ")");
      st.order_after(vi.stream);
      if (vo.stream != vi.stream) st.order_after(vo.stream);
      if (vo.numel == 0) return;
      NCCL_CHECK(st.comm, ncclReduceScatter(vi.data, vo.data, vo.numel, vo.dt.nccl, rop, st.comm,
                                            st.stream));
    });
  }

  dspp_status all_gather(dspp_tensor_view in, dspp_tensor_view out,
                         dspp::CommWork** work) noexcept override {
    return issue("all_gather", work, [&](State& st, std::string& what) {
      const char* opn = "all_gather";
      const View vi = view(opn, "in", in);
      const View vo = view(opn, "out", out);
      same_dtype(opn, vi, vo);
      const size_t n = static_cast<size_t>(st.size);
      if (vo.numel != n * vi.numel) {
        throw std::invalid_argument(st.describe(opn) + ": out has " + std::to_string(vo.numel) +
                                    " elements, which is not size() x in = " + std::to_string(n) +
                                    " x " + std::to_string(vi.numel));
      }
      if (overlap(vi, vo) && vi.data != vo.data + static_cast<size_t>(st.rank) * vi.bytes()) {
        throw std::invalid_argument(st.describe(opn) +
                                    ": in overlaps out other than as this rank's slice of it");
      }
      what = st.describe(std::string(opn) + " " + vi.dt.name + " x " + std::to_string(vi.numel) +
                         " per rank");
      st.order_after(vi.stream);
      if (vo.stream != vi.stream) st.order_after(vo.stream);
      if (vi.numel == 0) return;
      NCCL_CHECK(st.comm,
                 ncclAllGather(vi.data, vo.data, vi.numel, vi.dt.nccl, st.comm, st.stream));
    });
  }

  dspp_status reduce(dspp_tensor_view buf, int32_t root, int32_t op,
                     dspp::CommWork** work) noexcept override {
    return issue("reduce", work, [&](State& st, std::string& what) {
      const View v = view("reduce", "buf", buf);
      const ncclRedOp_t rop = red_op("reduce", op, v);
      if (root < 0 || root >= st.size) {
        throw std::invalid_argument(st.describe("reduce") + ": root " + std::to_string(root) +
                                    " is not a rank of this group of " + std::to_string(st.size));
      }
      what = st.describe("reduce " + std::string(v.dt.name) + " x " + std::to_string(v.numel) +
                         " (" + op_name(op) + ") to root " + std::to_string(root));
      st.order_after(v.stream);
      if (v.numel == 0) return;
      NCCL_CHECK(st.comm,
                 ncclReduce(v.data, v.data, v.numel, v.dt.nccl, rop, root, st.comm, st.stream));
    });
  }

  dspp_status broadcast(dspp_tensor_view buf, int32_t root,
                        dspp::CommWork** work) noexcept override {
    return issue("broadcast", work, [&](State& st, std::string& what) {
      const View v = view("broadcast", "buf", buf);
      if (root < 0 || root >= st.size) {
        throw std::invalid_argument(st.describe("broadcast") + ": root " + std::to_string(root) +
                                    " is not a rank of this group of " + std::to_string(st.size));
      }
      what = st.describe("broadcast " + std::string(v.dt.name) + " x " + std::to_string(v.numel) +
                         " from root " + std::to_string(root));
      st.order_after(v.stream);
      if (v.numel == 0) return;
      NCCL_CHECK(st.comm,
                 ncclBroadcast(v.data, v.data, v.numel, v.dt.nccl, root, st.comm, st.stream));
    });
  }

  dspp_status send(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   dspp::CommWork** work) noexcept override {
    return p2p("send", true, buf, peer, tag, work);
  }

  dspp_status recv(dspp_tensor_view buf, int32_t peer, int32_t tag,
                   dspp::CommWork** work) noexcept override {
    return p2p("recv", false, buf, peer, tag, work);
  }

  // An all-reduce of one int on the communicator's stream, waited for on the host.
  dspp_status barrier() noexcept override {
    dspp::CommWork* w = nullptr;
    const dspp_status st = issue("barrier", &w, [&](State& s, std::string& what) {
      what = s.describe("barrier");
      NCCL_CHECK(s.comm,
                 ncclAllReduce(s.scratch, s.scratch, 1, ncclInt32, ncclSum, s.comm, s.stream));
    });
    if (st != DSPP_OK) return st;
    const dspp_status r = w->wait();
    w->release();
    return r;
  }

 private:
  ~NcclComm() = default;

  // Runs `body(state, what)` under the communicator's lock (it validates, orders the stream and
  // calls NCCL), then records the completion event and hands out the work.
  template <class Body>
  dspp_status issue(const char* opn, dspp::CommWork** work, Body&& body) noexcept {
    return dspp::plugin::guard(st_->host, [&] {
      if (!work) throw std::invalid_argument(st_->describe(opn) + ": work is NULL");
      *work = nullptr;
      std::lock_guard<std::mutex> lock(st_->mutex);
      State& st = *st_;
      st.throw_if_failed(opn);
      st.bind();
      st.flush_p2p();  // keep issue order: earlier sends/recvs go first
      std::string what = st.describe(opn);
      body(st, what);
      st.wait_issued(st.comm, what, Clock::now() + st.timeout);
      auto op = std::make_shared<Op>();
      op->what = what;
      op->deadline = Clock::now() + st.timeout;
      op->done = st.take_event();
      CUDA_CHECK(cudaEventRecord(op->done, st.stream));
      *work = new NcclWork(st_, std::move(op));
    });
  }

  dspp_status p2p(const char* opn, bool is_send, dspp_tensor_view buf, int32_t peer, int32_t tag,
                  dspp::CommWork** work) noexcept {
    return dspp::plugin::guard(st_->host, [&] {
      if (!work) throw std::invalid_argument(st_->describe(opn) + ": work is NULL");
      *work = nullptr;
      std::lock_guard<std::mutex> lock(st_->mutex);
      State& st = *st_;
      st.throw_if_failed(opn);
      const View v = view(opn, "buf", buf);
      if (peer < 0 || peer >= st.size) {
        throw std::invalid_argument(st.describe(opn) + ": peer " + std::to_string(peer) +
                                    " is not a rank of this group of " + std::to_string(st.size));
      }
      if (peer == st.rank) {
        throw std::invalid_argument(st.describe(opn) + ": a rank cannot " + opn + " to itself");
      }
      if (tag < 0) {
        throw std::invalid_argument(st.describe(opn) + ": tag " + std::to_string(tag) +
                                    " is negative");
      }
      auto op = std::make_shared<Op>();
      op->what = st.describe(std::string(opn) + " " + v.dt.name + " x " + std::to_string(v.numel) +
                             (is_send ? " to " : " from ") + std::to_string(peer));
      op->deadline = Clock::now() + st.timeout;
      st.p2p.push_back(P2P{is_send, v, peer, op});
      *work = new NcclWork(st_, std::move(op));
    });
  }

  View view(const char* opn, const char* arg, const dspp_tensor_view& t) const {
    const std::string where = st_->describe(opn) + ": " + arg;
    View v;
    if (!dtype_of(t.dtype, &v.dt)) {
      throw std::invalid_argument(where + " has dtype " + std::to_string(t.dtype) +
                                  ", which comm/nccl does not move");
    }
    if (t.device.type != DSPP_DEVICE_CUDA) {
      throw std::invalid_argument(where + " is in CPU memory; comm/nccl needs memory of GPU " +
                                  std::to_string(st_->device));
    }
    if (t.device.index != st_->device) {
      throw std::invalid_argument(where + " is on GPU " + std::to_string(t.device.index) +
                                  ", this communicator on GPU " + std::to_string(st_->device));
    }
    if (t.ndim < 0 || t.ndim > DSPP_MAX_DIMS) {
      throw std::invalid_argument(where + " has ndim " + std::to_string(t.ndim));
    }
    size_t numel = 1;
    for (int32_t i = 0; i < t.ndim; ++i) {
      if (t.shape[i] < 0) throw std::invalid_argument(where + " has a negative dimension");
      numel *= static_cast<size_t>(t.shape[i]);
    }
    if (!t.data && numel > 0) throw std::invalid_argument(where + " has no data pointer");
    v.data = static_cast<char*>(t.data);
    v.numel = numel;
    v.stream = static_cast<cudaStream_t>(t.stream);
    return v;
  }

  void same_dtype(const char* opn, const View& a, const View& b) const {
    if (a.dt.nccl != b.dt.nccl) {
      throw std::invalid_argument(st_->describe(opn) + ": in is " + a.dt.name + " but out is " +
                                  b.dt.name);
    }
  }

  ncclRedOp_t red_op(const char* opn, int32_t op, const View& v) const {
    // In a group of one, avg is sum (x / 1 = x, exactly). NCCL 2.28.3 leaves the last elements
    // of a one-rank ncclAvg reduce-scatter of 2^20 + 3 elements unwritten (seen on an H200,
    // 2026-11-29); sum has no such problem.
    if (op == dspp::kReduceAvg && st_->size == 1 && v.dt.is_float) return ncclSum;
    switch (op) {
      case dspp::kReduceSum:
        return ncclSum;
      case dspp::kReduceMax:
        return ncclMax;
      case dspp::kReduceMin:
        return ncclMin;
      case dspp::kReduceAvg:
        if (!v.dt.is_float) {
          throw std::invalid_argument(st_->describe(opn) +
                                      ": avg is not defined for the integer dtype " + v.dt.name);
        }
        return ncclAvg;
      default:
        throw std::invalid_argument(st_->describe(opn) + ": reduce op " + std::to_string(op) +
                                    " is not one of sum (0), avg (1), max (2), min (3)");
    }
  }

  static bool overlap(const View& a, const View& b) {
    return a.data < b.data + b.bytes() && b.data < a.data + a.bytes();
  }

  std::shared_ptr<State> st_;
};

// ---- the backend ---------------------------------------------------------------------------

class NcclBackend final : public dspp::CommBackend {
 public:
  NcclBackend(const dspp_host_api* host, const dspp::plugin::ConfigReader&) : host_(host) {
    // Before NCCL reads its environment (first call): never NVLink multicast, unless the user
    // explicitly asked otherwise.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
  }

  dspp_status init_world(const dspp::CommInitArgs* args,
                         dspp::Communicator** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument("comm/nccl init_world: out is NULL");
      *out = nullptr;
      if (!args) throw std::invalid_argument("comm/nccl init_world: args is NULL");
      const dspp::KvStore* kv = args->store;
      if (!kv || !kv->set || !kv->get || !kv->check) {
        throw std::invalid_argument("comm/nccl init_world: no key-value store");
      }
      if (args->world_size < 1 || args->rank < 0 || args->rank >= args->world_size) {
        throw std::invalid_argument("comm/nccl init_world: rank " + std::to_string(args->rank) +
                                    " is not in a world of size " +
                                    std::to_string(args->world_size));
      }
      if (args->timeout_ms <= 0) {
        throw std::invalid_argument("comm/nccl init_world: timeout_ms must be positive, got " +
                                    std::to_string(args->timeout_ms));
      }
      const std::string what = "comm/nccl init_world (rank " + std::to_string(args->rank) + " of " +
                               std::to_string(args->world_size) + ", GPU " +
                               std::to_string(args->local_rank) + ")";
      int count = 0;
      const cudaError_t cerr = cudaGetDeviceCount(&count);
      if (cerr != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        throw StatusError(
            DSPP_ERR_NOT_SUPPORTED,
            what + ": no CUDA device is visible" +
                (cerr != cudaSuccess ? std::string(" (") + cudaGetErrorString(cerr) + ")"
                                     : std::string()));
      }
      if (args->local_rank < 0 || args->local_rank >= count) {
        throw std::invalid_argument(what + ": LOCAL_RANK " + std::to_string(args->local_rank) +
                                    " has no GPU; " + std::to_string(count) + " visible");
      }
      const int device = args->local_rank;
      CUDA_CHECK(cudaSetDevice(device));
      log_version_once();

      const std::string prefix = args->prefix ? args->prefix : "";
      const std::string id_key = prefix + "/nccl/id";
      ncclUniqueId id{};
      if (args->rank == 0) {
        NCCL_CHECK(nullptr, ncclGetUniqueId(&id));
        dspp::plugin::pass_through(kv->set(kv->self, id_key.c_str(), &id, sizeof id));
      } else {
        const void* value = nullptr;
        size_t len = 0;
        dspp::plugin::pass_through(kv->get(kv->self, id_key.c_str(), &value, &len));
        if (len != sizeof id) {
          throw StatusError(DSPP_ERR_COMM, what + ": the NCCL id under '" + id_key + "' has " +
                                               std::to_string(len) + " bytes, expected " +
                                               std::to_string(sizeof id));
        }
        std::memcpy(&id, value, sizeof id);
      }
      // Announce arrival, so that a timeout can name the ranks that never came.
      const std::string arrived = prefix + "/nccl/arrived/";
      const char one = '1';
      dspp::plugin::pass_through(
          kv->set(kv->self, (arrived + std::to_string(args->rank)).c_str(), &one, 1));

      ncclConfig_t config = nonblocking_config();
      ncclComm_t comm = nullptr;
      NCCL_CHECK(comm, ncclCommInitRankConfig(&comm, args->world_size, id, args->rank, &config));
      const auto deadline = Clock::now() + std::chrono::milliseconds(args->timeout_ms);
      ncclResult_t r = ncclInProgress;
      const bool done = poll_until(deadline, [&] {
        if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) r = ncclInternalError;
        return r != ncclInProgress;
      });
      if (!done || r != ncclSuccess) {
        std::string missing;
        for (int32_t q = 0; q < args->world_size; ++q) {
          int32_t exists = 0;
          if (kv->check(kv->self, (arrived + std::to_string(q)).c_str(), &exists) == DSPP_OK &&
              !exists) {
            missing += (missing.empty() ? "" : ",") + std::to_string(q);
          }
        }
        const char* last = comm ? ncclGetLastError(comm) : nullptr;
        ncclCommAbort(comm);
        if (!done) {
          throw StatusError(
              DSPP_ERR_TIMEOUT,
              what + ": NCCL did not connect within " + std::to_string(args->timeout_ms) + " ms" +
                  (missing.empty() ? std::string() : "; rank(s) " + missing + " never arrived"));
        }
        throw StatusError(DSPP_ERR_COMM, what + ": " + ncclGetErrorString(r) +
                                             (last && *last ? std::string(" (") + last + ")" : ""));
      }
      std::vector<int32_t> members(static_cast<size_t>(args->world_size));
      for (int32_t i = 0; i < args->world_size; ++i) members[i] = i;
      auto st = make_state(host_, comm, device, std::move(members), args->rank, "world",
                           std::chrono::milliseconds(args->timeout_ms));
      *out = new NcclComm(std::move(st));
    });
  }

 private:
  static std::string nvls_env() {
    const char* v = std::getenv("NCCL_NVLS_ENABLE");
    return v ? v : "(unset)";
  }

  void log_version_once() {
    if (logged_) return;
    logged_ = true;
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return;
    // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
    const int major = v / 10000, minor = (v / 100) % 100, patch = v % 100;
    std::string msg = "NCCL " + std::to_string(major) + "." + std::to_string(minor) + "." +
                      std::to_string(patch) + " (built against " + std::to_string(NCCL_MAJOR) +
                      "." + std::to_string(NCCL_MINOR) + "." + std::to_string(NCCL_PATCH) +
                      "), NCCL_NVLS_ENABLE=" + nvls_env();
    const bool mismatch = major != NCCL_MAJOR || minor != NCCL_MINOR;
    if (mismatch) msg += ": the runtime library is not the one dspp was built against";
    dspp::plugin::log(host_, mismatch ? DSPP_LOG_WARNING : DSPP_LOG_DEBUG, kWho, msg);
  }

  const dspp_host_api* host_;
  bool logged_ = false;
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::CommBackend, NcclBackend>(
        DSPP_KIND_COMM, "nccl", "1.0.0",
        "GPU collectives and point-to-point over NCCL (non-blocking communicators with timeouts, "
        "ncclCommSplit groups; f32, f64, f16, bf16, i32, i64, u8; avg via ncclAvg)."),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_comm_nccl", kPlugins)
