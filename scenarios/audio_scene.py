"""A synthetic auditory scene at 16 kHz, rendered chunk by chunk.

The score (:func:`score`) is a list of sound events drawn from a seed: a
sustained drone, tones, chirps, vowel-like formant bursts, rare clicks, rare
novel sounds (inharmonic bells, warbles) and silences that mute everything but
a faint noise floor.  :class:`Scene` renders any sample range of it on demand.

Every waveform is a closed-form function of absolute time (phases included),
and the noise comes in fixed blocks seeded by their index, so a sample's value
does not depend on how the scene is chunked or how long it is: a short scene is
the prefix of a longer one, exactly.
"""

from __future__ import annotations

import math

import torch

from .common import arrivals, generator, uniform

SAMPLE_RATE = 16000
#: Standard deviation of the white noise floor (about -80 dB full scale).
NOISE_FLOOR = 1e-4
#: Kinds of events, in the order annotations list them.
KINDS = ("drone", "tone", "chirp", "vowel", "click", "novel")

# Gaps between events and their durations (seconds), uniform; amplitudes are
# peak amplitudes (full scale 1).  Gaps are jittered, not Poisson, so that
# every 10 s has some of each common kind.
_DRONE_START, _DRONE_F0, _DRONE_AMP = 0.25, 110.0, 0.03
_SILENCE_GAP, _SILENCE_LEN = (4.0, 6.0), (0.6, 1.0)
_TONE_GAP, _TONE_LEN, _TONE_HZ = (0.8, 2.5), (0.2, 1.0), (300.0, 4000.0)
_CHIRP_GAP, _CHIRP_LEN, _CHIRP_HZ = (1.5, 5.0), (0.3, 0.8), (400.0, 3000.0)
_VOWEL_GAP, _VOWEL_LEN, _VOWEL_F0 = (1.5, 4.0), (0.15, 0.4), (100.0, 220.0)
_CLICK_GAP, _CLICK_LEN = (2.0, 5.0), 0.004
_NOVEL_GAP, _NOVEL_LEN = (4.0, 9.0), (0.3, 0.6)
_AMP_DB = (-32.0, -14.0)                # tones, chirps, vowels, novel sounds
_ATTACK, _RELEASE = 0.01, 0.03
#: Formant frequencies and bandwidths (Hz) of five vowels (adult male, after Peterson & Barney).
_VOWELS = {"a": ((730, 1090, 2440), (90, 110, 160)), "e": ((530, 1840, 2480), (60, 100, 140)),
           "i": ((270, 2290, 3010), (60, 90, 150)), "o": ((570, 840, 2410), (70, 80, 150)),
           "u": ((300, 870, 2240), (60, 80, 140))}
#: Partial ratios of an inharmonic bell (a free bar's modes).
_BELL = (1.0, 2.76, 5.40, 8.93)
_NOISE_BLOCK = 4096


