"""The visual_stream scenario: grid, determinism, chunking, features against the scene, gates.

Thresholds on features come from the scene's physics: an event's new motion
overshoots to 0.9-1.5 in its channel, a steady drift stays under ~0.32 (pixel
noise), a blank under ~0.1 (measured over seeds 0-9); the tests leave a margin.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import rtnclock
from rtnclock.analysis import by_stream, gate_open_around
from rtnclock.scenarios import common, visual_stream as V

F64 = V.default_config().replace(dtype="float64")


def _frames(duration, seed=0, batch=1, config=F64):
    return V.make_stream(config, duration=duration, seed=seed, batch=batch).frames


def _inside(ev, pos):
    return ((pos[:, 0] >= ev["row"]) & (pos[:, 0] < ev["row"] + ev["size"])
            & (pos[:, 1] >= ev["col"]) & (pos[:, 1] < ev["col"] + ev["size"]))


def test_shape_dtype_and_frame_count():
    stream = V.make_stream(V.default_config(), duration=1.0, seed=0, batch=2)
    assert stream.n_frames == 101 and stream.dt == pytest.approx(0.01)
    assert stream.frames.shape == (2, 101, 16, 4) and stream.frames.dtype == torch.float32
    assert _frames(0.333).shape == (1, 35, 16, 4) and _frames(0.333).dtype == torch.float64
    other = F64.replace(K=3, branching=2, input_dim=6, dims=8, gate_a=8.0)
    assert _frames(0.2, config=other).shape == (1, 21, 8, 6)


@pytest.mark.parametrize("b, K, shape", [(4, 2, (4, 4)), (2, 3, (2, 4)), (3, 2, (3, 3)), (4, 1, (2, 2)),
                                         (1, 3, (1, 1))])
def test_leaf_grid_tiles_every_block_as_a_compact_rectangle(b, K, shape):
    rows, cols, pos = V.leaf_grid(F64.replace(K=K, branching=b, gate_a=8.0))
    assert (rows, cols) == shape
    assert len({tuple(p) for p in pos.tolist()}) == b ** K                 # one patch per leaf
    assert pos[:, 0].max() < rows and pos[:, 1].max() < cols
    for k in range(1, K + 1):                                            # block-spin pools consecutive leaves
        for block in pos.reshape(-1, b ** k, 2):
            span = (block.max(0).values - block.min(0).values + 1).prod()
            assert span == b ** k                                        # a full rectangle, no holes


def test_quadrants_of_the_default_grid():
    _, _, pos = V.leaf_grid(F64)
    quads = [sorted({(r // 2, c // 2) for r, c in pos[4 * i:4 * i + 4].tolist()}) for i in range(4)]
    assert quads == [[(0, 0)], [(0, 1)], [(1, 0)], [(1, 1)]]


def test_deterministic_and_a_short_stream_is_the_start_of_a_long_one():
    short = V.make_stream(F64, duration=2.0, seed=3, batch=2)
    long = V.make_stream(F64, duration=4.03, seed=3, batch=2)
    assert torch.equal(short.frames, long.frames[:, :201])
    assert torch.equal(short.frames, _frames(2.0, seed=3, batch=2))
    assert torch.equal(short.frames[1], _frames(2.0, seed=4)[0])          # stream b is seed + b
    assert not torch.equal(short.frames[0], short.frames[1])
    keep = [i for i, t in enumerate(long.annotations["time"]) if t <= 2.0]
    assert {k: [v[i] for i in keep] for k, v in long.annotations.items()} == short.annotations


def test_chunks_render_lazily_and_their_size_does_not_matter(monkeypatch):
    whole = _frames(1.0, seed=5)
    stream = V.make_stream(F64, duration=1.0, seed=5)
    assert stream.loaded == 0                                            # nothing rendered up front
    stream.value(0.1)
    assert stream.loaded == round(common.CHUNK_SECONDS * V.FRAME_RATE)    # one chunk
    assert torch.equal(stream.frames, whole)
    for seconds in (0.01, 0.07, 2.0):
        monkeypatch.setattr(V.common, "chunked_stream",
                            functools.partial(common.chunked_stream, chunk_seconds=seconds))
        assert torch.equal(_frames(1.0, seed=5), whole)


def test_features_finite_and_in_range():
    x = _frames(10.0, seed=1, batch=2)
    assert torch.isfinite(x).all()
    assert x.min() >= -V.ONSET * math.log(2) / 20 - 1e-9
    assert x.max() <= V.SUSTAIN + V.ONSET * 1.001 and x.max() > 0.9          # onsets reach ~1-1.5
    assert x.median() < 0.05                                             # mostly quiet


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_annotations_match_the_rendered_content(seed):
    x = _frames(10.0, seed=seed)[0]                                      # [F, n, c]
    t = torch.arange(x.shape[0], dtype=torch.float64) / V.FRAME_RATE
    _, _, pos = V.leaf_grid(F64)
    scene = V.scene(F64, duration=10.0, seed=seed)
    events = [ev for ev in scene if ev["kind"] != "start" and ev["start"] < 9.6]
    assert {(ev["kind"], ev.get("variant")) for ev in events} == \
        {("oddball", 0), ("oddball", 1), ("turn", None), ("blank", None)}     # each seed shows every kind

    def peak(a, b, j):                                                    # [n] max of channel j over [a, b)
        return x[(t >= a) & (t < b)][:, :, j].max(0).values

    for ev in events:
        a = ev["start"]
        if ev["kind"] == "oddball" and ev["variant"] == 0:               # only the square's patches see it
            p = peak(a, a + 0.15, ev["direction"])
            assert p[_inside(ev, pos)].min() > 0.6 and p[~_inside(ev, pos)].max() < 0.2
        elif ev["kind"] == "oddball":                                     # the bar sweeps every patch
            assert peak(a, ev["end"] + 0.05, ev["direction"]).min() > 0.6
        elif ev["kind"] == "turn":                                        # the whole field's new direction
            assert peak(a, a + 0.15, ev["direction"]).min() > 0.6
        else:                                                             # grey, then the drift returns
            assert x[(t >= a + 0.1) & (t < ev["end"])].max() < 0.2
            assert peak(ev["end"], ev["end"] + 0.15, V._direction_at(scene, ev["end"])).min() > 0.6
    steady = torch.ones_like(t, dtype=torch.bool)
    for ev in events:
        for edge in {ev["start"], ev["end"]}:
            steady &= ~((t > edge - 0.05) & (t < edge + 0.5))
    assert steady.sum() > 200 and x[steady].max() < 0.45


def test_stream_annotations_list_the_scene():
    stream = V.make_stream(F64, duration=10.0, seed=2, batch=2)
    notes = stream.annotations
    for b in range(2):
        evs = [ev for ev in V.scene(F64, duration=10.0, seed=2 + b)
               if ev["kind"] != "start" and ev["start"] <= 10.0]
        mine = [i for i, s in enumerate(notes["stream"]) if s == b]
        assert [notes["kind"][i] for i in mine] == [ev["kind"] for ev in evs]
        assert [notes["time"][i] for i in mine] == [ev["start"] for ev in evs]
        assert [notes["direction"][i] for i in mine] == [ev.get("direction", -1) for ev in evs]
    assert notes["kind"].count("oddball") >= 4


@pytest.mark.parametrize("kwargs, field", [
    (dict(duration=0.0), "duration"), (dict(duration=-1.0), "duration"), (dict(duration=float("nan")), "duration"),
    (dict(duration="10"), "duration"), (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(seed=True), "seed"),
    (dict(batch=0), "batch"), (dict(batch=2.0), "batch"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(rtnclock.ConfigError) as err:
        V.make_stream(F64, **kwargs)
    assert err.value.field == field


def test_one_channel_cannot_carry_directions():
    with pytest.raises(rtnclock.ConfigError) as err:
        V.make_stream(F64.replace(input_dim=1), duration=1.0)
    assert err.value.field == "input_dim"


def test_gates_open_after_oddballs_and_stay_shut_in_steady_stretches():
    """2 s of seeds 0 and 1: one oddball each near 1 s (measured: leaf gates 7.5% open vs 0%)."""
    cfg = V.default_config()
    stream = V.make_stream(cfg, duration=2.0, seed=0, batch=2)
    notes = stream.annotations
    run = rtnclock.simulate(cfg, stream, recorder=rtnclock.MemoryRecorder())
    odd = [i for i, k in enumerate(notes["kind"]) if k == "oddball"]
    assert len(odd) == 2
    onsets = by_stream([notes["time"][i] for i in odd], [notes["stream"][i] for i in odd], 2)
    ends = [i for i, k in enumerate(notes["kind"]) if k in ("oddball", "blank")]
    changes = by_stream(notes["time"] + [notes["end"][i] for i in ends],
                        notes["stream"] + [notes["stream"][i] for i in ends], 2)
    share = {}
    for k in range(cfg.n_levels):
        traj = run.trajectory(k)
        share[k] = gate_open_around(traj["t"].numpy(), traj["gate"].numpy(), cfg.gate_theta, onsets, changes)
    assert share[0]["steady_ticks"] > 100 and share[0]["onset_ticks"] >= 40
    assert share[0]["onset"] > 0.03 and share[0]["steady"] < 0.01              # leaves
    assert share[cfg.K]["onset"] > share[cfg.K]["steady"] + 0.3                # the root notices first
    assert run.sparsity > 0.8
    assert np.isfinite(run.cost()[0])


@pytest.mark.slow
def test_gates_follow_oddballs_on_the_default_ten_seconds():
    """Defaults, 10 s, seeds 0-2 as one batch (measured: leaves 5.8% open after oddballs, 0% steady)."""
    cfg = V.default_config()
    stream = V.make_stream(cfg, seed=0, batch=3)
    notes = stream.annotations
    run = rtnclock.simulate(cfg, stream, recorder=rtnclock.MemoryRecorder())
    odd = [i for i, k in enumerate(notes["kind"]) if k == "oddball"]
    onsets = by_stream([notes["time"][i] for i in odd], [notes["stream"][i] for i in odd], 3)
    ends = [i for i, k in enumerate(notes["kind"]) if k in ("oddball", "blank")]
    changes = by_stream(notes["time"] + [notes["end"][i] for i in ends],
                        notes["stream"] + [notes["stream"][i] for i in ends], 3)
    share = [gate_open_around(traj["t"].numpy(), traj["gate"].numpy(), cfg.gate_theta, onsets, changes)
             for traj in (run.trajectory(k) for k in range(cfg.n_levels))]
    assert share[0]["onset"] > 0.03 and share[0]["steady"] < 0.005
    assert share[1]["onset"] > 3 * share[1]["steady"] and share[2]["onset"] > 3 * share[2]["steady"]
    assert run.sparsity > 0.9
