// The training engine initialize() returns, with DeepSpeed's micro-step semantics:
//
//   for (...) {
//     float loss = engine->forward(batch);  // the model's loss on this micro-batch
//     engine->backward(loss);               // gradients += d(loss / gradient_accumulation_steps)
//     engine->step();                       // at the accumulation boundary: clip, optimizer step,
//   }                                       // scheduler step, zero gradients
//
// The engine keeps the model's parameters and gradients in two flat fp32 buffers (each
// Parameter's value/grad is a view into them) and hands them to the ZeRO stage plugin
// (zero_optimization.stage), which reduces gradients across data-parallel ranks and steps the
// optimizer plugin on the part this rank owns.
//
// fp16.enabled / bf16.enabled: the parameters the modules see hold values rounded to the 16-bit
// type (in fp32 memory: the CPU kernels compute in fp32), the stage steps an fp32 master copy,
// and fp16 scales the loss with DeepSpeed's dynamic loss scaler, skipping steps whose gradients
// overflow.
#ifndef DSPP_ENGINE_H
#define DSPP_ENGINE_H

#include <dspp/config.h>
#include <dspp/dist.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/kinds/scheduler.h>
#include <dspp/kinds/zero.h>
#include <dspp/module.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace dspp {

namespace monitor {
class Monitor;
struct Event;
}  // namespace monitor
namespace precision {
class LossScaler;
}  // namespace precision

// Which engine initialize() chose (DeepSpeed's routing).
enum class EngineKind { kEngine, kPipelineEngine, kHybridEngine };
const char* to_string(EngineKind k);

struct Mesh {
  int64_t world_size = 1;
  int64_t rank = 0;
  int64_t dp_size = 1;
  int64_t sp_size = 1;
  int64_t tp_size = 1;
  int64_t pp_size = 1;
  std::string source;  // where the layout came from, for messages
};

// A torch-style parameter group: the parameters (by name) and the group's own option values as a
// JSON object ({"lr": 1e-3, "weight_decay": 0.0}), DeepSpeed's `model_parameters`.
struct ParamGroup {
  std::vector<std::string> params;
  std::string options_json = "{}";
};

// The optimizer as the engine uses it: the plugin object plus what the engine resolved for it.
struct EngineOptimizer {
  std::shared_ptr<Optimizer> impl;
  std::vector<double> base_lrs;  // one per group: the lr each group starts from
};

// What initialize() assembles for an engine.
struct EngineParts {
  Config config;
  std::shared_ptr<Module> model;
  EngineOptimizer optimizer;
  std::shared_ptr<Scheduler> scheduler;
  Mesh mesh;
  std::vector<ParamGroup> groups;            // empty: one group holding every parameter
  std::shared_ptr<ZeroStage> zero;           // the zero/stage<N> plugin
  std::shared_ptr<ProcessGroup> dp_group;    // data parallel: the loader shards by its rank
  std::shared_ptr<ProcessGroup> grad_group;  // gradients are averaged over it (dp x sp)
};

class Engine {
 public:
  explicit Engine(EngineParts parts);
  virtual ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  virtual EngineKind kind() const { return EngineKind::kEngine; }

  // The model's loss on one micro-batch (the model must be a TrainableModel).
  float forward(const Batch& batch);
  // Accumulates this micro-batch's gradients, scaled by loss_scale() / gradient_accumulation_steps.
  void backward(float loss);
  // Counts a micro-step; at the accumulation boundary unscales and clips, steps the optimizer and
  // the LR scheduler, and zeroes the gradients. A gradient overflow under fp16 (or bf16 with
  // bf16.check_grad_overflow) skips the optimizer and scheduler steps instead (skipped_steps()),
  // as DeepSpeed does; global_steps and global_samples advance either way.
  void step();
  // True when the next step() is the last micro-step of an accumulation window.
  bool is_gradient_accumulation_boundary() const;
  void zero_grad();
  void train();
  void eval();

