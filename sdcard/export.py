"""`sunpm sd export-parquet`: a dump's records (and alarms) into the fleet dataset (`parquet.py`).

A device's rows stream out a batch at a time from the lazy scan and are written per UTC date as
soon as a later date starts (segments hold one UTC day each), so memory holds about a day of one
device whatever the dump's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from config import parse_definition
from config.errors import SunpmError
from config.model import DefinitionFile, Protocol, Variable
from exporters.views.numbers import clean_text
from store.events import ParamRead

from .dump import Dump, DumpError
from .ingest import _TIC_NUMBER, _is_text, _number, _recorded
from .parquet import (
    PARQUET_ALARMS_SCHEMA,
    PARQUET_RECORDS_SCHEMA,
    alarms_path,
    append_value,
    records_path,
    split_by_date,
    utc_days,
    write_partition,
)
from .scan import definitions_table, records_dataset

NS: Final = 1_000_000_000
#: Buffered rows of one device before every pending date is written.
FLUSH_ROWS: Final = 1_000_000


@dataclass(slots=True)
class ExportResult:
    partitions: set[Path] = field(default_factory=set)
    rows: int = 0
    alarms: int = 0


def export_parquet(dump: Dump, out: Path, *, uid: str | None = None,
                   progress: Callable[[int], None] | None = None) -> ExportResult:
    if out.resolve().is_relative_to(dump.path.resolve()):
        raise DumpError(f"{out}: inside the dump {dump.path}; the dump is never written to")
    uid = uid or dump.uid()
    if uid is None:
        raise DumpError(f"{dump.path}: the dump holds no configuration snapshot to take the uid "
                        "from; give --uid")
    result = ExportResult()
    for device in dump.devices():
        _export_device(dump, out, uid, device, result, progress)
    _export_parameters(dump, out, uid, result)
    _export_alarms(dump, out, uid, result)
    return result


def progress_steps(dump: Dump) -> int:
    """How many times `export_parquet` calls `progress(1)`: each segment file of each device,
    as the export's rows pass its first seq (a device of a year is one day at a time)."""
    return sum(len(dump.segments(device)) for device in dump.devices())


def _export_device(dump: Dump, out: Path, uid: str, device: str, result: ExportResult,
                   progress: Callable[[int], None] | None) -> None:
    dataset = records_dataset(dump, [device])
    # The first seq of each segment after the first: the rows pass them in seq order.
    starts = [s.seq0 for s in dump.segments(device)][1:]
    ticked = 0

    def tick(seq: int | None) -> None:
        nonlocal ticked
        passed = len(starts) + 1 if seq is None else 1 + sum(1 for s in starts if s <= seq)
        if progress is not None and passed > ticked:
            progress(passed - ticked)
        ticked = max(ticked, passed)
    defs_cache: dict[str, pa.Table] = {}
    pending: dict[str, list[pa.Table]] = {}
    buffered = 0

    def flush(before: str | None) -> None:
        nonlocal buffered
        for date in sorted(pending):
            if before is not None and date >= before:
                continue
            table = pa.concat_tables(pending.pop(date))
            buffered -= table.num_rows
            path = records_path(out, uid, device, date)
            write_partition(path, table, PARQUET_RECORDS_SCHEMA)
            result.partitions.add(path)
            result.rows += table.num_rows

    for batch in dataset.to_batches():
        if batch.num_rows == 0:
            continue
        table = _named(dump, pa.Table.from_batches([batch]), defs_cache)
        for date, part in split_by_date(table).items():
            pending.setdefault(date, []).append(part)
            buffered += part.num_rows
        oldest_here = pc.min(utc_days(table.column("time"))).as_py().isoformat()
        flush(before=oldest_here if buffered < FLUSH_ROWS else None)
        tick(pc.max(batch.column("seq")).as_py())
    flush(before=None)
    tick(None)


def _named(dump: Dump, raw: pa.Table, cache: dict[str, pa.Table]) -> pa.Table:
    """Records with names, units and scaled values from their definition snapshots."""
    def_col = raw.column("def").cast(pa.string())
    missing = [d for d in pc.unique(def_col).to_pylist() if d not in cache]
    if missing:
        rows = definitions_table(dump, missing).table
        for d in missing:
            cache[d] = rows.filter(pc.equal(rows.column("def"), d))
    defs = pa.concat_tables([cache[d] for d in pc.unique(def_col).to_pylist()])
    table = pa.table({
        "time": raw.column("ts"), "seq": raw.column("seq"), "var": raw.column("var"),
        "raw": raw.column("value"), "min": raw.column("vmin"), "max": raw.column("vmax"),
        "text": raw.column("text"), "quality": raw.column("quality"), "def": def_col,
    })
    joined = table.join(defs, keys=["def", "var"], join_type="left outer", use_threads=False)
    float32 = pc.fill_null(joined.column("float32"), False)
    instant = pc.and_(float32, pc.invert(pc.fill_null(joined.column("mean"), False)))
    for name, read in (("raw", instant), ("min", float32), ("max", float32)):
        joined = joined.set_column(joined.schema.get_field_index(name), name,
                                   _f32(joined.column(name), read))
    # As `scaling.Scaling.apply`: one rounding, the float nearest the exact decimal.
    scaled = pc.divide(pc.add(pc.multiply(joined.column("raw"), joined.column("numerator_a")),
                              joined.column("numerator_b")), joined.column("denominator"))
    # `<64 hex digits>:<file name>`: the name starts at 65, known or not to the snapshots.
    definition = pc.utf8_slice_codeunits(joined.column("def"), start=65)
    return joined.append_column("scaled", scaled).set_column(
        joined.schema.get_field_index("definition"), "definition", definition)


