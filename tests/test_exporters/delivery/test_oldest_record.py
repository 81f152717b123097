"""The oldest record time a session starts its first DATA window from (`StoreSource.oldest_ns`)
is read from the records' times, a segment at a time, and is still the oldest of what a whole
read returns: across days, after the clock went back, past damage, eviction and devices with
nothing readable. And a gateway restarted on a month of records answers it without holding them
(a process of its own, `oldest_memory_probe.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from exporters.rendering.source import SnapshotResolver, StoreSource
from store import RECORDS_SCHEMA, FullPolicy, Log, StoreOptions
from store.delivery import Stream

S = 10**9
DAY = 86_400 * S
T0 = 1_612_483_200 * S            # a UTC midnight
INPUT = pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"])
DEF = "0" * 64 + ":inverter.csv"
PROBE = Path(__file__).with_name("oldest_memory_probe.py")
ROOT = Path(__file__).resolve().parents[3]


def _record(ts_ns: int, value: float, variables: int = 2) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([
        pa.array([ts_ns] * variables, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(range(1, variables + 1), pa.int32()),
        pa.array([value + v for v in range(variables)], pa.float64()),
        pa.nulls(variables, pa.float64()), pa.nulls(variables, pa.float64()),
        pa.nulls(variables, pa.string()), pa.array([0] * variables, pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0] * variables, pa.int32()), pa.array([DEF]))],
        schema=INPUT)


def _source(log: Log) -> StoreSource:
    unused: Any = None
    return StoreSource(log=log, server=unused, view_config=unused, parse_definition=unused,
                       snapshots=SnapshotResolver(running=""))


def _whole_read_oldest(log: Log) -> int | None:
    """The answer as it was given: the oldest time of each device's whole history."""
    times = [int(pc.min(t.column("ts").cast(pa.int64())).as_py())
             for t in (log.records(dev) for dev in log.devices()) if t.num_rows]
    return min(times) if times else None


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


async def test_oldest_record_is_the_oldest_a_whole_read_returns(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005)
    async with await Log.open(tmp_path, options) as log:
        assert _source(log).oldest_ns(Stream.DATA) is None          # no device yet
        # Device 1: three days (three segments), then a record stamped before all of them
        # (the clock went back), committed into the last segment.
        for day in range(3):
            for k in range(4):
                await log.append_records("1", _record(T0 + day * DAY + k * 60 * S, k))
        await log.append_records("1", _record(T0 + 2 * DAY + 300 * S, 9))
        await log.append_records("1", _record(T0 - 3 * DAY, 9), commit_now=True)
        # Device 2: two days, the first of which (one batch) is damaged below.
        await log.append_records("2", _record(T0 - 6 * DAY, 0), commit_now=True)
        for k in range(4):
            await log.append_records("2", _record(T0 - 5 * DAY + k * S, k))
        # Device 3: one batch, damaged below (a device with nothing readable).
        await log.append_records("3", _record(T0 - 30 * DAY, 1), commit_now=True)
        assert _source(log).oldest_ns(Stream.DATA) == _whole_read_oldest(log) == T0 - 30 * DAY
    for device in ("2", "3"):
        first = min((tmp_path / "devices" / device).iterdir(),
                    key=lambda p: int(p.name.split(".")[0]))
        _flip(first, first.stat().st_size // 2)
    async with await Log.open(tmp_path, options) as log:
        assert log.records("3").num_rows == 0
        assert _source(log).oldest_ns(Stream.DATA) == _whole_read_oldest(log) == T0 - 5 * DAY
        # A second question reads the segments again (their bounds are known by then).
        assert _source(log).oldest_ns(Stream.DATA) == T0 - 5 * DAY


async def test_oldest_record_after_eviction_is_the_oldest_kept(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=40_000,
                           full_policy=FullPolicy.EVICT_OLDEST)
    async with await Log.open(tmp_path, options) as log:
        log.set_delivery_predicates(lambda device, seq_last, ts: False, None)
        for i in range(120):
            await log.append_records("9", _record(T0 + i * S, i, variables=8))
        assert log.stats("9").evicted > 0
        kept = _whole_read_oldest(log)
        assert kept is not None and kept > T0
        assert _source(log).oldest_ns(Stream.DATA) == kept


def test_a_restarted_gateway_finds_a_months_oldest_record_without_holding_the_month(
        tmp_path: Path) -> None:
    """The first session after a start read each device's whole history, every column, for
    its oldest time: for three inverters polled every 10 s over a month, the process rose
    from 75 MB to 320 MB (the 512 MB box's gateway peaked there 2 s after starting). Only
    the times are read now, a segment at a time: some 7 MB."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the peak resident size cannot be reset here (/proc/self/clear_refs)")
    for step in (["fill", str(tmp_path), "3"], ["oldest", str(tmp_path)]):
        done = subprocess.run([sys.executable, str(PROBE), *step], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["oldest_ns"] == 1_780_000_000 * S
    assert figures["peak_mib"] - figures["rest_mib"] < 60, figures
