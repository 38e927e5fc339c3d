"""Recorders: plug-ins that receive every level tick (``NullRecorder`` does nothing).

The scheduler calls ``start(config, events, stream)``, then ``record(tick)`` once per level tick
in the declared order, then ``close()`` (``close(failed=True)`` if the run raised); a store (Zarr) is one more recorder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config
from .observables import free_energy


#: Per-slot tree fields of a growing run's ticks.
TREE = ("alive", "block_id", "parent_id", "born")


# Not frozen: a frozen dataclass's __init__ costs three times as much, and a run makes one per tick.
@dataclass(slots=True)
class TickRecord:
    """What one level tick produced (every recorder sees the same one: read it, do not change it).

    Attributes:
        level, n, t: level, integer leaf-tick count and time in seconds.
        state: block states at the tick ``[B, n_k, d_k]``.
        gate, surprise, entropy: per block ``[B, n_k]``.
        active: blocks integrated in the window that just closed ``[B, n_k]``.
        cost, full_cost: cost units this tick and under full execution.
        escalated: the tick was forced by a child's escalation.
        free_energy_tau: the ``tau`` of ``F = U - tau S`` (:attr:`free_energy`).
        awake: blocks awake over the window that just closed as evaluation has
            them ``[B, n_k]``; wider ``active`` only with training's soft gates.
        awake_weight: training's soft gates only: ``awake`` as a float whose
            gradient reaches every ancestor's gate (straight-through), else None.
        alive, block_id, parent_id, born: the level's tree after the tick, per
            slot ``[C_k]``: which slots hold blocks, their ids, their parents'
            ids and their birth times in seconds (a growing run's; None on a
            fixed tree).
    """

    level: int
    n: int
    t: float
    state: torch.Tensor
    gate: torch.Tensor
    surprise: torch.Tensor
    entropy: torch.Tensor
    active: torch.Tensor
    cost: float
    full_cost: float
    escalated: bool = False
    free_energy_tau: float = 0.0
    awake: torch.Tensor | None = None
    awake_weight: torch.Tensor | None = None
    alive: torch.Tensor | None = None
    block_id: torch.Tensor | None = None
    parent_id: torch.Tensor | None = None
    born: torch.Tensor | None = None

    @property
    def free_energy(self) -> torch.Tensor:
        """``F = U - tau S`` per block ``[B, n_k]`` (computed when asked: few ticks are)."""
        return free_energy(self.surprise, self.entropy, self.free_energy_tau)


class NullRecorder:
    """Records nothing (the default)."""

    def start(self, config: Config, events=None, stream=None) -> None:
        """Called once before the first tick, with the run's event log and input stream."""

    def record(self, tick: TickRecord) -> None:
        """Called once per level tick."""

    def close(self, failed: bool = False) -> None:
        """Called once after the last tick; ``failed``: the run stopped on an error."""


class MemoryRecorder(NullRecorder):
    """Keeps every tick in memory; ``trajectory(k)`` stacks a level's ticks."""

    def __init__(self):
        self.ticks: dict[int, list[TickRecord]] = {}
        self.config: Config | None = None

    def start(self, config: Config, events=None, stream=None) -> None:
        self.config = config
        self.ticks = {k: [] for k in range(config.n_levels)}

    def record(self, tick: TickRecord) -> None:
        self.ticks[tick.level].append(tick)

    def trajectory(self, level: int) -> dict[str, torch.Tensor]:
        """Level ``level``'s recorded ticks, each field stacked along a leading time axis."""
        return stack_ticks(self.ticks[level])


def stack_ticks(ticks: list[TickRecord]) -> dict[str, torch.Tensor]:
    """Ticks of one level, each field stacked along a leading time axis."""
    out = {"t": torch.tensor([r.t for r in ticks], dtype=torch.float64),
           "n": torch.tensor([r.n for r in ticks]),
           "cost": torch.tensor([r.cost for r in ticks], dtype=torch.float64),
           "full_cost": torch.tensor([r.full_cost for r in ticks], dtype=torch.float64),
           "escalated": torch.tensor([r.escalated for r in ticks])}
    for name in ("state", "gate", "surprise", "entropy", "active") + TREE:
        if name in TREE and ticks[0].alive is None:
            continue
        out[name] = torch.stack([getattr(r, name) for r in ticks])
    out["free_energy"] = free_energy(out["surprise"], out["entropy"], ticks[0].free_energy_tau)
    return out
