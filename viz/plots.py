"""Clock-coupling plots of a stored run: ``plot_*(run) -> matplotlib.figure.Figure``.

Every function takes a run from :func:`rtnclock.open_run` and an optional time
window (``start``, ``end`` in seconds) and stream index, and draws on a new
``Figure`` without pyplot (headless by construction, safe in threads).  Long
runs stay light: line plots are reduced to at most :data:`MAX_POINTS` points
(the min and max of each bin, so spikes survive), per-block gates are drawn as
one image, and individual tick marks only when few enough to see.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from . import pac

#: Most points a line keeps (min/max pairs of equal time bins beyond it).
MAX_POINTS = 4000
#: Most tick marks drawn per level; beyond it the tick period is written instead.
MAX_TICK_MARKS = 600
KINDS = ("raster", "traces", "coupling", "gates", "cost", "rank")
_LEVEL_COLOURS = ("#1b6ca8", "#e08214", "#2d9e4f", "#b2182b", "#7b3294", "#636363", "#8c510a")


def _colour(k: int) -> str:
    return _LEVEL_COLOURS[k % len(_LEVEL_COLOURS)]


def _window(ds, start, end):
    """The dataset's rows with ``start <= time <= end`` (either bound may be None)."""
    if start is None and end is None:
        return ds
    return ds.sel(time=slice(start, end))


def _span(run, start, end) -> tuple[float, float]:
    """The time range plotted: the window asked for, clipped to what the run holds."""
    ends = [float(ds["time"][-1]) for ds in run.levels.values() if ds.sizes["time"]]
    t1 = max(ends) if ends else 1.0
    return (0.0 if start is None else start), (t1 if end is None else min(end, t1))


