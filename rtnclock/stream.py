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

    Frames arrive chunk by chunk: a stream built with :meth:`from_chunks` pulls
    its next chunk only when the simulation first needs a frame in it, so a
    scenario never has to produce (or look at) input beyond the current chunk.
    A stream built from one tensor is a stream with a single chunk.

    Args:
        frames: ``[B, F, n_leaves, d_in]`` (or ``[F, n_leaves, d_in]`` for ``B = 1``).
        dt: frame period in seconds.
        nan_policy: ``error`` raises on the first non-finite frame, naming it;
            ``zero`` replaces non-finite samples by 0 and lists the frames in
            :attr:`bad_frames` (the scheduler logs one event per frame).
        name: what the stream is (a file, a scenario), named in its errors.
        annotations: ground truth for the run's store: ``{"time": [s], "kind":
            [str], "stream": [b]}`` (more numeric columns of the same length are kept).

    Raises:
        StreamError: wrong rank, fewer than two frames, non-positive ``dt``, or a
            non-finite frame under the ``error`` policy.
    """

    def __init__(self, frames: torch.Tensor, dt: float, *, nan_policy: str = "error", name: str = "stream",
                 annotations: dict | None = None):
        frames = _batched(frames, name)
        self._setup(frames.shape[1], frames.shape[0], frames.shape[2], frames.shape[3], dt, nan_policy,
                    name, annotations, frames.dtype, frames.device)
        self._chunks = iter([frames])
        self._load(frames.shape[1] - 1)

    @classmethod
    def from_chunks(cls, chunks, dt: float, *, n_frames: int, batch: int, n_leaves: int, input_dim: int,
                    dtype: torch.dtype = torch.float32, device="cpu", nan_policy: str = "error",
                    name: str = "stream", annotations: dict | None = None) -> "Stream":
        """A stream whose frames come from ``chunks``, pulled only when needed.

        Args:
            chunks: an iterable of ``[B, f, n_leaves, d_in]`` tensors (``f >= 1``)
                holding ``n_frames`` frames in all, in order.
            n_frames: frames the chunks add up to (the stream's length is known
                up front; its content is not).
            batch, n_leaves, input_dim: the shape every chunk has.
            dtype, device: where the frames are kept (chunks are converted).
            dt, nan_policy, name, annotations: as for the constructor.

        Raises:
            StreamError: a bad shape or ``n_frames < 2`` now; a chunk of the
                wrong shape, too few or too many frames, or a non-finite frame
                (``error`` policy) when that chunk is pulled.
        """
        for field, value in (("n_frames", n_frames), ("batch", batch), ("n_leaves", n_leaves),
                             ("input_dim", input_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StreamError(f"{name}: {field} must be an integer >= 1, got {value!r}")
        out = object.__new__(cls)
        out._setup(n_frames, batch, n_leaves, input_dim, dt, nan_policy, name, annotations, dtype,
                   torch.device(device))
        out._chunks = iter(chunks)
        return out

    def _setup(self, n_frames, batch, n_leaves, input_dim, dt, nan_policy, name, annotations, dtype,
               device) -> None:
        if n_frames < 2:
            raise StreamError(f"{name}: stream needs at least 2 frames, got {n_frames}")
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise StreamError(f"{name}: stream frame period dt must be > 0 seconds, got {dt!r}")
        if nan_policy not in NAN_POLICIES:
            raise StreamError(f"{name}: nan_policy {nan_policy!r} is not one of {NAN_POLICIES}")
        self.dt, self.nan_policy, self.name = float(dt), nan_policy, name
        self.annotations = _check_annotations(annotations, name)
        self.n_frames = n_frames
        self._shape = (batch, n_leaves, input_dim)
        # Preallocated: frames land in place as chunks arrive (no re-concatenation).
        self._frames = torch.zeros(batch, n_frames, n_leaves, input_dim, dtype=dtype, device=device)
        self._cum = torch.zeros_like(self._frames)
        self.loaded = 0                          # frames delivered so far
        self._recent: dict[float, torch.Tensor] = {}
        self.bad_frames: list[int] = []
        self._bad: set[int] = set()              # the same, for lookups per frame

    # ---- delivery -------------------------------------------------------------
    def _load(self, i: int) -> None:
        """Pull chunks until frame ``i`` is delivered."""
        while self.loaded <= i:
            if self._chunks is None:
                raise StreamError(f"{self.name}: this stream was moved by .to(); use the moved stream")
            chunk = next(self._chunks, None)
            if chunk is None:
                raise StreamError(f"{self.name}: the chunks ended after {self.loaded} frames; "
                                  f"{self.n_frames} were announced")
            self._accept(chunk)

    def _accept(self, chunk) -> None:
        a = self.loaded
        if not isinstance(chunk, torch.Tensor) or chunk.dim() != 4 or chunk.shape[1] < 1 \
                or (chunk.shape[0], *chunk.shape[2:]) != self._shape:
            got = tuple(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
            B, n, c = self._shape
            raise StreamError(f"{self.name}: the chunk from frame {a} must be [{B}, f >= 1, {n}, {c}]; got {got}")
        b = a + chunk.shape[1]
        if b > self.n_frames:
            raise StreamError(f"{self.name}: the chunk from frame {a} runs to frame {b - 1}, past the "
                              f"{self.n_frames} frames announced")
        chunk = chunk.to(device=self._frames.device, dtype=self._frames.dtype)
        finite = torch.isfinite(chunk).flatten(2).all(-1).all(0)              # [f]
        bad = [a + j for j in (~finite).nonzero().flatten().tolist()]
        if bad and self.nan_policy == "error":
            raise StreamError(
                f"{self.name}: frame {bad[0]} (t={bad[0] * self.dt:.6g} s) holds NaN/Inf samples; "
                f"pass nan_policy='zero' to zero-fill")
        if bad:
            chunk = torch.where(torch.isfinite(chunk), chunk, torch.zeros((), dtype=chunk.dtype))
            self.bad_frames.extend(bad)
            self._bad.update(bad)
        self._frames[:, a:b] = chunk
        # Cumulative integral at frame times (trapezoid is exact for linear pieces).
        prev = self._frames[:, a - 1:b - 1] if a else torch.cat([chunk[:, :1], chunk[:, :-1]], dim=1)
        steps = 0.5 * self.dt * (chunk + prev)
        if not a:
            steps[:, 0] = 0
        self._cum[:, a:b] = steps.cumsum(1) + (self._cum[:, a - 1:a] if a else 0)
        self.loaded = b

    def delivered(self, start: int = 0) -> torch.Tensor:
        """Frames delivered so far from ``start``: ``[B, loaded - start, n_leaves, d_in]`` (pulls nothing)."""
        return self._frames[:, start:self.loaded]

    def is_bad(self, i: int) -> bool:
        """Whether frame ``i`` held non-finite samples (pulls its chunk if needed)."""
        self._load(i)
        return i in self._bad

    @property
    def frames(self) -> torch.Tensor:
        """All frames ``[B, F, n_leaves, d_in]``; pulls every remaining chunk."""
        self._load(self.n_frames - 1)
        return self._frames

    @property
    def batch(self) -> int:
        """Number of streams ``B``."""
        return self._shape[0]

    @property
    def n_leaves(self) -> int:
        """Leaves fed by the stream."""
        return self._shape[1]

    @property
    def input_dim(self) -> int:
        """Channels per leaf."""
        return self._shape[2]

    @property
    def duration(self) -> float:
        """Time covered by the frames, in seconds."""
        return (self.n_frames - 1) * self.dt

    def to(self, device, dtype) -> "Stream":
        """The same stream on another device/dtype.

        Frames not yet delivered are converted as they arrive; the chunks now
        belong to the returned stream (this one is spent unless it already was
        on ``device`` with ``dtype``, in which case it is returned itself).
        """
        device = torch.device(device)
        if self._frames.dtype == dtype and self._frames.device == device:
            return self
        out = object.__new__(Stream)
        out.__dict__.update(self.__dict__)
        out._frames = self._frames.to(device=device, dtype=dtype)
        out._cum = self._cum.to(device=device, dtype=dtype)
        out._recent = {}
        out.bad_frames, out._bad = list(self.bad_frames), set(self._bad)
        self._chunks = None
        return out

    # ---- reading ----------------------------------------------------------------
    def _locate(self, t: float) -> tuple[int, float]:
        i = min(max(int(math.floor(t / self.dt + 1e-9)), 0), self.n_frames - 2)
        # Frame i+1 is read even on a frame time (weight ~0): the numbers must
        # not depend on how much of the stream happens to be delivered.
        self._load(i + 1)
        return i, t - i * self.dt

    def value(self, t: float) -> torch.Tensor:
        """``u(t)``: ``[B, n_leaves, d_in]``, linear between frames."""
        i, s = self._locate(t)
        w = s / self.dt
        return self._frames[:, i] + w * (self._frames[:, i + 1] - self._frames[:, i])

    def cumulative(self, t: float) -> torch.Tensor:
        """``int_0^t u``: ``[B, n_leaves, d_in]``, exact for the linear pieces."""
        # Each tick time is asked for by every level closing a window there, and
        # again when the next window closes: remember the last few.
        hit = self._recent.get(t)
        if hit is not None:
            return hit
        i, s = self._locate(t)
        if s == 0.0:                                    # on a frame time (ticks usually are)
            out = self._cum[:, i]
        else:
            slope = (self._frames[:, i + 1] - self._frames[:, i]) / self.dt
            out = self._cum[:, i] + s * self._frames[:, i] + 0.5 * s * s * slope
        if len(self._recent) >= 8:
            self._recent.pop(next(iter(self._recent)))
        self._recent[t] = out
        return out

    def integral(self, t_a: float, t_b: float) -> torch.Tensor:
        """``int_{t_a}^{t_b} u dt``: ``[B, n_leaves, d_in]``."""
        return self.cumulative(t_b) - self.cumulative(t_a)

    def window(self, t_a: float, t_b: float) -> tuple[int, torch.Tensor]:
        """Frames covering ``[t_a, t_b]``: first frame index and ``[F_w, B, n, d]``."""
        i0 = min(max(int(math.floor(t_a / self.dt + 1e-9)), 0), self.n_frames - 2)
        i1 = min(int(math.ceil(t_b / self.dt - 1e-9)), self.n_frames - 1)
        i1 = max(i1, i0 + 1)
        self._load(i1)
        return i0, self._frames[:, i0:i1 + 1].transpose(0, 1)


def _batched(frames, name: str) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor):
        raise StreamError(f"{name}: stream frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4:
        raise StreamError(f"{name}: stream frames must be [B, F, n_leaves, d_in]; got shape {tuple(frames.shape)}")
    return frames


def _check_annotations(annotations, name: str) -> dict:
    """Annotation columns as lists of equal length (``time``, ``kind``, ``stream`` required)."""
    if annotations is None:
        return {"time": [], "kind": [], "stream": []}
    if not isinstance(annotations, dict) or not {"time", "kind", "stream"} <= set(annotations):
        raise StreamError(f"{name}: annotations must be a dict with columns time, kind and stream")
    cols = {k: list(v) for k, v in annotations.items()}
    for k, v in cols.items():
        if k != "kind" and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise StreamError(f"{name}: annotation column {k!r} must hold numbers")
    if not all(isinstance(x, str) for x in cols["kind"]):
        raise StreamError(f"{name}: annotation column 'kind' must hold strings")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise StreamError(f"{name}: annotation columns differ in length: {lengths}")
    return cols


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
