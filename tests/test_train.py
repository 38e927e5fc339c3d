"""RTN as a training module: exact gradients, penalties by hand count, batches, and a loss that falls."""

import math

import pytest
import torch
from torch.func import functional_call

from rtnclock.train import RTN, cost_penalty, gate_penalty
from tests.problems import test_config


def _cfg(**kw):
    # Biases that leave some gates of each lower level shut and some open.
    base = dict(K=2, branching=2, ratio=2.0, gate_bias=(-3.0, -1.0, 2.0), method="rk4", memory_size=2)
    base.update(kw)
    return test_config(**base)


def _frames(cfg, batch, n_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_frames, cfg.blocks(0), cfg.input_dim, generator=g, dtype=torch.float64)


def test_gradients_match_finite_differences():
    """float64 gradcheck of readout and both penalties against a few parameter tensors."""
    cfg = _cfg()
    rtn = RTN(cfg, 3)
    x = _frames(cfg, 2, 12)
    names = ["model.gates.1.bias", "model.gates.0.a", "model.levels.0.W_u", "model.priors.0.P", "readout.bias"]
    base = dict(rtn.named_parameters())

    def f(*tensors):
        out = functional_call(rtn, {n: t for n, t in zip(names, tensors)}, (x,), strict=False)
        return torch.cat([out.readout.reshape(-1), gate_penalty(out).reshape(1), cost_penalty(out, 0.5).reshape(1)])

    inputs = tuple(base[n].detach().clone().requires_grad_(True) for n in names)
    rtn.eval()                                  # hard gates: the exact gradient of what runs
    out = rtn(x)
    assert 0 < out.sparsity < 1                             # some gates closed: the decisions stay put
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_soft_gates_reach_closed_gates_and_keep_the_hard_output():
    """Training's straight-through gates: a level whose gates are shut throughout gets a gradient
    (hard gates give none), while the output weight keeps its hard value (0)."""
    cfg = _cfg(gate_bias=(-6.0, 2.0, 2.0), gate_a=(0.0, 8.0, 8.0))     # the leaves' gates never open
    x = _frames(cfg, 2, 16)
    grads, outs = {}, {}
    for train in (False, True):
        rtn = RTN(cfg, 3).train(train)
        out = rtn(x)
        assert max(out.gate_open[0], 0.0) == 0.0
        loss = out.readout.square().sum()
        loss.backward()
        grads[train] = float(rtn.model.gates[0].bias.grad.abs())
        outs[train] = out
    assert grads[False] == 0.0 and grads[True] > 1e-8
    assert outs[True].sparsity < outs[False].sparsity          # training computes every fine path


def _readout_input(rtn, x):
    """The features the readout read in one forward pass, and that pass's output."""
    seen = []
    hook = rtn.readout.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    out = rtn(x)
    hook.remove()
    return seen[0], out


def test_the_readout_reads_the_leaves_last_output():
    """The last ``n_0 d_0`` features are ``y = (1 - g) x + g a`` at the run's last tick: a leaf with its
    gate shut gives its state, one asleep (its parent's gate shut) gives zero, and an open leaf
    differs from its state by exactly ``g (a - x)``."""
    cfg = _cfg(gate_bias=(-6.0, -3.0, 2.0), gate_a=(0.0, 8.0, 8.0))     # leaves shut; some parents shut
    x = _frames(cfg, 2, 12)
    n0, d0 = cfg.blocks(0), cfg.resolved("dims")[0]
    rtn = RTN(cfg, 3).eval()
    with torch.no_grad():
        feats, out = _readout_input(rtn, x)
    last = feats[:, -n0 * d0:].reshape(2, n0, d0)
    st = out.run.state.levels[0]
    awake = st.awake_now()
    assert bool(awake.any()) and not bool(awake.all())                  # both kinds present
    torch.testing.assert_close(last[awake], st.h[awake], rtol=0, atol=0)
    assert torch.all(last[~awake] == 0)
    assert rtn.readout.in_features == feats.shape[1]

    cfg = _cfg(gate_mode=("open", "open", "open"))                      # every leaf attends, g = 1
    rtn = RTN(cfg, 3).eval()
    with torch.no_grad():
        feats, out = _readout_input(rtn, x)
    st = out.run.state.levels[0]
    last = feats[:, -n0 * d0:].reshape(2, n0, d0)
    torch.testing.assert_close(last, st.attn, rtol=0, atol=1e-12)       # y = a where g = 1
    assert float((last - st.h).abs().max()) > 1e-3                      # not the state


