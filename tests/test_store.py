"""The Zarr store: what is written reads back exactly; monitors; bad targets and write failures."""

import errno
import json
import os

import numpy as np
import pytest
import xarray as xr

from rtnclock import (ConfigError, MemoryRecorder, Monitor, StoreError, ZarrRecorder, info, open_run,
                      simulate)
from rtnclock import chunks as chunks_mod
from rtnclock import monitor as monitor_mod
from rtnclock import store as store_mod
from rtnclock import zarrwriter
from tests.problems import pulse_stream, test_config


def _cfg(**kw):
    return test_config(K=2, branching=2, ratio=2.0, gate_bias=0.0, dtype="float32", rtol=1e-5, atol=1e-7, **kw)


def _run(tmp_path, name="run.zarr", monitor=None, duration=0.32, **kw):
    cfg = _cfg()
    stream = pulse_stream(cfg, duration, start=0.05, stop=0.1, height=2.0)
    mem = MemoryRecorder()
    simulate(cfg, stream, recorder=mem)
    rec = ZarrRecorder(tmp_path / name, monitor=monitor, scenario="pulse", seed=7, **kw)
    run = simulate(cfg, stream, recorder=rec)
    return cfg, stream, mem, rec, run


def test_store_reads_back_every_tick_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.05)       # several chunks per level
    cfg, stream, mem, rec, run = _run(tmp_path)
    stored = open_run(tmp_path / "run.zarr")
    assert stored.finished and stored.config == cfg
    assert stored.attrs["scenario"] == "pulse" and stored.attrs["seed"] == 7
    for k in range(cfg.n_levels):
        ds, ref = stored.levels[k], mem.trajectory(k)
        assert ds.sizes["time"] == len(ref["t"]) > 1
        assert ds["time"].attrs["units"] == "s"
        np.testing.assert_array_equal(ds["time"].values, ref["t"].numpy())
        for v in ("state", "gate", "surprise", "entropy", "free_energy", "active"):
            np.testing.assert_array_equal(ds[v].values, ref[v].numpy(), err_msg=f"level {k} {v}")
        np.testing.assert_allclose(ds["cost"].values, ref["cost"].numpy())
    # More than one chunk was appended for the leaves.
    assert rec.buffers[0].chunk < stored.levels[0].sizes["time"]
    # The events table equals the run's log.
    ev = stored.events
    assert list(ev["kind"].values) == [e.kind for e in run.events]
    np.testing.assert_array_equal(ev["n"].values, [e.n for e in run.events])
    # The sensory features are the stream's frames.
    np.testing.assert_array_equal(stored.sensory["features"].values,
                                  stream.frames.float().numpy().transpose(1, 0, 2, 3))


@pytest.mark.parametrize("pieces", [False, True])
def test_observables_in_store_equal_run_observables(tmp_path, monkeypatch, pieces):
    if pieces:
        # Effective ranks computed in small pieces on the writer's thread, over
        # several chunks, the last flush computing only the rows after the last piece.
        monkeypatch.setattr(chunks_mod.Rows, "BATCH", 4)
        monkeypatch.setattr(chunks_mod.Rows, "RANK_PIECE", 8)
        monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.2)          # the leaves: 20 + 13 ticks
    cfg, stream, mem, rec, run = _run(tmp_path)
    if pieces:
        assert rec.buffers[0].chunk < open_run(tmp_path / "run.zarr").levels[0].sizes["time"]
    stored = open_run(tmp_path / "run.zarr")
    from rtnclock.observables import level_observables
    for k in range(cfg.n_levels):
        ref = level_observables(mem.trajectory(k), cfg.gate_theta, cfg.free_energy_tau)
        for name in ("U", "S", "F", "open_fraction", "effective_rank"):
            np.testing.assert_allclose(stored.levels[k][name].values, ref[name].numpy(), rtol=1e-6,
                                       atol=1e-7, err_msg=f"level {k} {name}")


def test_xarray_opens_each_level_with_labelled_dims(tmp_path):
    _run(tmp_path)
    ds = xr.open_zarr(tmp_path / "run.zarr", group="level_1", consolidated=False)
    assert ds["state"].dims == ("time", "batch", "block", "dim")
    assert ds["gate"].dims == ("time", "batch", "block")
    assert "time" in ds.indexes


