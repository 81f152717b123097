"""Durable gateway state, rebuilt by replaying the journal (docs/architecture.md §1,
docs/behaviour.md §6).

Nothing but the journal holds durable state. `replay` starts from the body of the latest `state`
event (a snapshot `Log.write_state_snapshot` journals so that older segments can go) and folds
every later event into one `ReplayState`, through one in-place reducer per event kind, then
freezes it as a `GatewayState`. The reducers are the bodies' owners' (`store.events`,
`store.delivery`): `window` and `delivered` fold into the one `DeliveryState`. A plug-in adds or
replaces a kind's reducer and keeps what it needs in `extra[<its name>]` (JSON-able), which
`state` events carry:

    def count(state: ReplayState, event: JournalEvent) -> None:
        state.extra["seen"] = int(state.extra.get("seen", 0)) + 1
    state = replay(log, {**DEFAULT_REDUCERS, "window": count})

A body that does not hold its kind's fields (a foreign or damaged event) is skipped.

The `s0` bodies (`{"module": "<daq index>", "counters": {"1": [<module value>, <total>]}}`) are
kept as `extra["s0"][<module>]`: an S0 total must outlive every `s0` event the journal's quota
drops. Likewise the relay state last commanded (`relay`, `{"state": 0|1}`) as `extra["relay"]`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import pyarrow as pa

from store.delivery import DELIVERY_KINDS, STATE_KEY, DeliveryState
from store.events import EventBodyError, RelayCommanded, S0Saved, ScriptData, SyncedFile

log = logging.getLogger("sunpm.store")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEvent:
    seq: int
    ts_ns: int
    kind: str
    device: str | None
    def_: str | None
    body: Mapping[str, object]


#: The key of the storage-full episodes in a `state` event's body.
STORAGE_KEY: Final = "storage"


@dataclass(slots=True)
class StorageEpisodes:
    """Storage-full episodes as the store's `storage` events tell them (docs/behaviour.md §6):
    the devices (or `journal`) whose episode is open, and per device the records evicted since
    its last `available` (an eviction starts the episode it belongs to: its event comes before
    the `full` one). `state` events keep them, so that a writer's open reads only the `storage`
    events since the latest one (`store.log.Log._restore_episodes`)."""

    open: set[str] = field(default_factory=set)
    evicted: dict[str, int] = field(default_factory=dict)
    seq: int = 0    # the last `storage` event folded

    def fold(self, seq: int, body: Mapping[str, object]) -> None:
        """One `storage` event's body; one folded already (its seq) is not counted again."""
        if seq <= self.seq:
            return
        self.seq = seq
        device = str(body.get("device") or "")
        kind = body.get("event")
        if kind == "full":
            self.open.add(device)
        elif kind == "available":
            self.open.discard(device)
            self.evicted.pop(device, None)
        elif kind == "evicted":
            records = body.get("records")
            self.evicted[device] = self.evicted.get(device, 0) + (
                records if isinstance(records, int) else 0)

    def to_section(self) -> dict[str, object]:
        return {"open": sorted(self.open), "evicted": dict(sorted(self.evicted.items())),
                "seq": self.seq}

    @classmethod
    def from_section(cls, section: object) -> StorageEpisodes | None:
        """What `to_section` kept; None when `section` is not one."""
        if not isinstance(section, Mapping):
            return None
        opened, evicted, seq = section.get("open"), section.get("evicted"), section.get("seq")
        if not isinstance(opened, list) or not isinstance(evicted, Mapping) \
                or not isinstance(seq, int):
            return None
        return cls(open={str(d) for d in opened},
                   evicted={str(d): n for d, n in evicted.items() if isinstance(n, int)},
                   seq=seq)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayState:
    """The replayed state: what must survive a restart (docs/architecture.md §1)."""

    seq: int = 0  # last journal seq folded in
    #: Windows built and delivered per server and stream, from the cursor's window on.
    delivery: DeliveryState = field(default_factory=DeliveryState)
    script_data: Mapping[str, object] = field(default_factory=dict)  # script -> wd.save data
    sync: Mapping[str, str] = field(default_factory=dict)  # "<server>/<tree path>" -> sha256
    last_heartbeat_ns: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)  # plug-in reducers' sections
    #: Storage-full episodes open (`StorageEpisodes.to_section`); None when the replay did not
    #: see every `storage` event (it started from a `state` event written without them).
    storage: Mapping[str, object] | None = None

    def to_body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "seq": self.seq,
            STATE_KEY: self.delivery.to_body(),
            "script_data": dict(self.script_data),
            "sync": dict(self.sync),
            "last_heartbeat_ns": self.last_heartbeat_ns,
            "extra": dict(self.extra),
        }
        if self.storage is not None:
            body[STORAGE_KEY] = dict(self.storage)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, object], seq: int) -> GatewayState:
        def mapping(key: str) -> dict[str, object]:
            value = body.get(key)
            return dict(value) if isinstance(value, dict) else {}

        heartbeat = body.get("last_heartbeat_ns")
        extra = mapping("extra")
        # `state` events written before the delivery state had a section of its own kept it
        # here, as the outbox's plug-in section; it is the delivery section now.
        extra.pop("outbox", None)
        return cls(
            seq=seq,
            delivery=DeliveryState.from_state_body(body),
            script_data=mapping("script_data"),
            sync={k: str(v) for k, v in mapping("sync").items()},
            last_heartbeat_ns=int(heartbeat) if isinstance(heartbeat, int) else None,
            extra=extra,
            storage=mapping(STORAGE_KEY) if isinstance(body.get(STORAGE_KEY), dict) else None,
        )


