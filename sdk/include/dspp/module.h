// Modules: the model a host application hands to initialize().
//
// A Module has named parameters and named children. There is no autograd: each leaf layer writes
// its forward and backward by hand and keeps what its backward needs (llm.c style); a container
// (Sequential, a residual block, a whole model) runs its children through forward_child() and
// backward_child(), so its backward is derived from theirs and the base class can run hooks
// around every child.
//
// Backward comes in two halves: backward_input(dy) returns dx, backward_weight(dy) accumulates
// (+=) into the parameters' grads. backward(dy) runs both back to back, child by child. A pipeline
// schedule may call the halves separately on a stage (zero-bubble schedules move the weight half);
// a container then defers each child's weight half until its own backward_weight() runs.
//
// One forward is in flight per module: forward() stores what backward needs and the next forward
// replaces it.
#ifndef DSPP_MODULE_H
#define DSPP_MODULE_H

#include <dspp/abi.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dspp {

struct Parameter {
  // The full dotted name from the root module, e.g. "transformer.h.0.attn.c_attn.weight".
  std::string name;
  std::vector<int64_t> shape;
  uint32_t flags = 0;  // DSPP_PARAM_* (kinds/optimizer.h): set by flaggers such as Muon's
  // fp32. Layers read both through the Parameter at every call, so the engine may rebind them to
  // views of its flat buffers (after copying the values there).
  Tensor value;
  Tensor grad;  // backward accumulates into it: zero it between optimizer steps
  // Built under zero::Init with zero_world > 0 ranks: `value` is only this rank's chunk
  // [zero_rank * chunk, (zero_rank + 1) * chunk) of the flattened parameter (chunk =
  // zero_init_chunk(numel, zero_world), kinds/zero.h; zero padding past the end) and `grad` is
  // empty. zero::GatheredParameters (or the engine) gives the whole value back for a while.
  int32_t zero_world = 0;
  int32_t zero_rank = 0;
};

class Module;

// Called around the forward and backward of every module below the one the hooks were added to
// (ZeRO-3 gathers a module's parameters in before_forward and releases them in after_forward;
// ZeRO-2 starts reducing a module's gradients in after_backward). Empty functions are skipped.
// Around one child, hooks of outer modules run first in before_*, last in after_*.
// In backward, before_backward runs before the child's input half and after_backward after its
// weight half, so after_backward means "this module's grads are complete" (except for a tied
// parameter, which other modules also accumulate into).
struct ModuleHooks {
  std::function<void(Module&)> before_forward;
  std::function<void(Module&)> after_forward;
  std::function<void(Module&)> before_backward;
  std::function<void(Module&)> after_backward;
};

class Module {
 public:
  Module() = default;
  // Parameters and children are registered by address: a module never moves.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module();

  virtual std::string type_name() const = 0;

  // ---- tree
  // --------------------------------------------------------------------------------------
  const std::string& name() const { return name_; }  // the name in the parent; "" at the root
  std::string path() const;                          // dotted from the root; "" at the root
  Module* parent() const { return parent_; }
  std::vector<Module*> children() const;  // in registration order

  // Every parameter of this module and its children: this module's own, then each child's, in
  // registration order; a tied parameter once (at the first module that registered it).
  virtual std::vector<Parameter*> parameters();
  // This module's own and tied parameters only (what its forward reads).
  const std::vector<Parameter*>& direct_parameters() const { return direct_; }

  // ---- compute
  // ----------------------------------------------------------------------------------- The
  // defaults throw: a module overrides what it supports. A leaf without parameters needs no
  // backward_weight; a leaf with parameters overrides it (and calls Module::backward_weight if it
  // also has children).
  virtual Tensor forward(const Tensor& x);
  virtual Tensor backward_input(const Tensor& dy);
  // Leaves: accumulate the weight gradients for `dy` (the same dy backward_input was given).
  // Containers: run the weight halves their children deferred in backward_input.
  virtual void backward_weight(const Tensor& dy);
  // Both halves; each child's weight half runs right after its input half, so hooks nest.
  Tensor backward(const Tensor& dy);

  void train(bool on = true);  // recursive; modules start in training mode
  void eval() { train(false); }
  bool training() const { return training_; }
  void zero_grad();  // zeroes every parameter's grad

  // Returns an id for remove_hooks. Do not add or remove hooks from inside a hook.
  int add_hooks(ModuleHooks hooks);
  void remove_hooks(int id);

 protected:
  // Adds a child; its parameters are renamed "<name>.<...>" below this module's path.
  template <class M>
  M& register_module(std::string name, std::shared_ptr<M> module) {
    add_child(std::move(name), module);
    return *module;
  }
  // Registers an owned parameter and allocates its value (zeros) and grad (zeros), fp32 on the CPU.
  void register_parameter(std::string name, Parameter& p, std::vector<int64_t> shape);
  // Registers a parameter owned by another module (tied weights: GPT's lm_head reads wte). It
  // keeps its owner's name and appears once in parameters().
  void register_tied_parameter(Parameter& p);

  // Run a child with the hooks around it. Containers call these, never child.forward() directly.
  Tensor forward_child(Module& child, const Tensor& x);
  Tensor backward_child(Module& child, const Tensor& dy);

 private:
  struct OwnedParam {
    std::string local_name;
    Parameter* param;
  };
  struct Deferred {
    Module* child;
    Tensor dy;
  };
  enum class HookPoint { kBeforeForward, kAfterForward, kBeforeBackward, kAfterBackward };

  void add_child(std::string name, std::shared_ptr<Module> child);
  void rename_parameters();  // this subtree's owned parameters from the current path
  void collect(std::vector<Parameter*>& out);
  void check_child(const Module& child, const char* what) const;
  void run_hooks(HookPoint point, Module& child);

  std::string name_;
  Module* parent_ = nullptr;
  std::vector<std::shared_ptr<Module>> children_;
  std::vector<OwnedParam> owned_;
  std::vector<Parameter*> direct_;  // owned and tied, in registration order
  std::vector<std::pair<int, ModuleHooks>> hooks_;
  int next_hook_id_ = 1;
  bool training_ = true;
  bool full_backward_ = false;      // inside backward(): children run both halves at once
  std::vector<Deferred> deferred_;  // children's weight halves waiting for backward_weight()
};

// What the engine feeds a trainable model: one micro-batch.
struct Batch {
  Tensor inputs;   // e.g. token ids i32 [B, T] for GPT, features f32 [B, in] for an MLP
  Tensor targets;  // e.g. next-token ids i32 [B, T]
};

// A model the engine can train: the loss of a micro-batch, then the gradients of that loss.
class TrainableModel : public Module {
 public:
  // Runs the forward of `batch` and returns its loss (mean over the batch's targets).
  virtual float forward_loss(const Batch& batch) = 0;
  // Accumulates (+=) scale * d(loss)/d(parameter) into every grad, for the last forward_loss.
  // The engine passes loss_scale / gradient_accumulation_steps.
  virtual void backward_loss(float scale) = 0;
};

// A model split into stages; initialize() routes it to the PipelineEngine.
class PipelineModule : public Module {};

// A model-parallel unit (DeepSpeed's `mpu`): the host's own tensor/pipeline/data groups.
class ModelParallelUnit {
 public:
  virtual ~ModelParallelUnit() = default;
  virtual int data_parallel_world_size() const = 0;
  virtual int data_parallel_rank() const = 0;
  virtual int model_parallel_world_size() const = 0;
};

}  // namespace dspp

#endif  // DSPP_MODULE_H
