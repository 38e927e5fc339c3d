"""Fused Triton leaf kernels against plain torch on a CUDA GPU.

Four tables:

1. device-to-device copy bandwidth (read + write), the roofline of the leaf step;
2. leaf step (``kernels.reference.leaf_step``) at ``B = 1`` and ``n`` leaves:
   eager reference, ``torch.compile(reference)`` and the fused Triton kernel;
   bandwidth counts what must move: ``x, u, prior, x_bar, demand`` in and
   ``x_new, e, g`` out, as a percentage of the measured copy;
3. gated attention at ``n`` leaves (``B = 1``, no ring buffer unless said) with a
   fraction of the gates open, each path from all queries ``[1, n, d]`` and the
   gate mask to the output ``[1, n, d]``: dense SDPA over all ``n`` leaves
   (ignores the gate), compaction + SDPA + scatter (no entropy: SDPA does not
   give the weights), and compaction + fused Triton (output and entropy) + scatter,
   also with an ``M = 8`` ring buffer (gathered per open leaf, as ``LeafCore.attend``
   does), and without splitting the keys across programs; times as a percentage
   of dense;
4. ``audio_stream`` on its default config with a batch of ``B`` streams (1,024;
   ``--quick``: 8) on the device: the real-time factor of ``simulate`` with the
   scenario streaming its features chunk by chunk (as ``rtnclock run
   audio_stream --device cuda --batch 1024`` does), and of the simulation alone
   on features made beforehand; per stream and summed over the batch.

Timings are medians over repeats (CUDA events, after warm-up; calls shorter than
about 2 ms are batched between two events). The whole run takes a few minutes
on an H100; ``--quick`` uses tiny sizes. ``--device cpu`` (with
``TRITON_INTERPRET=1`` set) runs the same code through Triton's interpreter, to
debug the script, not to time anything.

    .venv/bin/python benchmarks/gpu_kernels.py [--quick] [--dtype float32] [--precision ieee,tf32x3,tf32]
    TRITON_INTERPRET=1 .venv/bin/python benchmarks/gpu_kernels.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.tables import table  # noqa: E402
from rtnclock.kernels import reference  # noqa: E402

STEP_LEAVES = [1_000, 10_000, 100_000, 1_000_000, 4_000_000]
ATTN_LEAVES = [1_024, 4_096, 16_384, 65_536, 262_144]
OPEN = [0.01, 0.1, 0.5, 1.0]
QUICK_STEP, QUICK_ATTN = [1_000, 5_000], [256, 1_024]
AUDIO_BATCH, AUDIO_SECONDS = 1_024, 2.0
SWEEP_LEAVES, QUICK_SWEEP = 4_000_000, 500
# (rows per tile, output columns per step, warps, programs per SM, stages, weights
# kept), where programs per SM 0 is one tile per program, and weights kept means a
# persistent program loads the weights once rather than once per tile. Chosen from
# ptxas's sm_90 report (benchmarks/sm90_tiles.py): from the defaults (one program
# per multiprocessor) to small tiles of which 2-6 programs fit, and persistent
# programs that keep the weights, 1-4 per SM. In tf32 all but four build without
# spills; those four are kept to measure what spilling costs.
SWEEP = {32: [(64, 16, 8, 0, 0, False), (64, 32, 8, 0, 0, False), (64, 32, 4, 0, 0, False),
              (32, 32, 2, 0, 0, False), (32, 32, 4, 0, 0, False), (32, 16, 4, 0, 0, False),
              (16, 32, 2, 0, 0, False), (128, 16, 8, 0, 0, False), (128, 32, 8, 0, 0, False),
              (64, 32, 8, 2, 2, False), (64, 32, 4, 3, 2, False), (32, 32, 2, 4, 2, False),
              (64, 32, 8, 1, 2, True), (64, 32, 8, 1, 3, True), (64, 32, 4, 2, 2, True),
              (32, 32, 4, 2, 2, True), (32, 32, 4, 3, 3, True), (32, 32, 2, 4, 2, True),
              (128, 32, 8, 1, 2, True)],
         64: [(64, 16, 8, 0, 0, False), (64, 64, 8, 0, 0, False), (64, 32, 8, 0, 0, False),
              (32, 16, 4, 0, 0, False), (32, 32, 8, 0, 0, False), (16, 64, 4, 0, 0, False),
              (16, 64, 2, 0, 0, False), (128, 16, 8, 0, 0, False), (64, 16, 8, 1, 2, False),
              (16, 64, 4, 2, 2, False), (32, 64, 8, 1, 2, True), (32, 64, 4, 2, 2, True),
              (32, 64, 4, 1, 3, True), (16, 64, 4, 2, 2, True), (16, 64, 2, 4, 2, True)]}
TABLES = ("step", "attention", "audio", "sweep")


class Timer:
    """Median time of a call in seconds: CUDA events on a GPU, the wall clock on CPU."""

    def __init__(self, device: torch.device, budget_s: float):
        self.cuda = device.type == "cuda"
        self.budget_s = budget_s

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _once(self, fn, inner: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / inner
        began = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - began) / inner

    def __call__(self, fn) -> float:
        fn()                                                  # compile / autotune / allocate
        self._sync()
        first = self._once(fn, 1)
        # Batch short calls so that event resolution and launch jitter do not dominate.
        inner = max(1, math.ceil(2e-3 / max(first, 1e-7))) if self.cuda else 1
        repeats = int(min(25, max(5, self.budget_s / max(first * inner, 1e-7))))
        return statistics.median(self._once(fn, inner) for _ in range(repeats))


def _time(timer: Timer, fn, what: str) -> float:
    """``timer(fn)``, or NaN (and one line saying why) where the path cannot run."""
    if fn is None:
        return float("nan")
    try:
        return timer(fn)
    except (RuntimeError, torch.OutOfMemoryError) as err:
        print(f"{what}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
        return float("nan")


def _copy_bandwidth(timer: Timer, device, quick: bool) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write) over a buffer much larger than L2."""
    n = (1 << 20) if quick else (1 << 28)                    # 1 GiB of float32 on the GPU
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    bw = 2 * src.numel() * src.element_size() / t
    table(["buffer (MiB)", "time (ms)", "copy bandwidth (GB/s)"],
          [[src.numel() * src.element_size() >> 20, t * 1e3, bw / 1e9]])
    return bw


