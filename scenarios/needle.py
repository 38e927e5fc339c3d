"""Needle in a fractal haystack: a long predictable stream with rare one-leaf needles.

The RTN paper (seed 000) claims that on a "Needle in a Fractal Haystack" the
compute cost grows like ``O(log L)`` with the stream length ``L`` rather than
``O(L)``; ``benchmarks/needle.py`` measures what rtnclock does.  This module is
the stream.

Haystack.  Every leaf channel carries a slow sinusoid,
``HAYSTACK_AMPLITUDE * sin(2 pi f t + phi)``, with its own frequency ``f`` in
``HAYSTACK_FREQ`` (periods of 2 to 10 s) and phase, drawn once per stream.  It
is exactly predictable (:func:`haystack` gives it) and zero-mean, so pooled over
a block's leaves and window it stays small: a block that has never woken
predicts ``x_hat = 0``, and its surprise is the squared block-spin of its input.

Needles.  A needle adds ``NEEDLE_AMPLITUDE`` (3, thirty times the haystack's
amplitude) to every channel of one leaf for ``NEEDLE_FRAMES`` frames (60 ms).
Needles are scale-free in time: needle ``j`` starts at a frame drawn uniformly
from ``[0.4, 1) * 100 * 10**j`` (less its length), at a uniformly drawn leaf.  So a stream of ``L`` frames holds about
``log10(L / 40)`` needles (one for ``L = 100``, three for ``L = 10000``), each
needle is drawn the same whatever ``L`` is, and a short stream is the start of
a longer one.

Stream ``b`` of a batch is drawn from seed ``seed + b``; :func:`needles` and
:func:`needle_frames` give its ground truth.
"""

from __future__ import annotations

import math

import torch

import rtnclock

from . import common

DESCRIPTION = "needle in a fractal haystack: slow sinusoids per leaf, one-leaf needles, one per decade of length"

#: Frames per second.
FRAME_RATE = 100.0
#: Frames rendered when neither ``length`` nor ``duration`` is given (10 s).
DEFAULT_LENGTH = 1001
#: Seconds of the default stream (``rtnclock run`` reads it).
DEFAULT_DURATION = (DEFAULT_LENGTH - 1) / FRAME_RATE
#: Amplitude and frequency range (Hz) of the haystack's sinusoids.
HAYSTACK_AMPLITUDE = 0.1
HAYSTACK_FREQ = (0.1, 0.5)
#: Height (added to every channel of the needle's leaf) and length of a needle.
NEEDLE_AMPLITUDE = 3.0
NEEDLE_FRAMES = 6
#: Needle ``j`` starts in frames ``[lo, hi) * 10**j`` (less its length).
NEEDLE_BAND = (40, 100)


def default_config() -> rtnclock.Config:
    """The scenario's hierarchy: 16 leaves of 4 channels, three levels (as audio_stream).

    A needle is one leaf for six frames.  Pooled over the root's 16 leaves
    and 16-frame window it shrinks about 40-fold: its surprise at the root
    (0.04-0.1) is no larger than the error of the root's untrained prediction
    in steady stretches (up to ~0.05), so the root cannot tell it.  A level-1
    block pools 4 leaves over 4 frames, where a needle gives a surprise of
    0.8 or more against at most ~0.2 in steady stretches.  So level 1 is the
    needle detector: the root's bias (+4) keeps its gate open and level 1
    awake (four small blocks: about 2.4% of the full cost), and level 1's gate
    (``a = 30``, bias -10, plus the root's demand of about +1) opens at a
    surprise of about 0.3, waking the needle's four leaves.  The leaves sleep
    otherwise.  Being per level, ``gate_a`` and ``gate_bias`` must be changed
    along with ``K``.  Solver: classical RK4 with one step per leaf period, as
    ``audio_stream`` (gate openings and closings identical to dopri5's at
    ``rtol=1e-4`` on 6 seeds, at half the wall time).
    """
    return rtnclock.Config(
        K=2, branching=4, dims=16, input_dim=4, tau0=0.01, ratio=4.0, dtype="float32",
        method="rk4", step_size=0.01, rtol=1e-4, atol=1e-6,
        gate_a=(8.0, 30.0, 30.0), gate_beta=1.0, gate_bias=(-1.5, -10.0, 4.0), gate_theta=0.5,
        escalation_threshold=1.0,
    )


