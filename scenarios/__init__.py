"""Scenario registry: one module per scenario, looked up by name or loaded from a file.

A scenario module exports ``DESCRIPTION`` (one line), ``DEFAULT_DURATION``
(seconds), ``default_config() -> rtnclock.Config`` and ``make_stream(config, *,
duration, seed, batch) -> rtnclock.Stream`` (frames made chunk by chunk, see
:mod:`.common`; ``make_stream`` may take more keywords, e.g. ``input``).
A scenario with a task also defines ``targets(config, *, duration, seed,
batch) -> Tensor [B, F, ...]`` (per-frame targets for training; ``needle``'s
are the needle positions).
This registry is all ``rtnclock run NAME`` reads; ``rtnclock run path/to/mine.py``
loads a user's module of the same shape.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import rtnclock

from . import audio_stream, mqar, needle, pixel_digits, visual_stream

SCENARIOS: dict[str, ModuleType] = {
    "audio_stream": audio_stream,
    "mqar": mqar,
    "needle": needle,
    "pixel_digits": pixel_digits,
    "visual_stream": visual_stream,
}
#: What a scenario module must define.
REQUIRED = ("DESCRIPTION", "DEFAULT_DURATION", "default_config", "make_stream")


def names() -> list[str]:
    """Registered scenario names, sorted."""
    return sorted(SCENARIOS)


def get(name: str) -> ModuleType:
    """The scenario registered as ``name``, or the module in the file ``name`` (ending ``.py``).

    Raises:
        rtnclock.ConfigError: ``name`` is not registered (the message lists the
            names), or the file is missing, fails to import or lacks a required name.
    """
    if isinstance(name, str) and name.endswith(".py"):
        return _load(Path(name))
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        raise rtnclock.ConfigError("scenario", name,
                                   "one of " + ", ".join(names()) + ", or a path to a scenario .py file") from None


def _load(path: Path) -> ModuleType:
    if not path.is_file():
        raise rtnclock.ConfigError("scenario", str(path), "an existing scenario .py file")
    if path.resolve().parent == Path(__file__).resolve().parent and path.stem in SCENARIOS:
        return SCENARIOS[path.stem]                # a built-in one, given by its file (relative imports)
    module_name = f"rtnclock_user_scenario_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module              # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise rtnclock.ConfigError("scenario", str(path), f"a module that imports ({type(err).__name__}: {err})") \
            from err
    missing = [n for n in REQUIRED if not hasattr(module, n)]
    if missing:
        raise rtnclock.ConfigError("scenario", str(path), "a module defining " + ", ".join(REQUIRED)
                                   + f" (missing {', '.join(missing)})")
    return module


__all__ = ["REQUIRED", "SCENARIOS", "get", "names"]
