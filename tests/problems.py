"""Reference problems shared by the tests: smooth streams, closed forms, slope fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rtnclock import Config, Stream


def smooth_stream(config: Config, duration: float, *, batch: int = 1, dt: float = 0.005,
                  seed: int = 0) -> Stream:
    """Sums of a few slow sinusoids per leaf and channel: smooth, deterministic."""
    g = torch.Generator().manual_seed(seed)
    n_leaves, c = config.blocks(0), config.input_dim
    F = int(round(duration / dt)) + 1
    t = torch.arange(F, dtype=torch.float64) * dt
    freq = 1.0 + 4.0 * torch.rand(batch, 1, n_leaves, c, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(batch, 1, n_leaves, c, generator=g, dtype=torch.float64)
    amp = 0.5 + torch.rand(batch, 1, n_leaves, c, generator=g, dtype=torch.float64)
    frames = amp * torch.sin(2 * math.pi * freq * t[None, :, None, None] + phase)
    return Stream(frames, dt)


def pulse_stream(config: Config, duration: float, *, start: float, stop: float, height: float,
                 dt: float = 0.005) -> Stream:
    """``height`` on every leaf and channel for frames in ``[start, stop]``, zero elsewhere."""
    F = int(round(duration / dt)) + 1
    t = torch.arange(F, dtype=torch.float64) * dt
    on = (t >= start - 1e-12) & (t <= stop + 1e-12)
    frames = on.to(torch.float64)[None, :, None, None] * height
    return Stream(frames.expand(1, F, config.blocks(0), config.input_dim).clone(), dt)


def fit_order(steps, errors) -> float:
    """Slope of log(error) against log(step) by least squares."""
    return float(np.polyfit(np.log(np.asarray(steps)), np.log(np.asarray(errors)), 1)[0])


def test_config(**overrides) -> Config:
    """A small float64 tree with tight tolerances (the base of most tests)."""
    base = dict(K=2, branching=2, dims=6, input_dim=3, tau0=0.01, ratio=4.0, dtype="float64",
                rtol=1e-10, atol=1e-12, memory_size=0, escalation_threshold=None, seed=3)
    base.update(overrides)
    return Config(**base)


test_config.__test__ = False


def assert_same_run(got, want, atol: float) -> None:
    """Two runs of one config and input: the same events and cost, final states within ``atol``
    (``got``'s states may be on another device)."""
    def trace(run):
        return [(e.n, e.kind, e.level, e.stream, e.block) for e in run.events.select()]
    assert trace(got) == trace(want)
    assert got.cost() == pytest.approx(want.cost(), rel=1e-12)
    for k, (a, b) in enumerate(zip(got.final_states(), want.final_states())):
        torch.testing.assert_close(a.to(b.device), b, atol=atol, rtol=0, msg=f"level {k}")
