"""Host cost of audio_stream's input: synthetic scenes and their mel front end, per batch size.

The scenario's frames are made on the CPU whatever device the simulation runs
on, so at large batches (``rtnclock run audio_stream --device cuda --batch
1024``) they bound the run's real-time factor.  For each batch size B the
stream is made chunk by chunk, as a run asks for it (25 frames = 4,000
samples at a time), and timed two ways in each round: the scenes' waveforms
alone (``audio_scene.render``), and the whole stream (waveform, front end,
adaptation).  Rows are medians over rounds; 'stream-s per s' is simulated
stream-seconds of frames made per second of wall time.

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


def _render(B: int, duration: float) -> float:
    scenes = [audio_scene.Scene(audio_scene.score(duration, b), b) for b in range(B)]
    n = int(duration * audio_scene.SAMPLE_RATE)
    began = time.perf_counter()
    for s0 in range(0, n, audio_stream.BLOCK):
        audio_scene.render(scenes, s0, min(s0 + audio_stream.BLOCK, n))
    return time.perf_counter() - began


def _stream(B: int, duration: float) -> float:
    cfg = audio_stream.default_config()
    stream = audio_stream.make_stream(cfg, duration=duration, batch=B)
    began = time.perf_counter()
    stream.frames                                          # every chunk, in order
    return time.perf_counter() - began


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
        render, whole = [], []
        for _ in range(args.rounds):
            render.append(_render(B, args.duration))
            whole.append(_stream(B, args.duration))
        r, w = statistics.median(render), statistics.median(whole)
        rows.append([B, r, w - r, w, 1e3 * w / B, B * args.duration / w])
    table(["B", "waveforms s", "front end + adaptation s", "stream s", "ms per stream", "stream-s per s"], rows)


if __name__ == "__main__":
    main()
