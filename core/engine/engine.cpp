#include <dspp/engine.h>

#include <utility>

namespace dspp {

const char* to_string(EngineKind k) {
  switch (k) {
    case EngineKind::kEngine:
      return "Engine";
    case EngineKind::kPipelineEngine:
      return "PipelineEngine";
    case EngineKind::kHybridEngine:
      return "HybridEngine";
  }
  return "?";
}

Engine::Engine(Config config, std::shared_ptr<Module> model, std::shared_ptr<Optimizer> optimizer,
               std::shared_ptr<Scheduler> scheduler, Mesh mesh)
    : config_(std::move(config)),
      model_(std::move(model)),
      optimizer_(std::move(optimizer)),
      scheduler_(std::move(scheduler)),
      mesh_(std::move(mesh)) {}

Engine::~Engine() = default;

}  // namespace dspp
