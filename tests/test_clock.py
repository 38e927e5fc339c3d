"""The multi-clock scheduler against its references, and its exact event traces."""

import pytest
import torch

from rtnclock import MemoryRecorder, simulate
from rtnclock.clock import schedule_summary
from rtnclock.tick import Hierarchy
from tests.problems import pulse_stream, smooth_stream, test_config


def _final(run):
    return [h.clone() for h in run.final_states()]


def _assert_states_close(a, b, atol):
    for k, (x, y) in enumerate(zip(a, b)):
        err = float((x - y).abs().max())
        assert err <= atol, f"level {k}: max deviation {err:.3g} > {atol}"


@pytest.mark.parametrize("gate_mode", ["open", "free"])
def test_ratio_one_equals_lockstep(gate_mode):
    cfg = test_config(ratio=1.0, gate_mode=gate_mode, gate_bias=0.0)
    stream = smooth_stream(cfg, 0.2)
    multi, lock = simulate(cfg, stream), simulate(cfg, stream, mode="lockstep")
    _assert_states_close(_final(multi), _final(lock), atol=1e-9)
    assert multi.stats.calls == lock.stats.calls          # one joint call per tick either way


@pytest.mark.parametrize("K,b,ratio", [(2, 2, 4.0), (3, 1, 2.0), (1, 4, 10.0)])
def test_batched_multiclock_equals_one_call_per_tick(K, b, ratio):
    """Leaf batching and joint calls change nothing beyond solver tolerance."""
    cfg = test_config(K=K, branching=b, ratio=ratio, gate_mode="open", memory_size=3)
    stream = smooth_stream(cfg, 0.01 * ratio**K * 2)
    multi, step = simulate(cfg, stream), simulate(cfg, stream, mode="stepwise")
    # Two step sequences at rtol 1e-10: each is within its global error (~1e-8
    # over these runs) of the exact solution, and a rounding-level change in
    # either moves the difference by that much.
    _assert_states_close(_final(multi), _final(step), atol=3e-8)
    # Multi-clock makes one call per level-1 tick; stepwise one per level tick.
    leaf_ticks = stream.duration / cfg.base_period
    assert multi.stats.calls[0] == pytest.approx(leaf_ticks / cfg.resolved("period_ticks")[min(1, K)])
    assert step.stats.calls[0] == pytest.approx(leaf_ticks)


def test_split_calls_equal_one_call_per_tick(monkeypatch):
    """Slow levels in calls of their own (as big states get) change nothing either."""
    import rtnclock.tick

    cfg = test_config(K=2, branching=2, ratio=4.0, gate_mode="open", memory_size=3)
    stream = smooth_stream(cfg, 0.32)
    joint = simulate(cfg, stream)
    monkeypatch.setattr(rtnclock.tick, "SOLO_NUMEL", 0)
    split, step = simulate(cfg, stream), simulate(cfg, stream, mode="stepwise")
    _assert_states_close(_final(split), _final(step), atol=1e-8)
    # Levels 1 and 2 (pace 1) leave the leaves' calls (pace 4): fewer level-1 evaluations.
    assert split.stats.nfe[1] < joint.stats.nfe[1] == joint.stats.nfe[0]


def test_tick_trace_is_exact_and_in_declared_order():
    cfg = test_config(K=2, branching=2, ratio=2.0, gate_mode="open")
    rec = MemoryRecorder()
    order = []
    rec.record = lambda tick: order.append((tick.n, tick.level))
    simulate(cfg, smooth_stream(cfg, 0.08), recorder=rec)
    expected = [(n, k) for n in range(9) for k in range(3) if n % (2**k) == 0 or n == 8]
    assert order == expected


