"""Benchmark `export_csv` (docs/architecture.md §7): the DATA view of one day for 100 devices x 100
variables.

Workload: 100 Modbus devices sharing one definition of 100 recorded variables (U16/I16 with a
scale factor, U32 counters, F32, and action-2 min/max/mean), one record every 600 s for a day
(144 records, about 1% missing), as the store hands them to the views: one Arrow records table
per device.

Ours: `exporters.views.data.data_file` (§9.3 value text, blocks, deterministic gzip, streamed one
block at a time). Baselines, in the same process, after a warm-up, on the same records:
- `stdlib csv + gzip`: the same rows pivoted in plain Python, each value formatted by the scalar
  §9.3 functions, written with `csv.writer` into `gzip.GzipFile` (level 6); its text is checked
  equal to ours;
- `raw gzip`: `gzip.compress` (level 6) of our decompressed text alone, the floor any writer pays.
Runs are interleaved round by round (the box is shared). Target: within 2x of raw gzip
(`speedup >= 0.5`). Peak memory of ours above the process's
resident size before the run is sampled every 2 ms (`peak_extra_mb`; target < 50 MB); each
line also carries the process's peak while each side ran (`peak_rss_mb`, `theirs_peak_rss_mb`).

    python benchmarks/export_csv.py [--devices 100] [--variables 100] [--period 600] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import io
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

# Run as a script: this checkout's packages, not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory import PeakRss
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
from exporters.views.data import data_file
from exporters.views.numbers import format_float32, format_float64
from store.schema import RECORDS_SCHEMA

DAY_S = 86_400
NS = 1_000_000_000
START_NS = 1_612_483_200 * NS  # 2021-02-05 00:00:00 UTC
PAGE = os.sysconf("SC_PAGE_SIZE")


def _definition(variables: int) -> DefinitionFile:
    kinds = [(DataType.U16, Action.INSTANT), (DataType.I16, Action.INSTANT),
             (DataType.U32, Action.INSTANT), (DataType.F32, Action.INSTANT),
             (DataType.I16, Action.MIN_MAX_MEAN), (DataType.U16, Action.ALARM_ON_CHANGE)]
    weights = [40, 20, 10, 10, 10, 10]
    pool = [k for k, w in zip(kinds, weights, strict=True) for _ in range(w)]
    rows = []
    for index in range(1, variables + 1):
        data_type, action = pool[(index * 37) % len(pool)]
        rows.append(Variable(
            line=index + 1, index=index, info1="3", info2=str(40000 + 2 * index),
            info3=data_type.value, info4="", name=f"v{index}", tag="", coef_a=Decimal(1),
            coef_b=Decimal(0), unit="", action=action, key=f"v{index}",
            modbus=ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=40000 + 2 * index,
                               data_type=data_type)))
    return DefinitionFile(file_name="bench_inverter.csv", protocol=Protocol.MODBUS_TCP,
                          category="Inverter", manufacturer="ACME", model="B",
                          variables=tuple(rows), sha256="b" * 64)


def _value(rng: random.Random, var: Variable) -> tuple[float | None, float | None, float | None]:
    assert var.modbus is not None
    data_type = var.modbus.data_type
    if var.action is Action.MIN_MAX_MEAN:
        low = rng.randint(-2000, 1000)
        high = low + rng.randint(0, 3000)
        polls = [rng.randint(low, high) for _ in range(60)]
        return float(low), float(high), sum(polls) / len(polls)
    if data_type is DataType.F32:
        packed = pa.array([rng.uniform(-500.0, 500.0)], pa.float32())
        return None, None, packed.cast(pa.float64())[0].as_py()
    if data_type is DataType.U32:
        return None, None, float(rng.randint(0, 4_000_000_000))
    # A scale factor of -2 on half of them: 12.34-like exact decimals.
    raw = rng.randint(-32768, 32767) if data_type is DataType.I16 else rng.randint(0, 65535)
    return None, None, float(raw) / 100 if var.index % 2 else float(raw)


def _records(definition: DefinitionFile, devices: int, period_s: int) -> dict[str, pa.Table]:
    rng = random.Random(20210205)
    ends = [*range(period_s, DAY_S, period_s), DAY_S]
    tables: dict[str, pa.Table] = {}
    for device in range(1, devices + 1):
        cols: dict[str, list[object]] = {n: [] for n in RECORDS_SCHEMA.names}
        for seq, end_s in enumerate(ends):
            missing = rng.random() < 0.01
            for var in definition.variables:
                vmin, vmax, value = (None, None, None) if missing else _value(rng, var)
                cols["ts"].append(START_NS + end_s * NS)
                cols["seq"].append(seq)
                cols["var"].append(var.index)
                cols["value"].append(value)
                cols["vmin"].append(vmin)
                cols["vmax"].append(vmax)
                cols["text"].append(None)
                cols["quality"].append(1 if missing else 0)
                cols["def"].append(definition.snapshot_id)
        tables[str(device)] = pa.Table.from_pydict(cols, schema=RECORDS_SCHEMA)
    return tables


def _config(devices: int) -> ViewConfig:
    rows = tuple(Device(line=k, index=str(k), interface="127.0.0.1", name=f"inv{k}", address=1)
                 for k in range(1, devices + 1))
    return ViewConfig(uid="WPM00BDE4", time_zone="Europe/Paris", devices=rows)


# --------------------------------------------------------------------------- the stdlib baseline


def _stdlib_csv_gzip(records: dict[str, pa.Table], definition: DefinitionFile,
                     config: ViewConfig) -> bytes:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(config.time_zone)
    columns = sorted((v for v in definition.variables if v.action.is_polled), key=lambda v: v.index)
    position = {v.index: k for k, v in enumerate(columns)}
    f32 = {v.index for v in columns if v.modbus is not None
           and v.modbus.data_type is DataType.F32}
    ranged = {v.index for v in columns if v.action is Action.MIN_MAX_MEAN}

    def text(var: int, value: float | None) -> str:
        if value is None:
            return ""
        return format_float32(value) if var in f32 else format_float64(value)

    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as raw:
        stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(stream, delimiter=";", lineterminator="\n")
        for device in sorted(records, key=int):
            rows = records[device].to_pylist()
            writer.writerow(["DEVICEINDEX", device])
            writer.writerow([definition.protocol.value, definition.file_name])
            writer.writerow([len(columns), *(v.index for v in columns)])
            by_record: dict[tuple[int, int], list[list[str]]] = {}
            for row in rows:
                key = (row["ts"].value if hasattr(row["ts"], "value") else
                       int(row["ts"].timestamp() * NS), row["seq"])
                fields = by_record.setdefault(key, [[""] for _ in columns])
                var = row["var"]
                good = row["quality"] in (0, 7)
                if var in ranged:
                    fields[position[var]] = ([text(var, row["vmin"]), text(var, row["vmax"]),
                                              format_float64(row["value"])]
                                             if good and row["value"] is not None else ["", "", ""])
                else:
                    fields[position[var]] = [text(var, row["value"] if good else None)]
            for (ts_ns, _), fields in sorted(by_record.items()):
                local = datetime.fromtimestamp(ts_ns // NS, UTC).astimezone(zone)
                writer.writerow([local.strftime("%y/%m/%d-%H:%M:%S"),
                                 *(f for field in fields for f in field)])
        stream.flush()
        stream.detach()
    return out.getvalue()


# --------------------------------------------------------------------------- measuring


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _peak_extra(run: Callable[[], object]) -> int:
    """Highest resident size above the one before `run`, sampled every 2 ms."""
    gc.collect()
    base = _rss()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, name="rss-sampler")
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(0, max(peak, _rss()) - base)


def _times_s(runs: int, *candidates: Callable[[], object]
             ) -> tuple[list[list[float]], list[PeakRss]]:
    """Times of each candidate over `runs` rounds, interleaved: on a shared 2-core box the
    load changes over minutes, and each round then sees about the same load for all of them;
    and the peak resident memory of each."""
    for run in candidates:
        run()  # warm-up
    times: list[list[float]] = [[] for _ in candidates]
    memories = [PeakRss() for _ in candidates]
    for _ in range(runs):
        for run, spent, memory in zip(candidates, times, memories, strict=True):
            gc.collect()
            with memory:
                started = time.perf_counter()
                run()
                spent.append(time.perf_counter() - started)
    return times, memories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--variables", type=int, default=100)
    parser.add_argument("--period", type=int, default=600, help="acqPeriod in seconds")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny size, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.variables, args.period, args.runs = 2, 12, 3600, 1

    definition = _definition(args.variables)
    records = _records(definition, args.devices, args.period)
    definitions = {definition.snapshot_id: definition}
    config = _config(args.devices)
    rows = sum(t.num_rows for t in records.values())

    def ours() -> bytes:
        data = data_file(Interface.MODBUS, records, definitions, config)
        assert data is not None
        return data

    ours_bytes = ours()
    text = gzip.decompress(ours_bytes)
    stdlib_bytes = _stdlib_csv_gzip(records, definition, config)
    if gzip.decompress(stdlib_bytes) != text:
        raise SystemExit("the stdlib baseline wrote another text than the view")

    peak = _peak_extra(ours)
    (ours_s, raw_s, stdlib_s), (mem_ours, mem_raw, mem_stdlib) = _times_s(
        args.runs, ours, lambda: gzip.compress(text, compresslevel=6, mtime=0),
        lambda: _stdlib_csv_gzip(records, definition, config))

    extra = {"n": args.runs, "devices": args.devices, "variables": args.variables,
             "records": rows, "text_mb": round(len(text) / 2**20, 2),
             "gz_mb": round(len(ours_bytes) / 2**20, 2),
             "peak_extra_mb": round(peak / 2**20, 1)}
    for baseline, theirs, memory, target in (
            ("stdlib csv + gzip writer of the same text", stdlib_s, mem_stdlib, {}),
            ("raw gzip (zlib level 6) of the same text", raw_s, mem_raw,
             {"target_speedup": 0.5})):
        emit(figure_line("export_csv", baseline, "s", ours_s, theirs,
                         peak_rss_mb=mem_ours.mb, theirs_peak_rss_mb=memory.mb, digits=6,
                         speedup_digits=3, **extra, **target))


if __name__ == "__main__":
    main()
