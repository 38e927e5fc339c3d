"""Real-time factor of ``rtnclock run audio_stream`` on its defaults, with and without recording.

The goal (issue 4): at least 20x faster than real time on a 2-core CPU.  Each
round runs the default 10 s scene three ways, in rotating order: in-process
``simulate`` with no recorder, with the Zarr store (the run's wall time
includes ``close``, which waits until everything is on disk), and the
whole command ``rtnclock run audio_stream --out ...`` in a fresh process
(interpreter start and imports included).  Each run writes a new store, as a
first run does (replacing an old one would add its removal).  The scene is rendered lazily,
chunk by chunk, inside the run, so its cost is in every figure.  Rows are
medians over rounds.

    .venv/bin/python benchmarks/realtime.py [--rounds 5] [--duration 10]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import rtnclock  # noqa: E402
from benchmarks.tables import table  # noqa: E402
from scenarios import audio_stream  # noqa: E402


_runs = itertools.count()


def _new_store(tmp: str) -> str:
    return os.path.join(tmp, f"run-{next(_runs)}.zarr")


def _in_process(duration: float, store: str | None) -> float:
    cfg = audio_stream.default_config()
    recorder = rtnclock.ZarrRecorder(store) if store else None
    began = time.perf_counter()
    rtnclock.simulate(cfg, audio_stream.make_stream(cfg, duration=duration), recorder=recorder)
    return time.perf_counter() - began


def _command(duration: float, store: str) -> float:
    exe = os.path.join(os.path.dirname(sys.executable), "rtnclock")
    began = time.perf_counter()
    subprocess.run([exe, "run", "audio_stream", "--duration", str(duration), "--out", store, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=audio_stream.DEFAULT_DURATION)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        _in_process(2.0, None)                                  # warm the imports and caches
        _in_process(2.0, _new_store(tmp))
        ways = {"simulate, no recorder": lambda: _in_process(args.duration, None),
                "simulate, Zarr store": lambda: _in_process(args.duration, _new_store(tmp)),
                "rtnclock run --out (whole command)": lambda: _command(args.duration, _new_store(tmp))}
        times = {name: [] for name in ways}
        names = list(ways)
        for r in range(args.rounds):
            for name in names[r % 3:] + names[:r % 3]:
                times[name].append(ways[name]())
    base = statistics.median(times[names[0]])
    rows = []
    for name in names:
        wall = statistics.median(times[name])
        rows.append([name, f"{wall:.3f}", f"{args.duration / wall:.1f}x", f"{wall / base:.2f}"])
    print(f"audio_stream defaults, {args.duration:g} simulated s, median of {args.rounds} rounds, "
          f"{torch.get_num_threads()} torch thread")
    table(["run", "wall s", "real-time factor", "vs no recorder"], rows)


if __name__ == "__main__":
    main()
