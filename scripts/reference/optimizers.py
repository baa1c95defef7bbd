#!/usr/bin/env python3
"""Reference values for the optimizer plugins (tests/test_optimizers.cpp reads the output).

Runs every case below for 120 steps on four small parameters of odd sizes in two parameter groups,
with gradients from a deterministic integer hash (exact in float32, so the C++ test builds the very
same gradients), and writes the parameters after steps 1, 10, 50 and 120 to
tests/data/optimizers.json.

What the numbers are:
  * The dumped reference is float64. For Adam/AdamW (bias_correction true), SGD and Adagrad it is
    torch.optim itself (torch.optim.Adam/AdamW/SGD/Adagrad on float64 tensors), which has the same
    math as what DeepSpeed builds for those config names (FusedAdam, torch.optim.SGD,
    torch.optim.Adagrad / DeepSpeedCPUAdagrad).
  * For Adam without bias correction, Lion and Lamb torch has no optimizer, and DeepSpeed's
    FusedAdam/FusedLion/FusedLamb are CUDA-only: the reference is the float64 reimplementation below
    of the kernel's formula (deepspeed/ops/csrc/{adam,lion,lamb}), written from the math, not copied.
  * Every reimplementation is also checked against torch.optim where torch has the same optimizer
    (agreement to ~1e-12 is asserted), and, when DeepSpeed's CPU ops build here (DeepSpeedCPUAdam,
    DeepSpeedCPULion, DeepSpeedCPUAdagrad; a C++ JIT build), they run in fp32 and their error
    against the float64 reference is recorded next to torch's own fp32 error. Pass --no-deepspeed to
    skip them.
  * torch.optim (or the reimplementation) also runs in fp32: its largest error against the float64
    reference is recorded per case ("torch_fp32_err"); the C++ test prints its own error next to it.

Error measure (used here and in the test): max over elements of |x - ref| / (|ref| + 0.1): relative,
with an absolute floor at a tenth of the parameters' scale (they start in [-1, 1)).

Usage: python3 scripts/reference/optimizers.py [--out tests/data/optimizers.json] [--no-deepspeed]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

SEED = 20240917
STEPS = 120
SNAPSHOTS = [1, 10, 50, 120]
M32 = 0xFFFFFFFF

# name, shape, group, offset in the flat buffer, gradient scale (a power of two: exact)
TENSORS = [
    ("layer.weight", [5, 13], 0, 0, 1.0),
    ("layer.scale", [1], 1, 65, 2.0),
    ("layer.bias", [37], 0, 66, 0.25),
    ("head.weight", [3, 7], 1, 106, 0.0625),
]
FLAT_NUMEL = 128  # 103..105 and 127 are padding: no segment covers them, they must not change
PAD_VALUE = 7.0


def mix(x):
    """lowbias32 integer hash on uint64 arrays holding 32-bit values."""
    x = x & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def key(t, i, c):
    return mix(np.uint64(SEED * 0x9E3779B1 & M32) + np.uint64(t * 0x85EBCA77 & M32) +
               (i * np.uint64(0xC2B2AE3D)) + np.uint64(c * 0x27D4EB2F & M32))


def initial_values(t, n):
    i = np.arange(n, dtype=np.uint64)
    k = (key(t, i, 0) >> 9).astype(np.int64) - (1 << 22)  # [-2^22, 2^22): 23 bits, exact
    return k.astype(np.float64) * 2.0**-22


def grad_values(t, n, step, scale):
    i = np.arange(n, dtype=np.uint64)
    bias = (key(t, i, 1) >> 10).astype(np.int64) - (1 << 21)
    noise = (key(t, i, step + 2) >> 9).astype(np.int64) - (1 << 22)
    k = bias + noise  # |k| < 3 * 2^21 < 2^24: exact in float32
    return k.astype(np.float64) * (2.0**-22 * scale)


def lr_factor(step):
    return 0.5 + 0.125 * (step % 5)


def beta1_at(step):
    return 0.85 + 0.01 * (step % 7)


GRAD_FORMULA = (
    "Hash mix(x) (uint32, wrapping): x ^= x>>16; x *= 0x7feb352d; x ^= x>>15; x *= 0x846ca68b; "
    "x ^= x>>16. key(t,i,c) = mix(seed*0x9E3779B1 + t*0x85EBCA77 + i*0xC2B2AE3D + c*0x27D4EB2F) "
    "(all mod 2^32; t = tensor index, i = element index within the tensor). "
    "initial p = ((key(t,i,0) >> 9) - 2^22) * 2^-22. "
    "grad at step s (1-based) = ((key(t,i,1) >> 10) - 2^21 + (key(t,i,s+2) >> 9) - 2^22) * "
    "2^-22 * grad_scale[t]. Padding: initial 7.0, grad 1.0. "
    "lr of group g at step s = base_lr[g] * (0.5 + 0.125 * (s % 5)). "
    "With cycle_beta1, beta1 (momentum for SGD) of every group at step s = 0.85 + 0.01 * (s % 7).")


# ---- float64/fp32 reimplementations of the kernels' formulas -----------------------------------
# Each takes lists of parameter tensors per group and the per-group hyperparameters, keeps its own
# state, and applies one step given per-group lr and beta1.

class AdamRef:
    """FusedAdam / torch.optim.Adam(W): decoupled or L2 weight decay, optional bias correction
    and AMSGrad (torch_adam only)."""

    def __init__(self, groups, decoupled):
        self.groups, self.decoupled = groups, decoupled
        self.state = [[None] * len(g["params"]) for g in groups]

    def step(self, t, lrs, beta1s):
        for gi, g in enumerate(self.groups):
            b1 = beta1s[gi] if beta1s else g["betas"][0]
            b2 = g["betas"][1]
            bc1 = 1 - b1**t if g["bias_correction"] else 1.0
            bc2 = 1 - b2**t if g["bias_correction"] else 1.0
            lr, wd, eps = lrs[gi], g["weight_decay"], g["eps"]
            for pi, p in enumerate(g["params"]):
                if self.state[gi][pi] is None:
                    self.state[gi][pi] = [torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)]
                m, v, vmax = self.state[gi][pi]
                gr = p.grad
                if not self.decoupled:
                    gr = gr + wd * p
                m.mul_(b1).add_((1 - b1) * gr)
                v.mul_(b2).add_((1 - b2) * gr * gr)
                vd = v
                if g.get("amsgrad", False):
                    torch.maximum(vmax, v, out=vmax)
                    vd = vmax
                denom = vd.sqrt() / math.sqrt(bc2) + eps
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                p.sub_((lr / bc1) * m / denom)


class LionRef:
    """FusedLion's formula with sign(0) = 0."""

    def __init__(self, groups):
        self.groups = groups
        self.state = [[None] * len(g["params"]) for g in groups]

    def step(self, t, lrs, beta1s):
        for gi, g in enumerate(self.groups):
            b1 = beta1s[gi] if beta1s else g["betas"][0]
            b2 = g["betas"][1]
            for pi, p in enumerate(g["params"]):
                if self.state[gi][pi] is None:
                    self.state[gi][pi] = torch.zeros_like(p)
                m = self.state[gi][pi]
                c = b1 * m + (1 - b1) * p.grad
                p.mul_(1 - lrs[gi] * g["weight_decay"]).sub_(lrs[gi] * torch.sign(c))
                m.mul_(b2).add_((1 - b2) * p.grad)


