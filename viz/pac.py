"""Phase-amplitude coupling: the modulation index of Tort et al. (2010) and a surrogate test.

Tort, Komorowski, Eichenbaum & Kopell, "Measuring phase-amplitude coupling between
neuronal oscillations of different frequencies", J Neurophysiol 104:1195 (2010).
The phase of a slow signal is binned; the mean amplitude of a fast signal in each
bin, normalised to sum to one, is a distribution ``p`` over phase; the modulation
index is its KL distance from uniform divided by ``log n_bins``, so 0 means no
coupling and 1 means all amplitude falls in one bin.

Significance comes from time-shift surrogates: the amplitude series is rotated
circularly against the phase series, which keeps each series' own spectrum and
autocorrelation but breaks their alignment.

Phase bin ``j`` of ``n`` covers ``[-pi + 2 pi j / n, -pi + 2 pi (j + 1) / n)``.
numpy only; no band-pass filtering is done here, so pass signals that are already
narrow-band (or amplitudes that already are envelopes).
"""

from __future__ import annotations

import math

import numpy as np


TWO_PI = 2.0 * math.pi


# ---- validation ----------------------------------------------------------------

def _series(name: str, x) -> np.ndarray:
    """``x`` as a finite 1-D float64 array, or a ``ValueError`` naming ``name``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    bad = np.count_nonzero(~np.isfinite(x))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf); all must be finite")
    return x


def _same_length(name: str, x: np.ndarray, other: str, n: int) -> None:
    if x.size != n:
        raise ValueError(f"{name} has {x.size} samples but {other} has {n}; they must match")


def _increasing(name: str, t: np.ndarray) -> None:
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError(f"{name} must be strictly increasing")


def _check_int(name: str, value, lo: int, hi: float = math.inf, allowed: str | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        allowed = allowed or f"an integer >= {lo}"
        raise ValueError(f"{name!r}: got {value!r}; allowed: {allowed}")
    return int(value)


def _check_bins(n_bins) -> int:
    return _check_int("n_bins", n_bins, 2)


def _wrap(ph: np.ndarray) -> np.ndarray:
    """Angles mapped to ``[-pi, pi)``."""
    return np.mod(ph + math.pi, TWO_PI) - math.pi


# ---- analytic signal -----------------------------------------------------------

def analytic(x) -> np.ndarray:
    """Analytic signal ``x + i H[x]`` of a 1-D real series, via the FFT; the mean is removed first.

    The FFT makes the series periodic, so a record that does not hold a whole
    number of periods has distorted phase and envelope near its two ends.

    Returns:
        complex128 array, same length as ``x``.
    Raises:
        ValueError: ``x`` is not 1-D or not finite.
    """
    x = _series("x", x)
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=np.complex128)
    spectrum = np.fft.fft(x - x.mean())
    # Keep DC and (for even n) Nyquist once, double the positive frequencies,
    # drop the negative ones: the one-sided spectrum of the analytic signal.
    h = np.zeros(n)
    h[0] = 1.0
    if n % 2 == 0:
        h[n // 2] = 1.0
        h[1:n // 2] = 2.0
    else:
        h[1:(n + 1) // 2] = 2.0
    return np.fft.ifft(spectrum * h)


def phase(x) -> np.ndarray:
    """Instantaneous phase (radians, in ``[-pi, pi]``) of a 1-D real series: the angle of :func:`analytic`."""
    return np.angle(analytic(x))


def envelope(x) -> np.ndarray:
    """Instantaneous amplitude of a 1-D real series: the magnitude of :func:`analytic`."""
    return np.abs(analytic(x))


# ---- modulation index ----------------------------------------------------------

def _bin_index(ph: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``j`` of each phase; wrapping first makes any real angle valid."""
    j = np.floor((_wrap(ph) + math.pi) * (n_bins / TWO_PI)).astype(np.int64)
    return np.minimum(j, n_bins - 1)        # rounding can put pi - eps at n_bins


