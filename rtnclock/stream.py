"""Sensory streams: frames on a regular grid, linearly interpolated in time.

A stream is the leaves' input ``u(t)``: ``frames[B, F, n_leaves, d_in]`` at
times ``t0 + i*dt``.  Between frames the signal is linear, so its integral over
any window is exact (piecewise quadratic cumulative sum), which is what the
gate's block-spin ``x_bar`` needs.
"""

from __future__ import annotations

import math

import torch

from .errors import StreamError

NAN_POLICIES = ("error", "zero")


class Stream:
    """A batch of ``B`` sensory streams sampled every ``dt`` seconds.

    Args:
        frames: ``[B, F, n_leaves, d_in]`` (or ``[F, n_leaves, d_in]`` for ``B = 1``).
        dt: frame period in seconds.
        nan_policy: ``error`` raises on the first non-finite frame, naming it;
            ``zero`` replaces non-finite samples by 0 and lists the frames in
            :attr:`bad_frames` (the scheduler logs one event per frame).

    Raises:
        StreamError: wrong rank, fewer than two frames, non-positive ``dt``, or a
            non-finite frame under the ``error`` policy.
    """

    def __init__(self, frames: torch.Tensor, dt: float, *, nan_policy: str = "error"):
        if not isinstance(frames, torch.Tensor):
            raise StreamError(f"stream frames must be a torch.Tensor, got {type(frames).__name__}")
        if frames.dim() == 3:
            frames = frames.unsqueeze(0)
        if frames.dim() != 4:
            raise StreamError(
                f"stream frames must be [B, F, n_leaves, d_in]; got shape {tuple(frames.shape)}")
        if frames.shape[1] < 2:
            raise StreamError(f"stream needs at least 2 frames, got {frames.shape[1]}")
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise StreamError(f"stream frame period dt must be > 0 seconds, got {dt!r}")
        if nan_policy not in NAN_POLICIES:
            raise StreamError(f"nan_policy {nan_policy!r} is not one of {NAN_POLICIES}")
        finite = torch.isfinite(frames).flatten(2).all(-1)  # [B, F]
        bad = (~finite).any(0).nonzero().flatten().tolist()
        if bad and nan_policy == "error":
            raise StreamError(
                f"stream frame {bad[0]} (t={bad[0] * dt:.6g} s) holds NaN/Inf samples "
                f"({len(bad)} bad frames in all); pass nan_policy='zero' to zero-fill")
        if bad:
            frames = torch.where(torch.isfinite(frames), frames, torch.zeros((), dtype=frames.dtype))
        self.frames = frames
        self.dt = float(dt)
        self.bad_frames: list[int] = bad
        # Cumulative integral at frame times (trapezoid is exact for linear pieces).
        steps = 0.5 * self.dt * (frames[:, 1:] + frames[:, :-1])
        self._cum = torch.cat([torch.zeros_like(frames[:, :1]), steps.cumsum(1)], dim=1)

    @property
    def batch(self) -> int:
        """Number of streams ``B``."""
        return self.frames.shape[0]

    @property
    def n_leaves(self) -> int:
        """Leaves fed by the stream."""
        return self.frames.shape[2]

    @property
    def input_dim(self) -> int:
        """Channels per leaf."""
        return self.frames.shape[3]

    @property
    def duration(self) -> float:
        """Time covered by the frames, in seconds."""
        return (self.frames.shape[1] - 1) * self.dt

    def to(self, device, dtype) -> "Stream":
        """The same stream on another device/dtype."""
        out = object.__new__(Stream)
        out.frames = self.frames.to(device=device, dtype=dtype)
        out._cum = self._cum.to(device=device, dtype=dtype)
        out.dt, out.bad_frames = self.dt, list(self.bad_frames)
        return out

    def _locate(self, t: float) -> tuple[int, float]:
        i = min(max(int(math.floor(t / self.dt + 1e-9)), 0), self.frames.shape[1] - 2)
        return i, t - i * self.dt

    def value(self, t: float) -> torch.Tensor:
        """``u(t)``: ``[B, n_leaves, d_in]``, linear between frames."""
        i, s = self._locate(t)
        w = s / self.dt
        return self.frames[:, i] + w * (self.frames[:, i + 1] - self.frames[:, i])

    def cumulative(self, t: float) -> torch.Tensor:
        """``int_0^t u``: ``[B, n_leaves, d_in]``, exact for the linear pieces."""
        i, s = self._locate(t)
        slope = (self.frames[:, i + 1] - self.frames[:, i]) / self.dt
        return self._cum[:, i] + s * self.frames[:, i] + 0.5 * s * s * slope

    def integral(self, t_a: float, t_b: float) -> torch.Tensor:
        """``int_{t_a}^{t_b} u dt``: ``[B, n_leaves, d_in]``."""
        return self.cumulative(t_b) - self.cumulative(t_a)

    def window(self, t_a: float, t_b: float) -> tuple[int, torch.Tensor]:
        """Frames covering ``[t_a, t_b]``: first frame index and ``[F_w, B, n, d]``."""
        i0 = min(max(int(math.floor(t_a / self.dt + 1e-9)), 0), self.frames.shape[1] - 2)
        i1 = min(int(math.ceil(t_b / self.dt - 1e-9)), self.frames.shape[1] - 1)
        i1 = max(i1, i0 + 1)
        return i0, self.frames[:, i0:i1 + 1].transpose(0, 1)


class SensoryWindow:
    """The leaves' input over one solve: frames ``[F_w, R, c]`` from ``t_first``.

    A level's ``inputs()`` receives this for time-varying input; ``at(t)`` gives
    the linearly interpolated ``[R, c]`` and ``map(fn)`` applies a linear map to
    every frame once (so a level can pre-multiply its input weights).
    """

    def __init__(self, frames: torch.Tensor, t_first: float, dt: float):
        self.frames, self.t_first, self.dt = frames, t_first, dt
        self._last = frames.shape[0] - 2

    def at(self, t) -> torch.Tensor:
        """Input at physical time ``t`` (float or 0-d tensor): ``[R, c]``."""
        pos = (float(t) - self.t_first) / self.dt
        i = min(max(int(pos), 0), self._last)
        w = pos - i
        return torch.lerp(self.frames[i], self.frames[i + 1], w)

    def map(self, fn) -> "SensoryWindow":
        """A window whose frames are ``fn(frames)`` (``fn`` must be linear)."""
        return SensoryWindow(fn(self.frames), self.t_first, self.dt)

    def rows(self, index: torch.Tensor) -> "SensoryWindow":
        """The window restricted to some rows (compaction of active blocks)."""
        return SensoryWindow(self.frames[:, index], self.t_first, self.dt)
