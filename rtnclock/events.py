"""The event log: frames, gate openings and closings, escalations, wake-ups, growth.

Events are rows ``(n, t, kind, level, block, stream)`` appended in bulk from
boolean masks, so logging a whole level's gate changes is one ``nonzero``.
``n`` is the integer leaf-tick count (exact); ``t = n * Delta_0`` in seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

# New kinds go at the end: stores keep kinds as codes into this tuple.
KINDS = ("frame", "bad_frame", "gate_open", "gate_close", "escalation", "wake", "mitosis", "apoptosis")
_KIND_SET = frozenset(KINDS)


@dataclass(frozen=True)
class Event:
    """One logged event (``level``/``block``/``stream`` are -1 where not applicable)."""

    n: int
    t: float
    kind: str
    level: int = -1
    block: int = -1
    stream: int = -1


class EventLog:
    """Append-only list of :class:`Event`, in the order they happened."""

    def __init__(self, base_period: float):
        self.base_period = base_period
        self._rows: list[Event] = []

    def log(self, n: int, kind: str, *, level: int = -1, block: int = -1, stream: int = -1,
            t: float | None = None) -> None:
        """Append one event (``t`` defaults to ``n * Delta_0``); ``kind`` is one of :data:`KINDS`."""
        if kind not in _KIND_SET:
            raise ValueError(f"event kind {kind!r} is not one of {KINDS}")
        self._rows.append(Event(n, n * self.base_period if t is None else t, kind, level, block, stream))

    def log_mask(self, n: int, kind: str, level: int, mask: torch.Tensor) -> None:
        """One event per true entry of ``mask`` ``[B, n_k]`` (stream, block)."""
        if kind not in _KIND_SET:
            raise ValueError(f"event kind {kind!r} is not one of {KINDS}")
        if not bool(mask.any()):
            return
        t = n * self.base_period
        for b, i in mask.nonzero().tolist():
            self._rows.append(Event(n, t, kind, level, i, b))

    def extend(self, events) -> None:
        """Append already-made :class:`Event` rows (a resumed run's past)."""
        self._rows.extend(events)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self):
        return iter(self._rows)

    def since(self, start: int) -> list[Event]:
        """The events from the ``start``-th on (what a store has not yet written)."""
        return self._rows[start:]

    def select(self, kinds=None, level: int | None = None) -> list[Event]:
        """Events of some kinds (and optionally one level), in order."""
        return [e for e in self._rows
                if (kinds is None or e.kind in kinds) and (level is None or e.level == level)]

    def counts(self) -> Counter:
        """Number of events per ``(kind, level)``."""
        return Counter((e.kind, e.level) for e in self._rows)
