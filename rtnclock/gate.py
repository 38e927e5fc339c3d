"""Thermodynamic gate: surprise, gate value, entropies (DESIGN §1, seed 001 §3.4).

``e = ||x_bar - x_hat||^2 / d``, ``g = sigmoid(a*e + beta*demand + b_g)``; the
fine path runs iff ``g > theta``.  ``a, beta, b_g`` are parameters so training
can reach them.
"""

from __future__ import annotations

import torch
from torch import nn

from .level import init_weight

_EPS = 1e-12


class GateHead(nn.Module):
    """Per-level gate: the coarse path's prediction of the input and the gate law.

    Args:
        dim: block state size ``d_k``.
        input_dim: sensory channels per leaf (the size of ``x_bar``).
        a, beta, bias: initial gate parameters.
        mode: ``free``, ``open`` (``g = 1``) or ``closed`` (``g = 0``).
    """

    def __init__(self, dim: int, input_dim: int, *, a: float, beta: float, bias: float, mode: str,
                 generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.R = init_weight(input_dim, dim, 1.0, generator, dtype)
        self.S = init_weight(input_dim, dim, 1.0, generator, dtype)
        self.a = nn.Parameter(torch.tensor(float(a), dtype=dtype))
        self.beta = nn.Parameter(torch.tensor(float(beta), dtype=dtype))
        self.bias = nn.Parameter(torch.tensor(float(bias), dtype=dtype))
        self.mode = mode

    def predict(self, h_bar: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """``x_hat`` from the window-mean state and the parent's prior: ``[..., d_in]``."""
        return h_bar @ self.R.T + down @ self.S.T

    def gate(self, e: torch.Tensor, demand: torch.Tensor) -> torch.Tensor:
        """Gate value in [0, 1] for surprise ``e`` and parent demand (both ``[B, n]``)."""
        if self.mode == "open":
            return torch.ones_like(e)
        if self.mode == "closed":
            return torch.zeros_like(e)
        return torch.sigmoid(self.a * e + self.beta * demand + self.bias)


def output_weight(gate: torch.Tensor, open_: torch.Tensor, soft: bool) -> torch.Tensor:
    """The weight ``g`` a block's fine path gets in its output: ``g`` where open, 0 where shut.

    With ``soft`` (training's straight-through gates) the value is the same but
    the gradient is the soft gate's everywhere, through the fine path computed
    anyway, so a shut gate can learn to open.
    """
    w = gate * open_
    return w + (gate - gate.detach()) * ~open_ if soft else w


def switch(gate: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """``open_`` as a 0/1 float whose gradient is the gate's (straight-through).

    Soft gates put it wherever a gate switches something on or off (a subtree
    awake, the coarse-up a block hears), so the gradient sees what closing costs.
    """
    return open_.to(gate.dtype) + (gate - gate.detach())


def surprise(x_bar: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``||x_bar - x_hat||^2 / d`` over the last axis."""
    return (x_bar - x_hat).square().mean(-1)


def binary_entropy(g: torch.Tensor) -> torch.Tensor:
    """Entropy of a Bernoulli(g) gate in nats (0, not NaN, for a saturated gate)."""
    # The clamp keeps log finite (and its gradient bounded); it must be the
    # dtype's own epsilon: 1 - 1e-12 rounds to 1 in float32, and 0 * log 0 is NaN.
    eps = max(_EPS, torch.finfo(g.dtype).eps)
    g = g.clamp(eps, 1 - eps)
    # entr(x) = -x ln x: five ops where the spelled-out sum took nine (every tick).
    return torch.special.entr(g) + torch.special.entr(1 - g)
