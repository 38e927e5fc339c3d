"""Reading stored runs: ``open_run`` (per-level xarray datasets, events, config) and ``info``.

Only rows the writer committed are read (see :mod:`rtnclock.store`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config
from .events import KINDS
from .store import _EVENT_FIELDS, StoreError, _from_json


@dataclass
class StoredRun:
    """A run read back from a store.

    Attributes:
        path: the store.
        attrs: root attributes (config, scenario, seed, version, committed rows).
        config: the resolved :class:`Config`.
        levels: ``{k: xarray.Dataset}`` of the recorded levels (committed rows).
        events: ``xarray.Dataset`` of events, ``kind`` as strings.
        sensory: ``xarray.Dataset`` of the input features (frames delivered
            up to the last commit), or ``None``.
        annotations: ``xarray.Dataset`` of the scenario's ground truth
            (``time``, ``kind`` as strings, ``stream``, ...), or ``None``.
    """

    path: Path
    attrs: dict
    config: Config
    levels: dict
    events: object
    sensory: object
    annotations: object = None

    @property
    def finished(self) -> bool:
        """The run closed normally (False: killed or failed; data up to its last flush)."""
        return bool(self.attrs.get("finished"))


def open_run(path) -> StoredRun:
    """Open a stored run: per-level xarray datasets, events and config.

    Rows written after the last committed flush (a run killed mid-flush) are
    left out.

    Raises:
        StoreError: no store at ``path``, or not an rtnclock store.
    """
    import warnings

    with warnings.catch_warnings():
        # The store's writer writes a file as ``*.partial`` and renames it; a kill in
        # between leaves the partial beside the hierarchy, and zarr warns while listing.
        warnings.filterwarnings("ignore", message=r".*\.partial is not recognized")
        return _open_run(Path(path))


def _open_run(path: Path) -> StoredRun:
    import xarray as xr

    root, attrs = _root_attrs(path)
    config = Config.from_dict(_from_json(attrs["config"]))
    committed = attrs.get("committed")
    laid_out = committed is not None        # None: killed while the store was being laid out
    # A store killed while being laid out can hold a group's folder before its
    # metadata: list groups only once the layout was committed.
    groups = sorted(root.group_keys()) if laid_out else []
    levels = {int(name[6:]): _open_group(root, path, name, "time", committed.get(name, 0))
              for name in groups if laid_out and name.startswith("level_")}
    if laid_out:
        events = _open_group(root, path, "events", "event", committed.get("events", 0))
    else:
        events = xr.Dataset({name: ("event", np.zeros(0, dtype)) for name, dtype in _EVENT_FIELDS.items()},
                            attrs={"kinds": list(KINDS)})
    kinds = np.asarray(events.attrs.get("kinds", KINDS), dtype=object)
    events = events.assign(kind=("event", kinds[events["kind"].values.astype(int)]))
    sensory = _open_group(root, path, "sensory", "frame", committed.get("sensory", 0)) \
        if laid_out and "sensory" in groups else None
    notes = None
    if laid_out and "annotations" in groups:
        notes = xr.open_zarr(str(path), group="annotations", consolidated=False).load()
        names = np.asarray(notes.attrs.get("kinds", []), dtype=object)
        notes = notes.assign(kind=("annotation", names[notes["kind"].values.astype(int)]))
    return StoredRun(path=path, attrs=attrs, config=config, levels=levels, events=events, sensory=sensory,
                     annotations=notes)


def has_tree(run: StoredRun) -> bool:
    """Whether the store holds the tree over time (a run configured to grow)."""
    return bool(run.levels) and all("alive" in ds for ds in run.levels.values())


def tree_at(run: StoredRun, t: float) -> dict[int, list[dict]]:
    """The tree as it stood after the last tick at or before ``t`` (seconds).

    Returns ``{level: [{"slot", "id", "parent_id"}, ...]}`` of the alive blocks;
    levels the monitor left out are missing.

    Raises:
        StoreError: the run was not configured to grow (it stores no tree).
    """
    _require_tree(run)
    out = {}
    for k, ds in sorted(run.levels.items()):
        i = int(np.searchsorted(ds["time"].values, t + 1e-9 * max(1.0, abs(t)), side="right")) - 1
        if i < 0:
            continue
        alive = ds["alive"].values[i]
        ids, parents = ds["block_id"].values[i], ds["parent_id"].values[i]
        out[k] = [{"slot": int(s), "id": int(ids[s]), "parent_id": int(parents[s])}
                  for s in np.flatnonzero(alive)]
    return out


def lineage(run: StoredRun) -> list[dict]:
    """Every block that lived in the run: ``id, level, parent_id, born, died``.

    ``born`` is the birth time the store keeps; ``died`` the time of the first
    tick that no longer shows the block (``None``: alive at the end, or at the
    last committed tick); ``parent_id`` is the parent at birth.
    """
    _require_tree(run)
    rows = []
    for k, ds in sorted(run.levels.items()):
        time = ds["time"].values
        alive = ds["alive"].values
        ids, parents, born = ds["block_id"].values, ds["parent_id"].values, ds["born"].values
        seen: dict[int, dict] = {}
        live_ids = np.where(alive, ids, -1)
        # Only ticks where the level's tree changed can add or end a block.
        changed = np.flatnonzero(np.r_[True, np.any(live_ids[1:] != live_ids[:-1], axis=1)]) \
            if len(time) else []
        for i in changed:
            now = set()
            for s in np.flatnonzero(alive[i]):
                bid = int(ids[i, s])
                now.add(bid)
                if bid not in seen:
                    seen[bid] = {"id": bid, "level": k, "parent_id": int(parents[i, s]),
                                 "born": float(born[i, s]), "died": None}
            for bid, row in seen.items():
                if row["died"] is None and bid not in now:
                    row["died"] = float(time[i])
        rows += sorted(seen.values(), key=lambda r: r["id"])
    return rows


def _require_tree(run: StoredRun) -> None:
    if not has_tree(run):
        raise StoreError(f"{str(run.path)!r} stores no tree over time: the run was not configured to "
                         "grow (set capacity, mitosis_threshold or apoptosis_epsilon)")


def stored_run_attrs(path) -> dict:
    """A store's root attributes (config as a :class:`Config`); raises ``StoreError`` if not a run."""
    _, attrs = _root_attrs(Path(path))
    return {**attrs, "config": Config.from_dict(_from_json(attrs["config"]))}


