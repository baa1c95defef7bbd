#!/usr/bin/env python3
"""Reference values for optimizer/muon and flagger/muon (tests/test_muon.cpp reads the output).

Optimizer part. DeepSpeed's Muon (runtime/zero/muon: MuonWithAuxAdam, built by the engine's
MUON_OPTIMIZER branch) runs for 20 steps on the parameters below, some flagged use_muon (tall,
wide and square matrices, a 3-D batch of matrices and a 4-D conv filter) and some not (an
unflagged matrix and 1-D vectors, which get the auxiliary AdamW). The gradients come from the same
integer hash as scripts/reference/optimizers.py (exact in float32, so the C++ test feeds the
plugin the very same gradients). The parameters after steps 1, 5 and 20 go to tests/data/muon.json.

What the numbers are:
  * The dumped reference is `MuonRef` below, in float64: the math written out from its
    description (momentum, Nesterov blend, Newton-Schulz "standard" and "gram", aspect-ratio
    scale, decoupled weight decay; Adam with bias correction), not DeepSpeed's code.
  * It is checked against DeepSpeed's own optimizer, deepspeed.runtime.zero.muon.muon_optimizer.
    MuonWithAuxAdam, with param groups built by DeepSpeed's own DeepSpeedEngine._muon_param_groups
    (so the precedence of lr / muon_lr / adam_lr / group overrides is DeepSpeed's), stepping
    float64 parameters, with torch.compile off and DeepSpeed's Newton-Schulz compute dtype
    (ns_compute_dtype: bf16 or fp16 on accelerators) switched to float64: every case must agree
    to 1e-10 over all 20 steps ("deepspeed_f64_diff").
  * DeepSpeed as it really runs here (fp32 parameters, its own NS dtype on this CPU: bf16 for
    "standard", fp32 or fp16 for "gram") is recorded too ("deepspeed_native_err"), and so is the
    reference itself in fp32 ("ref_fp32_err"): the error an fp32 implementation of this math
    reaches against float64, which the C++ test's tolerance is set from.

Flagger part. DeepSpeed's own set_optimizer_flags (deepspeed/__init__.py) runs on a torch module
with the parameter names and shapes of dspp's tiny GPT (GPT-2 / Hugging Face names) plus extra
names that exercise the rule; its use_muon decisions go to the "flagger" table, with the same rule
for a custom exclude list next to them (DeepSpeed has no option for other patterns; the rule
`ndim >= 2 and no pattern in name.lower()` is checked against DeepSpeed's decisions first).

Error measure: max over elements of |x - ref| / (|ref| + 0.1), as in optimizers.py.

Usage: python3 scripts/reference/muon.py [--out tests/data/muon.json] [--no-deepspeed]
"""

import argparse
import json
import math
import os
import types

import numpy as np
import torch

SEED = 20250611
STEPS = 20
SNAPSHOTS = [1, 5, 20]
M32 = 0xFFFFFFFF

# name, shape, use_muon, offset in the flat buffer, gradient scale (a power of two: exact)
TENSORS = [
    ("h.0.mlp.c_fc.weight", [16, 8], True, 0, 1.0),       # tall: transposed for NS
    ("h.0.mlp.c_proj.weight", [8, 16], True, 128, 0.5),   # wide
    ("h.0.attn.c_proj.weight", [12, 12], True, 256, 2.0**-16),  # square; tiny: eps matters
    ("experts.w1", [3, 9, 5], True, 400, 1.0),            # 3-D: a batch of three 9x5 matrices
    ("conv.weight", [6, 2, 3, 2], True, 537, 0.25),       # 4-D: viewed as 6x12, scale from 3x2
    ("wte.weight", [10, 6], False, 610, 1.0),             # a matrix left to AdamW
    ("h.0.ln_1.bias", [13], False, 670, 2.0**-20),        # tiny: Adam's eps matters
    ("h.0.ln_1.weight", [7], False, 683, 4.0),
]
FLAT_NUMEL = 691  # 535..536, 609 and 690 are padding: they must not change
PAD_VALUE = 7.0


def numel(shape):
    return int(np.prod(shape)) if shape else 1


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
    k = (key(t, i, 0) >> 9).astype(np.int64) - (1 << 22)
    return k.astype(np.float64) * 2.0**-22


