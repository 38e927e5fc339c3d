"""Per-level observables computed from recorded ticks (DESIGN §1, Observables).

Per tick: mean surprise ``U``, mean entropy ``S`` (gate plus, for leaves, the
attention weights), ``F = U - tau S``, gate-open fraction, cost, and the
effective rank of the level's state (seed 003): ``exp`` of the entropy of the
normalised singular values of the ``[B * n_k, d_k]`` state matrix.
"""

from __future__ import annotations

import torch

_EPS = 1e-12


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """Effective rank of the last two axes of ``x`` (``[..., rows, d] -> [...]``).

    ``exp(-sum p_i log p_i)`` with ``p = sigma / sum sigma`` (Roy & Vetterli 2007):
    between 1 and ``min(rows, d)``, equal to ``r`` for ``r`` equal singular values.
    A zero matrix has effective rank 0.
    """
    s = torch.linalg.svdvals(x)
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(_EPS)
    h = -(p * (p + _EPS).log()).sum(-1)
    return torch.where(total.squeeze(-1) > _EPS, h.exp(), torch.zeros_like(h))


def free_energy(surprise: torch.Tensor, entropy: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-block free energy ``F = U - tau S`` (surprise ``U``, entropy ``S``)."""
    return surprise - tau * entropy


def level_observables(traj: dict, theta: float, free_energy_tau: float,
                      rank: bool = True) -> dict[str, torch.Tensor]:
    """Observables per recorded tick from a level's trajectory (``MemoryRecorder.trajectory``).

    Means are over active blocks (dormant blocks are not computed); the open
    fraction is over all blocks.  ``rank=False`` leaves out the effective rank
    (:func:`state_rank`), the one costly observable.
    """
    active = traj["active"].to(traj["surprise"].dtype)                     # [T, B, n_k]
    n_active = active.sum((1, 2)).clamp_min(1)
    U = (traj["surprise"] * active).sum((1, 2)) / n_active
    S = (traj["entropy"] * active).sum((1, 2)) / n_active
    out = {
        "t": traj["t"], "U": U, "S": S, "F": U - free_energy_tau * S,
        "open_fraction": (traj["gate"] > theta).to(U.dtype).mean((1, 2)),
        "cost": traj["cost"], "full_cost": traj["full_cost"],
    }
    if rank:
        out["effective_rank"] = state_rank(traj["state"])
    return out


def state_rank(state: torch.Tensor) -> torch.Tensor:
    """Effective rank per recorded tick of a level's state ``[T, B, n_k, d_k]``,
    each tick's ``[B * n_k, d_k]`` matrix."""
    return effective_rank(state.reshape(state.shape[0], -1, state.shape[-1]))