def _step_args(n: int, d: int, dtype, device) -> tuple:
    """Positional ``leaf_step`` arguments for ``B = 1``, ``n`` leaves, ``d_in = d``."""
    g = torch.Generator(device=device).manual_seed(0)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, device=device, dtype=dtype) * scale

    w = d ** -0.5
    x, u, prior, x_bar = r(1, n, d), r(1, n, d), r(1, n, d), r(1, n, d)
    demand = torch.rand(1, n, generator=g, device=device, dtype=dtype)
    W_rec, W_in, W_p, R, S = (r(d, d, scale=w) for _ in range(5))
    return (x, u, prior, W_rec, W_in, W_p, r(d, scale=0.1), R, S, x_bar, demand,
            1.7, 0.8, -0.3, 0.05, 0.01)


def _step_bytes(n: int, d: int, dtype) -> int:
    """Bytes a leaf step must move at ``B = 1``, ``d_in = d``: ``x, u, prior, x_bar``
    (d each) and ``demand`` in, ``x_new`` (d), ``e`` and ``g`` out."""
    return n * ((4 * d + 1) + (d + 2)) * torch.finfo(dtype).bits // 8


def _deviation(got, want) -> float:
    """Largest absolute difference between two tuples of outputs (a fast wrong kernel is no result)."""
    return max(float((a - b).abs().max()) for a, b in zip(got, want))


def _leaf_step_table(timer, fused, copy_bw, sizes, dtype, device, precisions, compiled) -> None:
    """Table 2: eager, compiled and fused leaf step (one fused column per matmul precision); d_in = d."""
    rows = []
    for d in (32, 64):
        for n in sizes:
            args = _step_args(n, d, dtype, device)
            moved = _step_bytes(n, d, dtype)
            row = [n, d]
            for fn in (lambda: reference.leaf_step(*args),
                       (lambda: compiled(*args)) if compiled else None):
                t = _time(timer, fn, f"leaf step n={n} d={d}")
                row += [t * 1e3, 100 * moved / t / copy_bw]
            want = reference.leaf_step(*args)
            for p in precisions:
                t = _time(timer, lambda: fused.leaf_step(*args, input_precision=p),
                          f"fused leaf step {p} n={n} d={d}")
                got = fused.leaf_step(*args, input_precision=p)
                row += [t * 1e3, 100 * moved / t / copy_bw, _deviation(got, want)]
            rows.append(row)
    table(["n leaves", "d", "eager (ms)", "eager (% copy)", "compiled (ms)", "compiled (% copy)"]
          + [c for p in precisions for c in (f"fused {p} (ms)", "(% copy)", "max |fused - eager|")],
          rows)


