"""The store's one delivery-state model (exporters.ledger, docs/architecture.md §4.1): one read of
the journal serves every server's outbox, the quota's marks and the `state` snapshots, and what
they say agrees with a replay of the journal through sessions, restarts and journal segments the
quota deleted behind a `state` snapshot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from delivery_support import DemoSource, fill, make_tree

from config.model import ServerSettings, ServerType
from exporters.ledger import DeliveryLedger
from exporters.outbox import JournalLog, Outbox, StreamRefused
from exporters.retention import (
    DeliveryTracker,
    QuotaLog,
    ServerScope,
    WindowMark,
    install_retention,
)
from exporters.transports import DirTransport
from store import Log, StoreOptions
from store.delivery import DELIVERY_KINDS, DeliveryState, Stream
from store.events import Watermark
from store.options import DeliveredFn, JournalDeliveredFn

STREAMS = (Stream.DATA, Stream.ALARM)
#: 2021-02-01 00:00 UTC.
T0 = 1_612_137_600


class CountingStore:
    """The real store, its journal reads recorded: per read, the delivery events it returned."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.reads: list[tuple[str, list[int]]] = []
        self.returned: set[int] = set()    # seqs of every event any read returned

    def _note(self, how: str, table: pa.Table) -> pa.Table:
        kinds = table.column("kind").cast(pa.string()).to_pylist()
        seqs = table.column("seq").to_pylist()
        self.reads.append((how, [s for k, s in zip(kinds, seqs, strict=True)
                                 if k in DELIVERY_KINDS]))
        self.returned.update(seqs)
        return table

    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: Sequence[str] | None = None, seq_from: int | None = None) -> pa.Table:
        return self._note("journal", self.log.journal(start_ns=start_ns, end_ns=end_ns,
                                                      kinds=kinds, seq_from=seq_from))

    def journal_since_latest(self, anchor: str, kinds: Sequence[str] | None = None
                             ) -> pa.Table:
        return self._note("since_latest", self.log.journal_since_latest(anchor, kinds))

    def journal_newest_first(self, kinds: Sequence[str] | None = None) -> Iterator[pa.Table]:
        for table in self.log.journal_newest_first(kinds):
            yield self._note("newest_first", table)

    def watermark(self) -> Watermark:
        return self.log.watermark()

    async def append_journal(self, kind: str, body: Mapping[str, object], **kw: Any) -> int:
        return await self.log.append_journal(kind, body, **kw)

    def set_delivery_predicates(self, records: DeliveredFn | None,
                                journal: JournalDeliveredFn | None = None) -> None:
        self.log.set_delivery_predicates(records, journal)

    def set_state_provider(self, provider: Any) -> None:
        self.log.set_state_provider(provider)


def servers(tmp_path: Path) -> list[ServerSettings]:
    return [ServerSettings(slot=slot, type=ServerType.DIR,
                           dir_path=str(make_tree(tmp_path / f"server{slot}")))
            for slot in (1, 2)]


def outboxes(log: Log, tracker: DeliveryTracker, tmp_path: Path, *,
             journal: JournalLog | None = None, shared: bool = True) -> dict[int, Outbox]:
    """Each server's outbox as the service makes it: on the tracker's journal of the store
    (`journal`: the store as read) and its ledger."""
    return {slot: Outbox(server=slot, log=tracker.journal_log(journal or log),
                         source=DemoSource(log),
                         directory=tmp_path / "outbox" / str(slot), streams=STREAMS,
                         ledger=tracker.ledger if shared else None)
            for slot in (1, 2)}


async def session(log: Log, boxes: Mapping[int, Outbox], settings: Sequence[ServerSettings],
                  k: int, *, down: frozenset[int] = frozenset()) -> None:
    """Two hours of records and an alarm, then a delivery to every server. A server `down`
    has its DATA folder replaced by a file: its DATA windows are built and stay undelivered.

    Sessions go from odd hour to odd hour: one a day spans midnight and builds two windows a
    stream, whose events the ledger observes, then meets again in its next read."""
    start = T0 + 3_600 + k * 7_200
    await fill(log, start, start + 7_200, alarm_every_s=3_600)
    for slot, outbox in boxes.items():
        data = Path(settings[slot - 1].dir_path) / "DATA"
        if slot in down:
            data.rename(data.with_name("DATA.off"))
            data.write_bytes(b"")
        transport = DirTransport(settings[slot - 1])
        await transport.connect()
        try:
            await outbox.deliver(transport, (start + 7_200) * 10**9, two_step=True)
        except StreamRefused:
            assert slot in down
        finally:
            await transport.close()
            if slot in down:
                data.unlink()
                data.with_name("DATA.off").rename(data)


