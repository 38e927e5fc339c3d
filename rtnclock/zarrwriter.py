"""Applies a recorder's write operations to a Zarr v3 store, here or in a writer process.

``ZarrRecorder`` (``store.py``) decides *what* goes to disk and in which order
(chunks, then checkpoint, then the commit); this module only carries it out.
An operation is a plain tuple:

    ("open", path, mode)                          open the root group ("w" creates it)
    ("group", name, attrs)                        create a group
    ("array", name, spec, data | None)            create an array (spec: shape, chunks, dtype,
                                                  dims, zstd level or None, attrs), maybe filled
    ("append", [(name, start, data), ...])        grow each array to start + len(data), write
                                                  the rows (the arrays concurrently)
    ("put", name, data)                           make a 1-d array exactly ``data``
    ("resize", name, shape)
    ("attrs", name, attrs)                        update attributes ("" is the root)

Why a process: zarr-python spends ~1 ms of interpreter time per array write,
most of it holding the GIL, so a writer *thread* slows the simulation as much
as writing inline does.  A writer process on another core takes that time off
the run; the simulation only pickles finished columns into a pipe.  The
process dies with its parent (``PR_SET_PDEATHSIG``), so a killed run is a
killed writer, as if it had written inline, and a resume never races a
straggler.  After a failed write the process applies nothing more (a later
commit would claim rows that are not on disk) and reports the error.

This module imports only the standard library, numpy and zarr: the writer
process loads it by file path and never imports torch.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np

_HEADER = struct.Struct("<Q")


def fill_value(dtype) -> object:
    """What an unwritten element reads as: NaN for floats, False / 0 otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return float("nan")
    return False if dtype.kind == "b" else 0


class StoreWriter:
    """Carries out operations on one store with zarr's asynchronous API."""

    def __init__(self):
        self.root = None
        self.nodes: dict = {}
        self.seconds = 0.0          # time spent applying operations

    async def apply(self, op: tuple) -> None:
        """Carry out one operation (see the module docstring)."""
        began = time.perf_counter()
        try:
            await getattr(self, "_" + op[0])(*op[1:])
        finally:
            self.seconds += time.perf_counter() - began

    async def _node(self, name: str):
        if name not in self.nodes:
            self.nodes[name] = self.root if name == "" else await self.root.getitem(name)
        return self.nodes[name]

    async def _open(self, path: str, mode: str) -> None:
        import zarr.api.asynchronous as za

        if mode == "w" and os.path.isdir(path):          # the recorder checked it is a store
            shutil.rmtree(path)
        self.root = await za.open_group(store=path, mode=mode, zarr_format=3)
        self.nodes = {"": self.root}

    async def _group(self, name: str, attrs: dict) -> None:
        parent, _, leaf = name.rpartition("/")
        self.nodes[name] = await (await self._node(parent)).create_group(leaf, attributes=attrs)

    async def _array(self, name: str, spec: dict, data) -> None:
        import zarr.codecs

        parent, _, leaf = name.rpartition("/")
        level = spec.get("zstd")
        arr = await (await self._node(parent)).create_array(
            leaf, shape=spec["shape"], chunks=spec.get("chunks", spec["shape"]), dtype=spec["dtype"],
            dimension_names=spec["dims"], fill_value=fill_value(spec["dtype"]),
            compressors=None if level is None else zarr.codecs.ZstdCodec(level=level),
            attributes=spec.get("attrs") or {},
            # Our chunks are rarely all fill; checking each one for it costs more than writing it.
            config={"write_empty_chunks": True})
        self.nodes[name] = arr
        if data is not None:
            await arr.setitem(Ellipsis, data)

    async def _append(self, items: list) -> None:
        async def one(name, start, data):
            arr = await self._node(name)
            await arr.resize((start + len(data), *arr.shape[1:]))
            await arr.setitem(slice(start, start + len(data)), data)
        await asyncio.gather(*(one(*item) for item in items))

    async def _put(self, name: str, data) -> None:
        arr = await self._node(name)
        await arr.resize((len(data),))
        await arr.setitem(slice(0, len(data)), data)

    async def _resize(self, name: str, shape: tuple) -> None:
        await (await self._node(name)).resize(tuple(shape))

    async def _attrs(self, name: str, attrs: dict) -> None:
        await (await self._node(name)).update_attributes(attrs)


