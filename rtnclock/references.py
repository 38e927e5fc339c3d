"""The two reference modes the multi-clock run is checked and benchmarked against.

* **lockstep**: every level ticks at the leaf period, all levels in one solver
  call per tick (a plain loop; no scheduler).  With ``r = 1`` the multi-clock
  run must equal it.  With ``joint=False`` and the config's own periods the same
  loop is the *stepwise* multi-rate reference: one solver call per level tick,
  no batching, which checks the scheduler's batched and joint solves.
* **continuous**: one torchdiffeq solve of the whole hierarchy with messages
  coupled continuously (instantaneous coarse-up, prior, demand and gates); the
  hybrid system approaches it as the periods shrink.  Leaves attend over the
  current keys only (no ring buffer, which has no continuous counterpart).
"""

from __future__ import annotations

import time

import torch
from .config import FIXED_METHODS
from .errors import SolverError
from .gate import surprise
from .leaf import LeafMemory
from .messages import block_spin, to_children
from .solvers import odeint
from .tick import Hierarchy, SimState, block_rows


def run_loop(hier: Hierarchy, state: SimState, recorder, *, lockstep: bool) -> SimState:
    """Tick every level on its grid in a plain loop (escalations are logged, not acted on).

    Args:
        lockstep: every level ticks every leaf tick and all share one solver
            call; otherwise levels keep their periods and each tick is its own call.
    """
    K, end = hier.K, state.end_n
    periods = [1] * (K + 1) if lockstep else list(hier.ticks)
    for n in range(state.n, end + 1):
        ticking = [k for k in range(K + 1) if n % periods[k] == 0 or n == end]
        for k in ticking:
            esc = hier.close_window(state, k, n)
            hier.events.log_mask(n, "escalation", k, esc)
        for k in reversed(ticking):
            hier.open_window(state, k, n)
        state.n = n
        if n < end:
            plans = [[(k, min(n + periods[k], end), 1) for k in ticking]]
            if not lockstep:
                plans = [[p] for p in plans[0]]
            for plan in plans:
                hier.solve_ahead(state, plan)
        for k in ticking:
            recorder.record(hier.record(state, k, n))
    return state


def run_continuous(hier: Hierarchy, state: SimState, recorder) -> SimState:
    """One solve of the whole hierarchy from ``state.n`` to ``state.end_n``.

    Records every level at every leaf tick (state, gate, surprise); cost is
    full execution.
    """
    model, cfg, stream = hier.model, hier.cfg, hier.stream
    K, b = hier.K, hier.b
    shapes = [st.h.shape for st in state.levels]
    sizes = [st.h.numel() for st in state.levels]
    counter = [0, 0.0]
    leaf = state.levels[0].h                                                  # [B, n_0, d_0]
    # The continuous mode has no ticks, so no ring buffer: an empty one, built once.
    no_memory = LeafMemory.empty(*leaf.shape[:2], 0, leaf.shape[2], device=leaf.device, dtype=leaf.dtype)

    def couple(t: float, hs: list[torch.Tensor]):
        u = stream.value(t)                                                  # [B, n_0, c]
        downs = [None] * (K + 1)
        downs[K] = torch.zeros_like(hs[K])
        for k in range(K, 0, -1):
            downs[k - 1] = model.prior(k)(hs[k])
        gates, errs = [None] * (K + 1), [None] * (K + 1)
        demand = torch.zeros(hs[K].shape[:2], dtype=u.dtype, device=u.device)
        for k in range(K, -1, -1):
            errs[k] = surprise(block_spin(u, b**k), model.gates[k].predict(hs[k], downs[k]))
            g = model.gates[k].gate(errs[k], demand)
            gates[k] = g * (g > hier.theta)
            demand = to_children(g, b)
        return u, downs, gates, errs

    def rhs(t, y):
        start = time.perf_counter()
        tf = float(t.detach())
        hs = [part.view(shape) for part, shape in zip(torch.split(y, sizes), shapes)]
        u, downs, gates, _ = couple(tf, hs)
        out, y_prev = [], None
        for k in range(K + 1):
            h, g = hs[k], gates[k].unsqueeze(-1)
            if k == 0:
                a, _ = model.leaf.attend(h, gates[0] > 0, no_memory, cfg.temperature)
                y_k, up = (1 - g) * h + g * a, u
            else:
                C = model.coarse(k)(h)
                kids = torch.where(g > 0, block_spin(y_prev, b), C)
                y_k, up = C + g * (kids - C), kids
            level = model.levels[k]
            dh = level.vector_field(tf, block_rows(h), level.inputs(block_rows(up), block_rows(downs[k])))
            out.append(dh.reshape(-1))
            y_prev = y_k
        counter[0] += 1
        counter[1] += time.perf_counter() - start
        return torch.cat(out)

    n0, end = state.n, state.end_n
    t_out = torch.arange(n0, end + 1, dtype=torch.float64) * hier.dt0
    y0 = torch.cat([st.h.reshape(-1) for st in state.levels])
    start = time.perf_counter()
    try:
        ys = odeint(rhs, y0, t_out.to(y0), cfg,
                    {"step_size": cfg.step_size or hier.dt0 / 4} if cfg.method in FIXED_METHODS else None)
    except (AssertionError, RuntimeError) as err:
        raise SolverError(f"continuous solve failed: {err}", level=0, block=None, time=float(t_out[0])) from err
    hier.stats.add(range(K + 1), counter[0], time.perf_counter() - start, counter[1])
    for j, n in enumerate(range(n0, end + 1)):
        hs = [part.view(shape) for part, shape in zip(torch.split(ys[j], sizes), shapes)]
        _, _, gates, errs = couple(n * hier.dt0, hs)
        for k, st in enumerate(state.levels):
            st.h, st.gate, st.surprise = hs[k], gates[k], errs[k]
            st.active = torch.ones_like(st.active)
            st.cost = hier.full_cost(k)
            recorder.record(hier.record(state, k, n))
    state.n = end
    if not torch.isfinite(ys[-1]).all():
        raise SolverError("non-finite state in the continuous solve", level=0, block=None, time=float(t_out[-1]))
    return state

