"""The simulation is differentiable: autograd through the solver matches finite differences."""

import pytest
import torch

from rtnclock import RTNModel, simulate
from tests.problems import smooth_stream, test_config

PARAMS = ["levels.0.W_h", "levels.1.W_u", "leaf.W_q", "gates.0.bias", "priors.0.P", "gates.1.R"]


@pytest.mark.parametrize("name", PARAMS)
def test_gradient_matches_central_differences(name):
    cfg = test_config(K=1, branching=2, gate_mode="free", gate_bias=(0.0, 1.0), memory_size=2,
                      method="rk4")                  # fixed grid: the loss is smooth in the weights
    stream = smooth_stream(cfg, 0.16)
    model = RTNModel(cfg)

    def loss():
        run = simulate(cfg, stream, model=model, grad=True)
        return sum(h.square().sum() for h in run.final_states()) + run.state.levels[1].up.sum()

    loss().backward()
    p = dict(model.named_parameters())[name]
    flat = p.detach().reshape(-1)
    i = int(p.grad.reshape(-1).abs().argmax())
    analytic = float(p.grad.reshape(-1)[i])
    eps = 1e-6
    with torch.no_grad():
        flat[i] += eps
        up = float(loss())
        flat[i] -= 2 * eps
        down = float(loss())
        flat[i] += eps
    assert abs(analytic) > 1e-4
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)
