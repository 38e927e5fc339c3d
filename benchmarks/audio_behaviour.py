"""audio_stream on its defaults: do the gates follow the onsets?

For each seed, simulates the default scenario (10 s) with a MemoryRecorder
and prints, per level: the fraction of open gates in the 0.3 s after each
annotated onset against the fraction in steady stretches (ticks more than
0.5 s from any onset or offset), the fraction of onsets followed by an
escalation from that level within 0.5 s, and the median latency of those
escalations and of the first gate opening at that level.

    .venv/bin/python benchmarks/audio_behaviour.py [--seeds 0 1 2] [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import rtnclock  # noqa: E402
from benchmarks.tables import table  # noqa: E402
from rtnclock.analysis import by_stream, gate_open_around, latencies  # noqa: E402
from scenarios import audio_stream  # noqa: E402


def measure(seed: int, duration: float, config=None) -> list[dict]:
    """Per level: gate-open near onsets and steady, escalation and gate-opening latencies."""
    cfg = config or audio_stream.default_config()
    stream = audio_stream.make_stream(cfg, duration=duration, seed=seed)
    notes = stream.annotations
    run = rtnclock.simulate(cfg, stream, recorder=rtnclock.MemoryRecorder())
    onsets = by_stream(notes["time"], notes["stream"], 1)
    changes = [np.concatenate([onsets[0], [e for e in notes["end"] if e < duration]])]
    ev = run.events
    rows = []
    for k in range(cfg.n_levels):
        traj = run.trajectory(k)
        share = gate_open_around(traj["t"].numpy(), traj["gate"].numpy(), cfg.gate_theta, onsets, changes)
        esc = latencies(by_stream([e.t for e in ev if e.kind == "escalation" and e.level == k],
                                  [e.stream for e in ev if e.kind == "escalation" and e.level == k], 1), onsets)
        opened = latencies(by_stream([e.t for e in ev if e.kind == "gate_open" and e.level == k],
                                     [e.stream for e in ev if e.kind == "gate_open" and e.level == k], 1), onsets)
        rows.append(dict(seed=seed, level=k, onsets=len(onsets[0]), near=share["onset"], steady=share["steady"],
                         escalated=np.mean(~np.isnan(esc)), esc_ms=1000 * np.nanmedian(esc) if (~np.isnan(esc)).any()
                         else float("nan"),
                         open_ms=1000 * np.nanmedian(opened) if (~np.isnan(opened)).any() else float("nan")))
    return rows


def main() -> None:
    """Print the table over the seeds asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--duration", type=float, default=audio_stream.DEFAULT_DURATION)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [r for s in args.seeds for r in measure(s, args.duration)]
    table(["seed", "level", "onsets", "gate open after onsets", "gate open steady",
                 "onsets escalated", "escalation latency ms", "gate-open latency ms"],
                [[r["seed"], r["level"], r["onsets"], f"{r['near']:.3f}", f"{r['steady']:.3f}",
                  f"{r['escalated']:.2f}", f"{r['esc_ms']:.0f}", f"{r['open_ms']:.0f}"] for r in rows])


if __name__ == "__main__":
    main()
