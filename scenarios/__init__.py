"""Scenario registry: one module per scenario, looked up by name.

A scenario module exports ``DESCRIPTION`` (one line), ``DEFAULT_DURATION``
(seconds), ``default_config() -> rtnclock.Config`` and ``make_stream(config, *,
duration, seed, batch) -> rtnclock.Stream``.  This registry is all ``rtnclock
run NAME`` reads.
"""

from __future__ import annotations

from types import ModuleType

import rtnclock

from . import audio_stream

SCENARIOS: dict[str, ModuleType] = {
    "audio_stream": audio_stream,
}


def names() -> list[str]:
    """Registered scenario names, sorted."""
    return sorted(SCENARIOS)


def get(name: str) -> ModuleType:
    """The scenario module registered as ``name``.

    Raises:
        rtnclock.ConfigError: ``name`` is not registered (the message lists the names).
    """
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        raise rtnclock.ConfigError("scenario", name, "one of " + ", ".join(names())) from None


__all__ = ["SCENARIOS", "get", "names"]
