"""What a run's store keeps: the :class:`Monitor` (variables, levels, every n-th tick, blocks).

``ZarrRecorder`` (:mod:`rtnclock.store`) writes what a monitor resolves to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import Config
from .errors import ConfigError

#: Per-block variables a monitor can record.
BLOCK_VARIABLES = ("state", "gate", "surprise", "entropy", "free_energy", "active")
#: The default monitor keeps the state of at most this many leaves (evenly spaced).
DEFAULT_LEAF_BLOCKS = 16


@dataclass(frozen=True)
class Monitor:
    """What a :class:`ZarrRecorder` writes (like Brian2's ``StateMonitor``).

    Attributes:
        variables: per-block variables (subset of :data:`BLOCK_VARIABLES`).
        levels: levels to record (``None``: all).
        every: record every ``every``-th tick of each level (1: all ticks).
        blocks: ``{level: block indices}``; a level not named records all its
            blocks, except the leaves, whose default is at most
            :data:`DEFAULT_LEAF_BLOCKS` evenly spaced ones.
    """

    variables: tuple = BLOCK_VARIABLES
    levels: tuple | None = None
    every: int = 1
    blocks: dict = field(default_factory=dict)

    def resolve(self, config: Config) -> dict[int, np.ndarray]:
        """``{level: block indices}`` to record; raises ``ConfigError`` on a bad field."""
        bad = [v for v in self.variables if v not in BLOCK_VARIABLES]
        if bad or isinstance(self.variables, str):
            raise ConfigError("monitor.variables", self.variables, f"a tuple from {BLOCK_VARIABLES}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError("monitor.every", self.every, "an integer >= 1")
        levels = range(config.n_levels) if self.levels is None else self.levels
        for k in list(levels) + list(self.blocks):
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < config.n_levels:
                raise ConfigError("monitor.levels", k, f"level indices 0..{config.n_levels - 1}")
        out = {}
        for k in levels:
            n_k = config.slots(k)
            if k in self.blocks:
                idx = np.asarray(self.blocks[k], dtype=np.int64).reshape(-1)
                if idx.size == 0 or idx.min() < 0 or idx.max() >= n_k or len(set(idx.tolist())) != idx.size:
                    raise ConfigError(f"monitor.blocks[{k}]", self.blocks[k],
                                      f"distinct block indices 0..{n_k - 1}")
            elif k == 0 and n_k > DEFAULT_LEAF_BLOCKS:
                idx = np.unique(np.linspace(0, n_k - 1, DEFAULT_LEAF_BLOCKS).round().astype(np.int64))
            else:
                idx = np.arange(n_k)
            out[k] = np.sort(idx)
        return out
