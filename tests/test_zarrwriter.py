"""The store writer writes what zarr-python would: the same metadata, the same chunk bytes, read back exactly."""

import json

import numpy as np
import pytest
import zarr

from rtnclock.zarrwriter import StoreWriter, fill_value

SPECS = {
    "state": dict(shape=(0, 2, 3, 4), chunks=(5, 2, 3, 4), dtype=np.float32,
                  dims=["time", "batch", "block", "dim"], zstd=1, attrs=None),
    "time": dict(shape=(0,), chunks=(7,), dtype=np.float64, dims=["time"], zstd=1, attrs={"units": "s"}),
    "escalated": dict(shape=(0,), chunks=(7,), dtype=np.bool_, dims=["time"], zstd=1, attrs=None),
    "kind": dict(shape=(0,), chunks=(4,), dtype=np.int8, dims=["event"], zstd=1, attrs=None),
    "bytes": dict(shape=(0,), chunks=(16,), dtype=np.uint8, dims=["byte"], zstd=None, attrs=None),
    "n": dict(shape=(0,), chunks=(6,), dtype=np.int64, dims=["time"], zstd=3, attrs=None),
}


def _zarr_python(path, name, spec):
    """The same array made by zarr-python (as the recorder once did)."""
    group = zarr.open_group(str(path), mode="a", zarr_format=3)
    return group.create_array(
        name, shape=spec["shape"], chunks=spec["chunks"], dtype=spec["dtype"], dimension_names=spec["dims"],
        fill_value=fill_value(spec["dtype"]),
        compressors=None if spec["zstd"] is None else zarr.codecs.ZstdCodec(level=spec["zstd"]),
        attributes=spec["attrs"] or {}, config={"write_empty_chunks": True},
        chunk_key_encoding={"name": "default", "separator": "."})


def _rows(spec, n, rng):
    shape = (n, *spec["shape"][1:])
    dtype = np.dtype(spec["dtype"])
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _writer(path, mode="w"):
    w = StoreWriter()
    w.send(("open", str(path), mode))
    return w


