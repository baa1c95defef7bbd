// The training engine initialize() returns. It owns the resolved config, the model and the
// optimizer/scheduler objects made by plugins.
#ifndef DSPP_ENGINE_H
#define DSPP_ENGINE_H

#include <dspp/config.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/kinds/scheduler.h>
#include <dspp/module.h>

#include <cstdint>
#include <memory>
#include <string>

namespace dspp {

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

class Engine {
 public:
  Engine(Config config, std::shared_ptr<Module> model, std::shared_ptr<Optimizer> optimizer,
         std::shared_ptr<Scheduler> scheduler, Mesh mesh);
  virtual ~Engine();
  virtual EngineKind kind() const { return EngineKind::kEngine; }

  const Config& config() const { return config_; }
  Module& module() { return *model_; }
  const Mesh& mesh() const { return mesh_; }
  const std::shared_ptr<Optimizer>& optimizer() const { return optimizer_; }
  const std::shared_ptr<Scheduler>& lr_scheduler() const { return scheduler_; }

  int64_t train_batch_size() const { return config_.batch().train_batch_size; }
  int64_t train_micro_batch_size_per_gpu() const { return config_.batch().micro_batch_per_gpu; }
  int64_t gradient_accumulation_steps() const {
    return config_.batch().gradient_accumulation_steps;
  }
  int64_t global_steps() const { return global_steps_; }

 protected:
  Config config_;
  std::shared_ptr<Module> model_;
  std::shared_ptr<Optimizer> optimizer_;
  std::shared_ptr<Scheduler> scheduler_;
  Mesh mesh_;
  int64_t global_steps_ = 0;
};

}  // namespace dspp

#endif  // DSPP_ENGINE_H
