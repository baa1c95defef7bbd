// zero/stage3: DeepSpeed's ZeRO stage 3. Parameters are partitioned too: each rank keeps only its
// partition of the flat parameter layout (the same equal, or parameter-aligned for Muon and Lamb,
// partitions stages 1 and 2 use, so the optimizer and checkpoints see one layout at every stage).
// A module's parameters are gathered just before its forward and its backward and released right
// after (DSPP_ZERO_MANAGES_PARAMS); gradients are reduced to their owners during backward as at
// stage 2 (common/partitioned_grads.h).
//
// Gathering: a parameter's elements live in one or a few consecutive partitions; each owner
// broadcasts its part. With flat partitions a parameter has one or two owners, and a ring
// broadcast moves the same bytes over each link as a ring all-gather would.
//
// Prefetch (stage3_prefetch_bucket_size): the order of the gathers of one training micro-step
// (forward, then backward) is recorded once; later, each gather also starts those of the next
// modules in that order, up to the bucket size of elements in flight, so their communication runs
// while the current module computes. A call that leaves the recorded order stops prefetching until
// the next forward.
//
// Parameters of at most stage3_param_persistence_threshold elements (up to
// stage3_model_persistence_threshold in all) stay gathered: they are re-gathered after each
// optimizer step instead of before every use.
//
// Communication per micro-step: a gather of every non-persistent parameter in forward (Psi) and in
// backward (Psi), and the reduction of every gradient (Psi): 3 Psi, as the ZeRO paper says.
//
// Mixed precision (ZeroSetup::working_dtype): the partition kept in params_ is the working copy
// (values rounded to the 16-bit type, in fp32 memory) that gathers read; an fp32 master of it is
// what the optimizer steps and a checkpoint holds, rounded into params_ after each step.
//
// On a GPU (ZeroSetup::device CUDA; the engine then describes the flat layout as a length-only
// view of that device in the working dtype) the partition, every gathered parameter and the
// gradient buckets are device memory from the host device's caching allocator: the partition and
// the gathers in the working dtype for real (2 bytes an element under bf16/fp16), so a gather
// moves 2 bytes an element over NCCL; the master, norms, scaling and publishing are the GPU path
// of stages 1 and 2 (common/flat_partition_stage.h), ZeRO-Offload included. The engine's initial
// values (host fp32, whole or zero::Init chunks) are uploaded once at init.
#include "../common/flat_partition_stage.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::pass_through;
using dspp::plugin::StatusError;
namespace zc = dspp::zero_common;

// One parameter's whole value while gathered (the working dtype on a GPU).
struct Gathered {
  zc::FlatMemory mem;
  std::vector<dspp::CommWork*> works;  // the broadcasts filling it, until waited
  int refs = 0;                        // modules between before_* and after_* that read it
};

// One hook call: the parameters a module reads.
using Call = std::vector<int32_t>;

class Stage3 final : public zc::FlatPartitionStage {
 public:
  Stage3(const dspp_host_api* host, ConfigReader cfg)
      : FlatPartitionStage(host, cfg, zc::reduce_bucket_size(cfg)),
        bucket_size_(zc::reduce_bucket_size(cfg)),
        prefetch_(cfg.get_int("stage3_prefetch_bucket_size", 50000000)),
        persist_threshold_(cfg.get_int("stage3_param_persistence_threshold", 100000)),
        persist_model_(cfg.get_int("stage3_model_persistence_threshold", INT64_MAX)) {}

