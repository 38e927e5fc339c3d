"""A minimal built-in auditory stream: synthetic adapted band energies.

This is a stand-in, generated without any audio: a small score of sound events
(a drone, tones, upward chirps, clicks and silences) is rendered directly as
band energies on a log-frequency axis, 100 frames per second.  A full
filterbank scenario (waveforms through a cochlear filterbank) comes in a later
issue; this one exists so that ``rtnclock run audio_stream`` has something
auditory-shaped to run on, with known onset times.

Frequency axis.  The ``n_leaves * input_dim`` bands are log-spaced and
tonotopic: leaf ``i`` hears bands ``i*c .. i*c + c - 1`` (``c = input_dim``), low
frequencies at leaf 0.  Event positions are fractions of the axis, so the
scenario fits any ``K``, ``branching`` and ``input_dim``.

Features.  Raw band energy ``E`` (linear power, with a smooth noise floor) is
log-compressed to ``L = log10(1 + E/E_floor) / 3`` (about 0.1 in silence, about
1 for the loudest events), then adapted like an auditory-nerve fibre::

    x = SUSTAIN * L + ONSET * softplus(L - L_adapted)

where ``L_adapted`` follows ``L`` with time constant ``ADAPT_TAU``.  A steady
sound settles to a low level (``SUSTAIN * L``, at most 0.1) and an onset
overshoots (up to about 1.7); values stay in ``[0, 2]`` and change smoothly
(raised-cosine attacks of 30 ms; clicks, 20 ms, are the only sharp events).  Why: the untrained hierarchy cannot predict a steady input, so
with raw energies its surprise would stay high for as long as a sound lasts;
with adaptation the surprise, and so the gates, follow onsets.

Stream ``b`` of a batch is drawn from seed ``seed + b``; ``onsets(duration,
seed + b)`` are its ground-truth onset times.
"""

from __future__ import annotations

import math

import torch

import rtnclock

DESCRIPTION = "synthetic band energies: drone, tones, upward chirps, clicks, silences (minimal, built in)"

#: Frames per second of the features.
FRAME_RATE = 100.0
#: Seconds rendered when the caller does not say (``rtnclock run`` reads it).
DEFAULT_DURATION = 10.0
#: Weight of the sustained (adapted-away) part and of the onset overshoot.
SUSTAIN, ONSET = 0.1, 2.0
#: Adaptation time constant of the onset detector (seconds).
ADAPT_TAU = 0.15
#: Noise floor of the band energies (linear power).
E_FLOOR = 1e-3

# Onsets, gaps between events and durations are in seconds.
_DRONE_START = 0.25
# Gaps are uniform (jittered, not Poisson), so that every 10 s has some of each.
_SILENCE_GAP, _SILENCE_LEN = (4.0, 6.0), (0.6, 1.0)
_TONE_GAP, _TONE_LEN = (0.4, 2.0), (0.25, 1.2)
_CHIRP_GAP, _CHIRP_LEN = (1.5, 5.0), (0.3, 0.8)
_CLICK_GAP, _CLICK_LEN = (2.0, 4.0), 0.03
_ATTACK, _RELEASE = 0.03, 0.06
_OCTAVES = 7.0                  # span of the frequency axis


def default_config() -> rtnclock.Config:
    """The scenario's hierarchy: 16 tonotopic leaves of 4 bands, three levels.

    Gate law ``g = sigmoid(a*e + beta*demand + b_g)``: the surprise ``e`` of a
    block is the squared error of a window mean over its receptive field, so a
    local onset's surprise shrinks about ``b**2``-fold per level on its way up
    (the root sees the mean of all bands); ``gate_a`` grows with the level to
    compensate, and the bias keeps steady stretches closed.  Being per level,
    ``gate_a`` must be changed along with ``K``.  Tolerances are loose enough for a 10 s run
    to take a few seconds on a small CPU.
    """
    return rtnclock.Config(
        K=2, branching=4, dims=16, input_dim=4, tau0=0.01, ratio=4.0, dtype="float32",
        rtol=1e-4, atol=1e-6,
        gate_a=(8.0, 30.0, 100.0), gate_beta=1.0, gate_bias=-1.5, gate_theta=0.5,
        escalation_threshold=1.0,
    )


