// What the ZeRO stage plugins share (header-only: plugins link nothing of each other): views into
// the flat buffers, the segments of the trained parameters inside a range, the gradient-reduction
// arithmetic (mean/sum, predivide factor), norms, and waiting on several comm works.
#pragma once

#include <dspp/kinds/zero.h>
#include <dspp/plugin.h>

#include "device_ops.h"
#include "rounding.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dspp::zero_common {

using plugin::pass_through;
using plugin::StatusError;

// `n` elements of a flat view starting at `offset` (in elements of the view's dtype: on a GPU the
// working copy may be 2-byte bf16/f16 storage).
inline dspp_tensor_view slice(dspp_tensor_view v, int64_t offset, int64_t n) {
  return slice_of(v, offset, n);
}

// A 1-d fp32 view of host memory.
inline dspp_tensor_view host_view(float* data, int64_t numel) {
  dspp_tensor_view v{};
  v.data = data;
  v.dtype = DSPP_F32;
  v.ndim = 1;
  v.shape[0] = numel;
  v.device = dspp_device{DSPP_DEVICE_CPU, 0};
  return v;
}

inline float* floats(const dspp_tensor_view& v) {
  return static_cast<float*>(v.data);
}

inline void scale(float* p, int64_t n, float c) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) p[i] *= c;
}

// The pieces of the trained parameters (group >= 0) that lie in [begin, end) of the flat buffer,
// with offset_in_flat relative to `begin` (the optimizer then sees [begin, end) as its flat).
inline std::vector<ParamSegment> segments_in(const ZeroSetup& s, int64_t begin, int64_t end) {
  std::vector<ParamSegment> out;
  for (int32_t i = 0; i < s.num_params; ++i) {
    const ZeroParam& p = s.params[i];
    if (p.group < 0) continue;  // in no parameter group: not trained
    const int64_t lo = std::max(begin, p.offset_in_flat);
    const int64_t hi = std::min(end, p.offset_in_flat + p.numel);
    if (lo >= hi) continue;
    ParamSegment seg{};
    seg.name = p.name;
    seg.group = p.group;
    seg.flags = p.flags;
    seg.ndim = p.ndim;
    for (int32_t d = 0; d < p.ndim && d < DSPP_MAX_DIMS; ++d) seg.shape[d] = p.shape[d];
    seg.offset_in_param = lo - p.offset_in_flat;
    seg.offset_in_flat = lo - begin;
    seg.numel = hi - lo;
    out.push_back(seg);
  }
  return out;
}

// True when the setup names a device other than the CPU or any of its buffers or parameter views
// lies on one (the engine computes on a GPU).
inline bool setup_on_device(const ZeroSetup& s) {
  auto off_cpu = [](const dspp_device& d) { return d.type != DSPP_DEVICE_CPU; };
  if (off_cpu(s.device) || off_cpu(s.flat_params.device) || off_cpu(s.flat_grads.device)) {
    return true;
  }
  for (int32_t i = 0; s.params && i < s.num_params; ++i) {
    if (off_cpu(s.params[i].value.device) || off_cpu(s.params[i].grad.device)) return true;
  }
  return false;
}

