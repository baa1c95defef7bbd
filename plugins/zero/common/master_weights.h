// Mixed precision in the ZeRO stages (fp16/bf16 with fp32 master weights, as DeepSpeed keeps
// them). The CPU kernels compute in fp32, so the module's working copy stays in fp32 memory but
// holds only values the 16-bit type can represent (rounded to nearest even from the master); the
// optimizer steps an fp32 master copy of the part this rank owns, which is then rounded into the
// working copy before it is gathered, so every rank's modules see the same rounded values.
// Gradients are rounded to the 16-bit type where a stage first reads a rank's local gradient
// (before the reduction), so an fp16 gradient beyond 65504 becomes inf as it would in DeepSpeed.
#pragma once

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
  int64_t bytes() const { return mem_.size() * 4; }

 private:
  int32_t dtype_ = DSPP_F32;
  HostBuffer mem_;
};

}  // namespace dspp::zero_common
