"""Morphogenesis: spare slots change nothing; mitosis and apoptosis happen when and
where the rule says, with exact costs; the store keeps the tree over time."""

import numpy as np
import pytest
import torch

from rtnclock import (ConfigError, MemoryRecorder, RTNModel, StoreError, ZarrRecorder, lineage, open_run,
                      simulate, tree_at)
from tests.problems import smooth_stream, test_config

DUR = 0.48


def _run(cfg, model=None, recorder=None, duration=DUR):
    return simulate(cfg, smooth_stream(cfg, duration, batch=2), model=model, recorder=recorder)


def _events(run, kind):
    return [(round(e.t, 9), e.level, e.block) for e in run.events.select(kinds=(kind,))]


def test_spare_slots_change_nothing():
    """capacity 2 (general gathers, half the slots free) equals the full tree's reshape paths."""
    base = _run(test_config(gate_mode="free", gate_bias=0.0))
    cfg = test_config(gate_mode="free", gate_bias=0.0, capacity=2.0)
    wide = _run(cfg)
    assert wide.cost()[0] == pytest.approx(base.cost()[0], rel=1e-12)
    assert wide.cost()[1] == pytest.approx(base.cost()[1], rel=1e-12)
    for k, (a, b) in enumerate(zip(base.state.levels, wide.state.levels)):
        n = cfg.blocks(k)
        # Pooling by index_add instead of a reshaped mean differs in the last bit,
        # which can flip an adaptive step's acceptance: agree to the solver's tolerance.
        torch.testing.assert_close(b.h[:, :n], a.h, rtol=0, atol=1e-7)
        assert not b.active[:, n:].any() and not b.h[:, n:].any(), f"level {k}: a free slot ran"


