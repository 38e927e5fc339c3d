"""Leaf thermodynamic neuron: geometric core and its ring-buffer memory.

The inertial core is an ordinary level (``BlockLevel`` with the sensory stream
as ``up``).  The geometric core runs at the leaf's ticks, only for open leaves:
``a = softmax(q K^T / T) V`` over the leaf's own recent past (a ring buffer
written at its ticks) and every leaf's current key.  The math lives in
``rtnclock.kernels`` behind one dispatch point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import kernels
from .level import init_weight


@dataclass
class LeafMemory:
    """Ring buffers of past keys/values, one per leaf (state as data).

    Attributes:
        keys, values: ``[B, n, M, d]``.
        writes: total writes per leaf ``[B, n]``; slot ``writes % M`` is next.
    """

    keys: torch.Tensor
    values: torch.Tensor
    writes: torch.Tensor

    @classmethod
    def empty(cls, B: int, n: int, M: int, d: int, *, device, dtype) -> "LeafMemory":
        """Memory with no entries."""
        z = torch.zeros(B, n, M, d, device=device, dtype=dtype)
        return cls(z, z.clone(), torch.zeros(B, n, dtype=torch.long, device=device))

    def valid(self) -> torch.Tensor:
        """Which slots hold an entry: ``[B, n, M]``."""
        M = self.keys.shape[2]
        if M == 0:
            return self.writes.new_zeros((*self.writes.shape, 0), dtype=torch.bool)
        return torch.arange(M, device=self.writes.device) < self.writes.clamp(max=M).unsqueeze(-1)

    def write(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> None:
        """Append ``k, v`` (``[B, n, d]``) for the leaves where ``mask`` (``[B, n]``) holds."""
        M = self.keys.shape[2]
        if M == 0 or not bool(mask.any()):
            return
        b, i = mask.nonzero(as_tuple=True)
        slot = self.writes[b, i] % M
        self.keys[b, i, slot] = k[b, i]
        self.values[b, i, slot] = v[b, i]
        self.writes[b, i] += 1


class LeafCore(nn.Module):
    """Query/key/value projections of the leaves' geometric core."""

    def __init__(self, dim: int, *, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.W_q = init_weight(dim, dim, 1.0, generator, dtype)
        self.W_k = init_weight(dim, dim, 1.0, generator, dtype)
        self.W_v = init_weight(dim, dim, 1.0, generator, dtype)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Current keys and values of every leaf, ``[B, n, d]`` each."""
        return x @ self.W_k.T, x @ self.W_v.T

    def attend(self, x: torch.Tensor, open_: torch.Tensor, memory: LeafMemory,
               temperature: float, kv: tuple | None = None,
               alive: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention output and entropy for the open leaves (zeros elsewhere).

        Args:
            x: leaf states at the tick ``[B, n, d]``.
            open_: leaves whose gate is open ``[B, n]`` (bool).
            memory: ring buffers (read, not written).
            temperature: softmax temperature.
            kv: ``keys_values(x)`` if the caller has them already.
            alive: leaf slots holding a leaf ``[n]`` (None: all); only their
                keys are attended to.

        Returns:
            ``a [B, n, d]`` and attention entropy ``[B, n]``.
        """
        if not bool(open_.any()):
            return torch.zeros_like(x), x.new_zeros(x.shape[:2])
        keys, values = self.keys_values(x) if kv is None else kv
        if alive is not None:
            keys, values = keys[:, alive], values[:, alive]
        b, i = open_.nonzero(as_tuple=True)                       # sorted by stream
        # Every leaf open: compaction and scattering back are reshapes.  The
        # memory is written in place after this, so autograd gets copies of it.
        every = b.numel() == open_.numel()
        rows = (lambda t: t.flatten(0, 1)) if every else (lambda t: t[b, i])
        mem = rows if not torch.is_grad_enabled() else (lambda t: t[b, i])
        q = rows(x) @ self.W_q.T                                   # [N, d]
        attn = kernels.get("leaf_attention", x.device.type)
        out, h = attn(q, b, mem(memory.keys), mem(memory.values), rows(memory.valid()),
                      keys, values, temperature)
        if every:
            return out.view_as(x), h.view(x.shape[:2])
        return torch.zeros_like(x).index_put((b, i), out), x.new_zeros(x.shape[:2]).index_put((b, i), h)
