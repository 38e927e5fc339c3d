"""The streaming mel front end against closed forms and a direct, non-streaming reference."""

import math
import random
import time

import pytest
import torch

from rtnclock.scenarios.filterbank import MelFrontEnd, frames_for, mel_centres, mel_filters

SR = 16000
DEFAULT_BANDS = dict(n_bands=64, n_fft=512, sample_rate=SR, f_min=50.0, f_max=7600.0)


# ---- independent references -----------------------------------------------------

def _mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _hz(m: float) -> float:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def _triangles(n_bands, n_fft, sample_rate, f_min, f_max) -> torch.Tensor:
    """Peak-1 triangles written as a scalar loop: ``[n_bands, n_fft // 2 + 1]``, float64."""
    m0, m1 = _mel(f_min), _mel(f_max)
    pts = [f_min] + [_hz(m0 + (m1 - m0) * i / (n_bands + 1)) for i in range(1, n_bands + 1)] + [f_max]
    out = torch.zeros(n_bands, n_fft // 2 + 1, dtype=torch.float64)
    for i in range(n_bands):
        lo, c, hi = pts[i:i + 3]
        for k in range(n_fft // 2 + 1):
            f = k * sample_rate / n_fft
            if lo < f <= c:
                out[i, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                out[i, k] = (hi - f) / (hi - c)
    return out


def _reference(fe: MelFrontEnd, x: torch.Tensor) -> torch.Tensor:
    """Mel power of a 1-D float64 signal by explicit framing and an explicit DFT (no unfold, no FFT)."""
    n, half = x.numel(), fe.window // 2
    count = (n - 1) // fe.hop + 1
    padded = torch.zeros(half + n + fe.window, dtype=torch.float64)
    padded[half:half + n] = x
    # Sample j*hop - window//2 sits at padded[j*hop].
    frames = torch.stack([padded[j * fe.hop:j * fe.hop + fe.window] for j in range(count)])  # [F, window]
    m = torch.arange(fe.window)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * m.double() / fe.window)
    k = torch.arange(fe.n_bins)
    # Reduce k*m modulo n_fft before scaling, so the angles stay accurate.
    angle = (m[:, None] * k[None, :] % fe.n_fft).double() * (2 * math.pi / fe.n_fft)   # [window, n_bins]
    y = frames * hann
    power = (y @ torch.cos(angle)) ** 2 + (y @ torch.sin(angle)) ** 2                  # [F, n_bins]
    weight = torch.full((fe.n_bins,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if fe.n_fft % 2 == 0:
        weight[-1] = 1.0
    power = power * weight / (fe.n_fft * (hann ** 2).sum())
    return power @ fe.filters.T                                                         # [F, n_bands]


def _stream(fe: MelFrontEnd, x: torch.Tensor, sizes) -> torch.Tensor:
    """Push ``x`` in chunks of ``sizes`` (cycled), flush, and concatenate the frames."""
    outs, i, s = [], 0, 0
    while i < x.shape[-1]:
        size = sizes[s % len(sizes)]
        outs.append(fe.push(x[..., i:i + size]))
        i, s = i + size, s + 1
    outs.append(fe.flush())
    return torch.cat(outs, dim=-2)


def _tone(f: float, n: int, amplitude: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * f * t + 0.3)).to(dtype)


# ---- the mel matrix ------------------------------------------------------------

@pytest.mark.parametrize("args", [(64, 512, SR, 50.0, 7600.0), (40, 1024, SR, 0.0, 8000.0),
                                  (10, 401, 22050, 300.0, 5000.0)])
def test_mel_filters_match_scalar_triangles(args):
    torch.testing.assert_close(mel_filters(*args), _triangles(*args), rtol=0, atol=1e-12)


def test_centres_are_equally_spaced_in_mel():
    centres = mel_centres(64, 50.0, 7600.0)
    assert centres.dtype == torch.float64 and centres.shape == (64,)
    assert bool((centres.diff() > 0).all())
    step = (_mel(7600.0) - _mel(50.0)) / 65
    mels = torch.tensor([_mel(50.0)] + [_mel(float(c)) for c in centres] + [_mel(7600.0)], dtype=torch.float64)
    torch.testing.assert_close(mels.diff(), torch.full((65,), step, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(MelFrontEnd().centres, centres, rtol=0, atol=0)


@pytest.mark.parametrize("n_fft", [512, 8192])
def test_each_row_peaks_at_its_centre_bin(n_fft):
    w = mel_filters(64, n_fft, SR, 50.0, 7600.0)
    pts = [50.0] + mel_centres(64, 50.0, 7600.0).tolist() + [7600.0]
    bin_hz = SR / n_fft
    for i in range(64):
        lo, c, hi = pts[i:i + 3]
        peak, k = w[i].max(dim=0)
        # The peak is on one of the two bins bracketing the centre, and at least
        # the triangle's height at the bin nearest the centre (which holds a bin:
        # a band's peak is never 0).
        assert int(k) in (math.floor(c / bin_hz), math.ceil(c / bin_hz))
        d = round(c / bin_hz) * bin_hz - c
        nearest = 1.0 - (d / (hi - c) if d > 0 else -d / (c - lo))
        assert max(nearest, 0.0) - 1e-12 <= float(peak) <= 1.0 and float(peak) > 0
    if n_fft == 8192:                      # bins 2 Hz apart: every peak within 4% of 1
        assert float(w.max(dim=1).values.min()) > 0.96


def test_filters_are_a_partition_of_unity_between_first_and_last_centre():
    w = mel_filters(**DEFAULT_BANDS)
    centres = mel_centres(64, 50.0, 7600.0)
    freqs = torch.arange(257, dtype=torch.float64) * SR / 512
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    # Between centres c_i and c_i+1 only bands i and i+1 are non-zero, and they
    # share the edge points: (c_i+1 - f)/(c_i+1 - c_i) + (f - c_i)/(c_i+1 - c_i) = 1.
    torch.testing.assert_close(w.sum(0)[inside], torch.ones(int(inside.sum()), dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert int((w > 0).sum(0).max()) <= 2
    below = freqs < centres[0]                      # only band 0's rising edge, below 1
    assert bool((w.sum(0)[below] == w[0, below]).all()) and float(w[0, below].max()) < 1.0


def test_bands_too_narrow_for_the_fft_raise():
    assert bool((mel_filters(**DEFAULT_BANDS) > 0).any(dim=1).all())
    with pytest.raises(ValueError, match=r"(?s)'n_bands'.*'n_fft'"):
        mel_filters(128, 256, SR, 0.0, 8000.0)


# ---- power and tones -----------------------------------------------------------

@pytest.mark.parametrize("window", [400, 512])
@pytest.mark.parametrize("f", [100.0, 440.0, 1234.5, 3000.0, 7000.0])
def test_sine_total_power_is_half_amplitude_squared(window, f):
    fe = MelFrontEnd(window=window, n_fft=512, dtype=torch.float64)
    amplitude = 0.7
    total = fe.power_spectrum(_tone(f, 8000, amplitude)).sum(-1)[4:-4]        # steady frames
    torch.testing.assert_close(total, torch.full_like(total, amplitude ** 2 / 2), rtol=1e-2, atol=0)


def test_frame_power_is_the_windowed_mean_square():
    # Parseval makes this exact for any signal, not only sines.
    fe = MelFrontEnd(dtype=torch.float64)
    x = torch.randn(3200, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (200, 400))
    hann = torch.hann_window(400, periodic=True, dtype=torch.float64)
    frames = padded.unfold(0, 400, 160)[:frames_for(3200, 160)]
    expected = (frames ** 2 * hann ** 2).sum(-1) / (hann ** 2).sum()
    torch.testing.assert_close(fe.power_spectrum(x).sum(-1), expected, rtol=1e-12, atol=0)


def test_tone_peaks_in_the_nearest_band():
    fe = MelFrontEnd(dtype=torch.float64)
    freqs = torch.logspace(2.0, math.log10(7000.0), 120, dtype=torch.float64)      # 100 Hz .. 7 kHz
    t = torch.arange(2400, dtype=torch.float64) / SR
    bands = fe.push(torch.sin(2 * math.pi * freqs[:, None] * t + 0.3))[:, 3:-3]    # [120, F, n_bands], steady
    c = fe.centres
    strict = 0
    for f, frames in zip(freqs.tolist(), bands):
        i = int(torch.searchsorted(c, f)) - 1                                       # c[i] <= f < c[i+1]
        offset = (f - 0.5 * float(c[i] + c[i + 1])) / float(c[i + 1] - c[i])     # from the midpoint, in spacings
        loudest = set(frames.argmax(-1).tolist())
        # The tone's power is smeared over a few bins (the bin grid and the Hann
        # main lobe, +-80 Hz), which the two bracketing triangles weigh with
        # different slopes; near the midpoint their powers are nearly equal and
        # the smear can tip the maximum to the farther of the two.
        assert loudest <= {i, i + 1}
        if abs(offset) > 0.1:
            assert loudest == {i if offset < 0 else i + 1}
            strict += 1
        # Partition of unity: the bands hold the tone's whole power, A**2/2, once
        # the main lobe stays above the first centre (78 Hz).
        if f >= 200.0:
            torch.testing.assert_close(frames.sum(-1), torch.full_like(frames[:, 0], 0.5), rtol=1e-2, atol=0)
    assert strict >= 90                    # most of the sweep is checked strictly


def test_silence_is_exactly_zero():
    fe = MelFrontEnd()
    out = _stream(fe, torch.zeros(2, 3201), [161])
    assert out.shape == (2, 21, 64) and int(torch.count_nonzero(out)) == 0
    assert int(torch.count_nonzero(fe.power_spectrum(torch.zeros(3201)))) == 0


def test_doubling_the_amplitude_quadruples_every_band():
    x = torch.randn(4000) * 0.1 + _tone(1000.0, 4000, 0.5, torch.float32)
    once, twice = MelFrontEnd().push(x), MelFrontEnd().push(2 * x)
    torch.testing.assert_close(twice, 4 * once, rtol=1e-6, atol=0)


# ---- framing and streaming -----------------------------------------------------

def test_impulse_lands_in_the_frame_centred_on_it():
    fe = MelFrontEnd(dtype=torch.float64)
    hann = torch.hann_window(400, periodic=True, dtype=torch.float64)
    for j0 in (0, 3, 10):
        x = torch.zeros(1601, dtype=torch.float64)
        x[j0 * 160] = 1.0
        total = fe.power_spectrum(x).sum(-1)                                    # [F]
        # Frame j starts at sample j*hop - 200: the impulse meets window index j0*hop - j*hop + 200.
        expected = torch.tensor([float(hann[(j0 - j) * 160 + 200] ** 2) if 0 <= (j0 - j) * 160 + 200 < 400
                                 else 0.0 for j in range(11)], dtype=torch.float64) / (hann ** 2).sum()
        torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-15)
        assert int(total.argmax()) == j0


@pytest.mark.parametrize("n", [0, 1, 2, 159, 160, 161, 200, 319, 320, 321, 399, 400, 401, 1000])
def test_frame_count_and_completeness(n):
    assert frames_for(n, 160) == (n - 1) // 160 + 1 == sum(1 for j in range(n + 1) if j * 160 <= n - 1)
    fe = MelFrontEnd()
    pushed = fe.push(torch.randn(n))
    # A frame is returned by push once its last sample, j*hop - 200 + 399, has arrived.
    assert pushed.shape[0] == sum(1 for j in range(n + 1) if j * 160 + 199 <= n - 1)
    assert pushed.shape[0] + fe.flush().shape[0] == frames_for(n, 160)
    assert fe.power_spectrum(torch.randn(n)).shape == (frames_for(n, 160), 257)


CONFIGS = [
    dict(),                                            # defaults: hop 160, window 400, n_fft 512
    dict(window=401, n_fft=512),                       # odd window
    dict(window=400, n_fft=401),                       # odd n_fft: no Nyquist bin
    dict(hop=50, window=32, n_fft=64, n_bands=8),      # hop longer than the window: gaps skipped
]
CHUNKINGS = [[1], [7], [160], [161], [4000], [0, 399, 1, 2, 800],
             [random.Random(3).randint(0, 700) for _ in range(40)]]


@pytest.mark.parametrize("config", CONFIGS)
def test_float64_streaming_matches_the_direct_reference(config):
    x = torch.randn(4801, dtype=torch.float64)
    fe = MelFrontEnd(dtype=torch.float64, **config)
    expected = _reference(fe, x)
    assert expected.shape[0] == frames_for(4801, fe.hop)
    for sizes in CHUNKINGS:
        torch.testing.assert_close(_stream(fe, x, sizes), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_float32_streaming_matches_one_push(config):
    x = torch.randn(4801)
    fe = MelFrontEnd(**config)
    whole = _stream(fe, x, [4801])
    assert whole.dtype == torch.float32
    for sizes in CHUNKINGS:
        torch.testing.assert_close(_stream(fe, x, sizes), whole, rtol=1e-6, atol=0)
    # float32 against the float64 reference: relative to each frame's loudest band.
    ref = _reference(MelFrontEnd(dtype=torch.float64, **config), x.double())
    scale = ref.amax(-1, keepdim=True)
    torch.testing.assert_close(whole.double() / scale, ref / scale, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_batch_equals_single_streams(dtype, rtol):
    x = torch.stack([torch.randn(3001), _tone(500.0, 3001, 1.0, torch.float32), torch.zeros(3001)]).to(dtype)
    fe = MelFrontEnd(dtype=dtype)
    batched = _stream(fe, x, [161, 7, 1000])
    assert batched.shape == (3, frames_for(3001, 160), 64)
    for b in range(3):
        torch.testing.assert_close(batched[b], _stream(fe, x[b], [161, 7, 1000]), rtol=rtol, atol=0)


def test_flush_starts_a_new_stream():
    fe = MelFrontEnd(dtype=torch.float64)
    x = torch.randn(2000, dtype=torch.float64)
    first = _stream(fe, x, [300])
    assert fe.flush().shape == (0, 64)                 # nothing pushed since
    torch.testing.assert_close(_stream(fe, x, [300]), first, rtol=0, atol=0)


# ---- bad arguments -------------------------------------------------------------

@pytest.mark.parametrize("call, field", [
    (lambda: mel_filters(0, 512, SR, 50.0, 7600.0), "n_bands"),
    (lambda: mel_filters(1.5, 512, SR, 50.0, 7600.0), "n_bands"),
    (lambda: mel_filters(64, 1, SR, 50.0, 7600.0), "n_fft"),
    (lambda: mel_filters(8, 512, 0, 50.0, 7600.0), "sample_rate"),
    (lambda: mel_filters(8, 512, SR, -1.0, 7600.0), "f_min"),
    (lambda: mel_filters(8, 512, SR, math.nan, 7600.0), "f_min"),
    (lambda: mel_filters(8, 512, SR, 100.0, 100.0), "f_max"),
    (lambda: mel_filters(8, 512, SR, 50.0, 9000.0), "f_max"),
    (lambda: mel_centres(0, 50.0, 7600.0), "n_bands"),
    (lambda: mel_centres(8, 500.0, 400.0), "f_max"),
    (lambda: frames_for(-1, 160), "n_samples"),
    (lambda: frames_for(100, 0), "hop"),
    (lambda: MelFrontEnd(sample_rate=0), "sample_rate"),
    (lambda: MelFrontEnd(hop=0), "hop"),
    (lambda: MelFrontEnd(window=1), "window"),
    (lambda: MelFrontEnd(n_fft=256), "n_fft"),
    (lambda: MelFrontEnd(n_bands=0), "n_bands"),
    (lambda: MelFrontEnd(f_min=8000.0), "f_min"),
    (lambda: MelFrontEnd(f_max=9000.0), "f_max"),
    (lambda: MelFrontEnd(dtype=torch.float16), "dtype"),
    (lambda: MelFrontEnd().push(torch.zeros(2, 3, 4)), "samples"),
    (lambda: MelFrontEnd().push(torch.tensor([0.0, math.inf])), "samples"),
    (lambda: MelFrontEnd().power_spectrum(torch.zeros(1, 2, 3)), "signal"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        call()


def test_bad_sample_types_and_batch_changes_raise():
    fe = MelFrontEnd()
    with pytest.raises(TypeError, match="'samples'"):
        fe.push([0.0, 1.0])
    with pytest.raises(TypeError, match="'samples'"):
        fe.push(torch.zeros(10, dtype=torch.complex64))
    fe.push(torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"'samples'.*batch shape \(2,\)"):
        fe.push(torch.zeros(3, 10))


# ---- speed ---------------------------------------------------------------------

@pytest.mark.slow
def test_sixty_seconds_take_well_under_a_third_of_a_second():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(60 * SR)
        best = math.inf
        for _ in range(3):
            fe = MelFrontEnd()
            start = time.perf_counter()
            out = torch.cat([fe.push(x), fe.flush()])
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert out.shape == (6000, 64)
    assert best < 0.3
