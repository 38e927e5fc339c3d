"""``simulate(config, stream) -> Run``: the one entry point for a simulation."""

from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass

import torch

from .clock import MultiClock
from .config import Config
from .errors import ConfigError, StreamError
from .events import EventLog
from .integrate import SolveStats
from .model import DTYPES, RTNModel
from .observables import level_observables
from .recorder import NullRecorder
from .references import run_continuous, run_loop
from .stream import Stream
from .tick import Hierarchy, SimState

MODES = ("multiclock", "lockstep", "stepwise", "continuous")


@dataclass
class Run:
    """A finished simulation.

    Attributes:
        config, model, mode: what ran.
        state: final :class:`~rtnclock.tick.SimState` (states, gates, masks).
        events: the :class:`~rtnclock.events.EventLog`.
        stats: solver calls and evaluations per level, solve and RHS seconds.
        recorder: the recorder the ticks went to.
        wall_seconds: wall time of the run.
    """

    config: Config
    model: RTNModel
    mode: str
    state: SimState
    events: EventLog
    stats: SolveStats
    recorder: object
    wall_seconds: float

    @property
    def duration(self) -> float:
        """Simulated seconds."""
        return self.state.end_n * self.config.base_period

    def final_states(self) -> list[torch.Tensor]:
        """Each level's state at the end, ``[B, n_k, d_k]``."""
        return [st.h for st in self.state.levels]

    def trajectory(self, level: int) -> dict[str, torch.Tensor]:
        """Recorded ticks of one level (needs a ``MemoryRecorder``)."""
        if not hasattr(self.recorder, "trajectory"):
            raise TypeError("trajectory() needs simulate(..., recorder=MemoryRecorder())")
        return self.recorder.trajectory(level)

    def observables(self, level: int) -> dict[str, torch.Tensor]:
        """Per recorded tick of one level: U, S, F, open fraction, cost, effective rank."""
        return level_observables(self.trajectory(level), self.config.gate_theta,
                                 self.config.free_energy_tau)

    def cost(self) -> tuple[float, float]:
        """``(executed, full)`` cost units summed over levels."""
        t = self.state.totals
        return sum(v["cost"] for v in t.values()), sum(v["full"] for v in t.values())

    @property
    def sparsity(self) -> float:
        """``1 - cost / full`` over the whole run."""
        cost, full = self.cost()
        return 1.0 - cost / full if full else 0.0

    def summary(self) -> list[dict]:
        """Per level: ticks, escalations, gate openings, solver calls, evaluations, cost, sparsity
        and ``gate_open``, the fraction of block-ticks whose gate was open."""
        counts = self.events.counts()
        rows = []
        for k, tot in self.state.totals.items():
            rows.append(dict(level=k, ticks=tot.get("ticks", 0), escalations=counts.get(("escalation", k), 0),
                             gate_opens=counts.get(("gate_open", k), 0),
                             solver_calls=self.stats.calls.get(k, 0), nfe=self.stats.nfe.get(k, 0),
                             cost=tot["cost"], full_cost=tot["full"],
                             gate_open=open_share(tot),
                             sparsity=1 - tot["cost"] / tot["full"] if tot["full"] else 0.0))
        return rows


