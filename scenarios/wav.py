"""A user's WAV file: read it and mix it to mono.

``rtnclock run audio_stream --input FILE.wav`` reads the file with
:func:`read_wav` and brings it to the scenario's rate with
:class:`.resampler.Resampler`, chunk by chunk.

Reading.  The RIFF chunks are parsed here with :mod:`struct`, because the stdlib
``wave`` module reads neither IEEE float, 24-bit nor WAVE_FORMAT_EXTENSIBLE
files.  Every defect of the file is a :class:`StreamError` naming the path and
the defect; nothing is read half-way (a truncated data chunk is refused, not
shortened).
"""

from __future__ import annotations

import dataclasses
import pathlib
import struct

import numpy as np
import torch

from rtnclock.errors import StreamError

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# The 14 bytes that follow the 2-byte format code in every KSDATAFORMAT_SUBTYPE GUID.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_TAG_NAMES = {
    _PCM: "PCM", 0x0002: "Microsoft ADPCM", _FLOAT: "IEEE float", 0x0006: "A-law",
    0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0050: "MPEG",
    0x0055: "MPEG layer 3", _EXTENSIBLE: "WAVE_FORMAT_EXTENSIBLE",
}
_SUPPORTED = {(_PCM, 8), (_PCM, 16), (_PCM, 24), (_PCM, 32), (_FLOAT, 32), (_FLOAT, 64)}
_SUPPORTED_TEXT = ("PCM 8 (unsigned)/16/24/32-bit (tag 1), IEEE float 32/64-bit (tag 3), "
                   "and WAVE_FORMAT_EXTENSIBLE (tag 0xFFFE) with a PCM or float subformat")


