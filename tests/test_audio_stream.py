"""audio_stream: the scene matches its annotations, streams chunk by chunk, reads WAV files and
meets bad input with the stated policies; on defaults the gates follow the onsets."""

import math
import struct
import wave

import numpy as np
import pytest
import torch

import rtnclock
from rtnclock.analysis import by_stream, gate_open_around
from scenarios import audio_scene, audio_stream
from scenarios.filterbank import MelFrontEnd

CFG = audio_stream.default_config()


def _power(samples: torch.Tensor) -> torch.Tensor:
    """Mel band power of a 16 kHz waveform with the scenario's front end: ``[F, n_bands]``."""
    front = MelFrontEnd(n_bands=64, hop=audio_stream.HOP, window=audio_stream.WINDOW, n_fft=audio_stream.N_FFT,
                        f_min=audio_stream.F_MIN, dtype=torch.float64)
    return torch.cat([front.push(samples.double()), front.flush()])


def test_frames_shape_range_and_prefix():
    long = audio_stream.make_stream(CFG, duration=4.0, seed=5)
    short = audio_stream.make_stream(CFG, duration=2.0, seed=5)
    assert long.frames.shape == (1, 401, 16, 4) and long.frames.dtype == torch.float32
    assert short.dt == long.dt == 0.01
    x = long.frames
    assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 2.2
    # Frames do not depend on the duration asked for: a short stream is a long one's start.
    torch.testing.assert_close(short.frames, long.frames[:, :201], atol=0, rtol=0)
    # Streams of a batch are the single streams of seeds seed + b.
    pair = audio_stream.make_stream(CFG, duration=2.0, seed=4, batch=2)
    torch.testing.assert_close(pair.frames[1:], short.frames, atol=0, rtol=0)
    assert set(pair.annotations["stream"]) == {0, 1}


def test_scene_samples_do_not_depend_on_chunking():
    """Closed-form phases and block-seeded noise: any chunking gives the same
    samples (to the last-bit rounding of vectorised sin)."""
    scene = audio_scene.Scene(audio_scene.score(3.0, 2), 2)
    whole = scene.render(0, 48000)
    parts = torch.cat([scene.render(a, min(a + 1237, 48000)) for a in range(0, 48000, 1237)])
    torch.testing.assert_close(parts, whole, atol=1e-15, rtol=0)


def test_every_annotated_tone_starts_in_its_band_at_its_time():
    """Tone onsets in the annotations are where the power of the band holding
    the tone's frequency rises by the tone's power within 50 ms; silences are at the noise floor."""
    duration, seed = 12.0, 1
    events = audio_scene.score(duration, seed)
    scene = audio_scene.Scene(events, seed)
    samples = scene.render(0, int(duration * audio_scene.SAMPLE_RATE) + 1)
    power = _power(samples)
    front = MelFrontEnd(n_bands=64)
    tones = [ev for ev in events if ev["kind"] == "tone" and ev["start"] < duration - 0.2]
    assert len(tones) >= 4
    for ev in tones:
        band = int(torch.argmin((front.centres - ev["f0"]).abs()))
        near = slice(max(band - 3, 0), band + 4)
        before = float(power[round(ev["start"] * 100) - 3, near].sum())
        after = float(power[round(ev["start"] * 100) + 5, near].sum())
        # A sine of amplitude A has power A**2/2, and the triangles around its
        # frequency sum to 1: the bands near it gain about that much (less the
        # drone's +-30% tremolo in the same bands).
        assert after - before > 0.2 * ev["amp"] ** 2, (ev, before, after)
    notes = audio_stream.make_stream(CFG, duration=duration, seed=seed).annotations
    assert sorted(t for t, k in zip(notes["time"], notes["kind"]) if k == "tone") == \
        sorted(ev["start"] for ev in events if ev["kind"] == "tone" and ev["start"] < duration)
    for ev in events:
        if ev["kind"] == "silence" and ev["end"] < duration:
            a, b = round(ev["start"] * 16000) + 800, round(ev["end"] * 16000) - 800
            rms = float(samples[a:b].pow(2).mean().sqrt())
            assert rms == pytest.approx(audio_scene.NOISE_FLOOR, rel=0.1)


def _envelope_np(t, start, end):
    """The attack/release envelope written out directly (numpy, every sample)."""
    rise = np.clip((t - start) / audio_scene._ATTACK, 0, 1)
    fall = np.clip((t - end) / audio_scene._RELEASE, 0, 1)
    return 0.25 * (1 - np.cos(np.pi * rise)) * (1 + np.cos(np.pi * fall))


