"""Multi-clock vs lockstep vs continuous: wall time, solver work, error; prints tables.

    .venv/bin/python benchmarks/multiclock.py [--quick] [--only open|share|bursty|deviation]

Every ratio is measured side by side in one process, same model seed, same input.
Sections:
  open       gates forced open: chain (b = 1) and tree (b = 2), K = 2..6, r = 4 and 10;
             wall time, solver calls, vector-field evaluations, error against a tight
             scipy solve_ivp (DOP853, rtol 1e-10) run of the same mode (B = 1 rows).
  share      chain K = 4, r = 4: share of run time in the vector field, torchdiffeq's dopri5
             vs the stage-major one vs a fixed-grid RK4 (medians of 3 rounds; --quick: 1).
  bursty     gates free on audio_stream (steady stretches, rare onsets): multi-clock vs
             the continuous dense solve.
  deviation  multi-clock vs continuous at the default periods and at 1/2, 1/4, 1/8 of them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import numpy as np
import torch

from rtnclock import Config, MemoryRecorder, Stream, simulate, solvers
from rtnclock.scenarios import audio_stream
from tables import table

TICKS = 256                     # simulated leaf periods per run (2.56 s at tau0 = 10 ms)


def smooth(cfg: Config, B: int, duration: float, dt: float = 0.005, seed: int = 0) -> Stream:
    """Slow sinusoids, one per leaf and channel (float64, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    F = int(round(duration / dt)) + 1
    t = torch.arange(F, dtype=torch.float64) * dt
    shape = (B, 1, cfg.blocks(0), cfg.input_dim)
    f = 1 + 3 * torch.rand(shape, generator=g, dtype=torch.float64)
    p = 2 * math.pi * torch.rand(shape, generator=g, dtype=torch.float64)
    return Stream(torch.sin(2 * math.pi * f * t[None, :, None, None] + p), dt)


def max_err(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.final_states(), b.final_states()))


def open_gates(quick: bool) -> None:
    print("## Gates forced open: multi-clock vs lockstep (dopri5 rtol 1e-5, float64, d = 32)\n")
    rows, detail = [], None
    grid = [("chain", 1, B) for B in (1, 256)] + [("tree", 2, B) for B in (1, 16)]
    Ks = (2, 4) if quick else (2, 3, 4, 5, 6)
    for shape, b, B in grid:
        for r in (4.0, 10.0):
            for K in Ks:
                cfg = Config(K=K, branching=b, dims=32, input_dim=4, tau0=0.01, ratio=r, gate_mode="open",
                             memory_size=0, escalation_threshold=None, dtype="float64", rtol=1e-5, atol=1e-7)
                stream = smooth(cfg, B, TICKS * cfg.base_period)
                multi, lock = simulate(cfg, stream), simulate(cfg, stream, mode="lockstep")
                err_m = err_l = "-"
                if B == 1 and not quick:
                    tight = cfg.replace(method="scipy_solver", rtol=1e-10, atol=1e-12)
                    err_m = max_err(multi, simulate(tight, stream))
                    err_l = max_err(lock, simulate(tight, stream, mode="lockstep"))
                ratio = multi.wall_seconds / lock.wall_seconds
                # The goals: tree <= 0.75; chain at K >= 4: <= 0.25 (B >= 256), <= 0.5 (B = 1).
                goal = 0.75 if shape == "tree" else (None if K < 4 else (0.25 if B >= 256 else 0.5))
                verdict = "-" if goal is None else f"<= {goal}" + (" ok" if ratio <= goal else " MISS")
                rows.append([shape, K, int(r), B, multi.wall_seconds, lock.wall_seconds, ratio, verdict,
                             sum(multi.stats.calls.values()), sum(lock.stats.calls.values()),
                             sum(multi.stats.nfe.values()), sum(lock.stats.nfe.values()), err_m, err_l])
                if (shape, K, r, B) == ("chain", 4, 4.0, 256):
                    detail = (multi, lock)
    table(["shape", "K", "r", "B", "multi s", "lock s", "ratio", "goal", "calls m", "calls l",
           "level-evals m", "level-evals l", "err m", "err l"], rows)
    print("calls = solver calls summed over the levels in each call; level-evals = vector-field "
          "evaluations times levels evaluated.\nerr = max |state - same mode with scipy DOP853 rtol 1e-10| "
          f"at the end of {TICKS} leaf periods.\n")
    if detail:
        multi, lock = detail
        print("Per level, chain K = 4, r = 4, B = 256:\n")
        table(["level", "calls multi", "evals multi", "calls lock", "evals lock"],
              [[k, multi.stats.calls.get(k, 0), multi.stats.nfe.get(k, 0), lock.stats.calls.get(k, 0),
                lock.stats.nfe.get(k, 0)] for k in range(5)])


