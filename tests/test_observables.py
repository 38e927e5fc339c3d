"""Observables: effective rank against constructed spectra, F = U - tau S, event counts."""

import math

import pytest
import torch

from rtnclock import MemoryRecorder, simulate
from rtnclock.observables import effective_rank
from tests.problems import smooth_stream, test_config


def test_effective_rank_of_equal_singular_values_is_their_count():
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    for r in (1, 3, 7):
        x = q[:, :r] @ torch.eye(r, dtype=torch.float64) @ q[:r, :]        # r singular values of 1
        assert float(effective_rank(x)) == pytest.approx(r, rel=1e-9)
    assert float(effective_rank(torch.zeros(4, 3, dtype=torch.float64))) == 0.0


def test_effective_rank_of_two_unequal_values_matches_formula():
    x = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert float(effective_rank(x)) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-9)


def test_run_observables_are_consistent():
    cfg = test_config(gate_mode="free", gate_bias=(0.0, 0.0, 1.0), memory_size=3, free_energy_tau=0.5)
    rec = MemoryRecorder()
    run = simulate(cfg, smooth_stream(cfg, 0.16, batch=2), recorder=rec)
    for k in range(cfg.n_levels):
        obs = run.observables(k)
        torch.testing.assert_close(obs["F"], obs["U"] - 0.5 * obs["S"])
        assert bool((obs["open_fraction"] >= 0).all() & (obs["open_fraction"] <= 1).all())
        rows = cfg.blocks(k) * 2
        assert bool((obs["effective_rank"] <= min(rows, cfg.resolved("dims")[k]) + 1e-9).all())
    # Frames are logged once each: 0.16 s of a 5 ms stream is 33 frames.
    assert len(run.events.select({"frame"})) == 33
