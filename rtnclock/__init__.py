"""rtnclock: event-driven, continuous-time, multi-clock simulator for RTN.

The public API is exactly what this module re-exports.
"""

from .config import Config
from .errors import ConfigError, RtnclockError, SolverError, StreamError
from .events import Event, EventLog
from .level import BlockLevel
from .model import RTNModel
from .recorder import MemoryRecorder, NullRecorder, TickRecord
from .simulate import Run, simulate
from .stream import Stream

__version__ = "0.1.0"

__all__ = [
    "BlockLevel", "Config", "ConfigError", "Event", "EventLog", "MemoryRecorder", "NullRecorder",
    "RTNModel", "RtnclockError", "Run", "SolverError", "Stream", "StreamError", "TickRecord",
    "simulate",
]
