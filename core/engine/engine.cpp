// The training engine: flat fp32 parameter/gradient buffers, DeepSpeed's micro-step and
// accumulation-boundary semantics, global-norm clipping, the LR scheduler, fp16 loss scaling
// (DeepSpeed's overflow skips); the ZeRO stage plugin reduces gradients across ranks, steps the
// optimizer, and keeps the fp32 master weights under mixed precision.
#include <dspp/engine.h>
#include <dspp/plugin.h>
#include <dspp/plugins.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <unordered_map>
#include <utility>

#include <rapidjson/document.h>

#include "device/compute_device.h"
#include "engine/zero_init.h"
#include "log/log.h"
#include "monitor/csv_monitor.h"
#include "monitor/tensorboard.h"
#include "precision/loss_scaler.h"

namespace dspp {
namespace {

using Clock = std::chrono::steady_clock;

int32_t size_of(const std::vector<int32_t>& v) {
  return static_cast<int32_t>(v.size());
}

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

Engine::Engine(EngineParts parts)
    : config_(std::move(parts.config)),
      model_(std::move(parts.model)),
      optimizer_(std::move(parts.optimizer)),
      scheduler_(std::move(parts.scheduler)),
      mesh_(std::move(parts.mesh)),
      zero_(std::move(parts.zero)),
      dp_group_(std::move(parts.dp_group)),
      grad_group_(std::move(parts.grad_group)) {
  if (!zero_ || !dp_group_ || !grad_group_) {
    throw Error(Errc::kInvalidArgument, "engine: a ZeRO stage and the dp/grad groups are required");
  }
  trainable_ = dynamic_cast<TrainableModel*>(model_.get());
  gradient_clipping_ = config_.get_double("gradient_clipping");
  steps_per_print_ = config_.has("steps_per_print") ? config_.get_int("steps_per_print") : 0;
  wall_clock_breakdown_ = config_.get_bool("wall_clock_breakdown");
  const bool fp16 = config_.get_bool("fp16.enabled");
  const bool bf16 = config_.get_bool("bf16.enabled");
  working_dtype_ = fp16 ? DSPP_F16 : (bf16 ? DSPP_BF16 : DSPP_F32);
  // DeepSpeed: without ZeRO, fp16 goes through FP16_Optimizer (no hysteresis); ZeRO 1-3 use
  // DynamicLossScaler. Other precisions get a static scale of 1.
  scaler_ = std::make_unique<precision::LossScaler>(precision::LossScaler::from_config(
      config_, config_.get_int("zero_optimization.stage") == 0 ? precision::Fp16Path::kFp16Optimizer
                                                               : precision::Fp16Path::kZero));
  check_overflow_ = fp16 || (bf16 && config_.get_bool("bf16.check_grad_overflow"));
  if (const char* v = std::getenv("DSPP_TEST_INF_GRAD"); v && *v) {
    long long st = -1, rk = -1;
    if (std::sscanf(v, "%lld:%lld", &st, &rk) != 2 || st < 1 || rk < 0) {
      throw Error(Errc::kInvalidArgument,
                  std::string("DSPP_TEST_INF_GRAD must be <global_step>:<rank>, got '") + v + "'");
    }
    inf_grad_step_ = st;
    inf_grad_rank_ = rk;
  }
  // Before the parameters are set up, so the comms logger sees the initial broadcast (DeepSpeed
  // configures it before _broadcast_model too).
  configure_monitors();
  setup_parameters(parts.groups);
}

void Engine::configure_monitors() {
  // DeepSpeed writes monitor events on global rank 0 only.
  if (config_.get_bool("csv_monitor.enabled") && mesh_.rank == 0) {
    monitors_.push_back(std::make_unique<monitor::CsvMonitor>(
        config_.get_string("csv_monitor.output_path"), config_.get_string("csv_monitor.job_name")));
  }
  if (config_.get_bool("tensorboard.enabled") && mesh_.rank == 0) {
    monitors_.push_back(std::make_unique<monitor::TensorBoardMonitor>(
        config_.get_string("tensorboard.output_path"), config_.get_string("tensorboard.job_name")));
  }
  comms_logger_ = config_.get_bool("comms_logger.enabled");
  if (!comms_logger_) return;
  CommsLogOptions o;
  o.enabled = true;
  o.verbose = config_.get_bool("comms_logger.verbose");
  o.prof_all = config_.get_bool("comms_logger.prof_all");
  rapidjson::Document ops;
  ops.Parse(config_.get_json("comms_logger.prof_ops").c_str());
  if (ops.IsArray()) {
    for (const auto& v : ops.GetArray()) {
      if (!v.IsString()) {
        throw Error(Errc::kConfig, "comms_logger.prof_ops: every entry must be an operation name");
      }
      o.prof_ops.emplace_back(v.GetString());
    }
  }
  o.lead = mesh_.rank == 0;
  grad_group_->set_comms_logging(o);
  if (dp_group_ != grad_group_) dp_group_->set_comms_logging(o);
}

CommRecords Engine::comms_records() const {
  CommRecords all = grad_group_->comms_records();
  if (dp_group_ == grad_group_) return all;
  for (const auto& [op, sizes] : dp_group_->comms_records()) {
    for (const auto& [bytes, r] : sizes) {
      CommRecord& into = all[op][bytes];
      into.count += r.count;
      into.latency_ms.insert(into.latency_ms.end(), r.latency_ms.begin(), r.latency_ms.end());
      into.algbw_gbps.insert(into.algbw_gbps.end(), r.algbw_gbps.begin(), r.algbw_gbps.end());
      into.busbw_gbps.insert(into.busbw_gbps.end(), r.busbw_gbps.begin(), r.busbw_gbps.end());
    }
  }
  return all;
}

std::string Engine::comms_summary() const {
  return comms_logger_ ? format_comms_summary(comms_records()) : std::string();
}

void Engine::log_comms_summary() const {
  // DeepSpeed's log_summary prints the table with print() on rank 0: stdout, no log prefix.
  if (!comms_logger_ || mesh_.rank != 0) return;
  std::fputs(comms_summary().c_str(), stdout);
  std::fflush(stdout);
}

Engine::~Engine() {
  if (hooks_id_ > 0) model_->remove_hooks(hooks_id_);
}

void Engine::map_module_parameters() {
  // Which parameters each module reads, as indices into zero_params_ (the order of params_), and
  // which parameters are read by several modules or by the root itself (tied weights): those are
  // complete only after the whole backward, so the stage must not reduce them early.
  std::unordered_map<const Parameter*, int32_t> index_of;
  for (size_t i = 0; i < params_.size(); ++i) index_of[params_[i]] = static_cast<int32_t>(i);
  std::vector<int> readers(params_.size(), 0);
  std::vector<Module*> stack = model_->children();
  while (!stack.empty()) {
    Module* m = stack.back();
    stack.pop_back();
    std::vector<int32_t> idx;
    for (const Parameter* p : m->direct_parameters()) {
      auto it = index_of.find(p);
      if (it == index_of.end()) continue;
      idx.push_back(it->second);
      ++readers[it->second];
    }
    if (!idx.empty()) module_params_[m] = std::move(idx);
    for (Module* c : m->children()) stack.push_back(c);
  }
  // The root model's own parameters (and any no module reads): the engine brackets the whole
  // backward with hooks for them.
  std::vector<bool> root_reads(params_.size(), false);
  for (const Parameter* p : model_->direct_parameters()) {
    if (auto it = index_of.find(p); it != index_of.end()) root_reads[it->second] = true;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    if (root_reads[i] || readers[i] == 0) root_params_.push_back(static_cast<int32_t>(i));
    if (readers[i] + (root_reads[i] ? 1 : 0) != 1) zero_params_[i].flags |= DSPP_PARAM_SHARED;
  }
}

void Engine::install_hooks() {
  ModuleHooks h;
  h.before_forward = [this](Module& m) {
    if (auto it = module_params_.find(&m); it != module_params_.end()) before_forward(it->second);
  };
  h.after_forward = [this](Module& m) {
    if (auto it = module_params_.find(&m); it != module_params_.end()) after_forward(it->second);
  };
  h.before_backward = [this](Module& m) {
    if (auto it = module_params_.find(&m); it != module_params_.end()) {
      before_backward(it->second);
    }
  };
  h.after_backward = [this](Module& m) {
    if (auto it = module_params_.find(&m); it != module_params_.end()) after_backward(it->second);
  };
  hooks_id_ = model_->add_hooks(std::move(h));
}

void Engine::take_values(const std::vector<int32_t>& idx) {
  if (!manages_params_) return;
  for (size_t i = 0; i < idx.size(); ++i) {
    const auto k = static_cast<size_t>(idx[i]);
    ++live_[k];
    params_[k]->value = Tensor::wrap(value_views_[i]).reshape(params_[k]->shape);
  }
}

void Engine::drop_values(const std::vector<int32_t>& idx) {
  if (!manages_params_) return;
  // A parameter read by several modules (tied) stays visible until the last one is done.
  for (int32_t i : idx) {
    const auto k = static_cast<size_t>(i);
    if (--live_[k] == 0) params_[k]->value = Tensor();
  }
}

void Engine::before_forward(const std::vector<int32_t>& idx) {
  // Scratch vectors reused by every module of every step: no allocation in the step loop.
  value_views_.resize(idx.size());
  check_plugin(zero_->before_forward(idx.data(), size_of(idx), value_views_.data()),
               "zero before_forward");
  take_values(idx);
}

void Engine::after_forward(const std::vector<int32_t>& idx) {
  check_plugin(zero_->after_forward(idx.data(), size_of(idx)), "zero after_forward");
  drop_values(idx);
}

void Engine::before_backward(const std::vector<int32_t>& idx) {
  value_views_.resize(idx.size());
  grad_views_.resize(idx.size());
  check_plugin(
      zero_->before_backward(idx.data(), size_of(idx), value_views_.data(), grad_views_.data()),
      "zero before_backward");
  take_values(idx);
  if (!manages_grads_) return;
  for (size_t i = 0; i < idx.size(); ++i) {
    Parameter* p = params_[static_cast<size_t>(idx[i])];
    p->grad = Tensor::wrap(grad_views_[i]).reshape(p->shape);
  }
}

void Engine::after_backward(const std::vector<int32_t>& idx) {
  // DSPP_TEST_INF_GRAD: here the module's gradients are written and the stage has not read them
  // yet (stages 2-3 reduce a bucket only once a later module needs room, or at end_backward).
  if (inf_grad_step_ == global_steps_ + 1 && inf_grad_done_ != inf_grad_step_ &&
      inf_grad_rank_ == mesh_.rank && is_gradient_accumulation_boundary()) {
    for (int32_t i : idx) {
      Parameter* p = params_[static_cast<size_t>(i)];
      if (zero_params_[static_cast<size_t>(i)].group < 0 || !p->grad.defined()) continue;
      if (p->grad.device().type == DSPP_DEVICE_CPU) {
        p->grad.data<float>()[0] = std::numeric_limits<float>::infinity();
      } else {
        const dspp_tensor_view one = p->grad.slice(0, {1}).view();
        check_plugin(device::kernels("DSPP_TEST_INF_GRAD")
                         .fill(&one, std::numeric_limits<double>::infinity(), nullptr),
                     "DSPP_TEST_INF_GRAD fill");
      }
      inf_grad_done_ = inf_grad_step_;
      break;
    }
  }
  check_plugin(zero_->after_backward(idx.data(), size_of(idx)), "zero after_backward");
  drop_values(idx);
}

std::vector<int32_t> Engine::indices_of(const std::vector<Parameter*>& params) const {
  std::vector<int32_t> idx;
  if (params.empty()) {
    for (size_t i = 0; i < params_.size(); ++i) idx.push_back(static_cast<int32_t>(i));
    return idx;
  }
  for (const Parameter* p : params) {
    auto it = std::find(params_.begin(), params_.end(), p);
    if (it == params_.end()) {
      throw Error(Errc::kInvalidArgument, "GatheredParameters: '" +
                                              (p ? p->name : std::string("null")) +
                                              "' is not a parameter of the engine's model");
    }
    idx.push_back(static_cast<int32_t>(it - params_.begin()));
  }
  return idx;
}

void Engine::gather_parameters(const std::vector<Parameter*>& params) {
  before_forward(indices_of(params));
}

void Engine::release_parameters(const std::vector<Parameter*>& params, int modifier_rank) {
  const std::vector<int32_t> idx = indices_of(params);
  if (modifier_rank >= 0) {
    if (modifier_rank >= grad_group_->size()) {
      throw Error(Errc::kInvalidArgument,
                  "GatheredParameters: modifier_rank " + std::to_string(modifier_rank) +
                      " is not a rank of the " + std::to_string(grad_group_->size()) +
                      "-rank data-parallel group");
    }
    for (int32_t i : idx)
      grad_group_->broadcast(params_[static_cast<size_t>(i)]->value, modifier_rank);
    check_plugin(zero_->write_back(idx.data(), size_of(idx)), "zero write_back");
  }
  after_forward(idx);
}

void Engine::setup_parameters(const std::vector<ParamGroup>& groups) {
  params_ = model_->parameters();
  int64_t total = 0;
  for (const Parameter* p : params_) total += numel_of(p->shape);

  // One flat buffer for values and one for gradients; every parameter becomes a view of them so
  // the optimizer and the ZeRO stage work on contiguous memory. The length is padded to equal
  // partitions of kPartitionAlign elements per gradient-group rank (64-byte aligned partitions;
  // the padding is zero and belongs to no parameter).
  const int64_t unit = kPartitionAlign * grad_group_->size();
  const int64_t padded = (total + unit - 1) / unit * unit;
  // A stage that manages gradient memory (ZeRO 2) hands out gradient space module by module; one
  // that manages parameters (ZeRO 3) keeps only its partition and gathers values per module.
  const uint32_t caps = zero_->capabilities();
  manages_grads_ = (caps & DSPP_ZERO_MANAGES_GRADS) != 0;
  manages_params_ = (caps & DSPP_ZERO_MANAGES_PARAMS) != 0;
  if (manages_params_ && !manages_grads_) {
    throw Error(Errc::kInvalidArgument,
                "engine: a ZeRO stage that manages parameters must manage gradients too");
  }
  // On a GPU the values live in the working dtype for real; they are assembled in a host fp32
  // buffer first (the model was built on the host) and cast once on the device.
  device_ = current_device();
  const bool gpu = device_.type == DSPP_DEVICE_CUDA;
  const dspp_dtype value_dtype = gpu ? static_cast<dspp_dtype>(working_dtype_) : DSPP_F32;
  Tensor host_values;  // the fp32 assembly buffer
  if (!manages_params_) host_values = Tensor::zeros({padded});
  if (!manages_grads_) {
    plugin::MemoryCategory tag(host_api(), DSPP_MEM_GRADIENTS);
    flat_grads_ = Tensor::zeros({padded}, DSPP_F32, device_);
  }
  live_.assign(params_.size(), 0);
  std::map<std::string, int64_t> offset_of;
  int64_t off = 0;
  for (Parameter* p : params_) {
    const int64_t n = numel_of(p->shape);
    if (p->zero_world > 0) zero::check_partition(*p, *grad_group_);
    if (!manages_params_) {
      Tensor dst = host_values.slice(off, p->shape);
      if (p->zero_world > 0) {
        zero::gather_whole(*p, *grad_group_, dst);  // built under zero::Init
      } else if (p->value.defined()) {
        std::memcpy(dst.data(), p->value.data(), dst.nbytes());
      }
      p->zero_world = 0;
    } else if (!p->value.defined()) {
      p->value = Tensor::zeros(p->shape);
    }
    offset_of[p->name] = off;
    off += n;
  }
  // (On the CPU this is host_values itself.)
  if (!manages_params_) {
    plugin::MemoryCategory tag(host_api(), DSPP_MEM_PARAMETERS);
    flat_params_ = host_values.to(device_, value_dtype);
  }
  host_values = Tensor();
  for (Parameter* p : params_) {
    const int64_t o = offset_of[p->name];
    if (!manages_params_) p->value = flat_params_.slice(o, p->shape);
    p->grad = manages_grads_ ? Tensor() : flat_grads_.slice(o, p->shape);
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

  // Every rank starts from rank 0's parameters (DeepSpeed's _broadcast_model); zero::Init
  // broadcast the ones it partitioned when it built them.
  // (A world of one has nobody to hear it; on a GPU that also spares the staging through device
  // memory.)
  if (!gpu || grad_group_->size() > 1) {
    if (!manages_params_) {
      grad_group_->broadcast(flat_params_, 0);
    } else {
      for (Parameter* p : params_) {
        if (p->zero_world == 0) grad_group_->broadcast(p->value, 0);
      }
    }
  }

  for (size_t i = 0; i < params_.size(); ++i) {
    const Parameter* p = params_[i];
    ZeroParam z{};
    z.name = p->name.c_str();
    z.ndim = static_cast<int32_t>(p->shape.size());
    for (size_t d = 0; d < p->shape.size() && d < DSPP_MAX_DIMS; ++d) z.shape[d] = p->shape[d];
    z.numel = numel_of(p->shape);
    z.offset_in_flat = offset_of[p->name];
    z.value = p->value.view();
    z.grad = manages_grads_ ? dspp_tensor_view{} : p->grad.view();
    z.flags = p->flags | (p->zero_world > 0 ? DSPP_PARAM_PARTITIONED : 0u);
    z.group = group_of[i];  // -1: in no group, not trained (as in DeepSpeed)
    zero_params_.push_back(z);
  }
  if (optimizer_.impl && optimizer_.base_lrs.size() != group_setups_.size()) {
    throw Error(Errc::kInvalidArgument, "engine: " + std::to_string(optimizer_.base_lrs.size()) +
                                            " base learning rates for " +
                                            std::to_string(group_setups_.size()) + " groups");
  }
  map_module_parameters();
  const std::string op = config_.get_string("gradient_allreduce_op");
  // DeepSpeed: prescale_gradients divides by the dp size before the reduction; otherwise
  // gradient_predivide_factor f divides before and f/dp multiplies after.
  const double predivide = config_.get_bool("prescale_gradients")
                               ? static_cast<double>(grad_group_->size())
                               : config_.get_double("gradient_predivide_factor");
  // A stage that manages parameters gets the flat layout's length, dtype and device only (no
  // memory): the values it hands out are to be of that dtype on that device.
  dspp_tensor_view flat_layout = flat_params_.view();
  if (manages_params_) {
    flat_layout = dspp_tensor_view{};
    flat_layout.dtype = value_dtype;
    flat_layout.ndim = 1;
    flat_layout.shape[0] = padded;
    flat_layout.device = device_;
  }
  ZeroSetup setup{zero_params_.data(),
                  static_cast<int32_t>(zero_params_.size()),
                  flat_layout,
                  manages_grads_ ? dspp_tensor_view{} : flat_grads_.view(),
                  grad_group_->comm(),
                  optimizer_.impl.get(),
                  group_setups_.data(),
                  static_cast<int32_t>(group_setups_.size()),
                  device_,
                  op == "sum" ? 0 : 1,
                  predivide,
                  working_dtype_};
  check_plugin(zero_->init(&setup), "zero stage init");
  if (manages_params_) {
    // The stage holds the values now: a module sees them only while they are gathered.
    for (size_t i = 0; i < params_.size(); ++i) {
      params_[i]->value = Tensor();
      params_[i]->zero_world = 0;
      zero_params_[i].value = dspp_tensor_view{};
    }
  }
  install_hooks();
  if (optimizer_.impl && scheduler_) {
    check_plugin(scheduler_->init(optimizer_.base_lrs.data(),
                                  static_cast<int32_t>(optimizer_.base_lrs.size())),
                 "lr scheduler init");
  }
}

float Engine::forward(const Batch& batch) {
  if (!trainable_) {
    throw Error(Errc::kInvalidArgument, "engine.forward: the model (" + model_->type_name() +
                                            ") is not a TrainableModel with forward_loss()");
  }
  auto t0 = Clock::now();
  // What forward makes is activations (a ZeRO stage tags its own gathers and buckets).
  plugin::MemoryCategory tag(host_api(), DSPP_MEM_ACTIVATIONS);
  if (!root_params_.empty()) before_forward(root_params_);
  last_loss_ = trainable_->forward_loss(batch);
  if (!root_params_.empty()) after_forward(root_params_);
  backward_pending_ = true;
  timers_["forward"] += seconds_since(t0);
  return last_loss_;
}

void Engine::backward(float loss) {
  // The model kept what backward needs (DeepSpeed's loss tensor carries the graph); the value is
  // only logged.
  if (!backward_pending_) {
    throw Error(Errc::kInvalidArgument, "engine.backward: no forward() since the last backward()");
  }
  // DeepSpeed's backward(): losses += loss / GA (in fp32), and at the boundary micro-step the
  // monitor gets that sum, the mean loss of this rank's micro-batches in the window, at
  // global_samples before this step's update.
  window_loss_ += loss / static_cast<float>(gradient_accumulation_steps());
  if (!monitors_.empty() && is_gradient_accumulation_boundary()) {
    write_events({{"Train/Samples/train_loss", window_loss_, global_samples_}});
  }
  auto t0 = Clock::now();
  plugin::MemoryCategory tag(host_api(), DSPP_MEM_ACTIVATIONS);
  check_plugin(zero_->begin_backward(), "zero begin_backward");
  if (!root_params_.empty()) before_backward(root_params_);
  // DeepSpeed scales the loss by 1/GA so accumulated gradients average over the window, and by the
  // loss scale under fp16 (a power of two: the product is exact).
  trainable_->backward_loss(static_cast<float>(scaler_->loss_scale()) /
                            static_cast<float>(gradient_accumulation_steps()));
  if (!root_params_.empty()) after_backward(root_params_);
  check_plugin(zero_->end_backward(), "zero end_backward");
  backward_pending_ = false;
  timers_["backward"] += seconds_since(t0);
}

bool Engine::is_gradient_accumulation_boundary() const {
  return (micro_steps_ + 1) % gradient_accumulation_steps() == 0;
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
    double sq_norm = 0.0;
    int32_t overflow = 0;
    check_plugin(zero_->reduce_gradients(&sq_norm, &overflow), "zero reduce_gradients");
    const double scale = scaler_->loss_scale();
    // The norm of the true (unscaled) gradient, as DeepSpeed reports it.
    last_grad_norm_ = std::sqrt(sq_norm) / scale;
    std::vector<double> lrs = get_lr();
    // `overflow` is the same on every rank, so every rank skips or steps alike.
    if (check_overflow_ && overflow != 0) {
      // DeepSpeed's _take_model_step on overflow: no optimizer step, no scheduler step, the
      // gradients dropped, the scale lowered; global_steps/global_samples still advance below.
      ++skipped_steps_;
      scaler_->update_scale(true);
      if (mesh_.rank == 0) {
        std::ostringstream m;
        m << "gradient overflow at step " << global_steps_ + 1 << ": step skipped, loss scale "
          << scale << " -> " << scaler_->loss_scale();
        log::info("engine", m.str());
      }
    } else {
      take_step(lrs, scale);
      scaler_->update_scale(false);
    }
    ++global_steps_;
    global_samples_ += train_batch_size();
    window_loss_ = 0.0f;
    zero_grad();
    // DeepSpeed's step(): after the update, group 0's lr (the scheduler has stepped, so the lr of
    // the next step) at the new global_samples, and under fp16 the loss scale.
    if (!monitors_.empty()) {
      std::vector<monitor::Event> ev{{"Train/Samples/lr", get_lr().at(0), global_samples_}};
      if (working_dtype_ == DSPP_F16) {
        ev.push_back({"Train/Samples/loss_scale", scaler_->loss_scale(), global_samples_});
      }
      write_events(ev);
    }
    print_progress(lrs);
  }
  ++micro_steps_;
  timers_["step"] += seconds_since(t0);
}

void Engine::take_step(const std::vector<double>& lrs, double scale) {
  // Unscale and clip in one factor, clipping on the unscaled norm (torch's clip_grad_norm_:
  // max_norm / (norm + 1e-6) when that is below 1), as DeepSpeed's unscale_and_clip_grads.
  double coef = 1.0;
  if (gradient_clipping_ > 0.0) coef = std::min(1.0, gradient_clipping_ / (last_grad_norm_ + 1e-6));
  coef /= scale;
  std::vector<double> betas(lrs.size());
  bool have_betas =
      scheduler_ && scheduler_->momentum_at(scheduler_steps_, betas.data()) == DSPP_OK;
  // Without a scheduler the optimizer uses the lrs it resolved itself (Muon's muon_lr/adam_lr
  // differ from optimizer.params.lr); with one, the schedule's lr is the lr, as in DeepSpeed.
  // The stage fills in its own params/grads views.
  StepArgs args{{},
                {},
                scheduler_ ? lrs.data() : nullptr,
                have_betas ? betas.data() : nullptr,
                global_steps_ + 1};
  check_plugin(zero_->step(&args, coef), "zero step");
  ++scheduler_steps_;
}

void Engine::print_progress(const std::vector<double>& lrs) {
  // Reported by rank 0 only, as DeepSpeed's log_dist(ranks=[0]); the loss is rank 0's.
  const bool lead = mesh_.rank == 0;
  if (steps_per_print_ > 0 && global_steps_ % steps_per_print_ == 0) {
    std::ostringstream line;
    line << "step=" << global_steps_ << " skipped=" << skipped_steps_ << " lr=[";
    for (size_t i = 0; i < lrs.size(); ++i) line << (i ? ", " : "") << lrs[i];
    line << "] loss=" << last_loss_ << " grad_norm=" << last_grad_norm_;
    if (lead) log::info("engine", line.str());
    if (wall_clock_breakdown_) {
      std::ostringstream t;
      t << "time (ms) over the last " << steps_per_print_ << " steps:";
      for (const auto& [name, sec] : timers_) t << " " << name << "=" << sec * 1e3;
      if (lead) log::info("engine", t.str());
      timers_.clear();
    }
  }
}

double Engine::loss_scale() const {
  return scaler_->loss_scale();
}

const char* Engine::precision() const {
  return working_dtype_ == DSPP_F16 ? "fp16" : (working_dtype_ == DSPP_BF16 ? "bf16" : "fp32");
}

void Engine::write_events(const std::vector<monitor::Event>& events) {
  for (const auto& m : monitors_) m->write_events(events);
}

void Engine::zero_grad() {
  check_plugin(zero_->zero_grad(), "zero zero_grad");
}

MemoryBreakdown Engine::memory_breakdown() const {
  MemoryBreakdown m{};
  check_plugin(zero_->memory(&m), "zero memory");
  return m;
}

void Engine::train() {
  model_->train(true);
}

void Engine::eval() {
  model_->eval();
}

}  // namespace dspp
