"""Validated, immutable configuration of an RTN hierarchy and its clocks.

Everything is checked once, here, where values enter (STYLE habit 1): a bad
value raises :class:`~rtnclock.errors.ConfigError` naming the field, the value
and what is allowed; unknown keys raise.  Per-level fields accept one value
(broadcast to every level) or a sequence of ``K + 1`` values, level 0 first.
"""

from __future__ import annotations

import dataclasses
import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError

#: torchdiffeq methods rtnclock accepts.  ``scipy_solver`` runs scipy's
#: ``solve_ivp`` (DOP853) on the CPU: a tight reference, not differentiable.
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "scipy_solver")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
METHODS = ADAPTIVE_METHODS + FIXED_METHODS
GATE_MODES = ("free", "open", "closed")
ACTIVATIONS = ("tanh", "identity")
COARSE_OPS = ("linear",)
DTYPES = ("float32", "float64")

# Periods must be integer multiples of the leaf period; this is how close a
# float ratio must be to an integer to count as one.
_RATIO_TOL = 1e-9


def _per_level(name: str, value, n: int, kind=float) -> tuple:
    """Broadcast a scalar or check a sequence of length ``n`` for a per-level field."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(name, value, f"one value or a sequence of K+1 = {n} values")
        items = tuple(value)
    else:
        items = (value,) * n
    try:
        return tuple(kind(v) if not isinstance(v, bool) else _reject_bool(name, v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(name, value, f"{kind.__name__} values") from None


def _per_level_optional(name: str, value, n: int) -> tuple:
    """Like :func:`_per_level` for a finite float field where ``None`` (off) is allowed per level."""
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(items) != n:
        raise ConfigError(name, value, f"one value or a sequence of K+1 = {n} values")
    for v in items:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ConfigError(name, value, "finite numbers or None (per level)")
    return tuple(None if v is None else float(v) for v in items)


def _reject_bool(name, v):
    raise ConfigError(name, v, "a number, not a bool")


@dataclass(frozen=True)
class Config:
    """Resolved configuration of one RTN hierarchy.

    Attributes:
        K: index of the root level; levels are ``0..K`` (``K = 0``: leaves only).
        branching: children per block ``b``; level ``k`` has ``b**(K-k)`` blocks
            (``b = 1`` is a chain of equal-size levels).
        dims: state size ``d_k`` per level (one int or ``K + 1`` ints).
        input_dim: sensory channels per leaf.
        tau0, ratio: default time constants ``tau_k = tau0 * ratio**k`` (seconds).
        taus: explicit time constants, overriding ``tau0``/``ratio``.
        periods: explicit tick periods ``Delta_k`` (default ``Delta_k = tau_k``);
            each must be an integer multiple of the one below.
        method, rtol, atol: torchdiffeq solver and tolerances (adaptive methods).
        step_size: fixed-grid step in seconds for the leaves (fixed methods
            only; default a quarter of the leaf period); a solve whose fastest
            level is ``k`` steps ``step_size * tau_k / tau_0``, the same step in
            units of that level's time constant.
        gate_a, gate_beta, gate_bias: gate ``g = sigmoid(a*e + beta*demand + b_g)``.
        gate_theta: run-time threshold; the fine path runs iff ``g > theta``.
        gate_mode: ``free`` (computed), ``open`` (``g = 1``) or ``closed`` (``g = 0``).
        escalation_threshold: surprise above which a block makes its parent tick
            now (``None`` disables escalation).
        memory_size: ring-buffer length of each leaf's own past keys.
        attention_temperature: softmax temperature ``T`` (default ``sqrt(d_0)``).
        activation: ``phi`` in the block dynamics.
        coarse: coarse operator kind.
        free_energy_tau: the ``tau`` of ``F = U - tau*S``.
        weight_gain: spectral scale of the recurrent weights (below 1 is contractive).
        capacity: slots per level as a multiple of its initial blocks ``n_k``
            (room for mitosis; the root always has one slot).
        mitosis_threshold: a block whose free energy stays above this for
            ``mitosis_window`` seconds splits in two (``None``: never; one value
            or one per level).
        mitosis_window: seconds, see above.
        mitosis_noise: standard deviation of the Gaussian noise added to a
            daughter's copy of her mother's state.
        apoptosis_epsilon: a block whose gate stays below this for
            ``apoptosis_window`` seconds of awake time is removed (``None``: never;
            one value or one per level).
        apoptosis_window: seconds, see above.
        seed, device, dtype: reproducibility and placement.
    """

    K: int = 2
    branching: int = 4
    dims: Any = 16
    input_dim: int = 4
    tau0: float = 0.01
    ratio: float = 4.0
    taus: Any = None
    periods: Any = None
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-7
    step_size: float | None = None
    gate_a: Any = 4.0
    gate_beta: Any = 1.0
    gate_bias: Any = -1.0
    gate_theta: float = 0.5
    gate_mode: Any = "free"
    escalation_threshold: float | None = 1.0
    memory_size: int = 8
    attention_temperature: float | None = None
    activation: str = "tanh"
    coarse: str = "linear"
    free_energy_tau: float = 1.0
    weight_gain: float = 0.9
    capacity: float = 1.0
    mitosis_threshold: float | None = None
    mitosis_window: float = 1.0
    mitosis_noise: float = 0.01
    apoptosis_epsilon: float | None = None
    apoptosis_window: float = 1.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    # Derived, filled in by __post_init__ (not accepted from users).
    _resolved: dict = field(default_factory=dict, repr=False, compare=False)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """Build a config from a mapping; unknown keys raise ``ConfigError``."""
        if not isinstance(values, Mapping):
            raise ConfigError("<config>", type(values).__name__, "a mapping of field names to values")
        allowed = cls.field_names()
        for key in values:
            if key not in allowed:
                raise ConfigError(str(key), values[key], f"known fields: {', '.join(allowed)}")
        return cls(**dict(values))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the user-settable fields."""
        return tuple(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed (validated again)."""
        return Config.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        """The user-settable fields as plain Python values (for stores and checkpoints)."""
        return {name: getattr(self, name) for name in self.field_names()}

    # ---- validation ---------------------------------------------------
    def __post_init__(self):
        _int_at_least("K", self.K, 0)
        _int_at_least("branching", self.branching, 1)
        _int_at_least("input_dim", self.input_dim, 1)
        _int_at_least("memory_size", self.memory_size, 0)
        _int_at_least("seed", self.seed, 0)
        n = self.K + 1
        dims = _per_level("dims", self.dims, n, int)
        for d in dims:
            if d < 1:
                raise ConfigError("dims", self.dims, "positive integers")
        _positive("tau0", self.tau0)
        _number("ratio", self.ratio)
        if self.ratio < 1:
            raise ConfigError("ratio", self.ratio, "a number >= 1 (upper levels are slower)")
        taus = (_per_level("taus", self.taus, n) if self.taus is not None
                else tuple(self.tau0 * self.ratio**k for k in range(n)))
        for t in taus:
            if not (t > 0 and math.isfinite(t)):
                raise ConfigError("taus", self.taus, "positive finite seconds")
        periods = _per_level("periods", self.periods, n) if self.periods is not None else taus
        ticks = _period_ticks(periods, self.periods)
        _choice("method", self.method, METHODS)
        _positive("rtol", self.rtol)
        _positive("atol", self.atol)
        if self.step_size is not None:
            _positive("step_size", self.step_size)
        gate_a = _per_level("gate_a", self.gate_a, n)
        gate_beta = _per_level("gate_beta", self.gate_beta, n)
        gate_bias = _per_level("gate_bias", self.gate_bias, n)
        for name, vals in (("gate_a", gate_a), ("gate_beta", gate_beta), ("gate_bias", gate_bias)):
            if not all(math.isfinite(v) for v in vals):
                raise ConfigError(name, getattr(self, name), "finite numbers")
        _number("gate_theta", self.gate_theta)
        if not 0 < self.gate_theta < 1:
            raise ConfigError("gate_theta", self.gate_theta, "a number strictly between 0 and 1")
        modes = _per_level_str("gate_mode", self.gate_mode, n, GATE_MODES)
        if self.escalation_threshold is not None:
            _positive("escalation_threshold", self.escalation_threshold)
        if self.attention_temperature is not None:
            _positive("attention_temperature", self.attention_temperature)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("coarse", self.coarse, COARSE_OPS)
        _number("free_energy_tau", self.free_energy_tau)
        if self.free_energy_tau < 0:
            raise ConfigError("free_energy_tau", self.free_energy_tau, "a number >= 0")
        _positive("weight_gain", self.weight_gain)
        _number("capacity", self.capacity)
        if self.capacity < 1:
            raise ConfigError("capacity", self.capacity, "a number >= 1 (slots per initial block)")
        mitosis = _per_level_optional("mitosis_threshold", self.mitosis_threshold, n)
        _positive("mitosis_window", self.mitosis_window)
        _number("mitosis_noise", self.mitosis_noise)
        if self.mitosis_noise < 0:
            raise ConfigError("mitosis_noise", self.mitosis_noise, "a number >= 0")
        apoptosis = _per_level_optional("apoptosis_epsilon", self.apoptosis_epsilon, n)
        if any(v is not None and not 0 < v < 1 for v in apoptosis):
            raise ConfigError("apoptosis_epsilon", self.apoptosis_epsilon,
                              "gate values strictly between 0 and 1, or None")
        _positive("apoptosis_window", self.apoptosis_window)
        _choice("dtype", self.dtype, DTYPES)
        if not isinstance(self.device, str) or not (
            self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")
        ):
            raise ConfigError("device", self.device, "'cpu', 'cuda' or 'cuda:N'")
        self._resolved.update(
            dims=dims, taus=taus, periods=tuple(ticks[k] * periods[0] for k in range(n)),
            period_ticks=ticks, gate_a=gate_a, gate_beta=gate_beta, gate_bias=gate_bias,
            gate_mode=modes, mitosis_threshold=mitosis, apoptosis_epsilon=apoptosis,
        )

    # ---- resolved views -------------------------------------------------
    @property
    def n_levels(self) -> int:
        """Number of levels, ``K + 1``."""
        return self.K + 1

    def resolved(self, name: str) -> tuple:
        """A per-level field resolved to a tuple of ``K + 1`` values.

        ``name`` is one of dims, taus, periods, period_ticks, gate_a, gate_beta,
        gate_bias, gate_mode, mitosis_threshold, apoptosis_epsilon.
        """
        return self._resolved[name]

    def blocks(self, k: int) -> int:
        """Number of blocks ``n_k = b**(K-k)`` of level ``k``."""
        return self.branching ** (self.K - k)

    def slots(self, k: int) -> int:
        """Slots of level ``k``: ``ceil(capacity * n_k)`` (one for the root)."""
        return 1 if k == self.K else math.ceil(self.capacity * self.blocks(k) - 1e-9)

    @property
    def fixed_tree(self) -> bool:
        """The full ``b``-ary tree with no spare slots that never changes (the default)."""
        return not self.grows and self.capacity == 1

    @property
    def grows(self) -> bool:
        """Whether the topology may change during a run (morphogenesis configured)."""
        return any(v is not None for name in ("mitosis_threshold", "apoptosis_epsilon")
                   for v in self._resolved[name])

    @property
    def base_period(self) -> float:
        """The leaf period ``Delta_0``: every tick time is an integer multiple of it."""
        return self._resolved["periods"][0]

    @property
    def temperature(self) -> float:
        """Attention softmax temperature."""
        return self.attention_temperature or math.sqrt(self._resolved["dims"][0])


@contextlib.contextmanager
def quiet_scipy():
    """Hide scipy's 'min_step has no effect' warning.

    torchdiffeq's scipy wrapper always passes ``min_step``, which DOP853 ignores.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The following arguments have no effect",
                                category=UserWarning)
        yield


