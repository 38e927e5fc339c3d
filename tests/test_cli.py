"""Command line: listing, a short run, and one-line errors naming the field."""

import pytest

from rtnclock import ConfigError
from rtnclock.cli import main, parse_changes


def test_scenarios_lists_audio_stream(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("audio_stream"))
    assert len(line.split()) > 1                                  # name, then a description


def test_run_prints_one_row_per_level(capsys):
    assert main(["run", "audio_stream", "--duration", "1"]) == 0
    out = capsys.readouterr().out
    assert "scenario audio_stream: 1 s" in out
    assert "16 leaves" in out and "3 levels" in out
    lines = out.splitlines()
    header = next(i for i, l in enumerate(lines) if l.split()[:1] == ["level"])
    for word in ("ticks", "escalations", "opens", "calls", "evals", "cost", "sparsity"):
        assert word in lines[header]
    rows = [l.split() for l in lines[header + 1:header + 4]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert all(len(r) == len(rows[0]) for r in rows)
    assert lines[header + 4].startswith("cost ")                  # no fourth level row
    assert "real-time factor" in out


def test_run_applies_set_values(capsys):
    argv = ["run", "audio_stream", "--duration", "0.2", "--batch", "2",
            "--set", "gate_mode=open", "--set", "gate_a=(1.0, 2.0, 3.0)", "--set", "rtol=1e-3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "gate_mode='open'" in out and "gate_a=(1.0, 2.0, 3.0)" in out and "rtol=0.001" in out


def test_parse_changes_literal_or_string():
    assert parse_changes(["K=3", "method=rk4", "taus=[0.01, 0.04]", "escalation_threshold=None"]) == {
        "K": 3, "method": "rk4", "taus": [0.01, 0.04], "escalation_threshold": None}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_changes(["K"])


@pytest.mark.parametrize("argv, named", [
    (["run", "no_such_scenario"], "'scenario': got 'no_such_scenario'"),
    (["run", "audio_stream", "--set", "no_such_key=1"], "'no_such_key'"),
    (["run", "audio_stream", "--set", "K=-1"], "'K': got -1"),
    (["run", "audio_stream", "--duration", "-1"], "'duration': got -1"),
])
def test_errors_are_one_line_and_exit_2(capsys, argv, named):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rtnclock: error: '")
    assert named in lines[0]
    assert captured.out == ""                                     # failed before the header


def test_run_out_writes_a_store_that_info_summarises(tmp_path, capsys):
    out = tmp_path / "a.zarr"
    assert main(["run", "audio_stream", "--duration", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"store {out}:" in printed
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scenario audio_stream, seed 0, mode multiclock, finished" in text
    assert "annotations: " in text and "drone 1" in text                # the scene's onsets in 0.5 s
    ticks = [line.split()[1] for line in text.splitlines() if line.split()[:1] == ["0"]]
    assert ticks == ["51"]                                          # 0.5 s of 10 ms leaf ticks, both ends
    # A second run to the same store must ask for --overwrite, before it simulates.
    assert main(["run", "audio_stream", "--duration", "0.5", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "exists; pass overwrite=True (--overwrite)" in captured.err and captured.out == ""
    assert main(["run", "audio_stream", "--duration", "0.5", "--out", str(out), "--overwrite"]) == 0


def test_info_on_a_missing_store_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none.zarr")]) == 2
    assert capsys.readouterr().err.startswith("rtnclock: error: no Zarr store at")


def _wav(path, seconds=1.0, amplitude=0.2, rate=22050):
    """A 16-bit mono WAV: silence, then a 1 kHz tone from half way."""
    import wave

    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    x = amplitude * np.sin(2 * np.pi * 1000 * t) * (t >= seconds / 2)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes())
    return path


def test_run_input_wav_streams_the_file_into_the_store(tmp_path, capsys):
    from rtnclock import open_run

    wav = _wav(tmp_path / "tone.wav")
    out = tmp_path / "tone.zarr"
    assert main(["run", "audio_stream", "--input", str(wav), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scenario audio_stream: 0.99 s" in printed            # the file's length
    stored = open_run(out)
    assert stored.attrs["input"] == str(wav) and stored.sensory.attrs["source"] == str(wav)
    assert stored.sensory.sizes["frame"] == 100
    energy = stored.sensory["features"].values[:, 0].sum((1, 2))
    assert energy[55:95].mean() < energy[48:54].max()           # the tone's onset stands out


def test_clipped_input_warns_in_one_line(tmp_path, capsys):
    wav = _wav(tmp_path / "loud.wav", amplitude=3.0)
    assert main(["run", "audio_stream", "--input", str(wav), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("rtnclock: warning: ") and "loud.wav" in err[0]
    assert "clipped" in err[0]


def test_config_file_then_set(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('rtol = 1e-3\ngate_a = [1.0, 2.0, 3.0]\nmethod = "dopri5"\n')
    assert main(["run", "audio_stream", "--duration", "0.2", "--config", str(toml), "--set", "rtol=1e-5",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "dopri5 rtol=1e-05" in out and "gate_a=(1.0, 2.0, 3.0)" in out
    js = tmp_path / "c.json"
    js.write_text('{"K": 1, "gate_a": [1.0, 2.0]}')
    assert main(["run", "audio_stream", "--duration", "0.2", "--config", str(js), "--quiet"]) == 0
    assert "2 levels (K=1" in capsys.readouterr().out


@pytest.mark.parametrize("text, suffix, named", [
    ("rtol = ", ".toml", "valid TOML"),
    ("[1, 2]", ".json", "one table of config fields"),
    ("rtol: 1", ".yaml", "ending .toml or .json"),
    ('{"no_such_field": 1}', ".json", "'no_such_field'"),
])
def test_bad_config_file_is_one_line(tmp_path, capsys, text, suffix, named):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert main(["run", "audio_stream", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err


def test_scenario_module_by_path(tmp_path, capsys):
    mine = tmp_path / "ramp.py"
    mine.write_text('''
import torch, rtnclock
DESCRIPTION = "a ramp"
DEFAULT_DURATION = 0.3
def default_config():
    return rtnclock.Config(K=1, branching=2, dims=4, input_dim=1, tau0=0.01, ratio=2.0)
def make_stream(config, *, duration, seed, batch):
    frames = torch.linspace(0, 1, 31)[None, :, None, None].expand(batch, 31, 2, 1).contiguous()
    return rtnclock.Stream(frames, 0.01)
''')
    assert main(["run", str(mine), "--quiet"]) == 0
    assert "2 leaves x 1 channels, 2 levels" in capsys.readouterr().out
    assert main(["run", str(mine), "--input", "x.wav"]) == 2
    assert "'--input': got 'x.wav'" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("DESCRIPTION = 'no stream'\n")
    assert main(["run", str(broken)]) == 2
    assert "missing DEFAULT_DURATION, default_config, make_stream" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys):
    assert main(["run", "audio_stream", "--device", "cuda"]) == 2
    assert "'device': got 'cuda'" in capsys.readouterr().err


def test_progress_line_reports_time_rate_and_gates():
    import io

    from rtnclock import simulate
    from rtnclock.cli import Progress
    from scenarios import audio_stream

    cfg = audio_stream.default_config()
    sink = io.StringIO()
    progress = Progress(cfg, 0.5, stream=sink)
    progress.every = 0.0
    simulate(cfg, audio_stream.make_stream(cfg, duration=0.5), progress=progress)
    lines = sink.getvalue().splitlines()
    assert len(lines) == 51                                      # one per leaf tick here
    last = lines[-1]
    assert last.startswith("[" + "#" * 24 + "] 0.50/0.5 s simulated") and "x real time" in last
    assert "gates open" in last and last.count("/") >= 3
