"""WAV reading (scenarios/wav.py).

The files are written here with a small struct-based RIFF writer (and, for
int16, the stdlib ``wave`` writer as an independent check).
"""

import math
import struct
import wave

import numpy as np
import pytest
import torch

from rtnclock.errors import StreamError
from scenarios import wav

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# Rounding a value of magnitude below 1 to float32 moves it by at most half an ulp.
_F32_HALF_ULP = 2.0 ** -25


# ----------------------------------------------------------------------------- writer

def _chunk(cid: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", cid, len(body)) + body + b"\0" * (len(body) & 1)


def _fmt(tag, channels, rate, bits, *, subformat=None, valid_bits=None) -> bytes:
    """A fmt chunk; ``subformat`` makes it WAVE_FORMAT_EXTENSIBLE."""
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if subformat is not None:
        body += struct.pack("<HHIH", 22, valid_bits or bits, 0, subformat) + _GUID_TAIL
    return _chunk(b"fmt ", body)


def _write(path, *chunks: bytes):
    body = b"WAVE" + b"".join(chunks)
    path.write_bytes(struct.pack("<4sI", b"RIFF", len(body)) + body)
    return path


def _pcm(q: np.ndarray, bits: int) -> bytes:
    """Integer samples ``[n, channels]`` as interleaved little-endian PCM."""
    if bits == 8:
        return (q + 128).astype(np.uint8).tobytes()
    if bits == 24:
        return q.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
    return q.astype(f"<i{bits // 8}").tobytes()


def _signal(n=1000, channels=1, seed=0) -> np.ndarray:
    """A known signal ``[n, channels]`` within ``±0.9``: a tone plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 8000.0
    return 0.8 * np.sin(2 * np.pi * 440.0 * t + np.arange(channels)) \
        + 0.1 * rng.uniform(-1, 1, (n, channels))


def _quantise(x: np.ndarray, bits: int) -> np.ndarray:
    full = 2 ** (bits - 1)
    return np.clip(np.round(x * full), -full, full - 1).astype(np.int64)


# ----------------------------------------------------------------------------- reading

@pytest.mark.parametrize("bits, extensible", [
    (8, False), (16, False), (24, False), (32, False), (24, True)])
def test_integer_round_trip_within_one_lsb(tmp_path, bits, extensible):
    x = _signal()
    q = _quantise(x, bits)
    fmt = (_fmt(_EXTENSIBLE, 1, 8000, bits, subformat=_PCM) if extensible
           else _fmt(_PCM, 1, 8000, bits))
    audio = wav.read_wav(_write(tmp_path / "a.wav", fmt, _chunk(b"data", _pcm(q, bits))))
    assert (audio.sample_rate, audio.channels) == (8000, 1)
    assert audio.sample_format == ("uint8" if bits == 8 else f"int{bits}")
    assert audio.samples.dtype == torch.float32 and audio.samples.shape == (1000,)
    got = audio.samples.double().numpy()
    lsb = 2.0 ** -(bits - 1)
    # Exactly v / 2**(bits-1), up to the float32 rounding...
    assert np.max(np.abs(got - q[:, 0] * lsb)) <= _F32_HALF_ULP
    # ...and so within one LSB of the source.
    assert np.max(np.abs(got - x[:, 0])) <= lsb + _F32_HALF_ULP
    assert audio.clipped_fraction == 0.0


@pytest.mark.parametrize("bits, extensible", [(32, False), (64, False), (32, True)])
def test_float_round_trip_is_exact(tmp_path, bits, extensible):
    x = _signal().astype(f"<f{bits // 8}")
    fmt = (_fmt(_EXTENSIBLE, 1, 44100, bits, subformat=_FLOAT) if extensible
           else _fmt(_FLOAT, 1, 44100, bits))
    audio = wav.read_wav(_write(tmp_path / "f.wav", fmt, _chunk(b"data", x.tobytes())))
    assert audio.sample_format == f"float{bits}" and audio.sample_rate == 44100
    np.testing.assert_array_equal(audio.samples.numpy(), x[:, 0].astype(np.float32))


def test_int16_written_by_stdlib_wave_mixes_stereo_to_the_mean(tmp_path):
    q = _quantise(_signal(channels=2), 16)                     # [n, 2]
    path = tmp_path / "stdlib.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(q.astype("<i2").tobytes())
    audio = wav.read_wav(path)
    assert (audio.channels, audio.sample_rate, audio.sample_format) == (2, 22050, "int16")
    # (qL + qR) / 65536 has at most 17 significant bits: exact in float32.
    np.testing.assert_array_equal(audio.samples.numpy(), q.sum(axis=1) / 65536.0)


def test_many_channels_mix_to_the_mean(tmp_path):
    x = _signal(channels=5).astype("<f4")
    audio = wav.read_wav(_write(tmp_path / "5ch.wav", _fmt(_FLOAT, 5, 48000, 32),
                                _chunk(b"data", x.tobytes())))
    assert audio.channels == 5
    np.testing.assert_array_equal(audio.samples.numpy(),
                                  x.astype(np.float64).mean(axis=1).astype(np.float32))


def test_unknown_and_odd_sized_chunks_are_skipped(tmp_path):
    q = _quantise(_signal(n=999), 8)                            # 999 bytes: data is padded too
    info = _chunk(b"INFO", b"ISFT" + struct.pack("<I", 5) + b"test\0\0")
    audio = wav.read_wav(_write(
        tmp_path / "chunks.wav",
        _chunk(b"LIST", info),
        _fmt(_PCM, 1, 8000, 8),
        _chunk(b"fact", struct.pack("<I", 999)),
        _chunk(b"junk", b"odd-sz!"),                            # 7 bytes and a pad byte
        _chunk(b"data", _pcm(q, 8)),
        _chunk(b"LIST", b"after the data")))
    assert audio.samples.shape == (999,)
    np.testing.assert_array_equal(audio.samples.numpy(), q[:, 0] / 128.0)


def test_fmt_after_data_is_found(tmp_path):
    q = _quantise(_signal(n=10), 16)
    audio = wav.read_wav(_write(tmp_path / "late_fmt.wav", _chunk(b"data", _pcm(q, 16)),
                                _fmt(_PCM, 1, 8000, 16)))
    np.testing.assert_array_equal(audio.samples.numpy(), q[:, 0] / 32768.0)


def test_clipped_fraction_counts_full_scale_int_samples(tmp_path):
    q = _quantise(_signal(channels=2), 16)                     # 2000 samples, none at full scale
    q[[3, 50, 51, 700, 998, 999, 10], 0] = 32767
    q[[4, 60, 61, 900, 0], 1] = -32768
    q[[5, 6], 0], q[[7, 8], 1] = 32766, -32767                  # one LSB short: not clipped
    audio = wav.read_wav(_write(tmp_path / "clip.wav", _fmt(_PCM, 2, 8000, 16),
                                _chunk(b"data", _pcm(q, 16))))
    assert audio.clipped_fraction == 12 / 2000


def test_clipped_fraction_uses_valid_bits_of_an_extensible_container(tmp_path):
    q20 = _quantise(_signal(), 20)                              # 20 valid bits in 24
    q20[[1, 2, 3]] = 2 ** 19 - 1
    q20[[4, 5]] = -(2 ** 19)
    path = _write(tmp_path / "20in24.wav",
                  _fmt(_EXTENSIBLE, 1, 8000, 24, subformat=_PCM, valid_bits=20),
                  _chunk(b"data", _pcm(q20 << 4, 24)))         # left-justified
    audio = wav.read_wav(path)
    assert audio.clipped_fraction == 5 / 1000
    assert np.max(np.abs(audio.samples.double().numpy() - q20[:, 0] / 2 ** 19)) <= _F32_HALF_ULP


def test_clipped_fraction_of_float_samples_and_nonfinite_left_alone(tmp_path):
    x = np.full(100, 0.5, dtype="<f4")
    x[:6] = [1.0, -1.0, 1.5, -2.0, np.nextafter(np.float32(1), np.float32(0)), np.nan]
    audio = wav.read_wav(_write(tmp_path / "fclip.wav", _fmt(_FLOAT, 1, 8000, 32),
                                _chunk(b"data", x.tobytes())))
    assert audio.clipped_fraction == 4 / 100                    # not 0.99999994, not NaN
    assert math.isnan(audio.samples[5])                         # the scenario's NaN policy decides


def _riff(fmt: bytes, *chunks: bytes):
    """A maker of a RIFF/WAVE file holding ``fmt`` (``b""``: none) and ``chunks``."""
    return lambda path: _write(path, fmt, *chunks)


_MONO16 = _fmt(_PCM, 1, 8000, 16)
_EIGHT_BYTES = _chunk(b"data", b"\0" * 8)


@pytest.mark.parametrize("make, reasons", [
    (lambda p: p.write_bytes(b""), ["empty file", "0 bytes"]),
    (lambda p: p.write_text("hello, this is not audio\n"), ["not a RIFF/WAVE file"]),
    (lambda p: p.write_bytes(b"RIFF\x04\x00\x00\x00AVI "), ["not a RIFF/WAVE file"]),
    (lambda p: p.write_bytes(b"RIF"), ["not a RIFF/WAVE file"]),
    (_riff(_MONO16, struct.pack("<4sI", b"data", 1000) + b"\0" * 400),  # declares 1000, holds 400
     ["truncated data chunk", "1000", "400"]),
    (_riff(_fmt(7, 1, 8000, 8), _EIGHT_BYTES), ["tag 7", "mu-law"]),
    (_riff(_fmt(2, 1, 8000, 4), _EIGHT_BYTES), ["tag 2", "ADPCM"]),
    (_riff(_fmt(_PCM, 1, 8000, 12), _EIGHT_BYTES), ["tag 1", "12 bits"]),
    (_riff(_fmt(_EXTENSIBLE, 1, 8000, 8, subformat=7), _EIGHT_BYTES), ["subformat 7", "mu-law"]),
    (_riff(_MONO16, _chunk(b"LIST", b"INFO")), ["no 'data' chunk"]),
    (_riff(b"", _EIGHT_BYTES), ["no 'fmt ' chunk"]),
    (_riff(_MONO16, _chunk(b"data", b"")), ["no audio samples"]),
    (_riff(_fmt(_PCM, 0, 8000, 16), _EIGHT_BYTES), ["0 channels"]),
    (_riff(_fmt(_PCM, 1, 0, 16), _EIGHT_BYTES), ["sample rate of 0 Hz"]),
    (_riff(_fmt(_PCM, 2, 8000, 16), _chunk(b"data", b"\0" * 10)),
     ["not a whole number", "4-byte frames"]),
    (lambda p: None, ["no such file"]),
    (lambda p: p.mkdir(), ["directory"]),
], ids=["empty", "text", "riff-not-wave", "three-bytes", "truncated", "mu-law", "adpcm", "pcm12",
        "extensible-mu-law", "no-data", "no-fmt", "zero-frames", "zero-channels", "zero-rate",
        "partial-frame", "missing", "directory"])
def test_bad_files_raise_stream_error_naming_file_and_reason(tmp_path, make, reasons):
    path = tmp_path / "bad_input.wav"
    make(path)
    with pytest.raises(StreamError) as info:
        wav.read_wav(path)
    message = str(info.value)
    assert "\n" not in message and "bad_input.wav" in message
    for reason in reasons:
        assert reason in message
