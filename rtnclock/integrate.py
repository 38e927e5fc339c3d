"""torchdiffeq solves of one or more level windows in a single call.

A torchdiffeq call costs far more Python overhead than a small level's vector
field, so the scheduler hands every level that ticks at one moment to one
call.  Their windows differ in length, so each is mapped onto normalised time
``s in [0, 1]`` (``t = t0 + s*span``, ``dh/ds = span * f``); a window's
integral rides along as ``G = int h ds`` (``H = int h dt = span * G``) because
messages need exact window averages.  ``G`` is of the size of ``h``, so the
solver's error control weighs it like the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from .config import FIXED_METHODS, Config
from .errors import SolverError
from .solvers import odeint


@dataclass
class Segment:
    """One level's part of a joint solve.

    Attributes:
        level: level index (for errors and counters).
        module: the level module (``vector_field``).
        h0: initial states of the integrated rows ``[R, d]``.
        inputs: what ``module.inputs(up, down)`` returned for these rows.
        t0, span: physical start and length of the window (seconds).
        rows: flat ``B*n_k`` row index of each state row (for error reports).
        n_blocks: ``n_k`` (to turn a row into a block index).
    """

    level: int
    module: torch.nn.Module
    h0: torch.Tensor
    inputs: object
    t0: float
    span: float
    rows: torch.Tensor | None = None
    n_blocks: int = 1


@dataclass
class SolveStats:
    """Counters of solver work (per level: calls and vector-field evaluations)."""

    calls: dict = field(default_factory=dict)
    nfe: dict = field(default_factory=dict)
    solve_seconds: float = 0.0
    rhs_seconds: float = 0.0

    def add(self, levels, nfe: int, seconds: float, rhs_seconds: float) -> None:
        """Count one call that integrated ``levels`` with ``nfe`` evaluations."""
        for k in levels:
            self.calls[k] = self.calls.get(k, 0) + 1
            self.nfe[k] = self.nfe.get(k, 0) + nfe
        self.solve_seconds += seconds
        self.rhs_seconds += rhs_seconds


def solve(segments: list[Segment], fractions: list[float], config: Config,
          stats: SolveStats | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Integrate all segments jointly; outputs at normalised times ``fractions``.

    Args:
        segments: the level windows, lowest level first.
        fractions: ascending normalised output times in ``(0, 1]``, ending at 1.
        config: solver method, tolerances and step size.
        stats: counters to update.

    Returns:
        Per segment ``(h, H)``, each ``[len(fractions), R, d]``: the state and
        ``int_{t0}^{t} h dt`` at each output time.

    Raises:
        SolverError: the solver failed or produced non-finite values; names the
            level, block and time.
    """
    sizes = [s.h0.numel() for s in segments]
    shapes = [s.h0.shape for s in segments]
    y0 = torch.cat([torch.cat([s.h0.reshape(-1), torch.zeros_like(s.h0).reshape(-1)]) for s in segments])
    rhs_time = [0.0, 0]

    def rhs(s_norm, y):
        start = time.perf_counter()
        s_val = float(s_norm)
        out, o = [], 0
        for seg, size, shape in zip(segments, sizes, shapes):
            h = y[o:o + size].view(shape)
            dh = seg.module.vector_field(seg.t0 + s_val * seg.span, h, seg.inputs)
            out.append((dh * seg.span).reshape(-1))
            out.append(h.reshape(-1))
            o += 2 * size
        rhs_time[0] += time.perf_counter() - start
        rhs_time[1] += 1
        return torch.cat(out)

    s_out = torch.tensor([0.0, *fractions], dtype=y0.dtype, device=y0.device)
    options = None
    if config.method in FIXED_METHODS:
        # The step is set for the leaves; a call whose fastest level is slower
        # steps as far in units of that level's own tau (same accuracy, fewer steps).
        step = (config.step_size or config.base_period / 4) * float(segments[0].module.tau) \
            / config.resolved("taus")[0]
        options = {"grid_constructor": _grid(step / segments[0].span)}
    start = time.perf_counter()
    try:
        ys = odeint(rhs, y0, s_out, config, options)[1:]                 # [len(fractions), total]
    except (AssertionError, RuntimeError) as err:
        seg = segments[0]
        raise SolverError(f"solver {config.method!r} could not step: {err}", level=seg.level,
                          block=None, time=seg.t0) from err
    if stats is not None:
        stats.add([s.level for s in segments], rhs_time[1], time.perf_counter() - start, rhs_time[0])
    results, o = [], 0
    for seg, size, shape in zip(segments, sizes, shapes):
        h = ys[:, o:o + size].reshape(len(fractions), *shape)
        H = ys[:, o + size:o + 2 * size].reshape(len(fractions), *shape) * seg.span
        _check_finite(seg, h, fractions)
        results.append((h, H))
        o += 2 * size
    return results


def _grid(h_norm: float):
    """A fixed grid through every output time, steps no longer than ``h_norm``."""

    def construct(func, y0, t):
        pieces = [t[:1]]
        for a, b in zip(t[:-1], t[1:]):
            m = max(1, int(torch.ceil((b - a) / h_norm - 1e-9)))
            pieces.append(torch.linspace(float(a), float(b), m + 1, dtype=t.dtype, device=t.device)[1:])
            pieces[-1][-1] = b
        return torch.cat(pieces)

    return construct


def _check_finite(seg: Segment, h: torch.Tensor, fractions: list[float]) -> None:
    bad = ~torch.isfinite(h).flatten(2).all(-1)                          # [T, R]
    if not bool(bad.any()):
        return
    step, row = (int(v) for v in bad.nonzero()[0])
    flat = int(seg.rows[row]) if seg.rows is not None else row
    raise SolverError("non-finite state (divergent or stiff dynamics)", level=seg.level,
                      block=flat % seg.n_blocks, time=seg.t0 + fractions[step] * seg.span)
