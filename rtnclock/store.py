"""Runs as Zarr v3 stores (DESIGN §3): ``ZarrRecorder`` writes (``runs.open_run`` reads).

Layout (every array has dimension names, so ``xarray.open_zarr(path,
group="level_0")`` gives a labelled dataset with time in seconds)::

    RUN.zarr/            attrs["rtnclock"]: schema, version, config, scenario,
                         seed, mode, committed rows per group, finished flag
      level_k/           time [time] s, n, cost, full_cost, escalated, U, S, F,
                         open_fraction, effective_rank [time];
                         gate, surprise, entropy, free_energy, active
                         [time, batch, block]; state [time, batch, block, dim];
                         block [block] (which slots the monitor kept);
                         growing runs: alive, block_id, parent_id, born
                         [time, slot] (the level's whole tree after each tick;
                         born in seconds, NaN for a free slot)
      sensory/           time [frame], features [frame, batch, leaf, channel],
                         appended as the stream delivers them
      annotations/       time, kind (code; attrs kinds), stream [annotation]:
                         the scenario's ground truth (onsets, oddballs)
      events/            n, time, kind (code; attrs kinds), level, block, stream [event]

Writes: each level's ticks are buffered in memory and appended one whole time
chunk at a time (never rewritten); after the chunks of a flush are on disk the
root attribute ``committed`` is rewritten (zarr writes every file to a
temporary name and renames it, so each write is atomic).  A run killed at any
moment therefore leaves a store whose committed rows are complete; rows past
them belong to a flush that never committed and ``open_run`` drops them.  The
root attributes are written first with ``committed`` None and again, with
``{}``, once every array exists: a store killed while being laid out reads as
holding nothing.

Ticks are copied into tensors allocated once per level (two chunks' worth,
used in turn; ``chunks.py``), so a chunk being filled holds no tick objects
alive.  The recorder hands each full chunk, in order, to ``zarrwriter``, whose thread
computes its observables and writes the chunk files and metadata documents
itself, beside the simulation (zarr-python's per-array overhead would cost
more than a short run); the store it leaves is a plain Zarr v3 store that
zarr-python and xarray read.  ``close`` waits until everything is on disk.

Checkpoints (the scheduler state as data, for ``resume``) go with a flush's
commit, at most one per :data:`CHECKPOINT_SECONDS` of wall time: a resume
cuts the arrays back to the last checkpoint and redoes what followed it.

Codec: zstd at level 1 for the levels' arrays, chosen by measurement
(``benchmarks/store.py``).  The float mantissas of a state compress little,
but a run's arrays are mostly structure: dormant blocks repeat their state,
closed gates and masks are constant, and the last chunk of each array is
padding.  On a 60 s audio_stream run zstd-1 on the levels stored the run
2.5x smaller than raw level chunks (4.4 vs 10.9 MiB on disk) for ~10% more
writer time; higher levels bought nothing.  The events, the sensory frames
and the checkpoint slots are raw: their chunks fill over many flushes, and a
raw chunk takes each flush's rows in place (``zarrwriter``), where a
compressed one is encoded again and replaced through a new file at every
flush.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from . import __version__
from .config import Config
from .errors import RtnclockError
from .events import KINDS, EventLog
from .monitor import Monitor
from .checkpoint import pack, unpack
from .chunks import LevelBuffer, numpy_of
from .recorder import NullRecorder, TickRecord
from .zarrwriter import StoreWriter

SCHEMA_VERSION = 1
#: A time chunk holds at most this many bytes of its largest array ...
CHUNK_BYTES = 1 << 20
#: ... and at most this much simulated time (seconds).
CHUNK_SECONDS = 60.0
_EVENT_CHUNK = 65536
#: A flush writes a checkpoint only this many wall seconds after the last one
#: (each costs the run 4-10 ms; a resume redoes at most about this much work).
CHECKPOINT_SECONDS = 1.0
#: Group holding the scheduler state of the last flush in two byte-array slots;
#: the commit names the valid one, so a checkpoint is replaced atomically.
CHECKPOINT = "checkpoint"


#: zstd level of the levels' arrays (see the module docstring); None stores them raw.
CODEC_LEVEL: int | None = 1


def _timed(method):
    """Add the wall time of each call to ``self.seconds`` (the recorder's whole cost)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began
    return wrapper


class StoreError(RtnclockError, OSError):
    """The store cannot be created, written or read; names the path."""


class ZarrRecorder(NullRecorder):
    """Writes a run to a Zarr v3 store as it goes (see the module docstring).

    Args:
        path: the store directory (``RUN.zarr``).
        monitor: what to record (default :class:`Monitor`).
        overwrite: replace an existing store; otherwise one raises ``StoreError``.
        resume: continue the killed run stored at ``path`` (see :meth:`resume`).
        scenario, seed: recorded in the root attributes.
        mode: the scheduler, recorded likewise.
        **meta: more root attributes (duration, batch).
    """

    def __init__(self, path, *, monitor: Monitor | None = None, overwrite: bool = False,
                 resume: bool = False, scenario: str | None = None, seed: int | None = None,
                 mode: str = "multiclock", **meta):
        self.path = Path(path)
        self.monitor = monitor or Monitor()
        self.overwrite, self.resuming = overwrite, resume
        self.meta = dict(scenario=scenario, seed=seed, mode=mode, **meta)
        self.writer = None
        self.buffers: dict[int, LevelBuffer] = {}
        self.events: EventLog | None = None
        self.events_written = 0
        self.stream = None
        self.sensory_rows = 0           # frames written to sensory/
        self.bytes_written = 0          # trajectory payload handed to the writer
        self.write_seconds = 0.0        # the writer thread's time (known once closed)
        self.seconds = 0.0              # wall time spent in this recorder's calls (its cost to the run)
        self.moment_driven = False      # the multi-clock scheduler sets it and request_moment()
        self._due: set[int] = set()
        self._extra = None
        self._ckpt: dict | None = None       # {"slot", "nbytes"} of the committed checkpoint
        self._checkpointed = time.monotonic()  # when the last checkpoint (or the run) began
        self._committed: dict = {}
        if resume:
            if not (self.path / "zarr.json").is_file():
                raise StoreError(f"nothing to resume at {str(self.path)!r}: no Zarr store there")
        else:
            self._check_target(remove=False)                 # fail before the run, not after

    def bind(self, extra) -> None:
        """``extra()`` returns what a checkpoint holds besides the state (model, stats, RNG)."""
        self._extra = extra

    # ---- recorder interface --------------------------------------------
    @_timed
    def start(self, config: Config, events: EventLog | None = None, stream=None) -> None:
        """Lay out the store: attributes, level arrays, events, sensory features."""
        self.config, self.events = config, events
        blocks = self.monitor.resolve(config)
        self._check_target(remove=True)
        self._checkpointed = time.monotonic()
        batch = stream.batch if stream is not None else 1
        dtype = np.float32 if config.dtype == "float32" else np.float64
        self.every = self.monitor.every
        self._counts = {k: 0 for k in blocks}
        self._open("w")
        self._write_attrs(committed=None, finished=False)          # None: still being laid out
        for k, idx in blocks.items():
            self._send(("group", f"level_{k}", dict(
                level=k, period=config.resolved("periods")[k], tau=config.resolved("taus")[k],
                n_blocks=config.slots(k), every=self.every)))
            self.buffers[k] = self._level_buffer(k, idx, batch, dtype)
            self._create_level(self.buffers[k])
        self._send(("group", "events", {"kinds": list(KINDS)}))
        for name, dt in _EVENT_FIELDS.items():
            self._send(("array", f"events/{name}", _spec((0,), dt, ["event"], chunks=(_EVENT_CHUNK,), zstd=None,
                                                         attrs={"units": "s"} if name == "time" else None), None))
        self._send(("group", CHECKPOINT, {}))
        for slot in ("a", "b"):
            self._send(("array", f"{CHECKPOINT}/{slot}",
                        _spec((0,), np.uint8, ["byte"], chunks=(1 << 22,), zstd=None), None))
        if stream is not None:
            self._create_sensory(stream, dtype)
        self._write_attrs(committed={}, finished=False)           # every array exists

    @_timed
    def record(self, tick: TickRecord) -> None:
        """Buffer a tick of a monitored level; write the level's chunk when full."""
        buf = self.buffers.get(tick.level)
        if buf is None:
            return
        count = self._counts[tick.level]
        self._counts[tick.level] = count + 1
        if count % self.every:
            return
        if buf.add(tick):
            if self.moment_driven:
                if not self._due:
                    self.request_moment()           # written once the moment is whole
                self._due.add(tick.level)
            else:
                self._flush([buf])

    @_timed
    def moment(self, n: int, state) -> None:
        """End of moment ``n``: write full chunks, then a checkpoint (if one is due), then the commit."""
        buffers = [self.buffers[k] for k in sorted(self._due)]
        self._due = set()
        due = time.monotonic() - self._checkpointed >= CHECKPOINT_SECONDS
        self._flush(buffers, checkpoint=state if due else None)
        if due:
            self._checkpointed = time.monotonic()

    @_timed
    def close(self, failed: bool = False) -> None:
        """Write what is buffered and wait until it is on disk; mark the store
        finished unless the run failed."""
        if self.writer is None:
            return
        try:
            # A failed run writes what it holds (readable) and keeps its checkpoint:
            # a resume cuts the arrays back to it and continues.
            self._flush(list(self.buffers.values()), finished=not failed, last=True)
            if not failed and self._ckpt is not None:      # a finished run needs no checkpoint
                for slot in ("a", "b"):
                    self._send(("resize", f"{CHECKPOINT}/{slot}", (0,)))
                self._ckpt = None
                self._write_attrs(committed=self._committed, finished=True)
        finally:
            writer, self.writer = self.writer, None
            self._guard(writer.finish)
            self.write_seconds = writer.busy_seconds

    # ---- resuming ----------------------------------------------------------
    def resume(self, config: Config, events: EventLog, stream=None) -> dict | None:
        """Reopen a killed run's store at its last checkpoint.

        Arrays are cut back to the checkpoint's rows, held ticks restored and
        the committed events reloaded into ``events``.

        Returns:
            The checkpoint (``state``, ``model``, ``stats``, ``rng``), or None
            when the run died before its first checkpoint (it then starts over).

        Raises:
            StoreError: not an rtnclock store, already finished, or written with
                another config.
        """
        import zarr

        root = self._guard(lambda: zarr.open_group(store=str(self.path), mode="r"))
        attrs = dict(root.attrs).get("rtnclock")
        if not attrs or "config" not in attrs:
            raise StoreError(f"{str(self.path)!r} is not an rtnclock run; nothing to resume")
        if attrs.get("finished"):
            raise StoreError(f"{str(self.path)!r} holds a finished run; nothing to resume")
        stored = _from_json(attrs["config"])
        mine = _from_json(_jsonable(config.to_dict()))
        differ = [k for k in mine if mine[k] != stored.get(k)]
        if differ:
            raise StoreError(f"{str(self.path)!r} was written with another config ({', '.join(differ)} differ)")
        where = attrs.get("checkpoint")
        if not where:
            self.overwrite = True
            self.start(config, events, stream)
            return None
        raw = self._guard(lambda: root[CHECKPOINT][where["slot"]][:where["nbytes"]])
        ckpt = unpack(raw.tobytes())
        self._ckpt, self._checkpointed = where, time.monotonic()
        self.config, self.events = config, events
        self.monitor, self.meta = ckpt["monitor"], ckpt["meta"]
        rec = ckpt["recorder"]
        self.every, self._counts = self.monitor.every, rec["counts"]
        self.events_written, self.bytes_written = rec["events_written"], rec["bytes_written"]
        self.stream, self.sensory_rows = stream, rec["sensory_rows"]
        blocks = self.monitor.resolve(config)
        batch = stream.batch if stream is not None else 1
        dtype = np.float32 if config.dtype == "float32" else np.float64
        self._open("r+")
        for k, idx in blocks.items():
            # The chunk as written, whatever the defaults now.
            buf = self._level_buffer(k, idx, batch, dtype, chunk=root[f"level_{k}/time"].chunks[0])
            buf.rows = rec["rows"][k]
            buf.restore(rec["ticks"][k])
            for v, shape in buf.shapes.items():           # drop rows of a flush that never checkpointed
                self._send(("resize", f"{buf.name}/{v}", (buf.rows, *shape)))
            self.buffers[k] = buf
        for name in _EVENT_FIELDS:
            self._send(("resize", f"events/{name}", (self.events_written,)))
        if stream is not None:
            self._send(("resize", "sensory/time", (self.sensory_rows,)))
            self._send(("resize", "sensory/features",
                        (self.sensory_rows, stream.batch, stream.n_leaves, stream.input_dim)))
            self._sensory_dtype = dtype
        self._committed = self._commit_rows()
        self._write_attrs(committed=self._committed, finished=False)
        events.extend(self._guard(lambda: _read_events(root["events"], self.events_written)))
        return ckpt

    def _checkpoint(self, state) -> None:
        """Write the scheduler state, held ticks and counters into the slot the commit does not name."""
        ckpt = dict(state=state, monitor=self.monitor, meta=self.meta,
                    recorder=dict(counts=self._counts, events_written=self.events_written,
                                  bytes_written=self.bytes_written, sensory_rows=self.sensory_rows,
                                  rows={k: b.rows for k, b in self.buffers.items()},
                                  ticks={k: b.checkpoint() for k, b in self.buffers.items()}))
        if self._extra is not None:
            ckpt.update(self._extra())
        data = np.frombuffer(pack(ckpt), dtype=np.uint8)
        slot = "b" if self._ckpt and self._ckpt["slot"] == "a" else "a"
        self._send(("put", f"{CHECKPOINT}/{slot}", data))
        self._ckpt = {"slot": slot, "nbytes": len(data)}     # takes effect with the commit

    # ---- writing ---------------------------------------------------------
    def _open(self, mode: str) -> None:
        self.writer = StoreWriter()
        self._send(("open", str(self.path), mode))

    def _send(self, op: tuple) -> None:
        self._guard(lambda: self.writer.send(op))

    def _ask(self, job) -> None:
        self._send(("call", job))

    def _level_buffer(self, k: int, blocks: np.ndarray, batch: int, dtype, chunk: int | None = None) -> LevelBuffer:
        """Level ``k``'s buffer; its time chunk sized by its full state (the rows hold it) and period."""
        config = self.config
        if chunk is None:
            row_bytes = np.dtype(dtype).itemsize * batch * config.slots(k) * config.resolved("dims")[k]
            period = config.resolved("periods")[k]
            chunk = int(max(1, min(CHUNK_BYTES // row_bytes, math.ceil(CHUNK_SECONDS / period))))
        return LevelBuffer(k, blocks, config, batch, tuple(self.monitor.variables), dtype, chunk, self._ask)

    def _create_level(self, buf: LevelBuffer) -> None:
        """Create a level's empty arrays and its block coordinate."""
        dims = {0: ["time"], 1: ["time", "slot"], 2: ["time", "batch", "block"],
                3: ["time", "batch", "block", "dim"]}
        for v, shape in buf.shapes.items():
            self._send(("array", f"{buf.name}/{v}",
                        _spec((0, *shape), buf.dtypes[v], dims[len(shape)], chunks=(buf.chunk, *shape),
                              attrs={"units": "s"} if v == "time" else None), None))
        blocks = buf.blocks.numpy()
        self._send(("array", f"{buf.name}/block", _spec(blocks.shape, np.int64, ["block"]), blocks))

    def _ready(self, event: threading.Event) -> None:
        """Wait for ``event`` (rows the writer is copying out), raising the writer's failure meanwhile."""
        while not event.wait(0.05):
            self._guard(self.writer.check)

    def _flush(self, buffers, finished: bool = False, checkpoint=None, last: bool = False) -> None:
        """Chunks, then events, then a checkpoint, then the commit, in this order.

        ``last``: the run waits for this flush, so its columns are computed here
        while the writer's thread writes those before (both mostly outside the
        GIL), instead of all of them on the writer's thread, with the effective
        ranks of the rows after the last piece (:attr:`_Rows.RANK_PIECE`).
        Each level's ranks are appended after the events, behind its pieces.
        """
        ranks = []
        for buf in buffers:
            if (held := buf.flush(self._ready)) is not None:
                self.bytes_written += held[1]
                self._send(("append", held[0]("rest") if last else held[0]))
                if last:
                    ranks.append(held[0])
        for items in (self._event_items(), self._sensory_items()):
            if items:
                self.bytes_written += sum(data.nbytes for _, _, data in items)
                self._send(("append", items))
        for items in ranks:
            self._send(("append", functools.partial(items, "rank")))
        if checkpoint is not None:
            self._checkpoint(checkpoint)
        self._committed = self._commit_rows()
        self._write_attrs(committed=self._committed, finished=finished)

    def _commit_rows(self) -> dict:
        rows = {f"level_{k}": b.rows for k, b in self.buffers.items()}
        return {**rows, "events": self.events_written, "sensory": self.sensory_rows}

    def _write_attrs(self, committed: dict | None, finished: bool) -> None:
        self._send(("attrs", "", {"rtnclock": dict(
            schema_version=SCHEMA_VERSION, version=__version__, config=_jsonable(self.config.to_dict()),
            committed=committed, finished=finished, checkpoint=self._ckpt, **self.meta)}))

    def _event_items(self) -> list[tuple]:
        if self.events is None:
            return []
        rows = self.events.since(self.events_written)
        if not rows:
            return []
        cols = {"n": [e.n for e in rows], "time": [e.t for e in rows],
                "kind": [KINDS.index(e.kind) for e in rows], "level": [e.level for e in rows],
                "block": [e.block for e in rows], "stream": [e.stream for e in rows]}
        items = [(f"events/{name}", self.events_written, np.asarray(cols[name], dtype=dt))
                 for name, dt in _EVENT_FIELDS.items()]
        self.events_written += len(rows)
        return items

    def _create_sensory(self, stream, dtype) -> None:
        """Empty sensory arrays (frames are appended as the stream delivers them) and the annotations."""
        self.stream, self._sensory_dtype = stream, dtype
        shape = (stream.batch, stream.n_leaves, stream.input_dim)
        chunk = int(max(1, CHUNK_BYTES // (np.dtype(dtype).itemsize * math.prod(shape))))
        self._send(("group", "sensory", {"dt": stream.dt, "source": stream.name}))
        self._send(("array", "sensory/features", _spec((0, *shape), dtype, ["frame", "batch", "leaf", "channel"],
                                                       chunks=(chunk, *shape), zstd=None), None))
        self._send(("array", "sensory/time", _spec((0,), np.float64, ["frame"], chunks=(chunk,), zstd=None,
                                                   attrs={"units": "s"}), None))
        notes = stream.annotations
        kinds = sorted(set(notes["kind"]))
        self._send(("group", "annotations", {"kinds": kinds}))
        for name, values in notes.items():
            data = np.asarray([kinds.index(v) for v in values], dtype=np.int16) if name == "kind" \
                else np.asarray(values, dtype=np.float64 if name == "time" else None)
            self._send(("array", f"annotations/{name}",
                        _spec(data.shape, data.dtype, ["annotation"], chunks=(max(len(data), 1),),
                              attrs={"units": "s"} if name == "time" else None), data))

    def _sensory_items(self) -> list[tuple]:
        """Appends of the frames delivered since the last flush."""
        if self.stream is None or self.stream.loaded <= self.sensory_rows:
            return []
        a = self.sensory_rows
        frames = numpy_of(self.stream.delivered(a)).astype(self._sensory_dtype).transpose(1, 0, 2, 3)
        self.sensory_rows = a + frames.shape[0]
        return [("sensory/features", a, np.ascontiguousarray(frames)),
                ("sensory/time", a, np.arange(a, self.sensory_rows) * self.stream.dt)]

    def _check_target(self, remove: bool) -> None:
        p = self.path
        if p.exists() and not self.overwrite:
            raise StoreError(f"{str(p)!r} exists; pass overwrite=True (--overwrite) to replace it")
        if p.exists() and not (p / "zarr.json").exists() and any(p.iterdir()):
            raise StoreError(f"{str(p)!r} is a non-empty directory that is not a Zarr store; "
                             "refusing to overwrite it")
        existing = p.absolute().parent
        while not existing.exists():                         # parents are created at start
            existing = existing.parent
        if not existing.is_dir():
            raise StoreError(f"cannot create store {str(p)!r}: {str(existing)!r} is not a directory")
        if not os.access(existing, os.W_OK):
            raise StoreError(f"cannot create store {str(p)!r}: directory {str(existing)!r} is not writable")
        if remove:                       # the writer removes an old store (mode "w")
            p.absolute().parent.mkdir(parents=True, exist_ok=True)

    def _guard(self, fn):
        try:
            return fn()
        except StoreError:
            raise
        except OSError as err:
            why = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise StoreError(f"cannot write store {str(self.path)!r}: {why}; "
                             "what was committed before stays readable") from err


def _spec(shape, dtype, dims, *, chunks=None, attrs=None, zstd="default") -> dict:
    """An array's layout for the writer (``zstd``: level, None for raw; default :data:`CODEC_LEVEL`)."""
    return dict(shape=tuple(shape), chunks=tuple(chunks or shape), dtype=np.dtype(dtype), dims=list(dims),
                zstd=CODEC_LEVEL if zstd == "default" else zstd, attrs=attrs)


def _read_events(group, rows: int) -> list:
    """The first ``rows`` events of a store's events group as :class:`Event` objects."""
    from .events import Event

    cols = {name: group[name][:rows] for name in _EVENT_FIELDS}
    return [Event(int(n), float(t), KINDS[int(kind)], int(level), int(block), int(stream))
            for n, t, kind, level, block, stream in zip(cols["n"], cols["time"], cols["kind"], cols["level"],
                                                       cols["block"], cols["stream"])]


_EVENT_FIELDS = {"n": np.int64, "time": np.float64, "kind": np.int8, "level": np.int16,
                 "block": np.int64, "stream": np.int64}


def _jsonable(values: dict) -> dict:
    """Config values as JSON (tuples become lists; marked so they come back as tuples)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def _from_json(values: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