def test_envelope_takes_cosines_only_where_they_differ_from_0_and_1():
    """The windowed envelope equals the formula at every sample: ramps inside the range,
    straddling either edge, outside it, and endless sounds; columns and single floats."""
    g = torch.Generator().manual_seed(0)
    for s0, n in ((0, 4000), (52_000, 4000), (7, 130), (100, 1)):
        t = torch.arange(s0, s0 + n, dtype=torch.float64) / audio_scene.SAMPLE_RATE
        t0, t1 = float(t[0]), float(t[-1])
        starts = torch.rand(40, generator=g, dtype=torch.float64) * (t1 - t0 + 0.1) + t0 - 0.05
        ends = starts + torch.rand(40, generator=g, dtype=torch.float64) * 0.3
        ends[::5] = math.inf
        got = audio_scene._envelope(t, starts[:, None], ends[:, None])
        want = _envelope_np(t.numpy(), starts[:, None].numpy(), ends[:, None].numpy())
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-15)
        one = audio_scene._envelope(t, float(starts[1]), float(ends[1]))
        assert one.shape == (n,) and torch.equal(one, got[1])


def test_sounds_match_their_closed_forms(monkeypatch):
    """A drone, a tone and a chirp, rendered among other scenes and across row groups,
    are their closed forms (numpy) on top of the scene's noise floor."""
    sr = audio_scene.SAMPLE_RATE
    score = [dict(kind="drone", start=0.25, end=math.inf, f0=110.0, amp=0.03),
             dict(kind="tone", start=0.31, end=0.52, f0=1234.5, amp=0.05),
             dict(kind="chirp", start=0.4, end=0.7, f0=800.0, rate=-3.0, amp=0.04)]
    mine = audio_scene.Scene(score, 11)
    others = [audio_scene.Scene(audio_scene.score(1.0, s), s) for s in range(4)]
    s0, s1 = 4000, 12000
    t = np.arange(s0, s1) / sr
    env = [_envelope_np(t, ev["start"], ev["end"]) for ev in score]
    drone = sum(np.sin(2 * np.pi * h * 110.0 * t) / h for h in range(1, 7)) / 2.45
    drone = 0.03 * env[0] * (1 + 0.15 * np.sin(2 * np.pi * 0.25 * t)) * drone
    s = t - 0.31
    tone = 0.05 * env[1] * (np.sin(2 * np.pi * 1234.5 * s) + 0.2 * np.sin(4 * np.pi * 1234.5 * s))
    k = -3.0 * math.log(2)
    s = np.maximum(t - 0.4, 0)
    chirp = 0.04 * env[2] * np.sin(2 * np.pi * 800.0 * np.expm1(k * s) / k)
    floor = audio_scene.NOISE_FLOOR * audio_scene._noise(11, 6, s0, s1).numpy()
    for rows in (2, 256):
        monkeypatch.setattr(audio_scene, "ROWS", rows)
        got = audio_scene.render(others[:3] + [mine] + others[3:], s0, s1)[3].numpy()
        np.testing.assert_allclose(got - floor, drone + tone + chirp, rtol=0, atol=1e-12)


def test_scenes_rendered_together_are_each_scene_alone(monkeypatch):
    """Batched rendering (also split into row groups) gives every scene its own render,
    to the last bit; the front end's row groups likewise give each stream its own frames."""
    monkeypatch.setattr(audio_scene, "ROWS", 3)
    scenes = [audio_scene.Scene(audio_scene.score(4.0, s), s) for s in range(7)]
    for s0 in (0, 4000, 17_000, 44_000):
        together = audio_scene.render(scenes, s0, s0 + 4000)
        for b, sc in enumerate(scenes):
            alone = audio_scene.Scene(audio_scene.score(4.0, b), b).render(s0, s0 + 4000)
            assert torch.equal(together[b], alone), (s0, b)
    monkeypatch.setattr(audio_stream, "ROWS", 2)
    five = audio_stream.make_stream(CFG, duration=1.0, seed=3, batch=5)
    for b in (0, 2, 4):
        assert torch.equal(five.frames[b], audio_stream.make_stream(CFG, duration=1.0, seed=3 + b).frames[0])


def test_kinds_are_all_present_over_a_minute():
    kinds = {ev["kind"] for ev in audio_scene.score(60.0, 0)}
    assert kinds == set(audio_scene.KINDS) | {"silence"}


def test_bands_map_tonotopically_onto_leaves():
    """A 1 kHz tone lights the leaf whose bands hold 1 kHz, and only leaves around it."""
    t = torch.arange(16000, dtype=torch.float64) / 16000
    feats = audio_stream.Features(CFG, 1, lambda a, b: (0.1 * torch.sin(2 * math.pi * 1000 * t[a:b]))[None]
                                  if b <= 16000 else torch.zeros(1, b - a), n_samples=16000)
    level = feats.frames(0, 50)[0].mean(0)                        # [16 leaves, 4 bands]
    centres = MelFrontEnd(n_bands=64).centres.reshape(16, 4)
    leaf = int(torch.nonzero((centres[:, 0] <= 1000) & (centres[:, -1] >= 1000) |
                             (centres[:, 0] > 1000)).flatten()[0])
    per_leaf = level.sum(1)
    loudest = int(per_leaf.argmax())
    assert abs(loudest - leaf) <= 1
    far = [i for i in range(16) if abs(i - loudest) >= 3]
    assert float(per_leaf[loudest] - per_leaf[far].max()) > 0.3


