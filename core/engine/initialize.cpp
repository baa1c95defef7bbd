// initialize(): DeepSpeed's deepspeed.initialize() order, one function per step.
#include <dspp/device.h>
#include <dspp/initialize.h>
#include <dspp/kinds/flagger.h>
#include <dspp/kinds/zero.h>
#include <dspp/plugins.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include <rapidjson/document.h>

#include "dist/world.h"
#include "engine/initialize_steps.h"
#include "engine/zero_init.h"
#include "log/log.h"

namespace dspp {
namespace init_steps {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

[[noreturn]] void fail(const std::string& msg) {
  throw Error(Errc::kInvalidArgument, "initialize: " + msg);
}

// The plugin schemas the config registry validates plugin sections with.
LoadOptions load_options(const InitializeArgs& a, const dist::LaunchEnv& env) {
  LoadOptions o;
  o.world_size = env.world_size;
  o.world_size_source = env.world_size > 1
                            ? "world size " + std::to_string(env.world_size) + " from " + env.source
                            : "single process";
  if (a.mpu) {
    o.tp_size = a.mpu->model_parallel_world_size();
  }
  if (a.mesh_param) {
    // Checked here, before the batch arithmetic divides the world by sp.
    auto [dp, sp] = *a.mesh_param;
    if (dp < 1 || sp < 1 || dp * sp != env.world_size) {
      fail("mesh_param (" + std::to_string(dp) + ", " + std::to_string(sp) +
           ") does not multiply to the world size " + std::to_string(env.world_size) + " (" +
           env.source + ")");
    }
    o.sp_size = sp;
  }
  o.auto_values = a.auto_values;
  return o;
}

}  // namespace

dist::LaunchEnv init_distributed(const InitializeArgs& a) {
  // DeepSpeed: dist_init_required=None means "start it unless it is started"; False means the
  // host has started it. A single process always gets its world of one.
  const dist::LaunchEnv env = dist::read_launch_env(a.distributed_port);
  const bool required = a.dist_init_required.value_or(!is_initialized());
  if (!is_initialized() && !required && env.world_size > 1) {
    fail(
        "dist_init_required=false, but the distributed world is not started: call "
        "dspp::init_distributed() first, or leave dist_init_required unset");
  }
  if (!is_initialized()) {
    DistOptions o;  // the backend: the accelerator's (NCCL on a GPU) or $DSPP_COMM_BACKEND
    o.distributed_port = a.distributed_port;
    // torch's init_method: env:// (rank 0's TCP store) or file:///dir on a shared filesystem.
    if (const char* m = std::getenv("DSPP_INIT_METHOD"); m && *m) o.init_method = m;
    dspp::init_distributed(o);
  }
  return dist::current_env();
}

Config load_config(const InitializeArgs& a, const dist::LaunchEnv& env, PluginRegistry& reg,
                   bool scan) {
  std::optional<std::string> text = a.config;
  if (!text && !a.config_object && a.config_params) text = a.config_params;
  if (a.args && a.args->deepscale_config) {
    log::warn("initialize", "--deepscale_config is deprecated, use --deepspeed_config");
    if (a.args->deepspeed_config) {
      fail("both args.deepscale_config and args.deepspeed_config are given; keep one");
    }
  }
  const std::optional<std::string>& from_args =
      a.args ? (a.args->deepspeed_config ? a.args->deepspeed_config : a.args->deepscale_config)
             : std::optional<std::string>{};
  if (from_args) {
    if (text || a.config_object) {
      fail("a config was given both in args.deepspeed_config ('" + *from_args +
           "') and as the config argument; pass exactly one");
    }
    text = from_args;
  }
  if (text && a.config_object) fail("both config (text or path) and config_object are given");
  if (!text && !a.config_object) {
    fail("no config: set args.deepspeed_config, config (a path, JSON or base64) or config_object");
  }
  LoadOptions opts = load_options(a, env);
  // Re-resolve a caller's config object against this run's world and plugins.
  std::string source = a.config_object ? a.config_object->to_json() : *text;
  if (scan) return load_config_with_plugins(source, opts, reg);
  use_plugin_options(opts, reg);
  return Config::load(source, opts);
}

Mesh build_mesh(const InitializeArgs& a, const Config& cfg, const dist::LaunchEnv& env) {
  Mesh m;
  m.world_size = env.world_size;
  m.rank = env.rank;
  m.dp_size = cfg.batch().dp_world_size;
  m.source = cfg.batch().dp_source;
  if (a.mesh_param) {
    auto [dp, sp] = *a.mesh_param;  // validated in load_options()
    m.dp_size = dp;
    m.sp_size = sp;
    m.source = "mesh_param";
  } else if (cfg.has("data_parallel_size") && cfg.has("sequence_parallel_size")) {
    int64_t dp = cfg.get_int("data_parallel_size");
    int64_t sp = cfg.get_int("sequence_parallel_size");
    if (dp * sp != env.world_size) {
      fail("data_parallel_size " + std::to_string(dp) + " x sequence_parallel_size " +
           std::to_string(sp) + " != world size " + std::to_string(env.world_size) + " (" +
           env.source + ")");
    }
    m.dp_size = dp;
    m.sp_size = sp;
    m.source = "config data_parallel_size/sequence_parallel_size";
  }
  if (a.mpu) m.tp_size = a.mpu->model_parallel_world_size();
  return m;
}

void merge_autotp(const Config& cfg, Mesh& mesh) {
  if (!cfg.has("tensor_parallel.autotp_size")) return;
  int64_t tp = cfg.get_int("tensor_parallel.autotp_size");
  if (tp > 1) {
    throw Error(Errc::kConfig,
                "tensor_parallel.autotp_size=" + std::to_string(tp) +
                    ": AutoTP is not available in this dspp release (it arrives as the tp/autotp "
                    "plugin); remove the key or set it to 0");
  }
  (void)mesh;
}

void run_flaggers(const Config& cfg, Module& model, const PluginRegistry& reg) {
  // The flaggers named in the config's "flaggers" object, plus Muon's when the optimizer is Muon.
  std::vector<std::string> names;
  if (cfg.has("flaggers")) {
    rapidjson::Document d;
    d.Parse(cfg.get_json("flaggers").c_str());
    for (auto it = d.MemberBegin(); it != d.MemberEnd(); ++it) {
      names.emplace_back(it->name.GetString());
    }
  }
  const bool muon = cfg.has("optimizer.type") && lower(cfg.get_string("optimizer.type")) == "muon";
  if (muon && std::none_of(names.begin(), names.end(),
                           [](const std::string& n) { return lower(n) == "muon"; })) {
    names.emplace_back("muon");
  }
  if (names.empty()) return;

  std::vector<Parameter*> params = model.parameters();
  std::vector<FlaggerParam> fp(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    fp[i].name = params[i]->name.c_str();
    fp[i].ndim = static_cast<int32_t>(params[i]->shape.size());
    for (size_t d = 0; d < params[i]->shape.size() && d < DSPP_MAX_DIMS; ++d) {
      fp[i].shape[d] = params[i]->shape[d];
    }
    fp[i].flags = params[i]->flags;
  }
  for (const std::string& name : names) {
    auto flagger = reg.create<Flagger>(DSPP_KIND_FLAGGER, name, cfg.view("flaggers." + name));
    check_plugin(flagger->apply(fp.data(), static_cast<int32_t>(fp.size())),
                 "flagger/" + name + " apply");
  }
  for (size_t i = 0; i < params.size(); ++i) params[i]->flags = fp[i].flags;
}

std::shared_ptr<ZeroStage> make_zero_stage(const Config& cfg, const PluginRegistry& reg) {
  const int64_t stage = cfg.get_int("zero_optimization.stage");
  const std::string name = "stage" + std::to_string(stage);
  if (!reg.find(DSPP_KIND_ZERO, name)) {
    std::string have;
    for (const PluginInfo* p : reg.list(DSPP_KIND_ZERO))
      have += (have.empty() ? "" : ", ") + p->name;
    throw Error(Errc::kConfig,
                "zero_optimization.stage=" + std::to_string(stage) + ": no zero plugin '" + name +
                    "' is installed (available: " + (have.empty() ? "none" : have) + ")");
  }
  return reg.create<ZeroStage>(DSPP_KIND_ZERO, name, cfg.view("zero_optimization"));
}

std::vector<double> base_lrs(const Config& cfg, const std::vector<ParamGroup>& groups,
                             const PluginInfo* optimizer) {
  // The lr every group starts from: the group's own "lr", else optimizer.params.lr, else the
  // optimizer plugin's published default (what the plugin itself will use).
  double lr = 1e-3;
  if (cfg.has("optimizer.params.lr")) {
    lr = cfg.get_double("optimizer.params.lr");
  } else if (optimizer) {
    for (const KeySpec& k : optimizer->options) {
      if (k.path == "lr" && !k.default_json.empty() && k.default_json != "null") {
        lr = std::stod(k.default_json);
      }
    }
  }
  if (groups.empty()) return {lr};
  std::vector<double> out;
  for (const ParamGroup& g : groups) {
    rapidjson::Document d;
    d.Parse(g.options_json.empty() ? "{}" : g.options_json.c_str());
    if (d.HasParseError() || !d.IsObject()) {
      fail("model_parameters options_json is not a JSON object: " + g.options_json);
    }
    out.push_back(d.HasMember("lr") && d["lr"].IsNumber() ? d["lr"].GetDouble() : lr);
  }
  return out;
}

EngineKind route(const Module& model, const Config& cfg) {
  if (dynamic_cast<const PipelineModule*>(&model)) return EngineKind::kPipelineEngine;
  if (cfg.get_bool("hybrid_engine.enabled")) return EngineKind::kHybridEngine;
  return EngineKind::kEngine;
}

}  // namespace init_steps

