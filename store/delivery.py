"""What was built for and delivered to each server: the `window` and `delivered` journal bodies
and `DeliveryState`, the one state replayed from them (docs/architecture.md §4.1,
docs/behaviour.md §5.1, §6).

Bodies (compact JSON, times in UTC nanoseconds)::

    window     {"server": 1, "stream": "DATA", "start": <ns>, "end": <ns>,
                "watermark": {"devices": {"<index>": <seq>}, "journal": <seq>},
                "after": null | {"end": <ns>, "watermark": {...}},
                "config": "<configuration snapshot id>",
                "files": [{"name": "...", "dir": "/DATA", "size": <bytes>,
                           "sha256": "<bytes' hex>", "text_sha256": "<text's hex>"}, ...]}
    delivered  {"server": 1, "stream": "DATA", "end": <ns>, "file": "<name>"}
               MQTT alarms and results, one event at a time:
               {"server": 2, "stream": "ALARM" | "ACK", "event": <journal seq carried>}

Membership (docs/behaviour.md §5.1 step 4): an item is a member of a window when its time is
before `end` and the window's watermark covers it, and it is not a member of `after`, the window
built before it for the same server and stream (ends and watermarks only grow within a stream, so
excluding the previous window excludes every earlier one).

`DeliveryState.reduce` is the only reducer of these two kinds: the store's replay
(`store.state`), the outbox, the quota's retention marks, `sunpm export` and the offline
re-exports all fold them through it. `to_body` / `from_body` carry it across the journal's
garbage collection in `state` events: per stream the windows from the cursor's on and their
deliveries (`prune`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import pyarrow as pa

from store.events import Watermark


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

#: The journal kinds each journal-fed stream delivers (DATA delivers records).
JOURNAL_STREAM_KINDS: Final[Mapping[Stream, tuple[str, ...]]] = {
    Stream.ALARM: ("alarm",),
    Stream.PARAM: ("param",),
    Stream.ACK: ("result",),
    Stream.LOG: ("log",),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PreviousWindow:
    """The window built before this one for the same server and stream."""

    end_ns: int
    membership: Watermark


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSpec:
    """What fixes a window's content: enough to render it again byte for byte."""

    server: int
    stream: Stream
    start_ns: int
    end_ns: int
    membership: Watermark       # the store's watermark when the window was built
    after: PreviousWindow | None
    config: str

    def has_record(self, device: str, seq: int, ts_ns: int) -> bool:
        """Watermark of a record (docs/behaviour.md §5.1 step 4)."""
        if ts_ns >= self.end_ns or not self.membership.covers_record(device, seq):
            return False
        prev = self.after
        return prev is None or ts_ns >= prev.end_ns or not prev.membership.covers_record(device, seq)

    def has_event(self, seq: int, ts_ns: int) -> bool:
        """Watermark of a journal event."""
        if ts_ns >= self.end_ns or not self.membership.covers_event(seq):
            return False
        prev = self.after
        return prev is None or ts_ns >= prev.end_ns or not prev.membership.covers_event(seq)


