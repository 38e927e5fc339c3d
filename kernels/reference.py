"""Plain-torch leaf kernels: the truth every fused kernel is tested against.

Shapes: ``B`` streams, ``n`` leaves, ``d`` leaf size, ``M`` ring-buffer slots,
``N`` open (gated-in) leaves after compaction.
"""

from __future__ import annotations

import torch


def leaf_attention(q: torch.Tensor, stream: torch.Tensor, mem_k: torch.Tensor,
                   mem_v: torch.Tensor, mem_valid: torch.Tensor, keys: torch.Tensor,
                   values: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated geometric core: each open leaf attends over its own past and all leaves.

    Args:
        q: compacted queries of the open leaves, ``[N, d]``.
        stream: stream index of each query, ``[N]`` (sorted ascending).
        mem_k, mem_v, mem_valid: each query leaf's ring buffer ``[N, M, d]`` and
            which slots are filled ``[N, M]``.
        keys, values: every leaf's current key and value, ``[B, n, d]``.
        temperature: softmax temperature ``T``.

    Returns:
        ``(a, entropy)``: attention output ``[N, d]`` and the entropy of each
        query's attention weights in nats ``[N]``.

    The global part runs on queries padded per stream (``[B, P, d]``, ``P`` the
    most open leaves in one stream), so its cost is ``O(open * n)`` rather than
    dense ``O(n^2)``; weights are explicit because the entropy is an observable.
    """
    N, d = q.shape
    B, n, _ = keys.shape
    M = mem_k.shape[1]
    if N == 0:
        return q.new_zeros(0, d), q.new_zeros(0)
    # A stream holds at most n open leaves, so N = B*n means every stream has n:
    # the dense layout, known without counting (and without waiting for the device).
    if N == B * n:
        P, dense = n, True
    else:
        counts = torch.bincount(stream, minlength=B)                    # [B]
        P = int(counts.max())
        dense = P * B == N
    if dense:
        # Every stream has P queries (all leaves open, say): the rows are the
        # padded layout already, and padding and scattering are views.
        s_glob = (q.view(B, P, d) @ keys.transpose(1, 2)).view(N, n) / temperature
    else:
        offsets = torch.cumsum(counts, 0) - counts
        pos = torch.arange(N, device=q.device) - offsets[stream]        # rank within stream
        q_pad = q.new_zeros(B, P, d)
        q_pad[stream, pos] = q
        s_glob = (q_pad @ keys.transpose(1, 2))[stream, pos] / temperature  # [N, n]
    if M:
        # Batched products rather than einsum: same sums, a fraction of its dispatch cost.
        s_mem = (mem_k @ q.unsqueeze(-1)).squeeze(-1) / temperature     # [N, M]
        s_mem = s_mem.masked_fill(~mem_valid, float("-inf"))
        logits = torch.cat([s_mem, s_glob], dim=-1)                     # [N, M + n]
    else:
        logits = s_glob
    logw = torch.log_softmax(logits, dim=-1)
    w = logw.exp()
    if dense:
        glob = (w[:, M:].reshape(B, P, n) @ values).view(N, d)
    else:
        w_pad = q.new_zeros(B, P, n)
        w_pad[stream, pos] = w[:, M:]
        glob = (w_pad @ values)[stream, pos]
    if not M:              # no memory slots: no masked logits, so no -inf to clear
        return glob, -(w * logw).sum(-1)
    a = (w[:, :M].unsqueeze(1) @ mem_v).squeeze(1) + glob                # [N, d]
    entropy = -(w * logw.nan_to_num(neginf=0.0)).sum(-1)
    return a, entropy


def leaf_step(x: torch.Tensor, u: torch.Tensor, prior: torch.Tensor, W_rec: torch.Tensor,
              W_in: torch.Tensor, W_p: torch.Tensor, c: torch.Tensor, R: torch.Tensor,
              S: torch.Tensor, x_bar: torch.Tensor, demand: torch.Tensor, a, beta, bias,
              tau: float, dt: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fused leaf step: inertial core, prediction of the block-spin, surprise and gate.

    Defines what a fused kernel must compute::

        z     = x W_rec^T + u W_in^T + prior W_p^T + c
        x_new = x + (dt / tau) (tanh(z) - x)         # one explicit Euler step
        x_hat = x_new R^T + prior S^T                 # coarse path's prediction of x_bar
        e     = mean((x_bar - x_hat)^2, -1)           # surprise
        g     = sigmoid(a e + beta demand + bias)     # thermodynamic gate

    Args:
        x, prior: leaf states and the parent's prior ``[B, n, d]``.
        u: sensory input ``[B, n, d_in]``.
        W_rec, W_p: ``[d, d]``; W_in: ``[d, d_in]``; c: ``[d]``.
        R, S: readouts predicting the block-spin, ``[d_in, d]`` each.
        x_bar: block-spin of the receptive field's input ``[B, n, d_in]``.
        demand: the parent's gate ``[B, n]``.
        a, beta, bias: gate law (numbers or 0-d tensors).
        tau, dt: time constant and step, seconds.

    Returns:
        ``(x_new [B, n, d], e [B, n], g [B, n])``.
    """
    z = x @ W_rec.T + u @ W_in.T + prior @ W_p.T + c                     # [B, n, d]
    x_new = x + (dt / tau) * (torch.tanh(z) - x)
    x_hat = x_new @ R.T + prior @ S.T                                    # [B, n, d_in]
    e = (x_bar - x_hat).square().mean(-1)                                # [B, n]
    g = torch.sigmoid(a * e + beta * demand + bias)
    return x_new, e, g


def leaf_vector_field(h: torch.Tensor, drive: torch.Tensor, W_h: torch.Tensor,
                      tau: float) -> torch.Tensor:
    """The leaves' right-hand side at one solver stage: ``(tanh(h W_h^T + drive) - h) / tau``.

    Args:
        h: states, rows ``[R, d]``.
        drive: everything else entering the cell (input, prior, bias), ``[R, d]``.
        W_h: recurrent weights ``[d, d]``.
        tau: time constant, seconds.

    Returns:
        ``dh/dt``, ``[R, d]``.
    """
    # addmm: one kernel for the product and the drive (this runs at every stage).
    z = torch.addmm(drive, h, W_h.T)
    if torch.is_grad_enabled():
        return (torch.tanh(z) - h) / tau
    # Without autograd the fresh product can take the rest in place.
    return torch.tanh_(z).sub_(h).div_(tau)
