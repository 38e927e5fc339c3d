"""The hybrid multi-clock system approaches the continuously coupled ODE."""


from rtnclock import simulate
from tests.problems import fit_order, smooth_stream, test_config


def test_multiclock_converges_to_continuous_solve_at_first_order():
    """Held messages are a zero-order hold: the deviation falls like the period."""
    base = test_config(K=2, branching=2, ratio=4.0, gate_mode="open", memory_size=0,
                       rtol=1e-8, atol=1e-10)
    duration = 0.32
    stream = smooth_stream(base, duration, dt=0.0025)
    ref = simulate(base, stream, mode="continuous")
    taus = base.resolved("taus")
    scales = [0.5, 0.25, 0.125]
    errors = []
    for s in scales:
        cfg = base.replace(taus=list(taus), periods=[t * s for t in taus])
        run = simulate(cfg, stream)
        errors.append(max(float((a - b).abs().max()) for a, b in zip(run.final_states(), ref.final_states())))
    assert errors[0] > errors[1] > errors[2]
    order = fit_order(scales, errors)
    assert 0.9 <= order <= 1.6, f"fitted order {order:.2f}"


def test_continuous_mode_records_every_leaf_tick_at_full_cost():
    cfg = test_config(K=1, branching=2, gate_mode="open", rtol=1e-6, atol=1e-8)
    run = simulate(cfg, smooth_stream(cfg, 0.04), mode="continuous")
    assert run.sparsity == 0.0
    assert run.stats.calls == {0: 1, 1: 1}