def test_training_forward_is_evaluations_forward():
    """Soft gates change gradients only: the readout, gates, events and cost of a training
    forward equal evaluation's on the same input, and the soft cost of each stream is
    the share of full execution that evaluation executes on it (1 - its sparsity)."""
    cfg = _cfg()
    x = _frames(cfg, 3, 16)
    rtn = RTN(cfg, 3)
    train = rtn.train()(x)
    with torch.no_grad():
        ev = rtn.eval()(x)
        alone = [1 - rtn(x[b:b + 1]).sparsity for b in range(3)]
    assert 0.2 < min(alone) < max(alone) < 0.9                  # gates open and shut, unevenly
    torch.testing.assert_close(train.readout, ev.readout, rtol=0, atol=1e-12)
    torch.testing.assert_close(train.gate_mean, ev.gate_mean, rtol=0, atol=1e-12)
    assert [(e.n, e.kind, e.level, e.block) for e in train.run.events] == \
        [(e.n, e.kind, e.level, e.block) for e in ev.run.events]
    torch.testing.assert_close(train.soft_cost, torch.tensor(alone, dtype=torch.float64), rtol=1e-12, atol=0)
    for mode, expected in (("open", 1.0), ("closed", None)):
        out = RTN(_cfg(gate_mode=mode), 2)(x)
        full = [tot["full"] for tot in out.run.state.totals.values()]
        expected = expected or full[-1] / sum(full)                 # shut: the root alone runs
        torch.testing.assert_close(out.soft_cost, torch.full((3,), expected, dtype=torch.float64),
                                   rtol=1e-12, atol=0)


@pytest.mark.parametrize("level", [0, 1])
def test_soft_cost_charges_each_gate_what_it_switches_on(level):
    """The soft cost's gradient reaches a gate through everything it switches on. Gates
    made constant (``a = 0``, a forced-open parent: no path through the states) give a
    hand count: d cost / d b_g = g (1 - g) times what the gate's block-ticks switch on: a
    leaf's tick, its attention over the next window; a level-1 block's, its two leaves'
    block-ticks over the window it opens."""
    modes = ("free", "open", "open") if level == 0 else ("closed", "free", "open")
    cfg = _cfg(gate_mode=modes, gate_a=0.0, gate_bias=0.5)
    B, frames = 2, 16
    rtn = RTN(cfg, 2)
    out = rtn(_frames(cfg, B, frames))
    head = rtn.model.gates[level]
    g = float(torch.sigmoid(head.beta + head.bias).detach())         # the demand above is 1
    (grad,) = torch.autograd.grad(out.soft_cost.sum(), head.bias)
    model, n_leaf_ticks = rtn.model, frames - 1
    full_per_stream = sum(t["full"] for t in out.run.state.totals.values()) / B
    # Leaf ticks 1..end each charge a window: its leaves' attention (tick 0's is not
    # charged), or the leaves' block-ticks (two per level-1 block) it closes.
    per_tick = model.attention_cost(cfg.blocks(0)) if level == 0 else 2 * model.block_cost(0)
    expected = B * cfg.blocks(level) * n_leaf_ticks * per_tick
    assert float(grad) == pytest.approx(expected * g * (1 - g) / full_per_stream, rel=1e-12)


