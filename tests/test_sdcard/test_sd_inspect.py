"""`sd inspect` per device: records against rows, the time span, the gaps (a step longer than
twice the device's usual one), and devices in their numeric order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa

from sdcard.dump import open_dump
from sdcard.inspect import inspect, render_table
from store import Log, StoreOptions
from store.schema import RECORDS_SCHEMA

T0_NS = 1_612_137_600 * 10**9  # 2021-02-01T00:00:00Z
STEP_NS = 600 * 10**9
VARIABLES = 3


def _records(steps: list[int], device: int) -> pa.RecordBatch:
    """A record of VARIABLES rows at each of `steps` (in 600 s steps from T0)."""
    ts = [T0_NS + k * STEP_NS for k in steps for _ in range(VARIABLES)]
    rows = len(ts)
    return pa.RecordBatch.from_pydict({
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "var": pa.array([v + 1 for _ in steps for v in range(VARIABLES)], pa.int32()),
        "value": pa.array([float(device * 1000 + k) for k in range(rows)]),
        "vmin": pa.nulls(rows, pa.float64()), "vmax": pa.nulls(rows, pa.float64()),
        "text": pa.nulls(rows, pa.string()),
        "quality": pa.array([0] * rows, pa.uint8()),
        "def": pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()),
                                              pa.array(["0" * 64 + ":meter.csv"])),
    }, schema=pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"]))


#: Device 10 misses 6:00 to 8:00 (steps 37..47) and 12:00 to 12:20 (73, 74); 2 and 9 are whole.
HOLES = {10: {*range(37, 48), 73, 74}}


async def _build(store: Path) -> None:
    async with await Log.open(store, StoreOptions(flush_s=60)) as log:
        for device in (10, 2, 9):
            steps = [k for k in range(144) if k not in HOLES.get(device, set())]
            # Two appends, so that the records span two commits (and frames).
            await log.append_records(str(device), _records(steps[:60], device),
                                     commit_now=True)
            await log.append_records(str(device), _records(steps[60:], device),
                                     commit_now=True)


def test_inspect_counts_records_gaps_and_orders_devices(tmp_path: Path) -> None:
    store = tmp_path / "store"
    asyncio.run(_build(store))
    report = inspect(open_dump(store))
    devices = {d["device"]: d for d in report["devices"]}
    assert [d["device"] for d in report["devices"]] == ["2", "9", "10"]
    assert devices["2"]["records"] == 144 and devices["2"]["rows"] == 144 * VARIABLES
    assert devices["10"]["records"] == 144 - 13
    assert devices["2"]["first"] == "2021-02-01T00:00:00Z"
    assert devices["2"]["last"] == "2021-02-01T23:50:00Z"
    assert devices["2"]["gap_count"] == 0 and devices["9"]["gaps"] == []
    assert devices["10"]["gaps"] == [
        {"from": "2021-02-01T06:00:00Z", "to": "2021-02-01T08:00:00Z"},
        {"from": "2021-02-01T12:00:00Z", "to": "2021-02-01T12:30:00Z"},
    ]
    assert devices["10"]["seq_first"] == 1 and devices["10"]["seq_last"] == 131
    assert report["definitions"] == ["0" * 64 + ":meter.csv"]
    assert report["definitions_missing"] == ["0" * 64 + ":meter.csv"]
    table = render_table(report)
    assert "gap  device 10: 2021-02-01T06:00:00Z .. 2021-02-01T08:00:00Z" in table
    assert table.index("\n2 ") < table.index("\n9 ") < table.index("\n10 ")


async def test_a_dump_of_a_store_closed_cleanly_finds_nothing_foreign(tmp_path: Path) -> None:
    # The store's own top-level files (`lock`, `wal`, `seqs`) are not foreign to a dump.
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        await log.append_journal("heartbeat", {}, commit_now=True)
    assert {"lock", "wal", "seqs"} <= {p.name for p in tmp_path.iterdir()}
    assert [f.message for f in open_dump(tmp_path).extra] == []
