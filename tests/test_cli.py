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
