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
from .observables import free_energy

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

    def randn(self, shape, dtype) -> torch.Tensor:
        """Standard normal noise from the growth generator (its state advances, as data)."""
        gen = torch.Generator().set_state(self.rng)
        z = torch.randn(shape, generator=gen, dtype=dtype)
        self.rng = gen.get_state()
        return z


def judge(cfg: Config, growth: GrowthState, k: int, judged: torch.Tensor, F: torch.Tensor,
          g: torch.Tensor, dt) -> tuple[list[int], list[int]]:
    """Advance level ``k``'s counters by ``dt`` seconds of awake time; slots due to divide and to die.

    Args:
        judged: slots that were awake (and alive) ``[C_k]``; the others' counters stand.
        F, g: each slot's free energy and gate over that time ``[C_k]``.
        dt: seconds (a number, or ``[C_k]`` per slot).

    Returns:
        ``(divide, die)``: slot indices whose window is full.  The caller
        restarts a dividing slot's counter (:func:`split`).
    """
    slack = 1e-9 * (float(dt) if not torch.is_tensor(dt) else float(dt.max()))
    divide, die = [], []
    threshold, epsilon = cfg.resolved("mitosis_threshold")[k], cfg.resolved("apoptosis_epsilon")[k]
    if threshold is not None:
        hot = judged & (F > threshold)
        growth.hot[k] = torch.where(hot, growth.hot[k] + dt, torch.where(judged, 0.0, growth.hot[k]))
        divide = (growth.hot[k] >= cfg.mitosis_window - slack).nonzero().flatten().tolist()
    if epsilon is not None:
        low = judged & (g < epsilon)
        growth.idle[k] = torch.where(low, growth.idle[k] + dt, torch.where(judged, 0.0, growth.idle[k]))
        die = (growth.idle[k] >= cfg.apoptosis_window - slack).nonzero().flatten().tolist()
    return divide, die


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
    count = awake.sum(0).clamp_min(1).double()
    F = (free_energy(st.surprise, st.entropy, cfg.free_energy_tau).double() * awake).sum(0) / count
    g = (st.gate.double() * awake).sum(0) / count
    divide, die = judge(cfg, growth, k, awake.any(0) & top.alive[k], F, g, dt)
    changed = False
    for i in divide:
        changed |= _divide(hier, state, k, i, n)
    for i in die:
        if bool(top.alive[k][i]):
            _remove(hier, state, k, i, n)
            changed = True
    if changed and state.levels[0].pending is not None:
        state.levels[0].pending = None          # the leaves' solve ahead saw the old tree


def split(growth: GrowthState, top, k: int, i: int, t: float):
    """:meth:`Topology.split` with the counters restarted; None if no daughter could be made."""
    growth.hot[k][i] = 0.0
    out = top.split(k, i, t)
    if out is not None:
        growth.hot[k][out[0]] = growth.idle[k][out[0]] = 0.0
    return out


def remove(growth: GrowthState, top, k: int, i: int) -> list[tuple[int, int]]:
    """:meth:`Topology.remove` with the removed slots' counters cleared."""
    gone = top.remove(k, i)
    for level, slot in gone:
        growth.hot[level][slot] = growth.idle[level][slot] = 0.0
    return gone


def _divide(hier, state, k: int, i: int, n: int) -> bool:
    growth, cfg = state.growth, hier.cfg
    made = split(growth, state.topology, k, i, hier.t(n))
    if made is None:
        return False
    j = made[0]
    st = state.levels[k]
    _set_slot(st, j, i)
    if cfg.mitosis_noise > 0:                  # st.h is _set_slot's fresh copy: no tick record holds it
        st.h[:, j] += cfg.mitosis_noise * growth.randn(st.h[:, j].shape, st.h.dtype).to(st.h.device)
    if st.memory is not None:
        for name in ("keys", "values", "writes"):
            getattr(st.memory, name)[:, j] = getattr(st.memory, name)[:, i]
    hier.events.log(n, "mitosis", level=k, block=i)
    return True


def _remove(hier, state, k: int, i: int, n: int) -> None:
    for level, slot in remove(state.growth, state.topology, k, i):
        st = state.levels[level]
        _set_slot(st, slot)
        if st.memory is not None:
            st.memory.writes[:, slot] = 0
        hier.events.log(n, "apoptosis", level=level, block=slot)


def _set_slot(st, slot: int, source: int | None = None) -> None:
    """Slot ``slot`` of every per-slot field := slot ``source``'s, or cleared (new tensors:
    the recorder may still hold the old ones)."""
    for name in _COPIED:
        x = getattr(st, name)
        if x is not None:
            x = x.clone()
            x[:, slot] = (False if x.dtype == torch.bool else 0) if source is None else x[:, source]
            setattr(st, name, x)
