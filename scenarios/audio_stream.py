"""audio_stream: a 16 kHz auditory scene (or the user's WAV) through a streaming mel front end.

Sound.  By default each stream is a synthetic scene (:mod:`.audio_scene`): a
drone, tones, chirps, vowel-like formant bursts, silences, rare clicks and
rare novel sounds, with every onset annotated.  With ``input=FILE.wav`` the
stream is the file, mixed to mono and resampled to 16 kHz chunk by chunk.

Front end.  A streaming mel filterbank (:class:`.filterbank.MelFrontEnd`, 25 ms
Hann window, 10 ms hop, 100 frames/s) with ``n_leaves * input_dim`` bands from
50 Hz to 7.6 kHz, mapped tonotopically onto the leaves: leaf ``i`` hears bands
``i*c .. i*c + c - 1`` (``c = input_dim``), low frequencies at leaf 0.

Features.  Band power ``P`` is log-compressed to ``L = log10(1 + P/P_FLOOR) /
DECADES`` (0 to 0.03 at the noise floor, about 1 for the loudest sounds), then
adapted (:class:`.common.OnsetAdaptation`: ``x = SUSTAIN * L + ONSET *
softplus(L - L_adapted)``, ``L_adapted`` following ``L`` over ``ADAPT_TAU``).
A steady sound settles to a low level and an onset overshoots; values stay in
about ``[0, 2]``, so the surprise, and the gates, follow onsets.

Chunks.  Frames are made a chunk (0.25 s) at a time, only when the simulation
reaches them; the front end and the adaptation carry their state across
chunks, and nothing looks past the chunk being made.

Bad input (``--input``).  Unreadable files raise a ``StreamError`` naming the
file.  NaN/Inf samples make the frames whose windows hold them bad: under the
stream's ``nan_policy`` (``error``, the default) the run stops at the first
such frame with an error naming the file and the frame, after writing what
it had; under ``zero`` the samples are zeroed and each frame is logged as a
``bad_frame`` event.  Clipped audio runs as it is: the clipped stretches are
annotated (kind ``clipped``) and :func:`warnings` names the file and the
fraction clipped.
"""

from __future__ import annotations

import bisect
import math
import warnings

import torch

import rtnclock

from . import audio_scene
from .common import ROWS, OnsetAdaptation, annotation_table, check_args, chunked_stream, frame_count
from .filterbank import MelFrontEnd, frames_for

DESCRIPTION = ("16 kHz auditory scene (drone, tones, chirps, vowels, clicks, novel sounds, silences) "
               "or --input FILE.wav, through a streaming mel filterbank")

#: Frames per second (10 ms hop at 16 kHz).
FRAME_RATE = 100.0
#: Seconds of the synthetic scene when the caller does not say.
DEFAULT_DURATION = 10.0
SAMPLE_RATE = audio_scene.SAMPLE_RATE
HOP, WINDOW, N_FFT, F_MIN = 160, 400, 512, 50.0
#: Band power mapped to ``L = 0``: about the noise floor's power in a band.
P_FLOOR = 1e-8
#: Decades of power above ``P_FLOOR`` that map to ``L = 1``.
DECADES = 6.0
#: Weight of the sustained (adapted-away) part and of the onset overshoot.
SUSTAIN, ONSET = 0.1, 2.0
#: Adaptation time constant of the onset detector (seconds).
ADAPT_TAU = 0.15
#: Samples pushed into the front end at a time (0.25 s).
BLOCK = 4000
#: A sample at or beyond this magnitude counts as clipped.
CLIP_LEVEL = 0.999


