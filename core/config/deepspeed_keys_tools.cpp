// Monitors, logging, checkpoints, profilers, autotuning, async I/O, activation checkpointing,
// data efficiency, weight quantization, and the sections DeepSpeed 0.19 removed.
#include "config/deepspeed_keys.h"

namespace dspp::keys {

namespace {

void register_monitors(ConfigSchema& s) {
  // DeepSpeed's Train/Samples/* events, written by the engine on rank 0 (core/monitor/).
  s.add(Key("csv_monitor", kObject, "{}", "CSV monitor of loss and learning rate.").spec());
  add_section(s, "csv_monitor", Parse::kModel,
              {
                  Key("enabled", kBool, "false",
                      "Write Train/Samples/train_loss and lr, one CSV file per event, on rank 0."),
                  Key("output_path", kString, "\"\"",
                      "Folder of the event files; empty = the launch directory."),
                  Key("job_name", kString, "\"DeepSpeedJobName\"",
                      "Subfolder of output_path for this run."),
              });

  // DeepSpeed's TensorBoardConfig; the same events as csv_monitor, one event file (tensorboard.h).
  s.add(Key("tensorboard", kObject, "{}", "TensorBoard monitor of loss and learning rate.").spec());
  add_section(s, "tensorboard", Parse::kModel,
              {
                  Key("enabled", kBool, "false",
                      "Write Train/Samples/train_loss and lr to a TensorBoard event file on "
                      "rank 0 (needs a libdspp built with protobuf)."),
                  Key("output_path", kString, "\"\"",
                      "Folder of the event files; empty = the launch directory."),
                  Key("job_name", kString, "\"DeepSpeedJobName\"",
                      "Subfolder of output_path for this run."),
              });

  const std::string wandb = "dspp has no Weights & Biases monitor";
  s.add(Key("wandb", kObject, "{}", "Weights & Biases monitor.").spec());
  add_section(
      s, "wandb", Parse::kModel,
      {
          Key("enabled", kBool, "false", "Log to Weights & Biases.").no_effect(wandb, "false"),
          Key("group", kString, "", "Run group.").no_effect(wandb, "null"),
          Key("team", kString, "", "Team (entity).").no_effect(wandb, "null"),
          Key("project", kString, "\"deepspeed\"", "Project.").no_effect(wandb, "\"deepspeed\""),
      });

  const std::string comet = "dspp has no Comet monitor";
  s.add(Key("comet", kObject, "{}", "Comet monitor.").spec());
  add_section(
      s, "comet", Parse::kModel,
      {
          Key("enabled", kBool, "false", "Log to Comet.").no_effect(comet, "false"),
          Key("samples_log_interval", kInt, "100", "Samples between two submissions.")
              .no_effect(comet, "100"),
          Key("project", kString, "", "Project name.").no_effect(comet, "null"),
          Key("workspace", kString, "", "Workspace name.").no_effect(comet, "null"),
          Key("api_key", kString, "", "API key.").no_effect(comet, "null"),
          Key("experiment_name", kString, "", "Experiment name.").no_effect(comet, "null"),
          Key("experiment_key", kString, "", "Key of an existing experiment.")
              .no_effect(comet, "null"),
          Key("online", kBool, "", "Log to the server (true) or offline.").no_effect(comet, "null"),
          Key("mode", kString, "", "Get, create, or get-or-create the experiment.")
              .choices({"get", "create", "get_or_create"})
              .no_effect(comet, "null"),
      });

  s.add(Key("comms_logger", kObject, "{}", "Log each collective's size and time.").spec());
  add_section(
      s, "comms_logger", Parse::kModel,
      {
          Key("enabled", kBool, "false", "Record collective operations."),
          Key("prof_all", kBool, "true", "Record every collective, not only prof_ops."),
          Key("prof_ops", kArray, "[]", "Names of the collectives to record."),
          Key("verbose", kBool, "false", "Log each collective as it completes (rank 0)."),
          Key("debug", kBool, "false", "Add the calling function to each record.")
              .no_effect("dspp has no caller names; records are per operation and size", "false"),
      });

  s.add(Key("timers", kObject, "{}", "Built-in timers.").spec());
  s.add(Key("timers.throughput", kObject, "{}", "The throughput timer.").spec());
  const std::string timers = "dspp times steps with its own timers";
  add_section(
      s, "timers.throughput", Parse::kModel,
      {
          Key("enabled", kBool, "true", "Measure samples per second.").no_effect(timers, "true"),
          Key("synchronized", kBool, "true", "Synchronize the device around each timing.")
              .no_effect(timers, "true"),
      });
}

void register_checkpoint(ConfigSchema& s) {
  const std::string io = "checkpoint I/O tuning for DeepSpeed's writers; dspp has its own";
  s.add(Key("checkpoint", kObject, "{}", "Checkpoint save and load settings.").spec());
  add_section(
      s, "checkpoint", Parse::kDict,
      {
          Key("tag_validation", kString, "\"WARN\"",
              "What to do when ranks save under different tags: Warn, Ignore or Fail.")
              .choices({"WARN", "IGNORE", "FAIL"}),
          Key("load_universal", kBool, "false",
              "Load a universal (layout-independent) checkpoint; dspp checkpoints always are."),
          Key("use_node_local_storage", kBool, "false",
              "Each node saves to its own local disk (ranks named by local rank).")
              .no_effect("dspp writes every shard to the shared checkpoint folder", "false"),
          Key("parallel_write", kObject, "{}", "Parallel checkpoint writing."),
          Key("parallel_write.pipeline_stage", kBool, "false",
              "Each pipeline stage writes its own layers in parallel.")
              .no_effect(io, "false"),
          Key("checkpoint_serialization", kBool, "true",
              "Use torch.save's serialization format for checkpoint files.")
              .no_effect(io, "true"),
          Key("writer", kObject, "", "DeepSpeed's fast checkpoint writer."),
          Key("writer.type", kString, "\"FAST\"", "Writer implementation.")
              .choices({"MOCK", "PYTHON", "FAST"})
              .no_effect(io, "\"FAST\""),
          Key("writer.io_buffer_size", kInt, "67108864", "Bytes of each I/O buffer.")
              .no_effect(io, "67108864"),
          Key("writer.io_buffer_double", kBool, "true", "Double-buffer the writes.")
              .no_effect(io, "true"),
          Key("writer.show_statistics", kBool, "false", "Log write throughput.")
              .no_effect(io, "false"),
          Key("writer.data_parallel", kString, "", "Which data-parallel ranks share the writing.")
              .choices({"REPLICA", "SOCKET", "MACHINE"})
              .no_effect(io, "null"),
          Key("writer.decoupled", kBool, "false", "Write in a background process.")
              .no_effect(io, "false"),
          Key("writer.io_multiplier", kInt, "1", "I/O parallelism multiplier.").no_effect(io, "1"),
      });
}

void register_profiling(ConfigSchema& s) {
  const std::string act = "configures DeepSpeed's activation checkpointing API, which dspp lacks";
  s.add(Key("activation_checkpointing", kObject, "{}",
            "Settings of the activation checkpointing API model code calls.")
            .spec());
  add_section(
      s, "activation_checkpointing", Parse::kDict,
      {
          Key("partition_activations", kBool, "false",
              "Split checkpointed activations across model-parallel ranks.")
              .no_effect(act, "false"),
          Key("number_checkpoints", kAny, "", "Checkpoints kept for contiguous memory.")
              .no_effect(act, "null"),
          Key("contiguous_memory_optimization", kBool, "false",
              "Copy checkpoints into one contiguous buffer.")
              .no_effect(act, "false"),
          Key("cpu_checkpointing", kBool, "false", "Keep checkpointed activations on the CPU.")
              .no_effect(act, "false"),
          Key("profile", kBool, "false", "Time the checkpointing functions.")
              .no_effect(act, "false"),
          Key("synchronize_checkpoint_boundary", kBool, "false",
              "Synchronize the device at each checkpoint boundary.")
              .no_effect(act, "false"),
      });

  const std::string flops = "dspp has no flops profiler";
  s.add(Key("flops_profiler", kObject, "{}", "The flops profiler.").spec());
  add_section(
      s, "flops_profiler", Parse::kDict,
      {
          Key("enabled", kBool, "false", "Profile one training step.").no_effect(flops, "false"),
          Key("recompute_fwd_factor", kFloat, "0.0",
              "Extra forward passes per step from activation recomputation.")
              .no_effect(flops, "0.0"),
          Key("profile_step", kInt, "1", "Step to profile.").no_effect(flops, "1"),
          Key("module_depth", kInt, "-1", "Module depth of the report; -1 = all.")
              .no_effect(flops, "-1"),
          Key("top_modules", kInt, "1", "Modules listed per depth.").no_effect(flops, "1"),
          Key("detailed", kBool, "true", "Print the per-module breakdown.")
              .no_effect(flops, "true"),
          Key("output_file", kString, "", "File of the report; unset = stdout.")
              .no_effect(flops, "null"),
      });

  const std::string tune = "dspp has no autotuner";
  s.add(Key("autotuning", kObject, "{}", "DeepSpeed's autotuner (run by its launcher).").spec());
  add_section(
      s, "autotuning", Parse::kDict,
      {
          Key("enabled", kBool, "false", "Search ZeRO stage and micro batch for throughput.")
              .no_effect(tune, "false"),
          Key("fast", kBool, "true", "Tune only the micro batch size of each stage.")
              .no_effect(tune, "true"),
          Key("results_dir", kString, "\"autotuning_results\"", "Folder of the results.")
              .no_effect(tune, "\"autotuning_results\""),
          Key("exps_dir", kString, "\"autotuning_exps\"", "Folder of the experiments.")
              .no_effect(tune, "\"autotuning_exps\""),
          Key("overwrite", kBool, "true", "Overwrite earlier results.").no_effect(tune, "true"),
          Key("start_profile_step", kInt, "3", "First profiled step of each experiment.")
              .no_effect(tune, "3"),
          Key("end_profile_step", kInt, "5", "Last profiled step of each experiment.")
              .no_effect(tune, "5"),
          Key("metric", kString, "\"throughput\"", "What to optimize.")
              .no_effect(tune, "\"throughput\""),
          Key("metric_path", kString, "", "File the metric is written to.").no_effect(tune, "null"),
          Key("tuner_type", kString, "\"gridsearch\"", "Search strategy.")
              .choices({"gridsearch", "random", "model_based"})
              .no_effect(tune, "\"gridsearch\""),
          Key("tuner_early_stopping", kInt, "5", "Stop after this many experiments without gain.")
              .no_effect(tune, "5"),
          Key("tuner_num_trials", kInt, "50", "Largest number of experiments.")
              .no_effect(tune, "50"),
          Key("arg_mappings", kObject, "", "Map of config keys to training-script arguments.")
              .open()
              .no_effect(tune, "null"),
          Key("model_info", kObject, "", "Model facts that narrow the search."),
          Key("model_info.profile", kBool, "false", "Profile the model to learn its size.")
              .no_effect(tune, "false"),
          Key("model_info.num_params", kInt, "", "Parameter count.").no_effect(tune, "null"),
          Key("model_info.hidden_size", kInt, "", "Hidden size.").no_effect(tune, "null"),
          Key("model_info.num_layers", kInt, "", "Layer count.").no_effect(tune, "null"),
          Key("model_info_path", kString, "", "File with the model facts.").no_effect(tune, "null"),
          Key("mp_size", kInt, "1", "Model-parallel degree of the tuned runs.")
              .no_effect(tune, "1"),
          Key("max_train_batch_size", kInt, "", "Largest global batch to try.")
              .no_effect(tune, "null"),
          Key("min_train_batch_size", kInt, "1", "Smallest global batch to try.")
              .no_effect(tune, "1"),
          Key("max_train_micro_batch_size_per_gpu", kInt, "1024", "Largest micro batch to try.")
              .no_effect(tune, "1024"),
          Key("min_train_micro_batch_size_per_gpu", kInt, "1", "Smallest micro batch to try.")
              .no_effect(tune, "1"),
          Key("num_tuning_micro_batch_sizes", kInt, "3", "Micro batch sizes tried per stage.")
              .no_effect(tune, "3"),
      });

  const std::string aio = "asynchronous NVMe I/O, which dspp does not implement";
  s.add(Key("aio", kObject, "{}", "Asynchronous I/O for NVMe offload and checkpoints.").spec());
  add_section(
      s, "aio", Parse::kDict,
      {
          Key("block_size", kInt, "1048576", "Bytes per I/O request.").no_effect(aio, "1048576"),
          Key("queue_depth", kInt, "8", "Outstanding requests.").no_effect(aio, "8"),
          Key("intra_op_parallelism", kInt, "1", "Threads per I/O operation.").no_effect(aio, "1"),
          Key("single_submit", kBool, "false", "Submit requests one at a time.")
              .no_effect(aio, "false"),
          Key("overlap_events", kBool, "true", "Overlap submission and completion.")
              .no_effect(aio, "true"),
          Key("use_gds", kBool, "false", "Use GPUDirect Storage.").no_effect(aio, "false"),
      });
}

void register_data_efficiency(ConfigSchema& s) {
  const std::string de = "dspp has no data efficiency library";
  const std::string part = "part of data_efficiency, which dspp does not implement";
  const std::string p = "data_efficiency";
  s.add(Key(p, kObject, "{}", "Curriculum learning, dynamic batching and random-LTD.").spec());
  add_section(
      s, p, Parse::kDict,
      {
          Key("enabled", kBool, "false", "Turn the data efficiency library on.")
              .unsupported(de, "false"),
          Key("seed", kInt, "1234", "Seed of the data sampler.").no_effect(part, "1234"),
          Key("data_sampling", kObject, "{}", "Data sampling: curriculum and dynamic batching."),
          Key("data_sampling.enabled", kBool, "false", "Use the library's data sampler.")
              .unsupported(de, "false"),
          Key("data_sampling.num_epochs", kInt, "1000", "Epochs the sampler plans for.")
              .no_effect(part, "1000"),
          Key("data_sampling.num_workers", kInt, "0", "Dataloader worker processes.")
              .no_effect(part, "0"),
          Key("data_sampling.pin_memory", kBool, "false", "Pin the loaded batches.")
              .no_effect(part, "false"),
          Key("data_sampling.curriculum_learning", kObject, "{}",
              "Order samples from easy to hard by difficulty metrics."),
          Key("data_sampling.curriculum_learning.enabled", kBool, "false", "Sample by curriculum.")
              .unsupported(de, "false"),
          Key("data_sampling.curriculum_learning.data_cluster_path", kString, "",
              "Folder of the difficulty clusters.")
              .no_effect(part, "null"),
          Key("data_sampling.curriculum_learning.curriculum_metrics", kObject, "",
              "Difficulty metrics and their schedules.")
              .open()
              .no_effect(part, "null"),
          Key("data_sampling.dynamic_batching", kObject, "{}",
              "Batches of varying size with a token budget."),
          Key("data_sampling.dynamic_batching.enabled", kBool, "false", "Batch by tokens.")
              .unsupported(de, "false"),
          Key("data_sampling.dynamic_batching.metrics_path", kString, "",
              "File of per-sample sequence lengths.")
              .no_effect(part, "null"),
          Key("data_sampling.dynamic_batching.lr_scaling_method", kString, "\"linear\"",
              "How the learning rate follows the batch size.")
              .choices({"linear", "sqrt", "none"})
              .no_effect(part, "\"linear\""),
          Key("data_sampling.dynamic_batching.min_batch_size", kInt, "1", "Smallest batch.")
              .no_effect(part, "1"),
          Key("data_sampling.dynamic_batching.max_batch_size", kInt, "", "Largest batch.")
              .no_effect(part, "null"),
          Key("data_sampling.dynamic_batching.sequence_picking_order", kString, "\"dataloader\"",
              "Order sequences are packed in.")
              .choices({"random", "seqlen", "dataloader"})
              .no_effect(part, "\"dataloader\""),
          Key("data_sampling.dynamic_batching.max_tokens", kInt, "", "Token budget per batch.")
              .no_effect(part, "null"),
          Key("data_sampling.dynamic_batching.verbose", kBool, "false", "Log each batch.")
              .no_effect(part, "false"),
          Key("data_routing", kObject, "{}", "Data routing: random layer-wise token dropping."),
          Key("data_routing.enabled", kBool, "false", "Route data through random-LTD.")
              .unsupported(de, "false"),
          Key("data_routing.random_ltd", kObject, "{}", "Random layer-wise token dropping."),
          Key("data_routing.random_ltd.enabled", kBool, "false", "Drop tokens in middle layers.")
              .unsupported(de, "false"),
          Key("data_routing.random_ltd.total_layer_num", kInt, "", "Layers of the model.")
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.random_ltd_layer_num", kInt, "", "Layers that drop tokens.")
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.random_ltd_layer_id", kArray, "",
              "Indices of the layers that drop tokens.")
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.model_mask_name", kString, "",
              "Name of the attention mask argument.")
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.model_type", kString, "", "Decoder or encoder model.")
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.hidden_state_order", kString, "",
              "Layout of the hidden states (batch or sequence first).")
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.random_ltd_schedule", kObject, "",
              "How many tokens are kept over training.")
              .open()
              .no_effect(part, "null"),
          Key("data_routing.random_ltd.layer_token_lr_schedule", kObject, "",
              "Learning-rate schedule by consumed layer tokens.")
              .open()
              .no_effect(part, "null"),
      });
}