@dataclasses.dataclass(frozen=True, eq=False)
class WavAudio:
    """A WAV file's audio, mixed down to mono.

    Attributes:
        samples: float32 tensor ``[n]``, full scale ``±1.0`` (integer ``v`` of a
            ``b``-bit file maps to ``v / 2**(b-1)``); float files keep their
            values, NaN and Inf included.
        sample_rate: frames per second of the file (Hz).
        channels: channels in the file (``samples`` is their mean).
        sample_format: the stored sample type: ``"uint8"``, ``"int16"``,
            ``"int24"``, ``"int32"``, ``"float32"`` or ``"float64"``.
        clipped_fraction: fraction of the file's samples (all channels) at full
            scale: the integer minimum or maximum, or ``|x| >= 1`` for floats.
        path: the file read.
    """

    samples: torch.Tensor
    sample_rate: int
    channels: int
    sample_format: str
    clipped_fraction: float
    path: pathlib.Path


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What the fmt chunk says about the sample layout."""

    channels: int
    sample_rate: int
    bits: int           # container bits per sample
    valid_bits: int     # significant bits, left-justified in the container
    is_float: bool

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8

    @property
    def sample_format(self) -> str:
        if self.is_float:
            return f"float{self.bits}"
        return "uint8" if self.bits == 8 else f"int{self.bits}"


def read_wav(path) -> WavAudio:
    """Read a WAV file into a mono float32 tensor at the file's own rate.

    Supported: PCM integer 8 (unsigned), 16, 24 and 32 bit (format tag 1), IEEE
    float 32 and 64 bit (tag 3), and WAVE_FORMAT_EXTENSIBLE (tag 0xFFFE) whose
    subformat is PCM or IEEE float (valid bits may be fewer than the container's,
    e.g. 20 bits in 24).  Any number of channels, mixed down by their mean.
    Chunks other than ``fmt `` and ``data`` (LIST, fact, ...) are skipped.

    Non-finite samples of a float file are returned as they are: the scenario
    that consumes the stream applies its own NaN policy.

    Args:
        path: the file (str or path-like).

    Returns:
        :class:`WavAudio`.

    Raises:
        StreamError: the file is missing, a directory, empty, not RIFF/WAVE,
            lacks a ``fmt `` or ``data`` chunk, has a truncated data chunk (its
            declared size exceeds the bytes present), a data size that is not a
            whole number of frames, no frames at all, zero channels or a zero
            sample rate, or a format other than the supported ones.
    """
    path = pathlib.Path(path)
    fmt, data_at, declared, file_size = _find_chunks(path)
    layout = _parse_fmt(path, fmt)
    present = max(0, min(declared, file_size - data_at))
    if present < declared:
        raise StreamError(f"{path}: truncated data chunk: header declares {declared} bytes, "
                          f"the file holds {present}")
    if declared % layout.frame_bytes:
        raise StreamError(f"{path}: data chunk of {declared} bytes is not a whole number of "
                          f"{layout.frame_bytes}-byte frames ({layout.channels} channels x "
                          f"{layout.bits // 8} bytes)")
    if declared == 0:
        raise StreamError(f"{path}: data chunk holds no audio samples (0 frames)")
    with path.open("rb") as f:
        f.seek(data_at)
        raw = f.read(declared)
    samples, clipped = _decode(raw, layout)
    return WavAudio(samples=samples, sample_rate=layout.sample_rate, channels=layout.channels,
                    sample_format=layout.sample_format, clipped_fraction=clipped, path=path)


def _find_chunks(path: pathlib.Path) -> tuple[bytes, int, int, int]:
    """The fmt chunk's bytes, and the data chunk's offset and declared size, and the file size."""
    if not path.exists():
        raise StreamError(f"{path}: no such file")
    if path.is_dir():
        raise StreamError(f"{path}: is a directory, not a WAV file")
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise StreamError(f"{path}: empty file (0 bytes), not a WAV file")
            f.seek(0)
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
                raise StreamError(f"{path}: not a RIFF/WAVE file (starts with {head!r})")
            fmt, data = None, None
            # The RIFF size field is often wrong (streamed writers leave it 0 or
            # 0xFFFFFFFF), so the chunks are walked up to the end of the file.
            pos = 12
            while pos + 8 <= size and (fmt is None or data is None):
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt ":
                    fmt = f.read(n)
                elif cid == b"data":
                    data = (pos + 8, n)
                pos += 8 + n + (n & 1)      # chunks are word-aligned: odd sizes carry a pad byte
    except OSError as e:
        raise StreamError(f"{path}: cannot read ({e.strerror or e})") from e
    if fmt is None:
        raise StreamError(f"{path}: no 'fmt ' chunk; not a valid WAV file")
    if data is None:
        raise StreamError(f"{path}: no 'data' chunk; the WAV file holds no audio")
    return fmt, data[0], data[1], size


def _parse_fmt(path: pathlib.Path, fmt: bytes) -> _Layout:
    """Validate the fmt chunk against the supported formats."""
    if len(fmt) < 16:
        raise StreamError(f"{path}: fmt chunk has {len(fmt)} bytes, needs at least 16")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    valid, what = bits, f"format tag {tag}"
    if tag == _EXTENSIBLE:
        if len(fmt) < 40:
            raise StreamError(f"{path}: WAVE_FORMAT_EXTENSIBLE fmt chunk has {len(fmt)} bytes, "
                              "needs 40")
        valid, _, guid = struct.unpack_from("<HI16s", fmt, 18)
        if guid[2:] != _GUID_TAIL:
            raise StreamError(f"{path}: unsupported WAVE_FORMAT_EXTENSIBLE subformat GUID "
                              f"{guid.hex()}; supported: {_SUPPORTED_TEXT}")
        tag = struct.unpack_from("<H", guid)[0]
        valid, what = valid or bits, f"WAVE_FORMAT_EXTENSIBLE subformat {tag}"
    if channels == 0:
        raise StreamError(f"{path}: fmt chunk declares 0 channels")
    if rate == 0:
        raise StreamError(f"{path}: fmt chunk declares a sample rate of 0 Hz")
    if (tag, bits) not in _SUPPORTED:
        name = _TAG_NAMES.get(tag, "unknown")
        raise StreamError(f"{path}: unsupported WAV format: {what} ({name}), {bits} bits per "
                          f"sample; supported: {_SUPPORTED_TEXT}")
    if not 0 < valid <= bits or (tag == _FLOAT and valid != bits):
        raise StreamError(f"{path}: {valid} valid bits in a {bits}-bit "
                          f"{'float' if tag == _FLOAT else 'PCM'} sample")
    layout = _Layout(channels, rate, bits, valid, tag == _FLOAT)
    if block_align != layout.frame_bytes:
        raise StreamError(f"{path}: fmt chunk block_align {block_align} does not match "
                          f"{channels} channels x {bits // 8} bytes")
    return layout


def _decode(raw: bytes, layout: _Layout) -> tuple[torch.Tensor, float]:
    """Mono float32 samples and the clipped fraction of the file's samples."""
    if layout.is_float:
        a = np.frombuffer(raw, f"<f{layout.bits // 8}")
        with np.errstate(invalid="ignore"):     # NaN is left to the scenario's policy
            clipped = np.count_nonzero(np.abs(a) >= 1.0)
        scale = 1.0
    else:
        a = _widen(raw, layout.bits)
        # Full scale is judged on the valid bits, whatever padding the container has.
        v = a >> (32 - layout.valid_bits)
        clipped = np.count_nonzero((v >= 2 ** (layout.valid_bits - 1) - 1)
                                   | (v <= -2 ** (layout.valid_bits - 1)))
        scale = 2.0 ** -31
    # Averaging in float64 keeps 32-bit integers exact until the final rounding.
    with np.errstate(invalid="ignore", over="ignore"):    # Inf - Inf, float64 beyond float32
        mono = a.reshape(-1, layout.channels).mean(axis=1, dtype=np.float64)   # [n]
        samples = torch.from_numpy((mono * scale).astype(np.float32))
    return samples, clipped / a.size


def _widen(raw: bytes, bits: int) -> np.ndarray:
    """Integer samples as int32, left-justified, so that ``2**31`` is full scale for every width."""
    if bits == 8:                       # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(raw, np.uint8).astype(np.int32) - 128) << 24
    if bits == 16:
        return np.frombuffer(raw, "<i2").astype(np.int32) << 16
    if bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)      # [n, 3] little-endian bytes
        w = np.zeros((len(b), 4), np.uint8)
        w[:, 1:] = b                    # the low byte stays zero: v << 8
        return w.view("<i4").reshape(-1).astype(np.int32)
    return np.frombuffer(raw, "<i4").astype(np.int32)