def make_stream(config: rtnclock.Config, *, duration: float | None = None, seed: int = 0, batch: int = 1,
                length: int | None = None) -> rtnclock.Stream:
    """Render the haystack and its needles for ``config``'s leaves and channels.

    Args:
        config: supplies ``b**K`` leaves, ``input_dim`` channels and the dtype.
        duration: seconds (``ceil(duration * 100) + 1`` frames); not with ``length``.
        seed: stream 0's draw; stream ``b`` uses ``seed + b``.
        batch: number of independent streams ``B``.
        length: frames ``L`` (``duration = (L - 1) / 100``); not with ``duration``.
            Neither given: ``DEFAULT_LENGTH``.

    Returns:
        A :class:`rtnclock.Stream` with frames ``[B, L, n_leaves, input_dim]``,
        ``dt = 0.01``, annotated with every needle (kind ``needle``, columns
        ``leaf`` and ``frame``).

    Raises:
        rtnclock.ConfigError: both ``duration`` and ``length``, ``length`` not an
            integer >= 2, or a bad duration, seed or batch.
    """
    n_frames = _length(duration, length)
    common.check_args((n_frames - 1) / FRAME_RATE, seed, batch)
    n_leaves, c = config.blocks(0), config.input_dim
    params = [_haystack_params(seed + b, n_leaves, c) for b in range(batch)]
    found = [needles(n_frames, seed + b, n_leaves) for b in range(batch)]

    def render(i0: int, i1: int) -> torch.Tensor:
        out = torch.stack([_render(p, i0, i1) for p in params])          # [B, f, n_leaves, c]
        for b, rows in enumerate(found):
            for frame, leaf in rows:
                a, z = max(frame, i0), min(frame + NEEDLE_FRAMES, i1)
                if a < z:
                    out[b, a - i0:z - i0, leaf] += NEEDLE_AMPLITUDE
        return out

    rows = [(f / FRAME_RATE, "needle", b) for b, r in enumerate(found) for f, _ in r]
    table = common.annotation_table(rows, leaf=[leaf for r in found for _, leaf in r],
                                    frame=[f for r in found for f, _ in r])
    return common.chunked_stream(render, n_frames=n_frames, frame_rate=FRAME_RATE, config=config,
                                 batch=batch, name="needle", annotations=table)


def needles(length: int, seed: int, n_leaves: int) -> list[tuple[int, int]]:
    """Ground truth of the stream drawn from ``seed``: ``(first frame, leaf)`` per needle.

    Needle ``j`` starts in ``[40, 100 - NEEDLE_FRAMES] * 10**j``; those starting
    before ``length`` are listed (the last may run past the end).  Each needle's
    draws come from one generator in order, so the list for a shorter length is
    the start of a longer one's.

    Raises:
        rtnclock.ConfigError: ``length`` or ``n_leaves`` not a positive integer, bad ``seed``.
    """
    _check_int("length", length, 1)
    _check_int("n_leaves", n_leaves, 1)
    common.check_args(1.0, seed, 1)
    gen = common.generator(seed, 0)
    out, j = [], 0
    lo, hi = NEEDLE_BAND
    while lo * 10 ** j < length:
        first = math.floor(common.uniform(gen, lo * 10 ** j, hi * 10 ** j - NEEDLE_FRAMES + 1))
        leaf = min(math.floor(common.uniform(gen, 0, n_leaves)), n_leaves - 1)
        if first < length:
            out.append((first, leaf))
        j += 1
    return out


def targets(config: rtnclock.Config, *, duration: float | None = None, seed: int = 0, batch: int = 1,
            length: int | None = None) -> torch.Tensor:
    """The task: which leaf holds a needle at each frame, ``[B, L, n_leaves]`` (0 or 1, float32).

    Arguments as :func:`make_stream`; frame ``i`` of stream ``b`` is 1 at
    ``leaf`` for the ``NEEDLE_FRAMES`` frames of each needle.
    """
    n_frames = _length(duration, length)
    common.check_args((n_frames - 1) / FRAME_RATE, seed, batch)
    out = torch.zeros(batch, n_frames, config.blocks(0))
    for b in range(batch):
        for frame, leaf in needles(n_frames, seed + b, config.blocks(0)):
            out[b, frame:frame + NEEDLE_FRAMES, leaf] = 1.0
    return out


def needle_frames(length: int, seed: int) -> list[int]:
    """First frame of every needle of the stream drawn from ``seed`` (leaf-independent)."""
    return [f for f, _ in needles(length, seed, 1)]


def haystack(config: rtnclock.Config, *, length: int, seed: int = 0) -> torch.Tensor:
    """The needle-free stream drawn from ``seed``: ``[length, n_leaves, input_dim]`` (float64).

    The prediction a perfect observer would make; the rendered stream differs
    from it only at needles.
    """
    _check_int("length", length, 1)
    common.check_args(1.0, seed, 1)
    return _render(_haystack_params(seed, config.blocks(0), config.input_dim), 0, length)


# ---- rendering -----------------------------------------------------------------

def _length(duration, length) -> int:
    """Frames from ``duration`` or ``length`` (exclusive), default ``DEFAULT_LENGTH``."""
    if duration is not None and length is not None:
        raise rtnclock.ConfigError("length", length, "either length (frames) or duration (seconds), not both")
    if length is not None:
        _check_int("length", length, 2)
        return length
    if duration is None:
        return DEFAULT_LENGTH
    common.check_args(duration, 0, 1)
    return common.frame_count(duration, FRAME_RATE)


def _check_int(field: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise rtnclock.ConfigError(field, value, f"an integer >= {lo}")


def _haystack_params(seed: int, n_leaves: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequency (Hz) and phase per leaf channel: ``[n_leaves, c]`` each."""
    gen = common.generator(seed, 1)
    u = torch.rand(2, n_leaves, c, generator=gen, dtype=torch.float64)
    lo, hi = HAYSTACK_FREQ
    return lo + (hi - lo) * u[0], 2 * math.pi * u[1]


def _render(params: tuple[torch.Tensor, torch.Tensor], i0: int, i1: int) -> torch.Tensor:
    """Haystack frames ``i0 .. i1 - 1``: ``[f, n_leaves, c]`` (float64)."""
    freq, phase = params
    t = torch.arange(i0, i1, dtype=torch.float64) / FRAME_RATE                # [f]
    return HAYSTACK_AMPLITUDE * torch.sin(2 * math.pi * freq * t[:, None, None] + phase)
