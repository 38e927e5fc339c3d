"""rtnclock: event-driven, continuous-time, multi-clock simulator for RTN.

The public API is exactly what this module re-exports.
"""

__version__ = "0.1.0"          # before the imports: the store records it

from .config import Config
from .errors import ConfigError, RtnclockError, SolverError, StreamError
from .events import Event, EventLog
from .level import BlockLevel
from .model import RTNModel
from .recorder import MemoryRecorder, NullRecorder, TickRecord
from .simulate import Run, simulate
from .runs import StoredRun, info, lineage, open_run, tree_at
from .monitor import Monitor
from .store import StoreError, ZarrRecorder
from .stream import Stream
from .train import RTN, RTNOutput, cost_penalty, gate_penalty

__all__ = [
    "BlockLevel", "Config", "ConfigError", "Event", "EventLog", "MemoryRecorder", "Monitor", "NullRecorder",
    "RTN", "RTNModel", "RTNOutput", "RtnclockError", "Run", "SolverError", "StoreError", "StoredRun", "Stream", "StreamError",
    "TickRecord", "ZarrRecorder", "cost_penalty", "gate_penalty", "info", "lineage", "open_run", "simulate", "tree_at",
]