// What a stage checks of the engine's buffers on a GPU (ZeroSetup::device CUDA), before touching
// them: flat_params on the setup's device in the working dtype for real (bf16/f16 storage under
// mixed precision, else f32), and, unless the stage manages gradients (`with_grads` false, where
// flat_grads is empty), flat_grads there in f32, both 1-d of one length.
inline void check_device_setup(const ZeroSetup& s, const char* me, bool with_grads) {
  const dspp_device where = s.device;
  if (!is_cuda(where)) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT, std::string(me) + ": the flat buffers are on " +
                                                     where_text(s.flat_params.device) + " and " +
                                                     where_text(s.flat_grads.device) +
                                                     ", but the setup's device is " +
                                                     where_text(where));
  }
  if (!with_grads) {
    if (!same_device(s.flat_params.device, where)) {
      throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                        std::string(me) + ": flat_params (on " + where_text(s.flat_params.device) +
                            ") must be on " + where_text(where) + ", the setup's device");
    }
  } else if (!same_device(s.flat_params.device, where) ||
             !same_device(s.flat_grads.device, where)) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                      std::string(me) + ": flat_params (on " + where_text(s.flat_params.device) +
                          ") and flat_grads (on " + where_text(s.flat_grads.device) +
                          ") must both be on " + where_text(where) + ", the setup's device");
  }
  check_working_dtype(s.working_dtype, me);
  const int32_t want = mixed(s.working_dtype) ? s.working_dtype : DSPP_F32;
  if (!with_grads) {
    if (s.flat_params.dtype != want) {
      throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                        std::string(me) + ": on the GPU flat_params must be stored in the " +
                            "working dtype " + dtype_text(want) + ", got " +
                            dtype_text(s.flat_params.dtype));
    }
    if (s.flat_params.ndim != 1) {
      throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                        std::string(me) + ": flat_params must be a 1-d view");
    }
    return;
  }
  if (s.flat_params.dtype != want || s.flat_grads.dtype != DSPP_F32) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                      std::string(me) + ": on the GPU flat_params must be stored in the " +
                          "working dtype " + dtype_text(want) + " and flat_grads in f32, got " +
                          dtype_text(s.flat_params.dtype) + " and " +
                          dtype_text(s.flat_grads.dtype));
  }
  if (s.flat_params.ndim != 1 || s.flat_grads.ndim != 1 ||
      s.flat_params.shape[0] != s.flat_grads.shape[0]) {
    throw StatusError(
        DSPP_ERR_INVALID_ARGUMENT,
        std::string(me) + ": flat_params and flat_grads must be 1-d views of one length");
  }
}

// Sum of squares of the segments (offsets relative to `base`), and whether any is non-finite.
inline double sq_norm(const float* base, const std::vector<ParamSegment>& segs, bool* bad) {
  double sq = 0.0;
  *bad = false;
  for (const ParamSegment& seg : segs) {
    const float* p = base + seg.offset_in_flat;
    double part = 0.0;
    for (int64_t i = 0; i < seg.numel; ++i) part += static_cast<double>(p[i]) * p[i];
    if (!std::isfinite(part)) *bad = true;
    sq += part;
  }
  return sq;
}

inline void scale_segments(float* base, const std::vector<ParamSegment>& segs, float c) {
  if (c == 1.0f) return;
  for (const ParamSegment& seg : segs) scale(base + seg.offset_in_flat, seg.numel, c);
}

// Waits for every work (the buffers must outlive them even after a failure) and releases them;
// fails with the first failure.
inline void wait_all(std::vector<CommWork*>& works, dspp_status issued = DSPP_OK) {
  dspp_status first = issued;
  for (CommWork* w : works) {
    const dspp_status s = w->wait();
    w->release();
    if (first == DSPP_OK) first = s;
  }
  works.clear();
  pass_through(first);
}

// Issues all-reduces of `v` in buckets of `bucket` elements (all issued, then waited, so the comm
// plugin can pipeline them) and waits for them.
inline void all_reduce_buckets(Communicator* c, dspp_tensor_view v, int64_t bucket, int32_t op) {
  const int64_t n = v.shape[0];
  std::vector<CommWork*> works;
  dspp_status issued = DSPP_OK;
  for (int64_t off = 0; off < n && issued == DSPP_OK; off += bucket) {
    CommWork* w = nullptr;
    issued = c->all_reduce(slice(v, off, std::min(bucket, n - off)), op, &w);
    if (issued == DSPP_OK) works.push_back(w);
  }
  wait_all(works, issued);
}

// DeepSpeed's gradient reduction: with a predivide factor f (1 when unset) gradients are scaled by
// 1/f before a sum and by f/size (mean) or f (sum) after; without one, the mean is the comm
// plugin's avg.
struct Reduction {
  int32_t op;
  float before;
  float after;
};
inline Reduction reduction_of(const ZeroSetup& s) {
  const double f = s.predivide_factor > 0 ? s.predivide_factor : 1.0;
  const int32_t n = s.dp->size();
  if (f == 1.0) return {s.average ? kReduceAvg : kReduceSum, 1.0f, 1.0f};
  return {kReduceSum, static_cast<float>(1.0 / f), static_cast<float>(s.average ? f / n : f)};
}

// Sums doubles over the group in place (norms and overflow flags of partitions).
inline void all_reduce_sum(Communicator* c, double* values, int32_t n) {
  if (c->size() == 1) return;
  dspp_tensor_view v{};
  v.data = values;
  v.dtype = DSPP_F64;
  v.ndim = 1;
  v.shape[0] = n;
  v.device = dspp_device{DSPP_DEVICE_CPU, 0};
  CommWork* w = nullptr;
  pass_through(c->all_reduce(v, kReduceSum, &w));
  std::vector<CommWork*> works{w};
  wait_all(works);
}