def _mi_from_sums(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mi, p)`` from per-bin amplitude sums ``[..., n_bins]`` and counts ``[n_bins]``."""
    n_bins = counts.size
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)   # empty bin -> 0
    p = means / means.sum(axis=-1, keepdims=True)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)      # 0 log 0 = 0
    entropy = -plogp.sum(axis=-1)
    return (math.log(n_bins) - entropy) / math.log(n_bins), p


def _prepare(ph, amp, n_bins) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Validated ``(bin index, amplitude, counts, n_bins)``."""
    n_bins = _check_bins(n_bins)
    ph, amp = _series("ph", ph), _series("amp", amp)
    _same_length("amp", amp, "ph", ph.size)
    if ph.size < n_bins:
        raise ValueError(f"ph has {ph.size} samples; need at least n_bins = {n_bins}")
    if np.any(amp < 0):
        raise ValueError("amp has negative values; it must be an amplitude (>= 0), e.g. envelope(x)")
    if not np.any(amp > 0):
        raise ValueError("amp is all zero; the phase-amplitude distribution is undefined")
    idx = _bin_index(ph, n_bins)
    return idx, amp, np.bincount(idx, minlength=n_bins).astype(np.float64), n_bins


def modulation_index(ph, amp, n_bins: int = 18) -> tuple[float, np.ndarray]:
    """Tort's modulation index of amplitude ``amp`` over phase ``ph``.

    Args:
        ph: phases in radians, ``[N]``; any real angle is wrapped to ``[-pi, pi)``.
        amp: non-negative amplitudes, ``[N]``.
        n_bins: equal phase bins over the circle (Tort et al. use 18).

    Returns:
        ``(mi, p)``: the index in ``[0, 1]`` and the phase-amplitude distribution
        ``p [n_bins]`` (mean amplitude per bin, summing to 1). A bin no phase
        falls in counts as mean amplitude 0, which raises the index; with
        ``N >= n_bins`` that only happens when the phases do not cover the circle.

    Raises:
        ValueError: mismatched lengths, fewer than ``n_bins``
        samples, non-finite input, negative or all-zero amplitude.
        ValueError: ``n_bins`` below 2.
    """
    idx, amp, counts, n_bins = _prepare(ph, amp, n_bins)
    mi, p = _mi_from_sums(np.bincount(idx, weights=amp, minlength=n_bins), counts)
    return float(mi), p


# ---- significance --------------------------------------------------------------

