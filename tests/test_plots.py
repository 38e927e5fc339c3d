"""Plots of a stored run: each renders a non-blank image of its size; `rtnclock plot` writes them all."""

import io

import numpy as np
import pytest
from matplotlib.image import imread

from rtnclock import open_run
from rtnclock.cli import main
from rtnclock.viz import KINDS, PLOTS, decimate, plots


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "audio.zarr"
    assert main(["run", "audio_stream", "--duration", "10", "--out", str(path), "--quiet"]) == 0
    return path


def _pixels(fig, dpi=50) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    return imread(buf)


@pytest.mark.parametrize("kind", KINDS)
def test_each_plot_renders_a_non_blank_image_of_its_size(stored, kind, capsys):
    fig = PLOTS[kind](open_run(stored))
    img = _pixels(fig)
    w, h = fig.get_size_inches() * 50
    assert img.shape[:2] == (round(h), round(w))
    ink = (img[..., :3] < 0.9).any(-1).mean()                   # share of pixels that are not white
    assert ink > 0.03, f"{kind}: only {ink:.3f} of the image is drawn"
    assert img[..., :3].std() > 0.05


def test_lines_are_decimated_and_spikes_survive(stored, monkeypatch):
    t = np.linspace(0, 1, 100_001)
    y = np.zeros_like(t)
    y[54_321] = 7.0
    tt, yy = decimate(t, y, max_points=400)
    assert len(tt) <= 400 and yy.max() == 7.0 and np.all(np.diff(tt) >= 0)
    # Every line of every plot holds at most MAX_POINTS points.
    monkeypatch.setattr(plots, "MAX_POINTS", 60)
    run = open_run(stored)
    for kind in KINDS:
        fig = PLOTS[kind](run)
        for ax in fig.axes:
            for line in ax.get_lines():
                assert len(line.get_xdata()) <= max(60, plots.MAX_TICK_MARKS), (kind, line.get_label())


def test_coupling_table_has_every_level_pair(stored):
    rows = plots.coupling_table(open_run(stored), n_surrogates=50)
    assert {(r["slow"], r["fast"]) for r in rows} == {(1, 0), (2, 0), (2, 1)}
    for r in rows:
        assert 0 <= r["mi"] <= 1 and 0 < r["p_value"] <= 1 and len(r["p"]) == 18
        assert abs(sum(r["p"]) - 1) < 1e-9


def test_window_limits_the_time_axis(stored):
    fig = plots.plot_gates(open_run(stored), start=1.0, end=2.5)
    assert fig.axes[-1].get_xlim() == (1.0, 2.5)


def test_cli_plot_writes_every_kind(stored, tmp_path, capsys):
    out = tmp_path / "img"
    assert main(["plot", str(stored), "--out", str(out)]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(written) == sorted(str(out / f"{k}.png") for k in KINDS)
    assert all((out / f"{k}.png").stat().st_size > 10_000 for k in KINDS)
    assert main(["plot", str(stored), "--kind", "rank", "--format", "svg", "--out", str(out)]) == 0
    assert (out / "rank.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("argv, named", [
    (["--start", "2", "--end", "1"], "'--end': got 1.0"),
    (["--stream", "3"], "'--stream': got 3"),
])
def test_cli_plot_bad_arguments_are_one_line(stored, capsys, argv, named):
    assert main(["plot", str(stored), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err


def test_cli_plot_of_a_missing_store(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none.zarr")]) == 2
    assert "no Zarr store at" in capsys.readouterr().err
