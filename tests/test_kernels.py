"""Fused leaf kernels (Triton) against the plain-torch reference.

Two groups: Triton's interpreter on CPU tensors (small sizes; skipped without
triton), and compiled kernels on CUDA (``gpu`` marker; skipped without CUDA).
The truth is always ``reference`` in float64 on the same (rounded) inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtnclock import kernels
from rtnclock.kernels import reference

# (atol, rtol) of a fused kernel in this dtype against the float64 reference.
TOL = {
    # Same sums in another order (tiles, online softmax): rounding only.
    torch.float64: (1e-12, 1e-10),
    # Rounding, plus approximate exp on the GPU and an exp-based tanh (abs. error ~eps).
    torch.float32: (2e-5, 1e-4),
    # Outputs are stored in 11 bits, and x_new / the softmax weights are rounded
    # to it before the next matmul, as the reference in that dtype does.
    torch.float16: (1e-2, 1e-2),
    # 8 bits: the same, 8x coarser.
    torch.bfloat16: (6e-2, 6e-2),
}


def _close(actual, expected, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol)


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def _step_inputs(gen, B, n, d, d_in):
    """``leaf_step`` arguments in float64, scaled so that ``z`` and ``e`` are O(1)."""
    w, wi = d ** -0.5, d_in ** -0.5
    return dict(x=_randn(gen, B, n, d), u=_randn(gen, B, n, d_in), prior=_randn(gen, B, n, d),
                W_rec=_randn(gen, d, d, scale=w), W_in=_randn(gen, d, d_in, scale=wi),
                W_p=_randn(gen, d, d, scale=w), c=_randn(gen, d, scale=0.1),
                R=_randn(gen, d_in, d, scale=w), S=_randn(gen, d_in, d, scale=w),
                x_bar=_randn(gen, B, n, d_in),
                demand=torch.rand(B, n, generator=gen, dtype=torch.float64),
                a=1.7, beta=0.8, bias=-0.3, tau=0.05, dt=0.01)


def _attention_inputs(gen, B, n, d, M, open_fraction):
    """``leaf_attention`` arguments as ``LeafCore.attend`` builds them (float64)."""
    open_ = torch.rand(B, n, generator=gen) < open_fraction
    b, i = open_.nonzero(as_tuple=True)                       # sorted by stream
    writes = torch.randint(0, M + 3, (B, n), generator=gen)  # some buffers empty, some full
    valid = torch.arange(M) < writes.clamp(max=M).unsqueeze(-1)  # [B, n, M]
    return dict(q=_randn(gen, len(b), d), stream=b,
                mem_k=_randn(gen, B, n, M, d)[b, i], mem_v=_randn(gen, B, n, M, d)[b, i],
                mem_valid=valid[b, i], keys=_randn(gen, B, n, d), values=_randn(gen, B, n, d),
                temperature=d ** 0.5)


def _cast(args, dtype, device="cpu"):
    return {k: v.to(device, dtype) if torch.is_tensor(v) and v.is_floating_point()
            else v.to(device) if torch.is_tensor(v) else v for k, v in args.items()}


def _check_step(mod, args, dtype, device="cpu", **kw):
    args = _cast(args, dtype, device)
    got = mod.leaf_step(**args, **kw)
    want = reference.leaf_step(**_cast(args, torch.float64, device))
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        _close(g, w, dtype)


def _check_attention(mod, args, dtype, device="cpu", **kw):
    args = _cast(args, dtype, device)
    a, h = mod.leaf_attention(**args, **kw)
    a_ref, h_ref = reference.leaf_attention(**_cast(args, torch.float64, device))
    assert a.shape == a_ref.shape and h.shape == h_ref.shape and a.dtype == dtype
    _close(a, a_ref, dtype)
    _close(h, h_ref, dtype)


def _check_vector_field(mod, gen, R, d, dtype, device="cpu", **kw):
    h, drive = _randn(gen, R, d).to(device, dtype), _randn(gen, R, d).to(device, dtype)
    W = _randn(gen, d, d, scale=d ** -0.5).to(device, dtype)
    got = mod.leaf_vector_field(h, drive, W, 0.3, **kw)
    _close(got, reference.leaf_vector_field(h.double(), drive.double(), W.double(), 0.3), dtype)


# ---------------------------------------------------------------- dispatch


def test_get_returns_the_reference_on_cpu():
    for name in ("leaf_attention", "leaf_step", "leaf_vector_field"):
        assert kernels.get(name, "cpu") is getattr(reference, name)
    with pytest.raises(KeyError, match="no leaf kernel named 'nope'"):
        kernels.get("nope", "cpu")


@pytest.mark.parametrize("B, n, open_fraction, M", [(3, 5, 0.4, 3), (3, 5, 1.0, 3), (1, 1, 1.0, 3), (2, 6, 0.0, 3),
                                                     (3, 5, 0.4, 0), (3, 5, 1.0, 0), (1, 1, 1.0, 0)])
def test_reference_attention_is_each_querys_own_softmax(B, n, open_fraction, M):
    """The reference's padded (some leaves open) and dense (every stream equally open)
    layouts, with and without memory slots, give per query the softmax over its valid
    memory and its stream's keys."""
    gen = torch.Generator().manual_seed(5)
    d = 4
    args = _attention_inputs(gen, B, n, d, M, open_fraction)
    a, h = reference.leaf_attention(**args)
    assert a.shape == (len(args["stream"]), d)
    for j, b in enumerate(args["stream"].tolist()):
        valid = args["mem_valid"][j]
        k = torch.cat([args["mem_k"][j][valid], args["keys"][b]])
        v = torch.cat([args["mem_v"][j][valid], args["values"][b]])
        w = torch.softmax(k @ args["q"][j] / args["temperature"], 0)
        torch.testing.assert_close(a[j], w @ v, atol=1e-13, rtol=1e-12)
        torch.testing.assert_close(h[j], -(w * w.log()).sum(), atol=1e-13, rtol=1e-12)


