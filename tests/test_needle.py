"""The needle scenario: length, determinism, chunking, needles against the haystack, gates."""

from __future__ import annotations

import functools

import pytest
import torch

import rtnclock
from rtnclock.scenarios import common, needle as N

F64 = N.default_config().replace(dtype="float64")


def _frames(seed=0, batch=1, config=F64, **kw):
    return N.make_stream(config, seed=seed, batch=batch, **kw).frames


def test_length_duration_and_default():
    assert _frames(length=150, batch=2).shape == (2, 150, 16, 4)
    stream = N.make_stream(N.default_config(), duration=1.0)
    assert stream.n_frames == 101 and stream.frames.dtype == torch.float32
    assert stream.dt == pytest.approx(0.01) and stream.duration == pytest.approx(1.0)
    default = N.make_stream(F64)
    assert default.n_frames == N.DEFAULT_LENGTH
    assert default.duration == pytest.approx(N.DEFAULT_DURATION) == 10.0
    other = F64.replace(K=1, branching=8, input_dim=3, gate_a=8.0, gate_bias=-1.5)
    assert _frames(length=40, config=other).shape == (1, 40, 8, 3)


def test_deterministic_and_a_short_stream_is_the_start_of_a_long_one():
    short = N.make_stream(F64, length=150, seed=3, batch=2)
    long = N.make_stream(F64, length=1234, seed=3, batch=2)
    assert torch.equal(short.frames, long.frames[:, :150])
    assert torch.equal(short.frames, _frames(length=150, seed=3, batch=2))
    assert torch.equal(short.frames[1], _frames(length=150, seed=4)[0])     # stream b is seed + b
    assert N.needles(20000, 7, 16)[:2] == N.needles(1000, 7, 16)
    assert N.needle_frames(20000, 7)[:2] == N.needle_frames(1000, 7) == [f for f, _ in N.needles(1000, 7, 16)]


def test_chunks_render_lazily_and_their_size_does_not_matter(monkeypatch):
    whole = _frames(length=300, seed=2)
    stream = N.make_stream(F64, length=300, seed=2)
    assert stream.loaded == 0
    stream.value(0.1)
    assert stream.loaded == round(common.CHUNK_SECONDS * N.FRAME_RATE)
    assert torch.equal(stream.frames, whole)
    for seconds in (0.01, 0.03, 5.0):                 # needles cut by chunk edges included
        monkeypatch.setattr(N.common, "chunked_stream",
                            functools.partial(common.chunked_stream, chunk_seconds=seconds))
        assert torch.equal(_frames(length=300, seed=2), whole)


@pytest.mark.parametrize("length, count", [(40, 0), (95, 1), (100, 1), (400, 1), (995, 2), (1000, 2),
                                           (10000, 3), (100000, 4)])
def test_one_needle_per_decade(length, count):
    lo, hi = N.NEEDLE_BAND
    for seed in range(5):
        found = N.needles(length, seed, 16)
        assert len(found) == count
        for j, (first, leaf) in enumerate(found):
            assert lo * 10 ** j <= first <= hi * 10 ** j - N.NEEDLE_FRAMES and first < length
            assert 0 <= leaf < 16


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_stream_is_the_haystack_plus_the_annotated_needles(seed):
    length = 3000
    stream = N.make_stream(F64, length=length, seed=seed)
    notes = stream.annotations
    hay = N.haystack(F64, length=length, seed=seed)                          # [L, n, c]
    assert hay.abs().max() <= N.HAYSTACK_AMPLITUDE
    assert hay.mean().abs() < 0.01                                          # zero-mean
    expected = torch.zeros_like(hay)
    assert notes["kind"] == ["needle"] * 2 and notes["stream"] == [0, 0]
    for t, frame, leaf in zip(notes["time"], notes["frame"], notes["leaf"]):
        assert t == pytest.approx(frame / N.FRAME_RATE)
        expected[frame:frame + N.NEEDLE_FRAMES, leaf] = N.NEEDLE_AMPLITUDE
    deviation = stream.frames[0] - hay
    assert (deviation - expected).abs().max() < 1e-12                       # needles, and nothing else
    assert (deviation.abs() > 1.0).sum() == 2 * N.NEEDLE_FRAMES * F64.input_dim
    assert [(f, l) for f, l in zip(notes["frame"], notes["leaf"])] == N.needles(length, seed, 16)