def _sweep_table(timer, fused, copy_bw, n, dtype, device, precisions) -> None:
    """Leaf-step tiles at ``n`` leaves, per matmul precision: rows per tile, output
    columns per step, warps, one tile per program or a persistent pipelined grid
    (keeping the weights or not); the numbers that choose the defaults of
    ``triton_leaf.leaf_step``."""
    rows = []
    for d in (32, 64):
        args = _step_args(n, d, dtype, device)
        moved = _step_bytes(n, d, dtype)
        want = reference.leaf_step(*args)
        for p in precisions:
            for block, cols, warps, per_sm, stages, keep in SWEEP[d]:
                kw = dict(block_rows=block, cols=cols, num_warps=warps, per_sm=per_sm,
                          stages=stages, keep_weights=keep, input_precision=p)
                t = _time(timer, lambda: fused.leaf_step(*args, **kw), f"leaf step {kw}")
                err = _deviation(fused.leaf_step(*args, **kw), want)
                rows.append([d, p, block, cols, warps, per_sm or "-", stages if per_sm else "-",
                             "kept" if keep else "per tile", t * 1e3, 100 * moved / t / copy_bw,
                             err])
    rows.sort(key=lambda r: (r[0], r[1], r[8] if r[8] == r[8] else float("inf")))
    table(["d", "precision", "rows/tile", "cols", "warps", "programs/SM", "stages", "weights",
           "time (ms)", "(% copy)", "max |fused - eager|"], rows)


def _attention_paths(fused, q_all, keys, values, open_, mem_k, mem_v, mem_valid, precisions):
    """Compaction + SDPA, then per precision the fused path without and with the ring
    buffer; each returns ``[1, n, d]`` (the fused ones also the entropy)."""

    def compact_sdpa():
        b, i = open_.nonzero(as_tuple=True)
        out = _sdpa(q_all[b, i].unsqueeze(0), keys, values)[0]
        return torch.zeros_like(q_all).index_put((b, i), out)

    def fused_path(with_memory: bool, precision: str, splits=None):
        b, i = open_.nonzero(as_tuple=True)
        M = mem_k.shape[2] if with_memory else 0
        mk, mv, mval = mem_k[b, i, :M], mem_v[b, i, :M], mem_valid[b, i, :M]
        a, h = fused.leaf_attention(q_all[b, i], b, mk, mv, mval, keys, values,
                                    keys.shape[-1] ** 0.5, input_precision=precision,
                                    splits=splits)
        return (torch.zeros_like(q_all).index_put((b, i), a),
                torch.zeros(open_.shape, device=a.device, dtype=a.dtype).index_put((b, i), h))

    # Last: the first precision in one pass (no split keys), to show what splitting buys.
    return ([compact_sdpa] + [functools.partial(fused_path, memory, p)
                              for p in precisions for memory in (False, True)]
            + [functools.partial(fused_path, False, precisions[0], 1)])


def _sdpa(q, k, v):
    """SDPA on ``[1, L, d]`` tensors through the 4-D ``[batch, heads, L, d]`` layout
    that its fused CUDA kernels require."""
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]


def _dense_backends(device):
    # Never the math backend: it materialises n x n and runs out of memory at large n.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type != "cuda":
        return sdpa_kernel([SDPBackend.MATH])
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.CUDNN_ATTENTION])


def _attention_table(timer, fused, sizes, dtype, device, precisions, d=32, M=8) -> None:
    """Table 3: gated attention paths as a percentage of dense SDPA."""
    rows = []
    for n in sizes:
        g = torch.Generator(device=device).manual_seed(n)
        q_all, keys, values, mem_k, mem_v = (
            torch.randn(*shape, generator=g, device=device, dtype=dtype)
            for shape in [(1, n, d)] * 3 + [(1, n, M, d)] * 2)
        mem_valid = torch.ones(1, n, M, dtype=torch.bool, device=device)
        with _dense_backends(device):
            dense = _time(timer, lambda: _sdpa(q_all, keys, values),
                          f"dense SDPA n={n}")
            for frac in OPEN:
                open_ = torch.rand(1, n, generator=g, device=device) < frac
                open_[0, 0] = True                            # SDPA kernels reject 0 queries
                row = [n, f"{100 * frac:g}%", int(open_.sum()), dense * 1e3]
                paths = _attention_paths(fused, q_all, keys, values, open_, mem_k, mem_v,
                                         mem_valid, precisions)
                for fn in paths:
                    t = _time(timer, fn, f"attention n={n} open={frac}")
                    row += [t * 1e3, 100 * t / dense]
                sdpa = paths[0]()
                rows.append(row + [float((sdpa - paths[2 * k + 1]()[0]).abs().max())
                                   for k in range(len(precisions))])
    table(["n leaves", "open", "N open", "dense SDPA (ms)", "compact+SDPA (ms)", "(% dense)"]
          + [c for p in precisions for c in (f"fused {p} (ms)", "(% dense)", f"{p} M={M} (ms)",
                                             "(% dense)")]
          + [f"{precisions[0]} one pass (ms)", "(% dense)"]
          + [f"max |fused {p} - SDPA|" for p in precisions], rows)