def test_same_time_phases_run_in_declared_order(monkeypatch):
    """At a moment where all levels tick: close bottom-up, open top-down, then solve, then record."""
    cfg = test_config(K=2, branching=2, ratio=2.0, gate_mode="open")
    trace = []
    # The record phase: `account` runs for every tick (`record` only when a
    # recorder takes ticks, which the default one does not).
    for name in ("close_window", "open_window", "solve_ahead", "account"):
        original = getattr(Hierarchy, name)

        def wrapped(self, state, *args, _name=name, _original=original):
            k = args[0] if _name != "solve_ahead" else "-"
            trace.append((state.n if _name == "solve_ahead" else args[1],
                          "record" if _name == "account" else _name, k))
            return _original(self, state, *args)

        monkeypatch.setattr(Hierarchy, name, wrapped)
    simulate(cfg, smooth_stream(cfg, 0.08))
    at4 = [(name, k) for n, name, k in trace if n == 4]
    assert at4 == [("close_window", 0), ("close_window", 1), ("close_window", 2),
                   ("open_window", 2), ("open_window", 1), ("open_window", 0),
                   ("solve_ahead", "-"), ("record", 0), ("record", 1), ("record", 2)]
    summary = schedule_summary(2).splitlines()
    assert [line.split(". ", 1)[1] for line in summary] == [
        "frame", "close window + coarse-up, level 0", "close window + coarse-up, level 1",
        "close window + coarse-up, level 2", "gate + prior-down, level 2", "gate + prior-down, level 1",
        "gate + prior-down, level 0", "solve ahead (every level that ticked, one call)",
        "record, level 0", "record, level 1", "record, level 2"]


def test_escalation_makes_parent_tick_now_exact_trace():
    """A pulse in [0.05, 0.06] s: both leaves escalate at n = 6, the root ticks there."""
    cfg = test_config(K=1, branching=2, ratio=4.0, gate_mode=("closed", "open"),
                      escalation_threshold=1.0)
    stream = pulse_stream(cfg, 0.16, start=0.05, stop=0.06, height=3.0)
    rec = MemoryRecorder()
    run = simulate(cfg, stream, recorder=rec)
    # Grid ticks every 4 leaf ticks; the escalation adds one at n = 6 and keeps the grid.
    assert [(r.n, r.escalated) for r in rec.ticks[1]] == \
        [(0, False), (4, False), (6, True), (8, False), (12, False), (16, False)]
    assert [(e.n, e.level, e.stream, e.block) for e in run.events.select({"escalation"})] == \
        [(6, 0, 0, 0), (6, 0, 0, 1)]
    # Without escalation the same pulse waits for the root's next period.
    quiet = MemoryRecorder()
    simulate(cfg.replace(escalation_threshold=None), stream, recorder=quiet)
    assert [r.n for r in quiet.ticks[1]] == [0, 4, 8, 12, 16]


def test_no_escalation_without_surprise():
    cfg = test_config(K=1, branching=2, ratio=4.0, gate_mode=("closed", "open"),
                      escalation_threshold=1.0)
    quiet = simulate(cfg, pulse_stream(cfg, 0.16, start=1.0, stop=1.0, height=3.0))
    assert quiet.events.select({"escalation"}) == []


def test_batch_of_streams_equals_single_runs():
    cfg = test_config(gate_mode="free", gate_bias=0.0, method="rk4", memory_size=2)
    stream = smooth_stream(cfg, 0.16, batch=3, seed=4)
    batched = simulate(cfg, stream)
    for b in range(3):
        single_stream = type(stream)(stream.frames[b:b + 1], stream.dt)
        single = simulate(cfg, single_stream)
        for k, (x, y) in enumerate(zip(batched.final_states(), single.final_states())):
            torch.testing.assert_close(x[b:b + 1], y, atol=1e-12, rtol=0)


def test_batch_with_adaptive_solver_is_within_tolerance():
    cfg = test_config(gate_mode="open")
    stream = smooth_stream(cfg, 0.16, batch=2, seed=5)
    batched = simulate(cfg, stream)
    single = simulate(cfg, type(stream)(stream.frames[1:2], stream.dt))
    _assert_states_close([x[1:2] for x in batched.final_states()], single.final_states(), atol=1e-8)


