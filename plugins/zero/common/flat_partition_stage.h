// What stages 1-3 share: the engine's flat layout, this rank's partition of it and the fp32 master
// of that partition (mixed precision), and the operations that only depend on those: the
// checkpoint shard, the reload after a checkpoint load and GatheredParameters' write-back (stages
// 1 and 2; stage 3 has its own), scaling, norms and publishing the stepped master.
//
// On a GPU (ZeroSetup::device CUDA: init_device) the working copy is stored in its own dtype
// (bf16/f16 under mixed precision, 2 bytes an element) and the master is f32 device memory; the
// small helpers below (scale, round, norm, publish) run on the host's device then, so each stage
// keeps one code path for both. Under ZeRO-Offload (offload_optimizer.device "cpu", on a GPU only)
// the partition's master is host memory and the optimizer steps it on the CPU (MasterWeights).
#pragma once

#include "master_weights.h"
#include "zero_common.h"

#include <algorithm>
#include <cmath>

namespace dspp::zero_common {

class FlatPartitionStage : public StageBase {
 public:
  // `offload_chunk`: the most elements the offloaded master moves through device scratch at once.
  FlatPartitionStage(const dspp_host_api* host, const plugin::ConfigReader& cfg,
                     int64_t offload_chunk)
      : StageBase(host), offload_(offload_optimizer(cfg)), offload_chunk_(offload_chunk) {}

  dspp_status shard(ZeroShard* out) noexcept override {
    // On a GPU a device view: the engine copies it to and from the host.
    *out = {part_.begin, part_.end, values(), part_.begin};
    return DSPP_OK;
  }

  dspp_status after_load() noexcept override {
    return guard([&] {
      publish();
      gather_partitions(setup_, part_.bounds, part_.whole);
    });
  }

  dspp_status write_back(const int32_t* params, int32_t n) noexcept override {
    return guard([&] {
      // Every rank holds the new whole values: round them all, take this partition's part. (On a
      // GPU the working copy is stored in the 16-bit type: its values are rounded already.)
      for (int32_t k = 0; k < n; ++k) {
        const ZeroParam& p = setup_.params[params[k]];
        if (!gpu_) {
          round_to(floats(setup_.flat_params) + p.offset_in_flat, p.numel, setup_.working_dtype);
        }
        const int64_t lo = std::max(p.offset_in_flat, part_.begin);
        const int64_t hi = std::min(p.offset_in_flat + p.numel, part_.end);
        if (lo >= hi) continue;
        if (gpu_) {
          master_.take(working_view(), lo - part_.begin, hi - lo);
        } else {
          master_.take(working(), lo - part_.begin, hi - lo);
        }
      }
    });
  }

 protected:
  ~FlatPartitionStage() = default;
  // This rank's partition of the working copy (host memory: fp32; the CPU path only).
  float* working() const { return floats(work_); }
  // The same as a view of the working copy's own dtype (on a GPU, bf16/f16 storage under mixed
  // precision).
  dspp_tensor_view working_view() const { return work_; }
  // What the optimizer steps and a checkpoint holds, f32: the master of the partition, or the
  // working copy's partition in fp32 training.
  dspp_tensor_view values() const {
    return gpu_ ? master_.view(working_view()) : host_view(master_.data(working()), part_.size());
  }

  // Checks the engine's buffers on a GPU (before anything is touched) and takes the host's device;
  // a no-op on the CPU. Sets gpu_.
  void init_device(const char* me, bool with_grads) {
    gpu_ = setup_on_device(setup_);
    if (!gpu_) return;
    check_device_setup(setup_, me, with_grads);
    ops_ = DeviceOps::of(host_, setup_.device, me);
  }
  // Where the optimizer runs: the setup's device, or the CPU under ZeRO-Offload on a GPU.
  dspp_device optimizer_device() const {
    return gpu_ && offload_.cpu ? dspp_device{DSPP_DEVICE_CPU, 0} : setup_.device;
  }
  // The master of the partition (after part_ and work_ are set); on a GPU also the trained
  // ranges of the partition and the norm's accumulator.
  void init_master() {
    if (!gpu_) {
      master_.init(host_, setup_.working_dtype, working(), part_.size());
      return;
    }
    if (offload_.cpu) {
      master_.init_offload(host_, ops_, setup_.working_dtype, working_view(), offload_.pin,
                           offload_chunk_);
    } else {
      master_.init_device(ops_, setup_.working_dtype, working_view());
    }
    ranges_ = merged_ranges(part_.segments);
    norm_acc_.reset(ops_, DSPP_MEM_OTHER, DSPP_F64, 1);
  }
  // The stepped (or loaded) master into the working copy's partition.
  void publish() const {
    if (gpu_) {
      master_.publish(working_view());
    } else {
      master_.publish(working());
    }
  }

  // x *= c for an f32 view of host or device memory; nothing when c is 1.
  void scale_view(const dspp_tensor_view& x, float c) const {
    if (c == 1.0f) return;
    if (gpu_) {
      ops_.scale(x, c);
    } else {
      scale(floats(x), x.shape[0], c);
    }
  }
  // The trained segments of an f32 view of the partition (offsets relative to part_.begin)
  // scaled by c (the step's grad_scale).
  void scale_partition_segments(const dspp_tensor_view& g, float c) const {
    if (!gpu_) {
      scale_segments(floats(g), part_.segments, c);
      return;
    }
    for (const FlatRange& r : ranges_) ops_.scale(slice_of(g, r.begin, r.end - r.begin), c);
  }
  // The squared norm of the trained segments of `g` (the partition's reduced gradient, f32)
  // summed over the ranks, and whether any element is non-finite (the same on every rank).
  void partition_norm(const dspp_tensor_view& g, double* sq, int32_t* overflow) const {
    if (gpu_) {
      *sq = device_sum_squares(ops_, setup_.dp, g, ranges_, norm_acc_.view());
      *overflow = std::isfinite(*sq) ? 0 : 1;
      return;
    }
    bool bad = false;
    double v[2] = {sq_norm(floats(g), part_.segments, &bad), 0.0};
    v[1] = bad ? 1.0 : 0.0;
    all_reduce_sum(setup_.dp, v, 2);
    *sq = v[0];
    *overflow = v[1] > 0 ? 1 : 0;
  }
  // Bytes of the working copy: fp32 memory on the CPU, its own dtype on a GPU.
  int64_t param_bytes() const {
    return flat_numel_ * (gpu_ ? element_bytes(setup_.flat_params.dtype) : 4);
  }

  Offload offload_;
  int64_t offload_chunk_;
  ZeroSetup setup_{};
  Partition part_;
  int64_t flat_numel_ = 0;
  // This rank's partition of the working copy: its slice of the engine's flat_params (stages 1
  // and 2), or the stage's own memory (stage 3, which gets the flat layout's length only).
  dspp_tensor_view work_{};
  MasterWeights master_;
  // The GPU path (init_device saw device buffers).
  bool gpu_ = false;
  DeviceOps ops_;
  std::vector<FlatRange> ranges_;  // the partition's trained segments, merged (relative offsets)
  DeviceBuffer norm_acc_;          // f64: the squared norm's accumulator
};

}  // namespace dspp::zero_common
