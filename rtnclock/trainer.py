"""Training loop, metrics and checkpoints behind ``rtnclock train`` and ``rtnclock eval``.

A scenario can be trained on when it also defines ``N_CLASSES`` and
``dataset(config, split) -> (frames [N, F, leaves, channels], labels [N])``
(``split``: "train" or "test").  A run directory holds ``metrics.jsonl`` (one
line per epoch) and ``checkpoint.pt`` (model, optimizer, epoch, options, the
resolved config, RNG state), rewritten after every epoch through a temporary
file, so ``--resume`` continues from the last whole epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import Config
from .errors import ConfigError
from .train import RTN, cost_penalty, gate_penalty

#: What a scenario needs besides the run interface to be trained on.
TRAINING = ("N_CLASSES", "dataset")
PENALTIES = ("cost", "gate", "none")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass
class TrainOptions:
    """How to train (the ``rtnclock train`` options).

    Attributes:
        epochs, batch_size, lr: Adam on minibatches of streams.
        penalty: ``cost`` (``lam * soft cost``), ``gate`` (``lam * sum_l 2**l mean g_l``) or ``none``.
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
        log=print, scenario: str | None = None) -> list[dict]:
    """Train ``rtn`` and evaluate it on ``test`` after every epoch.

    Args:
        train, test: ``(frames, labels)``.
        options: the :class:`TrainOptions`.
        out_dir: where ``metrics.jsonl`` and ``checkpoint.pt`` go (None: nowhere).
        state: a loaded checkpoint to continue from (``--resume``).
        log: called with each epoch's metrics line.
        scenario: its name, kept in the checkpoint (``rtnclock eval`` reloads its test split).

    Returns:
        One metrics dict per epoch (all epochs, resumed ones included).
    """
    options.check()
    opt = torch.optim.Adam(rtn.parameters(), lr=options.lr)
    history, first = [], 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        history, first = list(state["history"]), state["epoch"]
    x, y = train
    for epoch in range(first, options.epochs):
        began = time.perf_counter()
        rtn.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(options.seed * 1000 + epoch))
        total, seen = 0.0, 0
        for i in range(0, len(y), options.batch_size):
            idx = order[i:i + options.batch_size]
            out = rtn(x[idx])
            loss = loss_of(out, y[idx], options)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        metrics = dict(epoch=epoch + 1, train_loss=total / seen, **{
            f"test_{k}" if k in ("accuracy", "loss") else k: v
            for k, v in evaluate(rtn, *test, options.batch_size).items()}, seconds=time.perf_counter() - began)
        history.append(metrics)
        log(metrics)
        if out_dir is not None:
            _save(Path(out_dir), rtn, opt, epoch + 1, options, history, scenario)
    return history


def _save(out_dir: Path, rtn: RTN, opt, epoch: int, options: TrainOptions, history: list, scenario) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / METRICS, "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    ckpt = dict(config=rtn.config.to_dict(), out_dim=rtn.out_dim, mode=rtn.mode, model=rtn.state_dict(),
                optimizer=opt.state_dict(), epoch=epoch, options=asdict(options), history=history,
                scenario=scenario)
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
        rtn = RTN(Config.from_dict(ckpt["config"]), ckpt["out_dim"], mode=ckpt["mode"])
        rtn.load_state_dict(ckpt["model"])
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
        rtn = RTN(config, scenario.N_CLASSES)
    options.check()
    train, test = (_limited(scenario.dataset(config, split), options.limit) for split in ("train", "test"))
    print(f"train {name}: {len(train[1])} training and {len(test[1])} test examples, {options.epochs} epochs "
          f"of batch {options.batch_size}, lr {options.lr:g}, penalty {options.penalty} (lam {options.lam:g}); "
          f"{sum(p.numel() for p in rtn.parameters())} parameters; run directory {out}")

    def line(m):
        opened = " ".join(f"{100 * g:.1f}%" for g in m["gate_open"])
        print(f"epoch {m['epoch']}: train loss {m['train_loss']:.4f}, test acc {100 * m['test_accuracy']:.2f}%, "
              f"sparsity {100 * m['sparsity']:.2f}%, gate open {opened} ({m['seconds']:.1f} s)", flush=True)

    history = fit(rtn, train, test, options, out_dir=out, state=state, log=line, scenario=name)
    print(table(history))
    return 0


def eval_command(args) -> int:
    """``rtnclock eval CHECKPOINT``: accuracy, sparsity and gate-open per level on the test split."""
    from . import scenarios

    rtn, ckpt = load(args.checkpoint)
    scenario = scenarios.get(ckpt["scenario"])
    frames, labels = _limited(scenario.dataset(rtn.config, args.split), args.limit)
    m = evaluate(rtn, frames, labels, ckpt["options"]["batch_size"])
    print(f"{ckpt['scenario']} after {ckpt['epoch']} epochs, {len(labels)} {args.split} examples")
    head = ["accuracy", "loss", "sparsity"] + [f"gate open L{k}" for k in range(len(m["gate_open"]))]
    cells = [f"{100 * m['accuracy']:.2f}%", f"{m['loss']:.4f}", f"{100 * m['sparsity']:.2f}%"] + \
        [f"{100 * g:.1f}%" for g in m["gate_open"]]
    print("| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|\n| " + " | ".join(cells) + " |")
    return 0


def _limited(data: tuple, limit: int | None) -> tuple:
    """At most ``limit`` examples, a fixed random subset (data sets may be sorted by class)."""
    if limit is None or limit >= len(data[1]):
        return data
    keep = torch.randperm(len(data[1]), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return data[0][keep], data[1][keep]
