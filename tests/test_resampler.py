"""Band-limited resampling (scenarios/resampler.py): checked against exact sines,
against ``scipy.signal.resample_poly`` running the same FIR, and against itself
fed in random chunks."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from rtnclock.errors import StreamError
from scenarios import resampler


def _prototype(up: int, down: int) -> np.ndarray:
    """The documented filter, sampled every ``1/up`` input samples (numpy, not resampler.py's code)."""
    fc = 0.5 * resampler.CUTOFF * min(1.0, up / down)
    half_width = resampler.ZERO_CROSSINGS / (2 * fc)
    t = np.arange(-math.floor(half_width * up), math.floor(half_width * up) + 1) / up
    u = np.clip(t / half_width, -1, 1)
    h = 2 * fc * np.sinc(2 * fc * t) * np.i0(resampler.KAISER_BETA * np.sqrt(1 - u * u)) \
        / np.i0(resampler.KAISER_BETA)
    return np.where(np.abs(t) < half_width, h, 0.0)


def _interior(fs_in: int, fs_out: int, n_in: int, margin: float = 0.01) -> slice:
    """Output samples at least ``margin`` seconds from both ends of the input."""
    return slice(math.ceil(margin * fs_out), math.floor(((n_in - 1) / fs_in - margin) * fs_out))


@pytest.mark.parametrize("fs_in", [44100, 22050, 48000, 8000])
def test_resampled_sine_matches_the_exact_sine(fs_in):
    n = fs_in // 2
    x = torch.sin(2 * math.pi * 440.0 * torch.arange(n, dtype=torch.float64) / fs_in)
    y = resampler.resample(x, fs_in, 16000)
    assert y.shape == (math.ceil(n * 16000 / fs_in),) and y.dtype == torch.float64
    exact = torch.sin(2 * math.pi * 440.0 * torch.arange(len(y), dtype=torch.float64) / 16000)
    inner = _interior(fs_in, 16000, n)
    assert (y[inner] - exact[inner]).abs().max() < 1e-3        # relative to the unit amplitude


@pytest.mark.parametrize("fs_in, fs_out", [
    (44100, 16000), (22050, 16000), (48000, 16000), (8000, 16000), (11025, 16000),
    (16000, 44100), (44056, 16000)])
def test_resample_equals_scipy_resample_poly_with_the_same_filter(fs_in, fs_out):
    g = math.gcd(fs_in, fs_out)
    up, down = fs_out // g, fs_in // g
    x = np.random.default_rng(1).standard_normal(3000)
    expected = scipy.signal.resample_poly(x, up, down, window=_prototype(up, down) / up)
    got = resampler.resample(torch.from_numpy(x), fs_in, fs_out).numpy()
    assert got.shape == expected.shape
    # Same FIR, same zero padding: equal to float64 rounding, edges included.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_tone_above_the_output_nyquist_is_attenuated_40_db():
    fs_in, n = 44100, 22050
    x = torch.sin(2 * math.pi * 9000.0 * torch.arange(n, dtype=torch.float64) / fs_in)
    y = resampler.resample(x, fs_in, 16000)[_interior(fs_in, 16000, n)]
    rms_in = math.sqrt(0.5)
    assert 20 * math.log10(y.pow(2).mean().sqrt() / rms_in) <= -40.0


@pytest.mark.parametrize("freq, bound", [(8020.0, -80.0), (8100.0, -80.0), (6000.0, None)])
def test_no_aliasing_from_just_above_the_output_nyquist_and_flat_below(freq, bound):
    """CUTOFF puts the stopband edge at the output Nyquist (8 kHz) and keeps 6 kHz exact."""
    fs_in, n = 44100, 22050
    x = torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / fs_in)
    y = resampler.resample(x, fs_in, 16000)
    inner = _interior(fs_in, 16000, n)
    if bound is None:
        exact = torch.sin(2 * math.pi * freq * torch.arange(len(y), dtype=torch.float64) / 16000)
        assert (y[inner] - exact[inner]).abs().max() < 1e-4
    else:
        assert 20 * math.log10(y[inner].pow(2).mean().sqrt() / math.sqrt(0.5)) <= bound


@pytest.mark.parametrize("fs_in, fs_out", [(44100, 16000), (8000, 16000), (44056, 16000)])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_streaming_in_random_chunks_equals_one_shot(fs_in, fs_out, dtype, atol):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6000, generator=gen, dtype=dtype)       # [B, n]
    sizes = [1, 1, 2, 700, 1, 3000] + torch.randint(0, 300, (40,), generator=gen).tolist()
    r = resampler.Resampler(fs_in, fs_out)
    pieces, at = [], 0
    for size in sizes:
        pieces.append(r.push(x[:, at:at + size]))
        at += size
        # No more lag than the filter's half width (plus one input sample).
        half_width = resampler.ZERO_CROSSINGS / (resampler.CUTOFF * min(1.0, fs_out / fs_in))
        emitted = sum(p.shape[-1] for p in pieces)
        assert emitted * fs_in / fs_out >= min(at, x.shape[-1]) - half_width - 1 - fs_in / fs_out
    pieces.append(r.push(x[:, at:]))
    pieces.append(r.flush())
    streamed = torch.cat(pieces, dim=-1)
    one_shot = resampler.resample(x, fs_in, fs_out)
    assert streamed.shape == one_shot.shape == (2, math.ceil(6000 * fs_out / fs_in))
    assert (streamed - one_shot).abs().max() <= atol


def test_output_length_is_ceil_of_the_rate_ratio():
    for n in [1, 2, 3, 440, 441, 1000]:
        for fs_in, fs_out in [(44100, 16000), (8000, 16000), (22050, 16000), (16000, 44100)]:
            y = resampler.resample(torch.zeros(n), fs_in, fs_out)
            assert y.shape == (math.ceil(n * fs_out / fs_in),)


def test_equal_rates_are_the_identity():
    x = torch.randn(3, 100)
    assert resampler.resample(x, 16000, 16000) is x
    r = resampler.Resampler(16000, 16000)
    assert torch.equal(torch.cat([r.push(x[:, :40]), r.push(x[:, 40:]), r.flush()], -1), x)


@pytest.mark.parametrize("fs_in, fs_out", [
    (0, 16000), (44100, -1), (44100.0, 16000), (True, 16000)])
def test_bad_rates_raise_stream_error(fs_in, fs_out):
    with pytest.raises(StreamError, match="positive integer sample rate"):
        resampler.Resampler(fs_in, fs_out)


def test_chunks_must_keep_the_stream_shape_and_dtype():
    r = resampler.Resampler(44100, 16000)
    r.push(torch.zeros(2, 10))
    with pytest.raises(StreamError, match="leading shape"):
        r.push(torch.zeros(3, 10))
    with pytest.raises(StreamError, match="dtype"):
        r.push(torch.zeros(2, 10, dtype=torch.float64))
    with pytest.raises(StreamError, match="float tensor"):
        r.push(torch.zeros(2, 10, dtype=torch.int64))
