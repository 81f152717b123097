"""Frame traces (docs/formats.md §11) and per-device counters (docs/behaviour.md §2.2).

Links report every frame to a `TraceHook`; the store's trace files are wired to it by the service.
Formatting is separate so the hook stays cheap on the hot path (it may simply be None).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import StrEnum

from config.model import Quality

__all__ = [
    "Direction",
    "FrameTrace",
    "ModbusCounters",
    "TraceError",
    "TraceHook",
    "format_trace_line",
]


class Direction(StrEnum):
    SENT = "=>"
    RECEIVED = "<="


class TraceError(StrEnum):
    NONE = ""
    CRC = "*** CRC ***"
    BAD_SLAVE = "*** BAD SLAVE ***"
    EXCEPTION = "*** EXCEPTION ***"
    TIMEOUT = "*** TIMEOUT ***"
    DISCARDED = "*** DISCARDED ***"


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameTrace:
    ts_ns: int                   # UTC ns
    interface: str               # "ethernet", "serial1".."serial3"
    direction: Direction
    data: bytes                  # whole Modbus TCP frame (MBAP included) or RTU frame with CRC
    peer: str = ""               # "<ip>:<port>" on Ethernet
    error: TraceError = TraceError.NONE


#: Receives each frame; must not block (the service hands traces to the store's writer).
TraceHook = Callable[[FrameTrace], None]


def format_trace_line(trace: FrameTrace, tz: tzinfo | None = None) -> str:
    """`<DD/MM/YYYY hh:mm:ss.mmm>;[<error> ]<dir> [<ip>:<port> ]<bytes>`, local time `tz`."""
    # Integer arithmetic: a float of the nanoseconds can land a millisecond early (truncated).
    when = datetime.fromtimestamp(trace.ts_ns // 1_000_000_000, tz)
    stamp = when.strftime("%d/%m/%Y %H:%M:%S.") + f"{trace.ts_ns // 1_000_000 % 1000:03d}"
    parts = [f"{trace.error} " if trace.error else "", str(trace.direction)]
    if trace.peer:
        parts.append(f" {trace.peer}")
    if trace.data:
        parts.append(" " + " ".join(f"{b:02X}" for b in trace.data))
    return f"{stamp};{''.join(parts)}"


@dataclass(slots=True)
class ModbusCounters:
    """What the web UI and status show per device; mutated only by its link's task."""

    qualities: Counter[Quality] = field(default_factory=Counter)
    requests: int = 0
    late_frames: int = 0
