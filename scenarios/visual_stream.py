"""A drifting grating on a small retinotopic grid, with rare oddballs, turns and blanks.

The scene.  A full-field sinusoidal grating (``CONTRAST``, wavelength
``WAVELENGTH`` px) drifts at ``TEMPORAL_FREQ`` Hz in one of ``c = input_dim``
directions ``2 pi j / c``, plus pixel noise (``PIXEL_NOISE``, fresh every frame).
Now and then:

- ``turn``: the grating's direction changes for good (to another of the ``c``);
- ``blank``: the screen goes mid-grey for 0.3-0.5 s, then the grating returns;
- ``oddball`` (rare, short): either a square of patches where for 0.25 s the
  grating drifts in another direction (``variant`` 0), or a bright bar of
  another orientation sweeping across the screen in 0.3 s (``variant`` 1).

Oddballs that would fall within 0.5 s of a turn or a blank edge are dropped,
and so are turns within 0.5 s of a blank, so that every annotated event has a
quiet stretch around it.  Each kind draws from its own generator and the scene looks
1 s past ``duration``: a short stream is the start of a longer one.

Retinotopy.  Each leaf is a ``PATCH x PATCH`` pixel patch; the patches tile
the screen as a quadtree-like grid (:func:`leaf_grid`): the ``b`` children of
every block are a compact ``p x q`` tile of their parent's tile, so each block
of the hierarchy sees a contiguous piece of the screen (``K = 2, b = 4``: a 4 x
4 grid of patches, level-1 blocks are its 2 x 2 quadrants).

Features, 100 frames per second.  Channel ``j`` of a leaf is a direction-
selective motion-energy unit for direction ``j`` over its patch: a complex
Gabor filter ``z_j`` (Gaussian envelope, carrier of ``WAVELENGTH`` along the
direction) correlated over one frame (Reichardt / Adelson-Bergen opponent
energy ``Im(z_j(t-1) conj(z_j(t)))``), low-passed over ``ENERGY_TAU``,
half-wave rectified, and normalised so that the drifting grating at full
``CONTRAST`` in the preferred direction gives ``E = 1``.  A contrast response
``L = E / (E + E_HALF)`` bounds it to ``[0, 1)``; then, as in ``audio_stream``
and for the same reason, the unit adapts (:class:`.common.OnsetAdaptation`)::

    x = SUSTAIN * L + ONSET * (softplus(L - L_adapted) - softplus(0))

with ``L_adapted`` following ``L`` over ``ADAPT_TAU``.  A steady drift settles
to ``x`` of about 0.1 in its channel and about 0 in the others, and a new
motion (an oddball, a turn, the grating's return after a blank) overshoots to
1-1.5; ``x`` stays in ``[-0.07, 1.9]``.  The untrained hierarchy cannot
predict a steady input, so with raw energies its surprise would stay high as
long as the grating drifts; with adaptation the surprise, and so the gates,
follow what changes.  Unlike ``audio_stream``, the onset part's resting value
``ONSET * softplus(0) = 0.06`` is taken off: on all four channels of every
patch it would give the root a steady surprise as large as a local
oddball's.

Stream ``b`` of a batch is drawn from seed ``seed + b``; :func:`scene` gives
its events, and the stream's annotations list them (kinds ``oddball``, ``turn``,
``blank``; numeric columns ``end``, ``variant``, ``direction``, ``row``, ``col``,
``size``).
"""

from __future__ import annotations

import math

import torch

import rtnclock

from . import common

DESCRIPTION = "drifting grating on a 4x4 retinotopic grid: motion-energy patches, rare oddballs, turns, blanks"

#: Frames per second of the features.
FRAME_RATE = 100.0
#: Seconds rendered when the caller does not say (``rtnclock run`` reads it).
DEFAULT_DURATION = 10.0
#: Pixels per side of a leaf's patch; grating wavelength (px), drift (Hz), contrast.
PATCH = 8
WAVELENGTH = 4.0
TEMPORAL_FREQ = 2.0
CONTRAST = 0.8
#: Standard deviation of the pixel noise (luminance units, grey = 0, white = 1).
PIXEL_NOISE = 0.1
#: Gaussian envelope of the Gabor filters (px).
GABOR_SIGMA = 2.0
#: Low-pass time constant of the motion energy (s) and its half-saturation.
ENERGY_TAU = 0.02
E_HALF = 0.3
#: Weight of the sustained (adapted-away) part and of the onset overshoot; adaptation (s).
SUSTAIN, ONSET = 0.1, 1.8
ADAPT_TAU = 0.15

