"""Gates, dormant subtrees and exact cost accounting on a hand-countable tree."""

import pytest
import torch

from rtnclock import MemoryRecorder, RTNModel, simulate
from tests.problems import smooth_stream, test_config

# K = 2, b = 2, ratio 2: leaf, level 1 and root tick every 1, 2, 4 leaf ticks.
TREE = dict(K=2, branching=2, ratio=2.0, memory_size=2)
N_TICKS = 8


def _run(**overrides):
    cfg = test_config(**{**TREE, **overrides})
    stream = smooth_stream(cfg, N_TICKS * cfg.base_period, batch=2)
    rec = MemoryRecorder()
    return cfg, simulate(cfg, stream, recorder=rec), rec


def _unit_costs(cfg):
    model = RTNModel(cfg)
    return [model.block_cost(k) for k in range(3)], model.attention_cost(cfg.blocks(0))


def _full_by_hand(cfg, B=2):
    c, attn = _unit_costs(cfg)
    ticks = [N_TICKS // p for p in (1, 2, 4)]            # windows closed (n = 0 closes none)
    blocks = [4, 2, 1]
    return sum(ticks[k] * B * blocks[k] * c[k] for k in range(3)) + ticks[0] * B * 4 * attn


def test_forced_closed_runs_only_the_root_and_leaves_subtree_untouched():
    cfg, run, rec = _run(gate_mode="closed")
    c, _ = _unit_costs(cfg)
    executed, full = run.cost()
    assert executed == 2 * 2 * c[2]                       # 2 root windows x 2 streams
    assert full == _full_by_hand(cfg)
    assert run.sparsity == pytest.approx(1 - executed / full)
    for k in (0, 1):
        traj = rec.trajectory(k)
        assert not traj["active"].any()
        assert torch.equal(traj["state"], torch.zeros_like(traj["state"]))
        assert run.stats.calls.get(k, 0) == 0             # dormant levels cost no solver call
    assert bool(rec.trajectory(2)["active"][1:].all())      # n = 0 closes no window


def test_forced_open_charges_full_cost():
    cfg, run, _ = _run(gate_mode="open")
    executed, full = run.cost()
    assert executed == full == _full_by_hand(cfg)
    assert run.sparsity == 0.0


def test_mixed_gates_hand_count():
    cfg, run, rec = _run(gate_mode=("open", "closed", "open"))   # level 1 closed: leaves sleep
    c, _ = _unit_costs(cfg)
    executed, _ = run.cost()
    assert executed == 2 * (2 * 1 * c[2] + 4 * 2 * c[1])
    summary = {row["level"]: row for row in run.summary()}
    assert summary[0]["cost"] == 0 and summary[0]["sparsity"] == 1.0
    assert summary[1]["ticks"] == N_TICKS // 2 + 1


def test_dormant_blocks_keep_their_state_exactly():
    """With free gates subtrees sleep and wake; a sleeping leaf never changes."""
    cfg = test_config(**{**TREE, "gate_bias": (0.0, -3.0, 1.0), "gate_a": 20.0, "gate_beta": 0.0})
    rec = MemoryRecorder()
    run = simulate(cfg, smooth_stream(cfg, 0.32, batch=2), recorder=rec)
    traj = rec.trajectory(0)
    act, state = traj["active"], traj["state"]
    # active[i] covers the window closing at tick i; a leaf asleep through that window and
    # not woken at its end (asleep in the next window too) must not move.
    asleep = ~act[1:-1] & ~act[2:]
    assert bool(asleep.any()), "scenario must put some leaves to sleep"
    assert torch.equal(state[1:-1][asleep], state[:-2][asleep])
    assert run.events.select({"wake"}) and run.events.select({"gate_close"}, level=1)
    # Leaves that slept and woke restart from the parent's prior, not from where they stopped.
    woke = act[1:] & ~act[:-1]
    assert bool(woke.any())


def test_parent_gate_raises_children_gates():
    """Top-down demand: the same run with a more open root gives more open level-1 gates."""
    gates = {}
    for bias in (0.5, 4.0):                                     # root open in both, g 0.6 vs 0.98
        cfg, run, rec = _run(gate_mode=("closed", "free", "free"), gate_bias=(0.0, -1.5, bias),
                             gate_a=0.0)
        root = rec.trajectory(2)["gate"]
        assert bool((root > 0.5).all())
        gates[bias] = rec.trajectory(1)["gate"][1:]            # after the first root message
    assert bool((gates[4.0] > gates[0.5]).all())


def test_recorded_active_mask_is_the_closed_windows_and_matches_its_cost():
    cfg = test_config(**{**TREE, "gate_bias": (0.0, -3.0, 1.0), "gate_a": 20.0, "gate_beta": 0.0})
    rec = MemoryRecorder()
    simulate(cfg, smooth_stream(cfg, 0.32, batch=2), recorder=rec)
    traj = rec.trajectory(1)
    c1 = RTNModel(cfg).block_cost(1)
    counted = traj["active"].sum((1, 2)).double() * c1
    assert torch.equal(traj["cost"], counted)
    assert bool(traj["active"].any()) and not bool(traj["active"].all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_entropy_is_finite_for_saturated_gates(dtype):
    # A gate of exactly 0 or 1 has zero entropy; float32 once gave NaN (0 * log 0).
    from rtnclock.gate import binary_entropy
    g = torch.tensor([0.0, 1.0, 0.5, 1 - 1e-9], dtype=dtype)
    h = binary_entropy(g)
    assert torch.isfinite(h).all()
    assert h[:2].abs().max() < 1e-5
    assert h[2] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)
