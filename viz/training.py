"""Plot of a training run directory (``rtnclock train --out DIR``): ``plot_training(DIR) -> Figure``.

Top: the gate-open rate of each level at every training step (seed 002's
"U-shape": gates open while the task is learned, then close as the penalty
bites), epochs marked.  A growing tree adds its blocks per level at every
step.  Bottom: test accuracy and sparsity per epoch.
Headless, like :mod:`rtnclock.viz.plots`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .plots import _colour


def read_training(run_dir) -> tuple[list[dict], list[dict]]:
    """A training run's per-epoch metrics and per-step records.

    Raises:
        ValueError: ``run_dir`` holds no ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise ValueError(f"{str(run_dir)!r} is not a training run (no metrics.jsonl)")

    def rows(name):
        path = run_dir / name
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return rows("metrics.jsonl"), rows("steps.jsonl")


def plot_training(run_dir) -> Figure:
    """Gate-open rate per level per step (and a growing tree's blocks), and test accuracy and sparsity per epoch."""
    epochs, steps = read_training(run_dir)
    grows = any("blocks" in s for s in steps)
    fig = Figure(figsize=(9, 8.5 if grows else 6), layout="constrained")
    top, *middle, bottom = fig.subplots(3 if grows else 2, 1)
    if grows:
        rows = [s for s in steps if "blocks" in s]
        blocks = np.array([s["blocks"] for s in rows])
        for k in range(blocks.shape[1]):
            middle[0].step([s["step"] for s in rows], blocks[:, k], where="post", color=_colour(k),
                           label=f"level {k}")
        middle[0].set(xlabel="training step", ylabel="alive blocks", title="the tree growing")
        middle[0].legend(loc="best", fontsize="small", ncols=blocks.shape[1])
    if steps:
        x = np.array([s["step"] for s in steps])
        opened = np.array([s["gate_open"] for s in steps]) * 100
        for k in range(opened.shape[1]):
            top.plot(x, opened[:, k], color=_colour(k), lw=1.2, label=f"level {k}")
        ends = [max(s["step"] for s in steps if s["epoch"] == e) for e in sorted({s["epoch"] for s in steps})]
        for end in ends[:-1]:
            top.axvline(end + 0.5, color="0.8", lw=0.8, zorder=0)
        top.legend(loc="best", fontsize="small", ncols=opened.shape[1])
    top.set(xlabel="training step (epochs between grey lines)", ylabel="gate open %", ylim=(-3, 103),
            title="gate-open rate while training")
    e = [m["epoch"] for m in epochs]
    bottom.plot(e, [100 * m["test_accuracy"] for m in epochs], "o-", color="#1b6ca8", label="test accuracy")
    bottom.plot(e, [100 * m["sparsity"] for m in epochs], "s--", color="#b2182b", label="sparsity (test)")
    bottom.set(xlabel="epoch", ylabel="%", ylim=(-3, 103))
    bottom.legend(loc="best", fontsize="small")          # whichever corner the curves leave free
    return fig