def test_monitor_selects_levels_blocks_variables_and_every(tmp_path):
    mon = Monitor(variables=("gate", "state"), levels=(0, 2), every=3, blocks={0: [1, 3]})
    cfg, _, mem, _, _ = _run(tmp_path, monitor=mon)
    stored = open_run(tmp_path / "run.zarr")
    assert sorted(stored.levels) == [0, 2]
    leaves, ref = stored.levels[0], mem.trajectory(0)
    assert set(leaves.data_vars) >= {"gate", "state", "U"} and "surprise" not in leaves
    np.testing.assert_array_equal(leaves["block"].values, [1, 3])
    np.testing.assert_array_equal(leaves["state"].values, ref["state"][::3][:, :, [1, 3]].numpy())
    np.testing.assert_array_equal(leaves["time"].values, ref["t"][::3].numpy())


def test_default_monitor_keeps_few_leaves():
    cfg = test_config(K=3, branching=4)                                   # 64 leaves
    blocks = Monitor().resolve(cfg)
    assert len(blocks[0]) == monitor_mod.DEFAULT_LEAF_BLOCKS and blocks[0][0] == 0 and blocks[0][-1] == 63
    assert len(blocks[1]) == cfg.blocks(1)


@pytest.mark.parametrize("monitor,field", [
    (Monitor(variables=("state", "bogus")), "monitor.variables"),
    (Monitor(levels=(5,)), "monitor.levels"),
    (Monitor(every=0), "monitor.every"),
    (Monitor(blocks={0: [0, 99]}), "monitor.blocks[0]"),
])
def test_bad_monitor_names_the_field(tmp_path, monitor, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        _run(tmp_path, monitor=monitor)


def test_existing_store_needs_overwrite(tmp_path):
    _run(tmp_path)
    before = open_run(tmp_path / "run.zarr").levels[0]["state"].values
    with pytest.raises(StoreError, match="exists; pass overwrite"):
        _run(tmp_path)
    np.testing.assert_array_equal(open_run(tmp_path / "run.zarr").levels[0]["state"].values, before)
    _run(tmp_path, overwrite=True)                                         # replaces it


def test_refuses_to_overwrite_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "run.zarr").mkdir()
    (tmp_path / "run.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a Zarr store"):
        _run(tmp_path, overwrite=True)
    assert (tmp_path / "run.zarr" / "notes.txt").read_text() == "mine"


def test_read_only_directory_is_a_clear_error(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:                       # root writes anyway: make the check see what a user would
        monkeypatch.setattr(store_mod.os, "access", lambda p, mode: False)
    try:
        with pytest.raises(StoreError, match="not writable"):
            _run(ro)
    finally:
        ro.chmod(0o700)
    assert not (ro / "run.zarr").exists()


def test_full_disk_keeps_what_was_committed(tmp_path, monkeypatch):
    """A write that fails with ENOSPC stops the run with a clear error; earlier flushes stay readable."""
    monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.05)
    real_write, calls = zarrwriter.write_file, {"n": 0}

    def write(path, data, how, **kw):
        if "level_0" in str(path) and path.name.startswith("c.") and len(data):     # a chunk with rows
            calls["n"] += 1
            if calls["n"] > 20:                       # the first chunk flushes fit, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data, how, **kw)

    monkeypatch.setattr(zarrwriter, "write_file", write)
    with pytest.raises(StoreError, match="disk full"):
        _run(tmp_path, duration=0.64)
    stored = open_run(tmp_path / "run.zarr")
    assert not stored.finished
    leaves = stored.levels[0]
    assert leaves.sizes["time"] > 0
    assert np.isfinite(leaves["state"].values).all()          # committed rows are whole