  // The learning rate of each group for the next optimizer step.
  std::vector<double> get_lr() const;
  int64_t global_steps() const { return global_steps_; }
  int64_t global_samples() const { return global_samples_; }
  int64_t micro_steps() const { return micro_steps_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  // The global gradient norm (unscaled) before clipping at the last optimizer step.
  double last_grad_norm() const { return last_grad_norm_; }
  // The loss scale the next backward() uses: fp16's (dynamic or fp16.loss_scale), else 1.
  double loss_scale() const;
  // "fp32", "fp16" or "bf16": the precision of the parameters the modules see.
  const char* precision() const;
  // Seconds spent per phase ("forward", "backward", "step"), accumulated since the last print
  // (wall_clock_breakdown).
  const std::map<std::string, double>& timers() const { return timers_; }

  // comms_logger: the collectives of the engine's groups (gradient and data-parallel) recorded
  // since initialization, as DeepSpeed's log_summary table (this rank's view; empty when the
  // logger is off). log_comms_summary() prints it on global rank 0, as DeepSpeed does.
  bool comms_logger_enabled() const { return comms_logger_; }
  CommRecords comms_records() const;
  std::string comms_summary() const;
  void log_comms_summary() const;

  const Config& config() const { return config_; }
  Module& module() { return *model_; }
  const Mesh& mesh() const { return mesh_; }
  const std::shared_ptr<Optimizer>& optimizer() const { return optimizer_.impl; }
  const std::shared_ptr<Scheduler>& lr_scheduler() const { return scheduler_; }
  const std::shared_ptr<ProcessGroup>& dp_group() const { return dp_group_; }
  const std::shared_ptr<ProcessGroup>& grad_group() const { return grad_group_; }
  // Bytes of model states this rank holds, as the ZeRO stage reports them.
  MemoryBreakdown memory_breakdown() const;
  // DeepSpeed's save_checkpoint, a collective: every rank writes its shard of the parameters and
  // of the optimizer's states (safetensors) into save_dir/tag (default tag "global_step<N>"),
  // rank 0 the manifest (layout, stage, config, counters, client_state: a JSON object), then the
  // `latest` file (save_latest). Files are written under temporary names and renamed, `latest`
  // last, so a crash leaves the previous checkpoint loadable. Returns the tag folder.
  std::string save_checkpoint(const std::string& save_dir, const std::string& tag = "",
                              const std::string& client_state = "{}", bool save_latest = true);
  struct LoadedCheckpoint {
    std::string path;          // the tag folder; empty when there was nothing to load
    std::string client_state;  // the JSON object save_checkpoint was given
  };
  // DeepSpeed's load_checkpoint, a collective: tag "" reads the `latest` file (none: nothing is
  // loaded, a warning, an empty path). Each rank reads the elements of its own shard, from
  // whichever shards hold them, so a checkpoint loads at any world size and ZeRO stage.
  // load_module_only restores only the parameters (no optimizer states, no counters).
  LoadedCheckpoint load_checkpoint(const std::string& load_dir, const std::string& tag = "",
                                   bool load_optimizer_states = true,
                                   bool load_lr_scheduler_states = true,
                                   bool load_module_only = false);

  // Makes these parameters' whole values visible in Parameter::value (all of them when `params` is
  // empty) until release_parameters: a collective at ZeRO 3, where the stage gathers them; the
  // values are always there at stages 0-2. Use zero::GatheredParameters rather than these.
  void gather_parameters(const std::vector<Parameter*>& params);
  // Ends gather_parameters. With modifier_rank >= 0, that rank's values (it may have changed them)
  // are broadcast to every rank and the ZeRO stage takes them over.
  void release_parameters(const std::vector<Parameter*>& params, int modifier_rank);
  // The flat buffers every parameter value / gradient is a view of (empty when the ZeRO stage
  // manages them: flat_grads from stage 2 on, flat_params at stage 3). fp32 on the CPU; on a GPU
  // the values are in the working dtype.
  const Tensor& flat_params() const { return flat_params_; }
  const Tensor& flat_grads() const { return flat_grads_; }

  // Where the model states live and the layers run (DeepSpeed's engine.device).
  dspp_device device() const { return device_; }

  int64_t train_batch_size() const { return config_.batch().train_batch_size; }
  int64_t train_micro_batch_size_per_gpu() const { return config_.batch().micro_batch_per_gpu; }
  int64_t gradient_accumulation_steps() const {
    return config_.batch().gradient_accumulation_steps;
  }

 protected:
  void setup_parameters(const std::vector<ParamGroup>& groups);
  void map_module_parameters();
  void install_hooks();
  void before_forward(const std::vector<int32_t>& params);
  void after_forward(const std::vector<int32_t>& params);
  void before_backward(const std::vector<int32_t>& params);
  void after_backward(const std::vector<int32_t>& params);
  void take_values(const std::vector<int32_t>& params);
  void drop_values(const std::vector<int32_t>& params);
  std::vector<int32_t> indices_of(const std::vector<Parameter*>& params) const;
  void configure_monitors();
  void take_step(const std::vector<double>& lrs, double scale);
  void print_progress(const std::vector<double>& lrs);
  void write_events(const std::vector<monitor::Event>& events);

  Config config_;
  std::shared_ptr<Module> model_;
  TrainableModel* trainable_ = nullptr;  // model_ as a TrainableModel, when it is one
  EngineOptimizer optimizer_;
  std::shared_ptr<Scheduler> scheduler_;
  Mesh mesh_;
  std::shared_ptr<ZeroStage> zero_;
  std::shared_ptr<ProcessGroup> dp_group_, grad_group_;

  std::vector<Parameter*> params_;
  // Where the parameters, gradients and optimizer states live: the process's compute device
  // (<dspp/device.h>) when initialize() ran. On a GPU flat_params_ holds the working dtype for
  // real (bf16/fp16 under mixed precision) and flat_grads_ f32.
  dspp_device device_{DSPP_DEVICE_CPU, 0};
  Tensor flat_params_, flat_grads_;
  std::vector<ZeroParam> zero_params_;
  bool manages_grads_ = false;   // the ZeRO stage hands out gradient memory (stages 2, 3)
  bool manages_params_ = false;  // the ZeRO stage gathers parameter values per module (stage 3)
  std::vector<int> live_;        // per parameter: modules between before_* and after_* (stage 3)
  std::unordered_map<const Module*, std::vector<int32_t>> module_params_;
  std::vector<int32_t> root_params_;           // read by the root model itself, no module below it
  std::vector<dspp_tensor_view> grad_views_;   // before_backward's answer, reused
  std::vector<dspp_tensor_view> value_views_;  // before_forward's / before_backward's, reused
  int hooks_id_ = 0;
  std::vector<ParamGroupSetup> group_setups_;
  std::vector<std::string> group_options_;  // owns the JSON the setups point to

  double gradient_clipping_ = 0.0;
  int32_t working_dtype_ = DSPP_F32;  // DSPP_F16 / DSPP_BF16 under mixed precision
  std::unique_ptr<precision::LossScaler> scaler_;
  bool check_overflow_ = false;  // an overflow skips the step (fp16; bf16.check_grad_overflow)
  // DSPP_TEST_INF_GRAD=<global_step>:<rank>, a test hook: that rank writes +inf into one
  // gradient element in the backward of that optimizer step's boundary micro-step.
  int64_t inf_grad_step_ = -1;
  int64_t inf_grad_rank_ = -1;
  int64_t inf_grad_done_ = -1;  // the step it was injected at
  int64_t steps_per_print_ = 0;
  bool wall_clock_breakdown_ = false;
  int64_t micro_steps_ = 0;
  int64_t global_steps_ = 0;
  int64_t global_samples_ = 0;
  int64_t skipped_steps_ = 0;
  int64_t scheduler_steps_ = 0;
  double last_grad_norm_ = 0.0;
  float last_loss_ = 0.0f;
  float window_loss_ = 0.0f;  // sum of loss / GA over the accumulation window (DeepSpeed's losses)
  // csv_monitor / tensorboard, on global rank 0 only (as DeepSpeed).
  std::vector<std::unique_ptr<monitor::Monitor>> monitors_;
  bool comms_logger_ = false;
  bool backward_pending_ = false;
  std::map<std::string, double> timers_;
};

}  // namespace dspp

#endif  // DSPP_ENGINE_H