def grad_values(t, n, step, scale):
    i = np.arange(n, dtype=np.uint64)
    bias = (key(t, i, 1) >> 10).astype(np.int64) - (1 << 21)
    noise = (key(t, i, step + 2) >> 9).astype(np.int64) - (1 << 22)
    return (bias + noise).astype(np.float64) * (2.0**-22 * scale)


def lr_factor(step):
    return 0.5 + 0.125 * (step % 5)


GRAD_FORMULA = (
    "As scripts/reference/optimizers.py, with this file's seed: mix(x) (uint32, wrapping): "
    "x ^= x>>16; x *= 0x7feb352d; x ^= x>>15; x *= 0x846ca68b; x ^= x>>16. "
    "key(t,i,c) = mix(seed*0x9E3779B1 + t*0x85EBCA77 + i*0xC2B2AE3D + c*0x27D4EB2F). "
    "initial p = ((key(t,i,0) >> 9) - 2^22) * 2^-22. grad at step s = ((key(t,i,1) >> 10) - 2^21 "
    "+ (key(t,i,s+2) >> 9) - 2^22) * 2^-22 * grad_scale[t]. Padding: initial 7.0, grad 1.0. "
    "With a schedule, lrs[g] at step s = base_lrs[g] * (0.5 + 0.125 * (s % 5)).")

# ---- the cases -----------------------------------------------------------------------------------
# groups: what the engine hands the plugin (ParamGroupSetup): lr / weight_decay (None = not set)
# and the group's own option overrides. tensor_groups: the group of each tensor. schedule: lrs are
# passed every step (base_lrs[g] * lr_factor(s)); without it the plugin steps with its resolved lrs.
MIXED = [0] * len(TENSORS)
SPLIT = [0 if t[2] else 1 for t in TENSORS]
CASES = [
    dict(name="gram, DeepSpeed defaults", params={},
         groups=[dict()], tensor_groups=MIXED),
    dict(name="standard, muon_lr, weight decay, group overrides",
         params={"ns_method": "standard", "lr": 0.01, "muon_lr": 0.03, "weight_decay": 0.1,
                 "momentum": 0.9, "betas": [0.8, 0.99], "eps": 1e-8},
         groups=[dict(), dict(weight_decay=0.0, options={"momentum": 0.85, "ns_method": "gram",
                                                         "eps": 1e-6, "betas": [0.9, 0.98]})],
         tensor_groups=[0, 1, 0, 1, 0, 1, 0, 1]),
    dict(name="gram, L2 Adam, split groups, scheduled lr",
         params={"adam_w_mode": False, "adam_lr": 2e-3, "muon_lr": 0.05, "weight_decay": 0.05},
         groups=[dict(), dict(lr=4e-3)], tensor_groups=SPLIT, schedule=True),
    dict(name="standard, mixed group, scheduled lr",
         params={"ns_method": "standard", "lr": 0.015, "adam_lr": 1e-3, "weight_decay": 0.01},
         groups=[dict()], tensor_groups=MIXED, schedule=True),
]

MUON_DEFAULTS = dict(lr=0.02, momentum=0.95, weight_decay=0.0, ns_method="gram")
ADAM_DEFAULTS = dict(lr=3e-4, betas=[0.9, 0.95], eps=1e-10, weight_decay=0.0)
MUON_KEYS = ("lr", "momentum", "weight_decay", "ns_method")
ADAM_KEYS = ("lr", "betas", "eps", "weight_decay")


def resolve(params, group):
    """(muon settings, adam settings) of one group: the default, then the config's shared value,
    then muon_lr / adam_lr, then the group's own values."""
    overrides = dict(group.get("options") or {})
    for k in ("lr", "weight_decay"):
        if group.get(k) is not None:
            overrides[k] = group[k]
    out = []
    for defaults, keys, lr_key in ((MUON_DEFAULTS, MUON_KEYS, "muon_lr"),
                                   (ADAM_DEFAULTS, ADAM_KEYS, "adam_lr")):
        s = dict(defaults)
        s.update({k: params[k] for k in keys if k in params})
        if lr_key in params:
            s["lr"] = params[lr_key]
        s.update({k: v for k, v in overrides.items() if k in keys})
        out.append(s)
    return out


