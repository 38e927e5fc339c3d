"""Phase-amplitude coupling (Tort et al. 2010) against closed forms, scipy and synthetic signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import hilbert
from scipy.stats import entropy

from rtnclock.viz import pac

FS = 1000.0          # fast clock (Hz)
N_BINS = 18
N_SUR = 200
CENTRES = -math.pi + (np.arange(N_BINS) + 0.5) * 2 * math.pi / N_BINS


# ---- synthetic signals ----------------------------------------------------------

def _drifting_phase(f: float, n: int, rng, fs: float = FS, diffusion: float = 2.0) -> np.ndarray:
    """Phase of an ``f`` Hz oscillation whose phase diffuses (``diffusion`` rad/sqrt(s)).

    A strictly periodic slow phase would defeat time-shift surrogates: a shifted
    periodic amplitude is still locked to the phase, only at another angle, so its
    MI is as large as the original. Diffusion decorrelates the two beyond about
    ``1 / diffusion**2`` s (0.25 s here), well below the 2 s minimum shift.
    """
    return 2 * math.pi * f * np.arange(n) / fs + np.cumsum(rng.standard_normal(n)) * diffusion / math.sqrt(fs)


def _coupled(seed: int = 0, chi: float = 0.8, seconds: float = 20.0, noise: float = 0.1):
    """Slow 5 Hz signal and a 40 Hz carrier with amplitude ``(1 + chi cos(slow phase)) / 2``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    t = np.arange(n) / FS
    ps = _drifting_phase(5.0, n, rng)
    slow = np.cos(ps) + noise * rng.standard_normal(n)
    fast = (1 + chi * np.cos(ps)) / 2 * np.cos(2 * math.pi * 40.0 * t) + noise * rng.standard_normal(n)
    return t, ps, slow, fast


