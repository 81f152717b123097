"""Durable gateway state, rebuilt by replaying the journal (docs/architecture.md §1,
docs/behaviour.md §6).

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
    s0         {"module": "<daq index>", "counters": {"1": [<module value>, <total>]}}
               (kept as `extra["s0"][<module>]`: a total must outlive every `s0` event)
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
        # An empty window moves the cursor without a file (docs/behaviour.md §5.1).
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


def reduce_s0(state: GatewayState, event: JournalEvent) -> GatewayState:
    module, counters = event.body.get("module"), event.body.get("counters")
    if not isinstance(module, str) or not isinstance(counters, dict):
        return state
    saved = state.extra.get("s0")
    modules = {**saved, module: counters} if isinstance(saved, dict) else {module: counters}
    return replace(state, extra={**state.extra, "s0": modules})


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
    "s0": reduce_s0,
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
    """The state after every committed journal event, from the latest `state` event on.

    Linear in the number of events: the default reducers' work is done by mutating one working
    copy (`_Fold`), with the open windows indexed by file name, and the state is frozen once at
    the end. A plug-in reducer receives a `GatewayState` sharing that copy's mappings, so it must
    not keep the state it is given beyond the call (reducers are pure; none does).
    """
    chosen = DEFAULT_REDUCERS if reducers is None else reducers
    snapshots = source.journal(kinds=["state"])
    fold = _Fold.of(GatewayState())
    start = None
    if snapshots.num_rows:
        last = events(snapshots.slice(snapshots.num_rows - 1))[0]
        fold = _Fold.of(GatewayState.from_body(last.body, last.seq))
        start = last.seq + 1
    table = source.journal(seq_from=start)
    latest_ts = None
    for event in events(table):
        reducer = chosen.get(event.kind)
        if reducer is not None:
            fast = _FAST.get(reducer)
            if fast is not None:
                fast(fold, event)
            else:
                fold.adopt(reducer(fold.state(), event))
        fold.seq = event.seq
        latest_ts = event.ts_ns
    if latest_ts is not None:
        cutoff = latest_ts - CALLER_ID_KEEP_NS
        fold.caller_ids = {k: v for k, v in fold.caller_ids.items() if v >= cutoff}
    return fold.state()


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _file_names(window: Mapping[str, object]) -> list[object]:
    files = window.get("files", [])
    if not isinstance(files, list | tuple):
        return []
    return [f.get("name") for f in files if isinstance(f, dict)]


@dataclass(slots=True)
class _Fold:
    """The state under replay, mutable; `by_file` indexes the open windows:
    (server, file name) -> window ids holding it, in the order they were indexed."""

    seq: int
    cursors: dict[str, int]
    windows: dict[str, Mapping[str, object]]
    delivered: dict[str, tuple[str, ...]]
    caller_ids: dict[str, int]
    script_data: dict[str, object]
    sync: dict[str, str]
    last_heartbeat_ns: int | None
    extra: dict[str, object]
    by_file: dict[tuple[object, object], list[str]] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)   # window id -> insertion rank
    ranks: int = 0

    @classmethod
    def of(cls, state: GatewayState) -> _Fold:
        fold = cls(seq=state.seq, cursors=dict(state.cursors), windows=dict(state.windows),
                   delivered=dict(state.delivered), caller_ids=dict(state.caller_ids),
                   script_data=dict(state.script_data), sync=dict(state.sync),
                   last_heartbeat_ns=state.last_heartbeat_ns, extra=dict(state.extra))
        fold.reindex()
        return fold

    def state(self) -> GatewayState:
        return GatewayState(seq=self.seq, cursors=self.cursors, windows=self.windows,
                            delivered=self.delivered, caller_ids=self.caller_ids,
                            script_data=self.script_data, sync=self.sync,
                            last_heartbeat_ns=self.last_heartbeat_ns, extra=self.extra)

    def adopt(self, new: GatewayState) -> None:
        """Take a plug-in reducer's result; a mapping it replaced is copied (it may be shared)."""
        self.seq = new.seq
        self.last_heartbeat_ns = new.last_heartbeat_ns
        if new.cursors is not self.cursors:
            self.cursors = dict(new.cursors)
        if new.delivered is not self.delivered:
            self.delivered = dict(new.delivered)
        if new.caller_ids is not self.caller_ids:
            self.caller_ids = dict(new.caller_ids)
        if new.script_data is not self.script_data:
            self.script_data = dict(new.script_data)
        if new.sync is not self.sync:
            self.sync = dict(new.sync)
        if new.extra is not self.extra:
            self.extra = dict(new.extra)
        if new.windows is not self.windows:
            self.windows = dict(new.windows)
            self.reindex()

    def reindex(self) -> None:
        self.by_file, self.position, self.ranks = {}, {}, 0
        for key in self.windows:
            self.index(key)

    def index(self, key: str) -> None:
        if key not in self.position:
            self.position[key] = self.ranks
            self.ranks += 1
        server = self.windows[key].get("server")
        if not _hashable(server):
            return      # a malformed body: no delivery can name it
        for name in _file_names(self.windows[key]):
            if _hashable(name):
                keys = self.by_file.setdefault((server, name), [])
                if key not in keys:
                    keys.append(key)

    def window_of(self, server: object, name: object) -> str | None:
        """The first open window (in insertion order) of `server` listing file `name`."""
        if not (_hashable(server) and _hashable(name)):
            return None
        keys = self.by_file.get((server, name))
        if not keys:
            return None
        live = [k for k in keys if k in self.windows and self.windows[k].get("server") == server
                and name in _file_names(self.windows[k])]
        if len(live) != len(keys):       # drop entries of windows gone or replaced
            if live:
                self.by_file[(server, name)] = list(dict.fromkeys(live))
            else:
                del self.by_file[(server, name)]
        return min(live, key=self.position.__getitem__, default=None)


