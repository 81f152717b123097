"""retention: days of history one device keeps under the 50 MB quota (docs/architecture.md §7).

One Modbus inverter of 100 variables recorded every 10 s and every 600 s, its records generated
day by day and appended through the real store with default options (sealed segments rewritten
with zstd, the quota counting bytes on flash, the oldest sealed segments deleted when it needs
room), until the store has deleted segments for `--after` days. Days held: the span of record
times the device's segments hold, at its smallest at the end of each of those days (a deletion
frees up to a segment at once). Against the real box, which counts the CSV text of the same
records against the same 50 MB: its days = quota / the bytes a day of records takes in the
DATA file's text (the project's own view, `exporters.views.data`, docs/formats.md §9).

The plant's values (the compression depends on them): 10 nameplate constants, 10 state words
changing at dawn and dusk, 30 powers and currents following the sun with noise (integers, half
with a scale factor of 0.01), 20 voltages and frequencies near their nominal values (0.1 V,
0.01 Hz), 10 temperatures drifting slowly (0.1 degC), 10 energy counters (Wh), 10 alarm words
(0 but a few times a day). Appends go one hour of records at a time (a live store commits every
second, one record at a time; the rewritten sealed segments are the same, the open segment holds
fewer records per byte).

    python benchmarks/retention.py [--quick]

Prints one docs/style.md §10 line per period, as a cost: `unit` bytes of quota per day of history
held, `ours` = quota / days held, `theirs` = a day's CSV text; `speedup` = how many times the
box's history we hold; `days_held` and `box_days_held` beside them (target: >= 16 days at 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import resource
import tempfile
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from _report import emit, figure_line

from config.model import (
    Action,
    DataType,
    DefinitionFile,
    Device,
    ModbusPoint,
    Protocol,
    RegisterKind,
    Variable,
)
from exporters.views.context import Interface, ViewConfig
from exporters.views.data import data_text_chunks
from store import RECORDS_SCHEMA, Log, StoreOptions
from store._segment import read_ipc_file

NS = 1_000_000_000
DAY_S = 86_400
T0_S = 1_612_483_200  # 2021-02-05 00:00:00 UTC
DEVICE = "1"
QUOTA = StoreOptions().device_quota_bytes
#: (first Index, count, kind)
GROUPS = ((1, 10, "constant"), (11, 10, "state"), (21, 30, "power"), (51, 20, "grid"),
          (71, 10, "temperature"), (81, 10, "energy"), (91, 10, "alarm"))


def definition() -> DefinitionFile:
    rows = []
    for first, count, kind in GROUPS:
        for index in range(first, first + count):
            data_type = DataType.U32 if kind == "energy" else DataType.U16
            scaled = kind in ("grid", "temperature") or (kind == "power" and index % 2 == 0)
            rows.append(Variable(
                line=index + 1, index=index, info1="3", info2=str(40000 + 2 * index),
                info3=data_type.value, info4="", name=f"{kind}{index}", tag="",
                coef_a=Decimal("0.01") if scaled else Decimal(1), coef_b=Decimal(0), unit="",
                action=Action.INSTANT, key=f"{kind}{index}",
                modbus=ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=40000 + 2 * index,
                                   data_type=data_type)))
    return DefinitionFile(file_name="inverter.csv", protocol=Protocol.MODBUS_TCP,
                          category="Inverter", manufacturer="ACME", model="R",
                          variables=tuple(rows), sha256="c" * 64)


class Plant:
    """The inverter's values, period after period (seeded: every run is the same)."""

    def __init__(self) -> None:
        self.rng = random.Random(20210205)
        self.constants = [float(self.rng.randint(1, 60000)) for _ in range(10)]
        self.energy = [float(self.rng.randint(10**6, 10**8)) for _ in range(10)]
        self.temperature = [25.0 + self.rng.uniform(-5, 5) for _ in range(10)]
        self.capacity = [self.rng.uniform(2000, 9000) for _ in range(30)]

    def values(self, t_s: int, period_s: int) -> list[float]:
        rng = self.rng
        hour = (t_s % DAY_S) / 3600
        sun = max(0.0, math.sin(math.pi * (hour - 6) / 14)) if 6 <= hour <= 20 else 0.0
        out = list(self.constants)
        out += [4.0 if sun > 0 else 0.0] * 10
        powers = []
        for k, cap in enumerate(self.capacity):
            raw = round(cap * sun * (1 + rng.gauss(0, 0.03))) if sun > 0 else 0
            powers.append(raw / 100 if k % 2 else float(max(0, raw)))
        out += powers
        out += [round(230 + rng.gauss(0, 1.5), 1) for _ in range(15)]
        out += [round(50 + rng.gauss(0, 0.01), 2) for _ in range(5)]
        for k in range(10):
            self.temperature[k] += rng.gauss(0, 0.05) + (0.02 if sun > 0.3 else -0.02)
        out += [round(v, 1) for v in self.temperature]
        for k in range(10):
            self.energy[k] += round(self.capacity[k] * sun * period_s / 3600)
        out += list(self.energy)
        out += [float(rng.random() < 0.001) for _ in range(10)]
        return out


