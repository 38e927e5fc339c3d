"""A run killed with SIGKILL (real subprocesses) leaves a store that opens and holds
exactly an uninterrupted run's ticks up to its last committed flush."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rtnclock import MemoryRecorder, ZarrRecorder, open_run, simulate
from rtnclock.cli import main
from rtnclock.scenarios import audio_stream

DURATION = 6.0
CHUNK_SECONDS = 0.25            # many flushes per run

CHILD = r"""
import os, signal, sys, torch
torch.set_num_threads(1)
from rtnclock import ZarrRecorder, simulate, store
from rtnclock.scenarios import audio_stream
store.CHUNK_SECONDS = {chunk}
store.CHECKPOINT_SECONDS = 0.0        # a checkpoint at every flush
path, kill_at_write = sys.argv[1], int(sys.argv[2])
if kill_at_write:
    # Die inside a flush: at the n-th file the store writer writes (counting from the run's start).
    from rtnclock import zarrwriter
    real, count = zarrwriter.write_file, [0]
    def write_file(path, data, how, **kw):
        count[0] += 1
        if count[0] == kill_at_write:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data, how, **kw)
    zarrwriter.write_file = write_file

cfg = audio_stream.default_config()
stream = audio_stream.make_stream(cfg, duration={duration}, seed=0, batch=1)
print("ready", flush=True)
simulate(cfg, stream, recorder=ZarrRecorder(path, overwrite=True, scenario="audio_stream", seed=0,
                                            duration={duration}, batch=1))
print("done", flush=True)
""".format(chunk=CHUNK_SECONDS, duration=DURATION)


@pytest.fixture(scope="module")
def reference():
    cfg = audio_stream.default_config()
    stream = audio_stream.make_stream(cfg, duration=DURATION, seed=0, batch=1)
    rec = MemoryRecorder()
    run = simulate(cfg, stream, recorder=rec)
    return {k: rec.trajectory(k) for k in range(cfg.n_levels)}, list(run.events)


def _child(path, kill_at_write=0):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(kill_at_write)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _check_prefix(path, reference):
    """The store opens; every committed row equals the uninterrupted run's."""
    trajectories, events = reference
    stored = open_run(path)
    for k, ds in stored.levels.items():
        ref, rows = trajectories[k], ds.sizes["time"]
        assert rows <= len(ref["t"])
        np.testing.assert_array_equal(ds["time"].values, ref["t"][:rows].numpy())
        # Stored leaves are the default monitor's (all 16 here): states bit for bit.
        np.testing.assert_array_equal(ds["state"].values, ref["state"][:rows].numpy())
        np.testing.assert_array_equal(ds["gate"].values, ref["gate"][:rows].numpy())
    kinds = list(stored.events["kind"].values)
    assert kinds == [e.kind for e in events[:len(kinds)]]
    return stored


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1, 1.6])
def test_sigkill_at_any_moment_leaves_a_readable_prefix(tmp_path, reference, delay):
    path = tmp_path / "run.zarr"
    child = _child(path)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    if not (path / "zarr.json").exists():
        pytest.skip("killed before the store was created")
    stored = _check_prefix(path, reference)
    if child.returncode == -signal.SIGKILL:
        assert not stored.finished or stored.levels[0].sizes["time"] == len(reference[0][0]["t"])


@pytest.mark.parametrize("kill_at_write", [3, 40, 150, 400])
def test_sigkill_inside_a_flush_keeps_the_last_commit(tmp_path, reference, kill_at_write):
    path = tmp_path / "run.zarr"
    child = _child(path, kill_at_write)
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    stored = _check_prefix(path, reference)
    assert not stored.finished
    if kill_at_write > 300:                         # past several flushes' commits: leaf data survived
        assert stored.levels[0].sizes["time"] > 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    child = _child(path)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return open_run(path)


def _assert_same_store(a, b):
    assert a.finished and b.finished
    assert sorted(a.levels) == sorted(b.levels)
    for k in a.levels:
        for name in b.levels[k].data_vars:
            np.testing.assert_array_equal(a.levels[k][name].values, b.levels[k][name].values,
                                          err_msg=f"level {k} {name}")
    for name in b.events.data_vars:
        np.testing.assert_array_equal(a.events[name].values, b.events[name].values, err_msg=f"events {name}")
    # The input frames were appended as delivered, cut back at the resume and appended again.
    for name in ("features", "time"):
        np.testing.assert_array_equal(a.sensory[name].values, b.sensory[name].values, err_msg=f"sensory {name}")


@pytest.mark.parametrize("kill_at_write", [3, 97, 240])
def test_resume_after_a_kill_equals_the_uninterrupted_store(tmp_path, uninterrupted, kill_at_write):
    """Killed inside a flush (or while the store was laid out), then resumed: bit for bit the same store."""
    path = tmp_path / "run.zarr"
    child = _child(path, kill_at_write)
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    if kill_at_write >= 240:                # several flushes in: the resume starts from a checkpoint
        assert json.loads((path / "zarr.json").read_text())["attributes"]["rtnclock"]["checkpoint"]
    cfg = audio_stream.default_config()
    stream = audio_stream.make_stream(cfg, duration=DURATION, seed=0, batch=1)
    simulate(cfg, stream, recorder=ZarrRecorder(path, resume=True))
    _assert_same_store(open_run(path), uninterrupted)


def test_cli_resume_after_sigkill_at_a_moment(tmp_path, uninterrupted, capsys):
    path = tmp_path / "run.zarr"
    child = _child(path)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.8)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert main(["run", "audio_stream", "--out", str(path), "--resume"]) == 0
    _assert_same_store(open_run(path), uninterrupted)
    # A finished run has nothing to resume.
    assert main(["run", "audio_stream", "--out", str(path), "--resume"]) == 2
    assert "finished run; nothing to resume" in capsys.readouterr().err


def test_cli_resume_of_an_interrupted_wav_run(tmp_path, monkeypatch):
    """A `--input FILE.wav` run stopped half way (Ctrl-C) resumes from the store
    alone (file, seed and policy come from its attributes) into the same store."""
    import wave

    from rtnclock import cli, store

    rate = 22050
    t = np.arange(int(2.0 * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 700 * t) * (t > 0.6) + 0.2 * np.sin(2 * np.pi * 2500 * t) * (t > 1.4)
    wav = tmp_path / "two_tones.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    monkeypatch.setattr(store, "CHUNK_SECONDS", 0.25)            # checkpoints every quarter second
    monkeypatch.setattr(store, "CHECKPOINT_SECONDS", 0.0)
    ref, path = tmp_path / "ref.zarr", tmp_path / "run.zarr"
    assert main(["run", "audio_stream", "--input", str(wav), "--out", str(ref), "--quiet"]) == 0

    def interrupt(self, t, state):
        if t > 1.2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cli.Progress, "__call__", interrupt)
        with pytest.raises(KeyboardInterrupt):
            main(["run", "audio_stream", "--input", str(wav), "--out", str(path)])
    stopped = open_run(path)
    assert not stopped.finished and 0 < stopped.levels[0].sizes["time"] < open_run(ref).levels[0].sizes["time"]
    assert main(["run", "audio_stream", "--out", str(path), "--resume", "--quiet"]) == 0
    resumed = open_run(path)
    assert resumed.attrs["input"] == str(wav)
    _assert_same_store(resumed, open_run(ref))
