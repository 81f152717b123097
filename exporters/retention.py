"""What the quota may delete: the store's delivery state (`exporters.ledger`) as the store's
predicates (docs/behaviour.md §6).

The store deletes a device's sealed segment to make room only when every record in it is
delivered to every data-receiving server, and a journal segment only when every event in it that
some server gets is delivered (plus two later `state` events, which the store asks of
`DeliveryTracker.state_body`). The store asks on its writer threads, several devices at once, so
the answer must be quick, read-only and consistent: it reads one immutable `DeliveryMarks`, which
the tracker replaces whole (one attribute assignment) whenever it learns of a delivery.

Delivered, per server and stream (docs/behaviour.md §5.1): a stream's windows are consecutive, and
an item belongs to the union of its windows up to the cursor's window `C` exactly when its time is
before `C.end` and `C`'s watermark covers its seq (ends and watermarks only grow). A segment whose
last seq and latest time meet that is delivered whole. Journal streams also keep a `through_seq`:
every event of the stream's kinds up to it is delivered (the oldest one not in a delivered window,
minus one, found by `refresh`), so a segment holding only heartbeats and `window` events is not
kept for a stream that has had nothing to send since. MQTT alarms and results go one event at a
time: their `through_seq` is the last acknowledged one, or just before the oldest pending one.

Marks (immutable, swapped whole)::

    DeliveryMarks
      data:    per server receiving DATA   WindowMark | None (nothing delivered yet)
      journal: per (server, journal stream) JournalMark(through_seq, window: WindowMark | None)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import pyarrow as pa

from config.errors import SunpmError
from config.model import ServerSettings, ServerType
from store import DeliveredFn, JournalDeliveredFn, Watermark
from store.delivery import (
    DELIVERY_KINDS,
    FILE_SERVER_STREAMS,
    JOURNAL_STREAM_KINDS,
    BuiltWindow,
    DeliveryState,
    Stream,
    StreamDelivery,
)
from store.state import DEFAULT_REDUCERS, replay
from store.traces import TraceDeliveredFn

from .ledger import DeliveryLedger
from .outbox import JournalLog

__all__ = ["DeliveryLedger", "DeliveryLog", "DeliveryMarks", "DeliveryTracker",
           "JournalMark", "QuotaLog", "ServerScope", "TrackingJournal", "WindowMark",
           "install_retention", "scopes_of", "traces_delivered"]

log = logging.getLogger("sunpm.store")

_MQTT_CHANNEL: Final = "mqtt"


class DeliveryLog(Protocol):
    """What the tracker reads of `store.Log` (blocking reads, off the event loop)."""

    def watermark(self) -> Watermark: ...

    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: Sequence[str] | None = None, seq_from: int | None = None) -> pa.Table: ...


class QuotaLog(DeliveryLog, Protocol):
    """What `install_retention` sets on `store.Log`."""

    def set_delivery_predicates(self, records: DeliveredFn | None,
                                journal: JournalDeliveredFn | None = None) -> None: ...

    def set_state_provider(self, provider: Callable[[], Mapping[str, object]] | None
                           ) -> None: ...


# --------------------------------------------------------------------------- who gets what


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerScope:
    """What one configured server gets: streams in windows, and MQTT events one at a time."""

    server: int
    window_streams: tuple[Stream, ...]
    event_streams: tuple[Stream, ...] = ()   # MQTT: ALARM (alarm events), ACK (MQTT results)

    @property
    def receives_data(self) -> bool:
        return Stream.DATA in self.window_streams


def scopes_of(servers: Iterable[ServerSettings], *,
              mqtt_alarms: bool = True) -> tuple[ServerScope, ...]:
    """The scopes of the configured slots (`SERVER_Type=none` gets nothing, so holds nothing).

    `mqtt_alarms`: whether the service publishes alarms on an MQTT alarm topic (it needs an
    alarm payload for that, exporters.session.MqttSession).
    """
    scopes = []
    for s in servers:
        if s.type is ServerType.NONE:
            continue
        if s.type.is_file_server:
            scopes.append(ServerScope(server=s.slot, window_streams=FILE_SERVER_STREAMS))
            continue
        events = tuple(stream for stream, on in ((Stream.ALARM, bool(s.topic_alarm) and
                                                  mqtt_alarms),
                                                 (Stream.ACK, bool(s.topic_result))) if on)
        windows = (Stream.DATA,) if s.topic_data else ()
        if windows or events:
            scopes.append(ServerScope(server=s.slot, window_streams=windows, event_streams=events))
    return tuple(scopes)


# --------------------------------------------------------------------------- marks


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowMark:
    """A stream's cursor window: everything before `end_ns` that its watermark covers is delivered."""

    end_ns: int
    devices: Mapping[str, int]
    journal_seq: int

    @classmethod
    def of(cls, window: BuiltWindow) -> WindowMark:
        m = window.spec.membership
        return cls(end_ns=window.spec.end_ns, devices=dict(m.devices), journal_seq=m.journal)

    def covers_records(self, device: str, seq_last: int, ts_max_ns: int) -> bool:
        covered = self.devices.get(device)
        return covered is not None and seq_last <= covered and ts_max_ns < self.end_ns

    def covers_events(self, seq_last: int, ts_max_ns: int) -> bool:
        return seq_last <= self.journal_seq and ts_max_ns < self.end_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalMark:
    """One server's journal-fed stream: delivered up to `through_seq`, and the cursor's window."""

    server: int
    stream: Stream
    through_seq: int = 0
    window: WindowMark | None = None

    def covers(self, seq_last: int, ts_max_ns: int) -> bool:
        return seq_last <= self.through_seq or (
            self.window is not None and self.window.covers_events(seq_last, ts_max_ns))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryMarks:
    """How far delivery has come, per server and stream; never changed, only replaced."""

    data: tuple[WindowMark | None, ...] = ()
    journal: tuple[JournalMark, ...] = ()

    def records_delivered(self, device: str, seq_last: int, ts_max_ns: int) -> bool:
        """`store.log.DeliveredFn`: every record of the segment delivered to every server."""
        return all(m is not None and m.covers_records(device, seq_last, ts_max_ns)
                   for m in self.data)

    def journal_delivered(self, seq_last: int, ts_max_ns: int) -> bool:
        """`store.log.JournalDeliveredFn`: every event some server gets delivered to it."""
        return all(m.covers(seq_last, ts_max_ns) for m in self.journal)


