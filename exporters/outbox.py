"""The outbox: per server and stream, durable cursors, windows and ordered uploads.

spec/behaviour.md §5.1, DESIGN.md §4. Nothing here holds durable state of its own: cursors, built
windows and deliveries are replayed from two journal kinds.

Journal bodies (compact JSON, times in UTC nanoseconds)::

    window     {"server": 1, "stream": "DATA", "start": <ns>, "end": <ns>,
                "watermark": {"devices": {"<index>": <seq>}, "journal": <seq>},
                "after": null | {"end": <ns>, "watermark": {...}},
                "config": "<configuration snapshot id>",
                "files": [{"name": "...", "dir": "/DATA", "size": <bytes>,
                           "sha256": "<bytes' hex>", "text_sha256": "<text's hex>"}, ...]}
    delivered  {"server": 1, "stream": "DATA", "end": <ns>, "file": "<name>"}
               MQTT alarms and results, one event at a time:
               {"server": 2, "stream": "ALARM" | "ACK", "event": <journal seq carried>}

`after` is the previous window built for the same server and stream (its end and watermark), so a
`window` event alone fixes its membership (behaviour.md §5.1 step 4): an item is a member when its
time is before `end` and the watermark covers it, and it is not a member of `after` (ends and
watermarks only grow within a stream, so excluding the previous window excludes every earlier one).

On disk::

    <store>/outbox/<server>/<file name>    bytes of built, undelivered windows, fsynced
    <store>/outbox/<server>/<name>.part    being written; removed at the next session

Invariants:
- a `window` event is acknowledged (fsynced) before any of its files is uploaded; its files are on
  disk (fsynced, renamed) before the event is written, so a retry sends the same bytes;
- a file server's next upload starts only after the previous file's `delivered` event is
  acknowledged, so at most one file is ever in doubt;
- a stream's cursor passes a window only once every file of it is delivered; an empty window
  (no file) passes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol, cast

import pyarrow as pa

from config.errors import SunpmError
from exporters.views.names import split_window
from store.state import GatewayState, JournalEvent, Reducer

log = logging.getLogger("sunpm.session")

NS_PER_S: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS_PER_S


class Stream(StrEnum):
    """Delivered streams, in the order files of equal window end go up (behaviour.md §4.2 step 8)."""

    ALARM = "ALARM"
    DATA = "DATA"
    PARAM = "PARAM"
    ACK = "ACK"
    LOG = "LOG"

    @property
    def rank(self) -> int:
        return _STREAM_RANK[self]


_STREAM_RANK: Final = {s: k for k, s in enumerate(Stream)}

#: Streams a file server gets (formats.md §3). MQTT servers get DATA only through the outbox;
#: their alarms and results go one event at a time.
FILE_SERVER_STREAMS: Final = (Stream.ALARM, Stream.DATA, Stream.PARAM, Stream.ACK, Stream.LOG)
MQTT_STREAMS: Final = (Stream.DATA,)
MQTT_IN_FLIGHT: Final = 10


class OutboxError(SunpmError):
    """The outbox cannot build or find a window's files."""


# --------------------------------------------------------------------------- values


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
        """Membership of a record (behaviour.md §5.1 step 4)."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """One file of a window as a view made it."""

    name: str
    directory: str          # remote directory: /DATA, /ALARM, /CMD, /LOG
    data: bytes
    text_sha256: str        # SHA-256 of the uncompressed text (formats.md §9.4)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxFile:
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


# --------------------------------------------------------------------------- delivery state


@dataclass(slots=True)
class StreamDelivery:
    """One server's stream: its built windows in build order and what of them is delivered."""

    windows: list[BuiltWindow] = field(default_factory=list)
    delivered: set[tuple[int, str]] = field(default_factory=set)   # (window end, file name)

    def is_delivered(self, window: BuiltWindow) -> bool:
        end = window.spec.end_ns
        return all((end, f.name) in self.delivered for f in window.files)

    @property
    def cursor_ns(self) -> int | None:
        """End of the last window delivered whole, with every window before it."""
        cursor = None
        for window in self.windows:
            if not self.is_delivered(window):
                break
            cursor = window.spec.end_ns
        return cursor

    @property
    def last_built(self) -> BuiltWindow | None:
        return self.windows[-1] if self.windows else None

    def pending(self) -> list[BuiltWindow]:
        """Built windows not yet delivered whole, oldest first."""
        return [w for w in self.windows if not self.is_delivered(w)]


