#!/usr/bin/env python3
"""Resolve the batch triple of real projects' DeepSpeed configs with DeepSpeed itself.

For each config in examples/configs/real/ and each world size, fill the "auto" values the way
the Hugging Face Trainer does (transformers/integrations/deepspeed.py: trainer_config_process and
trainer_config_finalize) from one set of Trainer arguments, then build DeepSpeed's own
DeepSpeedConfig with a mocked process group of that size, so that its
_configure_train_batch_size runs unchanged. The result (the triple, or DeepSpeed's error) goes to
tests/data/real_config_triples.json, which the ctest config_defaults_real_triples compares with
`ds-config check FILE --world-size N --auto KEY=VALUE ...` (no Python needed there).

Regenerate (needs `pip install deepspeed==0.19.8`, CPU torch is enough):
    python3 scripts/reference/batch_triples.py [OUT]   (OUT defaults to tests/data/real_config_triples.json)
Generated with DeepSpeed 0.19.8.
"""
import json
import os
import sys
from unittest import mock

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import hjson  # noqa: E402  (DeepSpeed's own config reader, installed with it)
import deepspeed  # noqa: E402
from deepspeed import comm as dist  # noqa: E402
from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The JSON goes to a file because DeepSpeed's logger writes to stdout.
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "real_config_triples.json")
WORLD_SIZES = [1, 2, 3, 4, 8]

# Trainer arguments per config: what a user of that project would typically pass.
# hidden_size is the model's (Llama-2-7B: 4096), used for the ZeRO bucket "auto" values.
RUNS = {
    "examples/configs/real/llama-factory-ds_z0_config.json":
    dict(per_device_train_batch_size=2, gradient_accumulation_steps=8, max_grad_norm=1.0, fp16=False,
         bf16=True),
    "examples/configs/real/deepspeedexamples-bing_bert-bsz4096_adam.json":
    dict(),  # no "auto" values: the file is used as written
    "examples/configs/real/deepspeedexamples-gpt2_baseline.json":
    dict(),
    "examples/configs/real/transformers-ds_config_zero2.json":
    dict(per_device_train_batch_size=8, gradient_accumulation_steps=1, max_grad_norm=1.0, fp16=True,
         bf16=False, learning_rate=5e-5, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
         weight_decay=0.0, warmup_steps=100),  # DeepSpeed 0.19.8's WarmupLR refuses 0
    "examples/configs/real/llama-factory-ds_z3_config.json":
    dict(per_device_train_batch_size=1, gradient_accumulation_steps=4, max_grad_norm=1.0, fp16=False,
         bf16=True, hidden_size=4096),
}


def hf_auto_values(args, world_size):
    """The values HF's HfTrainerDeepSpeedConfig puts where a config says "auto"."""
    a = {}
    if "per_device_train_batch_size" in args:
        micro, gas = args["per_device_train_batch_size"], args["gradient_accumulation_steps"]
        a["train_micro_batch_size_per_gpu"] = micro
        a["gradient_accumulation_steps"] = gas
        a["train_batch_size"] = world_size * micro * gas  # args.world_size * micro * gas
        a["gradient_clipping"] = args["max_grad_norm"]
        a["fp16.enabled"] = args["fp16"]
        a["bf16.enabled"] = args["bf16"]
    if "learning_rate" in args:
        a["optimizer.params.lr"] = args["learning_rate"]
        a["optimizer.params.betas"] = [args["adam_beta1"], args["adam_beta2"]]
        a["optimizer.params.eps"] = args["adam_epsilon"]
        a["optimizer.params.weight_decay"] = args["weight_decay"]
        a["scheduler.params.warmup_min_lr"] = 0
        a["scheduler.params.warmup_max_lr"] = args["learning_rate"]
        a["scheduler.params.warmup_num_steps"] = args["warmup_steps"]
    if "hidden_size" in args:
        h = args["hidden_size"]
        a["zero_optimization.reduce_bucket_size"] = h * h
        a["zero_optimization.stage3_prefetch_bucket_size"] = int(0.9 * h * h)
        a["zero_optimization.stage3_param_persistence_threshold"] = 10 * h
    return a


def fill(config, values, prefix=""):
    """Replaces each "auto" by the host's value; returns the paths it filled."""
    used = {}
    for key, val in config.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(val, dict):
            used.update(fill(val, values, path))
        elif val == "auto" and path in values:
            config[key] = values[path]
            used[path] = values[path]
    return used


def deepspeed_triple(config, world_size):
    with mock.patch.object(dist, "get_rank", return_value=0), \
         mock.patch.object(dist, "get_world_size", return_value=world_size):
        try:
            c = DeepSpeedConfig(config)
        except (AssertionError, ValueError) as e:
            return {"error": str(e).splitlines()[0]}
    assert c.world_size == world_size, (c.world_size, world_size)
    return {
        "train_batch_size": c.train_batch_size,
        "train_micro_batch_size_per_gpu": c.train_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
    }


rows = []
for path, args in RUNS.items():
    for ws in WORLD_SIZES:
        with open(os.path.join(ROOT, path)) as f:
            config = hjson.load(f)
        used = fill(config, hf_auto_values(args, ws))
        assert '"auto"' not in json.dumps(config), (path, "an 'auto' value the Trainer would fill is left")
        row = {"config": path, "world_size": ws, "auto": {k: json.dumps(v) for k, v in used.items()}}
        row["deepspeed"] = deepspeed_triple(config, ws)
        rows.append(row)

with open(OUT, "w") as out:
    json.dump({"deepspeed_version": deepspeed.__version__, "generated_by": "scripts/reference/batch_triples.py",
               "rows": rows}, out, indent=1)
    out.write("\n")
