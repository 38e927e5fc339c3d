"""Coarse operators: a block's cheap prediction of its children's mean output.

A coarse operator must be affine so that its time integral over a window is
exact from the integrated state: ``int Coarse(h) dt = Coarse_lin(int h dt) + b*len``.
One registry, chosen by ``Config.coarse``.
"""

from __future__ import annotations

import torch
from torch import nn

from .level import init_weight


class LinearCoarse(nn.Module):
    """``Coarse(h) = W h + b`` mapping ``d_k`` to the shared output size."""

    def __init__(self, dim: int, out_dim: int, *, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.W = init_weight(out_dim, dim, 1.0, generator, dtype)
        self.b = nn.Parameter(torch.zeros(out_dim, dtype=dtype))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``Coarse(h)``: ``[..., d_k] -> [..., d_out]``."""
        return h @ self.W.T + self.b

    def integral(self, H: torch.Tensor, length: float) -> torch.Tensor:
        """``int Coarse(h) dt`` over a window of ``length`` seconds with ``H = int h dt``."""
        return H @ self.W.T + self.b * length


COARSE = {"linear": LinearCoarse}
