// zero/stage0: DeepSpeed's ZeRO stage 0, plain data parallelism. Every rank keeps the whole model
// state; at the accumulation boundary the gradients are all-reduced in buckets of
// zero_optimization.reduce_bucket_size elements (all buckets issued, then waited, so the comm
// plugin can pipeline them), averaged (or summed) over the data-parallel group, and every rank
// steps the optimizer on the whole flat buffer. No hooks: nothing happens during backward.
// Mixed precision (ZeroSetup::working_dtype): every rank keeps an fp32 master of the whole flat
// buffer, steps it, and rounds it into the working copy (no communication: every rank computes
// the same update).
//
// On a GPU (the engine's flat buffers in CUDA memory, ZeroSetup::device CUDA) the same steps run
// on the host's device (common/device_ops.h), on the legacy default stream: flat_params holds the
// working copy in its real dtype (bf16/f16 storage under mixed precision, else f32), flat_grads
// f32; the master is f32 device memory; the local gradient is rounded through a 16-bit scratch
// buffer, scaled and all-reduced on the device (the comm plugin, NCCL, takes device memory); the
// squared norm of the trained ranges is accumulated into one f64 on the device and copied to the
// host once. The optimizer gets device views (adam/adamw have device kernels).
//
// ZeRO-Offload on a GPU (zero_optimization.offload_optimizer.device "cpu"): the fp32 master of the
// whole flat buffer and the optimizer's states live in host memory and the optimizer, set up for
// the CPU, steps them there; each step copies the reduced (and scaled) gradient down and the
// stepped master up, cast into the working copy on the device (common/master_weights.h).
#include "../common/device_ops.h"
#include "../common/master_weights.h"

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::pass_through;
using dspp::plugin::StatusError;
namespace zc = dspp::zero_common;