class LambRef:
    """FusedLamb's formula (deepspeed/ops/csrc/lamb): moments not bias-corrected, the trust ratio
    ||p|| / ||m / (sqrt(v) + eps) + wd p|| per parameter, clamped to [min_coeff, max_coeff], the
    step scaled by lr sqrt(1 - beta2^t) / (1 - beta1^t) when bias_correction."""

    def __init__(self, groups, eps_inside_sqrt):
        self.groups, self.inside = groups, eps_inside_sqrt
        self.state = [[None] * len(g["params"]) for g in groups]

    def step(self, t, lrs, beta1s):
        for gi, g in enumerate(self.groups):
            b1 = beta1s[gi] if beta1s else g["betas"][0]
            b2 = g["betas"][1]
            if g["bias_correction"]:
                step_size = lrs[gi] * math.sqrt(1 - b2**t) / (1 - b1**t)
            else:
                step_size = lrs[gi]
            for pi, p in enumerate(g["params"]):
                if self.state[gi][pi] is None:
                    self.state[gi][pi] = [torch.zeros_like(p), torch.zeros_like(p)]
                m, v = self.state[gi][pi]
                m.mul_(b1).add_((1 - b1) * p.grad)
                v.mul_(b2).add_((1 - b2) * p.grad * p.grad)
                denom = (v + g["eps"]).sqrt() if self.inside else v.sqrt() + g["eps"]
                u = m / denom + g["weight_decay"] * p
                w_norm = float(p.double().norm())
                u_norm = float(u.double().norm())
                coeff = 1.0
                if w_norm != 0 and u_norm != 0:
                    coeff = min(max(w_norm / u_norm, g["min_coeff"]), g["max_coeff"])
                p.sub_(step_size * coeff * u)


