"""A synthetic auditory scene at 16 kHz, rendered chunk by chunk.

The score (:func:`score`) is a list of sound events drawn from a seed: a
sustained drone, tones, chirps, vowel-like formant bursts, rare clicks, rare
novel sounds (inharmonic bells, warbles) and silences that mute everything but
a faint noise floor.  :class:`Scene` renders any sample range of it on demand,
and :func:`render` the same range of many scenes at once.

Every waveform is a closed-form function of absolute time (phases included),
and the noise comes in fixed blocks seeded by their index, so a sample's value
does not depend on how the scene is chunked or how long it is: a short scene is
the prefix of a longer one, exactly.
"""

from __future__ import annotations

import bisect
import functools
import math

import torch

from .common import ROWS, arrivals, generator, uniform

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
        self._starts = [ev["start"] for ev in self.events]           # ascending (the score is sorted)
        self._floor: dict = {}                  # the last noise-floor block drawn (see _noise)

    def render(self, s0: int, s1: int) -> torch.Tensor:
        """Samples ``s0 .. s1 - 1`` of the scene: ``[s1 - s0]``."""
        return render([self], s0, s1)[0]

    def sounding(self, s0: int, s1: int) -> list[tuple[dict, int, int]]:
        """Events heard in samples ``[s0, s1)``, in score order: ``(event, i0, i1)``, their span in the range."""
        t0, t1, n = s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, s1 - s0
        out = []
        for ev in self.events[:bisect.bisect_left(self._starts, t1)]:
            if ev["end"] + _RELEASE <= t0:
                continue
            i0 = max(0, math.floor(ev["start"] * SAMPLE_RATE) - s0)
            i1 = min(n, math.ceil((ev["end"] + _RELEASE) * SAMPLE_RATE) - s0 + 1) \
                if math.isfinite(ev["end"]) else n
            if i1 > i0:
                out.append((ev, i0, i1))
        return out


def render(scenes: list[Scene], s0: int, s1: int) -> torch.Tensor:
    """Samples ``s0 .. s1 - 1`` of each scene: ``[len(scenes), s1 - s0]``.

    Row ``b`` is what ``scenes[b]`` renders alone, bit for bit: each scene's
    sounds are added to its noise floor one at a time in score order, so no
    scene's samples depend on the others.  The work is batched across scenes:
    the envelopes of the k-th sounds of every scene are one computation per
    kind, the drone's waveform is computed once (it is the same in every
    scene), and tones, chirps and drones are one tensor expression per kind
    over the whole range (a sound is exactly zero outside its span).  The
    rarer kinds (vowels, novel sounds, clicks) are rendered one by one over
    their span only, vowels being the costliest per sample.  Scenes go
    :data:`.common.ROWS` at a time.
    """
    if len(scenes) > ROWS:
        return torch.cat([render(scenes[i:i + ROWS], s0, s1) for i in range(0, len(scenes), ROWS)])
    t = torch.arange(s0, s1, dtype=torch.float64) / SAMPLE_RATE
    out = torch.stack([NOISE_FLOOR * _noise(sc.seed, 6, s0, s1, sc._floor) for sc in scenes])
    heard = [(b, rank, ev, i0, i1) for b, sc in enumerate(scenes)
             for rank, (ev, i0, i1) in enumerate(sc.sounding(s0, s1))]
    # The k-th sound of every scene in one pass per kind (one scene per row), k in
    # score order; ``index_add_`` of distinct rows is the plain addition.
    groups: dict[tuple[int, str], list] = {}
    for h in heard:
        groups.setdefault((h[1], h[2]["kind"]), []).append(h)
    for (_, kind), hs in sorted(groups.items()):
        events = [h[2] for h in hs]
        env = _envelope(t, _column(events, "start"), _column(events, "end"))
        if kind in _BATCHED:
            out.index_add_(0, torch.tensor([h[0] for h in hs]), _BATCHED[kind](events, t, env))
            continue
        for (b, _, ev, i0, i1), e in zip(hs, env):
            out[b, i0:i1] += _waveform(ev, t[i0:i1], e[i0:i1], scenes[b].seed, s0 + i0)
    return out


# ---- waveforms ------------------------------------------------------------------

def _column(events: list[dict], key: str) -> torch.Tensor:
    """``[E, 1]`` float64 column of one parameter of ``events``."""
    return torch.tensor([ev[key] for ev in events], dtype=torch.float64)[:, None]


