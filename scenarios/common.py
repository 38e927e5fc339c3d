"""What every scenario shares: argument checks, seeded draws, chunked delivery.

A scenario renders its stream chunk by chunk (``chunked_stream``): a render
function is called for frames ``[i0, i1)`` in order, only when the simulation
first needs a frame in that range, so it may keep state from one chunk to the
next (filters, adaptation) and never sees the future.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

import rtnclock

#: Simulated seconds per chunk a scenario renders at a time.
CHUNK_SECONDS = 0.25

#: Streams a scenario computes together.  Its temporaries then stay under
#: 32 MiB: larger ones are fresh memory from the system on every operation
#: (above glibc's largest reuse threshold), and their page faults made each
#: elementwise pass about 3x slower (4,000 float64 samples of 1,024 streams).
ROWS = 256


def check_args(duration, seed, batch) -> None:
    """Raise ``ConfigError`` naming ``duration``, ``seed`` or ``batch`` if out of range."""
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
            or not math.isfinite(duration) or duration <= 0:
        raise rtnclock.ConfigError("duration", duration, "a positive number of seconds")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise rtnclock.ConfigError("seed", seed, "an integer >= 0")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise rtnclock.ConfigError("batch", batch, "an integer >= 1")


def check_layout(width: int, n_leaves, input_dim, holds: str, *, every_leaf: bool = False) -> None:
    """Raise ``ConfigError`` unless ``n_leaves`` and ``input_dim`` are positive
    integers and the leaves' channels fit ``width`` values (``holds`` says what
    they are, for the message naming ``input_dim``): shared out over the
    ``n_leaves * input_dim`` channels, or with ``every_leaf`` all of them in
    each leaf's ``input_dim``."""
    for field, value in (("n_leaves", n_leaves), ("input_dim", input_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise rtnclock.ConfigError(field, value, "an integer >= 1")
    if every_leaf and width > input_dim:
        raise rtnclock.ConfigError("input_dim", input_dim, f"at least {width}, so that every leaf holds {holds}")
    if width > n_leaves * input_dim:
        raise rtnclock.ConfigError("input_dim", input_dim,
                                   f"at least ceil({width} / {n_leaves}) = {math.ceil(width / n_leaves)}, "
                                   f"so that {n_leaves} leaves hold {holds}")


def frame_count(duration: float, frame_rate: float) -> int:
    """Frames covering ``[0, duration]`` at ``frame_rate``: ``ceil(duration * rate) + 1``."""
    return math.ceil(duration * frame_rate - 1e-9) + 1


def generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator per (seed, random process) of a scenario."""
    return torch.Generator().manual_seed(seed * 16 + stream)


def uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    """One draw from ``U[lo, hi)``."""
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def arrivals(gen: torch.Generator, horizon: float, gap: tuple[float, float]) -> Iterator[float]:
    """Arrival times on ``[0, horizon)`` with uniform gaps (the first one halved).

    A generator, so that each arrival's own draws follow it from the same
    random stream: a longer score extends a shorter one.
    """
    t = 0.5 * uniform(gen, *gap)
    while t < horizon:
        yield t
        t += uniform(gen, *gap)


def chunked_stream(render: Callable[[int, int], torch.Tensor], *, n_frames: int, frame_rate: float,
                   config: rtnclock.Config, batch: int, name: str, annotations: dict | None = None,
                   nan_policy: str = "error", chunk_seconds: float = CHUNK_SECONDS) -> rtnclock.Stream:
    """A :class:`rtnclock.Stream` whose chunks are ``render(i0, i1)``: ``[B, i1 - i0, n_leaves, c]``.

    ``render`` is called with consecutive ranges covering ``[0, n_frames)``;
    ``name``, ``annotations`` and ``nan_policy`` are the stream's.
    """
    size = max(1, round(chunk_seconds * frame_rate))
    chunks = (render(i0, min(i0 + size, n_frames)) for i0 in range(0, n_frames, size))
    return rtnclock.Stream.from_chunks(
        chunks, 1.0 / frame_rate, n_frames=n_frames, batch=batch, n_leaves=config.blocks(0),
        input_dim=config.input_dim, dtype=getattr(torch, config.dtype), name=name, annotations=annotations,
        nan_policy=nan_policy)


def annotation_table(rows: list[tuple[float, str, int]], **extra: list) -> dict:
    """Annotation columns from ``(time, kind, stream)`` rows (plus numeric columns ``extra``)."""
    return {"time": [float(r[0]) for r in rows], "kind": [r[1] for r in rows],
            "stream": [int(r[2]) for r in rows], **extra}


class OnsetAdaptation:
    """Onset-emphasising adaptation of a feature level ``L``, like an auditory-nerve fibre::

        x = sustain * L + onset * (softplus(L - L_adapted) - rest)

    ``L_adapted`` follows ``L`` with time constant ``tau`` (starting at the
    first frame's ``L``); softplus has ``beta = 20``.  A steady input settles to
    ``sustain * L`` (plus the resting onset term) and a rise overshoots.  Why:
    an untrained hierarchy cannot predict a steady input, so with raw levels its
    surprise would stay high for as long as a sound or a drift lasts.
    ``rest_zero=True`` takes the resting onset term ``softplus(0) = ln 2 / 20``
    off, so that a steady input with ``L = 0`` gives 0.

    The state carries from one call to the next (streams are adapted chunk by chunk).
    """

    def __init__(self, *, sustain: float, onset: float, tau: float, frame_rate: float, rest_zero: bool = False):
        self.sustain, self.onset = sustain, onset
        self.decay = math.exp(-1.0 / (tau * frame_rate))
        self.rest = math.log(2) / 20 if rest_zero else 0.0
        self.adapted = None

    def step(self, level: torch.Tensor) -> torch.Tensor:
        """One frame: ``level`` of any shape to the adapted feature of that shape."""
        if self.adapted is None:
            self.adapted = level
        self.adapted = self.decay * self.adapted + (1 - self.decay) * level
        over = torch.nn.functional.softplus(level - self.adapted, beta=20.0) - self.rest
        return self.sustain * level + self.onset * over

    def frames(self, levels: torch.Tensor, dim: int) -> torch.Tensor:
        """Consecutive frames along ``dim``, in order."""
        return torch.stack([self.step(x) for x in levels.unbind(dim)], dim=dim)