class SgdRef:
    """torch.optim.SGD's formula."""

    def __init__(self, groups):
        self.groups = groups
        self.buf = [[None] * len(g["params"]) for g in groups]

    def step(self, t, lrs, beta1s):
        for gi, g in enumerate(self.groups):
            mom = beta1s[gi] if beta1s else g["momentum"]
            for pi, p in enumerate(g["params"]):
                d = -p.grad if g["maximize"] else p.grad
                d = d + g["weight_decay"] * p
                if mom != 0:
                    b = self.buf[gi][pi]
                    if b is None:
                        b = d.clone()
                        self.buf[gi][pi] = b
                    else:
                        b.mul_(mom).add_((1 - g["dampening"]) * d)
                    d = d + mom * b if g["nesterov"] else b
                p.sub_(lrs[gi] * d)


class AdagradRef:
    """torch.optim.Adagrad's formula (DeepSpeedCPUAdagrad is the lr_decay = 0, initial 0 case)."""

    def __init__(self, groups, initial):
        self.groups, self.initial = groups, initial
        self.sum = [[None] * len(g["params"]) for g in groups]

    def step(self, t, lrs, beta1s):
        for gi, g in enumerate(self.groups):
            clr = lrs[gi] / (1 + (t - 1) * g["lr_decay"])
            for pi, p in enumerate(g["params"]):
                if self.sum[gi][pi] is None:
                    # torch fills it from the constructor argument, never from the group
                    self.sum[gi][pi] = torch.full_like(p, self.initial)
                s = self.sum[gi][pi]
                gr = -p.grad if g["maximize"] else p.grad
                gr = gr + g["weight_decay"] * p
                s.add_(gr * gr)
                p.sub_(clr * gr / (s.sqrt() + g["eps"]))


# ---- cases -------------------------------------------------------------------------------------
# type, optimizer.params, per-group setup (lr / weight_decay: null = not set at group level,
# options: the group's options_json), whether beta1/momentum is cycled by a scheduler.

