// Plugin kind `scheduler`: the learning rate (and, for OneCycle, momentum) as a function of the
// step count. Pure and deterministic, so its state is the step count alone plus what it reports.
#ifndef DSPP_KINDS_SCHEDULER_H
#define DSPP_KINDS_SCHEDULER_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

class Scheduler {
 public:
  // Called once with the optimizer's base learning rates (one per parameter group).
  virtual dspp_status init(const double* base_lrs, int32_t num_groups) noexcept = 0;
  // Learning rates (one per group) after `step` >= 0 scheduler steps: what DeepSpeed's optimizer
  // param groups hold after `step` calls to scheduler.step(), i.e. the lr of optimizer step
  // `step` + 1 in DeepSpeed's engine (which steps the scheduler after each applied optimizer
  // step). step 0 is the value set at construction, where DeepSpeed 0.19 leaves
  // last_batch_iteration at -1; for step >= 1 it is get_lr() at last_batch_iteration = step - 1.
  virtual dspp_status lr_at(int64_t step, double* lrs_out) const noexcept = 0;
  // Momentum (beta1, one per group) after `step` steps, same indexing; DSPP_ERR_NOT_SUPPORTED when
  // the schedule has none. (DeepSpeed's OneCycle also sets every group's beta2 to 0.99 while it
  // cycles momentum; applying that is the engine's choice.)
  virtual dspp_status momentum_at(int64_t step, double* betas_out) const noexcept = 0;

 protected:
  ~Scheduler() = default;
};

}  // namespace dspp
#endif
#endif
