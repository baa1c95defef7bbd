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

struct ZeroParam {
  const char* name;
  dspp_tensor_view value;  // the module's working copy (fp32/bf16/fp16), whole or empty (stage 3)
  dspp_tensor_view grad;   // where backward writes this parameter's gradient
  uint32_t flags;          // DSPP_PARAM_*
  int32_t group;
};

struct ZeroSetup {
  ZeroParam* params;
  int32_t num_params;
  Communicator* dp;      // the data-parallel group
  Optimizer* optimizer;  // steps the partition this rank owns
  const ParamGroupSetup* groups;
  int32_t num_groups;
  dspp_device device;
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
  // At the accumulation boundary: finish reductions; report the squared global gradient norm
  // contribution of this rank and whether any gradient is non-finite.
  virtual dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept = 0;
  // Scales gradients by `grad_scale` (unscale and clip in one pass), steps the optimizer on this
  // rank's partition and makes updated parameters visible to the module.
  virtual dspp_status step(const StepArgs* args, double grad_scale) noexcept = 0;
  virtual dspp_status zero_grad() noexcept = 0;
  virtual dspp_status memory(MemoryBreakdown* out) const noexcept = 0;

 protected:
  ~ZeroStage() = default;
};

}  // namespace dspp
#endif
#endif
