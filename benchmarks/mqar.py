"""mqar (seed 002, Fig. 4): recall accuracy against sequence length, gated leaves vs inertial-only.

    .venv/bin/python benchmarks/mqar.py [--pairs 1 2 4 8] [--epochs 20] [--lr 1e-2] [--lam 0.1]

Each sequence shows ``n_pairs`` key-value pairs, one query key and one blank
frame; the label is the queried key's value (8 values, chance 12.5%).  The
gated model is mqar's default config, trained without a penalty and with
seed 002's penalty on the leaf units' gates (``--penalty leaf``, ``lam``);
the inertial-only model has its leaves' gates forced shut (``gate_mode``
closed at level 0: no geometric core, no attention over the leaves' past).
2,048 training and 512 test sequences, batch 64, torch on one thread.
Prints test accuracy per length and the leaves' gate-open rate on the test
set (hard gates).
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


def run(cfg, pairs: int, args, penalty: str = "none") -> dict:
    """Train one model on ``pairs`` pairs; its last epoch's metrics (test accuracy, hard gates)."""
    data = {s: mqar.dataset(cfg, s, n_pairs=pairs, n_queries=1) for s in ("train", "test")}
    torch.manual_seed(0)
    options = TrainOptions(epochs=args.epochs, lr=args.lr, penalty=penalty, lam=args.lam)
    return fit(RTN(cfg, mqar.N_CLASSES), data["train"], data["test"], options, log=lambda m: None)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lam", type=float, default=0.1, help="the leaf gates' penalty")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gated = mqar.default_config()
    inertial = mqar.default_config(gate_mode=("closed", "free", "free"))
    rows = []
    pct = lambda x: f"{100 * x:.1f}%"                                   # noqa: E731
    for pairs in args.pairs:
        g, p, i = run(gated, pairs, args), run(gated, pairs, args, "leaf"), run(inertial, pairs, args)
        rows.append([pairs, mqar.sequence_length(pairs, 1, mqar.DEFAULT_BLANK), pct(g["test_accuracy"]),
                     pct(g["gate_open"][0]), pct(p["test_accuracy"]), pct(p["gate_open"][0]), pct(p["sparsity"]),
                     pct(i["test_accuracy"])])
        print(f"pairs {pairs}: gated {pct(g['test_accuracy'])}, with the leaf penalty {pct(p['test_accuracy'])} "
              f"({pct(p['gate_open'][0])} open), inertial {pct(i['test_accuracy'])}", flush=True)
    print(f"\n## mqar: test accuracy after {args.epochs} epochs (chance 12.5%)\n")
    table(["pairs", "frames", "gated leaves", "leaf gates open", f"gated, leaf penalty {args.lam:g}",
           "leaf gates open", "sparsity", "inertial only"], rows)


if __name__ == "__main__":
    main()
