"""Command line: ``rtnclock run SCENARIO``, ``info RUN``, ``plot RUN``, ``train``, ``eval`` and ``scenarios``.

``run`` builds the scenario's default config (changed by ``--config FILE``,
then ``--set key=value``), streams its input chunk by chunk into the
simulation (writing a Zarr store with ``--out``), shows a progress line and
prints a per-level summary with the wall time and the real-time factor
(simulated seconds per wall second).  Any
:class:`~rtnclock.errors.RtnclockError` ends the command with one line
``rtnclock: error: <message>`` on stderr and exit status 2 (argparse's own
usage errors also exit 2); warnings (clipped input) are one line each,
``rtnclock: warning: <message>``.

torch runs on one intra-op thread unless ``--threads`` says otherwise: the
tensors are tiny, and on a 2-core machine with another busy process a second
thread made a 10 s ``audio_stream`` run take 19 s instead of 1.1 s (each small
op waits for the sleeping worker to be scheduled).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
import time
import tomllib
import warnings
from pathlib import Path

import torch

from .errors import ConfigError, RtnclockError
from .simulate import open_share, simulate

#: Modes offered on the command line (``stepwise`` is a test reference, API only).
CLI_MODES = ("multiclock", "lockstep", "continuous")
_COLUMNS = (("level", "level"), ("blocks", "blocks"), ("period", "period s"), ("ticks", "ticks"),
            ("gate_open", "gate open %"), ("escalations", "escalations"), ("gate_opens", "gate opens"),
            ("solver_calls", "solver calls"), ("nfe", "vf evals"), ("cost", "cost"),
            ("sparsity", "sparsity"))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 on an rtnclock error)."""
    args = _parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        if args.command == "scenarios":
            return _list_scenarios()
        if args.command == "info":
            from .runs import info
            print(info(args.run))
            return 0
        if args.command == "plot":
            return _plot(args)
        if args.command in ("train", "eval"):
            from . import trainer
            torch.set_num_threads(args.threads)
            return trainer.train_command(args) if args.command == "train" else trainer.eval_command(args)
        if args.threads < 1:
            raise ConfigError("--threads", args.threads, "an integer >= 1")
        torch.set_num_threads(args.threads)
        return _run(args)
    except RtnclockError as err:
        message = " ".join(str(err).split())          # one line, whatever the message holds
        print(f"rtnclock: error: {message}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)                # main() may be called in-process (tests)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtnclock", description="Event-driven, multi-clock simulator of Recursive Thermodynamic "
                                     "Networks: run a scenario, list the scenarios.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("scenarios", help="list the scenarios", description="List the scenarios.")
    info = sub.add_parser("info", help="summarise a stored run",
                          description="Print a stored run's duration, levels, ticks, gate-open rates, "
                                      "cost and sparsity, event counts and size on disk.")
    info.add_argument("run", metavar="RUN", help="a store written by `rtnclock run --out RUN`")
    plot = sub.add_parser("plot", help="draw a stored run's clock-coupling plots",
                          description="Draw a stored run's plots (headless) into a directory: clock raster "
                                      "over the input, level traces, cross-frequency coupling, gates, cost, "
                                      "effective rank; for a training run directory, its gate-open rate per "
                                      "step and test metrics per epoch (training.png in it).")
    plot.add_argument("run", metavar="RUN", help="a store written by `rtnclock run --out RUN`, or a training "
                                                 "run directory (`rtnclock train --out DIR`)")
    plot.add_argument("--kind", default="all", choices=("all", "raster", "traces", "coupling", "gates", "cost",
                                                        "rank", "topology"),
                      help="which plot (default all; topology: a growing run's tree over time)")
    plot.add_argument("--out", metavar="DIR", default=None, help="directory for the images (default RUN_plots "
                                                                 "beside the store)")
    plot.add_argument("--start", type=float, default=None, metavar="S", help="first second to draw")
    plot.add_argument("--end", type=float, default=None, metavar="S", help="last second to draw")
    plot.add_argument("--format", default="png", choices=("png", "svg", "pdf"), help="image format (default png)")
    plot.add_argument("--stream", type=int, default=0, metavar="B", help="which stream of a batch (default 0)")
    train = sub.add_parser("train", help="train an RTN on a scenario's data",
                           description="Train an RTN (the multi-clock simulation plus a readout) on a "
                                       "scenario's training data; print and keep per-epoch metrics and "
                                       "a checkpoint in the run directory.")
    train.add_argument("scenario", metavar="SCENARIO", nargs="?", default=None,
                       help="a scenario with training data (pixel_digits); not with --resume")
    train.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs (default 5)")
    train.add_argument("--batch-size", type=int, default=64, metavar="N", help="streams per step (default 64)")
    train.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    train.add_argument("--penalty", default="cost",
                       help="cost: lam x the executed share of full compute cost (default); gate: lam x "
                            "sum_l 2^l mean gate; leaf: lam x the leaves' mean gate (their attention); none")
    train.add_argument("--lam", type=float, default=0.01, help="the penalty's weight (default 0.01)")
    train.add_argument("--limit", type=int, default=None, metavar="N",
                       help="use at most N training and N test examples")
    train.add_argument("--seed", type=int, default=0, metavar="N", help="weights and shuffling (default 0)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="changes",
                       help="change a config field (repeatable)")
    train.add_argument("--out", metavar="DIR", default="runs/train", help="run directory (default runs/train)")
    train.add_argument("--resume", action="store_true", help="continue the training in --out (--epochs may raise "
                                                            "its epoch count)")
    train.add_argument("--overwrite", action="store_true", help="replace a training run already in --out")
    train.add_argument("--adjoint", action="store_true",
                       help="gradients by torchdiffeq's adjoint (less memory, slower) instead of through the "
                            "solver's steps")
    train.add_argument("--quiet", action="store_true", help="no progress line during an epoch")
    train.add_argument("--threads", type=int, default=1, metavar="N", help="torch intra-op threads (default 1)")
    ev = sub.add_parser("eval", help="evaluate a trained checkpoint",
                        description="Accuracy, sparsity and gate-open fraction per level of a checkpoint "
                                    "written by `rtnclock train`, on its scenario's test split.")
    ev.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint.pt or its run directory")
    ev.add_argument("--split", choices=("test", "train"), default="test", help="which split (default test)")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="at most N examples")
    ev.add_argument("--threads", type=int, default=1, metavar="N", help="torch intra-op threads (default 1)")
    run = sub.add_parser("run", help="simulate a scenario and print a summary",
                         description="Simulate a scenario and print a per-level summary.")
    run.add_argument("scenario", metavar="SCENARIO",
                     help="a name from `rtnclock scenarios`, or a path to your own scenario module (.py)")
    run.add_argument("--duration", type=float, default=None, metavar="S",
                     help="simulated seconds (default: the scenario's, or the whole --input file)")
    run.add_argument("--input", metavar="FILE", default=None,
                     help="stream this file instead of the synthetic scene (audio_stream: a WAV file, any "
                          "sample rate, mono or multichannel, 8/16/24/32-bit PCM or 32/64-bit float)")
    run.add_argument("--nan-policy", choices=("error", "zero"), default="error",
                     help="non-finite input: stop with an error naming the frame (default), or zero it "
                          "and log a bad_frame event")
    run.add_argument("--seed", type=int, default=0, metavar="N",
                     help="seed of the scenario's stream (the model's is --set seed=N); default 0")
    run.add_argument("--batch", type=int, default=1, metavar="B", help="independent streams; default 1")
    run.add_argument("--config", metavar="FILE", default=None,
                     help="config fields from a TOML or JSON file (a table of KEY = VALUE), applied before --set")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="changes",
                     help="change a config field (repeatable); VALUE is a Python literal "
                          "(1e-4, (4, 20, 150), None) or else a string")
    run.add_argument("--device", default=None, metavar="cpu|cuda",
                     help="where the model runs (default: the config's, cpu); same as --set device=...")
    run.add_argument("--out", metavar="RUN.zarr", default=None,
                     help="write the trajectories, events and input to this Zarr store")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out store")
    run.add_argument("--resume", action="store_true",
                     help="continue the killed run in --out from its last checkpoint (its stored "
                          "config, seed, duration and batch are used)")
    run.add_argument("--mode", choices=CLI_MODES, default="multiclock",
                     help="scheduler (default multiclock)")
    run.add_argument("--threads", type=int, default=1, metavar="N",
                     help="torch intra-op threads (default 1: the tensors are small, and extra "
                          "threads only add wake-up latency, badly so on a loaded CPU)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def _plot(args) -> int:
    """Write the asked-for plots of a stored run; prints each file written."""
    from .runs import has_tree, open_run
    from .viz import GROWTH_KINDS, KINDS, PLOTS

    if (Path(args.run) / "metrics.jsonl").is_file():          # a training run directory
        from .viz.training import plot_training
        out = Path(args.out) if args.out else Path(args.run)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"training.{args.format}"
        plot_training(args.run).savefig(path, dpi=110)
        print(path)
        return 0
    run = open_run(args.run)
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise ConfigError("--end", args.end, f"a time after --start {args.start:g}")
    batch = next((ds.sizes["batch"] for ds in run.levels.values()), 1)
    if not 0 <= args.stream < batch:
        raise ConfigError("--stream", args.stream, f"a stream index 0..{batch - 1}")
    out = Path(args.out) if args.out else run.path.with_name(run.path.stem + "_plots")
    out.mkdir(parents=True, exist_ok=True)
    kinds = KINDS + (GROWTH_KINDS if has_tree(run) else ()) if args.kind == "all" else (args.kind,)
    for kind in kinds:
        kwargs = dict(start=args.start, end=args.end)
        if kind in ("raster", "traces", "coupling"):
            kwargs["stream"] = args.stream
        fig = PLOTS[kind](run, **kwargs)
        path = out / f"{kind}.{args.format}"
        fig.savefig(path, dpi=110)
        print(path)
    return 0


def _list_scenarios() -> int:
    from . import scenarios

    width = max(len(name) for name in scenarios.names())
    for name in scenarios.names():
        print(f"{name:<{width}}  {scenarios.get(name).DESCRIPTION}")
    return 0


def parse_changes(items: list[str]) -> dict:
    """``["key=value", ...]`` to a dict; values by ``ast.literal_eval``, else kept as strings.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    changes = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", item, "KEY=VALUE with KEY a config field")
        try:
            changes[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            changes[key] = text.strip()
    return changes


def read_config_file(path) -> dict:
    """Config fields from a TOML (``.toml``) or JSON file: one table of ``KEY = VALUE``.

    Lists become tuples (per-level fields such as ``gate_a``).

    Raises:
        ConfigError: the file is missing, not TOML/JSON, malformed or not one table.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError("--config", str(path), f"a readable TOML or JSON file ({err.strerror})") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        elif path.suffix == ".toml":
            values = tomllib.loads(text)
        else:
            raise ConfigError("--config", str(path), "a file ending .toml or .json")
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError("--config", str(path), f"valid {path.suffix[1:].upper()} ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError("--config", str(path), "one table of config fields")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _run(args: argparse.Namespace) -> int:
    from . import scenarios

    start = time.perf_counter()
    scenario = scenarios.get(args.scenario)
    changes = parse_changes(args.changes)
    if args.resume:
        config, duration = _resumed_args(args, changes)
    else:
        config = scenario.default_config()
        if args.config is not None:
            changes = {**read_config_file(args.config), **changes}
        if args.device is not None:
            changes["device"] = args.device
        if changes:
            config = config.replace(**changes)
        duration = args.duration
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", config.device, "cpu (no CUDA device is available here)")
    stream = _make_stream(scenario, args, config, duration)
    duration = stream.duration if duration is None else duration
    recorder = None
    if args.out is not None:
        from .store import ZarrRecorder
        recorder = ZarrRecorder(args.out, overwrite=args.overwrite, resume=args.resume, scenario=args.scenario,
                                seed=args.seed, mode=args.mode, duration=duration, batch=args.batch,
                                input=args.input, nan_policy=args.nan_policy)
    elif args.overwrite:
        raise ConfigError("--overwrite", True, "only together with --out RUN.zarr")
    _print_header(args, config, duration, changes)
    progress = None if args.quiet else Progress(config, duration)
    try:
        run = simulate(config, stream, mode=args.mode, duration=duration, recorder=recorder, progress=progress)
    finally:
        if progress is not None:
            progress.end()
    total = time.perf_counter() - start
    _print_table(run)
    cost, full = run.cost()
    rtf = run.duration / run.wall_seconds if run.wall_seconds > 0 else float("inf")
    print(f"cost {_si(cost)} of {_si(full)} units: sparsity {run.sparsity:.3f}")
    print(f"wall {run.wall_seconds:.2f} s simulating ({run.stats.solve_seconds:.2f} s in the solver), "
          f"{total:.2f} s in all; real-time factor {rtf:.2f}x "
          f"({run.duration:g} simulated s / {run.wall_seconds:.2f} wall s)")
    if recorder is not None:
        print(f"store {args.out}: {recorder.bytes_written / 2**20:.2f} MiB of trajectories; the run spent "
              f"{recorder.seconds:.2f} s recording (its writer thread {recorder.write_seconds:.2f} s, beside it); "
              f"`rtnclock info {args.out}` summarises it")
    return 0


def _make_stream(scenario, args, config, duration):
    """The scenario's stream; its warnings (clipped input) become one line each on stderr."""
    kwargs = dict(duration=duration, seed=args.seed, batch=args.batch)
    accepted = inspect.signature(scenario.make_stream).parameters
    for option, key, value in (("--input", "input", args.input), ("--nan-policy", "nan_policy", args.nan_policy)):
        if key in accepted:
            kwargs[key] = value
        elif value not in (None, "error"):
            raise ConfigError(option, value, f"not for scenario {args.scenario} (its make_stream has no {key!r})")
    if kwargs["duration"] is None and "input" not in kwargs:
        kwargs["duration"] = scenario.DEFAULT_DURATION
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = scenario.make_stream(config, **kwargs)
    for w in caught:
        print(f"rtnclock: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    return stream


class Progress:
    """One status line on stderr: simulated and wall time, real-time factor, gate-open share.

    Redrawn in place about five times a second on a terminal; elsewhere (logs,
    CI) a line every ten seconds of wall time.
    """

    def __init__(self, config, duration: float, stream=sys.stderr):
        self.duration, self.out = duration, stream
        self.levels = config.n_levels
        self.tty = stream.isatty()
        self.every = 0.2 if self.tty else 10.0
        self.began = self.last = time.perf_counter()
        self.drawn = False

    def __call__(self, t: float, state) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        wall = now - self.began
        opened = "/".join(f"{100 * open_share(state.totals[k]):.0f}"
                          for k in range(self.levels))
        width = 24
        done = min(t / self.duration, 1.0) if self.duration > 0 else 1.0
        bar = "#" * int(done * width) + "-" * (width - int(done * width))
        line = (f"[{bar}] {t:.2f}/{self.duration:g} s simulated, {wall:.1f} s wall, "
                f"{t / wall if wall > 0 else 0:.1f}x real time, gates open {opened} % (levels 0..)")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.out, flush=True)
        self.drawn = True

    def end(self) -> None:
        """Finish the line (a terminal's cursor goes to the next line)."""
        if self.tty and self.drawn:
            print(file=self.out, flush=True)


def _resumed_args(args, changes: dict):
    """Config and duration of the run stored in ``--out``; sets seed, batch, mode and input on ``args``."""
    from .runs import stored_run_attrs

    if args.out is None:
        raise ConfigError("--resume", True, "only together with --out RUN.zarr (the killed run's store)")
    if args.overwrite or changes or args.duration is not None or args.config is not None \
            or args.input is not None or args.device is not None:
        raise ConfigError("--resume", True, "without --overwrite, --set, --config, --device, --input or "
                                            "--duration (the stored run's are used)")
    attrs = stored_run_attrs(args.out)
    if attrs.get("scenario") != args.scenario:
        raise ConfigError("scenario", args.scenario, f"{attrs.get('scenario')!r}, the stored run's")
    args.seed, args.batch, args.mode = attrs["seed"], attrs.get("batch", 1), attrs.get("mode", "multiclock")
    args.input, args.nan_policy = attrs.get("input"), attrs.get("nan_policy", "error")
    return attrs["config"], attrs["duration"]


def _print_header(args, config, duration: float, changes: dict) -> None:
    blocks = "/".join(str(config.blocks(k)) for k in range(config.n_levels))
    periods = "/".join(f"{p:g}" for p in config.resolved("periods"))
    print(f"scenario {args.scenario}: {duration:g} s, seed {args.seed}, batch {args.batch}, "
          f"mode {args.mode}, {args.threads} torch thread{'s' if args.threads > 1 else ''}")
    print(f"hierarchy: {config.blocks(0)} leaves x {config.input_dim} channels, "
          f"{config.n_levels} levels (K={config.K}, b={config.branching}; blocks {blocks}; "
          f"periods {periods} s), {config.method} rtol={config.rtol:g} atol={config.atol:g}")
    if changes:
        print("set: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
    sys.stdout.flush()


def _print_table(run) -> None:
    periods = run.config.resolved("periods")
    rows = []
    for row in run.summary():
        k = row["level"]
        top = run.state.topology
        # A growing tree: blocks at the start -> at the end.
        blocks = str(run.config.blocks(k)) if run.config.fixed_tree else f"{run.config.blocks(k)}->{top.n_alive[k]}"
        rows.append({**row, "blocks": blocks, "period": f"{periods[k]:g}",
                     "cost": _si(row["cost"]), "sparsity": f"{row['sparsity']:.3f}",
                     "gate_open": f"{100 * row['gate_open']:.1f}"})
    header = [title for _, title in _COLUMNS]
    cells = [[str(r[key]) for key, _ in _COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def _si(x: float) -> str:
    """``1234567 -> '1.23M'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


if __name__ == "__main__":
    sys.exit(main())