@pytest.mark.parametrize("name", sorted(SPECS))
def test_metadata_and_chunks_equal_zarr_pythons(tmp_path, name):
    spec = SPECS[name]
    rng = np.random.default_rng(0)
    data = _rows(spec, 17, rng)              # several chunks and a partial last one
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    w = _writer(ours)
    w.send(("array", name, spec, None))
    w.send(("append", [(name, 0, data[:9])]))
    w.send(("append", [(name, 9, data[9:])]))
    w.finish()
    arr = _zarr_python(theirs, name, spec)
    arr.resize(data.shape)
    arr[:] = data
    assert json.loads((ours / name / "zarr.json").read_text()) == json.loads((theirs / name / "zarr.json").read_text())
    files = sorted(p.name for p in (theirs / name).glob("c.*"))
    assert len(files) == -(-17 // spec["chunks"][0]) and files == sorted(p.name for p in (ours / name).glob("c.*"))
    for f in files:
        assert (ours / name / f).read_bytes() == (theirs / name / f).read_bytes(), f


def test_appends_of_any_length_read_back(tmp_path):
    """Appends start anywhere in a chunk; a writer reopened on the store continues them."""
    spec = SPECS["state"]
    rng = np.random.default_rng(1)
    data = _rows(spec, 41, rng)
    w = _writer(tmp_path / "s.zarr")
    w.send(("group", "level_0", {"level": 0}))
    w.send(("array", "level_0/state", spec, None))
    cuts = [0, 1, 3, 5, 12, 13, 20]
    for a, b in zip(cuts, cuts[1:]):
        w.send(("append", [("level_0/state", a, data[a:b])]))
    w.finish()
    w = _writer(tmp_path / "s.zarr", mode="r+")           # no memory of the partial chunk: read from disk
    for a, b in zip([20, 22, 41][:-1], [22, 41]):
        w.send(("append", [("level_0/state", a, data[a:b])]))
    w.finish()
    back = zarr.open_array(str(tmp_path / "s.zarr"), path="level_0/state", mode="r")
    np.testing.assert_array_equal(back[:], data)
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["level_0"].attrs["level"] == 0


def test_resize_cuts_back_and_appending_rewrites_the_cut(tmp_path):
    spec = SPECS["time"]
    data = np.arange(30, dtype=np.float64)
    w = _writer(tmp_path / "s.zarr")
    w.send(("array", "time", spec, None))
    w.send(("append", [("time", 0, data[:25] + 1000)]))       # rows past 10 never committed
    w.send(("resize", "time", (10,)))
    w.wait()
    assert not (tmp_path / "s.zarr" / "time" / "c.3").exists()      # chunks past the cut are gone
    w.send(("append", [("time", 10, data[10:30])]))
    w.finish()
    back = zarr.open_array(str(tmp_path / "s.zarr"), path="time", mode="r")[:]
    np.testing.assert_array_equal(back[:10], data[:10] + 1000)
    np.testing.assert_array_equal(back[10:], data[10:])


def test_put_replaces_a_byte_array_and_attrs_merge(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    w.send(("array", "ckpt", SPECS["bytes"], None))
    w.send(("put", "ckpt", np.arange(40, dtype=np.uint8)))
    w.send(("put", "ckpt", np.arange(10, dtype=np.uint8)[::-1].copy()))
    w.send(("attrs", "", {"a": 1}))
    w.send(("attrs", "", {"b": [1, 2]}))
    w.finish()
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_array_equal(root["ckpt"][:], np.arange(10)[::-1])
    assert not (tmp_path / "s.zarr" / "ckpt" / "c.2").exists()
    assert dict(root.attrs) == {"a": 1, "b": [1, 2]}


def test_after_a_failure_nothing_more_is_written(tmp_path):
    """A failed operation is raised from the next call; nothing queued after it is applied."""
    w = _writer(tmp_path / "s.zarr")
    w.send(("array", "time", SPECS["time"], None))
    w.send(("append", [("time", 0, np.zeros(3))]))
    w.wait()
    before = (tmp_path / "s.zarr" / "time" / "zarr.json").read_bytes()
    w.send(("attrs", "missing", {"x": 1}))
    w.send(("append", [("time", 3, np.ones(3))]))          # queued behind the failure
    with pytest.raises(FileNotFoundError):
        w.wait()
    with pytest.raises(FileNotFoundError):
        w.send(("append", [("time", 3, np.ones(3))]))
    assert (tmp_path / "s.zarr" / "time" / "zarr.json").read_bytes() == before
    assert w.payload_bytes == 3 * 8


def test_appends_may_be_computed_by_the_writer(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    w.send(("array", "time", SPECS["time"], None))
    w.send(("append", lambda: [("time", 0, np.arange(9.0))]))
    w.finish()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s.zarr"), path="time", mode="r")[:], np.arange(9.0))


def test_spare_chunk_files_lie_past_the_shape_and_are_removed_at_the_end(tmp_path):
    """Chunk files made ahead (empty) are never read as data, and finish() removes those left unfilled."""
    spec = SPECS["time"]                                     # chunks of 7
    w = _writer(tmp_path / "s.zarr")
    w.send(("array", "time", spec, None))
    w.send(("array", "empty", spec, None))
    w.send(("append", [("time", 0, np.arange(14.0))]))     # ends on a chunk boundary
    w.wait()
    folder = tmp_path / "s.zarr"
    assert (folder / "time" / "c.2").read_bytes() == b""    # the next chunk, made ahead
    np.testing.assert_array_equal(zarr.open_array(str(folder), path="time", mode="r")[:], np.arange(14.0))
    w.send(("append", [("time", 14, np.arange(3.0))]))      # fills the spare
    w.finish()
    assert not (folder / "empty" / "c.0").exists() and not (folder / "time" / "c.3").exists()
    assert all(p.stat().st_size > 0 for p in folder.rglob("c.*"))
    back = zarr.open_array(str(folder), path="time", mode="r")[:]
    np.testing.assert_array_equal(back, np.r_[np.arange(14.0), np.arange(3.0)])
    assert zarr.open_array(str(folder), path="empty", mode="r").shape == (0,)


def test_documents_updated_in_place_hold_a_descriptor_until_the_writer_finishes(tmp_path):
    """Metadata updates are one pwrite on a held descriptor; finishing closes them all,
    and a document replaced through a new file drops its old descriptor."""
    from rtnclock import zarrwriter
    w = StoreWriter()
    w.send(("open", str(tmp_path / "s.zarr"), "w"))
    w.send(("array", "a", dict(shape=(0, 3), chunks=(4, 3), dtype="float32", dims=["t", "x"], zstd=None,
                               attrs=None), None))
    for i in range(3):
        w.send(("append", [("a", i, np.full((1, 3), i, np.float32))]))
    w.wait()
    doc = tmp_path / "s.zarr" / "a" / "zarr.json"
    assert doc in zarrwriter._HELD
    w.send(("attrs", "a", {"note": "x" * 5000}))           # outgrows a page: replaced, not in place
    w.wait()
    assert doc not in zarrwriter._HELD
    w.finish()
    assert not [p for p in zarrwriter._HELD if tmp_path in p.parents]
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "a"), mode="r")
    np.testing.assert_array_equal(arr[:, 0], [0, 1, 2])
    assert arr.attrs["note"] == "x" * 5000


def test_raw_arrays_append_in_place_without_touching_committed_rows(tmp_path):
    """A raw array's append writes only its own rows' bytes into the chunk file
    (same file, same inode: no rename); the rows before it stay byte for byte,
    so a kill mid-append cannot tear rows already committed."""
    spec = dict(shape=(0, 3), chunks=(8, 3), dtype=np.float64, dims=["event", "x"], zstd=None, attrs=None)
    data = np.random.default_rng(4).standard_normal((29, 3))
    w = _writer(tmp_path / "s.zarr")
    w.send(("array", "ev", spec, None))
    folder = tmp_path / "s.zarr" / "ev"
    cuts = [0, 3, 5, 11, 16, 17, 29]
    for a, b in zip(cuts, cuts[1:]):
        first = a // 8
        w.wait()
        chunk = folder / f"c.{first}.0"
        before = chunk.read_bytes() if chunk.exists() else b""
        inode = chunk.stat().st_ino if chunk.exists() else None
        w.send(("append", [("ev", a, data[a:b])]))
        w.wait()
        kept = (a - first * 8) * 3 * 8
        after = chunk.read_bytes()
        assert len(after) == 8 * 3 * 8                      # every chunk file at full length
        assert after[:kept] == before[:kept]
        if inode is not None and before:
            assert chunk.stat().st_ino == inode
    w.finish()
    assert not list(folder.glob("*.partial"))
    np.testing.assert_array_equal(zarr.open_array(str(folder), mode="r")[:], data)
    w = _writer(tmp_path / "s.zarr", mode="r+")             # cut back, then continue in place
    w.send(("resize", "ev", (13, 3)))
    w.send(("append", [("ev", 13, data[13:20] + 100)]))
    w.finish()
    back = zarr.open_array(str(folder), mode="r")[:]
    np.testing.assert_array_equal(back, np.r_[data[:13], data[13:20] + 100])
    assert sorted(p.name for p in folder.glob("c.*")) == ["c.0.0", "c.1.0", "c.2.0"]
