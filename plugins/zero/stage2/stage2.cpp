// zero/stage2: DeepSpeed's ZeRO stage 2. As stage 1 the optimizer states are partitioned; in
// addition the gradients are: no rank holds the whole gradient. The stage owns gradient memory
// (DSPP_ZERO_MANAGES_GRADS) and reduces it bucket by bucket during backward
// (common/partitioned_grads.h). Communication per micro-step: one reduction of every gradient
// (Psi), plus the all-gather of the updated parameters per step (Psi): 2 Psi, as the paper says.
// Mixed precision (ZeroSetup::working_dtype): as stage 1, an fp32 master of the partition is
// stepped and rounded into the working copy; each bucket's gradients are rounded to the 16-bit
// type before they are reduced.
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
      : FlatPartitionStage(host), bucket_size_(zc::reduce_bucket_size(cfg)) {}

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      zc::refuse_device(*s, "zero/stage2");
      setup_ = *s;
      flat_numel_ = setup_.flat_params.shape[0];
      part_ = zc::partition_optimizer(setup_, flat_numel_, "zero/stage2");
      grads_.init(host_, setup_, part_, flat_numel_, bucket_size_);
      zc::check_working_dtype(setup_.working_dtype, "zero/stage2");
      // Every rank rounds the whole working copy (identical everywhere after the engine's
      // broadcast), so the first forward sees 16-bit values before any gather.
      zc::round_to(zc::floats(setup_.flat_params), flat_numel_, setup_.working_dtype);
      master_.init(host_, setup_.working_dtype, working(), part_.size());
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
    return guard([&] { grads_.norm(sq_norm, overflow); });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      zc::scale_segments(grads_.acc(), part_.segments, static_cast<float>(grad_scale));
      dspp::StepArgs a = *args;
      a.params = zc::host_view(master_.data(working()), part_.size());
      a.grads = zc::host_view(grads_.acc(), part_.size());
      pass_through(setup_.optimizer->step(&a));
      master_.publish(working());
      zc::gather_partitions(setup_, part_.bounds, part_.whole);
    });
  }

  dspp_status zero_grad() noexcept override {
    grads_.zero();
    return DSPP_OK;
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      out->param_bytes = flat_numel_ * 4;
      out->grad_bytes = grads_.acc_bytes();  // the partition's accumulated gradient
      out->master_bytes = master_.bytes();
      out->optimizer_state_bytes = zc::optimizer_state_bytes(setup_.optimizer);
      out->buffer_bytes = grads_.buffer_bytes();
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