def solver_options(config: Config) -> dict | None:
    """torchdiffeq ``options`` for an adaptive method (scipy: DOP853, an explicit 8th-order RK)."""
    return {"solver": "DOP853"} if config.method == "scipy_solver" else None


def _number(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(name, v, "a finite number")


def _positive(name, v):
    _number(name, v)
    if v <= 0:
        raise ConfigError(name, v, "a number > 0")


def _int_at_least(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(name, v, f"an integer >= {lo}")


def _choice(name, v, allowed):
    if v not in allowed:
        raise ConfigError(name, v, "one of " + ", ".join(repr(a) for a in allowed))


def _per_level_str(name, value, n, allowed):
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(items) != n:
        raise ConfigError(name, value, f"one value or a sequence of K+1 = {n} values")
    for v in items:
        _choice(name, v, allowed)
    return items


def _period_ticks(periods: tuple, raw) -> tuple[int, ...]:
    """Each period as an integer count of leaf periods; nesting is required.

    Integer tick counts keep time exact (``t = n * Delta_0``, never an
    accumulated float) and make every parent window a union of child windows,
    which is what makes the coarse-up average exact.
    """
    ticks = [1]
    for k in range(1, len(periods)):
        ratio = periods[k] / periods[k - 1]
        m = round(ratio)
        if m < 1 or abs(ratio - m) > _RATIO_TOL * max(1.0, ratio):
            raise ConfigError(
                "periods" if raw is not None else "taus", raw if raw is not None else periods,
                f"each period an integer multiple (>= 1) of the one below; level {k} has "
                f"{periods[k]!r} / {periods[k - 1]!r} = {ratio:.6g}",
            )
        ticks.append(ticks[-1] * m)
    return tuple(ticks)
