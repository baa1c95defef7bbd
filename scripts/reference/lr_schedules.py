#!/usr/bin/env python3
"""Reference values for dspp's LR scheduler plugins, computed by DeepSpeed itself.

Builds each DeepSpeed LR schedule the way DeepSpeed's engine does
(`getattr(deepspeed.runtime.lr_schedules, type)(optimizer, **params)`) over a dummy torch
optimizer, calls `step()` repeatedly and records what the optimizer's param groups hold after
n calls, n = 0 (right after construction) .. steps. That is what dspp's `Scheduler::lr_at(n)`
and `momentum_at(n)` must return. It also records the errors DeepSpeed raises for invalid
parameters, so the C++ test can check that dspp rejects the same configs.

Usage (needs `pip install deepspeed torch`):
    python3 scripts/reference/lr_schedules.py [-o tests/data/lr_schedules.json]

The output is committed; tests/test_schedulers.cpp reads it and needs no Python.
"""

import argparse
import json
import logging
import os
import sys

STEPS = 320

# (case name, DeepSpeed type, params, base lr of each param group)
CASES = [
    # WarmupLR: both warmup types, per-group lists, warmup_max_lr taken from the optimizer,
    # warmup_num_steps below DeepSpeed's floor of 2, and all defaults.
    ("warmuplr_log", "WarmupLR",
     {"warmup_min_lr": 0.0, "warmup_max_lr": 0.001, "warmup_num_steps": 100, "warmup_type": "log"},
     [0.01]),
    ("warmuplr_linear_groups", "WarmupLR",
     {"warmup_min_lr": [1e-5, 2e-5], "warmup_max_lr": [1e-3, 3e-3], "warmup_num_steps": 150,
      "warmup_type": "linear"}, [0.1, 0.2]),
    ("warmuplr_max_from_optimizer", "WarmupLR",
     {"warmup_min_lr": 1e-4, "warmup_num_steps": 1, "warmup_type": "linear"}, [0.05, 0.02]),
    ("warmuplr_defaults", "WarmupLR", {}, [0.003]),
    ("warmuplr_log_floor_of_two", "WarmupLR",
     {"warmup_min_lr": 0.001, "warmup_max_lr": 0.01, "warmup_num_steps": 1}, [0.1]),
    # WarmupDecayLR: decay to zero and past total_num_steps; total < warmup (DeepSpeed warns).
    ("warmupdecaylr_log", "WarmupDecayLR",
     {"total_num_steps": 300, "warmup_min_lr": 0.0, "warmup_max_lr": 0.001, "warmup_num_steps": 50,
      "warmup_type": "log"}, [0.01]),
    ("warmupdecaylr_linear_groups", "WarmupDecayLR",
     {"total_num_steps": 250, "warmup_min_lr": [1e-6, 5e-6], "warmup_max_lr": [2e-3, 4e-3],
      "warmup_num_steps": 100, "warmup_type": "linear"}, [0.1, 0.1]),
    ("warmupdecaylr_total_below_warmup", "WarmupDecayLR",
     {"total_num_steps": 80, "warmup_num_steps": 120, "warmup_type": "linear"}, [0.01]),
    # WarmupCosineLR: ratios of each group's own lr.
    ("warmupcosinelr_log", "WarmupCosineLR",
     {"total_num_steps": 300, "warmup_num_steps": 50, "warmup_type": "log"}, [0.1, 0.02]),
    ("warmupcosinelr_linear", "WarmupCosineLR",
     {"total_num_steps": 250, "warmup_min_ratio": 0.1, "warmup_num_steps": 30,
      "cos_min_ratio": 0.05, "warmup_type": "linear"}, [0.003]),
    ("warmupcosinelr_total_below_warmup", "WarmupCosineLR",
     {"total_num_steps": 40, "warmup_num_steps": 60, "warmup_min_ratio": 0.01,
      "warmup_type": "linear"}, [0.5]),
    # OneCycle: continuous and staircase, symmetric and asymmetric halves, post-cycle decay of lr
    # and momentum, per-group lists, cycle_momentum on and off.
    ("onecycle_continuous", "OneCycle",
     {"cycle_min_lr": 0.001, "cycle_max_lr": 0.01, "cycle_first_step_size": 100,
      "cycle_momentum": True}, [0.1, 0.1]),
    ("onecycle_staircase_decay", "OneCycle",
     {"cycle_min_lr": 1e-4, "cycle_max_lr": 1e-3, "decay_lr_rate": 0.5,
      "cycle_first_step_size": 80, "cycle_second_step_size": 120, "cycle_first_stair_count": 4,
      "cycle_second_stair_count": 6, "decay_step_size": 10, "cycle_momentum": True,
      "cycle_min_mom": [0.85, 0.8], "cycle_max_mom": [0.95, 0.9], "decay_mom_rate": 0.01},
     [0.1, 0.1]),
    ("onecycle_no_momentum_groups", "OneCycle",
     {"cycle_min_lr": [1e-4, 2e-4], "cycle_max_lr": [1e-2, 2e-2], "decay_lr_rate": 0.01,
      "cycle_first_step_size": 60, "cycle_second_step_size": 90, "cycle_first_stair_count": 3,
      "decay_step_size": 5, "cycle_momentum": False}, [0.1, 0.1]),
    ("onecycle_asymmetric_stairs", "OneCycle",
     {"cycle_min_lr": 0.002, "cycle_max_lr": 0.02, "cycle_first_step_size": 70,
      "cycle_second_step_size": 30, "cycle_first_stair_count": 7, "cycle_second_stair_count": 3,
      "decay_lr_rate": 0.2, "decay_step_size": 7, "decay_mom_rate": 0.0}, [0.1]),
    ("onecycle_no_second_half", "OneCycle",
     {"cycle_min_lr": 0.01, "cycle_max_lr": 0.1, "cycle_first_step_size": 50,
      "cycle_second_step_size": 0, "cycle_first_stair_count": 5, "decay_lr_rate": 0.1,
      "decay_step_size": 20, "decay_mom_rate": 0.05}, [0.1, 0.3]),
    # LRRangeTest: continuous, staircase with per-group lists, defaults.
    ("lrrangetest_continuous", "LRRangeTest",
     {"lr_range_test_min_lr": 1e-4, "lr_range_test_step_size": 10, "lr_range_test_step_rate": 0.5},
     [0.1]),
    ("lrrangetest_staircase_groups", "LRRangeTest",
     {"lr_range_test_min_lr": [1e-4, 5e-4], "lr_range_test_step_size": 25,
      "lr_range_test_step_rate": 2.0, "lr_range_test_staircase": True}, [0.1, 0.1]),
    ("lrrangetest_defaults", "LRRangeTest", {}, [0.1]),
]