// On a GPU: the squared norm of `ranges` of this rank's `flat` (f32 device memory), summed over
// the group. The sum goes into the f64 `acc` (device memory), is all-reduced there (the comm
// plugin, NCCL, moves device memory only) and read once. A non-finite element anywhere makes the
// result non-finite (squares are never negative: no inf - inf), which is the overflow flag.
template <class Ranges>
double device_sum_squares(const DeviceOps& ops, Communicator* c, const dspp_tensor_view& flat,
                          const Ranges& ranges, const dspp_tensor_view& acc) {
  ops.sum_squares_into(flat, ranges, acc);
  if (c->size() > 1) {
    CommWork* w = nullptr;
    const dspp_status issued = c->all_reduce(acc, kReduceSum, &w);
    std::vector<CommWork*> works;
    if (issued == DSPP_OK) works.push_back(w);
    wait_all(works, issued);
  }
  return ops.read_f64(acc);
}

// Bytes of the optimizer's states (each a flat fp32 tensor).
inline int64_t optimizer_state_bytes(Optimizer* opt) {
  if (!opt) return 0;
  int64_t bytes = 0;
  for (int32_t i = 0; i < opt->num_states(); ++i) {
    const char* name = nullptr;
    dspp_tensor_view v{};
    pass_through(opt->state(i, &name, &v));
    int64_t n = 1;
    for (int32_t d = 0; d < v.ndim; ++d) n *= v.shape[d];
    bytes += n * 4;
  }
  return bytes;
}

// Equal partitions of the (padded) flat buffer: partition k is [b[k], b[k + 1]).
inline std::vector<int64_t> equal_bounds(int64_t flat_numel, int32_t n) {
  if (flat_numel % n != 0) {
    throw StatusError(DSPP_ERR_INTERNAL, "zero: the flat buffer (" + std::to_string(flat_numel) +
                                             ") does not split into " + std::to_string(n));
  }
  std::vector<int64_t> b(n + 1);
  for (int32_t k = 0; k <= n; ++k) b[k] = flat_numel / n * k;
  return b;
}

// For optimizers that need whole parameters: partition k starts at the first parameter that
// begins after k/n of all parameter elements, so every parameter lies whole in one partition
// (balanced by elements, so unequal). With fewer parameters than ranks the last ones are empty.
inline std::vector<int64_t> parameter_bounds(const ZeroSetup& s, int64_t flat_numel, int32_t n) {
  int64_t total = 0;
  for (int32_t i = 0; i < s.num_params; ++i) total += s.params[i].numel;
  std::vector<int64_t> b(n + 1, flat_numel);
  b[0] = 0;
  int32_t k = 1;
  int64_t seen = 0;
  for (int32_t i = 0; i < s.num_params; ++i) {
    while (k < n && seen >= total * k / n) b[k++] = s.params[i].offset_in_flat;
    seen += s.params[i].numel;
  }
  return b;
}

// Every rank's updated partition into every rank's parameters (or another flat-layout buffer,
// `whole`): one in-place all-gather of equal partitions, or (unequal, parameter-aligned ones) a
// broadcast from each owner.
inline void gather_partitions(const ZeroSetup& s, const std::vector<int64_t>& b, bool unequal,
                              dspp_tensor_view whole) {
  Communicator* dp = s.dp;
  if (dp->size() == 1) return;
  std::vector<CommWork*> works;
  dspp_status issued = DSPP_OK;
  if (!unequal) {
    const int32_t r = dp->rank();
    CommWork* w = nullptr;
    issued = dp->all_gather(slice(whole, b[r], b[r + 1] - b[r]), whole, &w);
    if (issued == DSPP_OK) works.push_back(w);
  } else {
    for (int32_t k = 0; k < dp->size() && issued == DSPP_OK; ++k) {
      if (b[k + 1] == b[k]) continue;
      CommWork* w = nullptr;
      issued = dp->broadcast(slice(whole, b[k], b[k + 1] - b[k]), k, &w);
      if (issued == DSPP_OK) works.push_back(w);
    }
  }
  wait_all(works, issued);
}

inline void gather_partitions(const ZeroSetup& s, const std::vector<int64_t>& b, bool unequal) {
  gather_partitions(s, b, unequal, s.flat_params);
}

