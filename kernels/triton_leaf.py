"""Fused leaf-neuron kernels in Triton, same signatures as ``reference``.

* ``leaf_step``: inertial Euler step, block-spin prediction, surprise and gate in
  one pass over the rows (one program per ``block_rows`` rows, or a persistent
  grid looping over them; the weights are loaded once per tile, or once per
  persistent program with ``keep_weights``).
* ``leaf_vector_field``: the leaves' right-hand side at one solver stage.
* ``leaf_attention``: gated attention over the compacted open queries with an
  online (flash-style) softmax over [own ring-buffer slots + the stream's ``n``
  keys] that also accumulates the entropy, so no ``N x n`` weight matrix exists;
  with few query tiles, programs split the keys and a second kernel folds them.

Float32 matmuls use ``input_precision="ieee"`` (no TF32) so that float32 and
float64 agree with the reference to rounding; float16/bfloat16 multiply on the
tensor cores with float32 accumulation and do everything else in float32.

The kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter:
Triton 3.9 chooses interpreted or compiled when ``@triton.jit`` runs, that is
when this module is imported, so ``TRITON_INTERPRET=1`` must be set before the
import (``INTERPRETED`` records which it got). With autograd recording, the
calls fall back to the reference, which has a backward pass.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import reference

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Masked scores and the initial running max: a finite "minus infinity", so that
# 0 * (s - m) stays 0 (with -inf it is NaN, and numpy warns in the interpreter).
_NEG = tl.constexpr(-1.0e30)


@triton.jit
def _tanh(z):
    # exp-based so that one formula serves fp32, fp64 and the interpreter
    # (libdevice's tanh exists only on the GPU); absolute error is ~eps.
    t = tl.exp(-2.0 * tl.abs(z))
    y = (1.0 - t) / (1.0 + t)
    return tl.where(z < 0, -y, y)


@triton.jit
def _sigmoid(x):
    # tl.sigmoid's exp(-x) overflows for x << 0 (harmless, but numpy warns in the interpreter).
    t = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + t), t / (1.0 + t))


@triton.jit
def _load_wt(w_ptr, n_out, n_in, i0, j0, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Rows ``i0..`` and columns ``j0..`` of ``W^T`` for a row-major ``W [n_out, n_in]``,
    as a zero-padded ``[ROWS, COLS]`` tile."""
    i = i0 + tl.arange(0, ROWS)                               # input feature
    j = j0 + tl.arange(0, COLS)                               # output feature
    mask = (i[:, None] < n_in) & (j[None, :] < n_out)
    return tl.load(w_ptr + j[None, :] * n_in + i[:, None], mask=mask, other=0.0)


