"""Messages between levels (renormalization-group style) and their tensor maps.

Coarse-up (child -> parent): the children's exact window-mean output, pooled
over the ``b`` siblings (block-spin).  Prior-down (parent -> child): ``P_k h``
reshaped to one prior per child.  Gate demand (parent -> child): the parent's
gate, one value per child.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .level import init_weight

COARSE_UP, PRIOR_DOWN, GATE_DEMAND = "coarse_up", "prior_down", "gate_demand"


@dataclass(frozen=True)
class Message:
    """One message of a whole level: ``payload`` is ``[B, n_destination, ...]``."""

    kind: str
    source: int
    destination: int
    time: float
    payload: torch.Tensor


def block_spin(x: torch.Tensor, b: int) -> torch.Tensor:
    """Mean over groups of ``b`` consecutive blocks: ``[B, n, ...] -> [B, n/b, ...]``."""
    B, n = x.shape[:2]
    return x.reshape(B, n // b, b, *x.shape[2:]).mean(2)


def to_children(x: torch.Tensor, b: int) -> torch.Tensor:
    """Repeat each block's value for its ``b`` children: ``[B, n, ...] -> [B, n*b, ...]``."""
    return x.repeat_interleave(b, dim=1)


class PriorHead(nn.Module):
    """``P_k``: a parent's prediction of each child's state, ``[B, n_k, d_k] -> [B, n_k*b, d_{k-1}]``."""

    def __init__(self, dim: int, child_dim: int, branching: int, *, generator, dtype):
        super().__init__()
        self.b, self.child_dim = branching, child_dim
        self.P = init_weight(branching * child_dim, dim, 1.0, generator, dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, n = h.shape[:2]
        return (h @ self.P.T).reshape(B, n * self.b, self.child_dim)  # [B, n_{k-1}, d_{k-1}]
