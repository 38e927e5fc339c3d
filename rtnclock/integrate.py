"""torchdiffeq solves of one or more level windows in a single call.

A torchdiffeq call costs far more Python overhead than a small level's vector
field, so the scheduler hands every level that ticks at one moment to one
call.  Their windows differ in length, so each is mapped onto normalised time
``s in [0, 1]`` (``t = t0 + s*span``, ``dh/ds = span * f``); a window's
integral rides along as ``G = int h ds`` (``H = int h dt = span * G``) because
messages need exact window averages.  ``G`` is of the size of ``h``, so the
solver's error control weighs it like the state.  The integrals follow all the
states in the joint vector and are declared as quadrature (no evaluation
reads them), so the stage-major solvers form stage states without them.
"""

from __future__ import annotations

import copy
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
          stats: SolveStats | None = None, adjoint: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Integrate all segments jointly; outputs at normalised times ``fractions``.

    Args:
        segments: the level windows, lowest level first.
        fractions: ascending normalised output times in ``(0, 1]``, ending at 1.
        config: solver method, tolerances and step size.
        stats: counters to update.
        adjoint: when autograd is on, differentiate by torchdiffeq's adjoint
            (a backward solve; memory does not grow with the steps taken)
            instead of through the solver's steps.

    Returns:
        Per segment ``(h, H)``, each ``[len(fractions), R, d]``: the state and
        ``int_{t0}^{t} h dt`` at each output time.

    Raises:
        SolverError: the solver failed or produced non-finite values; names the
            level, block and time.
    """
    sizes = [s.h0.numel() for s in segments]
    shapes = [s.h0.shape for s in segments]
    # The states first, then their integrals: y = [h_1 .. h_m, G_1 .. G_m].
    n_h = sum(sizes)
    y0 = torch.cat([s.h0.reshape(-1) for s in segments] + [segments[0].h0.new_zeros(n_h)])
    rhs_time = [0.0, 0]

    def make_rhs(inputs: list):
        """The joint vector field, the segments reading ``inputs`` (``y`` may stop after the states)."""
        def rhs(s_norm, y, row=None):
            start = time.perf_counter()
            # The stage-major solvers hand in a float; the adjoint a time that wants a gradient.
            s_val = s_norm if isinstance(s_norm, float) else float(s_norm.detach())
            out, o = [], 0
            for seg, held, size, shape in zip(segments, inputs, sizes, shapes):
                h = y[o:o + size].view(shape)
                dh = seg.module.vector_field(seg.t0 + s_val * seg.span, h, held)
                out.append((dh * seg.span).reshape(-1))
                o += size
            out.append(y[:n_h])                                    # dG/ds = h
            rhs_time[0] += time.perf_counter() - start
            rhs_time[1] += 1
            return torch.cat(out, out=row)
        rhs.writes_into = True                      # solvers.StageMajorRK may pass the stage row
        rhs.quadrature = n_h                        # ... and leave the integrals out of its stage states
        return rhs

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
        if adjoint and torch.is_grad_enabled():
            ys = _adjoint_solve(segments, make_rhs, y0, s_out, config, options)[1:]
        else:
            ys = odeint(make_rhs([seg.inputs for seg in segments]), y0, s_out, config, options)[1:]
    except (AssertionError, RuntimeError) as err:
        seg = segments[0]
        raise SolverError(f"solver {config.method!r} could not step: {err}", level=seg.level,
                          block=None, time=seg.t0) from err
    if stats is not None:
        stats.add([s.level for s in segments], rhs_time[1], time.perf_counter() - start, rhs_time[0])
    # One scan of the whole solution; the per-segment search only when it fails.
    finite = bool(torch.isfinite(ys).all())
    results, o = [], 0
    for seg, size, shape in zip(segments, sizes, shapes):
        h = ys[:, o:o + size].reshape(len(fractions), *shape)
        H = ys[:, n_h + o:n_h + o + size].reshape(len(fractions), *shape) * seg.span
        if not finite:
            _check_finite(seg, h, fractions)
        results.append((h, H))
        o += size
    return results


def _adjoint_solve(segments: list[Segment], make_rhs, y0, s_out, config: Config, options):
    """``odeint_adjoint`` of one joint solve, cut off from the run's graph.

    The adjoint's backward differentiates the vector field with respect to the
    tensors it reads.  The held inputs are not leaves: through the messages they
    depend on every earlier window, and on the same parameters, so asking
    autograd for their gradient inside the adjoint would walk (and re-solve)
    the whole run's history at every stage.  The solve therefore reads leaf
    copies, and :class:`_Relay` hands their gradients, and the initial state's,
    back to the run's graph.
    """
    held = []
    for seg in segments:
        _tensors(seg.inputs, held)
    params = []
    for seg in segments:
        for p in seg.module.parameters():
            if p.requires_grad and all(p is not q for q in params):
                params.append(p)
    return _Relay.apply(segments, make_rhs, s_out, config, options, len(held), y0, *held, *params)


class _Relay(torch.autograd.Function):
    """The solve on leaf copies of ``y0`` and the held inputs; backward returns their gradients."""

    @staticmethod
    def forward(ctx, segments, make_rhs, s_out, config, options, n_held, y0, *tensors):
        held, params = tensors[:n_held], tensors[n_held:]
        with torch.enable_grad():
            y0_leaf = y0.detach().requires_grad_(y0.requires_grad)
            copies = {id(t): t.detach().requires_grad_(t.requires_grad) for t in held}
            rhs = make_rhs([_substitute(seg.inputs, copies) for seg in segments])
            leaves = tuple(copies[id(t)] for t in held if t.requires_grad) + tuple(params)
            ys = odeint(rhs, y0_leaf, s_out, config, options, adjoint_params=leaves)
        ctx.inner = (ys, y0_leaf, [copies[id(t)] for t in held], params)
        return ys.detach()

    @staticmethod
    def backward(ctx, grad_ys):
        ys, y0_leaf, copies, params = ctx.inner
        wanted = [t for t in (y0_leaf, *copies, *params) if t.requires_grad]
        got = iter(torch.autograd.grad(ys, wanted, grad_ys, allow_unused=True))
        grads = [next(got) if t.requires_grad else None for t in (y0_leaf, *copies, *params)]
        ctx.inner = None
        return (None,) * 6 + tuple(grads)


def _tensors(obj, out: list, depth: int = 0) -> None:
    """Append the tensors held in ``obj`` (a tensor or a small object of them) to ``out``, once each."""
    if isinstance(obj, torch.Tensor):
        if all(obj is not t for t in out):
            out.append(obj)
    elif depth < 3 and hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        for value in vars(obj).values():
            _tensors(value, out, depth + 1)


def _substitute(obj, copies: dict, depth: int = 0):
    """``obj`` with every tensor it holds replaced by ``copies[id(tensor)]`` (shallow copies of objects)."""
    if isinstance(obj, torch.Tensor):
        return copies.get(id(obj), obj)
    if depth < 3 and hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        new = copy.copy(obj)
        for name, value in vars(obj).items():
            setattr(new, name, _substitute(value, copies, depth + 1))
        return new
    return obj


def _grid(h_norm: float):
    """A fixed grid through every output time, steps no longer than ``h_norm``
    (either way in time: the adjoint's backward solve uses it too)."""

    def construct(func, y0, t):
        pieces = [t[:1]]
        for a, b in zip(t[:-1], t[1:]):
            m = max(1, int(torch.ceil(abs(b - a) / h_norm - 1e-9)))
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
