"""The one entry to torchdiffeq, with stage-major adaptive Runge–Kutta steps.

torchdiffeq's adaptive RK solvers keep a step's stages in the *last* axis of one
tensor, so every stage combination is a strided reduction over the whole state
plus a temporary of (stages x state).  For the joint states rtnclock solves
(10^4–10^5 numbers, a cheap vector field) that bookkeeping took 2–3x the time
of the vector field itself.  The solvers here are torchdiffeq's own classes,
Butcher tableaux and step-size controller, with the stages in the *leading*
axis: each combination is one contiguous matrix-vector product, the dense
output at an output time inside a step included (torchdiffeq's quartic,
rewritten as stage weights), and an output time that ends a step takes the
step's end value.  Times and step sizes are Python floats.  Results equal
torchdiffeq's to rounding (tests/test_solvers.py).  Fixed-grid RK4 gets a
leaner loop likewise (:class:`GridRK4`).

These classes use torchdiffeq internals (``torchdiffeq._impl``); the pin in
``pyproject.toml`` keeps them matched.
"""

from __future__ import annotations

import math

import torch
import torchdiffeq
from torchdiffeq._impl.misc import _compute_error_ratio, _PerturbFunc, _rms_norm, _select_initial_step
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.fixed_grid import RK4
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _RungeKuttaState, _UncheckedAssign

from .config import Config, quiet_scipy, solver_options

PREFIX = "stage_major_"