def base_lrs(case):
    """The lr the test scales by the schedule for each group: the group's own half's lr, or the
    Muon half's when the group holds both (the plugin then scales the Adam half alike)."""
    out = []
    for g, group in enumerate(case["groups"]):
        muon, adam = resolve(case["params"], group)
        has_muon = any(t[2] for t, tg in zip(TENSORS, case["tensor_groups"]) if tg == g)
        out.append(muon["lr"] if has_muon else adam["lr"])
    return out


def step_lrs(case, step):
    """(muon lr, adam lr) of each group at `step`."""
    out = []
    bases = base_lrs(case)
    for g, group in enumerate(case["groups"]):
        muon, adam = resolve(case["params"], group)
        if not case.get("schedule"):
            out.append((muon["lr"], adam["lr"]))
            continue
        f = lr_factor(step)
        has_muon = any(t[2] for t, tg in zip(TENSORS, case["tensor_groups"]) if tg == g)
        if has_muon:
            # The Adam half keeps its ratio to the Muon half (equal to base * f when split).
            out.append((bases[g] * f, adam["lr"] * (bases[g] * f) / muon["lr"]))
        else:
            out.append((muon["lr"], bases[g] * f))
    return out


# ---- the reference math ------------------------------------------------------------------------

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7


def ns_standard(X):
    a, b, c = NS_COEFFS
    for _ in range(NS_STEPS):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X


def ns_gram(X):
    """The same iteration on the Gram matrix R = X X^T (n x n, n < m): X_k = Q_k X_0 with
    Q_{k+1} = (a I + Z_k) Q_k, Z_k = b R_k + c R_k^2, R_{k+1} = (a I + Z_k)^2 R_k. X is rebuilt
    from Q and the Gram matrix recomputed once, before the third iteration."""
    a, b, c = NS_COEFFS
    n = X.shape[-2]
    eye = torch.eye(n, dtype=X.dtype)
    R = X @ X.mT
    Q = None
    for i in range(NS_STEPS):
        if i == 2:
            X = Q @ X
            R = X @ X.mT
            Q = None
        Z = b * R + c * R @ R
        Q = Z + a * eye if Q is None else a * Q + Z @ Q
        if i < NS_STEPS - 1 and i + 1 != 2:
            RZ = a * R + Z @ R
            R = a * RZ + Z @ RZ
    return Q @ X


def orthogonalize(U, method):
    """U: (..., r, c). Works on the wide orientation (transposing tall matrices), normalised by
    the Frobenius norm of each matrix plus eps."""
    tall = U.shape[-2] > U.shape[-1]
    X = U.mT if tall else U
    X = X / (torch.linalg.matrix_norm(X, ord="fro", keepdim=True) + NS_EPS)
    square = X.shape[-2] == X.shape[-1]
    X = ns_gram(X) if method == "gram" and not square else ns_standard(X)
    return X.mT if tall else X


def muon_step(p, g, mom, lr, s):
    beta = s["momentum"]
    mom.copy_(mom + (1 - beta) * (g - mom))
    u = g + beta * (mom - g)  # Nesterov: the gradient blended towards the new momentum
    shape = p.shape
    if len(shape) == 4:  # conv filter: one matrix of d0 rows
        u = u.reshape(shape[0], -1)
    o = orthogonalize(u, s["ns_method"])
    rows, cols = shape[-2], shape[-1]  # of the parameter's own last two dims, as DeepSpeed does
    scale = math.sqrt(rows / cols) if rows > cols else 1.0
    p.mul_(1 - lr * s["weight_decay"])
    p.sub_(lr * (o * scale).reshape(shape))


def adam_step(p, g, m, v, t, lr, s, decoupled):
    b1, b2 = s["betas"]
    wd = s["weight_decay"]
    if not decoupled:
        g = g + wd * p
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + s["eps"])
    if decoupled:
        p.mul_(1 - lr * wd)
    p.sub_(lr * u)


def make_params(dtype):
    return [torch.tensor(initial_values(t, numel(shape)).reshape(shape), dtype=dtype)
            for t, (_, shape, _, _, _) in enumerate(TENSORS)]


def grads_at(step, dtype):
    return [torch.tensor(grad_values(t, numel(shape), step, sc).reshape(shape), dtype=dtype)
            for t, (_, shape, _, _, sc) in enumerate(TENSORS)]