@dataclass(slots=True)
class DeliveryState:
    """Cursors, built windows and deliveries of every server, replayed from the journal.

    `reduce` takes one event at a time so the store's state replay can plug it in as the reducer
    of the `window` and `delivered` kinds.
    """

    streams: dict[tuple[int, Stream], StreamDelivery] = field(default_factory=dict)
    #: MQTT alarms and results go one journal event at a time: per (server, stream) the `seq`
    #: of the last one acknowledged.
    events: dict[tuple[int, Stream], int] = field(default_factory=dict)

    def stream(self, server: int, stream: Stream) -> StreamDelivery:
        return self.streams.setdefault((server, stream), StreamDelivery())

    def reduce(self, kind: str, body: Mapping[str, Any], seq: int = -1) -> None:
        if kind == "window":
            built = BuiltWindow.from_body(body, seq)
            sd = self.stream(built.spec.server, built.spec.stream)
            # A rebuilt window of the same end (crash between files and event) replaces the first.
            sd.windows = [w for w in sd.windows if w.spec.end_ns != built.spec.end_ns]
            sd.windows.append(built)
        elif kind == "delivered" and "event" in body:
            key = (int(body["server"]), Stream(body["stream"]))
            self.events[key] = max(self.events.get(key, 0), int(body["event"]))
        elif kind == "delivered":
            sd = self.stream(int(body["server"]), Stream(body["stream"]))
            sd.delivered.add((int(body["end"]), str(body["file"])))

    @classmethod
    def from_events(cls, events: Iterable[tuple[str, str, int]]) -> DeliveryState:
        """From (kind, body JSON, seq) in journal order."""
        state = cls()
        for kind, body, seq in events:
            state.reduce(kind, json.loads(body), seq)
        return state

    @classmethod
    def from_table(cls, table: pa.Table) -> DeliveryState:
        """From journal rows of `window` and `delivered` events, and of `state` events when
        given: the latest one fills in what journal segments deleted since held."""
        # Replay in commit order whatever order the reader returned the rows in.
        table = table.sort_by("seq")
        kinds = [str(k) for k in table.column("kind").to_pylist()]
        bodies = table.column("body").to_pylist()
        seqs = table.column("seq").to_pylist()
        state = cls.from_events((k, b, int(s)) for k, b, s in zip(kinds, bodies, seqs, strict=True)
                                if k in ("window", "delivered"))
        snapshots = [(b, int(s)) for k, b, s in zip(kinds, bodies, seqs, strict=True)
                     if k == "state"]
        if snapshots:
            body, seq = snapshots[-1]
            state.merge_older(delivery_state_of(GatewayState.from_body(json.loads(body), seq)))
        return state

    def merge_older(self, older: DeliveryState) -> None:
        """Add what `older` (a `state` snapshot's) knows and the journal no longer holds: windows
        whose events were deleted go before the ones replayed, deliveries are kept."""
        for key, old in older.streams.items():
            sd = self.stream(*key)
            known = {w.spec.end_ns for w in sd.windows}
            gone = [w for w in old.windows if w.spec.end_ns not in known]
            if gone:
                sd.windows = sorted(gone, key=lambda w: w.spec.end_ns) + sd.windows
            sd.delivered |= old.delivered
        for key, seq in older.events.items():
            self.events[key] = max(self.events.get(key, 0), seq)


# --------------------------------------------------------------------------- state snapshots

#: The section of `store.state.GatewayState.extra` the outbox's reducers keep.
EXTRA_KEY: Final = "outbox"


def _stream_key(server: object, stream: object) -> str:
    return f"{server}/{stream}"


def reduce_outbox(state: GatewayState, event: JournalEvent) -> GatewayState:
    """`store.state` reducer of `window` and `delivered`: keeps, JSON-able, what the outbox needs
    once older journal segments are gone (per stream the last built window, the undelivered ones
    and their deliveries; MQTT event cursors)."""
    section: dict[str, Any] = dict(cast("Mapping[str, Any]", state.extra.get(EXTRA_KEY) or {}))
    body: Mapping[str, Any] = event.body
    if event.kind == "window":
        key = _stream_key(body.get("server"), body.get("stream"))
        entry = dict(section.get(key) or {})
        pending = [w for w in entry.get("pending", []) if w.get("end") != body.get("end")]
        if body.get("files"):
            pending.append(dict(body))
        elif not pending:
            entry["done"] = dict(body)      # an empty window passes the cursor at once
        entry.update(last=dict(body), pending=pending)
        section[key] = entry
    elif event.kind == "delivered" and "event" in body:
        events = dict(section.get("events") or {})
        key = _stream_key(body.get("server"), body.get("stream"))
        events[key] = max(int(events.get(key, 0)), int(body["event"]))
        section["events"] = events
    elif event.kind == "delivered":
        key = _stream_key(body.get("server"), body.get("stream"))
        entry = dict(section.get(key) or {})
        end = str(body.get("end"))
        done = dict(entry.get("delivered") or {})
        names = sorted({*done.get(end, []), str(body.get("file"))})
        pending = list(entry.get("pending", []))
        window = next((w for w in pending if str(w.get("end")) == end), None)
        if window is not None and {f["name"] for f in window["files"]} <= set(names):
            entry["pending"] = [w for w in pending if w is not window]
            done.pop(end, None)
            if window is pending[0]:
                entry["done"] = window      # the window the cursor now stands at
        else:
            done[end] = names
        entry["delivered"] = done
        section[key] = entry
    else:
        return state
    return dc_replace(state, extra={**state.extra, EXTRA_KEY: section})


