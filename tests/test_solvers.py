"""Stage-major adaptive RK solvers and the lean grid RK4 equal torchdiffeq's own, step for step."""

import pytest
import torch
import torchdiffeq

from rtnclock import Config
from rtnclock.solvers import odeint, torchdiffeq_method

# Low-order methods at a looser tolerance keep the step count (and test time) small.
ADAPTIVE_RK = {"dopri5": 1e-6, "dopri8": 1e-6, "bosh3": 1e-5, "fehlberg2": 1e-4, "adaptive_heun": 1e-4}


class Field(torch.nn.Module):
    """A nonlinear 40-dim field (tanh network, forced) that counts its evaluations."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.W = torch.nn.Parameter(torch.randn(40, 40, generator=g, dtype=torch.float64) / 40 ** 0.5 * 1.5)
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return torch.tanh(y @ self.W.T + torch.sin(7 * t)) - y


def _solve(method, y0, t, field, stock):
    rtol = ADAPTIVE_RK[method]
    if stock:
        return torchdiffeq.odeint(field, y0, t, method=method, rtol=rtol, atol=1e-9)
    return odeint(field, y0, t, Config(method=method, rtol=rtol, atol=1e-9, dtype="float64"))


@pytest.mark.parametrize("method", ADAPTIVE_RK)
def test_stage_major_equals_torchdiffeq(method):
    y0 = torch.linspace(-1, 1, 40, dtype=torch.float64)
    t = torch.tensor([0.0, 0.13, 0.5, 0.77, 2.0], dtype=torch.float64)     # interior outputs interpolate
    ours, theirs = Field(), Field()
    a, b = _solve(method, y0, t, ours, False), _solve(method, y0, t, theirs, True)
    assert torchdiffeq_method(method) != method
    # Same tableau and controller: same evaluations, same numbers up to rounding
    # of a differently ordered sum.
    assert ours.calls == theirs.calls
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


class QuadratureField(Field):
    """``y = [x, G]``, ``dx/dt = Field(x)``, ``dG/dt = x``, written into the solver's stage row
    (``writes_into``) and declaring G as integrals no evaluation reads (``quadrature``)."""

    writes_into, quadrature = True, 40

    def __init__(self):
        super().__init__()
        self.seen = set()                           # sizes of the states handed in

    def forward(self, t, y, row=None):
        self.seen.add(y.numel())
        x = y[:40]
        return torch.cat([super().forward(torch.as_tensor(t, dtype=y.dtype), x), x], out=row)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "fehlberg2"])
def test_stage_major_with_quadrature_equals_torchdiffeq(method):
    """Stage states without the integrals (FSAL and not) give torchdiffeq's steps and numbers."""
    y0 = torch.cat([torch.linspace(-1, 1, 40, dtype=torch.float64), torch.zeros(40, dtype=torch.float64)])
    t = torch.tensor([0.0, 0.13, 0.5, 0.77, 2.0], dtype=torch.float64)
    ours, theirs = QuadratureField(), QuadratureField()
    rtol = ADAPTIVE_RK[method]
    with torch.no_grad():                       # a stage row is written only without autograd
        a = odeint(ours, y0, t, Config(method=method, rtol=rtol, atol=1e-9, dtype="float64"))
        b = torchdiffeq.odeint(lambda t, y: theirs(t, y), y0, t, method=method, rtol=rtol, atol=1e-9)
    assert ours.seen == {40, 80}                # the stages were handed the states alone
    assert ours.calls == theirs.calls
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


