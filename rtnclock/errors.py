"""Every error rtnclock raises derives from :class:`RtnclockError`.

User-input errors also derive from ``ValueError``/``TypeError`` so callers that
catch the builtin kinds keep working.
"""


class RtnclockError(Exception):
    """Base class of all rtnclock errors."""


class ConfigError(RtnclockError, ValueError):
    """A configuration field, option or name is unknown or out of range.

    The message names the field, the offending value and what is allowed.
    """

    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field!r}: got {value!r}; allowed: {allowed}")


class StreamError(RtnclockError, ValueError):
    """A sensory stream is malformed (shape, non-finite frame, too short)."""


class SolverError(RtnclockError, RuntimeError):
    """The ODE solver could not step; carries the level, block and time."""

    def __init__(self, message: str, *, level: int, block: int | None, time: float):
        self.level, self.block, self.time = level, block, time
        where = f"level {level}" + (f", block {block}" if block is not None else "")
        super().__init__(f"{message} ({where}, t={time:.6g} s)")