def summary(state: DeliveryState) -> dict[tuple[int, Stream], tuple[object, ...]]:
    """Per server and stream: cursor, last window built, windows pending and their deliveries."""
    out: dict[tuple[int, Stream], tuple[object, ...]] = {}
    for slot in (1, 2):
        for stream in STREAMS:
            sd = state.stream(slot, stream)
            last = sd.last_built
            out[(slot, stream)] = (
                sd.cursor_ns, None if last is None else last.spec.end_ns,
                [(w.spec.end_ns, [f.name for f in w.files]) for w in sd.pending()],
                sorted(d for w in sd.pending() for d in sd.delivered if d[0] == w.spec.end_ns))
    return out


def replayed(log: Log) -> DeliveryState:
    """The whole journal's replay (with its latest `state` event), as re-exports read it."""
    return DeliveryState.from_table(log.journal(kinds=["state", "window", "delivered"]))


def cursor_marks(state: DeliveryState) -> list[WindowMark | None]:
    marks = []
    for slot in (1, 2):
        window = state.stream(slot, Stream.DATA).cursor_window
        marks.append(None if window is None else WindowMark.of(window))
    return marks


async def test_one_read_of_the_journal_serves_every_outbox_and_the_quota_marks_at_start(
        tmp_path: Path) -> None:
    settings = servers(tmp_path)
    path = tmp_path / "store"
    options = StoreOptions(flush_s=0.005)
    async with await Log.open(path, options) as log:
        tracker = await asyncio.to_thread(install_retention, log, settings)
        boxes = outboxes(log, tracker, tmp_path)
        for k in range(4):
            await session(log, boxes, settings, k, down=frozenset({2}) if k == 3 else frozenset())
        await log.write_state_snapshot(await asyncio.to_thread(tracker.state_body))
        for k in range(4, 7):
            await session(log, boxes, settings, k, down=frozenset({2}) if k == 6 else frozenset())
        expected = summary(replayed(log))
        snapshot_seq = log.journal(kinds=["state"]).column("seq")[-1].as_py()
        since = [s for s in log.journal(kinds=list(DELIVERY_KINDS)).column("seq").to_pylist()
                 if s > snapshot_seq]
    assert since and any(v[2] for v in expected.values())   # server 2 has windows pending

    async with await Log.open(path, options) as log:
        counted = CountingStore(log)
        quota_log: QuotaLog = counted
        tracker = await asyncio.to_thread(install_retention, quota_log, settings)
        boxes = outboxes(log, tracker, tmp_path, journal=counted)
        states = [await asyncio.to_thread(boxes[slot].state) for slot in (1, 2)]
        body = await asyncio.to_thread(tracker.state_body)
        plans = [await asyncio.to_thread(boxes[slot].plan, (T0 + 7 * 7_200) * 10**9)
                 for slot in (1, 2)]

        # One read returned delivery events: those since the snapshot, each once.
        returning = [(how, seqs) for how, seqs in counted.reads if seqs]
        assert len(returning) == 1, returning
        assert sorted(returning[0][1]) == since
        # It serves both outboxes, the quota's marks and the next snapshot alike.
        assert all(summary(state) == expected for state in states)
        assert summary(DeliveryState.from_state_body(json.loads(json.dumps(body)))) == expected
        assert list(tracker.marks.data) == cursor_marks(states[0])
        pending = [end for stream in STREAMS for end, _ in expected[(2, stream)][2]]
        assert sorted(p.end_ns for p in plans[1] if p.built is not None) == sorted(pending)
        # A tracker of its own (its own ledger, a whole read) computes the same marks.
        fresh = DeliveryTracker(log, tracker.scopes)
        await asyncio.to_thread(fresh.refresh)
        assert fresh.marks == tracker.marks