class StageMajorRK(RKAdaptiveStepsizeODESolver):
    """A torchdiffeq adaptive RK solver whose stages lie in the leading axis.

    Subclassed once per torchdiffeq method (``tableau``, ``mid``, ``order`` come
    from it).  ``step_t``/``jump_t`` and event functions are not supported;
    rtnclock uses neither.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.step_t is not None or self.jump_t is not None:
            raise ValueError("stage-major solvers do not take step_t or jump_t")
        tab = self.tableau
        self._alpha = [float(a) for a in tab.alpha]
        self._beta = list(tab.beta)
        self._at_end = [i for i, a in enumerate(self._alpha) if a == 1.0]
        # First-same-as-last tableaux (Dormand–Prince) end on the solution itself.
        self._fsal = bool(tab.c_sol[-1] == 0) and bool((tab.c_sol[:-1] == tab.beta[-1]).all())
        # torchdiffeq's time-perturbing wrapper takes a pass over the state per
        # evaluation (to learn its dtype); call what it wraps and perturb here.
        self._rhs = self.func.base_func if type(self.func) is _PerturbFunc else None
        # A field marked ``writes_into`` is called as ``f(t: float, y, row)``
        # and writes its value into that row of the stage matrix.
        self._into = bool(getattr(self._rhs, "writes_into", False))
        # Such a field may also declare ``quadrature = m``: the last m entries of
        # the state are integrals no evaluation reads (rtnclock's window
        # integrals), so a stage state is formed, and handed in, without them,
        # except the last stage's when it is the step's solution.
        self._quad = int(getattr(self._rhs, "quadrature", 0)) if self._into else 0
        self._c_sol, self._mid = tab.c_sol.tolist(), self.mid.tolist()
        self._bufs: list[tuple] = []                # see _buffer
        # Scalar tolerances as floats (a 0-d tensor operand is converted at every
        # use); per-element ones (torchdiffeq's tuple states) stay tensors.
        self._tol = tuple(float(v) if v.numel() == 1 else v for v in (self.rtol, self.atol))

    def _eval(self, t, y):
        """``f(t, y)`` at a stage time from :meth:`_stage_times` (already perturbed)."""
        return self.func(t, y) if self._rhs is None else self._rhs(t, y)

    def _stage_times(self, y0, t0: float, dt: float, t1: float, floats: bool) -> list:
        """The stages' times in the state's dtype, the one at ``t1`` just before it (torchdiffeq's PREV).

        Python floats when ``floats`` (for float64 states without a tensor
        operation), otherwise 0-d tensors, as torchdiffeq's own fields expect.
        """
        if floats and y0.dtype == torch.float64:
            return [math.nextafter(t1, -math.inf) if a == 1.0 else t0 + a * dt for a in self._alpha]
        times = torch.tensor([t1 if a == 1.0 else t0 + a * dt for a in self._alpha], dtype=y0.dtype)
        if self._at_end:
            end = times[self._at_end]
            times[self._at_end] = torch.nextafter(end, end - 1)
        return times.tolist() if floats else list(times.unbind())

    def _error_ratio(self, error, y0, y1) -> float:
        if self.norm is not _rms_norm:
            return float(_compute_error_ratio(error, self.rtol, self.atol, y0, y1, self.norm))
        n = math.sqrt(error.numel())
        if torch.is_grad_enabled():
            with torch.no_grad():              # step control is not differentiated
                tol = torch.maximum(y0.abs(), y1.abs()).mul_(self._tol[0]).add_(self._tol[1])
                return float(torch.linalg.vector_norm(error / tol)) / n
        # |y1| of an accepted step is the next step's |y0|.
        held, y0_abs = self._abs
        y1_abs = y1.abs()
        self._abs = (y1, y1_abs)
        if held is not y0:
            y0_abs = y0.abs()
        tol = torch.maximum(y0_abs, y1_abs).mul_(self._tol[0]).add_(self._tol[1])
        return float(torch.linalg.vector_norm(error.div_(tol))) / n

    def _before_integrate(self, t):
        # torchdiffeq's first evaluation and first step; its step_t/jump_t
        # bookkeeping (a dozen tensor operations per call) is left out, as
        # neither is accepted here.
        f0 = self.func(t[0], self.y0)
        first = self.first_step
        t0 = float(t[0].detach())
        if first is not None:
            first = float(first.detach())
        elif self._into and self.norm is _rms_norm:
            first = self._first_step(t0, f0)
        else:
            first = float(_select_initial_step(self.func, t[0], self.y0, self.order - 1, self.rtol, self.atol,
                                               self.norm, f0=f0).detach())
        # Times and step sizes as Python floats from here on: float64, as
        # torchdiffeq keeps them, without a tensor operation (~3 us) for each
        # of the ~25 scalar steps of step control.
        self.rk_state = _RungeKuttaState(self.y0, f0, t0, t0, first, None)
        self._step_limits = (float(self.min_step), float(self.max_step))
        self._control = (float(self.safety), float(self.ifactor), float(self.dfactor), 1.0 / self.order)
        self._max_steps = int(self.max_num_steps)       # a tensor there: a comparison a step
        self._abs = (None, None)                        # (y, |y|) of the last step tried

    def _first_step(self, t0: float, f0) -> float:
        """torchdiffeq's ``_select_initial_step`` (Hairer, Norsett & Wanner II.4) in Python floats.

        Its norms are tensors compared and combined one operation at a time
        (about 30 per solve); here each norm is one reduction read as a float,
        and the trial evaluation goes to the field directly.  The step equals
        torchdiffeq's to rounding (for float32 states torchdiffeq rounds its
        scalars to float32; here they stay float64).
        """
        y0, f0 = _flat(self.y0), _flat(f0)
        root_n = math.sqrt(y0.numel())
        with torch.no_grad():
            scale = y0.abs().mul_(self._tol[0]).add_(self._tol[1])
            d0 = float(torch.linalg.vector_norm(y0 / scale)) / root_n
            d1 = float(torch.linalg.vector_norm(f0 / scale)) / root_n
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            f1 = _flat(self._rhs(t0 + h0, torch.add(y0, f0, alpha=h0)))
            d2 = float(torch.linalg.vector_norm((f1 - f0).div_(scale))) / root_n / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / self.order)
        return min(100 * h0, h1)

    def integrate(self, t):
        """The solution at every time of ``t`` (``[len(t), *y0.shape]``).

        torchdiffeq's loop indexes ``t`` and copies each output into a
        preallocated tensor (two tensor operations an output); here the times
        are Python floats, unless an output time wants a gradient.
        """
        t = t.to(self.dtype)
        self._before_integrate(t)
        times = t.unbind() if t.requires_grad else t.tolist()
        return torch.stack([self.y0, *(self._advance(x) for x in times[1:])])

    def _advance(self, next_t):
        steps = 0
        t_next = next_t if isinstance(next_t, float) else float(next_t.detach())
        while t_next > self.rk_state.t1:
            assert steps < self._max_steps, f"max_num_steps exceeded ({steps}>={self._max_steps})"
            self.rk_state = self._adaptive_step(self.rk_state)
            steps += 1
        state = self.rk_state
        if t_next == state.t1:
            return state.y1
        y0, _, stages, dt = state.interp_coeff
        # A gradient in the output time keeps x a tensor.
        x = (t_next if isinstance(next_t, float) or not next_t.requires_grad else next_t) - state.t0
        x = x / (state.t1 - state.t0)
        return torch.addmv(y0, stages.t(), self._dense_weights(x), alpha=dt).view_as(state.y1)

    def _dense_weights(self, x) -> torch.Tensor:
        """Stage weights ``w`` of torchdiffeq's dense output at ``t0 + x dt``: ``y0 + dt * stages^T w``.

        torchdiffeq fits a quartic through ``y0``, ``y1``, ``y_mid``, ``f0``,
        ``f1`` (``_interp_fit``) and evaluates it; each of those is ``y0`` plus
        a stage combination, so the whole interpolant is one (a pass over the
        state instead of about twenty).
        """
        x2, x3, x4 = x * x, x ** 3, x ** 4
        w_f0 = x - 4 * x2 + 5 * x3 - 2 * x4                 # of f0 (the first stage)
        w_f1 = x2 - 3 * x3 + 2 * x4                         # of f1 (the last stage)
        w_y1 = -5 * x2 + 14 * x3 - 8 * x4                   # of (y1 - y0) / dt = stages^T c_sol
        w_mid = 16 * x2 - 32 * x3 + 16 * x4                 # of (y_mid - y0) / dt = stages^T mid
        w = [c * w_y1 + m * w_mid for c, m in zip(self._c_sol, self._mid)]
        w[0], w[-1] = w[0] + w_f0, w[-1] + w_f1
        like = self.tableau.c_sol
        if isinstance(x, float):            # one tensor operation for the weights
            return torch.tensor(w, dtype=like.dtype, device=like.device)
        return torch.stack(w).to(like)      # x a tensor that wants a gradient

    def _advance_until_event(self, event_fn):
        raise NotImplementedError("stage-major solvers do not support event functions")

    def _step(self, y0, f0, t0: float, dt: float, t1: float):
        """One RK step: ``(y1, f1, error, stages)``, stages ``[S, N]``.

        Each stage state is one ``addmv`` with ``dt`` as its scale, so a stage
        costs its evaluation and two or three tensor operations.
        """
        flat = _flat(y0)
        shaped = (lambda v: v.view_as(y0)) if y0.dim() != 1 else (lambda v: v)
        # A field that writes into its output row saves a copy per stage
        # (autograd cannot record an ``out=`` write, so only without it).
        into = self._into and not torch.is_grad_enabled()
        times = self._stage_times(y0, t0, dt, t1, floats=into)
        if into:
            stages, blocks, rows, lead = self._buffer(flat)
            rows[0].copy_(_flat(f0))
            n_lead = flat.numel() - self._quad
            head = flat[:n_lead] if lead is not None else None
            last = len(self._beta) - 1 if self._fsal else None      # the stage that is the solution
            for i, (t, beta) in enumerate(zip(times, self._beta)):
                if lead is not None and i != last:                 # without the integrals
                    yi = torch.addmv(head, lead[i], beta, alpha=dt)
                else:
                    yi = torch.addmv(flat, blocks[i], beta, alpha=dt)
                if lead is None:
                    self._rhs(t, shaped(yi), rows[i + 1])
                else:                          # the solution (last) is full length: its states only
                    self._rhs(t, yi[:n_lead] if i == last else yi, rows[i + 1])
        else:                     # under autograd each assignment gives a new matrix
            stages = torch.empty(len(self._alpha) + 1, flat.numel(), dtype=y0.dtype, device=y0.device)
            stages = self._assign(stages, f0, 0)
            for i, (t, beta) in enumerate(zip(times, self._beta)):
                yi = torch.addmv(flat, stages.t()[:, :i + 1], beta, alpha=dt)
                stages = self._assign(stages, self._eval(t, shaped(yi)), i + 1)
        cols = stages.t()
        if not self._fsal:
            yi = torch.addmv(flat, cols, self.tableau.c_sol, alpha=dt)
        # Formed as torchdiffeq forms it (dt rounded to the state's dtype, then
        # the weights): accept or reject can turn on this rounding.  A Python
        # number is rounded to the tensor's dtype in the product, as there.
        error = torch.mv(cols, self.tableau.c_error * dt)
        return shaped(yi), shaped(stages[-1]), shaped(error), stages

    def _buffer(self, flat):
        """A stage matrix for the next step: ``(stages, column blocks, rows, leading column blocks)``.

        Two matrices per solve, used in turn: the one holding the last accepted
        step (its dense output and last stage) is never written, a rejected
        step rewrites the other.  Their views are made once, not every step.
        The leading blocks (None without quadrature) leave the integrals out.
        """
        held = self.rk_state.interp_coeff
        held = None if held is None else held[2]
        for buf in self._bufs:
            if buf[0] is not held:
                return buf
        stages = flat.new_empty(len(self._alpha) + 1, flat.numel())
        cols = stages.t()
        blocks = [cols[:, :i + 1] for i in range(len(self._beta))]
        lead = [b[:flat.numel() - self._quad] for b in blocks] if self._quad else None
        buf = (stages, blocks, stages.unbind(), lead)
        self._bufs.append(buf)
        return buf

    @staticmethod
    def _assign(stages, f, i):
        # Autograd needs the in-place write hidden from its version check
        # (earlier rows, already read, never change); without it a copy will do.
        if torch.is_grad_enabled() and (stages.requires_grad or f.requires_grad):
            return _UncheckedAssign.apply(stages, f.reshape(-1), i)
        stages[i] = f.reshape(-1)
        return stages

    def _adaptive_step(self, rk_state):
        y0, f0, _, t0, dt, _ = rk_state
        lo, hi = self._step_limits
        if not math.isfinite(dt):
            dt = lo
        dt = min(max(dt, lo), hi)
        self.func.callback_step(t0, y0, dt)
        t1 = t0 + dt
        # A non-finite state makes a NaN error ratio, rejection, a NaN step
        # and then this underflow: no per-step finiteness scan is needed.
        assert t1 > t0, f"underflow in dt {dt}"
        y1, f1, error, stages = self._step(y0, f0, t0, dt, t1)
        error_ratio = self._error_ratio(error, y0, y1)
        accept = error_ratio <= 1 or dt <= lo
        dt_next = self._next_step(dt, error_ratio)
        if not math.isnan(dt_next):
            dt_next = min(max(dt_next, lo), hi)
        if not accept:
            self.func.callback_reject_step(t0, y0, dt)
            return _RungeKuttaState(y0, f0, t0, t0, dt_next, rk_state.interp_coeff)
        self.func.callback_accept_step(t0, y0, dt)
        return _RungeKuttaState(y1, f1, t0, t1, dt_next, (_flat(y0), _flat(y1), stages, dt))

    def _next_step(self, dt: float, error_ratio: float) -> float:
        """torchdiffeq's ``_optimal_step_size``, in floats (a NaN ratio gives a NaN step, as there)."""
        safety, ifactor, dfactor, exponent = self._control
        if error_ratio == 0:
            return dt * ifactor
        if math.isnan(error_ratio):
            return math.nan
        if error_ratio < 1:
            dfactor = 1.0
        return dt * min(ifactor, max(safety / error_ratio ** exponent, dfactor))


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a vector; rtnclock's joint states already are one (a reshape is ~1 us a call)."""
    return x if x.dim() == 1 else x.reshape(-1)