def flat_of(params):
    flat = np.full(FLAT_NUMEL, PAD_VALUE)
    for p, (_, _, _, off, _) in zip(params, TENSORS):
        flat[off:off + p.numel()] = p.detach().to(torch.float64).reshape(-1).numpy()
    return flat


def run_reference(case, dtype):
    params = make_params(dtype)
    states = [[torch.zeros_like(p), torch.zeros_like(p)] for p in params]
    settings = [resolve(case["params"], g) for g in case["groups"]]
    decoupled = case["params"].get("adam_w_mode", True)
    snaps = {}
    for t in range(1, STEPS + 1):
        lrs = step_lrs(case, t)
        for i, (p, g) in enumerate(zip(params, grads_at(t, dtype))):
            grp = case["tensor_groups"][i]
            muon, adam = settings[grp]
            if TENSORS[i][2]:
                muon_step(p, g, states[i][0], lrs[grp][0], muon)
            else:
                adam_step(p, g, states[i][0], states[i][1], t, lrs[grp][1], adam, decoupled)
        if t in SNAPSHOTS:
            snaps[t] = flat_of(params)
    return snaps


# ---- DeepSpeed's own optimizer -------------------------------------------------------------------

def run_deepspeed(case, dtype, ns_float64):
    """DeepSpeed's MuonWithAuxAdam (inline Adam) on DeepSpeed's own param groups."""
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.muon import original_muon
    from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam

    saved = original_muon.ns_compute_dtype
    if ns_float64:
        original_muon.ns_compute_dtype = lambda method="gram": torch.float64
    try:
        params = [torch.nn.Parameter(p) for p in make_params(dtype)]
        for p, t in zip(params, TENSORS):
            p.use_muon = t[2]
            # DeepSpeed 0.19.8 cannot step a 4-D Muon parameter (see DEEPSPEED_SKIPS): leave it
            # out (frozen parameters are dropped from the groups) and out of the comparison.
            p.requires_grad_(t[0] not in DEEPSPEED_SKIPS)
        incoming = []
        for g, group in enumerate(case["groups"]):
            d = {"params": [p for p, tg in zip(params, case["tensor_groups"]) if tg == g]}
            for k in ("lr", "weight_decay"):
                if group.get(k) is not None:
                    d[k] = group[k]
            d.update(group.get("options") or {})
            incoming.append(d)
        opt_params = dict(case["params"])
        adam_w_mode = opt_params.pop("adam_w_mode", True)  # as the engine pops it
        ds_groups = DeepSpeedEngine._muon_param_groups(incoming, opt_params)
        # Which (group, half) each DeepSpeed group is: muon half first, empty halves skipped.
        which = [(g, half) for g, d in enumerate(incoming) for half in (True, False)
                 if any(bool(p.use_muon) is half for p in d["params"])]
        assert [(d["use_muon"]) for d in ds_groups] == [h for _, h in which]
        opt = MuonWithAuxAdam(ds_groups, adam_optimizer=None, adam_w_mode=adam_w_mode)
        snaps = {}
        for t in range(1, STEPS + 1):
            for p, g in zip(params, grads_at(t, dtype)):
                p.grad = g if p.requires_grad else None
            if case.get("schedule"):
                lrs = step_lrs(case, t)
                for dg, (g, half) in zip(opt.param_groups, which):
                    dg["lr"] = lrs[g][0 if half else 1]
            opt.step()
            if t in SNAPSHOTS:
                snaps[t] = flat_of(params)
        return snaps
    finally:
        original_muon.ns_compute_dtype = saved


# muon_update views a 4-D update as (d0, -1) for Newton-Schulz, then its non-finite guard
# `torch.where(grad_is_finite, update, grad)` broadcasts the (6, 12) update against the (6, 2, 3, 2)
# gradient and raises. The 4-D path is checked against DeepSpeed's NS kernels and scale instead
# (check_4d_against_deepspeed).
DEEPSPEED_SKIPS = {"conv.weight": "DeepSpeed 0.19.8's muon_update raises on 4-D parameters: its "
                                  "finite-guard torch.where broadcasts the (d0, -1) view against "
                                  "the 4-D gradient"}


