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
//
// ZeRO-Offload (init_offload: zero_optimization.offload_optimizer.device "cpu" on a GPU, as
// DeepSpeed's): the f32 master lives in host memory (page-locked from the device unless
// offload_optimizer.pin_memory is false) in fp32 training too, and the optimizer, set up for the
// CPU, steps it there with its states; each step the reduced gradient is copied down into a host
// buffer (optimizer_grads), and the stepped master is copied up into an f32 device scratch and cast
// into the working copy there (publish) — the host has no bf16/fp16 cast of its own. Every
// transfer is followed by a synchronize of the device: page-locked copies are asynchronous, and the
// host reads (or rewrites) those buffers next.
#pragma once

#include "device_ops.h"
#include "partitioned_grads.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace dspp::zero_common {

// f32 host memory, zero-filled: page-locked from the device (`pinned_by`, Device::alloc_host) for
// fast asynchronous copies, or from the host's allocator.
class HostMemory {
 public:
  HostMemory() = default;
  HostMemory(const HostMemory&) = delete;
  HostMemory& operator=(const HostMemory&) = delete;
  ~HostMemory() { release(); }
  void reset(const dspp_host_api* host, Device* pinned_by, int64_t floats) {
    release();
    if (floats <= 0) return;
    if (!pinned_by) {
      buf_.reset(host, floats);
      return;
    }
    void* p = nullptr;
    pass_through(pinned_by->alloc_host(static_cast<size_t>(floats) * 4, &p));
    if (!p) {
      throw StatusError(DSPP_ERR_OUT_OF_MEMORY, "zero: no page-locked host memory for " +
                                                    std::to_string(floats * 4) + " bytes");
    }
    std::memset(p, 0, static_cast<size_t>(floats) * 4);
    pinned_ = static_cast<float*>(p);
    pinned_by_ = pinned_by;
    pinned_size_ = floats;
  }
  void release() {
    // A failure has nowhere to go here (the device has recorded its message).
    if (pinned_) (void)pinned_by_->free_host(pinned_);
    pinned_ = nullptr;
    pinned_by_ = nullptr;
    pinned_size_ = 0;
    buf_.reset(nullptr, 0);
  }
  float* data() const { return pinned_ ? pinned_ : buf_.data(); }
  int64_t size() const { return pinned_ ? pinned_size_ : buf_.size(); }

