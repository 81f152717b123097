"""Fixtures of the delivery tests (outbox, sessions, export): a real store with records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from delivery_support import NS, FtpPeer, ftp_peer, make_tree

from store.log import Log, StoreOptions

DAY = 86_400
#: 2021-02-01 00:00 UTC.
T0 = 1_612_137_600


def records_batch(times_s: list[int], value0: float = 0.0) -> pa.RecordBatch:
    n = len(times_s)
    return pa.record_batch({
        "ts": pa.array([t * NS for t in times_s], pa.timestamp("ns", tz="UTC")),
        "var": pa.array([1] * n, pa.int32()),
        "value": pa.array([value0 + k for k in range(n)], pa.float64()),
        "vmin": pa.array([None] * n, pa.float64()),
        "vmax": pa.array([None] * n, pa.float64()),
        "text": pa.array([None] * n, pa.string()),
        "quality": pa.array([0] * n, pa.uint8()),
        "def": pa.array(["0" * 64 + ":demo.csv"] * n).dictionary_encode(),
    })


async def fill(log: Log, start_s: int, end_s: int, *, devices: tuple[str, ...] = ("1", "2"),
               period_s: int = 600, alarm_every_s: int = 6 * 3600) -> None:
    """Records every `period_s` in `[start, end)` for each device, and alarm events."""
    times = list(range(start_s + period_s, end_s + 1, period_s))
    # One commit for all: each append completes only at the commit holding it.
    appends = [log.append_records(dev, records_batch(times, value0=1000.0 * k))
               for k, dev in enumerate(devices)]
    await asyncio.gather(*appends, log.commit())
    # One commit per UTC day of alarms, as a live gateway journals them by the wall clock (and
    # the store, at the time of writing, read back repeated rows for a commit spanning days).
    alarms = list(range(start_s + alarm_every_s // 2, end_s, alarm_every_s))
    for day in sorted({t // DAY for t in alarms}):
        await asyncio.gather(*[
            log.append_journal("alarm", {"source": "GATEWAY", "alarm": "Power ON"}, ts_ns=t * NS)
            for t in alarms if t // DAY == day], log.commit())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Log]:
    # A short group commit keeps the many acknowledged journal events of a session quick.
    log = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpPeer]:
    root = make_tree(tmp_path / "ftp")
    with ftp_peer(root, tmp_path / "ftp-events.log") as peer:
        yield peer


@pytest.fixture
def ftp_throttled(tmp_path: Path) -> Iterator[FtpPeer]:
    """An FTP peer that takes uploads slowly, so a kill can land in the middle of one."""
    root = make_tree(tmp_path / "ftp")
    with ftp_peer(root, tmp_path / "ftp-events.log", "--chunk-delay-ms", "8") as peer:
        yield peer
