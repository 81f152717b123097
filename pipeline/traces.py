"""Frame trace captures: the `log` command's `interface`/`duration` (docs/formats.md §12.3).

`TraceCapture.hook` is the drivers' `TraceHook` (Modbus RTU and TCP links, the TIC reader) and
`io_poll` takes the I/O driver's polls; while a capture runs on the entry's interface they become
store trace entries (`store.traces.TraceStore`), otherwise they are dropped at once. A capture
ends by itself after its duration, when stopped (`duration` 0), or once it has written 20 MB
(docs/behaviour.md §13, "stops by itself, or at 20 MB per run"); a new `log` on the same interface
resets its end and starts a new run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from config.errors import SunpmError
from pipeline.drivers.modbus.trace import FrameTrace
from store.traces import TRACE_INTERFACES, TraceEntry, TraceStore

__all__ = ["MAX_DURATION_MIN", "RUN_CAP_BYTES", "CaptureRun", "TraceCapture", "TraceCaptureError"]

log = logging.getLogger("sunpm.command")

MAX_DURATION_MIN: Final = 1440
RUN_CAP_BYTES: Final = 20_000_000
NS_PER_MIN: Final = 60 * 1_000_000_000


class TraceCaptureError(SunpmError, ValueError):
    """A `log` command that cannot be obeyed; the text is the command's error result."""


@dataclass(slots=True)
class CaptureRun:
    interface: str
    started_ns: int
    end_ns: int
    written_bytes: int = 0
    entries: int = 0
    stopped_at_cap: bool = False


class TraceCapture:
    """Which interfaces are being traced, and until when; the bridge to the store's traces."""

    def __init__(self, traces: TraceStore, *, run_cap_bytes: int = RUN_CAP_BYTES,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._traces = traces
        self._run_cap = run_cap_bytes
        self._clock_ns = clock_ns
        self._runs: dict[str, CaptureRun] = {}

    def start(self, interface: str, duration_min: int = 10) -> CaptureRun | None:
        """Start (or restart) a capture; `duration_min` 0 stops it (returns None then)."""
        if interface not in TRACE_INTERFACES:
            raise TraceCaptureError(f"log: unknown interface {interface!r}; expected one of "
                                    f"{', '.join(TRACE_INTERFACES)}")
        if isinstance(duration_min, bool) or not isinstance(duration_min, int) or not (
                0 <= duration_min <= MAX_DURATION_MIN):
            raise TraceCaptureError(f"log: duration must be 0..{MAX_DURATION_MIN} minutes, "
                                    f"got {duration_min!r}")
        if duration_min == 0:
            self.stop(interface)
            return None
        now = self._clock_ns()
        run = CaptureRun(interface, now, now + duration_min * NS_PER_MIN)
        self._runs[interface] = run
        log.info("trace on %s started for %d min", interface, duration_min)
        return run

    def stop(self, interface: str) -> None:
        if self._runs.pop(interface, None) is not None:
            log.info("trace on %s stopped", interface)

    def run_of(self, interface: str) -> CaptureRun | None:
        """The capture running on `interface` now (an expired one is forgotten)."""
        run = self._runs.get(interface)
        if run is not None and self._clock_ns() >= run.end_ns:
            del self._runs[interface]
            log.info("trace on %s ended (%d frames)", interface, run.entries)
            return None
        return run

    def active(self) -> list[str]:
        return [i for i in TRACE_INTERFACES if self.run_of(i) is not None]

    # ------------------------------------------------------------------ hooks

    def hook(self, trace: FrameTrace) -> None:
        """The drivers' `TraceHook`: cheap when nothing is captured, never blocks."""
        if trace.interface not in self._runs:
            return
        self._record(TraceEntry(ts_ns=trace.ts_ns, interface=trace.interface,
                                direction=str(trace.direction), data=trace.data, peer=trace.peer,
                                error=str(trace.error)))

    def io_poll(self, ts_ns: int, channels: Sequence[tuple[str, str]]) -> None:
        """One I/O poll, channels in poll order with their §9.3 value texts."""
        if "io" not in self._runs:
            return
        self._record(TraceEntry(ts_ns=ts_ns, interface="io", channels=tuple(channels)))

    def _record(self, entry: TraceEntry) -> None:
        run = self.run_of(entry.interface)
        if run is None:
            return
        run.written_bytes += self._traces.append(entry)
        run.entries += 1
        if run.written_bytes >= self._run_cap:
            run.stopped_at_cap = True
            del self._runs[entry.interface]
            log.warning("trace on %s stopped at %d bytes", entry.interface, run.written_bytes)