def test_same_seed_same_result_other_seed_differs():
    cfg = test_config(gate_mode="free", gate_bias=(-1.0, 0.0, 1.0), memory_size=4)
    stream = smooth_stream(cfg, 0.16)
    a, b = simulate(cfg, stream), simulate(cfg, stream)
    assert a.events.select({"gate_open"}) and float(a.final_states()[0].abs().max()) > 0
    for x, y in zip(a.final_states(), b.final_states()):
        assert torch.equal(x, y)
    assert [(e.n, e.kind, e.level, e.block) for e in a.events] == \
        [(e.n, e.kind, e.level, e.block) for e in b.events]
    c = simulate(cfg.replace(seed=cfg.seed + 1), stream)
    assert not torch.allclose(a.final_states()[0], c.final_states()[0])


def test_leaves_only_hierarchy_batches_and_matches_stepwise():
    cfg = test_config(K=0, gate_mode="free", gate_bias=0.5, memory_size=3)
    stream = smooth_stream(cfg, 1.0)                       # 100 leaf ticks: two batches of 64 and 36
    multi, step = simulate(cfg, stream), simulate(cfg, stream, mode="stepwise")
    _assert_states_close(_final(multi), _final(step), atol=1e-8)
    assert multi.stats.calls == {0: 2} and step.stats.calls == {0: 100}


def test_scheduler_pulls_each_chunk_no_earlier_than_one_parent_window_ahead():
    """A chunked stream gives the same run as the whole tensor, and the
    scheduler asks for a chunk only when a leaf window reaching into it opens:
    the leaves integrate up to their parent's next tick, never further."""
    from rtnclock import Stream
    from rtnclock.recorder import NullRecorder

    cfg = test_config(escalation_threshold=None)
    whole = smooth_stream(cfg, 0.5, dt=0.005)
    frames, size = whole.frames, 7
    now = {"t": 0.0}
    pulls = []

    def chunks():
        for i in range(0, frames.shape[1], size):
            pulls.append((i * whole.dt, now["t"]))
            yield frames[:, i:i + size]

    class Clock(NullRecorder):
        def record(self, tick):
            now["t"] = max(now["t"], tick.t)

    chunked = Stream.from_chunks(chunks(), whole.dt, n_frames=frames.shape[1], batch=1,
                                 n_leaves=cfg.blocks(0), input_dim=cfg.input_dim, dtype=frames.dtype)
    a, b = simulate(cfg, whole), simulate(cfg, chunked, recorder=Clock())
    for x, y in zip(_final(a), _final(b)):
        assert torch.equal(x, y)
    parent_period = cfg.resolved("periods")[1]
    assert len(pulls) == -(-frames.shape[1] // size)
    for first_time, sim_time in pulls[1:]:
        assert first_time <= sim_time + parent_period + 1e-12, (first_time, sim_time)


def test_run_freezes_older_objects_and_leaves_the_collector_as_it_was():
    """During a run the objects that existed before it are frozen (full collections
    skip them); afterwards, finished or failed, nothing stays frozen, and a
    caller's own freeze is left alone."""
    import gc

    from rtnclock.recorder import NullRecorder

    seen = []

    class Probe(NullRecorder):
        def __init__(self, fail_at=None):
            self.fail_at = fail_at

        def record(self, tick):
            seen.append(gc.get_freeze_count())
            if tick.n == self.fail_at:
                raise RuntimeError("recorder failed")

    cfg = test_config()
    stream = smooth_stream(cfg, 0.08)
    assert gc.get_freeze_count() == 0
    simulate(cfg, stream, recorder=Probe())
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="recorder failed"):
        simulate(cfg, stream, recorder=Probe(fail_at=4))
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        mine = gc.get_freeze_count()
        simulate(cfg, stream, recorder=Probe())
        assert gc.get_freeze_count() == mine
    finally:
        gc.unfreeze()
