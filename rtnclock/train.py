"""rtnclock as a training backend: :class:`RTN` and its losses (the loop is :mod:`rtnclock.trainer`).

``RTN`` runs the multi-clock simulation over a batch of streams with the
autograd graph on (``simulate(..., grad=True)``) and reads a linear readout
from the levels' states (over their ticks, and the root's at the end), the
run's mean output and the leaves' last output.

Gates (DESIGN §1): in evaluation they are hard, as in any run: the fine path
of a block runs iff ``g > theta`` and its output is weighed by ``g``.  In
training (``module.train()``) they are soft, straight-through: every block
under an active root is integrated, sleeping subtrees included, but every
value is evaluation's (tested to 1e-12: readout, gates, events, cost), and
wherever a gate switches something, the switch is its hard value with the
gate's gradient: the output weight, the coarse-up a block hears (its
children's pooled output or its own coarse prediction), whether a subtree is
awake (the readout's features, the executed cost).  A gate that closed can
therefore learn to open again; with hard gates nothing would reach it (its
fine path is not computed), and a cost penalty closes every gate for good
(measured on pixel_digits: test accuracy fell from 78% to chance in two
epochs).

Penalties (seed 000 §4, seed 001 §3.4, seed 002), all differentiable:
- :func:`gate_penalty`: ``sum_l w_l mean|g_l|``, ``w_l`` growing with the
  level, or any weights: ``(1, 0, .., 0)`` is seed 002's penalty on the leaf
  units' gates alone;
- :func:`cost_penalty`: ``lambda * soft_cost``, the executed cost as a share
  of full execution, its gradient reaching each gate through the cost of
  everything it switches on (see :class:`RTNOutput`).
"""


from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import morph
from .config import Config
from .gate import output_weight
from .model import DTYPES, RTNModel
from .recorder import NullRecorder
from .simulate import Run, simulate
from .stream import Stream
from .topology import Topology


@dataclass
class RTNOutput:
    """What one forward pass gives.

    Attributes:
        readout: ``[B, out_dim]``.
        gate_mean: per level, each stream's gate value averaged over its blocks
            and ticks, ``[K+1, B]`` (differentiable; dormant blocks count as 0).
        soft_cost: per stream, the cost evaluation executes as a share of full
            execution, ``[B]``: ``1 - sparsity`` of that stream alone.  With
            soft gates (training) it is counted straight-through, so its
            gradient reaches each gate times the cost of what the gate switches
            on: for a leaf its attention, above the leaves its subtree's
            block-ticks and attention over the window it opens.  With hard
            gates it has no gradient.
        sparsity: ``1 - cost / full`` of the run (hard gates, as executed).
        gate_open: per level, the fraction of block-ticks with the gate open.
        run: the simulation (events, totals, solver counters).
        growth: with a growing config, per level ``(awake seconds, gate x
            seconds, free energy x seconds)`` per slot over the windows each
            block was awake, summed over streams (detached; what
            :meth:`RTN.grow` judges); else None.
    """

    readout: torch.Tensor
    gate_mean: torch.Tensor
    soft_cost: torch.Tensor
    sparsity: float
    gate_open: list[float]
    run: Run
    growth: dict | None = None