# Gaps between events and their durations are in seconds.
_TURN_GAP = (2.5, 4.5)
_BLANK_GAP, _BLANK_LEN = (3.0, 5.0), (0.3, 0.5)
_ODDBALL_GAP = (1.0, 2.0)
_PATCH_ODDBALL_LEN, _BAR_LEN = 0.25, 0.3
_QUIET = 0.5                    # no oddball this close to a turn or a blank edge
_BAR_WIDTH = 1.0                # Gaussian half-width of the bar (px)


def default_config() -> rtnclock.Config:
    """The scenario's hierarchy: a 4 x 4 grid of patches, 4 motion directions, three levels.

    Tuned like ``audio_stream``'s: a surprise is the squared error of a window
    mean over a block's receptive field, so a local event's surprise shrinks
    about ``b**2``-fold per level on its way up, and ``gate_a`` grows with the
    level to compensate.  The root needs more than audio's 100: a 2 x 2
    oddball is a quarter of the screen and one direction of four, so at the
    root it raises the surprise from ~0.002 (steady drift) to only ~0.01; at
    ``a = 300`` with bias -1.5 the root opens from ~0.005.  ``weight_gain``
    0.5 (default 0.9): the recurrent loop then relaxes a woken block in about
    ``2 tau`` rather than ``10 tau``, so after an event the blocks' (untrained)
    predictions return to rest within a few tenths of a second; at 0.9 the
    root's prediction error stayed up for seconds and its gate was open in a
    quarter of the steady stretches.  Being per level, ``gate_a`` must be
    changed along with ``K``.  Solver: classical RK4 with one step per leaf
    period, as ``audio_stream``: on 6 seeds its gate events differ from
    dopri5's at ``rtol=1e-4`` by at most 3% (gates are thresholds), at three
    quarters of the wall time.
    """
    return rtnclock.Config(
        K=2, branching=4, dims=16, input_dim=4, tau0=0.01, ratio=4.0, dtype="float32",
        method="rk4", step_size=0.01, rtol=1e-4, atol=1e-6,
        gate_a=(8.0, 30.0, 300.0), gate_beta=1.0, gate_bias=-1.5, gate_theta=0.5,
        escalation_threshold=1.0, weight_gain=0.5,
    )


def make_stream(config: rtnclock.Config, *, duration: float = DEFAULT_DURATION, seed: int = 0,
                batch: int = 1) -> rtnclock.Stream:
    """Render the scene for ``config``'s grid of leaves and ``input_dim`` directions.

    Args:
        config: supplies ``b**K`` leaves (the patches), ``input_dim`` directions
            (at least 2) and the dtype.
        duration: seconds (the stream has ``ceil(duration * 100) + 1`` frames).
        seed: scene of stream 0; stream ``b`` uses ``seed + b``.
        batch: number of independent streams ``B``.

    Returns:
        A :class:`rtnclock.Stream` with frames ``[B, F, n_leaves, input_dim]``,
        ``dt = 0.01``, annotated with every event starting by ``duration``
        (kinds ``oddball``, ``turn``, ``blank``; columns ``end``, ``variant``,
        ``direction``, ``row``, ``col``, ``size``, -1 where they do not apply).

    Raises:
        rtnclock.ConfigError: non-positive duration, negative seed, batch < 1,
            or ``input_dim`` < 2.
    """
    common.check_args(duration, seed, batch)
    _check_config(config)
    n_frames = common.frame_count(duration, FRAME_RATE)
    scenes = [scene(config, duration=duration, seed=seed + b) for b in range(batch)]
    renderers = [_Renderer(config, sc, seed + b) for b, sc in enumerate(scenes)]

    def render(i0: int, i1: int) -> torch.Tensor:
        return torch.stack([r(i0, i1) for r in renderers])                # [B, f, n_leaves, c]

    rows, extra = [], {k: [] for k in ("end", "variant", "direction", "row", "col", "size")}
    for b, sc in enumerate(scenes):
        for ev in sc:
            if ev["kind"] in ("oddball", "turn", "blank") and ev["start"] <= duration:
                rows.append((ev["start"], ev["kind"], b))
                for k in extra:
                    extra[k].append(ev.get(k, -1))
    return common.chunked_stream(render, n_frames=n_frames, frame_rate=FRAME_RATE, config=config, batch=batch,
                                 name="visual_stream", annotations=common.annotation_table(rows, **extra))


