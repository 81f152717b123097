"""`Device lost` / `Device back` from the records the poll loop stores, and `Storage full` /
`Storage available` from the store's own `storage` events, over a real store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.clock import NS_PER_S, ManualClock
from pipeline.service.alarms import Alarms, DeviceWatch, StorageWatch
from store import FullPolicy, Log, StoreOptions

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

T0 = 1_767_571_200


def record(t_s: int, quality: int, rows: int = 8) -> pa.RecordBatch:
    return pa.record_batch({
        "ts": pa.array([t_s * NS_PER_S] * rows, pa.timestamp("ns", tz="UTC")),
        "var": pa.array(range(1, rows + 1), pa.int32()),
        "value": pa.array([1.0 if quality in (0, 7) else None] * rows, pa.float64()),
        "vmin": pa.array([None] * rows, pa.float64()),
        "vmax": pa.array([None] * rows, pa.float64()),
        "text": pa.array([None] * rows, pa.string()),
        "quality": pa.array([quality] * rows, pa.uint8()),
        "def": pa.array(["0" * 64 + ":x.csv"] * rows).dictionary_encode(),
    })


def gateway_alarms(log: Log) -> list[tuple[int, str, str | None]]:
    table = log.journal(kinds=["alarm"]).sort_by("seq")
    bodies = [json.loads(b) for b in table.column("body").to_pylist()]
    times = table.column("ts").cast(pa.int64()).to_pylist()
    return [(t // NS_PER_S, b["alarm"], b.get("subject")) for t, b in zip(times, bodies,
                                                                         strict=True)]


async def test_device_lost_after_three_bad_periods_and_back(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        sessions: list[int] = []
        alarms = Alarms(log, ManualClock(T0 * NS_PER_S), lambda: sessions.append(1))
        watch = DeviceWatch(alarms, {"1": "inv_a"})
        qualities = [0, 1, 5, 0, 1, 1, 5, 5, 1, 7, 1]   # lost at the 3rd bad in a row, once
        for k, quality in enumerate(qualities):
            alarm = watch.record("1", quality in (0, 7), (T0 + 10 * k) * NS_PER_S)
            if alarm is not None:
                await alarm
        got = gateway_alarms(log)
    assert got == [(T0 + 60, "Device lost", "inv_a"), (T0 + 90, "Device back", "inv_a")]
    assert len(sessions) == 2


async def test_storage_full_and_available_from_the_store_events(tmp_path: Path) -> None:
    clock = ManualClock(T0 * NS_PER_S)
    options = StoreOptions(flush_s=0.005, device_quota_bytes=40_000, full_policy=FullPolicy.STOP)
    async with await Log.open(tmp_path, options) as log:
        alarms = Alarms(log, clock, lambda: None)
        watch = asyncio.create_task(StorageWatch(log, alarms, clock,
                                                 lambda: {"5": "meter"}).run())
        delivered = False
        log.set_delivery_predicates(lambda device, seq, ts: delivered)
        results = [await log.append_records("5", record(T0 + i, 0)) for i in range(120)]
        assert any(r.dropped for r in results)
        delivered = True                  # the server has them now: the quota may delete
        await log.append_records("5", record(T0 + 200, 0))
        await log.commit()
        await clock.advance(10)
        async with asyncio.timeout(5):
            while len(gateway_alarms(log)) < 2:
                await asyncio.sleep(0.02)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        got = gateway_alarms(log)
        storage = log.journal(kinds=["storage"]).sort_by("seq")
        times = storage.column("ts").cast(pa.int64()).to_pylist()
    assert [(a, s) for _, a, s in got] == [("Storage full", "meter"),
                                          ("Storage available", "meter")]
    assert [t for t, _, _ in got] == [t // NS_PER_S for t in times[:2]]