def surrogate_test(ph, amp, *, n_surrogates: int = 200, min_shift: int | None = None,
                   seed: int = 0, n_bins: int = 18) -> dict:
    """Modulation index with a time-shift surrogate distribution.

    Each surrogate rotates ``amp`` circularly by a lag drawn uniformly from
    ``[min_shift, N - min_shift]`` samples and recomputes the index against the
    unshifted ``ph``.

    Args:
        ph, amp, n_bins: as in :func:`modulation_index`.
        n_surrogates: number of shifted copies (>= 2).
        min_shift: smallest lag in samples, in ``[1, N // 2]``; default
            ``max(1, N // 10)``. Lags shorter than the amplitude's
            autocorrelation keep some of the coupling and make the test conservative.
        seed: seeds the lag draw (``numpy.random.default_rng``).

    Returns:
        ``{"mi", "p", "surrogates", "p_value", "z"}``: the index, the distribution
        ``[n_bins]``, the surrogate indices ``[n_surrogates]``, the permutation
        p-value ``(1 + #{surrogates >= mi}) / (1 + n_surrogates)`` and
        ``z = (mi - mean) / std`` of the surrogates (sample std; NaN or inf when
        the surrogates do not spread, e.g. for a constant amplitude).

    Raises:
        as :func:`modulation_index`; ValueError for ``n_surrogates`` or ``min_shift``.
    """
    idx, amp, counts, n_bins = _prepare(ph, amp, n_bins)
    n = amp.size
    n_surrogates = _check_int("n_surrogates", n_surrogates, 2)
    min_shift = _check_int("min_shift", max(1, n // 10) if min_shift is None else min_shift, 1, n // 2,
                           f"an integer in [1, {n // 2}] (half the {n} samples)")

    mi, p = _mi_from_sums(np.bincount(idx, weights=amp, minlength=n_bins), counts)
    lags = np.random.default_rng(seed).integers(min_shift, n - min_shift, size=n_surrogates,
                                                endpoint=True)
    # Only the amplitude moves, so the bin counts are shared by every surrogate.
    sums = np.stack([np.bincount(idx, weights=np.roll(amp, lag), minlength=n_bins)
                     for lag in lags])                                  # [n_surrogates, n_bins]
    surrogates, _ = _mi_from_sums(sums, counts)                         # [n_surrogates]
    spread = surrogates.std(ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mi - surrogates.mean()) / spread
    return {"mi": float(mi), "p": p, "surrogates": surrogates,
            "p_value": float((1 + np.count_nonzero(surrogates >= mi)) / (1 + n_surrogates)),
            "z": float(z)}


# ---- signals on different clocks -----------------------------------------------

def coupling(t_slow, x_slow, t_fast, a_fast, *, n_surrogates: int = 200,
             min_shift: int | None = None, seed: int = 0, n_bins: int = 18) -> dict:
    """Coupling of a slow signal's phase to a fast amplitude series sampled on another clock.

    The phase of ``x_slow`` (:func:`phase`) is unwrapped, interpolated linearly onto
    the times ``t_fast`` and wrapped back to ``[-pi, pi)``; only fast samples inside
    the time range of ``t_slow`` are used. Linear interpolation of the unwrapped
    phase is exact for a steady oscillation and needs the slow signal sampled well
    above twice its frequency.

    Args:
        t_slow, x_slow: times ``[N_s]`` (strictly increasing) and the slow signal.
        t_fast, a_fast: times ``[N_f]`` (strictly increasing) and a non-negative
            amplitude series (e.g. ``envelope`` of a fast signal, or a gate).
        n_surrogates, min_shift, seed, n_bins: passed to :func:`surrogate_test`;
            ``min_shift`` counts fast samples.

    Returns:
        :func:`surrogate_test`'s dict plus ``"n"``, the number of fast samples used.

    Raises:
        ValueError naming the argument: mismatched lengths,
        non-finite values, times not increasing, fewer than ``2 * n_bins``
        samples in the overlap.
    """
    n_bins = _check_bins(n_bins)
    t_slow, x_slow = _series("t_slow", t_slow), _series("x_slow", x_slow)
    t_fast, a_fast = _series("t_fast", t_fast), _series("a_fast", a_fast)
    _same_length("x_slow", x_slow, "t_slow", t_slow.size)
    _same_length("a_fast", a_fast, "t_fast", t_fast.size)
    for name, t in (("t_slow", t_slow), ("t_fast", t_fast)):
        if t.size < 2 * n_bins:
            raise ValueError(f"{name} has {t.size} samples; need at least 2 * n_bins = {2 * n_bins}")
        _increasing(name, t)
    inside = (t_fast >= t_slow[0]) & (t_fast <= t_slow[-1])
    used = int(np.count_nonzero(inside))
    if used < 2 * n_bins:
        raise ValueError(f"t_fast has {used} samples inside t_slow's range "
                          f"[{t_slow[0]:.6g}, {t_slow[-1]:.6g}]; need at least 2 * n_bins = {2 * n_bins}")
    ph = _wrap(np.interp(t_fast[inside], t_slow, np.unwrap(phase(x_slow))))
    out = surrogate_test(ph, a_fast[inside], n_surrogates=n_surrogates, min_shift=min_shift,
                         seed=seed, n_bins=n_bins)
    out["n"] = used
    return out


def comodulogram(signals: dict, **kw) -> tuple[list, np.ndarray, np.ndarray]:
    """Modulation index of every slower level's phase against every faster level's amplitude.

    Args:
        signals: level index ``k`` -> ``(t, x, a)``: times, a signal whose phase is
            used when ``k`` is the slower level, and an amplitude series used when
            ``k`` is the faster one. Higher levels are slower.
        **kw: keyword arguments of :func:`coupling` (unknown ones raise ``TypeError``).

    Returns:
        ``(levels, mi, p_value)``: the sorted level indices ``[L]`` and two
        ``[L, L]`` arrays whose entry ``[i, j]`` for ``levels[i] > levels[j]`` is
        level ``i``'s phase against level ``j``'s amplitude; NaN elsewhere.
    """
    levels = sorted(signals)
    mi = np.full((len(levels), len(levels)), np.nan)
    p_value = np.full_like(mi, np.nan)
    for i, slow in enumerate(levels):
        t_s, x_s, _ = signals[slow]
        for j, fast in enumerate(levels[:i]):
            t_f, _, a_f = signals[fast]
            res = coupling(t_s, x_s, t_f, a_f, **kw)
            mi[i, j], p_value[i, j] = res["mi"], res["p_value"]
    return levels, mi, p_value