@dataclass(slots=True, kw_only=True)
class ReplayState:
    """The state under replay, changed in place by the reducers."""

    seq: int
    delivery: DeliveryState
    script_data: dict[str, object]
    sync: dict[str, str]
    last_heartbeat_ns: int | None
    extra: dict[str, object]
    storage: StorageEpisodes | None = None

    @classmethod
    def of(cls, state: GatewayState) -> ReplayState:
        return cls(seq=state.seq, delivery=state.delivery, script_data=dict(state.script_data), sync=dict(state.sync),
                   last_heartbeat_ns=state.last_heartbeat_ns, extra=dict(state.extra),
                   storage=StorageEpisodes.from_section(state.storage))

    def frozen(self) -> GatewayState:
        return GatewayState(seq=self.seq, delivery=self.delivery, script_data=self.script_data, sync=self.sync,
                            last_heartbeat_ns=self.last_heartbeat_ns, extra=self.extra,
                            storage=None if self.storage is None else self.storage.to_section())


#: Folds one event into the state under replay.
Reducer = Callable[[ReplayState, JournalEvent], None]


class JournalSource(Protocol):
    """What replay reads of `store.Log`."""

    def journal(self, *, kinds: list[str] | None = None,
                seq_from: int | None = None) -> pa.Table: ...


@runtime_checkable
class TailSource(JournalSource, Protocol):
    """A source that reads the events since the latest `state` one without reading the rest
    (`store.Log`: newest segment first, stopping at the snapshot)."""

    def journal_since_latest(self, anchor: str, kinds: Sequence[str] | None = None
                             ) -> pa.Table: ...


def since_latest_state(source: JournalSource, kinds: Sequence[str] | None = None) -> pa.Table:
    """The latest `state` event, then every event of `kinds` (None: all) after it, in seq
    order; with no `state` event, every event of `kinds`. One read of the segments since the
    snapshot from `store.Log`; a source with `journal` alone is read twice."""
    if isinstance(source, TailSource):
        return source.journal_since_latest("state", kinds)
    wanted = None if kinds is None else list(kinds)
    snapshots = source.journal(kinds=["state"])
    if not snapshots.num_rows:
        return source.journal(kinds=wanted).sort_by("seq")
    last = snapshots.sort_by("seq").slice(snapshots.num_rows - 1)
    after = source.journal(kinds=wanted, seq_from=int(last.column("seq")[0].as_py()) + 1)
    return pa.concat_tables([last, after.select(last.column_names).cast(last.schema)]
                            ).sort_by("seq")


