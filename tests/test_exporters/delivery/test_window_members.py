"""A window's records read by ranges (the minutes since the window before, not the device's
history) are exactly the members a full read selects, late-stamped and late-committed records
included, and every record lands in exactly one window of a chain; the same of journal events."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from exporters.rendering.source import SnapshotResolver, StoreSource
from exporters.views.names import select_journal, select_records
from exporters.views.windows import bounds_of
from store import RECORDS_SCHEMA, Log, StoreOptions
from store.delivery import PreviousWindow, Stream, WindowSpec
from store.events import Watermark, journal_items

S = 10**9
T0 = 1_612_483_200 * S
INPUT = pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"])
DEF = "0" * 64 + ":inverter.csv"


def _record(ts_ns: int, value: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([
        pa.array([ts_ns, ts_ns], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array([1, 2], pa.int32()), pa.array([value, value + 0.5], pa.float64()),
        pa.nulls(2, pa.float64()), pa.nulls(2, pa.float64()), pa.nulls(2, pa.string()),
        pa.array([0, 0], pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0, 0], pa.int32()), pa.array([DEF]))],
        schema=INPUT)


def _source(log: Log) -> StoreSource:
    unused: Any = None
    return StoreSource(log=log, server=unused, view_config=unused, parse_definition=unused,
                       snapshots=unused)


async def test_ranged_members_equal_full_read_members_and_partition_the_records(
        tmp_path: Path) -> None:
    rng = random.Random(7)
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        source = _source(log)
        specs: list[WindowSpec] = []
        after: PreviousWindow | None = None
        clock = T0
        value = 0.0
        for session in range(12):
            for _ in range(rng.randint(0, 6)):
                clock += 10 * S
                # Some records are stamped past the coming cut (committed before the session
                # takes its watermark), some late (a poll answered after the cut).
                stamp = clock + rng.choice([0, 0, 0, 65 * S, -130 * S])
                value += 1
                await log.append_records("1", _record(stamp, value))
            end = clock // S * S + S
            spec = WindowSpec(server=1, stream=Stream.DATA, start_ns=after.end_ns if after
                              else T0, end_ns=end, membership=log.watermark(), after=after,
                              config="")
            specs.append(spec)
            after = PreviousWindow(end_ns=end, membership=spec.membership)
            if session == 5:
                await log.append_records("2", _record(clock, -1.0))   # a device appearing

        full = {dev: log.records(dev) for dev in ("1", "2")}
        seen: dict[str, list[int]] = {"1": [], "2": []}
        for spec in specs:
            window, previous = bounds_of(spec)
            for dev in ("1", "2"):
                ranged = source._members(dev, spec)
                whole = select_records(full[dev], dev, window, previous)
                assert ranged.to_pylist() == whole.to_pylist(), (dev, spec.end_ns)
                seen[dev] += ranged.column("seq").to_pylist()
        last = specs[-1].membership
        for dev in ("1", "2"):
            committed = [s for s, ts in zip(full[dev].column("seq").to_pylist(),
                                            full[dev].column("ts").cast(pa.int64()).to_pylist(),
                                            strict=True)
                         if s <= (last.record_limit(dev) or 0) and ts < specs[-1].end_ns]
            assert sorted(seen[dev]) == sorted(committed), dev


async def test_ranged_events_equal_full_read_events_and_partition_the_journal(
        tmp_path: Path) -> None:
    """The journal's twin: a window's events of its stream's kinds, read since the window
    before, are the events a full read selects, late-stamped and late-committed ones included;
    other kinds are never members."""
    rng = random.Random(11)
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        source = _source(log)
        specs: list[WindowSpec] = []
        after: PreviousWindow | None = None
        clock = T0
        for session in range(12):
            for k in range(rng.randint(0, 6)):
                clock += 10 * S
                stamp = clock + rng.choice([0, 0, 0, 65 * S, -130 * S])
                kind = "alarm" if k % 3 else "heartbeat"
                await log.append_journal(kind, {"n": session * 10 + k}, ts_ns=stamp,
                                         commit_now=True)
            end = clock // S * S + S
            spec = WindowSpec(server=1, stream=Stream.ALARM, start_ns=after.end_ns if after
                              else T0, end_ns=end, membership=log.watermark(), after=after,
                              config="")
            specs.append(spec)
            after = PreviousWindow(end_ns=end, membership=spec.membership)

        full = log.journal(kinds=["alarm"])
        seen: list[int] = []
        for spec in specs:
            window, previous = bounds_of(spec)
            ranged = [(i.seq, i.body) for i in source._events(spec)]
            whole = [(i.seq, i.body) for i in
                     journal_items(select_journal(full, window, previous))]
            assert ranged == whole, spec.end_ns
            seen += [seq for seq, _ in ranged]
        limit = specs[-1].membership.journal or 0
        expected = [s for s, ts in zip(full.column("seq").to_pylist(),
                                       full.column("ts").cast(pa.int64()).to_pylist(),
                                       strict=True) if s <= limit and ts < specs[-1].end_ns]
        assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
        assert len(seen) > 10


async def test_snapshot_in_force_follows_config_events_read_once(tmp_path: Path) -> None:
    """Each window asks which configuration was in force at its end: the answer follows the
    `config` events, those committed after an earlier question included, and each question
    reads only the events since the one before."""
    reads: list[tuple[int | None, int]] = []

    class Counting:
        def __init__(self, log: Log) -> None:
            self.log = log

        def journal(self, **kw: Any) -> pa.Table:
            table = self.log.journal(**kw)
            reads.append((kw.get("seq_from"), table.num_rows))
            return table

        def watermark(self) -> Watermark:
            return self.log.watermark()

    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        counting: Any = Counting(log)
        resolver = SnapshotResolver(running="running")
        assert resolver.at(counting, T0) == "running"
        for k, snapshot in enumerate(("a", "b")):
            await log.append_journal("config", {"snapshot": snapshot, "origin": "local"},
                                     ts_ns=T0 + (k + 1) * 100 * S, commit_now=True)
            await log.append_journal("heartbeat", {}, ts_ns=T0 + (k + 1) * 100 * S + S,
                                     commit_now=True)
        await log.append_journal("config", "not a snapshot", ts_ns=T0 + 250 * S, commit_now=True)
        assert [resolver.at(counting, T0 + t * S) for t in (50, 100, 101, 199, 201, 300)] == \
            ["running", "running", "a", "a", "b", "b"]
        assert reads[1][1] == 3 and all(rows == 0 for _, rows in reads[2:])
        # Read from the first seq, then past the heartbeats (seqs 2 and 4) too.
        assert reads[1][0] == 1 and all(seq == 6 for seq, _ in reads[2:])


async def test_oldest_event_of_a_stream_is_read_once_then_since(tmp_path: Path) -> None:
    """A stream with no window yet asks for its oldest event each session: the answer follows
    the journal, and each question reads only the events committed since the one before."""
    reads: list[tuple[int | None, int]] = []

    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        real_journal = log.journal

        def counting(**kw: Any) -> pa.Table:
            table = real_journal(**kw)
            reads.append((kw.get("seq_from"), table.num_rows))
            return table

        source = _source(log)
        source._log = type("Counting", (), {"journal": staticmethod(counting),
                                             "watermark": staticmethod(log.watermark)})()
        for k in range(5):
            await log.append_journal("heartbeat", {"k": k}, ts_ns=T0 + k * S, commit_now=True)
        assert source.oldest_ns(Stream.ALARM) is None
        await log.append_journal("alarm", {"k": 9}, ts_ns=T0 + 90 * S, commit_now=True)
        await log.append_journal("alarm", {"k": 8}, ts_ns=T0 + 80 * S, commit_now=True)
        assert source.oldest_ns(Stream.ALARM) == T0 + 80 * S
        await log.append_journal("alarm", {"k": 7}, ts_ns=T0 + 85 * S, commit_now=True)
        assert source.oldest_ns(Stream.ALARM) == T0 + 80 * S
        assert [rows for _, rows in reads] == [0, 2, 1]
        # The heartbeats (seqs 1 to 5) are read once, the alarms (6, 7) once.
        assert [seq for seq, _ in reads] == [1, 6, 8]
