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
// engine's flat buffers at [offset_in_flat, offset_in_flat + numel). A stage with
// DSPP_ZERO_MANAGES_PARAMS gets no flat buffers: offset_in_flat places the parameter in the flat
// layout it partitions, and `value` holds the initial value it copies its part from: the whole
// value, or (DSPP_PARAM_PARTITIONED, built under zero::Init) only this rank's chunk of it as
// zero_init_chunk() lays chunks out.
struct ZeroParam {
  const char* name;
  int32_t ndim;
  int64_t shape[DSPP_MAX_DIMS];
  int64_t numel;
  int64_t offset_in_flat;
  dspp_tensor_view value;  // the module's working copy (fp32/bf16/fp16), whole or a chunk
  dspp_tensor_view grad;   // where backward writes its gradient (empty: the stage manages grads)
  uint32_t flags;          // DSPP_PARAM_*
  int32_t group;           // index into groups; -1: not trained (in no parameter group)
};

// The flat buffers' length is a multiple of kPartitionAlign x dp->size(), so they split into equal,
// 64-byte aligned partitions; the elements after the last parameter are zero and belong to none.
constexpr int64_t kPartitionAlign = 16;

// zero::Init's layout of one parameter over `world` ranks: the flattened value is cut into equal
// chunks of this many elements (a multiple of kPartitionAlign), rank r holds elements
// [r * chunk, (r + 1) * chunk) and the part past numel is zero padding. It depends on the
// parameter alone, so a module is partitioned as soon as it is built, before the model is whole.
inline int64_t zero_init_chunk(int64_t numel, int64_t world) {
  const int64_t per_rank = (numel + world - 1) / world;
  return (per_rank + kPartitionAlign - 1) / kPartitionAlign * kPartitionAlign;
}

struct ZeroSetup {
  const ZeroParam* params;
  int32_t num_params;
  // The engine's flat buffers every parameter value / gradient is a view of: fp32 on the CPU; on
  // a GPU (device CUDA) flat_params is stored in the working dtype and flat_grads in fp32.
  // flat_grads is empty for a stage with DSPP_ZERO_MANAGES_GRADS; for one with
  // DSPP_ZERO_MANAGES_PARAMS flat_params has no memory (data NULL) and only says the layout's
  // length and the dtype and device of the values the stage is to hand out.
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
  // Mixed precision: DSPP_F16 or DSPP_BF16 makes the stage keep an fp32 master copy of what it
  // steps and write values rounded to that type into the working copy (still fp32 memory), and
  // round each rank's local gradient to it before the reduction. DSPP_F32 (0): fp32 training.
  int32_t working_dtype;
};

struct MemoryBreakdown {
  int64_t param_bytes;
  int64_t grad_bytes;
  int64_t optimizer_state_bytes;
  int64_t master_bytes;  // fp32 master weights (mixed precision only)
  int64_t buffer_bytes;  // reduction and gather buffers (bounded by the bucket sizes)
};

// What this rank saves and restores in a checkpoint: elements [begin, end) of the flat layout
// (stage 0: an equal share of it; stages 1-3: the rank's partition) with their fp32 values (the
// fp32 master weights under mixed precision)
// (writable: a load fills them, then calls after_load), and the flat index the optimizer's states
// start at (each state view covers [optimizer_begin, optimizer_begin + its length)).
struct ZeroShard {
  int64_t begin;
  int64_t end;
  dspp_tensor_view values;
  int64_t optimizer_begin;
};

// The stage owns gradient memory: ZeroSetup::flat_grads is empty, and the engine points each
// parameter's gradient where before_backward says, module by module.
#define DSPP_ZERO_MANAGES_GRADS 0x1u
// The stage owns parameter memory (ZeRO 3): ZeroSetup::flat_params has no memory, each rank keeps
// its partition, and a parameter's whole value exists only between before_forward/after_forward and
// before_backward/after_backward (the engine points the module at the views they give).
#define DSPP_ZERO_MANAGES_PARAMS 0x2u

// The engine calls the stage at fixed points. `params` lists indices into ZeroSetup::params: the
// parameters one module reads (its own and tied ones).
class ZeroStage {
 public:
  virtual dspp_status init(const ZeroSetup* setup) noexcept = 0;
  virtual uint32_t capabilities() const noexcept = 0;  // DSPP_ZERO_*
  // Around a module's forward: a stage with DSPP_ZERO_MANAGES_PARAMS gathers the parameters, sets
  // values[i] to params[i]'s whole value (valid until the matching after_forward) and releases
  // them after; others leave values as they are. Calls nest: a parameter read by several modules
  // (tied) stays gathered until its last after_*.
  virtual dspp_status before_forward(const int32_t* params, int32_t n,
                                     dspp_tensor_view* values) noexcept = 0;
  virtual dspp_status after_forward(const int32_t* params, int32_t n) noexcept = 0;
  // Once per micro-step, before the model's backward.
  virtual dspp_status begin_backward() noexcept = 0;
  // Before a module's backward. A stage with DSPP_ZERO_MANAGES_GRADS sets grads[i] to where
  // params[i]'s gradient accumulates (zeroed at its first use in this backward); one with
  // DSPP_ZERO_MANAGES_PARAMS gathers the values as before_forward does. Others leave both as
  // they are.
  virtual dspp_status before_backward(const int32_t* params, int32_t n, dspp_tensor_view* values,
                                      dspp_tensor_view* grads) noexcept = 0;
  // After a module's backward: these gradients are complete (DSPP_PARAM_SHARED ones excepted), so
  // stage 2 may start reducing them while the rest of backward runs; stage 3 releases the values.
  virtual dspp_status after_backward(const int32_t* params, int32_t n) noexcept = 0;
  // Once per micro-step, after the model's backward: every gradient of the micro-batch is written.
  virtual dspp_status end_backward() noexcept = 0;
  // At the accumulation boundary: finish the reductions; report the squared L2 norm of the whole
  // reduced gradient (over every trained parameter and every rank: the same value on all ranks)
  // and whether any gradient element is non-finite anywhere (the same on all ranks).
  virtual dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept = 0;
  // Scales gradients by `grad_scale` (unscale and clip in one pass), steps the optimizer on this
  // rank's partition (the stage fills args->params/grads; the rest comes from the engine) and
  // makes updated parameters visible to the module.
  virtual dspp_status step(const StepArgs* args, double grad_scale) noexcept = 0;
  virtual dspp_status zero_grad() noexcept = 0;
  // The caller changed the values of these gathered parameters (the same on every rank: a
  // GatheredParameters scope with a modifier rank broadcast them): a stage that keeps its own
  // copy of parameters takes its part from them. Stages 0-2 read the engine's buffers directly.
  virtual dspp_status write_back(const int32_t* params, int32_t n) noexcept = 0;
  // This rank's share of the parameters for a checkpoint.
  virtual dspp_status shard(ZeroShard* out) noexcept = 0;
  // A checkpoint load wrote every rank's shard values (and the optimizer's states): make the
  // values visible where the modules read them (stages 0-2 gather the shards into every rank's
  // flat buffer; stage 3 re-gathers what it keeps whole). Collective.
  virtual dspp_status after_load() noexcept = 0;
  // Bytes this rank holds for model states.
  virtual dspp_status memory(MemoryBreakdown* out) const noexcept = 0;

 protected:
  ~ZeroStage() = default;
};

}  // namespace dspp
#endif
#endif
