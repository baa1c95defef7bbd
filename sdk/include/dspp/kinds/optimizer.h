// Plugin kind `optimizer`: steps a set of parameter segments held in flat buffers.
//
// The engine (or a ZeRO stage) hands the optimizer the segments it owns; the optimizer never knows
// about ranks. A segment is a slice of one named parameter: `offset_in_param` and `numel` say which
// elements, `shape` is the whole parameter's shape, so an optimizer that needs whole matrices
// (Muon) can ask for them with `needs_whole_params()` and the stage arranges that.
#ifndef DSPP_KINDS_OPTIMIZER_H
#define DSPP_KINDS_OPTIMIZER_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

#define DSPP_PARAM_USE_MUON 0x1u  // set by the Muon flagger
#define DSPP_PARAM_NO_DECAY 0x2u  // the optimizer applies no weight decay to this segment
// Read by more than one module (tied weights) or by the root model itself: its gradient is
// complete only when the whole backward has run (set by the engine for the ZeRO stage).
#define DSPP_PARAM_SHARED 0x4u
// The value holds only this rank's chunk (built under zero::Init; see zero_init_chunk in
// kinds/zero.h). Set by the engine for the ZeRO stage.
#define DSPP_PARAM_PARTITIONED 0x8u

struct ParamSegment {
  const char* name;  // the parameter's full name, e.g. "h.0.attn.c_attn.weight"
  int32_t group;     // index into OptimizerSetup::groups
  uint32_t flags;    // DSPP_PARAM_*
  int32_t ndim;      // of the whole parameter
  int64_t shape[DSPP_MAX_DIMS];
  int64_t offset_in_param;  // first element of this segment within the whole parameter
  int64_t offset_in_flat;   // first element of this segment in the flat params/grads buffers
  int64_t numel;
};

// One parameter group, as a torch param group: its own lr and weight_decay, and optionally its own
// values of the optimizer's other options. A NaN lr or weight_decay means "not set for this group":
// the optimizer takes the value from options_json if it has one, else from its config section
// (optimizer.params), else its default. options_json uses the option names of optimizer.params
// ({"betas": [0.8, 0.99], "eps": 1e-6}); keys the optimizer does not know are logged and ignored,
// as torch ignores extra keys of a param group; a bad value is an error naming the group and key.
struct ParamGroupSetup {
  double lr;
  double weight_decay;
  const char* options_json;  // the group's own overrides as JSON object text, or NULL
};

struct OptimizerSetup {
  const ParamSegment* segments;
  int32_t num_segments;
  const ParamGroupSetup* groups;
  int32_t num_groups;
  int64_t flat_numel;  // elements in the flat params/grads buffers
  dspp_device device;
};

// Elements of params/grads (and of the states) outside every segment are never read or written.
struct StepArgs {
  dspp_tensor_view params;  // flat fp32 master weights (>= flat_numel elements), updated in place
  dspp_tensor_view grads;   // flat gradients (already unscaled, clipped and averaged)
  const double* lrs;        // one learning rate per group (the scheduler's current values), or
                            // NULL: the groups' resolved setup lr
  const double* betas1;     // per group beta1 (Adam, Lion, Lamb) or momentum (SGD) from the
                            // scheduler, replacing the configured one this step; NULL: configured
  int64_t step;             // 1-based count of optimizer steps taken, including this one: the t
                            // of bias corrections, and step 1 starts SGD's momentum buffer as
                            // torch does (so a resumed run passes the restored count)
};

class Optimizer {
 public:
  // May be called again: the states then start afresh (zero, or the optimizer's initial value).
  virtual dspp_status init(const OptimizerSetup* setup) noexcept = 0;
  virtual dspp_status step(const StepArgs* args) noexcept = 0;
  // True when every segment given to init must be a whole parameter (Muon's orthogonalisation,
  // Lamb's per-parameter trust ratio); such an optimizer refuses slices in init.
  virtual int32_t needs_whole_params() const noexcept = 0;
  // Optimizer state as named flat fp32 tensors aligned with the flat buffer (for checkpoints and
  // resharding). `index` runs from 0 to num_states()-1. The host may write into the views (loading
  // a checkpoint); they stay valid until the next init or the object's destruction.
  virtual int32_t num_states() const noexcept = 0;
  virtual dspp_status state(int32_t index, const char** name, dspp_tensor_view* view) noexcept = 0;

 protected:
  ~Optimizer() = default;  // destroyed through the descriptor's destroy()
};

}  // namespace dspp
#endif
#endif