// The partition a rank's optimizer steps (stages 1-3): equal partitions of the flat buffer, or
// parameter-aligned ones for an optimizer that needs whole parameters.
struct Partition {
  bool whole = false;
  std::vector<int64_t> bounds;         // partition k is [bounds[k], bounds[k + 1])
  int64_t begin = 0, end = 0;          // this rank's
  std::vector<ParamSegment> segments;  // offsets relative to begin
  int64_t size() const { return end - begin; }
};

// Cuts the flat buffer for this rank and sets the optimizer up over its partition only (so its
// states are that partition's size), for `opt_device` (the setup's device, or the CPU under
// ZeRO-Offload).
inline Partition partition_optimizer(const ZeroSetup& s, int64_t flat_numel, const char* stage,
                                     dspp_device opt_device) {
  if (!s.optimizer) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                      std::string(stage) +
                          " partitions the optimizer's states: the config needs an \"optimizer\" "
                          "section (or pass one to initialize())");
  }
  Partition p;
  const int32_t n = s.dp->size();
  p.whole = s.optimizer->needs_whole_params() != 0;
  p.bounds = p.whole ? parameter_bounds(s, flat_numel, n) : equal_bounds(flat_numel, n);
  p.begin = p.bounds[s.dp->rank()];
  p.end = p.bounds[s.dp->rank() + 1];
  p.segments = segments_in(s, p.begin, p.end);
  OptimizerSetup os{p.segments.data(), static_cast<int32_t>(p.segments.size()),
                    s.groups,          s.num_groups,
                    p.size(),          opt_device};
  pass_through(s.optimizer->init(&os));
  return p;
}
inline Partition partition_optimizer(const ZeroSetup& s, int64_t flat_numel, const char* stage) {
  return partition_optimizer(s, flat_numel, stage, s.device);
}

// zero_optimization.reduce_bucket_size, checked.
inline int64_t reduce_bucket_size(const plugin::ConfigReader& cfg) {
  const int64_t b = cfg.get_int("reduce_bucket_size", 500000000);
  if (b < 1) {
    throw StatusError(
        DSPP_ERR_INVALID_ARGUMENT,
        "zero_optimization.reduce_bucket_size must be at least 1, got " + std::to_string(b));
  }
  return b;
}

// zero_optimization.offload_optimizer: DeepSpeed's ZeRO-Offload. device "cpu" keeps the fp32
// master and the optimizer's states in host memory and steps them with the CPU optimizer; it
// changes nothing where the engine computes on the CPU (everything is host memory there already).
// pin_memory (default true): page-locked host memory for the master and the host gradient.
struct Offload {
  bool cpu = false;
  bool pin = true;
};
inline Offload offload_optimizer(const plugin::ConfigReader& cfg) {
  Offload o;
  const std::string d = cfg.get_string("offload_optimizer.device", "none");
  if (d == "cpu") {
    o.cpu = true;
  } else if (d != "none") {
    throw StatusError(DSPP_ERR_NOT_SUPPORTED, "zero_optimization.offload_optimizer.device '" + d +
                                                  "' is not supported; use cpu or none");
  }
  o.pin = cfg.get_bool("offload_optimizer.pin_memory", true);
  return o;
}

// What every stage shares: the host, guard() for the noexcept boundary, and hooks that do nothing
// (a stage overrides the ones it uses).
class StageBase : public ZeroStage {
 public:
  explicit StageBase(const dspp_host_api* host) : host_(host) {}
  uint32_t capabilities() const noexcept override { return 0; }
  dspp_status before_forward(const int32_t*, int32_t, dspp_tensor_view*) noexcept override {
    return DSPP_OK;
  }
  dspp_status after_forward(const int32_t*, int32_t) noexcept override { return DSPP_OK; }
  dspp_status begin_backward() noexcept override { return DSPP_OK; }
  dspp_status before_backward(const int32_t*, int32_t, dspp_tensor_view*,
                              dspp_tensor_view*) noexcept override {
    return DSPP_OK;
  }
  dspp_status after_backward(const int32_t*, int32_t) noexcept override { return DSPP_OK; }
  dspp_status end_backward() noexcept override { return DSPP_OK; }
  dspp_status write_back(const int32_t*, int32_t) noexcept override { return DSPP_OK; }

 protected:
  ~StageBase() = default;
  template <class Fn>
  dspp_status guard(Fn&& fn) const noexcept {
    return plugin::guard(host_, std::forward<Fn>(fn));
  }
  const dspp_host_api* host_;
};

}  // namespace dspp::zero_common
