"""Writes a recorder's operations straight into a Zarr v3 store: metadata documents and chunk files.

``ZarrRecorder`` (``store.py``) decides *what* goes to disk and in which order
(chunks, then checkpoint, then the commit); this module lays the bytes out as
the Zarr v3 specification says.  An operation is a plain tuple:

    ("open", path, mode)                          open the root group ("w" creates it)
    ("group", name, attrs)                        create a group
    ("array", name, spec, data | None)            create an array (spec: shape, chunks, dtype,
                                                  dims, zstd level or None, attrs), maybe filled
    ("append", [(name, start, data), ...])        grow each array to start + len(data), write the rows
                                                  (or a callable returning that list, run here)
    ("put", name, data)                           make a 1-d array exactly ``data``
    ("resize", name, shape)
    ("attrs", name, attrs)                        update attributes ("" is the root)
    ("call", fn)                                  run ``fn()`` here, in its turn (the caller's
                                                  work that can wait, off its thread)

Why not zarr-python: it spends ~1 ms of interpreter time per array written,
so the ~60 arrays of a run cost a flush ~60 ms however little they hold, and
more than the whole simulation of a short run.  Here a chunk is one encode
(numcodecs' zstd, the codec zarr-python itself uses) and one file.  Arrays
are chunked along their first (time) axis only, and every chunk is written
whole (padded with the fill value), so the store is exactly what zarr-python
would have written; reading stays with zarr-python and xarray (``runs.py``),
and ``tests/test_zarrwriter.py`` holds the two to each other.

Operations are carried out by one thread, in the order they came: the caller
only queues them.

Crash safety without a file per write: making a file costs 0.05-0.4 ms of
kernel time here (more than encoding its chunk), so files are made only for
new chunks.  A new chunk holds only rows past the array's recorded shape,
which no reader looks at until the shape says so, so it is written straight
to its name.  A chunk that already holds rows (the partly filled last chunk
of an append) is written under a temporary name and renamed over the old one,
so a kill leaves it old or new, never torn.  Raw (uncompressed) arrays need
neither: an append writes its rows' byte ranges in place in a full-length
chunk file, leaving the committed rows before them untouched
(``_write_in_place``).  Metadata documents are padded
with spaces to one page (JSON allows trailing whitespace) and rewritten in
place by one ``pwrite`` at offset 0: a write within one page is never cut by
a signal, so a killed run leaves each document old or new, and an update
costs ~10 us instead of a new file.  (A document that outgrows a page is
replaced through a temporary file instead.)  Arrays' documents keep their
descriptor open for the run, so an update is one syscall; the root's, which
carries the commit, is opened by name each time.  After a failed operation the
writer applies nothing more (a later commit would claim rows that are not on
disk) and raises that failure from the next call.

This module imports only the standard library, numpy and numcodecs.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import threading
import time
from pathlib import Path

import numpy as np

METADATA = "zarr.json"
#: Metadata documents up to this size are padded to it and updated in place.
PAGE = 4096
#: Chunk keys ``c.3.0.0``: a chunk is one file beside its array's metadata, where
#: "/" would make a folder per axis (a new folder costs as much as a new file).
SEPARATOR = "."


def fill_value(dtype) -> object:
    """What an unwritten element reads as: NaN for floats, False / 0 otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return float("nan")
    return False if dtype.kind == "b" else 0