void register_weight_quantization(ConfigSchema& s) {
  // DeepSpeed builds WeightQuantConfig only when the section is present; zero.Init then uses
  // quantized_initialization, the hybrid engine post_init_quant.
  const std::string part = "read only with quantized_initialization or post_init_quant";
  s.add(Key("weight_quantization", kObject, "", "Quantized weights for ZeRO-3 init and generation.")
            .spec());
  add_section(
      s, "weight_quantization", Parse::kModel,
      {
          Key("enabled", kBool, "true", "Quantization switch of the section.")
              .no_effect(part, "true"),
          Key("num_bits", kInt, "8", "Bits per quantized weight.").no_effect(part, "8"),
          Key("q_type", kString, "\"symmetric\"", "Quantization scheme.")
              .choices({"symmetric", "asymmetric"})
              .no_effect(part, "\"symmetric\""),
          Key("q_groups", kInt, "1", "Quantization groups per weight.").no_effect(part, "1"),
          Key("quantized_initialization", kObject, "{}",
              "Quantize weights as zero.Init creates them.")
              .open()
              .unsupported("quantized weights change the results; not in dspp", "{}"),
          Key("post_init_quant", kObject, "{}", "Quantize weights after initialization.")
              .open()
              .unsupported("quantized weights change the results; not in dspp", "{}"),
      });
}