CASES = [
    dict(name="adam_default", type="Adam", params={"lr": 0.002, "weight_decay": 0.1},
         groups=[dict(lr=0.01), dict(weight_decay=0.0)]),
    dict(name="adam_l2", type="Adam",
         params={"adam_w_mode": False, "lr": 0.003, "weight_decay": 0.05, "betas": [0.85, 0.995]},
         groups=[dict(lr=0.005, weight_decay=0.2), dict()]),
    dict(name="adamw_group_options", type="AdamW",
         params={"lr": 0.001, "eps": 1e-6, "weight_decay": 0.01},
         groups=[dict(options={"betas": [0.8, 0.99]}), dict(lr=0.004, weight_decay=0.0, options={"eps": 1e-4})]),
    dict(name="adam_no_bias_correction", type="Adam",
         params={"bias_correction": False, "lr": 0.001, "weight_decay": 0.02},
         groups=[dict(), dict(lr=0.0005)]),
    dict(name="adamw_torch_amsgrad", type="AdamW", params={"torch_adam": True, "amsgrad": True, "lr": 0.003},
         groups=[dict(), dict(lr=0.001, weight_decay=0.0)]),
    dict(name="adam_cycled_beta1", type="Adam", params={"lr": 0.002, "weight_decay": 0.01},
         groups=[dict(), dict(lr=0.004)], cycle_beta1=True),
    dict(name="sgd_momentum", type="SGD",
         params={"lr": 0.01, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.001},
         groups=[dict(lr=0.02), dict(weight_decay=0.0)]),
    dict(name="sgd_nesterov", type="SGD",
         params={"lr": 0.005, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
         groups=[dict(), dict(options={"momentum": 0.5})]),
    dict(name="sgd_plain_mixed", type="SGD", params={"lr": 0.01, "weight_decay": 0.01},
         groups=[dict(), dict(options={"momentum": 0.9, "maximize": True})]),
    dict(name="sgd_cycled_momentum", type="SGD", params={"lr": 0.01, "momentum": 0.9},
         groups=[dict(), dict(lr=0.003)], cycle_beta1=True),
    dict(name="lion", type="Lion", params={"lr": 0.001, "weight_decay": 0.1},
         groups=[dict(lr=0.0003), dict(weight_decay=0.0)]),
    dict(name="lion_betas", type="Lion", params={"lr": 0.0002, "betas": [0.95, 0.98]},
         groups=[dict(), dict(options={"betas": [0.9, 0.99]})]),
    dict(name="lamb", type="Lamb", params={"lr": 0.01, "weight_decay": 0.01},
         groups=[dict(), dict(lr=0.005, weight_decay=0.0)]),
    dict(name="lamb_eps_inside_no_bias_correction", type="Lamb",
         params={"lr": 0.005, "eps_inside_sqrt": True, "bias_correction": False, "max_coeff": 2.0,
                 "min_coeff": 0.5, "eps": 1e-6},
         groups=[dict(), dict(lr=0.002)]),
    dict(name="adagrad", type="Adagrad", params={"lr": 0.05, "weight_decay": 0.01},
         groups=[dict(lr=0.02), dict()]),
    dict(name="adagrad_torch_options", type="Adagrad",
         params={"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-8},
         groups=[dict(), dict(options={"maximize": True})]),
]

DEFAULTS = {  # DeepSpeed's defaults per config type (FusedAdam, torch.optim.SGD, FusedLion, ...)
    "adam": dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, bias_correction=True,
                 amsgrad=False),
    "sgd": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "lion": dict(lr=1e-3, betas=[0.9, 0.999], weight_decay=0.0),
    "lamb": dict(lr=1e-3, bias_correction=True, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
                 max_coeff=10.0, min_coeff=0.01),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False),
}


def family(case):
    t = case["type"].lower()
    return "adam" if t in ("adam", "adamw") else t


def resolve_groups(case):
    """The hyperparameters of each group, resolved as the plugin resolves them."""
    fam = family(case)
    base = dict(DEFAULTS[fam])
    p = case["params"]
    if fam == "adam" and p.get("torch_adam") and "weight_decay" not in p and case["type"] == "AdamW":
        base["weight_decay"] = 0.01  # torch.optim.AdamW's default
    for k, v in p.items():
        if k in base:
            base[k] = v
    out = []
    for g in case["groups"]:
        h = dict(base)
        h.update(g.get("options", {}))
        if g.get("lr") is not None:
            h["lr"] = g["lr"]
        if g.get("weight_decay") is not None:
            h["weight_decay"] = g["weight_decay"]
        out.append(h)
    return out


def make_params(dtype):
    """Per group, the list of parameter tensors (in TENSORS order within the group)."""
    per_group = [[], []]
    for t, (name, shape, group, off, scale) in enumerate(TENSORS):
        n = int(np.prod(shape))
        p = torch.tensor(initial_values(t, n), dtype=dtype).reshape(shape)
        per_group[group].append((t, p))
    return per_group


