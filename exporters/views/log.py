"""LOG files (docs/formats.md §11): the gateway log, the SunSpec detection log, frame traces.

- Gateway log `<uid>_LOG_<ts>.log.gz`: the window's `log` events in journal order, one line each,
  `<YYYY-MM-DD hh:mm:ss.mmm> <LEVEL> <category>: <message>`, local time, milliseconds truncated,
  each CR, LF or CRLF of the message one space. Events of category `sunspec` are left out.
- SunSpec log `<uid>_SUNSPEC_<ts>.log.gz`: the `log` events of category `sunspec`, in journal
  order, `YYYY-MM-DD hh:mm:ss:<message>` (the manual's form, local time).
- Frame traces `<uid>_<interface>_<ts>.log.gz`: lines are kept in the store's `traces/` as
  written; `frame_trace_line` and `io_trace_line` make them, `traces_file`
  compresses a window's lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from store.events import SUNSPEC_CATEGORY, JournalItem, LogLine

from .context import Dates, ViewConfig
from .gz import gzip_bytes

_LINE_BREAKS: Final = re.compile(r"\r\n|\r|\n")


def _log_events(items: Iterable[JournalItem]) -> list[tuple[JournalItem, LogLine]]:
    chosen = sorted((i for i in items if i.kind == "log"), key=lambda i: i.seq)
    return [(item, LogLine.from_body(item.body)) for item in chosen]


def one_line(message: str) -> str:
    return _LINE_BREAKS.sub(" ", message)


def log_text(items: Iterable[JournalItem], config: ViewConfig) -> str:
    """The gateway LOG file's text ("" when the window logged nothing)."""
    dates = Dates(config.time_zone)
    return "".join(
        f"{dates.log(item.ts_ns)} {line.level.value} {line.category}: {one_line(line.message)}\n"
        for item, line in _log_events(items) if line.category != SUNSPEC_CATEGORY)


def log_file(items: Iterable[JournalItem], config: ViewConfig) -> bytes | None:
    text = log_text(items, config)
    return gzip_bytes(text.encode()) if text else None


def sunspec_log_text(items: Iterable[JournalItem], config: ViewConfig) -> str:
    dates = Dates(config.time_zone)
    return "".join(f"{dates.sunspec(item.ts_ns)}:{one_line(line.message)}\n"
                   for item, line in _log_events(items) if line.category == SUNSPEC_CATEGORY)


def sunspec_log_file(items: Iterable[JournalItem], config: ViewConfig) -> bytes | None:
    text = sunspec_log_text(items, config)
    return gzip_bytes(text.encode()) if text else None


# --------------------------------------------------------------------------- frame traces

SENT: Final = "=>"
RECEIVED: Final = "<="
TRACE_ERRORS: Final = ("*** CRC ***", "*** BAD SLAVE ***", "*** EXCEPTION ***",
                       "*** TIMEOUT ***", "*** DISCARDED ***")


def frame_trace_line(ts_ns: int, dates: Dates, direction: str, frame: bytes, *,
                     peer: str | None = None, error: str | None = None) -> str:
    """`<DD/MM/YYYY hh:mm:ss.mmm>;[<error> ]<dir> [<ip>:<port> ]<bytes>` (upper-case hex)."""
    if direction not in (SENT, RECEIVED):
        raise ValueError(f"trace direction must be '=>' or '<=', got {direction!r}")
    if error is not None and error not in TRACE_ERRORS:
        raise ValueError(f"unknown trace error {error!r}")
    parts = [error, direction, peer, frame.hex(" ").upper() if frame else None]
    return f"{dates.trace(ts_ns)};" + " ".join(p for p in parts if p)


def io_trace_line(ts_ns: int, dates: Dates, channels: Sequence[tuple[str, str]]) -> str:
    """One I/O poll: `<datetime>;AI1=12.25;...;RELAY=0`, values as §9.3 texts, in poll order."""
    return dates.trace(ts_ns) + "".join(f";{name}={value}" for name, value in channels)


def traces_file(lines: Iterable[str]) -> bytes | None:
    text = "".join(line + "\n" for line in lines)
    return gzip_bytes(text.encode()) if text else None