def array_metadata(spec: dict) -> dict:
    """The ``zarr.json`` document of an array laid out by ``spec`` (as zarr-python writes it)."""
    dtype = np.dtype(spec["dtype"])
    fill = fill_value(dtype)
    codecs = [{"name": "bytes"} if dtype.itemsize == 1 else
              {"name": "bytes", "configuration": {"endian": "little"}}]
    if spec.get("zstd") is not None:
        codecs.append({"name": "zstd", "configuration": {"level": spec["zstd"], "checksum": False}})
    return {"shape": list(spec["shape"]), "data_type": dtype.name,
            "chunk_grid": {"name": "regular",
                           "configuration": {"chunk_shape": list(spec.get("chunks") or spec["shape"])}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": SEPARATOR}},
            "fill_value": "NaN" if isinstance(fill, float) else fill, "codecs": codecs,
            "attributes": spec.get("attrs") or {}, "dimension_names": list(spec["dims"]),
            "zarr_format": 3, "node_type": "array", "storage_transformers": []}


#: Files written in place keep their descriptor (path -> fd) until ``release``:
#: a metadata update is then one ``pwrite``, not open + pwrite + close (each
#: syscall lets the writer's thread take the GIL from the run).  Spare chunk
#: files are not held: a chunk written through a descriptor whose name was
#: removed meanwhile would vanish silently, where an open by name fails.
_HELD: dict[Path, int] = {}
_HELD_LOCK = threading.Lock()


def write_file(path: Path, data: bytes, how: str, offset: int = 0, size: int | None = None) -> None:
    """Write ``data`` to ``path``.

    ``how``: "new" creates (or truncates) the file and writes it; "fill"
    writes into an existing empty file; "replace" writes a temporary file and
    renames it over ``path``; "inplace" writes ``data`` at ``offset`` of the
    existing file in one call (through a descriptor held open until
    :func:`release`), or of a file made ``size`` bytes long first (sparse:
    no data blocks until written) when ``size`` is given.
    """
    if how == "inplace":
        with _HELD_LOCK:
            fd = _HELD.get(path)
            if fd is None:
                fd = _HELD[path] = os.open(path, os.O_WRONLY | (0 if size is None else os.O_CREAT), 0o666)
        if size is not None:
            os.ftruncate(fd, size)
        if os.pwrite(fd, data, offset) != len(data):
            raise OSError(f"short write to {path}")
        return
    _drop(path)                        # the name is about to be a new file
    if how == "replace":
        partial = path.with_name(path.name + ".partial")
        _create(partial, data)
        os.replace(partial, path)
    else:
        # No O_TRUNC on a file known to be empty: truncating an existing file,
        # even an empty one, makes ext4 allocate its blocks and start writing
        # them back when it is closed (auto_da_alloc), 25 us instead of 1.
        _create(path, data, os.O_WRONLY if how == "fill" else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)


def release(root: Path) -> None:
    """Close the held descriptors of files under ``root``."""
    with _HELD_LOCK:
        for path in [p for p in _HELD if p == root or root in p.parents]:
            os.close(_HELD.pop(path))


def _drop(path: Path) -> None:
    with _HELD_LOCK:
        fd = _HELD.pop(path, None)
    if fd is not None:
        os.close(fd)


def _unlink(path: Path) -> None:
    _drop(path)
    path.unlink(missing_ok=True)


def _create(path: Path, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    # os-level calls: three syscalls where a Python file object makes six
    # (fstat, ioctl, lseek), and each syscall hands the GIL to the run and back.
    fd = os.open(path, flags, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class _Array:
    """An array's metadata and what the writer remembers of its last, partly filled chunk."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        self.chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        if meta["shape"][1:] != list(self.chunks[1:]):
            raise ValueError(f"{path}: only the first axis may be split into chunks")
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.fill = fill_value(self.dtype)
        zstd = [c for c in meta["codecs"] if c["name"] == "zstd"]
        if zstd:
            import numcodecs

            self.codec = numcodecs.Zstd(level=zstd[0]["configuration"]["level"])
        else:
            self.codec = None
        self.tail: tuple[int, np.ndarray] | None = None      # (chunk index, rows) last written part way
        self.spare: int | None = None       # index of the empty chunk file made ahead, if any

    @property
    def rows(self) -> int:
        return self.meta["shape"][0]

    def key(self, i: int) -> Path:
        return self.path / SEPARATOR.join(["c", str(i), *("0",) * (len(self.chunks) - 1)])

    # encode and decode serve compressed arrays only: raw ones are written in
    # place, row by row (StoreWriter._write_in_place), and never merged.
    def encode(self, block: np.ndarray) -> bytes:
        """The chunk's bytes as stored."""
        return self.codec.encode(np.ascontiguousarray(block, dtype=self.dtype).reshape(-1))

    def decode(self, i: int) -> np.ndarray:
        """Chunk ``i`` as stored (all fill where it was never written)."""
        try:
            raw = self.key(i).read_bytes()
        except FileNotFoundError:
            raw = b""
        if not raw:                                     # never written, or a spare
            return np.full(self.chunks, self.fill, self.dtype)
        return np.frombuffer(self.codec.decode(raw), dtype=self.dtype).reshape(self.chunks).copy()


class StoreWriter:
    """Applies operations to one store in order, on its own thread (see the module docstring).

    Attributes:
        seconds: the caller's wall time in the writer (queueing, and waiting).
        busy_seconds: the thread's time applying operations.
        payload_bytes: bytes of array data appended (before encoding).
    """

    def __init__(self):
        self.root: Path | None = None
        self.arrays: dict[str, _Array] = {}
        self.groups: dict[str, dict] = {}          # name -> metadata document
        self.seconds = self.busy_seconds = 0.0
        self.payload_bytes = 0
        self._error: Exception | None = None
        self._docs: dict[Path, int] = {}           # metadata document -> its size on disk
        self._ops: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="rtnclock-store-writer")
        self._thread.start()

    def send(self, op: tuple) -> None:
        """Queue ``op``; raise the failure of an earlier one."""
        self.check()
        self._ops.put(op)

    def wait(self) -> float:
        """Wait until every queued operation is applied; the caller's seconds in the writer."""
        began = time.perf_counter()
        self._ops.join()
        self.seconds += time.perf_counter() - began
        self.check()
        return self.seconds

    def finish(self) -> float:
        """Remove unused spare chunk files, :meth:`wait`, then stop the thread (its held files closed)."""
        try:
            if self._error is None:
                self._ops.put(("tidy",))
            return self.wait()
        finally:
            self._ops.put(None)
            self._thread.join()

    def check(self) -> None:
        """Raise the failure of an earlier operation, if any."""
        if self._error is not None:
            raise self._error

    def _serve(self) -> None:
        """The writer thread: apply operations in order; after a failure, drop the rest."""
        while (op := self._ops.get()) is not None:
            began = time.perf_counter()
            try:
                if self._error is None:
                    getattr(self, "_" + op[0])(*op[1:])
            except Exception as err:
                self._error = err
            finally:
                self.busy_seconds += time.perf_counter() - began
                self._ops.task_done()
        if self.root is not None:          # here, so no write can race the closing
            release(self.root)
        self._ops.task_done()

    # ---- operations ---------------------------------------------------------
    def _open(self, path: str, mode: str) -> None:
        self.root = Path(path)
        release(self.root)                 # another writer's, should it have died unfinished
        if mode == "w":
            if self.root.is_dir():                       # the recorder checked it is a store
                shutil.rmtree(self.root)
            self._group("", {})

    def _group(self, name: str, attrs: dict) -> None:
        meta = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
        self._write_json(self._path(name, make=True), meta)
        self.groups[name] = meta

    def _array(self, name: str, spec: dict, data) -> None:
        meta = array_metadata(spec)
        arr = _Array(self._path(name, make=True), meta)
        self.arrays[name] = arr
        if data is not None:
            self._write_rows(arr, 0, np.asarray(data))
        self._write_json(arr.path, meta)
        if arr.rows == 0:
            self._make_spare(arr, 0)

    def _append(self, items) -> None:
        for name, start, data in (items() if callable(items) else items):
            self.payload_bytes += data.nbytes
            arr = self._node(name)
            self._write_rows(arr, start, data)
            self._set_rows(arr, start + len(data))

    def _put(self, name: str, data) -> None:
        arr = self._node(name)
        self._write_rows(arr, 0, data)
        self._set_rows(arr, len(data))

    def _resize(self, name: str, shape: tuple) -> None:
        arr = self._node(name)
        arr.tail = None
        self._set_rows(arr, shape[0])

    def _call(self, fn) -> None:
        fn()

    def _attrs(self, name: str, attrs: dict) -> None:
        node = self._node(name)
        meta = node.meta if isinstance(node, _Array) else node
        meta["attributes"].update(attrs)
        self._write_json(self._path(name), meta)

    # ---- files ----------------------------------------------------------------
    def _path(self, name: str, make: bool = False) -> Path:
        path = self.root / name if name else self.root
        if make:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def _node(self, name: str):
        """An array or group (its metadata document) by name, read from the store on first use."""
        if name in self.arrays:
            return self.arrays[name]
        if name in self.groups:
            return self.groups[name]
        path = self._path(name)
        raw = (path / METADATA).read_bytes()
        self._docs[path / METADATA] = len(raw)
        meta = json.loads(raw)
        if meta["node_type"] == "group":
            self.groups[name] = meta
            return meta
        self.arrays[name] = _Array(path, meta)
        return self.arrays[name]

    def _write_json(self, path: Path, meta: dict) -> None:
        """Write a metadata document (see the module docstring: in place when it can be)."""
        target, doc = path / METADATA, json.dumps(meta).encode()
        if len(doc) > PAGE:
            write_file(target, doc, "replace")
        else:
            on_disk = self._docs.get(target)
            write_file(target, doc.ljust(PAGE), "new" if on_disk is None else
                       "inplace" if on_disk <= PAGE else "replace")
            if path == self.root:
                # The root document carries the commit: it is opened by name every
                # time, so a store removed mid-run fails loudly here.
                _drop(target)
        self._docs[target] = max(len(doc), PAGE)

    def _write_rows(self, arr: _Array, start: int, data: np.ndarray) -> None:
        """Write rows ``start ..`` of ``arr``: whole chunks, a partial first one merged with what it held."""
        if arr.codec is None:
            self._write_in_place(arr, start, data)
            return
        n = arr.chunks[0]
        stop = start + len(data)
        for i in range(start // n, math.ceil(stop / n)):
            lo, hi = i * n, (i + 1) * n
            a, b = max(lo, start), min(hi, stop)
            if a == lo and b == hi:
                block = data[a - start:b - start]
            else:
                block = np.full(arr.chunks, arr.fill, arr.dtype)
                if a > lo:
                    held = arr.tail[1] if arr.tail and arr.tail[0] == i else arr.decode(i)
                    block[:a - lo] = held[:a - lo]
                block[a - lo:b - lo] = data[a - start:b - start]
            # A chunk that held rows is replaced whole; a new one holds only rows past the shape.
            write_file(arr.key(i), arr.encode(block),
                       "replace" if a > lo else "fill" if arr.spare == i else "new")
            arr.tail = (i, block) if b < hi else None
            if arr.spare == i:
                arr.spare = None
        if stop % n == 0:                  # the next append starts a new chunk
            self._make_spare(arr, stop // n)

    def _write_in_place(self, arr: _Array, start: int, data: np.ndarray) -> None:
        """Write rows ``start ..`` of a raw array where they lie in their chunk files.

        A raw chunk's rows are fixed byte ranges, so an append writes its own
        rows and nothing else: the rows before them, committed, are never
        touched, and a kill can tear only rows past the array's recorded
        shape.  So no temporary file, no rename, and no chunk encoded again
        at every flush while it fills (the events and sensory frames, whose
        chunks span many flushes).  A chunk file is made at its full length
        without data (sparse); rows past the shape read as zero bytes, which
        no reader looks at.
        """
        if not len(data):
            return
        n = arr.chunks[0]
        row = arr.dtype.itemsize * math.prod(arr.chunks[1:])
        raw = np.ascontiguousarray(data, dtype=arr.dtype).reshape(len(data), -1).view(np.uint8)
        stop = start + len(data)
        for i in range(start // n, math.ceil(stop / n)):
            lo = i * n
            a, b = max(lo, start), min(lo + n, stop)
            path = arr.key(i)
            write_file(path, raw[a - start:b - start].reshape(-1), "inplace", offset=(a - lo) * row,
                       size=n * row if a == lo else None)
            if arr.spare == i:
                arr.spare = None
            if b == lo + n:                      # full: it is not written again
                _drop(path)

    def _make_spare(self, arr: _Array, i: int) -> None:
        """Make chunk ``i``'s file ahead, empty, while nobody waits: filling an
        existing file costs a tenth of making one (it lies past the array's
        shape until filled, so no reader opens it)."""
        if arr.spare is None:
            write_file(arr.key(i), b"", "new")
            arr.spare = i

    def _tidy(self) -> None:
        """Remove the spare chunk files no append filled."""
        for arr in self.arrays.values():
            if arr.spare is not None and arr.spare * arr.chunks[0] >= arr.rows:
                _unlink(arr.key(arr.spare))
                arr.spare = None

    def _set_rows(self, arr: _Array, rows: int) -> None:
        """Record the array's new length; chunks wholly past it are deleted (as zarr-python does)."""
        old, arr.meta["shape"][0] = arr.rows, rows
        self._write_json(arr.path, arr.meta)
        n = arr.chunks[0]
        for i in range(math.ceil(rows / n), math.ceil(old / n)):
            _unlink(arr.key(i))
        if arr.spare is not None and arr.spare < math.ceil(old / n) and arr.spare * n >= rows:
            arr.spare = None                       # removed with the chunks past the cut