#: Reducers to add to `store.state.DEFAULT_REDUCERS` when replaying for the outbox.
OUTBOX_REDUCERS: Final[Mapping[str, Reducer]] = {"window": reduce_outbox,
                                                 "delivered": reduce_outbox}


def delivery_state_of(state: GatewayState) -> DeliveryState:
    """The outbox's `DeliveryState` from a replayed (possibly snapshot-started) gateway state."""
    out = DeliveryState()
    section = cast("Mapping[str, Any]", state.extra.get(EXTRA_KEY) or {})
    for key, seq in dict(section.get("events") or {}).items():
        server, _, stream = key.partition("/")
        out.events[(int(server), Stream(stream))] = int(seq)
    for key, entry in section.items():
        if key == "events":
            continue
        by_end = {int(w["end"]): w for w in entry.get("pending", [])}
        for extra in (entry.get("last"), entry.get("done")):
            if extra is not None:
                by_end.setdefault(int(extra["end"]), extra)
        pending_ends = {int(w["end"]) for w in entry.get("pending", [])}
        for end in sorted(by_end):
            built = BuiltWindow.from_body(by_end[end])
            sd = out.stream(built.spec.server, built.spec.stream)
            sd.windows.append(built)
            if end not in pending_ends:
                sd.delivered.update((end, f.name) for f in built.files)
        for end, names in dict(entry.get("delivered") or {}).items():
            server, _, stream = key.partition("/")
            out.stream(int(server), Stream(stream)).delivered.update(
                (int(end), str(n)) for n in names)
    return out


# --------------------------------------------------------------------------- what we sit on


class JournalLog(Protocol):
    """What the outbox needs of `store.Log`."""

    async def append_journal(self, kind: str, body: Mapping[str, object], *,
                             device: str | None = None, def_: str | None = None,
                             ts_ns: int | None = None, commit_now: bool = False) -> int: ...

    def journal(self, *, kinds: Sequence[str] | None = None,
                seq_from: int | None = None) -> pa.Table: ...


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


class MessageTarget(Protocol):
    """What the outbox needs of a message transport: publish returns once acknowledged."""

    async def publish(self, topic: str, payload: bytes) -> None: ...


class FileTarget(Protocol):
    """What the outbox needs of a file transport (exporters.transports)."""

    async def size(self, path: str) -> int | None: ...

    async def upload(self, path: str, data: bytes, *, two_step: bool) -> None: ...


# --------------------------------------------------------------------------- windows


def split_range(start_ns: int, cut_ns: int) -> list[tuple[int, int]]:
    """`[start, cut)` as windows: split at every UTC midnight inside when longer than 24 h."""
    return split_window(start_ns, cut_ns)


def cut_of(session_start: datetime) -> int:
    """The cut: session start truncated to the second, UTC ns."""
    return int(session_start.astimezone(UTC).timestamp()) * NS_PER_S


