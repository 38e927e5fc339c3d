"""Training loop, metrics and checkpoints behind ``rtnclock train`` and ``rtnclock eval``.

Data-parallel: launched by ``torchrun --nproc_per_node N -m rtnclock train ...``
each process joins a gloo process group, takes every N-th example of each
minibatch, and DDP averages the gradients; process 0 evaluates, logs and
writes the run directory.

A scenario can be trained on when it also defines ``N_CLASSES`` and
``dataset(config, split) -> (frames [N, F, leaves, channels], labels [N])``
(``split``: "train" or "test").  A run directory holds ``metrics.jsonl`` (one
line per epoch), ``steps.jsonl`` (loss and gate-open rate per level, one line
per training step) and ``checkpoint.pt`` (model, optimizer, epoch, options, the
resolved config, RNG state), rewritten after every epoch through a temporary
file, so ``--resume`` continues from the last whole epoch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .config import Config
from .errors import ConfigError
from .train import RTN, cost_penalty, gate_penalty

#: What a scenario needs besides the run interface to be trained on.
TRAINING = ("N_CLASSES", "dataset")
PENALTIES = ("cost", "gate", "leaf", "none")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"


@dataclass
class TrainOptions:
    """How to train (the ``rtnclock train`` options).

    Attributes:
        epochs, batch_size, lr: Adam on minibatches of streams.
        penalty: ``cost`` (``lam * soft cost``), ``gate`` (``lam * sum_l 2**l mean g_l``),
            ``leaf`` (``lam * mean g_0``: the leaf units' gates alone, seed 002) or ``none``.
        lam: the penalty's weight.
        limit: use at most this many training (and test) examples (``None``: all).
        seed: shuffling and initial weights.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    penalty: str = "cost"
    lam: float = 0.01
    limit: int | None = None
    seed: int = 0

    def check(self) -> "TrainOptions":
        """Raise ``ConfigError`` naming the first bad field; return self."""
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", v, "an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("--lr", self.lr, "a positive number")
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError("--lam", self.lam, "a number >= 0")
        if self.penalty not in PENALTIES:
            raise ConfigError("--penalty", self.penalty, "one of " + ", ".join(PENALTIES))
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ConfigError("--limit", self.limit, "an integer >= 1")
        return self


def loss_of(out, labels: torch.Tensor, options: TrainOptions) -> torch.Tensor:
    """Cross-entropy plus the chosen penalty."""
    loss = F.cross_entropy(out.readout, labels)
    if options.penalty == "cost":
        loss = loss + cost_penalty(out, options.lam)
    elif options.penalty == "gate":
        loss = loss + options.lam * gate_penalty(out)
    elif options.penalty == "leaf":
        levels = out.gate_mean.shape[0]
        loss = loss + options.lam * gate_penalty(out, [1.0] + [0.0] * (levels - 1))
    return loss


@torch.no_grad()
def evaluate(rtn: RTN, frames: torch.Tensor, labels: torch.Tensor, batch_size: int) -> dict:
    """Accuracy, mean cross-entropy, sparsity and per-level gate-open fraction (hard gates, as executed)."""
    rtn.eval()
    correct, loss, cost, full = 0, 0.0, 0.0, 0.0
    opened = None
    for i in range(0, len(labels), batch_size):
        x, y = frames[i:i + batch_size], labels[i:i + batch_size]
        out = rtn(x)
        correct += int((out.readout.argmax(-1) == y).sum())
        loss += float(F.cross_entropy(out.readout, y, reduction="sum"))
        c, f = out.run.cost()
        cost, full = cost + c, full + f
        share = torch.tensor(out.gate_open) * len(y)
        opened = share if opened is None else opened + share
    n = len(labels)
    return dict(accuracy=correct / n, loss=loss / n, sparsity=1 - cost / full if full else 0.0,
                gate_open=(opened / n).tolist())


def fit(rtn: RTN, train: tuple, test: tuple, options: TrainOptions, *, out_dir=None, state: dict | None = None,
        log=print, scenario: str | None = None, progress=None) -> list[dict]:
    """Train ``rtn`` and evaluate it on ``test`` after every epoch.

    Args:
        train, test: ``(frames, labels)``.
        options: the :class:`TrainOptions`.
        out_dir: where ``metrics.jsonl`` and ``checkpoint.pt`` go (None: nowhere).
        state: a loaded checkpoint to continue from (``--resume``).
        log: called with each epoch's metrics line.
        scenario: its name, kept in the checkpoint (``rtnclock eval`` reloads its test split).
        progress: called as ``progress(epoch, step, steps, loss)`` after every training step.

    Returns:
        One metrics dict per epoch (all epochs, resumed ones included).
    """
    options.check()
    rank, size = ranks()
    replica = replicate(rtn)
    opt = torch.optim.Adam(rtn.parameters(), lr=options.lr)
    history, steps, first = [], [], 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        history, first = list(state["history"]), state["epoch"]
        steps = list(state.get("steps", []))
    x, y = train
    for epoch in range(first, options.epochs):
        began = time.perf_counter()
        rtn.train()
        # Every process draws the same order and takes its share of each minibatch.
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(options.seed * 1000 + epoch))
        sums = torch.zeros(2, dtype=torch.float64)                  # loss x examples, examples
        for i in range(0, len(y), options.batch_size):
            idx = shard(order[i:i + options.batch_size], rank, size)
            if len(idx) == 0:
                continue
            loss = step_loss(replica, x[idx], y[idx], options)
            opt.zero_grad()
            loss.backward()                     # under DDP: gradients averaged over the processes
            opt.step()
            out = getattr(replica, "module", replica).out
            # The gate-open rate per step (seed 002's U-shape), this process's shard.
            steps.append(dict(step=len(steps) + 1, epoch=epoch + 1, loss=float(loss.detach()),
                              gate_open=out.gate_open))
            if rtn.growth is not None:          # a growing tree changes between steps
                changes = rtn.grow(out, opt, t=len(steps))
                steps[-1].update(blocks=list(rtn.topology.n_alive), changes=[list(c) for c in changes])
            if progress is not None and rank == 0:
                progress(epoch + 1, i // options.batch_size + 1, math.ceil(len(y) / options.batch_size),
                         steps[-1]["loss"])
            sums += torch.tensor([float(loss.detach()) * len(idx), len(idx)], dtype=torch.float64)
        if size > 1:
            dist.all_reduce(sums)
        if rank == 0:
            metrics = dict(epoch=epoch + 1, train_loss=float(sums[0] / sums[1]), **{
                f"test_{k}" if k in ("accuracy", "loss") else k: v
                for k, v in evaluate(rtn, *test, options.batch_size).items()},
                seconds=time.perf_counter() - began)
            history.append(metrics)
            log(metrics)
            if out_dir is not None:
                _save(Path(out_dir), rtn, opt, epoch + 1, options, history, steps, scenario)
        if size > 1:
            dist.barrier()                      # the others wait while process 0 evaluates and saves
    return history


