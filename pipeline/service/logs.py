"""Log lines of the running gateway: stderr for the operator (journald, a terminal) and `log`
journal events for the LOG files (docs/formats.md §11).

Both use the categories of docs/formats.md §11: a logger `sunpm.<category>` (`sunpm.script.<name>`
is `script:<name>`). The stderr form is the LOG file's form, local time in `NTP_TimeZone`:

    2021-02-05 10:15:00.012 INFO session: server 1 dir /srv/is: session started (schedule)

A password inside a URL (`ftp://user:***@host/`) is masked in both, whatever logged it: a
configured value quoted in a problem or an error must not put a secret in a LOG file.

A line is journaled when its level is at or above `LOG_Level` at that moment. Journaling never
blocks the code that logs: lines wait in a bounded queue (oldest dropped, counted) that
`JournalLogHandler.run()` drains into the store.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config import url_passwords_masked
from store.events import LogLevel, LogLine
from store.log import Log

#: Lines waiting for the journal; beyond, the oldest go (a log storm never grows memory).
JOURNAL_QUEUE_LINES: Final = 1000

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR}


def level_of(name: str) -> int:
    """`LOG_Level` (config.ini) as a `logging` level; unknown names are INFO."""
    return _LEVELS.get(name.lower(), logging.INFO)


def category_of(logger_name: str) -> str:
    """`sunpm.session` -> `session`; `sunpm.script.limit` -> `script:limit`."""
    name = logger_name.removeprefix("sunpm.")
    if name.startswith("script."):
        return "script:" + name.removeprefix("script.")
    return name


class GatewayFormatter(logging.Formatter):
    """`<YYYY-MM-DD hh:mm:ss.mmm> <LEVEL> <category>: <message>` in the gateway's time zone."""

    def __init__(self, time_zone: str = "UTC") -> None:
        super().__init__()
        self.zone = ZoneInfo(time_zone)

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, self.zone)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S") + f".{when.microsecond // 1000:03d}"
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        return f"{stamp} {record.levelname} {category_of(record.name)}: {_masked(message)}"


def _masked(message: str) -> str:
    return url_passwords_masked(message) if "://" in message else message


def use_time_zone(time_zone: str) -> None:
    """Stderr lines from now on in `time_zone` (`NTP_TimeZone` of the configuration loaded at the
    start and at each reload; docs/behaviour.md §11); UTC when it is not a known zone."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        zone = ZoneInfo("UTC")
    for handler in logging.getLogger("sunpm").handlers:
        if isinstance(handler, _StderrHandler) and isinstance(handler.formatter,
                                                              GatewayFormatter):
            handler.formatter.zone = zone


def setup_stderr(level: int = logging.INFO, time_zone: str = "UTC") -> logging.Handler:
    """One stderr handler on the `sunpm` logger (replacing an earlier one of ours)."""
    root = logging.getLogger("sunpm")
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(GatewayFormatter(time_zone))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    pass


class JournalLogHandler(logging.Handler):
    """Queues `sunpm.*` lines at or above `LOG_Level` as `log` events; `run()` stores them."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._lines: collections.deque[tuple[int, LogLine]] = collections.deque(
            maxlen=JOURNAL_QUEUE_LINES)
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._appends: set[asyncio.Task[int]] = set()
        self.dropped = 0
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = LogLevel(record.levelname)
        except ValueError:
            level = LogLevel.ERROR if record.levelno >= logging.ERROR else LogLevel.DEBUG
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        self._lines.append((int(record.created * 1e9), LogLine(
            level=level, category=category_of(record.name), message=_masked(record.getMessage()))))
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._arrived.set()
        elif not self._loop.is_closed():
            # A line logged from a worker thread (the store's writer).
            self._loop.call_soon_threadsafe(self._arrived.set)

    async def run(self, log: Log) -> None:
        """Store the queued lines until cancelled; the owner calls `drain` once more at stop."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            self.drain(log)

    def drain(self, log: Log) -> None:
        """Hand every queued line to the store without waiting for its commit (an append
        completes only after the next group commit; lines keep their order)."""
        while self._lines:
            ts_ns, line = self._lines.popleft()
            task = asyncio.ensure_future(
                log.append_journal("log", line.to_fields(), ts_ns=ts_ns))
            self._appends.add(task)
            task.add_done_callback(self._appended)

    def _appended(self, task: asyncio.Task[int]) -> None:
        self._appends.discard(task)
        # Counted, never logged: logging a failed log line would feed the failure.
        if not task.cancelled() and task.exception() is not None:
            self.failed += 1