# Configs DeepSpeed rejects; dspp must reject them too (the test checks the key is named).
ERRORS = [
    ("WarmupLR", {"warmup_num_steps": 0}, [0.1], "warmup_num_steps"),
    ("WarmupLR", {"warmup_min_lr": [0.0, 0.0, 0.0]}, [0.1, 0.1], "warmup_min_lr"),
    ("WarmupDecayLR", {"warmup_num_steps": 10}, [0.1], "total_num_steps"),
    ("WarmupDecayLR", {"total_num_steps": 100, "warmup_max_lr": [1e-3]}, [0.1, 0.1],
     "warmup_max_lr"),
    ("WarmupCosineLR", {"total_num_steps": 100, "warmup_num_steps": -5}, [0.1],
     "warmup_num_steps"),
    ("WarmupCosineLR", {"total_num_steps": 100, "warmup_max_lr": 0.01}, [0.1], "warmup_max_lr"),
    ("OneCycle", {"cycle_max_lr": 0.01}, [0.1], "cycle_min_lr"),
    ("OneCycle", {"cycle_min_lr": 0.001, "cycle_max_lr": 0.01, "cycle_first_step_size": 0}, [0.1],
     "cycle_first_step_size"),
    ("OneCycle", {"cycle_min_lr": 0.001, "cycle_max_lr": 0.01, "cycle_second_step_size": -1},
     [0.1], "cycle_second_step_size"),
    ("OneCycle", {"cycle_min_lr": 0.001, "cycle_max_lr": [0.01, 0.02, 0.03]}, [0.1, 0.1],
     "cycle_max_lr"),
    ("LRRangeTest", {"lr_range_test_step_size": 0}, [0.1], "lr_range_test_step_size"),
    ("LRRangeTest", {"lr_range_test_min_lr": [1e-3]}, [0.1, 0.1], "lr_range_test_min_lr"),
]


def make_optimizer(torch, base_lrs):
    # Adam, so that OneCycle's momentum cycling (which needs 'betas') is active.
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in base_lrs]
    return torch.optim.Adam(groups)


