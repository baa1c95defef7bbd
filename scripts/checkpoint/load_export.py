#!/usr/bin/env python3
"""Loads a `ds-checkpoint export` file with the reference safetensors loader and prints each
tensor's name, dtype, shape and L2 norm: proof that PyTorch reads what dspp writes.

    pip install safetensors numpy        # torch is used when installed, numpy otherwise
    python3 scripts/checkpoint/load_export.py OUT.safetensors

Not part of dspp: no build or test depends on it.
"""
import math
import sys


def load(path):
    try:
        import torch  # noqa: F401
        from safetensors.torch import load_file

        tensors = load_file(path)
        rows = {n: (str(t.dtype), tuple(t.shape), float(t.double().norm())) for n, t in tensors.items()}
        return "safetensors.torch", rows
    except ImportError:
        import numpy as np
        from safetensors.numpy import load_file

        tensors = load_file(path)
        rows = {
            n: (str(a.dtype), tuple(a.shape), float(math.sqrt(np.sum(a.astype(np.float64) ** 2))))
            for n, a in tensors.items()
        }
        return "safetensors.numpy", rows


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: load_export.py OUT.safetensors")
    loader, rows = load(sys.argv[1])
    print(f"{sys.argv[1]}: {len(rows)} tensors (loaded with {loader})")
    width = max((len(n) for n in rows), default=0)
    for name in sorted(rows):
        dtype, shape, norm = rows[name]
        print(f"  {name.ljust(width)}  {dtype:14} {str(list(shape)):16} norm {norm:.6g}")


if __name__ == "__main__":
    main()