def day_batches(plant: Plant, day: int, period_s: int, def_id: str, *,
                max_records: int = 360) -> list[pa.RecordBatch]:
    """A day of records as the recorder builds them (quality 0), in batches of many records."""
    start = T0_S + day * DAY_S
    ends = range(start + period_s, start + DAY_S + 1, period_s)
    # up to 36,000 rows an append: an hour at 10 s, a day at 600 s
    per_append = max(1, min(max_records, 3600 // period_s * 24))
    batches = []
    indexes = [v.index for v in definition_variables]
    for first in range(0, len(ends), per_append):
        chunk = ends[first:first + per_append]
        ts: list[int] = []
        values: list[float] = []
        for end in chunk:
            ts += [end * NS] * len(indexes)
            values += plant.values(end, period_s)
        n = len(ts)
        batches.append(pa.RecordBatch.from_arrays([
            pa.array(ts, pa.int64()).cast(RECORDS_SCHEMA.field("ts").type),
            pa.nulls(n, pa.uint64()).fill_null(0),
            pa.array(indexes * len(chunk), pa.int32()),
            pa.array(values, pa.float64()),
            pa.nulls(n, pa.float64()),
            pa.nulls(n, pa.float64()),
            pa.nulls(n, pa.string()),
            pa.repeat(pa.scalar(0, pa.uint8()), n),
            pa.DictionaryArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), n),
                                           pa.array([def_id])),
        ], schema=RECORDS_SCHEMA))
    return batches


definition_variables = definition().variables


def box_bytes_per_day(period_s: int) -> int:
    """The DATA file text of one day of the device's records (what the box counts)."""
    defn = definition()
    table = pa.Table.from_batches(day_batches(Plant(), 0, period_s, defn.snapshot_id))
    # numbered as the store numbers them: a record per (ts) run of rows
    per_record = len(defn.variables)
    table = table.set_column(1, "seq", pa.array(
        [i // per_record + 1 for i in range(table.num_rows)], pa.uint64()))
    config = ViewConfig(uid="WPM00BDE4", time_zone="Europe/Paris", devices=(
        Device(line=1, index=DEVICE, interface="127.0.0.1", name="inv1", address=1),))
    text = data_text_chunks(Interface.MODBUS, {DEVICE: table}, {defn.snapshot_id: defn}, config)
    return sum(len(chunk.encode()) for chunk in text)


def _oldest(device_dir: Path) -> tuple[int, int | None]:
    """First seq and first record time (ns; None if unknown) of the device's oldest segment."""
    segments = sorted((p for p in device_dir.iterdir() if p.suffix in (".arrow", ".arrows")),
                      key=lambda p: int(p.stem))
    first = segments[0]
    if first.suffix != ".arrow":
        return int(first.stem), None
    # Read through the store's verifying reader: a sealed file's time bounds sit in its batches.
    batches, _, _ = read_ipc_file(first, RECORDS_SCHEMA)
    ts = [pc.min(b.column("ts")).cast(pa.int64()).as_py() for b in batches if b.num_rows]
    return int(first.stem), (min(ts) if ts else None)


async def days_held(store: Path, period_s: int, quota: int, after_days: int, max_days: int
                    ) -> dict[str, float]:
    defn = definition()
    plant = Plant()
    held: list[float] = []
    first_deletion_day: int | None = None
    options = StoreOptions(device_quota_bytes=quota)
    # an append's frame well inside a segment (about 60 bytes a row as written)
    max_records = max(1, min(360, options.segment_limit_bytes // (4 * 60 * len(defn.variables))))
    async with await Log.open(store, options) as log:
        for day in range(max_days):
            for batch in day_batches(plant, day, period_s, defn.snapshot_id,
                                     max_records=max_records):
                await log.append_records(DEVICE, batch, commit_now=True)
            stats = log.stats(DEVICE)
            if stats.dropped:
                raise RuntimeError(f"records dropped at day {day}: the quota could not delete")
            seq0, ts_min = _oldest(store / "devices" / DEVICE)
            if seq0 > 1:
                first_deletion_day = day if first_deletion_day is None else first_deletion_day
                assert ts_min is not None
                newest_ns = (T0_S + (day + 1) * DAY_S) * NS
                held.append((newest_ns - ts_min) / NS / DAY_S)
                if day - first_deletion_day >= after_days:
                    break
        usage = log.usage(DEVICE)
        seq0, _ = _oldest(store / "devices" / DEVICE)
        rows = (log.stats(DEVICE).last_seq - seq0 + 1) * len(defn.variables)
    if not held:
        raise RuntimeError(f"the quota was not reached in {max_days} days at {period_s} s")
    return {"days": min(held), "usage": usage, "rows": rows}


def run(periods: tuple[int, ...] = (10, 600), *, quota: int = QUOTA, after_days: int = 3,
        max_days: int = 5000) -> list[dict[str, object]]:
    lines = []
    for period in periods:
        with tempfile.TemporaryDirectory(prefix="retention-") as tmp:
            measured = asyncio.run(days_held(Path(tmp) / "store", period, quota, after_days,
                                             max_days))
        # before the box's figure: its CSV view of a whole day holds far more in memory
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        box_day = box_bytes_per_day(period)
        box_days = quota / box_day
        # As a cost, so that the §10 speedup reads right: quota bytes per day of history held
        # (ours: the quota over the days measured; the box: a day's CSV text). speedup = how
        # many times the box's history we hold.
        line = figure_line(
            "retention", "the box: CSV text of the same records against the same quota",
            "bytes/day held", [quota / measured["days"]], [box_day], digits=None,
            days_held=round(measured["days"], 1), box_days_held=round(box_days, 1),
            period_s=period,
            variables=len(definition_variables), quota_bytes=quota,
            bytes_on_flash_per_value=round(measured["usage"] / measured["rows"], 2),
            box_bytes_per_value=round(box_day / (DAY_S // period * len(definition_variables)),
                                      2),
            peak_rss_mb=round(rss, 1))
        emit(line)
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--after", type=int, default=3,
                        help="days recorded after the first deletion")
    parser.add_argument("--quick", action="store_true", help="smoke size: a 1 MiB quota, 10 s")
    args = parser.parse_args()
    if args.quick:
        run((10,), quota=2**20, after_days=1)
    else:
        run(after_days=args.after)


if __name__ == "__main__":
    main()
