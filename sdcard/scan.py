"""Lazy scans of a dump: `pyarrow.dataset`s that DuckDB reads with projection and filter pushdown.

The records are the store's own verified lazy scan (`store.query.records_dataset`): a store's
history is mostly sealed `.arrow` IPC files (compacted at sealing), each decoded a batch at a
time from the batches whose CRC-32C, length and row count were checked on that read, only the
columns a query reads or filters on; stream segments (the open one of each day, a sealed one
whose compaction a crash cut short) go through the store's reader. A query over months of a
hundred devices keeps only what DuckDB holds for its answer, and no damaged byte is read as
data. Sealed files this reader sets aside (an unknown schema version) are left out.

DuckDB views (`duckdb_connection`):

    records   uid, device, time, seq, var, name, unit, raw, scaled, min, max, text, quality,
              definition (file name), def (snapshot id); name, unit and scaled are NULL where the
              definition snapshot is missing or does not list the variable
    journal   uid, time, seq, kind, device, def, details (the event's JSON body)
    definitions  sha256 (of the definition file), var, name, unit, coef_a, coef_b
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.dataset as ds

from config import parse_definition
from config.errors import SunpmError
from config.model import Action, DataType, Variable
from store.query import journal_table
from store.query import records_dataset as store_records

from .dump import Dump, Finding, Level
from .scaling import Scaling

if TYPE_CHECKING:
    import duckdb

#: `scaling.Scaling`'s terms, which the records' `scaled` is computed from.
_SCALING_FIELDS: Final = [pa.field("numerator_a", pa.float64()),
                          pa.field("numerator_b", pa.float64()),
                          pa.field("denominator", pa.float64()),
                          # An F32 register: its values as read are float32s (`f32_raw`).
                          pa.field("float32", pa.bool_()),
                          # Action 2: `value` is the mean of the period (a float64).
                          pa.field("mean", pa.bool_())]

DEFINITIONS_SCHEMA: Final = pa.schema([
    pa.field("def", pa.string()), pa.field("definition", pa.string()),
    pa.field("var", pa.int32()), pa.field("name", pa.string()), pa.field("unit", pa.string()),
    pa.field("coef_a", pa.float64()), pa.field("coef_b", pa.float64()),
    *_SCALING_FIELDS,
])

Progress = Callable[[int], None]


def records_dataset(dump: Dump, devices: list[str] | None = None,
                    progress: Progress | None = None, *, micros: bool = False) -> ds.Dataset:
    """Every trusted record row of the chosen devices (default all), with a `device` column:
    the store's verified lazy scan. A sealed file of a schema version this reader does not
    know is found by the scan itself (from the schema message its walk reads anyway, so no
    file is opened twice) and skipped, and named among the dump's findings. `micros`: `ts` in
    microseconds (see `duckdb_connection`)."""
    chosen = dump.devices() if devices is None else devices
    return store_records(dump.log, chosen, progress=progress,
                         unknown_version=dump.unknown_version, micros=micros)


def journal_dataset(dump: Dump, *, micros: bool = False) -> ds.Dataset:
    """Every trusted journal event (the journal is small: read whole, through the store);
    `micros`: `ts` truncated to microseconds, as the records' in SQL."""
    table = journal_table(dump.log).replace_schema_metadata(None)
    if micros:
        at = table.schema.get_field_index("ts")
        table = table.set_column(at, "ts", table.column(at).cast(
            pa.timestamp("us", tz="UTC"), safe=False))
    return ds.dataset(table)


@dataclass(frozen=True, slots=True)
class DefinitionRows:
    table: pa.Table
    missing: list[str]   # snapshot ids the dump does not hold (or holds damaged)


def definitions_table(dump: Dump, def_ids: list[str]) -> DefinitionRows:
    """Name, unit and coefficients of every variable of the named definition snapshots."""
    cols: dict[str, list[object]] = {f.name: [] for f in DEFINITIONS_SCHEMA}
    missing = []
    for def_id in sorted(def_ids):
        file_name = def_id.partition(":")[2] or def_id
        try:
            definition = parse_definition(dump.get_definition(def_id), file_name).value
        except SunpmError as err:
            missing.append(def_id)
            dump.extra.append(Finding(Level.ERROR, "snapshot", dump.path / "defs",
                                      f"definition {def_id}: {err}; its records have no names, "
                                      "units or scaled values"))
            continue
        for var in definition.variables:
            cols["def"].append(def_id)
            cols["definition"].append(file_name)
            cols["var"].append(var.index)
            cols["name"].append(var.name)
            cols["unit"].append(var.unit)
            cols["coef_a"].append(float(var.coef_a))
            cols["coef_b"].append(float(var.coef_b))
            _append_scaling(cols, var)
    return DefinitionRows(pa.table(cols, schema=DEFINITIONS_SCHEMA), missing)


STORED_DEFINITIONS_SCHEMA: Final = pa.schema([
    pa.field("sha256", pa.string()), pa.field("var", pa.int32()), pa.field("name", pa.string()),
    pa.field("unit", pa.string()), pa.field("coef_a", pa.float64()),
    pa.field("coef_b", pa.float64()), *_SCALING_FIELDS,
])
#: The `definitions` view: what a user reads (the scaling terms are the records view's).
STORED_DEFINITIONS_VIEW: Final = """
CREATE VIEW definitions AS
SELECT sha256, var, name, unit, coef_a, coef_b FROM definitions_raw
"""


def _append_scaling(cols: dict[str, list[object]], var: Variable) -> None:
    scaling = Scaling.of(var.coef_a, var.coef_b)
    cols["numerator_a"].append(scaling.numerator_a)
    cols["numerator_b"].append(scaling.numerator_b)
    cols["denominator"].append(scaling.denominator)
    cols["float32"].append(var.modbus is not None and var.modbus.data_type is DataType.F32)
    cols["mean"].append(var.action is Action.MIN_MAX_MEAN)