# --------------------------------------------------------------------------- the tracker


class DeliveryTracker:
    """Keeps `DeliveryMarks` current for the store's quota (docs/behaviour.md §6), from the
    store's one delivery state (`ledger`, shared with the outboxes).

    `observe()` (cheap, no I/O) folds a `window` or `delivered` event into the ledger as the
    outbox journals it (`TrackingJournal` calls it) and recomputes the marks at once;
    `refresh()` (blocking) has the ledger read what the journal says since its last read, and
    moves each journal stream's `through_seq` past the events delivered since. The predicates
    read `marks` once per call and take no lock.
    """

    def __init__(self, log: DeliveryLog, scopes: Sequence[ServerScope],
                 ledger: DeliveryLedger | None = None) -> None:
        self._log = log
        self.scopes = tuple(scopes)
        self.ledger = ledger if ledger is not None else DeliveryLedger(log)
        self._window_keys = [(sc.server, s) for sc in self.scopes for s in sc.window_streams]
        self._journal_keys = [(sc.server, s) for sc in self.scopes for s in sc.window_streams
                              if s in JOURNAL_STREAM_KINDS]
        self._event_keys = [(sc.server, s) for sc in self.scopes for s in sc.event_streams]
        self._updating = threading.Lock()    # `_changed` (loop or refresh thread), `refresh`
        self._refreshing = threading.Lock()  # one refresh at a time
        self._through: dict[tuple[int, Stream], int] = {}
        # What the marks are made of, as the ledger last said: cursor windows, MQTT acks.
        self._cursors: dict[tuple[int, Stream], WindowMark | None] = {}
        self._acked: dict[tuple[int, Stream], int] = {}
        self._marks = DeliveryMarks(
            data=tuple(None for sc in self.scopes if sc.receives_data),
            journal=tuple(JournalMark(server=k[0], stream=k[1])
                          for k in (*self._journal_keys, *self._event_keys)))

    @property
    def marks(self) -> DeliveryMarks:
        return self._marks

    @property
    def receives_data(self) -> bool:
        return any(sc.receives_data for sc in self.scopes)

    @property
    def gets_journal(self) -> bool:
        return bool(self._journal_keys or self._event_keys)

    # ----- the store's side (its threads): one read of `_marks`, no lock

    def records_delivered(self, device: str, seq_last: int, ts_max_ns: int) -> bool:
        return self._marks.records_delivered(device, seq_last, ts_max_ns)

    def journal_delivered(self, seq_last: int, ts_max_ns: int) -> bool:
        return self._marks.journal_delivered(seq_last, ts_max_ns)

    def state_body(self) -> dict[str, object]:
        """The `state` event's body (store writer thread): the replayed state, its delivery
        section the ledger's, so journal segments can go without losing it. The other
        sections are replayed from the latest `state` event: only the kinds they fold are
        decoded."""
        reached = self._log.watermark().journal
        others = {k: r for k, r in DEFAULT_REDUCERS.items() if k not in DELIVERY_KINDS}
        state = replay(self._log, others, kinds=sorted(others))
        # Read after the replay: the delivery section holds every event up to the body's `seq`
        # at least (more is harmless: a `window` or `delivered` event folds in twice alike).
        return dataclasses.replace(state, delivery=self.ledger.state(),
                                   seq=max(state.seq, reached)).to_body()

    # ----- keeping current

    def observe(self, kind: str, body: Mapping[str, Any], seq: int) -> None:
        """Fold in one acknowledged `window` or `delivered` event and recompute the marks (no
        I/O)."""
        if kind not in DELIVERY_KINDS:
            return
        self.ledger.observe(kind, body, seq)
        self.ledger.apply(self._changed)

    def refresh(self) -> DeliveryMarks:
        """Have the ledger read the journal since its last read, move `through_seq` past what
        is delivered since, and recompute the marks (blocking).

        The reads run outside the lock the ledger's changes take, so the event loop never
        waits on them.
        """
        with self._refreshing:
            self.ledger.refresh()
            self.ledger.apply(self._changed)
            with self._updating:
                starts = {key: max(self._through.get(key, 0), self._acked.get(key, 0))
                          for key in (*self._journal_keys, *self._event_keys)}
                cursors = {key: self._cursors.get(key) for key in self._journal_keys}
            watermark = self._log.watermark().journal
            stream_rows = self._stream_rows(starts, cursors, watermark)
            with self._updating:
                for key, rows in stream_rows.items():
                    self._advance(key, rows, starts[key], watermark)
                self._publish()
                return self._marks

    async def run(self, period_s: float = 60.0) -> None:
        """Refresh every `period_s` (the service's task): carries `through_seq` past heartbeats
        and other events no server gets, so old journal segments can go."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except (SunpmError, OSError, pa.ArrowInvalid) as err:
                # Stale marks only keep more: log and try again at the next period.
                log.warning("Delivery marks not refreshed. error=%s", err)
            await asyncio.sleep(period_s)

    def journal_log(self, log: JournalLog) -> TrackingJournal:
        """`log` for the outboxes and MQTT sessions, telling the ledger of each delivery.

        A `FileServerSession` keeps the store itself: its deliveries go through its outbox, and
        it needs the store's `put_config` for configuration snapshots.
        """
        return TrackingJournal(log, self)

    # ----- internals

    def _changed(self, state: DeliveryState) -> None:
        """The marks of the ledger's state (through `DeliveryLedger.apply`, under its lock)."""
        cursors = {key: _cursor_mark(state.stream(*key)) for key in self._window_keys}
        acked = {key: state.events.get(key, 0) for key in self._event_keys}
        with self._updating:
            self._cursors, self._acked = cursors, acked
            for key, seq in acked.items():
                self._through[key] = max(self._through.get(key, 0), seq)
            self._publish()

    def _publish(self) -> None:
        """Under `_updating`."""
        data = tuple(self._cursors.get((sc.server, Stream.DATA)) for sc in self.scopes
                     if sc.receives_data)
        journal = [JournalMark(server=k[0], stream=k[1], through_seq=self._through.get(k, 0),
                               window=self._cursors.get(k)) for k in self._journal_keys]
        journal += [JournalMark(server=k[0], stream=k[1], through_seq=self._through.get(k, 0))
                    for k in self._event_keys]
        self._marks = DeliveryMarks(data=data, journal=tuple(journal))

    def _stream_rows(self, starts: Mapping[tuple[int, Stream], int],
                     cursors: Mapping[tuple[int, Stream], WindowMark | None],
                     watermark: int) -> dict[tuple[int, Stream], list[tuple[int, int]]]:
        """Per stream, (seq, time) of the events after its start that it delivers and that may
        not be delivered yet (blocking).

        Every stream's in one read of the journal since the oldest of them. A file server's
        stream with a cursor window `C` needs only the events after `C`'s watermark, and those
        covered by it but timed from `C.end` on, read apart by time: the segments older than
        `C` are not read again at each start (a `through_seq` is not kept across restarts).
        """
        out: dict[tuple[int, Stream], list[tuple[int, int]]] = {key: [] for key in starts}
        if not starts:
            return out
        # MQTT sends alarms (ALARM) and results (ACK): the kinds of the file streams of the
        # same name.
        by_kind: dict[str, list[tuple[int, Stream]]] = {}
        for key in starts:
            for kind in JOURNAL_STREAM_KINDS[key[1]]:
                by_kind.setdefault(kind, []).append(key)
        kinds = sorted(by_kind)
        lows = {key: max(start, _journal_seq(cursors.get(key))) for key, start in starts.items()}
        tables = [self._log.journal(kinds=kinds, seq_from=min(lows.values()) + 1)]
        late = [(mark.end_ns, starts[key]) for key, mark in cursors.items()
                if mark is not None and lows[key] > starts[key]]
        if late:
            tables.append(self._log.journal(kinds=kinds, start_ns=min(e for e, _ in late),
                                            seq_from=min(s for _, s in late) + 1))
        seen: set[int] = set()
        for table in tables:
            for seq, ts, kind, body in zip(table.column("seq").to_pylist(),
                                           table.column("ts").cast(pa.int64()).to_pylist(),
                                           table.column("kind").to_pylist(),
                                           table.column("body").to_pylist(), strict=True):
                if seq > watermark or seq in seen:
                    continue
                seen.add(seq)
                channel: object = None
                for key in by_kind[str(kind)]:
                    if not starts[key] < seq:
                        continue
                    # The MQTT session skips other channels' results for good
                    # (exporters.session).
                    if key in self._event_keys and kind == "result":
                        if channel is None:
                            channel = json.loads(body).get("channel")
                        if channel != _MQTT_CHANNEL:
                            continue
                    out[key].append((int(seq), int(ts)))
        return out

    def _advance(self, key: tuple[int, Stream], rows: list[tuple[int, int]], start: int,
                 watermark: int) -> None:
        """`through_seq`: just before the stream's oldest event not delivered, else the watermark.

        File servers: not in a delivered window. MQTT alarms and results: after the last one
        acknowledged. Under `_updating`.
        """
        if key in self._event_keys:
            acked = self._acked.get(key, 0)
            pending = [seq for seq, _ in rows if seq > acked]
        else:
            mark = self._cursors.get(key)
            pending = [seq for seq, ts in rows if mark is None or not mark.covers_events(seq, ts)]
        self._through[key] = max(self._through.get(key, 0), start,
                                 min(pending) - 1 if pending else watermark)