def _write_int16(path, x: np.ndarray, rate: int, channels: int = 1):
    q = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(q.tobytes())


def _write_float32(path, x: np.ndarray, rate: int):
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _tone_file(rate: int, seconds: float = 1.5, onset: float = 0.5) -> np.ndarray:
    """A 1 kHz tone from ``onset`` on, with a 10 ms raised-cosine attack (no broadband click)."""
    t = np.arange(int(rate * seconds)) / rate
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / 0.01, 0, 1))
    return 0.2 * np.sin(2 * np.pi * 1000 * t) * ramp


@pytest.mark.parametrize("rate", [16000, 44100])
def test_wav_input_streams_the_file_at_16k(tmp_path, rate):
    """A stereo 16-bit file: its length sets the duration, its tone lands in
    the band and at the frame the 16 kHz original puts it."""
    x = _tone_file(rate)
    path = tmp_path / "tone.wav"
    _write_int16(path, np.repeat(x[:, None], 2, axis=1).reshape(-1), rate, channels=2)
    stream = audio_stream.make_stream(CFG, input=path)
    assert stream.duration == pytest.approx(1.49)         # frames centred up to the last sample
    assert stream.name == str(path) and stream.annotations["kind"] == []
    reference = audio_stream.Features(CFG, 1, lambda a, b: torch.from_numpy(_tone_file(16000)[a:b])[None]
                                      if b <= 24000 else torch.zeros(1, b - a), n_samples=24000)
    ref = reference.frames(0, stream.n_frames)
    got = stream.frames
    # 16-bit quantisation and the resampler's 0.92 Nyquist cutoff move band powers
    # by well under a percent; the features are log power.
    torch.testing.assert_close(got, ref, atol=0.02, rtol=0.02)
    onset = int(got[0, :140].sum((1, 2)).argmax())         # the file's abrupt end is a click
    assert 48 <= onset <= 53


def test_wav_input_bad_samples_and_clipping(tmp_path):
    x = _tone_file(16000).astype(np.float32)
    x[8000] = np.nan                      # t = 0.5 s: in the 25 ms windows of frames 49, 50, 51
    path = tmp_path / "nan.wav"
    _write_float32(path, x, 16000)
    stream = audio_stream.make_stream(CFG, input=path)
    stream.value(0.2)                       # the first chunk (frames 0..24) is fine
    with pytest.raises(rtnclock.StreamError, match=r"nan.wav: frame 49 \(t=0.49 s\)"):
        stream.value(0.6)
    zeroed = audio_stream.make_stream(CFG, input=path, nan_policy="zero")
    assert bool(torch.isfinite(zeroed.frames).all()) and zeroed.bad_frames == [49, 50, 51]

    y = np.clip(6 * _tone_file(16000), -1, 1)
    clipped = tmp_path / "loud.wav"
    _write_int16(clipped, y, 16000)
    with pytest.warns(UserWarning, match=r"loud.wav: .*% of samples are clipped .*first at 0.50"):
        stream = audio_stream.make_stream(CFG, input=clipped)
    assert set(stream.annotations["kind"]) == {"clipped"} and stream.annotations["time"][0] >= 0.5


def test_wav_input_bad_requests(tmp_path):
    path = tmp_path / "tone.wav"
    _write_int16(path, _tone_file(16000), 16000)
    with pytest.raises(rtnclock.ConfigError, match="'batch': got 2"):
        audio_stream.make_stream(CFG, input=path, batch=2)
    with pytest.raises(rtnclock.StreamError, match=r"tone.wav: holds 1.500 s of audio \(frames to 1.49 s\); --duration 3 s"):
        audio_stream.make_stream(CFG, input=path, duration=3.0)
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(rtnclock.StreamError, match="text.wav"):
        audio_stream.make_stream(CFG, input=tmp_path / "text.wav")


def test_gates_follow_onsets_on_defaults():
    """The README's measurement on seed 0: leaf and level-1 gates are open far
    more often in the 0.3 s after onsets than in steady stretches."""
    torch.set_num_threads(1)
    stream = audio_stream.make_stream(CFG, duration=10.0, seed=0)
    notes = stream.annotations
    run = rtnclock.simulate(CFG, stream, recorder=rtnclock.MemoryRecorder())
    onsets = by_stream(notes["time"], notes["stream"], 1)
    changes = [np.concatenate([onsets[0], [e for e in notes["end"] if e < 10.0]])]
    for k in (0, 1):
        traj = run.trajectory(k)
        share = gate_open_around(traj["t"].numpy(), traj["gate"].numpy(), CFG.gate_theta, onsets, changes)
        assert share["steady_ticks"] > 50 and share["onset_ticks"] > 50
        assert share["onset"] > 0.1 and share["onset"] > 4 * share["steady"], (k, share)
