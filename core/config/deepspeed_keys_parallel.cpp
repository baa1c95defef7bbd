// Parallelism beyond data parallel: pipeline, tensor parallel (AutoTP), expert parallel (AutoEP),
// the hybrid (train + generate) engine and DeepCompile.
#include "config/deepspeed_keys.h"

namespace dspp::keys {

void register_parallel_keys(ConfigSchema& s) {
  // pipeline: DeepSpeed merges the section over a fixed default dict.
  const std::string ignored = "DeepSpeed ignores it too: the PipelineModule's arguments decide";
  s.add(Key("pipeline", kObject, "{}", "Pipeline engine settings.").spec());
  add_section(
      s, "pipeline", Parse::kDict,
      {
          Key("stages", kAny, "\"auto\"", "Number of pipeline stages, or \"auto\".")
              .no_effect(ignored, "\"auto\""),
          Key("partition", kString, "\"best\"", "How layers are split across stages.")
              .no_effect(ignored, "\"best\""),
          Key("seed_layers", kBool, "false", "Seed each layer's initialization separately.")
              .no_effect(ignored, "false"),
          Key("activation_checkpoint_interval", kInt, "0",
              "Recompute activations every this many layers instead of storing them; 0 = never.")
              .min(0)
              .no_effect("dspp stores activations (a memory hint only)", "0"),
          Key("pipe_partitioned", kBool, "true",
              "Split the activations sent between stages across the tensor-parallel ranks."),
          Key("grad_partitioned", kBool, "true",
              "Split the gradients sent between stages across the tensor-parallel ranks."),
          Key("use_reentrant", kBool, "",
              "Use PyTorch's reentrant checkpointing for pipeline activations (unset = true).")
              .no_effect("tied to PyTorch autograd; no counterpart in dspp", "null"),
      });

  // tensor_parallel: TPTrainingConfig (pydantic). "tp" is the alias of its tensor_parallel field.
  const std::string tp_hint = "AutoTP in dspp decides this itself; results are the same";
  s.add(Key("tensor_parallel", kObject, "{}", "Automatic tensor parallelism (AutoTP) for training.")
            .spec());
  add_section(
      s, "tensor_parallel", Parse::kModel,
      {
          Key("autotp_size", kInt, "0", "Tensor-parallel degree of AutoTP training; 0 = off.")
              .min(0),
          Key("tp", kObject, "{}", "Tensor-parallel group settings."),
          Key("tensor_parallel", kObject, "", "Field name of the tp section.")
              .deprecated("tensor_parallel.tp"),
          Key("dtype", kString, "", "Model dtype for AutoTP (a torch.dtype in DeepSpeed).")
              .no_effect("a torch.dtype JSON cannot express; dspp takes the dtype from fp16/bf16",
                         "null"),
          Key("tp_overlap_comm", kBool, "false",
              "Overlap the tensor-parallel all-reduce with computation.")
              .no_effect("a performance hint dspp does not need", "false"),
          Key("vocab_parallel_lm_head", kBool, "",
              "Shard the output embedding over the vocabulary (unset = follow the model's plan).")
              .no_effect(tp_hint, "null"),
          Key("vocab_parallel_ce_backend", kString, "\"torch\"",
              "Kernel for the vocabulary-parallel cross-entropy.")
              .choices({"torch", "liger"})
              .no_effect("dspp has its own kernels", "\"torch\""),
          Key("partition_config", kObject, "",
              "Custom AutoTP layer rules: name patterns and how each matching weight is split.")
              .open()
              .no_effect(tp_hint, "null"),
          Key("preset_model", kString, "", "Built-in AutoTP rules for a model family.")
              .no_effect(tp_hint, "null"),
          Key("keep_module_on_host", kBool, "false",
              "Keep loaded checkpoint weights on the host instead of the device.")
              .no_effect("a memory hint dspp does not need", "false"),
          Key("kernel_inject", kBool, "false", "Replace layers with DeepSpeed inference kernels.")
              .no_effect("dspp has no kernel injection", "false"),
          Key("replace_with_kernel_inject", kBool, "", "Field name of kernel_inject.")
              .deprecated("tensor_parallel.kernel_inject"),
      });
  add_section(s, "tensor_parallel.tp", Parse::kModel,
              {
                  Key("tp_size", kInt, "1", "Ranks the model is split across.").min(1),
                  Key("tp_grain_size", kInt, "1", "Granularity of uneven tensor splits.")
                      .no_effect(tp_hint, "1"),
              });

  // expert_parallel: AutoEP (plain dict reader); only enabled changes what is trained.
  const std::string ep_part = "part of AutoEP (expert_parallel.enabled), not in dspp";
  s.add(Key("expert_parallel", kObject, "{}", "Automatic expert parallelism (AutoEP) for MoE.")
            .spec());
  add_section(
      s, "expert_parallel", Parse::kDict,
      {
          Key("enabled", kBool, "false", "Replace MoE layers with AutoEP expert-parallel layers.")
              .unsupported("dspp has no expert parallelism", "false"),
          Key("autoep_size", kInt, "1", "Expert-parallel degree.").no_effect(ep_part, "1"),
          Key("expert_tensor_parallel_size", kInt, "1", "Tensor-parallel degree inside experts.")
              .no_effect(ep_part, "1"),
          Key("validate_folding_routing", kBool, "false", "Check the folded routing tables.")
              .no_effect(ep_part, "false"),
          Key("async_split_plan", kBool, "false", "Plan token splits asynchronously.")
              .no_effect(ep_part, "false"),
          Key("preset_model", kString, "", "Built-in MoE layout of a model family.")
              .no_effect(ep_part, "null"),
          Key("moe_layer_pattern", kString, "", "Pattern of MoE layer names.")
              .no_effect(ep_part, "null"),
          Key("expert_pattern", kString, "", "Pattern of expert module names.")
              .no_effect(ep_part, "null"),
          Key("router_pattern", kString, "", "Pattern of router module names.")
              .no_effect(ep_part, "null"),
          Key("use_grouped_mm", kBool, "true", "Use grouped matrix multiplies for experts.")
              .no_effect(ep_part, "true"),
          Key("disable_triton_grouped_mm", kBool, "false", "Avoid the Triton grouped matmul.")
              .no_effect(ep_part, "false"),
          Key("route_norm", kBool, "", "Normalize routing weights (unset = preset).")
              .no_effect(ep_part, "null"),
          Key("route_scale", kFloat, "1.0", "Scale of the routing weights.")
              .no_effect(ep_part, "1.0"),
          Key("score_apply", kString, "\"auto\"", "Apply router scores before or after experts.")
              .choices({"auto", "pre", "post"})
              .no_effect(ep_part, "\"auto\""),
          Key("combine_impl", kString, "\"auto\"", "How expert outputs are combined.")
              .choices({"auto", "weighted_sum", "fused_weighted_sum", "legacy_bmm"})
              .no_effect(ep_part, "\"auto\""),
          Key("row_weighting_impl", kString, "\"auto\"", "How routed rows are weighted.")
              .choices({"auto", "eager", "fused"})
              .no_effect(ep_part, "\"auto\""),
          Key("gate_up_impl", kString, "\"separate\"", "Separate or fused gate/up projections.")
              .choices({"separate", "fused"})
              .no_effect(ep_part, "\"separate\""),
          Key("comm_backend", kString, "\"comm\"", "All-to-all implementation.")
              .choices({"comm", "deepep"})
              .no_effect(ep_part, "\"comm\""),
          Key("comm_num_sm", kInt, "12", "GPU SMs given to the DeepEP kernels.")
              .no_effect(ep_part, "12"),
          Key("comm_qp_margin", kInt, "4", "Spare RDMA queue pairs for DeepEP.")
              .no_effect(ep_part, "4"),
          Key("comm_max_tokens_per_rank", kInt, "0",
              "Token capacity per rank for DeepEP; 0 = auto.")
              .no_effect(ep_part, "0"),
          Key("num_expert_groups", kInt, "", "Expert groups for group-limited routing.")
              .no_effect(ep_part, "null"),
          Key("num_limited_groups", kInt, "", "Groups each token may be routed to.")
              .no_effect(ep_part, "null"),
          Key("score_func", kString, "\"auto\"", "Router score function.")
              .choices({"auto", "softmax", "sigmoid"})
              .no_effect(ep_part, "\"auto\""),
          Key("top_k", kAny, "\"auto\"", "Experts per token, or \"auto\" (from the model).")
              .no_effect(ep_part, "\"auto\""),
          Key("load_balance_coeff", kAny, "", "Auxiliary load-balance loss weight.")
              .unsupported("DeepSpeed rejects any value but null as well", "null"),
          Key("routed_scaling_factor", kAny, "\"auto\"",
              "Scale of the routed expert output, or \"auto\".")
              .no_effect(ep_part, "\"auto\""),
          Key("expert_w1", kString, "", "Name of the experts' first weight.")
              .no_effect(ep_part, "null"),
          Key("expert_w2", kString, "", "Name of the experts' second weight.")
              .no_effect(ep_part, "null"),
          Key("expert_w3", kAny, "",
              "Name of the experts' third weight; null for a fused gate/up weight.")
              .no_effect(ep_part, ""),
          Key("num_experts_attr", kString, "", "Model attribute holding the expert count.")
              .no_effect(ep_part, "null"),
          Key("top_k_attr", kString, "", "Model attribute holding top-k.")
              .no_effect(ep_part, "null"),
          Key("has_shared_experts", kBool, "", "Whether the MoE layer has shared experts.")
              .no_effect(ep_part, "null"),
          Key("shared_experts_pattern", kString, "", "Pattern of shared expert modules.")
              .no_effect(ep_part, "null"),
          Key("shared_experts_gate_pattern", kString, "", "Pattern of shared expert gates.")
              .no_effect(ep_part, "null"),
          Key("expert_activation", kString, "", "Activation of the experts (unset = preset).")
              .no_effect(ep_part, "null"),
      });

  // hybrid_engine: HybridEngineConfig (pydantic).
  s.add(Key("hybrid_engine", kObject, "{}",
            "The hybrid engine: training plus a generation mode sharing the same weights (RLHF).")
            .spec());
  add_section(
      s, "hybrid_engine", Parse::kModel,
      {
          Key("enabled", kBool, "false", "Route initialize() to the hybrid engine."),
          Key("max_out_tokens", kInt, "512", "Largest sequence the generation KV cache holds.")
              .min(1),
          Key("inference_tp_size", kInt, "1", "Tensor-parallel degree used while generating.")
              .no_effect("dspp generates with the training layout; results are the same", "1"),
          Key("release_inference_cache", kBool, "false",
              "Free the generation KV cache when switching back to training."),
          Key("pin_parameters", kBool, "true", "Pin gathered parameters in host memory.")
              .no_effect("a memory hint dspp does not need", "true"),
          Key("tp_gather_partition_size", kInt, "8",
              "Layers gathered at a time when re-splitting for generation.")
              .no_effect("a memory hint dspp does not need", "8"),
          Key("enable_cuda_graph", kBool, "false", "Capture the generation step in a CUDA graph.")
              .no_effect("a performance hint dspp does not have", "false"),
      });

  // compile: DeepCompile (pydantic). Graph compilation only changes speed and memory.
  const std::string compile = "DeepCompile is a PyTorch compiler pass; dspp has none";
  s.add(Key("compile", kObject, "{}", "DeepCompile graph optimizations.").spec());
  add_section(
      s, "compile", Parse::kModel,
      {
          Key("deepcompile", kBool, "false", "Compile the training step with DeepCompile.")
              .no_effect(compile, "false"),
          Key("autoep_non_moe", kBool, "false", "Compile the non-MoE parents of AutoEP layers.")
              .no_effect(compile, "false"),
          Key("free_activation", kBool, "false", "Free large activations eagerly.")
              .no_effect(compile, "false"),
          Key("free_activation_threshold", kInt, "10485760",
              "Bytes above which activations are freed eagerly.")
              .no_effect(compile, "10485760"),
          Key("offload_activation", kBool, "false", "Keep saved activations in host memory.")
              .no_effect(compile, "false"),
          Key("offload_activation_pin_memory", kBool, "true",
              "Pin the host buffers of offloaded activations.")
              .no_effect(compile, "true"),
          Key("offload_opt_states", kBool, "false",
              "Move optimizer state to the host during forward/backward.")
              .no_effect(compile, "false"),
          Key("double_buffer", kBool, "true", "Double-buffer the gathered parameters.")
              .no_effect(compile, "true"),
          Key("symmetric_memory", kBool, "false", "Use symmetric memory for collectives.")
              .no_effect(compile, "false"),
          Key("debug_log", kBool, "false", "Dump the compiled graphs.").no_effect(compile, "false"),
          Key("offload_parameters", kBool, "false", "Offload parameters to the host.")
              .no_effect(compile, "false"),
          Key("sync_before_reduce", kBool, "false", "Synchronize before gradient reductions.")
              .no_effect(compile, "false"),
          Key("sync_after_reduce", kBool, "false", "Synchronize after gradient reductions.")
              .no_effect(compile, "false"),
          Key("sync_before_allgather", kBool, "false", "Synchronize before parameter gathers.")
              .no_effect(compile, "false"),
          Key("sync_after_allgather", kBool, "false", "Synchronize after parameter gathers.")
              .no_effect(compile, "false"),
          Key("keep_int_input_tensors", kBool, "true", "Keep real integer inputs while profiling.")
              .no_effect(compile, "true"),
          Key("keep_all_input_tensors", kBool, "false", "Keep all real inputs while profiling.")
              .no_effect(compile, "false"),
          Key("passes", kArray, "", "Compiler passes to compose (z1, z3, autosp, autotp).")
              .no_effect(compile, "null"),
      });
}

}  // namespace dspp::keys
