"""Every malformed config field raises ConfigError naming the field and what is allowed."""

import pytest

from rtnclock import Config, ConfigError, RtnclockError

BAD = [
    ("K", -1, "integer >= 0"),
    ("K", 1.5, "integer >= 0"),
    ("branching", 0, "integer >= 1"),
    ("dims", 0, "positive"),
    ("dims", [4, 4], "K+1 = 3"),
    ("input_dim", 0, "integer >= 1"),
    ("tau0", 0.0, "> 0"),
    ("tau0", float("nan"), "finite"),
    ("ratio", 0.5, ">= 1"),
    ("taus", [0.01, -1.0, 1.0], "positive"),
    ("periods", [0.01, 0.025, 0.1], "integer multiple"),
    ("method", "rk45", "'dopri5'"),
    ("rtol", 0, "> 0"),
    ("atol", -1e-9, "> 0"),
    ("step_size", 0.0, "> 0"),
    ("gate_a", "x", "float"),
    ("gate_beta", [1.0], "K+1 = 3"),
    ("gate_bias", float("inf"), "finite"),
    ("gate_theta", 1.0, "strictly between 0 and 1"),
    ("gate_mode", "half", "'free'"),
    ("escalation_threshold", -1.0, "> 0"),
    ("memory_size", -2, "integer >= 0"),
    ("attention_temperature", 0.0, "> 0"),
    ("activation", "relu", "'tanh'"),
    ("coarse", "mlp", "'linear'"),
    ("free_energy_tau", -0.1, ">= 0"),
    ("weight_gain", 0, "> 0"),
    ("capacity", 0.5, ">= 1"),
    ("mitosis_threshold", "high", "finite"),
    ("mitosis_window", 0.0, "> 0"),
    ("mitosis_noise", -0.1, ">= 0"),
    ("apoptosis_epsilon", 1.0, "strictly between 0 and 1"),
    ("apoptosis_epsilon", [0.1, None], "K+1 = 3"),
    ("apoptosis_window", -1.0, "> 0"),
    ("seed", -1, "integer >= 0"),
    ("device", "tpu", "'cpu'"),
    ("dtype", "float16", "'float32'"),
]


@pytest.mark.parametrize("field,value,allowed", BAD)
def test_bad_field_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({field: value})
    msg = str(err.value)
    assert err.value.field == field
    assert repr(field) in msg and allowed in msg
    assert isinstance(err.value, RtnclockError) and isinstance(err.value, ValueError)


def test_unknown_key_raises_and_lists_known_fields():
    with pytest.raises(ConfigError, match="'tau_0'.*known fields: K, branching"):
        Config.from_dict({"tau_0": 0.01})


def test_resolved_defaults_follow_tau0_ratio():
    c = Config(K=3, branching=2, tau0=0.002, ratio=10.0)
    assert c.resolved("taus") == pytest.approx((0.002, 0.02, 0.2, 2.0))
    assert c.resolved("periods") == pytest.approx(c.resolved("taus"))
    assert c.resolved("period_ticks") == (1, 10, 100, 1000)
    assert [c.blocks(k) for k in range(4)] == [8, 4, 2, 1]


def test_explicit_periods_and_round_trip():
    c = Config(K=1, branching=2, periods=[0.01, 0.03])
    assert c.resolved("period_ticks") == (1, 3)
    assert Config.from_dict(c.to_dict()) == c
    assert c.replace(seed=5).seed == 5
