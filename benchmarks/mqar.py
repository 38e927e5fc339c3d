"""mqar (seed 002, Fig. 4): recall accuracy against sequence length, gated leaves vs inertial-only.

    .venv/bin/python benchmarks/mqar.py [--pairs 1 2 4 8] [--epochs 20] [--lr 1e-2]

Each sequence shows ``n_pairs`` key-value pairs, one query key and one blank
frame; the label is the queried key's value (8 values, chance 12.5%).  The
gated model is mqar's default config, trained without a penalty; the
inertial-only model has its leaves' gates forced shut (``gate_mode`` closed at
level 0: no geometric core, no attention over the leaves' past).  2,048
training and 512 test sequences, batch 64, torch on one thread.  Prints test
accuracy per length and the gated leaves' gate-open rate on the test set.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.tables import table  # noqa: E402
from rtnclock.train import RTN  # noqa: E402
from rtnclock.trainer import TrainOptions, fit  # noqa: E402
from scenarios import mqar  # noqa: E402


def run(cfg, pairs: int, args) -> dict:
    """Train one model on ``pairs`` pairs; its last epoch's metrics (test accuracy, hard gates)."""
    data = {s: mqar.dataset(cfg, s, n_pairs=pairs, n_queries=1) for s in ("train", "test")}
    torch.manual_seed(0)
    options = TrainOptions(epochs=args.epochs, lr=args.lr, penalty="none")
    return fit(RTN(cfg, mqar.N_CLASSES), data["train"], data["test"], options, log=lambda m: None)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gated = mqar.default_config()
    inertial = mqar.default_config(gate_mode=("closed", "free", "free"))
    rows = []
    for pairs in args.pairs:
        g, i = run(gated, pairs, args), run(inertial, pairs, args)
        rows.append([pairs, mqar.sequence_length(pairs, 1, mqar.DEFAULT_BLANK), f"{100 * g['test_accuracy']:.1f}%",
                     f"{100 * i['test_accuracy']:.1f}%", f"{100 * g['gate_open'][0]:.1f}%"])
        print(f"pairs {pairs}: gated {100 * g['test_accuracy']:.1f}%, inertial {100 * i['test_accuracy']:.1f}%",
              flush=True)
    print(f"\n## mqar: test accuracy after {args.epochs} epochs (chance 12.5%)\n")
    table(["pairs", "frames", "gated leaves", "inertial only", "leaf gates open (gated, test)"], rows)


if __name__ == "__main__":
    main()