  ~Stage3() {
    for (auto& g : full_) {
      if (!g) continue;
      for (dspp::CommWork* w : g->works) w->release();
    }
  }

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      const char* me = "zero/stage3";
      setup_ = *s;
      init_device(me, false);  // on a GPU: checks the layout, takes the host's device
      if (!gpu_ && (setup_.flat_params.dtype != DSPP_F32 || setup_.flat_params.ndim != 1)) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                          "zero/stage3: the flat layout must be a 1-d fp32 view");
      }
      zc::check_working_dtype(setup_.working_dtype, me);
      flat_numel_ = setup_.flat_params.shape[0];
      part_ = zc::partition_optimizer(setup_, flat_numel_, me, optimizer_device());
      grads_.init(host_, setup_, part_, flat_numel_, bucket_size_, dev());
      store_ = gpu_ ? setup_.flat_params.dtype : DSPP_F32;
      params_.reset(host_, dev(), DSPP_MEM_PARAMETERS, part_.size(), store_);
      work_ = params_.view();
      take_initial_values();
      init_master();  // rounds the partition (CPU) and builds the master from it
      full_.resize(setup_.num_params);
      prefetched_.assign(setup_.num_params, false);
      persistent_.assign(setup_.num_params, false);
      int64_t kept = 0;
      for (int32_t i = 0; i < setup_.num_params; ++i) {
        const int64_t n = setup_.params[i].numel;
        if (n <= persist_threshold_ && kept + n <= persist_model_) {
          persistent_[i] = true;
          kept += n;
        }
      }
      gather_persistent();
    });
  }

  uint32_t capabilities() const noexcept override {
    return DSPP_ZERO_MANAGES_GRADS | DSPP_ZERO_MANAGES_PARAMS;
  }

  dspp_status before_forward(const int32_t* params, int32_t n,
                             dspp_tensor_view* values) noexcept override {
    return guard([&] { acquire(params, n, values); });
  }
  dspp_status after_forward(const int32_t* params, int32_t n) noexcept override {
    return guard([&] { release(params, n); });
  }

  dspp_status begin_backward() noexcept override {
    return guard([&] { grads_.begin_backward(); });
  }
  dspp_status before_backward(const int32_t* params, int32_t n, dspp_tensor_view* values,
                              dspp_tensor_view* grads) noexcept override {
    return guard([&] {
      acquire(params, n, values);
      grads_.hand_out(params, n, grads);
    });
  }
  dspp_status after_backward(const int32_t* params, int32_t n) noexcept override {
    return guard([&] { release(params, n); });
  }

  dspp_status end_backward() noexcept override {
    return guard([&] {
      grads_.end_backward();
      // The first whole micro-step (forward and backward) is the order prefetching follows.
      if (!traced_) {
        trace_ = std::move(recording_);
        traced_ = true;
      }
      recording_.clear();
      pos_ = -1;
    });
  }

  dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept override {
    return guard([&] { partition_norm(grads_.acc_view(), sq_norm, overflow); });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      drop_prefetched();
      const dspp_tensor_view g = grads_.acc_view();
      scale_partition_segments(g, static_cast<float>(grad_scale));
      dspp::StepArgs a = *args;
      a.params = values();
      a.grads = master_.optimizer_grads(g);  // offload: copied to host memory
      pass_through(setup_.optimizer->step(&a));
      publish();
      gather_persistent();
    });
  }

  dspp_status zero_grad() noexcept override {
    return guard([&] { grads_.zero(); });
  }

  dspp_status write_back(const int32_t* params, int32_t n) noexcept override {
    return guard([&] {
      for (int32_t k = 0; k < n; ++k) {
        const int32_t i = params[k];
        if (!full_[i]) {
          throw StatusError(DSPP_ERR_INVALID_ARGUMENT, std::string("zero/stage3: write_back of '") +
                                                           setup_.params[i].name +
                                                           "', which is not gathered");
        }
        // Mixed precision: the new values rounded (in the gathered copy too, which modules may
        // still read; on a GPU it is stored in the 16-bit type already), and this rank's part
        // of them into the master.
        const dspp_tensor_view whole = full_[i]->mem.view();
        if (!gpu_) zc::round_to(zc::floats(whole), setup_.params[i].numel, setup_.working_dtype);
        copy_own_part(i, whole, /*to_partition=*/true);
        const auto [lo, hi] = overlap(i, setup_.dp->rank());
        if (lo >= hi) continue;
        if (gpu_) {
          master_.take(working_view(), lo - part_.begin, hi - lo);
        } else {
          master_.take(working(), lo - part_.begin, hi - lo);
        }
      }
    });
  }

  dspp_status after_load() noexcept override {
    return guard([&] {
      publish();
      drop_prefetched();
      gather_persistent();
    });
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      int64_t gathered = 0;
      for (const auto& g : full_) gathered += g ? g->mem.bytes() : 0;
      out->param_bytes = params_.bytes() + gathered;
      out->grad_bytes = grads_.acc_bytes();
      out->master_bytes = master_.bytes();
      out->optimizer_state_bytes = zc::optimizer_state_bytes(setup_.optimizer);
      out->buffer_bytes =
          grads_.buffer_bytes() + norm_acc_.bytes() + master_.offload_buffer_bytes();
    });
  }

 private:
  // The device the stage's memory lives on (a GPU), or none (host memory).
  const zc::DeviceOps* dev() const { return gpu_ ? &ops_ : nullptr; }

  // The part of parameter i's flat range [off, off + numel) that partition k holds.
  std::pair<int64_t, int64_t> overlap(int32_t i, int32_t k) const {
    const dspp::ZeroParam& p = setup_.params[i];
    return {std::max(p.offset_in_flat, part_.bounds[k]),
            std::min(p.offset_in_flat + p.numel, part_.bounds[k + 1])};
  }

  // to = from (1-d views of one length): a memcpy of fp32 host memory, or on a GPU a device copy
  // that converts between the dtypes (rounding to nearest even where it narrows).
  void copy_view(const dspp_tensor_view& from, const dspp_tensor_view& to) const {
    if (gpu_) {
      ops_.cast(from, to);
    } else if (from.shape[0] > 0) {
      std::memcpy(to.data, from.data, static_cast<size_t>(from.shape[0]) * 4);
    }
  }

  // Copies this rank's part of parameter i between a view of its whole value (`full`, any dtype
  // on a GPU) and the partition.
  void copy_own_part(int32_t i, const dspp_tensor_view& full, bool to_partition) const {
    const auto [lo, hi] = overlap(i, setup_.dp->rank());
    if (lo >= hi) return;
    const dspp_tensor_view whole =
        zc::slice_of(full, lo - setup_.params[i].offset_in_flat, hi - lo);
    const dspp_tensor_view mine = zc::slice_of(work_, lo - part_.begin, hi - lo);
    if (to_partition) {
      copy_view(whole, mine);
    } else {
      copy_view(mine, whole);
    }
  }

  // `n` floats of host memory into an fp32 view (host memory, or device memory: one copy, then a
  // synchronize, since `src` may go away next).
  void upload(const float* src, const dspp_tensor_view& to, int64_t n) const {
    if (n <= 0) return;
    const size_t bytes = static_cast<size_t>(n) * 4;
    if (!gpu_) {
      std::memcpy(to.data, src, bytes);
      return;
    }
    pass_through(ops_.dev->copy(to.data, src, bytes, nullptr));
    pass_through(ops_.dev->synchronize(nullptr));
  }

  // The partition from the values the engine handed over (fp32 host memory): each parameter's
  // whole value, or (built under zero::Init) this rank's chunk of it, whose neighbours are
  // all-gathered first. On a GPU the whole values' parts are collected in host memory and
  // uploaded once.
  void take_initial_values() {
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      const dspp::ZeroParam& p = setup_.params[i];
      if (p.value.dtype != DSPP_F32 || p.value.device.type != DSPP_DEVICE_CPU) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, std::string("zero/stage3: parameter '") +
                                                         p.name + "' must be an fp32 host tensor");
      }
    }
    zc::HostBuffer staging;  // a GPU: the partition's fp32 values before the upload
    if (gpu_) staging.reset(host_, part_.size());
    float* host_part = gpu_ ? staging.data() : working();
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      const dspp::ZeroParam& p = setup_.params[i];
      if (p.flags & DSPP_PARAM_PARTITIONED) continue;
      const auto [lo, hi] = overlap(i, setup_.dp->rank());
      if (lo >= hi) continue;
      std::memcpy(host_part + (lo - part_.begin),
                  static_cast<const float*>(p.value.data) + (lo - p.offset_in_flat),
                  static_cast<size_t>(hi - lo) * 4);
    }
    if (gpu_) {
      zc::FlatMemory f32;
      f32.reset(host_, dev(), DSPP_MEM_OTHER, part_.size(), DSPP_F32, /*zeroed=*/false);
      upload(staging.data(), f32.view(), part_.size());
      copy_view(f32.view(), work_);
    }
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      if (setup_.params[i].flags & DSPP_PARAM_PARTITIONED) gather_initial_chunks(i);
    }
  }

  // zero::Init: parameter i's chunks all-gathered (fp32; device memory on a GPU, where the comm
  // plugin moves device memory only), this rank's part of the whole kept.
  void gather_initial_chunks(int32_t i) {
    const dspp::ZeroParam& p = setup_.params[i];
    dspp::Communicator* dp = setup_.dp;
    const int64_t chunk = dspp::zero_init_chunk(p.numel, dp->size());
    zc::FlatMemory mine, whole;
    mine.reset(host_, dev(), DSPP_MEM_COMM_BUFFERS, chunk, DSPP_F32, false);
    whole.reset(host_, dev(), DSPP_MEM_COMM_BUFFERS, chunk * dp->size(), DSPP_F32, false);
    upload(static_cast<const float*>(p.value.data), mine.view(), chunk);
    std::vector<dspp::CommWork*> works;
    dspp::CommWork* w = nullptr;
    const dspp_status st = dp->all_gather(mine.view(), whole.view(), &w);
    if (st == DSPP_OK) works.push_back(w);
    zc::wait_all(works, st);
    copy_own_part(i, whole.view(), true);
  }

  // Starts gathering parameter i into a new buffer: this rank copies its part, every owner
  // broadcasts its own.
  Gathered& start_gather(int32_t i) {
    auto g = std::make_unique<Gathered>();
    const dspp::ZeroParam& p = setup_.params[i];
    // Written whole below.
    g->mem.reset(host_, dev(), DSPP_MEM_PARAMETERS, p.numel, store_, /*zeroed=*/false);
    const dspp_tensor_view whole = g->mem.view();
    copy_own_part(i, whole, /*to_partition=*/false);
    dspp::Communicator* dp = setup_.dp;
    dspp_status issued = DSPP_OK;
    for (int32_t k = 0; k < dp->size() && dp->size() > 1 && issued == DSPP_OK; ++k) {
      const auto [lo, hi] = overlap(i, k);
      if (lo >= hi) continue;
      dspp::CommWork* w = nullptr;
      issued = dp->broadcast(zc::slice_of(whole, lo - p.offset_in_flat, hi - lo), k, &w);
      if (issued == DSPP_OK) g->works.push_back(w);
    }
    if (issued != DSPP_OK) zc::wait_all(g->works, issued);
    full_[i] = std::move(g);
    return *full_[i];
  }

  void gather_persistent() {
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      if (!persistent_[i]) continue;
      full_[i].reset();
      start_gather(i);
    }
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      if (persistent_[i]) zc::wait_all(full_[i]->works);
    }
  }

  dspp_tensor_view value_view(int32_t i) const {
    const dspp::ZeroParam& p = setup_.params[i];
    dspp_tensor_view v = full_[i]->mem.view();
    v.ndim = p.ndim;
    for (int32_t d = 0; d < p.ndim; ++d) v.shape[d] = p.shape[d];
    return v;
  }
  void acquire(const int32_t* params, int32_t n, dspp_tensor_view* values) {
    follow_trace(params, n);
    for (int32_t k = 0; k < n; ++k) {
      const int32_t i = params[k];
      if (!full_[i]) start_gather(i);
    }
    for (int32_t k = 0; k < n; ++k) {
      const int32_t i = params[k];
      Gathered& g = *full_[i];
      if (!g.works.empty()) zc::wait_all(g.works);
      if (prefetched_[i]) {
        in_prefetch_ -= setup_.params[i].numel;
        prefetched_[i] = false;
      }
      ++g.refs;
      values[k] = value_view(i);
    }
    prefetch_next();
  }

  void release(const int32_t* params, int32_t n) {
    for (int32_t k = 0; k < n; ++k) {
      const int32_t i = params[k];
      if (!full_[i] || full_[i]->refs <= 0) {
        throw StatusError(DSPP_ERR_INTERNAL, std::string("zero/stage3: '") + setup_.params[i].name +
                                                 "' released more often than gathered");
      }
      if (--full_[i]->refs == 0 && !persistent_[i]) full_[i].reset();
    }
  }

  // Records the call order in the first micro-step; later, advances along it (or stops
  // following it when a call leaves it).
  void follow_trace(const int32_t* params, int32_t n) {
    if (!traced_) {
      recording_.emplace_back(params, params + n);
      return;
    }
    // Compared in place: no allocation per module in the step loop.
    auto is = [&](const Call& c) { return std::equal(c.begin(), c.end(), params, params + n); };
    const int64_t next = pos_ + 1;
    if (pos_ >= -1 && next < static_cast<int64_t>(trace_.size()) && is(trace_[next])) {
      pos_ = next;
    } else if (!trace_.empty() && is(trace_[0])) {
      // A new forward (after an eval forward, say) restarts the order.
      drop_prefetched();
      pos_ = 0;
    } else {
      pos_ = -2;  // off the recorded order: no prefetching until a forward starts again
    }
  }

  // Prefetch never reaches past the recorded micro-step, so nothing gathered before an optimizer
  // step is used after it (step() drops what is left anyway).
  void prefetch_next() {
    if (!traced_ || pos_ < 0 || prefetch_ <= 0 || setup_.dp->size() == 1) return;
    for (int64_t t = pos_ + 1; t < static_cast<int64_t>(trace_.size()); ++t) {
      for (int32_t i : trace_[t]) {
        if (full_[i] || persistent_[i]) continue;
        const int64_t numel = setup_.params[i].numel;
        if (in_prefetch_ + numel > prefetch_) return;
        start_gather(i);
        prefetched_[i] = true;
        in_prefetch_ += numel;
      }
    }
  }

  // Gathers started ahead that no module took: finish and free them.
  void drop_prefetched() {
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      if (!prefetched_[i]) continue;
      prefetched_[i] = false;
      if (full_[i] && full_[i]->refs == 0) {
        zc::wait_all(full_[i]->works);
        if (!persistent_[i]) full_[i].reset();
      }
    }
    in_prefetch_ = 0;
  }

  int64_t bucket_size_;
  int64_t prefetch_;
  int64_t persist_threshold_;
  int64_t persist_model_;
  zc::PartitionedGrads grads_;
  // This rank's partition of the parameters (work_ views it): what the optimizer steps in fp32
  // training, the rounded working copy under mixed precision (master_ is then what it steps).
  // fp32 host memory on the CPU; the working dtype in device memory on a GPU (store_).
  zc::FlatMemory params_;
  int32_t store_ = DSPP_F32;
  std::vector<std::unique_ptr<Gathered>> full_;  // per parameter: its whole value while gathered
  std::vector<bool> persistent_;
  std::vector<bool> prefetched_;  // gathered ahead, not yet taken by a module
  int64_t in_prefetch_ = 0;       // elements gathered ahead and not yet taken
  std::vector<Call> recording_, trace_;
  bool traced_ = false;
  int64_t pos_ = -1;  // index into trace_ of the last call; -1 before the first; -2 off the trace
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::ZeroStage, Stage3>(
    DSPP_KIND_ZERO, "stage3", "1.0.0",
    "ZeRO stage 3: parameters, gradients and optimizer states partitioned; parameters gathered "
    "per module with prefetch and released after use")};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_zero_stage3", kPlugins)
