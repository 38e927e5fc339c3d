"""mqar: the draws against a plain-Python reference, the one-hot layout, the splits, the stream, the CLI."""

from __future__ import annotations

import math

import pytest
import torch

import rtnclock
from rtnclock.cli import main
from rtnclock.scenarios import mqar as M
from rtnclock.scenarios import names


def _reference_label(tokens: list[int], query: list[int], n_keys: int) -> int:
    """The value stored with the last query key, read off the token list the slow way."""
    bound, last = {}, None
    for i, (t, q) in enumerate(zip(tokens, query)):
        if q:
            last = t
        elif 0 <= t < n_keys:
            bound[t] = tokens[i + 1] - n_keys                    # a stored key: its value follows
    return bound[last]


@pytest.mark.parametrize("n_pairs, n_queries, n_keys, n_values, n_blank", [
    (8, 4, 8, 8, 0), (3, 3, 8, 8, 2), (5, 1, 12, 3, 0), (1, 1, 1, 1, 1)])
def test_labels_match_a_reference_and_the_sequences_are_well_formed(n_pairs, n_queries, n_keys, n_values, n_blank):
    tokens, query, labels = M.sequences(50, n_pairs=n_pairs, n_queries=n_queries, n_keys=n_keys,
                                        n_values=n_values, seed=7, n_blank=n_blank)
    L = 2 * n_pairs + n_queries + n_blank
    assert tokens.shape == query.shape == (50, L) and labels.shape == (50,)
    assert tokens.dtype == query.dtype == labels.dtype == torch.int64
    for tok, q, label in zip(tokens.tolist(), query.tolist(), labels.tolist()):
        keys, values = tok[0:2 * n_pairs:2], tok[1:2 * n_pairs:2]
        asked = tok[2 * n_pairs:2 * n_pairs + n_queries]
        assert len(set(keys)) == n_pairs and all(0 <= k < n_keys for k in keys)        # distinct keys
        assert all(n_keys <= v < n_keys + n_values for v in values)
        assert set(asked) <= set(keys) and len(set(asked)) == n_queries                 # every query was stored
        assert q == [0] * 2 * n_pairs + [1] * n_queries + [0] * n_blank
        assert tok[L - n_blank:] == [M.BLANK] * n_blank
        assert label == _reference_label(tok, q, n_keys)
        assert 0 <= label < n_values


def test_same_seed_same_data_and_a_short_draw_is_a_prefix():
    kw = dict(n_pairs=6, n_queries=3)
    a, b = M.sequences(40, seed=3, **kw), M.sequences(40, seed=3, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    short = M.sequences(10, seed=3, **kw)
    assert all(torch.equal(x, y[:10]) for x, y in zip(short, a))
    other = M.sequences(40, seed=4, **kw)
    assert not torch.equal(a[0], other[0])
    labels = M.sequences(2000, seed=0, **kw)[2]
    assert sorted(labels.unique().tolist()) == list(range(M.N_VALUES))      # every class turns up


def test_to_frames_one_hot_layout_and_query_marker():
    tokens = torch.tensor([[0, 8, 7, 15, 7, M.BLANK], [16 - 1, 3, 3, 8, 0, 3]])
    query = torch.tensor([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]])
    frames = M.to_frames(tokens, query, 4, 20)                               # [N, L, 4, 20]: 3 spare channels
    assert frames.shape == (2, 6, 4, 20) and frames.dtype == torch.float32
    marker = M.N_KEYS + M.N_VALUES
    for n in range(2):
        for i in range(6):
            t, q = int(tokens[n, i]), int(query[n, i])
            expected = torch.zeros(20)
            if t != M.BLANK:
                expected[t] = 1
            expected[marker] = q
            for leaf in range(4):                                           # every leaf sees the whole token
                assert torch.equal(frames[n, i, leaf], expected)
    assert torch.all(frames[0, 5] == 0)                                     # a blank frame
    assert torch.equal(frames[..., 2, marker], query.float())               # the marker on query frames only
    assert torch.equal(M.to_frames(tokens, query, 1, 17)[:, :, 0], frames[:, :, 0, :17])   # exact fit