def _root_attrs(path: Path):
    import zarr

    if not (path / "zarr.json").is_file():
        raise StoreError(f"no Zarr store at {str(path)!r}")
    try:
        root = zarr.open_group(store=str(path), mode="r")
        attrs = dict(root.attrs).get("rtnclock")
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise StoreError(f"cannot read store {str(path)!r}: {err}") from err
    if not attrs or "config" not in attrs:
        raise StoreError(f"{str(path)!r} is a Zarr store but not an rtnclock run")
    return root, attrs


def _open_group(root, path: Path, name: str, dim: str, rows: int):
    """One group as a dataset of its first ``rows`` along ``dim`` (lazy where it can be).

    A run killed inside a flush can leave arrays of a group at different
    lengths, which ``xarray.open_zarr`` refuses; then the committed rows are
    read array by array.
    """
    import xarray as xr

    try:
        return xr.open_zarr(str(path), group=name, consolidated=False).isel({dim: slice(0, rows)})
    except ValueError:
        group = root[name]
        variables = {}
        for key, arr in group.arrays():
            dims = tuple(arr.metadata.dimension_names)
            data = arr[:rows] if dims and dims[0] == dim else arr[:]
            variables[key] = xr.Variable(dims, data, attrs=dict(arr.attrs))
        coords = {k: v for k, v in variables.items() if v.dims == (k,)}
        data_vars = {k: v for k, v in variables.items() if k not in coords}
        return xr.Dataset(data_vars, coords=coords, attrs=dict(group.attrs))


def disk_usage(path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks, as ``du``: raw
    chunk files are made at full length but sparse, so their length overstates them)."""
    total = 0
    for f in Path(path).rglob("*"):
        if f.is_file():
            st = f.stat()
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def info(path) -> str:
    """A text summary of a stored run (what ``rtnclock info RUN`` prints)."""
    run = open_run(path)
    cfg, a = run.config, run.attrs
    lines = [f"{run.path}: rtnclock {a.get('version')} (schema {a.get('schema_version')}), "
             f"scenario {a.get('scenario')}, seed {a.get('seed')}, mode {a.get('mode')}, "
             + ("finished" if run.finished else "NOT finished (killed or failed; data to its last flush)")]
    ends = [float(ds["time"][-1]) for ds in run.levels.values() if ds.sizes["time"]]
    lines.append(f"duration {max(ends) if ends else 0:g} s; {cfg.n_levels} levels (K={cfg.K}, "
                 f"b={cfg.branching}), periods {'/'.join(f'{p:g}' for p in cfg.resolved('periods'))} s")
    header = ["level", "ticks", "gate open", "cost", "full cost", "sparsity", "escalated ticks"]
    rows, cost, full = [], 0.0, 0.0
    for k, ds in run.levels.items():
        c, f = float(ds["cost"].sum()), float(ds["full_cost"].sum())
        cost, full = cost + c, full + f
        esc = int(ds["escalated"].sum())
        rows.append([str(k), str(ds.sizes["time"]), f"{float(ds['open_fraction'].mean()) if ds.sizes['time'] else 0:.3f}",
                     f"{c:.4g}", f"{f:.4g}", f"{1 - c / f if f else 0:.3f}", str(esc)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    every = {ds.attrs.get("every", 1) for ds in run.levels.values()}
    note = "" if every == {1} else f" (recorded every {every.pop()}-th tick)"
    lines.append(f"cost {cost:.4g} of {full:.4g} units recorded{note}: sparsity {1 - cost / full if full else 0:.3f}")
    kinds = run.events["kind"].values
    counts = {k: int((kinds == k).sum()) for k in KINDS if (kinds == k).any()}
    lines.append("events: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    if has_tree(run) and ends:
        first, last = tree_at(run, 0.0), tree_at(run, max(ends))
        lines.append(f"tree: {'/'.join(str(len(first.get(k, []))) for k in sorted(run.levels))} blocks "
                     f"per level at the start, {'/'.join(str(len(last.get(k, []))) for k in sorted(run.levels))}"
                     f" at the end ({len(lineage(run))} blocks lived)")
    if run.annotations is not None and run.annotations.sizes.get("annotation"):
        notes = Counter(run.annotations["kind"].values.tolist())
        lines.append("annotations: " + ", ".join(f"{k} {v}" for k, v in sorted(notes.items())))
    size = disk_usage(run.path)
    lines.append(f"size on disk {size / 2**20:.2f} MiB")
    return "\n".join(lines)
