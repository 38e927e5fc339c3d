"""Block dynamics of one level: the ODE every block of the level follows.

A level is any ``nn.Module`` with ``tau``, ``period``, ``inputs(up, down)`` and
``vector_field(t, h, inputs)``; the scheduler never looks inside.  ``h`` is a
tensor whose last axis is the block state (``[rows, d_k]`` after compaction of
active blocks), ``up`` the held coarse-up message ``[rows, d_up]`` or, for the
leaves, a :class:`~rtnclock.stream.SensoryWindow`, ``down`` the held prior
``[rows, d_k]``.  ``inputs`` runs once per solve, ``vector_field`` at every
solver stage, so held work belongs in ``inputs``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import kernels
from .stream import SensoryWindow

ACTIVATIONS = {"tanh": torch.tanh, "identity": lambda z: z}


def init_weight(out_dim: int, in_dim: int, gain: float, generator: torch.Generator,
                dtype: torch.dtype) -> nn.Parameter:
    """Gaussian weight with spectral scale about ``gain`` (``std = gain/sqrt(in)``)."""
    w = torch.randn(out_dim, in_dim, generator=generator, dtype=dtype) * (gain / in_dim**0.5)
    return nn.Parameter(w)


class _SensoryDrive:
    """Held drive plus a time-varying sensory term, evaluated at ``t``."""

    def __init__(self, held: torch.Tensor, window: SensoryWindow):
        self.held, self.window = held, window

    def __call__(self, t) -> torch.Tensor:
        return self.held + self.window.at(t)


class BlockLevel(nn.Module):
    """``tau dh/dt = -h + phi(W_h h + W_u up + W_p down + c)`` for every block.

    Args:
        dim: block state size ``d_k``.
        up_dim: size of the coarse-up message (sensory channels for leaves).
        tau, period: time constant and tick period in seconds.
        activation: ``tanh`` or ``identity`` (the latter makes the level linear,
            which the closed-form tests use).
        gain: spectral scale of ``W_h``.
        generator, dtype: parameter initialisation.
    """

    def __init__(self, dim: int, up_dim: int, *, tau: float, period: float, activation: str,
                 gain: float, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.dim, self.up_dim = dim, up_dim
        self.tau, self.period = float(tau), float(period)
        self.phi = ACTIVATIONS[activation]
        self.W_h = init_weight(dim, dim, gain, generator, dtype)
        self.W_u = init_weight(dim, up_dim, 1.0, generator, dtype)
        self.W_p = init_weight(dim, dim, 0.5, generator, dtype)
        self.c = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self._fields: dict[str, object] = {}      # device type -> the tanh vector-field kernel

    def inputs(self, up, down: torch.Tensor):
        """Pre-multiply the held inputs once per solve (``[rows, d_k]`` or a callable of t)."""
        held = down @ self.W_p.T + self.c
        if isinstance(up, SensoryWindow):
            return _SensoryDrive(held, up.map(lambda f: f @ self.W_u.T))
        return held + up @ self.W_u.T

    def vector_field(self, t, h: torch.Tensor, inputs) -> torch.Tensor:
        """``dh/dt`` at time ``t`` (seconds)."""
        drive = inputs(t) if callable(inputs) else inputs
        if self.phi is torch.tanh and h.dim() == 2 and drive.dim() == 2:
            # Rows, as the scheduler integrates them: the kernels' vector field
            # (fused on CUDA, the plain-torch reference elsewhere).
            field = self._fields.get(h.device.type)
            if field is None:
                field = self._fields[h.device.type] = kernels.get("leaf_vector_field", h.device.type)
            return field(h, drive, self.W_h, self.tau)
        return (self.phi(h @ self.W_h.T + drive) - h) / self.tau
