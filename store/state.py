"""Durable gateway state, rebuilt by replaying the journal (DESIGN.md §1, spec/behaviour.md §6).

Nothing but the journal holds durable state. `replay` starts from the body of the latest `state`
event (a snapshot `Log.write_state_snapshot` journals so that older segments can go) and folds
every later event into a `GatewayState` through one reducer per event kind. The outbox, commands
and scripts own their event bodies; each can register its own reducer for its kinds:

    reducers = {**DEFAULT_REDUCERS, "window": my_window_reducer}
    state = replay(log, reducers)

A reducer is a pure function `(GatewayState, JournalEvent) -> GatewayState`. Plug-ins that need
state of their own keep it in `GatewayState.extra[<their name>]` (JSON-able), which snapshots carry.

Default bodies (used by the default reducers):
    window     {"server": 1, "stream": "DATA", "start": ns, "end": ns, "files": [{"name": ...}]}
    delivered  {"server": 1, "file": "<name>"}            (or "message" instead of "file")
    command    {"callerId": "..."} ; result {"callerId": "...", ...}
    scriptdata {"script": "<name>", "data": <any JSON>}
    sync       {"server": 1, "file": "<name>", "sha256": "<hex>"}
    heartbeat  {}                                           (its time is the event's `ts`)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

CALLER_ID_KEEP_NS: Final = 7 * 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEvent:
    seq: int
    ts_ns: int
    kind: str
    device: str | None
    def_: str | None
    body: Mapping[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayState:
    seq: int = 0  # last journal seq folded in
    cursors: Mapping[str, int] = field(default_factory=dict)  # "<server>/<stream>" -> end ns
    windows: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # built, undelivered
    delivered: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # window id -> files
    caller_ids: Mapping[str, int] = field(default_factory=dict)  # callerId -> ts ns, 7 days
    script_data: Mapping[str, object] = field(default_factory=dict)  # script -> wd.save data
    sync: Mapping[str, str] = field(default_factory=dict)  # "<server>/<file>" -> sha256
    last_heartbeat_ns: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)  # plug-in reducers' sections

    def to_body(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "cursors": dict(self.cursors),
            "windows": {k: dict(v) for k, v in self.windows.items()},
            "delivered": {k: list(v) for k, v in self.delivered.items()},
            "caller_ids": dict(self.caller_ids),
            "script_data": dict(self.script_data),
            "sync": dict(self.sync),
            "last_heartbeat_ns": self.last_heartbeat_ns,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, object], seq: int) -> GatewayState:
        def mapping(key: str) -> dict[str, object]:
            value = body.get(key)
            return dict(value) if isinstance(value, dict) else {}

        heartbeat = body.get("last_heartbeat_ns")
        return cls(
            seq=seq,
            cursors={k: int(v) for k, v in mapping("cursors").items()},  # type: ignore[call-overload]
            windows={k: dict(v) for k, v in mapping("windows").items() if isinstance(v, dict)},
            delivered={k: tuple(v) for k, v in mapping("delivered").items()
                       if isinstance(v, list)},
            caller_ids={k: int(v) for k, v in mapping("caller_ids").items()},  # type: ignore[call-overload]
            script_data=mapping("script_data"),
            sync={k: str(v) for k, v in mapping("sync").items()},
            last_heartbeat_ns=int(heartbeat) if isinstance(heartbeat, int) else None,
            extra=mapping("extra"),
        )


Reducer = Callable[[GatewayState, JournalEvent], GatewayState]


class JournalSource(Protocol):
    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: list[str] | None = None, seq_from: int | None = None) -> pa.Table: ...


def _window_id(server: object, stream: object, end: object) -> str:
    return f"{server}/{stream}/{end}"


def reduce_window(state: GatewayState, event: JournalEvent) -> GatewayState:
    body = event.body
    server, stream, end = body.get("server"), body.get("stream"), body.get("end")
    files = body.get("files")
    key = _window_id(server, stream, end)
    if not files:
        # An empty window moves the cursor without a file (spec/behaviour.md §5.1).
        return replace(state, cursors=_advance(state.cursors, f"{server}/{stream}", end))
    return replace(state, windows={**state.windows, key: dict(body)})


def reduce_delivered(state: GatewayState, event: JournalEvent) -> GatewayState:
    body = event.body
    server = body.get("server")
    name = body.get("file", body.get("message"))
    for key, window in state.windows.items():
        if window.get("server") != server:
            continue
        names = [f.get("name") for f in window.get("files", []) if isinstance(f, dict)]  # type: ignore[attr-defined]
        if name not in names:
            continue
        done = tuple(dict.fromkeys((*state.delivered.get(key, ()), str(name))))
        if set(done) >= {str(n) for n in names}:
            windows = {k: v for k, v in state.windows.items() if k != key}
            delivered = {k: v for k, v in state.delivered.items() if k != key}
            cursors = _advance(state.cursors, f"{server}/{window.get('stream')}",
                               window.get("end"))
            return replace(state, windows=windows, delivered=delivered, cursors=cursors)
        return replace(state, delivered={**state.delivered, key: done})
    return state


def reduce_caller_id(state: GatewayState, event: JournalEvent) -> GatewayState:
    caller = event.body.get("callerId")
    if not caller:
        return state
    return replace(state, caller_ids={**state.caller_ids, str(caller): event.ts_ns})


def reduce_scriptdata(state: GatewayState, event: JournalEvent) -> GatewayState:
    script = event.body.get("script")
    if script is None:
        return state
    return replace(state, script_data={**state.script_data, str(script): event.body.get("data")})


def reduce_sync(state: GatewayState, event: JournalEvent) -> GatewayState:
    body = event.body
    key = f"{body.get('server')}/{body.get('file')}"
    return replace(state, sync={**state.sync, key: str(body.get("sha256"))})


def reduce_heartbeat(state: GatewayState, event: JournalEvent) -> GatewayState:
    return replace(state, last_heartbeat_ns=event.ts_ns)


def _advance(cursors: Mapping[str, int], key: str, end: object) -> dict[str, int]:
    out = dict(cursors)
    if isinstance(end, int):
        out[key] = max(out.get(key, end), end)
    return out


DEFAULT_REDUCERS: Final[Mapping[str, Reducer]] = {
    "window": reduce_window,
    "delivered": reduce_delivered,
    "command": reduce_caller_id,
    "result": reduce_caller_id,
    "scriptdata": reduce_scriptdata,
    "sync": reduce_sync,
    "heartbeat": reduce_heartbeat,
}


def events(table: pa.Table) -> list[JournalEvent]:
    """Journal rows as events (bodies parsed); a body that is not JSON becomes `{"raw": text}`."""
    out: list[JournalEvent] = []
    cols = {name: table.column(name).to_pylist() for name in
            ("seq", "kind", "device", "def", "body")}
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    for i in range(table.num_rows):
        text = cols["body"][i]
        try:
            body = json.loads(text)
        except ValueError:
            body = {"raw": text}
        if not isinstance(body, dict):
            body = {"value": body}
        out.append(JournalEvent(seq=cols["seq"][i], ts_ns=ts[i], kind=cols["kind"][i],
                                device=cols["device"][i], def_=cols["def"][i], body=body))
    return out


def replay(source: JournalSource, reducers: Mapping[str, Reducer] | None = None) -> GatewayState:
    """The state after every committed journal event, from the latest `state` event on."""
    chosen = DEFAULT_REDUCERS if reducers is None else reducers
    snapshots = source.journal(kinds=["state"])
    state = GatewayState()
    start = None
    if snapshots.num_rows:
        last = events(snapshots.slice(snapshots.num_rows - 1))[0]
        state = GatewayState.from_body(last.body, last.seq)
        start = last.seq + 1
    table = source.journal(seq_from=start)
    latest_ts = None
    for event in events(table):
        reducer = chosen.get(event.kind)
        if reducer is not None:
            state = reducer(state, event)
        state = replace(state, seq=event.seq)
        latest_ts = event.ts_ns
    if latest_ts is not None:
        cutoff = latest_ts - CALLER_ID_KEEP_NS
        state = replace(state, caller_ids={k: v for k, v in state.caller_ids.items()
                                           if v >= cutoff})
    return state


def latest_state_seq(table: pa.Table) -> int:
    if table.num_rows == 0:
        return 0
    return int(pc.max(table.column("seq")).as_py())
