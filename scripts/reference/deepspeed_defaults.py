#!/usr/bin/env python3
"""Dump every config default DeepSpeed itself reports to tests/data/deepspeed_defaults.json.

The dspp registry (core/config/deepspeed_keys*.cpp) must know each path written here with the
same default; tests/test_config_defaults.cpp checks that without needing Python.

Regenerate (needs `pip install deepspeed==0.19.8`, CPU torch is enough):
    python3 scripts/reference/deepspeed_defaults.py [OUT]   (OUT defaults to tests/data/deepspeed_defaults.json)
Generated with DeepSpeed 0.19.8.

Values are read from DeepSpeed's own objects, never typed here: the pydantic models' field defaults
(by their JSON alias), the attributes of DeepSpeedConfig built from a minimal config, and the
module constants its get_*_param readers fall back to.
"""
import dataclasses
import json
import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from deepspeed.runtime import config as ds_config  # noqa: E402
from deepspeed.runtime import constants as C  # noqa: E402
from deepspeed.runtime import precision_config  # noqa: E402
from deepspeed.runtime.zero import config as zero_config  # noqa: E402
from deepspeed.runtime.zero import offload_config  # noqa: E402
from deepspeed.runtime.zero import leaf_module_config  # noqa: E402
from deepspeed.runtime.zenflow import zenflow_config  # noqa: E402
from deepspeed.runtime.activation_checkpointing import config as act_config  # noqa: E402
from deepspeed.runtime.swap_tensor import constants as aio  # noqa: E402
from deepspeed.runtime.model_checkpointing import constants as ckpt  # noqa: E402
from deepspeed.runtime.data_pipeline import constants as de  # noqa: E402
from deepspeed.runtime.tensor_parallel import config as tp_config  # noqa: E402
from deepspeed.monitor import config as monitor_config  # noqa: E402
from deepspeed.comm import config as comm_config  # noqa: E402
from deepspeed.autotuning import constants as at  # noqa: E402
from deepspeed.compile import config as compile_config  # noqa: E402
from deepspeed.utils import config as timers_config  # noqa: E402
from deepspeed.inference import config as inference_config  # noqa: E402
from deepspeed.module_inject.auto_ep_presets import base as autoep  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The JSON goes to a file because DeepSpeed's logger writes to stdout.
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "deepspeed_defaults.json")
defaults = {}  # dotted path -> DeepSpeed's default
aliases = {}  # a pydantic field name DeepSpeed also accepts -> the alias users write
deprecated = {}  # a deprecated field -> the field it moves to ("" when it is only dropped)
skipped = {}  # fields a JSON file cannot set (Python objects), with the reason


def jsonable(v):
    """DeepSpeed's value as JSON; enums by value, Python-only objects refused."""
    if hasattr(v, "value") and not isinstance(v, (int, float, str, bool)):
        v = v.value
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return int(v)  # pp_int prints with commas; keep the number
    if isinstance(v, float):
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, BaseModel):
        return None  # a sub-model default: its own fields are dumped separately
    raise TypeError(type(v))


def put(path, value):
    assert path not in defaults, path
    defaults[path] = jsonable(value)


def model(prefix, cls, nested=()):
    """Every field of a pydantic model, by the name a JSON file uses (the alias if any)."""
    for name, field in cls.model_fields.items():
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        extra = field.json_schema_extra or {}
        if extra.get("deprecated"):
            new = extra.get("new_param", "") if extra.get("set_new_param", True) else ""
            deprecated[path] = f"{prefix}.{new}" if new else ""
            continue
        if field.alias and field.alias != name:
            aliases[f"{prefix}.{name}" if prefix else name] = path
        if path in nested or key in nested:
            continue
        value = field.get_default(call_default_factory=True)
        if field.annotation is object or (hasattr(value, "__module__") and "torch" in str(type(value))):
            skipped[path] = f"a Python object ({value!r}); JSON cannot set it"
            continue
        if name == "injection_policy_tuple":
            skipped[path] = "a Python tuple of module classes; JSON cannot set it"
            continue
        put(path, value)


# A minimal config parsed by DeepSpeed itself: the getters' fallbacks as DeepSpeed applies them.
cfg = ds_config.DeepSpeedConfig({"train_batch_size": 8})