def _gradients(stock, first_step=None, method="dopri5", rtol=None, atol=1e-9):
    """d/d(y0, W) of the squared outputs of one solve."""
    y0 = torch.linspace(-1, 1, 40, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    field = Field()
    rtol = rtol or ADAPTIVE_RK[method]
    options = None if first_step is None else {"first_step": first_step}
    if stock:
        out = torchdiffeq.odeint(field, y0, t, method=method, rtol=rtol, atol=atol, options=options)
    else:
        out = odeint(field, y0, t, Config(method=method, rtol=rtol, atol=atol, dtype="float64"), options)
    return torch.autograd.grad((out[1:] ** 2).sum(), [y0, field.W])


def test_stage_major_gradients_equal_torchdiffeq():
    # With the first step given, both differentiate the same steps.
    for ours, theirs in zip(_gradients(False, 0.01), _gradients(True, 0.01)):
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_step_sizes_are_not_differentiated():
    # torchdiffeq differentiates its first step size (chosen from y0) and no
    # later one; rtnclock differentiates none.  That partial term is a
    # discretisation artefact: it puts torchdiffeq's gradient 1.9e-5 (relative)
    # from the ODE's own, measured against a dopri8 rtol 1e-13 solve, where
    # rtnclock's is 1.0e-6.  Bound: 5e-6, about twice the solver's rtol.
    true = _gradients(True, method="dopri8", rtol=1e-13, atol=1e-14)
    ours, theirs = _gradients(False), _gradients(True)
    for g, g_true in zip(ours, true):
        assert float((g - g_true).abs().max() / g_true.abs().max()) < 5e-6
    assert float((ours[0] - true[0]).abs().max()) < float((theirs[0] - true[0]).abs().max())


def test_non_finite_field_stops_instead_of_looping():
    def blows_up(t, y):
        return torch.where(t > 0.5, torch.nan, 1.0) * y

    with pytest.raises(AssertionError, match="underflow"):
        odeint(blows_up, torch.ones(3, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
               Config(dtype="float64"))


@pytest.mark.parametrize("method", ["euler", "midpoint", "scipy_solver"])
def test_other_methods_run_unchanged(method):
    assert torchdiffeq_method(method) == method


def _grid(step):
    """A grid through every output time (what rtnclock's solves build)."""
    def construct(func, y0, t):
        pieces = [t[:1]]
        for a, b in zip(t[:-1], t[1:]):
            m = max(1, int(torch.ceil((b - a) / step - 1e-9)))
            pieces.append(torch.linspace(float(a), float(b), m + 1, dtype=t.dtype)[1:])
            pieces[-1][-1] = b
        return torch.cat(pieces)
    return construct


@pytest.mark.parametrize("options", [{"grid_constructor": _grid(0.07)}, {"step_size": 0.1}])
def test_grid_rk4_equals_torchdiffeq_rk4_values_and_gradients(options):
    """Same 3/8-rule steps on the same grid: equal to rounding, evaluations and
    gradients included; a grid that misses an output time (step_size 0.1
    against 0.13) falls back to torchdiffeq's interpolating loop."""
    assert torchdiffeq_method("rk4") != "rk4"
    y0 = torch.linspace(-1, 1, 40, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.13, 0.5, 1.0], dtype=torch.float64)
    results = []
    for stock in (False, True):
        field = Field()
        if stock:
            out = torchdiffeq.odeint(field, y0, t, method="rk4", options=options)
        else:
            out = odeint(field, y0, t, Config(method="rk4", dtype="float64"), options)
        grads = torch.autograd.grad((out[1:] ** 2).sum(), [y0, field.W])
        results.append((out.detach(), field.calls, grads))
    (a, calls_a, grads_a), (b, calls_b, grads_b) = results
    assert calls_a == calls_b
    assert torch.allclose(a, b, rtol=0, atol=1e-13)
    for x, y in zip(grads_a, grads_b):
        assert torch.allclose(x, y, rtol=1e-11, atol=1e-12)


class SlowField(QuadratureField):
    """A QuadratureField slowed down 10^4 times (its first step is the curvature bound's)."""

    def forward(self, t, y, row=None):
        out = super().forward(t, y) * 1e-4
        return out if row is None else row.copy_(out)


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_first_step_equals_torchdiffeq_choice(dtype, rel, slow):
    """The float first-step choice is torchdiffeq's ``_select_initial_step`` to rounding
    (float32 rounds torchdiffeq's scalars to float32, hence its looser bound), on both
    of its branches: 100x the trial step (fast field) and the curvature bound (slow)."""
    from torchdiffeq._impl.misc import _PerturbFunc, _rms_norm, _select_initial_step
    from rtnclock.solvers import SOLVERS

    field = (SlowField() if slow else QuadratureField()).to(dtype)
    y0 = torch.cat([torch.linspace(-1, 1, 40, dtype=dtype), torch.zeros(40, dtype=dtype)])
    t0 = torch.tensor(0.3, dtype=torch.float64)
    with torch.no_grad():
        solver = SOLVERS[torchdiffeq_method("dopri5")](func=_PerturbFunc(field), y0=y0, rtol=1e-6, atol=1e-9,
                                                       norm=_rms_norm)
        f0 = field(0.3, y0)
        ours = solver._first_step(0.3, f0)
        theirs = float(_select_initial_step(lambda t, y: field(float(t), y), t0, y0, solver.order - 1,
                                            solver.rtol, solver.atol, _rms_norm, f0=f0))
        trial = 0.01 * float(_rms_norm(y0 / (1e-9 + y0.abs() * 1e-6)) / _rms_norm(f0 / (1e-9 + y0.abs() * 1e-6)))
    assert abs(ours - theirs) <= rel * theirs
    assert (theirs < 100 * trial * (1 - 1e-3)) == slow            # which branch chose it


def test_per_element_tolerances_run_as_torchdiffeq():
    """Tuple states with a tolerance per part (per-element tolerance tensors inside torchdiffeq)."""
    calls = {True: 0, False: 0}

    def field(stock):
        def f(t, y):
            calls[stock] += 1
            return -y[0] * torch.cos(3 * t), -2 * y[1] + y[0][:2]
        return f

    y0 = (torch.linspace(0.5, 1, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    tol = dict(rtol=(1e-6, 1e-8), atol=(1e-9, 1e-10))
    with torch.no_grad():
        ours = torchdiffeq.odeint(field(False), y0, t, method=torchdiffeq_method("dopri5"), **tol)
        theirs = torchdiffeq.odeint(field(True), y0, t, method="dopri5", **tol)
    assert calls[False] == calls[True]
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
