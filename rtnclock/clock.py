"""The multi-clock scheduler: one simpy process per level, integer tick counts.

simpy time is the integer leaf-tick count ``n`` (``t = n * Delta_0``, never an
accumulated float).  Level ``k`` ticks every ``P_k`` leaf ticks; a child whose
surprise passes the escalation threshold interrupts its parent's sleep, and
the parent ticks at once (its own grid is kept).  Whenever a level ticks, every
level below it ticks too (periods nest), so a parent's window is always a
union of its children's windows.

Events at one moment run in a declared order, enforced by simpy priorities
(the heap key is time, priority, insertion counter):

    frame -> close windows + coarse-up (level 0 up to K) -> gate + prior-down
    (level K down to 0) -> solve ahead (all levels that ticked, one call) -> record
    -> end of moment (a recorder that checkpoints may flush here: nothing of the
    moment is still in flight, so the state is whole)
"""

from __future__ import annotations

import math

import simpy
from simpy.events import Event

from .recorder import NullRecorder
from .tick import Hierarchy, SimState

PRIO_FRAME = 10
PRIO_CLOSE = 100      # + k: bottom-up
PRIO_OPEN = 200       # + (K - k): top-down
PRIO_SOLVE = 300
PRIO_RECORD = 400     # + k
PRIO_MOMENT = 500

#: With no parent to change its inputs, the root leaf (K = 0) solves this many ticks per call.
LEAF_BATCH = 64


def schedule_summary(K: int) -> str:
    """The declared order of events at one moment for levels ``0..K``, one line each."""
    lines = ["frame"]
    lines += [f"close window + coarse-up, level {k}" for k in range(K + 1)]
    lines += [f"gate + prior-down, level {k}" for k in range(K, -1, -1)]
    lines += ["solve ahead (every level that ticked, one call)"]
    lines += [f"record, level {k}" for k in range(K + 1)]
    return "\n".join(f"{i:2d}. {line}" for i, line in enumerate(lines, 1))


class _At(Event):
    """An event at absolute simpy time ``when`` with an explicit priority."""

    def __init__(self, env: simpy.Environment, when: int, priority: int):
        # Inlined from simpy's Timeout: the event is triggered on creation.
        self.env, self.callbacks, self._value, self._ok = env, [], None, True
        env.schedule(self, priority, when - env.now)


class MultiClock:
    """Runs a :class:`Hierarchy` under simpy from ``state.n`` to ``state.end_n``.

    Args:
        hier: the bound model, stream, event log and solver counters.
        state: simulation state (data); processes are rebuilt from it.
        recorder: receives every tick.
    """

    def __init__(self, hier: Hierarchy, state: SimState, recorder=None):
        self.hier, self.state = hier, state
        self.recorder = recorder or NullRecorder()
        # A recorder that ignores ticks is not handed any (building one costs a few ops).
        self._records = type(self.recorder).record is not NullRecorder.record
        self.K = hier.K
        self.env = simpy.Environment(initial_time=state.n)
        self.procs = [self.env.process(self._level(k)) for k in range(self.K + 1)]
        self.env.process(self._frames())
        self._ticking: dict[int, int] = {}      # level -> n of its tick in progress
        # A recorder with `moment(n, state)` may ask to be called when the
        # current moment is whole (it flushes and checkpoints there).
        if hasattr(self.recorder, "moment"):
            self.recorder.moment_driven = True
            self.recorder.request_moment = self._request_moment

    def run(self) -> SimState:
        """Advance to the end; returns the final state."""
        self.env.run()
        return self.state

    def _at(self, when: int, priority: int) -> _At:
        return _At(self.env, when, priority)

    def _frames(self):
        stream, h = self.hier.stream, self.hier
        n_frames = int(round(h.t(self.state.end_n) / stream.dt)) + 1
        for i in range(self.state.next_frame, n_frames):
            n = math.ceil(i * stream.dt / h.dt0 - 1e-9)
            yield self._at(max(n, self.env.now), PRIO_FRAME)
            h.events.log(self.env.now, "frame", t=i * stream.dt, block=i)
            if stream.is_bad(i):
                h.events.log(self.env.now, "bad_frame", t=i * stream.dt, block=i)
            self.state.next_frame = i + 1

    def _level(self, k: int):
        st, hier, state = self.state.levels[k], self.hier, self.state
        period = hier.ticks[k]
        while True:
            try:
                yield self._at(st.next_n, PRIO_CLOSE + k)
                st.escalated = False
            except simpy.Interrupt:
                yield self._at(self.env.now, PRIO_CLOSE + k)
                st.escalated = True
            n = self.env.now
            self._ticking[k] = n
            if n == st.next_n:
                st.next_n = min(n + period, state.end_n)
            escalate = hier.close_window(state, k, n)
            if bool(escalate.any()):
                hier.events.log_mask(n, "escalation", k, escalate)
                parent = state.levels[k + 1]
                if parent.next_n != n and self._ticking.get(k + 1) != n:
                    self._ticking[k + 1] = n
                    self.procs[k + 1].interrupt("escalation")
            yield self._at(n, PRIO_OPEN + self.K - k)
            hier.open_window(state, k, n)
            if k == 0:
                yield self._at(n, PRIO_SOLVE)
                state.n = n
                if n < state.end_n:
                    self._solve_ahead(n)
            yield self._at(n, PRIO_RECORD + k)
            if self._records:
                self.recorder.record(hier.record(state, k, n))
            else:
                hier.account(state, k, n)
            if n >= state.end_n:
                return

    def _request_moment(self) -> None:
        """Call ``recorder.moment(n, state)`` once everything at this moment ``n`` has run."""
        n = self.env.now
        self._at(n, PRIO_MOMENT).callbacks.append(lambda _: self.recorder.moment(n, self.state))

    def _solve_ahead(self, n: int) -> None:
        """One call for every level that ticked at ``n`` and needs a new window."""
        levels = self.state.levels
        ticked = [k for k in range(self.K + 1) if self._ticking.get(k) == n]
        leaf = levels[0]
        if self.K >= 1:
            parent_ticked = 1 in ticked
            leaf_end = levels[1].next_n
        else:
            parent_ticked = False
            leaf_end = min(n + LEAF_BATCH, self.state.end_n)
        plan = []
        if parent_ticked or leaf.pending is None or n >= leaf.pending["end"]:
            plan.append((0, leaf_end, leaf_end - n))
        plan += [(k, levels[k].next_n, 1) for k in ticked if k >= 1]
        if plan:
            self.hier.solve_ahead(self.state, plan)