# Top level (get_scalar_param readers in runtime/config.py).
put("train_batch_size", C.TRAIN_BATCH_SIZE_DEFAULT)
put("train_micro_batch_size_per_gpu", C.TRAIN_MICRO_BATCH_SIZE_PER_GPU_DEFAULT)
put("gradient_accumulation_steps", C.GRADIENT_ACCUMULATION_STEPS_DEFAULT)
put("managed_gradient_accumulation", cfg.managed_gradient_accumulation)
put("steps_per_print", cfg.steps_per_print)
put("dump_state", cfg.dump_state)
put("disable_python_gc", cfg.disable_python_gc)
put("disable_allgather", cfg.disable_allgather)
put("communication_data_type", C.COMMUNICATION_DATA_TYPE_DEFAULT)
put("seq_parallel_communication_data_type", C.SEQ_PARALLEL_COMMUNICATION_DATA_TYPE_DEFAULT)
put("prescale_gradients", cfg.prescale_gradients)
put("gradient_predivide_factor", cfg.gradient_predivide_factor)
put("gradient_allreduce_op", cfg.gradient_allreduce_op)
put("gradient_clipping", cfg.gradient_clipping)
put("optimizer.type", C.OPTIMIZER_TYPE_DEFAULT)
put("optimizer.legacy_fusion", cfg.optimizer_legacy_fusion)
put("scheduler.type", C.SCHEDULER_TYPE_DEFAULT)
put("zero_allow_untested_optimizer", cfg.zero_allow_untested_optimizer)
put("zero_force_ds_cpu_optimizer", cfg.zero_force_ds_cpu_optimizer)
put("wall_clock_breakdown", cfg.wall_clock_breakdown)
put("memory_breakdown", cfg.memory_breakdown)
put("use_data_before_expert_parallelism", cfg.use_data_before_expert_parallel_)
put("dataloader_drop_last", cfg.dataloader_drop_last)
put("log_level", cfg.log_level)
put("vocabulary_size", C.VOCABULARY_SIZE_DEFAULT)
put("datastates_ckpt", False)  # DeepSpeedDataStatesConfig: absent counts as False
assert cfg.datastates_config.enabled is False

# torch_autocast (readers in runtime/config.py).
put("torch_autocast.enabled", C.TORCH_AUTOCAST_ENABLED_DEFAULT)
put("torch_autocast.dtype", cfg.torch_autocast_dtype)
put("torch_autocast.lower_precision_safe_modules", cfg.torch_autocast_lower_precision_safe_modules)

# data_types.
put("data_types.grad_accum_dtype", cfg.grad_accum_dtype)
put("data_types.param_dtype", cfg.param_dtype)
put("data_types.buffer_dtype", cfg.buffer_dtype)
put("data_types.keep_in_fp32_modules", cfg.keep_in_fp32_modules)

# checkpoint (runtime/config.py and runtime/model_checkpointing).
put("checkpoint.tag_validation", ckpt.CHECKPOINT_TAG_VALIDATION_DEFAULT)
put("checkpoint.load_universal", cfg.load_universal_checkpoint)
put("checkpoint.use_node_local_storage", cfg.use_node_local_storage)
put("checkpoint.parallel_write.pipeline_stage", cfg.checkpoint_parallel_write_pipeline)
put("checkpoint.checkpoint_serialization", ckpt.CHECKPOINT_SERIALIZATION_DEFAULT)
put("checkpoint.writer", ckpt.CHECKPOINT_WRITER_DEFAULT)
put("checkpoint.writer.type", ckpt.CHECKPOINT_WRITER_TYPE_DEFAULT)
put("checkpoint.writer.io_buffer_size", ckpt.CHECKPOINT_IO_BUFFER_SIZE_DEFAULT)
put("checkpoint.writer.io_buffer_double", ckpt.CHECKPOINT_IO_BUFFER_DOUBLE_DEFAULT)
put("checkpoint.writer.show_statistics", ckpt.CHECKPOINT_IO_STATISTICS_DEFAULT)
put("checkpoint.writer.data_parallel", ckpt.CHECKPOINT_DATA_PARALLEL_DEFAULT)
put("checkpoint.writer.decoupled", ckpt.CHECKPOINT_WRITER_DECOUPLED_DEFAULT)
put("checkpoint.writer.io_multiplier", ckpt.CHECKPOINT_IO_MULTIPLIER_DEFAULT)

# pipeline: get_pipeline_config's dict, plus use_reentrant (PipelineEngine treats None as True).
for k, v in cfg.pipeline.items():
    put(f"pipeline.{k}", v)
put("pipeline.use_reentrant", None)

# Precision and ZeRO: pydantic models.
model("fp16", precision_config.DeepSpeedFP16Config)
model("bf16", precision_config.DeepSpeedBF16Config)
model("zero_optimization", zero_config.DeepSpeedZeroConfig,
      nested=("offload_param", "offload_optimizer", "zenflow", "leaf_module"))
put("zero_optimization.offload_param", None)
put("zero_optimization.offload_optimizer", None)
put("zero_optimization.zenflow", None)
model("zero_optimization.offload_param", offload_config.DeepSpeedZeroOffloadParamConfig)
model("zero_optimization.offload_optimizer", offload_config.DeepSpeedZeroOffloadOptimizerConfig)
model("zero_optimization.zenflow", zenflow_config.ZenFlowConfig)
model("zero_optimization.leaf_module", leaf_module_config.DeepSpeedZeroLeafModuleConfig)

