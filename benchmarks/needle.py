"""Needle in a fractal haystack: how the compute cost grows with the stream length L.

    .venv/bin/python benchmarks/needle.py [--lengths 100 300 1000 3000 10000] [--seeds 0 1 2]

The RTN paper (seed 000) claims a cost of O(log L) rather than O(L) on this task.
For each length L (frames, 100 per second) and seed, runs the ``needle`` scenario
on its default config (multi-clock, B = 1, torch on one thread) and reads
``run.cost()``: cost units executed and under full execution (README "Cost
units").  The table averages over the seeds: total cost, cost per frame, full
cost per frame, sparsity, the share of the cost spent in the leaves, the local
slope of log cost against log L, the cost above the floor (below), needles per
stream, and wall seconds per run.

Then it fits three laws to total cost against L:
  power    log cost = alpha * log L + c   (alpha = 1: linear; a logarithmic law
                                            drives alpha towards 0 as L grows)
  log      cost = a + b * log L
  linear   cost = a + b * L
each by relative least squares (the power law in log space, the other two
weighted by 1 / cost), and prints each law's RMS relative residual (fit /
measured - 1), so that they are compared on the same footing.  The floor is
the cost per frame of the levels that never sleep under the default config
(the root and level 1); it grows linearly with L.  The same laws are fitted to
the cost above the floor (what the needles cost; the scenario puts one needle
in each decade of L).  Whatever comes out is printed as is.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import rtnclock
from rtnclock.scenarios import needle
from tables import table

LENGTHS = (100, 300, 1000, 3000, 10000)


def measure(length: int, seed: int) -> dict:
    """One run of ``length`` frames: cost, full cost, leaf cost, needles, wall seconds."""
    cfg = needle.default_config()
    stream = needle.make_stream(cfg, length=length, seed=seed)
    start = time.perf_counter()
    run = rtnclock.simulate(cfg, stream)
    wall = time.perf_counter() - start
    cost, full = run.cost()
    leaves = next(r["cost"] for r in run.summary() if r["level"] == 0)
    return dict(cost=cost, full=full, leaves=leaves, needles=len(stream.annotations["time"]), wall=wall)


def fits(L: np.ndarray, cost: np.ndarray) -> list[list]:
    """Rows ``[law, parameters, RMS relative residual]`` for the power, log and linear laws."""
    rows = []
    alpha, c = np.polyfit(np.log(L), np.log(cost), 1)
    rows.append(["power: log cost = alpha log L + c", f"alpha = {alpha:.3f}, c = {c:.3g}",
                 _rms_rel(np.exp(c) * L ** alpha, cost)])
    b, a = np.polyfit(np.log(L), cost, 1, w=1 / cost)
    rows.append(["log: cost = a + b log L", f"a = {a:.4g}, b = {b:.4g}", _rms_rel(a + b * np.log(L), cost)])
    b, a = np.polyfit(L, cost, 1, w=1 / cost)
    rows.append(["linear: cost = a + b L", f"a = {a:.4g}, b = {b:.4g} per frame", _rms_rel(a + b * L, cost)])
    return rows


def floor_per_frame(cfg: rtnclock.Config) -> float:
    """Cost units per leaf tick of the root and level 1 awake on every tick of their own."""
    model, ticks = rtnclock.RTNModel(cfg), cfg.resolved("period_ticks")
    return sum(cfg.blocks(k) * model.block_cost(k) / ticks[k] for k in (cfg.K - 1, cfg.K))


def _rms_rel(fit: np.ndarray, measured: np.ndarray) -> float:
    return float(np.sqrt(np.mean((fit / measured - 1) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="stream lengths L (frames)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed and length")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = needle.default_config()
    print(f"## needle: cost against stream length (K = {cfg.K}, b = {cfg.branching}, d = {cfg.dims}, "
          f"{cfg.blocks(0)} leaves, seeds {args.seeds})\n")
    floor = floor_per_frame(cfg)
    rows, L, total, above = [], [], [], []
    for length in args.lengths:
        runs = [measure(length, s) for s in args.seeds]
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        local = math.log(mean["cost"] / total[-1]) / math.log(length / L[-1]) if L else "-"
        excess = mean["cost"] - floor * (length - 1)
        rows.append([length, length, mean["cost"], mean["cost"] / length, mean["full"] / length,
                     1 - mean["cost"] / mean["full"], mean["leaves"] / mean["cost"], local, excess,
                     mean["needles"], excess / mean["needles"] if mean["needles"] else "-", mean["wall"]])
        L.append(length)
        total.append(mean["cost"])
        above.append(excess)
    table(["L", "frames", "total cost", "cost per frame", "full cost per frame", "sparsity", "leaf share",
           "local alpha", "above floor", "needles", "above floor per needle", "wall s"], rows)
    print("Means over the seeds.  leaf share: part of the cost spent in the leaves.  The rest is the root\n"
          f"and level 1, which the default config keeps awake: a floor of {floor:.0f} cost units per frame\n"
          "(leaf tick); 'above floor' = total - floor * (L - 1), what the needles (and any other gate\n"
          "opening) cost.  local alpha: slope of log cost between this L and the previous one.\n")
    L, total = np.asarray(L, dtype=np.float64), np.asarray(total)
    laws = fits(L, total)
    table(["law", "fit", "RMS relative residual"], laws)
    print("Above the floor (same laws):\n")
    excess = fits(L, np.asarray(above))
    table(["law", "fit", "RMS relative residual"], excess)
    best = min(laws, key=lambda r: r[2])[0].split(":")[0]
    print(f"total cost: best fit {best}, alpha = {laws[0][1].split(',')[0].split('= ')[1]} "
          "(1 is linear growth; an O(log L) cost would push alpha towards 0 as L grows).")
    print(f"above the floor: best fit {min(excess, key=lambda r: r[2])[0].split(':')[0]}.")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