class GridRK4(RK4):
    """torchdiffeq's fixed-grid RK4 (its 3/8 rule) with the per-step bookkeeping cut.

    torchdiffeq steps with tensor times and interpolates every output time
    (tensor comparisons that wait on the device); about 50 us a step here,
    more than a small level's four evaluations.  When the grid passes through
    every output time (rtnclock's grids do), times are Python floats, stage
    states are fused ``add`` calls and outputs are the grid values.  Otherwise
    (a perturbed or foreign grid) torchdiffeq's own loop runs.  Results equal
    torchdiffeq's ``rk4`` to rounding (tests/test_solvers.py).
    """

    def integrate(self, t):
        grid = self.grid_constructor(self.func, self.y0, t).tolist()
        index = {v: i for i, v in enumerate(grid)}
        outputs = [index.get(v) for v in t.tolist()]
        if self.perturb or type(self.func) is not _PerturbFunc or None in outputs:
            return super().integrate(t)
        f = self.func.base_func
        stage_t = torch.tensor([x for a, b in zip(grid[:-1], grid[1:]) for x in (a, a + (b - a) / 3,
                                                                              a + 2 * (b - a) / 3, b)],
                               dtype=t.dtype, device=t.device).unbind()
        solution = [None] * len(t)
        y = self.y0
        at = {i: j for j, i in enumerate(outputs)}
        if 0 in at:
            solution[at[0]] = y
        for i in range(len(grid) - 1):
            dt = grid[i + 1] - grid[i]
            t0, t13, t23, t1 = stage_t[4 * i:4 * i + 4]
            k1 = f(t0, y)
            k2 = f(t13, torch.add(y, k1, alpha=dt / 3))
            k3 = f(t23, torch.add(torch.add(y, k2, alpha=dt), k1, alpha=-dt / 3))
            k4 = f(t1, torch.add(y, k1 - k2 + k3, alpha=dt))
            y = torch.add(y, torch.add(k1, k2 + k3, alpha=3) + k4, alpha=dt / 8)
            if i + 1 in at:
                solution[at[i + 1]] = y
        return torch.stack(solution)


