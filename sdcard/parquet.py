"""The fleet dataset: Hive-partitioned Parquet shared by `sd export-parquet` and `ingest`.

    OUT/uid=<uid>/device=<daq index>/date=<YYYY-MM-DD>/records.parquet   (UTC date)
    OUT/_alarms/uid=<uid>/date=<YYYY-MM-DD>/alarms.parquet
    OUT/_ingested/<uid>.json                                             (ingest's manifest)

Folders starting with `_` are skipped by Hive readers of OUT (pyarrow.dataset, Spark), so the
records dataset is OUT itself. A partition holds one file, rewritten whole: the rows already
there and the new ones, one row per (time, var) (the new one wins), in (time, var) order, so
exporting or ingesting the same data again gives the same bytes and never a duplicate row, and
many units (and many dumps of one unit) share one dataset.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from config.errors import SunpmError
from config.model import Variable
from fsio import write_file_durably

from .scaling import Scaling

RECORDS_FILE: Final = "records.parquet"
ALARMS_FILE: Final = "alarms.parquet"

PARQUET_RECORDS_SCHEMA: Final = pa.schema([
    pa.field("time", pa.timestamp("ns", tz="UTC"), nullable=False),
    pa.field("seq", pa.uint64()),          # record number in the store; null from ingest
    pa.field("var", pa.int32(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("unit", pa.string()),
    pa.field("raw", pa.float64()),
    pa.field("scaled", pa.float64()),
    pa.field("min", pa.float64()),
    pa.field("max", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("quality", pa.uint8()),       # null from ingest (files carry none)
    pa.field("definition", pa.string()),   # definition file name
    pa.field("def", pa.string()),          # `<sha256>:<file name>`
])

PARQUET_ALARMS_SCHEMA: Final = pa.schema([
    pa.field("time", pa.timestamp("ns", tz="UTC"), nullable=False),
    pa.field("source", pa.string(), nullable=False),   # GATEWAY, MODBUS, IO, TIC
    pa.field("alarm", pa.string()),        # gateway alarms
    pa.field("subject", pa.string()),
    pa.field("text", pa.string()),
    pa.field("definition", pa.string()),   # device alarms
    pa.field("device_name", pa.string()),
    pa.field("var", pa.int32()),
    pa.field("name", pa.string()),
    pa.field("value", pa.string()),
])

def append_value(cols: dict[str, list[object]], time_ns: int, index: int, var: Variable | None,
                 raw: float | None) -> None:
    """The time, var, name, unit, raw and scaled columns of one records row, as `sd
    export-parquet` and `ingest` both write it: no store seq, and no name, unit or scaled value
    where no definition names the variable."""
    cols["time"].append(time_ns)
    cols["seq"].append(None)
    cols["var"].append(index)
    cols["name"].append(None if var is None else var.name)
    cols["unit"].append(None if var is None else var.unit)
    cols["raw"].append(raw)
    cols["scaled"].append(None if raw is None or var is None
                          else Scaling.of(var.coef_a, var.coef_b).apply(raw))


_KEYS: Final = {RECORDS_FILE: ["time", "var"], ALARMS_FILE: ["time", "source", "alarm",
                                                              "subject", "device_name", "var"]}


class PartitionError(SunpmError):
    """A partition file already in the dataset that cannot be read to merge into."""


def partition_value(text: str) -> str:
    """A Hive partition value: `/` and `=` would break the path, `%` escapes them."""
    return text.replace("%", "%25").replace("/", "%2F").replace("=", "%3D")


def records_path(out: Path, uid: str, device: str, date: str) -> Path:
    return (out / f"uid={partition_value(uid)}" / f"device={partition_value(device)}"
            / f"date={date}" / RECORDS_FILE)


def alarms_path(out: Path, uid: str, date: str) -> Path:
    return out / "_alarms" / f"uid={partition_value(uid)}" / f"date={date}" / ALARMS_FILE


def utc_days(times: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The UTC date of each time (`date32`): a division, where formatting every row as text
    cost half of an export."""
    return times.cast(pa.timestamp("ns", tz="UTC")).cast(pa.date32())


def split_by_date(table: pa.Table) -> dict[str, pa.Table]:
    """The rows of each UTC date, by the date's `YYYY-MM-DD`."""
    if table.num_rows == 0:
        return {}
    days = utc_days(table.column("time"))
    return {day.isoformat(): table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            for day in pc.unique(days).to_pylist()}


def write_partition(path: Path, table: pa.Table, schema: pa.Schema) -> int:
    """Merge `table` into the partition file at `path`; returns its row count after."""
    table = table.select(schema.names).cast(schema)
    if path.exists():
        try:
            held = pq.read_table(path, schema=schema)
        except (OSError, pa.ArrowException) as err:
            # Never written over: it may hold rows of other dumps or files, merged earlier.
            raise PartitionError(
                f"{path}: not a readable partition of the dataset ({str(err).splitlines()[0]}); "
                "move it aside and run again") from err
        table = pa.concat_tables([table, held])
    keys = _KEYS[path.name]
    # One row per key, the first met (the new rows come first), then in key order. The store's
    # seq and quality, which a DATA file does not carry (null from `ingest`), are the first
    # known: ingesting a unit's files after exporting its dump keeps the dump's.
    kept = [c for c in ("seq", "quality") if c in schema.names]
    table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    firsts = table.group_by(keys, use_threads=False).aggregate(
        [("_row", "min"), *((c, "first") for c in kept)])
    table = table.take(firsts.column("_row_min")).drop_columns(["_row"])
    for c in kept:
        table = table.set_column(table.schema.get_field_index(c), schema.field(c),
                                 firsts.column(f"{c}_first"))
    order = [(k, "ascending") for k in keys]
    table = table.sort_by(order)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_durably(path, sink.getvalue())
    rows: int = table.num_rows
    return rows