def test_mitosis_after_its_window_of_high_free_energy():
    """Every block held 'hot' (threshold -inf in effect) splits once its window of
    awake time is full, at its first tick past it; daughters copy their mothers."""
    W = 0.1
    cfg = test_config(gate_mode="open", capacity=2.0, mitosis_threshold=-1e9, mitosis_window=W,
                      mitosis_noise=0.0)
    rec = MemoryRecorder()
    run = _run(cfg, recorder=rec)
    # Leaves tick every 0.01 s: 0.10 s of awake time at t = 0.10.  Level 1 ticks
    # every 0.04 s: 0.12 s at t = 0.12.  Then every slot is taken.
    assert _events(run, "mitosis") == [(0.1, 0, i) for i in range(4)] + [(0.12, 1, 0), (0.12, 1, 1)]
    top = run.state.topology
    assert top.n_alive == [8, 4, 1]
    assert top.mass[0].tolist() == [0.5] * 8 and top.mass[1].tolist() == [0.5] * 4
    # Daughters read their mothers' sensory field and prior row; level 1's second
    # children moved to the daughters.
    assert top.field.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert top.parent[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert top.role[0].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    # At the split (no noise) each daughter's state is her mother's, bit for bit.
    leaf = rec.trajectory(0)
    i = int(np.flatnonzero(np.isclose(leaf["t"].numpy(), 0.1))[0])
    torch.testing.assert_close(leaf["state"][i][:, 4:], leaf["state"][i][:, :4], rtol=0, atol=0)
    # Ids are new, birth times are the split's.
    assert top.ids[0].tolist() == [0, 1, 2, 3, 7, 8, 9, 10]
    assert top.born[0][4:].tolist() == [0.1] * 4


def test_mitosis_noise_perturbs_the_daughter():
    cfg = test_config(gate_mode="open", capacity=2.0, mitosis_threshold=-1e9, mitosis_window=0.1,
                      mitosis_noise=0.01)
    rec = MemoryRecorder()
    _run(cfg, recorder=rec)
    leaf = rec.trajectory(0)
    i = int(np.flatnonzero(np.isclose(leaf["t"].numpy(), 0.1))[0])
    gap = (leaf["state"][i][:, 4:] - leaf["state"][i][:, :4]).abs()
    assert 0.0 < float(gap.max()) < 0.06                # ~ N(0, 0.01) per component


def test_a_full_level_splits_nothing_more():
    cfg = test_config(gate_mode="open", capacity=1.0, mitosis_threshold=-1e9, mitosis_window=0.1)
    run = _run(cfg)
    assert _events(run, "mitosis") == [] and run.state.topology.n_alive == [4, 2, 1]


def _shut_block(model: RTNModel, k: int, slot: int):
    """Hold one block's gate at 0 (others fully open) by wrapping its level's gate law."""
    head = model.gates[k]

    def gate(e, demand):
        g = torch.ones_like(e)
        g[:, slot] = 0.0
        return g
    head.gate = gate


def test_apoptosis_of_a_shut_gate_and_the_cost_falls():
    W = 0.2
    cfg = test_config(gate_mode="open", capacity=1.0, apoptosis_epsilon=0.05, apoptosis_window=W)
    model = RTNModel(cfg)
    _shut_block(model, 1, 0)
    rec = MemoryRecorder()
    run = _run(cfg, model=model, recorder=rec)
    # Level 1 ticks every 0.04 s: 0.20 s of awake time with g = 0 at t = 0.20;
    # its two leaves (asleep under it) go with it.
    assert _events(run, "apoptosis") == [(0.2, 1, 0), (0.2, 0, 0), (0.2, 0, 1)]
    top = run.state.topology
    assert top.n_alive == [2, 1, 1] and top.alive[0].tolist() == [False, False, True, True]
    lvl1 = rec.trajectory(1)
    B, c1 = 2, model.block_cost(1)
    t = lvl1["t"].numpy()
    before, after = (t > 0) & (t < 0.2 - 1e-9), t > 0.2 + 1e-9
    # Hand count per level-1 tick: every alive block's coarse tick, B streams.
    np.testing.assert_array_equal(lvl1["cost"].numpy()[before], 2 * B * c1)
    np.testing.assert_array_equal(lvl1["cost"].numpy()[after], 1 * B * c1)
    np.testing.assert_array_equal(lvl1["full_cost"].numpy()[after], 1 * B * c1)
    leaf = rec.trajectory(0)
    tl = leaf["t"].numpy()
    # The two leaves under the shut gate slept before; now the two open leaves
    # of each stream attend over 2 alive leaves' keys, not 4.
    c0 = 2 * B * model.block_cost(0)
    np.testing.assert_array_equal(leaf["cost"].numpy()[(tl > 0.04) & (tl < 0.2 - 1e-9)],
                                  c0 + 2 * B * model.attention_cost(4))
    np.testing.assert_array_equal(leaf["cost"].numpy()[tl > 0.2 + 1e-9], c0 + 2 * B * model.attention_cost(2))
    # A removed block is never integrated again and its state is cleared.
    assert not leaf["active"][tl > 0.2 + 1e-9][:, :, :2].any()
    assert not run.state.levels[1].h[:, 0].any()


def test_removed_slots_are_reused_by_mitosis():
    cfg = test_config(gate_mode="open", capacity=1.0, apoptosis_epsilon=0.05, apoptosis_window=0.2,
                      mitosis_threshold=-1e9, mitosis_window=0.3)
    model = RTNModel(cfg)
    _shut_block(model, 0, 1)
    run = _run(cfg, model=model)
    assert (0.2, 0, 1) in _events(run, "apoptosis")
    # The first leaf split after the removal takes the freed slot 1.
    split = [e for e in _events(run, "mitosis") if e[1] == 0]
    assert split and split[0][0] == pytest.approx(0.3)
    top = run.state.topology
    assert bool(top.alive[0][1]) and int(top.ids[0][1]) >= 7 and top.born[0][1] == pytest.approx(0.3)


def test_the_store_keeps_the_tree_over_time(tmp_path):
    cfg = test_config(gate_mode="open", capacity=2.0, mitosis_threshold=-1e9, mitosis_window=0.1,
                      mitosis_noise=0.0)
    run = _run(cfg, recorder=ZarrRecorder(tmp_path / "g.zarr"))
    stored = open_run(tmp_path / "g.zarr")
    ds = stored.levels[0]
    assert ds["alive"].dims == ("time", "slot") and ds["alive"].shape[1] == 8
    assert {k: len(v) for k, v in tree_at(stored, 0.05).items()} == {0: 4, 1: 2, 2: 1}
    end = tree_at(stored, DUR)
    assert {k: len(v) for k, v in end.items()} == {0: 8, 1: 4, 2: 1}
    top = run.state.topology
    for k, blocks in end.items():
        assert [b["id"] for b in blocks] == top.ids[k][top.alive[k]].tolist()
        assert [b["parent_id"] for b in blocks] == top.parent_ids(k)[top.alive[k]].tolist()
    np.testing.assert_array_equal(ds["born"].values[-1], top.born[0].numpy())      # NaN: free slot
    rows = lineage(stored)
    born = sorted((r["born"], r["level"]) for r in rows if r["born"] > 0)
    assert born == sorted((t, k) for t, k, _ in _events(run, "mitosis"))
    assert all(r["died"] is None for r in rows)
    from rtnclock import info
    assert "tree: 4/2/1 blocks per level at the start, 8/4/1 at the end (13 blocks lived)" in info(tmp_path / "g.zarr")


def test_a_fixed_tree_store_has_no_tree(tmp_path):
    cfg = test_config()
    _run(cfg, recorder=ZarrRecorder(tmp_path / "f.zarr"))
    stored = open_run(tmp_path / "f.zarr")
    assert "alive" not in stored.levels[0]
    with pytest.raises(StoreError, match="not configured to grow"):
        tree_at(stored, 0.0)


def test_the_continuous_reference_refuses_a_growing_tree():
    cfg = test_config(capacity=2.0)
    with pytest.raises(ConfigError, match="growing tree"):
        simulate(cfg, smooth_stream(cfg, 0.1), mode="continuous")


GROW = dict(capacity=2.0, mitosis_threshold=-0.3, mitosis_window=0.3, apoptosis_epsilon=0.35,
            apoptosis_window=0.5)


@pytest.mark.parametrize("kill_at_write,grown_before_kill", [(1000, False), (2600, True)])
def test_resume_across_structural_changes_equals_the_uninterrupted_store(tmp_path, kill_at_write,
                                                                         grown_before_kill):
    """SIGKILL a growing audio_stream run inside a flush, resume it: the same store, bit for bit
    (the tree, its counters and the daughters' noise generator are checkpointed as data)."""
    import signal
    import subprocess
    import sys

    from rtnclock.scenarios import audio_stream
    from tests import test_crash

    child_code = test_crash.CHILD.replace("cfg = audio_stream.default_config()",
                                          f"cfg = audio_stream.default_config().replace(**{GROW!r})")
    assert child_code != test_crash.CHILD

    def child(path, kill):
        import os
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.run([sys.executable, "-c", child_code, str(path), str(kill)],
                              capture_output=True, text=True, env=env, timeout=180)

    ref = tmp_path / "ref.zarr"
    assert child(ref, 0).returncode == 0
    path = tmp_path / "run.zarr"
    assert child(path, kill_at_write).returncode == -signal.SIGKILL
    killed = open_run(path)
    level1 = killed.levels.get(1)
    cut = float(level1["time"].values[-1]) if level1 is not None and level1.sizes["time"] else 0.0
    cfg = audio_stream.default_config().replace(**GROW)
    stream = audio_stream.make_stream(cfg, duration=test_crash.DURATION, seed=0, batch=1)
    simulate(cfg, stream, recorder=ZarrRecorder(path, resume=True))
    resumed, whole = open_run(path), open_run(ref)
    test_crash._assert_same_store(resumed, whole)
    changes = sorted(float(t) for t, k in zip(whole.events["time"].values, whole.events["kind"].values)
                     if k in ("mitosis", "apoptosis"))
    print(f"killed at {cut:.2f} s; structural changes at {changes}")
    assert changes and changes[-1] > cut                # the resumed part changed the tree too
    assert (changes[0] < cut) == grown_before_kill      # ... and, once, the killed part did


def test_cli_plot_topology_draws_a_growing_run_and_refuses_a_fixed_one(tmp_path, capsys):
    from matplotlib.image import imread

    from rtnclock.cli import main
    cfg = test_config(gate_mode="open", capacity=2.0, mitosis_threshold=-1e9, mitosis_window=0.1)
    _run(cfg, recorder=ZarrRecorder(tmp_path / "g.zarr"))
    assert main(["plot", str(tmp_path / "g.zarr"), "--out", str(tmp_path / "img")]) == 0
    written = capsys.readouterr().out.split()
    assert str(tmp_path / "img" / "topology.png") in written           # `--kind all` includes it
    img = imread(tmp_path / "img" / "topology.png")
    assert (img[..., :3] < 0.9).any(-1).mean() > 0.02
    _run(test_config(), recorder=ZarrRecorder(tmp_path / "f.zarr"))
    assert main(["plot", str(tmp_path / "f.zarr"), "--kind", "topology"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not configured to grow" in err


# ---- growth in training ----------------------------------------------------------------

def _task(cfg, n=8, frames=13, seed=0):
    """Random streams labelled by the sign of one leaf's mean input: a learnable toy task."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, frames, cfg.blocks(0), cfg.input_dim, generator=g, dtype=torch.float64)
    y = (x[:, :, 0, 0].mean(1) > 0).long()
    return x, y


def test_a_leaf_split_in_training_keeps_the_readout_and_remaps_adam():
    """Leaf daughters hear their mothers' input from the same zero start, and features are
    mass-weighed: with copied readout columns the output is unchanged (to the solver's
    tolerance: more rows change the adaptive steps' error norm)."""
    from rtnclock import RTN
    cfg = test_config(gate_mode=("closed", "open", "open"), capacity=2.0,
                      mitosis_threshold=(-1e9, None, None), mitosis_window=0.05, mitosis_noise=0.0)
    rtn = RTN(cfg, 2)
    x, y = _task(cfg)
    opt = torch.optim.Adam(rtn.parameters(), lr=1e-2)
    out = rtn(x)
    torch.nn.functional.cross_entropy(out.readout, y).backward()
    opt.step()
    rtn.eval()
    with torch.no_grad():
        before = rtn(x).readout
    changes = rtn.grow(out, opt, t=1)
    assert changes == [("mitosis", 0, i) for i in range(4)]
    assert rtn.topology.n_alive == [8, 2, 1]
    with torch.no_grad():
        after = rtn(x).readout
    torch.testing.assert_close(after, before, rtol=0, atol=1e-8)
    d = cfg.resolved("dims")[0]
    w, m = rtn.readout.weight, opt.state[rtn.readout.weight]["exp_avg"]
    for i in range(4):
        for t in (w, m):
            torch.testing.assert_close(t[:, (4 + i) * d:(5 + i) * d], t[:, i * d:(i + 1) * d], rtol=0, atol=0)


def test_training_continues_across_a_structural_change_and_the_loss_keeps_falling():
    from rtnclock import RTN
    cfg = test_config(capacity=2.0, gate_bias=2.0, mitosis_threshold=(None, -1e9, None), mitosis_window=0.2,
                      rtol=1e-6, atol=1e-8)
    rtn = RTN(cfg, 2)
    x, y = _task(cfg)
    opt = torch.optim.Adam(rtn.parameters(), lr=0.05)
    losses, changed_at = [], None
    for step in range(1, 31):
        rtn.train()
        out = rtn(x)
        loss = torch.nn.functional.cross_entropy(out.readout, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if rtn.grow(out, opt, t=step) and changed_at is None:
            changed_at = step
    # 0.12 s of level-1 awake time per forward (ticks at 0.04, 0.08, 0.12 s): the 0.2 s
    # window fills in the second step.
    assert changed_at == 2 and rtn.topology.n_alive == [4, 4, 1]
    after = losses[changed_at:]
    assert after[-1] < 0.5 * after[0], f"loss after the split: {after}"
    assert min(after[-5:]) < min(losses[:changed_at])


def test_training_resume_across_a_structural_change_equals_an_uninterrupted_run(tmp_path, capsys):
    """`rtnclock train --resume` of a growing tree: the checkpoint keeps the tree and its
    counters, so the resumed run grows and trains exactly as the uninterrupted one."""
    from rtnclock.cli import main
    from rtnclock.trainer import load
    from tests.test_trainer import SMALL
    grow = ["--set", "capacity=2", "--set", "mitosis_threshold=[None, -10, None]",
            "--set", "mitosis_window=0.25"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", *SMALL, *grow, "--epochs", "2", "--out", str(whole)]) == 0
    assert main(["train", *SMALL, *grow, "--epochs", "1", "--out", str(parts)]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--out", str(parts)]) == 0
    steps = (whole / "steps.jsonl").read_text()
    assert steps == (parts / "steps.jsonl").read_text()
    # 0.07 s of level-1 awake time per step (8 rows): the 0.25 s window fills at step 4, in epoch 2.
    changed = [line for line in steps.splitlines() if '"changes": [[' in line]
    assert len(changed) == 1 and '"step": 4, "epoch": 2' in changed[0]
    (a, _), (b, _) = load(whole), load(parts)
    assert a.topology.n_alive == b.topology.n_alive == [4, 4, 1]
    assert all(torch.equal(x, y) for x, y in zip(a.topology.parent, b.topology.parent))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_daughter_s_readout_columns_are_her_mother_s_perturbed():
    from rtnclock import RTN
    cfg = test_config(gate_mode="open", capacity=2.0, mitosis_threshold=(-1e9, None, None),
                      mitosis_window=0.05, mitosis_noise=0.01)
    rtn = RTN(cfg, 2)
    x, _ = _task(cfg)
    with torch.no_grad():
        out = rtn(x)
    assert rtn.grow(out, t=1) == [("mitosis", 0, i) for i in range(4)]
    w = rtn.readout.weight.detach()
    for i in range(4):
        assert len(rtn._columns(0, i)) == 2             # a leaf's average and its last output
        for m, d in zip(rtn._columns(0, i), rtn._columns(0, 4 + i)):
            mother, daughter = w[:, m], w[:, d]
            rel = float((daughter - mother).square().mean().sqrt() / mother.square().mean().sqrt())
            assert 0.003 < rel < 0.03                   # noise of 1% of the columns' RMS


def test_with_r_1_lockstep_grows_the_same_tree_as_multiclock():
    cfg = test_config(ratio=1.0, gate_mode="open", capacity=2.0, mitosis_threshold=(-1e9, -1e9, None),
                      mitosis_window=0.05, mitosis_noise=0.01)
    stream = smooth_stream(cfg, 0.2, batch=2)
    multi, lock = (simulate(cfg, stream, mode=m) for m in ("multiclock", "lockstep"))
    assert _events(multi, "mitosis") == _events(lock, "mitosis") and _events(multi, "mitosis")
    assert multi.state.topology.n_alive == lock.state.topology.n_alive == [8, 4, 1]
    for a, b in zip(multi.final_states(), lock.final_states()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_growing_tree_runs_and_trains_on_cuda():
    from rtnclock import RTN
    cfg = test_config(device="cuda", gate_mode="open", capacity=2.0, mitosis_threshold=(-1e9, -1e9, None),
                      mitosis_window=0.05)
    run = simulate(cfg, smooth_stream(cfg, 0.2, batch=2))
    assert run.state.topology.n_alive == [8, 4, 1]
    rtn = RTN(cfg, 2).to("cuda")
    x, y = _task(cfg)
    out = rtn(x.cuda())
    torch.nn.functional.cross_entropy(out.readout, y.cuda()).backward()
    assert rtn.grow(out, t=1) and rtn.topology.n_alive[0] == 8