def _f32(values: pa.ChunkedArray, read: pa.ChunkedArray) -> pa.ChunkedArray:
    """Where `read` (an F32 register's value as read), the float64 of the float32's shortest
    text, as the files write it (`1.1`, not the widened `1.100000023841858`; as `sd sql`)."""
    if not pc.any(read).as_py():
        return values
    shortest = values.cast(pa.float32()).cast(pa.string()).cast(pa.float64())
    return pc.if_else(read, shortest, values)


def _export_parameters(dump: Dump, out: Path, uid: str, result: ExportResult) -> None:
    """The journal's parameter reads as record rows, as `ingest` reads them from the `_P_` files
    (docs/formats.md §9.2): dated to the second, one row per parameter variable of the
    definition (empty when not read), text types as text, numbers scaled."""
    table = dump.log.journal(kinds=["param"])
    if table.num_rows == 0:
        return
    parsed: dict[str, DefinitionFile | None] = {}
    rows: dict[tuple[str, str], dict[str, list[object]]] = {}
    for ts, device, def_id, body in zip(
            table.column("ts").cast(pa.int64()).to_pylist(), table.column("device").to_pylist(),
            table.column("def").to_pylist(), table.column("body").to_pylist(), strict=True):
        if device is None or def_id is None:
            continue
        if def_id not in parsed:
            try:
                parsed[def_id] = parse_definition(dump.get_definition(def_id),
                                                  def_id.partition(":")[2]).value
            except SunpmError:
                parsed[def_id] = None  # named among the findings by the records' export
        definition = parsed[def_id]
        read = ParamRead.from_body(body)
        second = ts // NS * NS
        date = datetime.fromtimestamp(second // NS, UTC).date().isoformat()
        cols = rows.setdefault((device, date), {f.name: [] for f in PARQUET_RECORDS_SCHEMA})
        variables: list[tuple[int, Variable | None]] = (
            [(v.index, v) for v in _recorded(definition, True)] if definition is not None
            else [(index, None) for index in sorted(read.values)])
        for index, var in variables:
            text = clean_text(read.values.get(index) or "")
            raw, text_value = _param_value(definition, var, text)
            append_value(cols, second, index, var, raw)
            cols["min"].append(None)
            cols["max"].append(None)
            cols["text"].append(text_value)
            cols["quality"].append(read.quality.get(index, 0 if text else None))
            cols["definition"].append(def_id.partition(":")[2])
            cols["def"].append(def_id)
    for (device, date), cols in rows.items():
        path = records_path(out, uid, device, date)
        write_partition(path, pa.table(cols, schema=PARQUET_RECORDS_SCHEMA),
                        PARQUET_RECORDS_SCHEMA)
        result.partitions.add(path)
        result.rows += len(cols["time"])


def _param_value(definition: DefinitionFile | None, var: Variable | None,
                 text: str) -> tuple[float | None, str | None]:
    """A parameter's raw number and text, as `ingest` reads them from a `_P_` field."""
    if definition is not None and definition.protocol is Protocol.TIC:
        raw = _number(text) if _TIC_NUMBER.fullmatch(text) else None
        return raw, text or None
    if var is not None and definition is not None and _is_text(definition, var):
        return None, text or None
    raw = _number(text)
    return raw, text if raw is None and text else None


def _export_alarms(dump: Dump, out: Path, uid: str, result: ExportResult) -> None:
    """The journal's alarms, in the columns ingest reads from ALARM files."""
    table = dump.log.journal(kinds=["alarm"])
    if table.num_rows == 0:
        return
    cols: dict[str, list[object]] = {f.name: [] for f in PARQUET_ALARMS_SCHEMA}
    defs_by_id: dict[str, dict[int, str]] = {}
    for ts, def_id, body in zip(table.column("ts").to_pylist(), table.column("def").to_pylist(),
                                table.column("body").to_pylist(), strict=True):
        b = json.loads(body)
        source = str(b.get("source", "GATEWAY"))
        cols["time"].append(ts)
        cols["source"].append(source)
        cols["alarm"].append(b.get("alarm"))
        cols["subject"].append(b.get("subject"))
        cols["text"].append(b.get("text"))
        var = b.get("var")
        cols["var"].append(var)
        cols["device_name"].append(b.get("name") if source != "GATEWAY" else None)
        cols["value"].append(None if b.get("value") is None else str(b.get("value")))
        cols["definition"].append(None if def_id is None else def_id.partition(":")[2])
        name = None
        if def_id is not None and var is not None:
            if def_id not in defs_by_id:
                rows = definitions_table(dump, [def_id]).table
                defs_by_id[def_id] = dict(zip(rows.column("var").to_pylist(),
                                              rows.column("name").to_pylist(), strict=True))
            name = defs_by_id[def_id].get(int(var))
        cols["name"].append(name)
    alarms = pa.table(cols, schema=PARQUET_ALARMS_SCHEMA)
    for date, part in split_by_date(alarms).items():
        path = alarms_path(out, uid, date)
        write_partition(path, part, PARQUET_ALARMS_SCHEMA)
        result.partitions.add(path)
        result.alarms += part.num_rows