def default_config() -> rtnclock.Config:
    """The scenario's hierarchy: 16 tonotopic leaves of 4 mel bands, three levels.

    Gate law ``g = sigmoid(a*e + beta*demand + b_g)``: the surprise ``e`` of a
    block is the squared error of a window mean over its receptive field, so a
    local onset's surprise shrinks about ``b**2``-fold per level on its way up
    (the root sees the mean of all bands); ``gate_a`` grows with the level to
    compensate, and the bias keeps steady stretches closed.  Being per level,
    ``gate_a`` must be changed along with ``K``.

    Solver: classical RK4 with one step per leaf period (``h = tau_0``).  The
    gates are thresholds, so a run is sensitive to rounding: float32 and
    float64 runs of the same scene already disagree on ~15% of leaf gates,
    far more than the solver error.  RK4 at this step gives the same event
    counts as dopri5 at ``rtol=1e-4`` to within 1% in half the wall time;
    ``--set method=dopri5`` restores the adaptive solver.
    """
    return rtnclock.Config(
        K=2, branching=4, dims=16, input_dim=4, tau0=0.01, ratio=4.0, dtype="float32",
        method="rk4", step_size=0.01, rtol=1e-4, atol=1e-6,
        gate_a=(8.0, 30.0, 100.0), gate_beta=1.0, gate_bias=-1.5, gate_theta=0.5,
        escalation_threshold=1.0,
    )


def make_stream(config: rtnclock.Config, *, duration: float | None = None, seed: int = 0, batch: int = 1,
                input=None, nan_policy: str = "error") -> rtnclock.Stream:
    """The scenario's stream for ``config``'s leaves and channels, made chunk by chunk.

    Args:
        config: supplies ``b**K`` leaves, ``input_dim`` channels per leaf and the dtype.
        duration: seconds (default :data:`DEFAULT_DURATION`, or the whole file).
        seed: scene of stream 0; stream ``b`` uses ``seed + b`` (ignored with ``input``).
        batch: independent streams ``B`` (1 with ``input``).
        input: a WAV file to stream instead of the synthetic scene.
        nan_policy: what non-finite input does (see :class:`rtnclock.Stream`).

    Returns:
        A :class:`rtnclock.Stream` of ``[B, F, n_leaves, input_dim]`` frames at 100 per
        second, annotated with the scene's onsets (``time``, ``kind``, ``stream``, ``end``).

    Raises:
        rtnclock.ConfigError: a bad duration, seed or batch, or batch > 1 with ``input``.
        rtnclock.StreamError: the file cannot be read as audio, or is shorter than ``duration``.
    """
    if input is not None:
        return _file_stream(config, input, duration, batch, nan_policy)
    duration = DEFAULT_DURATION if duration is None else duration
    check_args(duration, seed, batch)
    n_frames = frame_count(duration, FRAME_RATE)
    scores = [audio_scene.score(duration, seed + b) for b in range(batch)]
    scenes = [audio_scene.Scene(events, seed + b) for b, events in enumerate(scores)]
    rows = [(t, kind, b) for b, events in enumerate(scores) for t, kind in audio_scene.onsets(events, duration)]
    ends = [ev["end"] for events in scores for ev in events
            if ev["kind"] != "silence" and ev["start"] < duration]
    notes = annotation_table(rows, end=[min(e, 1e9) for e in ends])
    features = Features(config, batch, lambda s0, s1: audio_scene.render(scenes, s0, s1))
    return chunked_stream(features.frames, n_frames=n_frames, frame_rate=FRAME_RATE, config=config,
                          batch=batch, name=f"audio_stream seed {seed}", annotations=notes)


