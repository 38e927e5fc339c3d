"""Streaming mel filterbank: the front end of the ``audio_stream`` scenario.

A 16 kHz waveform arrives chunk by chunk; :class:`MelFrontEnd` turns it into
mel band power, emitting each frame as soon as its window is complete, so a
stream never looks further ahead than the chunk it has been given.

Conventions (stated once here, relied on by the scenario and the tests):

* Frames.  Frame ``j`` is centred at ``t_j = j * hop / sample_rate``: it covers
  samples ``[j*hop - window//2, j*hop - window//2 + window)``, the signal being
  zero before sample 0 (so frame 0 exists at ``t = 0``) and, at
  :meth:`MelFrontEnd.flush`, after the last sample.  A signal of ``n`` samples
  has ``frames_for(n, hop) = floor((n - 1) / hop) + 1`` frames: those centred at
  or before its last sample (none for ``n = 0``).
* Window.  Periodic Hann, whose peak (value 1, at index ``window/2``) falls on
  the frame's centre sample for an even window.
* Power.  ``P_k = c_k |X_k|^2 / (n_fft * sum(w**2))`` for the one-sided
  spectrum ``X = rfft(w * frame, n_fft)``, with ``c_k = 2`` except at DC and
  Nyquist (``c_k = 1``).  By Parseval ``sum_k P_k = sum(w**2 * frame**2) /
  sum(w**2)``, the window-weighted mean square of the frame, exactly: a sine of
  amplitude ``A`` gives a total of ``A**2 / 2`` whatever the window length and
  ``n_fft``.
* Mel.  HTK mel scale ``2595 log10(1 + f/700)``; triangular filters with peak 1
  (not Slaney's area normalisation), see :func:`mel_filters`.  The output is
  linear band power; the scenario applies its own compression.

Besides ``math`` and ``torch`` only ``rtnclock.errors`` is imported: a bad
argument is a ``ConfigError`` naming it, like every other rtnclock option.
"""

from __future__ import annotations

import math

import torch

from rtnclock.errors import ConfigError

__all__ = ["MelFrontEnd", "frames_for", "hz_to_mel", "mel_centres", "mel_filters", "mel_to_hz"]


# ---- argument checks ----------------------------------------------------------

def _bad(field: str, value, allowed: str) -> ConfigError:
    return ConfigError(field, value, allowed)