def _journal_seq(mark: WindowMark | None) -> int:
    return 0 if mark is None else mark.journal_seq


def _cursor_mark(sd: StreamDelivery) -> WindowMark | None:
    window = sd.cursor_window
    return None if window is None else WindowMark.of(window)


def traces_delivered(state: DeliveryState, file_servers: Iterable[int]) -> TraceDeliveredFn:
    """`TraceStore.delete_delivered`'s predicate: a trace time is delivered once every file
    server's LOG cursor (end of its last LOG window delivered whole) is past it.

    With no file server, nothing counts as delivered: traces then go only by the cap.
    """
    cursors = [state.stream(slot, Stream.LOG).cursor_ns for slot in file_servers]
    limit = None if not cursors or None in cursors else min(c for c in cursors if c is not None)

    def delivered(interface: str, newest_ns: int) -> bool:
        return limit is not None and newest_ns < limit

    return delivered


class TrackingJournal:
    """A `JournalLog` that tells a `DeliveryTracker` of each acknowledged `window` and
    `delivered` event, so the quota sees a delivery as soon as it is journaled."""

    def __init__(self, log: JournalLog, tracker: DeliveryTracker) -> None:
        self._log = log
        self._tracker = tracker

    async def append_journal(self, kind: str, body: Mapping[str, object], *,
                             device: str | None = None, def_: str | None = None,
                             ts_ns: int | None = None, commit_now: bool = False) -> int:
        seq = await self._log.append_journal(kind, body, device=device, def_=def_, ts_ns=ts_ns,
                                             commit_now=commit_now)
        self._tracker.observe(kind, body, seq)
        return seq

    @property
    def last_error(self) -> BaseException | None:
        """The store's, while its commits fail (`outbox.commits_failing`)."""
        err = getattr(self._log, "last_error", None)
        return err if isinstance(err, BaseException) else None

    def journal(self, *, kinds: Sequence[str] | None = None,
                seq_from: int | None = None) -> pa.Table:
        return self._log.journal(kinds=kinds, seq_from=seq_from)