def set_grads(per_group, step, dtype):
    for plist in per_group:
        for t, p in plist:
            name, shape, group, off, scale = TENSORS[t]
            n = int(np.prod(shape))
            p.grad = torch.tensor(grad_values(t, n, step, scale), dtype=dtype).reshape(shape)


def flat_of(per_group):
    flat = np.full(FLAT_NUMEL, PAD_VALUE, dtype=np.float64)
    for plist in per_group:
        for t, p in plist:
            name, shape, group, off, scale = TENSORS[t]
            flat[off:off + p.numel()] = p.detach().double().reshape(-1).numpy()
    return flat


def build(case, impl, dtype):
    """impl: 'formula' (the reimplementation), 'torch' (torch.optim) or 'deepspeed' (CPU ops).
    Returns (per_group params, stepper(t, lrs, beta1s)) or None when impl does not apply."""
    fam = family(case)
    hs = resolve_groups(case)
    per_group = make_params(dtype)
    plists = [[p for _, p in plist] for plist in per_group]
    p = case["params"]
    decoupled = case["type"] == "AdamW" or p.get("adam_w_mode", True)

    if impl == "formula":
        groups = [dict(h, params=plists[g]) for g, h in enumerate(hs)]
        if fam == "adam":
            opt = AdamRef(groups, decoupled)
        elif fam == "sgd":
            opt = SgdRef(groups)
        elif fam == "lion":
            opt = LionRef(groups)
        elif fam == "lamb":
            opt = LambRef(groups, p.get("eps_inside_sqrt", False))
        else:
            opt = AdagradRef(groups, p.get("initial_accumulator_value", 0.0))
        return per_group, opt.step

    if impl == "torch":
        if fam == "adam":
            if not all(h["bias_correction"] for h in hs):
                return None
            cls = torch.optim.AdamW if decoupled else torch.optim.Adam
            groups = [dict(params=plists[g], lr=h["lr"], betas=tuple(h["betas"]), eps=h["eps"],
                           weight_decay=h["weight_decay"], amsgrad=h["amsgrad"]) for g, h in enumerate(hs)]
        elif fam == "sgd":
            cls = torch.optim.SGD
            groups = [dict(params=plists[g], **{k: h[k] for k in DEFAULTS["sgd"]}) for g, h in enumerate(hs)]
        elif fam == "adagrad":
            cls = torch.optim.Adagrad
            groups = [dict(params=plists[g], **{k: h[k] for k in DEFAULTS["adagrad"]}) for g, h in enumerate(hs)]
            opt = cls(groups, initial_accumulator_value=p.get("initial_accumulator_value", 0.0), foreach=False)
            return per_group, torch_stepper(opt, fam)
        else:
            return None
        opt = cls(groups, foreach=False)
        return per_group, torch_stepper(opt, fam)

    if impl == "deepspeed":
        try:
            if fam == "adam" and not any(h["amsgrad"] for h in hs):
                from deepspeed.ops.adam import DeepSpeedCPUAdam
                groups = [dict(params=plists[g], lr=h["lr"], betas=tuple(h["betas"]), eps=h["eps"],
                               weight_decay=h["weight_decay"], bias_correction=h["bias_correction"])
                          for g, h in enumerate(hs)]
                opt = DeepSpeedCPUAdam(groups, adamw_mode=decoupled)
            elif fam == "lion":
                from deepspeed.ops.lion import DeepSpeedCPULion
                groups = [dict(params=plists[g], lr=h["lr"], betas=tuple(h["betas"]),
                               weight_decay=h["weight_decay"]) for g, h in enumerate(hs)]
                opt = DeepSpeedCPULion(groups)
            elif fam == "adagrad" and p.get("initial_accumulator_value", 0) == 0 and all(
                    h["lr_decay"] == 0 and not h["maximize"] for h in hs):
                from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad
                groups = [dict(params=plists[g], lr=h["lr"], eps=h["eps"], weight_decay=h["weight_decay"])
                          for g, h in enumerate(hs)]
                opt = DeepSpeedCPUAdagrad(groups)
            else:
                return None
        except Exception as e:  # the JIT build of the op failed: skip the cross-check
            print(f"  DeepSpeed CPU op unavailable for {case['name']}: {e}", file=sys.stderr)
            return None
        return per_group, torch_stepper(opt, fam)
    raise ValueError(impl)


