// zero/stage2: DeepSpeed's ZeRO stage 2. As stage 1 the optimizer states are partitioned; in
// addition the gradients are: no rank holds the whole gradient. The stage owns gradient memory
// (DSPP_ZERO_MANAGES_GRADS) and reduces it bucket by bucket during backward
// (common/partitioned_grads.h). Communication per micro-step: one reduction of every gradient
// (Psi), plus the all-gather of the updated parameters per step (Psi): 2 Psi, as the paper says.
// Mixed precision (ZeroSetup::working_dtype): as stage 1, an fp32 master of the partition is
// stepped and rounded into the working copy; each bucket's gradients are rounded to the 16-bit
// type before they are reduced.
//
// On a GPU (ZeroSetup::device CUDA; flat_params in CUDA memory in the working dtype, bf16/f16
// storage under mixed precision) the buckets, the tied parameters' slots and the partition's
// accumulated gradient are f32 device memory, the gradient views handed out in before_backward
// point there, and the reductions move device memory (NCCL); everything else is stage 1's GPU
// path (common/flat_partition_stage.h, common/partitioned_grads.h).
#include "../common/flat_partition_stage.h"
#include "../common/partitioned_grads.h"

#include <algorithm>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::pass_through;
namespace zc = dspp::zero_common;

class Stage2 final : public zc::FlatPartitionStage {
 public:
  Stage2(const dspp_host_api* host, ConfigReader cfg)
      : FlatPartitionStage(host, cfg, zc::reduce_bucket_size(cfg)),
        bucket_size_(zc::reduce_bucket_size(cfg)) {}

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      const char* me = "zero/stage2";
      setup_ = *s;
      init_device(me, false);  // on a GPU: checks the buffers, takes the host's device
      flat_numel_ = setup_.flat_params.shape[0];
      part_ = zc::partition_optimizer(setup_, flat_numel_, me, optimizer_device());
      work_ = zc::slice_of(setup_.flat_params, part_.begin, part_.size());
      grads_.init(host_, setup_, part_, flat_numel_, bucket_size_, gpu_ ? &ops_ : nullptr);
      zc::check_working_dtype(setup_.working_dtype, me);
      // Every rank rounds the whole working copy (identical everywhere after the engine's
      // broadcast), so the first forward sees 16-bit values before any gather. (On a GPU it is
      // stored in the 16-bit type already.)
      if (!gpu_) zc::round_to(zc::floats(setup_.flat_params), flat_numel_, setup_.working_dtype);
      init_master();
    });
  }

  uint32_t capabilities() const noexcept override { return DSPP_ZERO_MANAGES_GRADS; }

  dspp_status begin_backward() noexcept override {
    return guard([&] { grads_.begin_backward(); });
  }

  dspp_status before_backward(const int32_t* params, int32_t n, dspp_tensor_view*,
                              dspp_tensor_view* grads) noexcept override {
    return guard([&] { grads_.hand_out(params, n, grads); });
  }

  dspp_status end_backward() noexcept override {
    return guard([&] { grads_.end_backward(); });
  }

  dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept override {
    return guard([&] { partition_norm(grads_.acc_view(), sq_norm, overflow); });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      const dspp_tensor_view g = grads_.acc_view();
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
    return guard([&] { grads_.zero(); });
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      out->param_bytes = param_bytes();
      out->grad_bytes = grads_.acc_bytes();  // the partition's accumulated gradient
      out->master_bytes = master_.bytes();
      out->optimizer_state_bytes = zc::optimizer_state_bytes(setup_.optimizer);
      out->buffer_bytes =
          grads_.buffer_bytes() + norm_acc_.bytes() + master_.offload_buffer_bytes();
    });
  }

 private:
  int64_t bucket_size_;
  zc::PartitionedGrads grads_;
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::ZeroStage, Stage2>(
    DSPP_KIND_ZERO, "stage2", "1.0.0",
    "ZeRO stage 2: optimizer states and gradients partitioned; gradients reduced during "
    "backward in buckets")};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_zero_stage2", kPlugins)
