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

// DeepSpeed's zero.Init: while a scope is active, new modules are created already partitioned.
// initialize() suspends an active scope for its duration and restores it after, as DeepSpeed does.
class Init {
 public:
  Init();
  ~Init();
  Init(const Init&) = delete;
  Init& operator=(const Init&) = delete;
};

// True while a zero::Init scope is active on this thread and not suspended.
bool init_context_active();

}  // namespace zero
}  // namespace dspp

#endif  // DSPP_INITIALIZE_H
