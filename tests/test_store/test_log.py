"""Log: acknowledgement, numbering, reopen, lock, read-only open, foreign files, readers."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from records_util import DAY_NS, T0, record, records

import fsio
from store import (
    RECORDS_SCHEMA,
    Log,
    ReportKind,
    StoreError,
    StoreLockedError,
    StoreOptions,
    StoreReadOnlyError,
)
from store._ipc import schema_message

FAST = StoreOptions(flush_s=0.02)


async def test_appends_are_numbered_gap_free_per_device_and_survive_reopen(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        results = await asyncio.gather(*[
            log.append_records(dev, record(T0 + i * 10**9, first_value=i))
            for i in range(20) for dev in ("1", "2")])
        assert sorted((r.first, r.last) for r in results[::2]) == [(i, i) for i in range(1, 21)]
        assert log.watermark().devices == {"1": 20, "2": 20}
    async with await Log.open(tmp_path, FAST) as log:
        assert log.reports == []
        assert log.watermark().devices == {"1": 20, "2": 20}
        nxt = await log.append_records("1", record(T0 + 100 * 10**9))
        assert (nxt.first, nxt.last) == (21, 21)
        table = log.records("1")
        assert table.num_rows == 21 * 10
        assert pc.unique(table.column("seq")).to_pylist() == list(range(1, 22))


async def test_rows_of_one_batch_with_several_times_are_several_records(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        got = await log.append_records("7", records([T0, T0 + 600 * 10**9, T0 + 1200 * 10**9]))
        assert (got.first, got.last) == (1, 3)
        table = log.records("7", seq_from=2, seq_to=2)
        assert table.num_rows == 10
        assert table.column("ts").cast(pa.int64())[0].as_py() == T0 + 600 * 10**9


async def test_time_window_reads_only_records_inside(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        for i in range(10):
            await log.append_records("1", record(T0 + i * 600 * 10**9, n_vars=2))
        table = log.records("1", start_ns=T0 + 1200 * 10**9, end_ns=T0 + 3000 * 10**9)
        assert pc.unique(table.column("seq")).to_pylist() == [3, 4, 5]


async def test_records_of_two_days_go_to_two_segments(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        await asyncio.gather(
            log.append_records("1", record(T0 + DAY_NS - 10**9)),
            log.append_records("1", record(T0 + DAY_NS)),
        )
    names = sorted(os.listdir(tmp_path / "devices" / "1"))
    assert names == ["1.arrow", "2.arrows"]  # the sealed one rewritten as an IPC file


async def test_segment_seals_at_an_eighth_of_the_quota(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.01, device_quota_bytes=160_000)
    async with await Log.open(tmp_path, options) as log:
        for i in range(60):
            await log.append_records("1", record(T0 + i * 10**9))
        sizes = [p.stat().st_size for p in (tmp_path / "devices" / "1").iterdir()]
    assert len(sizes) > 3
    assert max(sizes) <= 20_000
    async with await Log.open(tmp_path, options) as log:
        assert log.records("1").num_rows == 600


async def test_journal_events_are_numbered_and_read_back_by_kind(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        seqs = [await log.append_journal("heartbeat", {}, ts_ns=T0 + i) for i in range(3)]
        seqs.append(await log.append_journal("log", {"level": "INFO", "message": "é"},
                                             device="3", commit_now=True))
        assert seqs == [1, 2, 3, 4]
        table = log.journal(kinds=["log"])
        assert table.column("body").to_pylist() == ['{"level":"INFO","message":"é"}']
        assert table.column("device").to_pylist() == ["3"]
        assert log.journal(seq_from=3).num_rows == 2
        assert log.watermark().journal == 4


async def test_second_writer_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST):
        with pytest.raises(StoreLockedError, match=r"already open for writing \(pid \d+\)"):
            await Log.open(tmp_path, FAST)
        reader = await Log.open(tmp_path, read_only=True)  # readers are never refused
        with pytest.raises(StoreReadOnlyError):
            await reader.append_journal("log", {})
    async with await Log.open(tmp_path, FAST):
        pass  # the lock goes with the writer


async def test_read_only_open_writes_nothing(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        await log.append_records("1", record(T0))
    seg = tmp_path / "devices" / "1" / "1.arrows"
    seg.write_bytes(seg.read_bytes() + b"\xff\xff\xff\xff\x10\x00")  # a torn tail
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")}
    log = await Log.open(tmp_path, read_only=True)
    assert [r.kind for r in log.reports] == [ReportKind.TORN_TAIL]
    assert "ignored (read-only)" in str(log.reports[0])
    assert log.records("1").num_rows == 10
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")}
    assert before == after


async def test_foreign_and_corrupt_files_are_reported_and_skipped(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        await log.append_records("1", record(T0))
        await log.append_records("2", record(T0))
    (tmp_path / "devices" / "1" / "notes.txt").write_text("hello")
    (tmp_path / "devices" / "stray.bin").write_bytes(b"x")
    (tmp_path / "devices" / "2" / "1.arrows").write_bytes(b"PK\x03\x04 not arrow at all" * 50)
    async with await Log.open(tmp_path, FAST) as log:
        kinds = sorted((r.kind.value, r.path.name) for r in log.reports)
        assert kinds == [("foreign", "1.arrows"), ("foreign", "notes.txt"),
                         ("foreign", "stray.bin")]
        assert all(str(r.path) in str(r) for r in log.reports)
        assert log.records("1").num_rows == 10
        assert log.records("2").num_rows == 0
        got = await log.append_records("2", record(T0 + 10**9))  # the device still records
        assert got.first == 2  # 1 was given to the record the foreign bytes replaced
    assert (tmp_path / "devices" / "2" / "1.arrows.corrupt").exists()


async def test_bad_batches_are_refused_at_the_boundary(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        with pytest.raises(StoreError, match="do not match the records schema"):
            await log.append_records("1", pa.record_batch([pa.array([1])], names=["x"]))
        with pytest.raises(StoreError, match="not a valid device index"):
            await log.append_records("../x", record(T0))
        with pytest.raises(StoreError, match="body is not JSON"):
            await log.append_journal("log", {"x": object()})


async def test_a_body_no_utf8_can_hold_is_refused_alone_not_with_its_commit(
        tmp_path: Path) -> None:
    """A lone surrogate (a command's `"\\udc80"`) passed the boundary and failed the whole group
    commit: every record and event appended with it was lost."""
    async with await Log.open(tmp_path, FAST) as log:
        kept = asyncio.ensure_future(log.append_records("1", record(T0)))
        event = asyncio.ensure_future(log.append_journal("command", {"rpcName": "a.b"}))
        with pytest.raises(StoreError, match="body is not JSON"):
            await log.append_journal("command", {"rpcName": "x.y", "callerId": "\udc80"})
        await log.commit()
        assert (await kept).first == 1 and await event >= 1
        assert log.journal(kinds=["command"]).num_rows == 1


async def test_compressed_sealed_segments_keep_their_records_and_count_bytes_on_flash(
        tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.01, device_quota_bytes=160_000)
    assert options.compress_sealed     # the default (docs/behaviour.md §6)
    async with await Log.open(tmp_path, options) as log:
        for i in range(80):
            await log.append_records("1", record(T0 + i * 10**9, first_value=i))
        await log.commit()
        usage = log.usage("1")
    paths = sorted((tmp_path / "devices" / "1").iterdir(), key=lambda p: int(p.stem))
    assert any(p.suffix == ".arrow" for p in paths) and paths[-1].suffix == ".arrows"
    # sealed files as compressed, the open segment as written: the blocks the directory holds
    assert usage == sum(p.stat().st_blocks * 512 for p in paths)
    sealed = [p for p in paths if p.suffix == ".arrow"]
    written = sum(int(pa.ipc.open_file(pa.memory_map(str(p))).schema.metadata[
        b"sunpm.uncompressed_bytes"]) for p in sealed)
    assert sum(p.stat().st_size for p in sealed) < written / 2
    async with await Log.open(tmp_path, options) as log:
        assert log.usage("1") == usage
        table = log.records("1")
        assert table.num_rows == 800
        assert pc.unique(table.column("seq")).to_pylist() == list(range(1, 81))
        assert (await log.append_records("1", record(T0 + 10**12))).first == 81


async def test_snapshots_are_content_addressed_and_checked(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        ident = log.put_definition("inv.csv", b"1;a;b\n")
        assert ident.endswith(":inv.csv") and len(ident.split(":")[0]) == 64
        assert log.put_definition("inv.csv", b"1;a;b\n") == ident
        assert log.get_definition(ident) == b"1;a;b\n"
        snap = log.put_config({"config.ini": b"[x]\n", "scripts/a.lua": b"--\n"})
        assert log.get_config(snap) == {"config.ini": b"[x]\n", "scripts/a.lua": b"--\n"}
        assert log.put_config({"scripts/a.lua": b"--\n", "config.ini": b"[x]\n"}) == snap
        (tmp_path / "defs" / f"{ident.split(':')[0]}.csv").write_bytes(b"tampered")
        with pytest.raises(StoreError, match="damaged"):
            log.get_definition(ident)


class _CountingOps(fsio.FileOps):
    def __init__(self) -> None:
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


@pytest.mark.parametrize("devices", [10, 254])
async def test_a_commit_fsyncs_once_whatever_the_number_of_devices(tmp_path: Path,
                                                                   devices: int) -> None:
    """The commit log (store/_wal.py): one fsync per commit, not one per touched segment; the
    records are still there after the commit log is replayed by a reopen."""
    ops = _CountingOps()
    with fsio.install(ops):
        async with await Log.open(tmp_path, FAST) as log:
            # The first commit creates each device's directory and segment (fsynced once each).
            await asyncio.gather(*[log.append_records(str(d), record(T0)) for d in range(devices)])
            for step in range(1, 4):
                before = ops.fsyncs
                await asyncio.gather(*[log.append_records(str(d), record(T0 + step * 10**9))
                                       for d in range(devices)])
                assert ops.fsyncs - before == 1
            wal_bytes = (tmp_path / "wal").stat().st_size
            assert wal_bytes > 0
    assert (tmp_path / "wal").stat().st_size == 0  # a clean close checkpoints
    async with await Log.open(tmp_path, FAST) as log:
        assert log.watermark().devices == {str(d): 4 for d in range(devices)}


async def test_a_read_only_open_reads_what_the_commit_log_holds(tmp_path: Path) -> None:
    """Segments whose last frames never reached the disk (here: cut off by hand) come back from
    the commit log: in memory for a read-only open, on disk for a writer's."""
    async with await Log.open(tmp_path, FAST) as log:
        for i in range(5):
            await log.append_records("1", record(T0 + i * 10**9, first_value=i))
        wal_copy = (tmp_path / "wal").read_bytes()
        segment = next((tmp_path / "devices" / "1").iterdir())
        size = segment.stat().st_size
    (tmp_path / "wal").write_bytes(wal_copy)  # as if the close's checkpoint never happened
    os.truncate(segment, size - 300)  # the page cache of the last frames lost
    ro = Log.open_read_only(tmp_path)
    assert pc.unique(ro.records("1").column("seq")).to_pylist() == [1, 2, 3, 4, 5]
    assert segment.stat().st_size == size - 300  # nothing written
    async with await Log.open(tmp_path, FAST) as log:
        assert log.reports == []
        assert pc.unique(log.records("1").column("seq")).to_pylist() == [1, 2, 3, 4, 5]
    assert segment.stat().st_size == size


class _HeldFsync(fsio.FileOps):
    """A disk whose fsyncs wait until released: a commit held at its acknowledgement point."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def fsync(self, fd: int) -> None:
        self.entered.set()
        self.released.wait(10)
        super().fsync(fd)


async def test_appenders_waiting_for_room_go_on_while_a_commit_runs(tmp_path: Path) -> None:
    """Back-pressure bounds what waits for the next commit: once a commit has taken the pending
    appends, appenders that waited for room fill the next one while it runs (not after it); the
    bound holds again for that one, and nothing is acknowledged before its fsync."""
    one = record(T0).get_total_buffer_size()
    options = StoreOptions(flush_s=60.0, max_pending_bytes=3 * one)
    async with await Log.open(tmp_path, options) as log:
        await log.append_records("1", record(T0), commit_now=True)  # directory and segment
        disk = _HeldFsync()
        with fsio.install(disk):
            first = [log.submit_records("1", record(T0 + k * 10**9)) for k in range(1, 5)]
            # Over the bound: waits, and asks for the commit at once (flush_s is a minute).
            await asyncio.wait_for(log.wait_for_room(), 5)
            assert await asyncio.to_thread(disk.entered.wait, 5)
            assert not any(ack.done() for ack in first)
            second = [log.submit_records("1", record(T0 + k * 10**9)) for k in range(5, 9)]
            with pytest.raises(TimeoutError):   # the first commit is held: no room yet
                await asyncio.wait_for(log.wait_for_room(), 0.3)
            assert not any(ack.done() for ack in first + second)
            disk.released.set()
            results = await asyncio.wait_for(asyncio.gather(*first, *second), 10)
    assert [(r.first, r.last, r.dropped) for r in results] == [(k, k, False) for k in range(2, 10)]


async def test_damage_in_the_commit_log_is_reported_and_the_commits_after_it_replayed(
        tmp_path: Path) -> None:
    """A record of the commit log that rotted, with acknowledged records after it: those are
    still replayed (here device 2's frames, whose pages a power cut lost, come back from them)
    and the damage is named with its offset, for a read-only open and a writer's alike (which
    journals it). The log used to end at the first bad record, silently."""
    async with await Log.open(tmp_path, FAST) as log:
        for i in range(3):
            await log.append_records("1", record(T0 + i * 10**9, first_value=i), commit_now=True)
        for i in range(3):
            await log.append_records("2", record(T0 + i * 10**9, first_value=i), commit_now=True)
        wal_copy = bytearray((tmp_path / "wal").read_bytes())
        segment = next((tmp_path / "devices" / "2").iterdir())
        header_and_first = segment.stat().st_size
    records = [m.start() for m in re.finditer(b"SWR1", bytes(wal_copy))]
    assert len(records) == 6, records
    wal_copy[records[1] + 20] ^= 0x01  # inside device 1's second commit
    (tmp_path / "wal").write_bytes(bytes(wal_copy))
    # Device 2's pages lost by the power cut: only its schema message reached the disk.
    os.truncate(segment, len(schema_message(RECORDS_SCHEMA)))
    assert header_and_first > len(schema_message(RECORDS_SCHEMA))
    wal = tmp_path / "wal"
    ro = Log.open_read_only(tmp_path)
    assert [(r.kind, r.path, r.offset) for r in ro.reports] == [
        (ReportKind.DAMAGE, wal, records[1])]
    assert pc.unique(ro.records("2").column("seq")).to_pylist() == [1, 2, 3]
    async with await Log.open(tmp_path, FAST) as log:
        assert [(r.kind, r.path, r.offset, r.length) for r in log.reports] == [
            (ReportKind.DAMAGE, wal, records[1], records[2] - records[1])]
        assert pc.unique(log.records("2").column("seq")).to_pylist() == [1, 2, 3]
        assert pc.unique(log.records("1").column("seq")).to_pylist() == [1, 2, 3]
        await log.append_journal("heartbeat", {}, commit_now=True)
        bodies = log.journal(kinds=["storage"]).column("body").to_pylist()
        assert len(bodies) == 1 and '"path":"wal"' in bodies[0].replace(str(tmp_path) + "/", "")
