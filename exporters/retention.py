"""What the quota may delete: the outbox's delivery state as the store's predicates (docs/behaviour.md §6).

The store deletes a device's sealed segment to make room only when every record in it is
delivered to every data-receiving server, and a journal segment only when every event in it that
some server gets is delivered (plus a later `state` event, which the store asks of
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
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from config.errors import SunpmError
from config.model import ServerSettings, ServerType
from store import DeliveredFn, JournalDeliveredFn, Watermark
from store.delivery import (
    FILE_SERVER_STREAMS,
    JOURNAL_STREAM_KINDS,
    BuiltWindow,
    DeliveryState,
    Stream,
    StreamDelivery,
)
from store.state import replay
from store.traces import TraceDeliveredFn

from .outbox import JournalLog

__all__ = ["DeliveryLog", "DeliveryMarks", "DeliveryTracker",
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


@dataclass(slots=True)
class _Progress:
    state: DeliveryState = field(default_factory=DeliveryState)
    through: dict[tuple[int, Stream], int] = field(default_factory=dict)
    passed: dict[tuple[int, Stream], int] = field(default_factory=dict)   # cursor window's end
    seen_seq: int | None = None      # last journal seq folded in by `refresh`


class DeliveryTracker:
    """Keeps `DeliveryMarks` current for the store's quota (docs/behaviour.md §6).

    `refresh()` (blocking) reads what the journal says since the last call; `observe()` (cheap,
    no I/O) folds in a `window` or `delivered` event as the outbox journals it (`TrackingJournal`
    calls it). The predicates read `marks` once per call and take no lock.
    """

    def __init__(self, log: DeliveryLog, scopes: Sequence[ServerScope]) -> None:
        self._log = log
        self.scopes = tuple(scopes)
        self._window_keys = [(sc.server, s) for sc in self.scopes for s in sc.window_streams]
        self._journal_keys = [(sc.server, s) for sc in self.scopes for s in sc.window_streams
                              if s in JOURNAL_STREAM_KINDS]
        self._event_keys = [(sc.server, s) for sc in self.scopes for s in sc.event_streams]
        self._updating = threading.Lock()    # writers only: the loop's observe, refresh threads
        self._refreshing = threading.Lock()  # one refresh at a time
        self._progress = _Progress()
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
        state included, so journal segments can go without losing it."""
        return replay(self._log).to_body()

    # ----- keeping current

    def observe(self, kind: str, body: Mapping[str, Any], seq: int) -> None:
        """Fold in one acknowledged `window` or `delivered` event (no I/O)."""
        if kind not in ("window", "delivered"):
            return
        with self._updating:
            self._fold(kind, body, seq)
            self._publish()

    def refresh(self) -> DeliveryMarks:
        """Read the journal since the last refresh and recompute the marks (blocking).

        The reads run outside the lock `observe` takes, so the event loop never waits on them.
        """
        with self._refreshing:
            with self._updating:
                p = self._progress
                seen = p.seen_seq
                starts = {key: max(p.through.get(key, 0), p.state.events.get(key, 0))
                          for key in (*self._journal_keys, *self._event_keys)}
            watermark = self._log.watermark().journal
            if seen is None:
                table = self._log.journal(kinds=["state", "window", "delivered"])
            else:
                table = self._log.journal(kinds=["window", "delivered"], seq_from=seen + 1)
            stream_rows = {key: self._stream_rows(key, starts[key], watermark)
                           for key in starts}
            seqs = table.column("seq")
            read_up_to = max(watermark, int(pc.max(seqs).as_py()) if len(seqs) else 0)
            with self._updating:
                if seen is None:
                    p.state = DeliveryState.from_table(table)
                    for key, seq in p.state.events.items():
                        p.through[key] = max(p.through.get(key, 0), seq)
                else:
                    table = table.sort_by("seq")
                    for kind, body, seq in zip(table.column("kind").to_pylist(),
                                               table.column("body").to_pylist(),
                                               table.column("seq").to_pylist(), strict=True):
                        self._fold(str(kind), json.loads(body), int(seq))
                p.seen_seq = max(p.seen_seq or 0, read_up_to)
                self._publish()
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
        """`log` for the outboxes and MQTT sessions, telling this tracker of each delivery.

        A `FileServerSession` keeps the store itself: its deliveries go through its outbox, and
        it needs the store's `put_config` for configuration snapshots.
        """
        return TrackingJournal(log, self)

    # ----- internals (under `_updating`)

    def _fold(self, kind: str, body: Mapping[str, Any], seq: int) -> None:
        p = self._progress
        key = (int(body["server"]), Stream(body["stream"]))
        if kind == "delivered" and "event" in body:
            p.through[key] = max(p.through.get(key, 0), int(body["event"]))
            p.state.reduce(kind, body, seq)
            return
        passed = p.passed.get(key)
        end = int(body["end"])
        # Windows behind the cursor were pruned and the cursor's own is kept: a refresh reading
        # their events again must not bring them back, nor move one after newer windows.
        if passed is not None and (end < passed or (kind == "window" and end == passed)):
            return
        p.state.reduce(kind, body, seq)
        if kind == "window":
            sd = p.state.stream(*key)
            sd.windows.sort(key=lambda w: w.spec.end_ns)

    def _publish(self) -> None:
        p = self._progress
        windows: dict[tuple[int, Stream], WindowMark | None] = {}
        for key in self._window_keys:
            windows[key] = self._cursor_window(key, p.state.stream(*key))
        data = tuple(windows[(sc.server, Stream.DATA)] for sc in self.scopes if sc.receives_data)
        journal = [JournalMark(server=k[0], stream=k[1], through_seq=p.through.get(k, 0),
                               window=windows[k]) for k in self._journal_keys]
        journal += [JournalMark(server=k[0], stream=k[1], through_seq=p.through.get(k, 0))
                    for k in self._event_keys]
        self._marks = DeliveryMarks(data=data, journal=tuple(journal))

    def _cursor_window(self, key: tuple[int, Stream], sd: StreamDelivery) -> WindowMark | None:
        """The cursor's window (pruning the delivered ones before it), or None."""
        window = sd.prune()
        if window is None:
            return None
        self._progress.passed[key] = window.spec.end_ns
        return WindowMark.of(window)

    def _stream_rows(self, key: tuple[int, Stream], start: int,
                     watermark: int) -> list[tuple[int, int]]:
        """(seq, time) of the events after `start` a stream delivers (blocking read)."""
        event_stream = key in self._event_keys
        # MQTT sends alarms (ALARM) and results (ACK): the kinds of the file streams of the same
        # name.
        kinds = list(JOURNAL_STREAM_KINDS[key[1]])
        table = self._log.journal(kinds=kinds, seq_from=start + 1)
        rows = []
        for seq, ts, kind, body in zip(table.column("seq").to_pylist(),
                                       table.column("ts").cast(pa.int64()).to_pylist(),
                                       table.column("kind").to_pylist(),
                                       table.column("body").to_pylist(), strict=True):
            if not start < seq <= watermark:
                continue
            # The MQTT session skips other channels' results for good (exporters.session).
            if event_stream and kind == "result" and \
                    json.loads(body).get("channel") != _MQTT_CHANNEL:
                continue
            rows.append((int(seq), int(ts)))
        return rows

    def _advance(self, key: tuple[int, Stream], rows: list[tuple[int, int]], start: int,
                 watermark: int) -> None:
        """`through_seq`: just before the stream's oldest event not delivered, else the watermark.

        File servers: not in a delivered window. MQTT alarms and results: after the last one
        acknowledged.
        """
        p = self._progress
        if key in self._event_keys:
            acked = p.state.events.get(key, 0)
            pending = [seq for seq, _ in rows if seq > acked]
        else:
            mark = self._cursor_window(key, p.state.stream(*key))
            pending = [seq for seq, ts in rows if mark is None or not mark.covers_events(seq, ts)]
        p.through[key] = max(p.through.get(key, 0), start,
                             min(pending) - 1 if pending else watermark)


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

    def journal(self, *, kinds: Sequence[str] | None = None,
                seq_from: int | None = None) -> pa.Table:
        return self._log.journal(kinds=kinds, seq_from=seq_from)


def install_retention(store: QuotaLog, servers: Iterable[ServerSettings], *,
                      mqtt_alarms: bool = True) -> DeliveryTracker:
    """Install on `store` the quota's delivery predicates and the `state` provider for the
    configured servers (blocking: reads the journal once). Give `tracker.journal_log(store)` to
    the outboxes and MQTT sessions, and run `tracker.run()` beside them.

    With no data-receiving server any records segment may go (docs/behaviour.md §6); with no server
    getting journal events, any journal segment with a later `state` event.
    """
    tracker = DeliveryTracker(store, scopes_of(servers, mqtt_alarms=mqtt_alarms))
    tracker.refresh()
    store.set_delivery_predicates(tracker.records_delivered if tracker.receives_data else None,
                                tracker.journal_delivered if tracker.gets_journal else None)
    store.set_state_provider(tracker.state_body)
    log.info("Quota retention installed. data_servers=%d journal_streams=%d",
             sum(sc.receives_data for sc in tracker.scopes), len(tracker.marks.journal))
    return tracker
