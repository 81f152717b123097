"""What fixes a window's content, and the window arithmetic (docs/behaviour.md §5.1, §5.3).

Pure values shared by the outbox (which builds, journals and uploads windows) and the re-exports
(`sunpm export`, the offline card re-export), which render any past window again from the
`window` event that fixed it. Bodies are those of the `window` and `delivered` journal kinds
(see `exporters.outbox`).

Membership (docs/behaviour.md §5.1 step 4): an item is a member of a window when its time is before
`end` and the window's watermark covers it, and it is not a member of `after`, the window built
before it for the same server and stream (ends and watermarks only grow within a stream, so
excluding the previous window excludes every earlier one).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from .names import Watermark, WindowBounds, split_window
from .names import cut_of as cut_of_ns

NS_PER_S: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS_PER_S


class Stream(StrEnum):
    """Delivered streams, in the order files of equal window end go up (docs/behaviour.md §4.2 step 8)."""

    ALARM = "ALARM"
    DATA = "DATA"
    PARAM = "PARAM"
    ACK = "ACK"
    LOG = "LOG"

    @property
    def rank(self) -> int:
        return _STREAM_RANK[self]


_STREAM_RANK: Final = {s: k for k, s in enumerate(Stream)}

#: Streams a file server gets (docs/formats.md §3). MQTT servers get DATA only through the outbox;
#: their alarms and results go one event at a time.
FILE_SERVER_STREAMS: Final = (Stream.ALARM, Stream.DATA, Stream.PARAM, Stream.ACK, Stream.LOG)
MQTT_STREAMS: Final = (Stream.DATA,)


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """A store watermark: per device the last committed record `seq`, and the last journal `seq`."""

    devices: Mapping[str, int] = field(default_factory=dict)
    journal: int = -1

    def covers_record(self, device: str, seq: int) -> bool:
        return seq <= self.devices.get(device, -1)

    def covers_event(self, seq: int) -> bool:
        return seq <= self.journal

    def to_body(self) -> dict[str, object]:
        return {"devices": dict(sorted(self.devices.items())), "journal": self.journal}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Membership:
        devices = {str(k): int(v) for k, v in dict(body.get("devices") or {}).items()}
        return cls(devices=devices, journal=int(body.get("journal", -1)))


@dataclass(frozen=True, slots=True, kw_only=True)
class PreviousWindow:
    """The window built before this one for the same server and stream."""

    end_ns: int
    membership: Membership


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSpec:
    """What fixes a window's content: enough to render it again byte for byte."""

    server: int
    stream: Stream
    start_ns: int
    end_ns: int
    membership: Membership
    after: PreviousWindow | None
    config: str

    def has_record(self, device: str, seq: int, ts_ns: int) -> bool:
        """Membership of a record (docs/behaviour.md §5.1 step 4)."""
        if ts_ns >= self.end_ns or not self.membership.covers_record(device, seq):
            return False
        prev = self.after
        return prev is None or ts_ns >= prev.end_ns or not prev.membership.covers_record(device, seq)

    def has_event(self, seq: int, ts_ns: int) -> bool:
        """Membership of a journal event."""
        if ts_ns >= self.end_ns or not self.membership.covers_event(seq):
            return False
        prev = self.after
        return prev is None or ts_ns >= prev.end_ns or not prev.membership.covers_event(seq)