def _drones(events: list[dict], t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """Drones on the times ``t`` with envelopes ``env``: ``[E, len(t)]``; the waveform once per fundamental."""
    env = env * (1 + 0.15 * torch.sin(2 * math.pi * 0.25 * t))
    waves = {}
    for f0 in {ev["f0"] for ev in events}:
        waves[f0] = sum(torch.sin(2 * math.pi * h * f0 * t) / h for h in range(1, 7)) / 2.45
    wave = torch.stack([waves[ev["f0"]] for ev in events]) if len(waves) > 1 else waves[events[0]["f0"]]
    return _column(events, "amp") * env * wave


def _tones(events: list[dict], t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """A tone and its octave at a fifth of its amplitude: ``[E, len(t)]``."""
    f0 = _column(events, "f0")
    s = t - _column(events, "start")
    wave = torch.sin(2 * math.pi * f0 * s) + 0.2 * torch.sin(4 * math.pi * f0 * s)
    return _column(events, "amp") * env * wave


def _chirps(events: list[dict], t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """Exponential sweeps, ``f(s) = f0 2**(rate s)``: ``[E, len(t)]``."""
    f0, k = _column(events, "f0"), _column(events, "rate") * math.log(2)
    wave = torch.sin(2 * math.pi * f0 * torch.expm1(k * (t - _column(events, "start")).clamp(min=0)) / k)
    return _column(events, "amp") * env * wave


_BATCHED = {"drone": _drones, "tone": _tones, "chirp": _chirps}


def _waveform(ev: dict, t: torch.Tensor, env: torch.Tensor, seed: int, first: int) -> torch.Tensor:
    """One vowel, novel sound or click on the times ``t`` with envelope ``env`` (``first``: ``t[0]``'s sample index)."""
    kind, s = ev["kind"], t - ev["start"]
    if kind == "click":
        burst = _noise(seed, 7, first, first + t.numel()) * torch.exp(-s.clamp(min=0) / 0.001)
        return ev["amp"] * burst * (s >= 0) * (t < ev["end"])
    if kind == "vowel":
        wave = _vowel(ev, s)
    elif ev["style"] == "bell":
        wave = sum(torch.sin(2 * math.pi * r * ev["f0"] * s) * torch.exp(-s.clamp(min=0) * r / 0.4) / r
                   for r in _BELL)
    else:                            # warble: 8 Hz frequency modulation of +-25%
        wave = torch.sin(2 * math.pi * ev["f0"] * s + 0.25 * ev["f0"] / 8.0 * torch.sin(2 * math.pi * 8.0 * s))
    return ev["amp"] * env * wave


def _vowel(ev: dict, s: torch.Tensor) -> torch.Tensor:
    """A glottal harmonic series (``1/h``) shaped by three formant resonances, normalised to peak ~1."""
    f, gain = _harmonics(ev["vowel"], ev["f0"])
    return (gain[:, None] * torch.sin(2 * math.pi * f[:, None] * s[None, :])).sum(0)


@functools.lru_cache(maxsize=1024)
def _harmonics(vowel: str, f0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A vowel's harmonic frequencies up to 5 kHz and their gains ``[H]`` (a vowel spans several renders)."""
    freqs, widths = _VOWELS[vowel]
    harmonics = torch.arange(1, int(5000 / f0) + 1, dtype=torch.float64)
    f = harmonics * f0
    gain = sum(1 / torch.sqrt(1 + ((f - F) / B) ** 2) for F, B in zip(freqs, widths)) / harmonics
    return f, gain / gain.norm()


def _envelope(t: torch.Tensor, start, end) -> torch.Tensor:
    """Raised-cosine attack from ``start`` and release after ``end`` on the sample times ``t``.

    ``0.25 (1 - cos(pi rise)) (1 + cos(pi fall))`` with ``rise``, ``fall`` the
    clamped ramps.  ``start`` and ``end`` are floats (result ``[len(t)]``) or
    ``[E, 1]`` columns (result ``[E, len(t)]``); an endless sound (``end =
    inf``) never releases.  Away from the attack and the release the value is
    exactly 0 or 1 (``cos 0 = 1`` and ``cos pi = -1`` in floating point too),
    so the cosines, dearer in float64 than the rest of a sound, are taken
    only on a window of samples around each ramp (a few samples wider than
    it), gathered and scattered back.
    """
    single = not isinstance(start, torch.Tensor)
    start, end = (torch.as_tensor(x, dtype=t.dtype).reshape(-1, 1) for x in (start, end))
    n = t.numel()
    edges = []
    for edge, width in ((start, _ATTACK), (end, _RELEASE)):
        w = math.ceil(width * SAMPLE_RATE) + 5
        # Index of the ramp's first sample, less a margin; +-inf and far-off ramps clamp outside the range.
        first = ((edge - t[0]) * SAMPLE_RATE).floor().clamp(-w - 1, n + 1).long() - 2
        edges.append((first, first + torch.arange(w)))
    j = torch.arange(n)
    (a_first, a_idx), (r_first, r_idx) = edges
    env = ((j >= a_first + a_idx.shape[1]) & (j < r_first)).to(t.dtype)    # between the ramps' windows
    idx = torch.cat([a_idx, r_idx], dim=1).clamp(0, n - 1)
    tw = t[idx]
    rise = ((tw - start) / _ATTACK).clamp(0, 1)
    fall = ((tw - end) / _RELEASE).clamp(0, 1)
    env.scatter_(1, idx, 0.25 * (1 - torch.cos(math.pi * rise)) * (1 + torch.cos(math.pi * fall)))
    return env[0] if single else env


def _noise(seed: int, stream: int, s0: int, s1: int, cache: dict | None = None) -> torch.Tensor:
    """Unit white noise for samples ``[s0, s1)``, from fixed blocks seeded by their index.

    ``cache`` (a dict the caller keeps) holds the last block drawn, so that
    renders of consecutive ranges draw the block at their seam once.
    """
    blocks = []
    for j in range(s0 // _NOISE_BLOCK, (s1 - 1) // _NOISE_BLOCK + 1):
        block = None if cache is None else cache.get(j)
        if block is None:
            block = torch.randn(_NOISE_BLOCK, generator=generator(seed * 100003 + j, stream), dtype=torch.float64)
        blocks.append(block)
    if cache is not None and blocks:
        cache.clear()
        cache[(s1 - 1) // _NOISE_BLOCK] = blocks[-1]
    first = s0 // _NOISE_BLOCK * _NOISE_BLOCK
    return torch.cat(blocks)[s0 - first:s1 - first] if blocks else torch.zeros(0, dtype=torch.float64)


def _log_uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(uniform(gen, math.log(lo), math.log(hi)))


def _amp(gen: torch.Generator) -> float:
    return 10 ** (uniform(gen, *_AMP_DB) / 20)