class Features:
    """Waveform to adapted mel features, a range of frames at a time, in order.

    Streams go through the front end and the adaptation :data:`.common.ROWS`
    at a time (each group with its own state), for the reason given there;
    every stream's frames are the same either way.

    Args:
        config: leaves, channels and dtype of the frames.
        batch: streams ``B``.
        samples: ``samples(s0, s1) -> [B, s1 - s0]`` waveform at 16 kHz (called in order).
        n_samples: length of the waveform (None: unbounded); past it the front end pads zeros.
    """

    def __init__(self, config: rtnclock.Config, batch: int, samples, n_samples: int | None = None):
        self.n_leaves, self.c = config.blocks(0), config.input_dim
        self.groups = [(slice(i, min(i + ROWS, batch)),
                        MelFrontEnd(sample_rate=SAMPLE_RATE, n_bands=self.n_leaves * self.c, hop=HOP,
                                    window=WINDOW, n_fft=N_FFT, f_min=F_MIN, dtype=torch.float32),
                        OnsetAdaptation(sustain=SUSTAIN, onset=ONSET, tau=ADAPT_TAU, frame_rate=FRAME_RATE))
                       for i in range(0, batch, ROWS)]
        self.batch, self.samples, self.n_samples = batch, samples, n_samples
        self.pushed, self.emitted = 0, 0
        self.ready: list[list[torch.Tensor]] = [[] for _ in self.groups]   # per group: [b, f, n_bands] not yet returned
        self.dtype = getattr(torch, config.dtype)

    def frames(self, i0: int, i1: int) -> torch.Tensor:
        """Frames ``[i0, i1)``: ``[B, i1 - i0, n_leaves, input_dim]`` (ranges must come in order)."""
        while self.emitted < i1:
            if self.n_samples is not None and self.pushed >= self.n_samples:
                self._take([front.flush() for _, front, _ in self.groups])
                if self.emitted < i1:
                    raise rtnclock.StreamError(f"audio ended at frame {self.emitted}; frame {i1 - 1} was asked for")
                break
            # Fixed blocks, whatever the frames asked for: vectorised maths rounds
            # differently at different lengths, and the frames must not depend on
            # the chunking or the duration (a short stream is a long one's start).
            s1 = self.pushed + BLOCK
            if self.n_samples is not None:
                s1 = min(s1, self.n_samples)
            x = self.samples(self.pushed, s1).to(torch.float32)
            self._take([front.push(x[rows]) for rows, front, _ in self.groups])
            self.pushed = s1
        out = []
        for g, (_, _, adapt) in enumerate(self.groups):
            power = torch.cat(self.ready[g], dim=1)
            self.ready[g] = [power[:, i1 - i0:]]
            # Onset-emphasising features from the log power (the adaptation's state carries over).
            out.append(adapt.frames(torch.log10(1 + power[:, :i1 - i0].double() / P_FLOOR) / DECADES, dim=1))
        out = out[0] if len(out) == 1 else torch.cat(out)
        return out.reshape(self.batch, i1 - i0, self.n_leaves, self.c).to(self.dtype)

    def _take(self, powers: list[torch.Tensor]) -> None:
        for ready, (rows, _, _), power in zip(self.ready, self.groups, powers):
            ready.append(power.reshape(rows.stop - rows.start, -1, power.shape[-1]))
        self.emitted += powers[0].shape[-2]


# ---- WAV input ------------------------------------------------------------------

