"""rtnclock as a training backend: :class:`RTN` and its losses (the loop is :mod:`rtnclock.trainer`).

``RTN`` runs the multi-clock simulation over a batch of streams with the
autograd graph on (``simulate(..., grad=True)``) and reads a linear readout
from the levels' states (over their ticks, and the root's at the end) and the
run's mean output.

Gates (DESIGN §1): in evaluation they are hard, as in any run: the fine path
of a block runs iff ``g > theta`` and its output is weighed by ``g``.  In
training (``module.train()``) they are soft, straight-through: every active
block's fine path runs, the output weight keeps the hard gate's value (``g``
where open, 0 where closed) and its gradient is ``g``'s everywhere.  A gate
that closed can therefore learn to open again; with hard gates nothing would
reach it (its fine path is not computed), and a cost penalty closes every
gate for good (measured on pixel_digits: test accuracy fell from 78% to
chance in two epochs).

Penalties (seed 000 §4, seed 001 §3.4), both differentiable:
- :func:`gate_penalty`: ``sum_l w_l mean|g_l|``, ``w_l`` growing with the level;
- :func:`cost_penalty`: ``lambda * soft_cost``, the gate-weighted cost of the
  fine paths as a share of full execution (see :class:`RTNOutput`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import Config
from .model import DTYPES, RTNModel
from .recorder import NullRecorder
from .simulate import Run, simulate
from .stream import Stream


@dataclass
class RTNOutput:
    """What one forward pass gives.

    Attributes:
        readout: ``[B, out_dim]``.
        gate_mean: per level, each stream's gate value averaged over its blocks
            and ticks, ``[K+1, B]`` (differentiable; dormant blocks count as 0).
        soft_cost: per stream, ``sum_k unit_k * sum g_k`` over the run as a share
            of the full cost, ``[B]`` (differentiable).  ``unit_k`` is what an
            open gate of level ``k`` switches on for one of its ticks: for the
            leaves their attention, above them the ``b`` children's block-ticks.
        sparsity: ``1 - cost / full`` of the run (hard gates, as executed).
        gate_open: per level, the fraction of block-ticks with the gate open.
        run: the simulation (events, totals, solver counters).
    """

    readout: torch.Tensor
    gate_mean: torch.Tensor
    soft_cost: torch.Tensor
    sparsity: float
    gate_open: list[float]
    run: Run


class _Collect(NullRecorder):
    """Sums each level's state over its ticks, and its gates over the windows they open (with their graph).

    The gate set at a tick rules the window after it, so the run's last tick's
    gates (a window never run) are left out.
    """

    def __init__(self, end_n: int):
        self.end_n = end_n
        self.h, self.g, self.n, self.n_g = {}, {}, {}, {}

    def record(self, tick) -> None:
        k = tick.level
        # What evaluation sees: a block asleep over the window counts as zero.
        state = tick.state if tick.awake is None else tick.state * tick.awake.unsqueeze(-1)
        self.h[k] = state + self.h[k] if k in self.h else state
        self.n[k] = self.n.get(k, 0) + 1
        if tick.n < self.end_n:
            self.g[k] = tick.gate + self.g[k] if k in self.g else tick.gate
            self.n_g[k] = self.n_g.get(k, 0) + 1


class RTN(nn.Module):
    """A trainable RTN: the multi-clock simulation of ``config`` plus a linear readout.

    Args:
        config: the hierarchy (its ``input_dim``, ``b**K`` leaves and base period
            fix the frames it takes).
        out_dim: readout size (classes, for a classifier).
        mode: the scheduler (``multiclock``; ``lockstep`` for a reference).
        adjoint: gradients by torchdiffeq's adjoint instead of through the solver's steps.

    The readout sees every block's state averaged over its level's ticks,
    counting a block as zero over windows it slept through as evaluation has
    it; the root's state at the end; and the hierarchy's output ``y_K`` (the
    HyperBlock recursion) averaged over the run: ``sum_k n_k d_k + n_K (d_K +
    d_0)`` features.  Sleep is evaluation's even in training, where soft gates
    integrate sleeping blocks for the gradient only, so the readout sees the
    same in both.
    """

    def __init__(self, config: Config, out_dim: int, *, mode: str = "multiclock", adjoint: bool = False):
        super().__init__()
        self.config, self.mode, self.out_dim, self.adjoint = config, mode, out_dim, adjoint
        self.model = RTNModel(config)
        dims = config.resolved("dims")
        n_K = config.blocks(config.K)
        n_feat = sum(config.blocks(k) * dims[k] for k in range(config.n_levels)) + n_K * (dims[config.K] + dims[0])
        gen = torch.Generator().manual_seed(config.seed + 1)
        dtype = DTYPES[config.dtype]
        self.readout = nn.Linear(n_feat, out_dim, dtype=dtype)
        with torch.no_grad():
            self.readout.weight.copy_(torch.randn(out_dim, n_feat, generator=gen, dtype=dtype) / n_feat**0.5)
            self.readout.bias.zero_()

    def forward(self, frames) -> RTNOutput:
        """Run on ``frames`` ``[B, F, n_leaves, input_dim]`` (one frame per base period) or a :class:`Stream`."""
        stream = frames if isinstance(frames, Stream) else Stream(frames, self.config.base_period)
        collect = _Collect(int(math.floor(stream.duration / self.config.base_period + 1e-9)))
        run = simulate(self.config, stream, model=self.model, recorder=collect, mode=self.mode,
                       grad=torch.is_grad_enabled(), soft_gates=self.training, adjoint=self.adjoint)
        B = stream.batch
        K = self.config.K
        y_mean = run.state.levels[K].acc_y / run.duration                     # the run's mean y_K
        feats = [(collect.h[k] / collect.n[k]).reshape(B, -1) for k in range(self.config.n_levels)]
        feats += [run.final_states()[K].reshape(B, -1), y_mean.reshape(B, -1)]
        gates = [(collect.g[k] / collect.n_g[k]).mean(-1) for k in range(self.config.n_levels)]
        gate_mean = torch.stack(gates)
        # Gate sums over the run, weighed by what each gate switches on.
        cfg, model = self.config, self.model
        periods = cfg.resolved("periods")
        soft = model.attention_cost(cfg.blocks(0)) * collect.g[0].sum(-1)
        for k in range(1, cfg.n_levels):
            unit = cfg.branching * model.block_cost(k - 1) * periods[k] / periods[k - 1]
            soft = soft + unit * collect.g[k].sum(-1)
        _, full = run.cost()
        summary = run.summary()
        return RTNOutput(readout=self.readout(torch.cat(feats, -1)), gate_mean=gate_mean,
                         soft_cost=soft * (B / full) if full else soft * 0, sparsity=run.sparsity,
                         gate_open=[row["gate_open"] for row in summary], run=run)


def gate_penalty(out: RTNOutput, weights=None) -> torch.Tensor:
    """``sum_l w_l mean|g_l|`` (mean over streams); ``w_l`` defaults to ``2**l`` (higher levels pay more)."""
    n = out.gate_mean.shape[0]
    w = torch.as_tensor([2.0**l for l in range(n)] if weights is None else weights,
                        dtype=out.gate_mean.dtype, device=out.gate_mean.device)
    if w.shape != (n,):
        raise ValueError(f"gate penalty weights: need {n} (one per level), got {tuple(w.shape)}")
    return (w * out.gate_mean.abs().mean(-1)).sum()


def cost_penalty(out: RTNOutput, lam: float) -> torch.Tensor:
    """``lam * soft_cost`` averaged over streams."""
    return lam * out.soft_cost.mean()
