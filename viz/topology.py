"""The tree growing: blocks per level over time and the tree at a few moments.

Reads what a growing run stores (``alive``, ``block_id``, ``parent_id`` per
slot and tick, see :func:`rtnclock.runs.tree_at`).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..runs import StoredRun, tree_at
from .plots import _colour, _span

#: Moments of the window drawn as trees.
SNAPSHOTS = 3


def plot_topology(run: StoredRun, *, start: float | None = None, end: float | None = None) -> Figure:
    """Alive blocks per level over time, and the tree at the window's start, middle and end.

    Blocks born inside the window are drawn hollow, so growth shows at a glance.

    Raises:
        StoreError: the run stores no tree (it was not configured to grow).
    """
    t0, t1 = _span(run, start, end)
    moments = np.linspace(t0, t1, SNAPSHOTS)
    trees = [tree_at(run, float(t)) for t in moments]       # raises for a fixed tree
    fig = Figure(figsize=(11, 7), layout="constrained")
    grid = fig.add_gridspec(2, SNAPSHOTS, height_ratios=[1, 1.4])
    ax = fig.add_subplot(grid[0, :])
    for k, ds in sorted(run.levels.items()):
        t = ds["time"].values
        keep = (t >= t0 - 1e-12) & (t <= t1 + 1e-12)
        counts = ds["alive"].values[keep].sum(axis=1)
        ax.step(t[keep], counts, where="post", color=_colour(k), label=f"level {k}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("alive blocks")
    ax.set_title("blocks per level")
    ax.legend(loc="best", fontsize=8)
    born_before = {row["id"] for levels in trees[0].values() for row in levels}
    for j, (t, tree) in enumerate(zip(moments, trees)):
        _draw_tree(fig.add_subplot(grid[1, j]), tree, born_before, f"t = {t:.3g} s")
    fig.suptitle(f"topology: {run.path.name}")
    return fig


def _layout(tree: dict[int, list[dict]]) -> dict[int, float]:
    """x position of every block id: leaves in depth-first order, parents over their children."""
    kids: dict[int, list[int]] = {}
    for k, blocks in tree.items():
        for row in blocks:
            kids.setdefault(row["parent_id"], []).append(row["id"])
    top = max(tree) if tree else 0
    x: dict[int, float] = {}
    slot = [0.0]

    def place(bid: int) -> float:
        children = kids.get(bid, [])
        if not children:
            x[bid] = slot[0]
            slot[0] += 1
        else:
            x[bid] = float(np.mean([place(c) for c in children]))
        return x[bid]

    for row in tree.get(top, []):
        place(row["id"])
    return x


def _draw_tree(ax, tree: dict[int, list[dict]], old: set, title: str) -> None:
    x = _layout(tree)
    level_of = {row["id"]: k for k, blocks in tree.items() for row in blocks}
    for k, blocks in tree.items():
        for row in blocks:
            p = row["parent_id"]
            if p in x and row["id"] in x:
                ax.plot([x[row["id"]], x[p]], [k, level_of[p]], color="0.75", lw=0.8, zorder=1)
    for k, blocks in tree.items():
        ids = [row["id"] for row in blocks if row["id"] in x]
        xs = [x[i] for i in ids]
        new = np.array([i not in old for i in ids], dtype=bool)
        c = _colour(k)
        ax.scatter(np.array(xs)[~new], np.full((~new).sum(), k), s=18, color=c, zorder=2)
        ax.scatter(np.array(xs)[new], np.full(new.sum(), k), s=24, facecolors="white", edgecolors=c, zorder=2)
    ax.set_yticks(sorted(tree))
    ax.set_ylabel("level")
    ax.set_xticks([])
    counts = "/".join(str(len(tree[k])) for k in sorted(tree))
    ax.set_title(f"{title}  ({counts} blocks)", fontsize=9)