def _int_at_least(field: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(field, value, f"an integer >= {minimum}")
    return value


def _real(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(field, value, "a finite real number")
    return float(value)


def _check_band_edges(f_min, f_max, nyquist: float | None) -> tuple[float, float]:
    f_min, f_max = _real("f_min", f_min), _real("f_max", f_max)
    top = "sample_rate/2" if nyquist is None else f"sample_rate/2 = {nyquist:g}"
    if f_min < 0 or (nyquist is not None and f_min >= nyquist):
        raise _bad("f_min", f_min, f"0 <= f_min < f_max <= {top}")
    if f_max <= f_min or (nyquist is not None and f_max > nyquist):
        raise _bad("f_max", f_max, f"f_min = {f_min:g} < f_max <= {top}")
    return f_min, f_max


# ---- the mel scale and its filters --------------------------------------------

def hz_to_mel(f) -> torch.Tensor:
    """HTK mel of frequencies ``f`` (Hz, float or tensor): ``2595 log10(1 + f/700)``, float64."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`: frequencies (Hz, float64) of mels ``m``."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def _mel_points(n_bands: int, f_min: float, f_max: float) -> torch.Tensor:
    """``n_bands + 2`` frequencies (Hz) equally spaced in mel from ``f_min`` to ``f_max``: ``[n_bands + 2]``."""
    m_lo, m_hi = hz_to_mel(f_min), hz_to_mel(f_max)
    steps = torch.arange(n_bands + 2, dtype=torch.float64) / (n_bands + 1)
    points = mel_to_hz(m_lo + (m_hi - m_lo) * steps)
    # Exact end points: the outer edges are the caller's numbers, not a round trip.
    points[0], points[-1] = f_min, f_max
    return points


def mel_centres(n_bands: int, f_min: float, f_max: float) -> torch.Tensor:
    """Centre frequencies (Hz, float64, increasing) of the bands of :func:`mel_filters`: ``[n_bands]``.

    The ``n_bands`` centres and the two outer edges ``f_min``, ``f_max`` are
    equally spaced on the mel scale, ``(mel(f_max) - mel(f_min)) / (n_bands + 1)``
    apart.  The scenario uses them for its tonotopic map.

    Raises:
        ValueError: ``n_bands < 1`` or not ``0 <= f_min < f_max``.
    """
    _int_at_least("n_bands", n_bands, 1)
    f_min, f_max = _check_band_edges(f_min, f_max, None)
    return _mel_points(n_bands, f_min, f_max)[1:-1]


def mel_filters(n_bands: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular mel filters over the one-sided FFT bins: ``[n_bands, n_fft // 2 + 1]``, float64.

    Band ``i`` is a triangle, linear in Hz, rising from the previous centre (or
    ``f_min``) to 1 at its own centre (:func:`mel_centres`) and falling to 0 at
    the next centre (or ``f_max``), evaluated at the bin frequencies
    ``k * sample_rate / n_fft``.  Peak 1 rather than Slaney's unit area: a tone
    at a band's centre gives that band its full power, and because neighbouring
    triangles share their edge points the weights sum to 1 at every frequency
    between the first and the last centre, so the bands' powers add up to the
    total power there.

    Raises:
        ValueError: an argument is out of range (``n_bands >= 1``, ``n_fft >= 2``,
            ``sample_rate >= 1``, ``0 <= f_min < f_max <= sample_rate/2``), or a
            band would hold no FFT bin (bands too narrow for ``n_fft``): an empty
            band would be a dead input channel.
    """
    _int_at_least("n_bands", n_bands, 1)
    _int_at_least("n_fft", n_fft, 2)
    _int_at_least("sample_rate", sample_rate, 1)
    f_min, f_max = _check_band_edges(f_min, f_max, sample_rate / 2)
    points = _mel_points(n_bands, f_min, f_max)
    lo, centre, hi = points[:-2, None], points[1:-1, None], points[2:, None]     # [n_bands, 1]
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)  # [n_bins]
    rising = (freqs - lo) / (centre - lo)
    falling = (hi - freqs) / (hi - centre)
    weights = torch.minimum(rising, falling).clamp(min=0.0)                    # [n_bands, n_bins]
    empty = (weights > 0).sum(dim=1) == 0
    if bool(empty.any()):
        i = int(empty.nonzero()[0])
        raise ValueError(
            f"'n_bands' = {n_bands} with 'n_fft' = {n_fft}: band {i} "
            f"({points[i]:.4g} .. {points[i + 2]:.4g} Hz) holds no FFT bin "
            f"(bins are {sample_rate / n_fft:.4g} Hz apart); allowed: fewer bands, "
            f"a larger n_fft or a wider f_min .. f_max")
    return weights


def frames_for(n_samples: int, hop: int) -> int:
    """Frames of a signal of ``n_samples`` samples: ``floor((n_samples - 1) / hop) + 1`` (0 when empty).

    Those centred at ``0, hop, 2*hop, ...`` up to the last sample.
    """
    _int_at_least("n_samples", n_samples, 0)
    _int_at_least("hop", hop, 1)
    return (n_samples - 1) // hop + 1                  # floor division: 0 for n_samples = 0


# ---- the streaming front end --------------------------------------------------

class MelFrontEnd:
    """Streaming mel filterbank: waveform chunks in, linear mel band power out.

    Frames, window and power normalisation follow the module conventions:
    frame ``j`` is centred at ``j * hop / sample_rate``, and the power of a frame
    sums to its Hann-weighted mean square (``A**2/2`` for a sine of amplitude ``A``).

    Feed chunks with :meth:`push`, which returns every frame whose window is
    complete; end the stream with :meth:`flush`, which zero-pads past the last
    sample.  Any chunking yields the same frames as one push of the whole signal.

    Args:
        sample_rate: samples per second.
        n_bands: mel bands.
        hop: samples between frame centres (100 frames/s at the defaults).
        window: Hann window length in samples (25 ms at the defaults), ``>= 2``.
        n_fft: FFT length, ``>= window``; the windowed frame is zero-padded to it.
        f_min, f_max: outer band edges in Hz; ``f_max=None`` means ``0.95 * sample_rate/2``.
        dtype: ``torch.float32`` or ``torch.float64``; the computation and output dtype.

    Attributes:
        centres: band centre frequencies (Hz, float64): ``[n_bands]``.
        filters: the mel matrix of :func:`mel_filters` (float64): ``[n_bands, n_bins]``.
        n_bins: one-sided FFT bins, ``n_fft // 2 + 1``.
        frame_rate: frames per second, ``sample_rate / hop``.

    Raises:
        ValueError: an argument out of range, named in the message.
    """

    def __init__(self, *, sample_rate: int = 16000, n_bands: int = 64, hop: int = 160, window: int = 400,
                 n_fft: int = 512, f_min: float = 50.0, f_max: float | None = None,
                 dtype: torch.dtype = torch.float32):
        _int_at_least("sample_rate", sample_rate, 1)
        _int_at_least("hop", hop, 1)
        # A periodic Hann window of length 1 is all zero: no power to normalise.
        _int_at_least("window", window, 2)
        if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < window:
            raise _bad("n_fft", n_fft, f"an integer >= window = {window}")
        if dtype not in (torch.float32, torch.float64):
            raise _bad("dtype", dtype, "torch.float32 or torch.float64")
        if f_max is None:
            f_max = 0.95 * sample_rate / 2
        self.filters = mel_filters(n_bands, n_fft, sample_rate, f_min, f_max)
        self.centres = mel_centres(n_bands, f_min, f_max)
        self.sample_rate, self.n_bands, self.hop, self.window, self.n_fft = sample_rate, n_bands, hop, window, n_fft
        self.f_min, self.f_max, self.dtype = float(f_min), float(f_max), dtype
        self.n_bins = n_fft // 2 + 1
        self.frame_rate = sample_rate / hop
        hann = torch.hann_window(window, periodic=True, dtype=torch.float64)
        scale = torch.full((self.n_bins,), 2.0, dtype=torch.float64)
        scale[0] = 1.0
        if n_fft % 2 == 0:
            scale[-1] = 1.0                               # Nyquist bin has no mirror image
        scale /= n_fft * float((hann ** 2).sum())
        # Precomputed in the working dtype: push() is on the hot path.
        self._hann = hann.to(dtype)
        self._scale = scale.to(dtype)
        self._filters_t = self.filters.T.contiguous().to(dtype)                # [n_bins, n_bands]
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next :meth:`push` starts a new one at ``t = 0``."""
        self._lead: tuple[int, ...] | None = None       # batch shape, fixed by the first push
        self._tail: torch.Tensor | None = None          # [*lead, L]: samples kept for unfinished frames
        self._origin = -(self.window // 2)              # absolute index of _tail[..., 0]
        self._seen = 0                                  # samples pushed so far
        self._next = 0                                  # index of the next frame to emit

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Take the next chunk and return the frames it completes.

        Args:
            samples: ``[n]`` or ``[B, n]`` (``n >= 0``); the batch shape must not change within a stream.

        Returns:
            Mel band power of every newly complete frame, in order: ``[F, n_bands]`` or ``[B, F, n_bands]``.

        Raises:
            TypeError: ``samples`` is not a real tensor.
            ValueError: wrong dimensions, a batch size differing from the stream's, or non-finite samples.
        """
        chunk = self._accept(samples, "samples")
        if self._tail is None:
            self._lead = tuple(chunk.shape[:-1])
            self._tail = chunk.new_zeros(*self._lead, self.window // 2)      # the zeros before t = 0
        elif tuple(chunk.shape[:-1]) != self._lead:
            raise _bad("samples", tuple(chunk.shape),
                       f"batch shape {self._lead} then n, as in this stream's first chunk")
        data = torch.cat([self._tail, chunk], dim=-1)
        self._seen += chunk.shape[-1]
        # Frame j is complete once sample j*hop - window//2 + window - 1 has arrived.
        last = (self._seen + self.window // 2 - self.window) // self.hop
        return self._emit(data, max(0, last - self._next + 1))

    def flush(self) -> torch.Tensor:
        """End the stream: the remaining frames, with zeros after the last sample, then :meth:`reset`.

        Returns:
            Mel band power of the frames not yet returned, up to the one centred at
            or before the last sample: ``[F, n_bands]`` or ``[B, F, n_bands]``
            (``[0, n_bands]`` when nothing was pushed).
        """
        if self._tail is None:
            return torch.zeros(0, self.n_bands, dtype=self.dtype)
        last = (self._seen - 1) // self.hop
        count = max(0, last - self._next + 1)
        end = (self._next + count - 1) * self.hop - self.window // 2 + self.window - self._origin
        data = self._tail
        if data.shape[-1] < end:
            data = torch.nn.functional.pad(data, (0, end - data.shape[-1]))
        out = self._emit(data, count)
        self.reset()
        return out

    def power_spectrum(self, signal: torch.Tensor) -> torch.Tensor:
        """One-sided power spectrum of a whole signal, before the mel matrix: ``[..., F, n_bins]``.

        Stateless (the stream in progress is untouched); same frames as
        ``push(signal)`` then ``flush()``, ``F = frames_for(n, hop)``.  Each
        frame's bins sum to its Hann-weighted mean square.

        Raises:
            TypeError, ValueError: as :meth:`push`, for ``signal``.
        """
        x = self._accept(signal, "signal")
        count = frames_for(x.shape[-1], self.hop)
        if count == 0:
            return x.new_zeros(*x.shape[:-1], 0, self.n_bins)
        half = self.window // 2
        right = max(0, (count - 1) * self.hop - half + self.window - x.shape[-1])
        padded = torch.nn.functional.pad(x, (half, right))                    # [..., half + n + right]
        frames = padded.unfold(-1, self.window, self.hop)[..., :count, :]     # [..., F, window]
        return self._power(frames)

    # ---- internals ----

    def _accept(self, samples, field: str) -> torch.Tensor:
        """Validate a chunk at the boundary and convert it to the working dtype: ``[..., n]``."""
        if not isinstance(samples, torch.Tensor) or samples.is_complex() or samples.dtype == torch.bool:
            what = f"a tensor of {samples.dtype}" if isinstance(samples, torch.Tensor) else type(samples).__name__
            raise TypeError(f"{field!r}: got {what}; allowed: a real torch.Tensor")
        if samples.dim() not in (1, 2):
            raise _bad(field, tuple(samples.shape), "shape [n] or [B, n]")
        x = samples.to(self.dtype)
        if not bool(torch.isfinite(x).all()):
            raise _bad(field, "non-finite values", "finite samples")
        return x

    def _emit(self, data: torch.Tensor, count: int) -> torch.Tensor:
        """Mel power of the next ``count`` frames of ``data`` (starting at ``_origin``); keep the tail."""
        half = self.window // 2
        start = self._next * self.hop - half - self._origin
        if count:
            frames = data[..., start:].unfold(-1, self.window, self.hop)[..., :count, :]  # [..., F, window]
            out = self._power(frames) @ self._filters_t                                 # [..., F, n_bands]
        else:
            out = data.new_zeros(*data.shape[:-1], 0, self.n_bands)
        self._next += count
        # Keep from the first sample of the next frame; a hop longer than the
        # window can put it past the data, in which case the gap is skipped later.
        cut = min(max(self._next * self.hop - half - self._origin, 0), data.shape[-1])
        self._tail = data[..., cut:].clone()      # clone: do not pin the whole chunk in memory
        self._origin += cut
        return out

    def _power(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised one-sided power of windowed frames: ``[..., F, window] -> [..., F, n_bins]``."""
        spectrum = torch.fft.rfft(frames * self._hann, n=self.n_fft, dim=-1)          # [..., F, n_bins]
        # re^2 + im^2 avoids the hypot and sqrt of abs(); one addition, not a
        # reduction over a last axis of 2 (several times slower, same values).
        parts = torch.view_as_real(spectrum).square()
        return (parts[..., 0] + parts[..., 1]) * self._scale
