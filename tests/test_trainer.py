"""`rtnclock train` / `rtnclock eval`: metrics, checkpoints, resume equal to an uninterrupted run, clear errors."""

import json

import pytest
import torch

from rtnclock.cli import main
from rtnclock.trainer import TrainOptions, load

# sklearn's 8x8 digits (input_dim 2 makes pixel_digits pick them): 8 frames an image.
SMALL = ["pixel_digits", "--set", "input_dim=2", "--limit", "48", "--batch-size", "16", "--lr", "0.01"]


def plt_image(path):
    from matplotlib.image import imread
    return imread(path)


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_metrics_and_a_checkpoint_that_eval_reads(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch 2:" in text and "| epoch | train loss | test acc | sparsity | gate open L0" in text
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["test_accuracy"] <= 1 and 0 <= r["sparsity"] <= 1 and len(r["gate_open"]) == 3
               for r in rows)
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 7))           # 48 examples, batches of 16, 2 epochs
    assert [s["epoch"] for s in steps] == [1, 1, 1, 2, 2, 2]
    assert all(len(s["gate_open"]) == 3 and all(0 <= g <= 1 for g in s["gate_open"]) for s in steps)
    assert main(["plot", str(out)]) == 0
    image = plt_image(out / "training.png")
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05      # drawn, not blank
    rtn, ckpt = load(out)
    assert ckpt["epoch"] == 2 and ckpt["scenario"] == "pixel_digits" and rtn.config.input_dim == 2
    assert main(["eval", str(out / "checkpoint.pt"), "--limit", "48"]) == 0
    shown = capsys.readouterr().out
    assert f"{100 * rows[-1]['test_accuracy']:.2f}%" in shown          # the same test examples, the same model


def test_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(whole)]) == 0
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(parts)]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--out", str(parts)]) == 0
    a, b = _metrics(whole), _metrics(parts)
    for r in a + b:
        r.pop("seconds")
    assert a == b
    assert (whole / "steps.jsonl").read_text() == (parts / "steps.jsonl").read_text()
    sa, sb = load(whole)[0].state_dict(), load(parts)[0].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_adjoint_training_is_kept_in_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "adj"
    assert main(["train", *SMALL, "--epochs", "1", "--adjoint", "--quiet", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""                      # --quiet: no progress line
    rtn, ckpt = load(out)
    assert rtn.adjoint and ckpt["adjoint"]
    assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    assert load(out)[1]["epoch"] == 2 and load(out)[0].adjoint


@pytest.mark.parametrize("argv, says", [
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--lam", "nan"], "--lam"),
    (["--limit", "0"], "--limit"),
    (["--set", "nonsense=1"], "nonsense"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, says):
    assert main(["train", *SMALL, *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtnclock: error:") and says in err and len(err.strip().splitlines()) == 1


def test_refuses_a_scenario_without_data_and_an_existing_run(tmp_path, capsys):
    assert main(["train", "audio_stream", "--out", str(tmp_path / "a")]) == 2
    assert "training data" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 2
    assert "--resume / --overwrite" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_options_check_names_the_field():
    with pytest.raises(Exception, match="--penalty"):
        TrainOptions(penalty="l2").check()


def test_each_penalty_adds_its_term_to_the_cross_entropy():
    """cost: lam x soft cost; gate: lam x sum_l 2^l mean g_l; leaf: lam x the leaves' mean gate alone."""
    from rtnclock.train import RTN
    from rtnclock.trainer import loss_of
    from tests.problems import test_config

    cfg = test_config(gate_bias=(-1.0, 0.5, 2.0), memory_size=2)
    x = torch.randn(3, 12, cfg.blocks(0), cfg.input_dim, dtype=torch.float64)
    y = torch.tensor([0, 1, 0])
    with torch.no_grad():
        out = RTN(cfg, 2)(x)
    ce = float(torch.nn.functional.cross_entropy(out.readout, y))
    g = out.gate_mean.mean(-1)                                   # [K + 1]: each level's mean over streams
    assert 0 < float(g[0]) < float(g[1])
    expected = {"none": ce, "cost": ce + 0.3 * float(out.soft_cost.mean()),
                "gate": ce + 0.3 * float(g[0] + 2 * g[1] + 4 * g[2]), "leaf": ce + 0.3 * float(g[0])}
    for penalty, value in expected.items():
        assert float(loss_of(out, y, TrainOptions(penalty=penalty, lam=0.3))) == pytest.approx(value, rel=1e-12)
