"""What a Triton kernel of ``triton_leaf`` costs on an H100/H200, read without one.

Triton compiles for a target whose GPU is absent, and ptxas (shipped with
Triton) reports each build's registers, spills and shared memory. The tests
hold the default tiles to no spills; ``benchmarks/sm90_tiles.py`` reports the
GPU sweep's tiles. Needs ``triton``; nothing here runs a kernel.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource

# Shared memory one block may have on sm_90.
SHARED_LIMIT = 227 * 1024
_TL_NAMES = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16",
             torch.bfloat16: "bf16"}


@dataclasses.dataclass(frozen=True)
class Build:
    """One kernel's sm_90 build: ptxas's figures and its whole ``-v`` report."""

    registers: int
    spilled: int          # bytes of spill stores plus spill loads, per thread
    shared: int           # bytes of shared memory per block
    log: str


def build(kernel, dtype: torch.dtype, ints: set[str], constexprs: dict,
          pointer_types: dict[str, str] | None = None, num_warps: int = 8) -> Build:
    """Compile the ``@triton.jit`` ``kernel`` for sm_90 and read ptxas's report.

    Arguments named ``*_ptr`` point to ``dtype`` unless ``pointer_types`` says
    otherwise (``"*i32"``, ...); those in ``ints`` are int32, the rest float64
    scalars; ``constexprs`` gives the compile-time ones.
    """
    signature, fixed = {}, {}
    for i, name in enumerate(inspect.signature(kernel.fn).parameters):
        if name in constexprs:
            signature[name], fixed[(i,)] = "constexpr", constexprs[name]
        elif name.endswith("_ptr"):
            signature[name] = (pointer_types or {}).get(name, "*" + _TL_NAMES[dtype])
        else:
            signature[name] = "i32" if name in ints else "fp64"
    built = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=fixed),
                           target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": num_warps, "enable_fp_fusion": True})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(built.asm["ptx"])
        done = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name=sm_90a", str(ptx),
                               "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True, check=True)
    log = done.stdout + done.stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return Build(registers=int(re.search(r"Used (\d+) registers", log).group(1)),
                 spilled=int(spills.group(1)) + int(spills.group(2)),
                 shared=built.metadata.shared, log=log)


def leaf_step(dtype: torch.dtype, d: int, d_in: int, *, block_rows: int, cols: int,
              num_warps: int, stages: int = 0, keep_weights: bool = False,
              input_precision: str = "ieee") -> Build:
    """``triton_leaf.leaf_step``'s kernel at these tiles (``stages`` 0: one tile per
    program, else a persistent grid pipelined over that many tiles)."""
    from . import triton_leaf

    D = triton_leaf._pad(d)
    return build(triton_leaf._leaf_step_kernel, dtype, {"rows", "d", "d_in"},
                 dict(D=D, DI=triton_leaf._pad(d_in), BLOCK_R=block_rows, JC=min(cols, D),
                      ACC=tl.float64 if dtype == torch.float64 else tl.float32,
                      PREC=input_precision, STAGES=stages, KEEP=keep_weights),
                 num_warps=num_warps)