def check_4d_against_deepspeed():
    """One 4-D update: the reference's orthogonalize + scale against DeepSpeed's zeropower
    kernels and _aspect_ratio_scale applied as muon_update applies them (before its guard)."""
    from deepspeed.runtime.zero.muon import original_muon as om
    saved = om.ns_compute_dtype
    om.ns_compute_dtype = lambda method="gram": torch.float64
    try:
        worst = 0.0
        for t, (name, shape, _, _, sc) in enumerate(TENSORS):
            if len(shape) != 4:
                continue
            u = torch.tensor(grad_values(t, numel(shape), 1, sc).reshape(shape))
            scale = om._aspect_ratio_scale(u.size(-2), u.size(-1))  # of the 4-D gradient
            for method, fn in (("standard", om.zeropower_via_newtonschulz5),
                               ("gram", om.zeropower_via_gram_newtonschulz)):
                ds = fn(u.view(len(u), -1), steps=NS_STEPS) * scale
                ours = orthogonalize(u.reshape(shape[0], -1), method) * (
                    math.sqrt(shape[-2] / shape[-1]) if shape[-2] > shape[-1] else 1.0)
                worst = max(worst, float((ds - ours).abs().max()))
        assert worst < 1e-12, f"4-D path disagrees with DeepSpeed's kernels ({worst})"
        return worst
    finally:
        om.ns_compute_dtype = saved


def max_err(a, b, skip=()):
    keep = np.ones(FLAT_NUMEL, dtype=bool)
    for name, shape, _, off, _ in TENSORS:
        if name in skip:
            keep[off:off + numel(shape)] = False
    return max(float(np.max((np.abs(a[t] - b[t]) / (np.abs(b[t]) + 0.1))[keep])) for t in SNAPSHOTS)


# ---- the flagger table ---------------------------------------------------------------------------

# dspp::GPT with GPTConfig{vocab_size 11, block_size 6, n_layer 2, n_head 2, n_embd 8}: the names
# and shapes of GPT::parameters(), in order (the C++ test checks they still are).
GPT_CONFIG = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


def gpt_parameters(c):
    C, out = c["n_embd"], []
    out.append(("transformer.wte.weight", [c["vocab_size"], C]))
    out.append(("transformer.wpe.weight", [c["block_size"], C]))
    for i in range(c["n_layer"]):
        h = f"transformer.h.{i}."
        out += [(h + "ln_1.weight", [C]), (h + "ln_1.bias", [C]),
                (h + "attn.c_attn.weight", [3 * C, C]), (h + "attn.c_attn.bias", [3 * C]),
                (h + "attn.c_proj.weight", [C, C]), (h + "attn.c_proj.bias", [C]),
                (h + "ln_2.weight", [C]), (h + "ln_2.bias", [C]),
                (h + "mlp.c_fc.weight", [4 * C, C]), (h + "mlp.c_fc.bias", [4 * C]),
                (h + "mlp.c_proj.weight", [C, 4 * C]), (h + "mlp.c_proj.bias", [C])]
    out += [("transformer.ln_f.weight", [C]), ("transformer.ln_f.bias", [C])]
    return out


# Names other models use, to exercise the rule: case, 3-D/4-D, an untied head, a scalar.
EXTRA_PARAMETERS = [
    ("model.embed_tokens.weight", [11, 8]),
    ("model.layers.0.self_attn.q_proj.weight", [8, 8]),
    ("Model.Layers.0.EMBEDDING_Proj.weight", [8, 8]),
    ("lm_head.weight", [11, 8]),
    ("model.LM_HEAD.weight", [11, 8]),
    ("model.layers.0.experts.w1", [2, 8, 4]),
    ("conv1.weight", [4, 3, 3, 3]),
    ("model.norm.weight", [8]),
    ("logit_scale", []),
]
CUSTOM_EXCLUDE = ["WTE", "wpe", "c_proj"]


def rule(name, ndim, patterns):
    return ndim >= 2 and not any(p.lower() in name.lower() for p in patterns)


