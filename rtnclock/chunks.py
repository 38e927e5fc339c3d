"""A level's recorded ticks, a time chunk at a time: the rows a store fills and the columns it appends.

``store.ZarrRecorder`` keeps one :class:`LevelBuffer` per monitored level.
Ticks are copied into tensors allocated once per level (two chunks' worth,
used in turn, :class:`Rows`), so a chunk being filled holds no tick objects
alive; a full chunk becomes one new array per stored variable
(:meth:`LevelBuffer.columns`), computed on the store writer's thread.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from .config import Config
from .monitor import BLOCK_VARIABLES
from .observables import free_energy, level_observables, state_rank
from .recorder import TREE, TickRecord

#: Per-tick scalars every monitored level records.
TICK_SCALARS = ("n", "cost", "full_cost", "escalated", "U", "S", "F", "open_fraction", "effective_rank")
#: Per-tick numbers a level's rows keep beside its tensors (name -> dtype).
_SCALARS = {"t": np.float64, "n": np.int64, "cost": np.float64, "full_cost": np.float64, "escalated": np.bool_}
#: Tensors of a tick the rows keep: what the stored variables and the observables need.
_FIELDS = ("state", "gate", "surprise", "entropy", "active")
#: Per-tick observables of a level (``level_observables``) the store keeps.
OBSERVED = ("U", "S", "F", "open_fraction", "effective_rank")


class Rows:
    """One time chunk of a level's ticks, in tensors allocated once and filled in place.

    Holding a chunk of ticks themselves kept thousands of small tensors alive:
    the run's allocator could not reuse their memory, and the cyclic garbage
    collector walked them (one full collection cost the run ~0.1 s).  Ticks
    are held only in small batches, stacked into their rows with one
    ``torch.stack(out=...)`` per field (views made per row up front would be
    just as many long-lived objects).
    """

    #: Ticks held before they are stacked into their rows.
    BATCH = 64
    #: Settled rows whose effective rank the writer's thread computes in one
    #: piece during the run (an SVD per tick: the costliest column, and the
    #: last flush, which the run waits for, is left only the rows after them).
    RANK_PIECE = 4 * BATCH

    def __init__(self, chunk: int, like: dict[str, torch.Tensor]):
        self.fields = tuple(like)
        self.data = {f: torch.empty((chunk, *x.shape), dtype=x.dtype, device=x.device) for f, x in like.items()}
        self.scalars = {name: np.empty(chunk, dtype) for name, dtype in _SCALARS.items()}
        self.rank = torch.empty(chunk, dtype=like["state"].dtype, device=like["state"].device)
        self.count = 0                      # rows filled, pending ticks included
        self.asked = 0                      # rows whose rank a piece computes (or has)
        self._pending: list[TickRecord] = []
        self.free = threading.Event()         # set once the writer has copied the rows out
        self.free.set()

    def add(self, tick: TickRecord):
        """Take ``tick`` as the next row; returns a :meth:`rank_piece` when one is due, else None."""
        self._pending.append(tick)
        self.count += 1
        if len(self._pending) == self.BATCH:
            self.settle()
            if self.count - self.asked >= self.RANK_PIECE:
                return self.rank_piece()
        return None

    def rank_piece(self):
        """A job computing the effective rank of the settled rows no piece has been asked for."""
        a = self.asked
        b = self.asked = self.count - len(self._pending)

        def job():
            self.rank[a:b] = state_rank(self.data["state"][a:b])
        return job

    def ranks(self) -> torch.Tensor:
        """The effective rank of every settled row: those no piece covers are
        computed here, on the calling thread; the rest are whole once every
        piece asked for has run."""
        if self.asked < self.count:
            self.rank_piece()()
        return self.rank[:self.count]

    def settle(self) -> None:
        """Stack the pending ticks into their rows (the run's thread only)."""
        ticks, self._pending = self._pending, []
        if not ticks:
            return
        start, stop = self.count - len(ticks), self.count
        for name, values in self.scalars.items():
            values[start:stop] = [getattr(t, name) for t in ticks]
        with torch.no_grad():
            for f in self.fields:
                torch.stack([getattr(t, f) for t in ticks], out=self.data[f][start:stop])

    def load(self, cols: dict) -> None:
        """Fill the first rows from :meth:`trajectory`'s layout (a checkpoint's held ticks)."""
        n = len(cols["t"])
        for f in self.fields:
            self.data[f][:n] = cols[f]
        for name, values in self.scalars.items():
            values[:n] = np.asarray(cols[name])
        self.count, self.asked = n, 0
        self._pending = []

    def reset(self) -> None:
        """Empty the rows for the next chunk."""
        self.count = self.asked = 0
        self._pending = []

    def trajectory(self, copy: bool = False) -> dict[str, torch.Tensor]:
        """The rows, once settled, as ``stack_ticks`` lays out ticks (views unless ``copy``)."""
        n = self.count
        out = {name: torch.from_numpy(values[:n].copy() if copy else values[:n])
               for name, values in self.scalars.items()}
        out.update({f: (x[:n].clone() if copy else x[:n]) for f, x in self.data.items()})
        return out


class LevelBuffer:
    """A level's ticks until their time chunk is full, then appended whole.

    Two :class:`Rows` alternate: the run fills one while the writer's thread
    computes the other's observables and copies out its stored variables.
    """

    def __init__(self, level: int, blocks: np.ndarray, config: Config, batch: int, variables: tuple, dtype,
                 chunk: int, ask):
        """``chunk``: ticks per time chunk; ``ask(job)`` runs a job on the
        writer's thread, in its turn (a piece of effective ranks)."""
        d = config.resolved("dims")[level]
        nb = len(blocks)
        self.shapes = {"time": (), **{name: () for name in TICK_SCALARS}}
        self.dtypes = {"time": np.float64, "n": np.int64, "escalated": np.bool_}
        for v in variables:
            self.shapes[v] = (batch, nb, d) if v == "state" else (batch, nb)
            self.dtypes[v] = np.bool_ if v == "active" else dtype
        if not config.fixed_tree:                    # the whole tree, every slot, every tick
            slots = config.slots(level)
            for v in TREE:
                self.shapes[v] = (slots,)
                self.dtypes[v] = {"alive": np.bool_, "born": np.float64}.get(v, np.int64)
        for v in self.shapes:
            self.dtypes.setdefault(v, np.float64)
        self.chunk, self.ask = chunk, ask
        self.all_blocks = nb == config.slots(level)
        self.fields = _FIELDS + (() if config.fixed_tree else TREE)
        self.blocks, self.level, self.config = torch.as_tensor(blocks), level, config
        self.name, self.rows = f"level_{level}", 0
        self.pair: list[Rows] = []          # allocated at the first tick, on its device
        self.held: Rows | None = None

    @property
    def count(self) -> int:
        """Ticks held (not yet handed to the writer)."""
        return self.held.count if self.held is not None else 0

    def _allocate(self, like: dict[str, torch.Tensor]) -> None:
        self.pair = [Rows(self.chunk, like)]            # the second at the first flush
        self.held = self.pair[0]

    def add(self, tick: TickRecord) -> bool:
        """Copy one tick in; True when the chunk is full."""
        if self.held is None:
            self._allocate({f: getattr(tick, f) for f in self.fields})
        if (job := self.held.add(tick)) is not None:
            self.ask(job)
        return self.held.count == self.chunk

    def restore(self, cols: dict | None) -> None:
        """Hold a checkpoint's ticks again (:meth:`checkpoint`'s layout)."""
        if cols is not None:
            self._allocate({f: cols[f][0] for f in self.fields})
            self.held.load(cols)

    def checkpoint(self) -> dict | None:
        """The held ticks, copied, for a checkpoint."""
        if not self.count:
            return None
        self.held.settle()
        return self.held.trajectory(copy=True)

    def columns(self, rows: Rows, part: str = "all") -> dict[str, np.ndarray]:
        """The settled rows as one new array per stored variable.

        ``part``: "all"; "rest", all but the effective rank (the ranks no
        piece covers are computed meanwhile, on this thread); or "rank", the
        effective rank alone, once every piece has run.
        """
        if part == "rank":
            return {"effective_rank": numpy_of(rows.ranks()).astype(self.dtypes["effective_rank"])}
        traj = rows.trajectory()
        obs = level_observables(traj, self.config.gate_theta, self.config.free_energy_tau, rank=False)
        ranks = rows.ranks()
        if part == "all":
            obs["effective_rank"] = ranks
        cols = {"time": traj["t"], **{name: obs[name] for name in OBSERVED if name in obs}}
        cols.update(n=traj["n"], cost=traj["cost"], full_cost=traj["full_cost"], escalated=traj["escalated"])
        traj["free_energy"] = free_energy(traj["surprise"], traj["entropy"], self.config.free_energy_tau)
        for v in self.shapes:
            if v in TREE:
                cols[v] = traj[v]
            elif v in BLOCK_VARIABLES:
                x = traj[v]
                cols[v] = x if self.all_blocks else x[:, :, self.blocks.to(x.device)]
        # astype copies: the rows are reused once this returns.
        return {v: numpy_of(x).astype(self.dtypes[v]) for v, x in cols.items()}

    def flush(self, ready):
        """Hand over the held rows (a whole chunk, or the run's last part).

        ``ready(event)`` waits for ``event`` (the other rows copied out) and
        raises the writer's failure meanwhile.

        Returns:
            ``(items, nbytes)``: a callable giving the ``(array, start, rows)``
            appends (run by the writer's thread: it computes the observables
            and frees the rows) and their payload bytes; None if nothing is held.
            ``items(part)`` gives a :meth:`columns` part; "rest" keeps the rows
            for the "rank" that must follow.
        """
        if not self.count:
            return None
        rows, start = self.held, self.rows
        rows.settle()
        self.rows += rows.count
        nbytes = rows.count * sum(math.prod(s) * np.dtype(self.dtypes[v]).itemsize
                                  for v, s in self.shapes.items())
        rows.free.clear()
        if len(self.pair) == 1:
            self.pair.append(Rows(self.chunk, {f: x[0] for f, x in rows.data.items()}))
        self.held = self.pair[1] if rows is self.pair[0] else self.pair[0]
        ready(self.held.free)
        self.held.reset()

        def items(part: str = "all"):           # run by the writer's thread
            try:
                return [(f"{self.name}/{v}", start, data) for v, data in self.columns(rows, part).items()]
            finally:
                if part != "rest":
                    rows.free.set()
        return items, nbytes


def numpy_of(x: torch.Tensor) -> np.ndarray:
    """``x`` as a numpy array on the host (a view where it can be)."""
    return x.detach().to("cpu").numpy()