def _register() -> None:
    for name, base in list(SOLVERS.items()):
        if isinstance(base, type) and issubclass(base, RKAdaptiveStepsizeODESolver) \
                and not issubclass(base, StageMajorRK):
            SOLVERS[PREFIX + name] = type(f"StageMajor{base.__name__}", (StageMajorRK, base), {})
    SOLVERS[PREFIX + "rk4"] = GridRK4


_register()


def torchdiffeq_method(method: str) -> str:
    """The torchdiffeq method name that runs ``method`` (stage-major where one exists)."""
    return PREFIX + method if PREFIX + method in SOLVERS else method


def odeint(func, y0: torch.Tensor, t: torch.Tensor, config: Config, options: dict | None = None,
           adjoint_params: tuple | None = None):
    """``torchdiffeq.odeint`` with the config's method and tolerances.

    Adaptive Runge–Kutta methods run stage-major (same numbers, less
    bookkeeping); ``options`` override the config's solver options.  With
    ``adjoint_params`` (the tensors ``func`` reads that want gradients) it is
    ``torchdiffeq.odeint_adjoint``, its backward solve using the same method.
    """
    kwargs = dict(method=torchdiffeq_method(config.method), rtol=config.rtol, atol=config.atol,
                  options=options if options is not None else solver_options(config))
    with quiet_scipy():
        if adjoint_params is not None:
            return torchdiffeq.odeint_adjoint(func, y0, t, adjoint_params=adjoint_params, **kwargs)
        return torchdiffeq.odeint(func, y0, t, **kwargs)