def test_too_narrow_layout_names_input_dim():
    tokens, query = torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, 3, dtype=torch.int64)
    with pytest.raises(rtnclock.ConfigError, match="'input_dim': got 16.*at least 17"):
        M.to_frames(tokens, query, 4, 16)                                   # 16 channels for 17
    with pytest.raises(rtnclock.ConfigError, match="'input_dim': got 8"):
        M.to_frames(tokens, query, 4, 8, n_keys=4, n_values=4)              # 8 channels for 9
    with pytest.raises(rtnclock.ConfigError, match="'input_dim'"):
        M.default_config(input_dim=5)                                       # 4 leaves x 5 was the split layout
    assert M.to_frames(tokens, query, 4, 9, n_keys=4, n_values=4).shape == (1, 3, 4, 9)   # 9 >= 9: fits


@pytest.mark.parametrize("call, field", [
    (lambda: M.sequences(4, n_pairs=9, n_queries=1, seed=0), "n_pairs"),
    (lambda: M.sequences(4, n_pairs=2, n_queries=3, seed=0), "n_queries"),
    (lambda: M.sequences(4, n_pairs=2, n_queries=0, seed=0), "n_queries"),
    (lambda: M.sequences(0, n_pairs=2, n_queries=1, seed=0), "n"),
    (lambda: M.sequences(4, n_pairs=2, n_queries=1, seed=-1), "seed"),
    (lambda: M.sequences(4, n_pairs=2, n_queries=1, seed=0, n_blank=-1), "n_blank"),
    (lambda: M.to_frames(torch.tensor([[17]]), torch.tensor([[0]]), 4, 17), "tokens"),
    (lambda: M.to_frames(torch.tensor([[1, 2]]), torch.tensor([[0]]), 4, 17), "query"),
    (lambda: M.dataset(M.default_config(), "valid"), "split"),
    (lambda: M.default_config(no_such_field=1), "no_such_field"),
    (lambda: M.make_stream(M.default_config(), duration=0), "duration"),
    (lambda: M.make_stream(M.default_config(), n_pairs=9), "n_pairs"),
])
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(rtnclock.ConfigError, match=f"'{field}'"):
        call()


def test_default_config():
    config = M.default_config()
    assert (config.K, config.branching, config.blocks(0), config.input_dim) == (2, 2, 4, 17)
    assert config.temperature == 0.25
    assert config.resolved("periods") == pytest.approx((0.01, 0.04, 0.16))
    assert config.resolved("dims") == (16, 16, 16) and config.dtype == "float32"
    assert config.method == "rk4" and config.step_size == M.FRAME_SECONDS == config.base_period
    assert config.resolved("gate_bias") == (2.0, 2.0, 2.0)
    assert config.memory_size >= M.sequence_length(M.DEFAULT_PAIRS, M.DEFAULT_QUERIES, M.DEFAULT_BLANK)
    assert M.default_config(dims=8, seed=3).resolved("dims") == (8, 8, 8)
    assert M.N_CLASSES == M.N_VALUES == 8


