"""A full disk: a clear error and a journal event, nothing acknowledged lost, nothing corrupted,
appends resume by themselves when space returns.

Two ways to fill a disk: a real 2 MiB tmpfs (needs root, as on our CI machines), and a fault
injected at the `os.pwrite` boundary of the segment writer for machines where mounting is refused.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest
from records_util import T0, record
from small_disks import fill, mounted_tmpfs
from waiting import wait_until

from store import Log, StoreIOError, StoreLockedError, StoreOptions
from store.lockfile import take_lock

OPTIONS = StoreOptions(flush_s=0.01, disk_error_log_interval_s=0.05)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "mnt", "2m") as mount:
        yield mount


async def _scenario(root: Path, fill: object, free: object, caplog: pytest.LogCaptureFixture
                    ) -> None:
    async with await Log.open(root / "store", OPTIONS) as log:
        acked = [await log.append_records("1", record(T0 + i * 10**9, 20, i)) for i in range(5)]
        fill()  # type: ignore[operator]
        waiting = [asyncio.create_task(log.append_records("1", record(T0 + (10 + i) * 10**9, 20,
                                                                        100 + i)))
                   for i in range(30)]
        await wait_until(lambda: log.last_error is not None, 5)
        assert isinstance(log.last_error, StoreIOError)
        assert "No space left on device" in str(log.last_error)
        assert "commit failed" in caplog.text
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in waiting)  # unacknowledged while the disk is full
        # What was acknowledged is intact and readable, and nothing else got in.
        reader = Log.open_read_only(root / "store")
        assert reader.reports == []
        seqs = pc.unique(reader.records("1").column("seq")).to_pylist()
        assert seqs == [r.first for r in acked]
        free()  # type: ignore[operator]
        results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
        assert [r.first for r in results] == list(range(6, 36))
        assert log.last_error is None
        await log.commit()
        bodies = [json.loads(b)["event"] for b in
                  log.journal(kinds=["storage"]).column("body").to_pylist()]
        assert bodies[:2] == ["disk_error", "disk_ok"]
    async with await Log.open(root / "store", OPTIONS) as log:
        assert log.reports == []
        table = log.records("1")
        assert pc.unique(table.column("seq")).to_pylist() == list(range(1, 36))
        assert table.num_rows == 35 * 20


async def test_real_full_disk_is_reported_and_recovered(small_disk: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    filler = small_disk / "filler"
    await _scenario(small_disk, lambda: fill(filler), filler.unlink, caplog)


async def test_injected_enospc_is_reported_and_recovered(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    full = {"on": False}
    real = os.pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if full["on"]:
            # As a real disk does: part of the data lands, then the write fails.
            real(fd, bytes(data)[: max(1, len(data) // 2)], offset)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    # The store's file operations (fsio): the fault sits at their os.pwrite boundary.
    monkeypatch.setattr("fsio.os.pwrite", pwrite)

    def fill() -> None:
        full["on"] = True

    def free() -> None:
        full["on"] = False

    await _scenario(tmp_path, fill, free, caplog)


async def test_while_the_disk_fails_the_oldest_records_are_dropped_past_the_memory_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = {"on": False}
    real = os.pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if full["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr("fsio.os.pwrite", pwrite)
    one = record(T0, 20).get_total_buffer_size()
    options = StoreOptions(flush_s=0.01, max_pending_bytes=5 * one)
    async with await Log.open(tmp_path, options) as log:
        await log.append_records("1", record(T0, 20))
        full["on"] = True
        first = [log.submit_records("1", record(T0 + (1 + i) * 10**9, 20)) for i in range(3)]
        await wait_until(lambda: log.last_error is not None, 5)
        # Past the bound the oldest pending batches give way (journal events never do).
        tasks = [asyncio.create_task(log.append_records("1", record(T0 + (10 + i) * 10**9, 20)))
                 for i in range(4)]
        await wait_until(lambda: sum(f.done() and f.result().dropped for f in first) >= 2, 5)
        dropped = [f for f in first if f.done() and f.result().dropped]
        assert len(dropped) >= 2
        assert log.stats("1").dropped == len(dropped)
        full["on"] = False
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        assert all(not r.dropped for r in results)
        await log.commit()
        events = [json.loads(b) for b in log.journal(kinds=["storage"]).column("body").to_pylist()]
        full_events = [e for e in events if e["event"] == "full" and e.get("device") == "1"]
        assert len(full_events) == 1 and full_events[0]["reason"] == "disk"
        seqs = pc.unique(log.records("1").column("seq")).to_pylist()
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free: dropped records got no number


def test_the_writer_lock_holds_on_a_full_disk(small_disk: Path) -> None:
    """Its pid is a courtesy to a refused second writer: a full disk leaves it out, and the lock
    still refuses that writer (a gateway restarting on a full disk must open its store)."""
    fill(small_disk / "fill")
    fd = take_lock(small_disk / "lock", small_disk)
    try:
        with pytest.raises(StoreLockedError, match="pid unknown"):
            take_lock(small_disk / "lock", small_disk)
    finally:
        os.close(fd)


async def test_a_store_opens_on_a_full_disk_when_its_seqs_file_must_be_written(
        small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A store written before the `seqs` file existed (or one whose file was lost) gets it at its
    # next open: on a full disk that write fails, and the gateway must start all the same
    # (docs/behaviour.md §6), its commit log kept until a checkpoint can write the file.
    root = small_disk / "store"
    async with await Log.open(root, OPTIONS) as log:
        for i in range(5):
            await log.append_records("1", record(T0 + i * 10**9, 20, i))
    (root / "seqs").unlink()
    filler = small_disk / "filler"
    fill(filler)
    async with await Log.open(root, OPTIONS) as log:
        assert "Commit log checkpoint failed" in caplog.text
        assert not (root / "seqs.tmp").exists()
        assert log.watermark().devices["1"] == 5
        filler.unlink()
        got = await log.append_records("1", record(T0 + 10 * 10**9, 20, 10))
        assert got.first == 6
    assert (root / "seqs").exists()