def test_reference_attention_dense_layout_when_every_stream_has_as_many_queries():
    """Two of four leaves open in every stream (the dense layout with fewer queries than
    leaves): the same rows as those queries get in the all-open call, which the test
    above checks against each query's own softmax."""
    gen = torch.Generator().manual_seed(6)
    B, n, d, M = 3, 4, 4, 2
    args = _attention_inputs(gen, B, n, d, M, 1.0)
    keep = torch.tensor([i % n in (1, 3) for i in range(B * n)])
    two = {k: (v[keep] if k in ("q", "stream", "mem_k", "mem_v", "mem_valid") else v) for k, v in args.items()}
    a2, h2 = reference.leaf_attention(**two)
    a, h = reference.leaf_attention(**args)                 # the same queries among all leaves'
    torch.testing.assert_close(a2, a[keep], atol=1e-14, rtol=1e-13)
    torch.testing.assert_close(h2, h[keep], atol=1e-14, rtol=1e-13)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only install")
def test_get_falls_back_to_the_reference_without_cuda():
    assert kernels.get("leaf_step", "cuda") is reference.leaf_step


# ---------------------------------------------------------------- interpreter (CPU)


# Triton 3.9 chooses interpreter or compiler when ``@triton.jit`` runs, for its own
# tl.sum/tl.max too, that is when triton is imported: TRITON_INTERPRET=1 must be
# set before the process imports triton. So the ``*_interpreted`` tests run in a
# child pytest started with it, and the variable never reaches this process.
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def test_triton_interpreter_subprocess():
    """Run this file's ``*_interpreted`` tests in a child pytest under TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    if INTERPRETING:
        pytest.skip("TRITON_INTERPRET=1 here: the interpreted tests run in this process")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
           "-k", "interpreted", "-m", "not slow and not gpu"]
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def interp():
    """``triton_leaf`` under the interpreter (only in the child of the test above)."""
    if not INTERPRETING:
        pytest.skip("runs under TRITON_INTERPRET=1 in test_triton_interpreter_subprocess")
    pytest.importorskip("triton")
    from rtnclock.kernels import triton_leaf

    assert triton_leaf.INTERPRETED
    return triton_leaf


def _runtime_loops():
    """Skip where the interpreter cannot run loops with run-time bounds: before 3.9 it
    passes integer arguments as 1-element arrays, which numpy 2 will not index with."""
    import triton

    if tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 9):
        pytest.skip(f"Triton {triton.__version__}'s interpreter: loops over run-time bounds "
                    "need 3.9 (the pinned version)")


@pytest.mark.parametrize("B, n, d, d_in, block", [
    (1, 37, 8, 8, 16),       # n not a multiple of the block; d padded to 16
    (2, 21, 32, 12, 16),     # B > 1, d_in not a power of two
    (3, 40, 32, 32, None),   # default block: one partial program
])
def test_leaf_step_interpreted(interp, B, n, d, d_in, block):
    args = _step_inputs(torch.Generator().manual_seed(n), B, n, d, d_in)
    _check_step(interp, args, torch.float64, block_rows=block)


@pytest.mark.parametrize("cols, stages, keep", [(16, 1, False), (32, 3, False), (32, 2, True)])
def test_leaf_step_interpreted_persistent(interp, cols, stages, keep):
    """A persistent grid (4 programs here) looping over 13 tiles, the last one partial;
    with the weights loaded once per program (keep) or once per tile."""
    _runtime_loops()
    args = _step_inputs(torch.Generator().manual_seed(5), 2, 100, 32, 24)
    _check_step(interp, args, torch.float64, block_rows=16, cols=cols, per_sm=1, stages=stages,
                keep_weights=keep)


@pytest.mark.parametrize("kw", [dict(keep_weights=True, cols=32),
                                dict(keep_weights=True, per_sm=1, cols=16)])
def test_leaf_step_keep_weights_needs_a_persistent_grid_and_whole_columns(interp, kw):
    args = _step_inputs(torch.Generator().manual_seed(0), 1, 5, 32, 8)
    with pytest.raises(ValueError, match="keep_weights needs per_sm > 0 and cols"):
        interp.leaf_step(**args, **kw)


def test_leaf_step_rejects_cols_not_dividing_d(interp):
    args = _step_inputs(torch.Generator().manual_seed(0), 1, 5, 32, 8)
    with pytest.raises(ValueError, match="cols=24"):
        interp.leaf_step(**args, cols=24)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_leaf_step_interpreted_low_precision(interp, dtype):
    _check_step(interp, _step_inputs(torch.Generator().manual_seed(1), 2, 19, 32, 16), dtype,
                block_rows=16)


@pytest.mark.parametrize("R, d", [(1, 8), (37, 8), (50, 32)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_leaf_vector_field_interpreted(interp, R, d, dtype):
    _check_vector_field(interp, torch.Generator().manual_seed(R), R, d, dtype, block_rows=16)


@pytest.mark.parametrize("open_fraction", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("M", [0, 4])
@pytest.mark.parametrize("B, n, d", [(1, 37, 8), (3, 21, 32)])
def test_leaf_attention_interpreted(interp, B, n, d, M, open_fraction):
    _runtime_loops()
    gen = torch.Generator().manual_seed(7 * n + M)
    args = _attention_inputs(gen, B, n, d, M, open_fraction)
    _check_attention(interp, args, torch.float64, block_q=16, block_n=16)


@pytest.mark.parametrize("B, n, M, open_fraction, splits", [
    (1, 37, 0, 1.0, 2),      # 3 key blocks: 32 keys and 5
    (3, 100, 4, 0.1, 5),     # 7 blocks: 4 splits of 2, 2, 2 and 1 (partial) blocks
    (2, 50, 4, 1.0, 64),     # more splits asked than key blocks: one per block
])
def test_leaf_attention_interpreted_split_keys(interp, B, n, M, open_fraction, splits):
    """Several programs per query tile, each over a range of the keys, folded by a
    second kernel: the same softmax, output and entropy as one pass."""
    _runtime_loops()
    gen = torch.Generator().manual_seed(11 * n + M)
    args = _attention_inputs(gen, B, n, 32, M, open_fraction)
    _check_attention(interp, args, torch.float64, block_q=16, block_n=16, splits=splits)
    # Cold: each split has its own max far from the others'.
    _check_attention(interp, dict(args, temperature=0.02), torch.float64, block_q=16,
                     block_n=16, splits=splits)
    _check_attention(interp, args, torch.float32, block_q=16, block_n=16, splits=splits)


def test_key_splits_fill_the_gpu_without_empty_splits():
    """Few query tiles over many keys are split up to _PROGRAMS_PER_SM programs per
    multiprocessor, never below _MIN_SPLIT_KEYS keys or one key block per split, and
    the splits cover the keys with none empty; many tiles are not split."""
    pytest.importorskip("triton")
    from rtnclock.kernels import triton_leaf as T

    cpu = torch.device("cpu")                                 # counts 4 multiprocessors
    assert T._PROGRAMS_PER_SM * T._multiprocessors(cpu) == 16
    cases = {  # (query tiles, n, block_n): (splits, keys per split)
        (16, 65_536, 64): (1, 65_536),     # the tiles fill the programs already
        (1, 65_536, 64): (16, 4_096),      # one tile: 16 programs
        (3, 65_536, 64): (6, 10_944),      # 6 x 3 >= 16: 171 of 1,024 blocks each
        (2, 5_000, 32): (4, 1_280),        # capped by 5,000 // 1,024
        (1, 1_500, 64): (1, 1_536),        # under 2 x 1,024 keys: not split
        (1, 100, 16): (1, 112),
    }
    for (tiles, n, bn), expected in cases.items():
        S, per = T._key_splits(tiles, n, bn, cpu, None)
        assert (S, per) == expected, (tiles, n, bn)
        assert per % bn == 0 and (S - 1) * per < n <= S * per   # every split has keys
    assert T._key_splits(1, 37, 16, cpu, 64) == (3, 16)       # forced: one per key block


def test_leaf_attention_interpreted_peaked_and_low_precision(interp):
    _runtime_loops()
    gen = torch.Generator().manual_seed(3)
    args = _attention_inputs(gen, 2, 45, 32, 3, 0.5)
    # A cold softmax: scores in the hundreds, entropy near 0; H = log l - u/l must
    # not lose it to cancellation.
    _check_attention(interp, dict(args, temperature=0.02), torch.float64, block_q=16, block_n=16)
    _check_attention(interp, args, torch.float32, block_q=16, block_n=16)
    _check_attention(interp, args, torch.float16)


def test_interpreted_autograd_falls_back_to_the_reference(interp):
    args = _step_inputs(torch.Generator().manual_seed(0), 1, 5, 8, 8)
    args["x"].requires_grad_(True)
    x_new, e, g = interp.leaf_step(**args)
    g.sum().backward()
    assert args["x"].grad is not None


def test_interpreted_mixed_dtypes_name_the_argument(interp):
    args = _step_inputs(torch.Generator().manual_seed(0), 1, 5, 8, 8)
    with pytest.raises(TypeError, match="x_bar has dtype torch.float32"):
        interp.leaf_step(**dict(args, x_bar=args["x_bar"].float()))



def _no_fallback(*args, **kwargs):
    raise AssertionError("the fused kernel fell back to the reference")


@pytest.mark.parametrize("scenario", ["open tree with memory", "audio_stream"])
def test_simulate_through_interpreted_kernels_equals_reference(interp, monkeypatch, scenario):
    """The simulator with the fused kernels behind the dispatch (as CUDA has them) gives the
    reference run's events and cost, and its states to rounding: the kernels' calling
    conventions hold for the layouts a run hands them (every leaf open, some open)."""
    from rtnclock import simulate
    from rtnclock.scenarios import audio_stream
    from tests.problems import assert_same_run, smooth_stream, test_config

    _runtime_loops()
    if scenario == "audio_stream":         # free gates: some leaves open, some not, per stream
        cfg = audio_stream.default_config().replace(dtype="float64")

        def stream():                      # streamed chunk by chunk: one per run
            return audio_stream.make_stream(cfg, duration=0.6, batch=2)
    else:
        cfg = test_config(K=2, gate_mode="open", memory_size=4, escalation_threshold=1.0,
                          method="rk4")

        def stream():
            return smooth_stream(cfg, 0.06, batch=2)
    want = simulate(cfg, stream())
    calls = {name: 0 for name in ("leaf_attention", "leaf_vector_field")}

    def counted(name):
        def call(*args, **kwargs):
            calls[name] += 1
            return getattr(interp, name)(*args, **kwargs)
        return call
    monkeypatch.setattr(interp, "reference", type("NoReference", (), {
        "leaf_attention": staticmethod(_no_fallback), "leaf_vector_field": staticmethod(_no_fallback)}))
    monkeypatch.setitem(kernels._FUSED, "cpu", {name: counted(name) for name in calls})
    got = simulate(cfg, stream())
    assert all(calls.values()), calls
    # Both scenarios step on a fixed grid (RK4), so the same steps are taken and the
    # states differ by the kernels' summation order alone.
    assert_same_run(got, want, atol=1e-12)

# ---------------------------------------------------------------- sm_90 builds (CPU)


# Each kernel at its default tile sizes must build for the H100/H200 (sm_90)
# without spilling registers to local memory and within the shared memory a
# block can have there (kernels.sm90: Triton builds for it without the GPU).
GPU_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("d", [64, pytest.param(32, marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("name", ["leaf_step", "leaf_vector_field", "leaf_attention"])
def test_kernels_build_for_sm90_without_spills(name, dtype, d):
    pytest.importorskip("triton")
    if INTERPRETING:
        pytest.skip("the interpreter builds nothing")
    import triton.language as tl

    from rtnclock.kernels import sm90
    from rtnclock.kernels import triton_leaf as T

    acc = tl.float64 if dtype == torch.float64 else tl.float32
    builds = []
    if name == "leaf_attention":
        bq, bn = T._attention_block(dtype, d)
        tiles = {"tile_b_ptr": "*i32", "tile_q0_ptr": "*i32", "tile_q1_ptr": "*i32"}
        partial = {f"{p}_ptr": "*fp64" if dtype == torch.float64 else "*fp32"
                   for p in ("pm", "pl", "pu", "pacc")}
        # One pass, and both passes of split keys.
        for split in (False, True):
            builds.append(sm90.build(T._attention_kernel, dtype, {"n", "d", "M", "keys_per_split"},
                                     dict(D=d, BLOCK_Q=bq, BLOCK_N=bn, ACC=acc, PREC="ieee",
                                          SPLIT=split), dict(tiles, mvalid_ptr="*u8", **partial)))
        builds.append(sm90.build(T._attention_combine, dtype, {"d", "splits"},
                                 dict(D=d, BLOCK_Q=bq, ACC=acc), dict(tiles, **partial),
                                 num_warps=T._COMBINE_WARPS))
    elif name == "leaf_step":
        builds.append(sm90.leaf_step(dtype, d, d, block_rows=T._row_block(dtype, d),
                                     cols=T._COLS, num_warps=T._WARPS))
    else:
        builds.append(sm90.build(T._vector_field_kernel, dtype, {"rows", "d"},
                                 dict(D=d, BLOCK_R=T._row_block(dtype, d), JC=T._COLS, ACC=acc,
                                      PREC="ieee")))
    for built in builds:
        assert built.spilled == 0, built.log
        assert built.shared <= sm90.SHARED_LIMIT


# ---------------------------------------------------------------- compiled (CUDA)


@pytest.fixture(scope="module")
def compiled():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    from rtnclock.kernels import triton_leaf

    if triton_leaf.INTERPRETED:
        pytest.skip("TRITON_INTERPRET is set: these tests are for the compiled kernels")
    return triton_leaf


@pytest.mark.gpu
def test_get_returns_triton_on_cuda(compiled):
    for name in ("leaf_attention", "leaf_step", "leaf_vector_field"):
        assert kernels.get(name, "cuda") is getattr(compiled, name)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("B, n, d, d_in",
                         [(1, 100_003, 32, 32), (4, 5_000, 64, 24), (2, 777, 8, 8)])
def test_leaf_step_gpu(compiled, dtype, B, n, d, d_in):
    args = _step_inputs(torch.Generator().manual_seed(n), B, n, d, d_in)
    _check_step(compiled, args, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B, n, d, d_in", [(1, 100_003, 32, 32), (4, 5_000, 64, 24)])
@pytest.mark.parametrize("keep", [False, True])
def test_leaf_step_gpu_persistent(compiled, dtype, B, n, d, d_in, keep):
    """Two programs per multiprocessor looping over the tiles, three-stage pipeline;
    the weights loaded once per tile, or once per program (whole columns)."""
    args = _step_inputs(torch.Generator().manual_seed(n), B, n, d, d_in)
    kw = dict(cols=d, block_rows=32, keep_weights=True) if keep else {}
    _check_step(compiled, args, dtype, "cuda", per_sm=2, stages=3, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("B, n, d, d_in", [(1, 100_003, 32, 32), (4, 5_000, 64, 24)])
def test_leaf_step_gpu_tf32x3_keeps_float32_accuracy(compiled, B, n, d, d_in):
    """Three tf32 tensor-core products per matmul: float32's tolerance still holds."""
    args = _step_inputs(torch.Generator().manual_seed(n), B, n, d, d_in)
    _check_step(compiled, args, torch.float32, "cuda", input_precision="tf32x3")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("R, d", [(100_003, 32), (5_000, 64), (33, 8)])
