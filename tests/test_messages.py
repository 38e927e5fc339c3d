"""Coarse-up is the exact window average; user level modules plug in unchanged."""

import math

import pytest
import torch
from torch import nn

from rtnclock import ConfigError, RTNModel, Stream, simulate
from tests.problems import smooth_stream, test_config


class SineLevel(nn.Module):
    """A user level whose state is ``sin(w t + p_i)`` whatever its inputs."""

    def __init__(self, dim, tau, period, omega):
        super().__init__()
        self.dim, self.tau, self.period, self.omega = dim, tau, period, omega
        self.phase = torch.linspace(0, 1, dim, dtype=torch.float64)

    def inputs(self, up, down):
        return None

    def vector_field(self, t, h, inputs):
        return self.omega * torch.cos(self.omega * t + self.phase).expand_as(h)


def _sine_integral(omega, phase, a, b):
    return (torch.cos(omega * a + phase) - torch.cos(omega * b + phase)) / omega


@pytest.mark.parametrize("ratio", [4.0, 5.0])
def test_coarse_up_is_exact_window_average_of_child_output(ratio):
    omega = 2 * math.pi * 7.0            # several oscillations per parent window: a sample would alias
    cfg = test_config(K=1, branching=3, ratio=ratio, gate_mode=("closed", "open"), memory_size=0)
    model = RTNModel(cfg)
    taus, periods = cfg.resolved("taus"), cfg.resolved("periods")
    sine = SineLevel(cfg.resolved("dims")[0], taus[0], periods[0], omega)
    model = RTNModel(cfg, levels=[sine, model.levels[1]])
    end = 3 * cfg.resolved("period_ticks")[1] + 1           # last window is 1 leaf tick long
    duration = end * cfg.base_period
    stream = smooth_stream(cfg, duration)
    run = simulate(cfg, stream, model=model)
    # Leaves start at 0 = sin(p) - sin(p) shifted: their state is sin(w t + p) - sin(p).
    a, b = (end - 1) * cfg.base_period, end * cfg.base_period
    mean = _sine_integral(omega, sine.phase, a, b) / (b - a) - torch.sin(sine.phase)
    up = run.state.levels[1].up                              # [B, 1, d_0]: pooled over 3 leaves
    torch.testing.assert_close(up[0, 0], mean, atol=1e-8, rtol=0)
    # Sampling the child at the tick instead would be off by far more.
    sample = torch.sin(omega * b + sine.phase) - torch.sin(sine.phase)
    assert float((sample - mean).abs().max()) > 1e-3


def test_coarse_up_over_a_full_parent_window():
    omega = 2 * math.pi * 3.0
    cfg = test_config(K=1, branching=2, ratio=4.0, gate_mode=("closed", "open"))
    base = RTNModel(cfg)
    sine = SineLevel(cfg.resolved("dims")[0], cfg.resolved("taus")[0], cfg.base_period, omega)
    model = RTNModel(cfg, levels=[sine, base.levels[1]])
    run = simulate(cfg, smooth_stream(cfg, 0.08), model=model)   # root ticks at 0, 4, 8
    a, b = 0.04, 0.08
    mean = _sine_integral(omega, sine.phase, a, b) / (b - a) - torch.sin(sine.phase)
    torch.testing.assert_close(run.state.levels[1].up[0, 0], mean, atol=1e-8, rtol=0)


def test_user_level_without_vector_field_is_rejected():
    cfg = test_config(K=0)
    with pytest.raises(ConfigError, match=r"levels\[0\].*missing tau, period, inputs, vector_field"):
        RTNModel(cfg, levels=[nn.Linear(2, 2)])


def test_stream_shape_must_match_config():
    cfg = test_config(K=1, branching=2)
    with pytest.raises(Exception, match="feeds 3 leaves; the config has b\\*\\*K = 2"):
        simulate(cfg, Stream(torch.zeros(1, 5, 3, cfg.input_dim), 0.01))