def leaf_grid(config: rtnclock.Config) -> tuple[int, int, torch.Tensor]:
    """``(rows, cols, positions)``: the grid of patches and each leaf's ``(row, col)`` ``[n_leaves, 2]``.

    Leaf ``i``'s base-``b`` digits place it, finest first: digit ``k`` picks one
    of ``b`` cells of a ``p x q`` tile (``p`` the largest divisor of ``b`` up to
    ``sqrt(b)``; transposed at odd levels so that the grid stays near square),
    in units of the tile of the level below.
    """
    b, K = config.branching, config.K
    p = max(d for d in range(1, math.isqrt(b) + 1) if b % d == 0)
    tiles = [(p, b // p) if k % 2 == 0 else (b // p, p) for k in range(K)]   # (rows, cols) per level
    pos = torch.zeros(b ** K, 2, dtype=torch.long)
    unit = [1, 1]
    idx = torch.arange(b ** K)
    for k, (tr, tc) in enumerate(tiles):
        digit = (idx // b ** k) % b
        pos[:, 0] += (digit // tc) * unit[0]
        pos[:, 1] += (digit % tc) * unit[1]
        unit = [unit[0] * tr, unit[1] * tc]
    return unit[0], unit[1], pos


def scene(config: rtnclock.Config, *, duration: float = DEFAULT_DURATION, seed: int = 0) -> list[dict]:
    """The events of the stream drawn from ``seed``, sorted by start (looks 1 s past ``duration``).

    Dicts with ``kind`` (``start``: the initial drift, ``turn``, ``blank``,
    ``oddball``), ``start`` and ``end`` (s), and where they apply ``direction``
    (index ``j`` of direction ``2 pi j / c``), ``variant`` (oddball: 0 patch
    square, 1 bar), ``row``, ``col``, ``size`` (the square, in patches).

    Raises:
        rtnclock.ConfigError: bad duration or seed, or ``input_dim`` < 2.
    """
    common.check_args(duration, seed, 1)
    _check_config(config)
    c = config.input_dim
    rows, cols, _ = leaf_grid(config)
    horizon = duration + 1.0
    gen = common.generator(seed, 0)
    blanks = [(t, t + common.uniform(gen, *_BLANK_LEN))
              for t in common.arrivals(gen, horizon, _BLANK_GAP) if t > 1.0]
    gen = common.generator(seed, 1)
    direction = _pick(gen, c, None)
    events = [dict(kind="start", start=0.0, end=math.inf, direction=direction)]
    for t in common.arrivals(gen, horizon, _TURN_GAP):
        new = _pick(gen, c, direction)
        if not any(a - _QUIET <= t < z + _QUIET for a, z in blanks):
            events.append(dict(kind="turn", start=t, end=t, direction=new))
            direction = new
    events += [dict(kind="blank", start=a, end=z) for a, z in blanks]
    edges = [ev["start"] for ev in events if ev["kind"] == "turn"] + [x for ab in blanks for x in ab]
    gen = common.generator(seed, 2)
    size = max(1, min(rows, cols) // 2)
    for t in common.arrivals(gen, horizon, _ODDBALL_GAP):
        variant = int(common.uniform(gen, 0, 1) < 0.5)
        u_new, u_row, u_col = (common.uniform(gen, 0, 1) for _ in range(3))
        if t < _QUIET or any(abs(t - e) < _QUIET for e in edges) or any(a <= t < z for a, z in blanks):
            continue
        others = [j for j in range(c) if j != _direction_at(events, t)]
        ev = dict(kind="oddball", start=t, variant=variant, direction=_choose(u_new, others))
        if variant == 0:
            ev.update(end=t + _PATCH_ODDBALL_LEN, size=size,
                      row=min(int(u_row * (rows - size + 1)), rows - size),
                      col=min(int(u_col * (cols - size + 1)), cols - size))
        else:
            ev.update(end=t + _BAR_LEN)
        events.append(ev)
    return sorted(events, key=lambda ev: (ev["start"], ev["kind"]))


# ---- rendering -----------------------------------------------------------------

def _check_config(config: rtnclock.Config) -> None:
    if config.input_dim < 2:
        raise rtnclock.ConfigError("input_dim", config.input_dim,
                                   "an integer >= 2 (one motion direction per channel)")


def _pick(gen: torch.Generator, c: int, current: int | None) -> int:
    """A direction index other than ``current`` (any if ``None``), one draw."""
    return _choose(common.uniform(gen, 0, 1), [j for j in range(c) if j != current])


def _choose(u: float, items: list):
    """The item a uniform draw ``u`` in ``[0, 1)`` falls on."""
    return items[min(int(u * len(items)), len(items) - 1)]


def _direction_at(events: list[dict], t: float) -> int:
    """The grating's direction at ``t`` (the last start or turn at or before it)."""
    return [ev for ev in sorted(events, key=lambda e: e["start"])
            if ev["kind"] in ("start", "turn") and ev["start"] <= t][-1]["direction"]


def _unit(j: int, c: int) -> tuple[float, float]:
    """Direction ``j`` as ``(d_row, d_col)``: angle ``2 pi j / c`` counter-clockwise from +col."""
    a = 2 * math.pi * j / c
    return -math.sin(a), math.cos(a)


class _Renderer:
    """Features of one stream, frame range by frame range, in order (state: filters, noise)."""

    def __init__(self, config: rtnclock.Config, events: list[dict], seed: int):
        self.c = config.input_dim
        rows, cols, pos = leaf_grid(config)
        self.shape = (rows * PATCH, cols * PATCH)
        off = torch.arange(PATCH, dtype=torch.float64)
        # Pixel coordinates of every leaf's patch: [n_leaves, P*P] each.
        self.y = (pos[:, :1] * PATCH + off.repeat_interleave(PATCH)[None]).double()
        self.x = (pos[:, 1:] * PATCH + off.repeat(PATCH)[None]).double()
        self.pos = pos
        self.events = events
        self.noise = common.generator(seed, 3)
        # Complex Gabor filters over a patch: [P*P, c] (same for every patch).
        centre = (PATCH - 1) / 2
        gy, gx = self.y[0] - self.y[0].min() - centre, self.x[0] - self.x[0].min() - centre
        env = torch.exp(-(gx ** 2 + gy ** 2) / (2 * GABOR_SIGMA ** 2))
        k = 2 * math.pi / WAVELENGTH
        carrier = torch.stack([-(k * (gy * dy + gx * dx)) for dy, dx in (_unit(j, self.c) for j in range(self.c))], 1)
        self.gabor = env[:, None] * torch.polar(torch.ones_like(carrier), carrier)     # [P*P, c]
        self.ref = self._reference()
        self.prev_z = None                      # [n_leaves, c] complex, last frame's response
        self.energy = None                      # [n_leaves, c] motion-energy filter state
        self.adapt = common.OnsetAdaptation(sustain=SUSTAIN, onset=ONSET, tau=ADAPT_TAU, frame_rate=FRAME_RATE,
                                            rest_zero=True)

    def _reference(self) -> float:
        """Opponent energy of the noiseless grating at ``CONTRAST`` in a leaf's preferred direction."""
        lum = [self._grating(torch.tensor([i / FRAME_RATE], dtype=torch.float64), 0)[:, :1] for i in (0, 1)]
        z = [(m.to(self.gabor.dtype) @ self.gabor)[0, 0, 0] for m in lum]
        return float((z[0] * z[1].conj()).imag)

    def _grating(self, t: torch.Tensor, j: int) -> torch.Tensor:
        """Luminance of the grating drifting in direction ``j`` at times ``t``: ``[f, n_leaves, P*P]``."""
        dy, dx = _unit(j, self.c)
        phase = 2 * math.pi * (self.y * dy + self.x * dx) / WAVELENGTH                # [n, P*P]
        return CONTRAST * torch.cos(phase[None] - 2 * math.pi * TEMPORAL_FREQ * t[:, None, None])

    def luminance(self, i0: int, i1: int) -> torch.Tensor:
        """Noiseless pixels of frames ``i0 .. i1 - 1``: ``[f, n_leaves, P*P]`` (float64)."""
        t = torch.arange(i0, i1, dtype=torch.float64) / FRAME_RATE
        lum = torch.zeros(t.numel(), *self.y.shape, dtype=torch.float64)
        t_lo, t_hi = i0 / FRAME_RATE, (i1 - 1) / FRAME_RATE
        drifts = [ev for ev in self.events if ev["kind"] in ("start", "turn")]
        for ev, nxt in zip(drifts, drifts[1:] + [dict(start=math.inf)]):
            on = (t >= ev["start"]) & (t < nxt["start"])
            if on.any():
                lum[on] = self._grating(t[on], ev["direction"])
        for ev in self.events:
            if ev["kind"] == "oddball" and ev["start"] <= t_hi and ev["end"] >= t_lo:
                on = (t >= ev["start"]) & (t < ev["end"])
                if not on.any():
                    continue
                if ev["variant"] == 0:
                    leaves = ((self.pos[:, 0] >= ev["row"]) & (self.pos[:, 0] < ev["row"] + ev["size"])
                              & (self.pos[:, 1] >= ev["col"]) & (self.pos[:, 1] < ev["col"] + ev["size"]))
                    lum[on.nonzero()[:, :1], leaves.nonzero()[:, 0]] = \
                        self._grating(t[on], ev["direction"])[:, leaves]
                else:
                    lum[on] = self._bar(ev, t[on], lum[on])
            if ev["kind"] == "blank":
                lum[(t >= ev["start"]) & (t < ev["end"])] = 0.0
        return lum

    def _bar(self, ev: dict, t: torch.Tensor, lum: torch.Tensor) -> torch.Tensor:
        """A bright bar (normal along ``ev['direction']``) sweeping the screen over ``[start, end)``."""
        dy, dx = _unit(ev["direction"], self.c)
        h, w = self.shape
        proj = [cy * dy + cx * dx for cy in (0, h - 1) for cx in (0, w - 1)]
        lo, hi = min(proj) - 3 * _BAR_WIDTH, max(proj) + 3 * _BAR_WIDTH
        where = lo + (hi - lo) * (t - ev["start"]) / (ev["end"] - ev["start"])        # [f]
        d = (self.y * dy + self.x * dx)[None] - where[:, None, None]                  # [f, n, P*P]
        a = torch.exp(-(d / _BAR_WIDTH) ** 2)
        return (1 - a) * lum + a * 1.0

    def __call__(self, i0: int, i1: int) -> torch.Tensor:
        """Adapted motion-energy features of frames ``i0 .. i1 - 1``: ``[f, n_leaves, c]`` (float64)."""
        lum = self.luminance(i0, i1)
        for f in range(i1 - i0):
            # One draw per frame: a block draw's values depend on its size (torch
            # fills it in blocks), and a short stream must be a long one's start.
            lum[f] += PIXEL_NOISE * torch.randn(lum.shape[1:], generator=self.noise, dtype=torch.float64)
        z = lum.to(self.gabor.dtype) @ self.gabor                                     # [f, n, c] complex
        if self.prev_z is None:
            # The grating drifted before the stream began: frame -1 is its noiseless past.
            before = torch.tensor([-1.0 / FRAME_RATE], dtype=torch.float64)
            self.prev_z = (self._grating(before, self.events[0]["direction"]).to(self.gabor.dtype) @ self.gabor)[0]
        prev = torch.cat([self.prev_z[None], z[:-1]])
        self.prev_z = z[-1]
        opponent = (prev * z.conj()).imag / self.ref                                  # [f, n, c]
        a_e = math.exp(-1.0 / (ENERGY_TAU * FRAME_RATE))
        out = torch.empty_like(opponent)
        for f in range(opponent.shape[0]):
            self.energy = opponent[f] if self.energy is None else a_e * self.energy + (1 - a_e) * opponent[f]
            E = self.energy.clamp(min=0)
            out[f] = self.adapt.step(E / (E + E_HALF))
        return out
