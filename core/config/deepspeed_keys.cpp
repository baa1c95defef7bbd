// Every config key DeepSpeed 0.19 knows, with DeepSpeed's default, plus dspp's own keys.
// The one place core keys are listed (split by section into deepspeed_keys_*.cpp); docs/config.md
// is generated from it and tests/test_config_defaults.cpp checks the defaults against DeepSpeed's.
//
// Support levels follow one rule: a feature dspp lacks is an error when it would change the
// results (kUnsupported) and a warning when it is only a speed/memory hint or a monitor
// (kNoEffect). Keys of DeepSpeed's pydantic models accept "auto" because DeepSpeed drops such
// values there (the field keeps its default); its plain dict readers do not, except where the
// Hugging Face Trainer fills them.
#include "config/deepspeed_keys.h"

namespace dspp {

namespace keys {

void register_top_level_keys(ConfigSchema& s) {
  const std::string python_only = "a Python runtime setting with no counterpart in dspp";

  add_section(
      s, "", Parse::kDict,
      {
          // The batch triple: train = micro * accumulation * dp (resolved as DeepSpeed does).
          Key("train_batch_size", kInt, "",
              "Global batch per optimizer step: micro batch x accumulation steps x dp size.")
              .min(1)
              .autoable(),
          Key("train_micro_batch_size_per_gpu", kInt, "", "Samples per rank per forward/backward.")
              .min(1)
              .autoable(),
          Key("gradient_accumulation_steps", kInt, "",
              "Micro-steps accumulated before each optimizer step.")
              .min(1)
              .autoable(),
          Key("managed_gradient_accumulation", kBool, "true",
              "When false the host, not the engine, decides the accumulation boundary and every "
              "step() updates the weights.")
              .unsupported("dspp always counts micro-steps to the accumulation boundary", "true"),
          Key("gradient_clipping", kFloat, "1.0",
              "Clip gradients to this global L2 norm (across all ranks); 0 disables.")
              .min(0.0)
              .autoable(),

          Key("optimizer", kObject, "", "The optimizer plugin and its params."),
          Key("optimizer.type", kString, "",
              "Optimizer plugin name (case-insensitive), e.g. Adam, AdamW, Muon."),
          Key("optimizer.params", kObject, "{}",
              "Options of the optimizer plugin named by optimizer.type.")
              .open(),
          Key("optimizer.legacy_fusion", kBool, "false",
              "Selects DeepSpeed's old fused fp16 optimizer path.")
              .no_effect("dspp has one fused optimizer path per plugin", "false"),
          Key("scheduler", kObject, "", "The learning-rate scheduler plugin and its params."),
          Key("scheduler.type", kString, "",
              "Scheduler plugin name (case-insensitive), e.g. WarmupLR, WarmupDecayLR."),
          Key("scheduler.params", kObject, "{}",
              "Options of the scheduler plugin named by scheduler.type.")
              .open(),
          Key("zero_allow_untested_optimizer", kBool, "false",
              "Allow an optimizer that was not written for ZeRO to run under ZeRO."),
          Key("zero_force_ds_cpu_optimizer", kBool, "true",
              "Require DeepSpeed's own CPU optimizer when the optimizer state is offloaded.")
              .no_effect("dspp always steps offloaded state with its own CPU optimizer", "true"),

          Key("steps_per_print", kInt, "", "Log progress every this many optimizer steps.").min(1),
          Key("wall_clock_breakdown", kBool, "false",
              "Time forward, backward and step separately and log the breakdown."),
          Key("memory_breakdown", kBool, "false", "Log memory use at each stage of a step."),
          Key("dump_state", kBool, "false", "Print the engine's state after initialization.")
              .no_effect("dspp has no state dump", "false"),
          Key("disable_python_gc", kBool, "false",
              "Turn off Python's cyclic garbage collector during training.")
              .no_effect(python_only, "false"),
          Key("disable_allgather", kBool, "false",
              "Legacy switch that DeepSpeed still reads but no longer acts on.")
              .no_effect("DeepSpeed itself no longer acts on it", "false"),
          Key("log_level", kString, "", "Level of the runtime's logger.")
              .choices({"debug", "info", "warning", "error", "critical"}),
          Key("vocabulary_size", kInt, "",
              "Vocabulary size, only used to warn when it is not a multiple of 8.")
              .no_effect("dspp does not check vocabulary alignment", "null"),
          Key("datastates_ckpt", kAny, "false",
              "Settings of the DataStates asynchronous checkpoint engine; any value but false "
              "enables it.")
              .open()
              .no_effect("dspp writes checkpoints with its own engine", "false"),

          // Gradient communication.
          Key("communication_data_type", kString, "",
              "Data type gradients are reduced in; unset follows the training precision.")
              .choices({"fp16", "bf16", "fp32"})
              .reject("\"fp16\"",
                      "dspp reduces gradients in fp32 (16-bit reductions round every "
                      "partial sum); use \"fp32\" or leave it unset")
              .reject("\"bf16\"",
                      "dspp reduces gradients in fp32 (16-bit reductions round every "
                      "partial sum); use \"fp32\" or leave it unset"),
          Key("seq_parallel_communication_data_type", kString, "\"fp32\"",
              "Data type of gradient reductions across the sequence-parallel group.")
              .choices({"fp16", "bf16", "fp32"}),
          Key("prescale_gradients", kBool, "false",
              "Divide gradients by the dp size before reducing them instead of after."),
          Key("gradient_predivide_factor", kFloat, "1.0",
              "Divide gradients by this factor before the reduction and by dp/factor after."),
          Key("gradient_allreduce_op", kString, "\"mean\"",
              "How gradients are combined across data-parallel ranks.")
              .choices({"mean", "sum"}),
          Key("dataloader_drop_last", kBool, "false",
              "Drop the last incomplete batch of the engine's dataloader."),
          Key("use_data_before_expert_parallelism", kBool, "false",
              "Lay out expert-parallel groups with data parallelism first.")
              .no_effect("dspp has no expert parallelism", "false"),

          // Parallel degrees read by initialize() to build the mesh.
          Key("sequence_parallel_size", kInt, "1",
              "Ranks that split each sequence (Ulysses); dp size = world / (tp * pp * sp).")
              .min(1),
          Key("data_parallel_size", kInt, "",
              "Data-parallel degree; with sequence_parallel_size it shapes the data x sequence "
              "mesh.")
              .min(1),

          // Legacy boolean form of zero_optimization read this key.
          Key("allgather_size", kInt, "",
              "Allgather bucket size of DeepSpeed's legacy boolean zero_optimization form.")
              .no_effect("only read with \"zero_optimization\": true, which dspp does not accept; "
                         "use zero_optimization.allgather_bucket_size",
                         ""),

          // dspp's own keys.
          Key("strict_config", kBool, "false",
              "dspp: make every unknown key an error instead of a warning."),
          Key("plugin_paths", kArray, "[]",
              "dspp: folders searched for plugin libraries, before DSPP_PLUGIN_PATH and the "
              "install's plugin folder."),
          Key("flaggers", kObject, "{}",
              "dspp: parameter flaggers run by initialize(), by plugin name, each with its "
              "options ({\"muon\": {\"exclude\": [\"embed\", \"lm_head\"]}}); muon runs "
              "by default when optimizer.type is Muon.")
              .open(),
      });

  // Mixed precision (DeepSpeedFP16Config / DeepSpeedBF16Config: pydantic).
  add_section(s, "", Parse::kDict,
              {
                  Key("fp16", kObject, "{}", "fp16 mixed precision with fp32 master weights."),
                  Key("bf16", kObject, "{}", "bf16 mixed precision with fp32 master weights."),
                  Key("bfloat16", kObject, "", "Old name of the bf16 section.").deprecated("bf16"),
              });
  add_section(
      s, "fp16", Parse::kModel,
      {
          Key("enabled", kBool, "false", "Train in fp16 with dynamic or static loss scaling."),
          Key("auto_cast", kBool, "false",
              "Cast floating-point inputs of forward() to fp16 before the model sees them.")
              .no_effect("dspp's CPU layers take fp32 inputs (the 16-bit values are the "
                         "parameters')",
                         "false"),
          Key("loss_scale", kFloat, "0", "Static loss scale; 0 selects dynamic loss scaling.")
              .min(0.0),
          Key("initial_scale_power", kInt, "16", "Dynamic scaling starts at 2^this."),
          Key("loss_scale_window", kInt, "1000",
              "Overflow-free steps before the dynamic scale is doubled."),
          Key("hysteresis", kInt, "2", "Overflows tolerated before the dynamic scale is halved."),
          Key("consecutive_hysteresis", kBool, "false",
              "Refill the hysteresis after every overflow-free step."),
          Key("min_loss_scale", kInt, "1", "Floor of the dynamic loss scale."),
          Key("fp16_master_weights_and_grads", kBool, "false",
              "Keep master weights and gradients in fp16 instead of fp32.")
              .unsupported("dspp keeps fp32 master weights", "false"),
      });
  add_section(
      s, "bf16", Parse::kModel,
      {
          Key("enabled", kBool, "false", "Train in bf16 with fp32 master weights."),
          Key("immediate_grad_update", kBool, "false",
              "Add each bf16 gradient into the fp32 accumulator as soon as it is produced.")
              .no_effect(
                  "a memory hint: dspp's stages already accumulate reduced gradients in fp32",
                  "false"),
          Key("check_grad_overflow", kBool, "true",
              "Skip the optimizer step when a gradient is inf or NaN."),
          Key("bf16_master_weights_and_grads", kBool, "false",
              "Keep ZeRO master weights and gradients in bf16 instead of fp32.")
              .unsupported("dspp keeps fp32 master weights", "false"),
          Key("bf16_optimizer_states", kBool, "false",
              "Keep optimizer states in bf16 (with bf16 master weights).")
              .unsupported("dspp keeps optimizer states in fp32", "false"),
      });

  // torch.autocast around forward (plain dict reader).
  const std::string autocast_part = "part of torch_autocast, which dspp does not implement";
  add_section(s, "torch_autocast", Parse::kDict,
              {
                  Key("enabled", kBool, "false",
                      "Run forward under torch.autocast instead of casting the whole model.")
                      .unsupported("dspp has no per-op autocast; use fp16 or bf16", "false"),
                  Key("dtype", kString, "", "Lower-precision dtype autocast uses.")
                      .choices({"torch.float16", "fp16", "float16", "half", "torch.float32", "fp32",
                                "float32", "float", "torch.int8", "int8", "torch.bfloat16", "bf16",
                                "bfloat16"})
                      .no_effect(autocast_part, "null"),
                  Key("lower_precision_safe_modules", kArray, "",
                      "Module classes whose parameters autocast keeps in lower precision.")
                      .no_effect(autocast_part, "null"),
              });
  s.add(Key("torch_autocast", kObject, "{}", "PyTorch autocast settings.").spec());

  // data_types (plain dict reader).
  add_section(
      s, "data_types", Parse::kDict,
      {
          Key("grad_accum_dtype", kString, "",
              "Data type gradients are accumulated in across micro-steps.")
              .choices({"fp32", "fp16", "bf16"})
              .unsupported("dspp accumulates gradients in fp32 under mixed precision", "\"fp32\""),
          Key("param_dtype", kString, "", "Cast parameters to this dtype (FSDP-style policy).")
              .choices({"fp32", "fp16", "bf16"})
              .unsupported("dspp takes the parameter dtype from fp16/bf16", "null"),
          Key("buffer_dtype", kString, "", "Cast module buffers to this dtype.")
              .choices({"fp32", "fp16", "bf16"})
              .unsupported("dspp does not recast buffers", "null"),
          Key("keep_in_fp32_modules", kAny, "\"auto\"",
              "Buffers kept in fp32 under mixed precision: \"auto\" or a list of name patterns.")
              .no_effect("Hugging Face model metadata that dspp does not read", "\"auto\""),
      });
  s.add(Key("data_types", kObject, "{}", "Data types of accumulation, parameters and buffers.")
            .spec());
}

}  // namespace keys

void register_core_keys(ConfigSchema& schema) {
  keys::register_top_level_keys(schema);
  keys::register_zero_keys(schema);
  keys::register_parallel_keys(schema);
  keys::register_tooling_keys(schema);
}

}  // namespace dspp