def test_failed_write_is_a_clear_error_and_nothing_is_written_after(tmp_path, monkeypatch):
    """A failed chunk write stops the run with the path and the reason; the
    writer applies nothing after it, and what was committed before stays readable."""
    monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.05)
    seen = {}

    class Sabotaged(ZarrRecorder):
        def _flush(self, buffers, **kw):
            if not seen and self.buffers[0].rows > 0:      # after the first leaf chunk ...
                self.writer.wait()                           # ... is on disk
                chunk = self.path / "level_0" / "state" / "c.1.0.0.0"
                chunk.unlink(missing_ok=True)                 # the spare made ahead
                chunk.mkdir()                                 # the next chunk's file is a folder
                seen["root"] = (self.path / "zarr.json").read_bytes()
            return super()._flush(buffers, **kw)

    cfg = _cfg()
    stream = pulse_stream(cfg, 0.64, start=0.05, stop=0.1, height=2.0)
    with pytest.raises(StoreError, match="cannot write store .*run.zarr"):
        simulate(cfg, stream, recorder=Sabotaged(tmp_path / "run.zarr"))
    # The failed flush never committed, and neither did the failed run's close.
    assert (tmp_path / "run.zarr" / "zarr.json").read_bytes() == seen["root"]
    stored = open_run(tmp_path / "run.zarr")
    assert not stored.finished and stored.levels[0].sizes["time"] > 0
    assert np.isfinite(stored.levels[0]["state"].values).all()


def test_store_with_a_killed_writes_temporary_files_opens(tmp_path):
    """Files are written under a temporary name, then renamed: a kill between leaves the partial."""
    _, _, mem, _, _ = _run(tmp_path)
    path = tmp_path / "run.zarr"
    for where in (path, path / "level_0", path / "level_0" / "state"):
        (where / "zarr.json.partial").write_bytes(b'{"zarr_for')
    stored = open_run(path)
    np.testing.assert_array_equal(stored.levels[0]["state"].values, mem.trajectory(0)["state"].numpy())


def test_uncommitted_rows_are_dropped(tmp_path):
    """Rows written past the last commit (a flush killed before its commit) are not read."""
    _run(tmp_path)
    path = tmp_path / "run.zarr"
    meta = json.loads((path / "zarr.json").read_text())
    full = meta["attributes"]["rtnclock"]["committed"]["level_0"]
    meta["attributes"]["rtnclock"]["committed"]["level_0"] = full - 3
    (path / "zarr.json").write_text(json.dumps(meta))
    assert open_run(path).levels[0].sizes["time"] == full - 3


def test_info_summarises_a_run(tmp_path):
    cfg, _, mem, _, run = _run(tmp_path)
    text = info(tmp_path / "run.zarr")
    assert "finished" in text and "scenario pulse" in text and "size on disk" in text
    ticks = {k: len(mem.ticks[k]) for k in range(cfg.n_levels)}
    for k, n in ticks.items():
        assert any(line.split()[:2] == [str(k), str(n)] for line in text.splitlines())
    assert f"sparsity {run.sparsity:.3f}" in text


def test_open_run_on_a_missing_or_foreign_store(tmp_path):
    with pytest.raises(StoreError, match="no Zarr store"):
        open_run(tmp_path / "nothing.zarr")
    import zarr
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an rtnclock run"):
        open_run(tmp_path / "other.zarr")


def test_sensory_frames_and_annotations_are_stored_as_delivered(tmp_path, monkeypatch):
    """Frames are appended at flushes as the stream delivers them; the
    scenario's annotations read back with their kinds."""
    from rtnclock import Stream

    monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.05)
    cfg = _cfg()
    whole = pulse_stream(cfg, 0.32, start=0.05, stop=0.1, height=2.0)
    frames = whole.frames.float()
    notes = {"time": [0.05, 0.1], "kind": ["onset", "offset"], "stream": [0, 0], "level": [2.0, 0.0]}
    stream = Stream.from_chunks((frames[:, i:i + 9] for i in range(0, frames.shape[1], 9)), whole.dt,
                                n_frames=frames.shape[1], batch=1, n_leaves=cfg.blocks(0),
                                input_dim=cfg.input_dim, annotations=notes, name="pulse")
    simulate(cfg, stream, recorder=ZarrRecorder(tmp_path / "run.zarr"))
    stored = open_run(tmp_path / "run.zarr")
    np.testing.assert_array_equal(stored.sensory["features"].values, frames.numpy().transpose(1, 0, 2, 3))
    np.testing.assert_allclose(stored.sensory["time"].values, np.arange(frames.shape[1]) * whole.dt)
    assert stored.sensory.attrs["source"] == "pulse"
    assert list(stored.annotations["kind"].values) == ["onset", "offset"]
    np.testing.assert_array_equal(stored.annotations["time"].values, [0.05, 0.1])
    np.testing.assert_array_equal(stored.annotations["level"].values, [2.0, 0.0])


