"""Recording cost of the Zarr store; prints tables.

    .venv/bin/python benchmarks/store.py [--quick]

audio_stream on its defaults (B = 1), torch on one thread, the store's writer process beside it:
  overhead   run time with ZarrRecorder (default monitor) vs NullRecorder, measured
             alternately, whole simulate() calls (store creation and last flush included)
  codec      store size and write time per codec level on the same run
  read       open_run + a full load, and xarray.open_zarr + a full load
  append     appending one tick per write vs whole chunks (why the recorder buffers)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from rtnclock import NullRecorder, ZarrRecorder, open_run, simulate, store
from rtnclock.scenarios import audio_stream
from tables import table


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed_run(cfg, stream, recorder):
    start = time.perf_counter()
    simulate(cfg, stream, recorder=recorder)
    return time.perf_counter() - start


def overhead(tmp: Path, durations, quick: bool) -> None:
    print("## Recording overhead: ZarrRecorder vs NullRecorder (audio_stream defaults, B = 1)\n")
    cfg = audio_stream.default_config()
    rows = []
    kinds = ("null", "process", "inline")
    for duration in durations:
        stream = audio_stream.make_stream(cfg, duration=duration, seed=0, batch=1)
        timed_run(cfg, stream, ZarrRecorder(tmp / "warm.zarr", overwrite=True))      # imports, caches
        times = {k: [] for k in kinds}
        recs = {}
        reps = 1 if quick else max(3, min(7, round(300 / duration)))        # ~5 min in all
        for i in range(reps):                      # rotating order: drifts hit every kind alike
            for kind in kinds[i % 3:] + kinds[:i % 3]:
                if kind == "null":
                    times[kind].append(timed_run(cfg, stream, NullRecorder()))
                    continue
                rec = ZarrRecorder(tmp / "run.zarr", overwrite=True, background=kind == "process")
                times[kind].append(timed_run(cfg, stream, rec))
                recs[kind] = rec
        a, b, c = (min(times[k]) for k in kinds)
        # Each round runs every kind once; the ratio within a round cancels the
        # machine's drift, and the median over rounds ignores the odd outlier.
        paired = float(np.median(np.array(times["process"]) / np.array(times["null"]))) - 1
        paired_inline = float(np.median(np.array(times["inline"]) / np.array(times["null"]))) - 1
        rec = recs["process"]
        size = size_of(tmp / "run.zarr")
        rows.append([duration, a, b, paired, b / a - 1, rec.seconds / a, paired_inline, rec.bytes_written / 2**20,
                     rec.write_seconds, rec.bytes_written / 2**20 / rec.write_seconds, size / 2**20,
                     size / 2**10 / duration])
    table(["sim s", "null s", "zarr s", "overhead (goal <= 0.10)", "fastest vs fastest", "in recorder / null",
           "inline overhead", "payload MiB", "writer s", "writer MiB/s", "on disk MiB", "KiB per sim s"], rows)
    print("null s, zarr s: fastest of the rounds. overhead: median over rounds of zarr / null - 1 (each round "
          "runs every kind once, in rotating order); 'fastest vs fastest' is the ratio of the fastest runs. 'zarr' writes from the writer process (the default); "
          "'in recorder' is the run's wall time inside the recorder's calls (its direct cost, waiting for "
          "the last write included); 'inline overhead' writes in the run's own process instead. "
          "'writer s' is the writer process's time applying writes (off the run's core); writer MiB/s = "
          "uncompressed payload over it.\n")


def codec(tmp: Path, duration: float) -> None:
    print(f"## Codec: store size and flush time, audio_stream {duration:g} s\n")
    cfg = audio_stream.default_config()
    stream = audio_stream.make_stream(cfg, duration=duration, seed=0, batch=1)
    rows, saved = [], store.CODEC_LEVEL
    try:
        for level in (None, 1, 3, 9):
            store.CODEC_LEVEL = level
            rec = ZarrRecorder(tmp / "codec.zarr", overwrite=True)
            total = timed_run(cfg, stream, rec)
            size = size_of(tmp / "codec.zarr")
            rows.append(["raw" if level is None else f"zstd-{level}", size / 2**20,
                         rec.bytes_written / size, rec.write_seconds, total])
    finally:
        store.CODEC_LEVEL = saved
    table(["codec", "on disk MiB", "payload / disk", "writer s", "run s"], rows)


def read(tmp: Path) -> None:
    print("## Reading the overhead run's store\n")
    path = tmp / "run.zarr"
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


def append(tmp: Path, rows: int = 400) -> None:
    import zarr

    print(f"## Appending {rows} ticks of a [16, 16] float32 state\n")
    out = []
    for label, step in (("one tick per write", 1), ("one chunk per write", rows)):
        path = tmp / "append.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.open_group(str(path), mode="w").create_array(
            "state", shape=(0, 16, 16), chunks=(rows, 16, 16), dtype="f4")
        data = np.random.default_rng(0).random((rows, 16, 16), dtype=np.float32)
        start = time.perf_counter()
        for i in range(0, rows, step):
            arr.resize((i + step, 16, 16))
            arr[i:i + step] = data[i:i + step]
        sec = time.perf_counter() - start
        out.append([label, sec, rows / sec])
    table(["granularity", "s", "ticks/s"], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="rtnclock-bench-"))
    start = time.perf_counter()
    try:
        overhead(tmp, (10.0, 30.0) if args.quick else (10.0, 60.0, 300.0), args.quick)
        read(tmp)
        codec(tmp, 10.0 if args.quick else 60.0)
        append(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