def stored_definitions(dump: Dump) -> pa.Table:
    """Every definition the dump holds, by the SHA-256 of its bytes: `defs/` and, for one lost
    there, the `DEF/` files of the configuration snapshots. Keyed by content, so the records'
    `def` values need no scan to be named (a query reads only what it asks for)."""
    found: dict[str, bytes] = {}
    for snapshot in dump.log.config_snapshots():
        for rel, data in (dump.config_files(snapshot) or {}).items():
            if rel.startswith("DEF/"):
                found.setdefault(hashlib.sha256(data).hexdigest(), data)
    defs = dump.path / "defs"
    if defs.is_dir():
        for path in sorted(defs.glob("*.csv")):
            sha = path.stem
            if len(sha) == 64 and sha not in found:
                try:
                    found[sha] = dump.log.get_definition(f"{sha}:{path.name}")
                except SunpmError as err:
                    dump.extra.append(Finding(Level.ERROR, "snapshot", path, str(err)))
    cols: dict[str, list[object]] = {f.name: [] for f in STORED_DEFINITIONS_SCHEMA}
    for sha, data in sorted(found.items()):
        try:
            definition = parse_definition(data, f"{sha}.csv").value
        except SunpmError as err:
            dump.extra.append(Finding(Level.ERROR, "snapshot", defs / f"{sha}.csv",
                                      f"{defs / (sha + '.csv')}: not a readable definition "
                                      f"({err})"))
            continue
        seen: set[int] = set()
        for var in definition.variables:
            if var.index in seen:
                continue
            seen.add(var.index)
            cols["sha256"].append(sha)
            cols["var"].append(var.index)
            cols["name"].append(var.name)
            cols["unit"].append(var.unit)
            cols["coef_a"].append(float(var.coef_a))
            cols["coef_b"].append(float(var.coef_b))
            _append_scaling(cols, var)
    return pa.table(cols, schema=STORED_DEFINITIONS_SCHEMA)


RECORDS_VIEW: Final = """
CREATE VIEW records AS
SELECT {uid} AS uid, r.device, r.ts AS time, r.seq, r.var, d.name, d.unit,
       {raw} AS raw, ({raw} * d.numerator_a + d.numerator_b) / d.denominator AS scaled,
       {vmin} AS min, {vmax} AS max, r.text, r.quality,
       split_part(r.def::VARCHAR, ':', 2) AS definition, r.def::VARCHAR AS def
FROM records_raw r
LEFT JOIN definitions_raw d ON d.sha256 = left(r.def::VARCHAR, 64) AND d.var = r.var
"""


def _f32(column: str, *, unless_mean: bool = False) -> str:
    """An F32 register's value as its files write it: the float32 read, widened to float64 by
    the store (`1.100000023841858`), back to the float64 of its shortest text (`1.1`,
    docs/formats.md §9.3); an action-2 mean is a float64 already."""
    keep = "d.float32 AND NOT d.mean" if unless_mean else "d.float32"
    return (f"CASE WHEN {keep} THEN CAST(CAST(CAST(r.{column} AS FLOAT) AS VARCHAR) AS DOUBLE) "
            f"ELSE r.{column} END")

JOURNAL_VIEW: Final = """
CREATE VIEW journal AS
SELECT {uid} AS uid, ts AS time, seq, kind, device, def, body AS details FROM journal_raw
"""


def connect(memory_limit: str = "512MB") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB, spilling past `memory_limit`, in UTC; no progress bar (DuckDB draws
    one on stdout for a query over 2 s, which would land in the CSV or JSON answer)."""
    import duckdb

    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit})
    con.execute("SET enable_progress_bar = false")
    # Times shown, truncated to days and cast to dates in UTC, as the files' names and the
    # Parquet partitions are: DuckDB's default is the zone of the machine running the query,
    # which made a day's totals depend on whose laptop asked. A query may begin with
    # `SET TimeZone = 'Europe/Paris';` for the plant's local days.
    con.execute("SET TimeZone = 'UTC'")
    # Spills go to the system's scratch space: DuckDB's default is `.tmp` in the working
    # directory, which may be the dump itself.
    spill = Path(tempfile.gettempdir()) / f"sunpm-sd-{os.getpid()}"
    con.execute("SET temp_directory = ?", [str(spill)])
    return con


def duckdb_connection(dump: Dump, *, memory_limit: str = "512MB",
                      progress: Progress | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB over the dump (no database file: the segments are the data).

    `time` is a `TIMESTAMPTZ` in microseconds (the store's nanoseconds truncated): DuckDB (2.0)
    neither subtracts two `TIMESTAMPTZ_NS` nor hands a filter on one to the scan, so in
    nanoseconds `time - lag(time)` failed and a time range read every batch; in microseconds
    both work (the batches outside the range are not decoded). Records are dated to the second
    or the poll's answer; no analysis needs the nanoseconds."""
    con = connect(memory_limit)
    records = records_dataset(dump, progress=progress, micros=True)
    con.register("records_raw", records)
    con.register("journal_raw", journal_dataset(dump, micros=True))
    con.register("definitions_raw", stored_definitions(dump))
    con.execute(STORED_DEFINITIONS_VIEW)
    uid = dump.uid()
    literal = "NULL::VARCHAR" if uid is None else "'" + uid.replace("'", "''") + "'"
    con.execute(RECORDS_VIEW.format(uid=literal, raw=_f32("value", unless_mean=True),
                                    vmin=_f32("vmin"), vmax=_f32("vmax")))
    con.execute(JOURNAL_VIEW.format(uid=literal))
    return con