def make_stream(config: rtnclock.Config, *, duration: float = DEFAULT_DURATION, seed: int = 0,
                batch: int = 1) -> rtnclock.Stream:
    """Render the scenario for ``config``'s leaves and channels.

    Args:
        config: supplies ``b**K`` leaves, ``input_dim`` channels and the dtype.
        duration: seconds of sound (the stream has ``ceil(duration * 100) + 1`` frames).
        seed: score of stream 0; stream ``b`` uses ``seed + b``.
        batch: number of independent streams ``B``.

    Returns:
        A :class:`rtnclock.Stream` with frames ``[B, F, n_leaves, input_dim]``, ``dt = 0.01``.

    Raises:
        rtnclock.ConfigError: non-positive duration, negative seed or batch < 1.
    """
    _check(duration, seed, batch)
    n_leaves, c = config.blocks(0), config.input_dim
    dt = 1.0 / FRAME_RATE
    n_frames = math.ceil(duration * FRAME_RATE - 1e-9) + 1           # covers at least `duration`
    feats = [_render(_score(duration, seed + b), n_frames, n_leaves * c, seed + b)
             for b in range(batch)]                                        # B x [F, N]
    frames = torch.stack(feats).reshape(batch, n_frames, n_leaves, c)     # [B, F, n_leaves, c]
    return rtnclock.Stream(frames.to(getattr(torch, config.dtype)), dt)


def onsets(duration: float, seed: int) -> list[float]:
    """Ground-truth onset times (seconds, sorted) of the stream drawn from ``seed``.

    Every tone, chirp and click start, and every (re)start of the drone.
    """
    _check(duration, seed, 1)
    return sorted(ev["start"] for ev in _score(duration, seed)
                  if ev["kind"] != "silence" and ev["start"] < duration)


# ---- the score ----------------------------------------------------------------

def _check(duration, seed, batch) -> None:
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
            or not math.isfinite(duration) or duration <= 0:
        raise rtnclock.ConfigError("duration", duration, "a positive number of seconds")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise rtnclock.ConfigError("seed", seed, "an integer >= 0")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise rtnclock.ConfigError("batch", batch, "an integer >= 1")


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator per (seed, random process) of the scenario."""
    return torch.Generator().manual_seed(seed * 16 + stream)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _arrivals(gen: torch.Generator, horizon: float, gap: tuple[float, float]):
    """Arrival times on ``[0, horizon)`` with uniform gaps (the first one halved).

    A generator, so that each arrival's own draws follow it from the same
    random stream: a longer score extends a shorter one.
    """
    t = 0.5 * _uniform(gen, *gap)
    while t < horizon:
        yield t
        t += _uniform(gen, *gap)


def _score(duration: float, seed: int) -> list[dict]:
    """The events of one stream: dicts with kind, start, end and spectral placement.

    Positions ``pos`` are fractions of the log-frequency axis.  Silences mute
    everything; events that would start in one (or be cut to under 0.1 s by
    one) are dropped, events running into one are cut; the drone restarts when
    a silence ends (an onset).  Each kind of event draws from its own
    generator and the score looks 1 s past ``duration``, so the stream of a
    short run is the start of a longer one's.
    """
    horizon = duration + 1.0
    gen = _generator(seed, 0)
    silences = [(t, t + _uniform(gen, *_SILENCE_LEN))
                for t in _arrivals(gen, horizon, _SILENCE_GAP) if t > 1.0]
    events = [dict(kind="silence", start=a, end=b) for a, b in silences]
    drone_starts = [_DRONE_START] + [b for _, b in silences]
    drone_ends = [a for a, _ in silences] + [math.inf]
    for a, b in zip(drone_starts, drone_ends):
        events.append(dict(kind="drone", start=a, end=b, pos=0.07, level=0.3))
    for i, (kind, gap, (lo, hi)) in enumerate(
            (("tone", _TONE_GAP, _TONE_LEN), ("chirp", _CHIRP_GAP, _CHIRP_LEN)), start=1):
        gen = _generator(seed, i)
        for t in _arrivals(gen, horizon, gap):
            length, pos = _uniform(gen, lo, hi), _uniform(gen, 0.3, 0.85)
            sweep = _uniform(gen, 0.1, 0.25) if kind == "chirp" else 0.0
            level = 10 ** _uniform(gen, -1.0, 0.0)
            events.append(dict(kind=kind, start=t, end=t + length, pos=pos, sweep=sweep, level=level))
    for t in _arrivals(_generator(seed, 3), horizon, _CLICK_GAP):
        events.append(dict(kind="click", start=t, end=t + _CLICK_LEN, level=1.0))
    kept = []
    for ev in events:
        if ev["kind"] in ("silence", "drone"):
            kept.append(ev)
            continue
        cut = min([a for a, _ in silences if a > ev["start"]], default=math.inf)
        end = min(ev["end"], cut)
        if ev["start"] < 0.1 or any(a <= ev["start"] < b for a, b in silences) \
                or end - ev["start"] < min(0.1, ev["end"] - ev["start"]):
            continue                                        # in a silence, or cut to a blip
        kept.append({**ev, "end": end})
    return sorted(kept, key=lambda ev: (ev["start"], ev["kind"]))


# ---- rendering -----------------------------------------------------------------

def _envelope(t: torch.Tensor, start: float, end: float, attack: float, release: float) -> torch.Tensor:
    """Raised-cosine attack from ``start``, raised-cosine release after ``end``: ``[F]``."""
    rise = ((t - start) / attack).clamp(0, 1)
    fall = ((t - end) / release).clamp(0, 1)
    return 0.5 * (1 - torch.cos(math.pi * rise)) * 0.5 * (1 + torch.cos(math.pi * fall))


def _partial(band: torch.Tensor, centre: torch.Tensor, width: float) -> torch.Tensor:
    """Gaussian spectral profile around ``centre`` (band units): ``[F, N]``."""
    return torch.exp(-0.5 * ((band[None, :] - centre[:, None]) / width) ** 2)


def _energy(ev: dict, t: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Linear band energy of one event: ``[F, N]``."""
    n_bands = band.numel()
    per_octave = n_bands / _OCTAVES
    width = max(0.6, 0.05 * per_octave)                     # bands
    if ev["kind"] == "click":
        env = _envelope(t, ev["start"], ev["end"] - 0.01, 0.01, 0.01)
        tilt = 1.0 - 0.4 * band / n_bands                   # slightly more low-frequency energy
        return ev["level"] * env[:, None] * tilt[None, :]
    env = _envelope(t, ev["start"], ev["end"], _ATTACK, _RELEASE)
    frac = ((t - ev["start"]) / max(ev["end"] - ev["start"], 1e-9)).clamp(0, 1)
    centre = (ev["pos"] + ev.get("sweep", 0.0) * frac) * n_bands        # [F] band units
    if ev["kind"] == "drone":                               # slow tremolo
        env = env * (1 + 0.15 * torch.sin(2 * math.pi * 0.25 * t))
    out = torch.zeros(t.numel(), n_bands, dtype=t.dtype)
    for h, amp in ((1, 1.0), (2, 0.5), (3, 0.25)):         # harmonics
        out = out + amp * _partial(band, centre + math.log2(h) * per_octave, width)
    return ev["level"] * env[:, None] * out


