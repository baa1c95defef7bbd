// zero/stage1: DeepSpeed's ZeRO stage 1. The optimizer states are partitioned across the
// data-parallel ranks: the flat buffer splits into equal partitions (the engine pads it so they
// are), each rank's optimizer is set up over its partition only (so its states are 1/dp of the
// whole), gradients are reduce-scattered at the accumulation boundary so each rank receives its
// partition's reduced gradient, each rank steps its partition, and the updated partitions are
// all-gathered into every rank's parameters. Communication per step: a reduce-scatter and an
// all-gather of the flat buffer, the same volume as stage 0's all-reduce.
//
// An optimizer that needs whole parameters (Muon's orthogonalisation, Lamb's trust ratio) gets
// partitions cut at parameter boundaries instead (balanced by elements, so unequal): gradients
// are then all-reduced and each rank broadcasts the parameters it stepped. Its states are still
// split across ranks; the communication is 3 flat buffers per step instead of 2.
//
// Mixed precision (ZeroSetup::working_dtype): each rank keeps an fp32 master of its partition,
// steps it, and rounds it into its partition of the working copy before the all-gather.
//
// On a GPU (the engine's flat buffers in CUDA memory, ZeroSetup::device CUDA) the same steps run
// on the host's device (common/device_ops.h) on the legacy default stream: flat_params holds the
// working copy in its own dtype (bf16/f16 storage under mixed precision, else f32) and is gathered
// in that dtype, flat_grads is f32; the local gradient is rounded through a 16-bit scratch, the
// reduce-scatter and the all-gather move device memory (NCCL), the partition's squared norm is
// summed into one f64 on the device, all-reduced there and read once; the master of the partition
// is f32 device memory and the optimizer gets device views (adam/adamw have device kernels).
#include "../common/flat_partition_stage.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::pass_through;
using dspp::plugin::StatusError;
namespace zc = dspp::zero_common;

class Stage1 final : public zc::FlatPartitionStage {
 public:
  Stage1(const dspp_host_api* host, ConfigReader cfg)
      : FlatPartitionStage(host, cfg, zc::reduce_bucket_size(cfg)),
        bucket_(zc::reduce_bucket_size(cfg)) {}

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      const char* me = "zero/stage1";
      setup_ = *s;
      init_device(me, true);  // on a GPU: checks the buffers, takes the host's device
      if (!gpu_ && (setup_.flat_params.dtype != DSPP_F32 || setup_.flat_grads.dtype != DSPP_F32)) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero/stage1: flat buffers must be fp32");
      }
      flat_numel_ = setup_.flat_grads.shape[0];
      part_ = zc::partition_optimizer(setup_, flat_numel_, me, optimizer_device());
      work_ = zc::slice_of(setup_.flat_params, part_.begin, part_.size());
      zc::check_working_dtype(setup_.working_dtype, me);
      // Every rank rounds the whole working copy (identical everywhere after the engine's
      // broadcast), so the first forward sees 16-bit values before any gather. (On a GPU it is
      // stored in the 16-bit type already.)
      if (!gpu_) zc::round_to(zc::floats(setup_.flat_params), flat_numel_, setup_.working_dtype);
      init_master();
      // A GPU under mixed precision: the 16-bit image the local gradient is rounded through, a
      // bucket at a time.
      if (gpu_ && zc::mixed(setup_.working_dtype)) {
        half_.reset(ops_, DSPP_MEM_COMM_BUFFERS, setup_.working_dtype,
                    std::max<int64_t>(1, std::min(bucket_, flat_numel_)));
      }
    });
  }

  dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept override {
    return guard([&] {
      const dspp_tensor_view all = zc::slice(setup_.flat_grads, 0, flat_numel_);
      const dspp_tensor_view mine = zc::slice(setup_.flat_grads, part_.begin, part_.size());
      round_local_gradient(all);  // the local gradient in 16 bits
      dspp::Communicator* dp = setup_.dp;
      if (dp->size() > 1) {
        const zc::Reduction r = zc::reduction_of(setup_);
        scale_view(all, r.before);
        if (!part_.whole) {
          // In place: rank r's reduced slice lands where its partition already is.
          dspp::CommWork* w = nullptr;
          const dspp_status issued = dp->reduce_scatter(setup_.flat_grads, mine, r.op, &w);
          std::vector<dspp::CommWork*> works;
          if (issued == DSPP_OK) works.push_back(w);
          zc::wait_all(works, issued);
        } else {
          zc::all_reduce_buckets(dp, all, bucket_, r.op);
        }
        scale_view(mine, r.after);
      }
      // Each rank holds its partition's reduced gradient: sum the partitions' squares.
      partition_norm(mine, sq_norm, overflow);
    });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      const dspp_tensor_view g = zc::slice(setup_.flat_grads, part_.begin, part_.size());
      scale_partition_segments(g, static_cast<float>(grad_scale));
      dspp::StepArgs a = *args;
      a.params = values();
      a.grads = master_.optimizer_grads(g);  // offload: copied to host memory
      pass_through(setup_.optimizer->step(&a));
      publish();
      zc::gather_partitions(setup_, part_.bounds, part_.whole);
    });
  }

  dspp_status zero_grad() noexcept override {
    if (gpu_) return guard([&] { ops_.zero(zc::slice(setup_.flat_grads, 0, flat_numel_)); });
    std::memset(setup_.flat_grads.data, 0, static_cast<size_t>(flat_numel_) * sizeof(float));
    return DSPP_OK;
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      // fp32 training: the parameters are the master weights. Stage 1 keeps whole gradients.
      out->param_bytes = param_bytes();
      out->grad_bytes = flat_numel_ * 4;
      out->master_bytes = master_.bytes();
      out->optimizer_state_bytes = zc::optimizer_state_bytes(setup_.optimizer);
      out->buffer_bytes = half_.bytes() + norm_acc_.bytes() + master_.offload_buffer_bytes();
    });
  }

 private:
  // Mixed precision: this rank's gradient as the 16-bit type holds it (fp16 overflows to inf).
  void round_local_gradient(const dspp_tensor_view& g) const {
    if (!gpu_) {
      zc::round_to(zc::floats(g), g.shape[0], setup_.working_dtype);
    } else if (!half_.empty()) {
      ops_.round_through(g, half_.view());
    }
  }

  int64_t bucket_;
  zc::DeviceBuffer half_;  // a GPU under mixed precision: the 16-bit scratch of the rounding
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::ZeroStage, Stage1>(
    DSPP_KIND_ZERO, "stage1", "1.0.0",
    "ZeRO stage 1: optimizer states partitioned; gradients reduce-scattered, parameters "
    "all-gathered")};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_zero_stage1", kPlugins)