def reduce_delivery(state: ReplayState, event: JournalEvent) -> None:
    state.delivery.reduce(event.kind, event.body, event.seq)


def reduce_scriptdata(state: ReplayState, event: JournalEvent) -> None:
    saved = ScriptData.from_fields(event.body)
    state.script_data[saved.script] = saved.data


def reduce_sync(state: ReplayState, event: JournalEvent) -> None:
    synced = SyncedFile.from_fields(event.body)
    state.sync[f"{synced.server}/{synced.file}"] = synced.sha256


def reduce_heartbeat(state: ReplayState, event: JournalEvent) -> None:
    state.last_heartbeat_ns = event.ts_ns


def reduce_s0(state: ReplayState, event: JournalEvent) -> None:
    saved = S0Saved.from_fields(event.body)
    counters = saved.to_fields()["counters"]
    kept = state.extra.get("s0")
    state.extra["s0"] = {**kept, saved.module: counters} if isinstance(kept, dict) \
        else {saved.module: counters}


def reduce_relay(state: ReplayState, event: JournalEvent) -> None:
    state.extra["relay"] = RelayCommanded.from_fields(event.body).state


def reduce_storage(state: ReplayState, event: JournalEvent) -> None:
    """Only into a section that saw every earlier `storage` event (see `replay`)."""
    if state.storage is not None:
        state.storage.fold(event.seq, event.body)


DEFAULT_REDUCERS: Final[Mapping[str, Reducer]] = {
    **dict.fromkeys(DELIVERY_KINDS, reduce_delivery),
    "scriptdata": reduce_scriptdata,
    "sync": reduce_sync,
    "heartbeat": reduce_heartbeat,
    "s0": reduce_s0,
    "relay": reduce_relay,
    "storage": reduce_storage,
}

# What a malformed body raises in a reducer: the event is skipped.
_BAD_BODY: Final = (EventBodyError, KeyError, ValueError, TypeError, AttributeError)


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


def replay(source: JournalSource, reducers: Mapping[str, Reducer] | None = None, *,
           kinds: list[str] | None = None) -> GatewayState:
    """The state after every committed journal event, from the latest `state` event on.

    Linear in the number of events. `kinds`: read only these (and `state`), for a caller that
    needs one section (`synced_files`). The delivery state is pruned to the windows from each
    stream's cursor on, as a `state` event keeps it, so a replay started from a snapshot equals
    the full one.
    """
    chosen = DEFAULT_REDUCERS if reducers is None else reducers
    read = events(since_latest_state(source, kinds))
    state = ReplayState.of(GatewayState())
    if read and read[0].kind == "state":
        state = ReplayState.of(GatewayState.from_body(read[0].body, read[0].seq))
        read = read[1:]
    elif chosen.get("storage") is reduce_storage and (kinds is None or "storage" in kinds):
        # From the journal's first event: every `storage` event is folded, so the section
        # is whole (one started from a `state` event written without it stays None).
        state.storage = StorageEpisodes()
    skipped = 0
    for event in read:
        reducer = chosen.get(event.kind)
        if reducer is not None:
            try:
                reducer(state, event)
            except _BAD_BODY:
                skipped += 1
        state.seq = event.seq
    if skipped:
        log.warning("Journal events skipped in replay: their bodies do not hold their kind's "
                    "fields. count=%d", skipped)
    state.delivery.prune()
    return state.frozen()


def synced_files(source: JournalSource, server: int) -> dict[str, str]:
    """Per tree path, the SHA-256 last exchanged with file server `server` (`sync` events)."""
    state = replay(source, {"sync": reduce_sync}, kinds=["sync"])
    prefix = f"{server}/"
    return {key[len(prefix):]: sha for key, sha in state.sync.items() if key.startswith(prefix)}