def flagger_table(use_deepspeed):
    entries = gpt_parameters(GPT_CONFIG) + EXTRA_PARAMETERS
    decided = None
    if use_deepspeed:
        import deepspeed
        from deepspeed.runtime.config import MUON_OPTIMIZER

        class Holder(torch.nn.Module):
            pass

        root = Holder()
        for name, shape in entries:  # a module tree whose named_parameters() are these names
            *path, leaf = name.split(".")
            m = root
            for part in path:
                if not hasattr(m, part):
                    m.add_module(part, Holder())
                m = getattr(m, part)
            m.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape)))
        # (torch lists a module's own parameters before its children's: compare as sets)
        assert sorted(n for n, _ in root.named_parameters()) == sorted(n for n, _ in entries)
        cfg = types.SimpleNamespace(optimizer_name=MUON_OPTIMIZER, optimizer_params={})
        deepspeed.set_optimizer_flags(cfg, root)
        decided = {n: bool(p.use_muon) for n, p in root.named_parameters()}
    rows = []
    for name, shape in entries:
        default = rule(name, len(shape), ["embed", "lm_head"])
        if decided is not None:
            assert decided[name] == default, f"the rule disagrees with DeepSpeed on {name}"
        rows.append(dict(name=name, shape=shape, gpt=(name, shape) in gpt_parameters(GPT_CONFIG),
                         use_muon=default, use_muon_custom=rule(name, len(shape), CUSTOM_EXCLUDE)))
    return rows, decided is not None


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "data", "muon.json"))
    ap.add_argument("--no-deepspeed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.no_deepspeed:
        import torch._dynamo as dynamo
        dynamo.config.disable = True  # DeepSpeed's kernels eagerly: its NS dtype can be patched

    out_cases = []
    for case in CASES:
        ref = run_reference(case, torch.float64)
        fp32_err = max_err(run_reference(case, torch.float32), ref)
        entry = dict(name=case["name"], params=case["params"],
                     groups=[dict(lr=g.get("lr"), weight_decay=g.get("weight_decay"),
                                  options=g.get("options")) for g in case["groups"]],
                     tensor_groups=case["tensor_groups"], schedule=bool(case.get("schedule")),
                     base_lrs=base_lrs(case), ref_fp32_err=fp32_err)
        line = f"{case['name']:50s} ref fp32 err {fp32_err:.2e}"
        if not args.no_deepspeed:
            diff = max_err(run_deepspeed(case, torch.float64, ns_float64=True), ref, DEEPSPEED_SKIPS)
            assert diff < 1e-10, f"{case['name']}: reference and DeepSpeed disagree ({diff})"
            native = max_err(run_deepspeed(case, torch.float32, ns_float64=False), ref,
                             DEEPSPEED_SKIPS)
            entry["deepspeed_f64_diff"] = diff
            entry["deepspeed_native_err"] = native
            line += f"  DeepSpeed f64 diff {diff:.2e}  DeepSpeed native err {native:.2e}"
        print(line)
        entry["snapshots"] = {str(t): [float(x) for x in ref[t]] for t in SNAPSHOTS}
        out_cases.append(entry)

    rows, checked = flagger_table(not args.no_deepspeed)
    ds_notes = {}
    if not args.no_deepspeed:
        ds_notes = dict(deepspeed_skipped=DEEPSPEED_SKIPS,
                        deepspeed_4d_kernel_diff=check_4d_against_deepspeed())
        print(f"4-D path vs DeepSpeed's NS kernels: {ds_notes['deepspeed_4d_kernel_diff']:.2e}")
    doc = dict(
        generator="scripts/reference/muon.py",
        torch_version=torch.__version__,
        seed=SEED, steps=STEPS, snapshots=SNAPSHOTS, flat_numel=FLAT_NUMEL, pad_value=PAD_VALUE,
        grad_formula=GRAD_FORMULA,
        error_measure="max |x - ref| / (|ref| + 0.1)",
        tensors=[dict(name=n, shape=s, use_muon=u, offset=o, grad_scale=sc)
                 for n, s, u, o, sc in TENSORS],
        initial=[float(x) for x in flat_of(make_params(torch.float64))],
        cases=out_cases,
        **ds_notes,
        flagger=dict(gpt_config=GPT_CONFIG, custom_exclude=CUSTOM_EXCLUDE,
                     checked_against_deepspeed=checked, parameters=rows))
    if not args.no_deepspeed:
        import deepspeed
        doc["deepspeed_version"] = deepspeed.__version__
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
