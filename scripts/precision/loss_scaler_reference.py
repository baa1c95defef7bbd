#!/usr/bin/env python3
"""Print DeepSpeed's fp16 loss-scale sequences as the C++ fixture tests/fixtures/loss_scaler_reference.inc.

    python3 scripts/precision/loss_scaler_reference.py > tests/fixtures/loss_scaler_reference.inc

Every number comes from DeepSpeed's own code, run on scripted overflow sequences:
  - DynamicLossScaler.update_scale (deepspeed/runtime/fp16/loss_scaler.py), DeepSpeed's ZeRO path;
  - FP16_Optimizer._update_scale (deepspeed/runtime/fp16/fused_optimizer.py), its non-ZeRO fp16
    path, which dspp's LossScaler follows with Fp16Path::kFp16Optimizer.

Where `import deepspeed` works (it needs torch), those are imported. Otherwise (a machine without
torch) the DeepSpeed 0.19.8 source distribution is fetched with `pip download` and its two files
are run with stand-ins for the imports update_scale does not use (torch dtypes, logging, the
rank): the scaling logic executed is still DeepSpeed's, unmodified. `--deepspeed-src DIR` names an
unpacked DeepSpeed source tree instead.
"""
import argparse
import ast
import contextlib
import importlib.util
import logging
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import types

os.environ.setdefault("DS_ACCELERATOR", "cpu")

DS_VERSION = "0.19.8"


def _stub_imports():
    """Stand-ins for what loss_scaler.py imports besides its own logic."""
    torch = types.ModuleType("torch")
    torch.half = torch.float16 = "torch.float16"
    torch.bfloat16 = "torch.bfloat16"
    torch.float32 = "torch.float32"
    ds = types.ModuleType("deepspeed")
    ds.__path__ = []
    comm = types.ModuleType("deepspeed.comm")
    comm.get_rank = lambda: 0
    utils = types.ModuleType("deepspeed.utils")
    utils.logger = logging.getLogger("deepspeed-stub")
    utils.log_dist = lambda *a, **k: None
    runtime = types.ModuleType("deepspeed.runtime")
    runtime.__path__ = []
    config_utils = types.ModuleType("deepspeed.runtime.config_utils")
    config_utils.DeepSpeedConfigObject = object
    rt_utils = types.ModuleType("deepspeed.runtime.utils")
    rt_utils.has_inf_or_nan = lambda x: False
    ds.comm = comm
    for m in (torch, ds, comm, utils, runtime, config_utils, rt_utils):
        sys.modules[m.__name__] = m


def _fetch_source():
    tmp = tempfile.mkdtemp(prefix="dspp-ds-src-")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", tmp, f"deepspeed=={DS_VERSION}"],
                   check=True,
                   stdout=sys.stderr)
    sdist = os.path.join(tmp, f"deepspeed-{DS_VERSION}.tar.gz")
    with tarfile.open(sdist) as t:
        t.extractall(tmp, filter="data")
    return os.path.join(tmp, f"deepspeed-{DS_VERSION}")


def load_deepspeed(src):
    """Returns (DynamicLossScaler, LossScaleConfig, FP16_Optimizer._update_scale, version, how)."""
    if src is None:
        try:
            import deepspeed
            from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaleConfig
            from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
            import torch
            # update_scale logs on rank 0 only, so it asks for the rank: a one-process gloo group.
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29517")
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("LOCAL_RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            deepspeed.init_distributed(dist_backend="gloo", verbose=False)
            return (DynamicLossScaler, LossScaleConfig, FP16_Optimizer._update_scale, torch.float16,
                    deepspeed.__version__, "import deepspeed")
        except ImportError:
            src = _fetch_source()
    _stub_imports()
    path = os.path.join(src, "deepspeed", "runtime", "fp16", "loss_scaler.py")
    spec = importlib.util.spec_from_file_location("ds_loss_scaler", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # FP16_Optimizer._update_scale alone: its module imports half of DeepSpeed, the method uses only
    # self.loss_scale_config, self.verbose and logger.
    fused = os.path.join(src, "deepspeed", "runtime", "fp16", "fused_optimizer.py")
    text = open(fused).read()
    tree = ast.parse(text)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FP16_Optimizer")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "_update_scale")
    ns = {"logger": logging.getLogger("deepspeed-stub")}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), fused, "exec"), ns)
    version = open(os.path.join(src, "version.txt")).read().strip()
    return (mod.DynamicLossScaler, mod.LossScaleConfig, ns["_update_scale"], sys.modules["torch"].float16,
            version, f"source distribution {src} with stubbed imports")


def pattern(steps, overflow_at):
    return [i in overflow_at for i in range(steps)]


def random_pattern(steps, p, seed):
    rng = random.Random(seed)
    return [rng.random() < p for _ in range(steps)]