def _smooth_noise(gen: torch.Generator, n_frames: int, n_bands: int, tau_frames: float) -> torch.Tensor:
    """Unit-variance noise low-passed in time (one-pole) and across bands: ``[F, N]``.

    Causal and normalised by the stationary variance (not the sample's), so a
    longer stream starts like a shorter one.
    """
    a = math.exp(-1.0 / tau_frames)
    out = torch.empty(n_frames, n_bands, dtype=torch.float64)
    acc = None
    for f in range(n_frames):
        # One draw per frame: torch fills a large randn in blocks, so one big
        # draw would not be the prefix of a longer one.
        w = torch.randn(n_bands + 2, generator=gen, dtype=torch.float64)
        w = (w[:-2] + w[1:-1] + w[2:]) / 3                  # [N], smooth across bands, variance 1/3
        acc = w * math.sqrt((1 - a) / (1 + a)) if acc is None else a * acc + (1 - a) * w
        out[f] = acc
    return out / math.sqrt((1 - a) / (1 + a) / 3)


def _render(score: list[dict], n_frames: int, n_bands: int, seed: int) -> torch.Tensor:
    """Adapted band-energy features of one stream: ``[F, N]``."""
    t = torch.arange(n_frames, dtype=torch.float64) / FRAME_RATE
    band = torch.arange(n_bands, dtype=torch.float64)
    gen = _generator(seed, 4)                               # independent of the score
    energy = E_FLOOR * torch.exp(0.3 * _smooth_noise(gen, n_frames, n_bands, 10.0))
    for ev in score:
        if ev["kind"] == "silence" or ev["start"] >= t[-1]:
            continue
        # Only the frames the event reaches (keeps the tensors small).
        i0 = max(int(ev["start"] * FRAME_RATE), 0)
        i1 = min(int(math.ceil(min(ev["end"] + _RELEASE, t[-1].item()) * FRAME_RATE)) + 1, n_frames)
        energy[i0:i1] += _energy(ev, t[i0:i1], band)
    level = torch.log10(1 + energy / E_FLOOR) / 3           # [F, N], ~0.1 silence, ~1 loud
    adapted = torch.empty_like(level)
    a = math.exp(-1.0 / (ADAPT_TAU * FRAME_RATE))
    acc = level[0]
    for f in range(n_frames):
        acc = a * acc + (1 - a) * level[f]
        adapted[f] = acc
    onset = torch.nn.functional.softplus(level - adapted, beta=20.0)
    return SUSTAIN * level + ONSET * onset