def _file_stream(config, path, duration, batch, nan_policy) -> rtnclock.Stream:
    from .resampler import Resampler
    from .wav import read_wav

    if batch != 1:
        raise rtnclock.ConfigError("batch", batch, "1 with --input (one file is one stream)")
    audio = read_wav(path)
    x = audio.samples.double()
    scale = SAMPLE_RATE / audio.sample_rate
    n_samples = math.ceil(x.numel() * scale)                 # resampled length
    # The last frame is the one centred at or before the last sample.
    length = (frames_for(n_samples, HOP) - 1) / FRAME_RATE
    if length <= 0:
        raise rtnclock.StreamError(f"{audio.path}: {1000 * x.numel() / audio.sample_rate:.1f} ms of audio is "
                                   "shorter than two frames")
    if duration is None:
        duration = length
    check_args(duration, 0, 1)
    if duration > length + 1e-9:
        raise rtnclock.StreamError(f"{audio.path}: holds {x.numel() / audio.sample_rate:.3f} s of audio (frames to "
                                   f"{length:.2f} s); --duration {duration:g} s is longer")
    n_frames = frame_count(duration, FRAME_RATE)
    bad = ~torch.isfinite(x)
    bad_frames = _frames_touching(bad.nonzero().flatten() / audio.sample_rate, n_frames)
    x = torch.where(bad, torch.zeros((), dtype=x.dtype), x)
    clipped = x.abs() >= CLIP_LEVEL
    rows, ends = [], []
    for a, b in _runs(clipped.nonzero().flatten()):
        if a / audio.sample_rate < duration:
            rows.append((a / audio.sample_rate, "clipped", 0))
            ends.append((b + 1) / audio.sample_rate)
    if audio.clipped_fraction > 0:
        warnings.warn(f"{audio.path}: {100 * audio.clipped_fraction:.3g}% of samples are clipped at full scale "
                      f"(first at {rows[0][0] if rows else 0:.3f} s); running on the clipped audio",
                      stacklevel=2)
    resampler = None if audio.sample_rate == SAMPLE_RATE else Resampler(audio.sample_rate, SAMPLE_RATE)
    source = _Resampled(x, resampler)
    features = Features(config, 1, source.samples, n_samples)

    def frames(i0: int, i1: int) -> torch.Tensor:
        out = features.frames(i0, i1)
        hit = [f - i0 for f in bad_frames[bisect.bisect_left(bad_frames, i0):bisect.bisect_left(bad_frames, i1)]]
        if hit:
            out[:, hit] = float("nan")
        return out

    return chunked_stream(frames, n_frames=n_frames, frame_rate=FRAME_RATE, config=config, batch=1,
                          name=str(audio.path), annotations=annotation_table(rows, end=ends),
                          nan_policy=nan_policy)


class _Resampled:
    """The file's samples at 16 kHz, resampled as they are asked for (in order)."""

    def __init__(self, x: torch.Tensor, resampler):
        self.x, self.resampler = x, resampler
        self.fed, self.done, self.out = 0, False, torch.zeros(0, dtype=torch.float64)

    def samples(self, s0: int, s1: int) -> torch.Tensor:
        """Samples ``[s0, s1)`` at 16 kHz: ``[1, s1 - s0]`` (zeros past the end)."""
        if self.resampler is None:
            got = self.x[s0:s1]
        else:
            while self.out.numel() < s1 - s0 and not self.done:
                if self.fed < self.x.numel():
                    step = 4096
                    self.out = torch.cat([self.out, self.resampler.push(self.x[self.fed:self.fed + step])])
                    self.fed += step
                else:
                    self.out, self.done = torch.cat([self.out, self.resampler.flush()]), True
            got, self.out = self.out[:s1 - s0], self.out[s1 - s0:]
        return torch.nn.functional.pad(got, (0, s1 - s0 - got.numel()))[None]


def _frames_touching(times: torch.Tensor, n_frames: int) -> list[int]:
    """Frames whose analysis window (plus the resampler's reach) holds one of ``times``."""
    reach = (WINDOW / 2 + 40) / SAMPLE_RATE
    # Each time marks a range of frames: +1 at its first, -1 past its last,
    # and a running sum (vectorised: a corrupt file may hold millions of them).
    lo = torch.ceil((times - reach) * FRAME_RATE).long().clamp(0, n_frames)
    hi = torch.floor((times + reach) * FRAME_RATE).long().clamp(-1, n_frames - 1) + 1
    mark = torch.zeros(n_frames + 1, dtype=torch.long)
    mark.index_add_(0, lo, torch.ones_like(lo))
    mark.index_add_(0, hi, -torch.ones_like(hi))
    return (mark.cumsum(0)[:n_frames] > 0).nonzero().flatten().tolist()


def _runs(indices: torch.Tensor) -> list[tuple[int, int]]:
    """Consecutive runs ``(first, last)`` of sorted indices ``[n]``."""
    if indices.numel() == 0:
        return []
    breaks = (indices.diff() != 1).nonzero().flatten()
    firsts = torch.cat([indices[:1], indices[breaks + 1]])
    lasts = torch.cat([indices[breaks], indices[-1:]])
    return list(zip(firsts.tolist(), lasts.tolist()))
