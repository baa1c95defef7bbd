// Plugin kind `zero`: how model states are partitioned across data-parallel ranks (stages 0..3).
// The engine calls the stage at fixed points of a training step; the stage owns the flat buffers,
// the communication and the hand-off to the optimizer. The engine itself never reduces gradients.
#ifndef DSPP_KINDS_ZERO_H
#define DSPP_KINDS_ZERO_H

#include <dspp/abi.h>
#include <dspp/kinds/comm.h>
#include <dspp/kinds/optimizer.h>

#ifdef __cplusplus
namespace dspp {

// One model parameter as the stage sees it. Stages 0-2 find its value and gradient in the
// engine's flat buffers at [offset_in_flat, offset_in_flat + numel).
struct ZeroParam {
  const char* name;
  int32_t ndim;
  int64_t shape[DSPP_MAX_DIMS];
  int64_t numel;
  int64_t offset_in_flat;
  dspp_tensor_view value;  // the module's working copy (fp32/bf16/fp16), whole or empty (stage 3)
  dspp_tensor_view grad;   // where backward writes this parameter's gradient
  uint32_t flags;          // DSPP_PARAM_*
  int32_t group;           // index into groups; -1: not trained (in no parameter group)
};

// The flat buffers' length is a multiple of kPartitionAlign x dp->size(), so they split into equal,
// 64-byte aligned partitions; the elements after the last parameter are zero and belong to none.
constexpr int64_t kPartitionAlign = 16;

struct ZeroSetup {
  const ZeroParam* params;
  int32_t num_params;
  // The engine's flat fp32 buffers every parameter value / gradient is a view of.
  dspp_tensor_view flat_params;
  dspp_tensor_view flat_grads;
  Communicator* dp;      // the group gradients are reduced over (data parallel x sequence parallel)
  Optimizer* optimizer;  // steps the partition this rank owns; the stage calls its init()
  const ParamGroupSetup* groups;
  int32_t num_groups;
  dspp_device device;
  // How gradients combine across dp (gradient_allreduce_op, prescale_gradients,
  // gradient_predivide_factor): 1 = the mean over ranks, 0 = the sum. With a predivide factor f
  // (1 when unset) each rank's gradient is multiplied by 1/f before the reduction and the result by
  // f/size after (mean) or by f (sum).
  int32_t average;
  double predivide_factor;
};

struct MemoryBreakdown {
  int64_t param_bytes;
  int64_t grad_bytes;
  int64_t optimizer_state_bytes;
  int64_t master_bytes;
};

class ZeroStage {
 public:
  virtual dspp_status init(const ZeroSetup* setup) noexcept = 0;
  // Hooks around a module's forward/backward (index into ZeroSetup::params of its first param and
  // how many it has): stage 3 gathers before and releases after; stage 2 starts reducing.
  virtual dspp_status before_forward(int32_t first, int32_t count) noexcept = 0;
  virtual dspp_status after_forward(int32_t first, int32_t count) noexcept = 0;
  virtual dspp_status before_backward(int32_t first, int32_t count) noexcept = 0;
  virtual dspp_status after_backward(int32_t first, int32_t count) noexcept = 0;
  // At the accumulation boundary: finish the reductions; report the squared L2 norm of the whole
  // reduced gradient (over every trained parameter and every rank: the same value on all ranks)
  // and whether any gradient element is non-finite anywhere (the same on all ranks).
  virtual dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept = 0;
  // Scales gradients by `grad_scale` (unscale and clip in one pass), steps the optimizer on this
  // rank's partition (the stage fills args->params/grads; the rest comes from the engine) and
  // makes updated parameters visible to the module.
  virtual dspp_status step(const StepArgs* args, double grad_scale) noexcept = 0;
  virtual dspp_status zero_grad() noexcept = 0;
  // Bytes this rank holds for model states.
  virtual dspp_status memory(MemoryBreakdown* out) const noexcept = 0;

 protected:
  ~ZeroStage() = default;
};

}  // namespace dspp
#endif
#endif
