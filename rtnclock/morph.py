"""Morphogenesis during a run: mitosis and apoptosis (DESIGN §1, seed 000 §3.2, seed 001 §4).

On each tick of level ``k < K`` (the root never divides or dies), after its
gates are set and before it messages its children:

- **mitosis**: a block whose free energy ``F = U - tau S`` (mean over the
  streams where it is awake) has stayed above ``mitosis_threshold`` for
  ``mitosis_window`` seconds of awake time splits in two.  The daughter takes
  a free slot, a copy of the mother's state plus Gaussian noise of size
  ``mitosis_noise``, half her mass and, above the leaves, the second half of
  her children (their prior-down and gate-demand links now come from the
  daughter); a leaf daughter reads her mother's sensory field.  Both
  counters restart.
- **apoptosis**: a block whose gate (mean over the streams where it is awake)
  has stayed below ``apoptosis_epsilon`` for ``apoptosis_window`` seconds of
  awake time is removed with its subtree: its slots are freed (reusable by
  mitosis), it is never integrated again and costs nothing.

Only awake time counts: a block asleep under a closed parent is not judged.
Counters and the noise generator's state are data (:class:`GrowthState`), so a
resumed run grows exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config

#: Per-slot fields of a level's state a daughter copies (leaf memory separately).
_COPIED = ("h", "up", "down", "demand", "gate", "open", "active", "acc_y", "surprise", "entropy",
           "closed_active", "awake", "closed_awake", "attn")


@dataclass
class GrowthState:
    """Per-slot growth counters (seconds) and the perturbation generator's state."""

    hot: list[torch.Tensor]      # F above the mitosis threshold   [C_k]
    idle: list[torch.Tensor]     # gate below the apoptosis epsilon [C_k]
    seen: list[int]              # leaf tick of each level's last judgement
    rng: torch.Tensor

    @classmethod
    def initial(cls, config: Config, device) -> "GrowthState":
        """Zero counters; the generator seeded from the config's seed."""
        zeros = [torch.zeros(config.slots(k), dtype=torch.float64, device=device)
                 for k in range(config.n_levels)]
        rng = torch.Generator().manual_seed(config.seed + 7919).get_state()
        return cls(hot=zeros, idle=[z.clone() for z in zeros], seen=[0] * config.n_levels, rng=rng)


def grow(hier, state, k: int, n: int, awake: torch.Tensor) -> None:
    """Judge level ``k``'s blocks at its tick ``n`` and apply mitosis and apoptosis.

    ``awake`` ``[B, C_k]``: the blocks whose gate was just evaluated.
    """
    cfg, growth, top = hier.cfg, state.growth, state.topology
    st = state.levels[k]
    dt = (n - growth.seen[k]) * cfg.base_period
    growth.seen[k] = n
    if k == cfg.K or dt <= 0:
        return
    judged = awake.any(0) & top.alive[k]
    count = awake.sum(0).clamp_min(1).double()
    changed = False
    if cfg.mitosis_threshold is not None:
        F = ((st.surprise - cfg.free_energy_tau * st.entropy).double() * awake).sum(0) / count
        hot = judged & (F > cfg.mitosis_threshold)
        growth.hot[k] = torch.where(hot, growth.hot[k] + dt, torch.where(judged, 0.0, growth.hot[k]))
        for i in (growth.hot[k] >= cfg.mitosis_window - 1e-9 * dt).nonzero().flatten().tolist():
            changed |= _divide(hier, state, k, i, n)
    if cfg.apoptosis_epsilon is not None:
        g = (st.gate.double() * awake).sum(0) / count
        low = judged & (g < cfg.apoptosis_epsilon)
        growth.idle[k] = torch.where(low, growth.idle[k] + dt, torch.where(judged, 0.0, growth.idle[k]))
        for i in (growth.idle[k] >= cfg.apoptosis_window - 1e-9 * dt).nonzero().flatten().tolist():
            if bool(top.alive[k][i]):
                _remove(hier, state, k, i, n)
                changed = True
    if changed and state.levels[0].pending is not None:
        state.levels[0].pending = None          # the leaves' solve ahead saw the old tree


def _divide(hier, state, k: int, i: int, n: int) -> bool:
    growth, top, cfg = state.growth, state.topology, hier.cfg
    split = top.split(k, i, hier.t(n))
    growth.hot[k][i] = 0.0
    if split is None:
        return False
    j, _moved = split
    st = state.levels[k]
    for name in _COPIED:
        x = getattr(st, name)
        if x is not None:
            x = x.clone()
            x[:, j] = x[:, i]
            setattr(st, name, x)
    if cfg.mitosis_noise > 0:
        gen = torch.Generator().set_state(growth.rng)
        noise = torch.randn(st.h[:, j].shape, generator=gen, dtype=st.h.dtype) * cfg.mitosis_noise
        growth.rng = gen.get_state()
        h = st.h.clone()
        h[:, j] = h[:, j] + noise.to(h.device)
        st.h = h
    if st.memory is not None:
        for name in ("keys", "values", "writes"):
            getattr(st.memory, name)[:, j] = getattr(st.memory, name)[:, i]
    growth.hot[k][j] = growth.idle[k][j] = 0.0
    hier.events.log(n, "mitosis", level=k, block=i)
    return True


def _remove(hier, state, k: int, i: int, n: int) -> None:
    growth = state.growth
    for level, slot in state.topology.remove(k, i):
        st = state.levels[level]
        for name in _COPIED:
            x = getattr(st, name)
            if x is not None:
                x = x.clone()
                x[:, slot] = False if x.dtype == torch.bool else 0
                setattr(st, name, x)
        if st.memory is not None:
            st.memory.writes[:, slot] = 0
        growth.hot[level][slot] = growth.idle[level][slot] = 0.0
        hier.events.log(n, "apoptosis", level=level, block=slot)