class InlineWriter:
    """Applies each operation before returning, in this process.

    Like the writer process, it applies nothing after a failed operation and
    raises that failure again instead.
    """

    def __init__(self):
        self.writer = StoreWriter()
        self._error: Exception | None = None

    def send(self, op: tuple) -> None:
        """Apply ``op`` now."""
        from zarr.core.sync import sync

        if self._error is not None:
            raise self._error
        try:
            sync(self.writer.apply(op))
        except Exception as err:
            self._error = err
            raise

    def wait(self) -> float:
        """Nothing is pending; the seconds spent writing (raises an earlier failure)."""
        if self._error is not None:
            raise self._error
        return self.writer.seconds

    finish = wait


class BackgroundWriter:
    """Sends operations to a writer process; errors come back as ``OSError``.

    ``send`` only queues (a thread feeds the pipe, so a busy writer never
    stalls the run) and raises the error of an earlier operation if the
    process reported one.  ``finish`` waits until everything sent is on disk.
    """

    def __init__(self):
        boot = ("import importlib.util as u, sys; s = u.spec_from_file_location('rtnclock_zarrwriter', "
                "sys.argv[1]); m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); "
                "m.serve()")
        self.proc = subprocess.Popen([sys.executable, "-c", boot, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, daemon=True, name="rtnclock-writer-feed")
        self._feeder.start()
        self._error: OSError | None = None

    def send(self, op: tuple) -> None:
        """Queue ``op``; raise the writer's error if it has reported one."""
        self._poll()
        self._out.put(_frame(op))

    def wait(self) -> float:
        """Wait until every queued operation is on disk; the seconds the process spent writing."""
        self._poll()
        self._out.put(_frame(("sync",)))
        reply = _read_frame(self.proc.stdout)
        if reply is None:
            self._error = OSError(None, f"the writer process died (exit code {self.proc.wait()})")
            raise self._error
        self._check(reply)
        return reply[1]

    def finish(self) -> float:
        """:meth:`wait`, then stop the process."""
        try:
            return self.wait()
        finally:
            self._out.put(None)
            self._feeder.join()
            self.proc.wait()
            self.proc.stdout.close()

    def _poll(self) -> None:
        if self._error is None and select.select([self.proc.stdout], [], [], 0)[0]:
            reply = _read_frame(self.proc.stdout)
            if reply is None:
                self._error = OSError(None, f"the writer process died (exit code {self.proc.wait()})")
            else:
                self._check(reply)
        if self._error is not None:
            raise self._error

    def _check(self, reply: tuple) -> None:
        if reply[0] == "error":
            self._error = OSError(reply[1], reply[2])
            raise self._error

    def _feed(self) -> None:
        while (frame := self._out.get()) is not None:
            try:
                self.proc.stdin.write(frame)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):         # the process died: finish() reports it
                break
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


def _frame(op) -> bytes:
    payload = pickle.dumps(op, protocol=5)
    return _HEADER.pack(len(payload)) + payload


def _read_frame(stream):
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    payload = stream.read(size)
    return None if len(payload) < size else pickle.loads(payload)


def _die_with_parent() -> None:
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:                  # the parent died before prctl took hold
        os._exit(1)


def serve() -> None:
    """The writer process: apply framed operations from stdin, answer on stdout."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the run's to handle; it flushes then
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def reply(msg) -> None:
        stdout.write(_frame(msg))
        stdout.flush()

    async def loop() -> None:
        writer, failed = StoreWriter(), None
        while (op := _read_frame(stdin)) is not None:
            if op[0] == "sync":
                reply(failed or ("synced", writer.seconds))
                continue
            if failed:
                continue
            try:
                await writer.apply(op)
            except Exception as err:                          # reported to the run, which raises it
                code = getattr(err, "errno", None)
                why = getattr(err, "strerror", None) or f"{type(err).__name__}: {err}"
                failed = ("error", code, why)
                reply(failed)
        # Everything sent was applied and answered: skip the interpreter's
        # teardown (tens of ms the run would wait for in finish()).
        os._exit(0)
    asyncio.run(loop())