# name, path, args (init_scale, scale_window, min_scale, delayed_shift, consecutive_hysteresis,
# raise_error_at_min_scale), overflow per step.
CASES = [
    ("window 4, hysteresis 2", "zero", (2.0**16, 4, 1, 2, False, True),
     pattern(40, {3, 9, 10, 11, 12, 20, 22, 24, 30, 31, 32, 33, 34})),
    ("window 4, hysteresis 2, consecutive", "zero", (2.0**16, 4, 1, 2, True, True),
     pattern(40, {3, 9, 10, 11, 12, 20, 22, 24, 30, 31, 32, 33, 34})),
    ("window 3, hysteresis 3, random", "zero", (2.0**10, 3, 1, 3, False, True), random_pattern(60, 0.3, 7)),
    ("window 3, hysteresis 3, consecutive, random", "zero", (2.0**10, 3, 1, 3, True, True),
     random_pattern(60, 0.3, 7)),
    ("hysteresis 1, floor 4 held without error", "zero", (2.0**5, 2, 4, 1, False, False),
     pattern(40, set(range(0, 8)) | {12, 13, 14, 15, 16, 17, 25})),
    ("floor reached: error at the next exhausted overflow", "zero", (2.0**3, 5, 1, 2, False, True),
     pattern(40, set(range(2, 40)))),
    ("window 1", "zero", (2.0**8, 1, 1, 2, False, True), random_pattern(40, 0.4, 11)),
    ("initial_scale_power -2 (scale 0.25), floor 0.25", "zero", (0.25, 4, 0.25, 1, False, False),
     random_pattern(40, 0.3, 3)),
    ("fp16 optimizer (no ZeRO), window 4", "fp16_optimizer", (2.0**16, 4, 1, 2, False, True),
     pattern(40, {3, 9, 10, 11, 12, 20, 22, 24, 30, 31, 32, 33, 34})),
    ("fp16 optimizer (no ZeRO), floor 2", "fp16_optimizer", (2.0**4, 3, 2, 2, True, True),
     pattern(40, set(range(5, 15)) | {20, 21, 30})),
]


def run_dynamic(cls, dtype, args, overflows):
    init, window, floor, shift, consecutive, raise_at_min = args
    s = cls(init_scale=init,
            scale_window=window,
            min_scale=floor,
            delayed_shift=shift,
            consecutive_hysteresis=consecutive,
            raise_error_at_min_scale=raise_at_min,
            dtype=dtype)
    rows, throws_at = [], -1
    for i, o in enumerate(overflows):
        try:
            s.update_scale(o)
        except Exception as e:  # DeepSpeed raises a bare Exception at the floor
            if "minimum" not in str(e):
                raise
            throws_at = i
            break
        rows.append((s.cur_scale, s.cur_hysteresis, s.last_overflow_iter, s.cur_iter))
    return rows, throws_at


def run_fp16_optimizer(config_cls, update_scale, dtype, args, overflows):
    init, window, floor, shift, consecutive, _ = args
    dyn_args = {
        "init_scale": init,
        "scale_window": window,
        "min_scale": floor,
        "delayed_shift": shift,
        "consecutive_hysteresis": consecutive
    }
    cfg = config_cls(dtype, True, 1.0, dyn_args, initial_dynamic_scale=init)
    opt = types.SimpleNamespace(loss_scale_config=cfg, verbose=False)
    rows = []
    for o in overflows:
        update_scale(opt, o)
        # No hysteresis on this path: dspp's equivalent keeps delayed_shift 1 there.
        rows.append((cfg.cur_scale, 1, cfg.last_overflow_iter, cfg.cur_iter))
    return rows, -1


def cpp_double(x):
    return repr(float(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deepspeed-src", help="an unpacked DeepSpeed source tree")
    a = ap.parse_args()
    # DeepSpeed's import may print (op builds): keep stdout for the fixture alone.
    with contextlib.redirect_stdout(sys.stderr):
        dyn, config_cls, fp16_update, dtype, version, how = load_deepspeed(a.deepspeed_src)
    out = [
        "// Generated by scripts/precision/loss_scaler_reference.py; do not edit:",
        "//   python3 scripts/precision/loss_scaler_reference.py > tests/fixtures/loss_scaler_reference.inc",
        f"// DeepSpeed {version}'s DynamicLossScaler.update_scale and FP16_Optimizer._update_scale",
        f"// ({'the installed package' if how == 'import deepspeed' else 'source distribution, stubbed imports'}).",
        "// One LossScalerRef per case: path, init_scale, scale_window, min_scale, delayed_shift,",
        "// consecutive_hysteresis, raise_error_at_min_scale, overflows ('1' = overflow at that step),",
        "// the step whose update_scale raises (-1: none), then after each step up to it:",
        "// {cur_scale, cur_hysteresis, last_overflow_iter, cur_iter}.",
    ]
    for name, path, args, overflows in CASES:
        if path == "zero":
            rows, throws_at = run_dynamic(dyn, dtype, args, overflows)
        else:
            rows, throws_at = run_fp16_optimizer(config_cls, fp16_update, dtype, args, overflows)
        init, window, floor, shift, consecutive, raise_at_min = args
        flags = "".join("1" if o else "0" for o in overflows)
        out.append(f'{{"{name}", "{path}", {cpp_double(init)}, {window}, {cpp_double(floor)}, {shift}, '
                   f'{str(consecutive).lower()}, {str(raise_at_min).lower()},')
        out.append(f' "{flags}", {throws_at},')
        out.append(" {")
        for scale, hyst, last, it in rows:
            out.append(f"  {{{cpp_double(scale)}, {hyst}, {last}, {it}}},")
        out.append(" }},")
    print("\n".join(out))


if __name__ == "__main__":
    main()
