"""The RTN hierarchy as one ``nn.Module``: levels, leaf core, gates, coarse ops, priors.

All blocks of a level share parameters and live in one tensor ``[B, n_k, d_k]``.
Outputs of every level are in one shared space of size ``d_0`` so that the
HyperBlock recursion ``y_k = Coarse_k(h_k) + g_k (mean children y - Coarse_k(h_k))``
can mix them.
"""

from __future__ import annotations

import torch
from torch import nn

from .coarse import COARSE
from .config import Config
from .errors import ConfigError
from .gate import GateHead
from .leaf import LeafCore
from .level import BlockLevel
from .messages import PriorHead

DTYPES = {"float32": torch.float32, "float64": torch.float64}
_LEVEL_API = ("tau", "period", "inputs", "vector_field")


class RTNModel(nn.Module):
    """Parameters of an RTN hierarchy built from a :class:`Config`.

    Args:
        config: the validated configuration.
        levels: optional user level modules (one per level, level 0 first) that
            replace the default :class:`~rtnclock.level.BlockLevel` dynamics; each
            needs ``tau``, ``period``, ``inputs(up, down)`` and
            ``vector_field(t, h, inputs)``.  Their periods must equal the config's.

    Raises:
        ConfigError: a user level lacks part of the level interface or has the
            wrong period.
    """

    def __init__(self, config: Config, *, levels: list[nn.Module] | None = None):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        dtype = DTYPES[config.dtype]
        dims, taus, periods = (config.resolved(n) for n in ("dims", "taus", "periods"))
        self.out_dim = dims[0]
        if levels is None:
            levels = [
                BlockLevel(dims[k], config.input_dim if k == 0 else self.out_dim, tau=taus[k],
                           period=periods[k], activation=config.activation,
                           gain=config.weight_gain, generator=gen, dtype=dtype)
                for k in range(config.n_levels)
            ]
        _check_levels(levels, config)
        self.levels = nn.ModuleList(levels)
        self.gates = nn.ModuleList(
            GateHead(dims[k], config.input_dim, a=config.resolved("gate_a")[k],
                     beta=config.resolved("gate_beta")[k], bias=config.resolved("gate_bias")[k],
                     mode=config.resolved("gate_mode")[k], generator=gen, dtype=dtype)
            for k in range(config.n_levels))
        coarse = COARSE[config.coarse]
        # Index k-1 holds level k's coarse operator and prior head (levels >= 1).
        self.coarse_ops = nn.ModuleList(
            coarse(dims[k], self.out_dim, generator=gen, dtype=dtype) for k in range(1, config.n_levels))
        self.priors = nn.ModuleList(
            PriorHead(dims[k], dims[k - 1], config.branching, generator=gen, dtype=dtype)
            for k in range(1, config.n_levels))
        self.leaf = LeafCore(dims[0], generator=gen, dtype=dtype)

    def coarse(self, k: int) -> nn.Module:
        """Coarse operator of level ``k >= 1``."""
        return self.coarse_ops[k - 1]

    def prior(self, k: int) -> nn.Module:
        """Prior-down head of level ``k >= 1`` (maps its state to its children's priors)."""
        return self.priors[k - 1]

    def block_cost(self, k: int) -> int:
        """Cost units of one block-tick of level ``k``: multiply-adds of one vector-field call."""
        level = self.levels[k]
        d = getattr(level, "dim", self.config.resolved("dims")[k])
        up = getattr(level, "up_dim", self.config.input_dim if k == 0 else self.out_dim)
        return d * (2 * d + up)

    def attention_cost(self, n_leaves: int) -> int:
        """Cost units of one open leaf's geometric core (projections + attention)."""
        d = self.out_dim
        return 3 * d * d + 2 * d * (self.config.memory_size + n_leaves)


def _check_levels(levels, config: Config) -> None:
    if len(levels) != config.n_levels:
        raise ConfigError("levels", f"{len(levels)} modules", f"K+1 = {config.n_levels} level modules")
    periods = config.resolved("periods")
    for k, level in enumerate(levels):
        missing = [name for name in _LEVEL_API if not hasattr(level, name)]
        if missing:
            raise ConfigError(f"levels[{k}]", type(level).__name__,
                              f"an nn.Module with {', '.join(_LEVEL_API)} (missing {', '.join(missing)})")
        if abs(float(level.period) - periods[k]) > 1e-12 * periods[k]:
            raise ConfigError(f"levels[{k}].period", level.period, f"the config's period {periods[k]!r}")