def _uncoupled(seed: int, seconds: float = 20.0, noise: float = 0.1):
    """As :func:`_coupled`, but the fast amplitude follows an independent 5 Hz phase."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    t = np.arange(n) / FS
    slow = np.cos(_drifting_phase(5.0, n, rng)) + noise * rng.standard_normal(n)
    other = _drifting_phase(5.0, n, rng)
    fast = (1 + 0.8 * np.cos(other)) / 2 * np.cos(2 * math.pi * 40.0 * t) + noise * rng.standard_normal(n)
    return slow, fast


# ---- analytic signal ------------------------------------------------------------

@pytest.mark.parametrize("n", [1000, 999])
def test_analytic_of_cosine_is_exact(n):
    periods, phi0 = 7, 0.4
    true = 2 * math.pi * periods * np.arange(n) / n + phi0
    z = pac.analytic(3.0 + np.cos(true))               # the offset goes with the mean
    assert np.max(np.abs(np.angle(np.exp(1j * (pac.phase(np.cos(true)) - true))))) < 1e-9
    assert np.max(np.abs(pac.envelope(np.cos(true)) - 1.0)) < 1e-9
    assert np.max(np.abs(z - np.exp(1j * true))) < 1e-9


@pytest.mark.parametrize("n", [2, 3, 64, 101])
def test_analytic_matches_scipy(n):
    x = np.random.default_rng(n).standard_normal(n)
    np.testing.assert_allclose(pac.analytic(x), hilbert(x - x.mean()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pac.analytic(x).real, x - x.mean(), rtol=0, atol=1e-12)


def test_analytic_degenerate_lengths_and_bad_input():
    assert pac.analytic(np.zeros(0)).shape == (0,)
    np.testing.assert_array_equal(pac.analytic([5.0]), [0.0])
    with pytest.raises(ValueError, match="1-D"):
        pac.analytic(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        pac.analytic([0.0, np.nan, 1.0])


# ---- modulation index -----------------------------------------------------------

def test_mi_of_one_plus_cosine_matches_closed_form():
    m = 1000                                                 # phases per bin
    n = N_BINS * m
    ph = -math.pi + (np.arange(n) + 0.5) * 2 * math.pi / n   # uniform, none on an edge
    mi, p = pac.modulation_index(ph, 1.0 + np.cos(ph), n_bins=N_BINS)
    # Bin j spans [b_j, b_j+1): the mean of 1 + cos over it is 1 + (sin b_j+1 - sin b_j) / w.
    edges = -math.pi + np.arange(N_BINS + 1) * 2 * math.pi / N_BINS
    means = 1.0 + np.diff(np.sin(edges)) / (2 * math.pi / N_BINS)
    q = means / means.sum()
    expected = 1.0 + np.sum(q * np.log(q)) / math.log(N_BINS)
    # The midpoint rule with m points per bin is off by about (w / m)^2 / 24 ~ 5e-9.
    assert mi == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(p, q, rtol=1e-6)
    # Unbinned, p = (1 + cos) / 2 pi has KL = 1 - log 2 from uniform; binning can only lower it.
    continuous = (1.0 - math.log(2.0)) / math.log(N_BINS)
    assert continuous * 0.98 < expected < continuous          # 0.10447 vs 0.10619


def test_mi_is_scale_invariant_bounded_and_matches_scipy_entropy():
    rng = np.random.default_rng(3)
    ph = rng.uniform(-math.pi, math.pi, 5000)
    amp = rng.gamma(2.0, size=5000) * (1.2 + np.sin(ph))
    mi, p = pac.modulation_index(ph, amp)
    assert 0.0 <= mi <= 1.0 and p.sum() == pytest.approx(1.0, abs=1e-12)
    assert pac.modulation_index(ph, 37.5 * amp)[0] == pytest.approx(mi, rel=1e-12)
    assert mi == pytest.approx(1.0 - entropy(p) / math.log(N_BINS), rel=1e-12)
    assert pac.modulation_index(ph, np.full(5000, 2.0))[0] == pytest.approx(0.0, abs=1e-12)
    one_bin = np.where(np.abs(ph - CENTRES[4]) < 0.1, 1.0, 0.0)          # amplitude only in bin 4
    assert pac.modulation_index(ph, one_bin)[0] == pytest.approx(1.0, abs=1e-12)
    assert pac.modulation_index(ph + 2 * math.pi, amp)[0] == pytest.approx(mi, rel=1e-9)   # wraps


def test_empty_bins_count_as_zero_amplitude():
    ph = np.linspace(0.0, math.pi, 900, endpoint=False)     # only bins 9..17
    mi, p = pac.modulation_index(ph, np.ones(900))
    np.testing.assert_array_equal(p[:9], 0.0)
    np.testing.assert_allclose(p[9:], 1 / 9, rtol=1e-12)
    assert mi == pytest.approx(1.0 - math.log(9) / math.log(18), rel=1e-12)


def test_mi_rejects_bad_input():
    ph = np.linspace(-3, 3, 100)
    with pytest.raises(ValueError, match="amp has 99 samples"):
        pac.modulation_index(ph, np.ones(99))
    with pytest.raises(ValueError, match="n_bins = 18"):
        pac.modulation_index(ph[:17], np.ones(17))
    with pytest.raises(ValueError, match="amp has negative"):
        pac.modulation_index(ph, -np.ones(100))
    with pytest.raises(ValueError, match="all zero"):
        pac.modulation_index(ph, np.zeros(100))
    with pytest.raises(ValueError, match="n_bins"):
        pac.modulation_index(ph, np.ones(100), n_bins=1)


# ---- surrogate test -------------------------------------------------------------

def test_coupled_signals_are_significant_and_peak_at_phase_zero():
    _, _, slow, fast = _coupled(seed=0)
    res = pac.surrogate_test(pac.phase(slow), pac.envelope(fast), n_surrogates=N_SUR)
    assert res["p_value"] <= 2 / (1 + N_SUR)
    assert res["z"] > 10                                     # measured: 69
    assert res["mi"] == pytest.approx(0.046, abs=0.01)       # noise-free envelope: 0.060
    peak = CENTRES[np.argmax(res["p"])]
    assert abs(peak) <= 2 * math.pi / N_BINS
    assert res["surrogates"].shape == (N_SUR,) and res["p"].shape == (N_BINS,)


@pytest.mark.parametrize("seed", [1, 4])
def test_uncoupled_signals_lie_within_their_surrogates(seed):
    slow, fast = _uncoupled(seed)
    res = pac.surrogate_test(pac.phase(slow), pac.envelope(fast), n_surrogates=N_SUR)
    assert res["p_value"] > 0.05 and res["z"] < 3            # measured: p 0.89 / 0.59, z -1.2 / -0.6


def test_surrogate_statistics_and_determinism():
    _, _, slow, fast = _coupled(seed=1, seconds=5.0)
    ph, amp = pac.phase(slow), pac.envelope(fast)
    res = pac.surrogate_test(ph, amp, n_surrogates=50, seed=7)
    s = res["surrogates"]
    assert res["p_value"] == pytest.approx((1 + np.sum(s >= res["mi"])) / 51, abs=0)
    assert res["z"] == pytest.approx((res["mi"] - s.mean()) / s.std(ddof=1), rel=1e-12)
    assert res["mi"] == pac.modulation_index(ph, amp)[0]
    np.testing.assert_array_equal(pac.surrogate_test(ph, amp, n_surrogates=50, seed=7)["surrogates"], s)
    assert not np.array_equal(pac.surrogate_test(ph, amp, n_surrogates=50, seed=8)["surrogates"], s)
    # min_shift = N / 2 leaves one lag, half the record.
    half = pac.surrogate_test(ph, amp, n_surrogates=5, min_shift=ph.size // 2)["surrogates"]
    np.testing.assert_allclose(half, pac.modulation_index(ph, np.roll(amp, ph.size // 2))[0], rtol=1e-12)


def test_surrogate_options_are_checked():
    ph, amp = np.linspace(-3, 3, 100), np.ones(100)
    with pytest.raises(ValueError, match="min_shift"):
        pac.surrogate_test(ph, amp, min_shift=51)
    with pytest.raises(ValueError, match="min_shift"):
        pac.surrogate_test(ph, amp, min_shift=0)
    with pytest.raises(ValueError, match="n_surrogates"):
        pac.surrogate_test(ph, amp, n_surrogates=1)
    res = pac.surrogate_test(ph, amp, n_surrogates=10)        # constant amplitude: no spread
    assert res["mi"] == pytest.approx(0.0, abs=1e-12) and res["p_value"] == 1.0


# ---- two clocks -----------------------------------------------------------------

def _two_clocks(seed: int = 0):
    """Slow signal at 100 Hz on [2, 22) s, fast amplitude at 1 kHz on [0, 20) s."""
    t, ps, _, _ = _coupled(seed=seed, seconds=22.0)
    rng = np.random.default_rng(seed + 100)
    on_fast = t < 20.0
    slow_idx = np.arange(2000, t.size, 10)                   # every 10th fast sample from 2 s
    x_slow = np.cos(ps[slow_idx]) + 0.1 * rng.standard_normal(slow_idx.size)
    a_fast = pac.envelope((1 + 0.8 * np.cos(ps[on_fast])) / 2 * np.cos(2 * math.pi * 40 * t[on_fast])
                          + 0.1 * rng.standard_normal(int(on_fast.sum())))
    return t[slow_idx], x_slow, t[on_fast], a_fast


def test_coupling_across_clocks_recovers_the_coupling():
    t_slow, x_slow, t_fast, a_fast = _two_clocks()
    res = pac.coupling(t_slow, x_slow, t_fast, a_fast, n_surrogates=N_SUR)
    assert res["n"] == 18000                                 # fast samples in [2, 20) s
    assert res["z"] > 10 and res["p_value"] <= 2 / (1 + N_SUR)   # measured: z 54
    assert abs(CENTRES[np.argmax(res["p"])]) <= 2 * math.pi / N_BINS


def test_coupling_interpolates_a_steady_phase_exactly():
    t_fast = np.arange(10000) / FS                            # 10 s
    t_slow = t_fast[::10]                                     # 100 Hz, 30 whole periods of 3 Hz
    true = 2 * math.pi * 3.0 * t_fast + 0.3
    a_fast = 1.0 + np.cos(true)
    res = pac.coupling(t_slow, np.cos(true[::10]), t_fast, a_fast, n_surrogates=10)
    inside = t_fast <= t_slow[-1]
    assert res["n"] == int(inside.sum())
    assert res["mi"] == pytest.approx(pac.modulation_index(true[inside], a_fast[inside])[0], rel=1e-3)


def test_coupling_names_the_bad_argument():
    t_slow, x_slow, t_fast, a_fast = _two_clocks()
    ok = dict(t_slow=t_slow, x_slow=x_slow, t_fast=t_fast, a_fast=a_fast)

    def bad(**change):
        return pac.coupling(**{**ok, **change}, n_surrogates=5)

    with pytest.raises(ValueError, match="x_slow has 1999 samples but t_slow has 2000"):
        bad(x_slow=x_slow[:-1])
    with pytest.raises(ValueError, match="a_fast has 19999 samples but t_fast"):
        bad(a_fast=a_fast[:-1])
    with pytest.raises(ValueError, match="a_fast has 1 non-finite"):
        bad(a_fast=np.where(np.arange(a_fast.size) == 5, np.inf, a_fast))
    with pytest.raises(ValueError, match="x_slow has 1 non-finite"):
        bad(x_slow=np.where(np.arange(x_slow.size) == 5, np.nan, x_slow))
    with pytest.raises(ValueError, match="t_slow must be strictly increasing"):
        bad(t_slow=t_slow[::-1])
    with pytest.raises(ValueError, match="t_fast has 0 samples inside t_slow's range"):
        bad(t_fast=t_fast - 30.0)
    with pytest.raises(ValueError, match="t_slow has 20 samples; need at least 2 \\* n_bins = 36"):
        bad(t_slow=t_slow[:20], x_slow=x_slow[:20])
    with pytest.raises(TypeError):
        bad(n_bin=12)                                          # a typo raises, it is not swallowed


# ---- comodulogram ---------------------------------------------------------------

def test_comodulogram_finds_only_the_coupled_pair():
    rng = np.random.default_rng(5)
    n = 20000
    t0 = np.arange(n) / FS
    p2 = _drifting_phase(2.0, n, rng)                        # level 2 (slowest) drives level 0
    p1 = _drifting_phase(7.0, n, rng)                        # level 1 is independent of both
    x0 = (1 + 0.8 * np.cos(p2)) / 2 * np.cos(2 * math.pi * 40 * t0) + 0.1 * rng.standard_normal(n)
    x1 = (1 + 0.8 * np.cos(_drifting_phase(3.0, n, rng))) / 2 * np.cos(p1)
    x2 = np.cos(p2) + 0.1 * rng.standard_normal(n)
    signals = {
        0: (t0, x0, pac.envelope(x0)),
        1: (t0[::5], x1[::5], pac.envelope(x1[::5])),        # 200 Hz
        2: (t0[::10], x2[::10], pac.envelope(x2[::10])),     # 100 Hz
    }
    levels, mi, p_value = pac.comodulogram(signals, n_surrogates=N_SUR)
    assert levels == [0, 1, 2]
    lower = np.tril(np.ones((3, 3), dtype=bool), k=-1)
    assert np.all(np.isnan(mi[~lower])) and np.all(np.isnan(p_value[~lower]))
    assert p_value[2, 0] <= 2 / (1 + N_SUR)                  # MI 0.044, vs 4e-5 and 3e-4
    assert p_value[1, 0] > 0.05 and p_value[2, 1] > 0.05   # measured: 0.95, 0.98
    assert mi[2, 0] > 10 * max(mi[1, 0], mi[2, 1])
