"""Seed 000's MNIST table on pixel_digits: test accuracy, sparsity and gate-open per epoch, against full execution.

    .venv/bin/python benchmarks/pixel_digits.py [--epochs 8] [--lr 1e-2] [--lam-leaf 1.0] [--lam-cost 0.5] [--limit N]

MNIST 5k (4,000 training and 1,000 test images, one pixel row per frame),
the default 3-level pixel_digits config, batch 64, torch on one thread.  The
gated RTN trains twice: with seed 002's penalty on the leaf units' gates
(``--penalty leaf``) and with seed 000's cost penalty (``--penalty cost``);
"full execution" is the same model with every gate forced open
(``gate_mode="open"``, no penalty), the seed's baseline.  Test metrics use
hard gates.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from rtnclock.train import RTN  # noqa: E402
from rtnclock.trainer import TrainOptions, limited, fit, table  # noqa: E402
from scenarios import pixel_digits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lam-leaf", type=float, default=1.0)
    parser.add_argument("--lam-cost", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, changes, penalty, lam in (("gated RTN, leaf penalty", {}, "leaf", args.lam_leaf),
                                        ("gated RTN, cost penalty", {}, "cost", args.lam_cost),
                                        ("full execution (gates open)", {"gate_mode": "open"}, "none", 0.0)):
        cfg = pixel_digits.default_config(**changes)
        train, test = (limited(pixel_digits.dataset(cfg, s), args.limit) for s in ("train", "test"))
        options = TrainOptions(epochs=args.epochs, lr=args.lr, lam=lam, penalty=penalty)
        torch.manual_seed(0)
        history = fit(RTN(cfg, pixel_digits.N_CLASSES), train, test, options, log=lambda m: None)
        print(f"## {name}: {len(train[1])} training, {len(test[1])} test images, lr {args.lr:g}"
              + (f", lam {lam:g}" if penalty != "none" else "") + "\n")
        print(table(history) + "\n", flush=True)


if __name__ == "__main__":
    main()
