"""Behaviour around annotated events: gate openings near onsets vs steady stretches, latencies.

Works on plain arrays, so the same numbers come from an in-memory run
(``MemoryRecorder``) or a stored one (``open_run``): per level, tick times
``t [T]`` and gates ``[T, B, n_k]``; per stream, onset times and the times of
every change (onsets and offsets).
"""

from __future__ import annotations

import numpy as np

#: Seconds after an onset that count as "around" it.
AFTER = 0.3
#: A tick is steady when no change (onset or offset) happened in the ``QUIET``
#: seconds before it (three adaptation time constants) ...
QUIET = 0.5
#: ... and none comes within ``LEAD`` seconds after it (a window closing just
#: before an onset already holds some of it).
LEAD = 0.05


def _near(t: np.ndarray, marks: np.ndarray, before: float, after: float) -> np.ndarray:
    """``[T]`` bool: ``t`` falls in ``[m - before, m + after]`` for some mark ``m``."""
    if marks.size == 0:
        return np.zeros(t.shape, dtype=bool)
    marks = np.sort(marks)
    i = np.searchsorted(marks, t - after, side="left")         # first mark >= t - after
    ok = i < marks.size
    return ok & (marks[np.minimum(i, marks.size - 1)] <= t + before)


def gate_open_around(t, gates, theta: float, onsets: list, changes: list, *, after: float = AFTER,
                     quiet: float = QUIET, lead: float = LEAD) -> dict:
    """Fraction of open gates in the ``after`` seconds following onsets vs in steady stretches.

    Args:
        t: tick times ``[T]`` (s).
        gates: gate values ``[T, B, n]``.
        theta: a gate is open when above it.
        onsets: per stream ``b``, its onset times.
        changes: per stream, every change (onsets and offsets); a tick less than
            ``quiet`` after one or ``lead`` before one is not steady.

    Returns:
        ``{"onset": fraction, "steady": fraction, "onset_ticks": count, "steady_ticks": count}``
        (fractions are NaN when no tick qualifies).
    """
    t = np.asarray(t, dtype=np.float64)
    is_open = (np.asarray(gates) > theta).mean(axis=-1)        # [T, B]
    near_sum = near_n = steady_sum = steady_n = 0.0
    for b in range(is_open.shape[1]):
        near = _near(t, np.asarray(onsets[b], dtype=np.float64), 0.0, after)
        steady = ~_near(t, np.asarray(changes[b], dtype=np.float64), lead, quiet)
        near_sum, near_n = near_sum + is_open[near, b].sum(), near_n + near.sum()
        steady_sum, steady_n = steady_sum + is_open[steady, b].sum(), steady_n + steady.sum()
    return {"onset": near_sum / near_n if near_n else float("nan"),
            "steady": steady_sum / steady_n if steady_n else float("nan"),
            "onset_ticks": int(near_n), "steady_ticks": int(steady_n)}


def latencies(event_times, onsets, *, horizon: float = 0.5) -> np.ndarray:
    """Per onset, seconds to the first event at or after it within ``horizon`` (NaN if none).

    Args:
        event_times: per stream, sorted times of the events (e.g. a level's escalations).
        onsets: per stream, onset times.
    """
    out = []
    for ev, on in zip(event_times, onsets):
        ev = np.sort(np.asarray(ev, dtype=np.float64))
        for t in on:
            i = np.searchsorted(ev, t - 1e-9)
            out.append(ev[i] - t if i < ev.size and ev[i] - t <= horizon else np.nan)
    return np.asarray(out, dtype=np.float64)


def by_stream(times, streams, batch: int) -> list[np.ndarray]:
    """Split event times into one sorted array per stream ``0 .. batch-1``."""
    times, streams = np.asarray(times, dtype=np.float64), np.asarray(streams)
    return [np.sort(times[streams == b]) for b in range(batch)]