def install_retention(store: QuotaLog, servers: Iterable[ServerSettings], *,
                      mqtt_alarms: bool = True) -> DeliveryTracker:
    """Install on `store` the quota's delivery predicates and the `state` provider for the
    configured servers (blocking: the first time, the store's ledger reads the journal since
    the latest `state` snapshot; then only what is new). Give `tracker.ledger` and
    `tracker.journal_log(store)` to the outboxes and MQTT sessions, and run `tracker.run()`
    beside them.

    The tracker follows the store's one ledger (`DeliveryLedger.of`): a configuration reload's
    install reads again only the events since the last read.

    With no data-receiving server any records segment may go (docs/behaviour.md §6); with no server
    getting journal events, any journal segment with a later `state` event.
    """
    tracker = DeliveryTracker(store, scopes_of(servers, mqtt_alarms=mqtt_alarms),
                              DeliveryLedger.of(store))
    tracker.refresh()
    store.set_delivery_predicates(tracker.records_delivered if tracker.receives_data else None,
                                tracker.journal_delivered if tracker.gets_journal else None)
    store.set_state_provider(tracker.state_body)
    log.info("Quota retention installed. data_servers=%d journal_streams=%d",
             sum(sc.receives_data for sc in tracker.scopes), len(tracker.marks.journal))
    return tracker