def simulate(config: Config, stream: Stream, *, recorder=None, mode: str = "multiclock",
             model: RTNModel | None = None, duration: float | None = None, grad: bool = False,
             soft_gates: bool = False, adjoint: bool = False, progress=None,
             topology=None) -> Run:
    """Run an RTN hierarchy on a stream.

    Args:
        config: validated configuration.
        stream: sensory frames for ``b**K`` leaves with ``config.input_dim`` channels.
        recorder: receives every tick (default :class:`NullRecorder`).
        mode: ``multiclock`` (the simpy scheduler), ``lockstep`` (every level at
            the leaf period), ``stepwise`` (multi-rate, one solver call per level
            tick) or ``continuous`` (one solve, messages coupled continuously).
        model: parameters to use (default: built from ``config``; pass one to
            plug in your own level modules).
        duration: seconds to simulate (default: the whole stream).
        grad: build the autograd graph through the solver (for training);
            off by default because plain simulation does not need it.
        soft_gates: training's gates: every block under an active root runs
            (no sparsity) while every value stays evaluation's; wherever a gate
            switches something (output weight, coarse-up, a subtree awake) the
            switch keeps its hard value and takes the gate's gradient, closed
            gates included.  ``state.totals[k]["soft_cost"]`` then counts the
            cost evaluation executes, per stream ``[B]``, straight-through.
        adjoint: with ``grad``, differentiate each solve by torchdiffeq's
            adjoint (a backward solve) instead of through its steps.
        progress: called as ``progress(t, state)`` after every leaf tick
            (``state.totals[k]`` holds level ``k``'s running ticks, cost and open gates).
        topology: run on this tree (:class:`~rtnclock.topology.Topology`, a
            training module's) and leave it unchanged; by default the config's
            full tree, grown during the run if the config asks for growth.

    Returns:
        The :class:`Run`.

    Raises:
        ConfigError: unknown mode or a model built from another config.
        StreamError: stream shape or length does not fit the config.
        SolverError: a level could not be integrated.
    """
    if mode not in MODES:
        raise ConfigError("mode", mode, "one of " + ", ".join(MODES))
    if mode == "continuous" and not config.fixed_tree:
        raise ConfigError("mode", mode, "a ticking mode (multiclock, lockstep, stepwise) for a "
                                        "growing tree (capacity, mitosis, apoptosis)")
    if model is None:
        model = RTNModel(config)
    elif model.config is not config and model.config != config:
        raise ConfigError("model", "a model built from another config", "RTNModel(config) of this config")
    _check_stream(config, stream)
    dt0 = config.base_period
    duration = stream.duration if duration is None else duration
    if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise ConfigError("duration", duration, "a positive number of seconds")
    if duration > stream.duration + 1e-9 * dt0:
        raise StreamError(f"duration {duration} s is longer than the stream ({stream.duration} s)")
    end_n = int(math.floor(duration / dt0 + 1e-9))
    if end_n < 1:
        raise ConfigError("duration", duration, f"at least one leaf period ({dt0} s)")
    device = torch.device(config.device)
    model = model.to(device)
    stream = stream.to(device, DTYPES[config.dtype])
    recorder = recorder or NullRecorder()
    events, stats = EventLog(dt0), SolveStats()
    hier = Hierarchy(model, stream, events, stats)
    hier.progress = progress
    hier.soft_gates, hier.adjoint = soft_gates, adjoint
    state = hier.initial_state(end_n, topology)
    if getattr(recorder, "resuming", False):
        state = hier.bind(_resume(recorder, config, events, stream, mode, model, stats, state))
    else:
        recorder.start(config, events, stream)
    if hasattr(recorder, "bind"):
        recorder.bind(lambda: dict(model=model.state_dict(), stats=stats, rng=torch.get_rng_state()))
    start = time.perf_counter()
    with _older_objects_frozen():
        try:
            with torch.set_grad_enabled(grad):
                if mode == "multiclock":
                    MultiClock(hier, state, recorder).run()
                elif mode == "continuous":
                    run_continuous(hier, state, recorder)
                else:
                    run_loop(hier, state, recorder, lockstep=(mode == "lockstep"))
        except BaseException as err:
            try:
                recorder.close(failed=True)
            except Exception:           # the run's own error is the one to report
                pass
            raise err
        recorder.close()
    return Run(config=config, model=model, mode=mode, state=state, events=events, stats=stats,
               recorder=recorder, wall_seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _older_objects_frozen():
    """Leave the objects alive before the run out of the collector's full passes during it.

    A long run's event log and buffers bring full collections due; each one
    walked every object the process holds (torch, zarr, the user's data) for
    70-170 ms, at one or two per 300 s simulated.  ``gc.freeze`` exempts what
    existed before the run until it ends (nothing is lost: those objects return
    to the oldest generation then).  Skipped when something froze objects already.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _resume(recorder, config, events, stream, mode, model, stats, fresh):
    """The state a killed run checkpointed (its model, counters and RNG restored), or ``fresh``."""
    if mode != "multiclock":
        raise ConfigError("mode", mode, "multiclock (only multi-clock runs checkpoint and resume)")
    ckpt = recorder.resume(config, events, stream)
    if ckpt is None:
        return fresh
    state = ckpt["state"]
    if state.end_n != fresh.end_n:
        raise ConfigError("duration", fresh.end_n * config.base_period,
                          f"the killed run's duration, {state.end_n * config.base_period:g} s")
    model.load_state_dict(ckpt["model"])
    stats.__dict__.update(ckpt["stats"].__dict__)
    torch.set_rng_state(ckpt["rng"])
    return state


def _check_stream(config: Config, stream: Stream) -> None:
    if not isinstance(stream, Stream):
        raise StreamError(f"stream must be an rtnclock.Stream, got {type(stream).__name__}")
    n_leaves = config.blocks(0)
    if stream.n_leaves != n_leaves:
        raise StreamError(f"stream feeds {stream.n_leaves} leaves; the config has b**K = {n_leaves}")
    if stream.input_dim != config.input_dim:
        raise StreamError(f"stream has {stream.input_dim} channels per leaf; config input_dim is "
                          f"{config.input_dim}")


def open_share(totals: dict) -> float:
    """Fraction of a level's (alive) block-ticks with an open gate, from its running ``totals``."""
    return float(totals.get("open", 0)) / max(1, totals.get("block_ticks", 0))
