// The steps of initialize(), each a function of its own, in DeepSpeed's order. Exposed to the
// tests; later capabilities (distributed, AutoTP, flaggers, pipeline) fill their step.
#pragma once

#include <dspp/initialize.h>
#include <dspp/kinds/zero.h>
#include <dspp/plugins.h>

#include "dist/launch_env.h"

namespace dspp::init_steps {

// Step 2: where this process sits; starts the distributed world (dist_init_required as DeepSpeed).
dist::LaunchEnv init_distributed(const InitializeArgs& a);

// Step 3: the one config source among args.deepspeed_config, config, config_object and
// config_params, with DeepSpeed's rules for conflicts.
// `scan`: fill `reg` from the search path and the config's plugin_paths first.
Config load_config(const InitializeArgs& a, const dist::LaunchEnv& env, PluginRegistry& reg,
                   bool scan);

// Step 4: the (dp, sp) mesh from mesh_param or data_parallel_size/sequence_parallel_size.
Mesh build_mesh(const InitializeArgs& a, const Config& cfg, const dist::LaunchEnv& env);

// Step 5: AutoTP settings merged into the mesh (tensor_parallel.autotp_size).
void merge_autotp(const Config& cfg, Mesh& mesh);

// Step 6: parameter flaggers (Muon's use_muon when optimizer.type is Muon).
void run_flaggers(const Config& cfg, Module& model, const PluginRegistry& reg);

// The zero/stage<N> plugin for zero_optimization.stage; an error lists the installed stages.
std::shared_ptr<ZeroStage> make_zero_stage(const Config& cfg, const PluginRegistry& reg);

// The lr each parameter group starts from (the scheduler's base).
std::vector<double> base_lrs(const Config& cfg, const std::vector<ParamGroup>& groups,
                             const PluginInfo* optimizer);

// Step 7: which engine this model and config get.
EngineKind route(const Module& model, const Config& cfg);

}  // namespace dspp::init_steps
