"""Band-limited resampling, one-shot or streamed: brings a user's audio to the scenario's rate.

A rational polyphase filter: with ``L/M = fs_out/fs_in`` reduced by their gcd,
output sample ``j`` sits at input position ``j*M/L`` (time ``j/fs_out``, no
delay) and is the sum of the ``2T`` input samples around it weighted by a
Kaiser-windowed sinc lowpass.  :func:`resample` is one :meth:`Resampler.push`
and a :meth:`Resampler.flush`, so the streamed and the one-shot outputs agree.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rtnclock.errors import StreamError

#: Zero crossings of the sinc on each side of the centre (sets the filter length).
ZERO_CROSSINGS = 32
#: Kaiser window shape: about 86 dB of stopband attenuation.
KAISER_BETA = 8.6
#: Lowpass cutoff as a fraction of the lower of the two Nyquist frequencies.
#: With 32 zero crossings and this beta the transition band is about 0.16 of
#: the Nyquist wide, centred on the cutoff; 0.92 puts its upper edge at the
#: Nyquist, so nothing above it aliases back unattenuated.
CUTOFF = 0.92


def resample(x: torch.Tensor, fs_in: int, fs_out: int) -> torch.Tensor:
    """Band-limited resampling of the last axis from ``fs_in`` to ``fs_out`` Hz.

    Output sample ``j`` is the band-limited input at time ``j / fs_out`` (no
    delay); samples before the start and after the end count as zeros.

    Args:
        x: float tensor ``[n]`` or ``[..., n]``.
        fs_in, fs_out: positive integer sample rates.

    Returns:
        Tensor ``[..., ceil(n * fs_out / fs_in)]`` of ``x``'s dtype; ``x`` itself
        when the rates are equal.

    Raises:
        StreamError: a rate is not a positive integer, or ``x`` is not a float
            tensor with at least one axis.
    """
    r = Resampler(fs_in, fs_out)
    if r.is_identity:
        _check_chunk(x)
        return x
    return torch.cat([r.push(x), r.flush()], dim=-1)


class Resampler:
    """Streaming band-limited resampler from ``fs_in`` to ``fs_out`` Hz.

    :meth:`push` returns every output sample whose filter support lies inside
    the input pushed so far, and keeps the input tail later outputs need;
    :meth:`flush` returns the rest, taking the input beyond the end as zeros.
    For any chunking, the pushes' outputs and the flush's, concatenated, equal
    :func:`resample` of the whole input (to float rounding).

    The filter is a sinc lowpass at ``CUTOFF`` times the lower Nyquist frequency
    under a Kaiser window (``KAISER_BETA``) reaching ``ZERO_CROSSINGS`` zero
    crossings each side: ``2T`` taps per output, ``T = ceil(ZERO_CROSSINGS /
    (CUTOFF * min(1, fs_out/fs_in)))`` input samples (35 when upsampling, 96
    from 44.1 kHz to 16 kHz).  Sums run in float64 whatever the input dtype;
    the output has the input's dtype.

    Layout.  With ``L/M = fs_out/fs_in`` (``L >= 64``, lowest terms times the
    smallest factor that gets there), outputs come in blocks of ``L``: block
    ``b`` reads the input from ``b*M`` on with the same ``L`` filters, so a run
    of blocks is one matrix product.  A block's outputs are split into ``S``
    groups of consecutive outputs, each a dense ``[span, Q]`` matrix over only
    the input its outputs reach, so the zeros multiplied stay a small multiple
    of the taps even for rates with a large ``L*M`` (44056 to 16000 Hz).

    Args:
        fs_in, fs_out: positive integer sample rates.

    Raises:
        StreamError: a rate is not a positive integer.
    """

    def __init__(self, fs_in: int, fs_out: int):
        self.fs_in, self.fs_out = _check_rate("fs_in", fs_in), _check_rate("fs_out", fs_out)
        g = math.gcd(self.fs_in, self.fs_out)
        self.is_identity = self.fs_in == self.fs_out
        # Blocks of at least 64 outputs keep the block product a matrix product,
        # not a matrix-vector one, when L is 1 or 2 (48 or 8 kHz to 16 kHz).
        wide = -(-64 // (self.fs_out // g))
        self._up, self._down = wide * self.fs_out // g, wide * self.fs_in // g
        self._taps, offsets, self._weights = _polyphase(self._up, self._down)
        self._offsets = offsets.tolist()
        self._on_device: dict = {}      # the weights per device
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next push starts a new stream at time 0."""
        self._x = None                  # [B, m] input from xp index self._x_at on
        self._x_at = 0                  # xp index = input index + T - 1 (T - 1 zeros lead)
        self._n_in = 0                  # input samples pushed
        self._next = 0                  # index of the next output to return
        self._empty = None              # [..., 0]: the stream's leading shape, dtype, device

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Take input samples; return the outputs now fully determined.

        Args:
            chunk: float tensor ``[..., n]`` (any ``n``, 0 included); leading
                shape, dtype and device as in the first chunk.

        Returns:
            Tensor ``[..., k]``, the next ``k`` output samples (``k`` may be 0).

        Raises:
            StreamError: not a float tensor, or leading shape or dtype differ
                from the first chunk's.
        """
        _check_chunk(chunk)
        if self._empty is None:
            self._empty = chunk[..., :0]
        elif chunk.shape[:-1] != self._empty.shape[:-1] or chunk.dtype != self._empty.dtype:
            raise StreamError(f"chunk of shape {tuple(chunk.shape)} and dtype {chunk.dtype}; "
                              f"the stream has leading shape {tuple(self._empty.shape[:-1])} "
                              f"and dtype {self._empty.dtype}")
        if self.is_identity:
            return chunk
        x = chunk.reshape(math.prod(chunk.shape[:-1]), chunk.shape[-1])   # [B, n]
        # Sums in float64: float32 results then no longer depend on how the
        # stream was cut (BLAS orders a sum differently for different sizes).
        x = x.to(torch.float64)
        if self._x is None:
            self._x = x.new_zeros(x.shape[0], self._taps - 1)   # the zeros before time 0
        self._x = torch.cat([self._x, x], dim=-1)
        self._n_in += x.shape[-1]
        # Output j reads inputs up to floor(j*M/L) + T, which must be < n_in.
        ready = max(0, -(-(self._n_in - self._taps) * self._up // self._down))
        return self._emit(ready)

    def flush(self) -> torch.Tensor:
        """Return the remaining outputs (input beyond the end is zeros) and reset.

        Returns:
            Tensor ``[..., k]``: the stream totals ``ceil(n_in * fs_out / fs_in)``
            outputs.
        """
        if self._empty is None:         # nothing pushed
            return torch.zeros(0)
        total = -(-self._n_in * self._up // self._down)
        out = self._empty if self.is_identity else self._emit(total)
        self.reset()
        return out

    def _emit(self, end: int) -> torch.Tensor:
        """Outputs ``self._next .. end - 1``, dropping the input no later output reads."""
        start, L, M = self._next, self._up, self._down
        if end <= start:
            return self._empty
        b0 = start // L
        y = self._blocks(b0, -(-end // L))[:, start - b0 * L:end - b0 * L]   # [B, end - start]
        self._next = end
        keep = (end // L) * M           # the first input index block end // L reads
        self._x, self._x_at = self._x[:, keep - self._x_at:], keep
        return y.to(self._empty.dtype).reshape(self._empty.shape[:-1] + (end - start,))

    def _blocks(self, b0: int, b1: int) -> torch.Tensor:
        """Outputs of blocks ``b0 .. b1 - 1`` (``b0*M`` is ``self._x_at``), zeros past the input."""
        x, M = self._x, self._down
        w = self._weights_on(x.device)                          # [S, span, Q]
        S, span, Q = w.shape
        need = (b1 - 1 - b0) * M + self._offsets[-1] + span
        if x.shape[-1] < need:
            x = torch.nn.functional.pad(x, (0, need - x.shape[-1]))
        # Slabs of blocks bound the memory of the gathered windows (32 MB of float64).
        per_slab = max(1, 2 ** 22 // (S * span))
        out = []
        for c0 in range(0, b1 - b0, per_slab):
            nb = min(per_slab, b1 - b0 - c0)
            windows = torch.stack([                             # [B, S, nb, span]
                x[:, c0 * M + o:c0 * M + o + (nb - 1) * M + span].unfold(-1, span, M)
                for o in self._offsets], dim=1)
            y = windows @ w                                     # [B, S, nb, Q]
            y = y.transpose(1, 2).reshape(x.shape[0], nb, S * Q)[..., :self._up]   # [B, nb, L]
            out.append(y.reshape(x.shape[0], nb * self._up))
        return torch.cat(out, dim=-1)                           # [B, (b1 - b0) * L]

    def _weights_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = self._weights.to(device)
        return self._on_device[device]


def _polyphase(up: int, down: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The filter in block layout: taps a side ``T``, offsets ``[S]``, weights ``[S, span, Q]``.

    Output ``r`` of a block (``0 <= r < L``) sits at input position
    ``a_r + phi_r`` past the block start, ``a_r = floor(r*M/L)``, and weighs the
    padded input ``a_r + t`` (``0 <= t < 2T``) by ``h(phi_r + T - 1 - t)``.
    Group ``s`` holds outputs ``s*Q .. s*Q + Q - 1`` and reads ``span`` inputs
    from its offset ``a_{s*Q}``.
    """
    fc = 0.5 * CUTOFF * min(1.0, up / down)                    # cycles per input sample
    half_width = ZERO_CROSSINGS / (2 * fc)                     # input samples
    T = math.ceil(half_width)
    groups = max(1, min(up, down // (2 * T)))                  # S: span about 2T + M/S
    per_group = -(-up // groups)                               # Q
    r = torch.arange(groups * per_group).clamp(max=up - 1)     # padding outputs repeat the last
    a = r * down // up                                         # [S*Q]
    phi = (r * down % up).double() / up                        # [S*Q]
    t = torch.arange(2 * T)
    h = _lowpass(phi[:, None] + (T - 1) - t, fc, half_width)   # [S*Q, 2T]
    h[up:] = 0.0
    a = a.view(groups, per_group)                              # [S, Q]
    offsets = a[:, 0].clone()                                  # [S]
    rel = a - offsets[:, None]                                 # [S, Q]
    span = int(rel.max()) + 2 * T
    w = torch.zeros(groups, span, per_group, dtype=torch.float64)
    w[torch.arange(groups)[:, None, None], rel[:, :, None] + t,
      torch.arange(per_group)[None, :, None]] = h.view(groups, per_group, 2 * T)
    return T, offsets, w


def _lowpass(t: torch.Tensor, fc: float, half_width: float) -> torch.Tensor:
    """Kaiser-windowed sinc at ``t`` input samples from its centre; unit gain at DC."""
    u = (t / half_width).clamp(-1.0, 1.0)
    beta = torch.tensor(KAISER_BETA, dtype=torch.float64)
    window = torch.special.i0(beta * torch.sqrt(1.0 - u * u)) / torch.special.i0(beta)
    h = 2 * fc * torch.sinc(2 * fc * t) * window
    return torch.where(t.abs() < half_width, h, torch.zeros_like(h))


def _check_rate(name: str, fs) -> int:
    if isinstance(fs, bool) or not isinstance(fs, (int, np.integer)) or fs <= 0:
        raise StreamError(f"{name}: got {fs!r}; allowed: a positive integer sample rate (Hz)")
    return int(fs)


def _check_chunk(x) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim == 0:
        what = f"tensor of dtype {x.dtype} and shape {tuple(x.shape)}" \
            if isinstance(x, torch.Tensor) else type(x).__name__
        raise StreamError(f"resampler input: got {what}; allowed: a float tensor [..., n]")