def test_leaf_vector_field_gpu(compiled, dtype, R, d):
    _check_vector_field(compiled, torch.Generator().manual_seed(R), R, d, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("open_fraction", [0.0, 0.01, 0.1, 1.0])
@pytest.mark.parametrize("B, n, d, M", [(1, 4096, 32, 0), (2, 3000, 64, 8), (5, 333, 8, 3)])
def test_leaf_attention_gpu(compiled, dtype, B, n, d, M, open_fraction):
    gen = torch.Generator().manual_seed(n + M)
    _check_attention(compiled, _attention_inputs(gen, B, n, d, M, open_fraction), dtype, "cuda")


def test_block_levels_take_their_vector_field_from_the_dispatch(monkeypatch):
    """A level's tanh right-hand side on rows is the kernels' (what CUDA swaps for the fused one)."""
    from rtnclock import RTNModel, simulate
    from tests.problems import smooth_stream, test_config
    calls = []

    def spy(h, drive, W_h, tau):
        calls.append(h.shape)
        return reference.leaf_vector_field(h, drive, W_h, tau)
    monkeypatch.setitem(kernels._FUSED, "cpu", {"leaf_vector_field": spy})
    cfg = test_config(gate_mode="open")
    run = simulate(cfg, smooth_stream(cfg, 0.08), model=RTNModel(cfg))
    monkeypatch.setitem(kernels._FUSED, "cpu", {})
    plain = simulate(cfg, smooth_stream(cfg, 0.08), model=RTNModel(cfg))
    assert calls and {s[1] for s in calls} == {6}
    for a, b in zip(run.final_states(), plain.final_states()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