def _fast_window(fold: _Fold, event: JournalEvent) -> None:
    body = event.body
    server, stream, end = body.get("server"), body.get("stream"), body.get("end")
    if not body.get("files"):
        _advance_in_place(fold.cursors, f"{server}/{stream}", end)
        return
    key = _window_id(server, stream, end)
    fold.windows[key] = dict(body)
    fold.index(key)


def _fast_delivered(fold: _Fold, event: JournalEvent) -> None:
    body = event.body
    server = body.get("server")
    name = body.get("file", body.get("message"))
    key = fold.window_of(server, name)
    if key is None:
        return
    window = fold.windows[key]
    names = _file_names(window)
    done = tuple(dict.fromkeys((*fold.delivered.get(key, ()), str(name))))
    if set(done) >= {str(n) for n in names}:
        del fold.windows[key]
        fold.delivered.pop(key, None)
        fold.position.pop(key, None)
        _advance_in_place(fold.cursors, f"{server}/{window.get('stream')}", window.get("end"))
    else:
        fold.delivered[key] = done


def _fast_caller_id(fold: _Fold, event: JournalEvent) -> None:
    caller = event.body.get("callerId")
    if caller:
        fold.caller_ids[str(caller)] = event.ts_ns


def _fast_scriptdata(fold: _Fold, event: JournalEvent) -> None:
    script = event.body.get("script")
    if script is not None:
        fold.script_data[str(script)] = event.body.get("data")


def _fast_sync(fold: _Fold, event: JournalEvent) -> None:
    body = event.body
    fold.sync[f"{body.get('server')}/{body.get('file')}"] = str(body.get("sha256"))


def _fast_heartbeat(fold: _Fold, event: JournalEvent) -> None:
    fold.last_heartbeat_ns = event.ts_ns


def _advance_in_place(cursors: dict[str, int], key: str, end: object) -> None:
    if isinstance(end, int):
        cursors[key] = max(cursors.get(key, end), end)


# The default reducers' in-place twins, chosen by identity: a plug-in replacing a kind's reducer
# gets its own function called instead.
_FAST: Final[Mapping[Reducer, Callable[[_Fold, JournalEvent], None]]] = {
    reduce_window: _fast_window,
    reduce_delivered: _fast_delivered,
    reduce_caller_id: _fast_caller_id,
    reduce_scriptdata: _fast_scriptdata,
    reduce_sync: _fast_sync,
    reduce_heartbeat: _fast_heartbeat,
}


def latest_state_seq(table: pa.Table) -> int:
    if table.num_rows == 0:
        return 0
    return int(pc.max(table.column("seq")).as_py())