def test_bad_frame_mid_run_keeps_what_was_flushed(tmp_path, monkeypatch):
    """A NaN frame in a late chunk stops the run with an error naming the
    frame; the store keeps the earlier flushes and their input frames."""
    from rtnclock import Stream, StreamError

    monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.05)
    cfg = _cfg()
    frames = pulse_stream(cfg, 0.32, start=0.05, stop=0.1, height=2.0).frames.float().clone()
    frames[0, 50] = float("nan")                               # t = 0.25 s
    stream = Stream.from_chunks((frames[:, i:i + 5] for i in range(0, frames.shape[1], 5)), 0.005,
                                n_frames=frames.shape[1], batch=1, n_leaves=cfg.blocks(0),
                                input_dim=cfg.input_dim, name="scene")
    with pytest.raises(StreamError, match=r"scene: frame 50 \(t=0.25 s\)"):
        simulate(cfg, stream, recorder=ZarrRecorder(tmp_path / "run.zarr"))
    stored = open_run(tmp_path / "run.zarr")
    assert not stored.finished
    leaves = stored.levels[0]
    assert 0.1 < float(leaves["time"][-1]) < 0.25
    rows = stored.sensory.sizes["frame"]
    assert float(leaves["time"][-1]) / 0.005 < rows <= 50
    np.testing.assert_array_equal(stored.sensory["features"].values[:, 0], frames[0, :rows].numpy())


@pytest.mark.parametrize("spacing", [0.0, 1e9])
def test_checkpoints_go_with_flushes_at_most_once_per_spacing(tmp_path, monkeypatch, spacing):
    """Every flush commits its rows; a checkpoint goes with it only CHECKPOINT_SECONDS of
    wall time after the last (0: every flush; a spacing longer than the run: none)."""
    monkeypatch.setattr(store_mod, "CHUNK_SECONDS", 0.05)
    monkeypatch.setattr(store_mod, "CHECKPOINT_SECONDS", spacing)
    seen = {"moments": 0, "checkpoints": 0}

    class Counting(ZarrRecorder):
        def moment(self, n, state):
            seen["moments"] += 1
            return super().moment(n, state)

        def _checkpoint(self, state):
            seen["checkpoints"] += 1
            return super()._checkpoint(state)

    cfg = _cfg()
    stream = pulse_stream(cfg, 0.32, start=0.05, stop=0.1, height=2.0)
    simulate(cfg, stream, recorder=Counting(tmp_path / "run.zarr"))
    assert seen["moments"] >= 5
    assert seen["checkpoints"] == (seen["moments"] if spacing == 0 else 0)
    np.testing.assert_allclose(open_run(tmp_path / "run.zarr").levels[0]["time"].values,
                               np.arange(33) * 0.01, rtol=0, atol=1e-12)      # every leaf tick, 0 .. 0.32 s


def test_the_recorder_keeps_no_more_than_a_batch_of_ticks_alive(tmp_path):
    """Ticks are copied into preallocated rows 64 at a time, so however far a chunk
    has filled, at most a batch of tick records (and their tensors) stays alive."""
    import gc

    from rtnclock.recorder import TickRecord
    seen = {}

    class Probing(ZarrRecorder):
        def record(self, tick):
            super().record(tick)
            if tick.level == 0 and tick.n == 400:            # 400 leaf ticks into a chunk
                seen["held"], seen["chunk"] = self.buffers[0].count, self.buffers[0].chunk
                seen["alive"] = sum(type(o) is TickRecord for o in gc.get_objects())

    cfg = _cfg()
    stream = pulse_stream(cfg, 4.5, start=0.05, stop=0.1, height=2.0)
    simulate(cfg, stream, recorder=Probing(tmp_path / "run.zarr"))
    assert seen["held"] == 401 < seen["chunk"]                   # ticks 0..400 wait for their chunk
    assert seen["alive"] <= chunks_mod.Rows.BATCH * cfg.n_levels + cfg.n_levels