 private:
  HostBuffer buf_;
  Device* pinned_by_ = nullptr;
  float* pinned_ = nullptr;
  int64_t pinned_size_ = 0;
};

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
  // Bytes of the master (host or device memory).
  int64_t bytes() const { return (mem_.size() + dmem_.size() + hmaster_.size()) * 4; }

  // ---- device memory (ZeroSetup::device CUDA) ----
  // `working` is a 1-d device view of the rank's working copy in its own dtype: `dtype` itself
  // under mixed precision (the values are 16-bit already), f32 otherwise. The master is an f32
  // device copy of it.
  void init_device(const DeviceOps& ops, int32_t dtype, const dspp_tensor_view& working) {
    dtype_ = dtype;
    ops_ = ops;
    release_all();
    if (!mixed(dtype)) return;
    dmem_.reset(ops, DSPP_MEM_OPTIMIZER_STATE, DSPP_F32, working.shape[0]);
    ops.cast(working, dmem_.view());
  }
  // ZeRO-Offload: the master of `working` (a device view of the rank's working copy, as for
  // init_device) in host memory, page-locked when `pin`, and the host buffer of the gradient the
  // CPU optimizer reads; values move through an f32 device scratch of at most `chunk` elements
  // (none in fp32 training, where the working copy is f32 itself).
  void init_offload(const dspp_host_api* host, const DeviceOps& ops, int32_t dtype,
                    const dspp_tensor_view& working, bool pin, int64_t chunk) {
    dtype_ = dtype;
    ops_ = ops;
    release_all();
    offload_ = true;
    const int64_t n = working.shape[0];
    hmaster_.reset(host, pin ? ops.dev : nullptr, n);
    hgrads_.reset(host, pin ? ops.dev : nullptr, n);
    if (working.dtype != DSPP_F32 && n > 0) {
      scratch_.reset(ops, DSPP_MEM_OTHER, DSPP_F32, std::max<int64_t>(1, std::min(chunk, n)));
    }
    down(working, 0, n);
  }
  bool offloaded() const { return offload_; }
  // What the optimizer steps and a checkpoint holds (f32): the master (a host view under
  // offload), or the working copy.
  dspp_tensor_view view(const dspp_tensor_view& working) const {
    if (offload_) return host_view(hmaster_.data(), hmaster_.size());
    return enabled() ? dmem_.view() : working;
  }
  void publish(const dspp_tensor_view& working) const {
    if (offload_) {
      up(working);
    } else if (enabled()) {
      ops_.cast(dmem_.view(), working);
    }
  }
  // Elements [off, off + n) of the working copy changed: take them into the master.
  void take(const dspp_tensor_view& working, int64_t off, int64_t n) const {
    if (n <= 0) return;
    if (offload_) {
      down(working, off, n);
    } else if (enabled()) {
      ops_.cast(slice_of(working, off, n), slice_of(dmem_.view(), off, n));
    }
  }
  // The gradient the optimizer reads: `g` itself, or (offload) its copy in host memory (`g` is
  // the f32 device gradient of the master's elements).
  dspp_tensor_view optimizer_grads(const dspp_tensor_view& g) const {
    if (!offload_) return g;
    const int64_t n = hgrads_.size();
    if (g.shape[0] != n) {
      throw StatusError(DSPP_ERR_INTERNAL, "zero: offloaded gradient of " +
                                               std::to_string(g.shape[0]) +
                                               " elements, master of " + std::to_string(n));
    }
    if (n > 0) {
      pass_through(ops_.dev->copy(hgrads_.data(), g.data, static_cast<size_t>(n) * 4, nullptr));
      pass_through(ops_.dev->synchronize(nullptr));
    }
    return host_view(hgrads_.data(), n);
  }
  // Offload: the whole master copied into / from an f32 device view of its size (stage 0 gathers
  // the loaded shares of it on the device: the comm plugin moves device memory only).
  void master_to_device(const dspp_tensor_view& d) const { move(d, true); }
  void master_from_device(const dspp_tensor_view& d) const { move(d, false); }
  // Bytes of what offload adds besides the master: the host gradient and the device scratch.
  int64_t offload_buffer_bytes() const { return hgrads_.size() * 4 + scratch_.bytes(); }

 private:
  void release_all() {
    offload_ = false;
    mem_.reset(nullptr, 0);
    dmem_.release();
    hmaster_.release();
    hgrads_.release();
    scratch_.release();
  }
  // Offload: master[off, off + n) = working[off, off + n) (a cast to f32 on the device when the
  // working copy is 16-bit), then a synchronize (the host reads the master next).
  void down(const dspp_tensor_view& working, int64_t off, int64_t n) const {
    if (n <= 0) return;
    float* dst = hmaster_.data() + off;
    if (working.dtype == DSPP_F32) {
      pass_through(
          ops_.dev->copy(dst, slice_of(working, off, n).data, static_cast<size_t>(n) * 4, nullptr));
    } else {
      const int64_t step = scratch_.size();
      for (int64_t o = 0; o < n; o += step) {
        const int64_t m = std::min(step, n - o);
        const dspp_tensor_view s = slice_of(scratch_.view(), 0, m);
        ops_.cast(slice_of(working, off + o, m), s);
        pass_through(ops_.dev->copy(dst + o, s.data, static_cast<size_t>(m) * 4, nullptr));
      }
    }
    pass_through(ops_.dev->synchronize(nullptr));
  }
  // Offload: the whole working copy = the master (cast on the device, through the scratch), then
  // a synchronize (the host may rewrite the master next: a checkpoint load, the next step).
  void up(const dspp_tensor_view& working) const {
    const int64_t n = hmaster_.size();
    if (working.shape[0] != n) {
      throw StatusError(DSPP_ERR_INTERNAL, "zero: offloaded master of " + std::to_string(n) +
                                               " elements, working copy of " +
                                               std::to_string(working.shape[0]));
    }
    if (n <= 0) return;
    const float* src = hmaster_.data();
    if (working.dtype == DSPP_F32) {
      pass_through(ops_.dev->copy(working.data, src, static_cast<size_t>(n) * 4, nullptr));
    } else {
      const int64_t step = scratch_.size();
      for (int64_t o = 0; o < n; o += step) {
        const int64_t m = std::min(step, n - o);
        const dspp_tensor_view s = slice_of(scratch_.view(), 0, m);
        pass_through(ops_.dev->copy(s.data, src + o, static_cast<size_t>(m) * 4, nullptr));
        ops_.cast(s, slice_of(working, o, m));
      }
    }
    pass_through(ops_.dev->synchronize(nullptr));
  }
  void move(const dspp_tensor_view& d, bool to_device) const {
    const int64_t n = hmaster_.size();
    if (!offload_ || d.dtype != DSPP_F32 || d.shape[0] != n) {
      throw StatusError(DSPP_ERR_INTERNAL, "zero: offloaded master moved to or from a wrong view");
    }
    if (n <= 0) return;
    const size_t bytes = static_cast<size_t>(n) * 4;
    if (to_device) {
      pass_through(ops_.dev->copy(d.data, hmaster_.data(), bytes, nullptr));
    } else {
      pass_through(ops_.dev->copy(hmaster_.data(), d.data, bytes, nullptr));
    }
    pass_through(ops_.dev->synchronize(nullptr));
  }

  int32_t dtype_ = DSPP_F32;
  HostBuffer mem_;
  DeviceOps ops_;
  DeviceBuffer dmem_;
  // ZeRO-Offload.
  bool offload_ = false;
  HostMemory hmaster_;    // the f32 master, in host memory
  HostMemory hgrads_;     // the gradient the CPU optimizer reads
  DeviceBuffer scratch_;  // f32: what 16-bit values are cast through
};

}  // namespace dspp::zero_common
