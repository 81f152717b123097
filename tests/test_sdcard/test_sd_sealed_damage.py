"""A flipped byte inside a sealed `.arrow` file of a dump: `sunpm sd sql` leaves its batch out (no
changed value is read as data), names the file, and writes nothing to the dump."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
from plant import hashes, sunpm

from store import Log, StoreOptions
from store._segment import scan_ipc_file
from store.schema import RECORDS_SCHEMA

T0_NS = 1_612_137_600 * 10**9  # 2021-02-01T00:00:00Z
DAY_NS = 86_400 * 10**9
ROWS_A_DAY = 48


def _day(day: int, device: int) -> pa.RecordBatch:
    ts = [T0_NS + day * DAY_NS + k * 1800 * 10**9 for k in range(ROWS_A_DAY)]
    return pa.RecordBatch.from_pydict({
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "var": pa.array([1] * ROWS_A_DAY, pa.int32()),
        "value": pa.array([float(day * 1000 + device * 100 + k) for k in range(ROWS_A_DAY)]),
        "vmin": pa.nulls(ROWS_A_DAY, pa.float64()), "vmax": pa.nulls(ROWS_A_DAY, pa.float64()),
        "text": pa.nulls(ROWS_A_DAY, pa.string()),
        "quality": pa.array([0] * ROWS_A_DAY, pa.uint8()),
        "def": pa.DictionaryArray.from_arrays(pa.array([0] * ROWS_A_DAY, pa.int32()),
                                              pa.array(["0" * 64 + ":meter.csv"])),
    }, schema=pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"]))


async def _build(store: Path) -> None:
    async with await Log.open(store, StoreOptions(flush_s=60)) as log:
        for day in range(4):
            for device in (1, 2):
                await log.append_records(str(device), _day(day, device), commit_now=True)


def test_sql_leaves_out_a_damaged_batch_of_a_sealed_file(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    asyncio.run(_build(dump))
    query = "SELECT device, count(*), sum(raw) FROM records GROUP BY ALL ORDER BY ALL"
    clean = sunpm("sd", "sql", dump, query, "--format", "csv")
    assert clean.code == 0, clean.err
    assert clean.out.splitlines()[1:] == [
        f"{d},{4 * ROWS_A_DAY},{sum(day * 1000 + d * 100 + k for day in range(4) for k in range(ROWS_A_DAY))}.0"
        for d in (1, 2)]
    victim = sorted((dump / "devices" / "1").glob("*.arrow"), key=lambda p: int(p.stem))[1]
    blob = bytearray(victim.read_bytes())
    scan, _ = scan_ipc_file(bytes(blob), RECORDS_SCHEMA)
    assert len(scan.batches) == 1
    blob[scan.batches[0].end - 9] ^= 0x20  # inside its body: the Arrow reader alone reads it
    victim.write_bytes(bytes(blob))
    before = hashes(dump)

    damaged = sunpm("sd", "sql", dump, query, "--format", "csv")
    assert damaged.code == 0, damaged.err
    lost = sum(1000 + 100 + k for k in range(ROWS_A_DAY))
    kept = sum(day * 1000 + 100 + k for day in range(4) for k in range(ROWS_A_DAY)) - lost
    assert damaged.out.splitlines()[1] == f"1,{3 * ROWS_A_DAY},{kept}.0"
    assert damaged.out.splitlines()[2] == clean.out.splitlines()[2]
    assert str(victim) in damaged.err and "error" in damaged.err
    assert hashes(dump) == before
