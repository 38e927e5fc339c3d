"""Recording cost of the Zarr store; prints tables.

    .venv/bin/python benchmarks/store.py [--quick]

audio_stream on its defaults (B = 1), torch on one thread:
  overhead   run time with ZarrRecorder (default monitor) vs NullRecorder, measured
             alternately (5-15 rounds), whole simulate() calls (store creation and last flush included;
             each run writes a new store, the previous one is removed outside the timing)
  codec      store size and write time per codec level on the same run
  read       open_run + a full load, and xarray.open_zarr + a full load
  append     appending one tick per write vs whole chunks (why the recorder buffers), and
             one chunk into each of 60 arrays through zarr-python vs rtnclock's writer
"""

from __future__ import annotations

import argparse
import gc
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from rtnclock import NullRecorder, ZarrRecorder, open_run, simulate, store
from rtnclock.runs import disk_usage
from rtnclock.scenarios import audio_stream
from rtnclock.zarrwriter import StoreWriter
from tables import table


def timed_run(cfg, stream, recorder, cpu=None):
    """Wall seconds of one ``simulate``; appends the calling thread's CPU seconds to ``cpu``.

    A full garbage collection first, untimed: otherwise the ~0.1 s full
    collection that the garbage of earlier runs brings due lands in whichever
    run happens to be next (one in three or four of them).
    """
    gc.collect()
    start, began = time.perf_counter(), time.thread_time()
    simulate(cfg, stream, recorder=recorder)
    if cpu is not None:
        cpu.append(time.thread_time() - began)
    return time.perf_counter() - start


_made = itertools.count()


def fresh(path: Path, **kw) -> ZarrRecorder:
    """A recorder writing a new store named after ``path`` (``run.zarr`` -> ``run-3.zarr``).

    Every run writes a store of its own: removing the last one first would
    leave the file system busy freeing its blocks during the timed run.
    """
    return ZarrRecorder(path.with_name(f"{path.stem}-{next(_made)}.zarr"), **kw)


def overhead(tmp: Path, durations, quick: bool) -> Path:
    """The overhead table; returns the last store written."""
    print("## Recording overhead: ZarrRecorder vs NullRecorder (audio_stream defaults, B = 1)\n")
    cfg = audio_stream.default_config()
    rows = []
    for duration in durations:
        stream = audio_stream.make_stream(cfg, duration=duration, seed=0, batch=1)
        timed_run(cfg, stream, fresh(tmp / "run.zarr"))                  # imports, caches
        times = {"null": [], "zarr": []}
        cpu = {"null": [], "zarr": []}
        inside, writing = [], []
        # Paired rounds, as many as ~10 minutes of simulated time allow (5-15): on
        # this machine identical runs differ by 5-25%, so fewer rounds leave the
        # median at the mercy of one slow minute.
        reps = 3 if quick else max(5, min(15, round(600 / duration)))
        for i in range(reps):                   # alternating order: drifts hit both alike
            for kind in (("null", "zarr") if i % 2 == 0 else ("zarr", "null")):
                if kind == "null":
                    times[kind].append(timed_run(cfg, stream, NullRecorder(), cpu[kind]))
                    continue
                rec = fresh(tmp / "run.zarr")
                times[kind].append(timed_run(cfg, stream, rec, cpu[kind]))
                inside.append(rec.seconds)
                writing.append(rec.write_seconds)
        a, b = min(times["null"]), min(times["zarr"])
        # Each round runs both once; the ratio within a round cancels the
        # machine's drift, and the median over rounds ignores the odd outlier.
        ratios = np.array(times["zarr"]) / np.array(times["null"]) - 1
        paired = float(np.median(ratios))
        q1, q3 = np.quantile(ratios, [0.25, 0.75])
        paired_cpu = float(np.median(np.array(cpu["zarr"]) / np.array(cpu["null"]))) - 1
        size = disk_usage(rec.path)
        payload = rec.bytes_written / 2**20
        rows.append([duration, reps, a, b, paired, f"{q1:.3f} to {q3:.3f}", b / a - 1, paired_cpu,
                     float(np.median(inside)) / a, float(np.median(writing)), payload / float(np.median(writing)),
                     size / 2**20, size / 2**10 / duration])
    table(["sim s", "rounds", "null s", "zarr s", "overhead (goal <= 0.10)", "middle half", "fastest vs fastest",
           "run thread CPU", "in recorder / null", "writer thread s", "writer MiB/s", "on disk MiB", "KiB per sim s"], rows)
    print("null s, zarr s: fastest of the rounds. overhead: median over rounds of zarr / null - 1 (each round "
          "runs both once, in alternating order); 'middle half' is the 25th to 75th percentile of the rounds' "
          "ratios; 'fastest vs fastest' is the ratio of the fastest runs; "
          "'run thread CPU' is the median ratio of the CPU time of the thread that runs simulate(), less 1. "
          "'in recorder' is the run's wall time inside the recorder's calls (copying ticks into rows, "
          "checkpoints, queueing, and computing the last columns and waiting for the last writes at the "
          "end); the rest is building a tick record per tick and sharing the machine with the writer. "
          "'writer thread s' is the store writer's thread (observables, encoding, files) beside the run; "
          "writer MiB/s = uncompressed payload over it.\n")
    return rec.path


