#!/usr/bin/env python3
"""How fast a small GPT learns ds-train's embedded addition task (dspp::AdditionTask).

Re-implements the task's distribution (";" then "A+B=C;" problems, D-digit operands, D+1-digit
sum, windows of T+1 tokens; not the C++ generator's exact stream) and trains nanoGPT-shaped
models on it with PyTorch, printing the held-out loss next to the task's chance, format-only and
irreducible losses, and the answer-digit accuracy. Used to pick the defaults ds-train trains
with on 2 CPU cores: the number that matters is the tokens (steps x B x T) a model needs.

  python3 scripts/reference/addition_learnability.py --digits 2 --steps 3000
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_batch(gen, n, T, D, base):
    """n windows of T+1 tokens: ';' then problems back to back (digits d, '+' base, '=' base+1,
    ';' base+2)."""
    L = 3 * D + 4
    k = (T + L) // L + 1
    a = torch.randint(0, base, (n, k, D), generator=gen)
    b = torch.randint(0, base, (n, k, D), generator=gen)
    pw = base ** torch.arange(D - 1, -1, -1)
    s = (a * pw).sum(-1) + (b * pw).sum(-1)
    pc = base ** torch.arange(D, -1, -1)
    c = (s.unsqueeze(-1) // pc) % base
    plus = torch.full((n, k, 1), base)
    eq = torch.full((n, k, 1), base + 1)
    sep = torch.full((n, k, 1), base + 2)
    prob = torch.cat([a, plus, b, eq, c, sep], -1).reshape(n, -1)
    toks = torch.cat([torch.full((n, 1), base + 2), prob], 1)[:, : T + 1]
    return toks[:, :-1].contiguous(), toks[:, 1:].contiguous()


def target_kinds(T, D):
    """0 operand, 1 answer, 2 symbol, for target t (char t mod L of a problem)."""
    L = 3 * D + 4
    kinds = []
    for t in range(T):
        r = t % L
        if r < D or D < r <= 2 * D:
            kinds.append(0)
        elif 2 * D + 2 <= r <= 3 * D + 2:
            kinds.append(1)
        else:
            kinds.append(2)
    return torch.tensor(kinds)


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.ln1 = nn.LayerNorm(C)
        self.attn = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fc2 = nn.Linear(4 * C, C)
        self.H = H

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn(self.ln1(x)).split(C, 2)
        q, k, v = (z.view(B, T, self.H, C // self.H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, H, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block(C, H) for _ in range(L))
        self.lnf = nn.LayerNorm(C)
        self.head = nn.Linear(C, V, bias=False)
        self.head.weight = self.wte.weight  # tied, as GPT-2
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.lnf(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--digits", type=int, nargs="+", default=[2])
    p.add_argument("--base", type=int, default=10)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--models", default="2x4x64,4x4x128", help="layers x heads x width, ...")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--eval-every", type=int, default=250)
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    V = args.base + 3
    for D in args.digits:
        L = 3 * D + 4
        kinds = target_kinds(args.T, D).to(dev)
        ln_b = math.log(args.base)
        M = args.base**D
        pc = (M - 1) / (2 * M)
        h_carry = -pc * math.log(pc) - (1 - pc) * math.log(1 - pc)
        irreducible = (kinds == 0).sum().item() * ln_b / args.T
        fmt = 0.0
        for t in range(args.T):
            r = t % L
            if kinds[t] == 0 or (kinds[t] == 1 and r != 2 * D + 2):
                fmt += ln_b
            elif kinds[t] == 1:
                fmt += h_carry
        fmt /= args.T
        print(f"== digits={D} base={args.base} T={args.T} vocab={V}: chance={math.log(V):.4f} "
              f"format_only={fmt:.4f} irreducible={irreducible:.4f}", flush=True)
        g_eval = torch.Generator().manual_seed(12345)
        ex, ey = make_batch(g_eval, 1024, args.T, D, args.base)
        ex, ey = ex.to(dev), ey.to(dev)
        for spec in args.models.split(","):
            nl, nh, nc = (int(v) for v in spec.split("x"))
            for lr in args.lrs:
                torch.manual_seed(0)
                g = torch.Generator().manual_seed(1)
                model = GPT(V, args.T, nl, nh, nc).to(dev)
                nparams = sum(q.numel() for q in model.parameters())
                opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95),
                                        weight_decay=0.0)
                t0 = time.time()
                line = []
                for step in range(1, args.steps + 1):
                    warm = min(1.0, step / 100)
                    for grp in opt.param_groups:
                        grp["lr"] = lr * warm
                    x, y = make_batch(g, args.B, args.T, D, args.base)
                    x, y = x.to(dev), y.to(dev)
                    loss = F.cross_entropy(model(x).view(-1, V), y.view(-1))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    if step % args.eval_every == 0 or step == args.steps:
                        with torch.no_grad():
                            logits = model(ex)
                            el = F.cross_entropy(logits.view(-1, V), ey.view(-1)).item()
                            ok = (logits.argmax(-1) == ey)[:, kinds == 1].float().mean().item()
                        line.append(f"{step}:{el:.3f}/{ok:.2f}")
                print(f"model {spec} ({nparams} params) lr {lr:g}: step:eval_loss/answer_acc "
                      f"{' '.join(line)}  ({time.time() - t0:.1f}s, "
                      f"{args.B * args.T} tokens/step)", flush=True)


if __name__ == "__main__":
    main()