@triton.jit
def _leaf_step_tile(tile, x_ptr, u_ptr, p_ptr, xbar_ptr, dem_ptr,
                    wrec_ptr, win_ptr, wp_ptr, c_ptr, r_ptr, s_ptr,
                    xnew_ptr, e_ptr, g_ptr,
                    rows, d, d_in, a, beta, bias, rate, W,
                    D: tl.constexpr, DI: tl.constexpr, BLOCK_R: tl.constexpr,
                    JC: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    # W: None, and the weights are loaded here, JC output features at a time; or
    # the whole weights that a persistent program keeps (_kept_weights, JC == D).
    r = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < rows
    r64 = r.to(tl.int64)                                      # rows * d may pass 2**31
    k = tl.arange(0, D)
    ki = tl.arange(0, DI)
    m_d = rmask[:, None] & (k[None, :] < d)
    m_di = rmask[:, None] & (ki[None, :] < d_in)
    x = tl.load(x_ptr + r64[:, None] * d + k[None, :], mask=m_d, other=0.0)       # [BLOCK_R, D]
    prior = tl.load(p_ptr + r64[:, None] * d + k[None, :], mask=m_d, other=0.0)
    u = tl.load(u_ptr + r64[:, None] * d_in + ki[None, :], mask=m_di, other=0.0)  # [BLOCK_R, DI]
    if W is None:
        s_t = _load_wt(s_ptr, d_in, d, 0, 0, D, DI)
    else:
        s_t = W[5]
    x_hat = tl.dot(prior, s_t, input_precision=PREC)
    scale = tl.full([], rate, ACC)
    # JC output features at a time: whole [D, D] weight tiles (five of them) do
    # not fit in registers at d = 64. Each x_new chunk is also a K-slice of x_hat.
    for j0 in range(0, D, JC):
        j = j0 + tl.arange(0, JC)
        mj = rmask[:, None] & (j[None, :] < d)
        if W is None:
            wrec_t = _load_wt(wrec_ptr, d, d, 0, j0, D, JC)
            win_t = _load_wt(win_ptr, d, d_in, 0, j0, DI, JC)
            wp_t = _load_wt(wp_ptr, d, d, 0, j0, D, JC)
            c_j = tl.load(c_ptr + j, mask=j < d, other=0.0).to(ACC)
        else:
            wrec_t, win_t, wp_t, c_j = W[0], W[1], W[2], W[3]
        z = tl.dot(x, wrec_t, input_precision=PREC)
        z += tl.dot(u, win_t, input_precision=PREC)
        z += tl.dot(prior, wp_t, input_precision=PREC)
        z = z.to(ACC) + c_j[None, :]
        off = r64[:, None] * d + j[None, :]
        if JC == D:
            xj = x.to(ACC)
        else:
            xj = tl.load(x_ptr + off, mask=mj, other=0.0).to(ACC)   # [BLOCK_R, JC], a cache hit
        x_new = (xj + scale * (_tanh(z) - xj)).to(xnew_ptr.dtype.element_ty)
        tl.store(xnew_ptr + off, x_new, mask=mj)
        if W is None:                                         # loaded late: fewer live registers
            r_t = _load_wt(r_ptr, d_in, d, j0, 0, JC, DI)
        else:
            r_t = W[4]
        # Like the reference, the prediction reads x_new rounded to the storage dtype.
        x_hat += tl.dot(x_new, r_t, input_precision=PREC)
    x_bar = tl.load(xbar_ptr + r64[:, None] * d_in + ki[None, :], mask=m_di, other=0.0)
    diff = x_bar.to(ACC) - x_hat.to(ACC)                      # padded columns are 0 - 0
    e = tl.sum(diff * diff, axis=1) / d_in                    # [BLOCK_R]
    dem = tl.load(dem_ptr + r64, mask=rmask, other=0.0).to(ACC)
    arg = tl.full([], a, ACC) * e + tl.full([], beta, ACC) * dem + tl.full([], bias, ACC)
    tl.store(e_ptr + r64, e.to(e_ptr.dtype.element_ty), mask=rmask)
    tl.store(g_ptr + r64, _sigmoid(arg).to(g_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _kept_weights(wrec_ptr, win_ptr, wp_ptr, c_ptr, r_ptr, s_ptr, d, d_in,
                  D: tl.constexpr, DI: tl.constexpr, ACC: tl.constexpr):
    """The step's weights, whole, in the order ``_leaf_step_tile`` reads them from ``W``."""
    j = tl.arange(0, D)
    return (_load_wt(wrec_ptr, d, d, 0, 0, D, D), _load_wt(win_ptr, d, d_in, 0, 0, DI, D),
            _load_wt(wp_ptr, d, d, 0, 0, D, D), tl.load(c_ptr + j, mask=j < d, other=0.0).to(ACC),
            _load_wt(r_ptr, d_in, d, 0, 0, D, DI), _load_wt(s_ptr, d_in, d, 0, 0, D, DI))


@triton.jit
def _leaf_step_kernel(x_ptr, u_ptr, p_ptr, xbar_ptr, dem_ptr,
                      wrec_ptr, win_ptr, wp_ptr, c_ptr, r_ptr, s_ptr,
                      xnew_ptr, e_ptr, g_ptr,
                      rows, d, d_in,
                      a: tl.float64, beta: tl.float64, bias: tl.float64, rate: tl.float64,
                      D: tl.constexpr, DI: tl.constexpr, BLOCK_R: tl.constexpr,
                      JC: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                      STAGES: tl.constexpr, KEEP: tl.constexpr):
    if STAGES == 0:                                           # one tile per program
        _leaf_step_tile(tl.program_id(0), x_ptr, u_ptr, p_ptr, xbar_ptr, dem_ptr, wrec_ptr,
                        win_ptr, wp_ptr, c_ptr, r_ptr, s_ptr, xnew_ptr, e_ptr, g_ptr,
                        rows, d, d_in, a, beta, bias, rate, None, D, DI, BLOCK_R, JC, ACC, PREC)
    else:
        # A persistent grid takes the tiles in turn; the loop lets Triton prefetch
        # the next tiles' rows (STAGES - 1 ahead) while this one computes. KEEP:
        # each program loads the weights once, instead of once per tile.
        W = None
        if KEEP:
            W = _kept_weights(wrec_ptr, win_ptr, wp_ptr, c_ptr, r_ptr, s_ptr, d, d_in, D, DI, ACC)
        n_tiles = tl.cdiv(rows, BLOCK_R)
        for tile in tl.range(tl.program_id(0), n_tiles, tl.num_programs(0), num_stages=STAGES):
            _leaf_step_tile(tile, x_ptr, u_ptr, p_ptr, xbar_ptr, dem_ptr, wrec_ptr,
                            win_ptr, wp_ptr, c_ptr, r_ptr, s_ptr, xnew_ptr, e_ptr, g_ptr,
                            rows, d, d_in, a, beta, bias, rate, W, D, DI, BLOCK_R, JC, ACC, PREC)


@triton.jit
def _vector_field_kernel(h_ptr, drive_ptr, w_ptr, out_ptr, rows, d, tau: tl.float64,
                         D: tl.constexpr, BLOCK_R: tl.constexpr, JC: tl.constexpr,
                         ACC: tl.constexpr, PREC: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < rows
    r64 = r.to(tl.int64)
    k = tl.arange(0, D)
    h = tl.load(h_ptr + r64[:, None] * d + k[None, :],
                mask=rmask[:, None] & (k[None, :] < d), other=0.0)                # [BLOCK_R, D]
    inv_tau = 1.0 / tl.full([], tau, ACC)
    for j0 in range(0, D, JC):                                # JC outputs at a time (leaf_step)
        j = j0 + tl.arange(0, JC)
        mj = rmask[:, None] & (j[None, :] < d)
        off = r64[:, None] * d + j[None, :]
        z = tl.dot(h, _load_wt(w_ptr, d, d, 0, j0, D, JC), input_precision=PREC)
        z = z.to(ACC) + tl.load(drive_ptr + off, mask=mj, other=0.0).to(ACC)
        hj = tl.load(h_ptr + off, mask=mj, other=0.0).to(ACC)
        out = (_tanh(z) - hj) * inv_tau
        tl.store(out_ptr + off, out.to(out_ptr.dtype.element_ty), mask=mj)


@triton.jit
def _fold(m_i, l_i, u_i, m_new, dl, du):
    """Rescale the running mass ``l = sum e^(s-m)`` and ``u = sum e^(s-m) (s-m)`` from
    max ``m_i`` to ``m_new`` and add a block's ``dl, du``; also returns the rescale."""
    alpha = tl.exp(m_i - m_new)
    # u is kept relative to the running max, so H = log l - u/l never subtracts
    # two large numbers (logsumexp - E_w[s] would, for large scores).
    u_new = alpha * (u_i + l_i * (m_i - m_new)) + du
    return l_i * alpha + dl, u_new, alpha


@triton.jit
def _attention_kernel(q_ptr, mk_ptr, mv_ptr, mvalid_ptr, k_ptr, v_ptr,
                      tile_b_ptr, tile_q0_ptr, tile_q1_ptr, a_ptr, h_ptr,
                      pm_ptr, pl_ptr, pu_ptr, pacc_ptr,
                      n, d, M, keys_per_split, inv_t: tl.float64,
                      D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
                      ACC: tl.constexpr, PREC: tl.constexpr, SPLIT: tl.constexpr):
    t = tl.program_id(0)
    q0 = tl.load(tile_q0_ptr + t)
    q1 = tl.load(tile_q1_ptr + t)
    if q0 >= q1:                                              # spare program of the upper bound
        return
    b = tl.load(tile_b_ptr + t).to(tl.int64)
    rq = (q0 + tl.arange(0, BLOCK_Q)).to(tl.int64)            # every row of a tile is in stream b
    rmask = rq < q1
    dk = tl.arange(0, D)
    dmask = dk < d
    qmask = rmask[:, None] & dmask[None, :]
    q = tl.load(q_ptr + rq[:, None] * d + dk[None, :], mask=qmask, other=0.0)    # [BLOCK_Q, D]
    scale = tl.full([], inv_t, ACC)
    # Split s of the stream's keys (SPLIT: one of several programs on this tile).
    s_id = tl.program_id(1)
    k_lo = s_id * keys_per_split
    k_hi = tl.minimum(k_lo + keys_per_split, n)

    m_i = tl.full([BLOCK_Q], _NEG, ACC)
    l_i = tl.zeros([BLOCK_Q], ACC)
    u_i = tl.zeros([BLOCK_Q], ACC)
    acc = tl.zeros([BLOCK_Q, D], ACC)
    # The stream's current keys, BLOCK_N at a time: the O(open * n) part.
    for start in range(k_lo, k_hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        cmask = cols < k_hi
        kv_off = (b * n + cols.to(tl.int64)) * d
        kvmask = cmask[:, None] & dmask[None, :]
        kt = tl.load(k_ptr + kv_off[None, :] + dk[:, None],
                     mask=dmask[:, None] & cmask[None, :], other=0.0)            # [D, BLOCK_N]
        s = tl.dot(q, kt, input_precision=PREC).to(ACC) * scale            # [BLOCK_Q, BLOCK_N]
        s = tl.where(cmask[None, :], s, _NEG)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.where(cmask[None, :], tl.exp(s - m_new[:, None]), 0.0)
        du = tl.sum(p * (s - m_new[:, None]), axis=1)
        l_i, u_i, alpha = _fold(m_i, l_i, u_i, m_new, tl.sum(p, axis=1), du)
        m_i = m_new
        v = tl.load(v_ptr + kv_off[:, None] + dk[None, :], mask=kvmask, other=0.0)  # [BLOCK_N, D]
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC).to(ACC)
    # Each query's own ring buffer (the first split takes it): M slots, one
    # [BLOCK_Q, D] row-gather per slot.
    qa = q.to(ACC)
    for slot in range(0, tl.where(s_id == 0, M, 0)):
        mem_off = (rq * M + slot) * d
        km = tl.load(mk_ptr + mem_off[:, None] + dk[None, :], mask=qmask, other=0.0).to(ACC)
        valid = tl.load(mvalid_ptr + rq * M + slot, mask=rmask, other=0) != 0
        s = tl.where(valid, tl.sum(qa * km, axis=1) * scale, _NEG)              # [BLOCK_Q]
        m_new = tl.maximum(m_i, s)
        p = tl.where(valid, tl.exp(s - m_new), 0.0)
        l_i, u_i, alpha = _fold(m_i, l_i, u_i, m_new, p, p * (s - m_new))
        m_i = m_new
        vm = tl.load(mv_ptr + mem_off[:, None] + dk[None, :], mask=qmask, other=0.0).to(ACC)
        acc = acc * alpha[:, None] + p[:, None] * vm
    if SPLIT:
        # This split's running max, mass, entropy term and unnormalised output, for
        # _attention_combine; rows past q1 are written too and never read.
        part = (t * tl.num_programs(1) + s_id).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        tl.store(pm_ptr + part, m_i)
        tl.store(pl_ptr + part, l_i)
        tl.store(pu_ptr + part, u_i)
        tl.store(pacc_ptr + part[:, None] * D + dk[None, :], acc)
    else:
        _attention_store(acc, l_i, u_i, rq, rmask, dk, qmask, a_ptr, h_ptr, d)


@triton.jit
def _attention_store(acc, l_i, u_i, rq, rmask, dk, qmask, a_ptr, h_ptr, d):
    """Normalise and write a tile's output ``acc / l`` and entropy ``log l - u / l``."""
    out = acc / l_i[:, None]
    ent = tl.log(l_i) - u_i / l_i
    tl.store(a_ptr + rq[:, None] * d + dk[None, :], out.to(a_ptr.dtype.element_ty), mask=qmask)
    tl.store(h_ptr + rq, ent.to(h_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _attention_combine(tile_q0_ptr, tile_q1_ptr, pm_ptr, pl_ptr, pu_ptr, pacc_ptr, a_ptr, h_ptr,
                       d, splits, D: tl.constexpr, BLOCK_Q: tl.constexpr, ACC: tl.constexpr):
    """Fold a query tile's ``splits`` partial softmaxes (``_attention_kernel`` with SPLIT)."""
    t = tl.program_id(0)
    q0 = tl.load(tile_q0_ptr + t)
    q1 = tl.load(tile_q1_ptr + t)
    if q0 >= q1:
        return
    rq = (q0 + tl.arange(0, BLOCK_Q)).to(tl.int64)
    rmask = rq < q1
    dk = tl.arange(0, D)
    qmask = rmask[:, None] & (dk < d)[None, :]
    m_i = tl.full([BLOCK_Q], _NEG, ACC)
    l_i = tl.zeros([BLOCK_Q], ACC)
    u_i = tl.zeros([BLOCK_Q], ACC)
    acc = tl.zeros([BLOCK_Q, D], ACC)
    for s_id in range(0, splits):
        part = (t * splits + s_id).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        m_s = tl.load(pm_ptr + part)
        l_s = tl.load(pl_ptr + part)
        m_new = tl.maximum(m_i, m_s)
        # The split's mass and entropy term, moved from its own max to m_new.
        beta = tl.exp(m_s - m_new)
        du = beta * (tl.load(pu_ptr + part) + l_s * (m_s - m_new))
        l_i, u_i, alpha = _fold(m_i, l_i, u_i, m_new, beta * l_s, du)
        m_i = m_new
        acc_s = tl.load(pacc_ptr + part[:, None] * D + dk[None, :])
        acc = acc * alpha[:, None] + beta[:, None] * acc_s
    _attention_store(acc, l_i, u_i, rq, rmask, dk, qmask, a_ptr, h_ptr, d)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pad(n: int) -> int:
    # tl.arange needs a power of two; tl.dot needs K >= 16 for half types.
    return max(16, triton.next_power_of_2(n))


# Tile sizes: the largest whose sm_90 build (ptxas, 8 warps) spills no registers,
# read from the compiled kernels' resource usage rather than from timings.
_WARPS = 8
_COLS = 16  # output features per step of the row kernels' inner loop
_COMBINE_WARPS = 4  # the attention's fold of split keys: elementwise, little work per row


def _row_block(dtype: torch.dtype, D: int) -> int:
    if D <= 32:
        return 64
    if D <= 64:
        return 32 if dtype == torch.float64 else 64
    return 16


def _attention_block(dtype: torch.dtype, D: int) -> tuple[int, int]:
    if dtype == torch.float64:
        return (32, 32) if D <= 32 else (16, 16)
    return (64, 64) if D <= 32 else (32, 64) if D <= 64 else (16, 32)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 4                                              # the interpreter: any small grid
    return torch.cuda.get_device_properties(device).multi_processor_count


def _check(dtype: torch.dtype, **tensors: torch.Tensor) -> None:
    """Raise if a tensor is on the wrong device or has another dtype than ``dtype``."""
    if dtype not in _SUPPORTED:
        raise TypeError(f"triton_leaf supports dtypes {_SUPPORTED}, got {dtype}")
    if INTERPRETED and dtype == torch.bfloat16:
        # Triton 3.9's interpreter does bfloat16 arithmetic on the raw bits (x + y is NaN).
        raise TypeError("bfloat16 is not supported under TRITON_INTERPRET; use a GPU")
    for name, t in tensors.items():
        if t.dtype != dtype:
            raise TypeError(f"{name} has dtype {t.dtype}; all inputs must be {dtype}")
        if not (t.is_cuda or (INTERPRETED and t.device.type == "cpu")):
            raise ValueError(f"{name} is on {t.device}: triton_leaf needs CUDA tensors, "
                             "or CPU tensors with TRITON_INTERPRET=1 set before its import")


def _records_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def leaf_step(x, u, prior, W_rec, W_in, W_p, c, R, S, x_bar, demand, a, beta, bias, tau, dt,
              *, block_rows: int | None = None, input_precision: str = "ieee",
              cols: int | None = None, num_warps: int | None = None,
              per_sm: int = 0, stages: int = 2, keep_weights: bool = False):
    """Fused ``reference.leaf_step`` (same arguments and returns, see there).

    Args:
        block_rows: rows per tile (a power of two); default by dtype and ``d``.
        input_precision: float32 matmuls: ``"ieee"`` (exact), or ``"tf32"`` /
            ``"tf32x3"`` for the tensor cores.
        cols: output features per step of the tile's loop (a power of two dividing
            the padded ``d``); num_warps: warps per program. Defaults: the tiles
            that build without spills.
        per_sm: 0 runs one program per tile; k > 0 a persistent grid of k
            programs per multiprocessor looping over the tiles, software-pipelined
            over ``stages`` tiles.
        keep_weights: with ``per_sm > 0``, each program loads the weights once and
            keeps them for all its tiles (``cols`` must then be the padded ``d``),
            instead of once per tile.

    ``a, beta, bias`` may be 0-d tensors; they are read as Python numbers (a
    device sync), so pass numbers in a hot loop.
    """
    ins = dict(x=x, u=u, prior=prior, W_rec=W_rec, W_in=W_in, W_p=W_p, c=c, R=R, S=S,
               x_bar=x_bar, demand=demand)
    if _records_grad(*ins.values()):
        return reference.leaf_step(x, u, prior, W_rec, W_in, W_p, c, R, S, x_bar, demand,
                                   a, beta, bias, tau, dt)
    _check(x.dtype, **ins)
    B, n, d = x.shape
    d_in = u.shape[-1]
    rows = B * n
    x_new = torch.empty_like(x)
    e = x.new_empty(B, n)
    g = x.new_empty(B, n)
    if rows == 0:
        return x_new, e, g
    D = _pad(d)
    block = block_rows or _row_block(x.dtype, max(D, _pad(d_in)))
    jc = min(cols or _COLS, D)
    if D % jc:
        raise ValueError(f"cols={cols} must be a power of two dividing the padded d={D}")
    if keep_weights and (per_sm <= 0 or jc != D):
        raise ValueError(f"keep_weights needs per_sm > 0 and cols = the padded d = {D} "
                         f"(got per_sm={per_sm}, cols={jc})")
    tiles = triton.cdiv(rows, block)
    grid = min(tiles, per_sm * _multiprocessors(x.device)) if per_sm > 0 else tiles
    ins = {k: v.contiguous() for k, v in ins.items()}
    _leaf_step_kernel[(grid,)](
        ins["x"], ins["u"], ins["prior"], ins["x_bar"], ins["demand"],
        ins["W_rec"], ins["W_in"], ins["W_p"], ins["c"], ins["R"], ins["S"],
        x_new, e, g, rows, d, d_in,
        float(a), float(beta), float(bias), float(dt) / float(tau),
        D=D, DI=_pad(d_in), BLOCK_R=block, JC=jc, ACC=_acc(x.dtype), PREC=input_precision,
        STAGES=stages if per_sm > 0 else 0, KEEP=keep_weights, num_warps=num_warps or _WARPS,
        enable_fp_fusion=True)
    return x_new, e, g


def leaf_vector_field(h, drive, W_h, tau, *, block_rows: int | None = None,
                      input_precision: str = "ieee"):
    """Fused ``reference.leaf_vector_field`` (same arguments and returns, see there).

    Args:
        block_rows: rows per program (a power of two); default by ``d``.
        input_precision: as for ``leaf_step``.
    """
    if _records_grad(h, drive, W_h):
        return reference.leaf_vector_field(h, drive, W_h, tau)
    _check(h.dtype, h=h, drive=drive, W_h=W_h)
    rows, d = h.shape
    out = torch.empty_like(h)
    if rows == 0:
        return out
    D = _pad(d)
    block = block_rows or (64 if D <= 64 else 32)
    _vector_field_kernel[(triton.cdiv(rows, block),)](
        h.contiguous(), drive.contiguous(), W_h.contiguous(), out, rows, d, float(tau),
        D=D, BLOCK_R=block, JC=_COLS, ACC=_acc(h.dtype), PREC=input_precision,
        num_warps=_WARPS, enable_fp_fusion=True)
    return out


def _tiles(stream: torch.Tensor, B: int, N: int, block_q: int):
    """Query tiles that never straddle two streams, built on the device without a sync.

    Returns ``(stream, first query, end of the stream's queries)`` per tile, int32
    ``[G]`` each, ``G = ceil(N / block_q) + B`` an upper bound on the tile count;
    spare tiles have ``first == end == 0``.
    """
    dev = stream.device
    ids = torch.arange(B, device=dev)
    start = torch.searchsorted(stream, ids)                   # [B] first query of each stream
    end = torch.searchsorted(stream, ids, right=True)
    per = (end - start + block_q - 1) // block_q              # tiles per stream
    cum = torch.cumsum(per, 0)
    t = torch.arange(triton.cdiv(N, block_q) + B, device=dev)
    tb = torch.searchsorted(cum, t, right=True)               # [G] stream of each tile (B: spare)
    live = tb < B
    tbc = tb.clamp(max=B - 1)
    q0 = start[tbc] + (t - (cum[tbc] - per[tbc])) * block_q
    q0 = torch.where(live, q0, 0)
    q1 = torch.where(live, end[tbc], 0)
    return tbc.int(), q0.int(), q1.int()


# Programs the attention aims for, per multiprocessor, when it splits the keys.
_PROGRAMS_PER_SM = 4
# Keys a split reads at least: its partial result (block_q x d) stays small
# against its keys and values (2 x keys x d).
_MIN_SPLIT_KEYS = 1024


def _key_splits(live_tiles: int, n: int, block_n: int, device: torch.device,
                splits: int | None) -> tuple[int, int]:
    """``(splits, keys per split)``: how many programs share each query tile's keys.

    Few open leaves make few query tiles, too few programs to fill the GPU, each
    looping over all ``n`` keys; splitting the keys brings the count up to
    ``_PROGRAMS_PER_SM`` per multiprocessor. ``splits`` forces a count (tests).
    """
    blocks = max(1, triton.cdiv(n, block_n))
    if splits is None:
        want = triton.cdiv(_PROGRAMS_PER_SM * _multiprocessors(device), live_tiles)
        splits = min(want, max(1, n // _MIN_SPLIT_KEYS))
    per = triton.cdiv(blocks, max(1, min(splits, blocks)))    # key blocks per split
    return triton.cdiv(blocks, per), per * block_n


def leaf_attention(q, stream, mem_k, mem_v, mem_valid, keys, values, temperature,
                   *, block_q: int | None = None, block_n: int | None = None,
                   input_precision: str = "ieee", splits: int | None = None):
    """Fused ``reference.leaf_attention`` (same arguments and returns, see there).

    ``stream`` must be sorted ascending (as ``nonzero`` gives it). Each program
    takes up to ``block_q`` queries of one stream and streams that stream's keys
    ``block_n`` at a time, then the queries' own ring-buffer slots. When there
    are too few query tiles to fill the GPU, several programs share a tile's keys
    and a second kernel folds their partial softmaxes (as flash-decoding does).

    Args:
        block_q, block_n: tile sizes (powers of two, >= 16); default by dtype and ``d``.
        input_precision: as for ``leaf_step``.
        splits: programs per query tile (at most one per ``block_n`` keys);
            default: by the number of query tiles and multiprocessors.
    """
    N, d = q.shape
    B, n, _ = keys.shape
    if _records_grad(q, mem_k, mem_v, keys, values):
        return reference.leaf_attention(q, stream, mem_k, mem_v, mem_valid, keys, values,
                                        temperature)
    _check(q.dtype, q=q, mem_k=mem_k, mem_v=mem_v, keys=keys, values=values)
    a = q.new_empty(N, d)
    ent = q.new_empty(N)
    if N == 0:
        return a, ent
    D = _pad(d)
    bq, bn = _attention_block(q.dtype, D)
    bq, bn = block_q or bq, block_n or bn
    tile_b, tile_q0, tile_q1 = _tiles(stream, B, N, bq)
    M = mem_k.shape[1]
    valid = mem_valid.contiguous().view(torch.uint8)          # bool pointers differ by backend
    G = tile_b.shape[0]
    S, per_split = _key_splits(triton.cdiv(N, bq), n, bn, q.device, splits)
    if S > 1:                                                 # each split's m, l, u and output
        acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        pm, pl, pu = (q.new_empty(G * S * bq, dtype=acc_dtype) for _ in range(3))
        pacc = q.new_empty(G * S * bq * D, dtype=acc_dtype)
    else:
        pm = pl = pu = pacc = ent                             # not touched without SPLIT
    _attention_kernel[(G, S)](
        q.contiguous(), mem_k.contiguous(), mem_v.contiguous(), valid,
        keys.contiguous(), values.contiguous(), tile_b, tile_q0, tile_q1, a, ent,
        pm, pl, pu, pacc, n, d, M, per_split, 1.0 / float(temperature),
        D=D, BLOCK_Q=bq, BLOCK_N=bn, ACC=_acc(q.dtype), PREC=input_precision, SPLIT=S > 1,
        num_warps=_WARPS, enable_fp_fusion=True)
    if S > 1:
        _attention_combine[(G,)](tile_q0, tile_q1, pm, pl, pu, pacc, a, ent, d, S,
                                 D=D, BLOCK_Q=bq, ACC=_acc(q.dtype), num_warps=_COMBINE_WARPS)
    return a, ent


__all__ = ["INTERPRETED", "leaf_attention", "leaf_step", "leaf_vector_field"]