def decimate(t: np.ndarray, y: np.ndarray, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` (default :data:`MAX_POINTS`) points of ``y(t)``: the min and max
    of equal time bins, in time order.  NaN gaps survive (a bin of NaN stays NaN)."""
    max_points = MAX_POINTS if max_points is None else max_points
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    if t.size <= max_points:
        return t, y
    bins = max_points // 2
    edges = np.linspace(0, t.size, bins + 1).astype(int)
    tt, yy = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = y[a:b]
        if np.isnan(seg).all():
            tt.append(t[a])
            yy.append(np.nan)
            continue
        i, j = int(np.nanargmin(seg)), int(np.nanargmax(seg))
        for k in sorted((i, j)):
            tt.append(t[a + k])
            yy.append(seg[k])
    return np.asarray(tt), np.asarray(yy)


def _level_label(run, k: int) -> str:
    periods = run.config.resolved("periods")
    return f"level {k} (Δ {periods[k] * 1000:g} ms)"


# ---- 1. clock raster ------------------------------------------------------------

def plot_raster(run, *, start: float | None = None, end: float | None = None, stream: int = 0) -> Figure:
    """Every level's ticks, gate openings and escalations on one time axis, over the input.

    Top: the input features (frames x leaf channels, low leaves at the bottom)
    with the ground-truth annotations.  Below, one lane per level (slowest on
    top): the open gates of its recorded blocks as an image, escalations as
    red triangles, and its ticks as marks along the lane's foot.
    """
    t0, t1 = _span(run, start, end)
    K = run.config.n_levels
    fig = Figure(figsize=(12, 2.2 + 1.1 * K), layout="constrained")
    axes = fig.subplots(K + 1, 1, sharex=True, gridspec_kw={"height_ratios": [2.2] + [1] * K})
    _spectrogram(axes[0], run, t0, t1, stream)
    events = run.events
    for row, k in enumerate(reversed(range(K))):
        ax = axes[row + 1]
        ds = _window(run.levels[k], t0, t1) if k in run.levels else None
        marks = False
        if ds is not None and ds.sizes["time"]:
            gate = ds["gate"].isel(batch=stream).values > run.config.gate_theta       # [T, blocks]
            t = ds["time"].values
            step = max(1, math.ceil(t.size / MAX_POINTS))
            ax.imshow(gate[::step].T, aspect="auto", origin="lower", interpolation="nearest",
                      extent=(t[0], t[-1], -0.5, gate.shape[1] - 0.5), cmap="Greys", vmin=0, vmax=1.6)
            marks = t.size <= MAX_TICK_MARKS
            if marks:
                ax.plot(t, np.full(t.size, -0.5), "|", color=_colour(k), ms=5, mew=0.8, clip_on=False)
            blocks = ds["block"].values
            ax.set_yticks([0, gate.shape[1] - 1], [str(blocks[0]), str(blocks[-1])])
        esc = events.where((events["kind"] == "escalation") & (events["level"] == k)
                           & (events["stream"] == stream) & (events["time"] >= t0) & (events["time"] <= t1),
                           drop=True)
        if esc.sizes["event"]:
            rows = _block_rows(ds, esc["block"].values) if ds is not None else esc["block"].values
            ax.plot(esc["time"].values, rows, "^", color="#d7301f", ms=4, label="escalation")
        ax.set_ylabel(f"L{k} block", fontsize=8)
        ticks = "ticks (|)" if ds is not None and ds.sizes["time"] and marks else "ticks too dense to mark"
        ax.set_title(f"{_level_label(run, k)}: open gates (dark), escalations (▲), {ticks}",
                     fontsize=8, loc="left")
    axes[-1].set_xlim(t0, t1)
    axes[-1].set_xlabel("time (s)")
    return fig


def _block_rows(ds, blocks: np.ndarray) -> np.ndarray:
    """Row of each block in the level's recorded-block image (nearest recorded block)."""
    recorded = ds["block"].values
    return np.abs(recorded[None, :] - np.asarray(blocks)[:, None]).argmin(1)


def _spectrogram(ax, run, t0: float, t1: float, stream: int) -> None:
    sens = run.sensory
    if sens is None or not sens.sizes.get("frame"):
        ax.text(0.5, 0.5, "no input stored", ha="center", va="center", transform=ax.transAxes)
        return
    t = sens["time"].values
    sel = (t >= t0) & (t <= t1)
    feats = sens["features"].isel(batch=stream).values[sel]                # [F, leaf, channel]
    img = feats.reshape(feats.shape[0], -1)
    step = max(1, math.ceil(img.shape[0] / MAX_POINTS))
    ts = t[sel]
    im = ax.imshow(img[::step].T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                   extent=(ts[0], ts[-1], -0.5, img.shape[1] - 0.5))
    fig = ax.get_figure()
    fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03, label="feature")
    ax.set_ylabel("leaf channel\n(low → high)", fontsize=8)
    ax.set_title(f"input ({sens.attrs.get('source', 'stream')}) and annotations", fontsize=8, loc="left")
    notes = run.annotations
    if notes is not None and notes.sizes.get("annotation"):
        mine = notes.where((notes["stream"] == stream) & (notes["time"] >= t0) & (notes["time"] <= t1),
                           drop=True)
        kinds = sorted(set(mine["kind"].values.tolist())) if mine.sizes["annotation"] else []
        for i, kind in enumerate(kinds):
            times = mine["time"].values[mine["kind"].values == kind]
            colour = f"C{i % 10}"
            ax.vlines(times, -0.5, img.shape[1] - 0.5, colors=colour, lw=0.9, alpha=0.9, label=kind)
        if kinds:
            ax.legend(loc="upper right", fontsize=7, ncol=min(len(kinds), 7), framealpha=0.8,
                      title="onsets", title_fontsize=7)


# ---- 2. stacked level traces ------------------------------------------------------

def plot_traces(run, *, start: float | None = None, end: float | None = None, stream: int = 0,
                components: int = 3) -> Figure:
    """A few state components of one block per level, stacked: each level's time scale."""
    t0, t1 = _span(run, start, end)
    levels = sorted(run.levels, reverse=True)
    fig = Figure(figsize=(12, 1.6 + 1.5 * len(levels)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(levels), 1, sharex=True))
    taus = run.config.resolved("taus")
    for ax, k in zip(axes, levels):
        ds = _window(run.levels[k], t0, t1)
        if not ds.sizes["time"] or "state" not in ds:
            ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        state = ds["state"].isel(batch=stream, block=0).values                 # [T, dim]
        t = ds["time"].values
        for c in range(min(components, state.shape[1])):
            tt, yy = decimate(t, state[:, c])
            ax.plot(tt, yy, lw=0.9, color=_colour(k), alpha=1.0 - 0.25 * c, label=f"h[{c}]")
        ax.set_ylabel(f"L{k} state", fontsize=8)
        ax.set_title(f"{_level_label(run, k)}, τ {taus[k] * 1000:g} ms, block {int(ds['block'][0])}",
                     fontsize=8, loc="left")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncol=components, frameon=False,
                  borderaxespad=0.1)
    axes[-1].set_xlim(t0, t1)
    axes[-1].set_xlabel("time (s)")
    return fig


# ---- 3. cross-frequency coupling ----------------------------------------------------

def level_signals(ds, stream: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, x, a)`` of one level: its slow signal and its activity amplitude at its ticks.

    ``x`` is the block-mean state projected on its first principal component
    (the level's dominant slow variable, whose phase is taken); ``a`` is the
    root-mean-square deviation of every recorded block's state from its time
    mean (how active the level is at each tick).
    """
    t = ds["time"].values.astype(float)
    h = ds["state"].isel(batch=stream).values.astype(float)                   # [T, blocks, dim]
    mean = h.mean(1)
    centred = mean - mean.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    x = centred @ vt[0]
    a = np.sqrt(((h - h.mean(0)) ** 2).mean((1, 2)))
    return t, x, a


def coupling_table(run, *, start: float | None = None, end: float | None = None, stream: int = 0,
                   n_surrogates: int = 200) -> list[dict]:
    """Per pair (slow level i > fast level j): Tort's MI of i's phase vs j's amplitude, with surrogates."""
    signals = {}
    for k, ds in run.levels.items():
        ds = _window(ds, start, end)
        if "state" in ds and ds.sizes["time"] >= 40:
            signals[k] = level_signals(ds, stream)
    out = []
    for i in sorted(signals, reverse=True):
        for j in sorted(signals):
            if i <= j:
                continue
            ts, xs, _ = signals[i]
            tf, _, af = signals[j]
            try:
                res = pac.coupling(ts, xs, tf, af, n_surrogates=n_surrogates)
            except ValueError:
                continue                           # too few overlapping samples
            out.append(dict(slow=i, fast=j, **res))
    return out


def plot_coupling(run, *, start: float | None = None, end: float | None = None, stream: int = 0,
                  n_surrogates: int = 200) -> Figure:
    """Slow-level phase vs fast-level amplitude: comodulogram and phase–amplitude histograms.

    Left: the modulation index (Tort et al. 2010) for every pair of levels,
    starred where it beats all its time-shift surrogates (p < 0.05).  Right:
    each pair's mean fast amplitude per slow phase bin, normalised.
    """
    rows = coupling_table(run, start=start, end=end, stream=stream, n_surrogates=n_surrogates)
    K = run.config.n_levels
    fig = Figure(figsize=(12, 2.8 + 1.2 * max(len(rows), 1)), layout="constrained")
    grid = fig.add_gridspec(max(len(rows), 1), 2, width_ratios=[1, 1.6])
    ax = fig.add_subplot(grid[:, 0])
    mi = np.full((K, K), np.nan)
    for r in rows:
        mi[r["slow"], r["fast"]] = r["mi"]
    im = ax.imshow(mi, origin="lower", cmap="viridis", vmin=0)
    for r in rows:
        star = "*" if r["p_value"] < 0.05 else ""
        ax.text(r["fast"], r["slow"], f"{r['mi']:.2g}{star}\nz={r['z']:.1f}", ha="center", va="center",
                fontsize=8, color="w")
    ax.set_xticks(range(K), [f"L{k}" for k in range(K)])
    ax.set_yticks(range(K), [f"L{k}" for k in range(K)])
    ax.set_xlabel("amplitude of (fast level)")
    ax.set_ylabel("phase of (slow level)")
    ax.set_title("modulation index (* p < 0.05 vs surrogates)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="MI")
    if not rows:
        ax.text(0.5, 0.5, "too short for coupling", ha="center", va="center", transform=ax.transAxes)
    for n, r in enumerate(rows):
        hx = fig.add_subplot(grid[n, 1])
        p = np.asarray(r["p"])
        centres = np.degrees(-math.pi + (np.arange(p.size) + 0.5) * 2 * math.pi / p.size)
        hx.bar(centres, p, width=360 / p.size * 0.9, color=_colour(r["fast"]))
        hx.axhline(1 / p.size, color="k", lw=0.7, ls="--")
        hx.set_xlim(-180, 180)
        hx.set_xticks([-180, -90, 0, 90, 180])
        hx.set_ylabel("share", fontsize=8)
        hx.set_title(f"L{r['slow']} phase → L{r['fast']} amplitude: MI {r['mi']:.3g}, z {r['z']:.1f}, "
                     f"p {r['p_value']:.3g} ({r['n']} samples)", fontsize=8, loc="left")
        if n == len(rows) - 1:
            hx.set_xlabel("slow-level phase (degrees)")
    return fig


# ---- 4. gates, surprise and free energy ---------------------------------------------

def plot_gates(run, *, start: float | None = None, end: float | None = None) -> Figure:
    """Gate-open fraction, surprise ``U`` and free energy ``F`` per level over time.

    ``U`` and ``F`` are means over a level's active blocks: where none of its
    recorded blocks is active the level is dormant and its line breaks.
    """
    t0, t1 = _span(run, start, end)
    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    for name, label, ax in (("open_fraction", "gate-open fraction", axes[0]), ("U", "surprise U", axes[1]),
                            ("F", "free energy F = U − τS", axes[2])):
        for k in sorted(run.levels):
            ds = _window(run.levels[k], t0, t1)
            if ds.sizes["time"]:
                y = ds[name].values.astype(float)
                if name != "open_fraction" and "active" in ds:
                    y = np.where(ds["active"].values.any(axis=(1, 2)), y, np.nan)
                tt, yy = decimate(ds["time"].values, y)
                ax.plot(tt, yy, lw=0.8, color=_colour(k), label=_level_label(run, k))
        ax.set_ylabel(label, fontsize=9)
    axes[0].set_ylim(-0.03, 1.03)
    # Above the first panel, beside its title: inside it would cover the lines.
    axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=len(run.levels), frameon=False,
                   borderaxespad=0.1)
    axes[0].set_title("per tick, over every block of the level", fontsize=8, loc="left")
    axes[-1].set_xlim(t0, t1)
    axes[-1].set_xlabel("time (s)")
    return fig


# ---- 5. compute cost and sparsity -------------------------------------------------

def plot_cost(run, *, start: float | None = None, end: float | None = None) -> Figure:
    """Cumulative compute cost per level against full execution, and the sparsity over time."""
    t0, t1 = _span(run, start, end)
    fig = Figure(figsize=(12, 6), layout="constrained")
    ax, sx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    tot_t, tot_c, tot_f = [], [], []
    for k in sorted(run.levels):
        ds = _window(run.levels[k], t0, t1)
        if not ds.sizes["time"]:
            continue
        t = ds["time"].values
        c, f = np.cumsum(ds["cost"].values), np.cumsum(ds["full_cost"].values)
        for y, style, what in ((c, "-", "run"), (f, "--", "full")):
            tt, yy = decimate(t, y)
            ax.plot(tt, yy, style, lw=1.0, color=_colour(k),
                    label=f"{_level_label(run, k)}, {what}" if what == "run" else f"L{k} full execution")
        tot_t.append(t)
        tot_c.append(ds["cost"].values)
        tot_f.append(ds["full_cost"].values)
        spars = 1 - c / np.where(f > 0, f, np.nan)
        tt, yy = decimate(t, spars)
        sx.plot(tt, yy, lw=0.9, color=_colour(k))
    if tot_t:
        cost, full = sum(float(c.sum()) for c in tot_c), sum(float(f.sum()) for f in tot_f)
        ax.set_title(f"cost units (multiply-adds); whole run: {cost:.3g} of {full:.3g}, "
                     f"sparsity {1 - cost / full if full else 0:.3f}", fontsize=9, loc="left")
    ax.set_yscale("log")
    ax.set_ylabel("cumulative cost")
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    sx.set_ylabel("sparsity so far")
    sx.set_ylim(-0.03, 1.03)
    sx.set_xlim(t0, t1)
    sx.set_xlabel("time (s)")
    return fig


# ---- 6. effective rank --------------------------------------------------------------

def plot_rank(run, *, start: float | None = None, end: float | None = None) -> Figure:
    """Effective rank of each level's block states over time, against its ceiling."""
    t0, t1 = _span(run, start, end)
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax = fig.subplots()
    dims = run.config.resolved("dims")
    for k in sorted(run.levels):
        ds = _window(run.levels[k], t0, t1)
        if not ds.sizes["time"]:
            continue
        tt, yy = decimate(ds["time"].values, ds["effective_rank"].values)
        ax.plot(tt, yy, lw=0.9, color=_colour(k), label=_level_label(run, k))
        ceiling = min(ds.sizes["batch"] * run.config.blocks(k), dims[k])
        ax.axhline(ceiling, color=_colour(k), lw=0.7, ls=":")
    ax.set_ylabel("effective rank (exp entropy of singular values)")
    ax.set_xlabel("time (s)")
    ax.set_xlim(t0, t1)
    ax.set_title("of the [streams x blocks, dim] state matrix; dotted: its ceiling, min(rows, dim)",
                 fontsize=8, loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=len(run.levels), frameon=False,
              borderaxespad=0.1)
    return fig


PLOTS = {"raster": plot_raster, "traces": plot_traces, "coupling": plot_coupling, "gates": plot_gates,
         "cost": plot_cost, "rank": plot_rank}