def ranks() -> tuple[int, int]:
    """``(rank, world size)``; under ``torchrun`` (``WORLD_SIZE`` > 1) joins the gloo process group first."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    """Leave the process group, if joined, once every process got here.

    Exiting with the group alive lets gloo's threads be torn down mid-use (an
    occasional "terminate called without an active exception" abort).
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _Replica(nn.Module):
    """What DDP wraps: the RTN's forward returning only tensors (DDP walks its output);
    the whole :class:`~rtnclock.train.RTNOutput` is kept in ``out``."""

    def __init__(self, rtn: RTN):
        super().__init__()
        self.rtn, self.out = rtn, None

    def forward(self, frames):
        self.out = self.rtn(frames)
        return self.out.readout, self.out.gate_mean, self.out.soft_cost


def replicate(rtn: RTN) -> nn.Module:
    """``rtn`` ready for training steps: wrapped in DDP when several processes train it."""
    replica = _Replica(rtn)
    if ranks()[1] > 1:
        # Some parameters sit out some steps (a level's leaves all dormant, a
        # user module's branch), so DDP must look for them every step.
        replica = DistributedDataParallel(replica, find_unused_parameters=True)
    return replica


def shard(idx: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This process's share of a minibatch: every ``size``-th example from ``rank``.

    The remainder of a minibatch that does not split evenly is dropped, so all
    shards are equal and the averaged gradient is the whole minibatch's.
    """
    return idx[:len(idx) - len(idx) % size][rank::size] if size > 1 else idx


def step_loss(replica: nn.Module, frames: torch.Tensor, labels: torch.Tensor, options: TrainOptions):
    """Forward through ``replica`` (from :func:`replicate`) and the loss, ready for ``backward``."""
    readout, gate_mean, soft_cost = replica(frames)
    # The loss must be built from what DDP returned: its backward is what averages.
    out = replace(getattr(replica, "module", replica).out, readout=readout, gate_mean=gate_mean,
                  soft_cost=soft_cost)
    return loss_of(out, labels, options)


def _save(out_dir: Path, rtn: RTN, opt, epoch: int, options: TrainOptions, history: list, steps: list,
          scenario) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in ((METRICS, history), (STEPS, steps)):
        with open(out_dir / name, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    ckpt = dict(config=rtn.config.to_dict(), out_dim=rtn.out_dim, mode=rtn.mode, adjoint=rtn.adjoint,
                model=rtn.state_dict(), tree=rtn.tree_state(),
                optimizer=opt.state_dict(), epoch=epoch, options=asdict(options), history=history,
                steps=steps, scenario=scenario)
    partial = out_dir / (CHECKPOINT + ".partial")
    torch.save(ckpt, partial)
    os.replace(partial, out_dir / CHECKPOINT)          # a kill leaves the last whole epoch


def load(path) -> tuple[RTN, dict]:
    """The :class:`RTN` stored in a checkpoint (a file or a run directory) and the checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ConfigError("checkpoint", str(path), "a checkpoint.pt written by `rtnclock train`")
    try:
        ckpt = torch.load(path, weights_only=False)
        rtn = RTN(Config.from_dict(ckpt["config"]), ckpt["out_dim"], mode=ckpt["mode"],
                  adjoint=ckpt.get("adjoint", False))
        rtn.load_state_dict(ckpt["model"])
        if "tree" in ckpt:
            rtn.load_tree_state(ckpt["tree"])
    except (KeyError, RuntimeError, EOFError, ValueError) as err:
        raise ConfigError("checkpoint", str(path), f"a readable rtnclock checkpoint ({err})") from None
    return rtn, ckpt


def table(history: list[dict]) -> str:
    """The per-epoch metrics as a Markdown table (seed 000's columns, plus loss and time)."""
    levels = len(history[0]["gate_open"]) if history else 0
    head = ["epoch", "train loss", "test acc", "sparsity"] + [f"gate open L{k}" for k in range(levels)] + ["s"]
    rows = [[str(h["epoch"]), f"{h['train_loss']:.4f}", f"{100 * h['test_accuracy']:.2f}%",
             f"{100 * h['sparsity']:.2f}%"] + [f"{100 * g:.1f}%" for g in h["gate_open"]] + [f"{h['seconds']:.1f}"]
            for h in history]
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    fmt = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"   # noqa: E731
    return "\n".join([fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows])


def train_command(args) -> int:
    """``rtnclock train SCENARIO``: train, print a metrics line per epoch, then the table."""
    from . import scenarios
    from .cli import parse_changes

    out = Path(args.out)
    state = None
    if args.resume:
        rtn, state = load(out)
        options, name = TrainOptions(**state["options"]), state["scenario"]
        if args.changes:
            raise ConfigError("--set", args.changes, "nothing with --resume (the checkpoint's config is used)")
        options.epochs = args.epochs if args.epochs is not None else options.epochs
        scenario = scenarios.get(name)
        config = rtn.config
    else:
        if (out / CHECKPOINT).exists() and not args.overwrite:
            raise ConfigError("--out", str(out), "a directory without a checkpoint (or pass --resume / --overwrite)")
        name, scenario = args.scenario, scenarios.get(args.scenario)
        missing = [n for n in TRAINING if not hasattr(scenario, n)]
        if missing:
            raise ConfigError("scenario", name, "one with training data (defining " + ", ".join(TRAINING) + ")")
        options = TrainOptions(epochs=5 if args.epochs is None else args.epochs, batch_size=args.batch_size,
                               lr=args.lr, penalty=args.penalty, lam=args.lam, limit=args.limit,
                               seed=args.seed).check()
        config = scenario.default_config().replace(seed=options.seed, **parse_changes(args.changes))
        torch.manual_seed(options.seed)
        rtn = RTN(config, scenario.N_CLASSES, adjoint=args.adjoint)
    options.check()
    train, test = (limited(scenario.dataset(config, split), options.limit) for split in ("train", "test"))
    rank = ranks()[0]
    say = print if rank == 0 else (lambda *a, **k: None)            # one voice under torchrun
    say(f"train {name}: {len(train[1])} training and {len(test[1])} test examples, {options.epochs} epochs "
          f"of batch {options.batch_size}, lr {options.lr:g}, penalty {options.penalty} (lam {options.lam:g}); "
          f"{sum(p.numel() for p in rtn.parameters())} parameters; run directory {out}")

    def line(m):
        opened = " ".join(f"{100 * g:.1f}%" for g in m["gate_open"])
        print(f"epoch {m['epoch']}: train loss {m['train_loss']:.4f}, test acc {100 * m['test_accuracy']:.2f}%, "
              f"sparsity {100 * m['sparsity']:.2f}%, gate open {opened} ({m['seconds']:.1f} s)", flush=True)

    def bar(epoch, step, steps, loss):
        print(f"\repoch {epoch}: step {step}/{steps}, loss {loss:.4f}", end="", file=sys.stderr, flush=True)
        if step == steps:
            print("\r\033[K", end="", file=sys.stderr, flush=True)    # the epoch's line replaces it

    try:
        history = fit(rtn, train, test, options, out_dir=out, state=state, log=line, scenario=name,
                      progress=None if args.quiet or rank else bar)
    finally:
        finish()
    say(table(history))
    return 0


def eval_command(args) -> int:
    """``rtnclock eval CHECKPOINT``: accuracy, sparsity and gate-open per level on the test split."""
    from . import scenarios

    rtn, ckpt = load(args.checkpoint)
    scenario = scenarios.get(ckpt["scenario"])
    frames, labels = limited(scenario.dataset(rtn.config, args.split), args.limit)
    m = evaluate(rtn, frames, labels, ckpt["options"]["batch_size"])
    print(f"{ckpt['scenario']} after {ckpt['epoch']} epochs, {len(labels)} {args.split} examples")
    head = ["accuracy", "loss", "sparsity"] + [f"gate open L{k}" for k in range(len(m["gate_open"]))]
    cells = [f"{100 * m['accuracy']:.2f}%", f"{m['loss']:.4f}", f"{100 * m['sparsity']:.2f}%"] + \
        [f"{100 * g:.1f}%" for g in m["gate_open"]]
    print("| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|\n| " + " | ".join(cells) + " |")
    return 0


def limited(data: tuple, limit: int | None) -> tuple:
    """At most ``limit`` examples, a fixed random subset (data sets may be sorted by class)."""
    if limit is None or limit >= len(data[1]):
        return data
    keep = torch.randperm(len(data[1]), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return data[0][keep], data[1][keep]