class Stage0 final : public zc::StageBase {
 public:
  Stage0(const dspp_host_api* host, ConfigReader cfg)
      : StageBase(host),
        bucket_(zc::reduce_bucket_size(cfg)),
        offload_(zc::offload_optimizer(cfg)) {}

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      setup_ = *s;
      gpu_ = false;
      if (zc::is_cuda(setup_.device) || zc::is_cuda(setup_.flat_params.device) ||
          zc::is_cuda(setup_.flat_grads.device)) {
        return init_device();
      }
      if (setup_.flat_params.dtype != DSPP_F32 || setup_.flat_grads.dtype != DSPP_F32) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero/stage0: flat buffers must be fp32");
      }
      flat_numel_ = setup_.flat_grads.shape[0];
      segments_ = zc::segments_in(setup_, 0, flat_numel_);
      zc::check_working_dtype(setup_.working_dtype, "zero/stage0");
      master_.init(host_, setup_.working_dtype, zc::floats(setup_.flat_params), flat_numel_);
      if (setup_.optimizer) {
        dspp::OptimizerSetup os{segments_.data(), static_cast<int32_t>(segments_.size()),
                                setup_.groups,    setup_.num_groups,
                                flat_numel_,      setup_.device};
        pass_through(setup_.optimizer->init(&os));
      }
    });
  }

  dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept override {
    return guard([&] {
      if (gpu_) return reduce_gradients_device(sq_norm, overflow);
      float* g = zc::floats(setup_.flat_grads);
      zc::round_to(g, flat_numel_, setup_.working_dtype);  // the local gradient in 16 bits
      if (setup_.dp->size() > 1) {
        const zc::Reduction r = zc::reduction_of(setup_);
        if (r.before != 1.0f) zc::scale(g, flat_numel_, r.before);
        zc::all_reduce_buckets(setup_.dp, zc::slice(setup_.flat_grads, 0, flat_numel_), bucket_,
                               r.op);
        if (r.after != 1.0f) zc::scale(g, flat_numel_, r.after);
      }
      // Every rank now holds the same reduced gradient: the norm is global as computed here.
      bool bad = false;
      *sq_norm = zc::sq_norm(g, segments_, &bad);
      *overflow = bad ? 1 : 0;
    });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      if (!setup_.optimizer) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero/stage0: no optimizer");
      }
      if (gpu_) return step_device(args, grad_scale);
      zc::scale_segments(zc::floats(setup_.flat_grads), segments_, static_cast<float>(grad_scale));
      dspp::StepArgs a = *args;
      a.params = zc::host_view(master_.data(zc::floats(setup_.flat_params)), flat_numel_);
      a.grads = setup_.flat_grads;
      pass_through(setup_.optimizer->step(&a));
      master_.publish(zc::floats(setup_.flat_params));
    });
  }

  dspp_status zero_grad() noexcept override {
    if (gpu_) return guard([&] { ops_.zero(grads()); });
    std::memset(setup_.flat_grads.data, 0, static_cast<size_t>(flat_numel_) * sizeof(float));
    return DSPP_OK;
  }

  dspp_status shard(dspp::ZeroShard* out) noexcept override {
    return guard([&] {
      const std::vector<int64_t> b = zc::equal_bounds(flat_numel_, setup_.dp->size());
      const int32_t r = setup_.dp->rank();
      if (gpu_) {
        // A device view: the engine copies it to and from the host.
        *out = {b[r], b[r + 1], zc::slice_of(values(), b[r], b[r + 1] - b[r]), 0};
        return;
      }
      *out = {b[r], b[r + 1], zc::host_view(master() + b[r], b[r + 1] - b[r]), 0};
    });
  }

  dspp_status after_load() noexcept override {
    return guard([&] {
      // Each rank loaded its share of the master (or of the fp32 parameters): gather the rest.
      if (gpu_) {
        const std::vector<int64_t> b = zc::equal_bounds(flat_numel_, setup_.dp->size());
        if (master_.offloaded() && setup_.dp->size() > 1) {
          // The master is host memory: gather the loaded shares in a device copy of it.
          zc::DeviceBuffer whole;
          whole.reset(ops_, DSPP_MEM_COMM_BUFFERS, DSPP_F32, flat_numel_);
          master_.master_to_device(whole.view());
          zc::gather_partitions(setup_, b, false, whole.view());
          master_.master_from_device(whole.view());
        } else {
          zc::gather_partitions(setup_, b, false, values());
        }
        master_.publish(working());
        return;
      }
      zc::gather_partitions(setup_, zc::equal_bounds(flat_numel_, setup_.dp->size()), false,
                            zc::host_view(master(), flat_numel_));
      master_.publish(zc::floats(setup_.flat_params));
    });
  }

  dspp_status write_back(const int32_t* params, int32_t n) noexcept override {
    return guard([&] {
      for (int32_t k = 0; k < n; ++k) {
        const dspp::ZeroParam& p = setup_.params[params[k]];
        if (gpu_) {
          master_.take(working(), p.offset_in_flat, p.numel);  // a cast: already 16-bit values
        } else {
          master_.take(zc::floats(setup_.flat_params), p.offset_in_flat, p.numel);
        }
      }
    });
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      // fp32 training: the parameters are the master weights, so no separate master copy. Under
      // mixed precision the working copy is still fp32 memory (the CPU kernels are fp32), except
      // on the GPU, where it is stored in its own dtype.
      out->param_bytes = flat_numel_ * (gpu_ ? zc::element_bytes(setup_.flat_params.dtype) : 4);
      out->grad_bytes = flat_numel_ * 4;
      out->master_bytes = master_.bytes();
      out->optimizer_state_bytes = zc::optimizer_state_bytes(setup_.optimizer);
      out->buffer_bytes =
          gpu_ ? grad16_.bytes() + norm_.bytes() + master_.offload_buffer_bytes() : 0;
    });
  }

 private:
  float* master() const { return master_.data(zc::floats(setup_.flat_params)); }

  // ---- the GPU path ----

  void init_device() {
    const char* me = "zero/stage0";
    const dspp_device where = setup_.device;
    zc::check_device_setup(setup_, me, true);
    const bool mixed = zc::mixed(setup_.working_dtype);
    ops_ = zc::DeviceOps::of(host_, where, me);
    flat_numel_ = setup_.flat_grads.shape[0];
    segments_ = zc::segments_in(setup_, 0, flat_numel_);
    ranges_ = zc::merged_ranges(segments_);
    if (offload_.cpu) {
      master_.init_offload(host_, ops_, setup_.working_dtype, working(), offload_.pin, bucket_);
    } else {
      master_.init_device(ops_, setup_.working_dtype, working());
    }
    // The 16-bit image of the local gradient (mixed precision only), and the norm's accumulator.
    if (mixed) grad16_.reset(ops_, DSPP_MEM_COMM_BUFFERS, setup_.working_dtype, flat_numel_);
    norm_.reset(ops_, DSPP_MEM_OTHER, DSPP_F64, 1);
    gpu_ = true;
    if (setup_.optimizer) {
      // Under offload the optimizer runs on the CPU, over the host master.
      const dspp_device opt_where = offload_.cpu ? dspp_device{DSPP_DEVICE_CPU, 0} : where;
      dspp::OptimizerSetup os{segments_.data(), static_cast<int32_t>(segments_.size()),
                              setup_.groups,    setup_.num_groups,
                              flat_numel_,      opt_where};
      pass_through(setup_.optimizer->init(&os));
    }
  }

  void reduce_gradients_device(double* sq_norm, int32_t* overflow) {
    const dspp_tensor_view g = grads();
    if (!grad16_.empty()) {
      // The local gradient as the 16-bit type holds it (fp16 overflows to inf), back in f32.
      ops_.cast(g, grad16_.view());
      ops_.cast(grad16_.view(), g);
    }
    if (setup_.dp->size() > 1) {
      const zc::Reduction r = zc::reduction_of(setup_);
      ops_.scale(g, r.before);
      zc::all_reduce_buckets(setup_.dp, g, bucket_, r.op);
      ops_.scale(g, r.after);
    }
    // Every rank holds the same reduced gradient: the norm is global as computed here.
    const double sq = ops_.sum_squares(g, ranges_, norm_.view());
    *sq_norm = sq;
    *overflow = std::isfinite(sq) ? 0 : 1;
  }

  void step_device(const dspp::StepArgs* args, double grad_scale) {
    const dspp_tensor_view g = grads();
    const float c = static_cast<float>(grad_scale);
    for (const zc::FlatRange& r : ranges_) ops_.scale(zc::slice_of(g, r.begin, r.end - r.begin), c);
    dspp::StepArgs a = *args;
    a.params = values();
    a.grads = master_.optimizer_grads(g);  // offload: copied to host memory
    pass_through(setup_.optimizer->step(&a));
    master_.publish(working());
  }

  // The flat views, [0, flat_numel): the working copy (its own dtype), the gradient (f32) and the
  // f32 values the optimizer steps (the master, or the working copy in fp32 training).
  dspp_tensor_view working() const { return zc::slice_of(setup_.flat_params, 0, flat_numel_); }
  dspp_tensor_view grads() const { return zc::slice_of(setup_.flat_grads, 0, flat_numel_); }
  dspp_tensor_view values() const { return master_.view(working()); }

  int64_t bucket_;
  zc::Offload offload_;  // a GPU only: the CPU has nothing to offload
  dspp::ZeroSetup setup_{};
  std::vector<dspp::ParamSegment> segments_;
  int64_t flat_numel_ = 0;
  zc::MasterWeights master_;
  // The GPU path (init saw CUDA buffers).
  bool gpu_ = false;
  zc::DeviceOps ops_;
  std::vector<zc::FlatRange> ranges_;  // the trained segments, adjacent ones merged
  zc::DeviceBuffer grad16_;            // mixed precision: the local gradient in 16 bits
  zc::DeviceBuffer norm_;              // f64: the squared norm's accumulator
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::ZeroStage, Stage0>(
    DSPP_KIND_ZERO, "stage0", "1.0.0",
    "ZeRO stage 0: whole model state on every rank, gradients all-reduced in buckets")};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_zero_stage0", kPlugins)