def test_batch_annotations_name_each_stream():
    notes = N.make_stream(F64, length=1000, seed=5, batch=3).annotations
    assert notes["stream"] == [0, 0, 1, 1, 2, 2]
    for b in range(3):
        assert notes["frame"][2 * b:2 * b + 2] == N.needle_frames(1000, 5 + b)


@pytest.mark.parametrize("kwargs, field", [
    (dict(duration=1.0, length=101), "length"), (dict(length=1), "length"), (dict(length=2.5), "length"),
    (dict(length=True), "length"), (dict(duration=0.0), "duration"), (dict(duration=float("inf")), "duration"),
    (dict(seed=-1), "seed"), (dict(seed=0.5), "seed"), (dict(batch=0), "batch"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(rtnclock.ConfigError) as err:
        N.make_stream(F64, **kwargs)
    assert err.value.field == field


def test_bad_ground_truth_arguments_name_the_field():
    for call, field in ((lambda: N.needles(0, 0, 16), "length"), (lambda: N.needles(10, 0, 0), "n_leaves"),
                        (lambda: N.needle_frames(10, -2), "seed"), (lambda: N.haystack(F64, length=0), "length")):
        with pytest.raises(rtnclock.ConfigError) as err:
            call()
        assert err.value.field == field


def test_each_needle_opens_its_own_block_and_nothing_else_opens():
    """2 s of seeds 0-3, one needle each (0.4-0.94 s), leaves asleep otherwise.

    Measured: the needle's level-1 block opens 30-50 ms after the needle's
    first frame and the needle's own leaf 10 ms later; no other level-0 or
    level-1 gate opens.  Asserted: within 100 ms and 150 ms, and no opening
    farther than 0.3 s from a needle or outside the needle's block.
    """
    cfg = N.default_config()
    stream = N.make_stream(cfg, length=201, seed=0, batch=4)
    notes = stream.annotations
    run = rtnclock.simulate(cfg, stream)
    opens = [e for e in run.events if e.kind == "gate_open" and e.level < cfg.K]
    b = cfg.branching
    assert len(notes["time"]) == 4
    for s, t, leaf in zip(notes["stream"], notes["time"], notes["leaf"]):
        mine = [e for e in opens if e.stream == s]
        assert any(e.level == 1 and e.block == leaf // b and t <= e.t < t + 0.1 for e in mine)
        assert any(e.level == 0 and e.block == leaf and t <= e.t < t + 0.15 for e in mine)
        assert all(t <= e.t < t + 0.3 and e.block // b ** (1 - e.level) == leaf // b for e in mine)
    root = next(r for r in run.summary() if r["level"] == cfg.K)
    assert root["sparsity"] == 0.0 and run.sparsity > 0.9                  # the root never sleeps; the rest does


@pytest.mark.slow
def test_needles_found_over_a_hundred_seconds():
    """L = 10001 (100 s), seeds 0-1: three needles each, nothing opens anywhere else."""
    cfg = N.default_config()
    stream = N.make_stream(cfg, length=10001, seed=0, batch=2)
    notes = stream.annotations
    run = rtnclock.simulate(cfg, stream)
    opens = [e for e in run.events if e.kind == "gate_open" and e.level < cfg.K]
    assert notes["stream"] == [0, 0, 0, 1, 1, 1]
    for s, t, leaf in zip(notes["stream"], notes["time"], notes["leaf"]):
        assert any(e.stream == s and e.level == 1 and e.block == leaf // cfg.branching and t <= e.t < t + 0.1
                   for e in opens)
    for e in opens:
        assert any(e.stream == s and t <= e.t < t + 0.3 for s, t in zip(notes["stream"], notes["time"]))
    assert run.sparsity > 0.95


def test_targets_mark_the_needles_in_the_frames():
    """Targets are 1 exactly where a needle lifts a leaf above its haystack."""
    cfg = N.default_config()
    stream = N.make_stream(cfg, length=1200, seed=4, batch=2)
    target = N.targets(cfg, length=1200, seed=4, batch=2)
    assert target.shape == (2, 1200, cfg.blocks(0)) and int(target.sum()) == 2 * 2 * N.NEEDLE_FRAMES
    for b in range(2):
        lifted = (stream.frames[b] - N.haystack(cfg, length=1200, seed=4 + b).float()).abs().amax(-1) > 1.0
        assert torch.equal(lifted, target[b].bool())
