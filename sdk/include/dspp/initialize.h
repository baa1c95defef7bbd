// dspp::initialize(): DeepSpeed's deepspeed.initialize() for C++.
//
//   dspp::InitializeArgs a;
//   a.model = my_model;
//   a.config = "ds_config.json";          // a path, JSON text, or base64 JSON
//   auto [engine, optimizer, dataloader, lr_scheduler] = dspp::initialize(a);
#ifndef DSPP_INITIALIZE_H
#define DSPP_INITIALIZE_H

#include <dspp/config.h>
#include <dspp/data.h>
#include <dspp/dist.h>
#include <dspp/engine.h>
#include <dspp/module.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dspp {

class PluginRegistry;

// DeepSpeed's `args` namespace (fields it reads from argparse).
struct CommandLineArgs {
  std::optional<std::string> deepspeed_config;
  std::optional<std::string> deepscale_config;  // deprecated spelling, as DeepSpeed
  int local_rank = -1;
};

struct InitializeArgs {
  const CommandLineArgs* args = nullptr;
  std::shared_ptr<Module> model;         // required
  std::shared_ptr<Optimizer> optimizer;  // overrides the config's optimizer
  // Parameter groups (DeepSpeed's model_parameters); empty: one group holding every parameter.
  std::vector<ParamGroup> model_parameters;
  // Gives a DataLoader of train_micro_batch_size_per_gpu, sharded by data-parallel rank.
  std::shared_ptr<const Dataset> training_data;
  CollateFn collate_fn;                     // null: stack samples into a batch
  std::shared_ptr<Scheduler> lr_scheduler;  // overrides the config's scheduler
  int distributed_port = 29500;
  std::shared_ptr<ModelParallelUnit> mpu;
  std::optional<bool> dist_init_required;
  std::optional<std::string> config;    // path, JSON text or base64 JSON
  std::optional<Config> config_object;  // an already-loaded config (DeepSpeed's dict)
  std::optional<std::pair<int64_t, int64_t>> mesh_param;  // (dp, sp)
  std::optional<std::string> config_params;               // older spelling of `config`
  // Values for keys written "auto" (what Hugging Face's Trainer fills in), by dotted path.
  std::map<std::string, std::string> auto_values;
  // Seeds the data loader's shuffle (DeepSpeed uses torch's global RNG).
  uint64_t seed = 1234;
  // The registry to create plugins from; null: one scanning the default search path.
  std::shared_ptr<PluginRegistry> plugins;
};

struct InitializeResult {
  std::shared_ptr<Engine> engine;
  std::shared_ptr<Optimizer> optimizer;
  std::shared_ptr<DataLoader> dataloader;
  std::shared_ptr<Scheduler> lr_scheduler;
};

InitializeResult initialize(const InitializeArgs& args);

namespace zero {

// DeepSpeed's zero.Init: while a scope is active, a module added to a parent (register_module)
// is partitioned as soon as it is built: each parameter is broadcast from rank 0, then every rank
// keeps only its chunk (Parameter::zero_world/zero_rank), so a model larger than one rank's
// memory can be built, one module at a time. The ranks are the world (init_distributed() is called
// when the world is not started yet, as DeepSpeed does) or the group given. initialize() suspends
// an active scope for its duration and restores it after, as DeepSpeed does; the engine takes the
// chunks over at any ZeRO stage (stages 0-2 gather them whole, stage 3 keeps them partitioned).
class Init {
 public:
  Init();
  explicit Init(std::shared_ptr<ProcessGroup> group);
  ~Init();
  Init(const Init&) = delete;
  Init& operator=(const Init&) = delete;
};

// True while a zero::Init scope is active on this thread and not suspended.
bool init_context_active();

// DeepSpeed's zero.GatheredParameters: while it lives, the parameters' whole values are in
// Parameter::value on every rank (a collective: every rank of the group must build it with the
// same parameters). With modifier_rank >= 0, what that rank wrote into them is broadcast and kept
// when the scope ends; other ranks' changes are lost, as in DeepSpeed.
class GatheredParameters {
 public:
  // Parameters built under zero::Init, before initialize() (whole ones are left as they are).
  explicit GatheredParameters(std::vector<Parameter*> params, int modifier_rank = -1);
  // An engine's parameters (every one when `params` is empty), at any ZeRO stage.
  GatheredParameters(Engine& engine, std::vector<Parameter*> params = {}, int modifier_rank = -1);
  // Releases (see release()); an error there is logged, since a destructor cannot throw.
  ~GatheredParameters();
  GatheredParameters(const GatheredParameters&) = delete;
  GatheredParameters& operator=(const GatheredParameters&) = delete;
  // Ends the scope now, reporting errors as exceptions. Idempotent.
  void release();

 private:
  Engine* engine_ = nullptr;
  std::vector<Parameter*> params_;
  std::vector<Tensor> chunks_;  // zero::Init flavour: each parameter's chunk while gathered
  int modifier_rank_ = -1;
  bool released_ = false;
};

}  // namespace zero
}  // namespace dspp

#endif  // DSPP_INITIALIZE_H
