// zero_optimization: DeepSpeed's DeepSpeedZeroConfig and its offload/ZenFlow/leaf-module models.
// JSON files spell the ZeRO-3 keys with their "stage3_" alias; DeepSpeed also accepts the bare
// field names, which we take as deprecated spellings of the alias.
#include "config/deepspeed_keys.h"

namespace dspp::keys {

namespace {

// DeepSpeed's cpu_offload / cpu_offload_param: true means "offload to the CPU", false means
// "no offload" (nothing to copy to the new key).
std::string cpu_if_true(const std::string& old_json) {
  return old_json == "true" ? "\"cpu\"" : "";
}

}  // namespace

void register_zero_keys(ConfigSchema& s) {
  const std::string z = "zero_optimization";
  const std::string nvme = "NVMe offload (ZeRO-Infinity) is not implemented in dspp; use \"cpu\"";
  const std::string nvme_part = "only used with NVMe offload, which dspp does not implement";
  const std::string comm_hint = "a communication/performance hint dspp does not need";
  const std::string python_only = "tied to PyTorch module hooks; no counterpart in dspp";

  s.add(Key(z, kObject, "{}", "ZeRO: partition optimizer state (1), gradients (2), parameters (3).")
            .spec());
  add_section(
      s, z, Parse::kModel,
      {
          Key("stage", kInt, "0",
              "0 = plain data parallel, 1 = optimizer state, 2 = + gradients, 3 = + parameters "
              "partitioned across dp ranks.")
              .range(0, 3),
          Key("contiguous_gradients", kBool, "true",
              "Copy gradients into one contiguous buffer as they are produced.")
              .no_effect("dspp's stage 2 always writes gradients into contiguous buckets", "true"),
          Key("reduce_scatter", kBool, "true",
              "Reduce gradients with reduce-scatter (each rank keeps its partition) instead of "
              "all-reduce.")
              .no_effect("dspp always reduces each partition to its owner (the same sums)", "true"),
          Key("reduce_bucket_size", kInt, "500000000", "Elements reduced per gradient bucket.")
              .min(1),
          Key("use_multi_rank_bucket_allreduce", kBool, "true",
              "Merge the reduce buckets of several ranks into one all-reduce.")
              .no_effect(comm_hint, "true"),
          Key("allgather_partitions", kBool, "true",
              "Gather updated partitions with all-gather rather than a series of broadcasts.")
              .no_effect("dspp gathers equal partitions with one all-gather (the same values)",
                         "true"),
          Key("allgather_bucket_size", kInt, "500000000",
              "Elements gathered per parameter all-gather bucket.")
              .min(0)
              .no_effect("dspp's stages 1 and 2 gather each rank's partition in one all-gather",
                         "500000000"),
          Key("overlap_comm", kBool, "",
              "Overlap gradient reduction with the backward pass; unset means true at stage 3, "
              "false otherwise.")
              .no_effect("dspp's stage 2 always overlaps reduction with backward (the same "
                         "results)",
                         "true"),
          Key("compute_grad_norm", kBool, "true",
              "Compute the global gradient norm at each stage 1/2 step even without clipping.")
              .no_effect("dspp computes the norm whenever it needs it", "true"),
          Key("load_from_fp32_weights", kBool, "true",
              "Restore fp32 master weights from the checkpoint's fp32 copy rather than the "
              "16-bit model weights.")
              .unsupported("dspp always restores master weights from their fp32 copy", "true"),
          Key("elastic_checkpoint", kBool, "false",
              "Legacy elastic ZeRO checkpoints; DeepSpeed now points to universal checkpoints.")
              .no_effect("dspp checkpoints load at any world size without it", "false"),
          Key("offload_param", kObject, "",
              "Offload ZeRO-3 parameters to host memory (stage 3 only)."),
          Key("offload_optimizer", kObject, "",
              "Offload optimizer state and its step to the CPU (stages 1-3)."),
          Key("zenflow", kObject, "",
              "ZenFlow: update only the most important gradient columns every step.")
              .unsupported("ZenFlow's selective updates change the training results; not in dspp",
                           "null"),
          Key("sub_group_size", kInt, "1000000000",
              "Parameter elements the offloaded optimizer steps at a time.")
              .min(0)
              .no_effect("dspp steps each partition whole", "1000000000"),
          Key("stage3_prefetch_bucket_size", kInt, "50000000",
              "Parameter elements ZeRO-3 fetches ahead of use.")
              .min(0),
          Key("stage3_param_persistence_threshold", kInt, "100000",
              "Parameters smaller than this stay unpartitioned at ZeRO-3.")
              .min(0),
          Key("stage3_model_persistence_threshold", kInt, "9223372036854775807",
              "Upper bound on the elements kept unpartitioned by the persistence threshold.")
              .min(0),
          Key("stage3_max_live_parameters", kInt, "1000000000",
              "Gathered parameter elements ZeRO-3 keeps before releasing some.")
              .min(0)
              .no_effect("dspp's stage 3 releases each module's parameters right after use",
                         "1000000000"),
          Key("stage3_max_reuse_distance", kInt, "1000000000",
              "Keep a gathered parameter if it is used again within this many elements.")
              .min(0)
              .no_effect("dspp's stage 3 releases each module's parameters right after use",
                         "1000000000"),
          Key("stage3_gather_16bit_weights_on_model_save", kBool, "false",
              "Gather the full 16-bit weights when saving the model at ZeRO-3.")
              .no_effect("dspp checkpoints hold every parameter at every stage; `ds-checkpoint "
                         "export` writes them whole",
                         "false"),
          Key("stage3_module_granularity_threshold", kInt, "0",
              "Fetch fine-grained modules whole when parameters/descendants is below this.")
              .no_effect(comm_hint, "0"),
          Key("stage3_use_all_reduce_for_fetch_params", kBool, "false",
              "Fetch ZeRO-3 parameters with all-reduce instead of all-gather.")
              .no_effect(comm_hint, "false"),
          Key("stage3_allgather_sequential", kBool, "false",
              "Gather ZeRO-3 parameters one by one instead of in buckets.")
              .no_effect(comm_hint, "false"),
          Key("ignore_unused_parameters", kBool, "true",
              "Tolerate parameters that receive no gradient instead of failing.")
              .no_effect("dspp layers always produce their gradients", "true"),
          Key("legacy_stage1", kBool, "false", "DeepSpeed's old stage 1 implementation.")
              .no_effect("dspp has one stage 1", "false"),
          Key("round_robin_gradients", kBool, "false",
              "Spread the copy of offloaded gradients across ranks in round-robin order.")
              .no_effect(comm_hint, "false"),
          Key("parameter_alignment", kBool, "false",
              "Pad flat buffers so each parameter starts 16-byte aligned.")
              .no_effect("dspp chooses its own buffer alignment", "false"),
          Key("zero_hpz_partition_size", kInt, "1",
              "ZeRO++ hpZ: ranks of the secondary parameter partition group.")
              .min(0)
              .no_effect("hpZ only changes the communication pattern", "1"),
          Key("zero_quantized_weights", kBool, "false",
              "ZeRO++ qwZ: quantize weights for the all-gather.")
              .unsupported("quantized communication changes the results; not in dspp", "false"),
          Key("zero_quantized_nontrainable_weights", kBool, "false",
              "Store frozen weights quantized.")
              .unsupported("quantized weights change the results; not in dspp", "false"),
          Key("zero_quantized_gradients", kBool, "false",
              "ZeRO++ qgZ: quantize gradients for the reduction.")
              .unsupported("quantized communication changes the results; not in dspp", "false"),
          Key("memory_efficient_linear", kBool, "true",
              "Use DeepSpeed's memory-saving linear layer at ZeRO-3.")
              .no_effect(python_only, "true"),
          Key("pipeline_loading_checkpoint", kBool, "false",
              "Force ZeRO-3 checkpoint loading in pipeline mode.")
              .no_effect(python_only, "false"),
          Key("override_module_apply", kBool, "true",
              "Wrap nn.Module.apply so it sees gathered ZeRO-3 parameters.")
              .no_effect(python_only, "true"),
          Key("log_trace_cache_warnings", kBool, "false", "Log ZeRO-3 trace-cache invalidations.")
              .no_effect("dspp has no trace cache", "false"),
          Key("enable_sanity_checks", kBool, "false", "Run DeepSpeed's internal ZeRO checks.")
              .no_effect("dspp has no such checks", "false"),
          Key("save_muon_momentum_buffer_in_memory", kBool, "false",
              "Keep Muon momentum in memory when other optimizer state goes to NVMe.")
              .no_effect(nvme_part, "false"),
          Key("leaf_module", kObject, "{}",
              "Modules ZeRO-3 treats as leaves (no hooks inside them)."),

          // Deprecated spellings.
          Key("cpu_offload", kBool, "", "Old switch for optimizer offload to the CPU.")
              .deprecated(z + ".offload_optimizer.device", cpu_if_true),
          Key("cpu_offload_param", kBool, "", "Old switch for ZeRO-3 parameter offload.")
              .deprecated(z + ".offload_param.device", cpu_if_true),
          Key("cpu_offload_use_pin_memory", kBool, "",
              "Old pinned-memory switch; DeepSpeed ignores it with a warning.")
              .no_effect(
                  "deprecated and ignored by DeepSpeed too; use offload_optimizer.pin_memory "
                  "or offload_param.pin_memory",
                  ""),
          Key("stage3_gather_fp16_weights_on_model_save", kBool, "",
              "Old name of stage3_gather_16bit_weights_on_model_save.")
              .deprecated(z + ".stage3_gather_16bit_weights_on_model_save"),

          // Removed from DeepSpeed 0.19 (it rejects them); dspp follows the results rule.
          Key("mics_shard_size", kInt, "", "MiCS: shard ZeRO-3 state within groups of this size.")
              .no_effect("MiCS was removed from DeepSpeed 0.19, which rejects the key; it only "
                         "changes where state lives",
                         "-1"),
          Key("mics_hierarchical_params_gather", kBool, "",
              "MiCS: gather parameters hierarchically.")
              .no_effect("MiCS was removed from DeepSpeed 0.19, which rejects the key", "false"),
          Key("zeropp_loco_param", kAny, "", "LoCo error feedback for ZeRO++ quantized gradients.")
              .open()
              .unsupported("removed from DeepSpeed 0.19, which rejects the key", ""),
      });

  // The bare ZeRO-3 field names DeepSpeed accepts besides the stage3_ aliases.
  for (const char* name :
       {"prefetch_bucket_size", "param_persistence_threshold", "model_persistence_threshold",
        "max_live_parameters", "max_reuse_distance", "gather_16bit_weights_on_model_save",
        "module_granularity_threshold", "use_all_reduce_for_fetch_params",
        "allgather_sequential"}) {
    const std::string to = z + ".stage3_" + name;
    const KeySpec* target = s.find(to);
    s.add(
        Key(z + "." + name, target ? target->type : kAny, "", "Unprefixed spelling of " + to + ".")
            .deprecated(to)
            .spec());
  }

  add_section(
      s, z + ".offload_optimizer", Parse::kModel,
      {
          Key("device", kString, "\"none\"", "Where optimizer state lives: none or cpu.")
              .choices({"none", "cpu", "nvme"})
              .reject("\"nvme\"", nvme),
          Key("nvme_path", kString, "", "Folder on the NVMe device for optimizer state.")
              .no_effect(nvme_part, "null"),
          Key("buffer_count", kInt, "4", "Buffers in the NVMe swap pool for optimizer state.")
              .min(0)
              .no_effect(nvme_part, "4"),
          Key("pin_memory", kBool, "true",
              "Keep the offloaded state in page-locked host memory for fast copies."),
          Key("pipeline_read", kBool, "false",
              "Overlap reading the next NVMe tile with the current step.")
              .no_effect(nvme_part, "false"),
          Key("pipeline_write", kBool, "false",
              "Overlap writing the previous NVMe tile with the current step.")
              .no_effect(nvme_part, "false"),
          Key("fast_init", kBool, "false", "Faster optimizer initialization with NVMe offload.")
              .no_effect(nvme_part, "false"),
          Key("ratio", kFloat, "1.0", "Fraction of the optimizer state offloaded (ZeRO-3 only).")
              .range(0.0, 1.0)
              .no_effect("dspp offloads all of the optimizer state", "1.0"),
          Key("super_offload", kBool, "false",
              "Offload path tuned for CPU-GPU superchips (ZeRO-3 only).")
              .no_effect("a performance path dspp does not have", "false"),
          Key("cpuadam_cores_perc", kFloat, "0.8",
              "Share of CPU cores given to the CPU optimizer with super_offload.")
              .range(0.0, 1.0)
              .no_effect("dspp sizes its CPU optimizer threads itself", "0.8"),
      });

  add_section(s, z + ".offload_param", Parse::kModel,
              {
                  Key("device", kString, "\"none\"", "Where ZeRO-3 parameters live between uses.")
                      .choices({"none", "cpu", "nvme"})
                      .reject("\"nvme\"", nvme)
                      .no_effect("dspp keeps ZeRO-3 partitions on the device; only memory differs",
                                 "\"none\""),
                  Key("nvme_path", kString, "", "Folder on the NVMe device for parameters.")
                      .no_effect(nvme_part, "null"),
                  Key("buffer_count", kInt, "5", "Buffers in the NVMe swap pool for parameters.")
                      .min(0)
                      .no_effect(nvme_part, "5"),
                  Key("buffer_size", kInt, "100000000", "Size of each NVMe parameter swap buffer.")
                      .min(0)
                      .no_effect(nvme_part, "100000000"),
                  Key("max_in_cpu", kInt, "1000000000",
                      "Parameter elements kept in host memory with NVMe offload.")
                      .min(0)
                      .no_effect(nvme_part, "1000000000"),
                  Key("pin_memory", kBool, "true", "Offload parameters to page-locked host memory.")
                      .no_effect("dspp does not offload parameters", "true"),
              });

  const std::string zenflow_part = "part of ZenFlow (zero_optimization.zenflow), not in dspp";
  add_section(
      s, z + ".zenflow", Parse::kModel,
      {
          Key("topk_ratio", kFloat, "0.1", "Share of gradient columns updated every step.")
              .range(0.0, 1.0)
              .no_effect(zenflow_part, "0.1"),
          Key("select_strategy", kString, "\"auto\"", "When important columns are re-selected.")
              .choices({"auto", "step", "epoch"})
              .no_effect(zenflow_part, "\"auto\""),
          Key("select_interval", kAny, "\"auto\"", "Re-selection interval, or \"auto\".")
              .no_effect(zenflow_part, "\"auto\""),
          Key("update_interval", kAny, "\"auto\"",
              "Interval at which the other columns are updated, or \"auto\".")
              .no_effect(zenflow_part, "\"auto\""),
          Key("overlap_step", kBool, "false", "Overlap the CPU step with forward/backward.")
              .no_effect(zenflow_part, "false"),
          Key("offload", kBool, "false", "Offload the selective optimizer state to the CPU.")
              .no_effect(zenflow_part, "false"),
          Key("auto_ratio", kFloat, "0.99", "Threshold of the \"auto\" update interval.")
              .range(0.0, 1.0)
              .no_effect(zenflow_part, "0.99"),
          Key("full_warm_up_rounds", kInt, "0", "First rounds that update every column.")
              .no_effect(zenflow_part, "0"),
          Key("pt_reserved_cores_perc", kFloat, "0.5",
              "Share of CPU cores left to the framework's threads.")
              .range(0.0, 1.0)
              .no_effect(zenflow_part, "0.5"),
          Key("steps_per_epoch", kInt, "", "Set by DeepSpeed at run time, not by users.")
              .no_effect(zenflow_part, "null"),
      });

  add_section(
      s, z + ".leaf_module", Parse::kModel,
      {
          Key("classes", kArray,
              "[\"transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock\","
              "\"transformers.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock\","
              "\"transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock\"]",
              "Module classes treated as ZeRO-3 leaves.")
              .no_effect(python_only,
                         "[\"transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock\","
                         "\"transformers.models.qwen2_moe.modeling_qwen2_moe."
                         "Qwen2MoeSparseMoeBlock\","
                         "\"transformers.models.qwen3_moe.modeling_qwen3_moe."
                         "Qwen3MoeSparseMoeBlock\"]"),
          Key("names", kArray, "[]", "Module names treated as ZeRO-3 leaves.")
              .no_effect(python_only, "[]"),
          Key("name_suffixes", kArray, "[]", "Module name suffixes treated as ZeRO-3 leaves.")
              .no_effect(python_only, "[]"),
      });
}

}  // namespace dspp::keys