def score(duration: float, seed: int) -> list[dict]:
    """The events of one scene: dicts with ``kind``, ``start``, ``end`` and their parameters.

    Silences (kind ``silence``) mute everything; events that would start in
    one, or be cut by one to under 0.1 s, are dropped, and events running into
    one are cut; the drone restarts when a silence ends.  Each kind draws from
    its own generator and the score looks 1 s past ``duration``, so a short
    scene's score is the start of a longer one's.
    """
    horizon = duration + 1.0
    gen = generator(seed, 0)
    silences = [(t, t + uniform(gen, *_SILENCE_LEN)) for t in arrivals(gen, horizon, _SILENCE_GAP) if t > 1.0]
    events = [dict(kind="silence", start=a, end=b) for a, b in silences]
    for a, b in zip([_DRONE_START] + [b for _, b in silences], [a for a, _ in silences] + [math.inf]):
        events.append(dict(kind="drone", start=a, end=b, f0=_DRONE_F0, amp=_DRONE_AMP))
    gen = generator(seed, 1)
    for t in arrivals(gen, horizon, _TONE_GAP):
        events.append(dict(kind="tone", start=t, end=t + uniform(gen, *_TONE_LEN),
                           f0=_log_uniform(gen, *_TONE_HZ), amp=_amp(gen)))
    gen = generator(seed, 2)
    for t in arrivals(gen, horizon, _CHIRP_GAP):
        length, f0, octaves = uniform(gen, *_CHIRP_LEN), _log_uniform(gen, *_CHIRP_HZ), uniform(gen, 1.0, 2.0)
        sign = 1.0 if uniform(gen, 0, 1) < 0.5 or f0 * 2 ** -octaves < 200 else -1.0
        events.append(dict(kind="chirp", start=t, end=t + length, f0=f0, rate=sign * octaves / length,
                           amp=_amp(gen)))
    gen = generator(seed, 3)
    names = sorted(_VOWELS)
    for t in arrivals(gen, horizon, _VOWEL_GAP):
        length, f0 = uniform(gen, *_VOWEL_LEN), uniform(gen, *_VOWEL_F0)
        vowel = names[min(int(uniform(gen, 0, len(names))), len(names) - 1)]
        events.append(dict(kind="vowel", start=t, end=t + length, f0=f0, vowel=vowel, amp=_amp(gen)))
    gen = generator(seed, 4)
    for t in arrivals(gen, horizon, _CLICK_GAP):
        events.append(dict(kind="click", start=t, end=t + _CLICK_LEN, amp=uniform(gen, 0.3, 0.6)))
    gen = generator(seed, 5)
    for t in arrivals(gen, horizon, _NOVEL_GAP):
        length, style = uniform(gen, *_NOVEL_LEN), "bell" if uniform(gen, 0, 1) < 0.5 else "warble"
        events.append(dict(kind="novel", start=t, end=t + length, style=style,
                           f0=_log_uniform(gen, 300.0, 1500.0), amp=_amp(gen)))
    kept = []
    for ev in events:
        if ev["kind"] not in ("silence", "drone"):
            cut = min([a for a, _ in silences if a > ev["start"]], default=math.inf)
            end = min(ev["end"], cut)
            if ev["start"] < 0.1 or any(a <= ev["start"] < b for a, b in silences) \
                    or end - ev["start"] < min(0.1, ev["end"] - ev["start"]):
                continue                                    # in a silence, or cut to a blip
            ev = {**ev, "end": end}
        kept.append(ev)
    return sorted(kept, key=lambda ev: (ev["start"], ev["kind"]))


def onsets(events: list[dict], duration: float) -> list[tuple[float, str]]:
    """``(time, kind)`` of every sound that starts before ``duration`` (silences are not onsets)."""
    return [(ev["start"], ev["kind"]) for ev in events if ev["kind"] != "silence" and ev["start"] < duration]


class Scene:
    """Renders a score's waveform: ``render(s0, s1)`` gives samples ``[s0, s1)`` (float64)."""

    def __init__(self, events: list[dict], seed: int):
        self.events = [ev for ev in events if ev["kind"] != "silence"]
        self.seed = seed

    def render(self, s0: int, s1: int) -> torch.Tensor:
        """Samples ``s0 .. s1 - 1`` of the scene: ``[s1 - s0]``."""
        t = torch.arange(s0, s1, dtype=torch.float64) / SAMPLE_RATE
        out = NOISE_FLOOR * _noise(self.seed, 6, s0, s1)
        t0, t1 = s0 / SAMPLE_RATE, s1 / SAMPLE_RATE
        for ev in self.events:
            if ev["start"] >= t1 or ev["end"] + _RELEASE <= t0:
                continue
            i0 = max(0, math.floor(ev["start"] * SAMPLE_RATE) - s0)
            i1 = min(s1 - s0, math.ceil((ev["end"] + _RELEASE) * SAMPLE_RATE) - s0 + 1) \
                if math.isfinite(ev["end"]) else s1 - s0
            if i1 > i0:
                out[i0:i1] += _waveform(ev, t[i0:i1], self.seed, s0 + i0)
        return out


