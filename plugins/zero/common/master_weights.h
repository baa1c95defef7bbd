// Mixed precision in the ZeRO stages (fp16/bf16 with fp32 master weights, as DeepSpeed keeps
// them). The CPU kernels compute in fp32, so the module's working copy stays in fp32 memory but
// holds only values the 16-bit type can represent (rounded to nearest even from the master); the
// optimizer steps an fp32 master copy of the part this rank owns, which is then rounded into the
// working copy before it is gathered, so every rank's modules see the same rounded values.
// Gradients are rounded to the 16-bit type where a stage first reads a rank's local gradient
// (before the reduction), so an fp16 gradient beyond 65504 becomes inf as it would in DeepSpeed.
//
// On a GPU (init_device) the working copy is real 16-bit storage in device memory and the master
// is f32 device memory: building the master, publishing it and taking changed values are casts
// (rounding to nearest even where they narrow).
#pragma once

#include "device_ops.h"
#include "partitioned_grads.h"

#include <cstdint>
#include <cstring>

namespace dspp::zero_common {

// The fp32 master copy of elements [begin, begin + n) of the flat layout that one rank steps.
// Empty (and every call a no-op that hands back the working memory) in fp32 training, where the
// working copy is the master.
class MasterWeights {
 public:
  // `working` is the rank's working copy of those elements: it is rounded in place first and the
  // master starts from the rounded values (DeepSpeed builds its fp32 master from the fp16/bf16
  // module parameters).
  void init(const dspp_host_api* host, int32_t dtype, float* working, int64_t n) {
    dtype_ = dtype;
    if (!mixed(dtype)) return;
    round_to(working, n, dtype);
    mem_.reset(host, n);
    if (n > 0) std::memcpy(mem_.data(), working, static_cast<size_t>(n) * 4);
  }
  bool enabled() const { return mixed(dtype_); }
  int32_t dtype() const { return dtype_; }
  // What the optimizer steps and a checkpoint holds: the master, or the working copy itself.
  float* data(float* working) const { return enabled() ? mem_.data() : working; }
  // The stepped (or loaded) master rounded into the working copy.
  void publish(float* working) const {
    if (enabled()) round_copy(working, mem_.data(), mem_.size(), dtype_);
  }
  // Elements [off, off + n) of the working copy changed (GatheredParameters with a modifier
  // rank): round them and take them into the master.
  void take(float* working, int64_t off, int64_t n) {
    if (!enabled() || n <= 0) return;
    round_to(working + off, n, dtype_);
    std::memcpy(mem_.data() + off, working + off, static_cast<size_t>(n) * 4);
  }
  int64_t bytes() const { return (mem_.size() + dmem_.size()) * 4; }

  // ---- device memory (ZeroSetup::device CUDA) ----
  // `working` is a 1-d device view of the rank's working copy in its own dtype: `dtype` itself
  // under mixed precision (the values are 16-bit already), f32 otherwise. The master is an f32
  // device copy of it.
  void init_device(const DeviceOps& ops, int32_t dtype, const dspp_tensor_view& working) {
    dtype_ = dtype;
    ops_ = ops;
    mem_.reset(nullptr, 0);
    dmem_.release();
    if (!mixed(dtype)) return;
    dmem_.reset(ops, DSPP_F32, working.shape[0]);
    ops.cast(working, dmem_.view());
  }
  // What the optimizer steps and a checkpoint holds (f32): the master, or the working copy.
  dspp_tensor_view view(const dspp_tensor_view& working) const {
    return enabled() ? dmem_.view() : working;
  }
  void publish(const dspp_tensor_view& working) const {
    if (enabled()) ops_.cast(dmem_.view(), working);
  }
  // Elements [off, off + n) of the working copy changed: take them into the master.
  void take(const dspp_tensor_view& working, int64_t off, int64_t n) const {
    if (!enabled() || n <= 0) return;
    ops_.cast(slice_of(working, off, n), slice_of(dmem_.view(), off, n));
  }

 private:
  int32_t dtype_ = DSPP_F32;
  HostBuffer mem_;
  DeviceOps ops_;
  DeviceBuffer dmem_;
};

}  // namespace dspp::zero_common
