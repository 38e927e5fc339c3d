"""Growth in training: a tree grown from pixel_digits' small seed tree against the fixed one.

    .venv/bin/python benchmarks/growth.py [--epochs 4] [--limit N] [--lr 1e-2] [--divide 0,1]

MNIST 5k, the default pixel_digits config (4 leaves, 2 level-1 blocks, the
root), batch 64, torch on one thread, no penalty.  "fixed" trains that tree as
it is.  "grown" gives every level twice the slots (``capacity=2``) and lets
the ``--divide`` levels (default 0 and 1) divide: a block divides once its free energy has stayed above
its level's threshold for ``--window`` simulated seconds of awake time
(summed over steps).  Each level's threshold is the median block free energy
of a first forward pass on the training set, so the busier half of each level
is the one that divides.  Leaves whose gate stays under 0.05 for the window
are removed.  Per epoch: test accuracy (hard gates), cost per test image
(executed cost units, hard gates) and blocks per level; then the grown tree's
blocks per level at each change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.tables import table  # noqa: E402
from rtnclock.train import RTN  # noqa: E402
from rtnclock.trainer import TrainOptions, fit, limited  # noqa: E402
from scenarios import pixel_digits  # noqa: E402


def thresholds(cfg, frames) -> list:
    """Median per-block free energy of levels 0 and 1 on one forward pass (None for the root)."""
    rtn = RTN(cfg.replace(capacity=2.0, mitosis_threshold=0.0), pixel_digits.N_CLASSES)
    with torch.no_grad():
        out = rtn(frames[:256])
    med = []
    for k in range(cfg.K):
        ticks, _, F_sum = out.growth[k]
        alive = ticks > 0
        med.append(float((F_sum[alive] / ticks[alive]).median()))
    return med + [None]


def cost_per_image(rtn: RTN, frames, batch: int = 256) -> float:
    """Executed cost units per test image (hard gates)."""
    rtn.eval()
    cost = 0.0
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            cost += rtn(frames[i:i + batch]).run.cost()[0]
    return cost / len(frames)


def train(cfg, train_set, test_set, args, out: Path):
    """Train one RTN; its per-epoch metrics with cost per image and blocks, and its steps."""
    rtn = RTN(cfg, pixel_digits.N_CLASSES)
    torch.manual_seed(0)
    epochs = []

    def log(metrics):
        metrics["cost/image"] = cost_per_image(rtn, test_set[0])
        metrics["blocks"] = "/".join(map(str, rtn.topology.n_alive))
        epochs.append(metrics)
    fit(rtn, train_set, test_set, TrainOptions(epochs=args.epochs, lr=args.lr, penalty="none"),
        out_dir=out, log=log)
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    return epochs, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--divide", default="0,1", help="levels that may divide (comma-separated)")
    parser.add_argument("--window", type=float, default=20.0,
                        help="mitosis and apoptosis window, simulated seconds of awake time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed = pixel_digits.default_config()
    train_set, test_set = (limited(pixel_digits.dataset(seed, s), args.limit) for s in ("train", "test"))
    divide = {int(k) for k in args.divide.split(",") if k.strip()}
    med = [m if k in divide else None for k, m in enumerate(thresholds(seed, train_set[0]))]
    grown = seed.replace(capacity=2.0, mitosis_threshold=med, mitosis_window=args.window,
                         apoptosis_epsilon=[0.05, None, None], apoptosis_window=args.window)
    print(f"{len(train_set[1])} training, {len(test_set[1])} test images, lr {args.lr:g}, "
          f"window {args.window:g} s; thresholds (median block F): "
          + ", ".join("off" if m is None else f"{m:.3f}" for m in med) + "\n")
    rows, changes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in (("fixed", seed), ("grown", grown)):
            epochs, steps = train(cfg, train_set, test_set, args, Path(tmp) / name)
            rows += [[name, m["epoch"], f"{m['test_accuracy']:.2%}", f"{m['cost/image']:.4g}",
                      f"{m['sparsity']:.2%}", m["blocks"], f"{m['seconds']:.0f}"] for m in epochs]
            if name == "grown":
                changes = [[s["step"], s["epoch"], "/".join(map(str, s["blocks"])),
                            ", ".join(f"{k} L{lvl}#{slot}" for k, lvl, slot in s["changes"])]
                           for s in steps if s.get("changes")]
    table(["tree", "epoch", "test acc", "cost/image", "sparsity", "blocks", "s"], rows)
    print()
    table(["step", "epoch", "blocks after", "changes"], changes or [["-", "-", "-", "none"]])


if __name__ == "__main__":
    main()
