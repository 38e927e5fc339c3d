"""mqar: multi-query associative recall (seed 002, Fig. 4), one token per 10 ms frame.

Task.  A sequence shows ``n_pairs`` key-value pairs (a key token, then its
value token), then ``n_queries`` query keys, each a key stored earlier, then
``n_blank`` blank frames.  Its label is the value bound to the *last* query
key: rtnclock's RTN has one readout per stream, so a sequence is one
classification example, and the earlier queries are distractors that make the
model hold several bindings at once.  Keys are drawn without replacement from
``n_keys``, values with replacement from ``n_values`` (the classes), and the
queried pairs without replacement from the stored ones.  Seed 002 shows
recurrent state-space models losing this task as sequences grow, and
attention over the full past keeping it; here the leaves' geometric core
attends over a ring buffer of their own past (``memory_size``).

Draws.  :func:`sequences` draws sequence after sequence from one
``torch.Generator().manual_seed(seed)`` (keys, then values, then queries), so
the first ``n`` sequences of a longer draw are the ``n`` of a shorter one and
``--limit`` keeps a prefix-stable subset.  :data:`SPLIT_SEEDS` fix the train
and test sets.

Frames.  Token ``t`` (keys ``0 .. n_keys - 1``, values ``n_keys .. n_keys +
n_values - 1``) is a one-hot over the first ``n_keys + n_values`` channels,
and every leaf sees the whole token (like every head of an attention layer);
a query frame also sets the query marker, channel ``n_keys + n_values``, so a
key being asked for differs from a key being stored.  Channels past the
marker stay zero; blank frames (token :data:`BLANK`) are zero.

Why every leaf sees the whole token: a leaf can bind a key to its value only
if both reach its state.  Frames are interpolated linearly, so the leaf tick
between a key frame and its value frame holds both, and the ring buffer
remembers the pair; a query key later finds it by attention.  With tokens
split over the leaves (tried first, leaf-major like ``pixel_digits``) a key
and its value mostly fell on different leaves, and recall stayed at the 56%
of guessing one of two values shown (2 pairs).

Why :data:`DEFAULT_BLANK` is one frame: ``rtnclock.RTN`` reads the leaves'
output at the last tick, which is where the retrieval for the last query
lands; that tick's window must have seen the whole query frame.  With four
blank frames the query must be held in the leaves' state until the end, and
training was slower (69% after 10 epochs against 81%, 2 pairs).

Stream.  :func:`make_stream` shows sequences back to back (each with its
blank tail); stream ``b`` shows ``sequences(..., seed=seed + b)``, so a short
stream is the start of a longer one.  Every sequence start is annotated (kind
``sequence``) and every query frame (kind ``query``); numeric columns
``label`` (a sequence's label; a query's bound value), ``key`` (the queried
key; a sequence's last query key) and ``sequence`` (its index in the stream).
"""

from __future__ import annotations

import math

import torch

import rtnclock

from . import common

DESCRIPTION = ("multi-query associative recall: key-value pairs then query keys, one one-hot token per 10 ms "
               "frame shown to 4 leaves; the label is the value of the last query")

#: Seconds per frame: one token.
FRAME_SECONDS = 0.01
FRAME_RATE = 1.0 / FRAME_SECONDS
#: Seconds of the default stream (``rtnclock run`` reads it).
DEFAULT_DURATION = 10.0
#: Key and value vocabularies; the values are the classes (``rtnclock train`` reads ``N_CLASSES``).
N_KEYS = 8
N_VALUES = 8
N_CLASSES = N_VALUES
#: Pairs, queries and trailing blank frames of a default sequence.
DEFAULT_PAIRS = 8
DEFAULT_QUERIES = 4
DEFAULT_BLANK = 1
#: Sequences in the train and test sets, and their fixed seeds.
TRAIN_SIZE = 2048
TEST_SIZE = 512
SPLIT_SEEDS = {"train": 0, "test": 1}
#: Token of a blank frame.
BLANK = -1

_SIZES = {"train": TRAIN_SIZE, "test": TEST_SIZE}


# ---- data --------------------------------------------------------------------

def sequence_length(n_pairs: int, n_queries: int, n_blank: int = 0) -> int:
    """Frames of one sequence: ``2 * n_pairs + n_queries + n_blank``."""
    return 2 * n_pairs + n_queries + n_blank