def share(quick: bool, rounds: int = 3) -> None:
    print("## Share of run time in vector-field evaluations (chain K = 4, r = 4, float64)\n")
    print("dopri5 as torchdiffeq ships it (stages in the last axis) against rtnclock's stage-major "
          f"dopri5 (same tableau and controller), and a fixed-grid RK4. Medians of {rounds} rounds, "
          "each running every row once in turn (the share's range over the rounds beside it).\n")
    variants = [("dopri5 torchdiffeq", "dopri5", {}, True), ("dopri5 stage-major", "dopri5", {}, False),
                ("rk4", "rk4", dict(step_size=0.0025), False)]
    cases = []
    for label, method, extra, stock in variants:
        for B in (1, 256):
            cfg = Config(K=4, branching=1, dims=32, input_dim=4, tau0=0.01, ratio=4.0, gate_mode="open",
                         memory_size=0, escalation_threshold=None, dtype="float64", method=method,
                         rtol=1e-5, atol=1e-7, **extra)
            stream = smooth(cfg, B, TICKS * cfg.base_period)
            cases += [(label, B, mode, cfg, stream, stock) for mode in ("multiclock", "lockstep")]
    seen = {i: [] for i in range(len(cases))}
    for _ in range(1 if quick else rounds):
        for i, (label, B, mode, cfg, stream, stock) in enumerate(cases):
            with _stock_torchdiffeq(stock):
                run = simulate(cfg, stream, mode=mode)
            seen[i].append((run.wall_seconds, run.stats.solve_seconds, run.stats.rhs_seconds))
    rows = []
    for i, (label, B, mode, *_) in enumerate(cases):
        wall, solve, rhs = (statistics.median(x) for x in zip(*seen[i]))
        shares = [r / w for w, _, r in seen[i]]
        rows.append([label, B, mode, wall, solve, rhs, statistics.median(shares),
                     f"{min(shares):.3f}-{max(shares):.3f}"])
    table(["solver", "B", "mode", "wall s", "in solver s", "in vector field s", "vf share (goal >= 0.5)",
           "share range"], rows)


@contextlib.contextmanager
def _stock_torchdiffeq(stock: bool):
    """Run torchdiffeq's own adaptive solvers instead of the stage-major ones."""
    saved = solvers.torchdiffeq_method
    if stock:
        solvers.torchdiffeq_method = lambda method: method
    try:
        yield
    finally:
        solvers.torchdiffeq_method = saved


def bursty(quick: bool) -> None:
    duration = 1.0 if quick else 3.0
    # The adaptive solver for both: a continuous solve through sharp gates needs
    # its steps controlled (the scenario's own default is fixed-grid RK4).
    cfg = audio_stream.default_config().replace(method="dopri5")
    B = 4
    stream = audio_stream.make_stream(cfg, duration=duration, seed=0, batch=B)
    print(f"## Gates free on a bursty input: audio_stream, {duration:g} s, B = {B}, "
          f"{cfg.blocks(0)} leaves, K = {cfg.K}\n")
    print(f"gate_a {cfg.gate_a}, gate_beta {cfg.gate_beta}, gate_bias {cfg.gate_bias}, "
          f"escalation {cfg.escalation_threshold}, memory {cfg.memory_size}, {cfg.method} rtol {cfg.rtol}\n")
    multi = simulate(cfg, stream)
    cont = simulate(cfg, stream, mode="continuous")
    table(["mode", "wall s", "solver calls", "level-evals", "sparsity"],
          [["multiclock", multi.wall_seconds, sum(multi.stats.calls.values()), sum(multi.stats.nfe.values()),
            multi.sparsity],
           ["continuous", cont.wall_seconds, 1, sum(cont.stats.nfe.values()), cont.sparsity]])
    print(f"speed-up of multi-clock over the continuous dense solve: "
          f"{cont.wall_seconds / multi.wall_seconds:.1f}x (goal >= 10x)\n")


def deviation(quick: bool) -> None:
    print("## Deviation of multi-clock from the continuous solve (gates open, float64, rtol 1e-8)\n")
    print("RMS over the run of (multi-clock - continuous) at each level's ticks, over the RMS of the "
          "continuous state there.\n")
    rows = []
    scales = (1.0, 0.5, 0.25) if quick else (1.0, 0.5, 0.25, 0.125)
    for name, b in (("chain", 1), ("tree", 2)):
        base = Config(K=2, branching=b, dims=16, input_dim=4, tau0=0.01, ratio=4.0, gate_mode="open",
                      memory_size=0, escalation_threshold=None, dtype="float64", rtol=1e-8, atol=1e-10)
        stream = smooth(base, 1, 1.28, dt=0.0025)
        ref = MemoryRecorder()
        simulate(base, stream, mode="continuous", recorder=ref)
        taus = list(base.resolved("taus"))
        devs = []
        for s in scales:
            cfg = base.replace(taus=taus, periods=[t * s for t in taus])
            rec = MemoryRecorder()
            simulate(cfg, stream, recorder=rec)
            per_level = []
            for k in range(base.n_levels):
                mine = rec.trajectory(k)
                t_ref = ref.trajectory(k)
                # Continuous records every leaf tick of its own (coarsest) grid: match by time.
                idx = torch.searchsorted(t_ref["t"], mine["t"] - 1e-12)
                keep = (idx < len(t_ref["t"])) & ((t_ref["t"][idx.clamp(max=len(t_ref["t"]) - 1)] - mine["t"]).abs() < 1e-9)
                a, c = mine["state"][keep], t_ref["state"][idx[keep]]
                per_level.append(float((a - c).square().mean().sqrt() / c.square().mean().sqrt()))
            devs.append(per_level)
            rows.append([name, s, *per_level])
        orders = [float(np.polyfit(np.log(scales), np.log([d[k] for d in devs]), 1)[0])
                  for k in range(base.n_levels)]
        rows.append([name, "fitted order", *[f"{o:.2f}" for o in orders]])
    table(["shape", "period scale", "level 0", "level 1", "level 2"], rows)


SECTIONS = {"open": open_gates, "share": share, "bursty": bursty, "deviation": deviation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced grid (about a minute)")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for name, fn in SECTIONS.items():
        if args.only in (None, name):
            fn(args.quick)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