InitializeResult initialize(const InitializeArgs& a) {
  using namespace init_steps;
  zero::InitSuspension suspend_zero_init;  // restored when this scope ends, on error too
  if (!a.model) fail("a model is required");
  if (a.mpu && dynamic_cast<const PipelineModule*>(a.model.get())) {
    fail("mpu must be null with a PipelineModule (its stages define the model-parallel groups)");
  }
  dist::LaunchEnv env = init_distributed(a);

  // The host's registry as it is, or one scanned from the search path and plugin_paths.
  std::shared_ptr<PluginRegistry> reg = a.plugins;
  const bool scan = !reg;
  if (scan) reg = std::make_shared<PluginRegistry>();
  Config cfg = load_config(a, env, *reg, scan);
  dist::check_plugins_match(*reg);
  int64_t numel = 0;
  std::vector<Parameter*> params = a.model->parameters();
  for (const Parameter* p : params) {
    int64_t n = 1;
    for (int64_t d : p->shape) n *= d;
    numel += n;
  }
  if (env.rank == 0)
    log::info("initialize", a.model->type_name() + ": " + std::to_string(params.size()) +
                                " parameters, " + std::to_string(numel) + " elements");
  Mesh mesh = build_mesh(a, cfg, env);
  merge_autotp(cfg, mesh);
  dist::MeshGroups groups = dist::make_mesh_groups(mesh);
  if (mesh.sp_size > 1 && env.rank == 0) {
    log::warn("initialize", "sequence_parallel_size=" + std::to_string(mesh.sp_size) +
                                ": the sequence-parallel groups are built and gradients average "
                                "over dp x sp, but dspp's layers do not split sequences yet "
                                "(no Ulysses all-to-all): each sp rank computes whole sequences");
  }
  run_flaggers(cfg, *a.model, *reg);

  EngineKind kind = route(*a.model, cfg);
  if (kind != EngineKind::kEngine) {
    throw Error(Errc::kRuntime, std::string("initialize: this model/config routes to ") +
                                    to_string(kind) +
                                    ", which is not available in this dspp release");
  }

  EngineOptimizer optimizer{a.optimizer, {}};
  std::string opt_name;
  if (!optimizer.impl && cfg.has("optimizer.type")) {
    opt_name = cfg.get_string("optimizer.type");
    optimizer.impl =
        reg->create<Optimizer>(DSPP_KIND_OPTIMIZER, opt_name, cfg.view("optimizer.params"));
  }
  optimizer.base_lrs =
      base_lrs(cfg, a.model_parameters,
               opt_name.empty() ? nullptr : reg->find(DSPP_KIND_OPTIMIZER, opt_name));
  std::shared_ptr<Scheduler> scheduler = a.lr_scheduler;
  if (!scheduler && cfg.has("scheduler.type")) {
    scheduler = reg->create<Scheduler>(DSPP_KIND_SCHEDULER, cfg.get_string("scheduler.type"),
                                       cfg.view("scheduler.params"));
  }
  std::shared_ptr<DataLoader> loader;
  if (a.training_data) {
    loader = std::make_shared<DataLoader>(a.training_data, cfg.batch().micro_batch_per_gpu,
                                          groups.dp_rank, static_cast<int>(mesh.dp_size),
                                          /*shuffle=*/true, a.seed,
                                          cfg.get_bool("dataloader_drop_last"), a.collate_fn);
  }
  std::shared_ptr<ZeroStage> zero = make_zero_stage(cfg, *reg);
  EngineParts parts{std::move(cfg),     a.model,         optimizer, scheduler,  mesh,
                    a.model_parameters, std::move(zero), groups.dp, groups.grad};
  auto engine = std::make_shared<Engine>(std::move(parts));
  if (env.rank == 0)
    log::info("initialize",
              std::string("engine ") + to_string(engine->kind()) +
                  ": train_batch_size=" + std::to_string(engine->train_batch_size()) +
                  " micro=" + std::to_string(engine->train_micro_batch_size_per_gpu()) +
                  " gas=" + std::to_string(engine->gradient_accumulation_steps()) +
                  " dp=" + std::to_string(mesh.dp_size));
  return {engine, optimizer.impl, loader, scheduler};
}

}  // namespace dspp
