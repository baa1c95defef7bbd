// Partitioned gradients during backward, shared by stages 2 and 3: each module's gradients are
// written into a bucket of reduce_bucket_size elements; a full bucket is reduced — each
// partition's part of it to the rank that owns the partition (comm `reduce`, falling back to
// all_reduce where a plugin lacks it) — while backward goes on (overlap_comm), into the other
// bucket. Each rank adds what it received to its partition's gradient accumulator, the only
// full-precision gradient it keeps. Gradients of tied parameters (DSPP_PARAM_SHARED) are complete
// only at the end of backward: they live in slots of their own and are reduced then.
//
// Buckets are filled from the top down: backward visits modules in reverse order, so each bucket
// holds a run of the flat buffer in ascending order and a partition's part of it is one range.
//
// On a GPU (init with DeviceOps) every buffer here (buckets, tied slots, the accumulator) is f32
// device memory and the gradient views handed out are views of it; the arithmetic (zeroing,
// rounding through a 16-bit scratch, scaling, accumulating) runs on the device's kernels on the
// legacy default stream, where backward writes the gradients, and the comm plugin (NCCL) orders
// its reductions after that stream. A bucket is written again only after its reduction was waited
// for (finish), so backward never overwrites a gradient still being reduced.
#pragma once

#include "zero_common.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace dspp::zero_common {

// Host memory from the host's allocator (so the host's accounting and limits see it).
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { reset(nullptr, 0); }
  // Zero-filled.
  void reset(const dspp_host_api* host, int64_t floats) {
    if (data_) host_->free_host(host_->self, data_);
    data_ = nullptr;
    size_ = 0;
    host_ = host;
    if (!host || floats <= 0) return;
    data_ = static_cast<float*>(host->alloc_host(host->self, static_cast<size_t>(floats) * 4));
    if (!data_) {
      throw StatusError(DSPP_ERR_OUT_OF_MEMORY,
                        "zero: out of host memory for " + std::to_string(floats * 4) + " bytes");
    }
    size_ = floats;
    std::memset(data_, 0, static_cast<size_t>(floats) * 4);
  }
  float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  const dspp_host_api* host_ = nullptr;
  float* data_ = nullptr;
  int64_t size_ = 0;
};

// The stages' flat memory: f32 host memory from the host's allocator, or (given the device) device
// memory of any float dtype, counted in `category` (DSPP_MEM_*). Zero-filled, unless `zeroed` is
// false on a device (memory the caller writes whole before reading it, such as a stage-3 gather);
// host memory always is.
class FlatMemory {
 public:
  void reset(const dspp_host_api* host, const DeviceOps* ops, int32_t category, int64_t n,
             int32_t dtype = DSPP_F32, bool zeroed = true) {
    if (ops) {
      host_mem_.reset(nullptr, 0);
      dev_mem_.reset(*ops, category, dtype, n);
      if (zeroed && n > 0) ops->zero(dev_mem_.view());
      return;
    }
    if (dtype != DSPP_F32) {
      throw StatusError(DSPP_ERR_INTERNAL, std::string("zero: host memory of ") +
                                               dtype_text(dtype) + " (the CPU path is fp32)");
    }
    dev_mem_.release();
    host_mem_.reset(host, n);
  }
  // f32 memory only.
  float* data() const {
    return dev_mem_.empty() ? host_mem_.data() : static_cast<float*>(dev_mem_.view().data);
  }
  // A 1-d view of all of it (host or device).
  dspp_tensor_view view() const {
    return dev_mem_.empty() ? host_view(host_mem_.data(), host_mem_.size()) : dev_mem_.view();
  }
  int64_t size() const { return dev_mem_.empty() ? host_mem_.size() : dev_mem_.size(); }
  int64_t bytes() const { return dev_mem_.empty() ? host_mem_.size() * 4 : dev_mem_.bytes(); }

 private:
  HostBuffer host_mem_;
  DeviceBuffer dev_mem_;
};

class PartitionedGrads {
 public:
  PartitionedGrads() = default;
  PartitionedGrads(const PartitionedGrads&) = delete;
  PartitionedGrads& operator=(const PartitionedGrads&) = delete;
  ~PartitionedGrads() {
    // Buffers must outlive reductions still in flight after a failure.
    for (Bucket& b : buckets_) {
      for (CommWork* w : b.works) w->release();
    }
  }