class _Collect(NullRecorder):
    """Sums each level's state over its ticks, and its gates over the windows they open (with their graph).

    The gate set at a tick rules the window after it, so the run's last tick's
    gates (a window never run) are left out.
    """

    def __init__(self, end_n: int, base_period: float, growth: bool = False):
        self.end_n, self.base_period = end_n, base_period
        self.h, self.g, self.n, self.n_g = {}, {}, {}, {}
        self.growth = {} if growth else None
        self.last_n: dict[int, int] = {}

    def record(self, tick) -> None:
        k = tick.level
        # What evaluation sees: a block asleep over the window counts as zero.
        # Soft gates weigh by awake straight-through, so the gradient sees what
        # a parent's gate switches on here.
        awake = tick.awake_weight if tick.awake_weight is not None else tick.awake
        state = tick.state if awake is None else tick.state * awake.unsqueeze(-1)
        self.h[k] = state + self.h[k] if k in self.h else state
        self.n[k] = self.n.get(k, 0) + 1
        if tick.n < self.end_n:
            self.g[k] = tick.gate + self.g[k] if k in self.g else tick.gate
            self.n_g[k] = self.n_g.get(k, 0) + 1
        if self.growth is not None and tick.awake is not None:
            # Weighed by the window each tick closes: escalations make short ones.
            dt = (tick.n - self.last_n.get(k, 0)) * self.base_period
            self.last_n[k] = tick.n
            aw = tick.awake.detach().double() * dt
            stats = torch.stack([aw.sum(0), (tick.gate.detach() * aw).sum(0),
                                 (tick.free_energy.detach() * aw).sum(0)])
            self.growth[k] = stats + self.growth[k] if k in self.growth else stats


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
    it; the root's state at the end; the hierarchy's output ``y_K`` (the
    HyperBlock recursion) averaged over the run; and the leaves' output at the
    last tick: ``sum_k n_k d_k + n_K (d_K + d_0) + n_0 d_0`` features.  The
    last are what lets a query shown at the end be answered (mqar): without
    them the geometric core's retrieval reached the readout only through
    window averages, and recall was not learned.  Sleep is evaluation's even
    in training, where soft gates integrate sleeping blocks for the gradient
    only, so the readout sees the same in both.

    With a growing config (``capacity``, ``mitosis_threshold``,
    ``apoptosis_epsilon``) the module owns its tree: every forward runs on it
    unchanged, features come per slot (a block's weighed by its mass, zero for
    free slots), and :meth:`grow` changes it between steps.
    """

    def __init__(self, config: Config, out_dim: int, *, mode: str = "multiclock", adjoint: bool = False):
        super().__init__()
        self.config, self.mode, self.out_dim, self.adjoint = config, mode, out_dim, adjoint
        self.model = RTNModel(config)
        self.topology = Topology.initial(config, torch.device("cpu"))
        self.growth = morph.GrowthState.initial(config, torch.device("cpu")) if config.grows else None
        dims = config.resolved("dims")
        n_K = config.slots(config.K)
        # Level averages, the root's last state, the mean y_K, the leaves' last output.
        n_feat = (sum(config.slots(k) * dims[k] for k in range(config.n_levels)) + n_K * (dims[config.K] + dims[0])
                  + config.slots(0) * dims[0])
        gen = torch.Generator().manual_seed(config.seed + 1)
        dtype = DTYPES[config.dtype]
        self.readout = nn.Linear(n_feat, out_dim, dtype=dtype)
        with torch.no_grad():
            self.readout.weight.copy_(torch.randn(out_dim, n_feat, generator=gen, dtype=dtype) / n_feat**0.5)
            self.readout.bias.zero_()

    def forward(self, frames) -> RTNOutput:
        """Run on ``frames`` ``[B, F, n_leaves, input_dim]`` (one frame per base period) or a :class:`Stream`."""
        stream = frames if isinstance(frames, Stream) else Stream(frames, self.config.base_period)
        collect = _Collect(int(math.floor(stream.duration / self.config.base_period + 1e-9)),
                           self.config.base_period, growth=self.growth is not None)
        # The tree is a plain attribute, which Module.to does not move: it follows the parameters here.
        top = self.topology = self.topology.to(self.readout.weight.device)
        run = simulate(self.config, stream, model=self.model, recorder=collect, mode=self.mode,
                       grad=torch.is_grad_enabled(), soft_gates=self.training, adjoint=self.adjoint,
                       topology=top)
        B = stream.batch
        K = self.config.K
        y_mean = run.state.levels[K].acc_y / run.duration                     # the run's mean y_K
        feats = [collect.h[k] / collect.n[k] for k in range(self.config.n_levels)]
        if not top.full:
            feats = [f * top.mass[k].to(f.dtype).view(1, -1, 1) for k, f in enumerate(feats)]
        feats = [f.reshape(B, -1) for f in feats]
        feats += [run.final_states()[K].reshape(B, -1), y_mean.reshape(B, -1),
                  self._leaf_output(run, top).reshape(B, -1)]
        gates = [(collect.g[k] / collect.n_g[k]).mean(-1) for k in range(self.config.n_levels)]
        gate_mean = torch.stack(gates)
        _, full = run.cost()
        summary = run.summary()
        return RTNOutput(readout=self.readout(torch.cat(feats, -1)), gate_mean=gate_mean,
                         soft_cost=self._soft_cost(run, B / full if full else 0.0), sparsity=run.sparsity,
                         gate_open=[row["gate_open"] for row in summary], run=run, growth=collect.growth)

    def _soft_cost(self, run: Run, per_full: float) -> torch.Tensor:
        """Per stream, the executed cost times ``per_full`` ``[B]`` (see :class:`RTNOutput`).

        With soft gates the scheduler counts it per stream, straight-through.
        With hard gates only the run's total is counted: each stream gets the
        batch's mean, with no gradient.
        """
        parts = [t["soft_cost"] for t in run.state.totals.values() if "soft_cost" in t]
        if parts:
            return sum(parts) * per_full
        cost, _ = run.cost()
        B = run.state.levels[0].h.shape[0]
        w = self.readout.weight
        return torch.full((B,), cost * per_full / B, dtype=w.dtype, device=w.device)

    def _leaf_output(self, run: Run, top: Topology) -> torch.Tensor:
        """The leaves' output ``y = (1 - g) x + g a`` at the run's last tick, ``[B, n_0, d_0]``.

        What the geometric core retrieved last: a query shown near the end is
        read here before any window averages it away.  A leaf asleep (as
        evaluation has it) counts as zero.
        """
        st = run.state.levels[0]
        w = output_weight(st.gate, st.open, self.training).unsqueeze(-1)
        y = (1 - w) * st.h + w * st.attn
        y = torch.where(st.awake_now().unsqueeze(-1), y, 0.0) if st.awake_w is None else y * st.awake_w.unsqueeze(-1)
        return y if top.full else y * top.mass[0].to(y.dtype).view(1, -1, 1)

    # ---- growth between training steps ---------------------------------
    def grow(self, out: RTNOutput, optimizer: torch.optim.Optimizer | None = None,
             t: float = 0.0) -> list[tuple[str, int, int]]:
        """Judge the blocks on ``out`` (the last forward) and apply mitosis and apoptosis.

        Counters advance by each block's awake time in that forward (seconds per
        stream), so windows are in simulated seconds summed over steps, as in a
        run.  A daughter gets her mother's readout columns plus Gaussian noise
        of ``mitosis_noise`` times their RMS (features are mass-weighed, so
        without noise the readout is unchanged while the two are alike), and
        their optimizer state; a removed block's columns and state are zeroed.
        Under ``torch.distributed`` the statistics are summed over processes
        first, so every process grows the same tree.

        Args:
            out: the forward pass just trained on.
            optimizer: whose per-parameter state to remap (Adam's moments).
            t: the birth time to record (the trainer passes its step count).

        Returns:
            ``(kind, level, slot)`` of each change (``mitosis`` names the mother).
        """
        if self.growth is None or out.growth is None:
            return []
        cfg, top = self.config, self.topology
        device = top.alive[0].device
        if self.growth.hot[0].device != device:         # counters follow the tree (to CUDA with it)
            self.growth.hot = [x.to(device) for x in self.growth.hot]
            self.growth.idle = [x.to(device) for x in self.growth.idle]
        stats = {k: v.clone() for k, v in out.growth.items()}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for k in sorted(stats):
                torch.distributed.all_reduce(stats[k])
            streams = torch.tensor(float(out.readout.shape[0]))
            torch.distributed.all_reduce(streams)
            B = float(streams)
        else:
            B = float(out.readout.shape[0])
        changes = []
        for k in range(cfg.K):
            if k not in stats:
                continue
            seconds, g_sum, F_sum = (x.to(top.mass[k].device) for x in stats[k])
            span = seconds.clamp_min(1e-300)
            divide, die = morph.judge(cfg, self.growth, k, (seconds > 0) & top.alive[k], F_sum / span,
                                      g_sum / span, seconds / B)     # awake seconds per stream
            for i in divide:
                made = morph.split(self.growth, top, k, i, t)
                if made is not None:
                    self._copy_columns(k, i, made[0], optimizer)
                    self._perturb_columns(k, made[0])
                    changes.append(("mitosis", k, i))
            for i in die:
                if bool(top.alive[k][i]):
                    for level, slot in morph.remove(self.growth, top, k, i):
                        self._copy_columns(level, None, slot, optimizer)
                        changes.append(("apoptosis", level, slot))
        return changes

    def _columns(self, k: int, slot: int) -> list[slice]:
        """The readout columns that read slot ``slot`` of level ``k`` (a leaf's twice: average and last output)."""
        dims = self.config.resolved("dims")
        start = sum(self.config.slots(l) * dims[l] for l in range(k)) + slot * dims[k]
        cols = [slice(start, start + dims[k])]
        if k == 0:
            last = self.readout.in_features - self.config.slots(0) * dims[0] + slot * dims[0]
            cols.append(slice(last, last + dims[0]))
        return cols

    def _copy_columns(self, k: int, src: int | None, dst: int, optimizer) -> None:
        """Readout columns (and their optimizer state) of slot ``dst`` := slot ``src``'s, or 0."""
        w = self.readout.weight
        tensors = [w.data]
        if optimizer is not None:
            tensors += [v for v in optimizer.state.get(w, {}).values()
                        if torch.is_tensor(v) and v.shape == w.shape]
        targets = self._columns(k, dst)
        sources = [None] * len(targets) if src is None else self._columns(k, src)
        for x in tensors:
            for cols, from_ in zip(targets, sources):
                x[:, cols] = 0 if from_ is None else x[:, from_]

    def _perturb_columns(self, k: int, slot: int) -> None:
        """The daughter's small perturbation: her only own parameters are her readout columns."""
        noise = self.config.mitosis_noise
        if noise <= 0:
            return
        for cols in self._columns(k, slot):
            w = self.readout.weight.data[:, cols]
            w += noise * w.square().mean().sqrt() * self.growth.randn(w.shape, w.dtype).to(w.device)

    def tree_state(self) -> dict:
        """The tree and its growth counters (checkpoints keep them beside the state dict)."""
        return {"topology": self.topology, "growth": self.growth}

    def load_tree_state(self, state: dict) -> None:
        """Restore what :meth:`tree_state` gave."""
        self.topology, self.growth = state["topology"], state["growth"]


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
