"""Within-window accuracy of the joint solver against closed forms."""


import numpy as np
import pytest
import scipy.linalg
import torch

from rtnclock import BlockLevel, SolverError, simulate
from rtnclock.integrate import Segment, solve
from tests.problems import fit_order, smooth_stream, test_config


def _linear_level(d=4, tau=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    return BlockLevel(d, 2, tau=tau, period=tau, activation="identity", gain=0.9, generator=g,
                      dtype=torch.float64)


def _closed_form(level, h0, drive, T):
    """h(T) and int_0^T h for tau h' = -h + W h + drive (drive constant)."""
    d = h0.shape[-1]
    A = ((level.W_h.detach().numpy()) - np.eye(d)) / level.tau
    c = drive / level.tau
    # Augmented system [h, H, 1]: exact via one matrix exponential.
    Z = np.zeros((2 * d + 1, 2 * d + 1))
    Z[:d, :d], Z[:d, -1], Z[d:2 * d, :d] = A, c, np.eye(d)
    E = scipy.linalg.expm(Z * T)
    y = E @ np.concatenate([h0, np.zeros(d), [1.0]])
    return y[:d], y[d:2 * d]


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
@torch.no_grad()
def test_window_error_falls_at_solver_order(method, order):
    level = _linear_level()
    h0 = torch.tensor([[0.7, -0.3, 0.2, 1.0]], dtype=torch.float64)
    up, down = torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64)
    inputs = level.inputs(up, down)
    T = 0.08
    drive = inputs.detach().numpy()[0]
    h_ref, H_ref = _closed_form(level, h0.numpy()[0], drive, T)
    steps, errs, errs_H = [T / 4, T / 8, T / 16, T / 32], [], []
    for step in steps:
        cfg = test_config(K=0, method=method, step_size=step, tau0=T)
        (h, H), = solve([Segment(0, level, h0, inputs, 0.0, T)], [1.0], cfg)
        errs.append(abs(h[-1, 0].numpy() - h_ref).max())
        errs_H.append(abs(H[-1, 0].numpy() - H_ref).max())
    assert fit_order(steps, errs) == pytest.approx(order, abs=0.25)
    assert fit_order(steps, errs_H) == pytest.approx(order, abs=0.25)


@torch.no_grad()
def test_adaptive_solver_meets_tolerance_on_closed_form():
    level = _linear_level()
    h0 = torch.tensor([[0.7, -0.3, 0.2, 1.0], [0.0, 0.1, -0.5, 0.4]], dtype=torch.float64)
    inputs = level.inputs(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))
    cfg = test_config(K=0)
    (h, H), = solve([Segment(0, level, h0, inputs, 0.0, 0.2)], [0.25, 0.5, 1.0], cfg)
    for i, frac in enumerate([0.25, 0.5, 1.0]):
        for r in range(2):
            h_ref, H_ref = _closed_form(level, h0[r].numpy(), np.zeros(4), 0.2 * frac)
            np.testing.assert_allclose(h[i, r].numpy(), h_ref, atol=1e-9)
            np.testing.assert_allclose(H[i, r].numpy(), H_ref, atol=1e-10)


@torch.no_grad()
def test_joint_solve_equals_separate_solves():
    """Windows of different lengths in one call (normalised time) match solo calls."""
    fast, slow = _linear_level(tau=0.01, seed=2), _linear_level(tau=0.16, seed=3)
    h0 = torch.tensor([[0.3, -0.2, 0.9, 0.1]], dtype=torch.float64)
    z2, z4 = torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64)
    a = Segment(0, fast, h0, fast.inputs(z2 + 1, z4), 0.0, 0.04)
    b = Segment(1, slow, h0, slow.inputs(z2 - 1, z4), 0.0, 0.64)
    cfg = test_config()
    joint = solve([a, b], [0.25, 0.5, 0.75, 1.0], cfg)
    for seg, (h, H) in zip([a, b], joint):
        (h1, H1), = solve([seg], [0.25, 0.5, 0.75, 1.0], cfg)
        torch.testing.assert_close(h, h1, atol=1e-9, rtol=0)
        torch.testing.assert_close(H, H1, atol=1e-9, rtol=0)


@torch.no_grad()
def test_divergent_level_raises_with_level_block_and_time():
    level = _linear_level()
    with torch.no_grad():
        level.W_h.mul_(0).add_(torch.eye(4, dtype=torch.float64) * 1e3)   # explosive
    h0 = torch.ones(3, 4, dtype=torch.float64)
    inputs = level.inputs(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64))
    cfg = test_config(K=0, method="rk4", step_size=0.01)
    seg = Segment(2, level, h0, inputs, 1.5, 10.0, rows=torch.tensor([4, 5, 6]), n_blocks=4)
    with pytest.raises(SolverError) as err:
        solve([seg], [1.0], cfg)
    assert err.value.level == 2 and err.value.block == 0 and err.value.time == pytest.approx(11.5)
    assert "level 2, block 0" in str(err.value)


def test_calls_split_slow_large_windows_and_merge_small_ones():
    from rtnclock.tick import SOLO_NUMEL, _calls

    def seg(k, tau, span, numel):
        return Segment(level=k, module=torch.nn.Module(), h0=torch.zeros(numel), inputs=None, t0=0.0, span=span)

    def segs(numel, windows):
        out = [seg(k, tau, span, numel) for k, (tau, span) in enumerate(windows)]
        for s, (tau, _) in zip(out, windows):
            s.module.tau = tau
        return out

    big, small = SOLO_NUMEL, SOLO_NUMEL - 1
    # r = 4: the leaves' four ticks (pace 4) beside one tick of levels 1 and 2
    # (pace 1 each): the slow pair gets its own call when big.
    windows = [(0.01, 0.04), (0.04, 0.04), (0.16, 0.16)]
    assert _calls(segs(big, windows)) == [[0], [1, 2]]
    assert _calls(segs(small, windows)) == [[0, 1, 2]]
    # Within a factor of two of the fastest pace: one call.
    assert _calls(segs(big, [(0.01, 0.04), (0.015, 0.04)])) == [[0, 1]]


def test_fixed_step_scales_with_the_fastest_levels_tau():
    """A fixed grid steps the leaves at ``step_size``; a solve holding only a
    slower level steps ``step_size * tau_k / tau_0`` (one RK4 step per tau
    here: four evaluations per root window, not sixteen)."""
    cfg = test_config(K=1, ratio=4.0, method="rk4", step_size=0.01, gate_mode=("closed", "closed"))
    run = simulate(cfg, smooth_stream(cfg, 0.4))
    assert run.stats.calls.get(0, 0) == 0                        # root gate shut: the leaves never run
    assert run.stats.calls[1] == 10 and run.stats.nfe[1] == 4 * 10
