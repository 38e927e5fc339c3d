"""Cost of a training step: RTN (direct backprop, adjoint) against a GRU; peak memory; prints tables.

    .venv/bin/python benchmarks/training.py [--steps 10]

pixel_digits (MNIST 5k rows, one 28-pixel row per frame), batch 64, torch on
one thread.  A step is forward, loss, backward and an Adam update.  The GRU
(hidden 33, a linear readout) has about the RTN's parameter count and reads
the same frames, one row per step.  Peak memory is the resident set of a
fresh process during three steps over its resident set before them (the peak
is reset after loading the data), for sequences of 1 and 4 images (28 and
112 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.tables import table  # noqa: E402
from rtnclock.train import RTN, cost_penalty  # noqa: E402
from scenarios import pixel_digits  # noqa: E402

BATCH = 64


class GRUClassifier(nn.Module):
    """A GRU over the rows and a linear readout of its last hidden state."""

    def __init__(self, inputs: int, hidden: int, classes: int):
        super().__init__()
        self.gru = nn.GRU(inputs, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, classes)

    def forward(self, rows):
        out, _ = self.gru(rows)
        return self.readout(out[:, -1])


def data(images: int):
    """A minibatch of ``images`` digits per stream, back to back: RTN frames, GRU rows, labels."""
    cfg = pixel_digits.default_config()
    frames, labels = pixel_digits.dataset(cfg, "train")
    frames = frames[:BATCH * images].reshape(BATCH, images * frames.shape[1], *frames.shape[2:])
    return cfg, frames, frames.reshape(BATCH, frames.shape[1], -1), labels[:BATCH * images:images]


def step_fn(kind: str, images: int):
    """A function running one training step of ``kind`` (rtn, rtn-adjoint, gru)."""
    torch.manual_seed(0)
    cfg, frames, rows, labels = data(images)
    if kind == "gru":
        model = GRUClassifier(rows.shape[-1], 33, 10)
        forward = lambda: nn.functional.cross_entropy(model(rows), labels)          # noqa: E731
    else:
        model = RTN(cfg, 10, adjoint=kind == "rtn-adjoint")

        def forward():
            out = model(frames)
            return nn.functional.cross_entropy(out.readout, labels) + cost_penalty(out, 0.01)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        loss = forward()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, step


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(kind: str, images: int, steps: int) -> None:
    """In a fresh process: resident set before the steps and its peak during them (KiB), as JSON."""
    torch.set_num_threads(1)
    _, step = step_fn(kind, images)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                            # reset the peak: loading the data set peaked higher
    before = _status("VmRSS")
    for _ in range(steps):
        step()
    print(json.dumps(dict(before=before, after=_status("VmHWM"))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (median)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]))
    torch.set_num_threads(1)
    print(f"## Time per training step (pixel_digits, batch {BATCH}, one image of 28 rows per stream)\n")
    rows, gru_s = [], None
    for kind in ("gru", "rtn", "rtn-adjoint"):
        model, step = step_fn(kind, 1)
        step()                                                   # warm up
        times = []
        for _ in range(args.steps):
            began = time.perf_counter()
            step()
            times.append(time.perf_counter() - began)
        sec = statistics.median(times)
        gru_s = sec if kind == "gru" else gru_s
        rows.append([kind, sum(p.numel() for p in model.parameters()), sec * 1e3, sec / gru_s])
    table(["model", "parameters", "ms per step", "vs GRU"], rows)
    print("RTN: the multi-clock simulation with soft gates (every fine path runs in training), "
          "cross-entropy plus the cost penalty.\n")

    print("## Peak memory of three training steps (peak resident set over the set before them, MiB)\n")
    rows = []
    for images in (1, 4):
        row = [images * 28]
        for kind in ("rtn", "rtn-adjoint", "gru"):
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(images), "3"], check=True,
                                 capture_output=True, text=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            row.append((got["after"] - got["before"]) / 1024)
        rows.append(row)
    table(["rows per stream", "RTN direct", "RTN adjoint", "GRU"], rows)


if __name__ == "__main__":
    main()
