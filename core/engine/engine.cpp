// The single-process training engine: flat fp32 parameter/gradient buffers, DeepSpeed's
// micro-step and accumulation-boundary semantics, global-norm clipping, the optimizer and LR
// scheduler plugins.
#include <dspp/engine.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <utility>

#include "log/log.h"

namespace dspp {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

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

Engine::Engine(Config config, std::shared_ptr<Module> model, EngineOptimizer optimizer,
               std::shared_ptr<Scheduler> scheduler, Mesh mesh, std::vector<ParamGroup> groups)
    : config_(std::move(config)),
      model_(std::move(model)),
      optimizer_(std::move(optimizer)),
      scheduler_(std::move(scheduler)),
      mesh_(std::move(mesh)) {
  trainable_ = dynamic_cast<TrainableModel*>(model_.get());
  gradient_clipping_ = config_.get_double("gradient_clipping");
  steps_per_print_ = config_.has("steps_per_print") ? config_.get_int("steps_per_print") : 0;
  wall_clock_breakdown_ = config_.get_bool("wall_clock_breakdown");
  setup_parameters(groups);
}

Engine::~Engine() = default;

void Engine::setup_parameters(const std::vector<ParamGroup>& groups) {
  params_ = model_->parameters();
  int64_t total = 0;
  for (const Parameter* p : params_) total += numel_of(p->shape);

  // One flat buffer for values and one for gradients; every parameter becomes a view of them so
  // the optimizer (and later ZeRO) works on contiguous memory.
  flat_params_ = Tensor::empty({total});
  flat_grads_ = Tensor::zeros({total});
  std::map<std::string, int64_t> offset_of;
  int64_t off = 0;
  for (Parameter* p : params_) {
    const int64_t n = numel_of(p->shape);
    Tensor dst = flat_params_.slice(off, p->shape);
    if (p->value.defined()) {
      if (p->value.numel() != n || p->value.dtype() != DSPP_F32) {
        throw Error(Errc::kInvalidArgument, "parameter " + p->name + ": value " +
                                                p->value.describe() + " does not match its shape");
      }
      std::memcpy(dst.data(), p->value.data(), dst.nbytes());
    } else {
      dst.zero_();
    }
    p->value = dst;
    p->grad = flat_grads_.slice(off, p->shape);
    offset_of[p->name] = off;
    off += n;
  }

  // Groups: DeepSpeed's model_parameters, or one group holding everything.
  std::vector<int32_t> group_of(params_.size(), groups.empty() ? 0 : -1);
  if (groups.empty()) {
    group_options_.push_back("{}");
  } else {
    std::map<std::string, size_t> index_of;
    for (size_t i = 0; i < params_.size(); ++i) index_of[params_[i]->name] = i;
    for (size_t g = 0; g < groups.size(); ++g) {
      group_options_.push_back(groups[g].options_json.empty() ? "{}" : groups[g].options_json);
      for (const std::string& name : groups[g].params) {
        auto it = index_of.find(name);
        if (it == index_of.end()) {
          throw Error(Errc::kInvalidArgument, "model_parameters group " + std::to_string(g) +
                                                  " names '" + name +
                                                  "', which is not a parameter of the model");
        }
        if (group_of[it->second] >= 0) {
          throw Error(Errc::kInvalidArgument,
                      "parameter '" + name + "' is in two model_parameters groups");
        }
        group_of[it->second] = static_cast<int32_t>(g);
      }
    }
  }
  const double unset = std::numeric_limits<double>::quiet_NaN();
  for (const std::string& json : group_options_) {
    group_setups_.push_back({unset, unset, json.c_str()});
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    if (group_of[i] < 0) continue;  // not in any group: not trained, as in DeepSpeed
    const Parameter* p = params_[i];
    ParamSegment s{};
    s.name = p->name.c_str();
    s.group = group_of[i];
    s.flags = p->flags;
    s.ndim = static_cast<int32_t>(p->shape.size());
    for (size_t d = 0; d < p->shape.size() && d < DSPP_MAX_DIMS; ++d) s.shape[d] = p->shape[d];
    s.offset_in_param = 0;
    s.offset_in_flat = offset_of[p->name];
    s.numel = numel_of(p->shape);
    segments_.push_back(s);
  }

  if (optimizer_.impl) {
    OptimizerSetup setup{segments_.data(),
                         static_cast<int32_t>(segments_.size()),
                         group_setups_.data(),
                         static_cast<int32_t>(group_setups_.size()),
                         total,
                         cpu_device()};
    check_plugin(optimizer_.impl->init(&setup), "optimizer init");
    if (optimizer_.base_lrs.size() != group_setups_.size()) {
      throw Error(Errc::kInvalidArgument, "engine: " + std::to_string(optimizer_.base_lrs.size()) +
                                              " base learning rates for " +
                                              std::to_string(group_setups_.size()) + " groups");
    }
    if (scheduler_) {
      check_plugin(scheduler_->init(optimizer_.base_lrs.data(),
                                    static_cast<int32_t>(optimizer_.base_lrs.size())),
                   "lr scheduler init");
    }
  }
}

float Engine::forward(const Batch& batch) {
  if (!trainable_) {
    throw Error(Errc::kInvalidArgument, "engine.forward: the model (" + model_->type_name() +
                                            ") is not a TrainableModel with forward_loss()");
  }
  auto t0 = Clock::now();
  last_loss_ = trainable_->forward_loss(batch);
  backward_pending_ = true;
  timers_["forward"] += seconds_since(t0);
  return last_loss_;
}

void Engine::backward(float loss) {
  (void)loss;  // the model kept what backward needs; DeepSpeed's loss tensor carries the graph
  if (!backward_pending_) {
    throw Error(Errc::kInvalidArgument, "engine.backward: no forward() since the last backward()");
  }
  auto t0 = Clock::now();
  // DeepSpeed scales the loss by 1/GA so accumulated gradients average over the window.
  trainable_->backward_loss(1.0f / static_cast<float>(gradient_accumulation_steps()));
  backward_pending_ = false;
  timers_["backward"] += seconds_since(t0);
}

bool Engine::is_gradient_accumulation_boundary() const {
  return (micro_steps_ + 1) % gradient_accumulation_steps() == 0;
}

double Engine::clip_gradients() {
  const float* g = flat_grads_.data<float>();
  const int64_t n = flat_grads_.numel();
  double sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(g[i]) * g[i];
  const double norm = std::sqrt(sq);
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  if (gradient_clipping_ > 0.0) {
    const double coef = gradient_clipping_ / (norm + 1e-6);
    if (coef < 1.0) {
      float* gw = flat_grads_.data<float>();
      const float c = static_cast<float>(coef);
      for (int64_t i = 0; i < n; ++i) gw[i] *= c;
    }
  }
  return norm;
}

std::vector<double> Engine::get_lr() const {
  std::vector<double> lrs = optimizer_.base_lrs;
  if (scheduler_ && !lrs.empty()) {
    check_plugin(scheduler_->lr_at(scheduler_steps_, lrs.data()), "lr scheduler lr_at");
  }
  return lrs;
}

void Engine::step() {
  auto t0 = Clock::now();
  if (is_gradient_accumulation_boundary()) {
    if (!optimizer_.impl) {
      throw Error(Errc::kInvalidArgument,
                  "engine.step: no optimizer (none in the config's \"optimizer\" section and none "
                  "passed to initialize())");
    }
    last_grad_norm_ = clip_gradients();
    std::vector<double> lrs = get_lr();
    std::vector<double> betas(lrs.size());
    bool have_betas =
        scheduler_ && scheduler_->momentum_at(scheduler_steps_, betas.data()) == DSPP_OK;
    // Without a scheduler the optimizer uses the lrs it resolved itself (Muon's muon_lr/adam_lr
    // differ from optimizer.params.lr); with one, the schedule's lr is the lr, as in DeepSpeed.
    StepArgs args{flat_params_.view(), flat_grads_.view(), scheduler_ ? lrs.data() : nullptr,
                  have_betas ? betas.data() : nullptr, global_steps_ + 1};
    check_plugin(optimizer_.impl->step(&args), "optimizer step");
    ++scheduler_steps_;
    ++global_steps_;
    global_samples_ += train_batch_size();
    zero_grad();
    if (steps_per_print_ > 0 && global_steps_ % steps_per_print_ == 0) {
      std::ostringstream line;
      line << "step=" << global_steps_ << " skipped=" << skipped_steps_ << " lr=[";
      for (size_t i = 0; i < lrs.size(); ++i) line << (i ? ", " : "") << lrs[i];
      line << "] loss=" << last_loss_ << " grad_norm=" << last_grad_norm_;
      log::info("engine", line.str());
      if (wall_clock_breakdown_) {
        std::ostringstream t;
        t << "time (ms) over the last " << steps_per_print_ << " steps:";
        for (const auto& [name, sec] : timers_) t << " " << name << "=" << sec * 1e3;
        log::info("engine", t.str());
        timers_.clear();
      }
    }
  }
  ++micro_steps_;
  timers_["step"] += seconds_since(t0);
}

void Engine::zero_grad() {
  flat_grads_.zero_();
}

void Engine::train() {
  model_->train(true);
}

void Engine::eval() {
  model_->eval();
}

}  // namespace dspp