def torch_stepper(opt, fam):
    def step(t, lrs, beta1s):
        for g, group in enumerate(opt.param_groups):
            group["lr"] = lrs[g]
            if beta1s:
                if "betas" in group:
                    group["betas"] = (beta1s[g], group["betas"][1])
                else:
                    group["momentum"] = beta1s[g]
        opt.step()
    return step


def run(case, impl, dtype):
    built = build(case, impl, dtype)
    if built is None:
        return None
    per_group, stepper = built
    hs = resolve_groups(case)
    snaps = {}
    for t in range(1, STEPS + 1):
        set_grads(per_group, t, dtype)
        lrs = [h["lr"] * lr_factor(t) for h in hs]
        beta1s = [beta1_at(t)] * len(hs) if case.get("cycle_beta1") else None
        with torch.no_grad():
            stepper(t, lrs, beta1s)
        if t in SNAPSHOTS:
            snaps[t] = flat_of(per_group)
    return snaps


def err(a, ref):
    return float(np.max(np.abs(a - ref) / (np.abs(ref) + 0.1)))


def max_err(snaps, ref):
    return max(err(snaps[t], ref[t]) for t in SNAPSHOTS)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "data", "optimizers.json"))
    ap.add_argument("--no-deepspeed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    out_cases = []
    for case in CASES:
        formula64 = run(case, "formula", torch.float64)
        torch64 = run(case, "torch", torch.float64)
        if torch64 is not None:
            agree = max_err(formula64, torch64)
            assert agree < 1e-11, f"{case['name']}: formula vs torch.optim disagree ({agree})"
        ref = torch64 if torch64 is not None else formula64
        fp32 = run(case, "torch", torch.float32) or run(case, "formula", torch.float32)
        fp32_err = max_err(fp32, ref)
        entry = dict(name=case["name"], type=case["type"], params=case["params"],
                     groups=[dict(lr=g.get("lr"), weight_decay=g.get("weight_decay"),
                                  options=g.get("options")) for g in case["groups"]],
                     base_lrs=[h["lr"] for h in resolve_groups(case)],
                     cycle_beta1=bool(case.get("cycle_beta1", False)),
                     reference="torch.optim float64" if torch64 is not None else "formula float64",
                     torch_fp32_err=fp32_err)
        line = f"{case['name']:40s} ref={entry['reference']:20s} fp32 err {fp32_err:.2e}"
        if not args.no_deepspeed:
            ds = run(case, "deepspeed", torch.float32)
            if ds is not None:
                entry["deepspeed_cpu_fp32_err"] = max_err(ds, ref)
                line += f"  DeepSpeed CPU op err {entry['deepspeed_cpu_fp32_err']:.2e}"
        print(line)
        entry["snapshots"] = {str(t): [float(x) for x in ref[t]] for t in SNAPSHOTS}
        out_cases.append(entry)

    init = flat_of(make_params(torch.float64))
    doc = dict(
        generator="scripts/reference/optimizers.py",
        torch_version=torch.__version__,
        seed=SEED, steps=STEPS, snapshots=SNAPSHOTS, flat_numel=FLAT_NUMEL, pad_value=PAD_VALUE,
        grad_formula=GRAD_FORMULA,
        error_measure="max |x - ref| / (|ref| + 0.1)",
        tensors=[dict(name=n, shape=s, group=g, offset=o, grad_scale=sc) for n, s, g, o, sc in TENSORS],
        initial=[float(x) for x in init],
        cases=out_cases)
    try:
        import deepspeed
        doc["deepspeed_version"] = deepspeed.__version__
    except Exception:
        pass
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