async def test_outboxes_and_marks_agree_through_sessions_restarts_and_a_snapshot_with_gc(
        tmp_path: Path) -> None:
    """Sessions with server 2 down now and then, a restart after every third, and a journal
    quota small enough that `state` snapshots are asked for and older segments go."""
    settings = servers(tmp_path)
    path = tmp_path / "store"
    options = StoreOptions(flush_s=0.005, device_quota_bytes=200_000,
                           journal_quota_bytes=30_000)
    k = 0
    for run in range(4):
        async with await Log.open(path, options) as log:
            tracker = await asyncio.to_thread(install_retention, log, settings)
            assert tracker.ledger is DeliveryLedger.of(log)
            boxes = outboxes(log, tracker, tmp_path)
            for _ in range(3):
                down = frozenset({2}) if k % 4 == 2 else frozenset()
                await session(log, boxes, settings, k, down=down)
                for i in range(40):
                    await log.append_journal("heartbeat", {}, ts_ns=(T0 + k * 7_200 + i) * 10**9)
                await log.commit()
                k += 1
                await asyncio.to_thread(tracker.refresh)
                shared = [await asyncio.to_thread(boxes[slot].state) for slot in (1, 2)]
                own = await asyncio.to_thread(DeliveryLedger(log).state)
                expected = summary(replayed(log))
                assert summary(shared[0]) == summary(shared[1]) == summary(own) == expected, \
                    (run, k)
                assert list(tracker.marks.data) == cursor_marks(own), (run, k)
        # The quota has asked for snapshots and deleted segments behind them.
        async with await Log.open(path, options) as log:
            first = log.journal().column("seq")[0].as_py()
            snapshots = log.journal(kinds=["state"]).num_rows
    assert snapshots >= 1 and first > 1


async def test_deliveries_journaled_while_a_snapshot_is_taken_are_kept_after_a_restart(
        tmp_path: Path) -> None:
    """A `state` event is journaled after its body was taken (the quota asks for one on the
    store's writer thread, and it joins the next commit): the deliveries journaled in between
    are in neither the snapshot nor the events after it."""
    settings = servers(tmp_path)
    path = tmp_path / "store"
    options = StoreOptions(flush_s=0.005)
    async with await Log.open(path, options) as log:
        tracker = await asyncio.to_thread(install_retention, log, settings)
        boxes = outboxes(log, tracker, tmp_path)
        await session(log, boxes, settings, 0)
        body = await asyncio.to_thread(tracker.state_body)
        await session(log, boxes, settings, 1, down=frozenset({2}))
        await log.write_state_snapshot(body)
        expected = summary(replayed(log))
    assert expected[(1, Stream.DATA)][0] == (T0 + 3_600 + 2 * 7_200) * 10**9
    async with await Log.open(path, options) as log:
        tracker = await asyncio.to_thread(install_retention, log, settings)
        boxes = outboxes(log, tracker, tmp_path)
        assert summary(await asyncio.to_thread(boxes[1].state)) == expected
        assert list(tracker.marks.data) == cursor_marks(
            await asyncio.to_thread(boxes[2].state))


async def test_at_start_the_marks_read_a_journal_stream_from_its_cursor_window_on(
        tmp_path: Path) -> None:
    """No `through_seq` survives a restart: the marks find the oldest event not delivered from
    the cursor window's watermark on (and, apart, among the events it covers, those timed from
    its end on), not from the journal's first event."""
    settings = servers(tmp_path)
    scopes = [ServerScope(server=slot, window_streams=STREAMS) for slot in (1, 2)]
    path = tmp_path / "store"
    options = StoreOptions(flush_s=0.005)
    async with await Log.open(path, options) as log:
        tracker = DeliveryTracker(log, scopes)
        await asyncio.to_thread(tracker.refresh)
        boxes = outboxes(log, tracker, tmp_path)
        for k in range(4):
            await session(log, boxes, settings, k)
        alarms = log.journal(kinds=["alarm"]).column("seq").to_pylist()
        await asyncio.to_thread(tracker.refresh)
        before = tracker.marks
    async with await Log.open(path, options) as log:
        counted = CountingStore(log)
        fresh = DeliveryTracker(counted, scopes)
        await asyncio.to_thread(fresh.refresh)
        assert fresh.marks == before
        assert all(m.through_seq >= alarms[-1] for m in fresh.marks.journal)
        assert not counted.returned & set(alarms[:-1])