@pytest.mark.parametrize("split, size", [("train", M.TRAIN_SIZE), ("test", M.TEST_SIZE)])
def test_dataset_shapes_labels_and_fixed_splits(split, size):
    config = M.default_config()
    frames, labels = M.dataset(config, split)
    L = M.sequence_length(M.DEFAULT_PAIRS, M.DEFAULT_QUERIES, M.DEFAULT_BLANK)
    assert frames.shape == (size, L, 4, 17) and frames.dtype == torch.float32
    assert labels.shape == (size,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < M.N_CLASSES
    tokens, query, expected = M.sequences(size, n_pairs=M.DEFAULT_PAIRS, n_queries=M.DEFAULT_QUERIES,
                                          seed=M.SPLIT_SEEDS[split], n_blank=M.DEFAULT_BLANK)
    assert torch.equal(labels, expected) and torch.equal(frames, M.to_frames(tokens, query, 4, 17))
    short, _ = M.dataset(config, split, n_pairs=2, n_queries=1, n_blank=0)
    assert short.shape == (size, 5, 4, 17)
    assert M.dataset(config.replace(dtype="float64"), split)[0].dtype == torch.float64


def test_train_and_test_differ():
    config = M.default_config()
    train, test = M.dataset(config, "train"), M.dataset(config, "test")
    assert not torch.equal(train[0][:M.TEST_SIZE], test[0])
    assert M.SPLIT_SEEDS == {"train": 0, "test": 1}


def test_stream_shows_the_annotated_sequences_back_to_back():
    config = M.default_config()
    stream = M.make_stream(config, duration=1.0, seed=5, batch=2)
    frames = stream.frames                                                  # [B, F, n_leaves, c]
    assert frames.shape == (2, 101, 4, 17) and frames.dtype == torch.float32
    assert stream.dt == pytest.approx(M.FRAME_SECONDS) and stream.duration == pytest.approx(1.0)
    L = M.sequence_length(M.DEFAULT_PAIRS, M.DEFAULT_QUERIES, M.DEFAULT_BLANK)
    count = math.ceil(101 / L)
    notes = stream.annotations
    for b in range(2):
        tokens, query, labels = M.sequences(count, n_pairs=M.DEFAULT_PAIRS, n_queries=M.DEFAULT_QUERIES,
                                            seed=5 + b, n_blank=M.DEFAULT_BLANK)
        expected = M.to_frames(tokens, query, 4, 17).flatten(0, 1)[:101]   # [F, 4, 17]
        assert torch.equal(frames[b], expected)
        rows = [i for i, s in enumerate(notes["stream"]) if s == b]
        starts = [i for i in rows if notes["kind"][i] == "sequence"]
        assert [notes["time"][i] for i in starts] == pytest.approx([k * L * M.FRAME_SECONDS for k in range(count)])
        assert [notes["label"][i] for i in starts] == labels.tolist()
        asked = [i for i in rows if notes["kind"][i] == "query"]
        frame_of = [round(notes["time"][i] / M.FRAME_SECONDS) for i in asked]
        assert frame_of == [k * L + j for k in range(count) for j in range(L) if query[k, j] and k * L + j < 101]
        for i, f in zip(asked, frame_of):
            k, j = divmod(f, L)
            assert notes["key"][i] == tokens[k, j]
            stored = tokens[k, :2 * M.DEFAULT_PAIRS].tolist()
            assert notes["label"][i] == stored[stored.index(notes["key"][i]) + 1] - M.N_KEYS
        last = [i for i in asked if notes["sequence"][i] == 0][-1]
        assert notes["label"][last] == labels[0]                            # the last query gives the label
    short = M.make_stream(config, duration=0.3, seed=5, batch=2)
    assert torch.equal(short.frames, frames[:, :31])                        # a short stream starts a long one


def test_registered():
    assert "mqar" in names()


def test_cli_run(tmp_path, capsys):
    out = tmp_path / "mqar.zarr"
    assert main(["run", "mqar", "--duration", "1", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scenario mqar: 1 s" in printed and "4 leaves x 17 channels" in printed
    assert main(["info", str(out)]) == 0
    assert "sequence 5" in capsys.readouterr().out                  # sequences start at 0, 0.21, ... 0.84 s


def test_cli_train_smoke(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "mqar", "--limit", "32", "--epochs", "1", "--batch-size", "16", "--out", str(out)]) == 0
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.jsonl").is_file()
    assert "train mqar: 32 training and 32 test examples" in capsys.readouterr().out
