"""The first ranged read of a store just opened: a sealed file's time bounds are learned by
reading it, so that read walks every file of the device; each is cut to the range as it is read,
and a day of a month's device costs a day, not the month (a 512 MB box reopens its store at each
start; `sunpm export` and the card tools open it fresh every time)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from store import RECORDS_SCHEMA, Log

NS = 1_000_000_000
DAY_NS = 86_400 * NS
T0 = 1_767_225_600 * NS           # 2026-01-01T00:00:00Z
DAYS = 30
PERIOD_S = 10
VARIABLES = 7
ROOT = Path(__file__).resolve().parents[2]

_READER = """
import json, sys
from pathlib import Path
from pipeline.cli import run
run._lean_imports()
run._arrow_on_malloc()
import pyarrow as pa
from store import Log
log = Log.open_read_only(Path(sys.argv[1]))
start = int(sys.argv[2])
day = log.records("1", start_ns=start, end_ns=start + 86_400 * 10**9)
print(json.dumps({"rows": day.num_rows,
                  "arrow_peak_mib": pa.default_memory_pool().max_memory() / 2**20}))
"""


def _month(first: int, count: int) -> pa.RecordBatch:
    rows = count * VARIABLES
    ts = [T0 + (first + k) * PERIOD_S * NS for k in range(count) for _ in range(VARIABLES)]
    return pa.RecordBatch.from_arrays([
        pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array([0] * rows, pa.uint64()),
        pa.array(list(range(1, VARIABLES + 1)) * count, pa.int32()),
        pa.array([float(k % 1000) for k in range(rows)], pa.float64()),
        pa.nulls(rows, pa.float64()),
        pa.nulls(rows, pa.float64()),
        pa.nulls(rows, pa.string()),
        pa.array([0] * rows, pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()),
                                       pa.array(["0" * 64 + ":inverter.csv"])),
    ], schema=RECORDS_SCHEMA)


async def _fill(path: Path) -> None:
    log = await Log.open(path)
    try:
        per_device = DAYS * 86_400 // PERIOD_S
        acks = []
        for first in range(0, per_device, 4_000):
            acks.append(log.submit_records("1", _month(first, min(4_000, per_device - first))))
            await log.wait_for_room()
        await log.commit()
        assert not any(r.dropped for r in await asyncio.gather(*acks))
    finally:
        await log.close()


def test_a_day_of_a_months_device_read_first_holds_a_day(tmp_path: Path) -> None:
    """Every sealed file was read whole and kept until the last one was read, then filtered:
    the first read of a day held the device's month, about 95 MB of Arrow for 7 variables every
    10 s. Now about a day's and a file's."""
    asyncio.run(_fill(tmp_path / "store"))
    assert len(list((tmp_path / "store" / "devices" / "1").glob("*.arrow"))) > DAYS // 2
    done = subprocess.run([sys.executable, "-c", _READER, str(tmp_path / "store"),
                           str(T0 + 15 * DAY_NS)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["rows"] == 86_400 // PERIOD_S * VARIABLES
    assert figures["arrow_peak_mib"] < 30, figures


def test_projected_and_segment_reads_equal_a_full_read(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path / "store"))
    log = Log.open_read_only(tmp_path / "store")
    start = T0 + 10 * DAY_NS + 3_600 * NS
    whole = log.records("1", start_ns=start)
    assert log.records("1", start_ns=start, columns=["ts"]).equals(whole.select(["ts"]))
    assert log.records("1", start_ns=start, end_ns=start + DAY_NS, seq_from=5,
                       columns=["var", "seq"]).equals(
        log.records("1", start_ns=start, end_ns=start + DAY_NS, seq_from=5).select(
            ["var", "seq"]))
    parts = list(log.iter_records("1", start_ns=start, columns=["value", "ts"]))
    assert len(parts) > 1
    assert pa.concat_tables(parts).equals(whole.select(["value", "ts"]))