def run_case(torch, lr_schedules, name, typ, params, base_lrs):
    opt = make_optimizer(torch, base_lrs)
    sched = getattr(lr_schedules, typ)(opt, **params)
    lrs, moms, beta2 = [], [], set()
    cycle_momentum = bool(getattr(sched, "cycle_momentum", False))
    for n in range(STEPS + 1):
        if n > 0:
            sched.step()
        lrs.append([float(g["lr"]) for g in opt.param_groups])
        if cycle_momentum:
            moms.append([float(g["betas"][0]) for g in opt.param_groups])
            beta2.update(float(g["betas"][1]) for g in opt.param_groups)
    case = {"name": name, "type": typ, "params": params, "base_lrs": base_lrs, "lr": lrs}
    if cycle_momentum:
        case["momentum"] = moms
        case["beta2"] = sorted(beta2)
    return case


def run_error(torch, lr_schedules, typ, params, base_lrs, key):
    opt = make_optimizer(torch, base_lrs)
    try:
        getattr(lr_schedules, typ)(opt, **params)
    except (ValueError, TypeError) as e:
        return {"type": typ, "params": params, "base_lrs": base_lrs, "key": key,
                "deepspeed_error": "{}: {}".format(type(e).__name__, e)}
    raise SystemExit("DeepSpeed accepted {} {}; expected an error about {}".format(
        typ, params, key))


def constructor_defaults(lr_schedules, typ):
    # The keyword arguments of the schedule's constructor, which is what the config's params are
    # passed as; a required one (no default) is recorded as None, like a None default.
    import inspect
    out = {}
    for name, p in inspect.signature(getattr(lr_schedules, typ).__init__).parameters.items():
        if name in ("self", "optimizer", "last_batch_iteration"):
            continue
        out[name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def dump(doc, path):
    # One step per line keeps the file diffable; floats are written with repr(), which
    # round-trips every double exactly.
    out = ["{"]
    out.append('  "generator": {},'.format(json.dumps(doc["generator"])))
    out.append('  "definition": {},'.format(json.dumps(doc["definition"])))
    out.append('  "steps": {},'.format(doc["steps"]))
    out.append('  "defaults": {')
    items = sorted(doc["defaults"].items())
    out.append(",\n".join('    "{}": {}'.format(k, json.dumps(v)) for k, v in items))
    out.append("  },")
    out.append('  "cases": [')
    for i, c in enumerate(doc["cases"]):
        out.append("    {")
        for k in ("name", "type", "params", "base_lrs"):
            out.append('      "{}": {},'.format(k, json.dumps(c[k])))
        if "beta2" in c:
            out.append('      "beta2": {},'.format(json.dumps(c["beta2"])))
        series = [k for k in ("lr", "momentum") if k in c]
        for j, k in enumerate(series):
            out.append('      "{}": ['.format(k))
            rows = [json.dumps(r) for r in c[k]]
            out.append(",\n".join("        " + r for r in rows))
            out.append("      ]" + ("," if j + 1 < len(series) else ""))
        out.append("    }" + ("," if i + 1 < len(doc["cases"]) else ""))
    out.append("  ],")
    out.append('  "errors": [')
    out.append(",\n".join("    " + json.dumps(e) for e in doc["errors"]))
    out.append("  ]")
    out.append("}")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "..", "tests", "data", "lr_schedules.json")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=os.path.normpath(default_out))
    args = ap.parse_args()

    import torch
    import deepspeed
    from deepspeed.runtime import lr_schedules
    from deepspeed.utils import logger
    logger.setLevel(logging.ERROR)  # the total < warmup cases warn on purpose

    doc = {
        "generator": "scripts/reference/lr_schedules.py with deepspeed {} and torch {}".format(
            deepspeed.__version__, torch.__version__),
        "definition": ("lr[n] and momentum[n] (beta1) are what the optimizer's param groups hold "
                       "after n calls to scheduler.step(); n = 0 is right after construction. "
                       "One inner list entry per param group."),
        "steps": STEPS,
        "defaults": {t: constructor_defaults(lr_schedules, t)
                     for t in ("WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle",
                               "LRRangeTest")},
        "cases": [run_case(torch, lr_schedules, *c) for c in CASES],
        "errors": [run_error(torch, lr_schedules, *e) for e in ERRORS],
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    dump(doc, args.output)
    json.load(open(args.output))  # the hand-written layout must stay valid JSON
    print("wrote {} ({} cases, {} error configs)".format(args.output, len(doc["cases"]),
                                                         len(doc["errors"])))


if __name__ == "__main__":
    sys.exit(main())