# Monitors, comms logger, hybrid engine, compile, timers, tensor parallel.
model("tensorboard", monitor_config.TensorBoardConfig)
model("wandb", monitor_config.WandbConfig)
model("csv_monitor", monitor_config.CSVConfig)
model("comet", monitor_config.CometConfig)
model("comms_logger", comm_config.CommsLoggerConfig)
model("hybrid_engine", ds_config.HybridEngineConfig)
model("compile", compile_config.CompileConfig)
model("timers.throughput", timers_config.DeepSpeedThroughputTimerConfig)
model("tensor_parallel", tp_config.TPTrainingConfig, nested=("tp",))
model("tensor_parallel.tp", tp_config.TPConfig)

# weight_quantization: WeightQuantConfig, built only when the section is present.
model("weight_quantization", inference_config.WeightQuantConfig)

# Activation checkpointing, flops profiler, autotuning, aio: DeepSpeedConfigObject readers.
for k, v in act_config.ACT_CHKPT_DEFAULT.items():
    put(f"activation_checkpointing.{k}", v)
fp = cfg.flops_profiler_config
for k in ("enabled", "recompute_fwd_factor", "profile_step", "module_depth", "top_modules", "detailed",
          "output_file"):
    put(f"flops_profiler.{k}", getattr(fp, k))
for name in dir(at):
    if name.startswith("AUTOTUNING_") and name.endswith("_DEFAULT"):
        key = getattr(at, name[:-len("_DEFAULT")], None)
        if isinstance(key, str):
            put(f"autotuning.{key}", getattr(at, name))
put("autotuning.model_info", None)
for k, v in at.MODEL_INFO_KEY_DEFAULT_DICT.items():
    put(f"autotuning.model_info.{k}", v)
for k, v in cfg.aio_config.items():
    put(f"aio.{k}", v)
assert cfg.aio_config == {getattr(aio, n[:-8]): getattr(aio, n) for n in dir(aio)
                          if n.startswith("AIO_") and n.endswith("_DEFAULT") and n != "AIO_DEFAULT"}

# data_efficiency (runtime/data_pipeline): the readers' fallbacks.
put("data_efficiency.enabled", de.DATA_EFFICIENCY_ENABLED_DEFAULT)
put("data_efficiency.seed", de.DATA_EFFICIENCY_SEED_DEFAULT)
put("data_efficiency.data_sampling.enabled", de.DATA_SAMPLING_ENABLED_DEFAULT)
put("data_efficiency.data_sampling.num_epochs", de.DATA_SAMPLING_NUM_EPOCHS_DEFAULT)
put("data_efficiency.data_sampling.num_workers", de.DATA_SAMPLING_NUM_WORKERS_DEFAULT)
put("data_efficiency.data_sampling.pin_memory", de.DATA_SAMPLING_PIN_MEMORY_DEFAULT)
put("data_efficiency.data_sampling.curriculum_learning.enabled", de.CURRICULUM_LEARNING_ENABLED_DEFAULT)
put("data_efficiency.data_sampling.dynamic_batching.enabled", de.DYNAMIC_BATCHING_ENABLED_DEFAULT)
put("data_efficiency.data_sampling.dynamic_batching.lr_scaling_method",
    de.DYNAMIC_BATCHING_LR_SCALING_METHOD_DEFAULT)
put("data_efficiency.data_sampling.dynamic_batching.min_batch_size", de.DYNAMIC_BATCHING_MIN_BATCH_SIZE_DEFAULT)
put("data_efficiency.data_sampling.dynamic_batching.max_batch_size", de.DYNAMIC_BATCHING_MAX_BATCH_SIZE_DEFAULT)
put("data_efficiency.data_sampling.dynamic_batching.sequence_picking_order",
    de.DYNAMIC_BATCHING_SEQUENCE_PICKING_ORDER_DEFAULT)
put("data_efficiency.data_sampling.dynamic_batching.verbose", False)  # get_dynamic_batching's literal
put("data_efficiency.data_routing.enabled", de.DATA_ROUTING_ENABLED_DEFAULT)
put("data_efficiency.data_routing.random_ltd.enabled", de.RANDOM_LTD_ENABLED_DEFAULT)

# expert_parallel (AutoEP): a dataclass; _UNSET means "take it from the preset".
for f in dataclasses.fields(autoep.AutoEPConfig):
    if f.name.startswith("_"):
        continue
    v = f.default
    put(f"expert_parallel.{f.name}", None if v is autoep._UNSET else v)

# Top-level keys DeepSpeed 0.19 rejects outright (removed features) and ZeRO keys likewise.
removed = sorted(list(ds_config._REMOVED_TOP_LEVEL_CONFIG_KEYS) +
                 [f"zero_optimization.{k}" for k in ds_config._REMOVED_ZERO_CONFIG_KEYS])

with open(OUT, "w") as out:
    json.dump(
        {
            "deepspeed_version": deepspeed.__version__,
            "generated_by": "scripts/reference/deepspeed_defaults.py",
            "defaults": dict(sorted(defaults.items())),
            "aliases": dict(sorted(aliases.items())),
            "deprecated": dict(sorted(deprecated.items())),
            "removed": removed,
            "skipped": dict(sorted(skipped.items())),
        },
        out,
        indent=1,
    )
    out.write("\n")