def _audio_table(device, quick: bool) -> None:
    """Real-time factor of audio_stream defaults with a batch of streams on ``device``."""
    from rtnclock import Stream, simulate
    from rtnclock.scenarios import audio_stream

    B, seconds = (8, 0.5) if quick else (AUDIO_BATCH, AUDIO_SECONDS)
    cfg = audio_stream.default_config().replace(device=str(device))
    rows = []
    simulate(cfg, audio_stream.make_stream(cfg, duration=min(seconds, 0.2), batch=B))     # warm-up
    began = time.perf_counter()
    stream = audio_stream.make_stream(cfg, duration=seconds, batch=B)
    streamed = simulate(cfg, stream)
    rows.append(["streaming features (rtnclock run)", B, seconds, time.perf_counter() - began])
    stream = audio_stream.make_stream(cfg, duration=seconds, batch=B)
    ready = Stream(stream.frames.to(device), stream.dt)
    alone = simulate(cfg, ready)
    rows.append(["simulation alone", B, seconds, alone.wall_seconds])
    table(["run", "streams", "simulated s", "wall s", "real-time factor per stream", "stream-seconds per s"],
          [[r[0], r[1], r[2], f"{r[3]:.2f}", f"{r[2] / r[3]:.2f}x", f"{r[1] * r[2] / r[3]:.0f}"] for r in rows])
    assert streamed.sparsity >= 0 and alone.sparsity >= 0


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (checks the script)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu: Triton's interpreter (set TRITON_INTERPRET=1), for debugging")
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--precision", default="ieee,tf32x3,tf32",
                   help="float32 matmuls in the fused kernels, one column each: a comma list of "
                        "ieee, tf32x3, tf32 (default all three; other dtypes use ieee alone)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    p.add_argument("--tables", default="step,attention,audio",
                   help=f"comma list of {', '.join(TABLES)} (sweep: the leaf-step tiles at "
                        f"{SWEEP_LEAVES:,} leaves, not run by default)")
    p.add_argument("--sweep-precision", default="tf32,tf32x3",
                   help="float32 matmul precisions of the sweep, a comma list (other dtypes: ieee)")
    return p.parse_args()


def main() -> int:
    args = _parse()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu_kernels.py needs a CUDA GPU (none found); "
              "to debug it on CPU: TRITON_INTERPRET=1 ... --device cpu --quick")
        return 0
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("--device cpu runs Triton's interpreter: set TRITON_INTERPRET=1 before starting")
        return 2
    try:
        import triton

        from rtnclock.kernels import triton_leaf
    except ImportError:
        print("benchmarks/gpu_kernels.py needs triton (pip install triton==3.9.0)")
        return 0
    dtype = getattr(torch, args.dtype)
    precisions, sweep_precisions = (
        (arg.split(",") if dtype == torch.float32 else ["ieee"])
        for arg in (args.precision, args.sweep_precision))
    for flag, given in (("--precision", precisions), ("--sweep-precision", sweep_precisions)):
        bad = set(given) - {"ieee", "tf32", "tf32x3"}
        if bad:
            print(f"{flag}: {sorted(bad)} not among ieee, tf32, tf32x3")
            return 2
    tables = args.tables.split(",")
    if set(tables) - set(TABLES):
        print(f"--tables: {sorted(set(tables) - set(TABLES))} not among {', '.join(TABLES)}")
        return 2
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"{name}; torch {torch.__version__}, triton {triton.__version__}; {args.dtype}, "
          f"fused matmuls {', '.join(precisions)}\n")
    timer = Timer(device, budget_s=0.05 if args.quick else 0.5)
    print("Device-to-device copy")
    copy_bw = _copy_bandwidth(timer, device, args.quick)
    compiled = None
    if not args.no_compile and "step" in tables:
        # dynamic: one compilation serves every n and d instead of one per shape.
        compiled = torch.compile(reference.leaf_step, dynamic=True)
    with torch.no_grad():
        if "sweep" in tables:
            n = QUICK_SWEEP if args.quick else SWEEP_LEAVES
            print(f"Leaf-step tiles, B = 1, n = {n:,}, d_in = d, {', '.join(sweep_precisions)} "
                  "(fastest first per d)")
            _sweep_table(Timer(device, budget_s=0.05 if args.quick else 0.1), triton_leaf,
                         copy_bw, n, dtype, device, sweep_precisions)
        if "step" in tables:
            print("Leaf step, B = 1, d_in = d (time per call; bandwidth of the bytes that must move)")
            _leaf_step_table(timer, triton_leaf, copy_bw,
                             QUICK_STEP if args.quick else STEP_LEAVES, dtype, device,
                             precisions, compiled)
        if "attention" in tables:
            print("Gated attention, B = 1, d = 32 (compaction to the open queries and scatter "
                  "included; % of dense SDPA over all n)")
            _attention_table(timer, triton_leaf, QUICK_ATTN if args.quick else ATTN_LEAVES,
                             dtype, device, precisions)
        if "audio" in tables:
            print(f"audio_stream defaults, a batch of streams on {name}")
            _audio_table(device, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