def test_a_shut_gate_learns_from_the_features_of_the_subtree_it_puts_to_sleep():
    """With soft gates the readout weighs a sleeping block by its awake value (0) straight-through:
    a level-1 gate shut throughout gets a gradient from its sleeping leaves' readout columns alone;
    with hard gates (evaluation) it gets none."""
    cfg = _cfg(gate_mode=("free", "free", "open"), gate_a=(4.0, 0.0, 0.0), gate_bias=(2.0, -3.0, 0.0))
    x = _frames(cfg, 2, 12)
    n0, d0 = cfg.blocks(0), cfg.resolved("dims")[0]
    grads = {}
    for train in (True, False):
        rtn = RTN(cfg, 2).train(train)
        with torch.no_grad():                      # the readout reads the leaves' two feature blocks only
            keep = torch.zeros_like(rtn.readout.weight)
            keep[:, :n0 * d0] = 1
            keep[:, -n0 * d0:] = 1
            rtn.readout.weight.mul_(keep)
        out = rtn(x)
        assert out.gate_open[1] == 0.0 and out.gate_open[0] == 0.0       # the leaves never wake
        (grads[train],) = torch.autograd.grad(out.readout.sum(), rtn.model.gates[1].bias)
    assert float(grads[False]) == 0.0 and abs(float(grads[True])) > 1e-6


def test_gate_penalty_weights_levels():
    cfg = _cfg()
    with torch.no_grad():
        out = RTN(cfg, 2)(_frames(cfg, 3, 16))
    per_level = out.gate_mean.mean(-1)
    assert float(gate_penalty(out)) == pytest.approx(float(per_level[0] + 2 * per_level[1] + 4 * per_level[2]))
    assert float(gate_penalty(out, [1.0, 0.0, 0.0])) == pytest.approx(float(per_level[0]))
    with pytest.raises(ValueError, match="one per level"):
        gate_penalty(out, [1.0, 2.0])


def test_a_batch_equals_single_streams():
    cfg = _cfg()
    rtn = RTN(cfg, 4)
    x = _frames(cfg, 3, 16)
    with torch.no_grad():
        batch = rtn(x)
        for b in range(3):
            one = rtn(x[b:b + 1])
            torch.testing.assert_close(one.readout[0], batch.readout[b], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(one.gate_mean[:, 0], batch.gate_mean[:, b], rtol=1e-10, atol=1e-12)


def test_a_fixed_seed_training_run_lowers_the_loss():
    """Two classes told apart by when a pulse arrives: Adam on a fixed seed lowers the loss, the same way twice."""
    cfg = _cfg(dtype="float32", rtol=1e-4, atol=1e-6)
    n = cfg.blocks(0)
    x = torch.zeros(8, 24, n, cfg.input_dim)
    y = torch.arange(8) % 2
    for i in range(8):
        start = 3 if y[i] == 0 else 14
        x[i, start:start + 4] = 1.0 + 0.1 * i
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        rtn = RTN(cfg, 2)
        opt = torch.optim.Adam(rtn.parameters(), lr=0.05)
        run = []
        for _ in range(12):
            out = rtn(x)
            loss = torch.nn.functional.cross_entropy(out.readout, y) + cost_penalty(out, 0.01)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(float(loss.detach()))
        losses.append(run)
    assert losses[0] == losses[1]                              # same seed, same run
    assert losses[0][-1] < 0.5 * losses[0][0]


def test_adjoint_gradients_converge_to_direct_backprop_at_the_solvers_order():
    """The adjoint differentiates the exact flow, direct backprop the RK4 steps: they
    differ by the solver's error, which falls as h^4 when the step shrinks."""
    gaps = []
    steps = (0.005, 0.0025, 0.00125)
    for step in steps:
        cfg = _cfg(step_size=step)
        x = _frames(cfg, 2, 8)
        flat = []
        for adjoint in (False, True):
            rtn = RTN(cfg, 3, adjoint=adjoint)
            out = rtn(x)
            (out.readout.square().sum() + cost_penalty(out, 0.5)).backward()
            flat.append(torch.cat([p.grad.reshape(-1) for p in rtn.parameters() if p.grad is not None]))
        assert flat[0].shape == flat[1].shape
        gaps.append(float((flat[0] - flat[1]).norm() / flat[0].norm()))
    order = math.log2(gaps[0] / gaps[1]), math.log2(gaps[1] / gaps[2])
    assert all(3.5 < o < 5.0 for o in order), (gaps, order)
    assert gaps[-1] < 1e-5
