"""Host cost of audio_stream's input: synthetic scenes and their mel front end, per batch size.

The scenario's frames are made on the CPU whatever device the simulation runs
on, so at large batches (``rtnclock run audio_stream --device cuda --batch
1024``) they bound the run's real-time factor.  For each batch size B the
stream is made chunk by chunk, as a run asks for it (25 frames = 4,000
samples at a time): the time inside the scenes' waveforms
(``audio_scene.render``) and the whole stream's (waveforms, front end,
adaptation), from the same pass.  Rows are medians over rounds; 'stream-s
per s' is simulated stream-seconds of frames made per second of wall time.

    .venv/bin/python benchmarks/audio_render.py [--batches 1,16,256,1024] [--duration 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.tables import table  # noqa: E402
from rtnclock.scenarios import audio_scene, audio_stream  # noqa: E402


def _stream(B: int, duration: float) -> tuple[float, float]:
    """Seconds in ``audio_scene.render`` and in all, making one stream's frames."""
    real, inside, depth = audio_scene.render, [0.0], [0]

    def timed(*args):
        depth[0] += 1                          # render calls itself for row groups: time the outer call
        began = time.perf_counter()
        try:
            return real(*args)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                inside[0] += time.perf_counter() - began

    audio_scene.render = timed
    try:
        stream = audio_stream.make_stream(audio_stream.default_config(), duration=duration, batch=B)
        began = time.perf_counter()
        stream.frames                                      # every chunk, in order
        return inside[0], time.perf_counter() - began
    finally:
        audio_scene.render = real


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,256,1024")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print(f"## audio_stream input on the CPU ({torch.get_num_threads()} torch threads, "
          f"{args.duration:g} s per stream, medians of {args.rounds} rounds)\n")
    rows = []
    for B in batches:
        render, whole = zip(*(_stream(B, args.duration) for _ in range(args.rounds)))
        r, w = statistics.median(render), statistics.median(whole)
        rows.append([B, r, statistics.median(x - y for x, y in zip(whole, render)), w, 1e3 * w / B,
                     B * args.duration / w])
    table(["B", "waveforms s", "front end + adaptation s", "stream s", "ms per stream", "stream-s per s"], rows)


if __name__ == "__main__":
    main()