def sequences(n: int, *, n_pairs: int, n_queries: int, n_keys: int = N_KEYS, n_values: int = N_VALUES,
              seed: int, n_blank: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` MQAR sequences, drawn from ``torch.Generator().manual_seed(seed)`` alone.

    Sequence ``i`` is ``k_1 v_1 ... k_p v_p q_1 ... q_m`` then ``n_blank``
    blanks, with ``v_j`` as token ``n_keys + v_j``; its label is the value
    bound to ``q_m``.  Each sequence draws its keys (without replacement),
    values (with replacement) and queried pairs (without replacement) in turn,
    so a shorter draw is a prefix of a longer one.

    Returns:
        ``(tokens, query, labels)``: int64 ``[n, L]`` tokens (:data:`BLANK` on
        blank frames), int64 ``[n, L]`` query marker (1 on query frames) and
        int64 ``[n]`` labels in ``[0, n_values)``; ``L = sequence_length(...)``.

    Raises:
        rtnclock.ConfigError: a count out of range, ``n_pairs > n_keys`` or
            ``n_queries > n_pairs`` (named by the field).
    """
    _check_counts(n=n, n_pairs=n_pairs, n_queries=n_queries, n_keys=n_keys, n_values=n_values, seed=seed,
                  n_blank=n_blank)
    gen = torch.Generator().manual_seed(seed)
    L = sequence_length(n_pairs, n_queries, n_blank)
    tokens = torch.full((n, L), BLANK, dtype=torch.int64)
    query = torch.zeros(n, L, dtype=torch.int64)
    labels = torch.empty(n, dtype=torch.int64)
    stored, asked = 2 * n_pairs, 2 * n_pairs + n_queries
    for i in range(n):
        keys = torch.randperm(n_keys, generator=gen)[:n_pairs]                   # [p], distinct
        values = torch.randint(n_values, (n_pairs,), generator=gen)              # [p]
        picked = torch.randperm(n_pairs, generator=gen)[:n_queries]              # [m], distinct pairs
        tokens[i, 0:stored:2] = keys
        tokens[i, 1:stored:2] = n_keys + values
        tokens[i, stored:asked] = keys[picked]
        query[i, stored:asked] = 1
        labels[i] = values[picked[-1]]
    return tokens, query, labels


def channels(n_keys: int = N_KEYS, n_values: int = N_VALUES) -> int:
    """Leaf channels a token layout needs: one per key and value, plus the query marker."""
    return n_keys + n_values + 1


def to_frames(tokens: torch.Tensor, query: torch.Tensor, n_leaves: int, input_dim: int, *,
              n_keys: int = N_KEYS, n_values: int = N_VALUES) -> torch.Tensor:
    """Tokens ``[N, L]`` and query marker ``[N, L]`` as one-hot frames ``[N, L, n_leaves, input_dim]``.

    Token ``t`` sets channel ``t`` of every leaf; a query frame also sets
    channel ``n_keys + n_values``; a :data:`BLANK` frame is all zero.  float32.

    Raises:
        rtnclock.ConfigError: ``tokens`` not ``[N, L]``, ``query`` of another
            shape, a token outside ``[BLANK, n_keys + n_values)``, ``n_leaves``
            or ``input_dim`` not a positive integer, or ``input_dim`` under
            ``n_keys + n_values + 1`` channels.
    """
    tokens, query = torch.as_tensor(tokens), torch.as_tensor(query)
    if tokens.dim() != 2:
        raise rtnclock.ConfigError("tokens", tuple(tokens.shape), "a tensor [N, L]")
    if query.shape != tokens.shape:
        raise rtnclock.ConfigError("query", tuple(query.shape), f"a tensor of the tokens' shape {tuple(tokens.shape)}")
    _check_fits(channels(n_keys, n_values), n_leaves, input_dim)
    vocab = n_keys + n_values
    if tokens.numel() and not (BLANK <= int(tokens.min()) and int(tokens.max()) < vocab):
        raise rtnclock.ConfigError("tokens", (int(tokens.min()), int(tokens.max())),
                                   f"token ids in [{BLANK}, {vocab}) ({BLANK}: blank)")
    # One spare column takes the blanks' one-hot and is cut off again.
    onehot = torch.nn.functional.one_hot(tokens.where(tokens != BLANK, input_dim), input_dim + 1)[..., :input_dim]
    onehot[..., vocab] = (query != 0).to(onehot.dtype)                        # [N, L, c]
    return onehot.to(torch.float32).unsqueeze(2).expand(-1, -1, n_leaves, -1).contiguous()   # [N, L, n_leaves, c]


# ---- scenario interface ---------------------------------------------------------

def default_config(**overrides) -> rtnclock.Config:
    """A 3-level binary hierarchy (4 leaves), each leaf seeing the whole token.

    ``input_dim = 17``: the 8 keys, 8 values and the query marker.  The
    leaves tick every frame (``tau0`` and the base period are
    :data:`FRAME_SECONDS`), level 1 every 4, the root every 16
    (``ratio`` 4); RK4 with one step per frame, like the other scenarios.
    ``attention_temperature`` is 0.25 rather than ``sqrt(16) = 4``: the leaves'
    states are small (tanh-bounded and leaky), so at ``sqrt(d)`` attention
    starts nearly uniform and recall is learned about half as fast (lr 1e-2,
    one query: 4 pairs 89% after 12 epochs against 100% after 9 at 0.25; 8
    pairs 100% after 11 against 6).  At 0.1 it was slower again (2 pairs: 93%
    after 30 epochs against 100% after 24).
    Gates start open (``gate_bias`` 2), as in ``pixel_digits``: a closed gate
    is never taught to open.  ``memory_size`` holds a whole default sequence,
    blank tail included: recall attends from the query frames back to the
    key-value frames, and a ring buffer shorter than the sequence would have
    overwritten the first pairs by then.

    Args:
        overrides: any :class:`rtnclock.Config` fields, replacing these.

    Raises:
        rtnclock.ConfigError: an unknown or bad field, or leaves too narrow
            for the tokens (named ``input_dim``).
    """
    values = dict(K=2, branching=2, dims=16, input_dim=channels(), tau0=FRAME_SECONDS, ratio=4.0,
                  dtype="float32", method="rk4", step_size=FRAME_SECONDS, gate_bias=2.0, attention_temperature=0.25,
                  memory_size=sequence_length(DEFAULT_PAIRS, DEFAULT_QUERIES, DEFAULT_BLANK))
    config = rtnclock.Config.from_dict({**values, **overrides})
    _check_fits(channels(), config.blocks(0), config.input_dim)
    return config


def dataset(config: rtnclock.Config, split: str, *, n_pairs: int = DEFAULT_PAIRS, n_queries: int = DEFAULT_QUERIES,
            n_blank: int = DEFAULT_BLANK, n_keys: int = N_KEYS) -> tuple[torch.Tensor, torch.Tensor]:
    """Training data for ``rtnclock train``: a split's ``(frames [N, L, leaves, channels], labels [N])``.

    ``train`` is :data:`TRAIN_SIZE` sequences drawn with seed
    ``SPLIT_SEEDS["train"]``, ``test`` :data:`TEST_SIZE` with ``SPLIT_SEEDS["test"]``;
    values come from :data:`N_VALUES` (the readout's classes).  Frames are in
    ``config``'s dtype.

    Raises:
        rtnclock.ConfigError: an unknown ``split``, bad counts (see
            :func:`sequences`) or leaves too narrow for the tokens (named ``input_dim``).
    """
    if split not in _SIZES:
        raise rtnclock.ConfigError("split", split, "one of " + ", ".join(_SIZES))
    tokens, query, labels = sequences(_SIZES[split], n_pairs=n_pairs, n_queries=n_queries, n_keys=n_keys,
                                      seed=SPLIT_SEEDS[split], n_blank=n_blank)
    frames = to_frames(tokens, query, config.blocks(0), config.input_dim, n_keys=n_keys)
    return frames.to(getattr(torch, config.dtype)), labels


def make_stream(config: rtnclock.Config, *, duration: float | None = None, seed: int = 0, batch: int = 1,
                n_pairs: int = DEFAULT_PAIRS, n_queries: int = DEFAULT_QUERIES,
                n_blank: int = DEFAULT_BLANK) -> rtnclock.Stream:
    """MQAR sequences back to back, one token per frame, made chunk by chunk.

    Args:
        config: supplies ``b**K`` leaves, ``input_dim`` channels and the dtype.
        duration: seconds (``ceil(duration * 100) + 1`` frames; default
            :data:`DEFAULT_DURATION`).
        seed: stream ``b`` shows ``sequences(..., seed=seed + b)``.
        batch: independent streams ``B``.
        n_pairs, n_queries, n_blank: each sequence's pairs, queries and blank tail.

    Returns:
        A :class:`rtnclock.Stream` of ``[B, F, n_leaves, input_dim]`` frames,
        ``dt = FRAME_SECONDS``; sequence ``k`` of every stream starts at frame
        ``k * L``.  Annotated with each sequence start (kind ``sequence``) and
        query frame (kind ``query``), columns ``label``, ``key`` and
        ``sequence`` (see the module docstring).

    Raises:
        rtnclock.ConfigError: a bad duration, seed, batch or count, or leaves
            too narrow for the tokens (named ``input_dim``).
    """
    duration = DEFAULT_DURATION if duration is None else duration
    common.check_args(duration, seed, batch)
    n_leaves, c = config.blocks(0), config.input_dim
    _check_fits(channels(), n_leaves, c)
    n_frames = common.frame_count(duration, FRAME_RATE)
    period = sequence_length(n_pairs, n_queries, n_blank)
    count = math.ceil(n_frames / period)                      # sequences starting inside the stream
    drawn = [sequences(count, n_pairs=n_pairs, n_queries=n_queries, seed=seed + b, n_blank=n_blank)
             for b in range(batch)]
    tokens = torch.stack([d[0] for d in drawn]).flatten(1)    # [B, count * L]
    query = torch.stack([d[1] for d in drawn]).flatten(1)     # [B, count * L]

    def render(i0: int, i1: int) -> torch.Tensor:
        return to_frames(tokens[:, i0:i1], query[:, i0:i1], n_leaves, c)     # [B, f, n_leaves, c]

    table = _annotations(drawn, n_frames=n_frames, n_pairs=n_pairs)
    return common.chunked_stream(render, n_frames=n_frames, frame_rate=FRAME_RATE, config=config, batch=batch,
                                 name=f"mqar {n_pairs} pairs {n_queries} queries seed {seed}", annotations=table)


# ---- helpers ---------------------------------------------------------------------

def _check_counts(**counts) -> None:
    """Raise ``ConfigError`` naming the first count out of range."""
    lowest = dict(n=1, n_pairs=1, n_queries=1, n_keys=1, n_values=1, seed=0, n_blank=0)
    for field, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest[field]:
            raise rtnclock.ConfigError(field, value, f"an integer >= {lowest[field]}")
    if counts["n_pairs"] > counts["n_keys"]:
        raise rtnclock.ConfigError("n_pairs", counts["n_pairs"],
                                   f"at most n_keys = {counts['n_keys']} (keys are drawn without replacement)")
    if counts["n_queries"] > counts["n_pairs"]:
        raise rtnclock.ConfigError("n_queries", counts["n_queries"],
                                   f"at most n_pairs = {counts['n_pairs']} (each query asks for another pair)")


def _check_fits(width: int, n_leaves, input_dim) -> None:
    """Raise ``ConfigError`` unless every leaf has the ``width`` channels of a whole token."""
    common.check_layout(width, n_leaves, input_dim, f"the {width} token channels (keys, values and the query marker)",
                        every_leaf=True)


def _annotations(drawn: list, *, n_frames: int, n_pairs: int) -> dict:
    """Annotation columns of a stream's sequences ``drawn[b] = sequences(...)`` (starts and query frames)."""
    rows, label, key, index = [], [], [], []
    for b, (tokens, query, labels) in enumerate(drawn):
        period = tokens.shape[1]
        for k, (tok, q) in enumerate(zip(tokens.tolist(), query.tolist())):
            start = k * period
            bound = {tok[2 * j]: tok[2 * j + 1] - N_KEYS for j in range(n_pairs)}
            asked = [j for j in range(period) if q[j]]
            rows.append((start / FRAME_RATE, "sequence", b))
            label.append(int(labels[k]))
            key.append(tok[asked[-1]])
            index.append(k)
            for j in asked:
                if start + j < n_frames:              # a query past the stream's end is never shown
                    rows.append(((start + j) / FRAME_RATE, "query", b))
                    label.append(bound[tok[j]])
                    key.append(tok[j])
                    index.append(k)
    return common.annotation_table(rows, label=label, key=key, sequence=index)