def ns_to_datetime(ts_ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_ns // 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """A window to send this session: built already (`built`) or still to build (`start`, `end`)."""

    stream: Stream
    start_ns: int
    end_ns: int
    built: BuiltWindow | None = None

    @property
    def order(self) -> tuple[int, int]:
        return (self.end_ns, self.stream.rank)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    files: int              # final names the server confirmed this session
    windows: int            # windows passed by the cursors
    failed_streams: tuple[Stream, ...] = ()


class StreamRefused(SunpmError):
    """A stream's directory was refused; the rest of the session went on."""

    def __init__(self, failures: Sequence[tuple[Stream, str]]) -> None:
        self.failures = tuple(failures)
        super().__init__("; ".join(reason for _, reason in self.failures))


#: Called after each confirmed file: (remote path, bytes, uploaded now or found already there).
Confirmed = Callable[[str, int, bool], Awaitable[None] | None]


# --------------------------------------------------------------------------- the outbox


class Outbox:
    """One server's outbox. One session at a time uses it (behaviour.md §4.1)."""

    def __init__(self, *, server: int, log: JournalLog, source: WindowSource, directory: Path,
                 streams: Sequence[Stream] = FILE_SERVER_STREAMS) -> None:
        self.server = server
        self._log = log
        self._source = source
        self.directory = directory
        self.streams = tuple(streams)

    # ----- state

    def state(self) -> DeliveryState:
        # Journal segments before the latest `state` event may be gone (behaviour.md §6); that
        # event keeps what they held of the delivery state (OUTBOX_REDUCERS).
        return DeliveryState.from_table(self._log.journal(kinds=["state", "window", "delivered"]))

    def cursors(self) -> dict[Stream, int | None]:
        state = self.state()
        return {s: state.stream(self.server, s).cursor_ns for s in self.streams}

    def plan(self, cut_ns: int, state: DeliveryState | None = None) -> list[Planned]:
        """Windows this session sends, in upload order (behaviour.md §5.1 step 2, §4.2 step 8)."""
        state = state or self.state()
        plan: list[Planned] = []
        for stream in self.streams:
            sd = state.stream(self.server, stream)
            plan.extend(Planned(stream=stream, start_ns=w.spec.start_ns, end_ns=w.spec.end_ns,
                                built=w) for w in sd.pending())
            last = sd.last_built
            start = last.spec.end_ns if last is not None else self._source.oldest_ns(stream)
            if start is None:
                continue
            plan.extend(Planned(stream=stream, start_ns=a, end_ns=b)
                        for a, b in split_range(start, cut_ns))
        plan.sort(key=lambda p: p.order)
        return plan

    # ----- building

    async def build(self, stream: Stream, start_ns: int, end_ns: int,
                    after: BuiltWindow | None) -> BuiltWindow:
        """Render, materialise (fsynced) and journal one window; acknowledged on return."""
        prev = None if after is None else PreviousWindow(end_ns=after.spec.end_ns,
                                                         membership=after.spec.membership)

        def make() -> tuple[WindowSpec, list[Rendered]]:
            spec = WindowSpec(server=self.server, stream=stream, start_ns=start_ns,
                              end_ns=end_ns, membership=self._source.membership(), after=prev,
                              config=self._source.config_snapshot(end_ns))
            return spec, self._source.render(spec)

        spec, rendered = await asyncio.to_thread(make)
        await asyncio.to_thread(self._materialise, rendered)
        built = BuiltWindow(spec=spec, files=tuple(OutboxFile.of(r) for r in rendered))
        seq = await self._log.append_journal("window", built.to_body(), commit_now=True)
        log.debug("Window built. server=%d stream=%s end=%s files=%d", self.server, stream,
                  ns_to_datetime(end_ns).isoformat(), len(built.files))
        return BuiltWindow(spec=spec, files=built.files, seq=seq)

    def _materialise(self, rendered: Sequence[Rendered]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for r in rendered:
            _write_durably(self.directory / r.name, r.data)
        _fsync_dir(self.directory)

    async def file_bytes(self, window: BuiltWindow, file: OutboxFile) -> bytes:
        """The outbox copy, re-rendered from the window's membership when it is gone."""
        path = self.directory / file.name
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            data = b""
        if hashlib.sha256(data).hexdigest() == file.sha256:
            return data
        rendered = await asyncio.to_thread(self._source.render, window.spec)
        for r in rendered:
            if r.name == file.name:
                if hashlib.sha256(r.data).hexdigest() != file.sha256:
                    log.warning("Outbox file rebuilt with other bytes. server=%d file=%s",
                                self.server, file.name)
                await asyncio.to_thread(self._materialise, [r])
                return r.data
        raise OutboxError(f"server {self.server}: {file.name}: window no longer renders this file")

    def clean(self, state: DeliveryState) -> None:
        """Remove outbox files that no undelivered window needs (delivered, or half written)."""
        if not self.directory.is_dir():
            return
        keep = {f.name for s in self.streams for w in state.stream(self.server, s).pending()
                for f in w.files}
        for path in self.directory.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # ----- delivering

    async def deliver(self, target: FileTarget, cut_ns: int, *, two_step: bool,
                      confirmed: Confirmed | None = None) -> DeliveryReport:
        """Send every window up to the cut, oldest first; raises on the first retriable failure.

        A non-retriable refusal (a directory missing or not writable) stops only its stream; the
        others go on and `StreamRefused` is raised at the end.
        """
        # Journal reads and the source's queries block: off the loop.
        state = await asyncio.to_thread(self.state)
        await asyncio.to_thread(self.clean, state)
        plan = await asyncio.to_thread(self.plan, cut_ns, state)
        files = windows = 0
        refused: dict[Stream, str] = {}
        for planned in plan:
            if planned.stream in refused:
                continue
            sd = state.stream(self.server, planned.stream)
            window = planned.built
            if window is None:
                window = await self.build(planned.stream, planned.start_ns, planned.end_ns,
                                          sd.last_built)
                state.reduce("window", window.to_body(), window.seq)
            try:
                files += await self._send_window(target, window, sd, two_step, confirmed)
            except _Refused as err:
                refused[planned.stream] = err.reason
                continue
            windows += 1
            await asyncio.to_thread(self._remove, window)
        if refused:
            raise StreamRefused(tuple(refused.items()))
        return DeliveryReport(files=files, windows=windows)

    async def _send_window(self, target: FileTarget, window: BuiltWindow, sd: StreamDelivery,
                           two_step: bool, confirmed: Confirmed | None) -> int:
        sent = 0
        end = window.spec.end_ns
        for file in window.files:
            if (end, file.name) in sd.delivered:
                continue
            uploaded = await self._send_file(target, window, file, two_step)
            await self._log.append_journal(
                "delivered", delivered_body(self.server, window.spec.stream, end, file.name),
                commit_now=True)
            sd.delivered.add((end, file.name))
            sent += 1
            if confirmed is not None:
                result = confirmed(file.remote_path, file.size, uploaded)
                if result is not None:
                    await result
        return sent

    async def _send_file(self, target: FileTarget, window: BuiltWindow, file: OutboxFile,
                         two_step: bool) -> bool:
        """Upload unless the final name already holds the journaled size; True if uploaded."""
        path = file.remote_path
        try:
            present = await target.size(path)
        except SunpmError:
            present = None          # a refused lookup counts as absent (behaviour.md §5.2)
        if present == file.size:
            return False
        data = await self.file_bytes(window, file)
        try:
            await target.upload(path, data, two_step=two_step)
        except SunpmError as err:
            if getattr(err, "retriable", True):
                raise
            raise _Refused(str(err)) from err
        return True

    async def deliver_messages(self, target: MessageTarget, topic: str, cut_ns: int, *,
                               in_flight: int = MQTT_IN_FLIGHT) -> DeliveryReport:
        """Publish every window's documents up to the cut, oldest first, with at most
        `in_flight` unacknowledged (behaviour.md §4.4 step 2); each `Rendered` is one message.

        A message's `delivered` event is not committed at once: after a crash at most the last
        `STORE_FlushSeconds` of acknowledgements are sent again (behaviour.md §5.2).
        """
        state = await asyncio.to_thread(self.state)
        await asyncio.to_thread(self.clean, state)
        plan = await asyncio.to_thread(self.plan, cut_ns, state)
        # Bounded: a slow broker holds the loop here, never more than `in_flight` messages.
        slots = asyncio.Semaphore(in_flight)
        sent = windows = 0

        async def publish(window: BuiltWindow, file: OutboxFile, sd: StreamDelivery) -> None:
            nonlocal sent
            try:
                data = await self.file_bytes(window, file)
                await target.publish(topic, data)
                await self._log.append_journal("delivered", delivered_body(
                    self.server, window.spec.stream, window.spec.end_ns, file.name))
                sd.delivered.add((window.spec.end_ns, file.name))
                sent += 1
            finally:
                slots.release()

        built: list[tuple[BuiltWindow, StreamDelivery]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                for planned in plan:
                    sd = state.stream(self.server, planned.stream)
                    window = planned.built
                    if window is None:
                        window = await self.build(planned.stream, planned.start_ns,
                                                  planned.end_ns, sd.last_built)
                        state.reduce("window", window.to_body(), window.seq)
                    built.append((window, sd))
                    for file in window.files:
                        if (window.spec.end_ns, file.name) in sd.delivered:
                            continue
                        await slots.acquire()
                        tg.create_task(publish(window, file, sd),
                                       name=f"mqtt-publish:{self.server}:{file.name}")
                    windows += 1
        except* SunpmError as group:
            raise _first_leaf(group) from None
        for window, sd in built:
            if sd.is_delivered(window):
                await asyncio.to_thread(self._remove, window)
        return DeliveryReport(files=sent, windows=windows)

    def _remove(self, window: BuiltWindow) -> None:
        for file in window.files:
            (self.directory / file.name).unlink(missing_ok=True)


def _first_leaf(group: BaseExceptionGroup[SunpmError]) -> SunpmError:
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- durable files


def _write_durably(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