  // `part` is this rank's partition of the flat layout of `setup` (flat_numel elements). With
  // `ops` (a GPU) every buffer is device memory of ops's device.
  void init(const dspp_host_api* host, const ZeroSetup& setup, const Partition& part,
            int64_t flat_numel, int64_t bucket_size, const DeviceOps* ops = nullptr) {
    host_ = host;
    setup_ = setup;
    part_ = &part;
    gpu_ = ops != nullptr;
    if (gpu_) ops_ = *ops;
    acc_.reset(host_, dev(), DSPP_MEM_GRADIENTS, part.size());
    slot_of_.assign(setup_.num_params, -1);
    int64_t shared = 0;
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      if (setup_.params[i].flags & DSPP_PARAM_SHARED) {
        slot_of_[i] = shared;
        shared += setup_.params[i].numel;
      }
    }
    shared_.reset(host_, dev(), DSPP_MEM_COMM_BUFFERS, shared);
    const int64_t cap = std::max<int64_t>(1, std::min(bucket_size, flat_numel));
    for (Bucket& b : buckets_) {
      b.mem.reset(host_, dev(), DSPP_MEM_COMM_BUFFERS, cap);
      b.top = cap;
    }
    if (gpu_) {
      // The 16-bit image a run is rounded through (mixed precision), a bucket's worth at a time.
      if (mixed(setup_.working_dtype)) {
        half_.reset(ops_, DSPP_MEM_COMM_BUFFERS, setup_.working_dtype, cap);
      }
    }
  }

  void begin_backward() { zero_mem(shared_.data(), shared_.size()); }

  // Sets grads[i] to where params[i]'s gradient is written in this backward (zeroed).
  void hand_out(const int32_t* params, int32_t n, dspp_tensor_view* grads) {
    int64_t need = 0;
    for (int32_t i = 0; i < n; ++i) {
      if (slot_of_[params[i]] < 0) need += setup_.params[params[i]].numel;
    }
    Bucket* b = &buckets_[cur_];
    if (need > b->top) {
      // No room left: reduce this bucket while backward fills the other one.
      launch(*b);
      cur_ ^= 1;
      b = &buckets_[cur_];
      finish(*b);
      if (need > b->mem.size()) grow(*b, need);
    }
    // This module's parameters, in their flat order, just below what is already in use.
    b->top -= need;
    int64_t at = b->top;
    for (int32_t i = 0; i < n; ++i) {
      const ZeroParam& p = setup_.params[params[i]];
      float* where = nullptr;
      if (slot_of_[params[i]] >= 0) {
        where = shared_.data() + slot_of_[params[i]];
      } else {
        where = b->mem.data() + at;
        zero_mem(where, p.numel);
        b->runs.push_back(Run{where, p.offset_in_flat, p.numel});
        at += p.numel;
      }
      grads[i] = view_of(where, p.numel);
    }
  }

  // Every gradient of the micro-batch is written: reduce what is left, wait for everything.
  void end_backward() {
    launch(buckets_[cur_]);
    for (int32_t i = 0; i < setup_.num_params; ++i) {
      if (slot_of_[i] < 0) continue;
      shared_bucket_.runs.push_back(Run{shared_.data() + slot_of_[i],
                                        setup_.params[i].offset_in_flat, setup_.params[i].numel});
    }
    launch(shared_bucket_);
    for (Bucket& b : buckets_) finish(b);
    finish(shared_bucket_);
  }

  // This partition's accumulated gradient (host memory; device memory on a GPU).
  float* acc() const { return acc_.data(); }
  // The same as an f32 view (a device view on a GPU).
  dspp_tensor_view acc_view() const { return view_of(acc_.data(), acc_.size()); }
  void zero() { zero_mem(acc_.data(), acc_.size()); }
  int64_t acc_bytes() const { return acc_.size() * 4; }
  int64_t buffer_bytes() const {
    return (buckets_[0].mem.size() + buckets_[1].mem.size() + shared_.size()) * 4 + half_.bytes();
  }

 private:
  // A stretch of a gradient buffer that maps to [flat, flat + numel) of the flat layout.
  struct Run {
    float* data;
    int64_t flat;
    int64_t numel;
  };
  struct Bucket {
    FlatMemory mem;
    int64_t top = 0;        // filled from the top down: [top, size) is in use
    std::vector<Run> runs;  // in ascending flat order once complete
    std::vector<CommWork*> works;
    bool in_flight = false;
  };

  // A module larger than the bucket: this bucket grows to hold it (it is idle: finished).
  void grow(Bucket& b, int64_t need) {
    b.mem.reset(host_, dev(), DSPP_MEM_COMM_BUFFERS, need);
    b.top = need;
  }

  // ---- host or device memory (gpu_) ----
  const DeviceOps* dev() const { return gpu_ ? &ops_ : nullptr; }
  dspp_tensor_view view_of(float* p, int64_t n) const {
    return gpu_ ? device_view(p, DSPP_F32, n, ops_.where) : host_view(p, n);
  }
  void zero_mem(float* p, int64_t n) const {
    if (n <= 0) return;
    if (gpu_) {
      ops_.zero(view_of(p, n));
    } else {
      std::memset(p, 0, static_cast<size_t>(n) * 4);
    }
  }
  // Mixed precision: the values as the 16-bit type holds them.
  void round_mem(float* p, int64_t n) const {
    if (!gpu_) {
      round_to(p, n, setup_.working_dtype);
    } else if (!half_.empty()) {
      ops_.round_through(view_of(p, n), half_.view());
    }
  }
  void scale_mem(float* p, int64_t n, float c) const {
    if (c == 1.0f) return;
    if (gpu_) {
      ops_.scale(view_of(p, n), c);
    } else {
      scale(p, n, c);
    }
  }

  // Starts the reduction of a bucket's gradients: each partition's part to its owner.
  void launch(Bucket& b) {
    if (b.runs.empty()) return;
    // Runs were added top-down; merge the ones adjacent both in the buffer and in the flat.
    std::sort(b.runs.begin(), b.runs.end(),
              [](const Run& x, const Run& y) { return x.flat < y.flat; });
    std::vector<Run> merged;
    for (const Run& r : b.runs) {
      if (!merged.empty() && merged.back().data + merged.back().numel == r.data &&
          merged.back().flat + merged.back().numel == r.flat) {
        merged.back().numel += r.numel;
      } else {
        merged.push_back(r);
      }
    }
    b.runs = std::move(merged);
    const Reduction red = reduction_of(setup_);
    Communicator* dp = setup_.dp;
    const std::vector<int64_t>& bounds = part_->bounds;
    dspp_status issued = DSPP_OK;
    for (const Run& r : b.runs) {
      // Mixed precision: this rank's gradient as the 16-bit type would hold it (fp16 overflows
      // to inf here, as DeepSpeed's fp16 gradients do).
      round_mem(r.data, r.numel);
      scale_mem(r.data, r.numel, red.before);
      if (dp->size() == 1) continue;
      for (int32_t k = 0; k < dp->size() && issued == DSPP_OK; ++k) {
        const int64_t lo = std::max(r.flat, bounds[k]);
        const int64_t hi = std::min(r.flat + r.numel, bounds[k + 1]);
        if (lo >= hi) continue;
        CommWork* w = nullptr;
        dspp_tensor_view v = view_of(r.data + (lo - r.flat), hi - lo);
        if (use_reduce_) {
          issued = dp->reduce(v, k, red.op, &w);
          if (issued == DSPP_ERR_NOT_SUPPORTED && !w) {
            use_reduce_ = false;  // this comm plugin has no reduce: all-reduce instead
            issued = DSPP_OK;
          }
        }
        if (!use_reduce_ && issued == DSPP_OK) issued = dp->all_reduce(v, red.op, &w);
        if (issued == DSPP_OK && w) b.works.push_back(w);
      }
    }
    b.in_flight = true;
    if (issued != DSPP_OK) wait_all(b.works, issued);
  }

  // Waits for a launched bucket and adds this rank's part to the partition's accumulator.
  void finish(Bucket& b) {
    if (!b.in_flight) return;
    wait_all(b.works);
    const Reduction red = reduction_of(setup_);
    float* acc = acc_.data();
    for (const Run& r : b.runs) {
      const int64_t lo = std::max(r.flat, part_->begin);
      const int64_t hi = std::min(r.flat + r.numel, part_->end);
      float* src = r.data + (lo - r.flat);
      float* dst = acc + (lo - part_->begin);
      const float c = red.after;
      if (gpu_) {
        if (lo >= hi) continue;
        // c * src rounded to f32, then added (the host loop's two roundings); src is this
        // bucket's own memory, done with once reduced.
        scale_mem(src, hi - lo, c);
        ops_.add(view_of(dst, hi - lo), view_of(src, hi - lo));
        continue;
      }
#pragma omp simd
      for (int64_t i = 0; i < hi - lo; ++i) dst[i] += c * src[i];
    }
    b.runs.clear();
    b.top = b.mem.size();
    b.in_flight = false;
  }

  const dspp_host_api* host_ = nullptr;
  ZeroSetup setup_{};
  const Partition* part_ = nullptr;
  bool gpu_ = false;
  DeviceOps ops_;                 // a GPU: the device every buffer lives on
  DeviceBuffer half_;             // a GPU under mixed precision: what runs are rounded through
  FlatMemory acc_;                // this partition's reduced gradient, accumulated
  FlatMemory shared_;             // tied parameters' gradients for the current backward
  std::vector<int64_t> slot_of_;  // offset in shared_ per parameter, -1 if not tied
  Bucket buckets_[2];
  Bucket shared_bucket_;  // the runs of shared_ being reduced (no memory of its own)
  int cur_ = 0;
  bool use_reduce_ = true;
};

}  // namespace dspp::zero_common
