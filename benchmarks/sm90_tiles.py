"""The GPU sweep's leaf-step tiles as built for an H100/H200, on a machine without one.

For each tile of ``SWEEP`` (``benchmarks/gpu_kernels.py``) and each float32
matmul precision: ptxas's registers per thread, bytes spilled, shared memory per
block, and how many such programs fit on one multiprocessor (65,536 registers,
allocated 8 per thread at a time, 228 KiB of shared memory, 64 warps). This is
what chose the sweep's list; only a GPU can say which tile is fastest.

    .venv/bin/python benchmarks/sm90_tiles.py [--precision tf32,tf32x3] [--d 32,64]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.gpu_kernels import SWEEP  # noqa: E402
from benchmarks.tables import table  # noqa: E402

SM_REGISTERS, SM_SHARED, SM_WARPS = 65_536, 228 * 1024, 64


def programs_per_sm(registers: int, shared: int, warps: int) -> int:
    """Programs of this build that fit on one sm_90 multiprocessor at once."""
    per_thread = -(-registers // 8) * 8
    return min(SM_REGISTERS // (per_thread * 32 * warps), SM_SHARED // max(shared, 1),
               SM_WARPS // warps)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="tf32,tf32x3", help="comma list of ieee, tf32, tf32x3")
    p.add_argument("--d", default="32,64", help="comma list of leaf sizes in SWEEP")
    args = p.parse_args()
    try:
        from rtnclock.kernels import sm90
    except ImportError:
        print("benchmarks/sm90_tiles.py needs triton (pip install triton==3.9.0)")
        return 0
    rows = []
    for d in (int(x) for x in args.d.split(",")):
        for precision in args.precision.split(","):
            for block, cols, warps, per_sm, stages, keep in SWEEP[d]:
                b = sm90.leaf_step(torch.float32, d, d, block_rows=block, cols=cols,
                                   num_warps=warps, stages=stages if per_sm else 0,
                                   keep_weights=keep, input_precision=precision)
                rows.append([d, precision, block, cols, warps, per_sm or "-",
                             stages if per_sm else "-", "kept" if keep else "per tile",
                             b.registers, b.spilled, round(b.shared / 1024),
                             programs_per_sm(b.registers, b.shared, warps)])
    print("Leaf step (float32, d_in = d) built for sm_90 by Triton and ptxas")
    table(["d", "precision", "rows/tile", "cols", "warps", "programs/SM asked", "stages",
           "weights", "registers", "spilled (B)", "shared (KiB)", "programs that fit/SM"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