# ---- waveforms ------------------------------------------------------------------

def _waveform(ev: dict, t: torch.Tensor, seed: int, first: int) -> torch.Tensor:
    """One event on the times ``t`` (absolute seconds; ``first`` is ``t[0]``'s sample index)."""
    kind, s = ev["kind"], t - ev["start"]
    if kind == "click":
        burst = _noise(seed, 7, first, first + t.numel()) * torch.exp(-s / 0.001)
        return ev["amp"] * burst * (s >= 0) * (t < ev["end"])
    env = _envelope(t, ev["start"], ev["end"])
    if kind == "drone":
        wave = sum(torch.sin(2 * math.pi * h * ev["f0"] * t) / h for h in range(1, 7)) / 2.45
        env = env * (1 + 0.15 * torch.sin(2 * math.pi * 0.25 * t))
    elif kind == "tone":
        wave = torch.sin(2 * math.pi * ev["f0"] * s) + 0.2 * torch.sin(4 * math.pi * ev["f0"] * s)
    elif kind == "chirp":            # exponential sweep: f(s) = f0 2**(rate s)
        k = ev["rate"] * math.log(2)
        wave = torch.sin(2 * math.pi * ev["f0"] * torch.expm1(k * s.clamp(min=0)) / k)
    elif kind == "vowel":
        wave = _vowel(ev, s)
    elif ev["style"] == "bell":
        wave = sum(torch.sin(2 * math.pi * r * ev["f0"] * s) * torch.exp(-s.clamp(min=0) * r / 0.4) / r
                   for r in _BELL)
    else:                            # warble: 8 Hz frequency modulation of +-25%
        wave = torch.sin(2 * math.pi * ev["f0"] * s + 0.25 * ev["f0"] / 8.0 * torch.sin(2 * math.pi * 8.0 * s))
    return ev["amp"] * env * wave


def _vowel(ev: dict, s: torch.Tensor) -> torch.Tensor:
    """A glottal harmonic series (``1/h``) shaped by three formant resonances, normalised to peak ~1."""
    freqs, widths = _VOWELS[ev["vowel"]]
    f0 = ev["f0"]
    harmonics = torch.arange(1, int(5000 / f0) + 1, dtype=torch.float64)
    f = harmonics * f0
    gain = sum(1 / torch.sqrt(1 + ((f - F) / B) ** 2) for F, B in zip(freqs, widths)) / harmonics
    gain = gain / gain.norm()
    return (gain[:, None] * torch.sin(2 * math.pi * f[:, None] * s[None, :])).sum(0)


def _envelope(t: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """Raised-cosine attack from ``start`` and release after ``end``."""
    rise = ((t - start) / _ATTACK).clamp(0, 1)
    fall = ((t - end) / _RELEASE).clamp(0, 1) if math.isfinite(end) else torch.zeros_like(t)
    return 0.25 * (1 - torch.cos(math.pi * rise)) * (1 + torch.cos(math.pi * fall))


def _noise(seed: int, stream: int, s0: int, s1: int) -> torch.Tensor:
    """Unit white noise for samples ``[s0, s1)``, from fixed blocks seeded by their index."""
    blocks = []
    for j in range(s0 // _NOISE_BLOCK, (s1 - 1) // _NOISE_BLOCK + 1):
        gen = generator(seed * 100003 + j, stream)
        blocks.append(torch.randn(_NOISE_BLOCK, generator=gen, dtype=torch.float64))
    first = s0 // _NOISE_BLOCK * _NOISE_BLOCK
    return torch.cat(blocks)[s0 - first:s1 - first] if blocks else torch.zeros(0, dtype=torch.float64)


def _log_uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(uniform(gen, math.log(lo), math.log(hi)))


def _amp(gen: torch.Generator) -> float:
    return 10 ** (uniform(gen, *_AMP_DB) / 20)
