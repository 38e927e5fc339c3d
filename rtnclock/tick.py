"""What a level does on its tick, shared by every driver (multi-clock, lockstep).

The hierarchy is a hybrid, sampled-data system: between its ticks a level's
ODE sees its inputs held at the last messages.  A tick of level ``k`` at leaf
tick ``n`` closes the window ``[last, n]`` (:func:`close_window`: window means,
surprise, exact coarse-up integral, escalation) and then, top-down,
:func:`open_window` sets the gate and sends prior-down and demand to the
children, waking or putting subtrees to sleep.  All of it is state as data
(:class:`SimState`), so a run can be checkpointed and rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .events import EventLog
from .gate import binary_entropy, output_weight, surprise, switch
from .integrate import Segment, SolveStats, solve
from .leaf import LeafMemory
from .messages import COARSE_UP, GATE_DEMAND, PRIOR_DOWN, Message
from .model import RTNModel
from .morph import GrowthState, grow
from .recorder import TickRecord
from .stream import SensoryWindow, Stream
from .topology import Topology


_MAILBOX = {COARSE_UP: "up", PRIOR_DOWN: "down", GATE_DEMAND: "demand"}


@dataclass
class LevelState:
    """Everything a level carries between ticks; tensors are ``[B, C_k, ...]`` (``C_k`` slots)."""

    h: torch.Tensor            # state at the last tick            [B, n_k, d_k]
    up: torch.Tensor           # held coarse-up message            [B, n_k, d_up]
    down: torch.Tensor         # held prior from the parent        [B, n_k, d_k]
    demand: torch.Tensor       # held parent gate                  [B, n_k]
    gate: torch.Tensor         # gate held over the current window [B, n_k]
    open: torch.Tensor         # fine path runs (gate > theta)     [B, n_k] bool
    active: torch.Tensor       # integrated (all ancestors open)   [B, n_k] bool
    acc_y: torch.Tensor        # int y dt since the parent's tick  [B, n_k, d_0]
    surprise: torch.Tensor     # surprise of the last window       [B, n_k]
    entropy: torch.Tensor      # gate (+ attention) entropy        [B, n_k]
    closed_active: torch.Tensor | None = None  # `active` over the window last closed
    # Awake as in evaluation (all ancestors' gates open); `active` is wider only
    # with soft gates, which integrate every block under an active root.
    awake: torch.Tensor | None = None
    closed_awake: torch.Tensor | None = None   # `awake` over the window last closed
    # Soft gates only: `awake` as a float whose gradient reaches the gates of every
    # ancestor (straight-through), and its value over the window last closed.
    awake_w: torch.Tensor | None = None
    closed_awake_w: torch.Tensor | None = None
    # Soft gates only, leaves: the state evaluation holds (a sleeping leaf's stays
    # as it fell asleep), whose keys every awake leaf attends over.
    h_held: torch.Tensor | None = None
    last_n: int = 0
    next_n: int = 0            # next tick on the level's own grid
    pending: dict | None = None
    attn: torch.Tensor | None = None          # leaves: held attention output [B, n, d_0]
    memory: LeafMemory | None = None          # leaves: ring buffers
    cost: float = 0.0          # cost units of the tick in progress
    # Soft gates only: the same cost per stream [B], straight-through (see Hierarchy.charge).
    soft_cost: torch.Tensor | None = None
    escalated: bool = False

    def awake_now(self) -> torch.Tensor:
        """Blocks awake as evaluation has it: ``awake`` where soft gates keep it apart, else ``active``."""
        return self.active if self.awake is None else self.awake


@dataclass
class SimState:
    """The whole simulation state: one :class:`LevelState` per level, the tree, counters."""

    levels: list[LevelState]
    n: int = 0
    end_n: int = 0
    totals: dict = field(default_factory=dict)
    next_frame: int = 0        # first stream frame not yet delivered
    topology: Topology | None = None
    growth: GrowthState | None = None          # morphogenesis counters (config.grows)


class Hierarchy:
    """Binds a model, its config and a stream to the tick operations.

    Args:
        model: the parameters.
        stream: the sensory input (already on the model's device and dtype).
        events: log to append gate/escalation events to.
        stats: solver counters.
    """

    def __init__(self, model: RTNModel, stream: Stream, events: EventLog, stats: SolveStats):
        self.model, self.cfg, self.stream = model, model.config, stream
        self.progress = None        # called as progress(t, state) at every leaf tick
        # Training's soft gates: every active block's fine path runs and a closed
        # gate passes gradient straight through (see open_window, close_window).
        self.soft_gates = False
        self.adjoint = False        # differentiate solves by torchdiffeq's adjoint
        self.events, self.stats = events, stats
        self.K = self.cfg.K
        self.b = self.cfg.branching         # the reference modes (references.py) read it
        self.dt0 = self.cfg.base_period
        self.theta = self.cfg.gate_theta
        self.ticks = self.cfg.resolved("period_ticks")
        self.tracks_tree = not self.cfg.fixed_tree        # ticks carry the tree (growing runs)
        self.topology: Topology | None = None   # the bound state's tree (see bind)

    def bind(self, state: SimState) -> SimState:
        """Make ``state`` (fresh or restored) the one whose tree the solves read."""
        self.topology = state.topology
        return state

    # ---- construction --------------------------------------------------
    def initial_state(self, end_n: int, topology: Topology | None = None) -> SimState:
        """All states zero, every level about to tick at ``n = 0``; only the root active.

        ``topology``: start from this tree (a training module's), which the run
        then keeps as it is; by default the config's full tree, grown during
        the run if the config says so.
        """
        B, cfg = self.stream.batch, self.cfg
        p = next(self.model.parameters())
        kw = dict(device=p.device, dtype=p.dtype)
        dims, d0 = cfg.resolved("dims"), self.model.out_dim
        levels = []
        top = Topology.initial(cfg, p.device) if topology is None else topology
        for k in range(cfg.n_levels):
            n_k, d = cfg.slots(k), dims[k]
            up = cfg.input_dim if k == 0 else d0
            st = LevelState(
                h=torch.zeros(B, n_k, d, **kw), up=torch.zeros(B, n_k, up, **kw),
                down=torch.zeros(B, n_k, d, **kw), demand=torch.zeros(B, n_k, **kw),
                gate=torch.zeros(B, n_k, **kw), open=torch.zeros(B, n_k, dtype=torch.bool, device=p.device),
                active=torch.full((B, n_k), k == self.K, dtype=torch.bool, device=p.device),
                awake=torch.full((B, n_k), k == self.K, dtype=torch.bool, device=p.device),
                acc_y=torch.zeros(B, n_k, d0, **kw), surprise=torch.zeros(B, n_k, **kw),
                entropy=torch.zeros(B, n_k, **kw))
            if self.soft_gates:
                st.awake_w = st.awake.to(p.dtype)
            if k == 0:
                if self.soft_gates:
                    st.h_held = st.h
                st.attn = torch.zeros(B, n_k, d, **kw)
                st.memory = LeafMemory.empty(B, n_k, cfg.memory_size, d, **kw)
            levels.append(st)
        state = SimState(levels=levels, n=0, end_n=end_n,
                         totals={k: dict(cost=0.0, full=0.0) for k in range(cfg.n_levels)},
                         topology=top,
                         growth=GrowthState.initial(cfg, p.device) if cfg.grows and topology is None else None)
        return self.bind(state)

    def t(self, n: int) -> float:
        """Time in seconds of leaf tick ``n``."""
        return n * self.dt0

    # ---- closing a window (bottom-up) -----------------------------------
    def close_window(self, state: SimState, k: int, n: int) -> torch.Tensor:
        """Close level ``k``'s window ``[last_n, n]``; returns the escalating blocks ``[B, n_k]``.

        Uses the pending solve when it ends at ``n`` (or, for leaves, covers
        ``n``); otherwise (an escalation tick) integrates the window now.
        """
        st, cfg = state.levels[k], self.cfg
        L_ticks = n - st.last_n
        st.cost = 0.0
        st.soft_cost = None
        st.closed_active = st.active if L_ticks else torch.zeros_like(st.active)
        if st.awake is not None:
            st.closed_awake = st.awake if L_ticks else torch.zeros_like(st.awake)
        if st.awake_w is not None:
            st.closed_awake_w = st.awake_w if L_ticks else torch.zeros_like(st.awake_w)
        if L_ticks == 0:
            return torch.zeros_like(st.active)
        act = st.active
        if k == 0 and not bool(act.any()):
            # Every leaf dormant (most leaf ticks of a quiet stream): nothing was
            # integrated or heard, so the full path below would only add zeros.
            self._window_result(st, k, n)                    # consumes the pending solve
            st.surprise = torch.zeros_like(st.surprise)
            st.last_n = n
            return torch.zeros_like(act)
        L = L_ticks * self.dt0
        h_end, H = self._window_result(st, k, n)
        h_bar = H / L
        top = state.topology
        x_bar = top.sensory(k, self.stream.integral(self.t(st.last_n), self.t(n))) / L
        e = surprise(x_bar, self.model.gates[k].predict(h_bar, st.down))
        # Soft gates integrate sleeping blocks too (for the gradient); their surprise is
        # evaluation's, zero, or a block would wake to a gate evaluation never sets.
        st.surprise = torch.where(st.closed_awake if self.soft_gates else act, e, 0.0)
        g_eff = output_weight(st.gate, st.open, self.soft_gates).unsqueeze(-1)   # [B, n_k, 1]
        if k == 0:
            Y = (1 - g_eff) * H + g_eff * st.attn * L                        # [B, n_0, d_0]
        else:
            C = self.model.coarse(k).integral(H, L)                          # [B, n_k, d_0]
            child = state.levels[k - 1]
            spin, has_kids = top.pool(k - 1, child.acc_y)
            if has_kids is not None:                         # childless blocks: the coarse path
                spin = torch.where(has_kids.view(1, -1, 1), spin, C)
            if self.soft_gates:     # the same switch, its gradient reaching the gate
                kids = C + switch(st.gate, st.open).unsqueeze(-1) * (spin - C)
            else:
                kids = torch.where(st.open.unsqueeze(-1), spin, C)
            # g_eff is 0 where the gate is shut (its value), so this is the
            # HyperBlock mix; soft gates take their gradient through spin there.
            Y = C + g_eff * (spin - C)
            self.deliver(state, Message(COARSE_UP, k - 1, k, self.t(n), kids / L))
            child.acc_y = torch.zeros_like(child.acc_y)
        st.acc_y = st.acc_y + torch.where(act.unsqueeze(-1), Y, 0.0)
        st.h = torch.where(act.unsqueeze(-1), h_end, st.h)
        if st.h_held is not None:
            st.h_held = torch.where(st.closed_awake.unsqueeze(-1), h_end, st.h_held)
        st.last_n = n
        st.cost += float(act.sum()) * self.model.block_cost(k)
        if st.closed_awake_w is not None:
            self.charge(st, st.closed_awake_w, self.model.block_cost(k))
        thr = cfg.escalation_threshold
        if thr is None or k == self.K:
            return torch.zeros_like(act)
        return act & (st.surprise > thr)

    def _window_result(self, st: LevelState, k: int, n: int):
        """``(h(n), int_{last}^{n} h dt)`` from the pending solve, or a fresh solve."""
        p = st.pending
        if p is not None:
            pos, last = p["pos"], st.last_n
            if n in pos and (last == p["start"] or last in pos):
                i = pos[n]
                H = p["H"][i] - p["H"][pos[last]] if last != p["start"] else p["H"][i]
                if n == p["end"]:
                    st.pending = None
                return p["h"][i], H
        st.pending = None
        h, H = self.integrate([(k, n, 1)], {k: st}, st.last_n)[k]
        return h[-1], H[-1]

    # ---- opening the next window (top-down) ------------------------------
    def open_window(self, state: SimState, k: int, n: int) -> None:
        """Set level ``k``'s gate for the next window and message its children."""
        st, cfg = state.levels[k], self.cfg
        act = st.active
        if k == 0 and not bool(act.any()) and not bool(st.open.any()):
            # Every leaf dormant and none closing now: gates, entropy and
            # attention are zero, nothing is logged or written to memory.
            st.gate, st.open = torch.zeros_like(st.gate), torch.zeros_like(st.open)
            st.entropy, st.attn = torch.zeros_like(st.entropy), torch.zeros_like(st.attn)
            return
        awake = st.awake_now()
        g = self.model.gates[k].gate(st.surprise, st.demand)
        g = torch.where(act, g, 0.0)
        new_open = awake & (g > self.theta)
        if bool((new_open ^ st.open).any()):                # most ticks flip no gate
            self.events.log_mask(n, "gate_open", k, new_open & ~st.open)
            self.events.log_mask(n, "gate_close", k, st.open & ~new_open)
        st.gate, st.open = g, new_open
        if st.awake_w is not None:
            # Evaluation's value (a sleeping block's gate is 0), with a gradient to
            # the ancestors' gates as well; the switches below take the raw `g`.
            st.gate = g * st.awake_w
        st.entropy = torch.where(act, binary_entropy(st.gate), 0.0)
        top = state.topology
        if state.growth is not None and not self.soft_gates:
            grow(self, state, k, n, awake)
            act, g, new_open, awake = st.active, st.gate, st.open, st.awake
        fine = act if self.soft_gates else new_open          # whose fine path runs
        if k == 0:
            kv = self.model.leaf.keys_values(st.h if st.h_held is None else st.h_held)
            alive = None if top.full else top.alive[0]
            a, h_att = self.model.leaf.attend(st.h, fine, st.memory, cfg.temperature, kv, alive=alive)
            st.attn = a
            st.entropy = st.entropy + torch.where(new_open, h_att, 0.0)
            st.memory.write(*kv, awake)                     # what evaluation would remember
            st.cost += float(fine.sum()) * self.model.attention_cost(top.n_alive[0])
            if st.awake_w is not None:
                self.charge(st, st.awake_w * switch(g, new_open), self.model.attention_cost(top.n_alive[0]))
            return
        child = state.levels[k - 1]
        t = self.t(n)
        self.deliver(state, Message(PRIOR_DOWN, k, k - 1, t, top.priors(k, self.model.prior(k)(st.h))))
        self.deliver(state, Message(GATE_DEMAND, k, k - 1, t, top.spread(k - 1, st.gate)))
        kids_awake = top.spread(k - 1, new_open)
        kids_active = top.spread(k - 1, fine) if self.soft_gates else kids_awake
        if not top.full:
            kids_awake, kids_active = kids_awake & top.alive[k - 1], kids_active & top.alive[k - 1]
        # A child wakes from the prior-down, with soft gates too: what it did while
        # asleep (integrated only for the gradient) is not what evaluation sees.
        if st.awake_w is not None:
            child.awake_w = top.spread(k - 1, st.awake_w * switch(g, new_open))
            if not top.full:
                child.awake_w = child.awake_w * top.alive[k - 1]
        woke = kids_awake & ~child.awake_now()
        if bool(woke.any()):
            self.events.log_mask(n, "wake", k - 1, woke)
            child.h = torch.where(woke.unsqueeze(-1), child.down, child.h)
            if child.h_held is not None:
                child.h_held = torch.where(woke.unsqueeze(-1), child.down, child.h_held)
            child.pending = None
        slept = child.active & ~kids_active
        if bool(slept.any()):
            child.gate = torch.where(slept, 0.0, child.gate)
        child.active, child.awake = kids_active, kids_awake

    @staticmethod
    def charge(st: LevelState, weight: torch.Tensor, unit: float) -> None:
        """Add ``unit`` per block-tick of ``weight`` ``[B, n_k]`` to the tick's straight-through cost.

        With soft gates every block below an active root runs, so ``st.cost``
        counts them all; ``soft_cost`` counts what evaluation executes (blocks
        awake, open leaves' attention), and its gradient reaches each gate
        through everything that gate switches on: its subtree's cost.
        """
        c = unit * weight.sum(-1)                                             # [B]
        st.soft_cost = c if st.soft_cost is None else st.soft_cost + c

    @staticmethod
    def deliver(state: SimState, msg: Message) -> None:
        """Put a message in its destination's mailbox, held until the next one.

        Mailboxes are the held inputs: coarse-up -> ``up`` ``[B, n_k, d_0]``,
        prior-down -> ``down`` ``[B, n_k, d_k]``, gate demand -> ``demand`` ``[B, n_k]``.
        """
        setattr(state.levels[msg.destination], _MAILBOX[msg.kind], msg.payload)

    def full_cost(self, k: int) -> float:
        """Cost units of one tick of level ``k`` with every block active and open."""
        n_k = self.topology.n_alive[k]
        full = self.stream.batch * n_k * self.model.block_cost(k)
        if k == 0:
            full += self.stream.batch * n_k * self.model.attention_cost(n_k)
        return float(full)

    def record(self, state: SimState, k: int, n: int) -> TickRecord:
        """The :class:`TickRecord` of level ``k``'s tick at ``n`` (after :meth:`account`)."""
        full = self.account(state, k, n)
        st = state.levels[k]
        tree = state.topology.snapshot(k) if self.tracks_tree else (None,) * 4
        return TickRecord(level=k, n=n, t=self.t(n), state=st.h, gate=st.gate, surprise=st.surprise,
                          entropy=st.entropy, active=st.active if st.closed_active is None else st.closed_active,
                          cost=st.cost, full_cost=full, escalated=st.escalated,
                          free_energy_tau=self.cfg.free_energy_tau, awake=st.closed_awake,
                          awake_weight=st.closed_awake_w,
                          alive=tree[0], block_id=tree[1], parent_id=tree[2], born=tree[3])

    def account(self, state: SimState, k: int, n: int) -> float:
        """Add level ``k``'s tick at ``n`` to the run's totals; returns its full cost.

        The tick at ``n = 0`` closes no window and costs nothing.
        """
        st = state.levels[k]
        full = self.full_cost(k)
        if n == 0:
            full, st.cost, st.soft_cost = 0.0, 0.0, None
        totals = state.totals[k]
        totals["ticks"] = totals.get("ticks", 0) + 1
        totals["cost"] += st.cost
        if st.soft_cost is not None:
            totals["soft_cost"] = totals.get("soft_cost", 0) + st.soft_cost
        totals["full"] += full
        # Kept as a tensor: converting it here would wait for the device every tick.
        totals["open"] = totals.get("open", 0) + st.open.sum()         # open: gate > theta
        totals["block_ticks"] = totals.get("block_ticks", 0) + self.stream.batch * self.topology.n_alive[k]
        if k == 0 and self.progress is not None:
            self.progress(self.t(n), state)
        return float(full)

    # ---- integration -----------------------------------------------------
    def integrate(self, plan, levels: dict, start: int) -> dict:
        """Integrate several levels from leaf tick ``start`` in one solver call.

        Args:
            plan: ``(k, end_n, sub_ticks)`` per level: integrate to ``end_n`` with
                outputs at ``sub_ticks`` equally spaced ticks (the last at ``end_n``).
            levels: ``{k: LevelState}``.
            start: leaf tick where every window starts.

        Returns:
            ``{k: (h, H)}``, each ``[sub_ticks, B, n_k, d_k]``; dormant rows keep
            their state and ``H`` (cumulative from ``start``) is zero there.
        """
        t0 = self.t(start)
        segments, order = [], []
        for k, end, subs in plan:
            st = levels[k]
            rows = st.active.reshape(-1).nonzero().flatten()
            if rows.numel() == 0:
                continue
            sel = None if rows.numel() == st.active.numel() else rows   # compaction
            span = (end - start) * self.dt0
            if k == 0:
                i0, frames = self.stream.window(t0, t0 + span)               # [F, B, n_0, c]
                frames = self.topology.leaf_frames(frames)
                frames = frames.reshape(frames.shape[0], -1, frames.shape[-1])
                up = SensoryWindow(frames if sel is None else frames[:, sel], i0 * self.stream.dt,
                                   self.stream.dt)
            else:
                up = block_rows(st.up, sel)
            module = self.model.levels[k]
            segments.append(Segment(level=k, module=module, h0=block_rows(st.h, sel),
                                    inputs=module.inputs(up, block_rows(st.down, sel)),
                                    t0=t0, span=span, rows=rows, n_blocks=st.h.shape[1]))
            order.append((k, subs, sel))
        results = {}
        for group in _calls(segments):
            fracs = sorted({i / order[j][1] for j in group for i in range(1, order[j][1] + 1)})
            solved = solve([segments[j] for j in group], fracs, self.cfg, self.stats, adjoint=self.adjoint)
            for j, (h, H) in zip(group, solved):
                subs = order[j][1]
                if subs < len(fracs):                # a slower level: its own ticks' rows
                    idx = [fracs.index(i / subs) for i in range(1, subs + 1)]
                    h, H = h[idx], H[idx]
                results[j] = (h, H)
        out = {}
        for j, (k, subs, sel) in enumerate(order):
            h, H = results[j]
            base = levels[k].h
            zeros = base if sel is None else torch.zeros_like(base)     # every row solved: only its shape is read
            out[k] = (_scatter(h, base, sel), _scatter(H, zeros, sel))
        for k, _, subs in plan:
            if k not in out:                                                 # nothing active
                base = levels[k].h
                out[k] = (base.expand(subs, *base.shape), torch.zeros(subs, *base.shape,
                                                                      dtype=base.dtype, device=base.device))
        return out

    def solve_ahead(self, state: SimState, plan) -> None:
        """Eagerly integrate the next windows of the levels in ``plan`` (one call).

        ``plan`` is ``(k, end_n, sub_ticks)`` per level, all starting at ``state.n``.
        """
        n = state.n
        levels = {k: state.levels[k] for k, _, _ in plan}
        for k, (h, H) in self.integrate(plan, levels, n).items():
            end, subs = next((e, s) for kk, e, s in plan if kk == k)
            ticks = [n + (end - n) * i // subs for i in range(1, subs + 1)]
            levels[k].pending = dict(start=n, end=end, h=h, H=H, pos={t: i for i, t in enumerate(ticks)})


# A window's pace is its span over its level's tau: how far, in units of its own
# time constant, a solver must carry it.  In one joint call every segment is
# stepped at the fastest pace.  A segment at least this big (numbers) whose pace
# is under half its call's fastest gets a call of its own: its saved evaluations
# then outweigh the ~0.65 ms a torchdiffeq call costs (measured, chain K = 4,
# B = 256 vs B = 1 in benchmarks/multiclock.py).
SOLO_NUMEL = 4096


def _calls(segments: list[Segment]) -> list[list[int]]:
    """Partition segments into solver calls: indices, each call lowest level first."""
    pace = [s.span / float(s.module.tau) for s in segments]
    groups: list[list[int]] = []
    for j in sorted(range(len(segments)), key=lambda j: -pace[j]):
        fit = next((g for g in groups if pace[j] * 2 > pace[g[0]] or segments[j].h0.numel() < SOLO_NUMEL),
                   None)
        if fit is None:
            groups.append([j])
        else:
            fit.append(j)
    return [sorted(g) for g in groups]


def block_rows(x: torch.Tensor, rows=None) -> torch.Tensor:
    """``[B, n, d] -> [B*n, d]`` (the row layout level modules take), optionally some rows."""
    flat = x.reshape(-1, x.shape[-1])
    return flat if rows is None else flat[rows]


def _scatter(vals: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
    """``[T, R, d]`` rows back into ``[T, B, n, d]`` (other rows from ``base``)."""
    T = vals.shape[0]
    if rows is None:
        return vals.reshape(T, *base.shape)
    full = base.reshape(1, -1, base.shape[-1]).repeat(T, 1, 1)
    full[:, rows] = vals
    return full.reshape(T, *base.shape)