class FileMade(Protocol):
    """One file of a window as a view made it (`exporters.views.windows.Rendered`)."""

    @property
    def name(self) -> str: ...

    @property
    def directory(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def text_sha256(self) -> str: ...


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
    def of(cls, made: FileMade) -> OutboxFile:
        return cls(name=made.name, directory=made.directory, size=len(made.data),
                   sha256=hashlib.sha256(made.data).hexdigest(), text_sha256=made.text_sha256)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltWindow:
    """A journaled `window` event."""

    spec: WindowSpec
    files: tuple[OutboxFile, ...]
    #: Journal seq of the event, 0 when not read from a journal (`state` events do not keep it).
    seq: int = field(default=0, compare=False)

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
    def from_body(cls, body: Mapping[str, Any], seq: int = 0) -> BuiltWindow:
        after_body = body.get("after")
        after = None if after_body is None else PreviousWindow(
            end_ns=int(after_body["end"]), membership=Watermark.from_body(after_body["watermark"]))
        spec = WindowSpec(server=int(body["server"]), stream=Stream(body["stream"]),
                          start_ns=int(body["start"]), end_ns=int(body["end"]),
                          membership=Watermark.from_body(body["watermark"]), after=after,
                          config=str(body.get("config", "")))
        files = tuple(OutboxFile.from_body(f) for f in body.get("files", ()))
        return cls(spec=spec, files=files, seq=seq)


def delivered_body(server: int, stream: Stream, end_ns: int, file: str) -> dict[str, object]:
    return {"server": server, "stream": str(stream), "end": end_ns, "file": file}


def event_delivered_body(server: int, stream: Stream, seq: int) -> dict[str, object]:
    """An MQTT alarm or result acknowledged: the journal `seq` of the event it carried."""
    return {"server": server, "stream": str(stream), "event": seq}


def set_aside_body(server: int, stream: Stream, end_ns: int, seq: int,
                   reason: str) -> dict[str, object]:
    """An event left out of a file server's window (`end`) because it cannot be written: its
    mark, for the record (the window's files carry the delivery; docs/spec-notes.md, "Event set
    aside"). An MQTT event set aside is an `event_delivered_body` with `setAside`."""
    return {"server": server, "stream": str(stream), "end": end_ns, "event": seq,
            "setAside": reason}


# --------------------------------------------------------------------------- the state

#: The journal kinds `DeliveryState` folds.
DELIVERY_KINDS: Final = ("window", "delivered")


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
        window = self.cursor_window
        return None if window is None else window.spec.end_ns

    @property
    def cursor_window(self) -> BuiltWindow | None:
        """The last window delivered whole, with every window before it."""
        cursor = None
        for window in self.windows:
            if not self.is_delivered(window):
                break
            cursor = window
        return cursor

    @property
    def last_built(self) -> BuiltWindow | None:
        return self.windows[-1] if self.windows else None

    def pending(self) -> list[BuiltWindow]:
        """Built windows not yet delivered whole, oldest first."""
        return [w for w in self.windows if not self.is_delivered(w)]

    def prune(self) -> BuiltWindow | None:
        """Forget the windows before the cursor's and their deliveries; the cursor's window.

        What is left plans every later session and, with the cursor's window (the `after` of
        the next and the quota's mark), says as much as the whole history about what is
        delivered: only re-exports of past ranges need more, and they read the journal.
        """
        cursor = None
        for index, window in enumerate(self.windows):
            if not self.is_delivered(window):
                break
            cursor = index
        if cursor is None:
            return None
        window = self.windows[cursor]
        end = window.spec.end_ns
        self.windows = self.windows[cursor:]
        self.delivered = {d for d in self.delivered if d[0] >= end}
        return window


@dataclass(slots=True)
class DeliveryState:
    """Cursors, built windows and deliveries of every server, replayed from the journal."""

    streams: dict[tuple[int, Stream], StreamDelivery] = field(default_factory=dict)
    #: MQTT alarms and results go one journal event at a time: per (server, stream) the `seq`
    #: of the last one acknowledged.
    events: dict[tuple[int, Stream], int] = field(default_factory=dict)

    def stream(self, server: int, stream: Stream) -> StreamDelivery:
        sd = self.streams.get((server, stream))
        if sd is None:
            sd = self.streams[(server, stream)] = StreamDelivery()
        return sd

    def reduce(self, kind: str, body: Mapping[str, Any], seq: int = 0) -> None:
        """Fold one `window` or `delivered` event in; other kinds are ignored."""
        if kind == "window":
            built = BuiltWindow.from_body(body, seq)
            sd = self.stream(built.spec.server, built.spec.stream)
            # A rebuilt window of the same end (crash between files and event) replaces the first.
            if sd.windows and sd.windows[-1].spec.end_ns < built.spec.end_ns:
                sd.windows.append(built)
            else:
                sd.windows = [w for w in sd.windows if w.spec.end_ns != built.spec.end_ns]
                sd.windows.append(built)
        elif kind == "delivered" and "event" in body and "end" in body:
            # A file window's event set aside: nothing to fold (not an MQTT cursor).
            return
        elif kind == "delivered" and "event" in body:
            key = (int(body["server"]), Stream(body["stream"]))
            self.events[key] = max(self.events.get(key, 0), int(body["event"]))
        elif kind == "delivered":
            sd = self.stream(int(body["server"]), Stream(body["stream"]))
            sd.delivered.add((int(body["end"]), str(body["file"])))

    @classmethod
    def from_table(cls, table: pa.Table) -> DeliveryState:
        """From journal rows of `window` and `delivered` events, and of `state` events when
        given: the latest one fills in what journal segments deleted since held."""
        # Replay in commit order whatever order the reader returned the rows in.
        table = table.sort_by("seq")
        kinds = [str(k) for k in table.column("kind").to_pylist()]
        bodies = table.column("body").to_pylist()
        seqs = table.column("seq").to_pylist()
        state = cls()
        snapshot = None
        for kind, body, seq in zip(kinds, bodies, seqs, strict=True):
            if kind in DELIVERY_KINDS:
                state.reduce(kind, json.loads(body), int(seq))
            elif kind == "state":
                snapshot = body
        if snapshot is not None:
            state.merge_older(cls.from_state_body(json.loads(snapshot)))
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

    def copy(self) -> DeliveryState:
        """A state of its own: folding into this one leaves the copy as it was."""
        return DeliveryState(
            streams={key: StreamDelivery(windows=list(sd.windows), delivered=set(sd.delivered))
                     for key, sd in self.streams.items()},
            events=dict(self.events))

    def prune(self) -> None:
        """`StreamDelivery.prune` of every stream."""
        for sd in self.streams.values():
            sd.prune()

    # ----- in `state` events

    def to_body(self) -> dict[str, object]:
        """What a `state` event keeps: per stream (`"<server>/<stream>"`) its windows from the
        cursor's on (`prune`) and their deliveries; MQTT event cursors under `"events"`."""
        out: dict[str, object] = {}
        if self.events:
            out["events"] = {_stream_key(*k): seq for k, seq in sorted(self.events.items())}
        for key, sd in self.streams.items():
            pruned = StreamDelivery(windows=list(sd.windows), delivered=set(sd.delivered))
            pruned.prune()
            if not pruned.windows and not pruned.delivered:
                continue
            done: dict[str, list[str]] = {}
            for end, name in sorted(pruned.delivered):
                done.setdefault(str(end), []).append(name)
            out[_stream_key(*key)] = {"windows": [w.to_body() for w in pruned.windows],
                                      "delivered": done}
        return out

    @classmethod
    def from_body(cls, section: Mapping[str, Any]) -> DeliveryState:
        """The state `to_body` kept."""
        out = cls()
        for key, seq in dict(section.get("events") or {}).items():
            server, _, stream = key.partition("/")
            out.events[(int(server), Stream(stream))] = int(seq)
        for key, entry in section.items():
            if key == "events":
                continue
            server, _, stream = key.partition("/")
            sd = out.stream(int(server), Stream(stream))
            if "windows" in entry:
                sd.windows = [BuiltWindow.from_body(w) for w in entry["windows"]]
            else:
                _older_entry(sd, entry)
            for end, names in dict(entry.get("delivered") or {}).items():
                sd.delivered.update((int(end), str(n)) for n in names)
        return out

    @classmethod
    def from_state_body(cls, body: Mapping[str, Any]) -> DeliveryState:
        """The delivery state a `state` event's body (`store.state.GatewayState.to_body`) holds."""
        section = body.get(STATE_KEY)
        if not isinstance(section, dict):
            # `state` events written before the delivery state had a section of its own kept
            # it among the plug-in reducers' sections.
            section = dict(body.get("extra") or {}).get("outbox")
        return cls.from_body(section if isinstance(section, dict) else {})


#: The key of the delivery state in a `state` event's body.
STATE_KEY: Final = "delivery"


def _stream_key(server: object, stream: object) -> str:
    return f"{server}/{stream}"


def _older_entry(sd: StreamDelivery, entry: Mapping[str, Any]) -> None:
    """A stream as `state` events kept it before `to_body`'s form: its last built window, the
    undelivered ones and the window the cursor stood at."""
    by_end = {int(w["end"]): w for w in entry.get("pending", [])}
    for extra in (entry.get("last"), entry.get("done")):
        if extra is not None:
            by_end.setdefault(int(extra["end"]), extra)
    pending_ends = {int(w["end"]) for w in entry.get("pending", [])}
    for end in sorted(by_end):
        built = BuiltWindow.from_body(by_end[end])
        sd.windows.append(built)
        if end not in pending_ends:
            sd.delivered.update((end, f.name) for f in built.files)