// Sections DeepSpeed 0.19 removed and now rejects. Those that change results stay errors; the
// ones that only changed speed or I/O become warnings (dspp's rule is more lenient there).
void register_removed(ConfigSchema& s) {
  const std::string removed = "removed from DeepSpeed 0.19, which rejects this key too";
  add_section(
      s, "", Parse::kDict,
      {
          Key("amp", kAny, "", "NVIDIA Apex AMP mixed precision.")
              .open()
              .unsupported(removed + "; use fp16 or bf16", ""),
          Key("compression_training", kAny, "", "The compression library (quantize, prune).")
              .open()
              .unsupported(removed, ""),
          Key("quantize_training", kAny, "", "Mixture-of-Quantization training.")
              .open()
              .unsupported(removed, ""),
          Key("eigenvalue", kAny, "", "Eigenvalue estimation for Mixture-of-Quantization.")
              .open()
              .unsupported(removed, ""),
          Key("sparse_attention", kAny, "", "Block-sparse attention kernels.")
              .open()
              .unsupported(removed, ""),
          Key("elasticity", kAny, "", "Elastic batch sizes that follow the world size.")
              .open()
              .unsupported(removed + "; set the batch triple directly", ""),
          Key("curriculum_learning", kAny, "", "The legacy top-level curriculum learning.")
              .open()
              .unsupported(removed + "; see data_efficiency.data_sampling.curriculum_learning", ""),
          Key("progressive_layer_drop", kAny, "", "Progressive layer dropping.")
              .open()
              .unsupported(removed, ""),
          Key("nebula", kAny, "", "The Nebula asynchronous checkpoint service.")
              .open()
              .no_effect(removed + "; dspp writes checkpoints itself", ""),
          Key("graph_harvesting", kBool, "", "Replay the training step with CUDA graphs.")
              .no_effect(removed + "; it only changed speed", "false"),
          Key("sparse_gradients", kBool, "", "Reduce embedding gradients in sparse form.")
              .no_effect(removed + "; it only changed the communication format", "false"),
      });
}

}  // namespace

void register_tooling_keys(ConfigSchema& s) {
  register_monitors(s);
  register_checkpoint(s);
  register_profiling(s);
  register_data_efficiency(s);
  register_weight_quantization(s);
  register_removed(s);
}

}  // namespace dspp::keys