def codec(tmp: Path, duration: float) -> None:
    print(f"## Codec: store size and flush time, audio_stream {duration:g} s\n")
    cfg = audio_stream.default_config()
    stream = audio_stream.make_stream(cfg, duration=duration, seed=0, batch=1)
    rows, saved = [], store.CODEC_LEVEL
    try:
        for level in (None, 1, 3, 9):
            store.CODEC_LEVEL = level
            rec = fresh(tmp / "codec.zarr")
            total = timed_run(cfg, stream, rec)
            size = disk_usage(rec.path)
            rows.append(["raw" if level is None else f"zstd-{level}", size / 2**20,
                         rec.bytes_written / size, rec.write_seconds, total])
    finally:
        store.CODEC_LEVEL = saved
    table(["codec", "on disk MiB", "payload / disk", "writer thread s", "run s"], rows)


def read(path: Path) -> None:
    print("## Reading the overhead run's store\n")
    start = time.perf_counter()
    run = open_run(path)
    for ds in run.levels.values():
        ds.load()
    run.events.load()
    a = time.perf_counter() - start
    start = time.perf_counter()
    for k in run.levels:
        xr.open_zarr(path, group=f"level_{k}", consolidated=False).load()
    b = time.perf_counter() - start
    table(["reader", "s"], [["open_run + load every level and the events", a],
                            ["xarray.open_zarr + load every level", b]])


def append(tmp: Path, rows: int = 400, arrays: int = 60) -> None:
    import zarr

    print(f"## Appending {rows} ticks of a [16, 16] float32 state\n")
    out = []
    data = np.random.default_rng(0).random((rows, 16, 16), dtype=np.float32)
    for label, step in (("one tick per write", 1), ("one chunk per write", rows)):
        path = tmp / "append.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.open_group(str(path), mode="w").create_array(
            "state", shape=(0, 16, 16), chunks=(rows, 16, 16), dtype="f4")
        start = time.perf_counter()
        for i in range(0, rows, step):
            arr.resize((i + step, 16, 16))
            arr[i:i + step] = data[i:i + step]
        sec = time.perf_counter() - start
        out.append([label, sec, rows / sec])
    table(["granularity (zarr-python)", "s", "ticks/s"], out)

    print(f"## One flush: a {rows}-row chunk appended to each of {arrays} arrays (zstd-1)\n")
    cols = [data[:, 0, 0].copy() for _ in range(arrays)]
    spec = dict(shape=(0,), chunks=(rows,), dtype=np.float32, dims=["time"], zstd=1)
    out = []
    path = tmp / "flush.zarr"
    shutil.rmtree(path, ignore_errors=True)
    group = zarr.open_group(str(path), mode="w")
    made = [group.create_array(f"a{i}", shape=(0,), chunks=(rows,), dtype="f4",
                               compressors=zarr.codecs.ZstdCodec(level=1)) for i in range(arrays)]
    start = time.perf_counter()
    for arr, col in zip(made, cols):
        arr.resize((rows,))
        arr[:] = col
    out.append(["zarr-python", (time.perf_counter() - start) * 1e3])
    shutil.rmtree(path, ignore_errors=True)
    writer = StoreWriter()
    writer.send(("open", str(path), "w"))
    for i in range(arrays):
        writer.send(("array", f"a{i}", spec, None))
    writer.wait()                                  # the arrays exist before the clock starts
    start = time.perf_counter()
    writer.send(("append", [(f"a{i}", 0, col) for i, col in enumerate(cols)]))
    writer.wait()
    out.append(["rtnclock.zarrwriter", (time.perf_counter() - start) * 1e3])
    table(["writer", "ms per flush"], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="rtnclock-bench-"))
    start = time.perf_counter()
    try:
        last = overhead(tmp, (10.0, 30.0) if args.quick else (10.0, 60.0, 300.0), args.quick)
        read(last)
        codec(tmp, 10.0 if args.quick else 60.0)
        append(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