def bounds_of(spec: WindowSpec) -> tuple[WindowBounds, list[WindowBounds]]:
    """The selection arguments of `names.select_records` / `select_journal` for a window spec."""
    def wm(m: Membership) -> Watermark:
        return Watermark(devices=dict(m.devices), journal=m.journal)

    window = WindowBounds(end_ns=spec.end_ns, watermark=wm(spec.membership))
    previous = [] if spec.after is None else [
        WindowBounds(end_ns=spec.after.end_ns, watermark=wm(spec.after.membership))]
    return window, previous


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """One file of a window as a view made it."""

    name: str
    directory: str          # remote directory: /DATA, /ALARM, /CMD, /LOG
    data: bytes
    text_sha256: str        # SHA-256 of the uncompressed text (docs/formats.md §9.4)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxFile:
    """A file of a journaled window: what the server must end up holding."""

    name: str
    directory: str
    size: int
    sha256: str
    text_sha256: str

    @property
    def remote_path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.name}"

    def to_body(self) -> dict[str, object]:
        return {"name": self.name, "dir": self.directory, "size": self.size,
                "sha256": self.sha256, "text_sha256": self.text_sha256}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OutboxFile:
        return cls(name=str(body["name"]), directory=str(body["dir"]), size=int(body["size"]),
                   sha256=str(body["sha256"]), text_sha256=str(body["text_sha256"]))

    @classmethod
    def of(cls, rendered: Rendered) -> OutboxFile:
        return cls(name=rendered.name, directory=rendered.directory, size=len(rendered.data),
                   sha256=hashlib.sha256(rendered.data).hexdigest(),
                   text_sha256=rendered.text_sha256)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltWindow:
    """A journaled `window` event."""

    spec: WindowSpec
    files: tuple[OutboxFile, ...]
    seq: int = -1           # journal seq of the event, -1 when not read from a journal

    @property
    def key(self) -> tuple[int, Stream, int]:
        return (self.spec.server, self.spec.stream, self.spec.end_ns)

    def to_body(self) -> dict[str, object]:
        s = self.spec
        after = None if s.after is None else {"end": s.after.end_ns,
                                              "watermark": s.after.membership.to_body()}
        return {"server": s.server, "stream": str(s.stream), "start": s.start_ns, "end": s.end_ns,
                "watermark": s.membership.to_body(), "after": after, "config": s.config,
                "files": [f.to_body() for f in self.files]}

    @classmethod
    def from_body(cls, body: Mapping[str, Any], seq: int = -1) -> BuiltWindow:
        after_body = body.get("after")
        after = None if after_body is None else PreviousWindow(
            end_ns=int(after_body["end"]), membership=Membership.from_body(after_body["watermark"]))
        spec = WindowSpec(server=int(body["server"]), stream=Stream(body["stream"]),
                          start_ns=int(body["start"]), end_ns=int(body["end"]),
                          membership=Membership.from_body(body["watermark"]), after=after,
                          config=str(body.get("config", "")))
        files = tuple(OutboxFile.from_body(f) for f in body.get("files", ()))
        return cls(spec=spec, files=files, seq=seq)


def delivered_body(server: int, stream: Stream, end_ns: int, file: str) -> dict[str, object]:
    return {"server": server, "stream": str(stream), "end": end_ns, "file": file}


def event_delivered_body(server: int, stream: Stream, seq: int) -> dict[str, object]:
    """An MQTT alarm or result acknowledged: the journal `seq` of the event it carried."""
    return {"server": server, "stream": str(stream), "event": seq}


class WindowSource(Protocol):
    """Content of one server's windows: the views over the store, for that server's settings.

    `render` is pure of its arguments and the store's stored items (the same spec renders the
    same bytes); it may block, the outbox runs it off the loop.
    """

    def oldest_ns(self, stream: Stream) -> int | None:
        """Time of the oldest stored item of the stream, None when there is none."""
        ...

    def membership(self) -> Membership:
        """The store's watermark now."""
        ...

    def config_snapshot(self, end_ns: int) -> str:
        """Id of the configuration snapshot in force at `end_ns`."""
        ...

    def render(self, spec: WindowSpec) -> list[Rendered]: ...


# --------------------------------------------------------------------------- arithmetic


def split_range(start_ns: int, cut_ns: int) -> list[tuple[int, int]]:
    """`[start, cut)` as windows: split at every UTC midnight inside when longer than 24 h."""
    return split_window(start_ns, cut_ns)


def split_backfill(start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """`[start, end)` cut at every UTC midnight inside, whatever its length (docs/behaviour.md §5.3
    step 1)."""
    bounds = [start_ns]
    midnight = (start_ns // DAY_NS + 1) * DAY_NS
    while midnight < end_ns:
        bounds.append(midnight)
        midnight += DAY_NS
    bounds.append(end_ns)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def cut_of(session_start: datetime) -> int:
    """The cut of a session started at `session_start` (aware), UTC ns: `names.cut_of` of its
    exact nanoseconds, so both forms truncate by the one rule."""
    return cut_of_ns((session_start - _EPOCH) // timedelta(microseconds=1) * 1000)


def ns_to_datetime(ts_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)
