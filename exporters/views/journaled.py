"""Built windows and deliveries, replayed from the journal (docs/behaviour.md §5.1, §6).

`DeliveryState` is what the `window` and `delivered` events say: per server and stream the
windows built, in build order, and which of their files the server confirmed. The outbox reads it
to plan a session; re-exports read it to rebuild journaled windows whole. `OUTBOX_REDUCERS` plug
into `store.state.replay` and keep it in `state` snapshots, so it survives the journal garbage
collection; `delivery_state_of` reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any, Final, cast

import pyarrow as pa

from store.state import GatewayState, JournalEvent, Reducer

from .windows import BuiltWindow, Stream


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

