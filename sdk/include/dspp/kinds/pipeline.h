// Plugin kind `pipeline_schedule`: the instruction stream of one pipeline stage for one batch, as
// DeepSpeed's schedule.py expresses it. The PipelineEngine executes the instructions.
#ifndef DSPP_KINDS_PIPELINE_H
#define DSPP_KINDS_PIPELINE_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

enum PipeOp : int32_t {
  kPipeLoadMicroBatch = 0,
  kPipeForward = 1,
  kPipeBackward = 2,        // input-gradient half and weight half back to back
  kPipeBackwardInput = 3,   // input-gradient half only (zero-bubble schedules)
  kPipeBackwardWeight = 4,  // weight half only
  kPipeSendActivation = 5,
  kPipeRecvActivation = 6,
  kPipeSendGrad = 7,
  kPipeRecvGrad = 8,
  kPipeReduceGrads = 9,
  kPipeReduceTiedGrads = 10,
  kPipeOptimizerStep = 11,
};

struct PipeInstruction {
  int32_t op;           // PipeOp
  int32_t micro_batch;  // -1 when not about one micro-batch
  int32_t buffer_id;    // which activation buffer slot
};

struct PipeScheduleSetup {
  int32_t micro_batches;
  int32_t stages;
  int32_t stage_id;
  int32_t train;  // 0: evaluation (forward only)
};

class PipelineSchedule {
 public:
  virtual dspp_status init(const PipeScheduleSetup* setup) noexcept = 0;
  virtual int32_t num_buffers() const noexcept = 0;
  // Steps of the schedule; each step holds zero or more instructions, run in order.
  virtual int32_t num_steps() const noexcept = 0;
  virtual dspp_status step(int32_t index, const PipeInstruction** cmds,
                           int32_t* num_cmds) noexcept = 0;

 protected:
  ~PipelineSchedule() = default;
};

}  // namespace dspp
#endif
#endif
